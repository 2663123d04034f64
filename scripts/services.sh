#!/usr/bin/env bash
# Real backing services for Parley's integration tests: Redis, Kafka (KRaft,
# single node), and FerretDB (MongoDB wire protocol) on its own PostgreSQL.
#
#   scripts/services.sh install                 apt packages, Kafka jars, FerretDB binary
#   scripts/services.sh start  [SERVICE...|all] start (no-op if already running), wait until ready
#   scripts/services.sh stop   [SERVICE...|all] stop by PID (TERM, then KILL after a timeout)
#   scripts/services.sh status
#   scripts/services.sh env                     export lines for the tests: eval "$(scripts/services.sh env)"
#   scripts/services.sh restart [SERVICE...|all]
#   scripts/services.sh clean                   stop all, then delete the scratch dir (data and logs)
#
# SERVICE is redis, kafka, postgres or ferretdb (ferretdb starts postgres first;
# stopping ferretdb also stops postgres). Every server listens on 127.0.0.1 only
# and keeps its data and logs under $PARLEY_SERVICES_DIR.
#
# Settings (environment):
#   PARLEY_SERVICES_DIR            scratch dir      (default ${TMPDIR:-/tmp}/parley-services)
#   PARLEY_CACHE_DIR               downloads/builds (default ${XDG_CACHE_HOME:-$HOME/.cache}/parley)
#   PARLEY_REDIS_PORT              16379
#   PARLEY_KAFKA_PORT              19092
#   PARLEY_KAFKA_CONTROLLER_PORT   19093
#   PARLEY_KAFKA_VERSION           4.1.1 (Maven Central org.apache.kafka:kafka_2.13)
#   PARLEY_KAFKA_HEAP              512m
#   PARLEY_PG_PORT                 15433
#   PARLEY_PG_BINDIR               PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
#   PARLEY_PG_OS_USER              OS user running postgres when this script runs as root (postgres)
#   PARLEY_FERRETDB_PORT           27018
#   PARLEY_FERRETDB_PG_PARAMS      extra pgx URL parameters, e.g. pool_max_conns=20
#   PARLEY_FERRETDB_LOG_LEVEL      debug, info (default), warn or error
#   PARLEY_FERRETDB_GOGC           FerretDB's Go GC percent (400; Go's default is 100:
#                                  its GC was a quarter of its CPU under load, see
#                                  docs/PERFORMANCE.md; 400 costs about 45 MB more RSS)
#   PARLEY_START_TIMEOUT           seconds to wait for readiness (120)
#   PARLEY_STOP_TIMEOUT            seconds between SIGTERM and SIGKILL (30)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

