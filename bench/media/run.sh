#!/bin/bash
# Media relay load: one WHIP publisher (1 Mbit/s VP8-like video in 1,100-byte RTP packets +
# 48 kbit/s Opus-like audio) and N WHEP subscribers, all driven by mediabench with the
# relay's own ICE/DTLS/SRTP code. Prints every run and the median of every RESULT key.
# Usage: bench/media/run.sh [subscribers=1000] [seconds=20] [runs=3] [workers=1]
# Environment: BUILD (default build-bench), SAMPLE (every SAMPLE-th subscriber decrypts,
# default 50), PARALLEL (setups in flight, default 50), WARMUP (s, default 3),
# PROFILES (DTLS-SRTP profiles the subscribers offer, e.g. SRTP_AES128_CM_SHA1_80; default
# both, GCM first), SETUP_TIMEOUT (s, default 300).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-bench}
source bench/common.sh
source bench/media/stream.sh
N=${1:-1000}; D=${2:-20}; RUNS=${3:-3}; W=${4:-1}
SAMPLE=${SAMPLE:-50}; PARALLEL=${PARALLEL:-50}; WARMUP=${WARMUP:-3}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
fi
cmake --build "$BUILD" -j2 --target onaird mediabench streams > /dev/null
MB="$BUILD/bench/media/mediabench"
command -v curl > /dev/null || { echo "needs curl"; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

write_config() { # $1: data dir
    write_media_config "$1" "$W"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "subscribers=$N seconds=$D runs=$RUNS workers=$W sample_every=$SAMPLE parallel=$PARALLEL"
RESULTS=()
for r in $(seq "$RUNS"); do
    write_config "$WORK/data-$r"
    start_onaird
    base="http://127.0.0.1:$PORT"
    create_media_stream "$base"
    out=$("$MB" -u "$base" -s "$SID" -k "$SKEY" -n "$N" -d "$D" -w "$WARMUP" -S "$SAMPLE" \
        -p "$PARALLEL" -P "$ONAIRD_PID" ${PROFILES:+-c "$PROFILES"} ${SETUP_TIMEOUT:+-T "$SETUP_TIMEOUT"} 2>&1) || { echo "$out"; tail -20 "$WORK/onaird.log"; exit 1; }
    echo "$out" | sed "s/^/run $r: /"
    RESULTS+=("$(echo "$out" | grep '^RESULT' || true)")
    kill "$ONAIRD_PID"; wait "$ONAIRD_PID" 2>/dev/null || true
    trap - EXIT
done
keys=$(printf '%s\n' "${RESULTS[@]}" | tr ' ' '\n' | grep '=' | cut -d= -f1 | awk '!s[$0]++')
line="median of $RUNS (subscribers=$N workers=$W):"
for k in $keys; do
    v=$(printf '%s\n' "${RESULTS[@]}" | tr ' ' '\n' | sed -n "s/^$k=//p" | median)
    line="$line $k=$v"
done
echo "$line"
rm -rf "$WORK"
