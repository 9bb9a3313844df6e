#!/usr/bin/env bash
# tests/io/stress.sh - the data engine under stress (tests/io/stress.c),
# under the shim, against tests/io/sink.py on 127.0.0.1, which records every
# byte it gets inside TLS and can stop reading.  One PASS/FAIL/SKIP line per
# check:
#   retry-shorter-after-eagain   non-blocking writes, retried after EAGAIN
#                                with other lengths and other bytes: the
#                                server gets exactly the bytes reported
#                                written (send(2)'s contract)
#   splice-slow-reader           pipe -> splice -> non-blocking socket to a
#                                server that pauses: no byte lost
#   small-stack-sendfile-splice  both from a thread with a 32 KiB stack
#   close/fork/exit-held-bounded bytes held back (MSG_MORE) behind a full
#                                socket, server not reading: close(), fork()
#                                and exit() return within STARTTLS_SHIM_TIMEOUT
#                                (3 s here) and log what they dropped
#   signal-handler-write         a SIGALRM handler writes while the thread is
#                                inside a big write: no deadlock, EAGAIN at
#                                worst, byte counts agree
#   signal-handler-close         a SIGALRM handler closes the socket while
#                                the thread is inside a big write (20 times):
#                                no deadlock, no crash, the write fails
#   fork-loop-locks              2,000 forks (STRESS_FORKS) while threads hammer epoll_ctl,
#                                poll, writes and new connections: no child
#                                hangs
#   epoll-pwait2                 the program's data word, the shim's truth
#   select-fd-above-fd-setsize   an fd of ours at 1500 in a big fd_set
#   select-timeout-over-24-days  a 49.7-day timeout does not wrap to 0.7 s
. "$(dirname "$0")/../lib/common.sh"

[ -f "$SHIM_LIB" ] || skip "$SHIM_LIB not built"
mk_tmpdir

STRESS=$BUILD/tests/io/stress
if [ ! -x "$STRESS" ] || [ "$TOP/tests/io/stress.c" -nt "$STRESS" ]; then
    mkdir -p "$BUILD/tests/io"
    # shellcheck disable=SC2086
    ${CC:-cc} -O2 -g ${CALLS_CFLAGS:-} -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -o "$STRESS" \
        "$TOP/tests/io/stress.c" -lpthread || fail "could not build $STRESS"
fi

"$TOP/tests/lib/mkcerts.sh" "$T/pki" mail.test || fail "mkcerts.sh failed"
mkdir -p "$T/got"
"$PYTHON" "$TOP/tests/io/sink.py" --host 127.0.0.1 --port 0 --cert "$T/pki/good-chain.pem" \
    --key "$T/pki/good.key" --dir "$T/got" --ready-file "$T/port" >"$T/sink.log" 2>&1 &
SINK=$!
trap 'kill $SINK 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
end=$(( $(date +%s) + 10 ))
until [ -s "$T/port" ]; do
    [ "$(date +%s)" -ge "$end" ] && fail "sink.py did not start: $(cat "$T/sink.log")"
    sleep 0.05
done
PORT=$(cat "$T/port")

TIMEOUT_S=3
timeout -k 5 900 env LD_PRELOAD="${CALLS_PRELOAD:+$CALLS_PRELOAD:}$SHIM_LIB" STARTTLS_SHIM_LOG="$T/shim.log" \
    STARTTLS_SHIM_CAFILE="$T/pki/ca.pem" STARTTLS_SHIM_POLICY=verify STARTTLS_SHIM_TIMEOUT=$TIMEOUT_S \
    STARTTLS_SHIM_PORTS="$PORT/smtp" \
    "$STRESS" 127.0.0.1 "$PORT" "$T/got" "$T/shim.log" "$TIMEOUT_S" "$@"
rc=$?
if [ $rc -ne 0 ]; then
    echo "----- shim log (last 30 lines)" >&2
    tail -n 30 "$T/shim.log" >&2 2>/dev/null
    echo "----- sink log" >&2
    tail -n 30 "$T/sink.log" >&2 2>/dev/null
fi
exit $rc
