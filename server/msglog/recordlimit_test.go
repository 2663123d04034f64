package msglog_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/parleychat/parley/server/msglog"
)

// The paths of CheckRecordLimit the real broker does not take on its own:
// the topic's limit cannot be read or is not reported, and a topic created a
// moment ago is still unknown. franz-go's in-process broker (kfake) answers
// DescribeConfigs as each case needs.

// syncBuffer is a log sink safe for the producer's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeProducer is a producer of topic on a kfake cluster, its log and the
// cluster.
func fakeProducer(t *testing.T, topic string) (*msglog.Producer, *syncBuffer, *kfake.Cluster) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	logs := &syncBuffer{}
	p, err := msglog.New(msglog.Config{Brokers: c.ListenAddrs(), Topic: topic, Partitions: 1, DeliveryTimeout: 10 * time.Second},
		slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p, logs, c
}

// answerDescribeConfigs makes the cluster answer every DescribeConfigs
// request: the i-th with answers[i] (the last one from then on), counting
// them.
func answerDescribeConfigs(c *kfake.Cluster, answers ...func(topic string) kmsg.DescribeConfigsResponseResource) *atomic.Int64 {
	var seen atomic.Int64
	c.ControlKey(int16(kmsg.DescribeConfigs), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		answer := answers[min(int(seen.Add(1)), len(answers))-1]
		dreq := req.(*kmsg.DescribeConfigsRequest)
		resp := dreq.ResponseKind().(*kmsg.DescribeConfigsResponse)
		for _, r := range dreq.Resources {
			resp.Resources = append(resp.Resources, answer(r.ResourceName))
		}
		return resp, nil, true
	})
	return &seen
}

func topicResource(topic string, code int16, configs map[string]string) kmsg.DescribeConfigsResponseResource {
	r := kmsg.NewDescribeConfigsResponseResource()
	r.ResourceType, r.ResourceName, r.ErrorCode = kmsg.ConfigResourceTypeTopic, topic, code
	for k, v := range configs {
		rc := kmsg.NewDescribeConfigsResponseResourceConfig()
		rc.Name, rc.Value = k, &v
		r.Configs = append(r.Configs, rc)
	}
	return r
}

// Without DescribeConfigs permission the server starts, with a warning that
// says what may go wrong.
func TestCheckRecordLimitWithoutPermissionWarns(t *testing.T) {
	p, logs, c := fakeProducer(t, "noperm")
	seen := answerDescribeConfigs(c, func(topic string) kmsg.DescribeConfigsResponseResource {
		return topicResource(topic, kerr.TopicAuthorizationFailed.Code, nil)
	})
	if err := p.CheckRecordLimit(context.Background(), 512<<10); err != nil {
		t.Fatalf("CheckRecordLimit: %v, want a warning and nil", err)
	}
	if seen.Load() != 1 {
		t.Errorf("DescribeConfigs asked %d times, want 1", seen.Load())
	}
	if l := logs.String(); !strings.Contains(l, "cannot read the topic's max.message.bytes") || !strings.Contains(l, "noperm") {
		t.Errorf("log does not warn about the unreadable limit of topic noperm:\n%s", l)
	}
}

// A broker that does not report max.message.bytes: a warning, and the start
// goes on.
func TestCheckRecordLimitNotReportedWarns(t *testing.T) {
	p, logs, c := fakeProducer(t, "silent")
	answerDescribeConfigs(c, func(topic string) kmsg.DescribeConfigsResponseResource {
		return topicResource(topic, 0, map[string]string{"retention.ms": "1000"})
	})
	if err := p.CheckRecordLimit(context.Background(), 512<<10); err != nil {
		t.Fatalf("CheckRecordLimit: %v, want a warning and nil", err)
	}
	if l := logs.String(); !strings.Contains(l, "did not report the topic's max.message.bytes") {
		t.Errorf("log does not warn about the missing limit:\n%s", l)
	}
}

// A topic the answering broker does not know yet (created a moment ago) is
// asked about again until it is known; its limit then counts.
func TestCheckRecordLimitWaitsForANewTopic(t *testing.T) {
	p, _, c := fakeProducer(t, "fresh")
	unknown := func(topic string) kmsg.DescribeConfigsResponseResource {
		return topicResource(topic, kerr.UnknownTopicOrPartition.Code, nil)
	}
	// Then the real answer, with a limit too small for the body: the error
	// proves the limit was read after the retries.
	seen := answerDescribeConfigs(c, unknown, unknown, unknown, func(topic string) kmsg.DescribeConfigsResponseResource {
		return topicResource(topic, 0, map[string]string{"max.message.bytes": "10000"})
	})
	err := p.CheckRecordLimit(context.Background(), 8<<10)
	if err == nil || !strings.Contains(err.Error(), "at most 10000 bytes") {
		t.Fatalf("CheckRecordLimit = %v, want the 10000-byte limit refused", err)
	}
	if seen.Load() != 4 {
		t.Errorf("DescribeConfigs asked %d times, want 4 (three unknown, then known)", seen.Load())
	}
}

// A caller that gives up while the topic is still unknown gets an error
// naming the topic, not a hang.
func TestCheckRecordLimitGivesUpWithItsContext(t *testing.T) {
	p, _, c := fakeProducer(t, "never")
	answerDescribeConfigs(c, func(topic string) kmsg.DescribeConfigsResponseResource {
		return topicResource(topic, kerr.UnknownTopicOrPartition.Code, nil)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.CheckRecordLimit(ctx, 512<<10)
	if err == nil || !strings.Contains(err.Error(), "never") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CheckRecordLimit = %v, want the context's deadline, naming topic never", err)
	}
	// Its own limit on the wait is 5 s: the caller's 0.5 s must end it first.
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("CheckRecordLimit returned after %s, not when its context ended", d.Round(time.Millisecond))
	}
}
