package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

// cpuTime returns the user+system CPU time a process has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// rssBytes returns a process's resident set size.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// cpuMeter measures the CPU% of named processes over an interval. A
// process counts with its descendants (PostgreSQL is a postmaster with one
// backend process per connection), except descendants measured under a
// name of their own. A descendant that exits during the interval loses its
// CPU time since the start (it can no longer be read): figures are then a
// little low, never negative.
type cpuMeter struct {
	pids  map[string]int
	start map[string]map[int]time.Duration
	t0    time.Time
}

func newCPUMeter(pids map[string]int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: map[string]map[int]time.Duration{}, t0: time.Now()}
	for name, pid := range pids {
		if c, err := treeCPUTimes(pid, m.measured()); err == nil {
			m.start[name] = c
		}
	}
	return m
}

// percent returns CPU% (100 = one core) per process since the meter started.
func (m *cpuMeter) percent() map[string]float64 {
	wall := time.Since(m.t0)
	out := map[string]float64{}
	for name, pid := range m.pids {
		now, err := treeCPUTimes(pid, m.measured())
		if err != nil {
			continue
		}
		var used time.Duration
		for p, c := range now {
			used += max(c-m.start[name][p], 0)
		}
		out[name] = float64(used) / float64(wall) * 100
	}
	return out
}

// measured is the set of pids the meter reports on their own.
func (m *cpuMeter) measured() map[int]bool {
	out := make(map[int]bool, len(m.pids))
	for _, pid := range m.pids {
		out[pid] = true
	}
	return out
}

// treeCPUTimes returns the CPU time of pid and of each of its live
// descendants, except those in skip (measured on their own) and theirs.
func treeCPUTimes(pid int, skip map[int]bool) (map[int]time.Duration, error) {
	own, err := cpuTime(pid)
	if err != nil {
		return nil, err
	}
	out := map[int]time.Duration{pid: own}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out, nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	queue := children[pid]
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if skip[p] {
			continue
		}
		queue = append(queue, children[p]...)
		if c, err := cpuTime(p); err == nil {
			out[p] = c
		}
	}
	return out, nil
}

// scrapeMetrics fetches a /metrics URL and sums its series by name (see
// familySums).
func scrapeMetrics(ctx context.Context, url string) (map[string]float64, error) {
	mfs, err := scrapeFamilies(ctx, url)
	if err != nil {
		return nil, err
	}
	return familySums(slices.Collect(maps.Values(mfs))), nil
}

// scrapeFamilies fetches and parses a /metrics URL (Prometheus text format).
func scrapeFamilies(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	body, err := getMetrics(ctx, url)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return parseFamilies(body)
}

// parseFamilies parses a Prometheus text exposition.
func parseFamilies(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// getMetrics fetches a /metrics URL; the caller closes the body.
func getMetrics(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return resp.Body, nil
}

// gatherSums sums every series of each metric a Gatherer holds, by name
// (see familySums).
func gatherSums(g prometheus.Gatherer) (map[string]float64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	return familySums(mfs), nil
}

// familySums sums every series of each metric family by name: counters,
// gauges and untyped values; histograms by their count.
func familySums(mfs []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				out[mf.GetName()] += m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[mf.GetName()] += m.GetGauge().GetValue()
			case m.Untyped != nil:
				out[mf.GetName()] += m.GetUntyped().GetValue()
			case m.Histogram != nil:
				out[mf.GetName()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// openFilesLimit returns a process's soft limit of open files (0: unknown).
func openFilesLimit(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				if f[0] == "unlimited" {
					return 1 << 40
				}
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}
