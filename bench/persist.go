package bench

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/internal/msgstore"
	"github.com/parleychat/parley/persister"
	"github.com/parleychat/parley/server/msglog"
)

// PersistConfig configures persist-v1: a preloaded topic drained by the
// persister against the store's raw insertMany ceiling, and (with Addr) the
// durable path's latencies under fanout-v1 load.
type PersistConfig struct {
	Brokers  []string // Kafka seed brokers
	MongoURI string   // the MongoDB-protocol store
	// Name prefixes the topic, consumer group and databases the run creates
	// (default "bench_persist_<unix time>").
	Name       string
	Records    int     // N (1,000,000)
	Rooms      int     // rooms the records are keyed by (10,000)
	ZipfS      float64 // Zipf exponent of the room sizes, > 1 (1.1)
	BodyBytes  int     // message body size (100)
	Partitions int     // partitions of the topic (12, the server's default)
	ChunkSize  int     // documents per insertMany (100, the persister's default)
	MaxBatch   int     // records per persister write (500, its default)
	InFlight   int     // persister insert commands in flight, shared by the partitions (its default)
	// FerretDBPostgresURL, when set, makes the persister and the raw loop
	// index their messages collections' lookups in FerretDB's PostgreSQL
	// alike (internal/ferretpg), so both write the same indexes.
	FerretDBPostgresURL string
	// PersisterBin, when set, is a parley binary run as `PersisterBin
	// persister ...` (its CPU is then measured on its own); empty runs the
	// persister package in this process.
	PersisterBin string
	Keep         bool // keep the topic and databases afterwards
	// PersisterProfile, with the in-process persister, receives a CPU
	// profile of this process during the persister phase (the persister's
	// own work, plus the progress polling).
	PersisterProfile io.Writer
	Pids             map[string]int // other processes whose CPU% is reported (kafka, ferretdb, postgres)
	Every            time.Duration  // progress line interval (5s)
	Progress         io.Writer

	// The live part runs when Addr is set: fanout-v1 at each LiveRates msgs/s in
	// total through the Parley server at Addr, of which ProbeRate msgs/s are
	// probe messages whose send→ack latency is measured; the store delay
	// (record timestamp → stored) comes from the histogram of the server's
	// persister at PersisterMetrics (its /metrics URL).
	Addr             string
	PersisterMetrics string
	LiveRates        []int         // [5000]
	ProbeRate        int           // 50
	ProbeRooms       int           // 2
	LiveRooms        int           // fanout-v1 R (100)
	LiveMembers      int           // fanout-v1 S (10)
	LiveConns        int           // gRPC connections of the fanout load (8)
	LiveStep         time.Duration // measured time (10s)
	LiveWarmup       time.Duration // unmeasured start (2s)
	// LiveOnly skips the preload, persister and raw phases.
	LiveOnly    bool
	Persistence string // what to report about the live server's persistence
}

