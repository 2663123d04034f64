package main

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/config"
)

const chatHelp = `commands:
  /help          this help
  /who           members of the room (* = online)
  /history [N]   the last N messages again (default 20)
  /quit          leave (Ctrl-C and end of input too)
anything else is sent to the room; a line starting with "//" sends it minus one "/".
`

// chatConfig configures `parley chat`.
type chatConfig struct {
	Addr     string
	User     string
	Password string
	SignUp   bool
	Room     string
	History  int
	TLS      bool   // dial with TLS (system roots unless TLSCA)
	TLSCA    string // PEM file of the CA(s) to trust; implies TLS
}

func (c *chatConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:8080", "Parley server address HOST:PORT (gRPC; cleartext unless -tls)")
	fs.BoolVar(&c.TLS, "tls", false, "connect with TLS, verifying the server's certificate for HOST against the system's roots (or -tls-ca)")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "PEM file of the CA certificate(s) to trust instead of the system's (implies -tls)")
	fs.StringVar(&c.User, "user", "", "username (required)")
	fs.StringVar(&c.Password, "password", "", "password (better: the PARLEY_PASSWORD environment variable)")
	fs.BoolVar(&c.SignUp, "signup", false, "sign the user up first (logs in if the name is taken)")
	fs.StringVar(&c.Room, "room", "", "room id or name: a public room is joined, an unknown name is created (empty: choose from a list)")
	fs.IntVar(&c.History, "history", 20, "messages of history to print on start (0-200)")
}

func (c *chatConfig) validate() error {
	switch {
	case c.User == "":
		return errors.New("user is required (-user or PARLEY_USER)")
	case c.Password == "":
		return errors.New("password is required (PARLEY_PASSWORD or -password)")
	case c.History < 0 || c.History > 200:
		return fmt.Errorf("history must be 0-200, got %d", c.History)
	}
	return nil
}

// transportCredentials is cleartext, or TLS verifying the certificate for
// the host of Addr against the system's roots or the CA(s) of TLSCA.
func (c *chatConfig) transportCredentials() (credentials.TransportCredentials, error) {
	if !c.TLS && c.TLSCA == "" {
		return insecure.NewCredentials(), nil
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return nil, fmt.Errorf("addr %q: %w", c.Addr, err)
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("tls-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls-ca %s: no PEM certificate in it", c.TLSCA)
		}
	}
	return credentials.NewTLS(tc), nil
}

// runChat is `parley chat`: a line-oriented terminal client built on the
// generated Go stubs. Messages go to stdout, one per line; status lines
// (prefixed "* ") go to stderr.
func runChat(ctx context.Context, args []string) error {
	return chatMain(ctx, args, os.Stdin, os.Stdout, os.Stderr)
}

func chatMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("parley chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: parley chat -user NAME [-signup] [-room ID|NAME] [-addr HOST:PORT] [-tls [-tls-ca FILE]] (password in PARLEY_PASSWORD)")
		fs.PrintDefaults()
		fmt.Fprint(stderr, "\n"+chatHelp)
	}
	var cfg chatConfig
	cfg.flags(fs)
	if err := config.Parse(fs, args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	creds, err := cfg.transportCredentials()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(cfg.Addr,
		grpc.WithTransportCredentials(creds),
		// Notice a dead connection within ~45 s so the stream reconnects.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 15 * time.Second}),
	)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := &chatClient{
		cfg:   cfg,
		out:   stdout,
		info:  stderr,
		auth:  parleyv1.NewAuthServiceClient(conn),
		rooms: parleyv1.NewRoomServiceClient(conn),
		chat:  parleyv1.NewChatServiceClient(conn),
		lines: readLines(stdin),
	}
	err = c.run(ctx)
	if ctx.Err() != nil {
		c.status("bye")
		return nil
	}
	return err
}

// readLines delivers stdin's lines on a channel, closed at end of input.
func readLines(r io.Reader) <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			ch <- strings.TrimRight(sc.Text(), "\r")
		}
	}()
	return ch
}

