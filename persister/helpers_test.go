package persister

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// testLogger logs to the test's output (shown with -v or on failure).
func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newCluster starts an in-process Kafka cluster; seedTopics are created with
// partitions partitions.
func newCluster(tb testing.TB, partitions int32, seedTopics ...string) []string {
	tb.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(int(partitions))}
	if len(seedTopics) > 0 {
		opts = append(opts, kfake.SeedTopics(partitions, seedTopics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		tb.Fatalf("kfake: %v", err)
	}
	tb.Cleanup(c.Close)
	return c.ListenAddrs()
}

// newClient returns a Kafka client closed at cleanup.
func newClient(tb testing.TB, brokers []string, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		tb.Fatalf("kafka client: %v", err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// testConfig is a Config with fast retries for brokers.
func testConfig(brokers []string) Config {
	return Config{
		Brokers:         brokers,
		MaxBatch:        100,
		RetryBackoffMin: time.Millisecond,
		RetryBackoffMax: 20 * time.Millisecond,
		WriteTimeout:    5 * time.Second,
		Partitions:      8,
	}
}

// testKafkaOpts make group membership changes quick.
func testKafkaOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.HeartbeatInterval(100 * time.Millisecond),
		kgo.AutoCommitInterval(200 * time.Millisecond),
	}
}

// runningPersister is a Persister running in the background.
type runningPersister struct {
	p      *Persister
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels Run and returns its result; it is idempotent.
func (r *runningPersister) stop(tb testing.TB) error {
	tb.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(20 * time.Second):
			r.err = errors.New("Run did not return within 20s of cancel")
		}
	})
	return r.err
}

