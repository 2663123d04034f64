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
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/ratelimit"
	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/fanout"
	"github.com/parleychat/parley/server/rooms"
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
// Everything the client gets goes through one queue and one writer, in
// order. The writer is a goroutine that runs only while the queue is not
// empty: an idle stream costs no goroutine but its handler's (see
// statusWriter). The queue is a slice under a mutex rather than a channel: the
// writer takes everything queued at once, so a stream that is behind costs
// one wake-up and (with StreamOptions.message_batches) one frame for many
// messages, not one each.
type session struct {
	svc     *Service
	me      auth.Identity
	id      string
	send    func(*parleyv1.ConnectResponse) error
	sendRaw func(EncodedFrame) error // nil: the stream takes no pre-encoded frames (StreamRoom)
	batches atomic.Bool              // the client accepts MessageBatch frames
	ctx     context.Context
	ender   statusWriter            // ends the stream, and with it ctx and a blocked Recv
	cancel  context.CancelCauseFunc // ends ctx where there is no ender

	qmu     sync.Mutex
	queue   []item
	dirty   bool           // live messages queued, waiting for the delivery tick
	writing bool           // the writer goroutine runs
	woke    bool           // the writer ran since the last trimIdle
	writers sync.WaitGroup // the writer goroutine, for finish
	closed  atomic.Bool    // set under qmu: no more items, no new writer
	cause   error          // why the session ended (under qmu)

	// The writer's own state. One writer runs at a time, and qmu orders one
	// writer's exit before the next one's start.
	wrooms  map[string]*roomState // positions in the subscribed rooms
	spare   []item                // the last queue, emptied, for reuse
	pending []*fanout.Event       // scratch for handleAll

	mu    sync.Mutex
	rooms map[string]bool // subscribed rooms, as the reader sees them

	smu     sync.Mutex
	tasks   []task // waiting for the worker goroutine
	working bool   // the worker goroutine runs

	acks sync.WaitGroup // sends awaiting their ack
}

func (s *Service) newSession(ctx context.Context, me auth.Identity, send func(*parleyv1.ConnectResponse) error) *session {
	ss := &session{svc: s, me: me, id: ulid.Make().String(), send: send, ctx: ctx, rooms: make(map[string]bool)}
	if w, ok := streamStatusWriter(ctx); ok {
		ss.ender = w
	} else {
		ss.ctx, ss.cancel = context.WithCancelCause(ctx)
	}
	return ss
}

// SlowConsumerReason and ErrorDomain are the google.rpc.ErrorInfo a stream
// ended for falling behind carries (ResourceExhausted), so that a client can
// tell it from other ResourceExhausted errors and resume at once from its
// last position.
const (
	SlowConsumerReason = "SLOW_CONSUMER"
	ErrorDomain        = "parley.chat"
)

var errSlowConsumer = func() error {
	st := status.New(codes.ResourceExhausted, "stream is not reading fast enough; reconnect and resume from your last position")
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: SlowConsumerReason, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}()

// enqueue hands it to the writer without blocking; a full queue ends the session.
func (ss *session) enqueue(it item) { ss.put(it, false) }

