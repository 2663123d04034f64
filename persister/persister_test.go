package persister

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

const (
	nMessages   = 5000
	nRooms      = 50
	nPartitions = 8
)

// waitTopics waits until the persister created its topics.
func waitTopics(tb testing.TB, brokers []string, topics ...string) {
	tb.Helper()
	// A short MetadataMinAge: kgo caches a metadata answer for 5s by default.
	adm := kadm.NewClient(newClient(tb, brokers, kgo.MetadataMinAge(10*time.Millisecond)))
	waitFor(tb, 10*time.Second, "topics created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		td, err := adm.ListTopics(ctx, topics...)
		if err != nil {
			return false
		}
		for _, t := range topics {
			if d, ok := td[t]; !ok || d.Err != nil {
				return false
			}
		}
		return true
	})
}

func TestPersisterWritesEverything(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		seedTopics bool
		failFirst  int
	}{
		{name: "topics exist", seedTopics: true},
		{name: "creates topics", seedTopics: false},
		{name: "retries failed writes", seedTopics: true, failFirst: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var seed []string
			if tc.seedTopics {
				seed = []string{DefaultTopic, DefaultDLQTopic}
			}
			brokers := newCluster(t, nPartitions, seed...)
			w := newMemWriter()
			w.failFirst = tc.failFirst
			reg := prometheus.NewRegistry()
			cfg := testConfig(brokers)
			r := startPersister(t, cfg, w, reg)
			waitTopics(t, brokers, DefaultTopic, DefaultDLQTopic)

			msgs := makeMessages(nMessages, nRooms)
			produceMessages(t, newClient(t, brokers), DefaultTopic, msgs)
			waitFor(t, 30*time.Second, "every message stored", func() bool { return w.stored() == len(msgs) })
			waitFor(t, 5*time.Second, "consumer lag 0", func() bool {
				return metricValue(t, reg, "parley_persister_consumer_lag", nil) == 0
			})
			if err := r.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}

			w.checkStored(t, msgs)
			for _, size := range w.batches {
				if size > cfg.MaxBatch {
					t.Errorf("writer call with %d messages, MaxBatch %d", size, cfg.MaxBatch)
				}
			}
			for p, behind := range committedBehindEnd(t, brokers, DefaultGroup, DefaultTopic) {
				if behind != 0 {
					t.Errorf("partition %d: committed offset %d behind the end after shutdown", p, behind)
				}
			}
			for _, c := range []struct {
				name string
				want float64
			}{
				{"parley_persister_messages_inserted_total", nMessages},
				{"parley_persister_duplicates_total", float64(w.duplicates)},
				{"parley_persister_write_errors_total", float64(tc.failFirst)},
				{"parley_persister_dlq_total", 0},
			} {
				if got := metricValue(t, reg, c.name, nil); got != c.want {
					t.Errorf("%s = %v, want %v", c.name, got, c.want)
				}
			}
			if got := metricValue(t, reg, "parley_persister_records_consumed_total", nil); got < nMessages {
				t.Errorf("records consumed %v, want >= %d", got, nMessages)
			}
			if got := metricValue(t, reg, "parley_persister_store_delay_seconds", nil); got < nMessages {
				t.Errorf("store delay observations %v, want >= %d", got, nMessages)
			}
			if got := metricValue(t, reg, "parley_persister_write_latency_seconds", nil); got != float64(len(w.batches)+tc.failFirst) {
				t.Errorf("write latency observations %v, want %d", got, len(w.batches)+tc.failFirst)
			}
		})
	}
}

