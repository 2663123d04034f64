package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Step is one offered-load step's result.
type Step struct {
	Offered     int                `json:"offered_per_s"`
	Sent        float64            `json:"sent_per_s"`
	Delivered   float64            `json:"delivered_per_s"`
	Lost        int64              `json:"lost"`
	Dup         int64              `json:"dup"`
	Reordered   int64              `json:"reordered"`
	Failed      int64              `json:"send_failed"`
	P50         float64            `json:"latency_p50_ms"`
	P99         float64            `json:"latency_p99_ms"`
	Max         float64            `json:"latency_max_ms"`
	CPU         map[string]float64 `json:"cpu_percent"`
	ServerRSSMB float64            `json:"server_rss_mb,omitempty"`
	// Resumed counts streams the server ended as too slow that resumed,
	// by the step of the last message they had received (the first step
	// when none yet).
	Resumed int64 `json:"resumed_streams,omitempty"`
	// StartedAt is when the measured part of the step began; Slow lists the
	// stretches of its send time delivered at or above SlowThreshold.
	StartedAt time.Time    `json:"started_at,omitzero"`
	Slow      []SlowWindow `json:"slow_windows,omitempty"`
}

// Report is a whole run.
type Report struct {
	Workload    string    `json:"workload"`
	Mode        string    `json:"mode"` // "parley", "raw" or "floor"
	Machine     string    `json:"machine"`
	Started     time.Time `json:"started"`
	Rooms       int       `json:"rooms"`
	Members     int       `json:"members_per_room"`
	BodyBytes   int       `json:"body_bytes"`
	StepSeconds float64   `json:"step_seconds"`
	PreWarmS    float64   `json:"prewarm_seconds,omitempty"`
	Persistence string    `json:"persistence"`
	Steps       []Step    `json:"steps"`
	Peak        int       `json:"peak_per_s"`
	// Set by Compare on a Parley report: the --raw ceiling of the same run
	// and Peak as a fraction of it.
	RawCeiling       int     `json:"raw_ceiling_per_s,omitempty"`
	RawCeilingCapped bool    `json:"raw_ceiling_capped,omitempty"` // the highest raw step passed: the ceiling is at least RawCeiling
	PeakOfRaw        float64 `json:"peak_fraction_of_raw,omitempty"`
	// Set by CompareFloor on a Parley report: the peak of the same
	// workload against NewFloorServer (grpc-go on both ends and nothing
	// else) in the same run, and Peak as a fraction of it.
	FloorPeak   int      `json:"floor_peak_per_s,omitempty"`
	FloorCapped bool     `json:"floor_capped,omitempty"` // the highest floor step passed: the floor's peak is at least FloorPeak
	PeakOfFloor float64  `json:"peak_fraction_of_floor,omitempty"`
	Notes       []string `json:"notes,omitempty"`
}

// ReadReport reads a fanout-v1 JSON report.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Workload != "fanout-v1" {
		return nil, fmt.Errorf("%s: a %q report, want fanout-v1", path, r.Workload)
	}
	return &r, nil
}

// Compare records raw's ceiling (its peak) in the Parley report r and
// returns the sentence stating r's peak as a fraction of it.
func (r *Report) Compare(raw *Report) (string, error) {
	if err := r.comparable(raw, "raw"); err != nil {
		return "", err
	}
	r.RawCeiling = raw.Peak
	r.RawCeilingCapped = topStepPassed(raw)
	r.PeakOfRaw = float64(r.Peak) / float64(raw.Peak)
	return r.comparison(), nil
}

// CompareFloor records the grpc-go floor's peak (a report of the same
// workload against NewFloorServer) in the Parley report r and returns the
// sentence stating r's peak as a fraction of it.
func (r *Report) CompareFloor(floor *Report) (string, error) {
	if err := r.comparable(floor, "floor"); err != nil {
		return "", err
	}
	r.FloorPeak = floor.Peak
	r.FloorCapped = topStepPassed(floor)
	r.PeakOfFloor = float64(r.Peak) / float64(floor.Peak)
	return r.floorComparison(), nil
}

