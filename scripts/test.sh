#!/usr/bin/env bash
# The whole test suite (`make test`): installs what it needs on a fresh
# machine, starts the real services (Redis, Kafka, FerretDB on PostgreSQL) on
# 127.0.0.1, runs static checks, unit tests and the integration/end-to-end
# tests against them, and stops the services it started.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s (%s)\n' "$*" "$(date +%T)"; }
t0=$(date +%s)

step "installing services (apt, Maven Central, Go modules; cached after the first run)"
bash scripts/services.sh install

step "code generators and gen/ drift"
make --no-print-directory check-generate

step "go vet"
go vet ./...

step "fuzzing every decoder of network input (10s per target)"
bash scripts/fuzz.sh

step "starting Redis, Kafka, PostgreSQL + FerretDB"
bash scripts/services.sh start all
trap 'step "stopping services"; bash scripts/services.sh stop all' EXIT
eval "$(bash scripts/services.sh env)"
export PARLEY_TEST_REDIS_URL="$PARLEY_REDIS_URL"
export PARLEY_TEST_KAFKA_BROKERS="$PARLEY_KAFKA_BROKERS"
export PARLEY_TEST_MONGO_URI="$PARLEY_MONGO_URI"
export PARLEY_TEST_FERRETDB_POSTGRES_URL="$PARLEY_FERRETDB_POSTGRES_URL"
export PARLEY_TEST_REQUIRE_SERVICES=1

step "go test (unit, integration, end-to-end; -race)"
go test -race -count=1 -timeout 30m ./...

step "web app: vitest, type check, build, end-to-end in headless Chromium (scripts/web-e2e.sh)"
bash scripts/web-e2e.sh

step "clients: grpcurl, REST, health probe, examples, schemathesis (scripts/test-clients.sh)"
bash scripts/test-clients.sh

step "fault tests and the steady-load fault table (they stop and start the services, so they run alone)"
fault_table="${PARLEY_SERVICES_DIR:-${TMPDIR:-/tmp}/parley-services}/fault-table.md"
rm -f "$fault_table"
fault_rc=0
PARLEY_TEST_FAULTS=1 PARLEY_FAULT_TABLE="$fault_table" go test -count=1 -timeout 40m \
  -run 'TestRedisRestart|TestKafkaOutage|TestServerKilled|TestStoreOutage|TestFaultTable' ./e2e/ || fault_rc=$?
cat "$fault_table" 2>/dev/null || echo "(no fault table written)"
(( fault_rc == 0 ))

step "parley-dev (make run) tests"
(cd devstack/parley-dev && go vet ./... && go test -count=1 ./...)

step "done in $(( $(date +%s) - t0 ))s"
