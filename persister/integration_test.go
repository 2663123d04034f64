package persister_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/msgstore"
	"github.com/parleychat/parley/internal/testenv"
	"github.com/parleychat/parley/persister"
)

// TestIntegration runs the persister against the real Kafka and the real
// MongoDB-protocol store (FerretDB here), on a topic, group and database of
// its own: a first member is stopped mid-stream, a second one finishes, with
// redelivered duplicates and a dead letter on the way.
func TestIntegration(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	uri := testenv.MongoURI(t)
	name := testenv.Name(t)
	topic, dlq, group := name, name+"_dlq", name+"_g"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)

	mc, err := mongo.Connect(options.Client().ApplyURI(uri).SetTimeout(30 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Disconnect(context.Background()) })
	db := mc.Database(name)
	t.Cleanup(func() { _ = db.Drop(context.Background()) })
	store := msgstore.New(db, msgstore.Options{})
	if err := store.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}

	kcl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kcl.Close)
	adm := kadm.NewClient(kcl)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.DeleteGroup(ctx, group)
		_, _ = adm.DeleteTopics(ctx, topic, dlq)
	})

	cfg := persister.Config{
		Brokers:           brokers,
		Topic:             topic,
		DLQTopic:          dlq,
		Group:             group,
		MaxBatch:          200,
		RetryBackoffMin:   10 * time.Millisecond,
		RetryBackoffMax:   time.Second,
		Partitions:        4,
		ReplicationFactor: 1,
	}
	start := func() (stop func() error) {
		p, err := persister.New(cfg, store, nil, nil,
			kgo.HeartbeatInterval(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(rctx) }()
		stopped := false
		var runErr error
		stop = func() error {
			if !stopped {
				stopped = true
				rcancel()
				runErr = <-done
			}
			return runErr
		}
		t.Cleanup(func() { _ = stop() })
		return stop
	}
	count := func() int64 {
		// Messages only: the block markers have seq 0.
		n, err := store.Collection().CountDocuments(ctx, bson.D{{Key: "seq", Value: bson.D{{Key: "$gt", Value: 0}}}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	const n, rooms = 3000, 20
	msgs := make([]*parleyv1.Message, n)
	recs := make([]*kgo.Record, n)
	seq := make([]int64, rooms)
	for i := range msgs {
		r := i % rooms
		seq[r]++
		msgs[i] = &parleyv1.Message{
			MessageId: fmt.Sprintf("%s-%05d", name, i), RoomId: fmt.Sprintf("room-%02d", r), Epoch: "e",
			Seq: seq[r], SenderId: "u", SenderUsername: "bob", ClientMsgId: fmt.Sprint(i), Body: fmt.Sprint("body ", i),
			CreateTime: timestamppb.New(time.UnixMilli(1_800_000_000_000 + int64(i))),
		}
		v, err := proto.Marshal(&eventsv1.MessageRecord{Message: msgs[i]})
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(msgs[i].GetRoomId()), Value: v}
	}
	produce := func(rs ...*kgo.Record) {
		t.Helper()
		if err := kcl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}

	stop1 := start()
	waitFor("topics created", func() bool {
		td, err := adm.ListTopics(ctx, topic, dlq)
		return err == nil && td.Has(topic) && td.Has(dlq) && td[topic].Err == nil && td[dlq].Err == nil
	})
	produce(recs[:n/2]...)
	waitFor("part of the first half stored", func() bool { return count() >= n/8 })
	if err := stop1(); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	t.Logf("first persister stored %d messages", count())

	stop2 := start()
	produce(recs[n/2:]...)
	produce(recs[:100]...) // redelivered duplicates
	produce(&kgo.Record{Topic: topic, Key: []byte("room-00"), Value: []byte("not protobuf \xff\xff")})
	waitFor("every message stored", func() bool { return count() == n })
	if err := stop2(); err != nil {
		t.Fatalf("second Run: %v", err)
	}

	for r := range rooms {
		room := fmt.Sprintf("room-%02d", r)
		got, err := store.List(ctx, room, 0, 0, n)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) != seq[r] {
			t.Errorf("%s: %d messages, want %d", room, len(got), seq[r])
			continue
		}
		for i, m := range got {
			want := msgs[(int(seq[r])-1-i)*rooms+r]
			if !proto.Equal(m, want) {
				t.Errorf("%s: message %d = %v, want %v", room, i, m, want)
				break
			}
		}
		if mx, err := store.MaxSeq(ctx, room); err != nil || mx != seq[r] {
			t.Errorf("MaxSeq(%s) = %d, %v; want %d", room, mx, err, seq[r])
		}
	}

	dc, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(dlq), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dc.Close)
	var dead []*kgo.Record
	for len(dead) < 1 && ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		dead = append(dead, dc.PollFetches(pctx).Records()...)
		pcancel()
	}
	if len(dead) != 1 {
		t.Fatalf("DLQ has %d records, want 1", len(dead))
	}
	reason := ""
	for _, h := range dead[0].Headers {
		if h.Key == "reason" {
			reason = string(h.Value)
		}
	}
	if reason != persister.ReasonUndecodable {
		t.Errorf("DLQ reason %q, want %q", reason, persister.ReasonUndecodable)
	}
}
