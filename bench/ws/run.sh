#!/bin/bash
# WebSocket fan-out benchmark: N subscribers in one hello room, one publisher.
# Usage:
#   bench/ws/run.sh [subscribers=10000] [messages=20] [runs=3]
#       onaird only (as before)
#   bench/ws/run.sh --vs-node [subscribers=10000] [messages=20] [runs=3]
#       the same wsbench against onaird and against the Node.js `ws` peer
#       (bench/node-peer/ws-server.mjs), runs alternating; per run and as medians: the server's
#       user and sys CPU for connects + joins and for the fan-outs (from /proc/PID/stat, split
#       when the last subscriber's join was answered), p99 time to the last subscriber, and
#       the ratios onaird / Node. INTERVAL=<ms> (default 200) between messages: INTERVAL=10 with
#       10,000 subscribers offers 1M deliveries/s, the chat load of issue 24
#   bench/ws/run.sh --idle [connections=10000] [runs=3]
#       idle RSS: N connections join the room and stay idle for 2 s; (VmRSS then - VmRSS
#       before) / N for onaird and for the Node peer
# BUILD=<build dir> (default build) selects onaird and wsbench.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=onair
case "${1:-}" in
--vs-node) MODE=vs; shift ;;
--idle) MODE=idle; shift ;;
-*) sed -n '2,/^set /p' "$0" | sed '$d'; exit 2 ;;
esac
source bench/common.sh
N=${1:-10000}
if [ "$MODE" = idle ]; then M=0; RUNS=${2:-3}; else M=${2:-20}; RUNS=${3:-3}; fi
[ -x "$BUILD/bench/ws/wsbench" ] || { echo "build first: cmake --build $BUILD"; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
machine_line

if [ "$MODE" = onair ]; then
    for r in $(seq "$RUNS"); do
        start_onaird
        rss0=$(awk '/VmRSS/ {print $2}' /proc/$ONAIRD_PID/status)
        "$BUILD/bench/ws/wsbench" -p "$PORT" -n "$N" -m "$M" -i 200 | sed "s/^/run $r: /"
        echo "run $r: onaird idle rss ${rss0} KiB; after: $(proc_stats $ONAIRD_PID)"
        kill $ONAIRD_PID; wait $ONAIRD_PID 2>/dev/null || true
        trap - EXIT
    done
    rm -rf "$WORK"
    exit 0
fi

node_peer_install
HOLD=0; [ "$MODE" = idle ] && HOLD=2000
INTERVAL=${INTERVAL:-200} # ms between two messages (INTERVAL=10: 100 messages/s, chat-like)
# One wsbench run against the server $1 (onaird|node): its SERVER line into $WORK/<server>.runs
bench_one() {
    local server=$1 pid port out
    if [ "$server" = onaird ]; then start_server onaird; else start_server ws-server.mjs; fi
    pid=$SERVER_PID; port=$SERVER_PORT
    sleep 1 # a settled RSS and CPU before the clients come
    echo "run $r $server: $(cut -d' ' -f1-3 /proc/loadavg) load average before"
    if out=$("$BUILD/bench/ws/wsbench" -p "$port" -n "$N" -m "$M" -i "$INTERVAL" -P "$pid" -w "$HOLD"); then
        echo "$out" | grep SERVER >> "$WORK/$server.runs"
    else
        echo "run $r $server: INCOMPLETE (not every message reached every subscriber; not counted)"
    fi
    echo "$out" | grep -v '^SERVER' | sed "s/^/run $r $server: /"
    stop_pid "$SERVER_PID"; SERVER_PID=
}
# The median of key $2 over the SERVER lines of $1
med() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" "$WORK/$1.runs" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }

for r in $(seq "$RUNS"); do
    if [ $((r % 2)) = 1 ]; then bench_one onaird; bench_one node; else bench_one node; bench_one onaird; fi
done
[ -s "$WORK/onaird.runs" ] && [ -s "$WORK/node.runs" ] || { echo "no complete run of one server"; exit 1; }
echo "medians of $(wc -l < "$WORK/onaird.runs") onaird and $(wc -l < "$WORK/node.runs") Node runs" \
     "($N connections, $M messages); ratio = onaird / Node"
if [ "$MODE" = idle ]; then
    for s in onaird node; do
        d=$(awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
                  print v["rss_end_kib"] - v["rss0_kib"]}' "$WORK/$s.runs" | median)
        printf '%-7s idle rss %s KiB -> %s KiB with %d connections: %s KiB per 10,000, %.2f KiB per WebSocket\n' \
            "$s" "$(med $s rss0_kib)" "$(med $s rss_end_kib)" "$N" \
            "$(awk -v d="$d" -v n="$N" 'BEGIN {printf "%.0f", d * 10000 / n}')" \
            "$(awk -v d="$d" -v n="$N" 'BEGIN {print d / n}')"
    done
    exit 0
fi
# join_cpu_s / fanout_cpu_s: user + sys. The sum is exact (the process's run time); the kernel
# derives the user/sys split from tick samples scaled to the cumulative run time, so over a
# short phase after a long one it can shift between the two (a phase may show 0.00 user).
for s in onaird node; do
    awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
          printf "%s join_cpu_s=%.2f fanout_cpu_s=%.2f\n", $0, v["join_user_s"] + v["join_sys_s"],
                 v["fanout_user_s"] + v["fanout_sys_s"]}' "$WORK/$s.runs" > "$WORK/$s.tmp"
    mv "$WORK/$s.tmp" "$WORK/$s.runs"
done
printf '%-28s %10s %10s %8s\n' "" onaird Node ratio
for k in join_user_s join_sys_s join_cpu_s fanout_user_s fanout_sys_s fanout_cpu_s p99_ms; do
    a=$(med onaird $k); b=$(med node $k)
    printf '%-28s %10s %10s %8s\n' "$k" "$a" "$b" "$(ratio "$a" "$b")"
done
# kernel CPU per delivery (µs), from the fan-out phase
for s in onaird node; do
    awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
          if (v["deliveries"] > 0) print v["fanout_sys_s"] * 1e6 / v["deliveries"]}' "$WORK/$s.runs" |
        median > "$WORK/$s.sysper"
done
a=$(cat "$WORK/onaird.sysper"); b=$(cat "$WORK/node.sysper")
printf '%-28s %10.2f %10.2f %8s\n' "fanout_sys_us_per_delivery" "$a" "$b" "$(ratio "$a" "$b")"
