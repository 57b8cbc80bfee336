#!/bin/bash
# Co-hosts load (plugins/cohosts, docs/media.md "Rooms and co-hosts"): a stream with 4 hosts
# (the owner and 3 co-hosts, each publishing 1 Mbit/s of VP8-like video + 48 kbit/s of Opus-like
# audio, 164 packets/s, with mediabench) and N viewers each playing every host (one WHEP session
# per host: 4 N sessions), against the single-host case with the same number of sessions (one
# host, 4 N subscribers: the same packets forwarded). Measured by this script over one common
# window (every mediabench is told to start its window at the same wall-clock time, -A): onaird's
# CPU (/proc/<pid>/stat), what the relay sent (onair_media_bytes_out_total, packets_out) and the
# packets the subscribers received (the sum of the mediabench RESULT lines).
# Usage: bench/cohosts/run.sh [viewers=250] [seconds=10] [runs=3] [workers=1]
# Environment: BUILD (default build-bench, configured RelWithDebInfo when missing), SAMPLE,
# PARALLEL, WARMUP as bench/media/run.sh; SETUP_S (s from the start of a mode to its window,
# default 60: every mediabench must be up and warm by then).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-bench}
source bench/common.sh
N=${1:-250}; D=${2:-10}; RUNS=${3:-3}; W=${4:-1}
SAMPLE=${SAMPLE:-50}; PARALLEL=${PARALLEL:-50}; WARMUP=${WARMUP:-3}; SETUP_S=${SETUP_S:-60}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
fi
cmake --build "$BUILD" -j2 --target onaird mediabench streams cohosts > /dev/null
MB="$BUILD/bench/media/mediabench"
command -v curl > /dev/null || { echo "needs curl"; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PW="correct horse battery staple"

write_config() { # $1: data dir
    write_media_config "$1" "$W"
    printf 'enabled: true\nconfig:\n  max_cohosts: 3\n  max_bitrate_kbps: 0\n' \
        > "$WORK/plugins/cohosts.yaml"
}

# $1 method, $2 path, $3 token, $4 body: the answer (fails on an HTTP error)
call() {
    curl -sf -X "$1" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
        ${4:+-d "$4"} "$BASE$2"
}
register() { # $1 name: "<token> <user id>"
    local u="$1$RANDOM$RANDOM" t
    t=$(curl -sf -X POST -H 'Content-Type: application/json' \
        -d "{\"username\":\"$u\",\"email\":\"$u@example.org\",\"password\":\"$PW\"}" \
        "$BASE/api/v1/auth/register" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
    [ -n "$t" ] || { echo "register failed" >&2; exit 1; }
    echo "$t $(python3 -c 'import base64, json, sys; p = sys.argv[1].split(".")[1]
print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["sub"])' "$t")"
}
metric() { # $1: a counter name; the sum over the workers
    curl -sf "$BASE/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%.0f", s}'
}
cpu_s() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$ONAIRD_PID/stat"; }
sleep_until() { # $1: ms since the epoch
    local now; now=$(date +%s%3N)
    [ "$1" -le "$now" ] || sleep "$(awk -v d=$(($1 - now)) 'BEGIN {printf "%.3f", d / 1000}')"
}

