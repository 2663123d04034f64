package chat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/fanout"
	"github.com/parleychat/parley/server/store"
)

// memStore is an in-memory stand-in for the room store and message history.
type memStore struct {
	mu      sync.Mutex
	rooms   map[string]store.Room
	members map[string]bool
	markers map[string]store.ReadMarker
	msgs    map[string]map[int64]*parleyv1.Message // room -> seq -> message
}

func (s *memStore) Room(_ context.Context, id string) (store.Room, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rooms[id]
	if !ok {
		return store.Room{}, apierr.ErrRoomNotFound
	}
	return r, nil
}

func (s *memStore) IsMember(_ context.Context, room, user string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.members[room+"/"+user], nil
}

func (s *memStore) RoomsOfUser(_ context.Context, user, after string, limit int) ([]store.Room, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Room
	for id, r := range s.rooms {
		if s.members[id+"/"+user] && id > after {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out[:min(limit, len(out))], nil
}

func (s *memStore) SetReadMarker(_ context.Context, room, user, epoch string, seq int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.markers == nil {
		s.markers = map[string]store.ReadMarker{}
	}
	if m, ok := s.markers[room+"/"+user]; ok && m.Seq >= seq {
		return false, nil
	}
	s.markers[room+"/"+user] = store.ReadMarker{RoomID: room, UserID: user, Epoch: epoch, Seq: seq}
	return true, nil
}

func (s *memStore) ReadMarkers(_ context.Context, user string, rooms []string) (map[string]store.ReadMarker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]store.ReadMarker{}
	for _, r := range rooms {
		if m, ok := s.markers[r+"/"+user]; ok {
			out[r] = m
		}
	}
	return out, nil
}

func (s *memStore) List(_ context.Context, room string, before, after int64, limit int) ([]*parleyv1.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*parleyv1.Message
	for _, m := range s.msgs[room] {
		if (after > 0 && m.Seq > after) || (after == 0 && (before == 0 || m.Seq < before)) {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return (out[i].Seq < out[j].Seq) == (after > 0) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (s *memStore) MaxSeq(_ context.Context, room string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var max int64
	for seq := range s.msgs[room] {
		if seq > max {
			max = seq
		}
	}
	return max, nil
}

// memLog acknowledges appends asynchronously and stores them (a persister
// with no lag), or fails them while failing is set.
type memLog struct {
	store   *memStore
	failing atomic.Bool
	// held, when set, makes the next Append wait for an outcome on it.
	held atomic.Pointer[chan error]
}

func (l *memLog) Append(_ context.Context, m *parleyv1.Message, done func(error)) {
	if h := l.held.Swap(nil); h != nil {
		go func() {
			if err := <-*h; err != nil {
				done(err)
				return
			}
			l.store.put(m)
			done(nil)
		}()
		return
	}
	go func() {
		if l.failing.Load() {
			done(errors.New("kafka: no ack"))
			return
		}
		l.store.put(m)
		done(nil)
	}()
}

type testEnv struct {
	svc    *Service
	store  *memStore
	log    *memLog
	broker *fanout.Redis
	issuer *auth.Issuer
	conn   *grpc.ClientConn
	redis  *miniredis.Miniredis
}

func newTestEnv(tb testing.TB, cfg Config) *testEnv {
	tb.Helper()
	return newTestEnvEnder(tb, cfg, true)
}

// newTestEnvEnder is newTestEnv; without ender, sessions cannot end their
// streams themselves (see statusWriter) and Connect reads on a goroutine of
// its own.
func newTestEnvEnder(tb testing.TB, cfg Config, ender bool) *testEnv {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	mr := miniredis.RunT(tb)
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{mr.Addr()}, DisableCache: true, AlwaysRESP2: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(rc.Close)
	broker := fanout.NewRedis(rc, fanout.Options{RecentCap: 50}, logger, reg)
	hub := fanout.NewHub(reg)
	go broker.Run(ctx, hub)
	ms := &memStore{rooms: map[string]store.Room{}, members: map[string]bool{}, msgs: map[string]map[int64]*parleyv1.Message{}}
	ml := &memLog{store: ms}
	svc, err := NewService(cfg, broker, ml, ms, ms, hub, logger, reg)
	if err != nil {
		tb.Fatal(err)
	}
	issuer, _ := auth.NewIssuer([]byte("0123456789abcdef0123456789abcdef"), time.Hour)
	eu, es := apierr.Interceptors(logger)
	au, as := issuer.Interceptors(nil)
	streamInterceptors := []grpc.StreamServerInterceptor{es, as}
	if !ender {
		streamInterceptors = append(streamInterceptors, hideStatusWriter)
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(eu, au), grpc.ChainStreamInterceptor(streamInterceptors...), grpc.ForceServerCodecV2(NewCodec()))
	parleyv1.RegisterChatServiceServer(gs, svc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go gs.Serve(ln)
	tb.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for !broker.Ready() {
		if time.Now().After(deadline) {
			tb.Fatal("broker never subscribed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &testEnv{svc: svc, store: ms, log: ml, broker: broker, issuer: issuer, conn: conn, redis: mr}
}

func (e *testEnv) room(tb testing.TB, id, vis string, members ...string) {
	tb.Helper()
	e.store.mu.Lock()
	e.store.rooms[id] = store.Room{ID: id, Visibility: vis}
	for _, m := range members {
		e.store.members[id+"/"+m] = true
	}
	e.store.mu.Unlock()
	if _, err := e.broker.InitRoom(context.Background(), id, 0); err != nil {
		tb.Fatal(err)
	}
}

func (e *testEnv) ctx(user string) context.Context {
	tok, _ := e.issuer.Issue(auth.Identity{UserID: user, Username: user})
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func (e *testEnv) client() parleyv1.ChatServiceClient { return parleyv1.NewChatServiceClient(e.conn) }

// stream is a test client's Connect stream with its received frames.
type stream struct {
	tb     testing.TB
	s      parleyv1.ChatService_ConnectClient
	mu     sync.Mutex
	frames []*parleyv1.ConnectResponse
	done   chan error
}

func (e *testEnv) connect(tb testing.TB, user string) *stream {
	tb.Helper()
	ctx, cancel := context.WithCancel(e.ctx(user))
	tb.Cleanup(cancel)
	s, err := e.client().Connect(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	st := &stream{tb: tb, s: s, done: make(chan error, 1)}
	go func() {
		for {
			f, err := s.Recv()
			if err != nil {
				st.done <- err
				return
			}
			st.mu.Lock()
			st.frames = append(st.frames, f)
			st.mu.Unlock()
		}
	}()
	return st
}

func (s *stream) send(req *parleyv1.ConnectRequest) {
	s.tb.Helper()
	if err := s.s.Send(req); err != nil {
		s.tb.Fatal(err)
	}
}

func (s *stream) subscribe(room string, from *parleyv1.RoomPosition) {
	s.tb.Helper()
	s.send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: room, ResumeFrom: from}}})
	s.waitFor("subscribed to "+room, func(f []*parleyv1.ConnectResponse) bool {
		for _, x := range f {
			if x.GetSubscribed().GetRoomId() == room || x.GetSubscribeError().GetRoomId() == room {
				return true
			}
		}
		return false
	})
}

func (s *stream) sendMsg(room, cmid, body string) {
	s.tb.Helper()
	s.send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{RoomId: room, ClientMsgId: cmid, Body: body}}})
}

func (s *stream) waitFor(what string, cond func([]*parleyv1.ConnectResponse) bool) []*parleyv1.ConnectResponse {
	s.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		f := append([]*parleyv1.ConnectResponse(nil), s.frames...)
		s.mu.Unlock()
		if cond(f) {
			return f
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("timed out waiting for %s; have %d frames", what, len(f))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func messages(f []*parleyv1.ConnectResponse) []*parleyv1.Message {
	var out []*parleyv1.Message
	for _, x := range f {
		if m := x.GetMessage(); m != nil {
			out = append(out, m)
		}
		out = append(out, x.GetMessageBatch().GetMessages()...)
	}
	return out
}

func acks(f []*parleyv1.ConnectResponse) []*parleyv1.SendAck {
	var out []*parleyv1.SendAck
	for _, x := range f {
		if a := x.GetSendAck(); a != nil {
			out = append(out, a)
		}
	}
	return out
}

func nMessages(n int) func([]*parleyv1.ConnectResponse) bool {
	return func(f []*parleyv1.ConnectResponse) bool { return len(messages(f)) >= n }
}

func TestTwoStreamsSeeSameOrder(t *testing.T) {
	for _, batches := range []bool{false, true} {
		for _, tick := range []time.Duration{0, 2 * time.Millisecond} {
			t.Run(fmt.Sprintf("message_batches=%v/delivery_tick=%s", batches, tick), func(t *testing.T) { testTwoStreamsSeeSameOrder(t, batches, tick) })
		}
	}
}

func testTwoStreamsSeeSameOrder(t *testing.T, batches bool, tick time.Duration) {
	e := newTestEnv(t, Config{SendRate: 1e6, SendBurst: 1e6, FrameRate: 1e6, FrameBurst: 1e6, DeliveryTick: tick})
	e.room(t, "r", store.VisibilityPublic, "a", "b")
	a, b := e.connect(t, "a"), e.connect(t, "b")
	for _, s := range []*stream{a, b} {
		s.send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Options{Options: &parleyv1.StreamOptions{MessageBatches: batches}}})
	}
	a.subscribe("r", nil)
	b.subscribe("r", nil)
	const n = 200
	for i := 0; i < n; i++ {
		a.sendMsg("r", fmt.Sprint("a", i), "from a")
		b.sendMsg("r", fmt.Sprint("b", i), "from b")
	}
	fa := a.waitFor("all messages at a", nMessages(2*n))
	fb := b.waitFor("all messages at b", nMessages(2*n))
	ma, mb := messages(fa), messages(fb)
	if len(ma) != 2*n || len(mb) != 2*n {
		t.Fatalf("a got %d messages, b %d; want %d each", len(ma), len(mb), 2*n)
	}
	for i := range ma {
		if ma[i].Seq != int64(i+1) || mb[i].MessageId != ma[i].MessageId {
			t.Fatalf("position %d: a has seq %d (%s), b has %s", i, ma[i].Seq, ma[i].MessageId, mb[i].MessageId)
		}
	}
	// Each sender's messages keep the order it sent them in (its sends are
	// published in batches, in order).
	next := map[string]int{}
	for _, m := range ma {
		who := m.ClientMsgId[:1]
		if want := fmt.Sprint(who, next[who]); m.ClientMsgId != want {
			t.Fatalf("seq %d is %s, want %s: a sender's order was broken", m.Seq, m.ClientMsgId, want)
		}
		next[who]++
	}
	for _, f := range append(fa, fb...) {
		if f.GetMessageBatch() != nil && !batches {
			t.Fatal("a MessageBatch frame on a stream that did not ask for batches")
		}
	}
	for _, ack := range acks(a.waitFor("acks", func(f []*parleyv1.ConnectResponse) bool { return len(acks(f)) == n })) {
		if ack.Error != nil || ack.Message.GetSeq() == 0 {
			t.Fatalf("ack %v", ack)
		}
	}
}

func TestResumeReplaysExactlyTheGap(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sent, cut int // messages sent, position the client had
	}{
		{"from cache", 30, 10},
		{"from store and cache", 120, 5}, // cache holds 50
		{"nothing missed", 10, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, Config{SendRate: 1e6, SendBurst: 1e6, FrameRate: 1e6, FrameBurst: 1e6})
			e.room(t, "r", store.VisibilityPublic, "a")
			c := e.client()
			var epoch string
			for i := 0; i < tc.sent; i++ {
				resp, err := c.SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: fmt.Sprint(i), Body: "x"})
				if err != nil {
					t.Fatal(err)
				}
				epoch = resp.Message.Epoch
			}
			s := e.connect(t, "a")
			s.subscribe("r", &parleyv1.RoomPosition{Epoch: epoch, Seq: int64(tc.cut)})
			s.sendMsg("r", "live", "after resume")
			f := s.waitFor("replay + live", nMessages(tc.sent-tc.cut+1))
			ms := messages(f)
			if len(ms) != tc.sent-tc.cut+1 {
				t.Fatalf("got %d messages, want %d", len(ms), tc.sent-tc.cut+1)
			}
			for i, m := range ms {
				if m.Seq != int64(tc.cut+i+1) {
					t.Fatalf("message %d has seq %d, want %d", i, m.Seq, tc.cut+i+1)
				}
			}
		})
	}
}

