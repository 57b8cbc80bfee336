#!/bin/bash
# Soak: one onaird under mixed load for a long time, its RSS and open descriptors sampled
# every 10 s; after warm-up both must stay flat.
#   10,000 WebSocket clients: 9,000 in one stream's chat (10 of them senders, 0.05 message/s
#     each, so 4,500 deliveries/s) and 1,000 sending reactions about once a second
#     (bench/chat/chatbench, -m chat / -m react);
#   200 WHEP subscribers of a WHIP publisher (1 Mbit/s video + audio; bench/media/mediabench);
#   REST: stream, chat history, stream list, /readyz, /metrics, registrations (rest.py).
# Usage: bench/soak/run.sh [minutes=10] [warmup_minutes=2]
# Environment: BUILD (default build-bench), CHAT (9000), SENDERS (10), RATE (0.05 messages/s per
# sender), REACT (1000), MEDIA (200),
# REST_RATE (requests/s, 20), OUT (the samples, default $WORK/samples.csv, kept at the end
# when set), LOG_OUT (a copy of onaird's log, e.g. with BENCH_LOG_LEVEL=info to see why
# WebSockets were closed), RSS_TOLERANCE_PCT (10), FD_TOLERANCE (50).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-bench}
source bench/common.sh
MIN=${1:-10}; WARM=${2:-2}
CHAT=${CHAT:-9000}; SENDERS=${SENDERS:-10}; RATE=${RATE:-0.05}; REACT=${REACT:-1000}
MEDIA=${MEDIA:-200}; REST_RATE=${REST_RATE:-20}
RSS_TOL=${RSS_TOLERANCE_PCT:-10}; FD_TOL=${FD_TOLERANCE:-50}
SECS=$((MIN * 60)); WARM_S=$((WARM * 60))
[ "$WARM_S" -lt "$SECS" ] || { echo "warm-up must be shorter than the run"; exit 2; }
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
fi
cmake --build "$BUILD" -j2 --target onaird chatbench mediabench streams chat reactions > /dev/null
CB="$BUILD/bench/chat/chatbench"; MB="$BUILD/bench/media/mediabench"
command -v curl > /dev/null || { echo "needs curl"; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
KEY=soakkey
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
SAMPLES=${OUT:-$WORK/samples.csv}

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
  data_dir: $WORK/data
rate_limits:
  auth.register: 1000000/1h
  media.offer: 1000000/1m
  ws.message: 1000000/1s
  ws.message_ip: 1000000/1s
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
printf 'enabled: true\nconfig:\n  history_on_join: 0\n' > "$WORK/plugins/chat.yaml"
echo "enabled: true" > "$WORK/plugins/reactions.yaml"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "soak: ${MIN} min (warm-up ${WARM} min): chat=$CHAT (senders=$SENDERS rate=$RATE/s)" \
    "react=$REACT media=$MEDIA rest=${REST_RATE}/s"
start_onaird
base="http://127.0.0.1:$PORT"
ADMIN=$("$CB" -k "$KEY" -K "$SECRET" -t '"streamer","admin"')
# the streams belong to a real account (WHIP checks the owner exists)
u="soak$RANDOM"
UTOKEN=$(curl -sf --max-time 30 -X POST -H 'Content-Type: application/json' \
    -d "{\"username\":\"$u\",\"email\":\"$u@example.org\",\"password\":\"correct horse battery staple\"}" \
    "$base/api/v1/auth/register" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$UTOKEN" ] || { echo "register failed"; tail "$WORK/onaird.log"; exit 1; }
uapi() { curl -sf --max-time 30 -X "$1" -H "Authorization: Bearer $UTOKEN" \
    -H 'Content-Type: application/json' ${3:+-d "$3"} "$base$2"; }
SID=$(uapi POST /api/v1/streams '{"title":"soak chat"}' | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
[ -n "$SID" ] || { echo "stream create failed"; tail "$WORK/onaird.log"; exit 1; }
uapi POST "/api/v1/streams/$SID/start" > /dev/null || { echo "stream start failed"; exit 1; }
resp=$(uapi POST /api/v1/streams '{"title":"soak media"}')
MSID=$(echo "$resp" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
MKEY=$(echo "$resp" | sed -n 's/.*"stream_key":"\([^"]*\)".*/\1/p')
[ -n "$MSID" ] && [ -n "$MKEY" ] || { echo "media stream create failed: $resp"; exit 1; }

# The load, all for the whole run (each tool connects first, then runs -d seconds). The
# media first: its WHIP/WHEP setups should not compete with 10,000 WebSocket handshakes.
metric() { echo "$1" | awk -v m="$2" '$1 == m {print $2; exit}'; }
"$MB" -u "$base" -s "$MSID" -k "$MKEY" -n "$MEDIA" -d "$SECS" -w 1 -S 50 -p 20 -T 600 \
    > "$WORK/media.out" 2>&1 & P3=$!
trap 'kill $P3 $ONAIRD_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 120); do
    sessions=$(metric "$(curl -s --max-time 5 "$base/metrics" || true)" onair_media_sessions)
    [ "${sessions:-0}" -gt "$MEDIA" ] && break
    kill -0 $P3 2>/dev/null || { echo "mediabench failed:"; tail -3 "$WORK/media.out"; exit 1; }
    sleep 1
done
echo "media sessions up: ${sessions:-0}"
"$CB" -p "$PORT" -s "$SID" -k "$KEY" -K "$SECRET" -m chat -n "$CHAT" -S "$SENDERS" -r "$RATE" \
    -d "$SECS" > "$WORK/chat.out" 2>&1 & P1=$!
"$CB" -p "$PORT" -s "$SID" -k "$KEY" -K "$SECRET" -m react -n "$REACT" -d "$SECS" \
    > "$WORK/react.out" 2>&1 & P2=$!
/usr/bin/python3 bench/soak/rest.py "$PORT" "$SECS" "$REST_RATE" "$SID" "$ADMIN" \
    > "$WORK/rest.out" 2>&1 & P4=$!
trap 'kill $P1 $P2 $P3 $P4 $ONAIRD_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

# Samples every 10 s while the load runs: seconds, RSS (KiB), open fds, WebSocket and
# media sessions, heap in use and freed-but-held (from /metrics).
echo "t_s,rss_kib,fds,ws_connections,media_sessions,heap_in_use_kib,heap_free_kib" > "$SAMPLES"
t0=$(date +%s)
while kill -0 $P1 2>/dev/null || kill -0 $P2 2>/dev/null || kill -0 $P3 2>/dev/null; do
    t=$(( $(date +%s) - t0 ))
    rss=$(awk '/VmRSS/ {print $2}' /proc/$ONAIRD_PID/status)
    fds=$(ls /proc/$ONAIRD_PID/fd | wc -l)
    m=$(curl -s --max-time 5 "$base/metrics" || true)
    heap=$(metric "$m" onair_heap_in_use_bytes); hfree=$(metric "$m" onair_heap_free_bytes)
    echo "$t,$rss,$fds,$(metric "$m" onair_ws_connections),$(metric "$m" onair_media_sessions),$((${heap:-0} / 1024)),$((${hfree:-0} / 1024))" >> "$SAMPLES"
    sleep 10
done
wait $P1 $P2 $P3 $P4 || true
for f in chat react media rest; do grep -E '^RESULT|^REST|^connections still open' "$WORK/$f.out" | sed "s/^/$f: /" || tail -3 "$WORK/$f.out"; done
grep -c . "$WORK/onaird.log" > /dev/null && grep -E ' (error|warn) ' "$WORK/onaird.log" | head -5 || true
[ -z "${LOG_OUT:-}" ] || cp "$WORK/onaird.log" "$LOG_OUT"

# Flat after warm-up: the samples of the last 20 % of the run against the first after
# warm-up, while the load still ran (samples with the full number of connections).
cat "$SAMPLES"
verdict=$(awk -F, -v warm="$WARM_S" -v end="$SECS" -v rt="$RSS_TOL" -v ft="$FD_TOL" '
    NR > 1 && $1 >= warm && $1 <= end {
        n++; t[n] = $1; r[n] = $2; f[n] = $3
        if (!rmin || $2 < rmin) rmin = $2; if ($2 > rmax) rmax = $2
        if (!fmin || $3 < fmin) fmin = $3; if ($3 > fmax) fmax = $3
    }
    END {
        if (n < 3) { print "too few samples after warm-up"; exit 1 }
        k = int(n / 5); if (k < 1) k = 1
        for (i = 1; i <= k; i++) { a += r[i]; b += r[n - k + i]; fa += f[i]; fb += f[n - k + i] }
        a /= k; b /= k; fa /= k; fb /= k
        growth = (b - a) * 100 / a
        printf "after warm-up (%d samples, %d..%d s): rss %d..%d KiB, first fifth %.0f, last fifth %.0f (%+.1f%%); fds %d..%d, first fifth %.0f, last fifth %.0f\n", n, t[1], t[n], rmin, rmax, a, b, growth, fmin, fmax, fa, fb
        ok = growth <= rt && fb - fa <= ft
        print (ok ? "RESULT flat" : "RESULT GROWING")
        exit (ok ? 0 : 1)
    }' "$SAMPLES") || true
echo "$verdict"
echo "$verdict" | grep -q "RESULT flat"
