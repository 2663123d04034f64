package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/chat"
)

// liveStream is a Connect stream collecting what it receives.
type liveStream struct {
	t      testing.TB
	s      parleyv1.ChatService_ConnectClient
	cancel context.CancelFunc
	mu     sync.Mutex
	msgs   []*parleyv1.Message
	acks   map[string]*parleyv1.SendAck
	subbed map[string]*parleyv1.Subscribed
	resync []*parleyv1.ResyncRequired
	err    error
	ended  chan struct{}
}

func connect(t testing.TB, u *user) *liveStream {
	t.Helper()
	ctx, cancel := context.WithCancel(u.ctx(context.Background()))
	s, err := u.chat.Connect(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ls := &liveStream{t: t, s: s, cancel: cancel, acks: map[string]*parleyv1.SendAck{}, subbed: map[string]*parleyv1.Subscribed{}, ended: make(chan struct{})}
	t.Cleanup(cancel)
	go func() {
		defer close(ls.ended)
		for {
			f, err := s.Recv()
			ls.mu.Lock()
			if err != nil {
				ls.err = err
				ls.mu.Unlock()
				return
			}
			switch {
			case f.GetMessage() != nil:
				ls.msgs = append(ls.msgs, f.GetMessage())
			case f.GetSendAck() != nil:
				ls.acks[f.GetSendAck().ClientMsgId] = f.GetSendAck()
			case f.GetSubscribed() != nil:
				ls.subbed[f.GetSubscribed().RoomId] = f.GetSubscribed()
			case f.GetResyncRequired() != nil:
				ls.resync = append(ls.resync, f.GetResyncRequired())
			case f.GetSubscribeError() != nil:
				t.Errorf("subscribe refused: %v", f.GetSubscribeError())
			}
			ls.mu.Unlock()
		}
	}()
	return ls
}

func (ls *liveStream) subscribe(room string, from *parleyv1.RoomPosition) {
	ls.t.Helper()
	if err := ls.s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: room, ResumeFrom: from}}}); err != nil {
		ls.t.Fatal(err)
	}
	ls.wait("subscribed", func() bool { return ls.subbed[room] != nil })
}

func (ls *liveStream) send(room, cmid, body string) error {
	return ls.s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{RoomId: room, ClientMsgId: cmid, Body: body}}})
}

