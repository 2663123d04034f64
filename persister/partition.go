package persister

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// partitionWorker processes the records of one assigned partition, in offset
// order, on its own goroutine. The poll loop appends to its queue; when the
// queue holds 2*MaxBatch records the partition's fetching is paused, so a
// partition whose writes keep failing holds back only itself.
type partitionWorker struct {
	p         *Persister
	cl        *kgo.Client
	partition int32
	log       *slog.Logger
	lag       prometheus.Gauge

	mu      sync.Mutex
	queue   []*kgo.Record
	hw      int64 // highest high watermark seen
	paused  bool  // fetching of this partition is paused
	stopped bool
	wake    chan struct{} // cap 1: queue became non-empty

	quit     chan struct{} // closed by stop: finish the batch in flight, then exit
	stopOnce sync.Once
	ctx      context.Context // cancelled by a hard stop: abandon the batch in flight
	cancel   context.CancelFunc
	done     chan struct{} // closed when run returns
}

func newPartitionWorker(p *Persister, cl *kgo.Client, partition int32) *partitionWorker {
	ctx, cancel := context.WithCancel(p.workerCtx)
	return &partitionWorker{
		p:         p,
		cl:        cl,
		partition: partition,
		log:       p.log.With("partition", partition),
		lag:       p.m.lag.WithLabelValues(partitionLabel(partition)),
		wake:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
	}
}

// enqueue appends a fetch's records; called by the poll loop only.
func (w *partitionWorker) enqueue(ftp kgo.FetchTopicPartition) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return // not marked, so redelivered
	}
	w.queue = append(w.queue, ftp.Records...)
	w.hw = max(w.hw, ftp.HighWatermark)
	if !w.paused && len(w.queue) >= 2*w.p.cfg.MaxBatch {
		w.paused = true
		w.cl.PauseFetchPartitions(map[string][]int32{w.p.cfg.Topic: {w.partition}})
		w.log.Debug("partition fetching paused", "queued", len(w.queue))
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take removes up to MaxBatch records from the queue and resumes fetching
// once the queue is short again.
func (w *partitionWorker) take() (batch []*kgo.Record, hw int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := min(len(w.queue), w.p.cfg.MaxBatch)
	batch = slices.Clone(w.queue[:n])
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = nil
	}
	if w.paused && len(w.queue) < w.p.cfg.MaxBatch {
		w.resumeLocked()
	}
	return batch, w.hw
}

func (w *partitionWorker) resumeLocked() {
	w.paused = false
	w.cl.ResumeFetchPartitions(map[string][]int32{w.p.cfg.Topic: {w.partition}})
}

// stop stops the worker and waits for it. Graceful lets the batch in flight
// finish (bounded by WriteTimeout per attempt); hard cancels it.
func (w *partitionWorker) stop(hard bool) {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		w.stopped = true
		w.mu.Unlock()
		close(w.quit)
	})
	if hard {
		w.cancel()
	}
	<-w.done
	w.cancel()
	w.mu.Lock()
	w.queue = nil
	if w.paused {
		// Paused partitions stay paused across rebalances: undo it so
		// that a later assignment of this partition fetches again.
		w.resumeLocked()
	}
	w.mu.Unlock()
	w.p.m.lag.DeleteLabelValues(partitionLabel(w.partition))
}

func (w *partitionWorker) run() {
	defer close(w.done)
	w.log.Debug("partition worker started")
	for {
		select {
		case <-w.quit:
			return
		default:
		}
		batch, hw := w.take()
		if len(batch) == 0 {
			select {
			case <-w.quit:
				return
			case <-w.wake:
			}
			continue
		}
		if !w.process(batch) {
			return // stopped before the batch was written: not marked
		}
		last := batch[len(batch)-1]
		w.cl.MarkCommitRecords(last)
		w.lag.Set(float64(max(hw-last.Offset-1, 0)))
	}
}

