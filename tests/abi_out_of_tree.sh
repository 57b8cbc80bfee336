#!/bin/sh
# Build the example plugins the way a third party does: against the SDK installed by
# `cmake --install`, found with pkg-config, outside the onair tree.
#   usage: tests/abi_out_of_tree.sh BUILD_DIR [SOURCE_DIR]
# Builds every example (hello, notes, wordfilter), checks each .so exports only
# onair_plugin_entry_v1 and runs its unit test.
set -eu

fail() {
    echo "abi_out_of_tree: $*" >&2
    exit 1
}

[ $# -ge 1 ] || fail "usage: $0 BUILD_DIR [SOURCE_DIR]"
[ -d "$1" ] || fail "no build directory $1"
build=$(cd "$1" && pwd)
src=$(cd "${2:-$(dirname "$0")/..}" && pwd)
[ -f "$src/sdk/examples/hello/CMakeLists.txt" ] || fail "no sdk/examples/hello in $src"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/onair-oot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
prefix=$tmp/prefix

echo "== install $build into $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }
pc=$(find "$prefix" -name onair-sdk.pc | head -n 1)
[ -n "$pc" ] || fail "onair-sdk.pc was not installed"
[ -f "$prefix/include/onair/plugin.h" ] || fail "onair/plugin.h was not installed"
[ -f "$prefix/include/onair/testhost.h" ] || fail "onair/testhost.h was not installed"
pcdir=$(dirname "$pc")

# A sanitized build installs a sanitized libonair_testhost.a: link the test alike.
san=
if grep -q '^ONAIR_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
    san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
fi

# The installed .pc names the configure-time prefix; --define-variable points it at
# the temp prefix, as for any relocated install. Every example is built the way its
# README tells a third party to: cmake -S <example> with the SDK found by pkg-config.
for name in hello notes wordfilter; do
    echo "== configure and build sdk/examples/$name out of tree"
    PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
        cmake -S "$src/sdk/examples/$name" -B "$tmp/$name" \
        -DCMAKE_PREFIX_PATH="$prefix" \
        -DPKG_CONFIG_ARGN="--define-variable=prefix=$prefix" \
        -DCMAKE_C_FLAGS="-Werror $san" \
        -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_MODULE_LINKER_FLAGS="$san" \
        >"$tmp/configure-$name.log" 2>&1 ||
        { cat "$tmp/configure-$name.log" >&2; fail "$name: configure failed"; }
    cmake --build "$tmp/$name" >"$tmp/build-$name.log" 2>&1 ||
        { cat "$tmp/build-$name.log" >&2; fail "$name: build failed"; }

    so=$tmp/$name/$name.so
    [ -f "$so" ] || fail "$name.so was not built (PREFIX \"\" missing?)"
    # Exported symbols, minus the linker's and the sanitizers' own.
    exports=$(nm -D --defined-only "$so" | awk 'NF >= 3 { print $3 }' |
        grep -v -E '^(_init|_fini|_edata|_end|__bss_start|__(asan|ubsan|sanitizer|lsan)_.*)$' || true)
    if [ "$exports" != "onair_plugin_entry_v1" ]; then
        echo "$name.so exports:" >&2
        echo "$exports" >&2
        fail "$name.so must export exactly onair_plugin_entry_v1"
    fi
    echo "== $name.so exports only onair_plugin_entry_v1"

    echo "== run test_$name"
    "$tmp/$name/test_$name" || fail "test_$name failed"
done
echo "== ok"