SERVICES_DIR="${PARLEY_SERVICES_DIR:-${TMPDIR:-/tmp}/parley-services}"
[[ $SERVICES_DIR == /* ]] || SERVICES_DIR="$PWD/$SERVICES_DIR"
HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE_DIR="${PARLEY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/parley}"
[[ $CACHE_DIR == /* ]] || CACHE_DIR="$PWD/$CACHE_DIR"

REDIS_PORT="${PARLEY_REDIS_PORT:-16379}"
KAFKA_PORT="${PARLEY_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${PARLEY_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_VERSION="${PARLEY_KAFKA_VERSION:-4.1.1}"
KAFKA_HEAP="${PARLEY_KAFKA_HEAP:-512m}"
PG_PORT="${PARLEY_PG_PORT:-15433}"
FERRETDB_PORT="${PARLEY_FERRETDB_PORT:-27018}"
FERRETDB_GOGC="${PARLEY_FERRETDB_GOGC:-400}"
[[ $FERRETDB_GOGC =~ ^([0-9]+|off)$ ]] || { echo "services.sh: PARLEY_FERRETDB_GOGC must be a number or off, got '$FERRETDB_GOGC'" >&2; exit 2; }
START_TIMEOUT="${PARLEY_START_TIMEOUT:-120}"
STOP_TIMEOUT="${PARLEY_STOP_TIMEOUT:-30}"

HOST=127.0.0.1

KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_CLASSES="$KAFKA_HOME/classes"
FERRETDB_SRC="$REPO_ROOT/devstack/ferretdb"
FERRETDB_BIN="$CACHE_DIR/bin/parley-ferretdb"

REDIS_DIR="$SERVICES_DIR/redis"
KAFKA_DIR="$SERVICES_DIR/kafka"
PG_DIR="$SERVICES_DIR/postgres"
PG_DATA="$PG_DIR/data"
FERRETDB_DIR="$SERVICES_DIR/ferretdb"

# ---------------------------------------------------------------- helpers

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2fs", b - a }'; }

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# alive PID: the process exists and is not a zombie (daemons orphaned to an init
# that reaps lazily stay visible to kill -0 for a while after they exit).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# pid_running PIDFILE PATTERN: the pid in PIDFILE is alive and its command line
# contains PATTERN (guards against a stale pidfile whose pid was reused).
pid_running() {
  local pidfile=$1 pattern=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

# stop_pid NAME PIDFILE PATTERN: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.
stop_pid() {
  local name=$1 pidfile=$2 pattern=$3 pid t0 i
  if ! pid_running "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    log "$name: not running"
    return 0
  fi
  pid=$(<"$pidfile")
  t0=$(now)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do
    alive "$pid" || break
    sleep 0.05
  done
  if alive "$pid"; then
    log "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL to $pid"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.05; done
  fi
  rm -f "$pidfile"
  log "$name: stopped (pid $pid) in $(since "$t0")"
}

# wait_until NAME LOGFILE CMD...: retry CMD until it succeeds or START_TIMEOUT passes.
wait_until() {
  local name=$1 logfile=$2 deadline
  shift 2
  deadline=$((SECONDS + START_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$name: not ready after ${START_TIMEOUT}s; last lines of $logfile:"
      tail -n 40 "$logfile" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
}

check_port_free() {
  local name=$1 port=$2
  if port_open "$port"; then
    die "$name: port $HOST:$port is already in use by another process (not started by this script with this PARLEY_SERVICES_DIR); set PARLEY_${name^^}_PORT or stop it"
  fi
}

need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# ---------------------------------------------------------------- install

APT_UPDATED=0
apt_install() {
  is_root || die "need root to apt-get install $* (run: sudo $0 install)"
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

pg_bindir() {
  if [[ -n ${PARLEY_PG_BINDIR:-} ]]; then
    printf '%s\n' "$PARLEY_PG_BINDIR"
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n $d && -x $d/pg_ctl ]]; then
    printf '%s\n' "$d"
  elif command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
  fi
}

install_packages() {
  local pkgs=()
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 ||
    pkgs+=(redis-server redis-tools)
  local bindir
  bindir=$(pg_bindir)
  [[ -n $bindir && -x $bindir/initdb && -x $bindir/psql ]] || pkgs+=(postgresql)
  # The client tests and code generation need these too.
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)
  command -v jq >/dev/null 2>&1 || pkgs+=(jq)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || pkgs+=(python3-venv)
  if ((${#pkgs[@]})); then
    apt_install "${pkgs[@]}"
  else
    log "redis-server, postgresql, curl, jq and python3-venv already installed"
  fi
}

ensure_kafka() {
  need_cmd java "install a JDK 17+ (apt-get install openjdk-17-jdk-headless)"
  local pomsum
  pomsum=$(sha256sum <"$SCRIPT_DIR/kafka/pom.xml" | cut -d' ' -f1)
  if [[ $(cat "$KAFKA_LIBS/.complete" 2>/dev/null) != "$pomsum" ]]; then
    need_cmd mvn "install Maven (apt-get install maven)"
    local t0 mvnlog
    t0=$(now)
    log "kafka: fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
    rm -rf "$KAFKA_LIBS.tmp"
    mkdir -p "$KAFKA_HOME"
    mvnlog="$KAFKA_HOME/mvn.log"
    if ! mvn -q -B -Dstyle.color=never -f "$SCRIPT_DIR/kafka/pom.xml" \
      -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS.tmp" >"$mvnlog" 2>&1; then
      tail -n 40 "$mvnlog" >&2
      die "kafka: mvn dependency:copy-dependencies failed (log: $mvnlog)"
    fi
    [[ -f $KAFKA_LIBS.tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "kafka: kafka_2.13-$KAFKA_VERSION.jar missing after mvn"
    printf '%s\n' "$pomsum" >"$KAFKA_LIBS.tmp/.complete"
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    log "kafka: $(ls "$KAFKA_LIBS" | wc -l) jars fetched in $(since "$t0")"
  fi
  local src="$SCRIPT_DIR/kafka/KafkaReady.java" sum
  sum=$(cat "$src" <(java -version 2>&1) | sha256sum | cut -d' ' -f1)
  if [[ ! -f $KAFKA_CLASSES/KafkaReady.class || $(cat "$KAFKA_CLASSES/.srcsum" 2>/dev/null) != "$sum" ]]; then
    need_cmd javac "install a JDK 17+ (apt-get install openjdk-17-jdk-headless)"
    rm -rf "$KAFKA_CLASSES"
    mkdir -p "$KAFKA_CLASSES"
    javac -nowarn -cp "$KAFKA_LIBS/*" -d "$KAFKA_CLASSES" "$src" ||
      die "kafka: compiling $src failed"
    printf '%s\n' "$sum" >"$KAFKA_CLASSES/.srcsum"
  fi
}

# ferretdb_srcsum: hash of what the binary is built from (sources, go.mod/go.sum, Go version).
ferretdb_srcsum() {
  (
    cd "$FERRETDB_SRC"
    cat ./*.go go.mod go.sum
    go version
  ) | sha256sum | cut -d' ' -f1
}

ensure_ferretdb() {
  need_cmd go "install Go (see go.mod for the version)"
  local sum
  sum=$(ferretdb_srcsum)
  if [[ -x $FERRETDB_BIN && $(cat "$FERRETDB_BIN.srcsum" 2>/dev/null) == "$sum" ]]; then
    return 0
  fi
  local t0
  t0=$(now)
  log "ferretdb: building $FERRETDB_BIN from devstack/ferretdb (the first build takes a few minutes)"
  mkdir -p "$(dirname "$FERRETDB_BIN")"
  (cd "$FERRETDB_SRC" && GOWORK=off CGO_ENABLED=0 go build -trimpath -o "$FERRETDB_BIN.tmp" .) ||
    die "ferretdb: go build failed"
  mv -f "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
  printf '%s\n' "$sum" >"$FERRETDB_BIN.srcsum"
  log "ferretdb: built in $(since "$t0")"
}

cmd_install() {
  local t0
  t0=$(now)
  install_packages
  ensure_kafka
  ensure_ferretdb
  log "install done in $(since "$t0")"
}

# ---------------------------------------------------------------- redis

REDIS_PIDFILE="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"

redis_ping() { [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
redis_running() { pid_running "$REDIS_PIDFILE" redis-server; }

start_redis() {
  if redis_running; then
    log "redis: already running (pid $(<"$REDIS_PIDFILE")) on $HOST:$REDIS_PORT"
    return 0
  fi
  need_cmd redis-server "run: $0 install"
  need_cmd redis-cli "run: $0 install"
  check_port_free redis "$REDIS_PORT"
  mkdir -p "$REDIS_DIR"
  local t0
  t0=$(now)
  : >"$REDIS_LOG"
  redis-server --port "$REDIS_PORT" --bind "$HOST" --protected-mode yes \
    --save "" --appendonly no --dir "$REDIS_DIR" \
    --daemonize yes --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG"
  wait_until redis "$REDIS_LOG" redis_ping || { stop_redis; die "redis: failed to start"; }
  log "redis: ready on $HOST:$REDIS_PORT (pid $(<"$REDIS_PIDFILE")) in $(since "$t0")"
}

stop_redis() { stop_pid redis "$REDIS_PIDFILE" redis-server; }

# ---------------------------------------------------------------- kafka

KAFKA_PIDFILE="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_T0=""

kafka_running() { pid_running "$KAFKA_PIDFILE" kafka.Kafka; }

# JVM command for short-lived Kafka tools (storage format, readiness probe).
KAFKA_TOOL_JAVA=(java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
  -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2-quiet.properties"
  -cp "$KAFKA_LIBS/*:$KAFKA_CLASSES")

write_kafka_props() {
  cat >"$KAFKA_PROPS" <<EOF
# Generated by scripts/services.sh: single-node KRaft (combined broker+controller).
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=104857600
EOF
}

# launch_kafka: starts the JVM in the background without waiting (see wait_kafka).
launch_kafka() {
  KAFKA_T0=""
  if kafka_running; then
    log "kafka: already running (pid $(<"$KAFKA_PIDFILE")) on $HOST:$KAFKA_PORT"
    return 0
  fi
  check_port_free kafka "$KAFKA_PORT"
  check_port_free kafka_controller "$KAFKA_CONTROLLER_PORT"
  KAFKA_T0=$(now)
  mkdir -p "$KAFKA_DIR"
  write_kafka_props
  if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
    local id
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
    id=-
    while [[ $id == -* ]]; do
      id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    done
    log "kafka: formatting storage (cluster id $id, standalone controller)"
    rm -rf "$KAFKA_DIR/data"
    "${KAFKA_TOOL_JAVA[@]}" kafka.tools.StorageTool format --standalone -t "$id" -c "$KAFKA_PROPS" \
      >"$KAFKA_DIR/format.log" 2>&1 || { cat "$KAFKA_DIR/format.log" >&2; die "kafka: storage format failed"; }
  fi
  [[ -f $KAFKA_LOG ]] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.prev"
  log "kafka: starting $KAFKA_VERSION on $HOST:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)"
  (
    cd "$KAFKA_DIR"
    exec nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2.properties" \
      -Dlog4j2.shutdownHookEnabled=false \
      -Dkafka.logs.dir="$KAFKA_DIR" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" </dev/null >"$KAFKA_LOG" 2>&1
  ) &
  echo $! >"$KAFKA_PIDFILE"
}

wait_kafka() {
  [[ -n $KAFKA_T0 ]] || return 0
  local pid probe rc
  pid=$(<"$KAFKA_PIDFILE")
  # The probe JVM retries by itself until the broker answers metadata requests
  # (describeCluster + listTopics); it starts right away so that its own JVM
  # start-up overlaps the broker's. Meanwhile, watch that the broker is alive.
  # (A simple command, so that $! is the JVM itself and kill reaches it.)
  "${KAFKA_TOOL_JAVA[@]}" KafkaReady "$HOST:$KAFKA_PORT" "$START_TIMEOUT" >&2 &
  probe=$!
  while kill -0 "$probe" 2>/dev/null; do
    if ! alive "$pid"; then
      kill "$probe" 2>/dev/null || true
      wait "$probe" 2>/dev/null || true
      tail -n 40 "$KAFKA_LOG" >&2
      rm -f "$KAFKA_PIDFILE"
      KAFKA_T0=""
      die "kafka: process exited during startup (log: $KAFKA_LOG)"
    fi
    sleep 0.2
  done
  rc=0
  wait "$probe" || rc=$?
  if ((rc != 0)); then
    tail -n 40 "$KAFKA_LOG" >&2
    stop_kafka
    die "kafka: not ready after ${START_TIMEOUT}s (log: $KAFKA_LOG)"
  fi
  log "kafka: ready on $HOST:$KAFKA_PORT (pid $pid) in $(since "$KAFKA_T0")"
}

stop_kafka() { KAFKA_T0=""; stop_pid kafka "$KAFKA_PIDFILE" kafka.Kafka; }

# ---------------------------------------------------------------- postgres

PG_LOG="$PG_DIR/postgres.log"

# pg_as CMD...: run a PostgreSQL server tool as the OS user owning the cluster
# (postgres refuses to run as root).
pg_as() {
  if is_root; then
    (cd / && runuser -u "${PARLEY_PG_OS_USER:-postgres}" -- "$@")
  else
    "$@"
  fi
}

pg_tools() {
  PG_BIN=$(pg_bindir)
  [[ -n $PG_BIN && -x $PG_BIN/pg_ctl ]] || die "postgres: PostgreSQL server binaries not found (run: $0 install, or set PARLEY_PG_BINDIR)"
}

postgres_running() {
  [[ -f $PG_DATA/postmaster.pid ]] || return 1
  pg_tools
  pg_as "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

start_postgres() {
  if postgres_running; then
    log "postgres: already running (pid $(head -n 1 "$PG_DATA/postmaster.pid")) on $HOST:$PG_PORT"
    return 0
  fi
  pg_tools
  check_port_free pg "$PG_PORT"
  local t0 owner
  t0=$(now)
  mkdir -p "$PG_DIR"
  if is_root; then
    owner=${PARLEY_PG_OS_USER:-postgres}
    id "$owner" >/dev/null 2>&1 || die "postgres: OS user '$owner' does not exist (run: $0 install, or set PARLEY_PG_OS_USER)"
    chown "$owner": "$PG_DIR"
    pg_as test -w "$PG_DIR" ||
      die "postgres: user '$owner' cannot reach $PG_DIR (a parent directory is not traversable); choose another PARLEY_SERVICES_DIR"
  fi
  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    log "postgres: initdb $PG_DATA"
    rm -rf "$PG_DATA"
    pg_as "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C \
      >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; die "postgres: initdb failed"; }
    # Test instance: loopback only, no Unix socket, durability traded for speed.
    cat >>"$PG_DATA/postgresql.conf" <<EOF

# Added by scripts/services.sh
listen_addresses = '$HOST'
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  # default_statistics_target 10 (PostgreSQL's default is 100): FerretDB keeps
  # a collection in one jsonb column, and autovacuum's ANALYZE of a growing
  # messages table sampled 30,000 documents for 1.7-2.2 s of CPU at once,
  # a stall of every other process on two cores; at 10 it takes 0.1-0.2 s.
  # plan_cache_mode force_custom_plan: what Parley's ferretpg.Ensure sets for
  # FerretDB's database (--ferretdb-postgres-url), here for every session from
  # the start, FerretDB's pooled ones included. FerretDB's prepared lookups
  # name their key as a parameter (_jsonb->$1), which only a custom plan can
  # match to an index.
  # Set on the command line, so an existing data directory gets them too.
  pg_as "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" \
    -o "-p $PG_PORT -c listen_addresses=$HOST -c default_statistics_target=10 -c plan_cache_mode=force_custom_plan" >/dev/null ||
    { tail -n 40 "$PG_LOG" >&2; die "postgres: pg_ctl start failed"; }
  wait_until postgres "$PG_LOG" "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -U postgres -d postgres ||
    { stop_postgres; die "postgres: not ready"; }
  # Role and database for FerretDB (idempotent).
  local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres -d postgres)
  if [[ $("${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname='ferretdb'") != 1 ]]; then
    "${psql[@]}" -c "CREATE ROLE ferretdb LOGIN"
  fi
  if [[ $("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname='ferretdb'") != 1 ]]; then
    "${psql[@]}" -c "CREATE DATABASE ferretdb OWNER ferretdb"
  fi
  log "postgres: ready on $HOST:$PG_PORT (pid $(head -n 1 "$PG_DATA/postmaster.pid")) in $(since "$t0")"
}

stop_postgres() {
  if ! postgres_running; then
    log "postgres: not running"
    return 0
  fi
  local t0
  t0=$(now)
  pg_as "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" >/dev/null ||
    pg_as "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w >/dev/null
  log "postgres: stopped in $(since "$t0")"
}

# ---------------------------------------------------------------- ferretdb

FERRETDB_PIDFILE="$FERRETDB_DIR/ferretdb.pid"
FERRETDB_LOG="$FERRETDB_DIR/ferretdb.log"

mongo_uri() { printf 'mongodb://%s:%s/\n' "$HOST" "$FERRETDB_PORT"; }
ferretdb_running() { pid_running "$FERRETDB_PIDFILE" parley-ferretdb; }

start_ferretdb() {
  start_postgres
  if ferretdb_running; then
    log "ferretdb: already running (pid $(<"$FERRETDB_PIDFILE")) on $HOST:$FERRETDB_PORT"
    return 0
  fi
  check_port_free ferretdb "$FERRETDB_PORT"
  mkdir -p "$FERRETDB_DIR"
  local t0 pgurl pid
  t0=$(now)
  pgurl="postgres://ferretdb@$HOST:$PG_PORT/ferretdb${PARLEY_FERRETDB_PG_PARAMS:+?$PARLEY_FERRETDB_PG_PARAMS}"
  [[ -f $FERRETDB_LOG ]] && mv -f "$FERRETDB_LOG" "$FERRETDB_LOG.prev"
  GOGC=$FERRETDB_GOGC nohup "$FERRETDB_BIN" -listen "$HOST:$FERRETDB_PORT" -postgresql-url "$pgurl" \
    -log-level "${PARLEY_FERRETDB_LOG_LEVEL:-info}" \
    </dev/null >"$FERRETDB_LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$FERRETDB_PIDFILE"
  if ! "$FERRETDB_BIN" -ping "$(mongo_uri)" -ping-timeout "${START_TIMEOUT}s" 2>>"$FERRETDB_LOG"; then
    tail -n 40 "$FERRETDB_LOG" >&2
    stop_ferretdb_only
    die "ferretdb: not ready (log: $FERRETDB_LOG)"
  fi
  log "ferretdb: ready on $HOST:$FERRETDB_PORT (pid $pid) in $(since "$t0")"
}

stop_ferretdb_only() { stop_pid ferretdb "$FERRETDB_PIDFILE" parley-ferretdb; }

# ---------------------------------------------------------------- commands

ALL=(redis kafka postgres ferretdb)

# expand_targets ARGS...: sets TARGETS to the services named (default: all).
TARGETS=()
expand_targets() {
  local t
  TARGETS=()
  (($#)) || set -- all
  for t in "$@"; do
    case $t in
      all) TARGETS+=("${ALL[@]}") ;;
      redis | kafka | postgres | ferretdb) TARGETS+=("$t") ;;
      mongo) TARGETS+=(ferretdb) ;;
      *) die "unknown service '$t' (expected: redis kafka postgres ferretdb all)" ;;
    esac
  done
}

has() {
  local x=$1
  shift
  local e
  for e in "$@"; do [[ $e == "$x" ]] && return 0; done
  return 1
}

cmd_start() {
  local targets t0
  expand_targets "$@"
  targets=("${TARGETS[@]}")
  t0=$(now)
  mkdir -p "$SERVICES_DIR"
  log "scratch dir: $SERVICES_DIR"
  # Build/fetch first so that the start timings measure only the servers.
  if has kafka "${targets[@]}"; then ensure_kafka; fi
  if has ferretdb "${targets[@]}"; then ensure_ferretdb; fi
  # Kafka's JVM is the slowest: launch it first and wait for it last.
  # If anything below fails, do not leave a Kafka launched here half-started.
  trap '[[ -n $KAFKA_T0 ]] && stop_kafka' EXIT
  if has kafka "${targets[@]}"; then launch_kafka; fi
  if has redis "${targets[@]}"; then start_redis; fi
  if has postgres "${targets[@]}" && ! has ferretdb "${targets[@]}"; then start_postgres; fi
  if has ferretdb "${targets[@]}"; then start_ferretdb; fi
  if has kafka "${targets[@]}"; then wait_kafka; fi
  KAFKA_T0=""
  trap - EXIT
  log "all requested services ready in $(since "$t0")"
}

cmd_stop() {
  local targets
  expand_targets "$@"
  targets=("${TARGETS[@]}")
  if has ferretdb "${targets[@]}"; then stop_ferretdb_only; fi
  if has ferretdb "${targets[@]}" || has postgres "${targets[@]}"; then
    ferretdb_running && { log "postgres: left running, ferretdb still uses it"; } || stop_postgres
  fi
  if has kafka "${targets[@]}"; then stop_kafka; fi
  if has redis "${targets[@]}"; then stop_redis; fi
}

status_line() {
  local name=$1 addr=$2 pid=$3
  if [[ -n $pid ]]; then
    printf '%-9s running  pid %-8s %s\n' "$name" "$pid" "$addr"
  else
    printf '%-9s stopped\n' "$name"
  fi
}

cmd_status() {
  local rc=0
  if redis_running; then status_line redis "$HOST:$REDIS_PORT" "$(<"$REDIS_PIDFILE")"; else status_line redis "" ""; rc=3; fi
  if kafka_running; then status_line kafka "$HOST:$KAFKA_PORT" "$(<"$KAFKA_PIDFILE")"; else status_line kafka "" ""; rc=3; fi
  if [[ -n $(pg_bindir) ]] && postgres_running; then
    status_line postgres "$HOST:$PG_PORT" "$(head -n 1 "$PG_DATA/postmaster.pid")"
  else
    status_line postgres "" ""
    rc=3
  fi
  if ferretdb_running; then status_line ferretdb "$HOST:$FERRETDB_PORT" "$(<"$FERRETDB_PIDFILE")"; else status_line ferretdb "" ""; rc=3; fi
  printf 'scratch dir: %s\n' "$SERVICES_DIR"
  return $rc
}

cmd_env() {
  printf 'export PARLEY_REDIS_URL=%s\n' "redis://$HOST:$REDIS_PORT"
  printf 'export PARLEY_KAFKA_BROKERS=%s\n' "$HOST:$KAFKA_PORT"
  printf 'export PARLEY_MONGO_URI=%s\n' "$(mongo_uri)"
  # FerretDB's own PostgreSQL: Parley's server and persister create GIN
  # indexes there for their lookups (--ferretdb-postgres-url, internal/ferretpg).
  printf 'export PARLEY_FERRETDB_POSTGRES_URL=%s\n' "postgres://ferretdb@$HOST:$PG_PORT/ferretdb"
}

cmd_clean() {
  cmd_stop all
  # Delete only what this script creates, then the dir itself if it is empty.
  rm -rf "$REDIS_DIR" "$KAFKA_DIR" "$PG_DIR" "$FERRETDB_DIR"
  rmdir "$SERVICES_DIR" 2>/dev/null || true
  log "removed data and logs under $SERVICES_DIR"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    install) cmd_install ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    restart) cmd_stop "$@"; cmd_start "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    clean) cmd_clean ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
