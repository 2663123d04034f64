package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/grpcwebtest"
	"github.com/parleychat/parley/internal/testenv"
	"github.com/parleychat/parley/server/tlsconf/tlstest"
)

// tlsCluster is a cluster whose server and persister serve TLS
// (--tls-cert/--tls-key) with a self-signed certificate for 127.0.0.1.
type tlsCluster struct {
	*cluster
	cert        tlstest.Cert
	persMetrics string // the persister's metrics address (https)
}

// newTLSCluster starts one TLS server (with extra flags) and a persister
// with its metrics listener on TLS, and waits until both answer over https.
func newTLSCluster(t *testing.T, extra ...string) *tlsCluster {
	t.Helper()
	c := &tlsCluster{cluster: &cluster{
		t:        t,
		name:     testenv.Name(t),
		redis:    testenv.RedisURL(t),
		brokers:  strings.Join(testenv.KafkaBrokers(t), ","),
		mongoURI: testenv.MongoURI(t),
	}}
	c.cert = tlstest.Write(t, t.TempDir(), "localhost", "127.0.0.1")
	tlsFlags := []string{"-tls-cert", c.cert.CertFile, "-tls-key", c.cert.KeyFile}
	mc, err := mongo.Connect(options.Client().ApplyURI(c.mongoURI))
	if err != nil {
		t.Fatal(err)
	}
	c.db = mc.Database(c.name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.db.Drop(ctx)
		_ = mc.Disconnect(ctx)
	})
	c.servers = append(c.servers, c.startServer(0, append(tlsFlags, extra...)...))
	c.persMetrics = freeAddr(t)
	c.pers = c.start("persister", append([]string{"persister",
		"-kafka-brokers", c.brokers, "-topic", c.name, "-dlq-topic", c.name + ".dlq", "-group", c.name,
		"-partitions", "4", "-mongo-uri", c.mongoURI, "-database", c.name, "-metrics-addr", c.persMetrics,
		"-log-format", "text"}, tlsFlags...)...)
	c.waitHTTPS(c.servers[0], "https://"+c.servers[0].addr+"/readyz")
	c.waitHTTPS(c.pers, "https://"+c.persMetrics+"/healthz")
	return c
}

// httpsClient trusts the cluster's certificate; h2 offers HTTP/2 and
// HTTP/1.1 (as browsers do), otherwise only HTTP/1.1.
func (c *tlsCluster) httpsClient(h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.cert.Pool}, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	c.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (c *tlsCluster) waitHTTPS(p *proc, url string) {
	c.t.Helper()
	hc := c.httpsClient(true)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-p.done:
			c.t.Fatalf("%s exited during start-up (log: %s)", url, p.log)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not ready after 60s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tlsUser signs name up through a native gRPC client over TLS.
func (c *tlsCluster) tlsUser(name string) *user {
	c.t.Helper()
	cc, err := grpc.NewClient(c.servers[0].addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: c.cert.Pool})))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	u := &user{name: name, auth: parleyv1.NewAuthServiceClient(cc), rooms: parleyv1.NewRoomServiceClient(cc), chat: parleyv1.NewChatServiceClient(cc)}
	ctx := context.Background()
	if _, err := u.auth.SignUp(ctx, &parleyv1.SignUpRequest{Username: name, Password: "password-" + name}); err != nil {
		c.t.Fatalf("sign up %s over TLS: %v", name, err)
	}
	resp, err := u.auth.Login(ctx, &parleyv1.LoginRequest{Username: name, Password: "password-" + name})
	if err != nil {
		c.t.Fatalf("log in %s over TLS: %v", name, err)
	}
	u.id, u.token = resp.User.UserId, resp.Tokens.AccessToken
	return u
}

