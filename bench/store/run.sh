#!/bin/bash
# Document store benchmark: the store API (core/store) on sqlite, in process.
# Usage: bench/store/run.sh [runs=3] [storebench options...]
#   e.g. bench/store/run.sh 3 -n 20000 -b 50 -q 20000 -t 4
# Prints each run, then the median of every number over the runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RUNS=${1:-3}
shift || true
BIN="$BUILD/bench/store/storebench"
[ -x "$BIN" ] || { echo "build first: cmake --build $BUILD --target storebench"; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "command: $BIN $*"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for r in $(seq "$RUNS"); do
    "$BIN" "$@" | tee -a "$OUT" | sed "s/^/run $r: /"
done
echo "median of $RUNS runs:"
for phase in $(awk '!/^#/ {print $1}' "$OUT" | awk '!seen[$0]++'); do
    line="$phase"
    for key in ops_per_s lat_p50_us lat_p99_us lat_max_us; do
        m=$(awk -v p="$phase" -v k="$key" '$1 == p { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$OUT" |
            sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
        line="$line $key=$m"
    done
    echo "  $line"
done
