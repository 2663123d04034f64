// Package bench implements Parley's published benchmark workloads (see
// docs/PERFORMANCE.md): fanout-v1 through the public API with the generated
// Go client, and the same workload on Redis pub/sub alone (--raw) as this
// machine's ceiling. Each step prints a progress line; the result is a table
// a person can read and a JSON file beside it.
package bench
