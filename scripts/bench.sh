#!/usr/bin/env bash
# make bench: the published workloads (../shared BENCH.md definitions, see
# docs/PERFORMANCE.md) on this machine, on the real services that
# scripts/services.sh starts, writing tables, JSON and PNG plots under
# docs/bench/:
#
#   fanout   fanout-v1 through one Parley server (persistence ON: every send
#            is acked by Kafka, acks=all) with a persister, then the same
#            workload on Redis alone (--raw, the ceiling), then through a
#            gRPC server that only hands each message on (--floor: the
#            delivery through grpc-go on both ends with no other work per
#            message). Extra arguments go to all three
#            `parley bench fanout` runs (e.g. --rates 1000,2000 --step 5s).
#   persist  persist-v1: 1M records preloaded into a fresh topic, drained by
#            `parley persister` against the store's raw insertMany ceiling;
#            then send->ack and ack->stored latency under fanout-v1 at
#            1k, 2k and 5k msgs/s (BENCH.md: 5k) through a server with its
#            persister.
#   conns    conns-v1: 10k then 50k idle Connect streams on a fresh server
#            (no persister; Kafka acks=all still on for the trickle), with
#            cheap argon2 and --max-streams-per-user 1000 so that 50 users
#            hold the streams; heap profiles at each level.
#   pairs    back-to-back A/B runs of fanout-v1 (persister off unless
#            PARLEY_BENCH_PERSISTER=1): a fresh server with the flags in
#            PARLEY_BENCH_PAIR_A, then one with PARLEY_BENCH_PAIR_B (and with
#            the persister, its flags in PARLEY_BENCH_PAIR_PERSISTER_A/_B), repeated
#            PARLEY_BENCH_PAIRS times (default 3), each at --rates 2000,5000
#            unless the extra arguments say otherwise; prints one line per
#            step with every process's CPU and writes it to
#            $PARLEY_BENCH_OUT/pairs.txt. Consecutive runs drift on this
#            machine (docs/PERFORMANCE.md), so compare within a pair only.
#
# PARLEY_BENCH=fanout,persist,conns selects workloads (default: all three, in
# that order; pairs only when named). PARLEY_BENCH_PERSISTER=0 leaves the persister out of fanout
# (every send is still acked by Kafka, but FerretDB/PostgreSQL do not compete
# for the two cores; the report says which). PARLEY_BENCH_RAW=0 skips --raw,
# PARLEY_BENCH_FLOOR=0 skips --floor; its server writes every
# PARLEY_BENCH_FLOOR_TICK (default 2ms, as Parley's --delivery-tick; 0: each
# message at once).
# PARLEY_BENCH_GIN=0 runs without the GIN indexes that the servers and
# persisters otherwise create in FerretDB's PostgreSQL (--ferretdb-postgres-url,
# from services.sh env). PARLEY_BENCH_PERSIST_ARGS and PARLEY_BENCH_CONNS_ARGS add flags to
# `parley bench persist` / `parley bench conns` (e.g. --records 100000,
# --streams 10000). PARLEY_BENCH_OUT writes elsewhere than docs/bench.
# Before fanout, persist or pairs, unmeasured rounds of load warm the Kafka
# broker until its JIT compilers are quiet (warm_broker below;
# PARLEY_BENCH_WARM=0 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${PARLEY_BENCH_OUT:-docs/bench}
mkdir -p "$out"
work=$(mktemp -d)
pids=()
names=() # servers started since the last stop_started: their databases and topics
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

selected=${PARLEY_BENCH:-fanout,persist,conns}
want() { [[ ,$selected, == *,$1,* ]]; }
for w in ${selected//,/ }; do
  case $w in fanout | persist | conns | pairs) ;; *) echo "PARLEY_BENCH: unknown workload $w (fanout, persist, conns, pairs)" >&2; exit 2 ;; esac
done

bash scripts/services.sh install
bash scripts/services.sh start all
eval "$(bash scripts/services.sh env)"
# PARLEY_BENCH_GIN=0: the servers and persisters leave FerretDB without
# Parley's GIN indexes (internal/ferretpg), for a comparison.
[[ ${PARLEY_BENCH_GIN:-1} == 0 ]] && unset PARLEY_FERRETDB_POSTGRES_URL
go build -o "$work/parley" ./cmd/parley
# conns-v1 needs one file per connection in the load generator and the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

