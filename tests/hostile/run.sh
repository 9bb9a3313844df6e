#!/usr/bin/env bash
# tests/hostile/run.sh [--without-shim] [FILTER...]
#
# Plays every hostile-server scenario (tests/hostile/scenarios/{smtp,pop3,imap}/*.scn)
# under every policy (verify, encrypt, may) against a dumb cleartext client
# (client.py) running under the shim, and prints one line per case:
#     PASS smtp/strip-454 verify
#     FAIL imap/preauth may: secret did not reach the server in cleartext ...
# What each case asserts is written at the top of check.py.
#
# FILTER: substrings of "proto/name policy", e.g. `run.sh smtp/strip imap/preauth`
# or `run.sh " may"`.  Environment: SHIM_LIB (default build/libstarttls-shim.so),
# HOSTILE_JOBS (parallel cases, default 8: most cases sleep on timeouts),
# HOSTILE_KEEP=1 keeps the per-case directories (printed at the end).
#
# --without-shim: runs the same cases with no shim and passes a case only when
# check.py FAILS it: proves that the assertions can fail (the program then
# talks cleartext to the attacker in every scenario).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../lib/common.sh"
FS=$TOP/tests/fakeserver/fakeserver.py
POLICIES=${HOSTILE_POLICIES:-verify encrypt may}

# The real interpreter, not a wrapper script (pyenv): LD_PRELOAD must land in it.
PYBIN=${PYBIN:-$("$PYTHON" -c 'import sys; print(sys.executable)')}

run_case() { # run_case SCENARIO POLICY
    local scn=$1 pol=$2 proto name d to copts port secret limit rc start end elapsed spid i
    name=$(basename "$(dirname "$scn")")/$(basename "$scn" .scn)
    d=$CASES/${name//\//_}.$pol
    rm -rf "$d"; mkdir -p "$d"
    proto=$(sed -n 's/^proto  *\([a-z0-9]*\).*/\1/p' "$scn" | head -1)
    to=$(sed -n 's/^timeout  *\([0-9]*\).*/\1/p' "$scn" | head -1); to=${to:-2}
    copts=$(sed -n 's/^client  *//p' "$scn" | head -1 | sed 's/\([a-z]*\)=/--\1 /g')
    "$PYBIN" -S "$FS" "$scn" --certs "$CERTS" --record "$d/rec" --count 1 \
        --ready-file "$d/port" --max-time 40 >"$d/server.out" 2>"$d/server.err" &
    spid=$!
    for ((i = 0; i < 100; i++)); do [ -s "$d/port" ] && break; sleep 0.05; done
    if [ ! -s "$d/port" ]; then
        echo "FAIL $name $pol: fakeserver did not start: $(tail -1 "$d/server.err")"
        kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
        return
    fi
    port=$(cat "$d/port")
    secret=SECRET-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
    limit=$((to + 5))
    local preload=()
    [ "$WITHOUT_SHIM" = 1 ] || preload=(LD_PRELOAD="$SHIM_LIB")
    start=$EPOCHREALTIME
    # shellcheck disable=SC2086  # copts is a list of options
    timeout -k 1 "$limit" env "${preload[@]}" STARTTLS_SHIM_PORTS="$port/$proto" \
        STARTTLS_SHIM_CAFILE="$CERTS/ca.pem" STARTTLS_SHIM_POLICY="$pol" \
        STARTTLS_SHIM_TIMEOUT="$to" STARTTLS_SHIM_LOG=stderr \
        "$PYBIN" -S "$HERE/client.py" --proto "$proto" --port "$port" --secret "$secret" \
        --out "$d/client.out" --step-timeout $((to + 2)) -v $copts \
        >"$d/client.stdout" 2>"$d/client.err" </dev/null
    rc=$?
    end=$EPOCHREALTIME
    elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
    # Let the server see the client's EOF and finish its recording, then stop it.
    for ((i = 0; i < 40; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.05; done
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
    local verdict
    verdict=$("$PYBIN" -S "$HERE/check.py" --scenario "$scn" --policy "$pol" --dir "$d" \
        --secret "$secret" --rc "$rc" --elapsed "$elapsed" --limit "$limit")
    if [ "$WITHOUT_SHIM" = 1 ]; then
        case $verdict in
        "FAIL "*) echo "PASS without-shim $name $pol (caught: ${verdict#*: })" | cut -c1-200 ;;
        *) echo "FAIL without-shim $name $pol: check.py passed a case with no shim loaded" ;;
        esac
    else
        echo "$verdict"
    fi
}

if [ "${1:-}" = --case ]; then
    run_case "$2" "$3"
    exit 0
fi

WITHOUT_SHIM=0
if [ "${1:-}" = --without-shim ]; then WITHOUT_SHIM=1; shift; fi
if [ "$WITHOUT_SHIM" = 0 ] && [ ! -f "$SHIM_LIB" ]; then
    skip "build/libstarttls-shim.so not built"
fi
command -v openssl >/dev/null || skip "openssl not installed"

mk_tmpdir
CERTS=$T/certs
CASES=$T/cases
if [ "${HOSTILE_KEEP:-0}" = 1 ]; then
    trap 'echo "case directories kept in $T" >&2' EXIT
fi
"$TOP/tests/lib/mkcerts.sh" "$CERTS" || fail "mkcerts.sh failed"
mkdir -p "$CASES"

mapfile -t scenarios < <(ls "$HERE"/scenarios/{smtp,pop3,imap}/*.scn)
lint=$("$PYBIN" -S "$FS" --check "${scenarios[@]}" 2>&1)
if [ -n "$lint" ]; then
    echo "$lint" | while IFS= read -r l; do echo "FAIL lint: ${l#"$HERE"/}"; done
fi

list=$T/cases.list
: >"$list"
for scn in "${scenarios[@]}"; do
    name=$(basename "$(dirname "$scn")")/$(basename "$scn" .scn)
    for pol in $POLICIES; do
        if [ $# -gt 0 ]; then
            keep=0
            for f in "$@"; do case "$name $pol" in *"$f"*) keep=1 ;; esac; done
            [ $keep = 1 ] || continue
        fi
        # slow cases (timeouts) first, so the parallel tail is short
        if grep -q '^timeout' "$scn"; then echo "0 $scn $pol"; else echo "1 $scn $pol"; fi >>"$list"
    done
done
[ -s "$list" ] || fail "no scenario matches: $*"

export TOP SHIM_LIB PYBIN FS CERTS CASES WITHOUT_SHIM HERE
sort -s -k1,1 "$list" | cut -d' ' -f2- |
    xargs -P "${HOSTILE_JOBS:-8}" -L 1 "$HERE/run.sh" --case
exit 0
