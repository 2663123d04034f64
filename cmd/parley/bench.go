package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/parleychat/parley/bench"
	"github.com/parleychat/parley/internal/config"
	"github.com/parleychat/parley/internal/msgstore"
)

const benchUsage = "usage: parley bench fanout|persist|conns|plot|compare|cleanup|floor-server [flags] (see docs/PERFORMANCE.md)"

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(benchUsage)
	}
	switch args[0] {
	case "fanout":
		return runBenchFanout(ctx, args)
	case "persist":
		return runBenchPersist(ctx, args)
	case "conns":
		return runBenchConns(ctx, args)
	case "plot":
		return runBenchPlot(args)
	case "compare":
		return runBenchCompare(args)
	case "cleanup":
		return runBenchCleanup(ctx, args)
	case "floor-server":
		return runBenchFloorServer(ctx, args)
	}
	return fmt.Errorf("unknown workload %q; %s", args[0], benchUsage)
}

func runBenchFanout(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("parley bench fanout", flag.ContinueOnError)
	var cfg bench.FanoutConfig
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "Parley server to load")
	fs.StringVar(&cfg.RedisURL, "redis-url", "redis://127.0.0.1:6379", "Redis for --raw")
	fs.BoolVar(&cfg.Raw, "raw", false, "the same workload on Redis pub/sub alone (this machine's ceiling)")
	fs.BoolVar(&cfg.Floor, "floor", false, "--addr is `parley bench floor-server` (a gRPC server that only hands each message on: the delivery through grpc-go with no other work per message)")
	fs.IntVar(&cfg.Rooms, "rooms", 100, "rooms (R)")
	fs.IntVar(&cfg.Members, "members", 10, "member connections per room, the publisher included (S)")
	rates := fs.String("rates", "1000,2000,5000,10000,20000,50000,100000", "offered msgs/s per step, in total")
	fs.DurationVar(&cfg.Step, "step", 10*time.Second, "measured time per step")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured warm-up per step")
	fs.DurationVar(&cfg.PreWarm, "prewarm", 20*time.Second, "unmeasured load at the first rate before the first step (a freshly started broker's JIT)")
	fs.DurationVar(&cfg.Grace, "grace", 5*time.Second, "how long a message may take before it counts as lost")
	fs.IntVar(&cfg.BodyBytes, "body-bytes", 100, "message body size")
	fs.IntVar(&cfg.Conns, "conns", 8, "gRPC connections the streams are spread over")
	fs.IntVar(&cfg.StopAfter, "stop-after", 2, "stop after this many failing steps in a row (0: run all)")
	fs.BoolVar(&cfg.OneFramePerMessage, "one-frame-per-message", false, "member streams refuse MessageBatch frames (StreamOptions.message_batches false): one frame per delivery")
	fs.BoolVar(&cfg.FullDecode, "full-decode", false, "receivers decode every frame in full with the generated client's codec (default: bodies of delivered messages only)")
	fs.BoolVar(&cfg.StampScheduled, "stamp-scheduled", false, "stamp each message with its scheduled send time instead of the time it was built, so that a publisher's waits count in latency (fanout-v1 stamps the send time)")
	fs.StringVar(&cfg.Persistence, "persistence", "on (Kafka acks=all + persister)", "what to report about persistence")
	pids := fs.String("pids", "", "processes to measure, name=pid,... (e.g. server=123,redis=456,persister=789)")
	out := fs.String("out", "", "JSON report path (default: bench-fanout-<mode>.json)")
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's CPU profile of the whole run to this file")
	if err := config.Parse(fs, args[1:]); err != nil {
		return err
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	var err error
	if cfg.Rates, err = positiveInts("rates", *rates); err != nil {
		return err
	}
	if cfg.Pids, err = parsePids(*pids); err != nil {
		return err
	}
	cfg.Progress = os.Stderr
	rep, err := bench.RunFanout(ctx, cfg)
	if err != nil {
		return err
	}
	rep.WriteTable(os.Stdout)
	path := *out
	if path == "" {
		path = "bench-fanout-" + rep.Mode + ".json"
	}
	if err := rep.WriteJSON(path); err != nil {
		return err
	}
	fmt.Println("report:", path)
	return writePlot(path, func(png string) error { return bench.PlotFanout(png, rep) })
}

