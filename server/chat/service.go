package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/ratelimit"
	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/fanout"
	"github.com/parleychat/parley/server/pagetoken"
	"github.com/parleychat/parley/server/rooms"
	"github.com/parleychat/parley/server/store"
)

// Broker assigns room positions and fans events out (fanout.Redis).
type Broker interface {
	Publish(ctx context.Context, m *parleyv1.Message) (*parleyv1.Message, bool, error)
	// PublishBatch publishes several messages in one round trip, in order.
	PublishBatch(ctx context.Context, ms []*parleyv1.Message) []fanout.PublishResult
	InitRoom(ctx context.Context, roomID string, seed int64) (string, error)
	Head(ctx context.Context, roomID string) (string, int64, error)
	Recent(ctx context.Context, roomID string) ([]*parleyv1.Message, bool, error)
	Newest(ctx context.Context, roomID string) (*parleyv1.Message, error)
	// Withdraw takes back a message whose record failed, unless a retry was
	// answered with it meanwhile (withdrawn false).
	Withdraw(ctx context.Context, m *parleyv1.Message) (withdrawn bool, err error)
	PublishEvent(ctx context.Context, roomID string, ev *eventsv1.RoomEvent) error
	PresenceJoin(ctx context.Context, roomID, userID, username, streamID string, ttl time.Duration) error
	PresenceRefresh(ctx context.Context, members map[string][]string, ttl time.Duration) error
	PresenceLeave(ctx context.Context, roomID, userID, username, streamID string) error
	PresenceSweep(ctx context.Context, roomID string) error
}

// Log makes messages durable (msglog.Producer). done is called once, must not block.
type Log interface {
	Append(ctx context.Context, m *parleyv1.Message, done func(error))
}

// History reads stored messages (msgstore.Store).
type History interface {
	List(ctx context.Context, roomID string, beforeSeq, afterSeq int64, limit int) ([]*parleyv1.Message, error)
	MaxSeq(ctx context.Context, roomID string) (int64, error)
}

// Rooms answers membership questions and keeps read markers (store.Store).
type Rooms interface {
	Room(ctx context.Context, id string) (store.Room, error)
	IsMember(ctx context.Context, roomID, userID string) (bool, error)
	RoomsOfUser(ctx context.Context, userID, afterID string, limit int) ([]store.Room, error)
	SetReadMarker(ctx context.Context, roomID, userID, epoch string, seq int64) (bool, error)
	ReadMarkers(ctx context.Context, userID string, roomIDs []string) (map[string]store.ReadMarker, error)
}

// Hub is the local subscription registry (fanout.Hub).
type Hub interface {
	Add(roomID string, s fanout.Subscriber)
	Remove(roomID string, s fanout.Subscriber)
	Rooms() []string
}

// Service implements parleyv1.ChatServiceServer.
type Service struct {
	parleyv1.UnimplementedChatServiceServer
	cfg     Config
	broker  Broker
	log     Log
	history History
	rooms   Rooms
	hub     Hub
	logger  *slog.Logger
	limiter *ratelimit.Limiter
	members sync.Map           // "room/user" -> memberEntry
	lookups singleflight.Group // "room/user" -> membership lookup in flight

	streamsMu   sync.Mutex
	userStreams map[string]int
	sessions    map[*session]struct{} // open streams, for the presence refresh
	ticker      deliveryTicker

	shutdown     chan struct{}
	shutdownOnce sync.Once

	sends       *prometheus.CounterVec
	sendResults map[string]prometheus.Counter // sends by result, resolved
	streams     prometheus.Gauge
	queue       prometheus.Histogram
	slow        prometheus.Counter
}