// wait polls cond under the stream's lock.
func (ls *liveStream) wait(what string, cond func() bool) {
	ls.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ls.mu.Lock()
		ok, err := cond(), ls.err
		ls.mu.Unlock()
		if ok {
			return
		}
		if err != nil {
			ls.t.Fatalf("stream ended while waiting for %s: %v", what, err)
		}
		if time.Now().After(deadline) {
			ls.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (ls *liveStream) messages() []*parleyv1.Message {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return append([]*parleyv1.Message(nil), ls.msgs...)
}

func createRoom(t testing.TB, owner *user, vis parleyv1.RoomVisibility, joiners ...*user) string {
	t.Helper()
	ctx := context.Background()
	r, err := owner.rooms.CreateRoom(owner.ctx(ctx), &parleyv1.CreateRoomRequest{Name: "room of " + owner.name, Visibility: vis})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range joiners {
		if _, err := j.rooms.JoinRoom(j.ctx(ctx), &parleyv1.JoinRoomRequest{RoomId: r.Room.RoomId}); err != nil {
			t.Fatal(err)
		}
	}
	return r.Room.RoomId
}

// TestTwoInstancesOneOrderAndHistory: A on instance 0 and B on instance 1
// exchange 1,000 interleaved messages; both see all of them in one seq order,
// and history pages through exactly those 1,000 once persisted.
func TestTwoInstancesOneOrderAndHistory(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.signUp(0, "alice"), c.signUp(1, "bob")
	room := createRoom(t, a, parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC, b)
	sa, sb := connect(t, a), connect(t, b)
	sa.subscribe(room, nil)
	sb.subscribe(room, nil)

	const perUser = 500
	var wg sync.WaitGroup
	for _, s := range []struct {
		ls   *liveStream
		name string
	}{{sa, "a"}, {sb, "b"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perUser; i++ {
				if err := s.ls.send(room, fmt.Sprintf("%s-%d", s.name, i), fmt.Sprintf("message %d from %s", i, s.name)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, ls := range []*liveStream{sa, sb} {
		ls.wait("1000 messages and 500 acks", func() bool { return len(ls.msgs) >= 2*perUser && len(ls.acks) == perUser })
		for id, ack := range ls.acks {
			if ack.Error != nil {
				t.Fatalf("send %s failed: %v", id, ack.Error)
			}
		}
	}
	ma, mb := sa.messages(), sb.messages()
	if len(ma) != 2*perUser || len(mb) != 2*perUser {
		t.Fatalf("received %d and %d messages, want %d each", len(ma), len(mb), 2*perUser)
	}
	for i := range ma {
		if ma[i].MessageId != mb[i].MessageId {
			t.Fatalf("position %d differs: %s (seq %d) vs %s (seq %d)", i, ma[i].MessageId, ma[i].Seq, mb[i].MessageId, mb[i].Seq)
		}
		if i > 0 && ma[i].Seq <= ma[i-1].Seq {
			t.Fatalf("seq not increasing at %d: %d after %d", i, ma[i].Seq, ma[i-1].Seq)
		}
	}

	c.waitStored(room, 2*perUser, 120*time.Second)
	var paged []*parleyv1.Message
	token := ""
	for {
		resp, err := b.chat.ListMessages(b.ctx(context.Background()), &parleyv1.ListMessagesRequest{RoomId: room, PageSize: 128, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, resp.Messages...)
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	if len(paged) != 2*perUser {
		t.Fatalf("history has %d messages, want %d", len(paged), 2*perUser)
	}
	for i, m := range paged { // newest first
		if want := ma[len(ma)-1-i]; m.MessageId != want.MessageId || m.Body != want.Body || m.Seq != want.Seq {
			t.Fatalf("history position %d: %s/%d, live had %s/%d", i, m.MessageId, m.Seq, want.MessageId, want.Seq)
		}
	}
}

// TestRetryIsIdempotent: the same client_msg_id sent twice, the second time
// on another instance after reconnecting, yields one message and one document.
func TestRetryIsIdempotent(t *testing.T) {
	c := newCluster(t, 2)
	a := c.signUp(0, "carol")
	room := createRoom(t, a, parleyv1.RoomVisibility_ROOM_VISIBILITY_PRIVATE)
	s1 := connect(t, a)
	if err := s1.send(room, "retry-me", "hello once"); err != nil {
		t.Fatal(err)
	}
	s1.wait("ack", func() bool { return s1.acks["retry-me"] != nil })
	first := s1.acks["retry-me"].Message
	s1.cancel()

	s2 := connect(t, c.on(1, a))
	if err := s2.send(room, "retry-me", "hello once"); err != nil {
		t.Fatal(err)
	}
	s2.wait("ack", func() bool { return s2.acks["retry-me"] != nil })
	again := s2.acks["retry-me"].Message
	if again.GetMessageId() != first.GetMessageId() || again.GetSeq() != first.GetSeq() {
		t.Fatalf("retry gave %s/%d, first was %s/%d", again.GetMessageId(), again.GetSeq(), first.GetMessageId(), first.GetSeq())
	}
	unary, err := c.on(1, a).chat.SendMessage(a.ctx(context.Background()), &parleyv1.SendMessageRequest{RoomId: room, ClientMsgId: "retry-me", Body: "hello once"})
	if err != nil || unary.Message.MessageId != first.MessageId {
		t.Fatalf("unary retry: %v %v", unary, err)
	}
	c.waitStored(room, 1, 60*time.Second)
	time.Sleep(2 * time.Second) // let any duplicate record land too
	if docs, _ := c.stored(room); docs != 1 {
		t.Fatalf("%d documents stored for one message", docs)
	}
}

// TestResumeFromLastPosition: a client that was away resumes on the other
// instance from its last (epoch, seq) and receives exactly what it missed.
func TestResumeFromLastPosition(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.signUp(0, "dave"), c.signUp(1, "erin")
	room := createRoom(t, a, parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC, b)
	sa := connect(t, a)
	sa.subscribe(room, nil)
	for i := 0; i < 20; i++ {
		if _, err := b.chat.SendMessage(b.ctx(context.Background()), &parleyv1.SendMessageRequest{RoomId: room, ClientMsgId: fmt.Sprint("before-", i), Body: "before"}); err != nil {
			t.Fatal(err)
		}
	}
	sa.wait("20 messages", func() bool { return len(sa.msgs) == 20 })
	last := sa.messages()[19]
	sa.cancel()
	<-sa.ended

	var missed []*parleyv1.Message
	for i := 0; i < 50; i++ {
		resp, err := b.chat.SendMessage(b.ctx(context.Background()), &parleyv1.SendMessageRequest{RoomId: room, ClientMsgId: fmt.Sprint("missed-", i), Body: fmt.Sprint("missed ", i)})
		if err != nil {
			t.Fatal(err)
		}
		missed = append(missed, resp.Message)
	}
	sa2 := connect(t, c.on(1, a))
	sa2.subscribe(room, &parleyv1.RoomPosition{Epoch: last.Epoch, Seq: last.Seq})
	if _, err := b.chat.SendMessage(b.ctx(context.Background()), &parleyv1.SendMessageRequest{RoomId: room, ClientMsgId: "after", Body: "live"}); err != nil {
		t.Fatal(err)
	}
	sa2.wait("51 messages", func() bool { return len(sa2.msgs) >= 51 })
	got := sa2.messages()
	if len(got) != 51 {
		t.Fatalf("resumed stream got %d messages, want 50 missed + 1 live", len(got))
	}
	for i, m := range missed {
		if got[i].MessageId != m.MessageId {
			t.Fatalf("resumed message %d is %s (seq %d), want %s (seq %d)", i, got[i].MessageId, got[i].Seq, m.MessageId, m.Seq)
		}
	}
	if got[50].Body != "live" {
		t.Fatalf("last message %q, want the live one", got[50].Body)
	}
	if len(sa2.resync) != 0 {
		t.Fatalf("unexpected resync: %v", sa2.resync)
	}
}

// TestPersisterKilledMidStream: SIGKILL the persister while messages flow,
// restart it; the store ends with exactly the acknowledged messages.
func TestPersisterKilledMidStream(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.signUp(0, "frank"), c.signUp(1, "grace")
	room := createRoom(t, a, parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC, b)

	const total = 1500
	acked := make(chan string, total)
	var wg sync.WaitGroup
	for w, u := range []*user{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 4 {
				resp, err := u.chat.SendMessage(u.ctx(context.Background()), &parleyv1.SendMessageRequest{RoomId: room, ClientMsgId: fmt.Sprint("k-", i), Body: fmt.Sprint("kill test ", i)})
				if err != nil {
					t.Errorf("send %d: %v", i, err)
					return
				}
				acked <- resp.Message.MessageId
			}
		}()
	}
	// Kill mid-stream, once some messages are stored and more are flowing.
	c.waitStored(room, 100, 60*time.Second)
	c.pers.kill()
	time.Sleep(500 * time.Millisecond)
	c.startPersister()
	wg.Wait()
	close(acked)
	ids := map[string]bool{}
	for id := range acked {
		ids[id] = true
	}
	if len(ids) != total {
		t.Fatalf("%d distinct acked messages, want %d", len(ids), total)
	}
	c.assertStoredOnce(room, ids, 120*time.Second)
}

// TestLargestBodyTravelsTheWholePath: a body of the highest limit the server
// accepts goes through every hop (gRPC frame, Redis, Kafka record, the
// persister, the store, history) on the real services, and one byte more is
// refused up front with InvalidArgument naming the body, not withdrawn
// after it went live.
func TestLargestBodyTravelsTheWholePath(t *testing.T) {
	c := newCluster(t, 1, "-max-message-bytes", strconv.Itoa(chat.MaxBodyLimit))
	a := c.signUp(0, "lena")
	room := createRoom(t, a, parleyv1.RoomVisibility_ROOM_VISIBILITY_PRIVATE)
	s := connect(t, a)
	s.subscribe(room, nil)
	body := strings.Repeat("é", chat.MaxBodyLimit/2) + strings.Repeat("a", chat.MaxBodyLimit%2) // é is two bytes
	if err := s.send(room, "big", body); err != nil {
		t.Fatal(err)
	}
	s.wait("ack", func() bool { return s.acks["big"] != nil })
	if ack := s.acks["big"]; ack.GetError() != nil {
		t.Fatalf("largest body refused: %v", ack.GetError())
	}
	s.wait("live delivery", func() bool { return len(s.msgs) == 1 })
	if got := s.messages()[0].GetBody(); got != body {
		t.Fatalf("live body: %d bytes, want %d", len(got), len(body))
	}
	c.waitStored(room, 1, 60*time.Second)
	hist, err := a.chat.ListMessages(a.ctx(context.Background()), &parleyv1.ListMessagesRequest{RoomId: room, PageSize: 10})
	if err != nil || len(hist.GetMessages()) != 1 || hist.GetMessages()[0].GetBody() != body {
		t.Fatalf("history: %d messages, %v; want the one large message", len(hist.GetMessages()), err)
	}

	_, err = a.chat.SendMessage(a.ctx(context.Background()), &parleyv1.SendMessageRequest{RoomId: room, ClientMsgId: "too-big", Body: body + "x"})
	wantCode(t, "body one byte over the limit", err, codes.InvalidArgument, "body")
}