// Redis loses the room's state while a stream is subscribed: the next sends
// re-create the counter under a new epoch. The stream must get
// ResyncRequired and then every message of the new epoch from the recent
// cache, without depending on the store (which may lag behind).
func TestLostCounterNewEpochIsReplayedLive(t *testing.T) {
	e := newTestEnv(t, Config{SendRate: 1e6, SendBurst: 1e6, FrameRate: 1e6, FrameBurst: 1e6})
	e.room(t, "r", store.VisibilityPublic, "a", "b")
	watcher := e.connect(t, "b")
	watcher.subscribe("r", nil)
	if _, err := e.client().SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: "before", Body: "old epoch"}); err != nil {
		t.Fatal(err)
	}
	watcher.waitFor("the first message", nMessages(1))
	// Redis restarts empty: the room's counter, cache and dedupe keys are
	// gone, and this instance's subscription is down until it resubscribes,
	// so the first messages of the new epoch do not come live.
	e.redis.Close()
	e.redis.FlushAll()
	if err := e.redis.Restart(); err != nil {
		t.Fatal(err)
	}
	e.store.mu.Lock()
	e.store.msgs = map[string]map[int64]*parleyv1.Message{} // and the store has nothing yet
	e.store.mu.Unlock()
	e.log.held.Store(nil)
	var sent []string
	for i := 0; i < 5; i++ {
		var resp *parleyv1.SendMessageResponse
		var err error
		for try := 0; try < 50; try++ { // a real client retries while Redis comes back
			resp, err = e.client().SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: fmt.Sprint("after", i), Body: "new epoch"})
			if status.Code(err) != codes.Unavailable {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, resp.Message.MessageId)
	}
	f := watcher.waitFor("resync and the new epoch's 5 messages", nMessages(6))
	var got []string
	resynced := false
	for _, x := range f {
		if x.GetResyncRequired() != nil {
			resynced = true
		}
	}
	for _, m := range messages(f)[1:] {
		got = append(got, m.MessageId)
	}
	if !resynced || fmt.Sprint(got) != fmt.Sprint(sent) {
		t.Fatalf("resync %v; new epoch messages %v, want %v", resynced, got, sent)
	}
}

