package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/chat"
)

// FloorServer plays the least a server can do for fanout-v1: a sent message
// takes its room's next seq, is encoded once, and goes to each of the room's
// streams, and its sender gets the ack. There is no authentication (a token
// is its username), no Redis, Kafka or store. fanout-v1's load generator
// against it (`parley bench floor-server`, then `parley bench fanout
// --floor`) shows what this machine gives the workload through grpc-go on
// both ends when the server does nothing else per message.
//
// With a tick of 0 the sender's handler writes each message to every stream
// at once (one frame per delivery, no queue and no goroutine but grpc-go's;
// a stream whose flow-control window is full holds up its room). With a
// tick, messages queue per stream, and every tick each stream that got some
// has its writer goroutine woken to send them, as Parley wakes its writers
// (its --delivery-tick; Parley starts the goroutine then): several in one MessageBatch frame, within Parley's
// limits; fewer, fuller writes, for up to a tick of latency, and a slow
// stream holds up only itself. As in Parley, a lone message goes out as its
// Message frame, built once for all streams; frames are built and written
// with Parley's own codec (server/chat); queues have no bound here (Parley
// ends a stream that falls 1,024 messages behind).
type FloorServer struct {
	parleyv1.UnimplementedAuthServiceServer
	parleyv1.UnimplementedRoomServiceServer
	parleyv1.UnimplementedChatServiceServer

	tick time.Duration

	mu    sync.Mutex
	rooms map[string]*floorRoom

	dirtyMu sync.Mutex
	dirty   []*floorStream // streams with queued messages, woken at the next tick

	// Deliveries: the frames sent and the messages in them.
	framesSent, messagesSent atomic.Int64
}

// Sent returns how many delivery frames the server has sent, and how many
// messages they carried.
func (f *FloorServer) Sent() (frames, messages int64) {
	return f.framesSent.Load(), f.messagesSent.Load()
}

type floorRoom struct {
	mu      sync.Mutex // one send at a time: seq order is delivery order
	seq     int64
	streams []*floorStream
}

type floorStream struct {
	wmu     sync.Mutex // one SendMsg at a time
	srv     parleyv1.ChatService_ConnectServer
	batches bool // StreamOptions.message_batches

	qmu    sync.Mutex
	queued []floorMsg // waiting for the tick
	dirty  bool       // on the server's dirty list
	closed bool       // the handler is ending: queue nothing more
	wake   chan struct{}
}

// NewFloorServer returns a FloorServer with the given delivery tick (0:
// none), its gRPC server, and a function that stops its ticker.
func NewFloorServer(tick time.Duration) (*FloorServer, *grpc.Server, func()) {
	gs := grpc.NewServer(grpc.ForceServerCodecV2(chat.NewCodec()))
	fs := &FloorServer{tick: tick, rooms: map[string]*floorRoom{}}
	parleyv1.RegisterAuthServiceServer(gs, fs)
	parleyv1.RegisterRoomServiceServer(gs, fs)
	parleyv1.RegisterChatServiceServer(gs, fs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if tick > 0 {
		wg.Go(func() { fs.wakeWriters(ctx) })
	}
	return fs, gs, func() { cancel(); wg.Wait() }
}

// wakeWriters wakes, every tick, the writers of the streams that got
// messages since the last.
func (f *FloorServer) wakeWriters(ctx context.Context) {
	t := time.NewTicker(f.tick)
	defer t.Stop()
	var woken []*floorStream
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.dirtyMu.Lock()
		woken, f.dirty = f.dirty, woken[:0]
		f.dirtyMu.Unlock()
		for _, st := range woken {
			select {
			case st.wake <- struct{}{}:
			default: // already woken
			}
		}
		clear(woken)
	}
}

// floorMsg is a message queued for a stream: its encoding, and its
// ConnectResponse frame, built once for every stream.
type floorMsg struct {
	enc   []byte
	frame chat.EncodedFrame
}

// enqueue queues a message for st's next tick, unless st has ended.
func (f *FloorServer) enqueue(st *floorStream, m floorMsg) {
	st.qmu.Lock()
	if st.closed {
		st.qmu.Unlock()
		return
	}
	st.queued = append(st.queued, m)
	mark := !st.dirty
	st.dirty = true
	st.qmu.Unlock()
	if mark {
		f.dirtyMu.Lock()
		f.dirty = append(f.dirty, st)
		f.dirtyMu.Unlock()
	}
}

