package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/chat"
)

// slowServer plays Parley's side of fanout-v1 with what the load generator
// must handle: it ends chosen member streams with ResourceExhausted, as the
// server does to a stream that falls behind, and replays a resumed stream's
// gap. One room position per message, client_msg_ids deduplicated.
type slowServer struct {
	parleyv1.UnimplementedAuthServiceServer
	parleyv1.UnimplementedRoomServiceServer
	parleyv1.UnimplementedChatServiceServer

	mu      sync.Mutex
	rooms   map[string]*slowRoom
	resumed []*parleyv1.RoomPosition // ResumeFrom of each resuming Subscribe
	// drops: username suffix -> deliveries after which the streams of that
	// user are ended, one count per stream in turn. Tokens are the usernames
	// here.
	drops map[string][]int
	// newEpoch: the first resume finds its room's seq counter lost (a new
	// epoch) and gets ResyncRequired instead of a replay.
	newEpoch bool
	// slowReason: the ends carry the server's slow-consumer ErrorInfo;
	// without it they look like another ResourceExhausted (a rate limit).
	slowReason bool
}

type slowRoom struct {
	epoch   string
	msgs    []*parleyv1.Message
	ids     map[string]*parleyv1.Message // client_msg_id -> message
	streams map[*slowStream]bool
}

type slowStream struct {
	mu        sync.Mutex
	srv       parleyv1.ChatService_ConnectServer
	batches   bool // StreamOptions.message_batches: one-message MessageBatch frames
	delivered int
	dropAfter int // 0: never
	dropped   chan struct{}
}

func (s *slowStream) deliver(m *parleyv1.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dropAfter > 0 && s.delivered >= s.dropAfter {
		return // being ended
	}
	if s.batches {
		_ = s.srv.Send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_MessageBatch{MessageBatch: &parleyv1.MessageBatch{Messages: []*parleyv1.Message{m}}}})
	} else {
		_ = s.srv.Send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Message{Message: m}})
	}
	s.delivered++
	if s.dropAfter > 0 && s.delivered == s.dropAfter {
		close(s.dropped)
	}
}

func (f *slowServer) SignUp(_ context.Context, req *parleyv1.SignUpRequest) (*parleyv1.SignUpResponse, error) {
	// The fake's token is the username.
	return &parleyv1.SignUpResponse{Tokens: &parleyv1.TokenPair{AccessToken: req.Username}}, nil
}

func (f *slowServer) CreateRoom(_ context.Context, req *parleyv1.CreateRoomRequest) (*parleyv1.CreateRoomResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("room%d", len(f.rooms))
	f.rooms[id] = &slowRoom{epoch: "e1", ids: map[string]*parleyv1.Message{}, streams: map[*slowStream]bool{}}
	return &parleyv1.CreateRoomResponse{Room: &parleyv1.Room{RoomId: id, Name: req.Name}}, nil
}

func (f *slowServer) JoinRoom(_ context.Context, req *parleyv1.JoinRoomRequest) (*parleyv1.JoinRoomResponse, error) {
	return &parleyv1.JoinRoomResponse{Room: &parleyv1.Room{RoomId: req.RoomId}}, nil
}