func TestResumeWithOtherEpochAsksForResync(t *testing.T) {
	e := newTestEnv(t, Config{})
	e.room(t, "r", store.VisibilityPublic, "a")
	s := e.connect(t, "a")
	s.subscribe("r", &parleyv1.RoomPosition{Epoch: "stale", Seq: 3})
	s.waitFor("resync", func(f []*parleyv1.ConnectResponse) bool {
		for _, x := range f {
			if x.GetResyncRequired().GetRoomId() == "r" {
				return true
			}
		}
		return false
	})
}

func TestRetryReturnsFirstMessage(t *testing.T) {
	e := newTestEnv(t, Config{})
	e.room(t, "r", store.VisibilityPublic, "a")
	c := e.client()
	req := &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: "same", Body: "once"}
	first, err := c.SendMessage(e.ctx("a"), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.SendMessage(e.ctx("a"), req)
	if err != nil {
		t.Fatal(err)
	}
	if again.Message.MessageId != first.Message.MessageId || again.Message.Seq != first.Message.Seq {
		t.Fatalf("retry gave %v, first was %v", again.Message, first.Message)
	}
	if n, _ := e.store.MaxSeq(context.Background(), "r"); n != 1 {
		t.Fatalf("max seq %d after a retry", n)
	}
}

func (s *memStore) put(m *parleyv1.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.msgs[m.RoomId] == nil {
		s.msgs[m.RoomId] = map[int64]*parleyv1.Message{}
	}
	s.msgs[m.RoomId][m.Seq] = m
}