// comparable checks that other, a report of mode, ran r's workload on r's
// machine and has a peak to compare with.
func (r *Report) comparable(other *Report, mode string) error {
	if r.Mode != "parley" || other.Mode != mode {
		return fmt.Errorf("compare a parley report with a %s one, got %q and %q", mode, r.Mode, other.Mode)
	}
	if r.Rooms != other.Rooms || r.Members != other.Members || r.BodyBytes != other.BodyBytes || r.StepSeconds != other.StepSeconds || r.Machine != other.Machine {
		return fmt.Errorf("the reports ran different workloads or machines: %d rooms x %d members, %d-byte bodies, %gs steps on %q against %d x %d, %d bytes, %gs on %q",
			r.Rooms, r.Members, r.BodyBytes, r.StepSeconds, r.Machine, other.Rooms, other.Members, other.BodyBytes, other.StepSeconds, other.Machine)
	}
	if other.Peak <= 0 {
		return fmt.Errorf("the %s run has no passing step: nothing to compare with", mode)
	}
	return nil
}

// topStepPassed reports whether the highest step of r passed: its peak is
// then a lower bound.
func topStepPassed(r *Report) bool {
	return len(r.Steps) > 0 && r.Steps[len(r.Steps)-1].Offered == r.Peak
}

// comparison states the peak against the raw ceiling (set by Compare).
func (r *Report) comparison() string {
	capped := ""
	if r.RawCeilingCapped {
		capped = "; the highest raw step passed, so the ceiling is at least that and the fraction at most this"
	}
	return fmt.Sprintf("Parley's peak %d msgs/s is %.2f %% of this run's --raw ceiling (Redis pub/sub alone, one PSUBSCRIBE connection fanning out in-process: %d msgs/s%s)",
		r.Peak, 100*r.PeakOfRaw, r.RawCeiling, capped)
}

// floorComparison states the peak against the grpc-go floor (set by
// CompareFloor).
func (r *Report) floorComparison() string {
	capped := ""
	if r.FloorCapped {
		capped = "; the highest floor step passed, so the floor's peak is at least that and the fraction at most this"
	}
	return fmt.Sprintf("Parley's peak %d msgs/s is %.0f %% of this run's --floor peak (the same load generator against a server that only hands each message to its room's streams, grpc-go on both ends: %d msgs/s%s)",
		r.Peak, 100*r.PeakOfFloor, r.FloorPeak, capped)
}

// peak is the highest step with p99 < 100 ms and zero loss.
func (r *Report) computePeak() {
	r.Peak = 0
	for _, s := range r.Steps {
		if s.Lost == 0 && s.Failed == 0 && s.P99 < ms(SlowThreshold) && s.Offered > r.Peak {
			r.Peak = s.Offered
		}
	}
}

// WriteTable prints the report as a table.
func (r *Report) WriteTable(w io.Writer) {
	prewarm := ""
	if r.PreWarmS > 0 {
		prewarm = fmt.Sprintf(" after %.0fs of unmeasured warm-up", r.PreWarmS)
	}
	fmt.Fprintf(w, "\n%s (%s), %d rooms x %d members, %d-byte bodies, %.0fs steps%s, persistence %s\nmachine: %s\n\n",
		r.Workload, r.Mode, r.Rooms, r.Members, r.BodyBytes, r.StepSeconds, prewarm, r.Persistence, r.Machine)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var names []string
	if len(r.Steps) > 0 {
		for n := range r.Steps[0].CPU {
			names = append(names, n)
		}
		sort.Strings(names)
	}
	hdr := "offered/s\tsent/s\tdelivered/s\tlost\tdup\treord\tfailed\tp50 ms\tp99 ms\tmax ms\t"
	for _, n := range names {
		hdr += "cpu " + n + "\t"
	}
	hdr += "rss MB\t"
	fmt.Fprintln(tw, hdr)
	for _, s := range r.Steps {
		line := fmt.Sprintf("%d\t%.0f\t%.0f\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t", s.Offered, s.Sent, s.Delivered, s.Lost, s.Dup, s.Reordered, s.Failed, s.P50, s.P99, s.Max)
		for _, n := range names {
			line += fmt.Sprintf("%.0f%%\t", s.CPU[n])
		}
		line += fmt.Sprintf("%.0f\t", s.ServerRSSMB)
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	fmt.Fprintf(w, "\npeak (p99 < 100 ms, no loss): %d msgs/s (%d deliveries/s)\n", r.Peak, r.Peak*r.Members)
	if r.RawCeiling > 0 {
		fmt.Fprintln(w, r.comparison())
	}
	if r.FloorPeak > 0 {
		fmt.Fprintln(w, r.floorComparison())
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Machine describes this machine: CPU model, cores, memory.
func Machine() string {
	cpu := "unknown cpu"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0]); len(f) >= 2 {
			var kb int64
			fmt.Sscan(f[1], &kb)
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%s, %d cores%s", cpu, numCPU(), mem)
}

// writeJSON writes v as indented JSON to path.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
