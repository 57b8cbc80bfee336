#!/bin/bash
# Recording load: N streams, each with one mediabench publisher (1 Mbit/s VP8-like video +
# Opus-like audio) and S WHEP subscribers, measured twice on the same onaird: without
# recording, then with every stream recorded (the recording plugin: taps, depacketizing on
# the loop, libavformat WebM muxing on the work pool). Reports onaird's CPU in both windows,
# the CPU one recorded stream costs, and the relay's forwarding rate in both (it must not
# change). Prints every run and the median of every key.
# Usage: bench/recording/run.sh [streams=10] [seconds=20] [runs=3] [subscribers_per_stream=10]
# Environment: BUILD (default build-bench), WARMUP (s, default 8).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-bench}
source bench/common.sh
N=${1:-10}; D=${2:-20}; RUNS=${3:-3}; S=${4:-10}
WARMUP=${WARMUP:-8}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
fi
cmake --build "$BUILD" -j2 --target onaird mediabench streams recording > /dev/null
MB="$BUILD/bench/media/mediabench"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

write_config() { # $1: data dir
    cat > "$WORK/onair.yaml" <<YAML
server:
  host: 127.0.0.1
  port: 0
  max_connections_per_address: 1000000
auth:
  jwt_secret: "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  password_hash: interactive
rate_limits:
  auth.register: 100000/1h
  media.offer: 1000000/1m
storage:
  backend: sqlite
  data_dir: $1
logging:
  level: ${BENCH_LOG_LEVEL:-warn}
  access_log: false
media:
  udp_port: 0
  workers: 1
  public_addresses: [127.0.0.1]
  max_pending_per_address: 20000
plugins:
  dir: $ROOT/$BUILD/plugins
  conf_dir: plugins
YAML
    rm -f "$WORK/plugins/hello.yaml"
    printf 'enabled: true\nconfig:\n  max_live_per_user: 100\n' > "$WORK/plugins/streams.yaml"
    printf 'enabled: true\nconfig:\n  dir: %s\n  keyframe_interval_s: 0\n  min_free_mb: 0\n' \
        "$1/recordings" > "$WORK/plugins/recording.yaml"
}

# run N mediabench clients at once; echo the summed pps and onaird's cores (the first's window)
load() { # $1: warm-up seconds, $2: 1 to start recordings once the publishers are up
    local pids=() i
    for i in $(seq 0 $((N - 1))); do
        "$MB" -u "$base" -s "${SIDS[$i]}" -k "${KEYS[$i]}" -n "$S" -d "$D" -w "$1" -S 5 -p 10 \
            -P "$ONAIRD_PID" > "$WORK/mb-$i.out" 2>&1 &
        pids+=($!)
    done
    if [ "$2" = 1 ]; then
        sleep 4
        for i in $(seq 0 $((N - 1))); do
            curl -sf -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" \
                "$base/api/v1/streams/${SIDS[$i]}/recording/start" || echo "start $i failed" >&2
        done
    fi
    for p in "${pids[@]}"; do wait "$p" || { cat "$WORK"/mb-*.out; exit 1; }; done
    local pps cores
    pps=$(cat "$WORK"/mb-*.out | sed -n 's/^RESULT.* pps=\([0-9.]*\).*/\1/p' | awk '{s+=$1} END {printf "%.0f", s}')
    cores=$(sed -n 's/^RESULT.* cores=\([0-9.]*\).*/\1/p' "$WORK/mb-0.out")
    echo "$pps $cores"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "streams=$N subscribers_per_stream=$S seconds=$D runs=$RUNS"
RESULTS=()
for r in $(seq "$RUNS"); do
    write_config "$WORK/data-$r"
    start_onaird
    base="http://127.0.0.1:$PORT"
    u="recbench$r$RANDOM"
    TOKEN=$(curl -sf -X POST -H 'Content-Type: application/json' \
        -d "{\"username\":\"$u\",\"email\":\"$u@example.org\",\"password\":\"correct horse battery staple\"}" \
        "$base/api/v1/auth/register" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
    [ -n "$TOKEN" ] || { echo "register failed"; cat "$WORK/onaird.log"; exit 1; }
    SIDS=(); KEYS=()
    for i in $(seq 0 $((N - 1))); do
        resp=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            -d "{\"title\":\"rec bench $i\"}" "$base/api/v1/streams")
        echo "$resp" | grep -q '"stream_key"' || { echo "stream create failed: $resp"; tail -20 "$WORK/onaird.log"; exit 1; }
        SIDS+=("$(echo "$resp" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)")
        KEYS+=("$(echo "$resp" | sed -n 's/.*"stream_key":"\([^"]*\)".*/\1/p')")
    done
    read -r pps_off cores_off < <(load "$WARMUP" 0)
    read -r pps_on cores_on < <(load "$WARMUP" 1)
    sleep 10 # the recordings stop with the streams (publisher_timeout) and are finalized
    recorded=$(find "$WORK/data-$r/recordings" -name '*.webm' ! -name '*.rec.*' | wc -l)
    mb=$(du -sm "$WORK/data-$r/recordings" | cut -f1)
    line=$(awk -v n="$N" -v po="$pps_off" -v pn="$pps_on" -v co="$cores_off" -v cn="$cores_on" \
        -v rec="$recorded" -v mb="$mb" 'BEGIN {
        printf "RESULT pps_off=%.0f pps_on=%.0f fwd_ratio=%.3f cores_off=%.3f cores_on=%.3f cpu_pct_per_recording=%.2f recordings=%d recorded_mb=%d",
            po, pn, (po > 0 ? pn / po : 0), co, cn, (cn - co) / n * 100, rec, mb }')
    echo "run $r: $line"
    RESULTS+=("$line")
    kill "$ONAIRD_PID"; wait "$ONAIRD_PID" 2>/dev/null || true
    trap - EXIT
done
keys=$(printf '%s\n' "${RESULTS[@]}" | tr ' ' '\n' | grep '=' | cut -d= -f1 | awk '!s[$0]++')
line="median of $RUNS (streams=$N subscribers_per_stream=$S):"
for k in $keys; do
    v=$(printf '%s\n' "${RESULTS[@]}" | tr ' ' '\n' | sed -n "s/^$k=//p" | median)
    line="$line $k=$v"
done
echo "$line"
rm -rf "$WORK"
