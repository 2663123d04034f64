package bench

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestCompareStatesThePeakAgainstTheRawCeiling(t *testing.T) {
	parley := &Report{Workload: "fanout-v1", Mode: "parley", Rooms: 100, Members: 10, Steps: []Step{{Offered: 1000, P99: 20}, {Offered: 2000, P99: 90}, {Offered: 5000, P99: 150}}}
	parley.computePeak()
	raw := &Report{Workload: "fanout-v1", Mode: "raw", Rooms: 100, Members: 10, Steps: []Step{{Offered: 1000, P99: 1}, {Offered: 100000, P99: 5}, {Offered: 200000, P99: 120}}}
	raw.computePeak()
	line, err := parley.Compare(raw)
	if err != nil {
		t.Fatal(err)
	}
	if parley.RawCeiling != 100000 || parley.RawCeilingCapped || parley.PeakOfRaw != 0.02 || !strings.Contains(line, "2.00 % of this run's --raw ceiling") {
		t.Fatalf("compare: %q (ceiling %d capped %v fraction %v)", line, parley.RawCeiling, parley.RawCeilingCapped, parley.PeakOfRaw)
	}

	// The highest raw step passed: the ceiling is a lower bound, and the report says so.
	raw.Steps = raw.Steps[:2]
	raw.computePeak()
	if line, _ = parley.Compare(raw); !parley.RawCeilingCapped || !strings.Contains(line, "at least") {
		t.Fatalf("capped compare: %q", line)
	}

	// It survives the JSON round trip and shows in the table.
	path := filepath.Join(t.TempDir(), "p.json")
	if err := parley.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReport(path)
	if err != nil || back.RawCeiling != 100000 || back.PeakOfRaw != 0.02 {
		t.Fatalf("read back: %+v, %v", back, err)
	}
	var table strings.Builder
	back.WriteTable(&table)
	if !strings.Contains(table.String(), "2.00 % of this run's --raw ceiling") {
		t.Fatalf("table lacks the comparison:\n%s", table.String())
	}

	if _, err := raw.Compare(parley); err == nil {
		t.Fatal("compared a raw report against a parley one")
	}
	if _, err := parley.Compare(&Report{Workload: "fanout-v1", Mode: "raw", Rooms: 100, Members: 10}); err == nil {
		t.Fatal("compared against a raw run with no passing step")
	}
	other := *raw
	other.Members = 5
	if _, err := parley.Compare(&other); err == nil {
		t.Fatal("compared against a raw run of another workload")
	}
}
