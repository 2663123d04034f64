package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// waitDrained waits until the consumer group has committed every record of
// topic (committed offset == end offset on each partition), that is until the
// persister has stored everything the server acknowledged, or until timeout.
// kfake keeps records in memory only: what is not stored when it stops is
// gone.
func waitDrained(ctx context.Context, brokers []string, topic, group string, timeout time.Duration, log *slog.Logger) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastLog time.Time
	for {
		left, err := groupLag(ctx, adm, topic, group)
		if err == nil && left == 0 {
			log.Info("persister drained: every message in kafka is stored", "topic", topic)
			return nil
		}
		if time.Since(lastLog) >= time.Second {
			lastLog = time.Now()
			if err != nil {
				log.Info("waiting for the persister to drain", "err", err)
			} else {
				log.Info("waiting for the persister to store what is left in kafka", "records_left", left)
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%d record(s) not stored yet", left)
			}
			return fmt.Errorf("persister not drained after %s: %w", timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// groupLag is the number of records of topic after group's committed offsets
// (a partition without commit counts from its start offset).
func groupLag(ctx context.Context, adm *kadm.Client, topic, group string) (int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("start offsets: %w", err)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("committed offsets: %w", err)
	}
	var left int64
	ends.Each(func(end kadm.ListedOffset) {
		at := int64(0)
		if s, ok := starts.Lookup(end.Topic, end.Partition); ok {
			at = s.Offset
		}
		if c, ok := committed.Lookup(end.Topic, end.Partition); ok && c.At > at {
			at = c.At
		}
		if end.Offset > at {
			left += end.Offset - at
		}
	})
	return left, nil
}
