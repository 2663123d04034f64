package chat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/ratelimit"
	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/fanout"
)

// item is one unit of work for a session's writer.
type item struct {
	frame  *parleyv1.ConnectResponse // send as is
	ev     *fanout.Event             // a live event of a room
	sub    *parleyv1.Subscribe       // start a subscription (replay, then live)
	unsub  string                    // stop a subscription
	resync bool                      // catch up every room from its last position
	drain  bool                      // everything before was sent: finish
}

// roomState is the writer's position in a subscribed room.
type roomState struct {
	epoch string
	last  int64
}

// session is one Connect or StreamRoom stream.
//
// Everything the client gets goes through one queue and one writer
// goroutine, in order. The queue is a slice under a mutex plus a wake-up
// channel rather than a channel of items: the writer takes everything queued
// at once, so a stream that is behind costs one wake-up and (with
// StreamOptions.message_batches) one frame for many messages, not one each.
type session struct {
	svc     *Service
	me      auth.Identity
	id      string
	send    func(*parleyv1.ConnectResponse) error
	sendRaw func(EncodedFrame) error // nil: the stream takes no pre-encoded frames (StreamRoom)
	batches atomic.Bool              // the client accepts MessageBatch frames
	ctx     context.Context
	cancel  context.CancelCauseFunc

	qmu   sync.Mutex
	queue []item
	dirty bool // live messages queued, waiting for the delivery tick
	wake  chan struct{} // capacity 1: "the queue is not empty"

	mu    sync.Mutex
	rooms map[string]bool // subscribed rooms, as the reader sees them

	smu     sync.Mutex
	sends   []sendJob // waiting for the sender goroutine
	sending bool      // the sender goroutine runs

	pending sync.WaitGroup // sends awaiting their ack
	closed  atomic.Bool
}

func (s *Service) newSession(ctx context.Context, me auth.Identity, send func(*parleyv1.ConnectResponse) error) *session {
	ctx, cancel := context.WithCancelCause(ctx)
	return &session{
		svc: s, me: me, id: ulid.Make().String(), send: send,
		wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
		rooms: make(map[string]bool),
	}
}

var errSlowConsumer = status.Error(codes.ResourceExhausted, "stream is not reading fast enough; reconnect and resume from your last position")

// enqueue hands it to the writer without blocking; a full queue ends the session.
func (ss *session) enqueue(it item) { ss.put(it, false) }

// put queues it and wakes the writer now, or with deferred at the next
// delivery tick (Config.DeliveryTick): live messages of many streams then
// reach gRPC together, and each connection's writer makes one write for
// them instead of one per frame.
func (ss *session) put(it item, deferred bool) {
	ss.qmu.Lock()
	if ss.closed.Load() {
		ss.qmu.Unlock()
		return
	}
	if len(ss.queue) >= ss.svc.cfg.StreamQueue {
		ss.qmu.Unlock()
		if ss.closed.CompareAndSwap(false, true) {
			ss.svc.slow.Inc()
			ss.cancel(errSlowConsumer)
		}
		return
	}
	ss.queue = append(ss.queue, it)
	if deferred && ss.svc.cfg.DeliveryTick > 0 {
		register := !ss.dirty
		ss.dirty = true
		ss.qmu.Unlock()
		if register {
			ss.svc.ticker.add(ss)
		}
		return
	}
	ss.qmu.Unlock()
	ss.signal()
}

// signal wakes the writer.
func (ss *session) signal() {
	select {
	case ss.wake <- struct{}{}:
	default: // already signalled
	}
}

// takeQueued returns everything queued and leaves spare (emptied) in its place.
func (ss *session) takeQueued(spare []item) []item {
	ss.qmu.Lock()
	defer ss.qmu.Unlock()
	items := ss.queue
	ss.queue = spare[:0]
	return items
}

// Deliver implements fanout.Subscriber.
func (ss *session) Deliver(ev *fanout.Event) { ss.put(item{ev: ev}, ev.MessageBytes != nil) }

// Resync implements fanout.Subscriber.
func (ss *session) Resync() { ss.enqueue(item{resync: true}) }

