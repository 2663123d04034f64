package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/parleychat/parley/bench"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/testenv"
	"github.com/parleychat/parley/server/tlsconf/tlstest"
)

// lines collects what a writer receives, line by line, and lets a test wait
// for a line containing some text.
type lines struct {
	mu    sync.Mutex
	buf   strings.Builder
	added chan struct{}
}

func newLines() *lines { return &lines{added: make(chan struct{}, 1)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	select {
	case l.added <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// wait blocks until a line contains text, or fails the test after d.
func (l *lines) wait(t *testing.T, text string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for !strings.Contains(l.String(), text) {
		select {
		case <-l.added:
		case <-deadline:
			t.Fatalf("no line with %q after %s; got:\n%s", text, d, l.String())
		}
	}
}

// chatStack is one Parley deployment for these tests: servers and a
// persister run in-process by the same functions as `parley server` and
// `parley persister`, on the real services, with names unique to the test.
type chatStack struct {
	t    *testing.T
	name string
	args []string // common server flags
}

func newChatStack(t *testing.T) *chatStack {
	t.Helper()
	name := testenv.Name(t)
	redis, brokers, mongo := testenv.RedisURL(t), strings.Join(testenv.KafkaBrokers(t), ","), testenv.MongoURI(t)
	s := &chatStack{t: t, name: name, args: []string{
		"-redis-url", redis, "-redis-prefix", name + ":",
		"-kafka-brokers", brokers, "-topic", name, "-partitions", "2",
		"-mongo-uri", mongo, "-database", name,
		"-token-key", "chat-test-token-key-0123456789abcdefghij",
		"-argon2-memory-kib", "1024", "-argon2-time", "1",
		"-web-dir", "/nonexistent", "-shutdown-grace", "3s",
		"-log-format", "text", "-log-level", "error",
	}}
	// Registered first, so it runs after the processes below have stopped.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := bench.Cleanup(ctx, mongo, strings.Split(brokers, ","), []string{name}, []string{name, name + ".dlq"}); err != nil {
			t.Logf("cleanup of %s: %v", name, err)
		}
	})
	s.run("persister", "persister", "-kafka-brokers", brokers, "-topic", name, "-dlq-topic", name+".dlq",
		"-group", name, "-partitions", "2", "-mongo-uri", mongo, "-database", name, "-metrics-addr", "",
		"-log-format", "text", "-log-level", "error")
	return s
}

// run starts `parley <args>` in a goroutine; the returned stop ends it and
// waits (also done at cleanup).
func (s *chatStack) run(what string, args ...string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					s.t.Errorf("%s: %v", what, err)
				}
			case <-time.After(30 * time.Second):
				s.t.Errorf("%s did not stop within 30s", what)
			}
		})
	}
	s.t.Cleanup(stop)
	return stop
}

// server starts a server on addr and waits until it is ready.
func (s *chatStack) server(addr string) (stop func()) {
	s.t.Helper()
	stop = s.run("server "+addr, append([]string{"server", "-addr", addr}, s.args...)...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("server %s not ready after 60s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// stubUser is a user driven with the generated Go stubs.
type stubUser struct {
	ctx   context.Context
	rooms parleyv1.RoomServiceClient
	chat  parleyv1.ChatServiceClient
}

func signUpStub(t *testing.T, addr, name string) *stubUser {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	resp, err := parleyv1.NewAuthServiceClient(cc).SignUp(context.Background(), &parleyv1.SignUpRequest{Username: name, Password: "password-" + name})
	if err != nil {
		t.Fatalf("sign up %s: %v", name, err)
	}
	return &stubUser{
		ctx:   metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+resp.GetTokens().GetAccessToken()),
		rooms: parleyv1.NewRoomServiceClient(cc),
		chat:  parleyv1.NewChatServiceClient(cc),
	}
}

func (u *stubUser) send(t *testing.T, roomID, id, body string) *parleyv1.Message {
	t.Helper()
	resp, err := u.chat.SendMessage(u.ctx, &parleyv1.SendMessageRequest{RoomId: roomID, ClientMsgId: id, Body: body})
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return resp.GetMessage()
}

// chatProc is a running `parley chat` with piped stdin and captured output.
type chatProc struct {
	stdin  *io.PipeWriter
	out    *lines
	info   *lines
	cancel context.CancelFunc
	done   chan error
}

func startChat(t *testing.T, args ...string) *chatProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	p := &chatProc{stdin: w, out: newLines(), info: newLines(), cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- chatMain(ctx, args, r, p.out, p.info) }()
	t.Cleanup(func() {
		cancel()
		w.Close()
		if t.Failed() {
			t.Logf("chat stdout:\n%s\nchat stderr:\n%s", p.out, p.info)
		}
	})
	return p
}

func (p *chatProc) typeLine(t *testing.T, s string) {
	t.Helper()
	if _, err := fmt.Fprintln(p.stdin, s); err != nil {
		t.Fatal(err)
	}
}

func (p *chatProc) exit(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(d):
		t.Fatalf("chat still running after %s", d)
		return nil
	}
}

