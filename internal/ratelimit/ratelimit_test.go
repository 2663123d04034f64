package ratelimit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	l := New(2, 3) // 2/s, burst 3
	now := time.Unix(0, 0)
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow("k", now); !ok {
			t.Fatalf("burst token %d refused", i)
		}
	}
	ok, wait := l.Allow("k", now)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("4th: ok=%v wait=%v, want refused with 500ms", ok, wait)
	}
	if ok, _ := l.Allow("other", now); !ok {
		t.Fatal("keys are not independent")
	}
	if ok, _ := l.Allow("k", now.Add(500*time.Millisecond)); !ok {
		t.Fatal("token not refilled after 500ms")
	}
}

func TestSingleBucket(t *testing.T) {
	b := NewBucket(2, 3)
	now := time.Unix(0, 0)
	for i := 0; i < 3; i++ {
		if ok, _ := b.Allow(now); !ok {
			t.Fatalf("burst token %d refused", i)
		}
	}
	if ok, wait := b.Allow(now); ok || wait != 500*time.Millisecond {
		t.Fatalf("4th: ok=%v wait=%v, want refused with 500ms", ok, wait)
	}
	if ok, _ := b.Allow(now.Add(500 * time.Millisecond)); !ok {
		t.Fatal("token not refilled after 500ms")
	}
}
