#!/usr/bin/env bash
# A set-uid program must not trust the caller's CAs (issue 13 item 11).
# The loader ignores LD_PRELOAD for set-id programs; the shim reaches them
# through /etc/ld.so.preload, and then the environment is the caller's: the
# TLS backend reads SSL_CERT_FILE / SSL_CERT_DIR with secure_getenv.
# Setup, leaving the machine unchanged: a network namespace whose port 25
# is tests/io/backend-server.py presenting a certificate signed by an
# "attacker" CA (mkcerts.sh's other-ca); a private mount namespace where an
# overlay on /etc holds an ld.so.preload naming the shim; a copy of
# tests/io/backend-client owned by root, mode 4755, run as nobody.
#  - plain-cert-file / plain-cert-dir (controls): the same client without the
#    set-uid bit, SSL_CERT_FILE (or SSL_CERT_DIR) naming the attacker CA:
#    upgraded: the environment is honoured for an ordinary program, so the
#    attacker's setup is one that works;
#  - setuid-cert-file / setuid-cert-dir: the set-uid copy (AT_SECURE 1), same
#    environment: refused, "certificate not trusted".
. "$(dirname "$0")/../lib/common.sh"
need_root
have_shim 2>/dev/null || [ -f "$SHIM_LIB" ] || skip "build/libstarttls-shim.so not built"
command -v setpriv >/dev/null && command -v unshare >/dev/null || skip "needs setpriv and unshare (util-linux)"
mk_tmpdir
chmod 755 "$T"

CLIENT=$BUILD/tests/io/backend-client
mkdir -p "$BUILD/tests/io"
if [ ! -x "$CLIENT" ] || [ "$TOP/tests/io/backend-client.c" -nt "$CLIENT" ]; then
    ${CC:-cc} -O2 -g -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -o "$CLIENT" \
        "$TOP/tests/io/backend-client.c" -ldl -lpthread || fail "could not build $CLIENT"
fi
"$TOP/tests/lib/mkcerts.sh" "$T/pki" mail.test || fail "mkcerts.sh failed"
mkdir -p "$T/attacker-dir" "$T/bin" "$T/lib" "$T/ovl/up" "$T/ovl/work"
cp "$T/pki/other-ca.pem" "$T/attacker-dir/"
openssl rehash "$T/attacker-dir" 2>/dev/null || c_rehash "$T/attacker-dir" >/dev/null 2>&1 ||
    fail "cannot hash $T/attacker-dir"
cp "$SHIM_LIB" "$(dirname "$SHIM_LIB")/libstarttls-shim-tls.so" "$T/lib/"
cp "$CLIENT" "$T/bin/client-plain"
cp "$CLIENT" "$T/bin/client-suid"
chown root:root "$T/bin/client-suid" && chmod 4755 "$T/bin/client-suid"
chmod -R a+rX "$T"

NS=sts-tls-$$
SRV=
cleanup() {
    [ -n "$SRV" ] && kill "$SRV" 2>/dev/null
    wait 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
ip netns add "$NS" 2>/dev/null || skip "cannot create a network namespace"
ip -n "$NS" link set lo up
ip netns exec "$NS" "$PYTHON" "$TOP/tests/io/backend-server.py" --host 127.0.0.1 --port 25 \
    --cert "$T/pki/unknownca.pem" --key "$T/pki/unknownca.key" --ready-file "$T/ready" >"$T/server.log" 2>&1 &
SRV=$!
for _ in $(seq 100); do [ -s "$T/ready" ] && break; sleep 0.1; done
[ -s "$T/ready" ] || fail "backend-server.py did not start: $(cat "$T/server.log")"

# run NAME CLIENT VAR=VALUE: CLIENT as nobody, in the namespace, the shim
# preloaded by /etc/ld.so.preload in a private mount namespace.
run() {
    local name=$1 client=$2 env=$3
    timeout -k 5 40 ip netns exec "$NS" unshare -m --propagation private sh -c '
        mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/ovl/up,workdir=$1/ovl/work" /etc || exit 70
        echo "$1/lib/libstarttls-shim.so" > /etc/ld.so.preload || exit 70
        exec setpriv --reuid=nobody --regid=nogroup --clear-groups env -u LD_PRELOAD "$3" "$2" smtp 127.0.0.1 25
    ' sh "$T" "$client" "$env" >"$T/$name.out" 2>"$T/$name.err"
}

run plain-cert-file "$T/bin/client-plain" SSL_CERT_FILE="$T/pki/other-ca.pem"
[ $? -eq 70 ] && skip "cannot overlay /etc in a private mount namespace: $(cat "$T/plain-cert-file.err")"
run plain-cert-dir "$T/bin/client-plain" SSL_CERT_DIR="$T/attacker-dir"
run setuid-cert-file "$T/bin/client-suid" SSL_CERT_FILE="$T/pki/other-ca.pem"
run setuid-cert-dir "$T/bin/client-suid" SSL_CERT_DIR="$T/attacker-dir"

FAILED=0
has() { grep -qF -- "$2" "$T/$1.out"; }
show() { echo "out: $(tr '\n' '|' < "$T/$1.out" | head -c 300) err: $(tr '\n' '|' < "$T/$1.err" | head -c 300)"; }
for c in plain-cert-file plain-cert-dir; do
    if has $c "AT_SECURE 0" && has $c "TLS by starttls-shim" && grep -qx DONE "$T/$c.out"; then
        echo "PASS backend/$c"
    else
        FAILED=1; echo "FAIL backend/$c: the control run was not upgraded with the CA from the environment: $(show $c)"
    fi
done
for c in setuid-cert-file setuid-cert-dir; do
    if ! has $c "AT_SECURE 1"; then
        FAILED=1; echo "FAIL backend/$c: the set-uid copy did not run set-uid: $(show $c)"
    elif has $c "GREETING 421" && has $c "certificate not trusted" && ! grep -qx DONE "$T/$c.out"; then
        echo "PASS backend/$c"
    else
        FAILED=1; echo "FAIL backend/$c: a set-uid program trusted the caller's CA: $(show $c)"
    fi
done
exit $FAILED