// TestChat drives `parley chat` through pipes against real servers: history
// on start, sending, receiving live, a server restart survived by resuming
// (the message sent meanwhile is replayed), commands, and leaving at end of
// input and on cancellation (Ctrl-C).
func TestChat(t *testing.T) {
	s := newChatStack(t)
	addrA, addrB := freePort(t), freePort(t)
	stopA := s.server(addrA)
	s.server(addrB)

	bob := signUpStub(t, addrB, "bob")
	created, err := bob.rooms.CreateRoom(bob.ctx, &parleyv1.CreateRoomRequest{Name: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.GetRoom().GetRoomId()
	first := bob.send(t, roomID, "b1", "before you came")
	for deadline := time.Now().Add(30 * time.Second); ; { // wait until the persister stored it
		resp, err := bob.chat.ListMessages(bob.ctx, &parleyv1.ListMessagesRequest{RoomId: roomID})
		if err == nil && len(resp.GetMessages()) > 0 && resp.GetMessages()[0].GetSeq() == first.GetSeq() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("history never had the first message: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Setenv("PARLEY_PASSWORD", "password-ann")
	ann := startChat(t, "-addr", addrA, "-user", "ann", "-signup", "-room", "lobby", "-history", "10")
	ann.out.wait(t, "bob: before you came", 30*time.Second)
	ann.info.wait(t, "in #lobby", 10*time.Second)
	ann.info.wait(t, "signed up as ann", time.Second)

	// Send: the line comes back on the stream; bob can read it.
	ann.typeLine(t, "hello bob")
	ann.out.wait(t, "ann: hello bob", 10*time.Second)
	// Receive live.
	bob.send(t, roomID, "b2", "hi ann")
	ann.out.wait(t, "bob: hi ann", 10*time.Second)
	// Commands.
	ann.typeLine(t, "/who")
	ann.info.wait(t, "#lobby: ", 10*time.Second)
	ann.typeLine(t, "//slash")
	ann.out.wait(t, "ann: /slash", 10*time.Second)

	// Server A goes away; what bob sends meanwhile (via B) is replayed when
	// the client is back on a new server at the same address.
	stopA()
	ann.info.wait(t, "reconnecting", 15*time.Second)
	bob.send(t, roomID, "b3", "while you were away")
	s.server(addrA)
	ann.out.wait(t, "bob: while you were away", 30*time.Second)
	// A line typed after the reconnect is sent on the new stream.
	ann.typeLine(t, "back again")
	ann.out.wait(t, "ann: back again", 10*time.Second)
	if n := strings.Count(ann.out.String(), "bob: hi ann"); n != 1 {
		t.Errorf("message printed %d times, want once:\n%s", n, ann.out)
	}

	// End of input: the last line is sent and echoed before the client leaves.
	ann.typeLine(t, "bye now")
	ann.stdin.Close()
	if err := ann.exit(t, 15*time.Second); err != nil {
		t.Fatalf("chat exited with %v", err)
	}
	if !strings.Contains(ann.out.String(), "ann: bye now") {
		t.Errorf("last line not echoed before exit:\n%s", ann.out)
	}

	// Ctrl-C (context cancelled) ends a second session cleanly; its history
	// starts with what was said before.
	again := startChat(t, "-addr", addrA, "-user", "ann", "-room", roomID, "-history", "3")
	again.out.wait(t, "ann: bye now", 30*time.Second)
	again.info.wait(t, "in #lobby", 10*time.Second)
	again.cancel()
	if err := again.exit(t, 10*time.Second); err != nil {
		t.Fatalf("chat exited with %v after cancel", err)
	}
}

func TestChatFlags(t *testing.T) {
	t.Setenv("PARLEY_PASSWORD", "")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-password", "x"}, "user is required"},
		{[]string{"-user", "ann"}, "password is required"},
		{[]string{"-user", "ann", "-password", "x", "-history", "500"}, "history must be 0-200"},
		{[]string{"-user", "ann", "-password", "x", "-tls-ca", "/nonexistent/ca.pem"}, "tls-ca: open /nonexistent/ca.pem"},
		{[]string{"-user", "ann", "-password", "x", "-tls-ca", notPEM}, "no PEM certificate"},
		{[]string{"-user", "ann", "-password", "x", "-tls", "-addr", "no-port"}, `addr "no-port"`},
	} {
		err := chatMain(context.Background(), tt.args, strings.NewReader(""), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestChatTLS: `parley chat -tls-ca` talks to a server started with
// --tls-cert/--tls-key; without the CA (system roots) or without TLS it
// fails at once with a message saying why.
func TestChatTLS(t *testing.T) {
	s := newChatStack(t)
	cert := tlstest.Write(t, t.TempDir(), "localhost", "127.0.0.1")
	addr := freePort(t)
	s.run("server "+addr, append([]string{"server", "-addr", addr, "-tls-cert", cert.CertFile, "-tls-key", cert.KeyFile}, s.args...)...)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool}}}
	defer hc.CloseIdleConnections()
	for deadline := time.Now().Add(60 * time.Second); ; {
		resp, err := hc.Get("https://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS server %s not ready after 60s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Setenv("PARLEY_PASSWORD", "password-cleo")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-tls"}, "certificate"}, // self-signed: not trusted by the system
		{nil, "sign up: "},                // cleartext against TLS
	} {
		p := startChat(t, append([]string{"-addr", addr, "-user", "cleo", "-signup", "-room", "lobby"}, tt.args...)...)
		err := p.exit(t, 30*time.Second)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("chat %v: %v, want an error with %q", tt.args, err, tt.want)
		}
	}

	cleo := startChat(t, "-addr", addr, "-tls-ca", cert.CertFile, "-user", "cleo", "-signup", "-room", "lobby")
	cleo.info.wait(t, "in #lobby", 30*time.Second)
	cleo.typeLine(t, "hello over tls")
	cleo.out.wait(t, "cleo: hello over tls", 10*time.Second)
	cleo.stdin.Close()
	if err := cleo.exit(t, 15*time.Second); err != nil {
		t.Fatalf("chat exited with %v", err)
	}
}
