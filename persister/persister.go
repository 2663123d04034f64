package persister

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Writer stores messages idempotently by message_id. *msgstore.Store
// implements it.
//
// InsertMessages must be safe for concurrent use (one call per partition at a
// time, several partitions at once). A nil error means every message is now
// stored: inserted newly plus duplicates already there. A non-nil error makes
// the persister retry the whole call after a backoff, unless the error (or
// one it wraps) has the method
//
//	RejectedMessageIDs() []string
//
// in which case every message except the named ones is stored and the named
// ones never can be: they go to the DLQ with reason seq_conflict and the batch
// is committed (*msgstore.ConflictError is such an error).
type Writer interface {
	InsertMessages(ctx context.Context, msgs []*parleyv1.Message) (inserted, duplicates int, err error)
}

// validator is the optional capability of a Writer that cannot store some
// messages a record may hold (*msgstore.Store: ids starting with "~", the
// prefix of its block markers): the persister asks it about each decoded
// message and dead-letters the ones it refuses (reason invalid) instead of
// retrying their batch forever.
type validator interface {
	Validate(m *parleyv1.Message) error
}

// rejecter is the optional capability of a Writer error; see Writer.
type rejecter interface {
	RejectedMessageIDs() []string
}

// Persister is one member of the persister consumer group. Build it with New
// and start it with Run, once.
type Persister struct {
	cfg       Config
	w         Writer
	log       *slog.Logger
	m         *metrics
	extraOpts []kgo.Opt
	started   atomic.Bool

	// workerCtx parents every partition worker's context; it is not
	// cancelled when Run's context is, so a batch in flight can finish.
	workerCtx context.Context

	mu      sync.Mutex
	workers map[int32]*partitionWorker
}

// New returns a Persister that writes through w. cfg is completed with
// defaults and validated. A nil logger discards logs; a nil reg registers no
// metrics (collectors already registered on reg by an earlier Persister are
// shared). extraOpts are appended to the options of every Kafka client the
// Persister makes (TLS, SASL, kgo.WithLogger, timeouts...); they must not
// change the consumed topics or the group.
func New(cfg Config, w Writer, logger *slog.Logger, reg prometheus.Registerer, extraOpts ...kgo.Opt) (*Persister, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if w == nil {
		return nil, errors.New("persister: nil Writer")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("persister: register metrics: %w", err)
	}
	return &Persister{
		cfg:       cfg,
		w:         w,
		log:       logger.With("topic", cfg.Topic, "group", cfg.Group),
		m:         m,
		extraOpts: extraOpts,
		workers:   make(map[int32]*partitionWorker),
	}, nil
}

// Run consumes until ctx is cancelled, then shuts down gracefully: it stops
// polling, waits for each partition worker's batch in flight, commits the
// offsets of everything written, leaves the group and closes the client. It
// returns nil after a clean shutdown (also when ctx is cancelled while it is
// still ensuring the topics), or an error if the topics could not be ensured
// (brokers unreachable until kgo's request retries gave up, topic creation
// refused), the client could not be built, or the final commit failed. Run
// may be called only once.
func (p *Persister) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("persister: Run called twice")
	}
	if err := p.ensureTopics(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // cancelled while starting: nothing consumed, nothing to commit
		}
		return err
	}

	workerCtx, cancelWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWorkers()
	p.workerCtx = workerCtx

	opts := []kgo.Opt{
		kgo.SeedBrokers(p.cfg.Brokers...),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topic),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.revoked),
		kgo.OnPartitionsLost(p.lost),
		kgo.AutoCommitMarks(),
		kgo.BlockRebalanceOnPoll(),
		// Never skip: after a data-loss reset, re-read what is left.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(p.cfg.FetchMaxWait),
		kgo.FetchMinBytes(p.cfg.FetchMinBytes),
	}
	cl, err := kgo.NewClient(append(opts, p.extraOpts...)...)
	if err != nil {
		return fmt.Errorf("persister: kafka client: %w", err)
	}
	p.log.Info("persister started", "brokers", p.cfg.Brokers, "max_batch", p.cfg.MaxBatch)

	p.poll(ctx, cl)

	// Graceful stop: workers finish their batch in flight, then commit.
	p.stopWorkers(p.takeAllWorkers(), false)
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.WriteTimeout)
	commitErr := cl.CommitMarkedOffsets(commitCtx)
	cancel()
	if commitErr != nil {
		p.log.Error("final offset commit failed", "err", commitErr)
	}
	cl.Close() // leaves the group; revoked() runs for what is still assigned
	p.stopWorkers(p.takeAllWorkers(), true)
	p.log.Info("persister stopped")
	if commitErr != nil {
		return fmt.Errorf("persister: final commit: %w", commitErr)
	}
	return nil
}