func (c *PersistConfig) defaults() {
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setInt(&c.Records, 1_000_000)
	setInt(&c.Rooms, 10_000)
	setInt(&c.BodyBytes, 100)
	setInt(&c.Partitions, persister.DefaultPartitions)
	setInt(&c.ChunkSize, msgstore.DefaultChunkSize)
	setInt(&c.MaxBatch, persister.DefaultMaxBatch)
	setInt(&c.InFlight, msgstore.DefaultMaxInFlight)
	setInt(&c.ProbeRate, 50)
	setInt(&c.ProbeRooms, 2)
	setInt(&c.LiveRooms, 100)
	setInt(&c.LiveMembers, 10)
	setInt(&c.LiveConns, 8)
	if len(c.LiveRates) == 0 {
		c.LiveRates = []int{5000}
	}
	if c.ZipfS == 0 {
		c.ZipfS = 1.1
	}
	if c.Name == "" {
		c.Name = fmt.Sprintf("bench_persist_%d", time.Now().Unix())
	}
	if c.Every == 0 {
		c.Every = 5 * time.Second
	}
	if c.LiveStep == 0 {
		c.LiveStep = 10 * time.Second
	}
	if c.LiveWarmup == 0 {
		c.LiveWarmup = 2 * time.Second
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Pids == nil {
		c.Pids = map[string]int{}
	}
}

// Validate names the bad field (after defaults).
func (c *PersistConfig) Validate() error {
	c.defaults()
	switch {
	case len(c.Brokers) == 0:
		return errors.New("kafka-brokers: at least one broker")
	case c.MongoURI == "":
		return errors.New("mongo-uri: the store to write")
	case c.Records < 1 || c.Rooms < 1:
		return errors.New("records and rooms must be positive")
	case c.ZipfS <= 1:
		return fmt.Errorf("zipf-s must be above 1, got %g", c.ZipfS)
	case c.ChunkSize < 1 || c.MaxBatch < 1 || c.Partitions < 1 || c.InFlight < 1:
		return errors.New("chunk-size, max-batch, insert-in-flight and partitions must be positive")
	case c.LiveOnly && c.Addr == "":
		return errors.New("live-only needs addr")
	case c.Addr != "" && c.ProbeRate < 1:
		return fmt.Errorf("probe-rate must be positive, got %d", c.ProbeRate)
	}
	for _, r := range c.LiveRates {
		if c.Addr != "" && r <= c.ProbeRate {
			return fmt.Errorf("live-rates: %d must exceed probe-rate (%d)", r, c.ProbeRate)
		}
	}
	return nil
}

// PersistPhase is one drain of the records into the store.
type PersistPhase struct {
	Stored int64 `json:"stored"`
	// Seconds is the wall time from the start of the phase to the last
	// record stored.
	Seconds float64 `json:"seconds"`
	// StartupSeconds (persister only): from the start of the process to its
	// first stored record (topic check, group join, first fetch).
	StartupSeconds float64 `json:"startup_seconds,omitempty"`
	// RecordsPerS is the steady rate: records stored from the first stored
	// one to the last, over that time.
	RecordsPerS float64            `json:"records_per_s"`
	CPU         map[string]float64 `json:"cpu_percent,omitempty"`
	// Inserted, Duplicates and DeadLetters are the persister's own counts
	// (its metrics): Stored is their sum.
	Inserted    int64 `json:"inserted,omitempty"`
	Duplicates  int64 `json:"duplicates,omitempty"`
	DeadLetters int64 `json:"dead_letters,omitempty"`
	// Samples are (seconds since the phase started, records stored), about
	// one a second, for the plot.
	Samples [][2]float64 `json:"samples,omitempty"`
}

// Latency summarises a latency histogram, in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func latencyOf(h *Hist) Latency {
	return Latency{Count: h.Count(), P50: ms(h.Quantile(0.5)), P99: ms(h.Quantile(0.99)), Max: ms(h.Max())}
}

// PersistLive is the durable path under fanout-v1 load.
type PersistLive struct {
	OfferedPerS int `json:"offered_per_s"` // in total
	FanoutPerS  int `json:"fanout_per_s"`  // of it, fanout-v1 messages
	ProbePerS   int `json:"probe_per_s"`   // of it, probe messages
	// SendAck: probe send → SendAck (Redis seq + Kafka acks=all), over the
	// fanout step's measured window; SendFailed: error acks or none.
	SendAck    Latency `json:"send_ack"`
	SendFailed int64   `json:"send_failed"`
	// StoreDelay: the persister's parley_persister_store_delay_seconds
	// (record timestamp, set when the server handed the message to the
	// producer, → the write that stored it), for every record stored from
	// the start of the measured window until the persister caught up
	// (CatchUpSeconds after the run); quantiles interpolated in 25 %-wide
	// buckets. It bounds ack→stored from above.
	StoreDelay     Latency `json:"store_delay"`
	StoreDelayNote string  `json:"store_delay_note,omitempty"`
	CatchUpSeconds float64 `json:"catch_up_seconds"`
	Fanout         *Report `json:"fanout,omitempty"`
}