// startPersister runs a Persister until stopped (at the latest at cleanup,
// where a Run error fails the test).
func startPersister(tb testing.TB, cfg Config, w Writer, reg prometheus.Registerer) *runningPersister {
	tb.Helper()
	p, err := New(cfg, w, testLogger(tb), reg, testKafkaOpts()...)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningPersister{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	tb.Cleanup(func() {
		if err := r.stop(tb); err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	return r
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// makeMessages returns n messages spread round-robin over rooms rooms, with
// per-room seqs 1, 2, 3...
func makeMessages(n, rooms int) []*parleyv1.Message {
	seqs := make([]int64, rooms)
	out := make([]*parleyv1.Message, n)
	now := time.Now()
	for i := range n {
		r := i % rooms
		seqs[r]++
		out[i] = &parleyv1.Message{
			MessageId:      fmt.Sprintf("m-%06d", i),
			RoomId:         fmt.Sprintf("room-%03d", r),
			Epoch:          "e1",
			Seq:            seqs[r],
			SenderId:       "u1",
			SenderUsername: "alice",
			ClientMsgId:    fmt.Sprintf("c-%06d", i),
			Body:           fmt.Sprintf("hello %d", i),
			CreateTime:     timestamppb.New(now.Add(time.Duration(i) * time.Millisecond)),
		}
	}
	return out
}

// messageRecord is the Kafka record the server produces for m.
func messageRecord(tb testing.TB, topic string, m *parleyv1.Message) *kgo.Record {
	tb.Helper()
	v, err := proto.Marshal(&eventsv1.MessageRecord{Message: m})
	if err != nil {
		tb.Fatalf("marshal: %v", err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(m.GetRoomId()), Value: v}
}

// produce produces recs synchronously in order.
func produce(tb testing.TB, cl *kgo.Client, recs ...*kgo.Record) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const chunk = 1000
	for i := 0; i < len(recs); i += chunk {
		if err := cl.ProduceSync(ctx, recs[i:min(i+chunk, len(recs))]...).FirstErr(); err != nil {
			tb.Fatalf("produce: %v", err)
		}
	}
}

// produceMessages produces one record per message.
func produceMessages(tb testing.TB, cl *kgo.Client, topic string, msgs []*parleyv1.Message) {
	tb.Helper()
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = messageRecord(tb, topic, m)
	}
	produce(tb, cl, recs...)
}

// consumeAll reads topic from the start until n records were read.
func consumeAll(tb testing.TB, brokers []string, topic string, n int) []*kgo.Record {
	tb.Helper()
	cl := newClient(tb, brokers, kgo.ConsumeTopics(topic), kgo.FetchMaxWait(100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			tb.Fatalf("consumed %d of %d records of %s: %v", len(out), n, topic, err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// committedBehindEnd returns, per partition of topic, how far the group's
// committed offset is behind the end offset.
func committedBehindEnd(tb testing.TB, brokers []string, group, topic string) map[int32]int64 {
	tb.Helper()
	adm := kadm.NewClient(newClient(tb, brokers))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		tb.Fatalf("list end offsets: %v", err)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		tb.Fatalf("fetch offsets: %v", err)
	}
	out := make(map[int32]int64)
	ends.Each(func(o kadm.ListedOffset) {
		at := int64(0)
		if c, ok := committed.Lookup(topic, o.Partition); ok && c.At >= 0 {
			at = c.At
		}
		out[o.Partition] = o.Offset - at
	})
	return out
}

// memWriter is an in-memory Writer keyed by message_id, like msgstore.
type memWriter struct {
	failFirst int           // fail this many calls first
	delay     time.Duration // per call
	conflicts bool          // reject a second message at a taken (room, seq)

	mu         sync.Mutex
	failRoom   string // fail every call with a message of this room
	calls      int
	byID       map[string]*parleyv1.Message
	byPos      map[string]string   // room/seq -> message_id
	firstOrder map[string][]int64  // room -> seqs, in the order first written
	writes     map[string]int      // message_id -> times passed in a successful call
	batches    []int               // sizes of successful calls
	inserted   int                 // total newly stored
	duplicates int                 // total already stored
	rejected   map[string]struct{} // message ids rejected as conflicts
}

func newMemWriter() *memWriter {
	return &memWriter{
		byID:       make(map[string]*parleyv1.Message),
		byPos:      make(map[string]string),
		firstOrder: make(map[string][]int64),
		writes:     make(map[string]int),
		rejected:   make(map[string]struct{}),
	}
}

type conflictError struct{ ids []string }

func (e *conflictError) Error() string                { return "conflict: " + strings.Join(e.ids, ",") }
func (e *conflictError) RejectedMessageIDs() []string { return e.ids }

// Validate refuses ids starting with "~", as msgstore does (its block
// markers' prefix); InsertMessages fails a call holding one, as msgstore's
// does, so that the persister must ask first.
func (w *memWriter) Validate(m *parleyv1.Message) error {
	if strings.HasPrefix(m.GetRoomId(), "~") || strings.HasPrefix(m.GetMessageId(), "~") {
		return fmt.Errorf("message %s of room %s: an id starts with ~", m.GetMessageId(), m.GetRoomId())
	}
	return nil
}

func (w *memWriter) InsertMessages(ctx context.Context, msgs []*parleyv1.Message) (inserted, duplicates int, err error) {
	for _, m := range msgs {
		if err := w.Validate(m); err != nil {
			return 0, 0, err
		}
	}
	if w.delay > 0 {
		select {
		case <-time.After(w.delay):
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.calls <= w.failFirst {
		return 0, 0, fmt.Errorf("injected failure %d", w.calls)
	}
	for _, m := range msgs {
		if w.failRoom != "" && m.GetRoomId() == w.failRoom {
			return 0, 0, fmt.Errorf("injected failure for room %s", w.failRoom)
		}
	}
	var rejected []string
	for _, m := range msgs {
		w.writes[m.GetMessageId()]++
		if _, ok := w.byID[m.GetMessageId()]; ok {
			duplicates++
			continue
		}
		pos := fmt.Sprintf("%s/%d", m.GetRoomId(), m.GetSeq())
		if _, taken := w.byPos[pos]; taken && w.conflicts {
			rejected = append(rejected, m.GetMessageId())
			w.rejected[m.GetMessageId()] = struct{}{}
			continue
		}
		w.byPos[pos] = m.GetMessageId()
		w.byID[m.GetMessageId()] = m
		w.firstOrder[m.GetRoomId()] = append(w.firstOrder[m.GetRoomId()], m.GetSeq())
		inserted++
	}
	w.inserted += inserted
	w.duplicates += duplicates
	w.batches = append(w.batches, len(msgs))
	if len(rejected) > 0 {
		return inserted, duplicates, fmt.Errorf("wrapped: %w", &conflictError{ids: rejected})
	}
	return inserted, duplicates, nil
}

func (w *memWriter) stored() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byID)
}

// checkStored fails unless exactly msgs are stored (set semantics), each
// with its content, and every room's first writes came in seq order.
func (w *memWriter) checkStored(tb testing.TB, msgs []*parleyv1.Message) {
	tb.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.byID) != len(msgs) {
		tb.Errorf("stored %d messages, want %d", len(w.byID), len(msgs))
	}
	for _, m := range msgs {
		got, ok := w.byID[m.GetMessageId()]
		if !ok {
			tb.Errorf("message %s (room %s seq %d) lost", m.GetMessageId(), m.GetRoomId(), m.GetSeq())
			continue
		}
		if !proto.Equal(got, m) {
			tb.Errorf("message %s stored as %v, want %v", m.GetMessageId(), got, m)
		}
	}
	for room, seqs := range w.firstOrder {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				tb.Errorf("room %s: seq %d written after seq %d", room, seqs[i], seqs[i-1])
				break
			}
		}
	}
	if w.inserted != len(w.byID) {
		tb.Errorf("inserted count %d != stored %d", w.inserted, len(w.byID))
	}
}

// metricValue returns the value of a counter or gauge (summed over series
// matching labels), or the sample count of a histogram.
func metricValue(tb testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func (w *memWriter) setFailRoom(room string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failRoom = room
}

// storedIn returns how many of msgs are stored.
func (w *memWriter) storedIn(msgs []*parleyv1.Message) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range msgs {
		if _, ok := w.byID[m.GetMessageId()]; ok {
			n++
		}
	}
	return n
}
