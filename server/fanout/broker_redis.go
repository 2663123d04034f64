package fanout

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// ErrNoEpoch means the room's sequence state is missing in Redis: the room was
// never initialised there, or Redis lost it. The caller seeds it with InitRoom.
var ErrNoEpoch = errors.New("room sequence not initialised")

// Options configure a Redis broker.
type Options struct {
	// Prefix of every key and channel (default "parley:"); tests use their own.
	Prefix string
	// DedupeTTL is how long a client_msg_id is remembered (default 24h).
	DedupeTTL time.Duration
	// RecentCap is how many recent messages per room are cached for resume
	// (default 1000).
	RecentCap int
}

func (o *Options) defaults() {
	if o.Prefix == "" {
		o.Prefix = "parley:"
	}
	if o.DedupeTTL <= 0 {
		o.DedupeTTL = 24 * time.Hour
	}
	if o.RecentCap <= 0 {
		o.RecentCap = 1000
	}
}

// Redis assigns room positions and fans events out through one Redis
// deployment. It is safe for concurrent use.
type Redis struct {
	client rueidis.Client
	opts   Options
	log    *slog.Logger
	ready  atomic.Bool

	send, initRoom, withdraw, presenceJoin, presenceLeave *rueidis.Lua
	sendSHA                                               string // of sendScript, for pipelined EVALSHA
	ttlArg, capArg                                        string // the send script's DedupeTTL (s) and RecentCap arguments

	calls       *prometheus.HistogramVec
	received    prometheus.Counter
	badEvents   prometheus.Counter
	resubscribe prometheus.Counter
	subscribed  prometheus.Gauge
}

// Lua helpers: a protobuf varint and a length-delimited field, so the script
// can put epoch (field 3) and seq (field 4) in front of the message the server
// encoded, and wrap it as RoomEvent.message (field 1).
const luaProto = `
local function varint(n)
  local t = {}
  while n >= 128 do
    t[#t+1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  t[#t+1] = string.char(n)
  return table.concat(t)
end
local function ldelim(tag, s) return string.char(tag) .. varint(#s) .. s end
`

// sendScript: KEYS = state hash, dedupe key, recent list, answered mark;
// ARGV = message bytes (without epoch/seq), dedupe TTL seconds, recent cap,
// channel. Returns {0, msg} for a new message, {1, msg} for a known
// client_msg_id (and sets the answered mark: the retry produces its own
// record, so the message must not be withdrawn any more), {2} when the room
// has no epoch.
const sendScript = luaProto + `
local prev = redis.call('GET', KEYS[2])
if prev then
  redis.call('SET', KEYS[4], 1, 'EX', ARGV[2])
  return {1, prev}
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {2} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local msg = ldelim(26, epoch) .. string.char(32) .. varint(seq) .. ARGV[1]
redis.call('SET', KEYS[2], msg, 'EX', ARGV[2])
redis.call('LPUSH', KEYS[3], msg)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
redis.call('PUBLISH', ARGV[4], ldelim(10, msg))
return {0, msg}
`

// initScript: KEYS = state hash; ARGV = new epoch, seed. Sets both only if the
// room has no epoch; returns the epoch in force.
const initScript = `
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'seq', ARGV[2])
end
return redis.call('HGET', KEYS[1], 'epoch')
`

// withdrawScript: KEYS = dedupe key, recent list, answered mark; ARGV =
// message bytes, channel, withdrawn event bytes. Returns 0 (and changes
// nothing) when a retry was answered with the message.
const withdrawScript = `
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
`

