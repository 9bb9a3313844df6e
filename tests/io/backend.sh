#!/usr/bin/env bash
# tests/io/backend.sh - the TLS backend keeps to itself (issue 13 items 12,
# 15 and 23, and the end of a TLS stream).  Small C programs under the shim
# against tests/io/backend-server.py on 127.0.0.1 (no root, seconds):
#  - lookalike-exported: the program exports unversioned OpenSSL names that
#    abort (a bundled OpenSSL); the backend must not call them: upgraded.
#  - lookalike-gnutls: the program dlopen()s GnuTLS's OpenSSL compatibility
#    library RTLD_GLOBAL first (what sSMTP links): upgraded, no crash.
#  - owntls-config: OPENSSL_CONF says MinProtocol = TLSv1.3; after one mail
#    connection through the shim, the program's own TLS to a TLS 1.2-only
#    server must still fail (the shim loaded its backend without disabling
#    the program's configuration).  Controls: the same without the shim
#    fails too, and without the policy it succeeds (TLS 1.2).
#  - eof-forged-fin: the server ends TCP without close_notify: read() gives
#    -1 ECONNRESET, never a clean end of file (0).
#  - eof-close-notify: after close_notify, read() gives 0.
#  - eof-after-halfclose: the program shut its write side first, then the
#    server ended TCP without close_notify (as servers do after a client's
#    FIN): read() gives 0, a clean end.
#  - fork-during-load: a fork() while another thread is inside the
#    backend's first load (held there by an SSL_CERT_FILE that is a FIFO):
#    the child's mail connection finishes (refused) instead of hanging on
#    the load lock; the thread then finishes its upgrade.
. "$(dirname "$0")/../lib/common.sh"

[ -f "$SHIM_LIB" ] || skip "build/libstarttls-shim.so not built"
mk_tmpdir

# BACKEND_CFLAGS (e.g. sanitizers) and BACKEND_PRELOAD (a library to preload
# ahead of the shim, e.g. libasan) are for tests/sanitize.sh, as for calls.sh.
OUT=$BUILD/tests/io
mkdir -p "$OUT"
build() { # build NAME SOURCE FLAGS...
    local name=$1 src=$2; shift 2
    if [ ! -x "$OUT/$name" ] || [ "$src" -nt "$OUT/$name" ]; then
        # shellcheck disable=SC2086
        ${CC:-cc} -O2 -g ${BACKEND_CFLAGS:-} -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -o "$OUT/$name" "$src" "$@" ||
            fail "could not build $name"
    fi
}
build backend-client "$TOP/tests/io/backend-client.c" -ldl -lpthread
build backend-client-lookalike "$TOP/tests/io/backend-client.c" -DLOOKALIKE -rdynamic -ldl -lpthread
build backend-owntls "$TOP/tests/io/backend-owntls.c" $(pkg-config --cflags --libs openssl 2>/dev/null || echo -lssl -lcrypto)

"$TOP/tests/lib/mkcerts.sh" "$T/pki" mail.test || fail "mkcerts.sh failed"
SRV=
trap '[ -n "$SRV" ] && kill "$SRV" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
"$PYTHON" "$TOP/tests/io/backend-server.py" --port 0 --tls12-port 0 --cert "$T/pki/good.pem" \
    --key "$T/pki/good.key" --ready-file "$T/ports" >"$T/server.log" 2>&1 &
SRV=$!
for _ in $(seq 100); do [ -s "$T/ports" ] && break; sleep 0.1; done
[ -s "$T/ports" ] || fail "backend-server.py did not start: $(cat "$T/server.log")"
read -r PORT PORT12 < "$T/ports"

FAILED=0
pass() { echo "PASS backend/$1"; }
bad() { echo "FAIL backend/$1: $2" | tr '\n' '|' | sed 's/|$/\n/'; FAILED=1; }
# shim NAME CMD...: CMD under the shim, watching PORT; output in $T/NAME.out, log in $T/NAME.log
shim() {
    local name=$1; shift
    timeout -k 2 30 env LD_PRELOAD="${BACKEND_PRELOAD:+$BACKEND_PRELOAD:}$SHIM_LIB" STARTTLS_SHIM_PORTS="$PORT/smtp" \
        STARTTLS_SHIM_CAFILE="$T/pki/ca.pem" STARTTLS_SHIM_LOG="$T/$name.log" "$@" >"$T/$name.out" 2>"$T/$name.err"
}
has() { grep -qF -- "$2" "$T/$1.out"; }
show() { echo "rc=$1; out: $(head -c 300 "$T/$2.out"); err: $(head -c 200 "$T/$2.err"); log: $(head -c 300 "$T/$2.log" 2>/dev/null)"; }