// deadLetter is a record bound for the DLQ topic.
type deadLetter struct {
	rec    *kgo.Record
	reason string
	detail string
}

// decode returns the record's message, or the DLQ reason and detail.
func decode(r *kgo.Record) (m *parleyv1.Message, reason, detail string) {
	var mr eventsv1.MessageRecord
	if err := proto.Unmarshal(r.Value, &mr); err != nil {
		return nil, ReasonUndecodable, "value is not a parley.events.v1.MessageRecord: " + err.Error()
	}
	m = mr.GetMessage()
	switch {
	case m == nil:
		return nil, ReasonInvalid, "record has no message"
	case m.GetMessageId() == "":
		return nil, ReasonInvalid, "message has no message_id"
	case m.GetRoomId() == "":
		return nil, ReasonInvalid, "message " + m.GetMessageId() + " has no room_id"
	case m.GetSeq() <= 0:
		return nil, ReasonInvalid, "message " + m.GetMessageId() + " has no positive seq"
	}
	return m, "", ""
}

// process writes one batch and dead-letters what cannot be written. It
// returns false if the worker was stopped first; then nothing may be marked.
func (w *partitionWorker) process(batch []*kgo.Record) bool {
	start := time.Now()
	w.p.m.consumed.Add(float64(len(batch)))
	w.p.m.batchSize.Observe(float64(len(batch)))

	msgs := make([]*parleyv1.Message, 0, len(batch))
	recs := make([]*kgo.Record, 0, len(batch))
	var dead []deadLetter
	for _, r := range batch {
		m, reason, detail := decode(r)
		if v, ok := w.p.w.(validator); ok && reason == "" {
			if err := v.Validate(m); err != nil {
				reason, detail = ReasonInvalid, err.Error()
			}
		}
		if reason != "" {
			dead = append(dead, deadLetter{rec: r, reason: reason, detail: detail})
			continue
		}
		msgs = append(msgs, m)
		recs = append(recs, r)
	}

	var inserted, duplicates int
	if len(msgs) > 0 {
		var rejected []string
		var ok bool
		inserted, duplicates, rejected, ok = w.write(msgs, recs[0].Offset)
		if !ok {
			return false
		}
		var ids map[string]struct{} // rejected message ids
		if len(rejected) > 0 {
			ids = make(map[string]struct{}, len(rejected))
			for _, id := range rejected {
				ids[id] = struct{}{}
			}
		}
		// The store delay is how long an acknowledged message waited to be
		// stored. Rejected messages never are: they go to the DLQ. A batch
		// with duplicates (a redelivery after a crash or a rebalance) says
		// how many were stored before, not which, and their delays would
		// count from a record time long past: such a batch is left out.
		now := time.Now()
		for i, m := range msgs {
			if _, bad := ids[m.GetMessageId()]; bad {
				dead = append(dead, deadLetter{
					rec:    recs[i],
					reason: ReasonSeqConflict,
					detail: "another message is stored at room " + m.GetRoomId() + " seq " + strconv.FormatInt(m.GetSeq(), 10),
				})
			} else if duplicates == 0 {
				w.p.m.storeDelay.Observe(now.Sub(recs[i].Timestamp).Seconds())
			}
		}
		if len(rejected) > 0 {
			slices.SortFunc(dead, func(a, b deadLetter) int { return cmp.Compare(a.rec.Offset, b.rec.Offset) })
		}
	}
	if len(dead) > 0 && !w.produceDLQ(dead) {
		return false
	}
	w.log.Debug("batch written",
		"offset", batch[0].Offset, "last_offset", batch[len(batch)-1].Offset,
		"batch_size", len(batch), "inserted", inserted, "duplicates", duplicates,
		"dead_letters", len(dead), "duration", time.Since(start))
	return true
}

