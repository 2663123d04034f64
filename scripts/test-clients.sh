#!/usr/bin/env bash
# Every client of Parley, each with the real tool, against one real Parley
# (a server and a persister as processes, on the real Redis, Kafka and
# FerretDB):
#
#   grpcurl       reflection list/describe, SignUp, Login, CreateRoom,
#                 SendMessage, ListMessages, a Connect stream (JSON on stdin)
#   rest          curl through every route of api/parley.gateway.yaml, the
#                 NDJSON StreamRoom stream, errors 400/401/403/404/409/429,
#                 /openapi.json, /docs/, /healthz, /readyz
#   examples      examples/go (go run), examples/python (pytest),
#                 examples/node (node --test), `parley chat` through a pipe
#   schemathesis  against /openapi.json as a signed-in user
#   health        grpc-health-probe: SERVING, NOT_SERVING while Redis is
#                 stopped (scripts/services.sh stop redis), SERVING again
#
# The services must be running (bash scripts/services.sh start all); their
# addresses come from `scripts/services.sh env` unless PARLEY_REDIS_URL,
# PARLEY_KAFKA_BROKERS and PARLEY_MONGO_URI are set. Every process started
# here binds 127.0.0.1 and is stopped on exit (Redis is started again if the
# health section stopped it). Installed on first use and cached: grpcurl and
# grpc-health-probe (tools/clients/go.mod) into bin/, a Python virtualenv
# under $PARLEY_CACHE_DIR, examples/node/node_modules.
#
# Settings (environment):
#   PARLEY_CLIENT_SECTIONS   sections to run (default: all, in the order above)
#   PARLEY_BIN               a parley binary to test (default: built into bin/)
#   PARLEY_SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (25)
#   PARLEY_CACHE_DIR         cache dir (default ${XDG_CACHE_HOME:-$HOME/.cache}/parley)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECTIONS=${PARLEY_CLIENT_SECTIONS:-"grpcurl rest examples schemathesis health"}
CACHE_DIR="${PARLEY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/parley}"
MAX_EXAMPLES=${PARLEY_SCHEMATHESIS_MAX_EXAMPLES:-25}
if [[ -z ${PARLEY_REDIS_URL:-} || -z ${PARLEY_KAFKA_BROKERS:-} || -z ${PARLEY_MONGO_URI:-} ]]; then
  eval "$(bash scripts/services.sh env)"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/parley-clients.XXXXXX")
NAME="t_clients_$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n')"
TOKEN_KEY="clients-test-token-key-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PASSWORD="correct-horse-battery"
export PYTHONPYCACHEPREFIX="$WORK/pycache" # no __pycache__ in gen/python or examples/
export PYTHONDONTWRITEBYTECODE=1
export SCARF_ANALYTICS=false

# ------------------------------------------------------------------ reporting

T0=$SECONDS
PASSED=()
FAILED=()
pass() { PASSED+=("$1"); printf '  ok    %s\n' "$1"; }
fail() {
  FAILED+=("$1")
  printf '  FAIL  %s\n' "$1"
  if [[ -n ${2:-} ]]; then printf '%s\n' "$2" | head -c 3000 | sed 's/^/        | /'; echo; fi
}
section() { printf '\n==> %s (%s, +%ds)\n' "$1" "$(date +%T)" $((SECONDS - T0)); }
die() { printf 'test-clients: %s\n' "$*" >&2; exit 1; }

# check NAME JQ_EXPR JSON: the jq expression is true of the JSON.
check() {
  if jq -e "$2" >/dev/null 2>&1 <<<"$3"; then pass "$1"; else fail "$1" "jq '$2' is not true of: $3"; fi
}
# has NAME TEXT OUTPUT: the output contains the text.
has() {
  if grep -qF -- "$2" <<<"$3"; then pass "$1"; else fail "$1" "no \"$2\" in: $3"; fi
}

# ------------------------------------------------------------------ processes