services_dir=${PARLEY_SERVICES_DIR:-${TMPDIR:-/tmp}/parley-services}
pidof_service() { cat "$services_dir/$1" 2>/dev/null | head -1 || true; }
redis_pid=$(pidof_service redis/redis.pid)
kafka_pid=$(pidof_service kafka/kafka.pid)
ferretdb_pid=$(pidof_service ferretdb/ferretdb.pid)
pg_pid=$(pidof_service postgres/data/postmaster.pid)
store_pids="kafka=$kafka_pid,ferretdb=$ferretdb_pid,postgres=$pg_pid"

# free_port prints a TCP port free on 127.0.0.1 now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_server NAME [FLAGS...]: a Parley server on a free port; sets $server
# (pid) and $addr.
start_server() {
  local name=$1
  shift
  local port
  port=$(free_port)
  addr=127.0.0.1:$port
  "$work/parley" server -addr "$addr" -redis-url "$PARLEY_REDIS_URL" -redis-prefix "$name:" \
    -kafka-brokers "$PARLEY_KAFKA_BROKERS" -topic "$name" -partitions 12 \
    -mongo-uri "$PARLEY_MONGO_URI" -database "$name" -token-key "bench-token-key-0123456789abcdefghij" \
    -argon2-memory-kib 1024 -argon2-time 1 -send-rate 100000 -send-burst 100000 \
    -frame-rate 100000 -frame-burst 100000 -address-attempts 100000 -login-attempts 100000 \
    -dedupe-ttl 10m -pprof -web-dir /nonexistent -log-level warn "$@" >"$work/$name-server.log" 2>&1 &
  server=$!
  pids+=("$server")
  names+=("$name")
  for _ in $(seq 1 300); do
    curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://$addr/readyz" >/dev/null && kill -0 "$server" || {
    cat "$work/$name-server.log"
    echo "server $name not ready"
    exit 1
  }
}