// serve runs the writer on the calling goroutine (the stream's handler: no
// extra goroutine per stream) until the session ends, then cleans up.
func (ss *session) serve() error {
	ss.svc.streams.Inc()
	ss.svc.streamsMu.Lock()
	ss.svc.sessions[ss] = struct{}{}
	ss.svc.streamsMu.Unlock()
	err := ss.writer()
	ss.closed.Store(true)
	ss.mu.Lock()
	for room := range ss.rooms {
		ss.svc.hub.Remove(room, ss)
	}
	ss.mu.Unlock()
	ss.svc.streams.Dec()
	ss.svc.streamsMu.Lock()
	delete(ss.svc.sessions, ss)
	ss.svc.streamsMu.Unlock()
	return err
}

// end stops the session with cause.
func (ss *session) end(cause error) { ss.cancel(cause) }

// writer sends everything the client gets, in queue order, until the session
// ends. It returns the status to end the stream with (nil after a drain).
func (ss *session) writer() error {
	rooms := make(map[string]*roomState)
	defer ss.leaveAll(rooms)
	var spare []item
	var pending []*fanout.Event
	for {
		select {
		case <-ss.ctx.Done():
			return ss.endStatus()
		case <-ss.svc.shutdown:
			return status.Error(codes.Unavailable, "server is shutting down; reconnect and resume")
		case <-ss.wake:
			items := ss.takeQueued(spare)
			ss.svc.queue.Observe(float64(len(items)))
			err := ss.handleAll(items, rooms, &pending)
			clear(items) // let the events go
			spare = items[:0]
			if errors.Is(err, errDrained) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
}

var errDrained = errors.New("drained")

// leaveAll removes the stream's presence from every room it was in.
func (ss *session) leaveAll(rooms map[string]*roomState) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for room := range rooms {
		if err := ss.svc.broker.PresenceLeave(ctx, room, ss.me.UserID, ss.me.Username, ss.id); err != nil {
			ss.svc.logger.Warn("presence leave failed", "room", room, "err", err)
		}
	}
}

func (ss *session) endStatus() error {
	cause := context.Cause(ss.ctx)
	if _, ok := status.FromError(cause); ok {
		return cause
	}
	if errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
		return status.FromContextError(cause).Err()
	}
	return apierr.Err(cause)
}

// Batches are capped so that one frame stays well under a client's default
// 4 MiB receive limit.
const (
	maxBatchBytes    = 1 << 20
	maxBatchMessages = 1000
)

// handleAll handles items in order. Consecutive live messages are written
// together: from their broker encoding where the stream takes pre-encoded
// frames, as one MessageBatch frame when the client accepts them, else one
// Message frame each. pending is scratch space kept by the writer between
// calls.
func (ss *session) handleAll(items []item, rooms map[string]*roomState, pending *[]*fanout.Event) error {
	size := 0
	flush := func() error {
		evs := *pending
		defer func() { clear(evs); *pending, size = evs[:0], 0 }()
		switch {
		case len(evs) == 0:
			return nil
		case ss.sendRaw == nil: // StreamRoom: its send converts each frame
			for _, ev := range evs {
				if err := ss.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Message{Message: ev.GetMessage()}}); err != nil {
					return err
				}
			}
			return nil
		case len(evs) == 1 || !ss.batches.Load():
			for _, ev := range evs {
				if err := ss.sendRaw(messageFrame(ev.MessageBytes)); err != nil {
					return err
				}
			}
			return nil
		default:
			msgs := make([][]byte, len(evs))
			for i, ev := range evs {
				msgs[i] = ev.MessageBytes
			}
			return ss.sendRaw(batchFrame(msgs))
		}
	}
	for _, it := range items {
		if it.ev != nil && it.ev.GetMessage() != nil {
			st := rooms[it.ev.Room]
			if st == nil {
				continue // not (yet / any more) subscribed: replay covers it
			}
			m := it.ev.GetMessage()
			if m.Epoch != st.epoch {
				if err := flush(); err != nil {
					return err
				}
				// The room's counter was re-created: tell the client, and send
				// what the new epoch already holds (messages published before
				// this instance saw the new epoch never came live).
				nst, err := ss.catchUp(it.ev.Room, &parleyv1.RoomPosition{Epoch: st.epoch, Seq: st.last})
				if err != nil {
					return err
				}
				if nst.epoch != m.Epoch { // an even newer epoch meanwhile: that one rules
					rooms[it.ev.Room] = nst
					continue
				}
				*st = *nst
			}
			if m.Seq <= st.last {
				continue
			}
			st.last = m.Seq
			if len(*pending) == maxBatchMessages || size+len(it.ev.MessageBytes) > maxBatchBytes {
				if err := flush(); err != nil {
					return err
				}
			}
			*pending = append(*pending, it.ev)
			size += len(it.ev.MessageBytes) + 8
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if err := ss.handle(it, rooms); err != nil {
			return err
		}
	}
	return flush()
}