// startCPUProfile profiles this process into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// positiveInts parses the comma-separated list of flag name.
func positiveInts(name, s string) ([]int, error) {
	var out []int
	for _, v := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s: %q is not a positive number", name, v)
		}
		out = append(out, n)
	}
	return out, nil
}

// parsePids parses name=pid,name=pid.
func parsePids(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, kv := range strings.Split(s, ",") {
		if kv == "" {
			continue
		}
		name, v, ok := strings.Cut(kv, "=")
		pid, err := strconv.Atoi(v)
		if !ok || err != nil || pid <= 0 {
			return nil, fmt.Errorf("pids: %q is not name=pid", kv)
		}
		out[name] = pid
	}
	return out, nil
}

// writePlot draws the PNG beside a JSON report (x.json -> x.png).
func writePlot(jsonPath string, draw func(png string) error) error {
	png := strings.TrimSuffix(jsonPath, filepath.Ext(jsonPath)) + ".png"
	if err := draw(png); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	fmt.Println("plot:", png)
	return nil
}

func runBenchPersist(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("parley bench persist", flag.ContinueOnError)
	var cfg bench.PersistConfig
	brokers := config.List{"127.0.0.1:9092"}
	fs.Var(&brokers, "kafka-brokers", "comma-separated Kafka seed brokers")
	fs.StringVar(&cfg.MongoURI, "mongo-uri", "mongodb://127.0.0.1:27017", "MongoDB-protocol store")
	fs.StringVar(&cfg.Name, "name", "", "prefix of the topic, group and databases the run creates (default bench_persist_<time>)")
	fs.IntVar(&cfg.Records, "records", 1_000_000, "records to preload (N)")
	fs.IntVar(&cfg.Rooms, "rooms", 10_000, "rooms the records are keyed by")
	fs.Float64Var(&cfg.ZipfS, "zipf-s", 1.1, "Zipf exponent of the room sizes (> 1)")
	fs.IntVar(&cfg.BodyBytes, "body-bytes", 100, "message body size")
	fs.IntVar(&cfg.Partitions, "partitions", 12, "partitions of the preloaded topic")
	fs.IntVar(&cfg.ChunkSize, "chunk-size", msgstore.DefaultChunkSize, "documents per insertMany, for the persister and the raw loop")
	fs.IntVar(&cfg.MaxBatch, "max-batch", 500, "records per persister write")
	fs.IntVar(&cfg.InFlight, "insert-in-flight", 0, "persister insert commands in flight, shared by the partitions (0: its default)")
	fs.StringVar(&cfg.FerretDBPostgresURL, "ferretdb-postgres-url", "", "FerretDB 1.x's PostgreSQL: the persister and the raw loop both index their messages collection's lookups there (empty: neither)")
	inProcess := fs.Bool("in-process", false, "run the persister package in this process instead of `parley persister`")
	cpuProfile := fs.String("cpu-profile", "", "with --in-process: write a CPU profile of the persister phase to this file")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the topic and databases afterwards")
	fs.DurationVar(&cfg.Every, "every", 5*time.Second, "progress line interval")
	fs.StringVar(&cfg.Addr, "addr", "", "Parley server for the live part (empty: skip it)")
	fs.StringVar(&cfg.PersisterMetrics, "persister-metrics", "", "live part: /metrics URL of the live server's persister (store delay histogram)")
	liveRates := fs.String("live-rates", "5000", "live part: msgs/s offered in total (fanout-v1 + probe), one run per rate")
	fs.IntVar(&cfg.ProbeRate, "probe-rate", 50, "live part: probe msgs/s whose latencies are measured")
	fs.DurationVar(&cfg.LiveStep, "live-step", 10*time.Second, "live part: measured time")
	fs.IntVar(&cfg.ProbeRooms, "probe-rooms", 2, "live part: rooms of the probe messages")
	fs.BoolVar(&cfg.LiveOnly, "live-only", false, "run only the live part (no preload, persister or raw phase)")
	fs.StringVar(&cfg.Persistence, "persistence", "on (Kafka acks=all + persister)", "what to report about the live server's persistence")
	pids := fs.String("pids", "", "processes to measure, name=pid,... (e.g. kafka=1,ferretdb=2,postgres=3,server=4,persister=5)")
	out := fs.String("out", "bench-persist.json", "JSON report path (a PNG is drawn beside it)")
	if err := config.Parse(fs, args[1:]); err != nil {
		return err
	}
	cfg.Brokers = brokers
	var err error
	if cfg.LiveRates, err = positiveInts("live-rates", *liveRates); err != nil {
		return err
	}
	if cfg.Pids, err = parsePids(*pids); err != nil {
		return err
	}
	if !*inProcess {
		if cfg.PersisterBin, err = os.Executable(); err != nil {
			return err
		}
	}
	if *cpuProfile != "" {
		if !*inProcess {
			return errors.New("cpu-profile needs --in-process")
		}
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.PersisterProfile = f
	}
	cfg.Progress = os.Stderr
	rep, err := bench.RunPersist(ctx, cfg)
	if rep != nil && (err == nil || rep.Raw.Stored > 0) {
		rep.WriteTable(os.Stdout)
		if werr := rep.WriteJSON(*out); werr != nil {
			return werr
		}
		fmt.Println("report:", *out)
		if rep.Records > 0 {
			if perr := writePlot(*out, func(png string) error { return bench.PlotPersist(png, rep) }); perr != nil && err == nil {
				err = perr
			}
		}
	}
	return err
}