// write sends st's queued messages each time it is woken, until ctx ends:
// as Parley's writers do, a lone message as its Message frame, several as
// MessageBatch frames within Parley's limits, or each as its own frame for
// a stream that takes no batches.
func (f *FloorServer) write(ctx context.Context, st *floorStream) {
	var batch []floorMsg
	var encs [][]byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.wake:
		}
		st.qmu.Lock()
		batch, st.queued = st.queued, batch[:0]
		st.dirty = false
		st.qmu.Unlock()
		var frames int64
		st.wmu.Lock()
		for rest := batch; len(rest) > 0; frames++ {
			// Parley's rule (server/chat's handleAll): a message joins the
			// batch while the batch stays within both limits.
			n, size := 1, len(rest[0].enc)+8
			for st.batches && n < len(rest) && n < chat.MaxBatchMessages && size+len(rest[n].enc) <= chat.MaxBatchBytes {
				size += len(rest[n].enc) + 8
				n++
			}
			frame := rest[0].frame
			if n > 1 {
				encs = encs[:0]
				for _, m := range rest[:n] {
					encs = append(encs, m.enc)
				}
				frame = chat.BatchFrame(encs)
			}
			if err := st.srv.SendMsg(frame); err != nil {
				break // the stream is gone
			}
			rest = rest[n:]
		}
		st.wmu.Unlock()
		f.framesSent.Add(frames)
		f.messagesSent.Add(int64(len(batch)))
		clear(batch)
		clear(encs)
	}
}

// bearerToken is the token a call carries (authCtx's), for the stand-in
// servers whose tokens are usernames.
func bearerToken(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) == 1 {
		return strings.TrimPrefix(vals[0], "Bearer ")
	}
	return ""
}

func (st *floorStream) send(m any) error {
	st.wmu.Lock()
	defer st.wmu.Unlock()
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
	st := &floorStream{srv: srv, wake: make(chan struct{}, 1)}
	sender := bearerToken(srv.Context()) // the token is the username
	var room *floorRoom
	// The writer ends before the handler returns: no SendMsg after it.
	wctx, stopWriter := context.WithCancel(srv.Context())
	var writer sync.WaitGroup
	// Out of its room and closed to new messages first, then the writer
	// stopped. A writer (or, with no tick, a sender) blocked on the flow
	// control of a client that half-closed and stopped reading would keep
	// the handler here: the load generator never does that.
	defer func() {
		if room != nil {
			room.mu.Lock()
			if i := slices.Index(room.streams, st); i >= 0 {
				room.streams = slices.Delete(room.streams, i, i+1)
			}
			room.mu.Unlock()
		}
		st.qmu.Lock()
		st.closed = true
		st.queued = nil
		st.qmu.Unlock()
		stopWriter()
		writer.Wait()
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
			if f.tick > 0 {
				writer.Go(func() { f.write(wctx, st) })
			}
			// Under the room's lock, so that no message goes out before it.
			room.mu.Lock()
			room.streams = append(room.streams, st)
			err := st.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Subscribed{Subscribed: &parleyv1.Subscribed{
				RoomId: v.Subscribe.RoomId, Head: &parleyv1.RoomPosition{Epoch: "floor-epoch-0000", Seq: room.seq}}}})
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
			// Every field Parley fills, of about Parley's sizes.
			m := &parleyv1.Message{MessageId: fmt.Sprintf("%026d", room.seq), RoomId: v.Send.RoomId, Epoch: "floor-epoch-0000", Seq: room.seq,
				SenderId: sender, SenderUsername: sender, ClientMsgId: v.Send.ClientMsgId, Body: v.Send.Body, CreateTime: timestamppb.Now()}
			enc, err := proto.Marshal(m)
			if err != nil {
				room.mu.Unlock()
				return err
			}
			msg := floorMsg{enc: enc, frame: chat.MessageFrame(enc)}
			for _, s := range room.streams {
				if f.tick > 0 {
					f.enqueue(s, msg)
				} else {
					// A lone message goes out as its Message frame, as
					// Parley's does, whether the stream takes batches or not.
					_ = s.send(msg.frame) // a receiver gone is not the sender's error
				}
			}
			if f.tick == 0 {
				f.framesSent.Add(int64(len(room.streams)))
				f.messagesSent.Add(int64(len(room.streams)))
			}
			room.mu.Unlock()
			if err := st.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SendAck{SendAck: &parleyv1.SendAck{
				ClientMsgId: m.ClientMsgId, Message: m}}}); err != nil {
				return err
			}
		}
	}
}
