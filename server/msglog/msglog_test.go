package msglog_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/testenv"
	"github.com/parleychat/parley/server/msglog"
)

// A record larger than Kafka takes fails with ErrRecordTooLarge (so the send
// path can tell the sender not to retry it), on the real broker; a record
// that fits is acknowledged by the same producer.
func TestAppendTooLargeIsRecordTooLarge(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t)
	p, err := msglog.New(msglog.Config{Brokers: brokers, Topic: topic, Partitions: 1, DeliveryTimeout: 10 * time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), kgo.ProducerBatchMaxBytes(4096))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
		if err == nil {
			_, _ = kadm.NewClient(cl).DeleteTopics(context.Background(), topic)
			cl.Close()
		}
	})
	defer p.Close(ctx)
	if err := p.EnsureTopic(ctx); err != nil {
		t.Fatal(err)
	}
	appendSync := func(body string) error {
		done := make(chan error, 1)
		p.Append(ctx, &parleyv1.Message{MessageId: "m", RoomId: "r", Seq: 1, Body: body}, func(err error) { done <- err })
		return <-done
	}
	err = appendSync(strings.Repeat("b", 8000))
	if !errors.Is(err, msglog.ErrRecordTooLarge) || !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("8,000-byte record with a 4,096-byte batch limit: %v, want ErrRecordTooLarge wrapping MESSAGE_TOO_LARGE", err)
	}
	if err := appendSync("small"); err != nil {
		t.Fatalf("small record: %v", err)
	}
}
