package bench

import (
	"strings"
	"testing"
	"time"
)

func TestSlowTimelineMergesConsecutiveBuckets(t *testing.T) {
	var tl slowTimeline
	start := time.Unix(1000, 0)
	at := func(s float64) int64 { return start.Add(time.Duration(s * float64(time.Second))).UnixNano() }
	tl.record([]slowDelivery{{start.UnixNano(), time.Second}}) // before begin: ignored
	if !tl.started().IsZero() {
		t.Error("started before begin")
	}
	tl.begin(start, 2*time.Second)
	tl.record([]slowDelivery{{at(0.41), 120 * time.Millisecond}, {at(0.52), 180 * time.Millisecond}})
	tl.record([]slowDelivery{{at(0.55), 110 * time.Millisecond}, {at(1.73), 101 * time.Millisecond}})
	tl.record([]slowDelivery{{at(9.05), 300 * time.Millisecond}}) // sent after the step: at its own time
	if !tl.started().Equal(start) {
		t.Errorf("started = %s, want %s", tl.started(), start)
	}
	ws := tl.windows()
	want := []SlowWindow{
		{FromS: 0.4, ToS: 0.6, Slow: 3, MaxMS: 180},
		{FromS: 1.7, ToS: 1.8, Slow: 1, MaxMS: 101},
		{FromS: 9.0, ToS: 9.1, Slow: 1, MaxMS: 300},
	}
	if len(ws) != len(want) {
		t.Fatalf("windows = %+v, want %+v", ws, want)
	}
	for i := range want {
		w, x := ws[i], want[i]
		if w != x { // bounds compare exactly: they are rounded to the bucket
			t.Errorf("window %d = %+v, want %+v", i, w, x)
		}
	}
	d := describeSlow(ws)
	if !strings.HasPrefix(d, "5 deliveries >= 100ms in 3 window(s) of send time: 0.4-0.6s 3 (max 180ms)") {
		t.Errorf("describeSlow = %q", d)
	}
	if describeSlow(nil) != "" {
		t.Error("no windows should describe as empty")
	}
}