// PersistReport is a persist-v1 run.
type PersistReport struct {
	Workload    string    `json:"workload"` // "persist-v1"
	Machine     string    `json:"machine"`
	Started     time.Time `json:"started"`
	Records     int       `json:"records"`
	Rooms       int       `json:"rooms"`
	ZipfS       float64   `json:"zipf_s"`
	LargestRoom int       `json:"largest_room_records"`
	BodyBytes   int       `json:"body_bytes"`
	Partitions  int       `json:"partitions"`
	// PartitionMax and PartitionMin are the largest and smallest share of
	// the records one partition holds (rooms are keys: skew follows).
	PartitionMax  float64      `json:"partition_share_max"`
	PartitionMin  float64      `json:"partition_share_min"`
	ChunkSize     int          `json:"chunk_size"`
	MaxBatch      int          `json:"max_batch"`
	InFlight      int          `json:"insert_in_flight"`
	Concurrency   int          `json:"concurrency"`
	PersisterMode string       `json:"persister_mode"` // "process" or "in-process"
	Preload       PersistPhase `json:"preload"`
	Persister     PersistPhase `json:"persister"`
	Raw           PersistPhase `json:"raw"`
	// CheckedRooms rooms holding CheckedDocs documents were counted in the
	// store after the persister phase, each matching what was produced
	// (otherwise a note says which did not).
	CheckedRooms int   `json:"checked_rooms"`
	CheckedDocs  int64 `json:"checked_docs"`
	// RatioPerStoreCPU compares records per CPU-second of the store
	// (ferretdb + postgres + mongod in the CPU maps) of the two phases:
	// unlike Ratio it does not move when other load on the machine takes
	// CPU from the store in one phase more than in the other (0: the store's
	// processes were not measured).
	RatioPerStoreCPU float64 `json:"ratio_per_store_cpu,omitempty"`
	// Ratio is Persister.RecordsPerS / Raw.RecordsPerS.
	Ratio float64        `json:"ratio"`
	Live  []*PersistLive `json:"live,omitempty"` // one per live rate
	Notes []string       `json:"notes,omitempty"`
}

// RunPersist runs persist-v1.
func RunPersist(ctx context.Context, cfg PersistConfig) (*PersistReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep := &PersistReport{
		Workload: "persist-v1", Machine: Machine(), Started: time.Now().UTC(),
		Records: cfg.Records, Rooms: cfg.Rooms, ZipfS: cfg.ZipfS, BodyBytes: cfg.BodyBytes, Partitions: cfg.Partitions,
		ChunkSize: cfg.ChunkSize, MaxBatch: cfg.MaxBatch, InFlight: cfg.InFlight, Concurrency: cfg.Partitions, PersisterMode: "in-process",
	}
	if cfg.PersisterBin != "" {
		rep.PersisterMode = "process"
	}
	if cfg.LiveOnly {
		// Before the connection and the cleanup below: the live part
		// creates no topic or database of this run's name, so it must not
		// drop or delete any.
		rep.Records, rep.PersisterMode = 0, ""
		return rep, runLive(ctx, cfg, rep)
	}
	mc, err := mongo.Connect(options.Client().ApplyURI(cfg.MongoURI).SetTimeout(2 * time.Minute))
	if err != nil {
		return nil, fmt.Errorf("mongo-uri: %w", err)
	}
	defer func() { _ = mc.Disconnect(context.Background()) }()
	topic := cfg.Name
	if !cfg.Keep {
		defer cleanupPersist(cfg, mc, topic)
	}

	parts, err := preload(ctx, cfg, rep, topic)
	if err != nil {
		return rep, err
	}
	if err := runPersisterPhase(ctx, cfg, rep, mc, topic, parts); err != nil {
		return rep, err
	}
	if err := runRawPhase(ctx, cfg, rep, mc, parts); err != nil {
		return rep, err
	}
	if rep.Raw.RecordsPerS > 0 {
		rep.Ratio = rep.Persister.RecordsPerS / rep.Raw.RecordsPerS
	}
	if p, r := storeCPU(rep.Persister.CPU), storeCPU(rep.Raw.CPU); p > 0 && r > 0 && rep.Raw.RecordsPerS > 0 {
		rep.RatioPerStoreCPU = (rep.Persister.RecordsPerS / p) / (rep.Raw.RecordsPerS / r)
	}
	fmt.Fprintf(cfg.Progress, "persister %.0f records/s, raw insertMany %.0f records/s: ratio %.2f\n",
		rep.Persister.RecordsPerS, rep.Raw.RecordsPerS, rep.Ratio)
	if cfg.Addr != "" {
		return rep, runLive(ctx, cfg, rep)
	}
	return rep, nil
}

// runLive runs the live part at each of LiveRates.
func runLive(ctx context.Context, cfg PersistConfig, rep *PersistReport) error {
	for _, rate := range cfg.LiveRates {
		live, err := runPersistLive(ctx, cfg, rate)
		rep.Live = append(rep.Live, live)
		if err != nil {
			return fmt.Errorf("live at %d msgs/s: %w", rate, err)
		}
	}
	return nil
}

// storeCPU is the CPU% of the store's processes in a CPU map.
func storeCPU(cpu map[string]float64) float64 {
	return cpu["ferretdb"] + cpu["postgres"] + cpu["mongod"]
}

