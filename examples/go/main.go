// Command example talks to Parley with the generated Go stubs
// (github.com/parleychat/parley/gen/go/parley/v1): it signs up (or logs in),
// finds or creates a public room and joins it, opens the Connect stream,
// subscribes, sends one message and prints what arrives until the message is
// both acknowledged (durable) and delivered back on the stream, then (with
// -listen) keeps printing for a while.
//
//	go run ./examples/go -addr 127.0.0.1:8080 -user ann -password correct-horse -room lobby
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

func main() {
	addr := flag.String("addr", envOr("PARLEY_ADDR", "127.0.0.1:8080"), "Parley gRPC address (env PARLEY_ADDR)")
	user := flag.String("user", "example_"+randomHex(4), "username (signed up if new)")
	password := flag.String("password", envOr("PARLEY_PASSWORD", "correct-horse-battery"), "password (env PARLEY_PASSWORD)")
	room := flag.String("room", "lobby", "public room name (created if missing)")
	text := flag.String("text", "hello from the Go example", "message to send")
	listen := flag.Duration("listen", 0, "keep printing incoming messages this long after the send")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *addr, *user, *password, *room, *text, *listen); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, addr, user, password, roomName, text string, listen time.Duration) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	authc := parleyv1.NewAuthServiceClient(conn)
	rooms := parleyv1.NewRoomServiceClient(conn)
	chat := parleyv1.NewChatServiceClient(conn)

	// 1. Sign up, or log in when the name is taken.
	var tokens *parleyv1.TokenPair
	su, err := authc.SignUp(ctx, &parleyv1.SignUpRequest{Username: user, Password: password})
	switch status.Code(err) {
	case codes.OK:
		tokens = su.GetTokens()
		fmt.Printf("signed up %s (%s)\n", su.GetUser().GetUsername(), su.GetUser().GetUserId())
	case codes.AlreadyExists:
		li, err := authc.Login(ctx, &parleyv1.LoginRequest{Username: user, Password: password})
		if err != nil {
			return fmt.Errorf("login: %w", err)
		}
		tokens = li.GetTokens()
		fmt.Printf("logged in %s (%s)\n", li.GetUser().GetUsername(), li.GetUser().GetUserId())
	default:
		return fmt.Errorf("sign up: %w", err)
	}
	// Every other call carries the access token as metadata.
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokens.GetAccessToken())

	// 2. Find the public room by name, or create it; join it.
	room, err := findOrCreate(ctx, rooms, roomName)
	if err != nil {
		return err
	}
	if _, err := rooms.JoinRoom(ctx, &parleyv1.JoinRoomRequest{RoomId: room.GetRoomId()}); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	fmt.Printf("joined room %s (%s)\n", room.GetName(), room.GetRoomId())

	// 3. Open the Connect stream and subscribe.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := chat.Connect(sctx)
	if err != nil {
		return err
	}
	sub := &parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: room.GetRoomId()}}}
	if err := stream.Send(sub); err != nil {
		return err
	}

	// 4. Send once subscribed; print messages until ours is acked and back.
	clientMsgID := "go-example-" + randomHex(8)
	var acked, delivered, done bool
	for {
		if acked && delivered && !done {
			done = true
			if listen <= 0 {
				return stream.CloseSend()
			}
			time.AfterFunc(listen, cancel)
		}
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream: %w", err)
		}
		switch f := resp.GetFrame().(type) {
		case *parleyv1.ConnectResponse_Subscribed:
			fmt.Printf("subscribed at seq %d\n", f.Subscribed.GetHead().GetSeq())
			send := &parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{
				RoomId: room.GetRoomId(), ClientMsgId: clientMsgID, Body: text,
			}}}
			if err := stream.Send(send); err != nil {
				return err
			}
		case *parleyv1.ConnectResponse_SendAck:
			if e := f.SendAck.GetError(); e != nil {
				return fmt.Errorf("send refused: %s (code %d)", e.GetMessage(), e.GetCode())
			}
			fmt.Printf("ack seq %d\n", f.SendAck.GetMessage().GetSeq())
			acked = true
		case *parleyv1.ConnectResponse_Message:
			m := f.Message
			fmt.Printf("message #%d %s: %s\n", m.GetSeq(), m.GetSenderUsername(), m.GetBody())
			delivered = delivered || m.GetClientMsgId() == clientMsgID
		case *parleyv1.ConnectResponse_SubscribeError:
			return fmt.Errorf("subscribe: %s", f.SubscribeError.GetError().GetMessage())
		}
	}
}

func findOrCreate(ctx context.Context, rooms parleyv1.RoomServiceClient, name string) (*parleyv1.Room, error) {
	req := &parleyv1.ListRoomsRequest{Filter: parleyv1.RoomFilter_ROOM_FILTER_PUBLIC, PageSize: 100}
	for {
		resp, err := rooms.ListRooms(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("list rooms: %w", err)
		}
		for _, r := range resp.GetRooms() {
			if r.GetName() == name {
				return r, nil
			}
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	created, err := rooms.CreateRoom(ctx, &parleyv1.CreateRoomRequest{Name: name, Visibility: parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC})
	if err != nil {
		return nil, fmt.Errorf("create room: %w", err)
	}
	return created.GetRoom(), nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
