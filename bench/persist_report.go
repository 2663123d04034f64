package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the report as tables a person can read.
func (r *PersistReport) WriteTable(w io.Writer) {
	if r.Records > 0 {
		r.writeDrain(w)
	} else {
		fmt.Fprintf(w, "\n%s, live part only\nmachine: %s\n", r.Workload, r.Machine)
	}
	r.writeLive(w)
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func (r *PersistReport) writeDrain(w io.Writer) {
	fmt.Fprintf(w, "\n%s: %d records, %d rooms (Zipf s=%g, largest room %d records), %d-byte bodies, %d partitions (shares %.1f%%..%.1f%%)\n",
		r.Workload, r.Records, r.Rooms, r.ZipfS, r.LargestRoom, r.BodyBytes, r.Partitions, 100*r.PartitionMin, 100*r.PartitionMax)
	fmt.Fprintf(w, "chunk %d documents per insertMany, persister max batch %d, %d partition writers sharing at most %d insert commands in flight, raw loop concurrency %d (one per partition), persister %s\nmachine: %s\n\n",
		r.ChunkSize, r.MaxBatch, r.Concurrency, r.InFlight, r.Concurrency, r.PersisterMode, r.Machine)
	names := cpuNames(r.Persister.CPU, r.Raw.CPU)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := "phase\trecords\tseconds\tstartup s\trecords/s\t"
	for _, n := range names {
		hdr += "cpu " + n + "\t"
	}
	fmt.Fprintln(tw, hdr)
	row := func(name string, p PersistPhase) {
		line := fmt.Sprintf("%s\t%d\t%.1f\t%.1f\t%.0f\t", name, p.Stored, p.Seconds, p.StartupSeconds, p.RecordsPerS)
		for _, n := range names {
			if v, ok := p.CPU[n]; ok {
				line += fmt.Sprintf("%.0f%%\t", v)
			} else {
				line += "-\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	row("preload (Kafka produce)", r.Preload)
	row("persister", r.Persister)
	row("raw insertMany", r.Raw)
	tw.Flush()
	fmt.Fprintf(w, "\npersister counted %d inserted, %d duplicates, %d dead letters; %d rooms (%d documents) counted in the store afterwards\n",
		r.Persister.Inserted, r.Persister.Duplicates, r.Persister.DeadLetters, r.CheckedRooms, r.CheckedDocs)
	fmt.Fprintf(w, "persister / raw: %.2f (records/s from the first stored record to the last; target >= 0.80)\n", r.Ratio)
	if r.RatioPerStoreCPU > 0 {
		fmt.Fprintf(w, "per CPU-second of the store (ferretdb + postgres): persister / raw %.2f (%.0f vs %.0f records per store CPU-second)\n",
			r.RatioPerStoreCPU, r.Persister.RecordsPerS/storeCPU(r.Persister.CPU)*100, r.Raw.RecordsPerS/storeCPU(r.Raw.CPU)*100)
	}
}

func (r *PersistReport) writeLive(w io.Writer) {
	if len(r.Live) > 0 {
		fmt.Fprintln(w, "\nunder fanout-v1 load (every send acked after Kafka acks=all; send->ack of probe messages, store delay from the persister's histogram):")
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "offered/s\tfanout-v1/s\tprobe/s\tacks\tsend->ack p50 ms\tp99 ms\tfailed\tstored\tstore delay p50 ms\tp99 ms\tmax ms (bucket)\tcatch-up s\tfanout lost\tfanout p99 ms\t")
		for _, l := range r.Live {
			lost, p99 := int64(0), 0.0
			if l.Fanout != nil && len(l.Fanout.Steps) > 0 {
				lost, p99 = l.Fanout.Steps[0].Lost, l.Fanout.Steps[0].P99
			}
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.1f\t%.1f\t%d\t%d\t%.1f\t%.1f\t%.0f\t%.1f\t%d\t%.1f\t\n",
				l.OfferedPerS, l.FanoutPerS, l.ProbePerS, l.SendAck.Count, l.SendAck.P50, l.SendAck.P99, l.SendFailed,
				l.StoreDelay.Count, l.StoreDelay.P50, l.StoreDelay.P99, l.StoreDelay.Max, l.CatchUpSeconds, lost, p99)
		}
		tw.Flush()
		for _, l := range r.Live {
			if l.StoreDelayNote != "" {
				fmt.Fprintf(w, "store delay at %d msgs/s: %s\n", l.OfferedPerS, l.StoreDelayNote)
			}
		}
		fmt.Fprintln(w, "\n(store delay: record timestamp -> stored, an upper bound of ack -> stored; target ack->stored p99 < 250 ms at 5,000 msgs/s)\nthe fanout-v1 run of each rate:")
		for _, l := range r.Live {
			if l.Fanout != nil {
				l.Fanout.WriteTable(w)
			}
		}
	}
}

// WriteJSON writes the report to path.
func (r *PersistReport) WriteJSON(path string) error { return writeJSON(path, r) }

// cpuNames returns the sorted process names of CPU maps.
func cpuNames(ms ...map[string]float64) []string {
	seen := map[string]bool{}
	var names []string
	for _, m := range ms {
		for n := range m {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	return names
}

// pct formats a CPU map as "name 12%, ...".
func pct(m map[string]float64) string {
	var parts []string
	for _, n := range cpuNames(m) {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", n, m[n]))
	}
	return strings.Join(parts, ", ")
}