func cleanupPersist(cfg PersistConfig, mc *mongo.Client, topic string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := errors.Join(dropDatabases(ctx, mc, cfg.Name, cfg.Name+"_raw"),
		deleteTopics(ctx, cfg.Brokers, topic, topic+".dlq")); err != nil {
		fmt.Fprintf(cfg.Progress, "cleanup: %v\n", err)
	}
}

// preload produces the records, encoded as the server's msglog.Producer
// encodes them (a parley.events.v1.MessageRecord keyed by room id, acks=all,
// the same partitioner), and returns the messages by partition in offset
// order.
func preload(ctx context.Context, cfg PersistConfig, rep *PersistReport, topic string) ([][]*parleyv1.Message, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(5*time.Millisecond), // batching only: the records are the same
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := msglog.EnsureTopic(ctx, kadm.NewClient(cl), topic, int32(cfg.Partitions), 1); err != nil {
		return nil, err
	}

	msgs := makeMessages(cfg, rep)
	partOf := make([]int32, len(msgs))
	var acked atomic.Int64
	var firstErr error
	var errOnce sync.Once
	fmt.Fprintf(cfg.Progress, "preload: %d records, %d rooms (Zipf s=%g, largest %d), into topic %s (%d partitions)\n",
		cfg.Records, cfg.Rooms, cfg.ZipfS, rep.LargestRoom, topic, cfg.Partitions)
	start := time.Now()
	stop := ticker(cfg.Every, func() {
		n := acked.Load()
		fmt.Fprintf(cfg.Progress, "preload: %d/%d records acked (%.0f/s)\n", n, cfg.Records, float64(n)/time.Since(start).Seconds())
	})
	for i, m := range msgs {
		value, err := proto.Marshal(&eventsv1.MessageRecord{Message: m})
		if err != nil {
			stop()
			return nil, err
		}
		cl.Produce(ctx, &kgo.Record{Key: []byte(m.RoomId), Value: value}, func(r *kgo.Record, err error) {
			if err != nil {
				errOnce.Do(func() { firstErr = err })
				return
			}
			partOf[i] = r.Partition
			acked.Add(1)
		})
	}
	err = cl.Flush(ctx)
	stop()
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return nil, fmt.Errorf("preload: %w", err)
	}
	d := time.Since(start)
	rep.Preload = PersistPhase{Stored: acked.Load(), Seconds: d.Seconds(), RecordsPerS: float64(acked.Load()) / d.Seconds()}
	parts := make([][]*parleyv1.Message, cfg.Partitions)
	for i, m := range msgs {
		parts[partOf[i]] = append(parts[partOf[i]], m)
	}
	rep.PartitionMin = 1
	for _, p := range parts {
		share := float64(len(p)) / float64(len(msgs))
		rep.PartitionMax, rep.PartitionMin = max(rep.PartitionMax, share), min(rep.PartitionMin, share)
	}
	fmt.Fprintf(cfg.Progress, "preload: %d records in %.1fs (%.0f/s); partition shares %.1f%%..%.1f%%\n",
		acked.Load(), d.Seconds(), rep.Preload.RecordsPerS, 100*rep.PartitionMin, 100*rep.PartitionMax)
	return parts, nil
}

// makeMessages builds the records' messages as the server builds them: ULID
// message ids, per-room epoch and seq from 1, sender, client_msg_id, body,
// create time. Room sizes follow a Zipf law; rooms interleave at random.
func makeMessages(cfg PersistConfig, rep *PersistReport) []*parleyv1.Message {
	rng := rand.New(rand.NewPCG(uint64(cfg.Records), uint64(cfg.Rooms)))
	zipf := rand.NewZipf(rng, cfg.ZipfS, 1, uint64(cfg.Rooms-1))
	rooms := make([]string, cfg.Rooms)
	epochs := make([]string, cfg.Rooms)
	seqs := make([]int64, cfg.Rooms)
	for i := range rooms {
		rooms[i] = ulid.Make().String()
		var b [8]byte
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		epochs[i] = hex.EncodeToString(b[:])
	}
	const senders = 1000
	senderIDs := make([]string, senders)
	for i := range senderIDs {
		senderIDs[i] = ulid.Make().String()
	}
	body := strings.Repeat("x", cfg.BodyBytes)
	now := time.Now()
	msgs := make([]*parleyv1.Message, cfg.Records)
	for i := range msgs {
		r := int(zipf.Uint64())
		seqs[r]++
		s := rng.IntN(senders)
		msgs[i] = &parleyv1.Message{
			MessageId: ulid.Make().String(), RoomId: rooms[r], Epoch: epochs[r], Seq: seqs[r],
			SenderId: senderIDs[s], SenderUsername: "bench-user-" + strconv.Itoa(s),
			ClientMsgId: ulid.Make().String(), Body: body,
			CreateTime: timestamppb.New(now.Add(time.Duration(i) * time.Microsecond)),
		}
	}
	for _, n := range seqs {
		rep.LargestRoom = max(rep.LargestRoom, int(n))
	}
	return msgs
}

