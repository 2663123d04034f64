package chat

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/store"
)

func has(pred func(*parleyv1.ConnectResponse) bool) func([]*parleyv1.ConnectResponse) bool {
	return func(f []*parleyv1.ConnectResponse) bool {
		for _, x := range f {
			if pred(x) {
				return true
			}
		}
		return false
	}
}

func TestTypingReachesOthersOnly(t *testing.T) {
	e := newTestEnv(t, Config{})
	e.room(t, "r", store.VisibilityPublic, "a", "b")
	a, b := e.connect(t, "a"), e.connect(t, "b")
	a.subscribe("r", nil)
	b.subscribe("r", nil)
	a.send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Typing{Typing: &parleyv1.Typing{RoomId: "r"}}})
	b.waitFor("typing from a", has(func(x *parleyv1.ConnectResponse) bool {
		return x.GetTyping().GetUserId() == "a" && x.GetTyping().GetExpireTime() != nil
	}))
	// a sends a ping after its typing frame; once the pong is back, a's own
	// typing event would have arrived before it if it were echoed.
	a.send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Ping{Ping: &parleyv1.Ping{Nonce: 7}}})
	f := a.waitFor("pong", has(func(x *parleyv1.ConnectResponse) bool { return x.GetPong().GetNonce() == 7 }))
	if has(func(x *parleyv1.ConnectResponse) bool { return x.GetTyping() != nil })(f) {
		t.Fatal("a received its own typing event")
	}
}

func TestPresenceOnlineAndOffline(t *testing.T) {
	e := newTestEnv(t, Config{})
	e.room(t, "r", store.VisibilityPublic, "a", "b")
	a := e.connect(t, "a")
	a.subscribe("r", nil)
	b := e.connect(t, "b")
	b.subscribe("r", nil)
	a.waitFor("b online", has(func(x *parleyv1.ConnectResponse) bool {
		return x.GetPresence().GetUserId() == "b" && x.GetPresence().GetOnline()
	}))
	// A second stream of b, then both end: offline only after the last.
	b2 := e.connect(t, "b")
	b2.subscribe("r", nil)
	b.s.CloseSend()
	b.waitFor("b's first stream ended", func([]*parleyv1.ConnectResponse) bool {
		select {
		case err := <-b.done:
			b.done <- err
			return true
		default:
			return false
		}
	})
	a.send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Ping{Ping: &parleyv1.Ping{Nonce: 1}}})
	f := a.waitFor("pong", has(func(x *parleyv1.ConnectResponse) bool { return x.GetPong().GetNonce() == 1 }))
	if has(func(x *parleyv1.ConnectResponse) bool {
		return x.GetPresence().GetUserId() == "b" && !x.GetPresence().GetOnline()
	})(f) {
		t.Fatal("b reported offline while another stream of b is subscribed")
	}
	b2.s.CloseSend()
	a.waitFor("b offline", has(func(x *parleyv1.ConnectResponse) bool {
		return x.GetPresence().GetUserId() == "b" && !x.GetPresence().GetOnline()
	}))
}

func TestReadMarkersAndUnread(t *testing.T) {
	e := newTestEnv(t, Config{})
	e.room(t, "r", store.VisibilityPublic, "a", "b")
	c := e.client()
	var last *parleyv1.Message
	for i := 0; i < 5; i++ {
		resp, err := c.SendMessage(e.ctx("a"), &parleyv1.SendMessageRequest{RoomId: "r", Body: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Message
	}
	states, err := c.ListRoomStates(e.ctx("b"), &parleyv1.ListRoomStatesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(states.States) != 1 || states.States[0].UnreadCount != 5 || states.States[0].LastMessage.GetBody() != "m4" {
		t.Fatalf("before reading: %v", states.States)
	}
	other := e.connect(t, "b") // b's other device
	other.subscribe("r", nil)
	_, err = c.MarkRead(e.ctx("b"), &parleyv1.MarkReadRequest{RoomId: "r", Position: &parleyv1.RoomPosition{Epoch: last.Epoch, Seq: 3}})
	if err != nil {
		t.Fatal(err)
	}
	other.waitFor("read marker", has(func(x *parleyv1.ConnectResponse) bool { return x.GetReadMarker().GetPosition().GetSeq() == 3 }))
	states, _ = c.ListRoomStates(e.ctx("b"), &parleyv1.ListRoomStatesRequest{RoomIds: []string{"r"}})
	if got := states.States[0].UnreadCount; got != 2 {
		t.Fatalf("unread after reading to 3 = %d, want 2", got)
	}
	// Never backwards.
	if _, err := c.MarkRead(e.ctx("b"), &parleyv1.MarkReadRequest{RoomId: "r", Position: &parleyv1.RoomPosition{Epoch: last.Epoch, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	states, _ = c.ListRoomStates(e.ctx("b"), &parleyv1.ListRoomStatesRequest{RoomIds: []string{"r"}})
	if got := states.States[0].UnreadCount; got != 2 {
		t.Fatalf("marker moved backwards: unread %d", got)
	}
	for _, tc := range []struct {
		name string
		req  *parleyv1.MarkReadRequest
		want codes.Code
	}{
		{"past head", &parleyv1.MarkReadRequest{RoomId: "r", Position: &parleyv1.RoomPosition{Epoch: last.Epoch, Seq: 99}}, codes.InvalidArgument},
		{"other epoch", &parleyv1.MarkReadRequest{RoomId: "r", Position: &parleyv1.RoomPosition{Epoch: "old", Seq: 1}}, codes.InvalidArgument},
		{"no position", &parleyv1.MarkReadRequest{RoomId: "r"}, codes.InvalidArgument},
		{"not member", &parleyv1.MarkReadRequest{RoomId: "nope", Position: &parleyv1.RoomPosition{Epoch: last.Epoch, Seq: 1}}, codes.NotFound},
	} {
		if _, err := c.MarkRead(e.ctx("b"), tc.req); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
}

func TestStreamLimits(t *testing.T) {
	e := newTestEnv(t, Config{MaxStreamsPerUser: 1, FrameRate: 1, FrameBurst: 3})
	e.room(t, "r", store.VisibilityPublic, "a")
	first := e.connect(t, "a")
	first.send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Ping{Ping: &parleyv1.Ping{Nonce: 1}}})
	first.waitFor("pong", has(func(x *parleyv1.ConnectResponse) bool { return x.GetPong() != nil }))
	second := e.connect(t, "a")
	if err := <-second.done; status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second stream: %v, want ResourceExhausted", err)
	}
	for i := 0; i < 5; i++ {
		_ = first.s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Ping{Ping: &parleyv1.Ping{Nonce: int64(i)}}})
	}
	if err := <-first.done; status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("frame flood: %v, want ResourceExhausted", err)
	}
}

func TestPresenceEntriesCoverEveryLocalStream(t *testing.T) {
	e := newTestEnv(t, Config{})
	e.room(t, "r", store.VisibilityPublic, "a", "b")
	e.room(t, "q", store.VisibilityPublic, "a")
	a, b := e.connect(t, "a"), e.connect(t, "b")
	a.subscribe("r", nil)
	a.subscribe("q", nil)
	b.subscribe("r", nil)
	got := presenceEntries(e.svc.openSessions())
	if len(got["r"]) != 2 || len(got["q"]) != 1 || !strings.HasPrefix(got["q"][0], "a/") {
		t.Fatalf("presence entries = %v", got)
	}
	if err := e.broker.PresenceRefresh(context.Background(), got, presenceTTL); err != nil {
		t.Fatal(err)
	}
}