UPGRADED="TLS by starttls-shim"

shim lookalike-exported "$OUT/backend-client-lookalike" smtp 127.0.0.1 "$PORT"; rc=$?
if [ $rc -eq 0 ] && has lookalike-exported "$UPGRADED" && grep -qx DONE "$T/lookalike-exported.out"; then
    pass lookalike-exported
else
    bad lookalike-exported "$(show $rc lookalike-exported)"
fi

GNUTLS_COMPAT=$(ldconfig -p 2>/dev/null | awk '/libgnutls-openssl\.so\.27 / { print $NF; exit }')
if [ -z "$GNUTLS_COMPAT" ]; then
    echo "SKIP backend/lookalike-gnutls: libgnutls-openssl.so.27 not installed (apt-get install libgnutls-openssl27)"
else
    shim lookalike-gnutls "$OUT/backend-client" dlopen "$GNUTLS_COMPAT" 127.0.0.1 "$PORT"; rc=$?
    if [ $rc -eq 0 ] && has lookalike-gnutls "$UPGRADED" && grep -qx DONE "$T/lookalike-gnutls.out"; then
        pass lookalike-gnutls
    else
        bad lookalike-gnutls "$(show $rc lookalike-gnutls)"
    fi
fi

cat > "$T/tls13.cnf" <<'EOF'
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
EOF
shim owntls-config env OPENSSL_CONF="$T/tls13.cnf" "$OUT/backend-owntls" 127.0.0.1 "$PORT" "$PORT12"; rc=$?
timeout 30 env OPENSSL_CONF="$T/tls13.cnf" "$OUT/backend-owntls" 127.0.0.1 "$PORT" "$PORT12" \
    >"$T/noshim.out" 2>&1
shim owntls-nopolicy "$OUT/backend-owntls" 127.0.0.1 "$PORT" "$PORT12"
if ! grep -q "OWNTLS failed" "$T/noshim.out"; then
    bad owntls-config "control: without the shim the TLS 1.3 policy did not hold: $(cat "$T/noshim.out")"
elif ! has owntls-nopolicy "OWNTLS ok TLSv1.2"; then
    bad owntls-config "control: without the policy the TLS 1.2 server was not reached: $(show - owntls-nopolicy)"
elif [ $rc -eq 0 ] && has owntls-config "$UPGRADED" && has owntls-config "OWNTLS failed"; then
    pass owntls-config
else
    bad owntls-config "after a mail connection through the shim the program's MinProtocol = TLSv1.3 no longer held: $(show $rc owntls-config)"
fi

shim eof-forged-fin "$OUT/backend-client" eof 127.0.0.1 "$PORT" CUT; rc=$?
if [ $rc -eq 0 ] && has eof-forged-fin "$UPGRADED" && has eof-forged-fin "END error ECONNRESET"; then
    pass eof-forged-fin
else
    bad eof-forged-fin "a TCP end without close_notify must read as ECONNRESET: $(show $rc eof-forged-fin)"
fi
shim eof-close-notify "$OUT/backend-client" eof 127.0.0.1 "$PORT" BYE; rc=$?
if [ $rc -eq 0 ] && has eof-close-notify "$UPGRADED" && has eof-close-notify "END eof"; then
    pass eof-close-notify
else
    bad eof-close-notify "$(show $rc eof-close-notify)"
fi

shim eof-after-halfclose "$OUT/backend-client" halfclose 127.0.0.1 "$PORT" LATE; rc=$?
if [ $rc -eq 0 ] && has eof-after-halfclose "$UPGRADED" && has eof-after-halfclose "END eof"; then
    pass eof-after-halfclose
else
    bad eof-after-halfclose "after the program's own shutdown(SHUT_WR), a FIN without close_notify is the end: $(show $rc eof-after-halfclose)"
fi

mkfifo "$T/certfifo" || fail "mkfifo"
shim fork-during-load "$OUT/backend-client" fork 127.0.0.1 "$PORT" "$T/certfifo" "$T/pki/ca.pem"; rc=$?
if has fork-during-load "CHILD finished" && ! has fork-during-load "CHILD hung" && has fork-during-load "THREAD done"; then
    pass fork-during-load
else
    bad fork-during-load "$(show $rc fork-during-load)"
fi

exit $FAILED
