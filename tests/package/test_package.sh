#!/bin/sh
# The Debian packages as an admin meets them: build onaird and onair-sdk-dev with
# `make package`, install them into a clean Debian 12 root made here with mmdebstrap,
# start onaird the way its systemd unit does, check /readyz and a first account, build
# the SDK's hello example out of tree against the installed SDK (pkg-config onair-sdk),
# load it into onaird, then purge both packages and check nothing of them is left.
#
#   usage: tests/package/test_package.sh SOURCE_DIR WORK_DIR
#
# Needs root (chroot, mounts, a network namespace), mmdebstrap, debhelper and network
# access to deb.debian.org. The base root (Debian 12 minbase plus the compilers an SDK
# user has) is cached as WORK_DIR/cache/*.tar (made again when that package list changes).
#
# ONAIR_PKG_REV=<commit> packages that commit instead of the working tree.
#
# systemd cannot run in a chroot, so onaird is started as its unit would start it: the
# unit file installed by the package is read for User=, Group=, WorkingDirectory=,
# EnvironmentFile=, Environment= and ExecStart=, and exactly those are used. It runs in
# a network namespace of its own so its ports (8080, 7882) clash with nothing.
set -eu

fail() {
    echo "test_package: FAIL: $*" >&2
    exit 1
}
step() { echo "== $(date -u +%T) $*"; }