func (ss *session) handle(it item, rooms map[string]*roomState) error {
	switch {
	case it.frame != nil:
		return ss.send(it.frame)
	case it.ev != nil:
		st := rooms[it.ev.Room]
		if st == nil {
			return nil // not (yet / any more) subscribed: replay covers it
		}
		switch e := it.ev.Event.(type) { // messages are handled by handleAll
		case *eventsv1.RoomEvent_MessageWithdrawn:
			return ss.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_MessageWithdrawn{MessageWithdrawn: e.MessageWithdrawn}})
		case *eventsv1.RoomEvent_Typing:
			if e.Typing.GetUserId() == ss.me.UserID {
				return nil
			}
			return ss.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Typing{Typing: e.Typing}})
		case *eventsv1.RoomEvent_Presence:
			return ss.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Presence{Presence: e.Presence}})
		case *eventsv1.RoomEvent_ReadMarker:
			if e.ReadMarker.GetUserId() != ss.me.UserID {
				return nil // read positions are private: only the reader's other streams get them
			}
			return ss.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_ReadMarker{ReadMarker: e.ReadMarker}})
		}
		return nil
	case it.sub != nil:
		st, err := ss.catchUp(it.sub.RoomId, it.sub.ResumeFrom)
		if err != nil {
			return err
		}
		if _, again := rooms[it.sub.RoomId]; !again {
			if err := ss.svc.broker.PresenceJoin(ss.ctx, it.sub.RoomId, ss.me.UserID, ss.me.Username, ss.id, presenceTTL); err != nil {
				ss.svc.logger.Warn("presence join failed", "room", it.sub.RoomId, "err", err)
			}
		}
		rooms[it.sub.RoomId] = st
		return ss.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Subscribed{Subscribed: &parleyv1.Subscribed{
			RoomId: it.sub.RoomId, Head: &parleyv1.RoomPosition{Epoch: st.epoch, Seq: st.last}}}})
	case it.unsub != "":
		if _, ok := rooms[it.unsub]; ok {
			delete(rooms, it.unsub)
			if err := ss.svc.broker.PresenceLeave(ss.ctx, it.unsub, ss.me.UserID, ss.me.Username, ss.id); err != nil {
				ss.svc.logger.Warn("presence leave failed", "room", it.unsub, "err", err)
			}
		}
		return nil
	case it.resync:
		for room, st := range rooms {
			nst, err := ss.catchUp(room, &parleyv1.RoomPosition{Epoch: st.epoch, Seq: st.last})
			if err != nil {
				return err
			}
			rooms[room] = nst
		}
		return nil
	case it.drain:
		return errDrained
	}
	return nil
}

func resyncFrame(room, epoch string, seq int64, reason string) *parleyv1.ConnectResponse {
	return &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_ResyncRequired{ResyncRequired: &parleyv1.ResyncRequired{
		RoomId: room, Head: &parleyv1.RoomPosition{Epoch: epoch, Seq: seq}, Reason: reason}}}
}

