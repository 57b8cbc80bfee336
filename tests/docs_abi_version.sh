#!/bin/sh
# The docs must name the plugin ABI version the headers define.
#
#   tests/docs_abi_version.sh SOURCE_DIR      check README.md, docs/, sdk/ and plugins/ *.md
#   tests/docs_abi_version.sh --self-test     prove the check catches stale statements
#
# ONAIR_ABI_MAJOR / ONAIR_ABI_MINOR come from sdk/include/onair/plugin.h. A statement about
# the version the host has now must name exactly that version:
#   "this host is 1.2", "the host is ABI 1.2"           (host is X.Y)
#   "reports ABI minor 3", "reports minor 3"             (reports minor N)
#   "(plugin ABI 1.3)"                                   (onaird --version)
#   "SDK and loader**: ABI 1.3", "current ABI is 1.3"
#   "ONAIR_ABI_MINOR 3", "ONAIR_ABI_MINOR = 3", "`ONAIR_ABI_MINOR` (3)" (and ..._MAJOR)
# No doc may name an ABI newer than the headers ("ABI 1.7" with the header at 1.4), and
# docs/plugin-sdk.md must say what the current minor added ("1.4 added ..."). A statement
# may wrap onto the next line. Each disagreement is one line FILE:LINE: ... and the exit
# status is 1.
set -u

