#!/usr/bin/env bash
# tests/io/race.sh - fd ownership races and connect corner cases
# (tests/io/race.c) under the shim, against tests/io/recsmtp.py, which
# records every raw byte and judges that nothing but TLS records followed
# STARTTLS and that no "SECRET" line arrived in cleartext.  One PASS/FAIL/SKIP
# line per check:
#   close-race, close-race-2  100 connections each, one or two threads writing
#                             while the main thread closes (issue 13 item 5)
#   dup-race                  dup() racing close() of its source
#   connect-window(-copy)     a thread writing (on the socket or a copy made
#                             before connect) while connect() waits in the
#                             kernel (a server that accepts slowly; item 6)
#   retry-after-refused(-blocking)  a second connect() after ECONNREFUSED on
#                             the same socket is upgraded (item 1)
#   stale-closefrom, stale-syscall  an upgraded fd closed by closefrom() or a
#                             raw close_range syscall, its number reused (item 1)
#   noproc-copy               copies made before connect() with /proc hidden
#                             (a mount namespace; item 7)
#   ipv6-len24                IPv6 connect() with addrlen 24 (item 8)
#   rst-greeting              greeting then RST during a non-blocking connect:
#                             never read by the program (item 9)
#   dup2-over-held            dup2(file, owned) with MSG_MORE bytes held: they
#                             reach the server inside TLS, not the file (item 21)
# RACE_CHECKS="a b" runs only those.  Not in the default list:
#   connect-race(-copy)       100 connections, a thread spinning writes from
#                             before connect() on: a write whose pass-through
#                             test ran before connect() marked the fd, its
#                             thread then preempted before entering the
#                             kernel, still reaches the socket (the known
#                             residual window; a stress measurement).
. "$(dirname "$0")/../lib/common.sh"

[ -f "$SHIM_LIB" ] || skip "libstarttls-shim.so not built"
mk_tmpdir

RACE=$BUILD/tests/io/race
if [ ! -x "$RACE" ] || [ "$TOP/tests/io/race.c" -nt "$RACE" ]; then
    mkdir -p "$BUILD/tests/io"
    # shellcheck disable=SC2086
    ${CC:-cc} -O2 -g ${CALLS_CFLAGS:-} -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -o "$RACE" \
        "$TOP/tests/io/race.c" -lpthread || fail "could not build $RACE"
fi
"$TOP/tests/lib/mkcerts.sh" "$T/pki" mail.test >/dev/null || fail "mkcerts.sh failed"

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${RACE_KEEP:-}" ] || rm -rf "$T"' EXIT

# rec NAME HOST [ARGS...]: recsmtp.py on a free port; sets PORT_NAME ("-" if
# it could not listen, e.g. no IPv6).
rec() {
    local name=$1 h=$2; shift 2
    "$PYTHON" "$TOP/tests/io/recsmtp.py" --host "$h" --cert "$T/pki/good-chain.pem" --key "$T/pki/good.key" \
        --log "$T/$name.rec" --ready-file "$T/$name.port" "$@" >"$T/$name.out" 2>&1 &
    PIDS+=($!)
    local end=$(( $(date +%s) + 10 ))
    until [ -s "$T/$name.port" ]; do
        if [ "$(date +%s)" -ge "$end" ] || ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
            printf -v "PORT_$name" '%s' "-"
            return
        fi
        sleep 0.05
    done
    printf -v "PORT_$name" '%s' "$(cat "$T/$name.port")"
}
rec tls 127.0.0.1
rec v6 ::1
rec plain 127.0.0.1
rec rst 127.0.0.1 --mode rst
rec slow 127.0.0.1 --accept-delay 0.7
[ "$PORT_tls" != - ] && [ "$PORT_plain" != - ] && [ "$PORT_rst" != - ] || fail "recsmtp.py did not start"
PORT_closed=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PORTS="$PORT_tls/smtp,$PORT_closed/smtp,$PORT_rst/smtp,$PORT_slow/smtp"
[ "$PORT_v6" != - ] && PORTS="$PORTS,$PORT_v6/smtp"

# settle: wait until every connection the servers accepted was judged.
settle() {
    local end=$(( $(date +%s) + 15 )) f
    for f in "$T"/tls.rec "$T"/v6.rec "$T"/slow.rec; do
        [ -f "$f" ] || continue
        until [ "$(grep -c '^START ' "$f")" = "$(grep -c '^END ' "$f")" ]; do
            [ "$(date +%s)" -ge "$end" ] && return 1
            sleep 0.05
        done
    done
}

