#!/bin/sh
# Runs each libFuzzer harness of a fuzz build (`make fuzz`) in turn.
#   usage: tests/fuzz/run.sh FUZZ_BUILD SECONDS [RUNS] NAME...
# SECONDS bounds each harness's time, RUNS (0: no bound) its executions. The committed
# seeds (corpus/<name>) are read, new inputs go to FUZZ_BUILD/corpus/<name> (not the
# repository), crashes to FUZZ_BUILD/crashes/<name>-*: copy a crash into
# tests/fuzz/crashes/<name>/ once fixed, so fuzz.replay_<name> keeps replaying it.
# Prints one line per harness with libFuzzer's executions and coverage (cov:, ft:).
# FUZZ_TIMEOUT (seconds, default 10): one input taking longer is a finding; raise it on a
# starved machine (a nice 19 run beside builds once waited 11 s for an input that takes 1 ms).
set -eu
[ $# -ge 3 ] || { echo "usage: $0 FUZZ_BUILD SECONDS [RUNS] NAME..." >&2; exit 2; }
build=$1 secs=$2
shift 2
runs=0
case "$1" in [0-9]*) runs=$1; shift ;; esac
here=$(cd "$(dirname "$0")" && pwd)
status=0
for h in "$@"; do
    bin=$build/tests/fuzz/fuzz_$h
    [ -x "$bin" ] || { echo "no harness $bin" >&2; exit 2; }
    mkdir -p "$build/corpus/$h" "$build/crashes"
    dict=
    [ -f "$here/dict/$h.dict" ] && dict="-dict=$here/dict/$h.dict"
    log=$build/fuzz-$h.log
    # FUZZ_SEED (CI's smoke run sets it): the same inputs in the same order on every run, so a
    # red CI points at a change, not at luck; without it libFuzzer picks a seed of its own
    seed=${FUZZ_SEED:+-seed=$FUZZ_SEED}
    # -rss_limit_mb: the sanitizers' shadow memory counts too
    if "$bin" -max_total_time="$secs" -runs="$( [ "$runs" = 0 ] && echo -1 || echo "$runs")" \
        -rss_limit_mb=4096 -timeout="${FUZZ_TIMEOUT:-10}" -print_final_stats=1 $dict $seed \
        -artifact_prefix="$build/crashes/$h-" "$build/corpus/$h" "$here/corpus/$h" >"$log" 2>&1; then
        done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        echo "fuzz $h: ok, ${execs:-?} executions; $done_line"
    else
        status=1
        echo "fuzz $h: FAILED (log: $log)" >&2
        grep -E 'ERROR|invariant|SUMMARY|Test unit written' "$log" | head -20 >&2
    fi
done
exit $status