// A send whose record is slow gets Unavailable at the send timeout; its retry
// is answered with the same message (and its own record makes it durable).
// When the first record then fails, the message must not be withdrawn.
func TestFailedRecordAfterAnsweredRetryIsNotWithdrawn(t *testing.T) {
	e := newTestEnv(t, Config{SendTimeout: 300 * time.Millisecond})
	e.room(t, "r", store.VisibilityPublic, "a", "b")
	watcher := e.connect(t, "b")
	watcher.subscribe("r", nil)
	outcome := make(chan error, 1)
	e.log.held.Store(&outcome)
	req := &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: "x", Body: "hello"}
	if _, err := e.client().SendMessage(e.ctx("a"), req); status.Code(err) != codes.Unavailable {
		t.Fatalf("send with a record that does not come back: %v, want Unavailable", err)
	}
	resp, err := e.client().SendMessage(e.ctx("a"), req)
	if err != nil || resp.Message.Seq != 1 {
		t.Fatalf("retry: %v %v, want the first message (seq 1)", resp, err)
	}
	outcome <- errors.New("kafka: unable to dial") // the first record fails now
	watcher.send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Ping{Ping: &parleyv1.Ping{Nonce: 9}}})
	time.Sleep(300 * time.Millisecond) // give a (wrong) withdrawal time to arrive
	f := watcher.waitFor("pong", func(f []*parleyv1.ConnectResponse) bool {
		for _, x := range f {
			if x.GetPong().GetNonce() == 9 {
				return true
			}
		}
		return false
	})
	for _, x := range f {
		if x.GetMessageWithdrawn() != nil {
			t.Fatal("the message was withdrawn although its retry was acknowledged")
		}
	}
	if got, _ := e.store.List(context.Background(), "r", 0, 0, 10); len(got) != 1 || got[0].MessageId != resp.Message.MessageId {
		t.Fatalf("stored %v, want the acknowledged message once", got)
	}
}

