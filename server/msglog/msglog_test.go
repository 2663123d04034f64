package msglog_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
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

// A topic's max.message.bytes lowered while the server runs: Kafka refuses
// the batches over it, each such record fails with kerr.MessageTooLarge (its
// sender is told to retry), and the producer reads the limit again and
// logs it as an error, once per recheck period, with a metric.
func TestLimitLoweredAtRuntimeIsLogged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := testenv.Name(t)
	brokers := testenv.KafkaBrokers(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic); cl.Close() })
	limit := "20000"
	if resp, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &limit}, topic); err != nil || resp.Err != nil {
		t.Fatalf("create %s: %v %v", topic, err, resp.Err)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	p, err := msglog.New(msglog.Config{Brokers: brokers, Topic: topic, Partitions: 1, DeliveryTimeout: 10 * time.Second},
		slog.New(slog.NewTextHandler(logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	closeP := sync.OnceFunc(func() { p.Close(context.Background()) })
	defer closeP()
	if err := p.CheckRecordLimit(ctx, 8192); err != nil {
		t.Fatal(err)
	}
	append1 := func(body string) error {
		errc := make(chan error, 1)
		p.Append(ctx, &parleyv1.Message{MessageId: "m", RoomId: "r", Seq: 1, Body: body}, func(err error) { errc <- err })
		return <-errc
	}
	if err := append1(randomLetters(12000)); err != nil {
		t.Fatalf("a 12,000-byte body under a 20,000-byte limit: %v", err)
	}
	low := "6000"
	if resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &low}}, topic); err != nil || len(resp) != 1 || resp[0].Err != nil {
		t.Fatalf("lower %s's max.message.bytes: %v %v", topic, err, resp)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := append1(randomLetters(12000))
		if errors.Is(err, kerr.MessageTooLarge) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a 12,000-byte body after the limit went down to 6,000: %v, want MESSAGE_TOO_LARGE", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = append1(randomLetters(12000)) // a second refusal within the recheck period: no second log line
	for !strings.Contains(logs.String(), "max_message_bytes_now=6000") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged with the new limit:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := append1(randomLetters(1000)); err != nil {
		t.Errorf("a 1,000-byte body under the new limit: %v", err)
	}
	closeP() // waits for the recheck
	if n := strings.Count(logs.String(), "refused a record as too large"); n != 1 {
		t.Errorf("%d error lines about the limit, want 1 (one recheck per period):\n%s", n, logs.String())
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "parley_kafka_records_too_large_total" && mf.GetMetric()[0].GetCounter().GetValue() < 2 {
			t.Errorf("records_too_large_total = %v, want at least 2", mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
}
