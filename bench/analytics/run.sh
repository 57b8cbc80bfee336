#!/bin/bash
# What analytics costs at 10,000 viewers: the chat benchmark's load (bench/chat/chatbench) on
# one live stream, run with the analytics plugin enabled and disabled, and onaird's CPU compared.
#   react: N viewers (each its own token) streams.watch the stream (N viewer.joined), send a
#          reaction about once a second for D seconds, then all disconnect (N viewer.left);
#   chat:  N viewers in the stream's chat, S of them sending 2 messages/s each for D seconds.
# With analytics on, GET /api/v1/analytics/status gives the bus events it counted and the bucket
# documents it wrote; the CPU difference divided by the events is its cost per event.
# Usage: bench/analytics/run.sh [viewers=10000] [senders=50] [seconds=30] [runs=3]
# Environment: BUILD (default build), MODES (default "react chat"), BUCKET_S (default 60).
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
N=${1:-10000}; S=${2:-50}; D=${3:-30}; RUNS=${4:-3}
MODES=${MODES:-react chat}
BUCKET_S=${BUCKET_S:-60}
CB="$BUILD/bench/chat/chatbench"
[ -x "$CB" ] || { echo "build first: cmake --build $BUILD --target chatbench"; exit 1; }
[ -e "$BUILD/plugins/analytics.so" ] || { echo "build first: cmake --build $BUILD --target analytics"; exit 1; }
command -v curl >/dev/null || { echo "needs curl"; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
KEY=benchkey
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

write_config() { # $1: data dir, $2: analytics on|off
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
  ws.message: 1000000/1s     # the load is the point here
  ws.message_ip: 1000000/1s
logging:
  level: ${BENCH_LOG_LEVEL:-warn}
  access_log: false
plugins:
  dir: $ROOT/$BUILD/plugins
  conf_dir: plugins
YAML
    rm -f "$WORK/plugins/hello.yaml" "$WORK/plugins/analytics.yaml"
    echo "enabled: true" > "$WORK/plugins/streams.yaml"
    printf 'enabled: true\nconfig:\n  history_on_join: 0\n' > "$WORK/plugins/chat.yaml"
    echo "enabled: true" > "$WORK/plugins/reactions.yaml"
    if [ "$2" = on ]; then
        printf 'enabled: true\nconfig:\n  bucket_s: %s\n' "$BUCKET_S" > "$WORK/plugins/analytics.yaml"
    fi
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "viewers=$N senders=$S rate=2/s seconds=$D runs=$RUNS bucket_s=$BUCKET_S"
ADMIN=$("$CB" -k "$KEY" -K "$SECRET" -t '"streamer","admin"')
declare -A CPU EV WR
for mode in $MODES; do
    for an in off on; do
        for r in $(seq "$RUNS"); do
            write_config "$WORK/data-$mode-$an-$r" "$an"
            : > "$WORK/onaird.log" # start_onaird reads it at once: it must exist
            start_onaird
            # the stream belongs to a registered account (an API-key token's subject is none);
            # the API-key admin reads the analytics status
            OWNER=$(register_token "http://127.0.0.1:$PORT" anowner) || { cat "$WORK/onaird.log"; exit 1; }
            api() { curl -sf -X "$1" -H "Authorization: Bearer ${AS:-$OWNER}" -H 'Content-Type: application/json' \
                         ${3:+-d "$3"} "http://127.0.0.1:$PORT$2"; }
            SID=$(api POST /api/v1/streams '{"title":"bench"}' | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -1)
            [ -n "$SID" ] || { echo "stream create failed"; cat "$WORK/onaird.log"; exit 1; }
            api POST "/api/v1/streams/$SID/start" > /dev/null || { echo "stream start failed"; exit 1; }
            before=$(proc_stats $ONAIRD_PID)
            t0=$(date +%s.%N)
            out=$("$CB" -p "$PORT" -s "$SID" -k "$KEY" -K "$SECRET" -m "$mode" -n "$N" -S "$S" -r 2 -d "$D" 2>&1) || true
            sleep 2 # the disconnections' viewer.left are handled
            after=$(proc_stats $ONAIRD_PID)
            t1=$(date +%s.%N)
            ev=0; wr=0
            if [ "$an" = on ]; then
                st=$(AS=$ADMIN api GET /api/v1/analytics/status)
                ev=$(echo "$st" | sed -n 's/.*"events":\([0-9]*\).*/\1/p')
                wr=$(echo "$st" | sed -n 's/.*"bucket_writes":\([0-9]*\).*/\1/p')
            fi
            cpu0=$(echo "$before" | sed -n 's/cpu_s=\([0-9.]*\).*/\1/p'); cpu1=$(echo "$after" | sed -n 's/cpu_s=\([0-9.]*\).*/\1/p')
            cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}')
            mins=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)/60}')
            echo "$mode analytics=$an run $r: $(echo "$out" | grep '^RESULT' || echo "$out" | tail -2) cpu_s=$cpu events=$ev bucket_writes=$wr minutes=$mins"
            CPU[$mode,$an,$r]=$cpu; EV[$mode,$an,$r]=$ev; WR[$mode,$an,$r]=$wr
            kill $ONAIRD_PID
            for _ in $(seq 100); do kill -0 $ONAIRD_PID 2>/dev/null || break; sleep 0.1; done
            kill -9 $ONAIRD_PID 2>/dev/null || true # measured already; a slow shutdown is not
            wait $ONAIRD_PID 2>/dev/null || true
            trap - EXIT
        done
    done
    off=$(for r in $(seq "$RUNS"); do echo "${CPU[$mode,off,$r]}"; done | median)
    on=$(for r in $(seq "$RUNS"); do echo "${CPU[$mode,on,$r]}"; done | median)
    ev=$(for r in $(seq "$RUNS"); do echo "${EV[$mode,on,$r]}"; done | median)
    wr=$(for r in $(seq "$RUNS"); do echo "${WR[$mode,on,$r]}"; done | median)
    per=$(awk -v a="$off" -v b="$on" -v e="$ev" 'BEGIN{ if (e > 0) printf "%.2f", (b-a)*1e6/e; else print "n/a"}')
    echo "median $mode: cpu_s_off=$off cpu_s_on=$on events=$ev us_per_event=$per bucket_writes=$wr"
done
rm -rf "$WORK"
