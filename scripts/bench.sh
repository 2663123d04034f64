#!/usr/bin/env bash
# make bench: fanout-v1 (../shared BENCH.md definitions, see docs/PERFORMANCE.md)
# on this machine: starts the real services, one Parley server and a
# persister (persistence ON: every send is acked by Kafka, acks=all), runs
# the workload through Parley, then the same workload on Redis alone (--raw),
# and writes tables and JSON under docs/bench/. Extra arguments go to both
# `parley bench fanout` runs (e.g. --rates 1000,2000 --step 5s).
#
# PARLEY_BENCH_PERSISTER=0 leaves the persister out: every send is still acked
# by Kafka (acks=all) before its ack, but FerretDB/PostgreSQL do not compete
# for the two cores (the report says which). PARLEY_BENCH_RAW=0 skips --raw.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/bench
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

bash scripts/services.sh install
bash scripts/services.sh start all
eval "$(bash scripts/services.sh env)"
go build -o "$work/parley" ./cmd/parley
name="bench$(date +%s)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
"$work/parley" server -addr "$addr" -redis-url "$PARLEY_REDIS_URL" -redis-prefix "$name:" \
  -kafka-brokers "$PARLEY_KAFKA_BROKERS" -topic "$name" -partitions 12 \
  -mongo-uri "$PARLEY_MONGO_URI" -database "$name" -token-key "bench-token-key-0123456789abcdefghij" \
  -argon2-memory-kib 1024 -argon2-time 1 -send-rate 100000 -send-burst 100000 \
  -frame-rate 100000 -frame-burst 100000 -max-streams-per-user 100 -address-attempts 100000 -login-attempts 100000 \
  -dedupe-ttl 10m -pprof -web-dir /nonexistent -log-level warn >"$work/server.log" 2>&1 &
server=$!; pids+=("$server")
persist_note="on: Kafka acks=all before every ack, persister writing FerretDB/PostgreSQL during the run"
persister=
if [[ ${PARLEY_BENCH_PERSISTER:-1} == 1 ]]; then
  "$work/parley" persister -kafka-brokers "$PARLEY_KAFKA_BROKERS" -topic "$name" -dlq-topic "$name.dlq" -group "$name" \
    -mongo-uri "$PARLEY_MONGO_URI" -database "$name" -metrics-addr "" -log-level warn >"$work/persister.log" 2>&1 &
  persister=$!; pids+=("$persister")
else
  persist_note="on: Kafka acks=all before every ack; persister not running (it would compete for the same two cores)"
fi
for _ in $(seq 1 300); do
  curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://$addr/readyz" >/dev/null && kill -0 "$server" || { cat "$work/server.log"; echo "server not ready"; exit 1; }

redis_pid=$(cat "${PARLEY_SERVICES_DIR:-${TMPDIR:-/tmp}/parley-services}/redis/redis.pid" 2>/dev/null || pgrep -f "redis-server.*${PARLEY_REDIS_URL##*:}" | head -1)
kafka_pid=$(pgrep -f 'kafka.Kafka' | head -1 || true)
ferretdb_pid=$(pgrep -f 'parley-ferretdb -listen' | head -1 || true)
pg_pid=$(pgrep -f 'postgres -D' | head -1 || true)
measure="server=$server,redis=$redis_pid,kafka=$kafka_pid"
[[ -n $persister ]] && measure+=",persister=$persister,ferretdb=$ferretdb_pid,postgres=$pg_pid"
suffix=""
[[ -z $persister ]] && suffix="-nopersister"

echo "== fanout-v1 through Parley ($persist_note)"
"$work/parley" bench fanout -addr "$addr" -pids "$measure" -persistence "$persist_note" \
  -out "$out/fanout-parley$suffix.json" "$@" | tee "$out/fanout-parley$suffix.txt"
if [[ ${PARLEY_BENCH_RAW:-1} == 1 ]]; then
  echo "== fanout-v1 on Redis pub/sub alone (--raw)"
  "$work/parley" bench fanout --raw -redis-url "$PARLEY_REDIS_URL" -pids "redis=$redis_pid" \
    -out "$out/fanout-raw.json" "$@" | tee "$out/fanout-raw.txt"
fi