func (f *slowServer) Connect(srv parleyv1.ChatService_ConnectServer) error {
	tok := bearerToken(srv.Context())
	st := &slowStream{srv: srv, dropped: make(chan struct{})}
	f.mu.Lock()
	for suffix, ns := range f.drops {
		if strings.HasSuffix(tok, suffix) && len(ns) > 0 {
			st.dropAfter, f.drops[suffix] = ns[0], ns[1:]
		}
	}
	f.mu.Unlock()
	var room *slowRoom
	defer func() {
		if room != nil {
			f.mu.Lock()
			delete(room.streams, st)
			f.mu.Unlock()
		}
	}()
	frames := make(chan *parleyv1.ConnectRequest)
	errs := make(chan error, 1)
	go func() {
		for {
			req, err := srv.Recv()
			if err != nil {
				errs <- err
				return
			}
			select {
			case frames <- req:
			case <-srv.Context().Done():
				return
			}
		}
	}()
	for {
		var req *parleyv1.ConnectRequest
		select {
		case <-st.dropped:
			// Frames the client sends meanwhile are never read, as when a
			// server ends a stream with frames of it still in flight: only
			// sending the unacknowledged ones again saves those.
			time.Sleep(100 * time.Millisecond)
			if !f.slowReason {
				return status.Error(codes.ResourceExhausted, "frame rate limit exceeded")
			}
			st, _ := status.New(codes.ResourceExhausted, "stream is not reading fast enough; reconnect and resume from your last position").
				WithDetails(&errdetails.ErrorInfo{Reason: chat.SlowConsumerReason, Domain: chat.ErrorDomain})
			return st.Err()
		case err := <-errs:
			if err == io.EOF {
				return nil
			}
			return err
		case req = <-frames:
		}
		switch v := req.Frame.(type) {
		case *parleyv1.ConnectRequest_Options:
			st.mu.Lock()
			st.batches = v.Options.MessageBatches
			st.mu.Unlock()
		case *parleyv1.ConnectRequest_Subscribe:
			f.mu.Lock()
			room = f.rooms[v.Subscribe.RoomId]
			if from := v.Subscribe.ResumeFrom; from != nil {
				f.resumed = append(f.resumed, from)
				if f.newEpoch {
					f.newEpoch, room.epoch = false, "e2"
				}
				if from.Epoch != room.epoch {
					// As the server does: the gap cannot be replayed.
					st.mu.Lock()
					_ = srv.Send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_ResyncRequired{ResyncRequired: &parleyv1.ResyncRequired{
						RoomId: v.Subscribe.RoomId, Head: &parleyv1.RoomPosition{Epoch: room.epoch, Seq: int64(len(room.msgs))}}}})
					st.mu.Unlock()
				} else {
					for _, m := range room.msgs[from.Seq:] {
						st.deliver(m)
					}
				}
			}
			room.streams[st] = true
			st.mu.Lock()
			_ = srv.Send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Subscribed{Subscribed: &parleyv1.Subscribed{
				RoomId: v.Subscribe.RoomId, Head: &parleyv1.RoomPosition{Epoch: room.epoch, Seq: int64(len(room.msgs))}}}})
			st.mu.Unlock()
			f.mu.Unlock()
		case *parleyv1.ConnectRequest_Send:
			f.mu.Lock()
			m, dup := room.ids[v.Send.ClientMsgId]
			if !dup {
				m = &parleyv1.Message{RoomId: v.Send.RoomId, Epoch: room.epoch, Seq: int64(len(room.msgs) + 1), ClientMsgId: v.Send.ClientMsgId, Body: v.Send.Body}
				room.msgs = append(room.msgs, m)
				room.ids[m.ClientMsgId] = m
				for s := range room.streams {
					s.deliver(m)
				}
			}
			f.mu.Unlock()
			st.mu.Lock()
			_ = srv.Send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SendAck{SendAck: &parleyv1.SendAck{ClientMsgId: m.ClientMsgId, Message: m}}})
			st.mu.Unlock()
		}
	}
}

