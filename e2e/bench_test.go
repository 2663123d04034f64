package e2e

import (
	"context"
	"encoding/json"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/parleychat/parley/bench"
	"github.com/parleychat/parley/internal/testenv"
)

// TestBenchFanoutSmoke runs fanout-v1 on a tiny configuration, through
// Parley and on Redis alone, and checks the reports are well formed. The
// real figures come from `make bench` (docs/PERFORMANCE.md), never from tests.
func TestBenchFanoutSmoke(t *testing.T) {
	c := newCluster(t, 1)
	reports := map[bool]string{}
	for _, raw := range []bool{false, true} {
		cfg := bench.FanoutConfig{
			Addr: c.servers[0].addr, RedisURL: c.redis, Raw: raw,
			Rooms: 3, Members: 3, Rates: []int{30, 60}, Step: time.Second, Warmup: 200 * time.Millisecond,
			Grace: 3 * time.Second, BodyBytes: 100, Conns: 2, Progress: io.Discard,
			Pids: map[string]int{"server": c.servers[0].cmd.Process.Pid},
		}
		rep, err := bench.RunFanout(context.Background(), cfg)
		if err != nil {
			t.Fatalf("raw=%v: %v", raw, err)
		}
		if len(rep.Steps) != 2 {
			t.Fatalf("raw=%v: %d steps", raw, len(rep.Steps))
		}
		for _, s := range rep.Steps {
			if s.Delivered <= 0 || s.Lost != 0 || s.Dup != 0 || s.P50 <= 0 {
				t.Fatalf("raw=%v: step %+v", raw, s)
			}
		}
		path := filepath.Join(t.TempDir(), "r.json")
		if err := rep.WriteJSON(path); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		var back bench.Report
		if err := json.Unmarshal(b, &back); err != nil || back.Workload != "fanout-v1" || back.Peak != 60 {
			t.Fatalf("raw=%v: report %s: %v", raw, b, err)
		}
		rep.WriteTable(io.Discard)
		checkPNG(t, filepath.Join(t.TempDir(), "r.png"), func(p string) error { return bench.PlotFiles(p, path) })
		reports[raw] = path
	}
	// The Parley report states its peak against the raw ceiling of the run.
	p, err := bench.ReadReport(reports[false])
	if err != nil {
		t.Fatal(err)
	}
	raw, err := bench.ReadReport(reports[true])
	if err != nil {
		t.Fatal(err)
	}
	line, err := p.Compare(raw)
	if err != nil || p.RawCeiling != 60 || p.PeakOfRaw != 1 || !strings.Contains(line, "100.00 %") {
		t.Fatalf("compare: %q, %v (ceiling %d, fraction %v)", line, err, p.RawCeiling, p.PeakOfRaw)
	}
}