// NewRedis returns a broker on client. Run must be running for events to reach
// the Hub.
func NewRedis(client rueidis.Client, opts Options, log *slog.Logger, reg prometheus.Registerer) *Redis {
	opts.defaults()
	b := &Redis{
		client:        client,
		opts:          opts,
		log:           log,
		send:          rueidis.NewLuaScript(sendScript),
		sendSHA:       scriptSHA(sendScript),
		ttlArg:        strconv.Itoa(int(opts.DedupeTTL / time.Second)),
		capArg:        strconv.Itoa(opts.RecentCap),
		initRoom:      rueidis.NewLuaScript(initScript),
		withdraw:      rueidis.NewLuaScript(withdrawScript),
		presenceJoin:  rueidis.NewLuaScript(presenceJoinScript),
		presenceLeave: rueidis.NewLuaScript(presenceLeaveScript),
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "parley", Subsystem: "redis",
			Name: "call_duration_seconds", Help: "Redis calls by operation and result.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}, []string{"op", "result"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "parley", Subsystem: "redis",
			Name: "pubsub_messages_total", Help: "Events received on the pattern subscription."}),
		badEvents: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "parley", Subsystem: "redis",
			Name: "pubsub_bad_events_total", Help: "Received events that did not decode."}),
		resubscribe: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "parley", Subsystem: "redis",
			Name: "pubsub_resubscribes_total", Help: "Times the pattern subscription was re-established after a drop."}),
		subscribed: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "parley", Subsystem: "redis",
			Name: "pubsub_subscribed", Help: "1 while the pattern subscription is up."}),
	}
	reg.MustRegister(b.calls, b.received, b.badEvents, b.resubscribe, b.subscribed)
	return b
}

func (b *Redis) observe(op string, start time.Time, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	b.calls.WithLabelValues(op, res).Observe(time.Since(start).Seconds())
}

// Channel is the pub/sub channel of a room.
func (b *Redis) Channel(roomID string) string { return b.opts.Prefix + "room:" + roomID }

// The {room} hash tag keeps a room's keys in one Redis Cluster slot.
func (b *Redis) stateKey(roomID string) string  { return b.opts.Prefix + "{" + roomID + "}:state" }
func (b *Redis) recentKey(roomID string) string { return b.opts.Prefix + "{" + roomID + "}:recent" }
func (b *Redis) dedupeKey(roomID, senderID, clientMsgID string) string {
	return b.opts.Prefix + "{" + roomID + "}:cmid:" + senderID + ":" + clientMsgID
}

// answeredKey marks the client_msg_id of dedupeKey dk as answered to a retry.
func answeredKey(dk string) string { return dk + ":answered" }

// Publish assigns m the room's next position, remembers its client_msg_id and
// publishes it, atomically. m must have no epoch or seq set. If the sender
// already sent that client_msg_id, the first message is returned with dup true
// and nothing is published. ErrNoEpoch if the room must be initialised first.
func (b *Redis) Publish(ctx context.Context, m *parleyv1.Message) (out *parleyv1.Message, dup bool, err error) {
	defer func(start time.Time) { b.observe("publish", start, err) }(time.Now())
	keys, args, err := b.sendArgs(m)
	if err != nil {
		return nil, false, err
	}
	r := b.sendResult(b.send.Exec(ctx, b.client, keys, args))
	return r.Message, r.Dup, r.Err
}

// PublishResult is the outcome of one message of PublishBatch.
type PublishResult struct {
	Message *parleyv1.Message
	Dup     bool
	Err     error
}