check() {
    src=$1
    header=$src/sdk/include/onair/plugin.h
    major=$(sed -n 's/^#define ONAIR_ABI_MAJOR[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$header")
    minor=$(sed -n 's/^#define ONAIR_ABI_MINOR[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$header")
    if [ -z "$major" ] || [ -z "$minor" ]; then
        echo "$header: no ONAIR_ABI_MAJOR / ONAIR_ABI_MINOR found" >&2
        return 2
    fi
    files=$(cd "$src" && {
        [ -f README.md ] && echo README.md
        for d in docs sdk plugins; do
            [ -d "$d" ] && find "$d" -name node_modules -prune -o -name '*.md' -type f -print
        done
    } | sort)
    status=0
    for f in $files; do
        awk -v major="$major" -v minor="$minor" -v file="$f" '
        function report(line, what, got) {
            printf "%s:%d: %s names %s, but sdk/include/onair/plugin.h is %d.%d\n",
                file, line, what, got, major, minor
            bad = 1
        }
        # every match of re in text that starts before cut (on the first line)
        function scan(text, orig, cut, re, kind,    rest, off, m, s, v, n, a, rs, rl) {
            rest = text
            off = 0
            while (match(rest, re)) {
                rs = RSTART
                rl = RLENGTH
                if (off + rs > cut)
                    break
                s = substr(rest, rs, rl)
                m = substr(orig, off + rs, rl)
                if (kind == "minor" || kind == "major") {
                    gsub(/[^0-9]+/, " ", s)
                    n = split(s, a, " ")
                    v = a[n] + 0
                    if (v != (kind == "minor" ? minor : major))
                        report(NR - 1, "\"" m "\"", kind " " v)
                } else {
                    match(s, /[0-9]+\.[0-9]+/)
                    v = substr(s, RSTART, RLENGTH)
                    split(v, a, ".")
                    if (kind == "current" && (a[1] != major || a[2] != minor))
                        report(NR - 1, "\"" m "\"", v)
                    if (kind == "newer" && (a[1] > major || (a[1] == major && a[2] > minor)))
                        report(NR - 1, "\"" m "\"", v)
                }
                off += rs + rl - 1
                rest = substr(rest, rs + rl)
            }
        }
        function check_line(first, second,    orig, text, cut) {
            orig = first " " second
            text = tolower(orig)
            cut = length(first)
            scan(text, orig, cut, "(this|the|running|current) host( now)? (is|speaks|implements|provides) (abi )?(version )?[0-9]+\\.[0-9]+", "current")
            scan(text, orig, cut, "reports (the )?(abi )?(version )?minor [0-9]+", "minor")
            scan(text, orig, cut, "reports (abi )?(version )?[0-9]+\\.[0-9]+", "current")
            scan(text, orig, cut, "\\(plugin abi [0-9]+\\.[0-9]+\\)", "current")
            scan(text, orig, cut, "(sdk|loader)[*_`]*: +abi [0-9]+\\.[0-9]+", "current")
            scan(text, orig, cut, "(current|latest) (sdk |plugin )?abi (version )?(is )?[0-9]+\\.[0-9]+", "current")
            scan(text, orig, cut, "abi [0-9]+\\.[0-9]+ is (the )?(current|latest)", "current")
            scan(text, orig, cut, "abi_minor`? *(=|is|:)? *\\(?[0-9]+", "minor")
            scan(text, orig, cut, "abi_major`? *(=|is|:)? *\\(?[0-9]+", "major")
            scan(text, orig, cut, "abi [0-9]+\\.[0-9]+", "newer")
            if (index(text, major "." minor " added") > 0 && index(text, major "." minor " added") <= cut)
                added = 1
        }
        NR > 1 { check_line(prev, $0) }
        { prev = $0 }
        END {
            NR++
            check_line(prev, "")
            if (file == "docs/plugin-sdk.md" && !added) {
                printf "%s: no line says what ABI %d.%d added (the history in the ABI rules)\n",
                    file, major, minor
                bad = 1
            }
            exit bad
        }' "$src/$f" || status=1
    done
    return $status
}

self_test() {
    here=$(cd "$(dirname "$0")/.." && pwd)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/sdk/include/onair" "$tmp/docs"
    cp "$here/sdk/include/onair/plugin.h" "$tmp/sdk/include/onair/"
    major=$(sed -n 's/^#define ONAIR_ABI_MAJOR[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$tmp/sdk/include/onair/plugin.h")
    minor=$(sed -n 's/^#define ONAIR_ABI_MINOR[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$tmp/sdk/include/onair/plugin.h")
    old=$((minor - 1))
    new=$((minor + 1))
    cur="$major.$minor"
    # agreeing docs pass
    cat >"$tmp/README.md" <<EOF
- **plugin SDK and loader**: ABI $cur (1.1 added the document store), with checks
the store (ABI 1.1) and \`onaird --version\` prints \`onaird 0.1.0 (plugin ABI $cur)\`.
EOF
    cat >"$tmp/docs/plugin-sdk.md" <<EOF
| 10 | minor | \`needs host ABI 1.N or newer; this host is $cur\` |
- history: 1.1 added the store; $cur added the newest functions.
The test host reports ABI minor $minor and fills in everything.
\`ONAIR_ABI_MAJOR\` ($major) and \`ONAIR_ABI_MINOR\` ($minor) are the versions.
EOF
    if ! out=$(check "$tmp" 2>&1); then
        echo "self-test: agreeing docs were refused:" >&2
        echo "$out" >&2
        return 1
    fi
    # stale statements fail, each named by file and line (one wraps onto the next line)
    cat >"$tmp/README.md" <<EOF
intro
- **plugin SDK and loader**: ABI $major.$old (1.1 added the document store), with checks
and one more line
EOF
    cat >"$tmp/docs/plugin-sdk.md" <<EOF
| 10 | minor | \`needs host ABI 1.N or newer; this host is $major.$old\` |
The test host reports ABI minor $old and fills in everything, and it is like the
server. The current ABI is
$major.$old, and the store is ABI $major.$new.
\`ONAIR_ABI_MAJOR\` ($new) and \`ONAIR_ABI_MINOR\` ($old) are the versions.
EOF
    out=$(check "$tmp" 2>&1)
    rc=$?
    echo "$out"
    fail=0
    [ $rc -eq 1 ] || { echo "self-test: exit status $rc, expected 1" >&2; fail=1; }
    for want in "README.md:2: " "docs/plugin-sdk.md:1: " "docs/plugin-sdk.md:2: " \
        "docs/plugin-sdk.md:3: " "docs/plugin-sdk.md:4: " \
        "docs/plugin-sdk.md:5: \"ABI_MAJOR\` ($new\" names major $new" \
        "docs/plugin-sdk.md:5: \"ABI_MINOR\` ($old\" names minor $old" \
        "docs/plugin-sdk.md: no line says what ABI $cur added"; do
        case "$out" in
        *"$want"*) ;;
        *)
            echo "self-test: no report starting with '$want'" >&2
            fail=1
            ;;
        esac
    done
    [ $fail -eq 0 ] && echo "self-test: ok"
    return $fail
}

case "${1:-}" in
--self-test) self_test ;;
"")
    echo "usage: $0 SOURCE_DIR | --self-test" >&2
    exit 2
    ;;
*) check "$1" ;;
esac