// ticker calls f every d until the returned stop is called.
func ticker(d time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// watchStored polls stored until it reaches total, printing a progress line
// every cfg.Every, and fills phase (Stored, Seconds, RecordsPerS, Samples,
// StartupSeconds relative to start). A failing stored call counts as 0 (the
// persister's metrics are not up yet) until exited reports the process gone.
func watchStored(ctx context.Context, cfg PersistConfig, name string, total int64, start time.Time, stored func() (int64, error), exited <-chan error, phase *PersistPhase) error {
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	var firstAt time.Time
	var firstN int64
	lastPrint, lastSample := start, start
	var lastN int64
	for {
		n, _ := stored()
		now := time.Now()
		if n > 0 && firstAt.IsZero() {
			firstAt, firstN = now, n
		}
		if now.Sub(lastSample) >= time.Second || n >= total {
			phase.Samples = append(phase.Samples, [2]float64{now.Sub(start).Seconds(), float64(n)})
			lastSample = now
		}
		if now.Sub(lastPrint) >= cfg.Every {
			fmt.Fprintf(cfg.Progress, "%s: stored %d/%d, lag %d, %.0f records/s\n",
				name, n, total, total-n, float64(n-lastN)/now.Sub(lastPrint).Seconds())
			lastPrint, lastN = now, n
		}
		if n >= total {
			phase.Stored = n
			phase.Seconds = now.Sub(start).Seconds()
			if !firstAt.IsZero() {
				phase.StartupSeconds = firstAt.Sub(start).Seconds()
				if d := now.Sub(firstAt).Seconds(); d > 0 {
					phase.RecordsPerS = float64(n-firstN) / d
				}
			}
			if phase.RecordsPerS == 0 {
				phase.RecordsPerS = float64(n) / max(phase.Seconds, 1e-3)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return fmt.Errorf("%s exited with %d/%d records stored: %v", name, n, total, err)
		case <-poll.C:
		}
	}
}

// runPersisterPhase runs the persister on the preloaded topic until every
// record is stored.
func runPersisterPhase(ctx context.Context, cfg PersistConfig, rep *PersistReport, mc *mongo.Client, topic string, parts [][]*parleyv1.Message) error {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pids := clonePids(cfg.Pids)
	var stored func() (int64, error)
	exited := make(chan error, 1)
	var stopPersister func()
	start := time.Now()
	var lastMu sync.Mutex
	var last map[string]float64
	sum := func(m map[string]float64) int64 {
		lastMu.Lock()
		last = m
		lastMu.Unlock()
		return int64(m["parley_persister_messages_inserted_total"] + m["parley_persister_duplicates_total"] + m["parley_persister_dlq_total"])
	}
	if cfg.PersisterBin != "" {
		metricsAddr, err := freeLocalAddr()
		if err != nil {
			return err
		}
		cmd := exec.Command(cfg.PersisterBin, "persister",
			"-kafka-brokers", strings.Join(cfg.Brokers, ","), "-topic", topic, "-dlq-topic", topic+".dlq", "-group", topic,
			"-partitions", strconv.Itoa(cfg.Partitions), "-mongo-uri", cfg.MongoURI, "-database", cfg.Name,
			"-chunk-size", strconv.Itoa(cfg.ChunkSize), "-max-batch", strconv.Itoa(cfg.MaxBatch), "-insert-in-flight", strconv.Itoa(cfg.InFlight),
			"-ferretdb-postgres-url", cfg.FerretDBPostgresURL,
			"-metrics-addr", metricsAddr, "-log-level", "warn", "-log-format", "text")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		start = time.Now()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start persister: %w", err)
		}
		pids["persister"] = cmd.Process.Pid
		if cfg.FerretDBPostgresURL != "" {
			rep.Notes = append(rep.Notes, cfg.Name+": the persister indexes its lookups on FerretDB's PostgreSQL (--ferretdb-postgres-url)")
		}
		go func() { exited <- cmd.Wait() }()
		stopPersister = func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		url := "http://" + metricsAddr + "/metrics"
		stored = func() (int64, error) {
			m, err := scrapeMetrics(pctx, url)
			if err != nil {
				return 0, err
			}
			return sum(m), nil
		}
	} else {
		reg := prometheus.NewRegistry()
		store := msgstore.New(mc.Database(cfg.Name), msgstore.Options{ChunkSize: cfg.ChunkSize, MaxInFlight: cfg.InFlight, Linger: msgstore.DefaultLinger})
		if err := store.EnsureIndexes(ctx); err != nil {
			return err
		}
		if err := ensureLookupIndexes(ctx, cfg, rep, cfg.Name, store); err != nil {
			return err
		}
		p, err := persister.New(persister.Config{
			Brokers: cfg.Brokers, Topic: topic, DLQTopic: topic + ".dlq", Group: topic,
			MaxBatch: cfg.MaxBatch, Partitions: int32(cfg.Partitions),
		}, store, slog.New(slog.DiscardHandler), reg)
		if err != nil {
			return err
		}
		start = time.Now()
		go func() { exited <- p.Run(pctx) }()
		stopPersister = func() { cancel(); <-exited }
		stored = func() (int64, error) {
			m, err := gatherSums(reg)
			if err != nil {
				return 0, err
			}
			return sum(m), nil
		}
	}
	fmt.Fprintf(cfg.Progress, "persister (%s): draining %d records, chunk %d, max batch %d, %d partitions\n",
		rep.PersisterMode, cfg.Records, cfg.ChunkSize, cfg.MaxBatch, cfg.Partitions)
	meter := newCPUMeter(pids)
	if cfg.PersisterProfile != nil && cfg.PersisterBin == "" {
		if err := pprof.StartCPUProfile(cfg.PersisterProfile); err != nil {
			return err
		}
	}
	err := watchStored(ctx, cfg, "persister", int64(cfg.Records), start, stored, exited, &rep.Persister)
	if cfg.PersisterProfile != nil && cfg.PersisterBin == "" {
		pprof.StopCPUProfile()
	}
	rep.Persister.CPU = meter.percent()
	stopPersister()
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.Progress, "persister: %d records in %.1fs (startup %.1fs), steady %.0f records/s\n",
		rep.Persister.Stored, rep.Persister.Seconds, rep.Persister.StartupSeconds, rep.Persister.RecordsPerS)
	lastMu.Lock()
	rep.Persister.Inserted = int64(last["parley_persister_messages_inserted_total"])
	rep.Persister.Duplicates = int64(last["parley_persister_duplicates_total"])
	rep.Persister.DeadLetters = int64(last["parley_persister_dlq_total"])
	lastMu.Unlock()
	if rep.Persister.Duplicates > 0 || rep.Persister.DeadLetters > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the persister counted %d duplicates and %d dead letters",
			rep.Persister.Duplicates, rep.Persister.DeadLetters))
	}
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Minute)
	defer ccancel()
	if err := checkRooms(cctx, cfg, rep, msgstore.New(mc.Database(cfg.Name), msgstore.Options{}), parts); err != nil {
		return err
	}
	// The raw loop must not run against a store still digesting this
	// phase's rows (PostgreSQL vacuum and checkpoints): drop them first.
	if !cfg.Keep {
		return dropDatabases(cctx, mc, cfg.Name)
	}
	return nil
}

