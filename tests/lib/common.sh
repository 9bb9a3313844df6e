# Shared helpers for starttls-shim's shell tests. Source it; never run it.
#
# A test script proves one thing and ends with one of:
#   exit 0   passed
#   exit 1   failed (say why on stderr first: fail "reason")
#   exit 77  skipped (say why: skip "reason")
# tests/run.sh counts these and prints the summary line.

set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$TOP/build}
SHIM_LIB=${SHIM_LIB:-$BUILD/libstarttls-shim.so}
SHIM_BIN=${SHIM_BIN:-$BUILD/starttls-shim}
PYTHON=${PYTHON:-python3}

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
note() { echo "  $*" >&2; }

# need_pkgs PKG...: install missing Debian packages when root, else skip with
# the exact apt-get line.
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
            { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } ||
            skip "could not install: apt-get install ${missing[*]}"
    else
        skip "missing packages; run: sudo apt-get install ${missing[*]}"
    fi
}

# need_root: network namespaces and real servers need root.
need_root() { [ "$(id -u)" -eq 0 ] || skip "needs root (network namespace, real servers)"; }

# assert_eq WHAT EXPECTED ACTUAL
assert_eq() { [ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"; }

# assert_contains WHAT HAYSTACK-FILE NEEDLE
assert_contains() { grep -qF -- "$3" "$2" || { note "--- $2:"; sed 's/^/    /' "$2" | head -40 >&2; fail "$1: '$3' not found"; }; }
assert_not_contains() { ! grep -qF -- "$3" "$2" || fail "$1: '$3' found in $2"; }

# tmpdir: a fresh directory removed on exit.
mk_tmpdir() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/sts-test.XXXXXX")
    trap 'rm -rf "$T"' EXIT
}