// catchUp sends what the client missed in room since from (nothing when from
// is nil: live from now) and returns the position to continue live from.
func (ss *session) catchUp(room string, from *parleyv1.RoomPosition) (*roomState, error) {
	ctx := ss.ctx
	epoch, head, err := ss.svc.head(ctx, room)
	if err != nil {
		return nil, apierr.Err(err)
	}
	st := &roomState{epoch: epoch, last: head}
	if from == nil {
		return st, nil
	}
	if from.Epoch != epoch {
		if err := ss.send(resyncFrame(room, epoch, head, "room epoch changed; reload history")); err != nil {
			return nil, err
		}
		// The new epoch's messages so far are in the recent cache (unless it
		// already overflowed): send them too, so that a client does not
		// depend on the store, which may lag behind and receive a room's
		// records out of order, to see them.
		recent, _, err := ss.svc.broker.Recent(ctx, room)
		if err != nil {
			return nil, apierr.Err(fmt.Errorf("%w: %v", apierr.ErrUnavailable, err))
		}
		var fresh []*parleyv1.Message
		for _, m := range recent {
			if m.Epoch == epoch {
				fresh = append(fresh, m)
				st.last = max(st.last, m.Seq)
			}
		}
		return st, ss.sendMessages(fresh)
	}
	if from.Seq >= head {
		return st, nil
	}
	msgs, complete, err := ss.svc.replay(ctx, room, from.Seq)
	if err != nil {
		return nil, apierr.Err(err)
	}
	if !complete {
		return st, ss.send(resyncFrame(room, epoch, head, "too far behind to replay; reload history"))
	}
	var missed []*parleyv1.Message
	for _, m := range msgs {
		if m.Epoch != epoch || m.Seq <= from.Seq {
			continue
		}
		st.last = max(st.last, m.Seq)
		missed = append(missed, m)
	}
	return st, ss.sendMessages(missed)
}

// sendMessages sends replayed messages, in MessageBatch frames when the
// client accepts them.
func (ss *session) sendMessages(msgs []*parleyv1.Message) error {
	if ss.batches.Load() {
		for len(msgs) > 0 {
			n := min(len(msgs), replayBatch)
			if err := ss.send(batchOf(msgs[:n])); err != nil {
				return err
			}
			msgs = msgs[n:]
		}
		return nil
	}
	for _, m := range msgs {
		if err := ss.send(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Message{Message: m}}); err != nil {
			return err
		}
	}
	return nil
}

// replayBatch is how many replayed messages go in one MessageBatch frame.
const replayBatch = 200

// replay returns the room's messages after seq, oldest first: from the
// recent cache, and from the store for what the cache no longer holds.
// complete is false when more than MaxReplay messages were missed.
func (s *Service) replay(ctx context.Context, room string, after int64) ([]*parleyv1.Message, bool, error) {
	recent, all, err := s.broker.Recent(ctx, room)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", apierr.ErrUnavailable, err)
	}
	if all || (len(recent) > 0 && recent[0].Seq <= after+1) {
		return recent, true, nil
	}
	var out []*parleyv1.Message
	cursor := after
	limit := int64(1 << 62)
	if len(recent) > 0 {
		limit = recent[0].Seq
	}
	for cursor < limit-1 {
		page, err := s.history.List(ctx, room, 0, cursor, 200)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %v", apierr.ErrUnavailable, err)
		}
		for _, m := range page {
			if m.Seq >= limit {
				break
			}
			out = append(out, m)
		}
		if len(page) < 200 || page[len(page)-1].Seq >= limit {
			break
		}
		cursor = page[len(page)-1].Seq
		if len(out) > s.cfg.MaxReplay {
			return nil, false, nil
		}
	}
	if len(out) > s.cfg.MaxReplay {
		return nil, false, nil
	}
	return append(out, recent...), true, nil
}

// subscribe validates and registers a subscription requested by the client;
// a refusal is reported in-band as SubscribeError.
func (ss *session) subscribe(ctx context.Context, sub *parleyv1.Subscribe) {
	refuse := func(err error) {
		st := apierr.Status(err)
		ss.enqueue(item{frame: &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SubscribeError{SubscribeError: &parleyv1.SubscribeError{
			RoomId: sub.GetRoomId(), Error: &parleyv1.Status{Code: int32(st.Code()), Message: st.Message()}}}}})
	}
	if err := ss.svc.checkMember(ctx, sub.GetRoomId(), ss.me.UserID); err != nil {
		refuse(err)
		return
	}
	if p := sub.GetResumeFrom(); p != nil && p.Seq < 0 {
		refuse(apierr.Invalid("resume_from.seq", "must not be negative"))
		return
	}
	ss.mu.Lock()
	if !ss.rooms[sub.RoomId] && len(ss.rooms) >= ss.svc.cfg.MaxRoomsPerStream {
		ss.mu.Unlock()
		refuse(&apierr.InvalidArgumentError{Field: "subscribe.room_id", Reason: fmt.Sprintf("a stream can subscribe to at most %d rooms", ss.svc.cfg.MaxRoomsPerStream)})
		return
	}
	ss.rooms[sub.RoomId] = true
	ss.mu.Unlock()
	// Register for live events before the writer reads the replay, so nothing
	// falls between the two; the writer drops what it has already sent.
	ss.svc.hub.Add(sub.RoomId, ss)
	if ss.closed.Load() {
		// The session ended meanwhile and may have cleaned up before the Add.
		ss.svc.hub.Remove(sub.RoomId, ss)
		return
	}
	ss.enqueue(item{sub: sub})
}

