package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// FloorServer plays the least a server can do for fanout-v1: a sent message
// takes its room's next seq, is encoded once, and goes to each of the room's
// streams, and its sender gets the ack. There is no authentication (a token
// is its username), no Redis, Kafka or store. fanout-v1's load generator
// against it (`parley bench floor-server`, then `parley bench fanout
// --floor`) shows what this machine allows the workload with grpc-go on both
// ends, whatever a server does beyond that: Parley's floor, as --raw is its
// ceiling.
//
// With a tick of 0 the sender's handler writes each message to every stream
// at once (one frame per delivery, no queue, no goroutine but grpc-go's).
// With a tick, messages queue per stream and go out every tick, all of a
// stream's queued messages in one MessageBatch frame, as Parley's writers do
// (its --delivery-tick): fewer, fuller writes, for up to a tick of latency.
type FloorServer struct {
	parleyv1.UnimplementedAuthServiceServer
	parleyv1.UnimplementedRoomServiceServer
	parleyv1.UnimplementedChatServiceServer

	tick time.Duration

	mu      sync.Mutex
	rooms   map[string]*floorRoom
	streams [floorFlushers]map[*floorStream]bool // by flusher, with a tick
	next    int                                  // the flusher of the next stream
}

// floorFlushers is how many goroutines write the queued frames with a tick,
// each for its share of the streams: one per core here.
const floorFlushers = 2

type floorRoom struct {
	mu      sync.Mutex // one send at a time: seq order is delivery order
	seq     int64
	streams []*floorStream
}

type floorStream struct {
	mu      sync.Mutex // one SendMsg at a time; guards queued
	srv     parleyv1.ChatService_ConnectServer
	batches bool     // StreamOptions.message_batches
	queued  [][]byte // encoded Messages waiting for the tick
	shard   int
}

// floorFrame is an encoded ConnectResponse, sent as it is (floorCodec).
type floorFrame []byte

// floorCodec sends floorFrames as they are and everything else as protobuf.
type floorCodec struct{ proto encoding.CodecV2 }

func (floorCodec) Name() string { return protocodec.Name }

func (c floorCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(floorFrame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f)}, nil
	}
	return c.proto.Marshal(v)
}

func (c floorCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// NewFloorServer returns the gRPC server of a FloorServer with the given
// delivery tick (0: none), and a function that stops its flushers.
func NewFloorServer(tick time.Duration) (*grpc.Server, func()) {
	gs := grpc.NewServer(grpc.ForceServerCodecV2(floorCodec{proto: encoding.GetCodecV2(protocodec.Name)}))
	fs := &FloorServer{tick: tick, rooms: map[string]*floorRoom{}}
	for i := range fs.streams {
		fs.streams[i] = map[*floorStream]bool{}
	}
	parleyv1.RegisterAuthServiceServer(gs, fs)
	parleyv1.RegisterRoomServiceServer(gs, fs)
	parleyv1.RegisterChatServiceServer(gs, fs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if tick > 0 {
		for i := range floorFlushers {
			wg.Go(func() { fs.flush(ctx, i) })
		}
	}
	return gs, func() { cancel(); wg.Wait() }
}

// flush writes, every tick, the queued messages of the streams of shard i.
func (f *FloorServer) flush(ctx context.Context, i int) {
	t := time.NewTicker(f.tick)
	defer t.Stop()
	var streams []*floorStream
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		streams = streams[:0]
		for st := range f.streams[i] {
			streams = append(streams, st)
		}
		f.mu.Unlock()
		for _, st := range streams {
			st.mu.Lock()
			switch {
			case len(st.queued) == 0:
			case st.batches:
				var b []byte
				for _, m := range st.queued {
					b = protowire.AppendTag(b, wireBatchItem, protowire.BytesType)
					b = protowire.AppendBytes(b, m)
				}
				_ = st.srv.SendMsg(messageFrame(wireMessageBatch, b))
			default:
				for _, m := range st.queued {
					_ = st.srv.SendMsg(messageFrame(wireMessage, m))
				}
			}
			clear(st.queued)
			st.queued = st.queued[:0]
			st.mu.Unlock()
		}
	}
}

// messageFrame is the ConnectResponse whose field num holds b.
func messageFrame(num protowire.Number, b []byte) floorFrame {
	f := protowire.AppendTag(make([]byte, 0, len(b)+8), num, protowire.BytesType)
	return protowire.AppendBytes(f, b)
}

func (st *floorStream) send(m any) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.srv.SendMsg(m)
}

