package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/parleychat/parley/bench"
	"github.com/parleychat/parley/internal/config"
)

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "fanout" {
		return fmt.Errorf("usage: parley bench fanout [flags] (the only workload so far)")
	}
	fs := flag.NewFlagSet("parley bench fanout", flag.ContinueOnError)
	var cfg bench.FanoutConfig
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "Parley server to load")
	fs.StringVar(&cfg.RedisURL, "redis-url", "redis://127.0.0.1:6379", "Redis for --raw")
	fs.BoolVar(&cfg.Raw, "raw", false, "the same workload on Redis pub/sub alone (this machine's ceiling)")
	fs.IntVar(&cfg.Rooms, "rooms", 100, "rooms (R)")
	fs.IntVar(&cfg.Members, "members", 10, "member connections per room, the publisher included (S)")
	rates := fs.String("rates", "1000,2000,5000,10000,20000,50000,100000", "offered msgs/s per step, in total")
	fs.DurationVar(&cfg.Step, "step", 10*time.Second, "measured time per step")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured warm-up per step")
	fs.DurationVar(&cfg.Grace, "grace", 5*time.Second, "how long a message may take before it counts as lost")
	fs.IntVar(&cfg.BodyBytes, "body-bytes", 100, "message body size")
	fs.IntVar(&cfg.Conns, "conns", 8, "gRPC connections the streams are spread over")
	fs.IntVar(&cfg.StopAfter, "stop-after", 2, "stop after this many failing steps in a row (0: run all)")
	fs.StringVar(&cfg.Persistence, "persistence", "on (Kafka acks=all + persister)", "what to report about persistence")
	pids := fs.String("pids", "", "processes to measure, name=pid,... (e.g. server=123,redis=456,persister=789)")
	out := fs.String("out", "", "JSON report path (default: bench-fanout-<mode>.json)")
	if err := config.Parse(fs, args[1:]); err != nil {
		return err
	}
	for _, r := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			return fmt.Errorf("rates: %q is not a positive number", r)
		}
		cfg.Rates = append(cfg.Rates, n)
	}
	cfg.Pids = map[string]int{}
	for _, kv := range strings.Split(*pids, ",") {
		if kv == "" {
			continue
		}
		name, v, ok := strings.Cut(kv, "=")
		pid, err := strconv.Atoi(v)
		if !ok || err != nil {
			return fmt.Errorf("pids: %q is not name=pid", kv)
		}
		cfg.Pids[name] = pid
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
	return nil
}