func (ss *session) unsubscribe(room string) {
	ss.mu.Lock()
	delete(ss.rooms, room)
	ss.mu.Unlock()
	ss.svc.hub.Remove(room, ss)
	ss.enqueue(item{unsub: room})
}

// Connect implements parleyv1.ChatServiceServer.
func (s *Service) Connect(stream parleyv1.ChatService_ConnectServer) error {
	me, err := auth.MustFromContext(stream.Context())
	if err != nil {
		return err
	}
	release, err := s.openStream(me.UserID)
	if err != nil {
		return err
	}
	defer release()
	ss := s.newSession(stream.Context(), me, stream.Send)
	ss.sendRaw = func(f EncodedFrame) error { return stream.SendMsg(f) }
	// The reader runs on its own goroutine so that the stream ends as soon as
	// the writer does (slow consumer, shutdown), even while Recv is blocked.
	go func() {
		if err := ss.read(stream); err != nil {
			ss.end(err)
			return
		}
		// The client half-closed: answer what is pending, then finish.
		ss.pending.Wait()
		ss.enqueue(item{drain: true})
	}()
	err = ss.serve()
	ss.end(context.Canceled)
	return err
}

// read handles client frames until the client half-closes (nil) or fails.
func (ss *session) read(stream parleyv1.ChatService_ConnectServer) error {
	ctx := ss.ctx
	var lastTyping map[string]time.Time // allocated on the first typing frame
	frames := ratelimit.NewBucket(ss.svc.cfg.FrameRate, ss.svc.cfg.FrameBurst)
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if ok, _ := frames.Allow(time.Now()); !ok {
			return status.Errorf(codes.ResourceExhausted, "frame rate limit of %g frames/s per stream exceeded", ss.svc.cfg.FrameRate)
		}
		switch f := req.Frame.(type) {
		case *parleyv1.ConnectRequest_Subscribe:
			ss.subscribe(ctx, f.Subscribe)
		case *parleyv1.ConnectRequest_Unsubscribe:
			ss.unsubscribe(f.Unsubscribe.GetRoomId())
		case *parleyv1.ConnectRequest_Send:
			req := f.Send
			ss.pending.Add(1)
			ss.queueSend(sendJob{req: req, done: func(m *parleyv1.Message, err error) {
				defer ss.pending.Done()
				ack := &parleyv1.SendAck{ClientMsgId: req.GetClientMsgId(), Message: m}
				if err != nil {
					st := apierr.Status(err)
					ack.Error = &parleyv1.Status{Code: int32(st.Code()), Message: st.Message()}
				}
				ss.enqueue(item{frame: &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SendAck{SendAck: ack}}})
			}})
		case *parleyv1.ConnectRequest_Typing:
			// At most one typing event per room per second per stream; extra
			// frames are dropped, and refusals are not answered (typing is a hint).
			room := f.Typing.GetRoomId()
			if now := time.Now(); now.Sub(lastTyping[room]) >= time.Second && len(lastTyping) <= ss.svc.cfg.MaxRoomsPerStream {
				if lastTyping == nil {
					lastTyping = make(map[string]time.Time)
				}
				lastTyping[room] = now
				if err := ss.svc.typing(ctx, ss.me, room); err != nil {
					ss.svc.logger.Debug("typing refused", "room", room, "err", err)
				}
			}
		case *parleyv1.ConnectRequest_MarkRead:
			if _, err := ss.svc.markRead(ctx, ss.me, f.MarkRead); err != nil {
				ss.svc.logger.Debug("mark read refused", "room", f.MarkRead.GetRoomId(), "err", err)
			}
		case *parleyv1.ConnectRequest_Options:
			ss.batches.Store(f.Options.GetMessageBatches())
		case *parleyv1.ConnectRequest_Ping:
			ss.enqueue(item{frame: &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Pong{Pong: &parleyv1.Pong{Nonce: f.Ping.GetNonce()}}}})
		default:
			return status.Error(codes.InvalidArgument, "frame: empty or unknown ConnectRequest frame")
		}
		if ss.ctx.Err() != nil {
			return context.Cause(ss.ctx)
		}
	}
}