func runBenchPlot(args []string) error {
	fs := flag.NewFlagSet("parley bench plot", flag.ContinueOnError)
	var in config.List
	fs.Var(&in, "in", "JSON report(s), comma-separated: fanout-v1 reports share one plot (e.g. Parley and --raw); one persist-v1 report")
	out := fs.String("out", "", "PNG to write (default: the first input with .png)")
	if err := config.Parse(fs, args[1:]); err != nil {
		return err
	}
	if len(in) == 0 {
		return errors.New("plot: --in names at least one JSON report")
	}
	path := *out
	if path == "" {
		path = strings.TrimSuffix(in[0], filepath.Ext(in[0])) + ".png"
	}
	if err := bench.PlotFiles(path, in...); err != nil {
		return err
	}
	fmt.Println("plot:", path)
	return nil
}

// runBenchCompare states a Parley fanout report's peak as a fraction of the
// --raw ceiling and of the --floor peak of the same run, and records them in
// the Parley report.
func runBenchCompare(args []string) error {
	fs := flag.NewFlagSet("parley bench compare", flag.ContinueOnError)
	parleyPath := fs.String("parley", "", "fanout-v1 JSON report of Parley (rewritten with the ratios)")
	rawPath := fs.String("raw", "", "fanout-v1 JSON report of --raw from the same run")
	floorPath := fs.String("floor", "", "fanout-v1 JSON report of --floor from the same run")
	if err := config.Parse(fs, args[1:]); err != nil {
		return err
	}
	if *parleyPath == "" || (*rawPath == "" && *floorPath == "") {
		return errors.New("compare: --parley names Parley's report, and --raw, --floor or both the others")
	}
	p, err := bench.ReadReport(*parleyPath)
	if err != nil {
		return err
	}
	// Each comparison that holds is recorded, even when the other fails.
	var lines []string
	var errs []error
	for _, c := range []struct {
		flag, path string
		compare    func(*bench.Report) (string, error)
	}{{"raw", *rawPath, p.Compare}, {"floor", *floorPath, p.CompareFloor}} {
		if c.path == "" {
			continue
		}
		other, err := bench.ReadReport(c.path)
		if err == nil {
			var line string
			if line, err = c.compare(other); err == nil {
				lines = append(lines, line)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %s: %w", c.flag, c.path, err))
		}
	}
	if len(lines) > 0 {
		if err := p.WriteJSON(*parleyPath); err != nil {
			return err
		}
		fmt.Println(strings.Join(lines, "\n"))
	}
	return errors.Join(errs...)
}

// runBenchFloorServer serves bench.NewFloorServer until ctx ends: the
// server of `parley bench fanout --floor`.
func runBenchFloorServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("parley bench floor-server", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	tick := fs.Duration("delivery-tick", 0, "queue messages per stream and write each stream's queue as one MessageBatch frame every tick, as Parley's --delivery-tick does (0: write every message at once)")
	if err := config.Parse(fs, args[1:]); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	floor, gs, stop := bench.NewFloorServer(*tick)
	defer stop()
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	fmt.Printf("floor server listening on %s (delivery tick %s)\n", lis.Addr(), *tick)
	err = gs.Serve(lis)
	if frames, msgs := floor.Sent(); frames > 0 {
		fmt.Printf("floor server: %d messages delivered in %d frames (%.2f a frame)\n", msgs, frames, float64(msgs)/float64(frames))
	}
	return err
}

// runBenchCleanup drops the databases and deletes the topics a benchmark run
// left (scripts/bench.sh calls it after every server it started).
func runBenchCleanup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("parley bench cleanup", flag.ContinueOnError)
	brokers := config.List{"127.0.0.1:9092"}
	fs.Var(&brokers, "kafka-brokers", "comma-separated Kafka seed brokers")
	mongoURI := fs.String("mongo-uri", "mongodb://127.0.0.1:27017", "MongoDB-protocol store")
	var dbs, topics config.List
	fs.Var(&dbs, "databases", "comma-separated databases to drop")
	fs.Var(&topics, "topics", "comma-separated Kafka topics to delete")
	if err := config.Parse(fs, args[1:]); err != nil {
		return err
	}
	if len(dbs) == 0 && len(topics) == 0 {
		return errors.New("cleanup: name --databases, --topics or both")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return bench.Cleanup(ctx, *mongoURI, brokers, dbs, topics)
}

func runBenchConns(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("parley bench conns", flag.ContinueOnError)
	var cfg bench.ConnsConfig
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "Parley server to load (one instance)")
	levels := fs.String("streams", "10000,50000", "idle stream counts to measure, ascending")
	fs.IntVar(&cfg.StreamsPerUser, "streams-per-user", 1000, "streams one user holds (the server's --max-streams-per-user must allow it)")
	fs.IntVar(&cfg.MembersPerRoom, "members-per-room", 100, "streams per room")
	fs.IntVar(&cfg.UsersPerRoom, "users-per-room", 10, "distinct users among a room's streams")
	fs.IntVar(&cfg.StreamsPerConn, "streams-per-conn", 100, "streams multiplexed on one HTTP/2 connection")
	fs.IntVar(&cfg.OpenConcurrency, "open-concurrency", 64, "streams being opened at once")
	fs.DurationVar(&cfg.Settle, "settle", 5*time.Second, "wait after opening before measuring")
	fs.DurationVar(&cfg.Idle, "idle", 10*time.Second, "idle CPU measurement time")
	fs.DurationVar(&cfg.Trickle, "trickle", 10*time.Second, "trickle time")
	fs.Float64Var(&cfg.TrickleRate, "trickle-rate", 1, "trickle msgs/s per room")
	fs.DurationVar(&cfg.Grace, "grace", 5*time.Second, "how long a trickle message may take before it counts as lost")
	fs.IntVar(&cfg.BodyBytes, "body-bytes", 100, "trickle message body size")
	fs.StringVar(&cfg.MetricsURL, "metrics-url", "", "the server's /metrics (default http://<addr>/metrics)")
	fs.StringVar(&cfg.HeapURL, "heap-url", "", "the server's heap profile, served with --pprof (default http://<addr>/debug/pprof/heap; - for none)")
	pids := fs.String("pids", "", "processes to measure, name=pid,... (server=PID gives its RSS and CPU from /proc)")
	out := fs.String("out", "bench-conns.json", "JSON report path")
	heap := fs.Bool("heap-profiles", true, "write the server's heap profile at each level beside the JSON (<out>-heap-<streams>.pb.gz)")
	if err := config.Parse(fs, args[1:]); err != nil {
		return err
	}
	var err error
	if cfg.Levels, err = positiveInts("streams", *levels); err != nil {
		return err
	}
	if cfg.Pids, err = parsePids(*pids); err != nil {
		return err
	}
	if *heap {
		cfg.HeapProfiles = strings.TrimSuffix(*out, filepath.Ext(*out)) + "-heap-"
	}
	cfg.Progress = os.Stderr
	rep, err := bench.RunConns(ctx, cfg)
	if rep != nil && len(rep.Levels) > 0 {
		rep.WriteTable(os.Stdout)
		if werr := rep.WriteJSON(*out); werr != nil {
			return werr
		}
		fmt.Println("report:", *out)
	}
	return err
}
