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
  ws.message: 1000000/1s       # the load is the point here (1000000: the most a limit takes)
  ws.message_ip: 1000000/1s
logging:
  level: ${BENCH_LOG_LEVEL:-warn}
  access_log: false
plugins:
  dir: $ROOT/$BUILD/plugins
  conf_dir: plugins
YAML
echo "enabled: true" > "$WORK/plugins/hello.yaml"

# The port of the "listening on http://host:PORT" line a server writes to the log $1 (waits up
# to 10 s for it; prints the log and fails without it).
listen_port() {
    local port
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$1")
        [ -n "$port" ] && { echo "$port"; return 0; }
        sleep 0.1
    done
    cat "$1" >&2
    return 1
}

start_onaird() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    : > "$WORK/onaird.log" # exists before the server opens it: the port probe below reads it at once
    "$ROOT/$BUILD/core/onaird" -c "$WORK/onair.yaml" --log-level info > "$WORK/onaird.log" 2>&1 &
    ONAIRD_PID=$!
    PORT=$(listen_port "$WORK/onaird.log") || exit 1
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

# The Node.js peers of the side-by-side benchmarks (bench/node-peer): install their modules from
# the lockfile (again when it changes); start onaird or a peer on a free port (SERVER_PID,
# SERVER_PORT; the EXIT trap stops it); stop a pid.
NODE_PEER=$ROOT/bench/node-peer
node_peer_install() {
    command -v node >/dev/null && command -v npm >/dev/null ||
        { echo "node and npm are needed: apt-get install nodejs npm"; exit 1; }
    (cd "$NODE_PEER" && { [ node_modules/.package-lock.json -nt package-lock.json ] ||
        npm ci --no-audit --no-fund --loglevel=error; })
}
start_server() { # $1: onaird, or a script in bench/node-peer
    if [ "$1" = onaird ]; then
        start_onaird
        SERVER_PID=$ONAIRD_PID; SERVER_PORT=$PORT
    else
        ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
        : > "$WORK/node.log"
        node "$NODE_PEER/$1" > "$WORK/node.log" 2>&1 &
        SERVER_PID=$!
        SERVER_PORT=$(listen_port "$WORK/node.log") || exit 1
    fi
    trap 'stop_pid "$SERVER_PID"; rm -rf "$WORK"' EXIT
}
stop_pid() { [ -z "$1" ] || { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; } || true; }

# One line about the machine and its load (the machine is shared: note what else ran).
machine_line() {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
         "load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# CPU seconds (user+sys) of a pid, as one number.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f\n", ($12+$13)/hz}' /proc/$1/stat
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