// NewService returns the ChatService.
func NewService(cfg Config, broker Broker, log Log, history History, rooms Rooms, hub Hub, logger *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, broker: broker, log: log, history: history, rooms: rooms, hub: hub, logger: logger,
		limiter:     ratelimit.New(cfg.SendRate, cfg.SendBurst),
		shutdown:    make(chan struct{}),
		userStreams: make(map[string]int),
		sessions:    make(map[*session]struct{}),
		ticker:      deliveryTicker{every: cfg.DeliveryTick},
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "parley", Subsystem: "chat",
			Name: "sends_total", Help: "Send requests by result (ok, duplicate, invalid, denied, limited, unavailable, uncertain)."}, []string{"result"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "parley", Subsystem: "chat",
			Name: "streams", Help: "Open Connect and StreamRoom streams."}),
		queue: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "parley", Subsystem: "chat",
			Name: "stream_queue_depth", Help: "Outgoing queue depth seen by a stream's writer at each frame.",
			Buckets: []float64{0, 1, 4, 16, 64, 256, 1024, 4096}}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "parley", Subsystem: "chat",
			Name: "slow_consumer_disconnects_total", Help: "Streams ended because their queue was full."}),
	}
	reg.MustRegister(s.sends, s.streams, s.queue, s.slow)
	s.sendResults = make(map[string]prometheus.Counter)
	for _, r := range []string{"ok", "duplicate", "invalid", "denied", "limited", "unavailable", "uncertain"} {
		s.sendResults[r] = s.sends.WithLabelValues(r) // resolved once: a send only looks it up
	}
	return s, nil
}

// Shutdown ends every open stream with Unavailable ("reconnect"), so that a
// graceful stop does not wait for long-lived streams.
func (s *Service) Shutdown() {
	s.shutdownOnce.Do(func() {
		s.streamsMu.Lock()
		close(s.shutdown) // under streamsMu: see session.register
		s.streamsMu.Unlock()
		for _, ss := range s.openSessions() {
			ss.end(errShuttingDown)
		}
	})
}

// openSessions returns the open streams' sessions.
func (s *Service) openSessions() []*session {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	open := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		open = append(open, ss)
	}
	return open
}

// openStream counts a stream of user against MaxStreamsPerUser; the returned
// func releases it.
func (s *Service) openStream(userID string) (func(), error) {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if s.userStreams[userID] >= s.cfg.MaxStreamsPerUser {
		return nil, status.Errorf(codes.ResourceExhausted, "too many open streams: the limit is %d per user", s.cfg.MaxStreamsPerUser)
	}
	s.userStreams[userID]++
	return func() {
		s.streamsMu.Lock()
		defer s.streamsMu.Unlock()
		if s.userStreams[userID]--; s.userStreams[userID] <= 0 {
			delete(s.userStreams, userID)
		}
	}, nil
}

// checkMember returns nil if user may read and write room: PermissionDenied
// for a non-member of a public room, NotFound for a room the user cannot see.
//
// It is on the send path, so a positive answer is cached and refreshed in the
// background: it is used as is until a refresh time drawn at random in the
// second half of MembershipTTL; older (up to staleMembership) it is still
// used while one background lookup refreshes it, and a "no longer a member"
// from that lookup removes it (so a removed member can send for at most about
// one TTL more; LeaveRoom on this instance forgets at once through
// ForgetMember). The random refresh time keeps entries confirmed together (a
// room's publishers after a restart) from all asking the store again in the
// same instant: in fanout-v1 with a fixed TTL, 100 publishers' refreshes came
// every 5 s in one burst of store queries on a machine with no CPU to spare,
// and live deliveries took over 100 ms for about a second each time. When the
// store cannot be asked, the cached answer keeps counting, so a store outage
// does not stop conversations.
func (s *Service) checkMember(ctx context.Context, roomID, userID string) error {
	if err := rooms.ValidateRoomID("room_id", roomID); err != nil {
		return err
	}
	key := roomID + "/" + userID
	now := time.Now()
	if v, ok := s.members.Load(key); ok {
		e := v.(*memberEntry)
		age := now.Sub(time.Unix(0, e.confirmed.Load()))
		if age < staleMembership {
			if now.UnixNano() >= e.refreshAt.Load() && e.refreshing.CompareAndSwap(false, true) {
				go s.refreshMember(key, roomID, userID, e)
			}
			return nil
		}
	}
	// Concurrent misses of one key (a user's streams reconnecting at once)
	// share one lookup. It runs on its own goroutine with its own deadline,
	// so a caller that gives up does not fail the others, and no caller's
	// context (a stream's, for hours) gets a child.
	ch := s.lookups.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), memberLookupTimeout)
		defer cancel()
		err := s.lookupMember(ctx, roomID, userID)
		if err == nil {
			e := &memberEntry{}
			s.confirmMember(e, now)
			s.members.Store(key, e)
		}
		return nil, err
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return fmt.Errorf("membership check: %w", context.Cause(ctx))
	}
}

// memberLookupTimeout bounds a membership lookup in the store.
const memberLookupTimeout = 5 * time.Second

