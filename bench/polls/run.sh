#!/bin/bash
# Poll load on one live stream: N WebSocket viewers watch the stream and each casts ONE vote
# (polls.vote) within D seconds on one poll; every viewer counts the poll.updated frames it
# receives. After the run the poll is read back over REST: its counters must equal the
# accepted votes. Prints onaird's CPU seconds and RSS, each run, and the medians.
# Usage: bench/polls/run.sh [voters=10000] [seconds=10] [runs=3]
# Environment: BUILD (default build), WINDOW_MS (default 500, the plugin's default).
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
N=${1:-10000}; D=${2:-10}; RUNS=${3:-3}
WINDOW_MS=${WINDOW_MS:-500}
CB="$BUILD/bench/chat/chatbench"
[ -x "$CB" ] || { echo "build first: cmake --build $BUILD --target chatbench"; exit 1; }
command -v curl >/dev/null || { echo "needs curl"; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
KEY=benchkey
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

write_config() { # $1: data dir
    cat > "$WORK/onair.yaml" <<YAML
server:
  host: 127.0.0.1
  port: 0
  ws_send_queue_bytes: 4194304
  max_connections_per_address: 1000000   # every client connects from 127.0.0.1
  work_queue: 100000    # 10,000 streams.watch within seconds: more than the default 1024 wait
auth:
  jwt_secret: "$SECRET-core"
  api_keys: ["$KEY:$SECRET"]
  password_hash: interactive
storage:
  backend: sqlite
  data_dir: $1
rate_limits:
  ws.message: 1000000/1s     # the load is the point here
  ws.message_ip: 1000000/1s
logging:
  level: ${BENCH_LOG_LEVEL:-warn}
  access_log: false
plugins:
  dir: $ROOT/$BUILD/plugins
  conf_dir: plugins
YAML
    rm -f "$WORK/plugins/hello.yaml"
    echo "enabled: true" > "$WORK/plugins/streams.yaml"
    echo "enabled: true" > "$WORK/plugins/moderation.yaml"   # every vote runs its filter
    printf 'enabled: true\nconfig:\n  window_ms: %s\n' "$WINDOW_MS" > "$WORK/plugins/polls.yaml"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "voters=$N seconds=$D window_ms=$WINDOW_MS runs=$RUNS (sqlite)"
# voters are API-key tokens (sub bench-<i>) minted by chatbench: no accounts are registered
RES=()
for r in $(seq "$RUNS"); do
    write_config "$WORK/data-$r"
    start_onaird
    # the stream (and its poll) belong to a registered account: an API-key token's subject is none
    OWNER=$(register_token "http://127.0.0.1:$PORT" pollowner) || { cat "$WORK/onaird.log"; exit 1; }
    api() { curl -sf -X "$1" -H "Authorization: Bearer $OWNER" -H 'Content-Type: application/json' \
                 ${3:+-d "$3"} "http://127.0.0.1:$PORT$2"; }
    SID=$(api POST /api/v1/streams '{"title":"bench"}' | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -1)
    [ -n "$SID" ] || { echo "stream create failed"; cat "$WORK/onaird.log"; exit 1; }
    api POST "/api/v1/streams/$SID/start" > /dev/null || { echo "stream start failed"; exit 1; }
    PID=$(api POST "/api/v1/streams/$SID/polls" \
              '{"title":"bench","choices":["a","b","c"],"duration_s":1800}' |
          sed -n 's/.*"poll":{"id":"\([^"]*\)".*/\1/p')
    [ -n "$PID" ] || { echo "poll create failed"; cat "$WORK/onaird.log"; exit 1; }
    before=$(proc_stats $ONAIRD_PID)
    out=$("$CB" -p "$PORT" -s "$SID" -k "$KEY" -K "$SECRET" -m poll -P "$PID" -n "$N" -d "$D" 2>&1) || true
    after=$(proc_stats $ONAIRD_PID)
    # the store's counters: the sum of the choices' votes and the voters
    poll=$(api GET "/api/v1/polls/$PID")
    stored=$(echo "$poll" | grep -o '"votes":[0-9]*' | cut -d: -f2 | awk '{s+=$1} END {print s+0}')
    voters=$(echo "$poll" | sed -n 's/.*"voters":\([0-9]*\).*/\1/p')
    echo "$out" | sed "s/^/run $r: /"
    echo "run $r: stored counters: $stored votes, $voters voters"
    echo "run $r: onaird before: $before; after: $after"
    cpu0=$(echo "$before" | sed -n 's/cpu_s=\([0-9.]*\).*/\1/p'); cpu1=$(echo "$after" | sed -n 's/cpu_s=\([0-9.]*\).*/\1/p')
    rss1=$(echo "$after" | sed -n 's/.*rss_kib=\([0-9]*\).*/\1/p')
    res=$(echo "$out" | grep '^RESULT' || true)
    accepted=$(echo "$res" | sed -n 's/.*accepted=\([0-9]*\).*/\1/p')
    exact=0; [ "$stored" = "$accepted" ] && [ "$voters" = "$accepted" ] && exact=1
    RES[$r]="$res stored=$stored exact=$exact cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}') rss_kib=$rss1"
    kill $ONAIRD_PID; wait $ONAIRD_PID 2>/dev/null || true
    trap - EXIT
done
# medians of every numeric key=value of the RESULT lines
keys=$(for r in $(seq "$RUNS"); do echo "${RES[$r]}"; done | tr ' ' '\n' | grep '=' | cut -d= -f1 | grep -v '^mode$' | awk '!s[$0]++')
line="median:"
for k in $keys; do
    v=$(for r in $(seq "$RUNS"); do echo "${RES[$r]}"; done | tr ' ' '\n' | sed -n "s/^$k=//p" | median)
    line="$line $k=$v"
done
echo "$line"
rm -rf "$WORK"