// chatClient is one terminal session. Only the goroutine running run uses
// it (the stream's receive loop hands frames over a channel).
type chatClient struct {
	cfg   chatConfig
	out   io.Writer // messages
	info  io.Writer // status lines
	auth  parleyv1.AuthServiceClient
	rooms parleyv1.RoomServiceClient
	chat  parleyv1.ChatServiceClient
	lines <-chan string // nil once stdin ended

	user   *parleyv1.User
	tokens *parleyv1.TokenPair
	room   *parleyv1.Room
	pos    *parleyv1.RoomPosition // last message printed
	eof    bool                   // stdin ended: leave once nothing is pending

	// Sends not yet acknowledged, in order; resent with the same
	// client_msg_id after a reconnect (the server deduplicates).
	pending []pendingSend
	nextID  int
	idBase  string
	ackSeq  int64 // highest seq acknowledged to us: printed before leaving at end of input
}

type pendingSend struct{ id, body string }

// errLeave ends the session without an error (/quit, end of input).
var errLeave = errors.New("leave")

func (c *chatClient) status(format string, args ...any) {
	fmt.Fprintf(c.info, "* "+format+"\n", args...)
}

func (c *chatClient) ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.tokens.GetAccessToken())
}

// call runs a unary call with the access token; when the token has expired
// it refreshes it (or logs in again) and retries once.
func (c *chatClient) call(ctx context.Context, f func(ctx context.Context) error) error {
	err := f(c.ctx(ctx))
	if status.Code(err) != codes.Unauthenticated {
		return err
	}
	if rerr := c.reauth(ctx); rerr != nil {
		return err
	}
	return f(c.ctx(ctx))
}

func (c *chatClient) login(ctx context.Context) error {
	if c.cfg.SignUp {
		resp, err := c.auth.SignUp(ctx, &parleyv1.SignUpRequest{Username: c.cfg.User, Password: c.cfg.Password})
		if err == nil {
			c.user, c.tokens = resp.GetUser(), resp.GetTokens()
			c.status("signed up as %s", c.user.GetUsername())
			return nil
		}
		if status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("sign up: %s", status.Convert(err).Message())
		}
	}
	resp, err := c.auth.Login(ctx, &parleyv1.LoginRequest{Username: c.cfg.User, Password: c.cfg.Password})
	if err != nil {
		return fmt.Errorf("login: %s", status.Convert(err).Message())
	}
	c.user, c.tokens = resp.GetUser(), resp.GetTokens()
	c.status("logged in as %s", c.user.GetUsername())
	return nil
}

// reauth gets a fresh access token: Refresh, or a new login if that fails.
func (c *chatClient) reauth(ctx context.Context) error {
	resp, err := c.auth.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: c.tokens.GetRefreshToken()})
	if err == nil {
		c.tokens = resp.GetTokens()
		return nil
	}
	saved := c.cfg.SignUp
	c.cfg.SignUp = false
	defer func() { c.cfg.SignUp = saved }()
	return c.login(ctx)
}