func TestKafkaFailureWithdraws(t *testing.T) {
	e := newTestEnv(t, Config{})
	e.room(t, "r", store.VisibilityPublic, "a", "b")
	watcher := e.connect(t, "b")
	watcher.subscribe("r", nil)
	e.log.failing.Store(true)
	_, err := e.client().SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: "x", Body: "lost"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("send with Kafka down: %v, want Unavailable", err)
	}
	watcher.waitFor("withdrawal", func(f []*parleyv1.ConnectResponse) bool {
		for _, x := range f {
			if x.GetMessageWithdrawn().GetSeq() == 1 {
				return true
			}
		}
		return false
	})
	e.log.failing.Store(false)
	resp, err := e.client().SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: "x", Body: "lost"})
	if err != nil || resp.Message.Seq != 2 {
		t.Fatalf("retry after recovery: %v %v", resp, err)
	}
}

func TestSlowConsumerIsDisconnectedOthersAreNot(t *testing.T) {
	// A queue of 128: live messages wait for the delivery tick, so a
	// reading client's queue holds what arrived since its writer last ran;
	// with 16, a busy machine that delayed the writer by a few milliseconds
	// ended the fast client too (1 run in 6 beside other packages' tests).
	// The stalled client still overflows it: 3,000 messages of 4 KB are far
	// more than 128 plus the transport's windows.
	e := newTestEnv(t, Config{StreamQueue: 128, SendRate: 1e6, SendBurst: 1e6, FrameRate: 1e6, FrameBurst: 1e6})
	e.room(t, "r", store.VisibilityPublic, "a", "slow")
	fast := e.connect(t, "a")
	fast.subscribe("r", nil)
	slowEnd := e.stalledStream(t, "slow", "r")
	const n = 3000
	e.flood(t, "a", "r", n)
	fast.waitFor("all at the fast client", nMessages(n))
	got := slowEnd()
	if status.Code(got) != codes.ResourceExhausted {
		t.Fatalf("slow client ended with %v, want ResourceExhausted", got)
	}
	// It says why, in a form a client can match on.
	var info *errdetails.ErrorInfo
	for _, d := range status.Convert(got).Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info.GetReason() != SlowConsumerReason || info.GetDomain() != ErrorDomain {
		t.Fatalf("slow client's end carries ErrorInfo %v, want reason %s in domain %s", info, SlowConsumerReason, ErrorDomain)
	}
}

// stalledStream opens a Connect stream of user subscribed to room that does
// not read; the returned func reads what is left and returns how it ended.
func (e *testEnv) stalledStream(tb testing.TB, user, room string) func() error {
	tb.Helper()
	ctx, cancel := context.WithCancel(e.ctx(user))
	tb.Cleanup(cancel)
	s, err := e.client().Connect(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: room}}}); err != nil {
		tb.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	return func() error {
		for {
			if _, err := s.Recv(); err != nil {
				return err
			}
		}
	}
}

