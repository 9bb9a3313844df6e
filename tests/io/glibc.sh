#!/usr/bin/env bash
# tests/io/glibc.sh - roads out of a process that glibc takes by itself
# (issue 13 items 2, 3, 4, 20): dprintf and its _chk forms, stdio on stdout
# after dup2 (also wide), a FILE made by fdopen() before connect(), glibc's
# exported __write/__send/__connect, POSIX AIO, backtrace_symbols_fd,
# ioctl(FIONCLEX), posix_spawn dup2 actions, vfork children, a library
# loaded with RTLD_DEEPBIND, dlmopen into a new namespace, the shim's log
# line when stderr is the mail socket or another TCP socket, and bash's
# /dev/tcp builtins.  One PASS/FAIL line per case (tests/io/glibc.c says
# what each proves).  The server, tests/fakeserver/fakeserver.py playing
# smtp/good.scn, records every byte; besides the program's own verdict
# (the in-TLS reply came back, so the TLS stream was intact) each case's
# secret must be in the decrypted TLS bytes and nowhere in the cleartext or
# the raw stream, and no "starttls-shim:" log text may reach the server.
. "$(dirname "$0")/../lib/common.sh"

[ -f "$SHIM_LIB" ] || skip "$SHIM_LIB not built"
mk_tmpdir
PROG=$BUILD/tests/io/glibc
if [ ! -x "$PROG" ] || [ "$TOP/tests/io/glibc.c" -nt "$PROG" ]; then
    mkdir -p "$BUILD/tests/io"
    # shellcheck disable=SC2086
    ${CC:-cc} -O2 -g ${CALLS_CFLAGS:-} -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -D_FORTIFY_SOURCE=2 \
        -o "$PROG" "$TOP/tests/io/glibc.c" -lpthread || fail "could not build $PROG"
fi
# For the deepbind case: a library that calls connect() and write(), loaded
# with RTLD_DEEPBIND as PHP loads its extensions.
printf '%s\n' '#include <sys/socket.h>' '#include <unistd.h>' \
    'int deep_connect(int fd, const struct sockaddr *sa, socklen_t len) { return connect(fd, sa, len); }' \
    'ssize_t deep_write(int fd, const void *b, size_t n) { return write(fd, b, n); }' >"$T/deep.c"
${CC:-cc} -shared -fPIC -o "$T/libdeep.so" "$T/deep.c" || fail "could not build libdeep.so"
export GLIBC_DEEPLIB=$T/libdeep.so
"$TOP/tests/lib/mkcerts.sh" "$T/pki" mail.test >/dev/null || fail "mkcerts.sh failed"
PYBIN=$("$PYTHON" -c 'import sys; print(sys.executable)')
"$PYBIN" -S "$TOP/tests/fakeserver/fakeserver.py" "$TOP/tests/hostile/scenarios/smtp/good.scn" \
    --certs "$T/pki" --record "$T/rec" --count 0 --ready-file "$T/port" --max-time 60 \
    >"$T/server.out" 2>"$T/server.err" &
SPID=$!
trap 'kill $SPID 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
for ((i = 0; i < 100; i++)); do [ -s "$T/port" ] && break; sleep 0.05; done
[ -s "$T/port" ] || fail "fakeserver did not start: $(tail -2 "$T/server.err")"
PORT=$(cat "$T/port")
: >"$T/seen"
SHIM_ENV=(LD_PRELOAD="${CALLS_PRELOAD:+$CALLS_PRELOAD:}$SHIM_LIB" STARTTLS_SHIM_PORTS="$PORT/smtp"
    STARTTLS_SHIM_CAFILE="$T/pki/ca.pem" STARTTLS_SHIM_POLICY=verify STARTTLS_SHIM_TIMEOUT=5)

# judge NAME SECRET RC: the program's verdict, then the recordings of the
# connections it made (those not in $T/seen yet).
judge() {
    local name=$1 secret=$2 rc=$3 f tls=0 leak=""
    sleep 0.3    # the server records the client's last bytes
    for f in "$T"/rec/conn-*.tls; do
        [ -f "$f" ] && grep -qaF -- "$secret" "$f" && tls=1
    done
    for f in "$T"/rec/conn-*.pre "$T"/rec/conn-*.raw; do
        [ -f "$f" ] || continue
        grep -qxF -- "$f" "$T/seen" && continue
        echo "$f" >>"$T/seen"
        grep -qaF -- "$secret" "$f" && leak="$leak secret-in-$(basename "$f")"
        grep -qaF -- "starttls-shim" "$f" && leak="$leak log-line-in-$(basename "$f")"
    done
    if [ -z "$leak" ] && [ "$rc" -eq 77 ]; then
        echo "SKIP $name: $(grep -ah '^SKIP' "$T/$name.err" | head -1 | sed 's/^SKIP: //')"
    elif [ -n "$leak" ]; then
        echo "FAIL $name: cleartext reached the server:$leak"
    elif [ "$rc" -ne 0 ]; then
        echo "FAIL $name: $(grep -ah '^FAIL' "$T/$name.err" | head -1 | cut -c1-300) (exit $rc)"
        sed 's/^/    | /' "$T/$name.err" | tail -8 >&2
    elif [ $tls = 0 ] && [ "$name" != vfork-plain ]; then
        echo "FAIL $name: the secret never reached the server inside TLS"
    else
        echo "PASS $name"
    fi
}

for name in $("$PROG" --list); do
    secret=SECRET-$name-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
    timeout -k 2 25 env "${SHIM_ENV[@]}" "$PROG" "$name" 127.0.0.1 "$PORT" "$secret" \
        >"$T/$name.out" 2>"$T/$name.err" </dev/null
    judge "$name" "$secret" $?
done

# bash's /dev/tcp: `echo >&3` is a builtin writing through stdout's FILE
# after dup2(3, 1); `read <&3` reads fd 0 after dup2(3, 0).
secret=SECRET-bash-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
timeout -k 2 25 env "${SHIM_ENV[@]}" SECRET="$secret" PORT="$PORT" bash -c '
    exec 3<>/dev/tcp/127.0.0.1/$PORT || exit 3
    IFS= read -r greeting <&3 || exit 4
    echo "MAIL FROM:<$SECRET>" >&3
    printf "%s\r\n" "NOOP" >&3
    IFS= read -r reply <&3 || exit 5
    echo "$reply"' >"$T/bash-dev-tcp.out" 2>"$T/bash-dev-tcp.err" </dev/null
rc=$?
if [ $rc -eq 0 ] && ! grep -q INTLS-ACK "$T/bash-dev-tcp.out"; then
    echo "FAIL: reply '$(cat "$T/bash-dev-tcp.out")'" >"$T/bash-dev-tcp.err"; rc=1
fi
judge bash-dev-tcp "$secret" $rc
exit 0
