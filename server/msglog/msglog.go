// Package msglog hands messages to Kafka for the persister: one record per
// message on the messages topic, keyed by room id (so a room's records stay
// in order on one partition), with franz-go's idempotent producer and
// acks=all. A message is durable once Append's callback reports nil.
package msglog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Config configures the producer.
type Config struct {
	Brokers []string
	Topic   string
	// Partitions and ReplicationFactor are used when the topic is created.
	Partitions        int32
	ReplicationFactor int16
	// DeliveryTimeout bounds how long a record may wait for Kafka before its
	// send fails with Unavailable.
	DeliveryTimeout time.Duration
	// Linger batches records for this long before sending (0: none).
	Linger time.Duration
}

// Producer appends messages to the topic. It is safe for concurrent use.
type Producer struct {
	client *kgo.Client
	cfg    Config
	log    *slog.Logger

	// batchMax is the producer's record batch limit: franz-go's default,
	// or the topic's max.message.bytes once CheckRecordLimit read a lower
	// one (the broker refuses a whole batch above it). franz-go reads it
	// once per partition, when the partition is first produced to, so it
	// is set before the first Append.
	batchMax atomic.Int32

	inflight prometheus.Gauge
	latency  *prometheus.HistogramVec
	tooLarge prometheus.Counter

	// After Kafka refuses a batch as too large (the topic's
	// max.message.bytes was lowered after CheckRecordLimit), the limit is
	// read again in the background, at most once per recheckEvery, and
	// logged as an error with what to do.
	lastCheck    atomic.Int64 // unix nanoseconds of the last recheck's start
	rechecks     sync.WaitGroup
	recheckCtx   context.Context // ended by Close
	stopRechecks context.CancelFunc
	closeMu      sync.Mutex
	closing      bool // under closeMu: no recheck starts
}

// recheckEvery spaces the rechecks of the topic's limit.
const recheckEvery = 30 * time.Second

// defaultBatchMax is franz-go's default record batch limit.
const defaultBatchMax = 1_000_012

// New connects a producer; extra options (e.g. for tests) are appended.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, extra ...kgo.Opt) (*Producer, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("msglog: no Kafka brokers configured")
	}
	if cfg.Topic == "" {
		return nil, errors.New("msglog: no topic configured")
	}
	p := &Producer{
		cfg: cfg, log: log,
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "parley", Subsystem: "kafka",
			Name: "produce_inflight", Help: "Records handed to the producer and not yet acknowledged."}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "parley", Subsystem: "kafka",
			Name: "produce_duration_seconds", Help: "Time from Append to Kafka's acknowledgement, by result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"result"}),
		tooLarge: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "parley", Subsystem: "kafka",
			Name: "records_too_large_total", Help: "Records refused as too large (MESSAGE_TOO_LARGE): in a batch over the topic's max.message.bytes, or over the producer's batch limit by themselves."}),
	}
	p.batchMax.Store(defaultBatchMax)
	p.recheckCtx, p.stopRechecks = context.WithCancel(context.Background())
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ProducerBatchMaxBytesFn(func(string) int32 { return p.batchMax.Load() }),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout),
		kgo.ProducerLinger(cfg.Linger),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}, extra...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("msglog: %w", err)
	}
	p.client = client
	reg.MustRegister(p.inflight, p.latency, p.tooLarge)
	return p, nil
}

// EnsureTopic creates the topic if it does not exist.
func (p *Producer) EnsureTopic(ctx context.Context) error {
	return EnsureTopic(ctx, kadm.NewClient(p.client), p.cfg.Topic, p.cfg.Partitions, p.cfg.ReplicationFactor)
}

