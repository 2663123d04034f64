package persister

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults applied by Config.WithDefaults to zero fields.
const (
	DefaultTopic           = "parley.messages"
	DefaultDLQTopic        = "parley.messages.dlq"
	DefaultGroup           = "parley-persister"
	DefaultMaxBatch        = 500
	DefaultRetryBackoffMin = 100 * time.Millisecond
	DefaultRetryBackoffMax = 10 * time.Second
	DefaultWriteTimeout    = 30 * time.Second
	DefaultPartitions      = 12
	DefaultFetchMaxWait    = 50 * time.Millisecond
	DefaultFetchMinBytes   = 1 << 20
	// DefaultReplicationFactor -1 is the broker's default.replication.factor.
	DefaultReplicationFactor = -1
)

// Bounds of the fetch settings. franz-go refuses a FetchMaxWait under 10 ms.
// A fetch returns at most 1 MiB of a partition (franz-go's default
// FetchMaxPartitionBytes), so a FetchMinBytes above that could never be met
// by one partition's backlog and every fetch of a drain would wait
// FetchMaxWait.
const (
	MinFetchMaxWait  = 10 * time.Millisecond
	MaxFetchMaxWait  = 5 * time.Second
	MaxFetchMinBytes = 1 << 20
)

// Config configures a Persister. Zero fields take the defaults above; Brokers
// has none.
type Config struct {
	// Brokers are the Kafka seed brokers (host:port). Required.
	Brokers []string
	// Topic is the topic of MessageRecord records, keyed by room id.
	Topic string
	// DLQTopic receives records that can never be written.
	DLQTopic string
	// Group is the consumer group id shared by all persister replicas.
	Group string
	// MaxBatch is the maximum number of records per Writer call.
	MaxBatch int
	// RetryBackoffMin and RetryBackoffMax bound the exponential backoff
	// (with jitter) between attempts of a failed write or DLQ produce.
	RetryBackoffMin time.Duration
	RetryBackoffMax time.Duration
	// WriteTimeout bounds one Writer call or DLQ produce; it also bounds
	// how long shutdown and partition revocation wait for a batch in
	// flight.
	WriteTimeout time.Duration
	// Partitions and ReplicationFactor are used to create Topic and
	// DLQTopic when they do not exist; -1 means the broker's default.
	// Existing topics are left as they are.
	Partitions        int32
	ReplicationFactor int16
	// FetchMaxWait bounds how long the broker holds a fetch that has less
	// than FetchMinBytes of new data (MinFetchMaxWait..MaxFetchMaxWait). A
	// partition whose queue is full is paused and resumed once its worker
	// caught up; the resumed partition is fetched only after the fetch in
	// flight returns, so with franz-go's default (5s) a backlog is drained
	// in bursts separated by seconds of idling.
	FetchMaxWait time.Duration
	// FetchMinBytes is how much new data the broker waits for (up to
	// FetchMaxWait) before it answers a fetch (1..MaxFetchMinBytes). With 1
	// it answers at once, and under a steady trickle each fetch brings a
	// record or two per partition, each batch becoming its own store write;
	// the default (1 MiB: under a chat load a fetch returns every
	// FetchMaxWait with everything that came in) cut the persister's and
	// the store's CPU by a third under fanout-v1 (docs/PERFORMANCE.md,
	// item 14), for up to FetchMaxWait more store delay. A backlog of 1 MiB
	// or more is fetched without waiting.
	FetchMinBytes int32
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.DLQTopic == "" {
		c.DLQTopic = DefaultDLQTopic
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.RetryBackoffMin == 0 {
		c.RetryBackoffMin = DefaultRetryBackoffMin
	}
	if c.RetryBackoffMax == 0 {
		c.RetryBackoffMax = max(DefaultRetryBackoffMax, c.RetryBackoffMin)
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.FetchMaxWait == 0 {
		c.FetchMaxWait = DefaultFetchMaxWait
	}
	if c.FetchMinBytes == 0 {
		c.FetchMinBytes = DefaultFetchMinBytes
	}
	return c
}

// Validate reports the first invalid field of c after defaults, naming it.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("persister: Config.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(c.Brokers) == 0 {
		bad("Brokers", "at least one seed broker is required")
	}
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			bad("Brokers", "entry %d is empty", i)
		}
	}
	if c.DLQTopic == c.Topic {
		bad("DLQTopic", "must differ from Topic %q", c.Topic)
	}
	if c.MaxBatch < 0 {
		bad("MaxBatch", "%d is negative", c.MaxBatch)
	}
	if c.RetryBackoffMin < 0 {
		bad("RetryBackoffMin", "%v is negative", c.RetryBackoffMin)
	}
	if c.RetryBackoffMax < c.RetryBackoffMin {
		bad("RetryBackoffMax", "%v is below RetryBackoffMin %v", c.RetryBackoffMax, c.RetryBackoffMin)
	}
	if c.WriteTimeout < 0 {
		bad("WriteTimeout", "%v is negative", c.WriteTimeout)
	}
	if c.Partitions < -1 {
		bad("Partitions", "%d: want a positive count or -1", c.Partitions)
	}
	if c.FetchMaxWait < MinFetchMaxWait || c.FetchMaxWait > MaxFetchMaxWait {
		bad("FetchMaxWait", "%v is outside %v..%v", c.FetchMaxWait, MinFetchMaxWait, MaxFetchMaxWait)
	}
	if c.FetchMinBytes < 0 || c.FetchMinBytes > MaxFetchMinBytes {
		bad("FetchMinBytes", "%d is outside 1..%d", c.FetchMinBytes, MaxFetchMinBytes)
	}
	if c.ReplicationFactor < -1 {
		bad("ReplicationFactor", "%d: want a positive factor or -1", c.ReplicationFactor)
	}
	return errors.Join(errs...)
}
