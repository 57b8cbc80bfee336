#!/bin/sh
# Part of test_package.sh, run in a network namespace of its own: start the installed
# onaird as its unit does, check it serves, build the SDK's hello example out of tree
# against the installed SDK and load it, stop onaird. Inputs from test_package.sh:
# ONAIR_PKGTEST_{ROOT,UID,GID,WORKDIR,EXEC,ENV,WORK}.
set -eu
root=$ONAIR_PKGTEST_ROOT
work=$ONAIR_PKGTEST_WORK
base=http://127.0.0.1:8080
pid=

fail() {
    echo "package_run: FAIL: $*" >&2
    [ -f "$work/onaird.log" ] && tail -30 "$work/onaird.log" >&2
    exit 1
}
step() { echo "== $(date -u +%T) $*"; }
stop() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
trap stop EXIT
trap 'exit 1' INT TERM

ip link set lo up
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LC_ALL=C.UTF-8 "$@"; }

# The unit's User=/Group= (numeric: resolved in the root), WorkingDirectory=,
# Environment= and EnvironmentFile= values and ExecStart= command line.
start() {
    # shellcheck disable=SC2086 # the environment and command are word lists on purpose
    chroot --userspec="$ONAIR_PKGTEST_UID:$ONAIR_PKGTEST_GID" --groups="$ONAIR_PKGTEST_GID" \
        "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin $ONAIR_PKGTEST_ENV \
        /bin/sh -c "umask 077 && cd '$ONAIR_PKGTEST_WORKDIR' && exec $ONAIR_PKGTEST_EXEC" \
        >>"$work/onaird.log" 2>&1 &
    pid=$!
    i=0
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ]; do
        kill -0 "$pid" 2>/dev/null || fail "onaird exited"
        i=$((i + 1))
        [ $i -lt 300 ] || fail "/readyz is not 200 after 30 s"
        sleep 0.1
    done
    owner=$(stat -c %u "/proc/$pid")
    [ "$owner" = "$ONAIR_PKGTEST_UID" ] || fail "onaird runs as uid $owner"
}
# curl_json METHOD PATH [BODY]: prints "<status> <body>"
curl_json() {
    curl -s -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} \
        -w ' %{http_code}' "$base$2"
}

step "start onaird as onaird.service does ($ONAIR_PKGTEST_EXEC)"
start
# a first account: the token secret from onaird.env signs it, the store is in /var/lib/onair
out=$(curl_json POST /api/v1/auth/register \
    '{"username":"admin_1","email":"admin@example.com","password":"Packaged-onair-2026!"}')
case "$out" in *' 201') ;; *) fail "register: $out" ;; esac
case "$out" in *'"access_token"'*) ;; *) fail "register gave no token: $out" ;; esac
[ -n "$(find "$root/var/lib/onair" -user "$ONAIR_PKGTEST_UID" -name '*.db' -print)" ] ||
    fail "no database of user onair in /var/lib/onair"

step "build sdk examples/hello out of tree against the installed SDK"
in_root pkg-config --exists onair-sdk || fail "pkg-config onair-sdk"
plugindir=$(in_root pkg-config --variable=plugindir onair-sdk)
[ -d "$root$plugindir" ] || fail "plugindir $plugindir does not exist"
in_root sh -c 'cp -r /usr/share/doc/onair-sdk-dev/examples/hello /tmp/hello &&
    cmake -S /tmp/hello -B /tmp/hello/build -DCMAKE_C_FLAGS=-Werror &&
    cmake --build /tmp/hello/build && ctest --test-dir /tmp/hello/build --output-on-failure &&
    cmake --install /tmp/hello/build' >"$work/hello.log" 2>&1 ||
    { tail -30 "$work/hello.log" >&2; fail "building hello"; }
[ -f "$root$plugindir/hello.so" ] || fail "hello.so is not in $plugindir"
exports=$(nm -D --defined-only "$root$plugindir/hello.so" | awk 'NF >= 3 { print $3 }' |
    grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' || true)
[ "$exports" = onair_plugin_entry_v1 ] || fail "hello.so exports $exports"

step "load hello (enable it in /etc/onair/plugins, restart as systemctl restart does)"
printf 'enabled: true\nrequired: true\nconfig:\n  greeting: Packaged\n' \
    >"$root/etc/onair/plugins/hello.yaml"
out=$(curl_json GET /api/v1/hello)
case "$out" in *' 404') ;; *) fail "hello answered before it was loaded: $out" ;; esac
stop
start
out=$(curl_json GET /api/v1/hello/Ada)
case "$out" in *'"message":"Packaged, Ada!"'*' 200') ;; *) fail "hello: $out" ;; esac
# the account made before the restart is still there
out=$(curl_json POST /api/v1/auth/login '{"login":"admin_1","password":"Packaged-onair-2026!"}')
case "$out" in *' 200') ;; *) fail "login after restart: $out" ;; esac
stop
grep -q 'hello' "$work/onaird.log" || fail "the log does not mention hello"

# The admin's own files go before the purge (dpkg keeps what it did not install).
rm -f "$root/etc/onair/plugins/hello.yaml" "$root$plugindir/hello.so"
rm -rf "$root/tmp/hello"
echo "== onaird served, hello loaded"
