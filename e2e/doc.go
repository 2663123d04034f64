// Package e2e runs Parley as real processes (two server instances and a
// persister, built from ./cmd/parley) against the real Redis, Kafka and
// FerretDB-on-PostgreSQL started by scripts/services.sh, and checks the
// message path's invariants through the generated Go client: one order for
// every receiver, nothing acknowledged lost, no duplicate after retries or a
// persister crash, and resume without gaps.
package e2e
