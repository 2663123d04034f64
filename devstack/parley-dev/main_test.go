package main

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// startDev runs parley-dev on a random port with data in dir and returns its
// address and a function that stops it and checks it stopped cleanly.
func startDev(t *testing.T, dir string) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-data", dir, "-log-level", "warn"}, io.Discard, func(a string) { addrCh <- a })
	}()
	select {
	case a := <-addrCh:
		return a, func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("parley-dev did not stop within 60s")
			}
		}
	case err := <-done:
		cancel()
		t.Fatalf("run stopped during start-up: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("parley-dev did not start within 60s")
	}
	return "", nil
}

type clients struct {
	auth  parleyv1.AuthServiceClient
	rooms parleyv1.RoomServiceClient
	chat  parleyv1.ChatServiceClient
}

func dial(t *testing.T, addr string) clients {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return clients{parleyv1.NewAuthServiceClient(cc), parleyv1.NewRoomServiceClient(cc), parleyv1.NewChatServiceClient(cc)}
}

func bearer(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// TestRestartKeepsHistory signs up, creates a room and sends messages, stops
// parley-dev right away (the drain must store them), starts it again on the
// same data directory, and checks that the old token still works, that the
// history is there and that a new message lands above it.
func TestRestartKeepsHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack twice")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	addr, stop := startDev(t, dir)
	c := dial(t, addr)
	su, err := c.auth.SignUp(ctx, &parleyv1.SignUpRequest{Username: "ann", Password: "correct-horse"})
	if err != nil {
		t.Fatalf("SignUp: %v", err)
	}
	tok := su.GetTokens().GetAccessToken()
	actx := bearer(ctx, tok)
	room, err := c.rooms.CreateRoom(actx, &parleyv1.CreateRoomRequest{Name: "general"})
	if err != nil {
		t.Fatalf("CreateRoom: %v", err)
	}
	roomID := room.GetRoom().GetRoomId()
	const n = 30
	var last *parleyv1.Message
	for i := range n {
		r, err := c.chat.SendMessage(actx, &parleyv1.SendMessageRequest{RoomId: roomID, ClientMsgId: fmt.Sprint("m", i), Body: fmt.Sprint("hello ", i)})
		if err != nil {
			t.Fatalf("SendMessage %d: %v", i, err)
		}
		last = r.GetMessage()
	}
	stop() // at once: the messages may still be only in kfake

	addr, stop = startDev(t, dir)
	defer stop()
	c = dial(t, addr)
	actx = bearer(ctx, tok) // the token key is kept in dir
	if _, err := c.auth.GetMe(actx, &parleyv1.GetMeRequest{}); err != nil {
		t.Fatalf("GetMe with the token of the first run: %v", err)
	}
	if _, err := c.auth.Login(ctx, &parleyv1.LoginRequest{Username: "ann", Password: "correct-horse"}); err != nil {
		t.Fatalf("Login: %v", err)
	}
	list, err := c.chat.ListMessages(actx, &parleyv1.ListMessagesRequest{RoomId: roomID, PageSize: 200})
	if err != nil {
		t.Fatalf("ListMessages: %v", err)
	}
	if got := len(list.GetMessages()); got != n {
		t.Fatalf("after restart: %d messages stored, want %d", got, n)
	}
	r, err := c.chat.SendMessage(actx, &parleyv1.SendMessageRequest{RoomId: roomID, ClientMsgId: "after", Body: "after restart"})
	if err != nil {
		t.Fatalf("SendMessage after restart: %v", err)
	}
	if m := r.GetMessage(); m.GetSeq() <= last.GetSeq() || m.GetEpoch() == last.GetEpoch() {
		t.Fatalf("after restart: seq %d epoch %s, want seq > %d and an epoch other than %s", m.GetSeq(), m.GetEpoch(), last.GetSeq(), last.GetEpoch())
	}
}