// TestTLSEveryProtocol: with --tls-cert/--tls-key, one address serves native
// gRPC over TLS (unary calls and the Connect stream), REST, grpc-web (HTTP/2
// and HTTP/1.1) and its WebSocket over wss, and /metrics; the persister's
// metrics listener is on TLS too; cleartext clients are refused cleanly.
func TestTLSEveryProtocol(t *testing.T) {
	const origin = "https://chat.example"
	c := newTLSCluster(t, "-allowed-origins", origin)
	addr := c.servers[0].addr

	// Native gRPC: sign up, log in, a room, a Connect stream.
	tina := c.tlsUser("tina")
	room := createRoom(t, tina, parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC)
	ls := connect(t, tina)
	ls.subscribe(room, nil)
	if err := ls.send(room, "t1", "over grpc+tls"); err != nil {
		t.Fatal(err)
	}
	ls.wait("ack and echo of t1", func() bool { return ls.acks["t1"] != nil && len(ls.msgs) == 1 })

	// REST over https: sign-up, then a message sent by REST reaches the
	// gRPC stream (the gateway calls the gRPC server in memory).
	for _, h2 := range []bool{true, false} {
		hc := c.httpsClient(h2)
		name := map[bool]string{true: "rhea", false: "ross"}[h2]
		resp, err := hc.Post("https://"+addr+"/v1/auth/signup", "application/json",
			strings.NewReader(fmt.Sprintf(`{"username":%q,"password":"password-%s"}`, name, name)))
		if err != nil {
			t.Fatalf("REST sign-up (h2=%v): %v", h2, err)
		}
		var signup struct {
			Tokens struct {
				AccessToken string `json:"accessToken"`
			} `json:"tokens"`
		}
		err = json.NewDecoder(resp.Body).Decode(&signup)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || signup.Tokens.AccessToken == "" || (resp.ProtoMajor == 2) != h2 {
			t.Fatalf("REST sign-up (h2=%v): %s %d %v %+v", h2, resp.Proto, resp.StatusCode, err, signup)
		}
	}
	req, _ := http.NewRequest("POST", "https://"+addr+"/v1/rooms/"+room+"/messages", strings.NewReader(`{"clientMsgId":"r1","body":"over rest+tls"}`))
	req.Header.Set("Authorization", "Bearer "+tina.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.httpsClient(true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("REST send: %d %s", resp.StatusCode, body)
	}
	ls.wait("the REST message on the stream", func() bool { return len(ls.msgs) == 2 && ls.msgs[1].Body == "over rest+tls" })

	// grpc-web over https, HTTP/2 and HTTP/1.1.
	for _, h2 := range []bool{true, false} {
		req, _ := http.NewRequest("POST", "https://"+addr+"/parley.v1.AuthService/Login",
			bytes.NewReader(grpcwebtest.Frame(t, &parleyv1.LoginRequest{Username: "tina", Password: "password-tina"})))
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		req.Header.Set("X-Grpc-Web", "1")
		req.Header.Set("Origin", origin)
		resp, err := c.httpsClient(h2).Do(req)
		if err != nil {
			t.Fatalf("grpc-web (h2=%v): %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var login parleyv1.LoginResponse
		trailers := grpcwebtest.Decode(t, body, &login)
		if resp.StatusCode != http.StatusOK || trailers["grpc-status"] != "0" || login.GetTokens().GetAccessToken() == "" || (resp.ProtoMajor == 2) != h2 {
			t.Fatalf("grpc-web Login (h2=%v): %s %d trailers %v", h2, resp.Proto, resp.StatusCode, trailers)
		}
	}

	// The Connect stream over wss, as the web app opens it: subscribe, send,
	// get the ack and the message back.
	ws, code := dialWS(t, addr, "/parley.v1.ChatService/Connect", origin, c.cert)
	if ws == nil {
		t.Fatalf("WebSocket from an allowed origin: %d, want 101", code)
	}
	ws.writeMessage(t, []byte("content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nauthorization: Bearer "+tina.token+"\r\n"))
	ws.send(t, &parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: room}}})
	ws.until(t, "subscribed", func(f *parleyv1.ConnectResponse) bool { return f.GetSubscribed() != nil })
	ws.send(t, &parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{RoomId: room, ClientMsgId: "w1", Body: "over wss"}}})
	ws.until(t, "the message sent over wss", func(f *parleyv1.ConnectResponse) bool { return f.GetMessage().GetBody() == "over wss" })
	ls.wait("the wss message on the gRPC stream", func() bool { return len(ls.msgs) == 3 && ls.msgs[2].Body == "over wss" })
	ws.c.Close()
	if ws, code := dialWS(t, addr, "/parley.v1.ChatService/Connect", "https://evil.example", c.cert); ws != nil || code != http.StatusForbidden {
		t.Errorf("WebSocket from another origin: %d, want 403", code)
	}

	// /metrics over https, on the server and on the persister.
	for _, url := range []string{"https://" + addr + "/metrics", "https://" + c.persMetrics + "/metrics"} {
		resp, err := c.httpsClient(true).Get(url)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "parley_tls_certificate_expiry_timestamp_seconds") {
			t.Errorf("%s: %d, certificate expiry metric missing", url, resp.StatusCode)
		}
	}

	// Cleartext clients: HTTP gets a 400 saying why, gRPC fails at once.
	for _, url := range []string{"http://" + addr + "/healthz", "http://" + c.persMetrics + "/metrics"} {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
		if err != nil {
			t.Fatalf("cleartext %s: %v (want a 400 answer)", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
			t.Errorf("cleartext %s: %d %q, want 400", url, resp.StatusCode, body)
		}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = parleyv1.NewAuthServiceClient(cc).Login(ctx, &parleyv1.LoginRequest{Username: "tina", Password: "password-tina"})
	if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
		t.Errorf("cleartext gRPC: %v, want Unavailable before the deadline", err)
	}
}