// checkRooms counts the stored messages of up to 20 rooms of fewer than
// 5,000 records, spread over the size range, against what was produced
// (counting the whole collection takes minutes on FerretDB), and the
// Checked rooms in the report.
func checkRooms(ctx context.Context, cfg PersistConfig, rep *PersistReport, store *msgstore.Store, parts [][]*parleyv1.Message) error {
	sizes := map[string]int64{}
	for _, p := range parts {
		for _, m := range p {
			sizes[m.GetRoomId()]++
		}
	}
	rooms := make([]string, 0, len(sizes))
	for r, n := range sizes {
		if n < 5000 {
			rooms = append(rooms, r)
		}
	}
	slices.SortFunc(rooms, func(a, b string) int { return cmp.Or(cmp.Compare(sizes[a], sizes[b]), strings.Compare(a, b)) })
	step := max(len(rooms)/20, 1)
	for i := len(rooms) - 1; i >= 0; i -= step {
		n, err := store.Count(ctx, rooms[i])
		if err != nil {
			return fmt.Errorf("count a room's stored messages: %w", err)
		}
		rep.CheckedRooms++
		rep.CheckedDocs += n
		if n != sizes[rooms[i]] {
			rep.Notes = append(rep.Notes, fmt.Sprintf("room %s: %d documents stored for %d records", rooms[i], n, sizes[rooms[i]]))
		}
	}
	return nil
}

