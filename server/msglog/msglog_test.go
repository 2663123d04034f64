package msglog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parleychat/parley/internal/testenv"
	"github.com/parleychat/parley/server/msglog"
)

// A topic whose max.message.bytes cannot take a message with the largest
// body allowed is refused with an error naming both limits, on the real
// broker; a topic with Kafka's default (about 1 MB) takes the highest body
// limit the server accepts.
func TestCheckRecordLimit(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	small, dflt := testenv.Name(t)+"-small", testenv.Name(t)+"-default"
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), small, dflt) })
	limit := "10000"
	if resp, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &limit}, small); err != nil || resp.Err != nil {
		t.Fatalf("create %s: %v %v", small, err, resp.Err)
	}
	if err := msglog.EnsureTopic(ctx, adm, dflt, 1, 1); err != nil {
		t.Fatal(err)
	}

	err = msglog.CheckRecordLimit(ctx, adm, small, 8192)
	if err == nil || !strings.Contains(err.Error(), "max.message.bytes") || !strings.Contains(err.Error(), "10000") {
		t.Fatalf("8 KiB bodies on a 10,000-byte topic: %v, want an error naming max.message.bytes and 10000", err)
	}
	if err := msglog.CheckRecordLimit(ctx, adm, small, 4096); err != nil {
		t.Errorf("4 KiB bodies on a 10,000-byte topic: %v", err)
	}
	if err := msglog.CheckRecordLimit(ctx, adm, dflt, 512<<10); err != nil {
		t.Errorf("512 KiB bodies on a topic with Kafka's default: %v", err)
	}
	if err := msglog.CheckRecordLimit(ctx, adm, testenv.Name(t)+"-missing", 4096); err == nil {
		t.Error("a topic that does not exist passed")
	}
}
