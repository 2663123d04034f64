package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// newMiniBroker returns a broker on an in-process miniredis.
func newMiniBroker(tb testing.TB, opts Options) (*Redis, *miniredis.Miniredis) {
	tb.Helper()
	mr := miniredis.RunT(tb)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{mr.Addr()}, DisableCache: true, AlwaysRESP2: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return NewRedis(c, opts, slog.New(slog.NewTextHandler(testWriter{tb}, nil)), prometheus.NewRegistry()), mr
}

type recorder struct {
	mu       sync.Mutex
	events   []*eventsv1.RoomEvent
	resync   int
	badBytes int // events whose MessageBytes do not decode to their message
}

func (r *recorder) Deliver(ev *Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev.RoomEvent)
	if m := ev.GetMessage(); m != nil {
		got := &parleyv1.Message{}
		if err := proto.Unmarshal(ev.MessageBytes, got); err != nil || !proto.Equal(got, m) {
			r.badBytes++
		}
	} else if ev.MessageBytes != nil {
		r.badBytes++
	}
}

func (r *recorder) Resync() { r.mu.Lock(); r.resync++; r.mu.Unlock() }

func (r *recorder) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.events) }

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func msg(room, sender, cmid, body string) *parleyv1.Message {
	return &parleyv1.Message{MessageId: "m-" + cmid, RoomId: room, SenderId: sender, ClientMsgId: cmid, Body: body}
}

func TestPublishAssignsSeqAndDedupes(t *testing.T) {
	b, _ := newMiniBroker(t, Options{})
	ctx := context.Background()
	if _, _, err := b.Publish(ctx, msg("r1", "u1", "c1", "hi")); err != ErrNoEpoch {
		t.Fatalf("uninitialised room: got %v, want ErrNoEpoch", err)
	}
	epoch, err := b.InitRoom(ctx, "r1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := b.InitRoom(ctx, "r1", 99); again != epoch {
		t.Fatalf("InitRoom twice changed the epoch: %s then %s", epoch, again)
	}
	for i := 1; i <= 3; i++ {
		m, dup, err := b.Publish(ctx, msg("r1", "u1", fmt.Sprint("c", i), "body"))
		if err != nil || dup {
			t.Fatalf("publish %d: %v dup=%v", i, err, dup)
		}
		if m.Seq != int64(i) || m.Epoch != epoch || m.Body != "body" || m.MessageId != fmt.Sprint("m-c", i) {
			t.Fatalf("publish %d: got %+v", i, m)
		}
	}
	// Retry of c2 (with a different message id, as a retry would have) returns the first.
	retry := msg("r1", "u1", "c2", "body")
	retry.MessageId = "other"
	m, dup, err := b.Publish(ctx, retry)
	if err != nil || !dup || m.Seq != 2 || m.MessageId != "m-c2" {
		t.Fatalf("retry: %+v dup=%v err=%v", m, dup, err)
	}
	// Same client_msg_id from another sender is a different message.
	if m, dup, _ := b.Publish(ctx, msg("r1", "u2", "c2", "x")); dup || m.Seq != 4 {
		t.Fatalf("other sender: seq %d dup=%v", m.Seq, dup)
	}
	e, head, err := b.Head(ctx, "r1")
	if err != nil || e != epoch || head != 4 {
		t.Fatalf("head = %s/%d, %v", e, head, err)
	}
	recent, all, err := b.Recent(ctx, "r1")
	if err != nil || !all || len(recent) != 4 || recent[0].Seq != 1 || recent[3].Seq != 4 {
		t.Fatalf("recent: %d msgs all=%v err=%v", len(recent), all, err)
	}
}

func TestRecentIsCapped(t *testing.T) {
	b, _ := newMiniBroker(t, Options{RecentCap: 5})
	ctx := context.Background()
	if _, err := b.InitRoom(ctx, "r", 100); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		if _, _, err := b.Publish(ctx, msg("r", "u", fmt.Sprint(i), "b")); err != nil {
			t.Fatal(err)
		}
	}
	recent, all, err := b.Recent(ctx, "r")
	if err != nil || all || len(recent) != 5 || recent[0].Seq != 104 || recent[4].Seq != 108 {
		t.Fatalf("recent = %d all=%v first=%d err=%v", len(recent), all, recent[0].Seq, err)
	}
}

