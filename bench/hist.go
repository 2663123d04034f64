package bench

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// Hist is a log-linear latency histogram (16 sub-buckets per power of two of
// microseconds: about 6% resolution) that is cheap to record into from many
// goroutines. Safe for concurrent use.
type Hist struct {
	mu     sync.Mutex
	counts [64 * 16]uint64
	n      uint64
	max    time.Duration
}

func bucketOf(d time.Duration) int {
	us := uint64(d / time.Microsecond)
	if us < 16 {
		return int(us)
	}
	exp := 63 - bits.LeadingZeros64(us) // >= 4
	sub := (us >> (exp - 4)) & 15
	return (exp-3)*16 + int(sub)
}

func bucketUpper(b int) time.Duration {
	if b < 16 {
		return time.Duration(b+1) * time.Microsecond
	}
	exp := b/16 + 3
	sub := uint64(b % 16)
	return time.Duration(((16 + sub + 1) << (exp - 4))) * time.Microsecond
}

// Record adds one observation.
func (h *Hist) Record(d time.Duration) {
	h.mu.Lock()
	h.add(d)
	h.mu.Unlock()
}

// RecordAll adds every observation of ds under one lock.
func (h *Hist) RecordAll(ds []time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range ds {
		h.add(d)
	}
}

// add records d; h.mu is held.
func (h *Hist) add(d time.Duration) {
	d = max(d, 0)
	h.counts[min(bucketOf(d), len(h.counts)-1)]++
	h.n++
	h.max = max(h.max, d)
}

// Merge adds o's observations.
func (h *Hist) Merge(o *Hist) {
	o.mu.Lock()
	defer o.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Quantile returns an upper bound of the q-quantile (0 when empty).
func (h *Hist) Quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketUpper(i), h.max)
		}
	}
	return h.max
}

// Max is the largest observation.
func (h *Hist) Max() time.Duration { h.mu.Lock(); defer h.mu.Unlock(); return h.max }

// Count is the number of observations.
func (h *Hist) Count() uint64 { h.mu.Lock(); defer h.mu.Unlock(); return h.n }