// runRawPhase inserts the same documents with a plain loop: one goroutine
// per partition (the persister's concurrency), each inserting its
// partition's documents in offset order with unordered insertMany of
// ChunkSize documents, into a fresh database with the same index.
func runRawPhase(ctx context.Context, cfg PersistConfig, rep *PersistReport, mc *mongo.Client, parts [][]*parleyv1.Message) error {
	db := mc.Database(cfg.Name + "_raw")
	rawStore := msgstore.New(db, msgstore.Options{})
	if err := rawStore.EnsureIndexes(ctx); err != nil {
		return err
	}
	if err := ensureLookupIndexes(ctx, cfg, rep, cfg.Name+"_raw", rawStore); err != nil {
		return err
	}
	coll := db.Collection(msgstore.CollectionName)
	docs := make([][]any, len(parts))
	for i, p := range parts {
		docs[i] = make([]any, len(p))
		for j, m := range p {
			docs[i][j] = msgstore.NewDocument(m)
		}
	}
	fmt.Fprintf(cfg.Progress, "raw: unordered insertMany of the same %d documents, %d goroutines (one per partition's share), chunks of %d\n",
		cfg.Records, len(parts), cfg.ChunkSize)
	var stored atomic.Int64
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(rctx)
	exited := make(chan error, 1)
	start := time.Now()
	meter := newCPUMeter(clonePids(cfg.Pids))
	for _, d := range docs {
		g.Go(func() error {
			opts := options.InsertMany().SetOrdered(false)
			for i := 0; i < len(d); i += cfg.ChunkSize {
				chunk := d[i:min(i+cfg.ChunkSize, len(d))]
				if _, err := coll.InsertMany(gctx, chunk, opts); err != nil {
					return fmt.Errorf("raw insertMany: %w", err)
				}
				stored.Add(int64(len(chunk)))
			}
			return nil
		})
	}
	go func() {
		if err := g.Wait(); err != nil {
			exited <- err
		}
	}()
	err := watchStored(ctx, cfg, "raw", int64(cfg.Records), start, func() (int64, error) { return stored.Load(), nil }, exited, &rep.Raw)
	rep.Raw.CPU = meter.percent()
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.Progress, "raw: %d documents in %.1fs, %.0f records/s\n", rep.Raw.Stored, rep.Raw.Seconds, rep.Raw.RecordsPerS)
	// Nor must the live part: with these rows still in the store its
	// store delay p99 was 246, 405 and 2,238 ms at 1,000, 2,000 and 5,000
	// msgs/s; in the next run, with them dropped first, 116, 171 and
	// 518 ms (same code otherwise; a live-only run between the two gave
	// 114, 157 and 1,545 ms).
	if !cfg.Keep {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Minute)
		defer dcancel()
		return dropDatabases(dctx, mc, db.Name())
	}
	return nil
}

// ensureLookupIndexes gives database's messages collection the GIN indexes
// the persister makes with --ferretdb-postgres-url, when cfg has one.
func ensureLookupIndexes(ctx context.Context, cfg PersistConfig, rep *PersistReport, database string, st *msgstore.Store) error {
	if cfg.FerretDBPostgresURL == "" {
		return nil
	}
	res, err := ferretpg.Ensure(ctx, cfg.FerretDBPostgresURL, database, st.Lookups())
	if err != nil {
		return err
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("%s: GIN indexes on FerretDB's PostgreSQL for %v (created %v)", database, st.Lookups()[0].Fields, res.Created))
	return nil
}

func clonePids(p map[string]int) map[string]int {
	out := make(map[string]int, len(p)+2)
	for k, v := range p {
		out[k] = v
	}
	out["loadgen"] = os.Getpid()
	return out
}

func freeLocalAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