func TestRunDispatchesAndWithdraws(t *testing.T) {
	b, _ := newMiniBroker(t, Options{})
	hub := NewHub(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go b.Run(ctx, hub)
	waitFor(t, "subscription", b.Ready)
	r1, r2, other := &recorder{}, &recorder{}, &recorder{}
	hub.Add("room", r1)
	hub.Add("room", r2)
	hub.Add("elsewhere", other)
	if _, err := b.InitRoom(ctx, "room", 0); err != nil {
		t.Fatal(err)
	}
	var sent []*parleyv1.Message
	for i := 0; i < 20; i++ {
		m, _, err := b.Publish(ctx, msg("room", "u", fmt.Sprint(i), "b"))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
	}
	waitFor(t, "20 deliveries to both", func() bool { return r1.count() == 20 && r2.count() == 20 })
	for i, ev := range r1.events {
		if got := ev.GetMessage().GetSeq(); got != int64(i+1) {
			t.Fatalf("delivery %d has seq %d: order broken", i, got)
		}
	}
	if other.count() != 0 {
		t.Fatal("event leaked to another room")
	}
	if r1.badBytes != 0 {
		t.Fatalf("%d events carried MessageBytes that are not their message", r1.badBytes)
	}
	if withdrawn, err := b.Withdraw(ctx, sent[19]); err != nil || !withdrawn {
		t.Fatalf("withdraw: %v, withdrawn %v", err, withdrawn)
	}
	waitFor(t, "withdrawal", func() bool { return r1.count() == 21 })
	if w := r1.events[20].GetMessageWithdrawn(); w.GetSeq() != 20 || w.GetMessageId() != sent[19].MessageId {
		t.Fatalf("withdrawal event = %v", r1.events[20])
	}
	recent, _, _ := b.Recent(ctx, "room")
	if len(recent) != 19 {
		t.Fatalf("withdrawn message still cached: %d recent", len(recent))
	}
	// The client_msg_id is forgotten: a retry gets a new position.
	m, dup, err := b.Publish(ctx, msg("room", "u", "19", "b"))
	if err != nil || dup || m.Seq != 21 {
		t.Fatalf("retry after withdrawal: seq %d dup %v err %v", m.GetSeq(), dup, err)
	}
}

func TestRunResubscribesAfterRedisRestart(t *testing.T) {
	b, mr := newMiniBroker(t, Options{})
	hub := NewHub(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go b.Run(ctx, hub)
	waitFor(t, "subscription", b.Ready)
	rec := &recorder{}
	hub.Add("room", rec)
	mr.Close() // drops every connection; state survives in miniredis
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "resubscription and resync", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.resync > 0 && b.Ready()
	})
	if _, err := b.InitRoom(ctx, "room", 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Publish(ctx, msg("room", "u", "x", "after")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after resubscribe", func() bool { return rec.count() == 1 })
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.tb.Log(string(p)); return len(p), nil }

func TestDecodeEventCutsTheMessageOut(t *testing.T) {
	m := msg("room", "u", "c1", "hello")
	m.Epoch, m.Seq = "e1", 7
	payload, err := proto.Marshal(&eventsv1.RoomEvent{Event: &eventsv1.RoomEvent_Message{Message: m}})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := DecodeEvent("room", payload)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.Marshal(m)
	if string(ev.MessageBytes) != string(want) || ev.Room != "room" || !proto.Equal(ev.GetMessage(), m) {
		t.Fatalf("decoded %v with %d message bytes", ev, len(ev.MessageBytes))
	}
	if string(ev.MessageField) != string(payload) {
		t.Fatalf("message field: %d bytes, want the payload's %d", len(ev.MessageField), len(payload))
	}
	built, err := NewEvent("room", &eventsv1.RoomEvent{Event: &eventsv1.RoomEvent_Message{Message: m}})
	if err != nil || string(built.MessageField) != string(payload) || string(built.MessageBytes) != string(want) {
		t.Fatalf("NewEvent: %v, field %d bytes, message %d bytes", err, len(built.MessageField), len(built.MessageBytes))
	}
	other, err := DecodeEvent("room", mustMarshal(t, &eventsv1.RoomEvent{Event: &eventsv1.RoomEvent_MessageWithdrawn{
		MessageWithdrawn: &parleyv1.MessageWithdrawn{RoomId: "room", MessageId: "x"}}}))
	if err != nil || other.MessageBytes != nil || other.MessageField != nil {
		t.Fatalf("withdrawal: %v, %d message bytes", err, len(other.MessageBytes))
	}
	if _, err := DecodeEvent("room", []byte{0xff}); err == nil {
		t.Fatal("garbage decoded")
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPresenceRefreshExtendsOnlyExistingEntries(t *testing.T) {
	b, mr := newMiniBroker(t, Options{})
	ctx := context.Background()
	if err := b.PresenceJoin(ctx, "room", "u1", "one", "s1", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.PresenceRefresh(ctx, map[string][]string{"room": {PresenceEntry("u1", "s1"), PresenceEntry("u2", "s2")}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	members, err := mr.ZMembers(b.onlineKey("room"))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(members) != "[u1/s1]" {
		t.Fatalf("presence set = %v: a refresh must not re-create entries", members)
	}
	score, _ := mr.ZScore(b.onlineKey("room"), "u1/s1")
	if until := time.UnixMilli(int64(score)); time.Until(until) < 50*time.Minute {
		t.Fatalf("entry expires at %v: not extended by the refresh", until)
	}
}

func TestWithdrawRefusedAfterARetryWasAnswered(t *testing.T) {
	b, _ := newMiniBroker(t, Options{})
	ctx := context.Background()
	if _, err := b.InitRoom(ctx, "room", 0); err != nil {
		t.Fatal(err)
	}
	first, _, err := b.Publish(ctx, msg("room", "u", "c1", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	// The sender retries (its first send timed out) and is answered from the
	// dedupe entry; then the first record fails.
	again, dup, err := b.Publish(ctx, msg("room", "u", "c1", "hello"))
	if err != nil || !dup || again.MessageId != first.MessageId {
		t.Fatalf("retry: dup %v, %v", dup, err)
	}
	withdrawn, err := b.Withdraw(ctx, first)
	if err != nil || withdrawn {
		t.Fatalf("withdraw after an answered retry: withdrawn %v, %v; want kept", withdrawn, err)
	}
	if recent, _, _ := b.Recent(ctx, "room"); len(recent) != 1 {
		t.Fatalf("%d recent messages, want the message kept", len(recent))
	}
	// The client_msg_id is still known: a third try is the same message.
	third, dup, err := b.Publish(ctx, msg("room", "u", "c1", "hello"))
	if err != nil || !dup || third.Seq != first.Seq {
		t.Fatalf("third try: seq %d dup %v %v", third.GetSeq(), dup, err)
	}
}

func TestPublishBatchKeepsOrderAndDedupes(t *testing.T) {
	b, _ := newMiniBroker(t, Options{})
	ctx := context.Background()
	if _, err := b.InitRoom(ctx, "room", 0); err != nil {
		t.Fatal(err)
	}
	batch := []*parleyv1.Message{msg("room", "u", "c1", "a"), msg("room", "u", "c2", "b"), msg("room", "u", "c1", "a again"), msg("nowhere", "u", "c3", "c")}
	res := b.PublishBatch(ctx, batch)
	if res[0].Err != nil || res[0].Message.Seq != 1 || res[1].Message.GetSeq() != 2 {
		t.Fatalf("positions: %+v %+v", res[0], res[1])
	}
	if !res[2].Dup || res[2].Message.MessageId != res[0].Message.MessageId {
		t.Fatalf("a repeated client_msg_id in one batch: %+v", res[2])
	}
	if !errors.Is(res[3].Err, ErrNoEpoch) {
		t.Fatalf("uninitialised room: %v", res[3].Err)
	}
	// The script is loaded now: the batch goes out as pipelined EVALSHA.
	res = b.PublishBatch(ctx, []*parleyv1.Message{msg("room", "u", "c4", "d"), msg("room", "u", "c5", "e")})
	if res[0].Err != nil || res[0].Message.Seq != 3 || res[1].Message.GetSeq() != 4 {
		t.Fatalf("second batch: %+v %+v", res[0], res[1])
	}
}
