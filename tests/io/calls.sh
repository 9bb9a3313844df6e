#!/usr/bin/env bash
# tests/io/calls.sh - one check per hooked call style (tests/io/calls.c),
# under the shim, against tests/io/slowsmtp.py on 127.0.0.1 (no namespace,
# no real servers: seconds).  One PASS/FAIL/SKIP line per check: MSG_PEEK,
# MSG_WAITALL, MSG_DONTWAIT, O_NONBLOCK switched mid-connection, readiness
# of bytes held by the shim in poll/ppoll/select/pselect/epoll_wait/
# epoll_pwait, edge-triggered epoll on the buffered greeting, idle TLS 1.3
# records, the dup family, dup2 over an upgraded fd, close_range (also above
# fd 65535), shutdown(SHUT_WR), EPIPE and SIGPIPE as for a plain socket,
# SO_ERROR, the refusal on a non-blocking socket, EAGAIN while upgrading,
# read-only interest during connect, sendto/recvfrom, splice, sendfile,
# copy_file_range, fdopen, close-on-exec, threads, signals (SA_RESTART,
# EINTR, SO_RCVTIMEO, SO_SNDTIMEO, an interrupted connect), TCP Fast Open,
# sendmmsg/recvmmsg, preadv2/pwritev2, FIONREAD, SCM_RIGHTS.  Built with
# _FORTIFY_SOURCE=2, as distribution binaries are, so that the __read_chk,
# __recv_chk, __poll_chk... entry points are the ones exercised.
. "$(dirname "$0")/../lib/common.sh"

[ -f "$SHIM_LIB" ] && [ -x "$SHIM_BIN" ] || skip "build/libstarttls-shim.so not built"
mk_tmpdir

# CALLS_CFLAGS (extra compiler flags, e.g. sanitizers) and CALLS_PRELOAD (a
# library to preload ahead of the shim, e.g. libasan) serve
# tests/sanitize.sh; the binary then lives in $BUILD/tests/io too.
CALLS=$BUILD/tests/io/calls
if [ ! -x "$CALLS" ] || [ "$TOP/tests/io/calls.c" -nt "$CALLS" ]; then
    mkdir -p "$BUILD/tests/io"
    # shellcheck disable=SC2086
    ${CC:-cc} -O2 -g ${CALLS_CFLAGS:-} -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -D_FORTIFY_SOURCE=2 -o "$CALLS" \
        "$TOP/tests/io/calls.c" -lpthread || fail "could not build $CALLS"
fi

"$TOP/tests/lib/mkcerts.sh" "$T/pki" mail.test || fail "mkcerts.sh failed"

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$T"' EXIT

# fake NAME [ARGS...]: slowsmtp.py on a free port of 127.0.0.1; sets PORT_NAME.
fake() {
    local name=$1; shift
    "$PYTHON" "$TOP/tests/io/slowsmtp.py" --host 127.0.0.1 --port 0 --cert "$T/pki/good-chain.pem" \
        --key "$T/pki/good.key" --ready-file "$T/$name.port" "$@" >"$T/$name.log" 2>&1 &
    PIDS+=($!)
    local end=$(( $(date +%s) + 10 ))
    until [ -s "$T/$name.port" ]; do
        [ "$(date +%s)" -ge "$end" ] && fail "slowsmtp.py ($name) did not start: $(cat "$T/$name.log")"
        sleep 0.05
    done
    printf -v "PORT_$name" '%s' "$(cat "$T/$name.port")"
}
fake tls
fake notls --no-starttls
fake delay --every 1 --delay 0.5
fake plain --no-starttls
# A port where nothing listens.
PORT_closed=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# The library is preloaded directly (the wrapper has its own tests), so that
# CALLS_PRELOAD can come first.
timeout -k 5 180 env LD_PRELOAD="${CALLS_PRELOAD:+$CALLS_PRELOAD:}$SHIM_LIB" STARTTLS_SHIM_LOG="$T/shim.log" \
    STARTTLS_SHIM_CAFILE="$T/pki/ca.pem" STARTTLS_SHIM_POLICY=verify \
    STARTTLS_SHIM_PORTS="$PORT_tls/smtp,$PORT_notls/smtp,$PORT_delay/smtp,$PORT_closed/smtp" \
    "$CALLS" 127.0.0.1 "$PORT_tls" "$PORT_notls" "$PORT_delay" "$PORT_closed" "$PORT_plain" "$@"
rc=$?
if [ $rc -ne 0 ]; then
    echo "----- shim log (last 30 lines)" >&2
    tail -n 30 "$T/shim.log" >&2 2>/dev/null
fi
exit $rc
