#!/bin/bash
# REST benchmark: wrk with keep-alive against /healthz (answered on the network
# thread) and a plugin JSON route (network thread -> core loop -> plugin -> back).
# Usage: bench/http/run.sh [runs=5] [duration_s=10] [connections=50]
#        bench/http/run.sh --vs-node [runs=3] [duration_s=5] [connections=50]
# --vs-node: GET /api/v1/hello/bench against onaird (hello plugin) and against a plain Node.js
# http server answering the same JSON (bench/node-peer/http-server.mjs), a fresh server per run,
# runs alternating, each after a 1 s warm-up that is not counted: requests/s, p99, the server
# process's CPU over the run (/proc/PID/stat) and requests per CPU-second, medians and the
# ratio onaird / Node. BUILD=<build dir> (default build) selects onaird.
set -euo pipefail
cd "$(dirname "$0")/../.."
VS=0
[ "${1:-}" = --vs-node ] && { VS=1; shift; }
source bench/common.sh
command -v wrk > /dev/null || apt-get install -y wrk > /dev/null ||
    { echo "wrk is needed: apt-get install wrk"; exit 1; }
# p99 in ms from wrk --latency output on stdin
wrk_p99() {
    awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}'
}
if [ "$VS" = 1 ]; then
    RUNS=${1:-3}; DUR=${2:-5}; CONNS=${3:-50}
    node_peer_install
    machine_line
    echo "wrk -t1 -c$CONNS -d${DUR}s --latency GET /api/v1/hello/bench, $RUNS runs per server, alternating"
    one() { # $1: onaird|node; appends "rps p99_ms cpu_s req_per_cpu_s" to $WORK/$1.runs
        local pid port c0 c1 out req rps p99
        if [ "$1" = onaird ]; then start_server onaird; else start_server http-server.mjs; fi
        pid=$SERVER_PID; port=$SERVER_PORT
        local url="http://127.0.0.1:$port/api/v1/hello/bench"
        wrk -t1 -c"$CONNS" -d1s "$url" > /dev/null # warm-up, not counted
        c0=$(cpu_seconds "$pid")
        out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$url")
        c1=$(cpu_seconds "$pid")
        req=$(echo "$out" | awk '/requests in/ {print $1}')
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        p99=$(echo "$out" | wrk_p99)
        if echo "$out" | grep -q 'Non-2xx\|Socket errors'; then
            echo "run $r $1: $(echo "$out" | grep 'Non-2xx\|Socket errors')"
        fi
        echo "$rps $p99 $c0 $c1 $req" | awk -v s="$1" -v r="$r" -v d="$DUR" '{cpu = $4 - $3;
            printf "run %s %-6s: %8.0f requests/s, p99 %6.2f ms, server CPU %.2f s (%.2f cores), %6.0f requests per CPU-second\n",
                   r, s, $1, $2, cpu, cpu / d, (cpu > 0 ? $5 / cpu : 0)}'
        echo "$rps $p99 $(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}') $(awk -v q="$req" -v a="$c0" -v b="$c1" 'BEGIN {print (b > a) ? q / (b - a) : 0}')" >> "$WORK/$1.runs"
        stop_pid "$SERVER_PID"; SERVER_PID=
    }
    for r in $(seq "$RUNS"); do
        if [ $((r % 2)) = 1 ]; then one onaird; one node; else one node; one onaird; fi
    done
    col() { awk -v c="$2" '{print $c}' "$WORK/$1.runs" | median; }
    echo "medians of $RUNS runs; ratio = onaird / Node"
    printf '%-26s %10s %10s %8s\n' "" onaird Node ratio
    i=1
    for k in requests/s p99_ms server_cpu_s requests/CPU-second; do
        a=$(col onaird $i); b=$(col node $i)
        printf '%-26s %10s %10s %8s\n' "$k" "$a" "$b" \
            "$(awk -v a="$a" -v b="$b" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')"
        i=$((i + 1))
    done
    exit 0
fi
RUNS=${1:-5}; DUR=${2:-10}; CONNS=${3:-50}
start_onaird
machine_line
echo "onaird pid $ONAIRD_PID port $PORT; wrk -t1 -c$CONNS -d${DUR}s, $RUNS runs each, median"
for path in /healthz /api/v1/hello/bench; do
    rps=(); p99=()
    for _ in $(seq "$RUNS"); do
        out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$PORT$path")
        rps+=("$(echo "$out" | awk '/Requests\/sec/ {print $2}')")
        p99+=("$(echo "$out" | wrk_p99)")
    done
    echo "$path: requests/s median $(printf '%s\n' "${rps[@]}" | median)" \
         "(runs: ${rps[*]}); p99 ms median $(printf '%s\n' "${p99[@]}" | median)"
done
echo "onaird after the runs: $(proc_stats $ONAIRD_PID)"
