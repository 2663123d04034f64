package persister

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// DLQ reasons: the values of the "reason" header and metric label.
const (
	ReasonUndecodable = "undecodable"
	ReasonInvalid     = "invalid"
	ReasonSeqConflict = "seq_conflict"
)

// metrics are the persister's Prometheus collectors, namespace "parley",
// subsystem "persister".
type metrics struct {
	consumed     prometheus.Counter
	inserted     prometheus.Counter
	duplicates   prometheus.Counter
	dlq          *prometheus.CounterVec // reason
	writeErrors  prometheus.Counter
	batchSize    prometheus.Histogram
	writeLatency prometheus.Histogram
	storeDelay   prometheus.Histogram
	lag          *prometheus.GaugeVec // partition
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "parley", "persister"
	m := &metrics{
		consumed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "records_consumed_total",
			Help: "Kafka records taken from the messages topic for processing (redeliveries included).",
		}),
		inserted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "messages_inserted_total",
			Help: "Messages newly stored by the writer.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "duplicates_total",
			Help: "Messages the writer found already stored (redelivery).",
		}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "dlq_total",
			Help: "Records produced to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "write_errors_total",
			Help: "Failed writer calls and DLQ produces (each is retried).",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "batch_size",
			Help:    "Records per processed batch.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500},
		}),
		writeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "write_latency_seconds",
			Help:    "Duration of one writer call, failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12), // 1ms .. ~60s
		}),
		storeDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "store_delay_seconds",
			Help: "From a record's Kafka timestamp (set by the producer when the server handed it the message, before its send ack) " +
				"to the end of the write that stored it: how long an acknowledged message waits to be in the store. " +
				"Records the store rejects, and batches with records it already had (redeliveries), are not observed.",
			Buckets: prometheus.ExponentialBuckets(0.002, 1.25, 50), // 2ms .. ~112s, 25% apart
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "consumer_lag",
			Help: "Records of the partition after the last written one, as of the last fetch's high watermark.",
		}, []string{"partition"}),
	}
	for _, r := range []string{ReasonUndecodable, ReasonInvalid, ReasonSeqConflict} {
		m.dlq.WithLabelValues(r) // export zeros
	}
	if reg == nil {
		return m, nil
	}
	// A collector already registered (a second Persister on the same
	// registry, e.g. after a restart in one process) is shared.
	register := func(c prometheus.Collector) (prometheus.Collector, error) {
		err := reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector, nil
		}
		return c, err
	}
	var err error
	reuse := func(dst any, c prometheus.Collector) {
		if err != nil {
			return
		}
		var got prometheus.Collector
		got, err = register(c)
		if err != nil {
			return
		}
		switch d := dst.(type) {
		case *prometheus.Counter:
			*d = got.(prometheus.Counter)
		case **prometheus.CounterVec:
			*d = got.(*prometheus.CounterVec)
		case *prometheus.Histogram:
			*d = got.(prometheus.Histogram)
		case **prometheus.GaugeVec:
			*d = got.(*prometheus.GaugeVec)
		}
	}
	reuse(&m.consumed, m.consumed)
	reuse(&m.inserted, m.inserted)
	reuse(&m.duplicates, m.duplicates)
	reuse(&m.dlq, m.dlq)
	reuse(&m.writeErrors, m.writeErrors)
	reuse(&m.batchSize, m.batchSize)
	reuse(&m.writeLatency, m.writeLatency)
	reuse(&m.storeDelay, m.storeDelay)
	reuse(&m.lag, m.lag)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func partitionLabel(p int32) string { return strconv.FormatInt(int64(p), 10) }
