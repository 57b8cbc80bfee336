#!/bin/bash
# Chat and reactions load on one stream: N WebSocket viewers in one stream's chat with S
# senders at R messages/s each; then N viewers all sending reactions about once a second.
# Usage: bench/chat/run.sh [viewers=10000] [senders=50] [seconds=20] [runs=3]
# Environment: BUILD (default build), MODES (default "chat react").
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
N=${1:-10000}; S=${2:-50}; D=${3:-20}; RUNS=${4:-3}
MODES=${MODES:-chat react}
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
auth:
  jwt_secret: "$SECRET-core"
  api_keys: ["$KEY:$SECRET"]
  password_hash: interactive
storage:
  backend: sqlite
  data_dir: $1
rate_limits:
  auth.register: 100000/1h
  ws.message: 1000000/1s       # the load is the point here (the most a rate may be)
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
    printf 'enabled: true\nconfig:\n  history_on_join: 0\n' > "$WORK/plugins/chat.yaml"
    echo "enabled: true" > "$WORK/plugins/reactions.yaml"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "viewers=$N senders=$S rate=2/s seconds=$D runs=$RUNS"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A RES
for mode in $MODES; do
    for r in $(seq "$RUNS"); do
        write_config "$WORK/data-$mode-$r"
        start_onaird
        # the stream belongs to a registered account (an API-key token's subject is none)
        OWNER=$(register_token "http://127.0.0.1:$PORT" chatowner) || { cat "$WORK/onaird.log"; exit 1; }
        api() { curl -sf -X "$1" -H "Authorization: Bearer $OWNER" -H 'Content-Type: application/json' \
                     ${3:+-d "$3"} "http://127.0.0.1:$PORT$2"; }
        SID=$(api POST /api/v1/streams '{"title":"bench"}' | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -1)
        [ -n "$SID" ] || { echo "stream create failed"; cat "$WORK/onaird.log"; exit 1; }
        api POST "/api/v1/streams/$SID/start" > /dev/null || { echo "stream start failed"; exit 1; }
        before=$(proc_stats $ONAIRD_PID)
        out=$("$CB" -p "$PORT" -s "$SID" -k "$KEY" -K "$SECRET" -m "$mode" -n "$N" -S "$S" -r 2 -d "$D" 2>&1) || true
        after=$(proc_stats $ONAIRD_PID)
        echo "$out" | sed "s/^/$mode run $r: /"
        echo "$mode run $r: onaird before: $before; after: $after"
        cpu0=$(echo "$before" | sed -n 's/cpu_s=\([0-9.]*\).*/\1/p'); cpu1=$(echo "$after" | sed -n 's/cpu_s=\([0-9.]*\).*/\1/p')
        rss1=$(echo "$after" | sed -n 's/.*rss_kib=\([0-9]*\).*/\1/p')
        res=$(echo "$out" | grep '^RESULT' || true)
        RES[$mode,$r]="$res cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}') rss_kib=$rss1"
        kill $ONAIRD_PID; wait $ONAIRD_PID 2>/dev/null || true
        trap - EXIT
    done
    # medians of every numeric key=value of the RESULT lines
    keys=$(for r in $(seq "$RUNS"); do echo "${RES[$mode,$r]}"; done | tr ' ' '\n' | grep '=' | cut -d= -f1 | grep -v '^mode$' | awk '!s[$0]++')
    line="median $mode:"
    for k in $keys; do
        v=$(for r in $(seq "$RUNS"); do echo "${RES[$mode,$r]}"; done | tr ' ' '\n' | sed -n "s/^$k=//p" | median)
        line="$line $k=$v"
    done
    echo "$line"
done
rm -rf "$WORK"
