#!/bin/bash
# onair's media relay and Janus 1.1.2 (VideoRoom) side by side: for every run, the same
# mediabench publisher (1 Mbit/s VP8-like video + 48 kbit/s Opus-like audio) and the same N
# subscribers against onaird (WHIP/WHEP), then against Janus (its HTTP API, `mediabench -J`).
# Prints each run, the median of every RESULT key per server, and the onair:Janus ratio of
# CPU seconds per forwarded packet.
# Usage: bench/media/janus.sh [subscribers=100] [seconds=10] [runs=3] [workers=1]
# Environment: BUILD (default build-bench), SAMPLE, PARALLEL, WARMUP, PROFILES,
# SETUP_TIMEOUT as in run.sh (PROFILES is offered to both servers), JANUS_EVENT_LOOPS (Janus'
# general.event_loops, default 1: one loop thread serves every PeerConnection, like onaird's
# one media worker; 0, Janus' own default, is a thread per handle and costs Janus 2-3x the
# CPU per packet in wake-ups), ONLY (onair or janus: run one side only).
#
# Everything runs inside a private network namespace (unshare -n): Janus' ICE library
# (libnice) skips loopback interfaces, so an ifb device carries 127.0.0.1/32 there too
# (handbook, "Testing media for real"). Nothing can leave the namespace; both servers and the
# client share it, so both get the same loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${ONAIR_IN_NETNS:-}" != 1 ]; then
    command -v janus > /dev/null || apt-get install -y janus > /dev/null ||
        { echo "needs janus (apt-get install janus)"; exit 1; }
    exec unshare -n env ONAIR_IN_NETNS=1 "$0" "$@"
fi
ip link set lo up
ip link add jlo0 type ifb
ip addr add 127.0.0.1/32 dev jlo0
ip link set jlo0 up

BUILD=${BUILD:-build-bench}
source bench/common.sh
source bench/media/stream.sh
N=${1:-100}; D=${2:-10}; RUNS=${3:-3}; W=${4:-1}
SAMPLE=${SAMPLE:-50}; PARALLEL=${PARALLEL:-50}; WARMUP=${WARMUP:-3}
ROOM=1234
JPORT=8088
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
fi
cmake --build "$BUILD" -j2 --target onaird mediabench streams > /dev/null
MB="$BUILD/bench/media/mediabench"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
JLIB=$(dirname "$(dpkg -L janus | grep -m1 '/janus/plugins/libjanus_videoroom.so$')")/..

# Janus' configuration, written for this run: only the HTTP transport (127.0.0.1:$JPORT) and
# the VideoRoom plugin (through folders holding just those two modules), ICE-lite, host
# candidates on the namespace's 127.0.0.1, a room like the relay's stream (Opus + VP8, one
# publisher, no bitrate cap, no periodic PLIs).
write_janus_config() { # $1: directory
    local d=$1
    mkdir -p "$d/etc" "$d/plugins" "$d/transports"
    ln -sf "$JLIB/plugins/libjanus_videoroom.so" "$d/plugins/"
    ln -sf "$JLIB/transports/libjanus_http.so" "$d/transports/"
    cat > "$d/etc/janus.jcfg" <<CFG
general: {
    configs_folder = "$d/etc"
    plugins_folder = "$d/plugins"
    transports_folder = "$d/transports"
    events_folder = "$d/none"
    loggers_folder = "$d/none"
    debug_level = ${JANUS_DEBUG_LEVEL:-3}
    session_timeout = 60
    event_loops = ${JANUS_EVENT_LOOPS:-1}
}
certificates: {
}
media: {
    ipv6 = false
    rtp_port_range = "20000-60000"
}
nat: {
    ice_lite = true
    ice_tcp = false
    full_trickle = false
    ignore_mdns = true
    nice_debug = ${JANUS_NICE_DEBUG:-false}
    ice_enforce_list = "jlo0"
}
plugins: {
}
transports: {
}
events: {
    broadcast = false
}
CFG
    cat > "$d/etc/janus.transport.http.jcfg" <<CFG
general: {
    json = "compact"
    base_path = "/janus"
    http = true
    port = $JPORT
    ip = "127.0.0.1"
    https = false
}
admin: {
    admin_http = false
}
CFG
    cat > "$d/etc/janus.plugin.videoroom.jcfg" <<CFG
general: {
}
room-$ROOM: {
    description = "mediabench"
    publishers = 1
    bitrate = 0
    fir_freq = 0
    audiocodec = "opus"
    videocodec = "vp8"
    record = false
}
CFG
}