// ensureTopics creates Topic and DLQTopic unless they exist.
func (p *Persister) ensureTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(p.cfg.Brokers...)}, p.extraOpts...)...)
	if err != nil {
		return fmt.Errorf("persister: kafka admin client: %w", err)
	}
	defer cl.Close()
	resps, err := kadm.NewClient(cl).CreateTopics(ctx, p.cfg.Partitions, p.cfg.ReplicationFactor, nil, p.cfg.Topic, p.cfg.DLQTopic)
	if err != nil {
		return fmt.Errorf("persister: create topics: %w", err)
	}
	for _, topic := range []string{p.cfg.Topic, p.cfg.DLQTopic} {
		r, ok := resps[topic]
		switch {
		case !ok:
			return fmt.Errorf("persister: create topic %s: no response", topic)
		case r.Err == nil:
			p.log.Info("created topic", "created_topic", topic, "partitions", r.NumPartitions, "replication_factor", r.ReplicationFactor)
		case errors.Is(r.Err, kerr.TopicAlreadyExists):
		default:
			return fmt.Errorf("persister: create topic %s: %w (%s)", topic, r.Err, r.ErrMessage)
		}
	}
	return nil
}

// poll hands fetched records to the partition workers until ctx is done or
// the client is closed. With BlockRebalanceOnPoll, no rebalance callback runs
// between a poll and AllowRebalance, so every polled partition has a worker.
func (p *Persister) poll(ctx context.Context, cl *kgo.Client) {
	pollMax := max(4*p.cfg.MaxBatch, 1000)
	for {
		fetches := cl.PollRecords(ctx, pollMax)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			// Records polled but not handed over are not marked:
			// they are redelivered.
			cl.AllowRebalance()
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			p.log.Warn("fetch error", "fetch_topic", topic, "partition", partition, "err", err)
		})
		p.mu.Lock()
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) == 0 || ftp.Topic != p.cfg.Topic {
				return
			}
			w := p.workers[ftp.Partition]
			if w == nil {
				// Unreachable with BlockRebalanceOnPoll; the
				// records are not marked, so nothing is lost.
				p.log.Error("records for a partition without worker", "partition", ftp.Partition, "offset", ftp.Records[0].Offset)
				return
			}
			w.enqueue(ftp)
		})
		p.mu.Unlock()
		cl.AllowRebalance()
	}
}

func (p *Persister) assigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, partition := range assigned[p.cfg.Topic] {
		if _, ok := p.workers[partition]; ok {
			continue
		}
		w := newPartitionWorker(p, cl, partition)
		p.workers[partition] = w
		go w.run()
	}
	p.log.Info("partitions assigned", "partitions", assigned[p.cfg.Topic])
}

func (p *Persister) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	p.stopWorkers(p.takeWorkers(revoked[p.cfg.Topic]), false)
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		p.log.Warn("commit on revoke failed", "err", err)
	}
	if len(revoked[p.cfg.Topic]) > 0 {
		p.log.Info("partitions revoked", "partitions", revoked[p.cfg.Topic])
	}
}

func (p *Persister) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	// Lost partitions cannot be committed; their new owner redoes the
	// uncommitted records, which the Writer treats as duplicates.
	p.stopWorkers(p.takeWorkers(lost[p.cfg.Topic]), true)
	p.log.Warn("partitions lost", "partitions", lost[p.cfg.Topic])
}

// takeAllWorkers removes every worker from the map and returns them.
func (p *Persister) takeAllWorkers() []*partitionWorker {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*partitionWorker, 0, len(p.workers))
	for partition, w := range p.workers {
		out = append(out, w)
		delete(p.workers, partition)
	}
	return out
}

// takeWorkers removes the workers of partitions from the map and returns
// them.
func (p *Persister) takeWorkers(partitions []int32) []*partitionWorker {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*partitionWorker
	for _, partition := range partitions {
		if w, ok := p.workers[partition]; ok {
			out = append(out, w)
			delete(p.workers, partition)
		}
	}
	return out
}

// stopWorkers stops ws concurrently and waits for them. Graceful (hard ==
// false) lets each finish the batch it is writing; hard abandons it.
func (p *Persister) stopWorkers(ws []*partitionWorker, hard bool) {
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.stop(hard) })
	}
	wg.Wait()
}