// write calls the Writer until it succeeds, retrying with backoff. It
// returns the ids the Writer rejected for good, and ok == false if the worker
// was stopped before a call succeeded.
func (w *partitionWorker) write(msgs []*parleyv1.Message, offset int64) (inserted, duplicates int, rejected []string, ok bool) {
	backoff := w.p.cfg.RetryBackoffMin
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(w.ctx, w.p.cfg.WriteTimeout)
		start := time.Now()
		ins, dup, err := w.p.w.InsertMessages(ctx, msgs)
		cancel()
		w.p.m.writeLatency.Observe(time.Since(start).Seconds())
		inserted += max(ins, 0)
		duplicates += max(dup, 0)
		w.p.m.inserted.Add(float64(max(ins, 0)))
		w.p.m.duplicates.Add(float64(max(dup, 0)))
		if err == nil {
			return inserted, duplicates, nil, true
		}
		var rj rejecter
		if errors.As(err, &rj) {
			w.log.Warn("writer rejected messages", "offset", offset, "batch_size", len(msgs), "rejected", len(rj.RejectedMessageIDs()), "err", err)
			return inserted, duplicates, rj.RejectedMessageIDs(), true
		}
		w.p.m.writeErrors.Inc()
		w.log.Warn("write failed, retrying", "offset", offset, "batch_size", len(msgs), "attempt", attempt, "backoff", backoff, "err", err)
		if !w.sleep(backoff) {
			return inserted, duplicates, nil, false
		}
		backoff = min(2*backoff, w.p.cfg.RetryBackoffMax)
	}
}

// produceDLQ produces dead letters synchronously, retrying with backoff. It
// returns false if the worker was stopped before they were all acknowledged.
func (w *partitionWorker) produceDLQ(dead []deadLetter) bool {
	for _, d := range dead {
		w.log.Warn("record to dead-letter topic", "offset", d.rec.Offset, "reason", d.reason, "detail", d.detail)
	}
	backoff := w.p.cfg.RetryBackoffMin
	for attempt := 1; ; attempt++ {
		recs := make([]*kgo.Record, len(dead))
		for i, d := range dead {
			recs[i] = w.dlqRecord(d)
		}
		ctx, cancel := context.WithTimeout(w.ctx, w.p.cfg.WriteTimeout)
		err := w.cl.ProduceSync(ctx, recs...).FirstErr()
		cancel()
		if err == nil {
			for _, d := range dead {
				w.p.m.dlq.WithLabelValues(d.reason).Inc()
			}
			return true
		}
		w.p.m.writeErrors.Inc()
		w.log.Warn("dead-letter produce failed, retrying", "offset", dead[0].rec.Offset, "batch_size", len(dead), "attempt", attempt, "backoff", backoff, "err", err)
		if !w.sleep(backoff) {
			return false
		}
		backoff = min(2*backoff, w.p.cfg.RetryBackoffMax)
	}
}

func (w *partitionWorker) dlqRecord(d deadLetter) *kgo.Record {
	h := make([]kgo.RecordHeader, 0, len(d.rec.Headers)+5)
	h = append(h, d.rec.Headers...)
	h = append(h,
		kgo.RecordHeader{Key: "reason", Value: []byte(d.reason)},
		kgo.RecordHeader{Key: "detail", Value: []byte(d.detail)},
		kgo.RecordHeader{Key: "original_topic", Value: []byte(d.rec.Topic)},
		kgo.RecordHeader{Key: "original_partition", Value: []byte(strconv.FormatInt(int64(d.rec.Partition), 10))},
		kgo.RecordHeader{Key: "original_offset", Value: []byte(strconv.FormatInt(d.rec.Offset, 10))},
	)
	return &kgo.Record{
		Topic:   w.p.cfg.DLQTopic,
		Key:     d.rec.Key,
		Value:   d.rec.Value,
		Headers: h,
	}
}

// sleep waits about d (with jitter) and reports false if the worker was
// stopped meanwhile.
func (w *partitionWorker) sleep(d time.Duration) bool {
	if d > 1 {
		d = d/2 + rand.N(d/2+1)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.quit:
		return false
	case <-w.ctx.Done():
		return false
	}
}