// put queues it and starts the writer now, or with deferred at the next
// delivery tick (Config.DeliveryTick): live messages of many streams then
// reach gRPC together, and each connection's transport makes one write for
// them instead of one per frame.
func (ss *session) put(it item, deferred bool) {
	ss.qmu.Lock()
	if ss.closed.Load() {
		ss.qmu.Unlock()
		return
	}
	if len(ss.queue) >= ss.svc.cfg.StreamQueue {
		now := ss.endLocked(errSlowConsumer)
		ss.qmu.Unlock()
		ss.svc.slow.Inc()
		if now {
			ss.stop(errSlowConsumer)
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
	start := ss.startWriterLocked()
	ss.qmu.Unlock()
	if start {
		go ss.write()
	}
}

// startWriterLocked reports whether the caller must start the writer
// goroutine (which it then counts as running). ss.qmu must be held.
func (ss *session) startWriterLocked() bool {
	if ss.writing || ss.closed.Load() || len(ss.queue) == 0 {
		return false
	}
	ss.writing = true
	ss.woke = true
	ss.writers.Add(1)
	return true
}

// trimIdle gives back the writer's buffers if it has not run since the
// last call: an idle stream would otherwise hold them for good (a few
// hundred bytes each), a busy one keeps them.
func (ss *session) trimIdle() {
	ss.qmu.Lock()
	defer ss.qmu.Unlock()
	if !ss.woke && !ss.writing && len(ss.queue) == 0 {
		ss.queue, ss.spare, ss.pending = nil, nil, nil
	}
	ss.woke = false
}

// write is the writer goroutine: it sends what is queued, in order, until
// the queue is empty, and ends the session if a send fails.
func (ss *session) write() {
	defer ss.writers.Done()
	for {
		ss.qmu.Lock()
		items := ss.queue
		if len(items) == 0 || ss.closed.Load() {
			ss.writing = false
			ended, cause := ss.closed.Load(), ss.cause
			ss.qmu.Unlock()
			if ended && cause != nil {
				ss.stop(cause) // this writer's error, or an end deferred while it was sending
			}
			return
		}
		ss.queue = ss.spare
		ss.qmu.Unlock()
		ss.svc.queue.Observe(float64(len(items)))
		err := ss.handleAll(items)
		clear(items) // let the events go
		ss.spare = items[:0]
		if err != nil {
			ss.qmu.Lock()
			ss.endLocked(err) // the loop's exit stops the stream
			ss.qmu.Unlock()
		}
	}
}

// Deliver implements fanout.Subscriber.
func (ss *session) Deliver(ev *fanout.Event) { ss.put(item{ev: ev}, ev.MessageBytes != nil) }

// Resync implements fanout.Subscriber.
func (ss *session) Resync() { ss.enqueue(item{resync: true}) }

// register counts the session as open; a session opened during shutdown
// ends at once.
func (ss *session) register() {
	ss.svc.streams.Inc()
	ss.svc.streamsMu.Lock()
	ss.svc.sessions[ss] = struct{}{}
	ss.svc.streamsMu.Unlock()
	select {
	case <-ss.svc.shutdown:
		ss.end(errShuttingDown)
	default:
	}
}

var errShuttingDown = status.Error(codes.Unavailable, "server is shutting down; reconnect and resume")

// finish runs on the handler once the session has ended: it waits for the
// writer (nothing may be sent after the handler returns), cleans up and
// returns the status to end the stream with (nil after a drain).
func (ss *session) finish() error {
	ss.qmu.Lock()
	ss.closed.Store(true)
	ss.qmu.Unlock()
	ss.writers.Wait()
	ss.leaveAll()
	ss.mu.Lock()
	for room := range ss.rooms {
		ss.svc.hub.Remove(room, ss)
	}
	ss.mu.Unlock()
	ss.svc.streams.Dec()
	ss.svc.streamsMu.Lock()
	delete(ss.svc.sessions, ss)
	ss.svc.streamsMu.Unlock()
	return ss.endStatus()
}

// end stops the session with cause (the first cause given wins).
func (ss *session) end(cause error) {
	ss.qmu.Lock()
	now := ss.endLocked(cause)
	cause = ss.cause
	ss.qmu.Unlock()
	if now {
		ss.stop(cause)
	}
}

// endLocked marks the session ended and drops what is queued; it reports
// whether the caller must stop it now. While the writer is in the middle of
// a send, the writer stops it when the send returns instead: the stream's
// status must not be written under a send (a stalled client then waits for
// the end of its stream until it reads or goes away, and holds a bounded
// amount meanwhile: the queue is dropped). ss.qmu must be held.
func (ss *session) endLocked(cause error) bool {
	if ss.cause == nil {
		ss.cause = cause
	}
	ss.closed.Store(true)
	clear(ss.queue)
	ss.queue = nil
	return ss.ender == nil || !ss.writing
}

// stop ends the stream with cause's status, which ends the session's
// context; without an ender, it ends the context, and the handler returns
// the status.
func (ss *session) stop(cause error) {
	if ss.ender != nil {
		_ = ss.ender.WriteStatus(status.Convert(statusFor(cause)))
		return
	}
	ss.cancel(cause)
}

var errDrained = errors.New("drained")

// leaveAll removes the stream's presence from every room it was in.
func (ss *session) leaveAll() {
	if len(ss.wrooms) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for room := range ss.wrooms {
		ss.presenceLeave(ctx, room)
	}
}

// leaveRoom forgets the writer's position in room, if it had one, and the
// stream's presence there.
func (ss *session) leaveRoom(rooms map[string]*roomState, room string) {
	if _, ok := rooms[room]; ok {
		delete(rooms, room)
		ss.presenceLeave(ss.ctx, room)
	}
}

func (ss *session) presenceLeave(ctx context.Context, room string) {
	if err := ss.svc.broker.PresenceLeave(ctx, room, ss.me.UserID, ss.me.Username, ss.id); err != nil {
		ss.svc.logger.Warn("presence leave failed", "room", room, "err", err)
	}
}

// subscribeError is the in-band refusal of a subscription to room.
func subscribeError(room string, err error) *parleyv1.ConnectResponse {
	st := apierr.Status(err)
	return &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SubscribeError{SubscribeError: &parleyv1.SubscribeError{
		RoomId: room, Error: &parleyv1.Status{Code: int32(st.Code()), Message: st.Message()}}}}
}

// endStatus returns the status to end the stream with once ss.ctx is done.
func (ss *session) endStatus() error {
	ss.qmu.Lock()
	cause := ss.cause
	ss.qmu.Unlock()
	if cause == nil { // the client went away
		cause = context.Cause(ss.ctx)
	}
	return statusFor(cause)
}

// statusFor returns the status to end a stream with for cause.
func statusFor(cause error) error {
	if errors.Is(cause, errDrained) {
		return nil
	}
	if _, ok := status.FromError(cause); ok {
		return cause
	}
	if errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
		return status.FromContextError(cause).Err()
	}
	return apierr.Err(cause)
}

