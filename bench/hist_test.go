package bench

import (
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	var h Hist
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.Quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.07 {
			t.Errorf("q%.2f = %s, want %s within 7%%", c.q, got, c.want)
		}
	}
	if h.Max() != time.Second || h.Count() != 1000 {
		t.Fatalf("max %s count %d", h.Max(), h.Count())
	}
	var small Hist
	small.Record(3 * time.Microsecond)
	if q := small.Quantile(0.5); q != 3*time.Microsecond {
		t.Fatalf("small quantile %s", q)
	}
}

func TestRecordAllMatchesRecord(t *testing.T) {
	var a, b Hist
	ds := []time.Duration{0, 3 * time.Microsecond, 2 * time.Millisecond, 70 * time.Millisecond, -time.Second}
	for _, d := range ds {
		a.Record(d)
	}
	b.RecordAll(ds)
	if a.Count() != b.Count() || a.Max() != b.Max() || a.Quantile(0.5) != b.Quantile(0.5) || a.Quantile(0.99) != b.Quantile(0.99) {
		t.Fatalf("RecordAll differs: n %d/%d max %v/%v", a.Count(), b.Count(), a.Max(), b.Max())
	}
}