// PublishBatch is Publish for several messages in one round trip. Redis runs
// the scripts in the order given, so positions in a room follow it: one
// stream's sends keep their order without waiting for each other.
func (b *Redis) PublishBatch(ctx context.Context, ms []*parleyv1.Message) []PublishResult {
	start := time.Now()
	out := make([]PublishResult, len(ms))
	cmds := make(rueidis.Commands, 0, len(ms))
	idx := make([]int, 0, len(ms))
	for i, m := range ms {
		keys, args, err := b.sendArgs(m)
		if err != nil {
			out[i].Err = err
			continue
		}
		cmds = append(cmds, b.client.B().Evalsha().Sha1(b.sendSHA).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
		idx = append(idx, i)
	}
	var failed error
	for j, res := range b.client.DoMulti(ctx, cmds...) {
		i := idx[j]
		if rerr, ok := rueidis.IsRedisErr(res.Error()); ok && rerr.IsNoScript() {
			// Redis lost its script cache (a restart): Exec loads it. The
			// messages after this one in the batch failed the same way (or,
			// if another client loaded the script meanwhile, were published:
			// only then can their order relative to this one differ).
			out[i].Message, out[i].Dup, out[i].Err = b.Publish(ctx, ms[i])
		} else {
			out[i] = b.sendResult(res)
		}
		if out[i].Err != nil && failed == nil {
			failed = out[i].Err
		}
	}
	b.observe("publish_batch", start, failed)
	return out
}

// sendArgs are the send script's keys and arguments for m.
func (b *Redis) sendArgs(m *parleyv1.Message) (keys, args []string, err error) {
	raw, err := proto.Marshal(m)
	if err != nil {
		return nil, nil, err
	}
	dk := b.dedupeKey(m.RoomId, m.SenderId, m.ClientMsgId)
	keys = []string{b.stateKey(m.RoomId), dk, b.recentKey(m.RoomId), answeredKey(dk)}
	args = []string{string(raw), b.ttlArg, b.capArg, b.Channel(m.RoomId)}
	return keys, args, nil
}

// sendResult decodes the send script's answer.
func (b *Redis) sendResult(res rueidis.RedisResult) PublishResult {
	arr, err := res.ToArray()
	if err != nil {
		return PublishResult{Err: fmt.Errorf("redis publish: %w", err)}
	}
	code, err := arr[0].AsInt64()
	if err != nil {
		return PublishResult{Err: fmt.Errorf("redis publish: %w", err)}
	}
	if code == 2 {
		return PublishResult{Err: ErrNoEpoch}
	}
	body, err := arr[1].ToString()
	if err != nil {
		return PublishResult{Err: fmt.Errorf("redis publish: %w", err)}
	}
	out := &parleyv1.Message{}
	if err := proto.Unmarshal([]byte(body), out); err != nil {
		return PublishResult{Err: fmt.Errorf("redis publish: stored message does not decode: %w", err)}
	}
	return PublishResult{Message: out, Dup: code == 1}
}

// NewEpoch returns a random epoch id.
func NewEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// InitRoom gives a room without sequence state a new epoch whose seq continues
// from seed, and returns the epoch in force (another instance may have won).
func (b *Redis) InitRoom(ctx context.Context, roomID string, seed int64) (epoch string, err error) {
	defer func(start time.Time) { b.observe("init_room", start, err) }(time.Now())
	epoch, err = b.initRoom.Exec(ctx, b.client, []string{b.stateKey(roomID)}, []string{NewEpoch(), strconv.FormatInt(seed, 10)}).ToString()
	if err != nil {
		return "", fmt.Errorf("redis init room: %w", err)
	}
	return epoch, nil
}

// Head returns the room's epoch and last assigned seq, or ErrNoEpoch.
func (b *Redis) Head(ctx context.Context, roomID string) (epoch string, seq int64, err error) {
	defer func(start time.Time) { b.observe("head", start, err) }(time.Now())
	vals, err := b.client.Do(ctx, b.client.B().Hmget().Key(b.stateKey(roomID)).Field("epoch", "seq").Build()).ToArray()
	if err != nil {
		return "", 0, fmt.Errorf("redis head: %w", err)
	}
	epoch, err = vals[0].ToString()
	if rueidis.IsRedisNil(err) {
		return "", 0, ErrNoEpoch
	}
	if err != nil {
		return "", 0, fmt.Errorf("redis head: %w", err)
	}
	s, _ := vals[1].ToString()
	seq, _ = strconv.ParseInt(s, 10, 64)
	return epoch, seq, nil
}

// Recent returns the room's cached recent messages, oldest first, and whether
// the cache holds every message of the current epoch (it is not full yet).
func (b *Redis) Recent(ctx context.Context, roomID string) (msgs []*parleyv1.Message, all bool, err error) {
	defer func(start time.Time) { b.observe("recent", start, err) }(time.Now())
	vals, err := b.client.Do(ctx, b.client.B().Lrange().Key(b.recentKey(roomID)).Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil {
		return nil, false, fmt.Errorf("redis recent: %w", err)
	}
	msgs = make([]*parleyv1.Message, 0, len(vals))
	for i := len(vals) - 1; i >= 0; i-- {
		m := &parleyv1.Message{}
		if err := proto.Unmarshal([]byte(vals[i]), m); err != nil {
			continue
		}
		msgs = append(msgs, m)
	}
	return msgs, len(vals) < b.opts.RecentCap, nil
}

// Newest returns the room's newest cached message, or nil.
func (b *Redis) Newest(ctx context.Context, roomID string) (m *parleyv1.Message, err error) {
	defer func(start time.Time) { b.observe("newest", start, err) }(time.Now())
	v, err := b.client.Do(ctx, b.client.B().Lindex().Key(b.recentKey(roomID)).Index(0).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis newest: %w", err)
	}
	m = &parleyv1.Message{}
	if err := proto.Unmarshal([]byte(v), m); err != nil {
		return nil, nil
	}
	return m, nil
}

// Withdraw takes back a published message whose record failed: it is
// removed from the recent cache, its client_msg_id is forgotten (a retry gets
// a new position) and a MessageWithdrawn event is published. If a retry with
// the same client_msg_id was already answered with this message, its own
// record may make it durable: then nothing changes and withdrawn is false.
func (b *Redis) Withdraw(ctx context.Context, m *parleyv1.Message) (withdrawn bool, err error) {
	defer func(start time.Time) { b.observe("withdraw", start, err) }(time.Now())
	stored := proto.Clone(m).(*parleyv1.Message)
	stored.Epoch, stored.Seq = "", 0
	raw, err := proto.Marshal(stored)
	if err != nil {
		return false, err
	}
	// Re-create the exact bytes the send script stored: epoch, seq, then the rest.
	prefix := protoStringField(3, m.Epoch) + string(append([]byte{32}, protoVarint(uint64(m.Seq))...))
	ev, err := proto.Marshal(&eventsv1.RoomEvent{Event: &eventsv1.RoomEvent_MessageWithdrawn{MessageWithdrawn: &parleyv1.MessageWithdrawn{
		RoomId: m.RoomId, Epoch: m.Epoch, Seq: m.Seq, MessageId: m.MessageId}}})
	if err != nil {
		return false, err
	}
	dk := b.dedupeKey(m.RoomId, m.SenderId, m.ClientMsgId)
	n, err := b.withdraw.Exec(ctx, b.client, []string{dk, b.recentKey(m.RoomId), answeredKey(dk)},
		[]string{prefix + string(raw), b.Channel(m.RoomId), string(ev)}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("redis withdraw: %w", err)
	}
	return n == 1, nil
}

func protoVarint(n uint64) []byte {
	var out []byte
	for n >= 0x80 {
		out = append(out, byte(n)|0x80)
		n >>= 7
	}
	return append(out, byte(n))
}

func protoStringField(field int, s string) string {
	return string(append(append([]byte{byte(field<<3 | 2)}, protoVarint(uint64(len(s)))...), s...))
}

// Ready reports whether the pattern subscription is up.
func (b *Redis) Ready() bool { return b.ready.Load() }

// Run holds the instance's pattern subscription and dispatches events to hub
// until ctx is done. A dropped subscription is re-established with backoff;
// after a re-subscription every local subscriber is asked to resync.
func (b *Redis) Run(ctx context.Context, hub *Hub) error {
	pattern := b.opts.Prefix + "room:*"
	chanPrefix := b.opts.Prefix + "room:"
	backoff := 100 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		dc, release := b.client.Dedicate()
		wait := dc.SetPubSubHooks(rueidis.PubSubHooks{
			OnMessage: func(m rueidis.PubSubMessage) {
				b.received.Inc()
				roomID, ok := strings.CutPrefix(m.Channel, chanPrefix)
				if !ok {
					return
				}
				ev, err := DecodeEvent(roomID, []byte(m.Message))
				if err != nil {
					b.badEvents.Inc()
					return
				}
				hub.Dispatch(ev)
			},
		})
		err := dc.Do(ctx, dc.B().Psubscribe().Pattern(pattern).Build()).Error()
		if err == nil {
			b.ready.Store(true)
			b.subscribed.Set(1)
			if !first {
				b.resubscribe.Inc()
				hub.ResyncAll()
			}
			first = false
			backoff = 100 * time.Millisecond
			b.log.Info("redis pattern subscription up", "pattern", pattern)
			select {
			case err = <-wait:
			case <-ctx.Done():
			}
		}
		b.ready.Store(false)
		b.subscribed.Set(0)
		release()
		if ctx.Err() != nil {
			break
		}
		b.log.Warn("redis pattern subscription down; retrying", "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

func scriptSHA(script string) string {
	sum := sha1.Sum([]byte(script))
	return hex.EncodeToString(sum[:])
}
