#!/usr/bin/env bash
# End-to-end tests of the web app in headless Chromium (Debian's package, driven
# by playwright-core) against a real Parley on the real services.
#
#   bash scripts/web-e2e.sh
#
# Starts (idempotently) Redis, Kafka and FerretDB with scripts/services.sh and
# leaves them running (the caller owns them); installs chromium from apt if it
# is missing; builds the web app and the parley binary; runs `parley server`
# (serving the built app) and `parley persister` on a free port with a unique
# Redis prefix, topic and database; runs webclient/e2e with node's test runner;
# stops the processes it started. The tests restart the server themselves
# (same port, same flags) through $PARLEY_E2E_SERVER_SH / $PARLEY_E2E_SERVER_PIDFILE.
# Then the same tests run again against the server with TLS on its one port
# (--tls-cert/--tls-key, a self-signed certificate for 127.0.0.1 made with
# openssl): the app and grpc-web over https, the Connect stream over wss://.
# Chromium accepts that certificate (ignoreHTTPSErrors), node's fetch trusts
# it (NODE_EXTRA_CA_CERTS).
#
# Settings: PARLEY_E2E_KEEP=1 keeps the scratch dir (logs); PARLEY_E2E_SKIP_BUILD=1
# reuses webclient/dist; PARLEY_E2E_SCREENSHOTS (default docs/screenshots; the
# TLS pass keeps its screenshots in the scratch dir); PARLEY_E2E_TLS=0 skips
# the TLS pass.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

step() { printf '\n==> %s (%s)\n' "$*" "$(date +%T)"; }

step "services (install, start: idempotent)"
bash scripts/services.sh install
bash scripts/services.sh start all
eval "$(bash scripts/services.sh env)"
: "${PARLEY_REDIS_URL:?}" "${PARLEY_KAFKA_BROKERS:?}" "${PARLEY_MONGO_URI:?}"

# Chromium from Debian (never a downloaded browser); the emoji font makes the
# screenshots show emoji as people see them.
if [[ ! -x /usr/bin/chromium || ! -d /usr/share/fonts/truetype/noto ]] || ! command -v openssl >/dev/null; then
  step "installing chromium, fonts-noto-color-emoji and openssl (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium fonts-noto-color-emoji openssl >/dev/null
fi

step "web app: npm ci, unit tests (vitest), type check + build"
(
  cd webclient
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  npm ci --no-audit --no-fund --loglevel=error
  npm test --silent
  if [[ "${PARLEY_E2E_SKIP_BUILD:-}" != 1 || ! -f dist/index.html ]]; then
    npm run --silent build
  fi
)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/parley-web-e2e.XXXXXX")"
RUN_ID="webe2e$(date +%s)$$"
step "building parley into $WORK"
go build -o "$WORK/parley" ./cmd/parley

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
ADDR="127.0.0.1:$PORT"
SERVER_PIDFILE="$WORK/server.pid"
PERSISTER_PIDFILE="$WORK/persister.pid"

# write_server_sh FILE [FLAGS]: the server's command line as a script, so the
# tests can restart it as it was.
write_server_sh() {
  cat >"$1" <<EOF
#!/usr/bin/env bash
echo \$\$ > "$SERVER_PIDFILE"
cd "$ROOT"
exec "$WORK/parley" server ${2:-} \\
  -addr "$ADDR" \\
  -redis-url "$PARLEY_REDIS_URL" -redis-prefix "$RUN_ID:" \\
  -kafka-brokers "$PARLEY_KAFKA_BROKERS" -topic "$RUN_ID.messages" -partitions 3 \\
  -mongo-uri "$PARLEY_MONGO_URI" -database "$RUN_ID" \\
  -token-key "web-e2e-token-key-0123456789abcdefghijklmnop" \\
  -web-dir "$ROOT/webclient/dist" \\
  -argon2-memory-kib 1024 -argon2-time 1 \\
  -log-format text >>"$WORK/server.log" 2>&1
EOF
  chmod +x "$1"
}
write_server_sh "$WORK/server.sh"

stop_pidfile() {
  local f="$1" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  step "stopping parley server and persister"
  stop_pidfile "$SERVER_PIDFILE"
  stop_pidfile "$PERSISTER_PIDFILE"
  if [[ $rc -ne 0 ]]; then
    echo "--- server.log (tail)"; tail -n 40 "$WORK/server.log" 2>/dev/null || true
    echo "--- persister.log (tail)"; tail -n 20 "$WORK/persister.log" 2>/dev/null || true
  fi
  if [[ "${PARLEY_E2E_KEEP:-}" == 1 || $rc -ne 0 ]]; then
    echo "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT

# run_tests SERVER_SH URL [CURL_OPTS...]: starts the server with SERVER_SH,
# waits for URL/readyz (curl with CURL_OPTS) and runs webclient/e2e against
# it; the tests restart the server through SERVER_SH.
run_tests() {
  local server_sh=$1 url=$2 i
  shift 2
  bash "$server_sh" &
  for i in $(seq 1 120); do
    if [[ "$(curl -s "$@" -o /dev/null -w '%{http_code}' "$url/readyz" || true)" == 200 ]]; then break; fi
    if [[ $i == 120 ]]; then echo "parley server not ready at $url after 60s"; exit 1; fi
    sleep 0.5
  done
  echo "ready: $url/"
  (cd webclient && PARLEY_E2E_URL="$url" PARLEY_E2E_SERVER_SH="$server_sh" \
    node --test --test-concurrency=1 --test-reporter=spec e2e/)
}

step "starting parley persister; end-to-end tests in headless Chromium"
(
  echo $BASHPID >"$PERSISTER_PIDFILE"
  exec "$WORK/parley" persister \
    -kafka-brokers "$PARLEY_KAFKA_BROKERS" -topic "$RUN_ID.messages" -partitions 3 \
    -dlq-topic "$RUN_ID.messages.dlq" -group "$RUN_ID-persister" \
    -mongo-uri "$PARLEY_MONGO_URI" -database "$RUN_ID" \
    -metrics-addr "" -log-format text >>"$WORK/persister.log" 2>&1
) &
export PARLEY_E2E_SERVER_PIDFILE="$SERVER_PIDFILE"
export PARLEY_E2E_TMP="$WORK"
PARLEY_E2E_SCREENSHOTS="${PARLEY_E2E_SCREENSHOTS:-$ROOT/docs/screenshots}" run_tests "$WORK/server.sh" "http://$ADDR"

if [[ "${PARLEY_E2E_TLS:-1}" != 0 ]]; then
  step "the same tests over TLS (the app and grpc-web over https, Connect over wss)"
  stop_pidfile "$SERVER_PIDFILE"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
  write_server_sh "$WORK/server-tls.sh" "-tls-cert $WORK/cert.pem -tls-key $WORK/key.pem"
  mkdir -p "$WORK/screenshots-tls"
  PARLEY_E2E_SCREENSHOTS="$WORK/screenshots-tls" NODE_EXTRA_CA_CERTS="$WORK/cert.pem" \
    run_tests "$WORK/server-tls.sh" "https://$ADDR" --cacert "$WORK/cert.pem"
fi
