// Package ratelimit is a per-key token bucket, local to one process.
package ratelimit

import (
	"sync"
	"time"
)

// Limiter is a per-key token bucket. It is safe for concurrent use; idle
// keys are forgotten once the map grows large.
type Limiter struct {
	rate  float64
	burst float64
	mu    sync.Mutex
	b     map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a Limiter refilling rate tokens per second up to burst.
func New(rate float64, burst int) *Limiter {
	return &Limiter{rate: rate, burst: float64(burst), b: make(map[string]*bucket)}
}

// Allow takes a token for key; if none is left it returns how long until one is.
func (l *Limiter) Allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b[key]
	if b == nil {
		if len(l.b) > 100_000 { // forget idle keys; a full bucket is the default anyway
			for k, v := range l.b {
				if now.Sub(v.last) > time.Duration(l.burst/l.rate*float64(time.Second)) {
					delete(l.b, k)
				}
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.b[key] = b
	}
	return b.take(now, l.rate, l.burst)
}

// take refills b for the time since its last use and takes a token.
func (b *bucket) take(now time.Time, rate, burst float64) (bool, time.Duration) {
	if !b.last.IsZero() {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// Bucket is a single token bucket for one owner (e.g. one stream): the
// Limiter without the map, for when the key is implicit. Not safe for
// concurrent use.
type Bucket struct {
	rate, burst float64
	b           bucket
}

// NewBucket returns a full Bucket refilling rate tokens per second up to burst.
func NewBucket(rate float64, burst int) Bucket {
	return Bucket{rate: rate, burst: float64(burst), b: bucket{tokens: float64(burst)}}
}

// Allow takes a token; if none is left it returns how long until one is.
func (l *Bucket) Allow(now time.Time) (bool, time.Duration) { return l.b.take(now, l.rate, l.burst) }
