package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// TestCrossSiteBrowserCallsAreRefused: a page on another origin can neither
// open the grpc-web WebSocket nor make grpc-web calls; the same origin and
// an allowed origin can.
func TestCrossSiteBrowserCallsAreRefused(t *testing.T) {
	c := newCluster(t, 1, "-allowed-origins", "https://chat.example")
	addr := c.servers[0].addr
	ws := func(origin string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/parley.v1.ChatService/Connect", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Protocol", "grpc-websockets")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := ws("https://evil.example"); got != http.StatusForbidden {
		t.Errorf("cross-site WebSocket: %d, want 403", got)
	}
	for _, origin := range []string{"https://chat.example", "http://" + addr} {
		if got := ws(origin); got != http.StatusSwitchingProtocols {
			t.Errorf("WebSocket from %s: %d, want 101", origin, got)
		}
	}
	web := func(origin string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/parley.v1.AuthService/Login", strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		req.Header.Set("X-Grpc-Web", "1")
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := web("https://evil.example"); got != http.StatusForbidden {
		t.Errorf("cross-site grpc-web call: %d, want 403", got)
	}
	if got := web("https://chat.example"); got != http.StatusOK {
		t.Errorf("grpc-web call from an allowed origin: %d, want 200 (the gRPC status travels in trailers)", got)
	}
}

// TestEveryRPCChecksAuthorization calls each room-scoped RPC as a stranger
// (no membership), and as a member who left, on a public and a private room.
func TestEveryRPCChecksAuthorization(t *testing.T) {
	c := newCluster(t, 1)
	owner, stranger, leaver := c.signUp(0, "pat"), c.signUp(0, "quin"), c.signUp(0, "rosa")
	pub := createRoom(t, owner, parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC, leaver)
	priv := createRoom(t, owner, parleyv1.RoomVisibility_ROOM_VISIBILITY_PRIVATE)
	ctx := context.Background()
	if _, err := owner.rooms.AddMember(owner.ctx(ctx), &parleyv1.AddMemberRequest{RoomId: priv, Username: "rosa"}); err != nil {
		t.Fatal(err)
	}
	sent, err := owner.chat.SendMessage(owner.ctx(ctx), &parleyv1.SendMessageRequest{RoomId: pub, Body: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	for _, room := range []string{pub, priv} {
		if _, err := leaver.chat.SendMessage(leaver.ctx(ctx), &parleyv1.SendMessageRequest{RoomId: room, Body: "still in"}); err != nil {
			t.Fatalf("member send before leaving: %v", err)
		}
		if _, err := leaver.rooms.LeaveRoom(leaver.ctx(ctx), &parleyv1.LeaveRoomRequest{RoomId: room}); err != nil {
			t.Fatal(err)
		}
	}
	pos := &parleyv1.RoomPosition{Epoch: sent.Message.Epoch, Seq: sent.Message.Seq}
	calls := map[string]func(u *user, room string) error{
		"SendMessage": func(u *user, room string) error {
			_, err := u.chat.SendMessage(u.ctx(ctx), &parleyv1.SendMessageRequest{RoomId: room, Body: "x"})
			return err
		},
		"ListMessages": func(u *user, room string) error {
			_, err := u.chat.ListMessages(u.ctx(ctx), &parleyv1.ListMessagesRequest{RoomId: room})
			return err
		},
		"MarkRead": func(u *user, room string) error {
			_, err := u.chat.MarkRead(u.ctx(ctx), &parleyv1.MarkReadRequest{RoomId: room, Position: pos})
			return err
		},
		"ListRoomStates": func(u *user, room string) error {
			_, err := u.chat.ListRoomStates(u.ctx(ctx), &parleyv1.ListRoomStatesRequest{RoomIds: []string{room}})
			return err
		},
		"StreamRoom": func(u *user, room string) error {
			s, err := u.chat.StreamRoom(u.ctx(ctx), &parleyv1.StreamRoomRequest{RoomId: room})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"Connect/subscribe": func(u *user, room string) error {
			cctx, cancel := context.WithTimeout(u.ctx(ctx), 10*time.Second)
			defer cancel()
			s, err := u.chat.Connect(cctx)
			if err != nil {
				return err
			}
			if err := s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: room}}}); err != nil {
				return err
			}
			for {
				f, err := s.Recv()
				if err != nil {
					return err
				}
				if e := f.GetSubscribeError(); e != nil {
					return status.Error(codes.Code(e.Error.Code), e.Error.Message)
				}
				if f.GetSubscribed() != nil {
					return nil
				}
			}
		},
		"AddMember": func(u *user, room string) error {
			_, err := u.rooms.AddMember(u.ctx(ctx), &parleyv1.AddMemberRequest{RoomId: room, Username: "quin"})
			return err
		},
		"LeaveRoom": func(u *user, room string) error {
			_, err := u.rooms.LeaveRoom(u.ctx(ctx), &parleyv1.LeaveRoomRequest{RoomId: room})
			return err
		},
	}
	for name, call := range calls {
		for _, who := range []*user{stranger, leaver} {
			if err := call(who, pub); status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s by %s on a public room: %v, want PermissionDenied", name, who.name, err)
			}
			if err := call(who, priv); status.Code(err) != codes.NotFound {
				t.Errorf("%s by %s on a private room: %v, want NotFound", name, who.name, err)
			}
		}
	}
	for _, who := range []*user{stranger, leaver} {
		if _, err := who.rooms.GetRoom(who.ctx(ctx), &parleyv1.GetRoomRequest{RoomId: priv}); status.Code(err) != codes.NotFound {
			t.Errorf("GetRoom private by %s: %v", who.name, err)
		}
		if _, err := who.rooms.ListMembers(who.ctx(ctx), &parleyv1.ListMembersRequest{RoomId: priv}); status.Code(err) != codes.NotFound {
			t.Errorf("ListMembers private by %s: %v", who.name, err)
		}
	}
}
