# Shared by the benchmark scripts: start an onaird built in $BUILD with the hello
# plugin, access log off, on a free port; stop it on exit.
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/onair-bench-XXXXXX)
mkdir -p "$WORK/plugins"
cat > "$WORK/onair.yaml" <<YAML
server:
  host: 127.0.0.1
  port: 0
  ws_send_queue_bytes: 4194304
  max_connections_per_address: 1000000   # every client connects from 127.0.0.1
rate_limits:
  ws.message: 100000000/1s     # the load is the point here
  ws.message_ip: 100000000/1s
logging:
  level: ${BENCH_LOG_LEVEL:-warn}
  access_log: false
plugins:
  dir: $ROOT/$BUILD/plugins
  conf_dir: plugins
YAML
echo "enabled: true" > "$WORK/plugins/hello.yaml"

start_onaird() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    : > "$WORK/onaird.log" # exists before the server opens it: the port probe below reads it at once
    "$ROOT/$BUILD/core/onaird" -c "$WORK/onair.yaml" --log-level info > "$WORK/onaird.log" 2>&1 &
    ONAIRD_PID=$!
    for _ in $(seq 100); do
        PORT=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$WORK/onaird.log")
        [ -n "$PORT" ] && break
        sleep 0.1
    done
    [ -n "$PORT" ] || { cat "$WORK/onaird.log"; exit 1; }
    trap 'kill $ONAIRD_PID 2>/dev/null; wait $ONAIRD_PID 2>/dev/null; rm -rf "$WORK"' EXIT
}

# Print an access token of a newly registered account (the default roles: viewer, streamer) of
# the onaird at $1 (http://host:port). A benchmark's streams belong to such an account: a
# stream's owner is an account, and an API-key token whose subject is none cannot create one
# (422 owner_required; plugins/streams/README.md "Who owns a stream").
register_token() { # $1: base URL, $2: a name prefix (default bench)
    local u="${2:-bench}$RANDOM$RANDOM" t
    t=$(curl -sf --max-time 30 -X POST -H 'Content-Type: application/json' \
        -d "{\"username\":\"$u\",\"email\":\"$u@example.org\",\"password\":\"correct horse battery staple\"}" \
        "$1/api/v1/auth/register" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
    [ -n "$t" ] || { echo "register failed at $1" >&2; return 1; }
    echo "$t"
}

# Print the median of the numbers on stdin.
median() {
    sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

# CPU seconds (user+sys) and RSS (KiB) of a pid.
proc_stats() {
    awk '{printf "cpu_s=%.2f ", ($14+$15)/100}' /proc/$1/stat
    awk '/VmRSS/ {printf "rss_kib=%d\n", $2}' /proc/$1/status
}

# onair.yaml of a media benchmark (a fresh sqlite in $1, $2 relay workers, limits raised for
# thousands of sessions from 127.0.0.1) with the streams plugin; the caller adds its plugins'
# files to $WORK/plugins.
write_media_config() { # $1: data dir, $2: media workers
    cat > "$WORK/onair.yaml" <<YAML
server:
  host: 127.0.0.1
  port: 0
  max_connections_per_address: 1000000   # every viewer connects from 127.0.0.1
auth:
  jwt_secret: "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  password_hash: interactive
rate_limits:
  auth.register: 100000/1h
  media.offer: 1000000/1m   # every viewer offers from 127.0.0.1
storage:
  backend: sqlite
  data_dir: $1
logging:
  level: ${BENCH_LOG_LEVEL:-warn}
  access_log: false
media:
  udp_port: 0
  workers: $2
  public_addresses: [127.0.0.1]
  max_sessions: 40000
  max_viewers_per_stream: 20000
  max_pending_per_address: 40000
plugins:
  dir: $ROOT/$BUILD/plugins
  conf_dir: plugins
YAML
    rm -f "$WORK/plugins/hello.yaml"
    printf 'enabled: true\nconfig:\n  max_live_per_user: 100\n' > "$WORK/plugins/streams.yaml"
}