// flood sends n messages of 4 KB to room as sender (3,000 are about 12 MB:
// more than the transport's flow-control windows).
func (e *testEnv) flood(tb testing.TB, sender, room string, n int) {
	tb.Helper()
	big := fmt.Sprintf("%04000d", 0)
	c := e.client()
	for i := 0; i < n; i++ {
		if _, err := c.SendMessage(e.ctx(sender), &parleyv1.SendMessageRequest{RoomId: room, Body: big}); err != nil {
			tb.Fatal(err)
		}
	}
}

func TestBadInput(t *testing.T) {
	e := newTestEnv(t, Config{MaxMessageBytes: 10})
	e.room(t, "pub", store.VisibilityPublic, "a")
	e.room(t, "priv", store.VisibilityPrivate, "a")
	c := e.client()
	for _, tc := range []struct {
		name string
		user string
		req  *parleyv1.SendMessageRequest
		want codes.Code
	}{
		{"empty body", "a", &parleyv1.SendMessageRequest{RoomId: "pub", Body: "  "}, codes.InvalidArgument},
		{"too big", "a", &parleyv1.SendMessageRequest{RoomId: "pub", Body: "01234567890"}, codes.InvalidArgument},
		{"no room", "a", &parleyv1.SendMessageRequest{Body: "x"}, codes.InvalidArgument},
		{"unknown room", "a", &parleyv1.SendMessageRequest{RoomId: "nope", Body: "x"}, codes.NotFound},
		{"non-member public", "z", &parleyv1.SendMessageRequest{RoomId: "pub", Body: "x"}, codes.PermissionDenied},
		{"non-member private", "z", &parleyv1.SendMessageRequest{RoomId: "priv", Body: "x"}, codes.NotFound},
	} {
		_, err := c.SendMessage(e.ctx(tc.user), tc.req)
		if status.Code(err) != tc.want {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.want)
		}
	}
	// Invalid UTF-8 cannot be marshalled by a Go client: send the raw bytes
	// (field 1 room_id "pub", field 3 body 0xff 0xfe) as other languages can.
	// grpc-go's decoder rejects it before any handler or interceptor runs and
	// writes the status itself (Internal); the message names the problem.
	raw := rawBytes{0x0a, 3, 'p', 'u', 'b', 0x1a, 2, 0xff, 0xfe}
	var out rawBytes
	err := e.conn.Invoke(e.ctx("a"), parleyv1.ChatService_SendMessage_FullMethodName, &raw, &out, grpc.ForceCodecV2(rawCodec{}))
	if st := status.Convert(err); st.Code() == codes.OK || !strings.Contains(st.Message(), "invalid UTF-8") {
		t.Errorf("invalid UTF-8 body: got %v, want an error naming invalid UTF-8", err)
	}
	if _, err := c.SendMessage(context.Background(), &parleyv1.SendMessageRequest{RoomId: "pub", Body: "x"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
	if _, err := c.ListMessages(e.ctx("a"), &parleyv1.ListMessagesRequest{RoomId: "pub", PageToken: "garbage"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad page token: %v", err)
	}
}

func TestSendRateLimit(t *testing.T) {
	e := newTestEnv(t, Config{SendRate: 1, SendBurst: 2})
	e.room(t, "r", store.VisibilityPublic, "a")
	c := e.client()
	var codesSeen []codes.Code
	for i := 0; i < 3; i++ {
		_, err := c.SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", Body: "x"})
		codesSeen = append(codesSeen, status.Code(err))
	}
	if codesSeen[0] != codes.OK || codesSeen[1] != codes.OK || codesSeen[2] != codes.ResourceExhausted {
		t.Fatalf("codes = %v, want OK OK ResourceExhausted", codesSeen)
	}
}

type rawBytes []byte

// rawCodec sends and receives bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*rawBytes))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*rawBytes) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// StreamRoom takes the same delivery path as Connect, as protobuf frames.
func TestStreamRoomDeliversInOrder(t *testing.T) {
	e := newTestEnv(t, Config{SendRate: 1e6, SendBurst: 1e6, DeliveryTick: 2 * time.Millisecond})
	e.room(t, "r", store.VisibilityPublic, "a", "b")
	ctx, cancel := context.WithCancel(e.ctx("b"))
	defer cancel()
	st, err := e.client().StreamRoom(ctx, &parleyv1.StreamRoomRequest{RoomId: "r"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *parleyv1.Message, 10)
	go func() {
		for {
			ev, err := st.Recv()
			if err != nil {
				close(got)
				return
			}
			if m := ev.GetMessage(); m != nil {
				got <- m
			}
		}
	}()
	// The subscription is registered asynchronously: send until the first arrives.
	deadline := time.After(5 * time.Second)
	var first *parleyv1.Message
	for first == nil {
		if _, err := e.client().SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", Body: "probe"}); err != nil {
			t.Fatal(err)
		}
		select {
		case first = <-got:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("no message on StreamRoom")
		}
	}
	for i := 0; i < 3; i++ {
		if _, err := e.client().SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: fmt.Sprint("m", i), Body: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	last := first.Seq
	for n := 0; n < 3; {
		select {
		case m := <-got:
			if m.Seq <= last {
				continue // a probe that arrived late
			}
			if m.Seq != last+1 {
				t.Fatalf("seq %d after %d", m.Seq, last)
			}
			last = m.Seq
			if m.ClientMsgId == fmt.Sprint("m", n) {
				n++
			}
		case <-deadline:
			t.Fatal("timed out")
		}
	}
}

// Messages near the body limit still reach a client whose receive limit is
// grpc-go's default of 4 MiB: a replay and a history page hold at most
// 1 MiB of messages (and at least one), where 12 messages of 400 KB made
// one 4.8 MB frame before.
func TestLargeMessagesStayUnderTheClientsReceiveLimit(t *testing.T) {
	e := newTestEnv(t, Config{MaxMessageBytes: MaxBodyLimit, SendRate: 1e6, SendBurst: 1e6, FrameRate: 1e6, FrameBurst: 1e6})
	e.room(t, "r", store.VisibilityPublic, "a")
	const n = 12
	body := strings.Repeat("m", 400_000)
	var epoch string
	for i := range n {
		resp, err := e.client().SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: fmt.Sprint(i), Body: body})
		if err != nil {
			t.Fatal(err)
		}
		epoch = resp.Message.Epoch
	}

	// History, backward from the newest and forward after seq 1: every
	// page at most 1 MiB (plus its token), each message once, in order.
	page := func(after int64) []int64 {
		var got []int64
		token := ""
		for pages := 0; ; pages++ {
			resp, err := e.client().ListMessages(e.ctx("a"), &parleyv1.ListMessagesRequest{RoomId: "r", PageSize: 200, AfterSeq: after, PageToken: token})
			if err != nil {
				t.Fatalf("after %d, page %d: %v", after, pages, err)
			}
			if size := proto.Size(resp); size > MaxBatchBytes+1024 || len(resp.Messages) == 0 {
				t.Fatalf("after %d, page %d: %d messages in %d bytes", after, pages, len(resp.Messages), size)
			}
			for _, m := range resp.Messages {
				got = append(got, m.Seq)
			}
			if token = resp.NextPageToken; token == "" {
				return got
			}
		}
	}
	if got := page(0); len(got) != n || got[0] != n || got[n-1] != 1 || !sort.SliceIsSorted(got, func(i, j int) bool { return got[i] > got[j] }) {
		t.Fatalf("history backward gave seqs %v, want %d down to 1", got, n)
	}
	if got := page(1); len(got) != n-1 || got[0] != 2 || got[n-2] != n || !sort.SliceIsSorted(got, func(i, j int) bool { return got[i] < got[j] }) {
		t.Fatalf("history forward after 1 gave seqs %v, want 2 up to %d", got, n)
	}

	// Replay in MessageBatch frames from the start of the epoch.
	s := e.connect(t, "a")
	s.send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Options{Options: &parleyv1.StreamOptions{MessageBatches: true}}})
	s.subscribe("r", &parleyv1.RoomPosition{Epoch: epoch, Seq: 0})
	f := s.waitFor("the replay", nMessages(n))
	for i, m := range messages(f) {
		if m.Seq != int64(i+1) {
			t.Fatalf("replayed message %d has seq %d", i, m.Seq)
		}
	}
	for _, x := range f {
		if b := x.GetMessageBatch(); b != nil && proto.Size(b) > MaxBatchBytes+1024 {
			t.Fatalf("a replay frame of %d messages, %d bytes", len(b.Messages), proto.Size(b))
		}
	}
}