func TestPersisterDeadLetters(t *testing.T) {
	t.Parallel()
	brokers := newCluster(t, nPartitions, DefaultTopic, DefaultDLQTopic)
	w := newMemWriter()
	reg := prometheus.NewRegistry()
	startPersister(t, testConfig(brokers), w, reg)

	marshal := func(m *parleyv1.Message) []byte {
		b, err := proto.Marshal(&eventsv1.MessageRecord{Message: m})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	valid := func(mut func(*parleyv1.Message)) []byte {
		m := &parleyv1.Message{MessageId: "bad", RoomId: "room-000", Seq: 1, Body: "x"}
		mut(m)
		return marshal(m)
	}
	bad := []struct {
		name   string
		value  []byte
		reason string
	}{
		{"garbage", []byte{0xff, 0xff, 0xff}, ReasonUndecodable},
		{"wrong wire type", []byte{0x0a, 0x05, 0x01}, ReasonUndecodable},
		{"empty value", nil, ReasonInvalid},
		{"no message", marshal(nil), ReasonInvalid},
		{"no message_id", valid(func(m *parleyv1.Message) { m.MessageId = "" }), ReasonInvalid},
		{"no room_id", valid(func(m *parleyv1.Message) { m.RoomId = "" }), ReasonInvalid},
		{"zero seq", valid(func(m *parleyv1.Message) { m.Seq = 0 }), ReasonInvalid},
		{"negative seq", valid(func(m *parleyv1.Message) { m.Seq = -4 }), ReasonInvalid},
		{"room id the writer refuses", valid(func(m *parleyv1.Message) { m.RoomId = "~b:room-000/0" }), ReasonInvalid},
	}

	// Bad records between good ones of the same room (same partition).
	good := makeMessages(400, 4)
	var recs []*kgo.Record
	badRecs := make(map[string]*kgo.Record)
	for i, m := range good {
		recs = append(recs, messageRecord(t, DefaultTopic, m))
		if i%40 == 0 && i/40 < len(bad) {
			b := bad[i/40]
			r := &kgo.Record{
				Topic:   DefaultTopic,
				Key:     []byte(m.GetRoomId()),
				Value:   b.value,
				Headers: []kgo.RecordHeader{{Key: "case", Value: []byte(b.name)}},
			}
			badRecs[b.name] = r
			recs = append(recs, r)
		}
	}
	produce(t, newClient(t, brokers), recs...)

	waitFor(t, 20*time.Second, "good messages stored", func() bool { return w.stored() == len(good) })
	dead := consumeAll(t, brokers, DefaultDLQTopic, len(bad))
	if len(dead) != len(bad) {
		t.Fatalf("DLQ has %d records, want %d", len(dead), len(bad))
	}
	w.checkStored(t, good)

	header := func(r *kgo.Record, key string) string {
		for _, h := range r.Headers {
			if h.Key == key {
				return string(h.Value)
			}
		}
		return ""
	}
	wantReasons := make(map[string]float64)
	for _, b := range bad {
		wantReasons[b.reason]++
		i := slices.IndexFunc(dead, func(r *kgo.Record) bool { return header(r, "case") == b.name })
		if i < 0 {
			t.Errorf("%s: not in the DLQ", b.name)
			continue
		}
		d, orig := dead[i], badRecs[b.name]
		for _, h := range []struct{ key, want string }{
			{"reason", b.reason},
			{"original_topic", DefaultTopic},
			{"original_partition", strconv.Itoa(int(orig.Partition))},
			{"original_offset", strconv.FormatInt(orig.Offset, 10)},
		} {
			if got := header(d, h.key); got != h.want {
				t.Errorf("%s: header %s = %q, want %q", b.name, h.key, got, h.want)
			}
		}
		if header(d, "detail") == "" {
			t.Errorf("%s: no detail header", b.name)
		}
		if !bytes.Equal(d.Value, orig.Value) || !bytes.Equal(d.Key, orig.Key) {
			t.Errorf("%s: DLQ key/value differ from the original", b.name)
		}
	}
	waitFor(t, 5*time.Second, "dlq metric", func() bool {
		return metricValue(t, reg, "parley_persister_dlq_total", nil) == float64(len(bad))
	})
	for reason, want := range wantReasons {
		if got := metricValue(t, reg, "parley_persister_dlq_total", map[string]string{"reason": reason}); got != want {
			t.Errorf("dlq_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
}

func TestPersisterSeqConflict(t *testing.T) {
	t.Parallel()
	brokers := newCluster(t, nPartitions, DefaultTopic, DefaultDLQTopic)
	w := newMemWriter()
	w.conflicts = true
	reg := prometheus.NewRegistry()
	startPersister(t, testConfig(brokers), w, reg)

	msgs := makeMessages(100, 2)
	intruder := proto.Clone(msgs[10]).(*parleyv1.Message)
	intruder.MessageId = "intruder"
	intruder.Body = "same position, other message"
	prod := newClient(t, brokers)
	produceMessages(t, prod, DefaultTopic, msgs[:50])
	produceMessages(t, prod, DefaultTopic, []*parleyv1.Message{intruder})
	produceMessages(t, prod, DefaultTopic, msgs[50:])

	waitFor(t, 20*time.Second, "messages stored", func() bool { return w.stored() == len(msgs) })
	dead := consumeAll(t, brokers, DefaultDLQTopic, 1)
	if len(dead) != 1 {
		t.Fatalf("DLQ has %d records, want 1", len(dead))
	}
	var got eventsv1.MessageRecord
	if err := proto.Unmarshal(dead[0].Value, &got); err != nil || got.GetMessage().GetMessageId() != "intruder" {
		t.Errorf("DLQ record is %v (%v), want the intruder", got.GetMessage(), err)
	}
	reason := ""
	for _, h := range dead[0].Headers {
		if h.Key == "reason" {
			reason = string(h.Value)
		}
	}
	if reason != ReasonSeqConflict {
		t.Errorf("reason %q, want %q", reason, ReasonSeqConflict)
	}
	w.checkStored(t, msgs)
	waitFor(t, 5*time.Second, "dlq metric", func() bool {
		return metricValue(t, reg, "parley_persister_dlq_total", map[string]string{"reason": ReasonSeqConflict}) == 1
	})
	// The intruder was never stored: it has no store delay.
	if got := metricValue(t, reg, "parley_persister_store_delay_seconds", nil); got != float64(len(msgs)) {
		t.Errorf("store delay observations %v, want %d (the rejected record left out)", got, len(msgs))
	}
}

// TestStoreDelayLeavesOutRedeliveries: records the store already had (as
// after a crash between a write and its commit) do not count in the store
// delay, whose record times would be long past.
func TestStoreDelayLeavesOutRedeliveries(t *testing.T) {
	t.Parallel()
	brokers := newCluster(t, nPartitions, DefaultTopic, DefaultDLQTopic)
	w := newMemWriter()
	msgs := makeMessages(60, 3)
	for _, m := range msgs {
		w.byID[m.GetMessageId()] = m
	}
	reg := prometheus.NewRegistry()
	startPersister(t, testConfig(brokers), w, reg)
	produceMessages(t, newClient(t, brokers), DefaultTopic, msgs)
	waitFor(t, 20*time.Second, "every record seen as a duplicate", func() bool {
		return metricValue(t, reg, "parley_persister_duplicates_total", nil) == float64(len(msgs))
	})
	// Offsets are committed after their batch is processed, delay included:
	// once they all are, every batch has had its chance to observe.
	waitFor(t, 20*time.Second, "every offset committed", func() bool {
		for _, behind := range committedBehindEnd(t, brokers, DefaultGroup, DefaultTopic) {
			if behind != 0 {
				return false
			}
		}
		return true
	})
	if got := metricValue(t, reg, "parley_persister_store_delay_seconds", nil); got != 0 {
		t.Errorf("store delay observations %v, want 0 for redelivered records", got)
	}
}

// TestPersisterRestart cancels a persister mid-stream and starts another in
// the same group (and on the same metrics registry): everything is stored
// once, and what the first one wrote was committed, so the second one rewrites
// nothing.
func TestPersisterRestart(t *testing.T) {
	t.Parallel()
	brokers := newCluster(t, nPartitions, DefaultTopic, DefaultDLQTopic)
	msgs := makeMessages(nMessages, nRooms)
	produceMessages(t, newClient(t, brokers), DefaultTopic, msgs)

	w := newMemWriter()
	w.delay = 5 * time.Millisecond
	cfg := testConfig(brokers)
	cfg.MaxBatch = 10
	reg := prometheus.NewRegistry()

	r1 := startPersister(t, cfg, w, reg)
	waitFor(t, 20*time.Second, "a first part stored", func() bool { return w.stored() >= nMessages/5 })
	if err := r1.stop(t); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	written := w.stored()
	if written == nMessages {
		t.Fatalf("first persister wrote everything before the cancel; slow the writer down")
	}
	var behind int64
	for _, b := range committedBehindEnd(t, brokers, DefaultGroup, DefaultTopic) {
		behind += b
	}
	if behind != int64(nMessages-written) {
		t.Errorf("after the first run %d records are uncommitted, want exactly the %d unwritten ones", behind, nMessages-written)
	}
	t.Logf("first run wrote %d of %d messages", written, nMessages)

	r2 := startPersister(t, cfg, w, reg)
	waitFor(t, 30*time.Second, "every message stored", func() bool { return w.stored() == nMessages })
	if err := r2.stop(t); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	w.checkStored(t, msgs)
	if w.duplicates != 0 {
		t.Errorf("second run rewrote %d messages the first one had committed", w.duplicates)
	}
	if got := metricValue(t, reg, "parley_persister_messages_inserted_total", nil); got != nMessages {
		t.Errorf("messages_inserted_total = %v over both runs, want %d", got, nMessages)
	}
}

// TestPersisterRebalance adds a second group member mid-stream: partitions
// move between members without loss and without breaking per-room order.
func TestPersisterRebalance(t *testing.T) {
	t.Parallel()
	brokers := newCluster(t, nPartitions, DefaultTopic, DefaultDLQTopic)
	msgs := makeMessages(nMessages, nRooms)
	prod := newClient(t, brokers)
	w := newMemWriter()
	cfg := testConfig(brokers)
	reg1, reg2 := prometheus.NewRegistry(), prometheus.NewRegistry()

	r1 := startPersister(t, cfg, w, reg1)
	produceMessages(t, prod, DefaultTopic, msgs[:nMessages/2])
	waitFor(t, 20*time.Second, "first half stored", func() bool { return w.stored() >= nMessages/4 })

	r2 := startPersister(t, cfg, w, reg2)
	owned := func(r *runningPersister) int {
		r.p.mu.Lock()
		defer r.p.mu.Unlock()
		return len(r.p.workers)
	}
	waitFor(t, 20*time.Second, "partitions split between both members", func() bool {
		a, b := owned(r1), owned(r2)
		return a > 0 && b > 0 && a+b == nPartitions
	})
	produceMessages(t, prod, DefaultTopic, msgs[nMessages/2:])
	waitFor(t, 30*time.Second, "every message stored", func() bool { return w.stored() == nMessages })

	if err := r1.stop(t); err != nil {
		t.Errorf("Run 1: %v", err)
	}
	if err := r2.stop(t); err != nil {
		t.Errorf("Run 2: %v", err)
	}
	w.checkStored(t, msgs)
	for _, reg := range []*prometheus.Registry{reg1, reg2} {
		if metricValue(t, reg, "parley_persister_messages_inserted_total", nil) == 0 {
			t.Errorf("a member stored nothing")
		}
	}
	dups := metricValue(t, reg1, "parley_persister_duplicates_total", nil) + metricValue(t, reg2, "parley_persister_duplicates_total", nil)
	if dups != float64(w.duplicates) {
		t.Errorf("duplicates counted %v, writer saw %d", dups, w.duplicates)
	}
	for p, behind := range committedBehindEnd(t, brokers, DefaultGroup, DefaultTopic) {
		if behind != 0 {
			t.Errorf("partition %d: committed offset %d behind the end", p, behind)
		}
	}
}

// TestPersisterStuckPartition makes every write of one room fail: only that
// room's partition waits (and is paused), the others are written; once the
// writer recovers, the stuck partition catches up.
func TestPersisterStuckPartition(t *testing.T) {
	t.Parallel()
	brokers := newCluster(t, nPartitions, DefaultTopic, DefaultDLQTopic)
	msgs := makeMessages(nMessages, nRooms)
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = messageRecord(t, DefaultTopic, m)
	}
	produce(t, newClient(t, brokers), recs...)
	stuckRoom := msgs[0].GetRoomId()
	var stuck, free []*parleyv1.Message
	for i, m := range msgs {
		if recs[i].Partition == recs[0].Partition {
			stuck = append(stuck, m)
		} else {
			free = append(free, m)
		}
	}

	w := newMemWriter()
	w.setFailRoom(stuckRoom)
	reg := prometheus.NewRegistry()
	r := startPersister(t, testConfig(brokers), w, reg)
	waitFor(t, 20*time.Second, "the other partitions written", func() bool { return w.storedIn(free) == len(free) })
	if got := w.storedIn(stuck); got >= len(stuck) {
		t.Fatalf("stuck partition fully written (%d) while its writes fail", got)
	}
	paused := func() bool {
		r.p.mu.Lock()
		pw := r.p.workers[recs[0].Partition]
		r.p.mu.Unlock()
		if pw == nil {
			return false
		}
		pw.mu.Lock()
		defer pw.mu.Unlock()
		return pw.paused
	}
	if !paused() {
		t.Errorf("the stuck partition (%d queued records) is not paused", len(stuck))
	}
	w.setFailRoom("")
	waitFor(t, 20*time.Second, "the stuck partition caught up", func() bool { return w.stored() == nMessages })
	w.checkStored(t, msgs)
	if metricValue(t, reg, "parley_persister_write_errors_total", nil) == 0 {
		t.Error("no write error counted")
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	brokers := newCluster(t, 1, DefaultTopic, DefaultDLQTopic)
	r := startPersister(t, testConfig(brokers), newMemWriter(), nil)
	waitFor(t, 10*time.Second, "partition assigned", func() bool {
		r.p.mu.Lock()
		defer r.p.mu.Unlock()
		return len(r.p.workers) == 1
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.p.Run(ctx); err == nil {
		t.Error("second Run returned nil")
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{Brokers: []string{"x:1"}}, nil, nil, nil); err == nil {
		t.Error("New with a nil Writer succeeded")
	}
	if _, err := New(Config{}, newMemWriter(), nil, nil); err == nil {
		t.Error("New without brokers succeeded")
	}
	// Two persisters on one registry share the collectors.
	reg := prometheus.NewRegistry()
	for range 2 {
		if _, err := New(Config{Brokers: []string{"x:1"}}, newMemWriter(), nil, reg); err != nil {
			t.Fatalf("New: %v", err)
		}
	}
}