// Batches are capped so that one frame stays well under a client's default
// 4 MiB receive limit (bench's floor server keeps to them too).
const (
	MaxBatchBytes    = 1 << 20
	MaxBatchMessages = 1000
)

// handleAll handles items in order. Consecutive live messages are written
// together: from their broker encoding where the stream takes pre-encoded
// frames, as one MessageBatch frame when the client accepts them, else one
// Message frame each.
func (ss *session) handleAll(items []item) error {
	if ss.wrooms == nil {
		ss.wrooms = make(map[string]*roomState)
	}
	rooms, pending := ss.wrooms, &ss.pending
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
				if err := ss.sendRaw(messageFrameOf(ev)); err != nil {
					return err
				}
			}
			return nil
		default:
			msgs := make([][]byte, len(evs))
			for i, ev := range evs {
				msgs[i] = ev.MessageBytes
			}
			return ss.sendRaw(BatchFrame(msgs))
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
			if len(*pending) == MaxBatchMessages || size+len(it.ev.MessageBytes) > MaxBatchBytes {
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
		// The membership check runs here, on the writer, rather than on the
		// reading handler: see session.read.
		if err := ss.svc.checkMember(ss.ctx, it.sub.RoomId, ss.me.UserID); err != nil {
			ss.dropRoom(it.sub.RoomId)
			ss.leaveRoom(rooms, it.sub.RoomId) // a re-subscription, refused now
			return ss.send(subscribeError(it.sub.RoomId, err))
		}
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
		ss.leaveRoom(rooms, it.unsub)
		return nil
	case it.resync:
		for room, st := range rooms {
			nst, err := ss.resyncRoom(room, st)
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

// resyncAttempts bounds how often resyncRoom asks Redis: pauses of 50 ms
// doubling, about 1.5 s in all.
const resyncAttempts = 6

// resyncRoom catches a room up after the broker's subscription came back.
// Redis may have just restarted, and the client's first command on a
// connection that has not yet seen it fail gets an error (EOF) where the
// next one succeeds; ending every stream of the instance with Unavailable
// for that would send all its clients reconnecting at once. So an
// Unavailable answer is retried for a moment (catchUp may then send a
// room's ResyncRequired twice, which a client handles like one).
func (ss *session) resyncRoom(room string, st *roomState) (*roomState, error) {
	pause := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		nst, err := ss.catchUp(room, &parleyv1.RoomPosition{Epoch: st.epoch, Seq: st.last})
		if err == nil || status.Code(err) != codes.Unavailable || attempt == resyncAttempts {
			return nst, err
		}
		// Debug: after a Redis restart every stream of the instance may pass here.
		ss.svc.logger.Debug("resync: Redis did not answer; asking again", "room", room, "attempt", attempt, "err", err)
		select {
		case <-ss.ctx.Done():
			return nil, err
		case <-time.After(pause):
		}
		pause *= 2
	}
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
			n := leadingBytes(msgs, replayBatch, MaxBatchBytes)
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

// replayBatch is how many replayed messages go in one MessageBatch frame
// at most (and at most MaxBatchBytes of them).
const replayBatch = 200

// leadingBytes returns how many of the first messages of msgs fit in
// maxMsgs messages and maxBytes encoded bytes, and at least one: with
// bodies of up to MaxBodyLimit, 200 messages would be 100 MiB, far over a
// client's default 4 MiB receive limit.
func leadingBytes(msgs []*parleyv1.Message, maxMsgs, maxBytes int) int {
	n, size := 0, 0
	for n < len(msgs) && n < maxMsgs {
		size += proto.Size(msgs[n])
		if n > 0 && size > maxBytes {
			break
		}
		n++
	}
	return n
}

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
// a refusal is reported in-band as SubscribeError. The writer checks the
// membership before it sends anything of the room.
func (ss *session) subscribe(sub *parleyv1.Subscribe) {
	refuse := func(err error) { ss.enqueue(item{frame: subscribeError(sub.GetRoomId(), err)}) }
	if err := rooms.ValidateRoomID("room_id", sub.GetRoomId()); err != nil {
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
	ss.dropRoom(room)
	ss.enqueue(item{unsub: room})
}

// dropRoom stops the room's live events to the stream.
func (ss *session) dropRoom(room string) {
	ss.mu.Lock()
	delete(ss.rooms, room)
	ss.mu.Unlock()
	ss.svc.hub.Remove(room, ss)
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
	ss.register()
	readAll := func() {
		if err := ss.read(stream); err != nil {
			ss.end(err)
			return
		}
		// The client half-closed: answer what is pending, then finish.
		ss.acks.Wait()
		ss.enqueue(item{drain: true})
	}
	if ss.ender != nil {
		// Ending the session ends Recv too: the handler reads.
		readAll()
	} else {
		// Recv would outlive a session the server ends (slow consumer,
		// shutdown): read on another goroutine so that the handler can return.
		go readAll()
	}
	<-ss.ctx.Done()
	return ss.finish()
}

// read handles client frames until the client half-closes (nil) or fails.
//
// It runs on the stream's handler goroutine, which then waits in Recv for
// as long as the stream is open, and Go never shrinks the stack of a
// goroutine that parks using more than a quarter of it: one deep call here
// (the store driver, a Redis round trip) would cost the stream 16 KiB of
// stack instead of 8 for its whole life. So everything that talks to a
// backend runs on the worker or the writer, which exist only while they
// have work: read only decodes, checks and queues.
func (ss *session) read(stream parleyv1.ChatService_ConnectServer) error {
	var lastTyping map[string]time.Time // allocated on the first typing frame
	frames := ratelimit.NewBucket(ss.svc.cfg.FrameRate, ss.svc.cfg.FrameBurst)
	var raw rawFrame
	for {
		err := stream.RecvMsg(&raw)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		req := &parleyv1.ConnectRequest{}
		if err := proto.Unmarshal(raw.b, req); err != nil {
			return status.Errorf(codes.InvalidArgument, "frame: not a valid ConnectRequest: %v", err)
		}
		if ok, _ := frames.Allow(time.Now()); !ok {
			return status.Errorf(codes.ResourceExhausted, "frame rate limit of %g frames/s per stream exceeded", ss.svc.cfg.FrameRate)
		}
		switch f := req.Frame.(type) {
		case *parleyv1.ConnectRequest_Subscribe:
			ss.subscribe(f.Subscribe)
		case *parleyv1.ConnectRequest_Unsubscribe:
			ss.unsubscribe(f.Unsubscribe.GetRoomId())
		case *parleyv1.ConnectRequest_Send:
			req := f.Send
			ss.acks.Add(1)
			ss.queueTask(task{send: sendJob{req: req, done: func(m *parleyv1.Message, err error) {
				defer ss.acks.Done()
				ack := &parleyv1.SendAck{ClientMsgId: req.GetClientMsgId(), Message: m}
				if err != nil {
					st := apierr.Status(err)
					ack.Error = &parleyv1.Status{Code: int32(st.Code()), Message: st.Message()}
				}
				ss.enqueue(item{frame: &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SendAck{SendAck: ack}}})
			}}})
		case *parleyv1.ConnectRequest_Typing:
			// At most one typing event per room per second per stream; extra
			// frames are dropped, and refusals are not answered (typing is a hint).
			room := f.Typing.GetRoomId()
			if now := time.Now(); now.Sub(lastTyping[room]) >= time.Second && len(lastTyping) <= ss.svc.cfg.MaxRoomsPerStream {
				if lastTyping == nil {
					lastTyping = make(map[string]time.Time)
				}
				lastTyping[room] = now
				ss.queueTask(task{typing: room})
			}
		case *parleyv1.ConnectRequest_MarkRead:
			ss.queueTask(task{markRead: f.MarkRead})
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

// task is a client request that talks to the backends: a send, a typing
// notice or a read marker (exactly one is set).
type task struct {
	send     sendJob
	typing   string
	markRead *parleyv1.MarkReadRequest
}

// queueTask hands t to the stream's worker, which runs tasks in order and
// publishes consecutive sends in one Redis round trip, so that a stream's
// sends do not each wait for the previous one's. The worker goroutine exists
// only while there are tasks.
func (ss *session) queueTask(t task) {
	ss.smu.Lock()
	ss.tasks = append(ss.tasks, t)
	start := !ss.working
	ss.working = true
	ss.smu.Unlock()
	if start {
		go ss.work()
	}
}

// maxSendBatch bounds how many sends go to Redis in one round trip.
const maxSendBatch = 128

func (ss *session) work() {
	var sends []sendJob
	flush := func() {
		if len(sends) > 0 {
			ss.svc.sendBatch(ss.ctx, ss.me, sends)
			clear(sends)
			sends = sends[:0]
		}
	}
	for {
		ss.smu.Lock()
		tasks := ss.tasks
		ss.tasks = nil
		if len(tasks) == 0 {
			ss.working = false
			ss.smu.Unlock()
			return
		}
		ss.smu.Unlock()
		for _, t := range tasks {
			switch {
			case t.send.req != nil:
				if sends = append(sends, t.send); len(sends) == maxSendBatch {
					flush()
				}
			case t.typing != "":
				flush()
				if err := ss.svc.typing(ss.ctx, ss.me, t.typing); err != nil {
					ss.svc.logger.Debug("typing refused", "room", t.typing, "err", err)
				}
			case t.markRead != nil:
				flush()
				if _, err := ss.svc.markRead(ss.ctx, ss.me, t.markRead); err != nil {
					ss.svc.logger.Debug("mark read refused", "room", t.markRead.GetRoomId(), "err", err)
				}
			}
		}
		flush()
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
	ss.register()
	ss.subscribe(&parleyv1.Subscribe{RoomId: req.GetRoomId(), ResumeFrom: req.GetResumeFrom()})
	<-ss.ctx.Done()
	return ss.finish()
}

// deliveryTicker starts, once per tick, the writers of streams that have
// live messages queued. It runs only while there are some.
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
			start := ss.startWriterLocked()
			ss.qmu.Unlock()
			if start {
				go ss.write()
			}
			batch[i] = nil
		}
	}
}
