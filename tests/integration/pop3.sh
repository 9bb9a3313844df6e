#!/usr/bin/env bash
# Unmodified POP3 clients (curl pop3://, Python poplib without stls()) against
# real Dovecot with ssl=required and no plaintext auth.
#  - without the shim: curl finds no usable mechanism, poplib's USER/PASS is
#    refused ("-ERR [AUTH] Plaintext authentication disallowed");
#  - with the shim (wrapper and raw LD_PRELOAD): login over TLS, and RETR gives
#    the Maildir file byte for byte.
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
servers_start
W=$STS_DIR/work; mkdir -p "$W"

sts_seed "SEED-$$" "$W/seed.eml" 32 || fail "could not seed the mailbox"

cat > "$W/retr.py" <<'PY'
# retr.py USER PASS OUT: plain poplib, no stls(); RETR message 1 into OUT.
import poplib, sys
user, pw, out = sys.argv[1:4]
try:
    p = poplib.POP3("mail.test", 110, timeout=30)
    p.user(user)
    p.pass_(pw)
    resp, lines, octets = p.retr(1)
    open(out, "wb").write(b"".join(l + b"\r\n" for l in lines))
    p.quit()
except Exception as e:
    print("ERROR %s: %s" % (type(e).__name__, e))
    sys.exit(1)
print("RETRIEVED")
PY
tls_logins() { grep -c "pop3-login: Info: Login: user=<$STS_USER>.*rip=127.0.0.1, lip=127.0.0.2.*, TLS" "$STS_DOVECOT_LOG"; }
check_retr() {
    local stored why
    stored=$(sts_find_delivered "SEED-$$")
    if why=$(sts_compare_fetched "$stored" "$2"); then case_pass "$1"; else case_fail "$1" "$why"; fi
}
CURL=(curl -sS -v --max-time 30 "pop3://mail.test/1" --user "$STS_USER:$STS_PASS")

sts_exec "${CURL[@]}" -o "$W/plain.msg" >"$W/plain.out" 2>&1; rc=$?
if [ $rc -ne 0 ] && grep -q '^< STLS' "$W/plain.out" &&
   ! grep -qE '^> (USER|PASS|AUTH|APOP)' "$W/plain.out" && [ ! -s "$W/plain.msg" ]; then
    case_pass curl-pop3-without-shim-refused
else
    case_fail curl-pop3-without-shim-refused "curl rc=$rc: $(tail -3 "$W/plain.out")"
fi
sts_exec "$PYTHON" "$W/retr.py" "$STS_USER" "$STS_PASS" "$W/plainpy.msg" >"$W/plainpy.out" 2>&1; rc=$?
if [ $rc -ne 0 ] && grep -q -- '-ERR \[AUTH\] Plaintext authentication disallowed' "$W/plainpy.out"; then
    case_pass poplib-without-shim-refused
else
    case_fail poplib-without-shim-refused "rc=$rc: $(cat "$W/plainpy.out")"
fi
n=$(grep -c "pop3-login: Info: Login: " "$STS_DOVECOT_LOG")
if [ "$n" -eq 0 ]; then case_pass pop3-without-shim-no-login
else case_fail pop3-without-shim-no-login "Dovecot logged $n logins"; fi

if ! have_shim; then
    for c in curl-pop3-shim-retrieved poplib-shim-retrieved poplib-preload-retrieved pop3-shim-tls-logins; do
        case_skip $c "$SHIM_MISSING"
    done
else
    sts_shim STARTTLS_SHIM_LOG="$W/curl.log" -- "${CURL[@]}" -o "$W/curl.msg" >"$W/curl.out" 2>&1; rc=$?
    if [ $rc -ne 0 ]; then
        case_fail curl-pop3-shim-retrieved "curl rc=$rc: $(tail -3 "$W/curl.out")"; sts_dump "$W/curl.log"
    else
        check_retr curl-pop3-shim-retrieved "$W/curl.msg"
    fi
    sts_shim STARTTLS_SHIM_LOG="$W/py.log" -- "$PYTHON" "$W/retr.py" "$STS_USER" "$STS_PASS" "$W/py.msg" \
        >"$W/py.out" 2>&1 || sts_dump "$W/py.log"
    if grep -q RETRIEVED "$W/py.out"; then check_retr poplib-shim-retrieved "$W/py.msg"
    else case_fail poplib-shim-retrieved "$(cat "$W/py.out")"; fi
    sts_preload STARTTLS_SHIM_LOG="$W/pre.log" "$PYTHON" "$W/retr.py" "$STS_USER" "$STS_PASS" "$W/pre.msg" \
        >"$W/pre.out" 2>&1 || sts_dump "$W/pre.log"
    if grep -q RETRIEVED "$W/pre.out"; then check_retr poplib-preload-retrieved "$W/pre.msg"
    else case_fail poplib-preload-retrieved "$(cat "$W/pre.out")"; fi
    n=$(tls_logins)
    if [ "$n" -eq 3 ]; then case_pass pop3-shim-tls-logins
    else case_fail pop3-shim-tls-logins "expected 3 TLS logins in Dovecot's log, found $n"; fi
fi
sts_finish
