package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable prints the report as tables a person can read.
func (r *ConnsReport) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "\n%s: idle authenticated Connect streams, one room each; %d streams per room from %d users, up to %d streams per user, %d streams per HTTP/2 connection\nmachine: %s\n\n",
		r.Workload, r.MembersPerRoom, r.UsersPerRoom, r.StreamsPerUser, r.StreamsPerConn, r.Machine)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\tconns\tsrc addrs\tusers\trooms\topen s\tserver RSS MB\theap MB\tstacks MB\tgoroutines\tRSS/stream KB\theap/stream KB\tstack/stream KB\tidle cpu server\tidle cpu loadgen\t")
	fmt.Fprintf(tw, "0\t-\t-\t-\t-\t-\t%.0f\t%.0f\t%.0f\t%.0f\t-\t-\t-\t%.1f%%\t%.1f%%\t\n",
		r.Baseline.RSSMB, r.Baseline.HeapInuseMB, r.Baseline.StackMB, r.Baseline.Goroutines, r.Baseline.CPU["server"], r.Baseline.CPU["loadgen"])
	for _, l := range r.Levels {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f%%\t%.1f%%\t\n",
			l.Streams, l.Conns, l.SourceAddrs, l.Users, l.Rooms, l.OpenSeconds, l.Idle.RSSMB, l.Idle.HeapInuseMB, l.Idle.StackMB, l.Idle.Goroutines,
			l.RSSPerStreamKB, l.HeapPerStreamKB, l.StackPerStreamKB, l.Idle.CPU["server"], l.Idle.CPU["loadgen"])
	}
	tw.Flush()
	fmt.Fprintln(w, "\n(per stream: above the baseline with no stream open; heap in use after a forced GC)")
	fmt.Fprintln(w, "\ntrickle: every room sends at its rate, each message reaches all the room's streams")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\tmsgs/s per room\tsent/s\tdelivered/s\tlost\tdup\tfailed\tp50 ms\tp99 ms\tmax ms\tcpu server\tcpu loadgen\tserver RSS MB\t")
	for _, l := range r.Levels {
		t := l.Trickle
		fmt.Fprintf(tw, "%d\t%g\t%.0f\t%.0f\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.0f%%\t%.0f%%\t%.0f\t\n",
			l.Streams, t.RatePerRoom, t.SentPerS, t.DeliveredPerS, t.Lost, t.Dup, t.Failed, t.Latency.P50, t.Latency.P99, t.Latency.Max,
			t.CPU["server"], t.CPU["loadgen"], t.RSSMB)
	}
	tw.Flush()
	if n := len(r.Levels); n > 0 {
		l := r.Levels[n-1]
		verdict := "met"
		if l.Idle.RSSMB > 1024 {
			verdict = "missed"
		}
		fmt.Fprintf(w, "\ntarget 50,000 idle streams in <= 1 GiB RSS: %d streams in %.0f MB (%s)\n", l.Streams, l.Idle.RSSMB, verdict)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// WriteJSON writes the report to path.
func (r *ConnsReport) WriteJSON(path string) error { return writeJSON(path, r) }