// EnsureTopic creates topic with the given partitions and replication factor
// unless it exists.
func EnsureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, rf int16) error {
	if partitions <= 0 {
		partitions = 1
	}
	if rf <= 0 {
		rf = 1
	}
	resp, err := adm.CreateTopic(ctx, partitions, rf, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// recordOverhead bounds what a message's record adds to its body: the
// MessageRecord envelope (ids, username, client_msg_id, epoch, times, at
// most a few hundred bytes) and Kafka's batch and record headers.
const recordOverhead = 4 << 10

// CheckRecordLimit reads the topic's max.message.bytes, the largest record
// batch the broker takes. It returns an error naming it when a message with
// a body of maxBody bytes might not fit: Kafka would refuse such a record
// only when it is sent, after the message went live, so the message would be
// withdrawn and its sender told to retry, which could never succeed.
// Otherwise the producer's batches are capped at the topic's limit (the
// broker refuses a whole batch above it, small records with it). Where the
// limit may not be read (no DescribeConfigs permission) it logs a warning
// and keeps franz-go's default batch limit.
//
// It must run before the first Append: franz-go fixes a partition's batch
// limit when it first produces to it.
func (p *Producer) CheckRecordLimit(ctx context.Context, maxBody int) error {
	limit, err := topicRecordLimit(ctx, kadm.NewClient(p.client), p.cfg.Topic)
	switch {
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		p.log.Warn("cannot read the topic's max.message.bytes; large messages may be refused by Kafka after they went live",
			"topic", p.cfg.Topic, "err", err)
		return nil
	case err != nil:
		return err
	case limit == 0:
		p.log.Warn("the broker did not report the topic's max.message.bytes", "topic", p.cfg.Topic)
		return nil
	}
	if need := maxBody + recordOverhead; limit < need {
		return fmt.Errorf("topic %s (Kafka) takes record batches of at most %d bytes (max.message.bytes), but a message with the largest body allowed (--max-message-bytes %d) needs up to %d: raise the topic's max.message.bytes or lower --max-message-bytes",
			p.cfg.Topic, limit, maxBody, need)
	}
	p.batchMax.Store(int32(min(limit, defaultBatchMax)))
	return nil
}

// topicRecordLimit returns the topic's max.message.bytes (0 if the broker
// does not report it). A topic created a moment ago may be unknown to the
// broker that answers for a few hundred milliseconds: that is retried for
// up to 5 s.
func topicRecordLimit(ctx context.Context, adm *kadm.Client, topic string) (int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		var rc kadm.ResourceConfig
		if err == nil {
			rc, err = rcs.On(topic, nil)
		}
		if err == nil {
			err = rc.Err
		}
		if errors.Is(err, kerr.UnknownTopicOrPartition) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("describe topic %s: %w", topic, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("describe topic %s: %w", topic, err)
		}
		for _, c := range rc.Configs {
			if c.Key != "max.message.bytes" || c.Value == nil {
				continue
			}
			limit, err := strconv.Atoi(*c.Value)
			if err != nil {
				return 0, fmt.Errorf("topic %s: max.message.bytes %q is not a number", topic, *c.Value)
			}
			return limit, nil
		}
		return 0, nil
	}
}

// Ping checks that a broker answers.
func (p *Producer) Ping(ctx context.Context) error { return p.client.Ping(ctx) }

// Append produces m and calls done once Kafka acknowledged it (nil) or it
// failed (after DeliveryTimeout at the latest). done runs on the producer's
// goroutine and must not block.
func (p *Producer) Append(ctx context.Context, m *parleyv1.Message, done func(error)) {
	value, err := proto.Marshal(&eventsv1.MessageRecord{Message: m})
	if err != nil {
		done(err)
		return
	}
	start := time.Now()
	p.inflight.Inc()
	p.client.Produce(ctx, &kgo.Record{Key: []byte(m.RoomId), Value: value}, func(_ *kgo.Record, err error) {
		p.inflight.Dec()
		res := "ok"
		if err != nil {
			res = "error"
		}
		p.latency.WithLabelValues(res).Observe(time.Since(start).Seconds())
		if errors.Is(err, kerr.MessageTooLarge) {
			p.tooLarge.Inc()
			p.recheckLimit(err, len(value))
		}
		done(err)
	})
}

// recheckLimit reads the topic's max.message.bytes again in the background
// (unless a recheck runs or ran less than recheckEvery ago) and logs at
// Error what it found, with refused, the error of a record Kafka (or
// franz-go, for a record over the batch limit by itself) refused as too
// large. The usual cause: the topic's limit was lowered below the batches
// this producer makes, which CheckRecordLimit fixed at start. Every message
// in such a batch fails (its sender is told to retry), until the limit is
// raised again or the servers restart, when CheckRecordLimit caps the
// batches at the new limit or refuses to start if the body limit no longer
// fits. Nothing starts once Close began.
func (p *Producer) recheckLimit(refused error, recordBytes int) {
	now := time.Now().UnixNano()
	last := p.lastCheck.Load()
	if now-last < int64(recheckEvery) || !p.lastCheck.CompareAndSwap(last, now) {
		return
	}
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closing {
		return
	}
	p.rechecks.Add(1)
	go func() {
		defer p.rechecks.Done()
		ctx, cancel := context.WithTimeout(p.recheckCtx, 10*time.Second)
		defer cancel()
		batchMax := int(p.batchMax.Load())
		attrs := []any{"topic", p.cfg.Topic, "refused", refused, "record_bytes", recordBytes, "batch_limit", batchMax}
		limit, err := topicRecordLimit(ctx, kadm.NewClient(p.client), p.cfg.Topic)
		switch {
		case p.recheckCtx.Err() != nil:
			return // Close: the client is going away
		case err != nil:
			p.log.Error("Kafka refused a record as too large, and the topic's max.message.bytes could not be read again: messages in such batches fail (their senders retry) until the limit is raised over the batches this server makes",
				append(attrs, "read_err", err)...)
		case limit > 0 && limit < batchMax:
			p.log.Error("Kafka refused a record as too large: the topic's max.message.bytes is now below the batches this server makes, and messages in such batches fail (their senders retry) until it is raised again or the servers restart (which caps their batches at it, or refuses to start if --max-message-bytes no longer fits)",
				append(attrs, "max_message_bytes_now", limit)...)
		default:
			p.log.Error("Kafka refused a record as too large, though the topic's max.message.bytes (read again now) takes the batches this server makes: the limit may have been raised since, or a broker has another one",
				append(attrs, "max_message_bytes_now", limit)...)
		}
	}()
}

// Close flushes buffered records (bounded by ctx) and closes the client.
func (p *Producer) Close(ctx context.Context) {
	if err := p.client.Flush(ctx); err != nil {
		p.log.Warn("kafka flush at shutdown incomplete", "err", err)
	}
	p.closeMu.Lock()
	p.closing = true
	p.closeMu.Unlock()
	p.stopRechecks()
	p.rechecks.Wait()
	p.client.Close()
}