func (f *FloorServer) SignUp(_ context.Context, req *parleyv1.SignUpRequest) (*parleyv1.SignUpResponse, error) {
	return &parleyv1.SignUpResponse{Tokens: &parleyv1.TokenPair{AccessToken: req.Username}}, nil
}

func (f *FloorServer) CreateRoom(_ context.Context, req *parleyv1.CreateRoomRequest) (*parleyv1.CreateRoomResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("room%d", len(f.rooms))
	f.rooms[id] = &floorRoom{}
	return &parleyv1.CreateRoomResponse{Room: &parleyv1.Room{RoomId: id, Name: req.Name}}, nil
}

func (f *FloorServer) JoinRoom(_ context.Context, req *parleyv1.JoinRoomRequest) (*parleyv1.JoinRoomResponse, error) {
	return &parleyv1.JoinRoomResponse{Room: &parleyv1.Room{RoomId: req.RoomId}}, nil
}

func (f *FloorServer) Connect(srv parleyv1.ChatService_ConnectServer) error {
	st := &floorStream{srv: srv}
	var room *floorRoom
	defer func() {
		if room == nil {
			return
		}
		room.mu.Lock()
		for i, s := range room.streams {
			if s == st {
				room.streams = append(room.streams[:i], room.streams[i+1:]...)
				break
			}
		}
		room.mu.Unlock()
		f.mu.Lock()
		delete(f.streams[st.shard], st)
		f.mu.Unlock()
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
			if room != nil && f.tick > 0 {
				st.shard, f.next = f.next, (f.next+1)%floorFlushers
				f.streams[st.shard][st] = true
			}
			f.mu.Unlock()
			if room == nil {
				return status.Errorf(codes.NotFound, "room %q not found", v.Subscribe.RoomId)
			}
			// Under the room's lock, so that no message goes out before it.
			room.mu.Lock()
			room.streams = append(room.streams, st)
			err := st.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Subscribed{Subscribed: &parleyv1.Subscribed{
				RoomId: v.Subscribe.RoomId, Head: &parleyv1.RoomPosition{Epoch: "e", Seq: room.seq}}}})
			room.mu.Unlock()
			if err != nil {
				return err
			}
		case *parleyv1.ConnectRequest_Send:
			if room == nil {
				return status.Error(codes.FailedPrecondition, "send before subscribe")
			}
			room.mu.Lock()
			room.seq++
			m := &parleyv1.Message{RoomId: v.Send.RoomId, Epoch: "e", Seq: room.seq, ClientMsgId: v.Send.ClientMsgId, Body: v.Send.Body}
			enc, err := proto.Marshal(m)
			if err != nil {
				room.mu.Unlock()
				return err
			}
			if f.tick > 0 {
				for _, s := range room.streams {
					s.mu.Lock()
					s.queued = append(s.queued, enc)
					s.mu.Unlock()
				}
			} else {
				// Each framing encoded once, when a stream first wants it.
				var frames [2]floorFrame // [0]: Message, [1]: MessageBatch
				for _, s := range room.streams {
					k := 0
					if s.batches {
						k = 1
					}
					if frames[k] == nil {
						frames[k] = messageFrame(wireMessage, enc)
						if s.batches {
							frames[k] = messageFrame(wireMessageBatch, protowire.AppendBytes(protowire.AppendTag(nil, wireBatchItem, protowire.BytesType), enc))
						}
					}
					_ = s.send(frames[k]) // a receiver gone is not the sender's error
				}
			}
			room.mu.Unlock()
			if err := st.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SendAck{SendAck: &parleyv1.SendAck{
				ClientMsgId: m.ClientMsgId, Message: m}}}); err != nil {
				return err
			}
		}
	}
}
