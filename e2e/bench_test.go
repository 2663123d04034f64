package e2e

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/bench"
)

// TestBenchFanoutSmoke runs fanout-v1 on a tiny configuration, through
// Parley and on Redis alone, and checks the reports are well formed. The
// real figures come from `make bench` (docs/PERFORMANCE.md), never from tests.
func TestBenchFanoutSmoke(t *testing.T) {
	c := newCluster(t, 1)
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
	}
}