# start_persister NAME [METRICS_ADDR [FLAGS...]]: the persister of server
# NAME's topic and database; sets $persister (pid).
start_persister() {
  local name=$1 metrics=${2:-}
  shift $(($# < 2 ? $# : 2))
  "$work/parley" persister -kafka-brokers "$PARLEY_KAFKA_BROKERS" -topic "$name" -dlq-topic "$name.dlq" -group "$name" \
    -mongo-uri "$PARLEY_MONGO_URI" -database "$name" -metrics-addr "$metrics" -log-level warn "$@" >"$work/$name-persister.log" 2>&1 &
  persister=$!
  pids+=("$persister")
}

# measured_pids prints the -pids list of a fanout run: the server, Redis and
# Kafka, and with a persister ($persister set) the persister and the store.
measured_pids() {
  local m="server=$server,redis=$redis_pid,kafka=$kafka_pid"
  [[ -n $persister ]] && m+=",persister=$persister,ferretdb=$ferretdb_pid,postgres=$pg_pid"
  echo "$m"
}

stop_started() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  # Drop what the runs wrote, so that the next one does not run beside
  # freshly written rows that PostgreSQL is still working on.
  if ((${#names[@]})); then
    local dbs topics n
    dbs=$(IFS=,; echo "${names[*]}")
    topics=$(for n in "${names[@]}"; do printf '%s,%s.dlq,' "$n" "$n"; done)
    "$work/parley" bench cleanup -mongo-uri "$PARLEY_MONGO_URI" -kafka-brokers "$PARLEY_KAFKA_BROKERS" \
      -databases "$dbs" -topics "${topics%,}" || echo "cleanup of ${names[*]} failed (see above); going on"
    names=()
  fi
}

run=bench$(date +%s)

# jit_ticks prints the CPU time (user + system clock ticks) the broker's JIT
# compiler threads have used so far, and fails if it finds none of them.
# The fields are counted after the ") " that ends the thread's name, which
# itself has a space ("C2 CompilerThre").
jit_ticks() {
  local t sum=0 found=0
  for t in /proc/"$kafka_pid"/task/*; do
    case $(cat "$t/comm" 2>/dev/null) in
      C1\ CompilerThre* | C2\ CompilerThre*)
        found=$((found + 1))
        sum=$((sum + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "$t/stat" 2>/dev/null || echo 0)))
        ;;
    esac
  done
  if ((found == 0)); then
    echo "jit_ticks: no JIT compiler threads under /proc/${kafka_pid:-?}/task (is Kafka's pid right?)" >&2
    return 1
  fi
  echo "$sum"
}

# warm_broker runs unmeasured fanout-v1 rounds (2,000 and 5,000 msgs/s,
# with a persister) through a throwaway server until the Kafka broker's JIT
# compilers used under 2 % of a core during a round (at most 10 rounds). A
# freshly started broker compiles its hot paths for minutes: in the first
# run after a start its C2 compiler thread took a fifth of a core at the
# 2,000 msgs/s step, CPU the measured steps then lack, and that a broker in
# service has long stopped spending. PARLEY_BENCH_WARM=0 skips it.
warm_broker() {
  [[ ${PARLEY_BENCH_WARM:-1} == 1 ]] || return 0
  local round hz t0 j0 ticks secs pct
  hz=$(getconf CLK_TCK)
  for round in $(seq 1 10); do
    name=${run}w$round
    start_server "$name" -max-streams-per-user 100
    start_persister "$name"
    t0=$(date +%s.%N)
    j0=$(jit_ticks)
    "$work/parley" bench fanout -addr "$addr" -rates 2000,5000 -step 10s -prewarm 0 -stop-after 0 \
      -out "$work/warm.json" >/dev/null 2>"$work/warm.progress" ||
      { cat "$work/warm.progress"; echo "broker warm-up round $round failed"; exit 1; }
    ticks=$(($(jit_ticks) - j0))
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
    pct=$(awk -v t="$ticks" -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.1f", 100 * t / hz / s }')
    stop_started
    echo "broker warm-up round $round: the JIT compilers used $pct % of a core over ${secs}s"
    awk -v p="$pct" 'BEGIN { exit !(p < 2) }' && return 0
  done
  echo "broker warm-up: the JIT compilers were still busy after 10 rounds; measuring anyway"
}

if want fanout || want persist || want pairs; then
  warm_broker
fi

if want fanout; then
  name=${run}f
  start_server "$name" -max-streams-per-user 100
  persist_note="on: Kafka acks=all before every ack, persister writing FerretDB/PostgreSQL during the run"
  persister=
  if [[ ${PARLEY_BENCH_PERSISTER:-1} == 1 ]]; then
    start_persister "$name"
  else
    persist_note="on: Kafka acks=all before every ack; persister not running (it would compete for the same two cores)"
  fi
  measure=$(measured_pids)
  suffix=""
  [[ -z $persister ]] && suffix="-nopersister"
  echo "== fanout-v1 through Parley ($persist_note)"
  "$work/parley" bench fanout -addr "$addr" -pids "$measure" -persistence "$persist_note" \
    -out "$out/fanout-parley$suffix.json" "$@" | tee "$out/fanout-parley$suffix.txt"
  # The server and its persister stop first: the persister would still be
  # storing the last steps' backlog during the next runs.
  stop_started
  if [[ ${PARLEY_BENCH_RAW:-1} == 1 ]]; then
    echo "== fanout-v1 on Redis pub/sub alone (--raw)"
    # Steps past fanout-v1's 100k: Redis alone passes all of them on this
    # machine, and the ceiling is the highest passing step.
    "$work/parley" bench fanout --raw -redis-url "$PARLEY_REDIS_URL" -pids "redis=$redis_pid" \
      -rates 1000,2000,5000,10000,20000,50000,100000,200000,350000,500000 \
      -out "$out/fanout-raw.json" "$@" | tee "$out/fanout-raw.txt"
  fi
  compare=()
  plots="$out/fanout-parley$suffix.json"
  if [[ ${PARLEY_BENCH_RAW:-1} == 1 ]]; then
    compare+=(-raw "$out/fanout-raw.json")
    plots+=",$out/fanout-raw.json"
  fi
  if [[ ${PARLEY_BENCH_FLOOR:-1} == 1 ]]; then
    echo "== fanout-v1 through a server that only hands messages on (--floor)"
    port=$(free_port)
    "$work/parley" bench floor-server -addr "127.0.0.1:$port" -delivery-tick "${PARLEY_BENCH_FLOOR_TICK:-2ms}" >"$work/floor.log" 2>&1 &
    floor=$!
    pids+=("$floor")
    for _ in $(seq 1 100); do
      grep -q "listening" "$work/floor.log" && break
      sleep 0.1
    done
    grep -q "listening" "$work/floor.log" || { cat "$work/floor.log"; echo "floor server not listening"; exit 1; }
    "$work/parley" bench fanout --floor -addr "127.0.0.1:$port" -pids "server=$floor" -prewarm 0 \
      -out "$out/fanout-floor.json" "$@" | tee "$out/fanout-floor.txt"
    stop_started
    compare+=(-floor "$out/fanout-floor.json")
    plots+=",$out/fanout-floor.json"
  fi
  if ((${#compare[@]})); then
    "$work/parley" bench compare -parley "$out/fanout-parley$suffix.json" "${compare[@]}" |
      tee -a "$out/fanout-parley$suffix.txt" || echo "bench compare failed (see above); the plot follows"
    "$work/parley" bench plot -in "$plots" -out "$out/fanout.png"
  fi
fi

if want persist; then
  name=${run}p
  start_server "$name" -max-streams-per-user 100
  metrics_port=$(free_port)
  start_persister "$name" "127.0.0.1:$metrics_port"
  note="on: Kafka acks=all before every ack, persister writing FerretDB/PostgreSQL during the run"
  echo "== persist-v1 (preload, persister, raw insertMany; then live at 5k msgs/s)"
  # shellcheck disable=SC2086
  "$work/parley" bench persist -kafka-brokers "$PARLEY_KAFKA_BROKERS" -mongo-uri "$PARLEY_MONGO_URI" -name "${run}_persist" \
    -pids "$store_pids,redis=$redis_pid,server=$server,persister=$persister" -addr "$addr" -persister-metrics "http://127.0.0.1:$metrics_port/metrics" -live-rates 1000,2000,5000 -persistence "$note" \
    -out "$out/persist.json" ${PARLEY_BENCH_PERSIST_ARGS:-} | tee "$out/persist.txt"
  stop_started
fi

if want conns; then
  name=${run}c
  start_server "$name" -max-streams-per-user 1000
  echo "== conns-v1 (one server, no persister)"
  # shellcheck disable=SC2086
  "$work/parley" bench conns -addr "$addr" -streams-per-user 1000 -pids "server=$server,redis=$redis_pid,kafka=$kafka_pid" \
    -out "$out/conns.json" ${PARLEY_BENCH_CONNS_ARGS:-} | tee "$out/conns.txt"
  stop_started
fi

if want pairs; then
  pairs=${PARLEY_BENCH_PAIRS:-3}
  [[ $pairs =~ ^[1-9][0-9]*$ ]] || { echo "PARLEY_BENCH_PAIRS must be a positive integer, got '$pairs'" >&2; exit 2; }
  with_persister=${PARLEY_BENCH_PERSISTER:-0}
  args=("$@")
  ((${#args[@]})) || args=(-rates 2000,5000)
  settings="A = [${PARLEY_BENCH_PAIR_A:-}|${PARLEY_BENCH_PAIR_PERSISTER_A:-}], B = [${PARLEY_BENCH_PAIR_B:-}|${PARLEY_BENCH_PAIR_PERSISTER_B:-}] (server|persister flags), persister $([[ $with_persister == 1 ]] && echo on || echo off)"
  echo "== fanout-v1 pairs, $pairs pair(s): $settings"
  summary=$work/pairs.txt
  for i in $(seq 1 "$pairs"); do
    for side in A B; do
      flags_var=PARLEY_BENCH_PAIR_$side
      name=${run}$side$i
      # shellcheck disable=SC2086 # the flags are words
      start_server "$name" -max-streams-per-user 100 ${!flags_var:-}
      persister=
      pflags_var=PARLEY_BENCH_PAIR_PERSISTER_$side
      # shellcheck disable=SC2086 # the flags are words
      [[ $with_persister == 1 ]] && start_persister "$name" "" ${!pflags_var:-}
      measure=$(measured_pids)
      echo "-- pair $i, $side: ${!flags_var:-(defaults)}${persister:+ | persister: ${!pflags_var:-(defaults)}}"
      "$work/parley" bench fanout -addr "$addr" -pids "$measure" -stop-after 0 \
        -out "$work/$side$i.json" "${args[@]}" >"$work/$side$i.txt" 2>"$work/$side$i.progress" ||
        { cat "$work/$side$i.progress" "$work/$side$i.txt"; exit 1; }
      jq -r --arg run "$side$i" '.steps[] | [$run, .offered_per_s, .latency_p50_ms, .latency_p99_ms, .lost,
          ([.cpu_percent[]] | add | round),
          (.cpu_percent | to_entries | sort_by(.key) | map("\(.key)=\(.value | round)") | join(" "))] | @tsv' \
        "$work/$side$i.json" >>"$summary"
      stop_started
    done
  done
  {
    echo "fanout-v1 pairs: $settings, $(date -u +%FT%TZ), $(git rev-parse --short HEAD)"
    echo "(cpu: % of one core per process and their total; compare A and B within a pair)"
    printf '%-5s %9s %8s %8s %6s %6s  %s\n' run offered/s "p50 ms" "p99 ms" lost "cpu%" "cpu by process"
    while IFS=$'\t' read -r r o p50 p99 lost tot procs; do
      printf '%-5s %9s %8.1f %8.1f %6s %6s  %s\n' "$r" "$o" "$p50" "$p99" "$lost" "$tot" "$procs"
    done <"$summary"
  } | tee "$out/pairs.txt"
fi
