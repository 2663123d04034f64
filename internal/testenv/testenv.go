// Package testenv gives integration tests the addresses of the real backing
// services (Redis, Kafka, a MongoDB-protocol store) started by
// scripts/services.sh, and a unique name per test so tests sharing those
// services never see each other's data.
//
// The addresses come from PARLEY_TEST_REDIS_URL, PARLEY_TEST_KAFKA_BROKERS,
// PARLEY_TEST_MONGO_URI and PARLEY_TEST_FERRETDB_POSTGRES_URL. `make test` always sets them and also sets
// PARLEY_TEST_REQUIRE_SERVICES=1, which turns a missing address into a test
// failure instead of a skip: under `make test` and CI nothing is skipped.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
)

func lookup(tb testing.TB, name string) string {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv("PARLEY_TEST_REQUIRE_SERVICES") == "1" {
			tb.Fatalf("%s is not set but PARLEY_TEST_REQUIRE_SERVICES=1 (run tests through `make test`)", name)
		}
		tb.Skipf("%s not set: start the real services with `make services-up` or run `make test`", name)
	}
	return v
}

// RedisURL returns the URL of a real Redis server (redis://127.0.0.1:port).
func RedisURL(tb testing.TB) string { tb.Helper(); return lookup(tb, "PARLEY_TEST_REDIS_URL") }

// KafkaBrokers returns the seed brokers of a real Kafka cluster.
func KafkaBrokers(tb testing.TB) []string {
	tb.Helper()
	return strings.Split(lookup(tb, "PARLEY_TEST_KAFKA_BROKERS"), ",")
}

// MongoURI returns the URI of a real MongoDB-protocol server (FerretDB here).
func MongoURI(tb testing.TB) string { tb.Helper(); return lookup(tb, "PARLEY_TEST_MONGO_URI") }

// FerretDBPostgresURL returns the URL of the PostgreSQL server behind the
// FerretDB of MongoURI, as FerretDB's own user.
func FerretDBPostgresURL(tb testing.TB) string {
	tb.Helper()
	return lookup(tb, "PARLEY_TEST_FERRETDB_POSTGRES_URL")
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// Name returns a name unique to this test run, usable as a Kafka topic,
// database name or Redis key prefix: "t_<test>_<random>", lower case, at most
// 48 characters.
func Name(tb testing.TB) string {
	tb.Helper()
	base := unsafeChars.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	if len(base) > 30 {
		base = base[len(base)-30:]
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t_" + strings.Trim(base, "_") + "_" + hex.EncodeToString(b[:])
}