[ $# -eq 2 ] || fail "usage: $0 SOURCE_DIR WORK_DIR"
src=$(cd "$1" && pwd)
mkdir -p "$2"
work=$(cd "$2" && pwd)
[ "$(id -u)" -eq 0 ] || fail "must run as root (CI does): chroot, mounts and namespaces"
for tool in mmdebstrap dpkg-buildpackage dh unshare chroot curl ip; do
    command -v $tool >/dev/null || fail "$tool not found (make deps-test installs it)"
done

root=$work/root
# Everything below runs in a private mount namespace so the chroot's mounts vanish with it.
if [ -z "${ONAIR_PKGTEST_NS:-}" ]; then
    ONAIR_PKGTEST_NS=1 exec unshare --mount --propagation private -- sh "$0" "$src" "$work"
fi
cleanup() {
    # unmount first: /dev is bound into the root, and rm must never reach the host's
    for m in tmp dev proc; do
        umount -R -l "$root/$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- 1. the packages ----------------------------------------------------------------------
step "make package (into $work/dist)"
make -s -C "$src" package PKG_BUILD="$work/pkg" DIST="$work/dist" JOBS="${JOBS:-2}" \
    PKG_REV="${ONAIR_PKG_REV:-}" \
    >"$work/package.log" 2>&1 || { tail -40 "$work/package.log" >&2; fail "make package"; }
daemon_deb=$(ls "$work"/dist/onaird_*.deb)
sdk_deb=$(ls "$work"/dist/onair-sdk-dev_*.deb)
dpkg-deb -c "$daemon_deb" >"$work/onaird.contents"
# the token secret is made on install, never shipped
if grep -q 'onaird\.env' "$work/onaird.contents"; then fail "onaird.env is in the package"; fi
grep -q ' ./lib/systemd/system/onaird.service$' "$work/onaird.contents" ||
    fail "no systemd unit in $daemon_deb"

# ---- 2. a clean Debian 12 root ------------------------------------------------------------
# The base holds what an admin's machine plus an SDK user's compilers hold, nothing of
# onair: apt resolves the packages' own dependencies below.
base_pkgs="build-essential,cmake,pkg-config,libcmocka-dev"
key=$(echo "bookworm minbase $base_pkgs" | cksum | cut -d' ' -f1)
cache=$work/cache/bookworm-$key.tar
if [ ! -s "$cache" ]; then
    step "mmdebstrap bookworm (cached as $cache)"
    rm -rf "$work/cache" && mkdir -p "$work/cache"
    mmdebstrap --quiet --variant=minbase --format=tar --include="$base_pkgs" bookworm "$cache.tmp" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main" \
        >"$work/mmdebstrap.log" 2>&1 || { tail -40 "$work/mmdebstrap.log" >&2; fail "mmdebstrap"; }
    mv "$cache.tmp" "$cache"
fi
rm -rf "$root" && mkdir -p "$root"
tar -C "$root" -xf "$cache"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"
cp /etc/resolv.conf "$root/etc/resolv.conf"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

in_root apt-get update -qq >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get update"; }
# What the root holds before the install; after the purge (and autoremove) it must be that.
snapshot() {
    (cd "$root" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./sys -o -path ./tmp \
        -o -path ./run -o -path ./var/cache -o -path ./var/lib/apt -o -path ./var/lib/dpkg \
        -o -path ./var/log \) -prune -o -print) |
        grep -v -E '^\./etc/(passwd|group|shadow|gshadow)-$|^\./etc/ld\.so\.cache$' | sort
}
snapshot >"$work/before.txt"

# ---- 3. install ---------------------------------------------------------------------------
step "apt-get install onaird onair-sdk-dev"
mkdir -p "$root/tmp/debs" && cp "$daemon_deb" "$sdk_deb" "$root/tmp/debs/"
in_root apt-get install -y -q --no-install-recommends /tmp/debs/$(basename "$daemon_deb") \
    /tmp/debs/$(basename "$sdk_deb") >>"$work/apt.log" 2>&1 ||
    { tail -40 "$work/apt.log" >&2; fail "apt-get install"; }

unit=$root/lib/systemd/system/onaird.service
[ -f "$unit" ] || fail "the unit is not installed"
[ -L "$root/etc/systemd/system/multi-user.target.wants/onaird.service" ] ||
    fail "the unit is not enabled"
for opt in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
    CapabilityBoundingSet= SystemCallFilter=@system-service User=onair StateDirectory=onair; do
    grep -q "^$opt\$" "$unit" || fail "the unit lacks $opt"
done
uid=$(in_root id -u onair) || fail "no user onair"
gid=$(in_root id -g onair)
[ "$uid" -lt 1000 ] || fail "onair is not a system user (uid $uid)"
in_root getent passwd onair | grep -q ':/usr/sbin/nologin$' || fail "onair can log in"
env_file=$root/etc/onair/onaird.env
[ "$(stat -c '%a %u' "$env_file")" = "600 0" ] || fail "onaird.env: $(stat -c '%a %u' "$env_file")"
grep -q -E '^ONAIR_JWT_SECRET=[0-9a-f]{64}$' "$env_file" || fail "onaird.env has no random secret"
# (numeric owners: the host's names are not the root's)
[ "$(stat -c '%a %u' "$root/var/lib/onair")" = "700 $uid" ] ||
    fail "/var/lib/onair: $(stat -c '%a %u' "$root/var/lib/onair") (onair is $uid)"
[ -f "$root/etc/onair/onair.yaml" ] && [ -f "$root/etc/onair/plugins/chat.yaml" ] ||
    fail "no default configuration in /etc/onair"
in_root onaird -c /etc/onair/onair.yaml --check-config >/dev/null || fail "--check-config"

# ---- 4. start onaird as the unit does -----------------------------------------------------
: >"$work/onaird.log"
unit_value() { sed -n "s/^$1=//p" "$unit" | tail -n 1; }
user=$(unit_value User)
group=$(unit_value Group)
workdir=$(unit_value WorkingDirectory)
exec_start=$(unit_value ExecStart)
envfile=$(unit_value EnvironmentFile | sed 's/^-//')
unit_env=$(sed -n 's/^Environment=//p' "$unit" | tr '\n' ' ')
[ "$user" = onair ] && [ "$group" = onair ] || fail "User=$user Group=$group"
# systemd reads EnvironmentFile= as root, before dropping privileges
file_env=$(grep -E '^[A-Z_][A-Z0-9_]*=' "$root$envfile" | tr '\n' ' ')

# The rest runs in a network namespace of its own (loopback only).
ONAIR_PKGTEST_ROOT=$root ONAIR_PKGTEST_UID=$uid ONAIR_PKGTEST_GID=$gid \
    ONAIR_PKGTEST_WORKDIR=$workdir ONAIR_PKGTEST_EXEC=$exec_start \
    ONAIR_PKGTEST_ENV="$unit_env $file_env" ONAIR_PKGTEST_WORK=$work \
    unshare --net -- sh "$(dirname "$0")/package_run.sh" || fail "running the installed onaird"

# ---- 5. upgrade (the same version again): configuration, secret and data stay ----------
step "apt-get install --reinstall onaird"
secret_before=$(cat "$env_file")
echo "# the admin's comment" >>"$root/etc/onair/onair.yaml"
in_root apt-get install -y -q --reinstall -o Dpkg::Options::=--force-confold \
    /tmp/debs/$(basename "$daemon_deb") >>"$work/apt.log" 2>&1 ||
    { tail -40 "$work/apt.log" >&2; fail "apt-get install --reinstall"; }
[ "$(cat "$env_file")" = "$secret_before" ] || fail "the upgrade replaced the token secret"
grep -q "^# the admin's comment\$" "$root/etc/onair/onair.yaml" || fail "the upgrade lost an edit"
[ -n "$(find "$root/var/lib/onair" -name '*.db' -print)" ] || fail "the upgrade lost the data"

# ---- 6. purge -----------------------------------------------------------------------------
step "apt-get purge onaird onair-sdk-dev, autoremove"
in_root apt-get purge -y -q onaird onair-sdk-dev >>"$work/apt.log" 2>&1 ||
    { tail -40 "$work/apt.log" >&2; fail "apt-get purge"; }
in_root apt-get autoremove --purge -y -q >>"$work/apt.log" 2>&1 ||
    { tail -40 "$work/apt.log" >&2; fail "apt-get autoremove"; }
in_root getent passwd onair >/dev/null && fail "user onair is left"
in_root getent group onair >/dev/null && fail "group onair is left"
grep -q onair "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" && fail "onair in /etc/passwd"
in_root dpkg -l | grep -q -E '^[a-z]{2} +onair' && fail "dpkg still lists an onair package"
snapshot >"$work/after.txt"
if ! diff -u "$work/before.txt" "$work/after.txt" >"$work/left.diff"; then
    cat "$work/left.diff" >&2
    fail "the purge left files behind (or removed some)"
fi
step "ok: installed, ran, loaded an out-of-tree plugin, purged without a trace"