# Every process started here is listed in $WORK/pids (start_server runs in
# a command substitution, a subshell, so an array would not see its pids).
REDIS_STOPPED=0
track() { echo "$1" >>"$WORK/pids"; }
cleanup() {
  local rc=$? pid pids=()
  if ((REDIS_STOPPED)); then
    bash scripts/services.sh start redis >/dev/null 2>&1 || echo "test-clients: could not restart Redis" >&2
  fi
  [[ -e $WORK/pids ]] && mapfile -t pids <"$WORK/pids"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if ((${#FAILED[@]})) || ((rc != 0)); then
    for f in "$WORK"/*.log; do
      [[ -e $f ]] || continue
      printf '\n--- %s (last 30 lines) ---\n' "$(basename "$f")"
      tail -n 30 "$f"
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server LABEL FLAGS...: starts `parley server` on a free port, waits
# until /readyz answers 200, prints the address.
start_server() {
  local label=$1 addr="" i
  shift
  "$PARLEY" server -addr 127.0.0.1:0 \
    -redis-url "$PARLEY_REDIS_URL" -redis-prefix "$NAME:" \
    -kafka-brokers "$PARLEY_KAFKA_BROKERS" -topic "$NAME" -partitions 2 \
    -mongo-uri "$PARLEY_MONGO_URI" -database "$NAME" \
    -token-key "$TOKEN_KEY" -argon2-memory-kib 1024 -argon2-time 1 \
    -web-dir /nonexistent -shutdown-grace 5s -log-format text "${EXTRA_SERVER_FLAGS[@]}" "$@" \
    >"$WORK/$label.log" 2>&1 &
  local pid=$!
  track "$pid"
  for ((i = 0; i < 600; i++)); do
    addr=$(sed -n 's/.*msg="parley server listening" addr=\([0-9.:]*\).*/\1/p' "$WORK/$label.log" | head -n1)
    if [[ -n $addr ]] && curl -sf "http://$addr/readyz" >/dev/null 2>&1; then
      echo "$addr"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$WORK/$label.log" >&2; die "$label exited during start-up"; }
    sleep 0.1
  done
  tail -n 20 "$WORK/$label.log" >&2
  die "$label not ready after 60s"
}

start_persister() {
  "$PARLEY" persister \
    -kafka-brokers "$PARLEY_KAFKA_BROKERS" -topic "$NAME" -dlq-topic "$NAME.dlq" -group "$NAME" -partitions 2 \
    -mongo-uri "$PARLEY_MONGO_URI" -database "$NAME" -metrics-addr "" -log-format text \
    >"$WORK/persister.log" 2>&1 &
  track $!
}

# ------------------------------------------------------------------ tools

section "building parley and the client tools"
if [[ -n ${PARLEY_BIN:-} ]]; then
  PARLEY=$PARLEY_BIN
else
  go build -o bin/parley ./cmd/parley
  PARLEY=$ROOT/bin/parley
fi
# Pinned in tools/clients/go.mod (a module of its own, so tools/go.mod's
# protoc-gen-go stays where it is).
if [[ ! -x bin/grpcurl || ! -x bin/grpc-health-probe || tools/clients/go.sum -nt bin/grpcurl ]]; then
  (cd tools/clients &&
    go build -o ../../bin/ -ldflags "-X main.version=$(go list -m -f '{{.Version}}' github.com/fullstorydev/grpcurl)" \
      github.com/fullstorydev/grpcurl/cmd/grpcurl github.com/grpc-ecosystem/grpc-health-probe)
fi
GRPCURL=$ROOT/bin/grpcurl
PROBE=$ROOT/bin/grpc-health-probe
for tool in curl jq python3 node npm; do command -v "$tool" >/dev/null || die "$tool not found"; done

EXTRA_SERVER_FLAGS=()
# Many sign-ups come from 127.0.0.1 here; lift the per-address limit where the server has one.
if "$PARLEY" server -h 2>&1 | grep -q -- '-address-attempts'; then
  EXTRA_SERVER_FLAGS+=(-address-attempts 100000 -login-attempts 100000)
fi

section "starting parley server + persister ($NAME)"
start_persister
A=$(start_server server)
echo "  server at $A (gRPC, REST, /openapi.json, /docs/)"
H="http://$A"

rand() { od -An -N4 -tx1 /dev/urandom | tr -d ' \n'; }

# ensure_venv: the Python packages of the examples and of schemathesis, in a
# virtualenv cached per content of the two requirement files (PyPI once).
ensure_venv() {
  VENV="$CACHE_DIR/venv-clients-$(cat examples/python/requirements.txt tools/python/requirements-test.txt | sha256sum | cut -c1-12)"
  [[ -e $VENV/.installed ]] && return 0
  echo "  installing Python packages into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    -r examples/python/requirements.txt -r tools/python/requirements-test.txt || die "pip install failed"
  touch "$VENV/.installed"
}

# ================================================================== grpcurl
if [[ " $SECTIONS " == *" grpcurl "* ]]; then
  section "grpcurl $("$GRPCURL" -version 2>&1 | head -n1)"
  G=("$GRPCURL" -plaintext)

  out=$("${G[@]}" "$A" list 2>&1) || true
  for svc in parley.v1.AuthService parley.v1.RoomService parley.v1.ChatService grpc.health.v1.Health; do
    has "grpcurl list shows $svc" "$svc" "$out"
  done
  out=$("${G[@]}" "$A" list parley.v1.ChatService 2>&1) || true
  has "grpcurl list parley.v1.ChatService" "parley.v1.ChatService.Connect" "$out"
  out=$("${G[@]}" "$A" describe parley.v1.ChatService.Connect 2>&1) || true
  has "grpcurl describe Connect" "rpc Connect ( stream .parley.v1.ConnectRequest ) returns ( stream .parley.v1.ConnectResponse )" "$out"
  out=$("${G[@]}" "$A" describe parley.v1.SendMessageRequest 2>&1) || true
  has "grpcurl describe SendMessageRequest" "string client_msg_id = 2;" "$out"

  user="grpcurl_$(rand)"
  out=$("${G[@]}" -d "{\"username\":\"$user\",\"password\":\"$PASSWORD\"}" "$A" parley.v1.AuthService/SignUp 2>&1) || true
  check "grpcurl SignUp" ".user.username == \"$user\" and (.tokens.accessToken | length > 20)" "$out"
  out=$("${G[@]}" -d "{\"username\":\"$user\",\"password\":\"$PASSWORD\"}" "$A" parley.v1.AuthService/Login 2>&1) || true
  check "grpcurl Login" ".user.username == \"$user\" and (.tokens.refreshToken | length > 10)" "$out"
  TOKEN=$(jq -r '.tokens.accessToken // empty' <<<"$out" 2>/dev/null || true)
  AUTH=(-H "authorization: Bearer $TOKEN")

  out=$("${G[@]}" "$A" parley.v1.AuthService/GetMe 2>&1) && rc=0 || rc=$?
  if ((rc != 0)) && grep -q "Code: Unauthenticated" <<<"$out"; then pass "grpcurl without a token: Unauthenticated"; else fail "grpcurl without a token: Unauthenticated" "rc=$rc $out"; fi

  out=$("${G[@]}" "${AUTH[@]}" -d '{"name":"grpcurl-room","topic":"made with grpcurl"}' "$A" parley.v1.RoomService/CreateRoom 2>&1) || true
  check "grpcurl CreateRoom" '.room.name == "grpcurl-room" and .room.visibility == "ROOM_VISIBILITY_PUBLIC"' "$out"
  ROOM=$(jq -r '.room.roomId // empty' <<<"$out" 2>/dev/null || true)

  out=$("${G[@]}" "${AUTH[@]}" -d "{\"room_id\":\"$ROOM\",\"client_msg_id\":\"g-1\",\"body\":\"hello from grpcurl\"}" "$A" parley.v1.ChatService/SendMessage 2>&1) || true
  check "grpcurl SendMessage" '.message.seq == "1" and .message.body == "hello from grpcurl"' "$out"
  out2=$("${G[@]}" "${AUTH[@]}" -d "{\"room_id\":\"$ROOM\",\"client_msg_id\":\"g-1\",\"body\":\"hello from grpcurl\"}" "$A" parley.v1.ChatService/SendMessage 2>&1) || true
  check "grpcurl SendMessage retried with the same client_msg_id: same message" ".message.messageId == $(jq '.message.messageId' <<<"$out" 2>/dev/null || echo null)" "$out2"

  # The persister stores it asynchronously: poll history.
  for _ in $(seq 1 100); do
    out=$("${G[@]}" "${AUTH[@]}" -d "{\"room_id\":\"$ROOM\"}" "$A" parley.v1.ChatService/ListMessages 2>&1) || true
    jq -e '.messages | length >= 1' >/dev/null 2>&1 <<<"$out" && break
    sleep 0.2
  done
  check "grpcurl ListMessages" '.messages | length == 1 and .[0].body == "hello from grpcurl"' "$out"

  # Connect: JSON frames on stdin (-d @), one per line; stdin stays open
  # while we wait for frames, since closing it half-closes the stream.
  out=$({
    echo "{\"subscribe\":{\"room_id\":\"$ROOM\",\"resume_from\":{\"epoch\":\"\",\"seq\":0}}}"
    sleep 1
    echo "{\"send\":{\"room_id\":\"$ROOM\",\"client_msg_id\":\"g-2\",\"body\":\"over the stream\"}}"
    echo '{"ping":{"nonce":42}}'
    sleep 2
  } | timeout 20 "${G[@]}" "${AUTH[@]}" -d @ "$A" parley.v1.ChatService/Connect 2>&1) || true
  frames=$(jq -s -c . <<<"$out" 2>/dev/null || echo '[]')
  check "grpcurl Connect: subscribed" "map(select(.subscribed.roomId == \"$ROOM\")) | length == 1" "$frames"
  check "grpcurl Connect: sendAck" 'map(select(.sendAck.clientMsgId == "g-2" and .sendAck.message.seq == "2")) | length == 1' "$frames"
  check "grpcurl Connect: message delivered" 'map(select(.message.body == "over the stream")) | length == 1' "$frames"
  check "grpcurl Connect: pong" 'map(select(.pong.nonce == "42")) | length == 1' "$frames"

  out=$("${G[@]}" -d '{"service":"parley.v1.ChatService"}' "$A" grpc.health.v1.Health/Check 2>&1) || true
  check "grpcurl Health/Check" '.status == "SERVING"' "$out"
fi

# ================================================================== REST
if [[ " $SECTIONS " == *" rest "* ]]; then
  section "REST (grpc-gateway) with curl"
  COVERED=" "
  # rest SELECTOR EXPECTED_STATUS METHOD PATH [BODY] [TOKEN]: sets BODY,
  # STATUS; checks the status, and for errors the {code,message,details}
  # body with the gRPC code of that status.
  rest() {
    local sel=$1 want=$2 method=$3 path=$4 data=${5:-} tok=${6-$RTOKEN} args=()
    COVERED+="$sel "
    [[ -n $tok ]] && args+=(-H "Authorization: Bearer $tok")
    [[ -n $data ]] && args+=(-H "Content-Type: application/json" --data "$data")
    STATUS=$(curl -s -o "$WORK/body" -w '%{http_code}' -X "$method" "${args[@]}" "$H$path") || STATUS=000
    BODY=$(cat "$WORK/body")
    local name="$method $path -> $want"
    [[ ${#name} -gt 100 ]] && name="${name:0:97}..."
    if [[ $STATUS != "$want" ]]; then
      fail "$sel: $name" "got HTTP $STATUS: $BODY"
      return 1
    fi
    if ((want >= 400)); then
      local codes
      case $want in
        400) codes="3 9 11" ;; 401) codes="16" ;; 403) codes="7" ;; 404) codes="5" ;;
        409) codes="6 10" ;; 429) codes="8" ;; 503) codes="14" ;; *) codes="" ;;
      esac
      if ! jq -e --arg codes "$codes" '(.code | type == "number") and (.message | type == "string") and (.details | type == "array") and ((.code | tostring) as $c | $codes | split(" ") | index($c) != null)' >/dev/null 2>&1 <<<"$BODY"; then
        fail "$sel: $name (error body)" "$BODY"
        return 1
      fi
    fi
    pass "$sel: $name"
  }
  RTOKEN=""

  ann="rest_ann_$(rand)"
  bob="rest_bob_$(rand)"
  rest AuthService.SignUp 200 POST /v1/auth/signup "{\"username\":\"$ann\",\"password\":\"$PASSWORD\",\"displayName\":\"Ann\"}" "" || true
  RTOKEN=$(jq -r '.tokens.accessToken // empty' <<<"$BODY")
  REFRESH=$(jq -r '.tokens.refreshToken // empty' <<<"$BODY")
  rest AuthService.SignUp 409 POST /v1/auth/signup "{\"username\":\"$ann\",\"password\":\"$PASSWORD\"}" "" || true
  rest AuthService.SignUp 400 POST /v1/auth/signup '{"username":"X","password":"short"}' "" || true
  check "400 carries google.rpc.BadRequest field violations" '.details[0]["@type"] == "type.googleapis.com/google.rpc.BadRequest" and (.details[0].fieldViolations | length >= 1)' "$BODY"
  rest AuthService.SignUp 400 POST /v1/auth/signup '{"username": oops' "" || true
  rest AuthService.SignUp 200 POST /v1/auth/signup "{\"username\":\"$bob\",\"password\":\"$PASSWORD\"}" "" || true
  BTOKEN=$(jq -r '.tokens.accessToken // empty' <<<"$BODY")

  rest AuthService.Login 200 POST /v1/auth/login "{\"username\":\"$ann\",\"password\":\"$PASSWORD\"}" "" || true
  rest AuthService.Login 401 POST /v1/auth/login "{\"username\":\"$ann\",\"password\":\"wrong-password\"}" "" || true
  rest AuthService.Refresh 200 POST /v1/auth/refresh "{\"refreshToken\":\"$REFRESH\"}" "" || true
  NEW_REFRESH=$(jq -r '.tokens.refreshToken // empty' <<<"$BODY")
  rest AuthService.Refresh 401 POST /v1/auth/refresh "{\"refreshToken\":\"$REFRESH\"}" "" || true # reuse is refused
  rest AuthService.GetMe 200 GET /v1/me || true
  check "GetMe returns the caller" ".user.username == \"$ann\" and .user.displayName == \"Ann\"" "$BODY"
  rest AuthService.GetMe 401 GET /v1/me "" "" || true
  rest AuthService.GetMe 401 GET /v1/me "" "not-a-token" || true

  rest RoomService.CreateRoom 200 POST /v1/rooms '{"name":"rest-room","topic":"REST","visibility":"ROOM_VISIBILITY_PUBLIC"}' || true
  RROOM=$(jq -r '.room.roomId // empty' <<<"$BODY")
  rest RoomService.CreateRoom 400 POST /v1/rooms '{"name":""}' || true
  rest RoomService.CreateRoom 200 POST /v1/rooms '{"name":"rest-private","visibility":"ROOM_VISIBILITY_PRIVATE"}' || true
  PRIV=$(jq -r '.room.roomId // empty' <<<"$BODY")
  rest RoomService.GetRoom 200 GET "/v1/rooms/$RROOM" || true
  rest RoomService.GetRoom 200 GET "/v1/rooms/$PRIV" || true # its creator sees it at once
  rest RoomService.GetRoom 404 GET "/v1/rooms/$PRIV" "" "$BTOKEN" || true # private: invisible to non-members
  rest RoomService.CreateRoom 200 POST /v1/rooms '{"name":"rest-room-2"}' "$BTOKEN" || true
  rest RoomService.ListRooms 200 GET "/v1/rooms?filter=ROOM_FILTER_PUBLIC&pageSize=1" || true
  check "ListRooms pages (pageSize=1 gives a nextPageToken)" '(.rooms | length == 1) and (.nextPageToken | length > 0)' "$BODY"
  rest RoomService.ListRooms 400 GET "/v1/rooms?pageSize=-1" || true
  rest RoomService.ListRooms 400 GET "/v1/rooms?filter=ROOM_FILTER_PUBLIC&pageToken=garbage" || true

  # bob is not a member yet: sending is 403.
  rest ChatService.SendMessage 403 POST "/v1/rooms/$RROOM/messages" '{"clientMsgId":"r-0","body":"let me in"}' "$BTOKEN" || true
  rest RoomService.JoinRoom 200 POST "/v1/rooms/$RROOM:join" '{}' "$BTOKEN" || true
  rest RoomService.JoinRoom 404 POST "/v1/rooms/$PRIV:join" '{}' "$BTOKEN" || true
  rest RoomService.ListMembers 200 GET "/v1/rooms/$RROOM/members" || true
  check "ListMembers lists both" "[.members[].user.username] | sort == ([\"$ann\", \"$bob\"] | sort)" "$BODY"
  rest RoomService.LeaveRoom 200 POST "/v1/rooms/$RROOM:leave" '{}' "$BTOKEN" || true
  rest RoomService.AddMember 200 POST "/v1/rooms/$PRIV/members" "{\"username\":\"$bob\"}" || true
  rest RoomService.AddMember 200 POST "/v1/rooms/$PRIV/members" "{\"username\":\"$bob\"}" || true # idempotent
  check "AddMember twice returns the membership" ".member.user.username == \"$bob\"" "$BODY"
  rest RoomService.AddMember 404 POST "/v1/rooms/$PRIV/members" '{"username":"nobody_here"}' || true
  rest RoomService.GetRoom 200 GET "/v1/rooms/$PRIV" "" "$BTOKEN" || true
  rest RoomService.CreateDirectRoom 200 POST /v1/direct-rooms "{\"username\":\"$bob\"}" || true
  check "CreateDirectRoom gives a DIRECT room" '.room.visibility == "ROOM_VISIBILITY_DIRECT"' "$BODY"
  DM=$(jq -r '.room.roomId // empty' <<<"$BODY")
  rest RoomService.CreateDirectRoom 200 POST /v1/direct-rooms "{\"username\":\"$ann\"}" "$BTOKEN" || true
  check "CreateDirectRoom is created once per pair" ".room.roomId == \"$DM\"" "$BODY"

  # StreamRoom: newline-delimited JSON, one {"result": ...} per line.
  curl -s -N -H "Authorization: Bearer $RTOKEN" -D "$WORK/stream.headers" "$H/v1/rooms/$RROOM:stream" >"$WORK/stream.ndjson" 2>/dev/null &
  STREAM_PID=$!
  track "$STREAM_PID"
  sleep 1
  rest ChatService.SendMessage 200 POST "/v1/rooms/$RROOM/messages" '{"clientMsgId":"r-1","body":"first over REST"}' || true
  check "SendMessage returns the stored message" '.message.seq == "1" and .message.clientMsgId == "r-1"' "$BODY"
  rest ChatService.SendMessage 200 POST "/v1/rooms/$RROOM/messages" '{"client_msg_id":"r-2","body":"second (snake_case field names work too)"}' || true
  rest ChatService.SendMessage 400 POST "/v1/rooms/$RROOM/messages" '{"clientMsgId":"r-3","body":""}' || true
  rest ChatService.SendMessage 404 POST "/v1/rooms/no-such-room-000000000000000/messages" '{"clientMsgId":"r-4","body":"x"}' || true
  for _ in $(seq 1 50); do [[ $(wc -l <"$WORK/stream.ndjson") -ge 2 ]] && break; sleep 0.1; done
  kill "$STREAM_PID" 2>/dev/null || true
  stream=$(cat "$WORK/stream.ndjson")
  if [[ $(wc -l <<<"$stream") -ge 2 ]] && jq -e -s 'length >= 2 and .[0].result.message.body == "first over REST" and .[1].result.message.seq == "2"' >/dev/null 2>&1 <<<"$stream"; then
    pass "ChatService.StreamRoom: GET /v1/rooms/{id}:stream -> NDJSON {\"result\":{\"message\":...}} lines"
  else
    fail "ChatService.StreamRoom: NDJSON stream" "$stream"
  fi
  COVERED+="ChatService.StreamRoom "
  hdrs=$(tr -d '\r' <"$WORK/stream.headers")
  if grep -q '^HTTP/1.1 200' <<<"$hdrs" && grep -qi '^content-type: application/json' <<<"$hdrs" && grep -qi '^transfer-encoding: chunked' <<<"$hdrs"; then
    pass "StreamRoom: 200, Content-Type application/json, chunked"
  else
    fail "StreamRoom: response headers" "$hdrs"
  fi
  code=$(curl -s -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $RTOKEN" "$H/v1/rooms/no-such-room:stream")
  if [[ $code == 404 ]] && jq -e '.error.code == 5' >/dev/null 2>&1 <"$WORK/body"; then
    pass "StreamRoom of an unknown room: 404 with {\"error\":{code:5,...}}"
  else
    fail "StreamRoom of an unknown room" "HTTP $code $(cat "$WORK/body")"
  fi

  for _ in $(seq 1 100); do # history comes from the store (persister)
    curl -s -H "Authorization: Bearer $RTOKEN" "$H/v1/rooms/$RROOM/messages?pageSize=1" |
      jq -e '.messages | length == 1 and .[0].seq == "2"' >/dev/null 2>&1 && break
    sleep 0.2
  done
  rest ChatService.ListMessages 200 GET "/v1/rooms/$RROOM/messages?pageSize=1" || true
  check "ListMessages: newest first with a page token" '.messages[0].seq == "2" and (.nextPageToken | length > 0)' "$BODY"
  tok=$(jq -r '.nextPageToken // empty' <<<"$BODY")
  rest ChatService.ListMessages 200 GET "/v1/rooms/$RROOM/messages?pageSize=1&pageToken=$tok" || true
  check "ListMessages: second page" '.messages[0].seq == "1"' "$BODY"
  rest ChatService.ListMessages 200 GET "/v1/rooms/$RROOM/messages?afterSeq=1" || true
  check "ListMessages: forward from afterSeq" '.messages | length == 1 and .[0].seq == "2"' "$BODY"
  rest ChatService.ListMessages 400 GET "/v1/rooms/$RROOM/messages?pageToken=not-a-token" || true
  rest ChatService.ListMessages 400 GET "/v1/rooms/$RROOM/messages?pageSize=100000" || true
  rest ChatService.ListMessages 401 GET "/v1/rooms/$RROOM/messages" "" "" || true
  EPOCH=$(curl -s -H "Authorization: Bearer $RTOKEN" "$H/v1/rooms/$RROOM/messages?pageSize=1" | jq -r '.messages[0].epoch // empty')
  rest ChatService.MarkRead 200 POST "/v1/rooms/$RROOM:markRead" "{\"position\":{\"epoch\":\"$EPOCH\",\"seq\":\"1\"}}" || true
  check "MarkRead returns the marker" '.readMarker.position.seq == "1"' "$BODY"
  rest ChatService.ListRoomStates 200 GET "/v1/room-states?roomIds=$RROOM" || true
  check "ListRoomStates: unread count after the marker" '.states[0].unreadCount == "1" and .states[0].lastMessage.seq == "2"' "$BODY"

  rest AuthService.Logout 200 POST /v1/auth/logout "{\"refreshToken\":\"$NEW_REFRESH\"}" || true
  rest AuthService.Refresh 401 POST /v1/auth/refresh "{\"refreshToken\":\"$NEW_REFRESH\"}" "" || true

  # 429: a second server on the same deployment with a send rate of 1/s, burst 1.
  R=$(start_server server-ratelimited -send-rate 1 -send-burst 1)
  saveH=$H
  H="http://$R"
  rest ChatService.SendMessage 200 POST "/v1/rooms/$RROOM/messages" '{"clientMsgId":"rl-1","body":"one"}' || true
  rest ChatService.SendMessage 429 POST "/v1/rooms/$RROOM/messages" '{"clientMsgId":"rl-2","body":"two"}' || true
  check "429 carries google.rpc.RetryInfo" '.details | map(select(.["@type"] == "type.googleapis.com/google.rpc.RetryInfo")) | length == 1' "$BODY"
  H=$saveH

  rest Gateway.UnknownPath 404 GET /v1/nothing-here || true
  code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $RTOKEN" "$H/v1/me")
  if [[ $code == 405 ]]; then pass "wrong method on a known path: 405"; else fail "wrong method on a known path: 405" "got HTTP $code"; fi

  # Every rule of api/parley.gateway.yaml was called.
  missing=""
  for sel in $(sed -n 's/.*selector: *parley\.v1\.\([A-Za-z]*\.[A-Za-z]*\).*/\1/p' api/parley.gateway.yaml); do
    [[ $COVERED == *" $sel "* ]] || missing+=" $sel"
  done
  if [[ -z $missing ]]; then pass "every route of api/parley.gateway.yaml called"; else fail "routes never called:$missing"; fi

  # The spec and the docs page.
  code=$(curl -s -o "$WORK/spec.json" -w '%{http_code} %{content_type}' "$H/openapi.json")
  if [[ $code == "200 application/json" ]] && cmp -s "$WORK/spec.json" gen/openapi/parley.swagger.json; then
    pass "GET /openapi.json serves gen/openapi/parley.swagger.json"
  else
    fail "GET /openapi.json" "$code"
  fi
  page=$(curl -s "$H/docs/")
  has "GET /docs/ is the swagger-ui page" "swagger-ui/swagger-ui-bundle.js" "$page"
  code=$(curl -s -o /dev/null -w '%{http_code} %{content_type}' "$H/docs/swagger-ui/swagger-ui-bundle.js")
  has "GET /docs/swagger-ui/swagger-ui-bundle.js (served locally)" "200 text/javascript" "$code"
  has "GET /healthz" "ok" "$(curl -s "$H/healthz")"
  has "GET /readyz" "ready" "$(curl -s "$H/readyz")"
fi

# ================================================================== examples
if [[ " $SECTIONS " == *" examples "* ]]; then
  section "examples: Go, Python (pytest), Node (node --test), parley chat"

  out=$(timeout 60 go run ./examples/go -addr "$A" -room "go-lobby-$(rand)" 2>&1) && rc=0 || rc=$?
  if ((rc == 0)) && grep -q "^ack seq" <<<"$out" && grep -q "hello from the Go example" <<<"$out"; then
    pass "examples/go (go run)"
  else
    fail "examples/go (go run)" "rc=$rc $out"
  fi

  ensure_venv
  out=$(cd examples/python && PARLEY_ADDR=$A PARLEY_TEST_REQUIRE_SERVICES=1 timeout 300 "$VENV/bin/python" -m pytest -p no:cacheprovider -q 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" | tail -n 3 | sed 's/^/        /'
  if ((rc == 0)); then pass "examples/python (pytest)"; else fail "examples/python (pytest)" "$out"; fi

  if [[ ! -d examples/node/node_modules || examples/node/package-lock.json -nt examples/node/node_modules ]]; then
    (cd examples/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  out=$(cd examples/node && PARLEY_ADDR=$A PARLEY_TEST_REQUIRE_SERVICES=1 timeout 300 npm test --silent 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" | grep -E '^# (tests|pass|fail)' | sed 's/^/        /'
  if ((rc == 0)); then pass "examples/node (node --test)"; else fail "examples/node (node --test)" "$out"; fi

  cuser="chat_$(rand)"
  out=$(printf 'hello from a pipe\n/who\n' | PARLEY_PASSWORD=$PASSWORD timeout 60 "$PARLEY" chat -addr "$A" -user "$cuser" -signup -room "chat-room-$(rand)" 2>&1) && rc=0 || rc=$?
  if ((rc == 0)) && grep -q "$cuser: hello from a pipe" <<<"$out" && grep -q "created public room" <<<"$out"; then
    pass "parley chat: sign up, create room, send a line from stdin, see it come back"
  else
    fail "parley chat through a pipe" "rc=$rc $out"
  fi
fi

# ================================================================== schemathesis
if [[ " $SECTIONS " == *" schemathesis "* ]]; then
  section "schemathesis against /openapi.json"
  ensure_venv
  suser="st_$(rand)"
  STOKEN=$(curl -s -X POST "$H/v1/auth/signup" -d "{\"username\":\"$suser\",\"password\":\"$PASSWORD\"}" | jq -r '.tokens.accessToken // empty')
  [[ -n $STOKEN ]] || fail "schemathesis: sign-up of its user"
  # Checks: no 5xx; status codes, content types, headers and bodies as the
  # spec says; wrong methods answered 405; auth enforced where the spec
  # says so. StreamRoom is left out (an endless stream; covered by curl).
  # Not checked: whether the server accepts every request the schema allows
  # or rejects every other one (positive_data_acceptance,
  # negative_data_rejection, missing_required_header), as the spec does not
  # carry the validation rules (lengths, patterns, ranges, required fields).
  # Nor ensure_resource_availability: a creator who leaves their private
  # room no longer sees it (GET 404, by design: private rooms are invisible
  # to non-members), and schemathesis 4.32.5 counts only a DELETE, or a
  # write to the same path, as a removal, so a stateful run that happens to
  # go POST /v1/rooms, POST /v1/rooms/{id}:leave, GET /v1/rooms/{id} fails
  # (seen once in CI, 2026-11-27). The REST section above checks that a
  # created room, public or private, is readable by its creator at once and
  # a private one invisible to others.
  set +e
  (cd "$WORK" && timeout 900 "$VENV/bin/schemathesis" run "$H/openapi.json" \
    -H "Authorization: Bearer $STOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,ignored_auth,use_after_free \
    --exclude-operation-id ChatService_StreamRoom \
    --max-examples "$MAX_EXAMPLES" --request-timeout 10 --workers 2 --no-color \
    --warnings off) >"$WORK/schemathesis.out" 2>&1
  rc=$?
  set -e
  summary=$(grep -E '^=+ .* in [0-9.]+s =+$' "$WORK/schemathesis.out" | tail -n1 || true)
  echo "  schemathesis: ${summary:-no summary line}"
  if ((rc == 0)); then
    pass "schemathesis: no 5xx, responses match the spec"
  else
    if grep -q FAILURES "$WORK/schemathesis.out"; then
      fail "schemathesis (exit $rc)" "$(sed -n '/FAILURES/,$p' "$WORK/schemathesis.out" | head -n 150)"
    else
      fail "schemathesis (exit $rc)" "$(tail -n 40 "$WORK/schemathesis.out")"
    fi
  fi
fi

# ================================================================== health
if [[ " $SECTIONS " == *" health "* ]]; then
  section "grpc-health-probe: Redis down and back"
  # probe_until WANT SECONDS [SERVICE]: polls until the probe reports WANT.
  probe_until() {
    local want=$1 secs=$2 svc=${3:-} args=(-addr "$A" -connect-timeout 2s -rpc-timeout 2s) out
    [[ -n $svc ]] && args+=(-service "$svc")
    for ((i = 0; i < secs * 5; i++)); do
      out=$("$PROBE" "${args[@]}" 2>&1) || true
      if [[ $want == SERVING && $out == "status: SERVING" ]] || [[ $want == NOT_SERVING && $out == *NOT_SERVING* ]]; then
        LAST_PROBE=$out
        return 0
      fi
      sleep 0.2
    done
    LAST_PROBE=$out
    return 1
  }
  for svc in "" parley.v1.ChatService parley.v1.AuthService parley.v1.RoomService; do
    if probe_until SERVING 10 "$svc"; then pass "grpc-health-probe ${svc:-(server)}: SERVING"; else fail "grpc-health-probe ${svc:-(server)}: SERVING" "$LAST_PROBE"; fi
  done

  t=$SECONDS
  REDIS_STOPPED=1
  bash scripts/services.sh stop redis >/dev/null 2>&1
  if probe_until NOT_SERVING 30; then
    pass "Redis stopped: grpc-health-probe reports NOT_SERVING after $((SECONDS - t))s ($LAST_PROBE)"
  else
    fail "Redis stopped: NOT_SERVING" "$LAST_PROBE"
  fi
  if probe_until NOT_SERVING 5 parley.v1.ChatService; then pass "Redis stopped: parley.v1.ChatService NOT_SERVING"; else fail "Redis stopped: parley.v1.ChatService NOT_SERVING" "$LAST_PROBE"; fi
  code=$(curl -s -o "$WORK/body" -w '%{http_code}' "$H/readyz")
  if [[ $code == 503 ]]; then pass "Redis stopped: /readyz 503 ($(head -c 80 "$WORK/body"))"; else fail "Redis stopped: /readyz 503" "HTTP $code"; fi
  has "Redis stopped: /healthz still ok (liveness)" "ok" "$(curl -s "$H/healthz")"

  t=$SECONDS
  bash scripts/services.sh start redis >/dev/null 2>&1
  REDIS_STOPPED=0
  if probe_until SERVING 60; then
    pass "Redis back: SERVING again after $((SECONDS - t))s"
  else
    fail "Redis back: SERVING again" "$LAST_PROBE"
  fi
  has "Redis back: /readyz" "ready" "$(curl -s "$H/readyz")"
  # And the API works again end to end.
  out=$("$GRPCURL" -plaintext -d "{\"username\":\"after_$(rand)\",\"password\":\"$PASSWORD\"}" "$A" parley.v1.AuthService/SignUp 2>&1) || true
  tok=$(jq -r '.tokens.accessToken // empty' <<<"$out" 2>/dev/null || true)
  room=$("$GRPCURL" -plaintext -H "authorization: Bearer $tok" -d '{"name":"after-redis"}' "$A" parley.v1.RoomService/CreateRoom 2>&1 | jq -r '.room.roomId // empty' 2>/dev/null || true)
  out=$("$GRPCURL" -plaintext -H "authorization: Bearer $tok" -d "{\"room_id\":\"$room\",\"client_msg_id\":\"x\",\"body\":\"redis is back\"}" "$A" parley.v1.ChatService/SendMessage 2>&1) || true
  check "Redis back: SendMessage works" '.message.body == "redis is back"' "$out"
fi

# ================================================================== summary
section "summary"
printf 'took %ds\n' $((SECONDS - T0))
printf 'clients: %d passed, %d failed\n' "${#PASSED[@]}" "${#FAILED[@]}"
if ((${#FAILED[@]})); then
  printf 'FAILED:\n'
  printf '  %s\n' "${FAILED[@]}"
  echo "FAIL"
  exit 1
fi
echo "PASS"