// TestBenchPersistSmoke runs persist-v1 on a tiny configuration (2,000
// records into a fresh topic, the persister as a process, the raw loop, then
// the live part against a Parley cluster) and checks the report.
func TestBenchPersistSmoke(t *testing.T) {
	c := newCluster(t, 1)
	// The cluster's persister serves no metrics: replace it by one that
	// does (same group), for the store delay histogram.
	c.pers.stop()
	metrics := freeAddr(t)
	c.start("persister-metrics", "persister",
		"-kafka-brokers", c.brokers, "-topic", c.name, "-dlq-topic", c.name+".dlq", "-group", c.name,
		"-partitions", "4", "-mongo-uri", c.mongoURI, "-database", c.name, "-metrics-addr", metrics,
		"-log-format", "text")
	cfg := bench.PersistConfig{
		Brokers: testenv.KafkaBrokers(t), MongoURI: c.mongoURI, Name: testenv.Name(t),
		Records: 2000, Rooms: 50, Partitions: 4, PersisterBin: parleyBin, Every: time.Second,
		Addr: c.servers[0].addr, PersisterMetrics: "http://" + metrics + "/metrics", LiveRates: []int{60}, ProbeRate: 20, ProbeRooms: 2,
		LiveRooms: 2, LiveMembers: 2, LiveConns: 1, LiveStep: time.Second, LiveWarmup: 200 * time.Millisecond,
		Pids:     map[string]int{"server": c.servers[0].cmd.Process.Pid},
		Progress: io.Discard,
	}
	rep, err := bench.RunPersist(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Preload.Stored != 2000 || rep.Persister.Stored != 2000 || rep.Raw.Stored != 2000 ||
		rep.Persister.RecordsPerS <= 0 || rep.Raw.RecordsPerS <= 0 || rep.Ratio <= 0 || len(rep.Notes) != 0 ||
		rep.Persister.Inserted != 2000 || rep.CheckedRooms == 0 || rep.CheckedDocs == 0 {
		t.Fatalf("report: %+v", rep)
	}
	if _, ok := rep.Persister.CPU["persister"]; !ok {
		t.Fatalf("no persister CPU: %v", rep.Persister.CPU)
	}
	if len(rep.Live) != 1 {
		t.Fatalf("live: %d runs", len(rep.Live))
	}
	l := rep.Live[0]
	if l.SendAck.Count == 0 || l.SendFailed != 0 || l.StoreDelay.Count < l.SendAck.Count || l.StoreDelayNote != "" ||
		l.StoreDelay.P50 <= 0 || l.StoreDelay.P99 < l.StoreDelay.P50 || l.Fanout == nil || len(l.Fanout.Steps) != 1 || l.Fanout.Steps[0].Lost != 0 {
		t.Fatalf("live: %+v", l)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "persist.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	var back bench.PersistReport
	if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &back) != nil || back.Workload != "persist-v1" || back.Live == nil {
		t.Fatalf("report %s: %v", path, err)
	}
	checkPNG(t, filepath.Join(dir, "persist.png"), func(p string) error { return bench.PlotFiles(p, path) })
	rep.WriteTable(io.Discard)
}

// TestBenchConnsSmoke runs conns-v1 with 100 then 200 streams (two users,
// two streams per connection, so several connections) and a short trickle.
func TestBenchConnsSmoke(t *testing.T) {
	c := newCluster(t, 1, "-pprof", "-max-streams-per-user", "100")
	srv := c.servers[0]
	dir := t.TempDir()
	rep, err := bench.RunConns(context.Background(), bench.ConnsConfig{
		Addr: srv.addr, Levels: []int{100, 200}, StreamsPerUser: 100, MembersPerRoom: 10, UsersPerRoom: 2,
		StreamsPerConn: 25, Settle: 100 * time.Millisecond, Idle: 500 * time.Millisecond, Trickle: time.Second,
		TrickleRate: 2, Grace: 3 * time.Second, HeapProfiles: filepath.Join(dir, "heap-"),
		Pids: map[string]int{"server": srv.cmd.Process.Pid}, Progress: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Levels) != 2 || rep.Baseline.RSSMB <= 0 || rep.Baseline.HeapInuseMB <= 0 {
		t.Fatalf("report: %+v", rep)
	}
	for i, l := range rep.Levels {
		tr := l.Trickle
		if l.Idle.Streams != float64(l.Streams) || l.Conns != l.Streams/25 || l.Users != 2 || l.Rooms != l.Streams/10 ||
			l.RSSPerStreamKB == 0 || l.HeapPerStreamKB == 0 || l.HeapProfile == "" ||
			tr.Expected != int64(l.Rooms*2*10) || tr.Delivered != tr.Expected || tr.Lost != 0 || tr.Dup != 0 || tr.Failed != 0 || tr.Latency.P50 <= 0 {
			t.Fatalf("level %d: %+v", i, l)
		}
		if st, err := os.Stat(l.HeapProfile); err != nil || st.Size() == 0 {
			t.Fatalf("heap profile %s: %v", l.HeapProfile, err)
		}
	}
	path := filepath.Join(dir, "conns.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	var back bench.ConnsReport
	if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &back) != nil || back.Workload != "conns-v1" || len(back.Levels) != 2 {
		t.Fatalf("report %s: %v", path, err)
	}
	rep.WriteTable(io.Discard)
}

// checkPNG draws with draw into path and checks a PNG came out.
func checkPNG(t *testing.T, path string, draw func(string) error) {
	t.Helper()
	if err := draw(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil || img.Bounds().Dx() < 400 || img.Bounds().Dy() < 200 {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestBenchCleanup drops a database and deletes a topic a run left, and
// names that do not exist are not errors (scripts/bench.sh cleans after
// every server it started).
func TestBenchCleanup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	uri, brokers, name := testenv.MongoURI(t), testenv.KafkaBrokers(t), testenv.Name(t)
	mc, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mc.Disconnect(context.Background()) }()
	if _, err := mc.Database(name).Collection("messages").InsertOne(ctx, bson.D{{Key: "_id", Value: "m1"}}); err != nil {
		t.Fatal(err)
	}
	// Metadata answers are cached for MetadataMinAge (5 s by default): the
	// listing after the cleanup must not be the one before it.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, name); err != nil {
		t.Fatal(err)
	}
	// Both exist before, so that their absence after is Cleanup's doing.
	if dbs, err := mc.ListDatabaseNames(ctx, bson.D{}); err != nil || !slices.Contains(dbs, name) {
		t.Fatalf("database %s not listed before cleanup: %v, %v", name, dbs, err)
	}
	if topics, err := adm.ListTopics(ctx, name); err != nil || !topics.Has(name) {
		t.Fatalf("topic %s not listed before cleanup: %v", name, err)
	}

	if err := bench.Cleanup(ctx, uri, brokers, []string{name, name + "_never"}, []string{name, name + ".never"}); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	dbs, err := mc.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(dbs, name) {
		t.Errorf("database %s still there", name)
	}
	// The broker answers the deletion once the controller committed it;
	// its metadata follows a moment later.
	deadline := time.Now().Add(15 * time.Second)
	for {
		topics, err := adm.ListTopics(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !topics.Has(name) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %s still there 15 s after cleanup", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