run() {    # run CHECK [PREFIX...]
    local check=$1; shift
    local log=$T/shim-$check.log out=$T/out-$check before_tls before_v6 leaks
    before_tls=$(cat "$T/tls.rec" 2>/dev/null | wc -l)
    before_v6=$(cat "$T/v6.rec" 2>/dev/null | wc -l)
    before_slow=$(cat "$T/slow.rec" 2>/dev/null | wc -l)
    "$@" timeout -k 5 90 env LD_PRELOAD="${CALLS_PRELOAD:+$CALLS_PRELOAD:}$SHIM_LIB" STARTTLS_SHIM_LOG="$log" \
        STARTTLS_SHIM_CAFILE="$T/pki/ca.pem" STARTTLS_SHIM_POLICY=verify STARTTLS_SHIM_PORTS="$PORTS" \
        "$RACE" "$check" 127.0.0.1 "$PORT_tls" "$PORT_closed" "$PORT_plain" "$PORT_rst" "$PORT_v6" "$PORT_slow" >"$out" 2>&1
    local rc=$?
    settle || { echo "FAIL $check: the recording server did not finish"; return; }
    leaks=$( { tail -n +$((before_tls + 1)) "$T/tls.rec" 2>/dev/null; tail -n +$((before_v6 + 1)) "$T/v6.rec" 2>/dev/null;
               tail -n +$((before_slow + 1)) "$T/slow.rec" 2>/dev/null; } |
             grep -E '^LEAK ' | head -3)
    nleak=$( { tail -n +$((before_tls + 1)) "$T/tls.rec" 2>/dev/null; tail -n +$((before_v6 + 1)) "$T/v6.rec" 2>/dev/null;
               tail -n +$((before_slow + 1)) "$T/slow.rec" 2>/dev/null; } |
             sed -n 's/^LEAK \([0-9]*\) .*/\1/p' | sort -u | wc -l)
    echo "$check: $nleak connections with cleartext" >&2
    if [ -n "$leaks" ]; then
        echo "FAIL $check: cleartext on the wire: $(echo "$leaks" | tr '\n' ' ' | cut -c1-300)"
    elif grep -qE '^(PASS|FAIL|SKIP) ' "$out" && { [ $rc -eq 0 ] || grep -q '^FAIL ' "$out"; }; then
        grep -E '^(PASS|FAIL|SKIP) ' "$out"
        grep -q '^FAIL ' "$out" && { echo "----- $check: shim log" >&2; tail -n 20 "$log" >&2 2>/dev/null; }
    else
        echo "FAIL $check: exit $rc: $(tail -n 3 "$out" | tr '\n' ' ')"
        tail -n 20 "$log" >&2 2>/dev/null
    fi
    # per-check extras, judged on what the server saw
    case $check in
    dup2-over-held)
        k=$(tail -n +$((before_tls + 1)) "$T/tls.rec" | sed -n 's/^START //p' | head -1)
        if ! grep -q "^TLS $k SECRET-held" "$T/tls.rec"; then
            echo "FAIL dup2-over-held-reached-server: the held line never arrived inside TLS"
        elif ! grep -q "^NOTIFY $k\$" "$T/tls.rec"; then
            echo "FAIL dup2-over-held-reached-server: no close_notify"
        else
            echo "PASS dup2-over-held-reached-server"
        fi ;;
    rst-greeting)
        if [ "$(grep -c ":$PORT_rst " "$log" 2>/dev/null)" = 1 ]; then
            echo "PASS rst-greeting-one-log-line"
        else
            echo "FAIL rst-greeting-one-log-line: $(grep -c ":$PORT_rst " "$log" 2>/dev/null) lines: $(head -c 300 "$log" 2>/dev/null)"
        fi ;;
    esac
}

ALL="close-race close-race-2 dup-race connect-window connect-window-copy retry-after-refused
     retry-after-refused-blocking stale-closefrom stale-syscall noproc-copy ipv6-len24 rst-greeting dup2-over-held"
for check in ${RACE_CHECKS:-$ALL}; do
    if [ "$check" = noproc-copy ]; then
        # /proc hidden: a private mount namespace with a tmpfs over it.
        if [ "$(id -u)" -ne 0 ] || ! unshare -m true 2>/dev/null; then
            echo "SKIP noproc-copy: needs root for a mount namespace"
            continue
        fi
        if [ -n "${CALLS_PRELOAD:-}" ]; then
            # ASan reads its options and maps from /proc before main()
            echo "SKIP noproc-copy: a sanitizer runtime cannot run without /proc"
            continue
        fi
        run "$check" unshare -m sh -c 'mount -t tmpfs none /proc && exec "$@"' sh
    else
        run "$check"
    fi
done
exit 0