func (c *chatClient) run(ctx context.Context) error {
	if err := c.login(ctx); err != nil {
		return err
	}
	c.idBase = randomID()
	if err := c.pickRoom(ctx); err != nil {
		return err
	}
	if err := c.printHistory(ctx, c.cfg.History); err != nil {
		return err
	}
	c.status("in #%s (%s); type a message and press Enter, /help for commands", c.room.GetName(), c.room.GetRoomId())

	backoff := newBackoff()
	for {
		subscribed, err := c.session(ctx)
		if errors.Is(err, errLeave) || ctx.Err() != nil {
			return nil
		}
		code := status.Code(err)
		switch code {
		case codes.Unauthenticated:
			if rerr := c.reauth(ctx); rerr != nil {
				return rerr
			}
		case codes.NotFound, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition:
			return fmt.Errorf("stream: %s", status.Convert(err).Message())
		}
		if subscribed {
			backoff.reset()
		}
		d := backoff.next()
		c.status("disconnected (%s: %s); reconnecting in %s", code, status.Convert(err).Message(), d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// pickRoom resolves -room (an id, or a name: joined rooms first, then public
// ones, else a new public room), or asks on stdin when it is empty.
func (c *chatClient) pickRoom(ctx context.Context) error {
	want := c.cfg.Room
	if want == "" {
		var err error
		if want, err = c.askRoom(ctx); err != nil {
			return err
		}
	}
	var got *parleyv1.GetRoomResponse
	err := c.call(ctx, func(ctx context.Context) (err error) {
		got, err = c.rooms.GetRoom(ctx, &parleyv1.GetRoomRequest{RoomId: want})
		return err
	})
	switch status.Code(err) {
	case codes.OK:
		return c.enter(ctx, got.GetRoom())
	case codes.NotFound, codes.InvalidArgument:
	default:
		return fmt.Errorf("get room: %s", status.Convert(err).Message())
	}
	for _, filter := range []parleyv1.RoomFilter{parleyv1.RoomFilter_ROOM_FILTER_JOINED, parleyv1.RoomFilter_ROOM_FILTER_PUBLIC} {
		rooms, err := c.listRooms(ctx, filter)
		if err != nil {
			return err
		}
		for _, r := range rooms {
			if r.GetName() == want {
				return c.enter(ctx, r)
			}
		}
	}
	var created *parleyv1.CreateRoomResponse
	err = c.call(ctx, func(ctx context.Context) (err error) {
		created, err = c.rooms.CreateRoom(ctx, &parleyv1.CreateRoomRequest{Name: want, Visibility: parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC})
		return err
	})
	if err != nil {
		return fmt.Errorf("create room %q: %s", want, status.Convert(err).Message())
	}
	c.status("created public room #%s (%s)", want, created.GetRoom().GetRoomId())
	c.room = created.GetRoom()
	return nil
}

// enter joins r when it is public (joining twice is fine) and makes it current.
func (c *chatClient) enter(ctx context.Context, r *parleyv1.Room) error {
	if r.GetVisibility() == parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC {
		err := c.call(ctx, func(ctx context.Context) error {
			_, err := c.rooms.JoinRoom(ctx, &parleyv1.JoinRoomRequest{RoomId: r.GetRoomId()})
			return err
		})
		if err != nil {
			return fmt.Errorf("join #%s: %s", r.GetName(), status.Convert(err).Message())
		}
	}
	c.room = r
	return nil
}

func (c *chatClient) listRooms(ctx context.Context, filter parleyv1.RoomFilter) ([]*parleyv1.Room, error) {
	var all []*parleyv1.Room
	req := &parleyv1.ListRoomsRequest{Filter: filter, PageSize: 100}
	for page := 0; page < 10; page++ {
		var resp *parleyv1.ListRoomsResponse
		err := c.call(ctx, func(ctx context.Context) (err error) {
			resp, err = c.rooms.ListRooms(ctx, req)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("list rooms: %s", status.Convert(err).Message())
		}
		all = append(all, resp.GetRooms()...)
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	return all, nil
}

// askRoom lists joined and public rooms and reads a choice from stdin.
func (c *chatClient) askRoom(ctx context.Context) (string, error) {
	joined, err := c.listRooms(ctx, parleyv1.RoomFilter_ROOM_FILTER_JOINED)
	if err != nil {
		return "", err
	}
	public, err := c.listRooms(ctx, parleyv1.RoomFilter_ROOM_FILTER_PUBLIC)
	if err != nil {
		return "", err
	}
	seen := map[string]bool{}
	var choices []*parleyv1.Room
	for _, r := range append(joined, public...) {
		if !seen[r.GetRoomId()] {
			seen[r.GetRoomId()] = true
			choices = append(choices, r)
		}
	}
	for i, r := range choices {
		mark := " "
		if i < len(joined) {
			mark = "*"
		}
		fmt.Fprintf(c.info, "%3d %s #%s  %s\n", i+1, mark, r.GetName(), r.GetTopic())
	}
	fmt.Fprint(c.info, "room (number, name or id; a new name creates a public room; * = joined): ")
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case line, ok := <-c.lines:
		line = strings.TrimSpace(line)
		if !ok || line == "" {
			return "", errors.New("no room chosen")
		}
		if n, err := strconv.Atoi(line); err == nil && n >= 1 && n <= len(choices) {
			return choices[n-1].GetRoomId(), nil
		}
		return line, nil
	}
}

// printHistory prints the room's last n messages, oldest first, and moves
// the position to the newest.
func (c *chatClient) printHistory(ctx context.Context, n int) error {
	if n == 0 {
		return nil
	}
	var resp *parleyv1.ListMessagesResponse
	err := c.call(ctx, func(ctx context.Context) (err error) {
		resp, err = c.chat.ListMessages(ctx, &parleyv1.ListMessagesRequest{RoomId: c.room.GetRoomId(), PageSize: int32(n)})
		return err
	})
	if err != nil {
		return fmt.Errorf("history: %s", status.Convert(err).Message())
	}
	msgs := resp.GetMessages() // newest first
	for i := len(msgs) - 1; i >= 0; i-- {
		c.printMessage(msgs[i], true)
	}
	return nil
}

// printMessage prints m unless it is at or before the position (a replay
// overlapping history); force prints it anyway (history on request).
func (c *chatClient) printMessage(m *parleyv1.Message, force bool) {
	if !force && c.pos != nil && m.GetEpoch() == c.pos.GetEpoch() && m.GetSeq() <= c.pos.GetSeq() {
		return
	}
	ts := m.GetCreateTime().AsTime().Local().Format("15:04:05")
	fmt.Fprintf(c.out, "%s %s: %s\n", ts, m.GetSenderUsername(), m.GetBody())
	if c.pos == nil || m.GetEpoch() != c.pos.GetEpoch() || m.GetSeq() > c.pos.GetSeq() {
		c.pos = &parleyv1.RoomPosition{Epoch: m.GetEpoch(), Seq: m.GetSeq()}
	}
}

// session runs one Connect stream until it fails, the user leaves, or input
// ends with nothing left to acknowledge. It reports whether the stream got
// as far as Subscribed.
func (c *chatClient) session(ctx context.Context) (subscribed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.chat.Connect(c.ctx(sctx))
	if err != nil {
		return false, err
	}
	frames := make(chan *parleyv1.ConnectResponse)
	recvErr := make(chan error, 1)
	go func() {
		for {
			f, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case frames <- f:
			case <-sctx.Done():
				return
			}
		}
	}()
	sub := &parleyv1.Subscribe{RoomId: c.room.GetRoomId()}
	if c.pos != nil {
		sub.ResumeFrom = c.pos
	}
	if err := stream.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: sub}}); err != nil {
		return false, c.streamErr(err, recvErr)
	}
	send := func(id, body string) error {
		return stream.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{
			RoomId: c.room.GetRoomId(), ClientMsgId: id, Body: body,
		}}})
	}
	leave := func() (bool, error) {
		_ = stream.CloseSend()
		return true, errLeave
	}
	// At end of input, leave once every line is acknowledged and came back
	// on the stream (or after a grace period).
	var leaveBy <-chan time.Time
	done := func() bool {
		if !c.eof || len(c.pending) > 0 {
			return false
		}
		if c.pos.GetSeq() >= c.ackSeq {
			return true
		}
		if leaveBy == nil {
			leaveBy = time.After(3 * time.Second)
		}
		return false
	}

	var markRead <-chan time.Time // debounced read marker
	for {
		var input <-chan string
		if subscribed && !c.eof {
			input = c.lines // hold typed lines until the subscription is live
		}
		select {
		case <-ctx.Done():
			_ = stream.CloseSend()
			return subscribed, ctx.Err()
		case err := <-recvErr:
			return subscribed, err
		case <-leaveBy:
			return leave()
		case <-markRead:
			markRead = nil
			if c.pos != nil {
				_ = stream.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_MarkRead{MarkRead: &parleyv1.MarkReadRequest{
					RoomId: c.room.GetRoomId(), Position: c.pos,
				}}})
			}
		case line, ok := <-input:
			if !ok {
				c.eof = true
				if done() {
					return leave()
				}
				continue
			}
			body, isCmd := strings.CutPrefix(line, "/")
			if isCmd && !strings.HasPrefix(body, "/") {
				if err := c.command(ctx, body); err != nil {
					if errors.Is(err, errLeave) {
						return leave()
					}
					c.status("%v", err)
				}
				continue
			}
			if isCmd {
				line = body // "//x" sends "/x"
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			c.nextID++
			p := pendingSend{id: fmt.Sprintf("%s-%d", c.idBase, c.nextID), body: line}
			c.pending = append(c.pending, p)
			if err := send(p.id, p.body); err != nil {
				return subscribed, c.streamErr(err, recvErr)
			}
		case f := <-frames:
			switch f := f.GetFrame().(type) {
			case *parleyv1.ConnectResponse_Subscribed:
				subscribed = true
				if head := f.Subscribed.GetHead(); c.pos == nil && head.GetSeq() > 0 {
					// History was empty when we looked; catch up on what came since.
					if err := c.printHistory(ctx, int(min(head.GetSeq(), 200))); err != nil {
						c.status("%v", err)
					}
				}
				for _, p := range c.pending { // resend after a reconnect; deduplicated by id
					if err := send(p.id, p.body); err != nil {
						return subscribed, c.streamErr(err, recvErr)
					}
				}
			case *parleyv1.ConnectResponse_Message:
				c.printMessage(f.Message, false)
				if markRead == nil {
					markRead = time.After(time.Second)
				}
				if done() {
					return leave()
				}
			case *parleyv1.ConnectResponse_SendAck:
				ack := f.SendAck
				i := slices.IndexFunc(c.pending, func(p pendingSend) bool { return p.id == ack.GetClientMsgId() })
				if i < 0 {
					break
				}
				body := c.pending[i].body
				c.pending = slices.Delete(c.pending, i, i+1)
				if e := ack.GetError(); e != nil {
					c.status("not sent (%s: %s): %s", codes.Code(e.GetCode()), e.GetMessage(), body)
				} else if m := ack.GetMessage(); m.GetEpoch() == c.pos.GetEpoch() || c.pos == nil {
					c.ackSeq = max(c.ackSeq, m.GetSeq())
				}
				if done() {
					return leave()
				}
			case *parleyv1.ConnectResponse_ResyncRequired:
				c.status("missed messages cannot be replayed (%s); reloading history", f.ResyncRequired.GetReason())
				c.pos = nil
				if err := c.printHistory(ctx, max(c.cfg.History, 20)); err != nil {
					c.status("%v", err)
				}
				if head := f.ResyncRequired.GetHead(); c.pos == nil || c.pos.GetEpoch() != head.GetEpoch() || c.pos.GetSeq() < head.GetSeq() {
					c.pos = head
				}
			case *parleyv1.ConnectResponse_MessageWithdrawn:
				c.status("message #%d was withdrawn (it never became durable)", f.MessageWithdrawn.GetSeq())
			case *parleyv1.ConnectResponse_SubscribeError:
				return subscribed, status.Error(codes.Code(f.SubscribeError.GetError().GetCode()), f.SubscribeError.GetError().GetMessage())
			case *parleyv1.ConnectResponse_Presence:
				if p := f.Presence; p.GetUserId() != c.user.GetUserId() {
					state := "offline"
					if p.GetOnline() {
						state = "online"
					}
					c.status("%s is %s", p.GetUsername(), state)
				}
			}
		}
	}
}

