#!/bin/bash
# WebSocket fan-out benchmark: N subscribers in one hello room, one publisher.
# Usage: bench/ws/run.sh [subscribers=10000] [messages=20] [runs=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
N=${1:-10000}; M=${2:-20}; RUNS=${3:-3}
[ -x "$BUILD/bench/ws/wsbench" ] || { echo "build first: cmake --build $BUILD"; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for r in $(seq "$RUNS"); do
    start_onaird
    rss0=$(awk '/VmRSS/ {print $2}' /proc/$ONAIRD_PID/status)
    "$BUILD/bench/ws/wsbench" -p "$PORT" -n "$N" -m "$M" -i 200 | sed "s/^/run $r: /"
    echo "run $r: onaird idle rss ${rss0} KiB; after: $(proc_stats $ONAIRD_PID)"
    kill $ONAIRD_PID; wait $ONAIRD_PID 2>/dev/null || true
    trap - EXIT
done
rm -rf "$WORK"