// refreshMember re-asks the store about a cached membership.
func (s *Service) refreshMember(key, roomID, userID string, e *memberEntry) {
	defer e.refreshing.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), memberLookupTimeout)
	defer cancel()
	err := s.lookupMember(ctx, roomID, userID)
	switch {
	case err == nil:
		s.confirmMember(e, time.Now())
	case errors.Is(err, apierr.ErrNotMember), errors.Is(err, apierr.ErrRoomNotFound):
		s.members.CompareAndDelete(key, e)
	default:
		// Not sooner than a TTL: a store in trouble gets fewer questions.
		e.refreshAt.Store(time.Now().Add(s.cfg.MembershipTTL/2 + s.refreshDelay()).UnixNano())
		s.logger.Warn("membership refresh failed; using the cached answer", "room", roomID, "user", userID, "err", err)
	}
}

// ForgetMember drops the cached membership of user in room (after LeaveRoom).
func (s *Service) ForgetMember(roomID, userID string) { s.members.Delete(roomID + "/" + userID) }

// memberEntry is a cached positive membership check.
type memberEntry struct {
	confirmed  atomic.Int64 // unix ns when the store last said yes
	refreshAt  atomic.Int64 // unix ns: ask the store again on the first use after this
	refreshing atomic.Bool
}

// confirmMember records the store's yes at t.
func (s *Service) confirmMember(e *memberEntry, t time.Time) {
	e.confirmed.Store(t.UnixNano())
	e.refreshAt.Store(t.Add(s.refreshDelay()).UnixNano())
}

// refreshDelay is how long a confirmed lookup stands before the next:
// uniform in [TTL/2, TTL], so entries confirmed together spread out. (On
// average a refresh comes at 3/4 of the TTL, a third more often than a
// fixed TTL, but costs one query where it cost two.)
func (s *Service) refreshDelay() time.Duration {
	ttl := s.cfg.MembershipTTL
	return ttl/2 + rand.N(ttl/2+1)
}

// staleMembership bounds how old a cached membership may be when the store
// cannot be asked.
const staleMembership = 10 * time.Minute

