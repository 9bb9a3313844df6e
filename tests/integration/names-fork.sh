#!/usr/bin/env bash
# The shim's names lock across fork() (issue 13 item 15, names part): four
# threads keep resolving "localhost" (each lookup takes the lock) while the
# main thread forks 500 children; each child connects to a watched port on
# 127.0.0.1 where nothing listens, which looks the names up under the same
# lock.  A child forked while a thread held it hung forever on the old shim
# (about 1 fork in 60); init.c's fork handlers now take it before fork() and
# reset it in the child.  No root, no servers: loopback only.
. "$(dirname "$0")/../lib/common.sh"
[ -f "$SHIM_LIB" ] || skip "$SHIM_LIB not built"
getent hosts localhost >/dev/null || skip "localhost does not resolve here"
mk_tmpdir
CLIENT=$BUILD/tests/io/names-client
if [ ! -x "$CLIENT" ] || [ "$TOP/tests/io/names-client.c" -nt "$CLIENT" ]; then
    mkdir -p "$BUILD/tests/io"
    ${CC:-cc} -O2 -Wall -Wextra -Werror -std=gnu11 -o "$CLIENT" "$TOP/tests/io/names-client.c" -lpthread ||
        fail "could not build $CLIENT"
fi
# A port nothing listens on: bind one, note it, close it.
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
out=$(timeout -k 5 300 env LD_PRELOAD="$SHIM_LIB" STARTTLS_SHIM_PORTS="$port/smtp" STARTTLS_SHIM_LOG="$T/shim.log" \
    "$CLIENT" fork-loop "$port" 500 2>&1)
rc=$?
[ $rc -eq 0 ] && [ "$out" = "hung 0 of 500" ] || fail "fork loop: rc=$rc: $out"
exit 0
