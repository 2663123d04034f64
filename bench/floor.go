package bench

import (
	"context"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// NewFloorServer returns a gRPC server that plays the least a server can do
// for fanout-v1: a sent message takes its room's next seq and goes, encoded
// once (grpc.PreparedMsg), to each of the room's streams straight from the
// sender's handler, which then acks it. There is no authentication (a
// token is its username), no Redis, Kafka or store, no queue and no writer
// goroutine. fanout-v1's load generator against it (`parley bench
// floor-server`, then `parley bench fanout --floor`) shows what this machine
// allows the workload with grpc-go on both ends, whatever a server does
// beyond that: Parley's floor, as --raw is its ceiling.
func NewFloorServer() *grpc.Server {
	gs := grpc.NewServer()
	fs := &floorServer{rooms: map[string]*floorRoom{}}
	parleyv1.RegisterAuthServiceServer(gs, fs)
	parleyv1.RegisterRoomServiceServer(gs, fs)
	parleyv1.RegisterChatServiceServer(gs, fs)
	return gs
}

type floorServer struct {
	parleyv1.UnimplementedAuthServiceServer
	parleyv1.UnimplementedRoomServiceServer
	parleyv1.UnimplementedChatServiceServer

	mu    sync.Mutex
	rooms map[string]*floorRoom
}

type floorRoom struct {
	mu      sync.Mutex // one send at a time: seq order is delivery order
	seq     int64
	streams []*floorStream
}

type floorStream struct {
	mu      sync.Mutex // one SendMsg at a time
	srv     parleyv1.ChatService_ConnectServer
	batches bool // StreamOptions.message_batches: MessageBatch frames of one message
}

func (st *floorStream) send(m any) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.srv.SendMsg(m)
}

func (f *floorServer) SignUp(_ context.Context, req *parleyv1.SignUpRequest) (*parleyv1.SignUpResponse, error) {
	return &parleyv1.SignUpResponse{Tokens: &parleyv1.TokenPair{AccessToken: req.Username}}, nil
}

func (f *floorServer) CreateRoom(_ context.Context, req *parleyv1.CreateRoomRequest) (*parleyv1.CreateRoomResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("room%d", len(f.rooms))
	f.rooms[id] = &floorRoom{}
	return &parleyv1.CreateRoomResponse{Room: &parleyv1.Room{RoomId: id, Name: req.Name}}, nil
}

func (f *floorServer) JoinRoom(_ context.Context, req *parleyv1.JoinRoomRequest) (*parleyv1.JoinRoomResponse, error) {
	return &parleyv1.JoinRoomResponse{Room: &parleyv1.Room{RoomId: req.RoomId}}, nil
}

func (f *floorServer) Connect(srv parleyv1.ChatService_ConnectServer) error {
	st := &floorStream{srv: srv}
	var room *floorRoom
	defer func() {
		if room != nil {
			room.mu.Lock()
			for i, s := range room.streams {
				if s == st {
					room.streams = append(room.streams[:i], room.streams[i+1:]...)
					break
				}
			}
			room.mu.Unlock()
		}
	}()
	for {
		req, err := srv.Recv()
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		switch v := req.Frame.(type) {
		case *parleyv1.ConnectRequest_Options:
			if room != nil {
				return status.Error(codes.FailedPrecondition, "options after subscribe")
			}
			st.batches = v.Options.MessageBatches
		case *parleyv1.ConnectRequest_Subscribe:
			if room != nil {
				return status.Error(codes.FailedPrecondition, "the floor server takes one room per stream")
			}
			f.mu.Lock()
			room = f.rooms[v.Subscribe.RoomId]
			f.mu.Unlock()
			if room == nil {
				return status.Errorf(codes.NotFound, "room %q not found", v.Subscribe.RoomId)
			}
			room.mu.Lock()
			room.streams = append(room.streams, st)
			head := room.seq
			room.mu.Unlock()
			if err := st.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Subscribed{Subscribed: &parleyv1.Subscribed{
				RoomId: v.Subscribe.RoomId, Head: &parleyv1.RoomPosition{Epoch: "e", Seq: head}}}}); err != nil {
				return err
			}
		case *parleyv1.ConnectRequest_Send:
			if room == nil {
				return status.Error(codes.FailedPrecondition, "send before subscribe")
			}
			room.mu.Lock()
			room.seq++
			m := &parleyv1.Message{RoomId: v.Send.RoomId, Epoch: "e", Seq: room.seq, ClientMsgId: v.Send.ClientMsgId, Body: v.Send.Body}
			// Each frame is encoded once, when a stream first wants it.
			var frames [2]*grpc.PreparedMsg // [0]: Message, [1]: MessageBatch
			for _, s := range room.streams {
				k := 0
				if s.batches {
					k = 1
				}
				if frames[k] == nil {
					resp := &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Message{Message: m}}
					if s.batches {
						resp.Frame = &parleyv1.ConnectResponse_MessageBatch{MessageBatch: &parleyv1.MessageBatch{Messages: []*parleyv1.Message{m}}}
					}
					frames[k] = new(grpc.PreparedMsg)
					if err := frames[k].Encode(srv, resp); err != nil {
						room.mu.Unlock()
						return err
					}
				}
				_ = s.send(frames[k]) // a receiver gone is not the sender's error
			}
			room.mu.Unlock()
			if err := st.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SendAck{SendAck: &parleyv1.SendAck{
				ClientMsgId: m.ClientMsgId, Message: m}}}); err != nil {
				return err
			}
		}
	}
}