# One mode on a fresh onaird: $1 = single | four. Prints "MODE key=value ...".
run_mode() {
    local mode=$1 r=$2
    write_config "$WORK/data-$mode-$r"
    start_onaird
    BASE="http://127.0.0.1:$PORT"
    read -r OWNER OWNER_ID <<< "$(register owner)"
    local resp sid key
    resp=$(call POST /api/v1/streams "$OWNER" '{"title":"co-hosts bench"}')
    read -r sid key <<< "$(echo "$resp" | python3 -c 'import json, sys
j = json.load(sys.stdin); print(j["stream"]["id"], j["stream_key"])')"
    [ -n "$sid" ] && [ -n "$key" ] || { echo "stream create failed: $resp"; exit 1; }
    local align=$(( $(date +%s%3N) + SETUP_S * 1000 ))
    local common=(-u "$BASE" -s "$sid" -d "$D" -w "$WARMUP" -S "$SAMPLE" -p "$PARALLEL"
                  -P "$ONAIRD_PID" -A "$align" -T "$SETUP_S")
    local pids=() outs=()
    if [ "$mode" = single ]; then
        "$MB" "${common[@]}" -k "$key" -n $((4 * N)) > "$WORK/mb-0.out" 2>&1 &
        pids+=($!); outs+=("$WORK/mb-0.out")
    else
        "$MB" "${common[@]}" -k "$key" -n "$N" > "$WORK/mb-0.out" 2>&1 &
        pids+=($!); outs+=("$WORK/mb-0.out")
        for i in 1 2 3; do # co-hosts: invited, accepted, publishing once the stream is live
            read -r tok uid <<< "$(register cohost$i)"
            iid=$(call POST "/api/v1/streams/$sid/cohosts/invite" "$OWNER" "{\"user_id\":\"$uid\"}" |
                python3 -c 'import json, sys; print(json.load(sys.stdin)["invite"]["id"])')
            call POST "/api/v1/cohosts/invites/$iid/accept" "$tok" > /dev/null
            until [ "$(curl -sf "$BASE/api/v1/streams/$sid" | grep -c '"status":"live"')" = 1 ]; do
                sleep 0.2
            done
            "$MB" "${common[@]}" -k "$tok" -r "$uid" -n "$N" > "$WORK/mb-$i.out" 2>&1 &
            pids+=($!); outs+=("$WORK/mb-$i.out")
        done
    fi
    # the common window: onaird's CPU and what the relay sent
    sleep_until "$align"
    local c0 b0 p0 c1 b1 p1
    c0=$(cpu_s); b0=$(metric onair_media_bytes_out_total); p0=$(metric onair_media_packets_out_total)
    sleep_until $((align + D * 1000))
    c1=$(cpu_s); b1=$(metric onair_media_bytes_out_total); p1=$(metric onair_media_packets_out_total)
    local fail=0
    for p in "${pids[@]}"; do wait "$p" || fail=1; done
    for o in "${outs[@]}"; do sed "s/^/$mode run $r $(basename "$o" .out): /" "$o"; done
    [ "$fail" = 0 ] || { tail -20 "$WORK/onaird.log"; exit 1; }
    # the RESULT lines: subscribers up, received packets/s, loss (worst), p99 latency (worst)
    local sums
    sums=$(grep -h '^RESULT' "${outs[@]}" | awk '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        subs += v["window_subs"]; pps += v["pps"]; if (v["loss_pct"] > loss) loss = v["loss_pct"]
        if (v["p99_us"] > p99) p99 = v["p99_us"]; if (v["setup_s"] > setup) setup = v["setup_s"] }
        END { printf "window_subs=%d pps=%.0f loss_pct=%.4f p99_us=%.0f setup_s=%.2f", subs, pps, loss, p99, setup }')
    local line
    line=$(awk -v m="$mode" -v s="$sums" -v c0="$c0" -v c1="$c1" -v b0="$b0" -v b1="$b1" \
        -v p0="$p0" -v p1="$p1" -v d="$D" 'BEGIN {
        split(s, a, " "); for (i in a) { split(a[i], kv, "="); v[kv[1]] = kv[2] }
        cores = (c1 - c0) / d
        printf "%s %s cores=%.3f pps_per_core=%.0f out_pps=%.0f out_mbps=%.1f", m, s, cores,
               (cores > 0 ? v["pps"] / cores : 0), (p1 - p0) / d, (b1 - b0) * 8 / d / 1e6 }')
    echo "$line"
    RESULTS+=("$line")
    kill "$ONAIRD_PID"; wait "$ONAIRD_PID" 2>/dev/null || true
    trap - EXIT
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "viewers=$N (sessions $((4 * N))) seconds=$D runs=$RUNS workers=$W sample_every=$SAMPLE parallel=$PARALLEL"
RESULTS=()
for r in $(seq "$RUNS"); do # the two modes interleaved: the same machine state for both
    run_mode single "$r"
    run_mode four "$r"
done
for mode in single four; do
    rows=$(printf '%s\n' "${RESULTS[@]}" | grep "^$mode ")
    keys=$(echo "$rows" | head -1 | tr ' ' '\n' | grep '=' | cut -d= -f1)
    line="median of $RUNS, $mode (viewers=$N, $((4 * N)) sessions, workers=$W):"
    for k in $keys; do
        line="$line $k=$(echo "$rows" | tr ' ' '\n' | sed -n "s/^$k=//p" | median)"
    done
    echo "$line"
done
rm -rf "$WORK"
