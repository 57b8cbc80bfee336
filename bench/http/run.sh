#!/bin/bash
# REST benchmark: wrk with keep-alive against /healthz (answered on the network
# thread) and a plugin JSON route (network thread -> core loop -> plugin -> back).
# Usage: bench/http/run.sh [runs=5] [duration_s=10] [connections=50]
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
RUNS=${1:-5}; DUR=${2:-10}; CONNS=${3:-50}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk"; exit 1; }
start_onaird
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "onaird pid $ONAIRD_PID port $PORT; wrk -t1 -c$CONNS -d${DUR}s, $RUNS runs each, median"
for path in /healthz /api/v1/hello/bench; do
    rps=(); p99=()
    for _ in $(seq "$RUNS"); do
        out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$PORT$path")
        rps+=("$(echo "$out" | awk '/Requests\/sec/ {print $2}')")
        p99+=("$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}')")
    done
    echo "$path: requests/s median $(printf '%s\n' "${rps[@]}" | median)" \
         "(runs: ${rps[*]}); p99 ms median $(printf '%s\n' "${p99[@]}" | median)"
done
echo "onaird after the runs: $(proc_stats $ONAIRD_PID)"
