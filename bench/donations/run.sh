#!/bin/bash
# Donations through the test provider on one stream: wrk (2 threads, CONNS keep-alive
# connections) POSTs 500-cent donations as fast as the server answers for SECONDS, every tenth
# request a retry of the previous Idempotency-Key (donate.lua). Afterwards the run is checked
# against the store: every donation id a client was answered is in the streamer's CSV export,
# every exported donation is "succeeded", and the stream's totals (from the ledger) count each
# exactly once with the exact sum. A lost or duplicated ledger entry fails the run.
# Prints each run (donations/s = distinct donations stored / seconds), onaird's CPU seconds and
# RSS, and the median.
# Usage: bench/donations/run.sh [seconds=10] [runs=3] [connections=32]
# Environment: BUILD (default build).
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
D=${1:-10}; RUNS=${2:-3}; CONNS=${3:-32}
command -v wrk > /dev/null || apt-get install -y wrk > /dev/null ||
    { echo "wrk is needed: apt-get install wrk"; exit 1; }
command -v curl >/dev/null || { echo "needs curl"; exit 1; }
KEY=benchkey
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# an HS256 token for an API key (iss), as an integrator's backend would mint it
token() { # $1: sub, $2: roles as a JSON list
    python3 - "$1" "$2" "$KEY" "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
now = int(time.time())
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b(json.dumps({"sub": sys.argv[1], "iss": sys.argv[3], "iat": now, "exp": now + 3600,
                  "roles": json.loads(sys.argv[2])}).encode())
print(f"{h}.{p}." + b(hmac.new(sys.argv[4].encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()))
PY
}

write_config() { # $1: data dir
    cat > "$WORK/onair.yaml" <<YAML
server:
  host: 127.0.0.1
  port: 0
auth:
  jwt_secret: "$SECRET-core"
  api_keys: ["$KEY:$SECRET"]
  password_hash: interactive
storage:
  backend: sqlite
  data_dir: $1
rate_limits:
  donations.create: 1000000/1s   # the load is the point here
logging:
  level: ${BENCH_LOG_LEVEL:-warn}
  access_log: false
plugins:
  dir: $ROOT/$BUILD/plugins
  conf_dir: plugins
YAML
    rm -f "$WORK/plugins/hello.yaml"
    echo "enabled: true" > "$WORK/plugins/streams.yaml"
    printf 'enabled: true\nconfig:\n  provider: test\n' > "$WORK/plugins/donations.yaml"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "seconds=$D runs=$RUNS connections=$CONNS (sqlite, provider test, wrk -t2)"
export DONOR; DONOR=$(token bench-donor '["viewer"]')
RES=()
for r in $(seq "$RUNS"); do
    write_config "$WORK/data-$r"
    start_onaird
    URL="http://127.0.0.1:$PORT"
    # the stream belongs to a registered account (an API-key token's subject is none)
    OWNER=$(register_token "$URL" donowner) || { cat "$WORK/onaird.log"; exit 1; }
    export SID; SID=$(curl -sf -X POST -H "Authorization: Bearer $OWNER" \
        -H 'Content-Type: application/json' -d '{"title": "bench"}' "$URL/api/v1/streams" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["stream"]["id"])')
    export IDS_DIR="$WORK/ids-$r"; mkdir -p "$IDS_DIR"
    W=$(wrk -t2 -c"$CONNS" -d"${D}s" --timeout 10s -s bench/donations/donate.lua "$URL" |
        grep answers_201)
    sleep 1 # answers still in flight when wrk stopped
    STATS=$(proc_stats "$ONAIRD_PID")
    sort -u "$IDS_DIR"/ids-* > "$IDS_DIR/answered"
    curl -sf -H "Authorization: Bearer $OWNER" "$URL/api/v1/donations/export.csv" > "$IDS_DIR/csv"
    TOT=$(curl -sf "$URL/api/v1/streams/$SID/donations/totals")
    CHECK=$(python3 - "$IDS_DIR" "$TOT" "$D" <<'PY'
import csv, json, sys
d = sys.argv[1]
answered = set(open(d + "/answered").read().split())
rows = list(csv.DictReader(open(d + "/csv", newline="")))
ids = [r["id"] for r in rows]
usd = json.loads(sys.argv[2])["totals"].get("USD", {})
lost = answered - set(ids)
ok = (not lost and len(ids) == len(set(ids)) and all(r["status"] == "succeeded" for r in rows)
      and usd.get("count") == len(ids) and usd.get("received") == 500 * len(ids))
print(f"donations/s={len(ids) / float(sys.argv[3]):.0f} stored={len(ids)} answered={len(answered)} "
      f"lost={len(lost)} ledger_count={usd.get('count')} ledger_sum={usd.get('received')} "
      f"{'OK' if ok else 'MISMATCH'}")
PY
)
    echo "run $r: $CHECK $W $STATS"
    RES+=("$(sed -n 's/^donations\/s=\([0-9]*\).*/\1/p' <<<"$CHECK")")
    kill "$ONAIRD_PID"; wait "$ONAIRD_PID" 2>/dev/null || true
    trap - EXIT
    grep -q ' OK' <<<"$CHECK" || { echo "run $r: ledger check failed"; exit 1; }
done
echo "median donations/s: $(printf '%s\n' "${RES[@]}" | median)"
rm -rf "$WORK"