// streamErr returns the stream's real status after a failed Send (Send
// reports only io.EOF; Recv has the status).
func (c *chatClient) streamErr(err error, recvErr <-chan error) error {
	if errors.Is(err, io.EOF) {
		select {
		case rerr := <-recvErr:
			return rerr
		case <-time.After(5 * time.Second):
		}
	}
	return err
}

func (c *chatClient) command(ctx context.Context, cmd string) error {
	name, arg, _ := strings.Cut(strings.TrimSpace(cmd), " ")
	switch name {
	case "quit", "exit", "q":
		return errLeave
	case "help", "h", "?":
		fmt.Fprint(c.info, chatHelp)
	case "history":
		n := 20
		if arg != "" {
			v, err := strconv.Atoi(strings.TrimSpace(arg))
			if err != nil || v < 1 || v > 200 {
				return errors.New("usage: /history [1-200]")
			}
			n = v
		}
		return c.printHistory(ctx, n)
	case "who":
		var resp *parleyv1.ListMembersResponse
		err := c.call(ctx, func(ctx context.Context) (err error) {
			resp, err = c.rooms.ListMembers(ctx, &parleyv1.ListMembersRequest{RoomId: c.room.GetRoomId(), PageSize: 500})
			return err
		})
		if err != nil {
			return fmt.Errorf("who: %s", status.Convert(err).Message())
		}
		var names []string
		for _, m := range resp.GetMembers() {
			n := m.GetUser().GetUsername()
			if m.GetOnline() {
				n += "*"
			}
			names = append(names, n)
		}
		c.status("#%s: %s", c.room.GetName(), strings.Join(names, " "))
	default:
		return fmt.Errorf("unknown command /%s (try /help)", name)
	}
	return nil
}

// backoff is capped exponential backoff with full jitter.
type backoff struct{ n int }

func newBackoff() *backoff { return &backoff{} }
func (b *backoff) reset()  { b.n = 0 }
func (b *backoff) next() time.Duration {
	d := min(250*time.Millisecond<<b.n, 5*time.Second)
	if b.n < 5 {
		b.n++
	}
	return d/2 + rand.N(d/2+1)
}

// randomID prefixes this session's client_msg_ids.
func randomID() string {
	var b [6]byte
	_, _ = crand.Read(b[:])
	return "chat-" + hex.EncodeToString(b[:])
}
