package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// The floor server carries fanout-v1 whole: every message reaches every
// member of its room once, in order, in either framing, with a delivery
// tick and without, in frames the generated client's codec decodes, and the
// report is a floor report that a Parley report compares with.
func TestFloorServerCarriesTheWorkload(t *testing.T) {
	for _, tick := range []time.Duration{0, 2 * time.Millisecond} {
		for _, c := range []struct{ oneFrame, fullDecode bool }{{false, false}, {false, true}, {true, false}} {
			t.Run(fmt.Sprintf("tick=%s/one_frame_per_message=%v/full_decode=%v", tick, c.oneFrame, c.fullDecode), func(t *testing.T) {
				testFloorServer(t, tick, c.oneFrame, c.fullDecode)
			})
		}
	}
}

// serveFloor starts a FloorServer on 127.0.0.1 for the test.
func serveFloor(t *testing.T, tick time.Duration) (*FloorServer, string) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs, gs, stop := NewFloorServer(tick)
	go gs.Serve(lis)
	t.Cleanup(stop)
	t.Cleanup(gs.Stop)
	return fs, lis.Addr().String()
}

func testFloorServer(t *testing.T, tick time.Duration, oneFrame, fullDecode bool) {
	_, addr := serveFloor(t, tick)
	rep, err := RunFanout(context.Background(), FanoutConfig{
		Addr: addr, Floor: true, Rooms: 3, Members: 4, Rates: []int{60, 120}, Step: time.Second,
		Warmup: 100 * time.Millisecond, Grace: 2 * time.Second, BodyBytes: 64, Conns: 2, Progress: io.Discard,
		OneFramePerMessage: oneFrame, FullDecode: fullDecode,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "floor" || len(rep.Steps) != 2 {
		t.Fatalf("mode %q, %d steps", rep.Mode, len(rep.Steps))
	}
	for _, s := range rep.Steps {
		if s.Lost != 0 || s.Dup != 0 || s.Reordered != 0 || s.Failed != 0 || s.Delivered != float64(s.Offered*4) {
			t.Fatalf("step %+v", s)
		}
	}
	// The comparison, on this report with latencies that do not depend on
	// how busy the machine is.
	floor := *rep
	floor.Steps = []Step{{Offered: 60, P99: 5}, {Offered: 120, P99: 8}}
	floor.computePeak()
	parley := &Report{Workload: "fanout-v1", Mode: "parley", Machine: rep.Machine, Rooms: 3, Members: 4, BodyBytes: 64, StepSeconds: 1,
		Steps: []Step{{Offered: 60, P99: 5}, {Offered: 120, P99: 150}}}
	parley.computePeak()
	line, err := parley.CompareFloor(&floor)
	if err != nil || parley.FloorPeak != 120 || !parley.FloorCapped || parley.PeakOfFloor != 0.5 || !strings.Contains(line, "50 % of this run's --floor peak") {
		t.Fatalf("compare: %q, %v (%+v)", line, err, parley)
	}
	var table strings.Builder
	parley.WriteTable(&table)
	if !strings.Contains(table.String(), line) {
		t.Fatalf("table lacks the comparison:\n%s", table.String())
	}
	if _, err := parley.Compare(&floor); err == nil {
		t.Fatal("a floor report passed for a raw one")
	}
}

// With a tick, a stream's messages wait for it and go out together: several
// to a MessageBatch frame once more than one arrives per tick, and none
// sooner than the tick allows.
func TestFloorServerBatchesByTick(t *testing.T) {
	const tick = 50 * time.Millisecond
	fs, addr := serveFloor(t, tick)
	// 40 msgs/s per room: two per tick on average.
	rep, err := RunFanout(context.Background(), FanoutConfig{
		Addr: addr, Floor: true, Rooms: 3, Members: 4, Rates: []int{120}, Step: time.Second,
		Warmup: 100 * time.Millisecond, Grace: 2 * time.Second, BodyBytes: 64, Conns: 2, Progress: io.Discard, FullDecode: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Steps[0]
	if s.Lost != 0 || s.Dup != 0 || s.Reordered != 0 || s.Delivered != 480 {
		t.Fatalf("step %+v", s)
	}
	frames, msgs := fs.Sent()
	if frames == 0 || float64(msgs)/float64(frames) < 1.5 {
		t.Fatalf("%d messages in %d frames: want about two to a frame at two per tick", msgs, frames)
	}
	// Sends fall evenly over the tick, so the median waits about half of it.
	if s.P50 < ms(tick)/5 {
		t.Fatalf("median latency %.1f ms with a %s tick: messages did not wait for it", s.P50, tick)
	}
}

func TestFloorAndRawAreOneModeAtATime(t *testing.T) {
	cfg := FanoutConfig{Addr: "x", RedisURL: "y", Raw: true, Floor: true, Rooms: 1, Members: 1, Rates: []int{1}, Step: time.Second, BodyBytes: 64}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "one mode at a time") {
		t.Fatalf("Validate: %v", err)
	}
}
