package persister

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := Config{Brokers: []string{"127.0.0.1:9092"}}
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring; "" = valid
	}{
		{name: "defaults", mutate: func(*Config) {}},
		{name: "no brokers", mutate: func(c *Config) { c.Brokers = nil }, wantErr: "Config.Brokers"},
		{name: "empty broker", mutate: func(c *Config) { c.Brokers = []string{"a:1", " "} }, wantErr: "Config.Brokers"},
		{name: "dlq is topic", mutate: func(c *Config) { c.DLQTopic = DefaultTopic }, wantErr: "Config.DLQTopic"},
		{name: "negative batch", mutate: func(c *Config) { c.MaxBatch = -1 }, wantErr: "Config.MaxBatch"},
		{name: "negative backoff", mutate: func(c *Config) { c.RetryBackoffMin = -time.Second }, wantErr: "Config.RetryBackoffMin"},
		{name: "max below min", mutate: func(c *Config) {
			c.RetryBackoffMin, c.RetryBackoffMax = time.Second, time.Millisecond
		}, wantErr: "Config.RetryBackoffMax"},
		{name: "min above default max", mutate: func(c *Config) { c.RetryBackoffMin = time.Minute }},
		{name: "negative timeout", mutate: func(c *Config) { c.WriteTimeout = -1 }, wantErr: "Config.WriteTimeout"},
		{name: "broker default partitions", mutate: func(c *Config) { c.Partitions, c.ReplicationFactor = -1, -1 }},
		{name: "bad partitions", mutate: func(c *Config) { c.Partitions = -2 }, wantErr: "Config.Partitions"},
		{name: "bad replication", mutate: func(c *Config) { c.ReplicationFactor = -3 }, wantErr: "Config.ReplicationFactor"},
		{name: "bad fetch max wait", mutate: func(c *Config) { c.FetchMaxWait = -time.Second }, wantErr: "Config.FetchMaxWait"},
		{name: "fetch max wait below franz-go's floor", mutate: func(c *Config) { c.FetchMaxWait = 5 * time.Millisecond }, wantErr: "Config.FetchMaxWait: 5ms is outside 10ms..5s"},
		{name: "bad fetch min bytes", mutate: func(c *Config) { c.FetchMinBytes = -1 }, wantErr: "Config.FetchMinBytes"},
		{name: "fetch min bytes above a partition's fetch", mutate: func(c *Config) { c.FetchMinBytes = MaxFetchMinBytes + 1 }, wantErr: "Config.FetchMinBytes: 1048577 is outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate = %v, want an error naming %s", err, tc.wantErr)
			}
		})
	}
}

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	c := Config{Brokers: []string{"b:1"}}.WithDefaults()
	want := Config{
		Brokers:           []string{"b:1"},
		Topic:             DefaultTopic,
		DLQTopic:          DefaultDLQTopic,
		Group:             DefaultGroup,
		MaxBatch:          DefaultMaxBatch,
		RetryBackoffMin:   DefaultRetryBackoffMin,
		RetryBackoffMax:   DefaultRetryBackoffMax,
		WriteTimeout:      DefaultWriteTimeout,
		Partitions:        DefaultPartitions,
		ReplicationFactor: DefaultReplicationFactor,
		FetchMaxWait:      DefaultFetchMaxWait,
		FetchMinBytes:     DefaultFetchMinBytes,
	}
	if c.Topic != want.Topic || c.DLQTopic != want.DLQTopic || c.Group != want.Group ||
		c.MaxBatch != want.MaxBatch || c.RetryBackoffMin != want.RetryBackoffMin ||
		c.RetryBackoffMax != want.RetryBackoffMax || c.WriteTimeout != want.WriteTimeout ||
		c.Partitions != want.Partitions || c.ReplicationFactor != want.ReplicationFactor ||
		c.FetchMaxWait != want.FetchMaxWait || c.FetchMinBytes != want.FetchMinBytes {
		t.Errorf("WithDefaults = %+v, want %+v", c, want)
	}
}