run_mb() { # $@: mediabench arguments; prints its output, fails the script if it fails
    "$MB" -n "$N" -d "$D" -w "$WARMUP" -S "$SAMPLE" -p "$PARALLEL" ${PROFILES:+-c "$PROFILES"} \
        ${SETUP_TIMEOUT:+-T "$SETUP_TIMEOUT"} "$@" 2>&1
}

run_onair() { # $1: run number
    write_media_config "$WORK/data-$1" "$W"
    start_onaird
    local base="http://127.0.0.1:$PORT" out
    create_media_stream "$base"
    out=$(run_mb -u "$base" -s "$SID" -k "$SKEY" -P "$ONAIRD_PID") ||
        { echo "$out"; tail -20 "$WORK/onaird.log"; exit 1; }
    echo "$out" | sed "s/^/onair run $1: /"
    ONAIR_RESULTS+=("$(echo "$out" | grep '^RESULT' || true)")
    kill "$ONAIRD_PID"; wait "$ONAIRD_PID" 2>/dev/null || true
    trap 'rm -rf "$WORK"' EXIT
}

run_janus() { # $1: run number
    local d="$WORK/janus-$1" out jpid
    write_janus_config "$d"
    janus -C "$d/etc/janus.jcfg" -F "$d/etc" -P "$d/plugins" -o > "$d/janus.log" 2>&1 &
    jpid=$!
    trap "kill $jpid 2>/dev/null; wait $jpid 2>/dev/null; rm -rf '$WORK'" EXIT
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$JPORT/janus/info" && break
        sleep 0.1
    done
    curl -sf -o /dev/null "http://127.0.0.1:$JPORT/janus/info" || { cat "$d/janus.log"; exit 1; }
    out=$(run_mb -J "$ROOM" -u "http://127.0.0.1:$JPORT/janus" -P "$jpid") ||
        { echo "$out"; tail -${JANUS_LOG_LINES:-30} "$d/janus.log"; exit 1; }
    echo "$out" | sed "s/^/janus run $1: /"
    JANUS_RESULTS+=("$(echo "$out" | grep '^RESULT' || true)")
    kill "$jpid"; wait "$jpid" 2>/dev/null || true
    trap 'rm -rf "$WORK"' EXIT
}

median_of() { # $1: key, rest: RESULT lines
    local k=$1
    shift
    printf '%s\n' "$@" | tr ' ' '\n' | sed -n "s/^$k=//p" | median
}

summary() { # $1: name, rest: RESULT lines
    local name=$1 line k
    shift
    line="$name median of $RUNS (subscribers=$N):"
    for k in ready pps loss_pct sampled_loss_pct p50_us p99_us cpu_s cores pps_per_core \
        rss0_kib rss_pub_kib rssN_kib kib_per_sub client_cpu_s softirq_s machine_busy_s; do
        line="$line $k=$(median_of "$k" "$@")"
    done
    echo "$line"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "janus: $(janus --version 2>/dev/null | head -1); libsrtp2: $(dpkg-query -W -f '${Version}' libsrtp2-1 2>/dev/null)"
echo "subscribers=$N seconds=$D runs=$RUNS workers=$W sample_every=$SAMPLE parallel=$PARALLEL" \
    "janus_event_loops=${JANUS_EVENT_LOOPS:-1}"
ONAIR_RESULTS=()
JANUS_RESULTS=()
for r in $(seq "$RUNS"); do
    [ "${ONLY:-}" = janus ] || run_onair "$r"
    [ "${ONLY:-}" = onair ] || run_janus "$r"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "${ONLY:-}" = janus ] || summary onair "${ONAIR_RESULTS[@]}"
[ "${ONLY:-}" = onair ] || summary janus "${JANUS_RESULTS[@]}"
if [ -z "${ONLY:-}" ]; then
    # CPU seconds per forwarded packet (cores / pps) per run, medians, and their ratio
    per_pkt() { printf '%s\n' "$@" | awk '{c=p=0; for (i=1;i<=NF;i++) {split($i,kv,"=");
        if (kv[1]=="cores") c=kv[2]; if (kv[1]=="pps") p=kv[2]} if (p>0) printf "%.3f\n", 1e6*c/p}' |
        median; }
    o=$(per_pkt "${ONAIR_RESULTS[@]}")
    j=$(per_pkt "${JANUS_RESULTS[@]}")
    echo "CPU per forwarded packet (median): onair ${o} us, janus ${j} us;" \
        "onair:janus = $(awk -v o="$o" -v j="$j" 'BEGIN {if (j>0) printf "%.3f (1:%.1f)", o/j, j/o}')"
fi
rm -rf "$WORK"