// wsConn is a minimal WebSocket client (RFC 6455) speaking improbable-eng's
// grpc-websockets protocol, over a TLS connection that offered only
// HTTP/1.1 by ALPN, as browsers open WebSockets.
type wsConn struct {
	c   net.Conn
	br  *bufio.Reader
	buf []byte // received stream bytes not yet decoded as grpc-web frames
}

// dialWS opens a grpc-websockets WebSocket; nil and the HTTP status if the
// server did not switch protocols.
func dialWS(t *testing.T, addr, path, origin string, cert tlstest.Cert) (*wsConn, int) {
	t.Helper()
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{RootCAs: cert.Pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	if p := tc.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Fatalf("ALPN: %q, want http/1.1", p)
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: grpc-websockets\r\nOrigin: %s\r\n\r\n", path, addr, key, origin)
	br := bufio.NewReader(tc)
	_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
		return nil, resp.StatusCode
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("Sec-WebSocket-Accept %q", got)
	}
	return &wsConn{c: tc, br: br}, resp.StatusCode
}

// writeMessage sends one masked binary message.
func (w *wsConn) writeMessage(t *testing.T, p []byte) {
	t.Helper()
	hdr := []byte{0x82} // FIN, binary
	switch n := len(p); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	hdr = append(hdr, mask[:]...)
	masked := make([]byte, len(p))
	for i := range p {
		masked[i] = p[i] ^ mask[i%4]
	}
	_ = w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.c.Write(append(hdr, masked...)); err != nil {
		t.Fatal(err)
	}
}

// send sends m as a grpc-websockets data message.
func (w *wsConn) send(t *testing.T, m proto.Message) {
	t.Helper()
	w.writeMessage(t, append([]byte{0}, grpcwebtest.Frame(t, m)...))
}

// readMessage returns the payload of the next data message (control
// messages are skipped; a close is an error).
func (w *wsConn) readMessage() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.br, h[:]); err != nil {
			return nil, err
		}
		fin, op, n := h[0]&0x80 != 0, h[0]&0x0f, uint64(h[1]&0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(w.br, p); err != nil {
			return nil, err
		}
		switch op {
		case 0x8:
			return nil, fmt.Errorf("websocket closed by the server: %q", p)
		case 0x9, 0xa: // ping, pong
			continue
		}
		msg = append(msg, p...)
		if fin {
			return msg, nil
		}
	}
}

// until reads ConnectResponse messages until match accepts one; a trailer
// (the stream's end) fails the test.
func (w *wsConn) until(t *testing.T, what string, match func(*parleyv1.ConnectResponse) bool) {
	t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		for len(w.buf) >= 5 {
			flag, n := w.buf[0], binary.BigEndian.Uint32(w.buf[1:5])
			if uint32(len(w.buf)-5) < n {
				break
			}
			payload := w.buf[5 : 5+n]
			w.buf = w.buf[5+n:]
			if flag&0x80 != 0 {
				if strings.Contains(string(payload), "grpc-status") {
					t.Fatalf("stream ended waiting for %s: %q", what, payload)
				}
				continue // response headers
			}
			var f parleyv1.ConnectResponse
			if err := proto.Unmarshal(payload, &f); err != nil {
				t.Fatal(err)
			}
			if match(&f) {
				return
			}
		}
		p, err := w.readMessage()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("timed out waiting for %s over wss", what)
			}
			t.Fatalf("waiting for %s over wss: %v", what, err)
		}
		w.buf = append(w.buf, p...)
	}
}