func serveSlow(t *testing.T, f *slowServer) string {
	t.Helper()
	gs := grpc.NewServer()
	parleyv1.RegisterAuthServiceServer(gs, f)
	parleyv1.RegisterRoomServiceServer(gs, f)
	parleyv1.RegisterChatServiceServer(gs, f)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// The load generator resumes a member stream the server ends as too slow,
// from the last position it received, and loses nothing: neither a
// receiver's deliveries nor a publisher's sends. With MessageBatch frames
// and with one Message frame per delivery.
func TestFanoutResumesAfterSlowConsumerDisconnect(t *testing.T) {
	for _, oneFrame := range []bool{false, true} {
		t.Run(fmt.Sprintf("one_frame_per_message=%v", oneFrame), func(t *testing.T) {
			// Usernames are "b<run>-<room>-<member>" (2 rooms): end the second
			// member of room 0 after 20 deliveries, and the publisher of
			// room 1 (member 0) after 30.
			f := &slowServer{rooms: map[string]*slowRoom{}, drops: map[string][]int{"-0-1": {20}, "-1-0": {30}}, slowReason: true}
			cfg := FanoutConfig{
				Addr: serveSlow(t, f), Rooms: 2, Members: 3, Rates: []int{100}, Step: 2 * time.Second,
				Warmup: 100 * time.Millisecond, Grace: 3 * time.Second, BodyBytes: 64, Conns: 2, Progress: io.Discard,
				OneFramePerMessage: oneFrame,
			}
			rep, err := RunFanout(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			s := rep.Steps[0]
			if s.Lost != 0 || s.Dup != 0 || s.Reordered != 0 || s.Failed != 0 || s.Delivered <= 0 || s.Resumed != 2 {
				t.Fatalf("step after two slow-consumer disconnects: %+v, notes %q", s, rep.Notes)
			}
			f.mu.Lock()
			resumed := f.resumed
			f.mu.Unlock()
			if len(resumed) != 2 {
				t.Fatalf("%d resuming subscribes, want 2", len(resumed))
			}
			for _, p := range resumed {
				if p.Epoch != "e1" || (p.Seq != 20 && p.Seq != 30) {
					t.Errorf("resumed from %v, want epoch e1 and the last delivered seq (20 or 30)", p)
				}
			}
			if !strings.Contains(strings.Join(rep.Notes, "\n"), "as too slow 2 time(s)") {
				t.Errorf("notes do not report the two resumptions: %q", rep.Notes)
			}
		})
	}
}

// Another ResourceExhausted (here one without the slow-consumer reason, as
// a rate limit) ends the stream for good: resuming would only repeat it.
func TestFanoutDoesNotResumeOtherResourceExhausted(t *testing.T) {
	f := &slowServer{rooms: map[string]*slowRoom{}, drops: map[string][]int{"-0-1": {20}}}
	cfg := FanoutConfig{
		Addr: serveSlow(t, f), Rooms: 2, Members: 3, Rates: []int{100}, Step: time.Second,
		Warmup: 100 * time.Millisecond, Grace: time.Second, BodyBytes: 64, Conns: 2, Progress: io.Discard,
	}
	rep, err := RunFanout(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Steps[0]; s.Lost == 0 || s.Resumed != 0 {
		t.Fatalf("step after a rate-limit end: %+v; want the stream's later deliveries lost and no resume", s)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.resumed) != 0 || !strings.Contains(strings.Join(rep.Notes, "\n"), "a stream failed during the run: rpc error: code = ResourceExhausted desc = frame rate limit") {
		t.Fatalf("resumes %v, notes %q", f.resumed, rep.Notes)
	}
}

// After a resume that finds a new epoch (ResyncRequired: the gap is lost),
// the stream's next resume asks from the new epoch's position, and so gets
// its gap replayed instead of another ResyncRequired.
func TestFanoutResumesInTheNewEpoch(t *testing.T) {
	f := &slowServer{rooms: map[string]*slowRoom{}, drops: map[string][]int{"-0-1": {20, 25}}, slowReason: true, newEpoch: true}
	cfg := FanoutConfig{
		Addr: serveSlow(t, f), Rooms: 2, Members: 3, Rates: []int{100}, Step: 2 * time.Second,
		Warmup: 100 * time.Millisecond, Grace: 2 * time.Second, BodyBytes: 64, Conns: 2, Progress: io.Discard,
	}
	rep, err := RunFanout(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	resumed := f.resumed
	f.mu.Unlock()
	if len(resumed) != 2 || resumed[0].Epoch != "e1" || resumed[1].Epoch != "e2" || resumed[1].Seq <= resumed[0].Seq {
		t.Fatalf("resumed from %v, want e1 then e2 at a later position", resumed)
	}
	notes := strings.Join(rep.Notes, "\n")
	if !strings.Contains(notes, "1 resumed stream(s) got ResyncRequired") {
		t.Errorf("notes: %q, want one ResyncRequired", notes)
	}
	if s := rep.Steps[0]; s.Dup != 0 || s.Reordered != 0 || s.Resumed != 2 {
		t.Errorf("step: %+v", s)
	}
}

func TestResumeBackoff(t *testing.T) {
	var b resumeBackoff
	var got []string
	for _, seq := range []int64{20, 20, 20, 35, 35, 35, 35, 35, 35} {
		wait, ok := b.next(seq)
		got = append(got, fmt.Sprintf("%v/%v", wait, ok))
	}
	// At once after progress; 100, 200 ms... while none; giving up after
	// the fifth resume in a row that brought nothing.
	want := "0s/true 100ms/true 200ms/true 0s/true 100ms/true 200ms/true 400ms/true 800ms/true 0s/false"
	if strings.Join(got, " ") != want {
		t.Fatalf("waits %v, want %s", got, want)
	}
}
