package bench

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"
)

// TestStampScheduledCountsAPublishersWait: a publisher that stalls for
// 100 ms catches up with a burst. Stamped at send time, the burst's
// messages look on time; stamped at their scheduled time, each carries
// the wait, and stamps stay one interval apart.
func TestStampScheduledCountsAPublishersWait(t *testing.T) {
	for _, scheduled := range []bool{false, true} {
		cfg := FanoutConfig{Rooms: 1, Members: 1, Rates: []int{100}, Step: 300 * time.Millisecond,
			BodyBytes: 100, Progress: io.Discard, StampScheduled: scheduled}
		type sent struct{ stamp, at int64 }
		var mu sync.Mutex
		var got []sent
		publish := func(_ int, seq int64, body string) error {
			p, ok := parseBody(body)
			if !ok {
				t.Fatalf("body %q does not parse", body)
			}
			mu.Lock()
			got = append(got, sent{p.sent, time.Now().UnixNano()})
			mu.Unlock()
			if seq == 3 {
				time.Sleep(100 * time.Millisecond)
			}
			return nil
		}
		if err := runSteps(context.Background(), cfg, &Report{}, []*stepStats{{}}, publish); err != nil {
			t.Fatal(err)
		}
		if len(got) != 30 {
			t.Fatalf("scheduled %v: %d messages published, want 30", scheduled, len(got))
		}
		// The message after the stall was due 10 ms after the third.
		late := time.Duration(got[3].at - got[3].stamp)
		if scheduled {
			for i := 1; i < len(got); i++ {
				if d := time.Duration(got[i].stamp - got[i-1].stamp); d != 10*time.Millisecond {
					t.Fatalf("scheduled stamps %d and %d are %s apart, want 10ms", i-1, i, d)
				}
			}
			if late < 80*time.Millisecond {
				t.Errorf("the message after the stall carries %s of its wait, want about 90ms", late)
			}
		} else if late > 5*time.Millisecond {
			t.Errorf("a send-time stamp is %s before its send", late)
		}
	}
}
