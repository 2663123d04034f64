package msglog_test

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/testenv"
	"github.com/parleychat/parley/server/msglog"
)

// producer returns a producer on topic (created with max.message.bytes
// limit, or the broker's default when limit is empty) that lingers long
// enough to put several records in one batch.
func producer(t *testing.T, topic, limit string) *msglog.Producer {
	t.Helper()
	brokers := testenv.KafkaBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	t.Cleanup(func() {
		_, _ = adm.DeleteTopics(context.Background(), topic)
		cl.Close()
	})
	if limit != "" {
		if resp, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &limit}, topic); err != nil || resp.Err != nil {
			t.Fatalf("create %s: %v %v", topic, err, resp.Err)
		}
	}
	p, err := msglog.New(msglog.Config{Brokers: brokers, Topic: topic, Partitions: 1, DeliveryTimeout: 10 * time.Second, Linger: 200 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	if err := p.EnsureTopic(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// A topic whose max.message.bytes cannot take a message with the largest
// body allowed is refused with an error naming both limits, on the real
// broker; Kafka's default takes the highest body limit the server accepts.
func TestCheckRecordLimit(t *testing.T) {
	ctx := context.Background()
	small := producer(t, testenv.Name(t)+"-small", "10000")
	err := small.CheckRecordLimit(ctx, 8192)
	if err == nil || !strings.Contains(err.Error(), "max.message.bytes") || !strings.Contains(err.Error(), "10000") {
		t.Fatalf("8 KiB bodies on a 10,000-byte topic: %v, want an error naming max.message.bytes and 10000", err)
	}
	if err := small.CheckRecordLimit(ctx, 4096); err != nil {
		t.Errorf("4 KiB bodies on a 10,000-byte topic: %v", err)
	}
	if err := producer(t, testenv.Name(t)+"-default", "").CheckRecordLimit(ctx, 512<<10); err != nil {
		t.Errorf("512 KiB bodies on a topic with Kafka's default: %v", err)
	}
}

// The broker refuses a whole batch above the topic's limit. After the check
// the producer's batches stay under it: three 8,000-byte records sent
// together on a 10,000-byte topic are all acknowledged (in one batch they
// were all refused; the bodies are random letters, so that compression
// does not shrink the batch under the limit).
func TestBatchesStayUnderTheTopicsLimit(t *testing.T) {
	ctx := context.Background()
	p := producer(t, testenv.Name(t), "10000")
	if err := p.CheckRecordLimit(ctx, 4096); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		p.Append(ctx, &parleyv1.Message{MessageId: "m" + string(rune('a'+i)), RoomId: "r", Seq: int64(i + 1), Body: randomLetters(8000)},
			func(err error) { errs[i] = err; wg.Done() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("record %d: %v", i, err)
		}
	}
}

func randomLetters(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + rand.IntN(26))
	}
	return string(b)
}