// queueSend hands a send to the stream's sender, which publishes what has
// queued up in one Redis round trip, in order, so that a stream's sends do
// not each wait for the previous one's round trip. The sender goroutine
// exists only while there are sends to publish.
func (ss *session) queueSend(j sendJob) {
	ss.smu.Lock()
	ss.sends = append(ss.sends, j)
	start := !ss.sending
	ss.sending = true
	ss.smu.Unlock()
	if start {
		go ss.sender()
	}
}

// maxSendBatch bounds how many sends go to Redis in one round trip.
const maxSendBatch = 128

func (ss *session) sender() {
	for {
		ss.smu.Lock()
		jobs := ss.sends
		if len(jobs) > maxSendBatch {
			jobs = jobs[:maxSendBatch:maxSendBatch]
			ss.sends = ss.sends[maxSendBatch:]
		} else {
			ss.sends = nil
		}
		if len(jobs) == 0 {
			ss.sending = false
			ss.smu.Unlock()
			return
		}
		ss.smu.Unlock()
		ss.svc.sendBatch(ss.ctx, ss.me, jobs)
	}
}

// StreamRoom implements parleyv1.ChatServiceServer.
func (s *Service) StreamRoom(req *parleyv1.StreamRoomRequest, stream parleyv1.ChatService_StreamRoomServer) error {
	me, err := auth.MustFromContext(stream.Context())
	if err != nil {
		return err
	}
	if err := s.checkMember(stream.Context(), req.GetRoomId(), me.UserID); err != nil {
		return err
	}
	send := func(f *parleyv1.ConnectResponse) error {
		var out *parleyv1.StreamRoomResponse
		switch v := f.Frame.(type) {
		case *parleyv1.ConnectResponse_Message:
			out = &parleyv1.StreamRoomResponse{Event: &parleyv1.StreamRoomResponse_Message{Message: v.Message}}
		case *parleyv1.ConnectResponse_ResyncRequired:
			out = &parleyv1.StreamRoomResponse{Event: &parleyv1.StreamRoomResponse_ResyncRequired{ResyncRequired: v.ResyncRequired}}
		case *parleyv1.ConnectResponse_MessageWithdrawn:
			out = &parleyv1.StreamRoomResponse{Event: &parleyv1.StreamRoomResponse_MessageWithdrawn{MessageWithdrawn: v.MessageWithdrawn}}
		case *parleyv1.ConnectResponse_SubscribeError:
			return status.Error(codes.Code(v.SubscribeError.GetError().GetCode()), v.SubscribeError.GetError().GetMessage())
		default:
			return nil
		}
		return stream.Send(out)
	}
	release, err := s.openStream(me.UserID)
	if err != nil {
		return err
	}
	defer release()
	ss := s.newSession(stream.Context(), me, send)
	ss.subscribe(stream.Context(), &parleyv1.Subscribe{RoomId: req.GetRoomId(), ResumeFrom: req.GetResumeFrom()})
	err = ss.serve()
	ss.end(context.Canceled)
	return err
}

// deliveryTicker wakes, once per tick, the writers of streams that have live
// messages queued. It runs only while there are some.
type deliveryTicker struct {
	every   time.Duration
	mu      sync.Mutex
	pending []*session
	running bool
}

func (t *deliveryTicker) add(ss *session) {
	t.mu.Lock()
	t.pending = append(t.pending, ss)
	start := !t.running
	t.running = true
	t.mu.Unlock()
	if start {
		go t.run()
	}
}

func (t *deliveryTicker) run() {
	var batch []*session
	for {
		time.Sleep(t.every)
		t.mu.Lock()
		batch, t.pending = t.pending, batch[:0]
		if len(batch) == 0 {
			t.running = false
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
		for i, ss := range batch {
			ss.qmu.Lock()
			ss.dirty = false
			ss.qmu.Unlock()
			ss.signal()
			batch[i] = nil
		}
	}
}
