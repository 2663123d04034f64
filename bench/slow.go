package bench

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// SlowThreshold is the latency fanout-v1's peak is judged by (p99 below it):
// the deliveries at or above it are the ones a slow window counts.
const SlowThreshold = 100 * time.Millisecond

// slowBucket is the resolution of a step's slow-delivery timeline, by send time.
const slowBucket = 100 * time.Millisecond

// SlowWindow is a stretch of a measured step whose sends were delivered late:
// consecutive 100 ms buckets of send time with at least one delivery at or
// above SlowThreshold. A p99 above the threshold comes from a few such
// windows (one stall of 200 ms at 1,000 msgs/s is 2 % of a 10 s step's
// deliveries) or from load spread over the whole step; the windows tell which,
// and their times (since the step's start) line up with other processes' logs.
type SlowWindow struct {
	FromS float64 `json:"from_s"` // send time since the measured step started
	ToS   float64 `json:"to_s"`
	Slow  int64   `json:"slow_deliveries"`
	MaxMS float64 `json:"max_ms"`
}

// slowTimeline records, per bucket of send time, the deliveries at or above
// SlowThreshold and their maximum. Cheap on the fast path: only slow
// deliveries take its lock.
type slowTimeline struct {
	mu    sync.Mutex
	start int64 // unix ns of the measured step's start; 0 before it
	count []int64
	max   []time.Duration
}

func (t *slowTimeline) begin(start time.Time, d time.Duration) {
	n := min(int(d/slowBucket)+1, maxSlowBuckets)
	t.mu.Lock()
	t.start, t.count, t.max = start.UnixNano(), make([]int64, n), make([]time.Duration, n)
	t.mu.Unlock()
}

// slowDelivery is one delivery at or above SlowThreshold.
type slowDelivery struct {
	sent int64 // unix ns
	lat  time.Duration
}

// maxSlowBuckets bounds the timeline's growth past the step (a publisher
// that fell behind sends late): ten minutes of send time.
const maxSlowBuckets = int(10 * time.Minute / slowBucket)

// record notes slow deliveries (each at or above SlowThreshold). Sends
// after the step's nominal end (a late publisher catching up) get buckets
// of their own, at their true time.
func (t *slowTimeline) record(ds []slowDelivery) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.start == 0 {
		return
	}
	for _, d := range ds {
		b := min(max(int((d.sent-t.start)/int64(slowBucket)), 0), maxSlowBuckets)
		for b >= len(t.count) {
			t.count, t.max = append(t.count, 0), append(t.max, 0)
		}
		t.count[b]++
		t.max[b] = max(t.max[b], d.lat)
	}
}

// started is when the measured step began (zero before begin).
func (t *slowTimeline) started() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.start == 0 {
		return time.Time{}
	}
	return time.Unix(0, t.start).UTC()
}

// windows merges consecutive slow buckets.
func (t *slowTimeline) windows() []SlowWindow {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ws []SlowWindow
	for b, c := range t.count {
		if c == 0 {
			continue
		}
		from, to := seconds(b), seconds(b+1)
		if n := len(ws); n > 0 && ws[n-1].ToS == from {
			w := &ws[n-1]
			w.ToS = to
			w.Slow += c
			w.MaxMS = max(w.MaxMS, ms(t.max[b]))
			continue
		}
		ws = append(ws, SlowWindow{FromS: from, ToS: to, Slow: c, MaxMS: ms(t.max[b])})
	}
	return ws
}

// seconds is the start of bucket b in seconds since the step's start,
// rounded to the millisecond (9.6, not 9.600000000000001, in the JSON).
func seconds(b int) float64 {
	return math.Round(float64(b)*slowBucket.Seconds()*1000) / 1000
}

// describeSlow is the progress line's summary: the windows with the most
// slow deliveries first, at most three.
func describeSlow(ws []SlowWindow) string {
	if len(ws) == 0 {
		return ""
	}
	var total int64
	for _, w := range ws {
		total += w.Slow
	}
	top := slices.Clone(ws)
	slices.SortStableFunc(top, func(a, b SlowWindow) int { return cmp.Compare(b.Slow, a.Slow) }) // largest first
	var b strings.Builder
	fmt.Fprintf(&b, "%d deliveries >= %s in %d window(s) of send time", total, SlowThreshold, len(ws))
	for i, w := range top[:min(3, len(top))] {
		sep := ": "
		if i > 0 {
			sep = "; "
		}
		fmt.Fprintf(&b, "%s%.1f-%.1fs %d (max %.0fms)", sep, w.FromS, w.ToS, w.Slow, w.MaxMS)
	}
	return b.String()
}