func (s *Service) lookupMember(ctx context.Context, roomID, userID string) error {
	// Rooms are never deleted, so a membership proves its room exists: one
	// query for a member (every refresh), the room only to tell a non-member
	// which error it gets.
	ok, err := s.rooms.IsMember(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	r, err := s.rooms.Room(ctx, roomID)
	if err != nil {
		if errors.Is(err, apierr.ErrRoomNotFound) {
			return fmt.Errorf("room %q: %w", roomID, apierr.ErrRoomNotFound)
		}
		return err
	}
	s.members.Delete(roomID + "/" + userID)
	if r.Visibility == store.VisibilityPublic {
		return fmt.Errorf("join room %q first: %w", roomID, apierr.ErrNotMember)
	}
	return fmt.Errorf("room %q: %w", roomID, apierr.ErrRoomNotFound)
}

// validateSend checks a send request's fields.
func (s *Service) validateSend(req *parleyv1.SendMessageRequest) error {
	if err := rooms.ValidateRoomID("room_id", req.GetRoomId()); err != nil {
		return err
	}
	if n := len(req.GetClientMsgId()); n > 64 {
		return apierr.Invalid("client_msg_id", "must be at most 64 characters")
	}
	if !utf8.ValidString(req.GetClientMsgId()) || strings.ContainsAny(req.GetClientMsgId(), ":{}\x00") {
		return apierr.Invalid("client_msg_id", "must be printable without ':', '{', '}'")
	}
	body := req.GetBody()
	switch {
	case strings.TrimSpace(body) == "":
		return apierr.Invalid("body", "must not be empty")
	case len(body) > s.cfg.MaxMessageBytes:
		return apierr.Invalid("body", "is %d bytes; the limit is %d bytes", len(body), s.cfg.MaxMessageBytes)
	case !utf8.ValidString(body):
		return apierr.Invalid("body", "must be valid UTF-8")
	case strings.ContainsRune(body, 0):
		return apierr.Invalid("body", "must not contain NUL characters")
	}
	return nil
}

// sendJob is one send request and where its outcome goes.
type sendJob struct {
	req  *parleyv1.SendMessageRequest
	done func(*parleyv1.Message, error)
}

// send runs the send path and calls done exactly once with the durable
// message or the error. It returns after the message was published (or
// refused); the durability wait is asynchronous.
func (s *Service) send(ctx context.Context, me auth.Identity, req *parleyv1.SendMessageRequest, done func(*parleyv1.Message, error)) {
	s.sendBatch(ctx, me, []sendJob{{req, done}})
}

// sendBatch is send for several requests of one sender, in order: their
// positions are assigned in one Redis round trip, so a stream's sends do not
// wait for each other's round trip (each is still checked on its own).
func (s *Service) sendBatch(ctx context.Context, me auth.Identity, jobs []sendJob) {
	finishers := make([]func(string, *parleyv1.Message, error), len(jobs))
	msgs := make([]*parleyv1.Message, 0, len(jobs))
	which := make([]int, 0, len(jobs))
	now := time.Now()
	for i, j := range jobs {
		var once sync.Once
		done := j.done
		finish := func(result string, m *parleyv1.Message, err error) {
			once.Do(func() {
				s.sendResults[result].Inc()
				done(m, err)
			})
		}
		finishers[i] = finish
		req := j.req
		if err := s.validateSend(req); err != nil {
			finish("invalid", nil, err)
			continue
		}
		if err := s.checkMember(ctx, req.GetRoomId(), me.UserID); err != nil {
			finish("denied", nil, err)
			continue
		}
		if ok, wait := s.limiter.Allow(me.UserID, now); !ok {
			finish("limited", nil, &apierr.RateLimitError{Limit: fmt.Sprintf("send rate limit of %g messages/s per user", s.cfg.SendRate), RetryAfter: wait})
			continue
		}
		cmid := req.GetClientMsgId()
		if cmid == "" {
			cmid = ulid.Make().String()
		}
		msgs = append(msgs, &parleyv1.Message{
			MessageId: ulid.Make().String(), RoomId: req.GetRoomId(), SenderId: me.UserID, SenderUsername: me.Username,
			ClientMsgId: cmid, Body: req.GetBody(), CreateTime: timestamppb.New(now),
		})
		which = append(which, i)
	}
	if len(msgs) == 0 {
		return
	}
	var inited map[string]bool // rooms whose lost counter this batch re-created
	for k, r := range s.broker.PublishBatch(ctx, msgs) {
		m, finish := msgs[k], finishers[which[k]]
		if errors.Is(r.Err, fanout.ErrNoEpoch) {
			// Every later message of this room in the batch failed the same
			// way, so publishing them one by one here keeps their order; the
			// counter is re-created once, for the first of them.
			r.Err = nil
			if !inited[m.RoomId] {
				if inited == nil {
					inited = make(map[string]bool)
				}
				inited[m.RoomId] = true
				r.Err = s.initEpoch(ctx, m.RoomId)
			}
			if r.Err == nil {
				r.Message, r.Dup, r.Err = s.broker.Publish(ctx, m)
			}
		}
		if r.Err != nil {
			s.logger.WarnContext(ctx, "publish failed", "room", m.RoomId, "err", r.Err)
			finish("unavailable", nil, fmt.Errorf("cannot assign a position to the message: %w", apierr.ErrUnavailable))
			continue
		}
		s.commit(ctx, r.Message, r.Dup, finish)
	}
}

// commit waits for out's record to be durable and finishes the send.
func (s *Service) commit(ctx context.Context, out *parleyv1.Message, dup bool, finish func(string, *parleyv1.Message, error)) {
	// The append must not be cancelled by the caller going away (the message
	// is already live), only by the send timeout, which the producer enforces
	// itself (its record delivery timeout is SendTimeout, so the append needs
	// no context timer). The producer fails a record on that timeout only
	// while it is still buffered, i.e. certainly not written: then the
	// message is withdrawn. A record already sent to a broker that went away
	// cannot be failed safely (idempotent producer): its outcome is unknown
	// until the broker answers, so the timer below answers the sender
	// Unavailable at the timeout without a withdrawal, and a retry with the
	// same client_msg_id returns this message once it is durable.
	timer := time.AfterFunc(s.cfg.SendTimeout+100*time.Millisecond, func() {
		finish("uncertain", nil, fmt.Errorf("Kafka has not acknowledged the message yet; retry with the same client_msg_id: %w", apierr.ErrUnavailable))
	})
	s.log.Append(context.WithoutCancel(ctx), out, func(err error) {
		timer.Stop()
		if err == nil {
			result := "ok"
			if dup {
				result = "duplicate"
			}
			finish(result, out, nil)
			return
		}
		if !dup { // a duplicate's first copy may be durable already: never withdraw it
			go func() {
				wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				withdrawn, werr := s.broker.Withdraw(wctx, out)
				switch {
				case werr != nil:
					s.logger.Error("withdraw of a non-durable message failed", "room", out.RoomId, "seq", out.Seq, "err", werr)
				case !withdrawn:
					// A retry was answered with this message: its own record
					// makes it durable, so it stays.
					s.logger.Info("failed record not withdrawn: a retry of the same client_msg_id carries the message", "room", out.RoomId, "seq", out.Seq)
				}
			}()
		}
		s.logger.Warn("message not durable", "room", out.RoomId, "seq", out.Seq, "err", err)
		finish("unavailable", nil, fmt.Errorf("message could not be stored (Kafka did not acknowledge it); retry with the same client_msg_id: %w", apierr.ErrUnavailable))
	})
}

// initEpoch re-creates a room's lost sequence state above everything stored.
func (s *Service) initEpoch(ctx context.Context, roomID string) error {
	max, err := s.history.MaxSeq(ctx, roomID)
	if err != nil {
		return err
	}
	seed := int64(0)
	if max > 0 {
		seed = max + s.cfg.EpochSeqGap
	}
	epoch, err := s.broker.InitRoom(ctx, roomID, seed)
	if err != nil {
		return err
	}
	s.logger.WarnContext(ctx, "room sequence state was missing; new epoch", "room", roomID, "epoch", epoch, "seed", seed)
	return nil
}

// head returns a room's position, creating its sequence state if it was lost.
func (s *Service) head(ctx context.Context, roomID string) (string, int64, error) {
	epoch, seq, err := s.broker.Head(ctx, roomID)
	if errors.Is(err, fanout.ErrNoEpoch) {
		if err = s.initEpoch(ctx, roomID); err == nil {
			epoch, seq, err = s.broker.Head(ctx, roomID)
		}
	}
	if err != nil {
		return "", 0, fmt.Errorf("room position: %w: %v", apierr.ErrUnavailable, err)
	}
	return epoch, seq, nil
}

// SendMessage implements parleyv1.ChatServiceServer.
func (s *Service) SendMessage(ctx context.Context, req *parleyv1.SendMessageRequest) (*parleyv1.SendMessageResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	type result struct {
		m   *parleyv1.Message
		err error
	}
	ch := make(chan result, 1)
	s.send(ctx, me, req, func(m *parleyv1.Message, err error) { ch <- result{m, err} })
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		return &parleyv1.SendMessageResponse{Message: r.m}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ListMessages implements parleyv1.ChatServiceServer.
func (s *Service) ListMessages(ctx context.Context, req *parleyv1.ListMessagesRequest) (*parleyv1.ListMessagesResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pagetoken.PageSize(req.GetPageSize(), 50, 200)
	if err != nil {
		return nil, err
	}
	if req.GetAfterSeq() < 0 {
		return nil, apierr.Invalid("after_seq", "must not be negative")
	}
	if err := s.checkMember(ctx, req.GetRoomId(), me.UserID); err != nil {
		return nil, err
	}
	forward := req.GetAfterSeq() > 0
	query := "msgs:" + req.GetRoomId() + ":back"
	if forward {
		query = "msgs:" + req.GetRoomId() + ":fwd"
	}
	tok, err := pagetoken.Decode(req.GetPageToken(), query)
	if err != nil {
		return nil, err
	}
	var msgs []*parleyv1.Message
	if forward {
		after := max(req.GetAfterSeq(), tok.Seq)
		msgs, err = s.history.List(ctx, req.GetRoomId(), 0, after, size+1)
	} else {
		msgs, err = s.history.List(ctx, req.GetRoomId(), tok.Seq, 0, size+1)
	}
	if err != nil {
		return nil, fmt.Errorf("read history: %w: %v", apierr.ErrUnavailable, err)
	}
	resp := &parleyv1.ListMessagesResponse{Messages: msgs}
	// A page holds page_size messages and at most MaxBatchBytes of them
	// (at least one), so that a page of large messages stays under a
	// client's default 4 MiB receive limit; the token then resumes after
	// the last one returned.
	if n := leadingBytes(msgs, size, MaxBatchBytes); n < len(msgs) {
		resp.Messages = msgs[:n]
		resp.NextPageToken = pagetoken.Encode(pagetoken.Token{Query: query, Seq: msgs[n-1].Seq})
	}
	return resp, nil
}
