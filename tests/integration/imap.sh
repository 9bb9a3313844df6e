#!/usr/bin/env bash
# Unmodified IMAP clients (curl imap://, Python imaplib without starttls())
# against real Dovecot with ssl=required and no plaintext auth.
#  - without the shim: the server says LOGINDISABLED, curl gives up (no mechanism)
#    and imaplib's LOGIN is refused with PRIVACYREQUIRED;
#  - with the shim (wrapper and raw LD_PRELOAD): the login succeeds over TLS (Dovecot
#    logs it with "TLS", from 127.0.0.1 to 127.0.0.2) and the fetched message equals
#    the Maildir file byte for byte.
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
servers_start
W=$STS_DIR/work; mkdir -p "$W"

# A message to read, delivered with a genuine TLS client (no shim involved).
sts_seed "SEED-$$" "$W/seed.eml" 32 || fail "could not seed the mailbox"

cat > "$W/fetch.py" <<'PY'
# fetch.py USER PASS MARKER OUT: plain imaplib, no starttls(); fetch the
# message whose Subject holds MARKER into OUT.
import imaplib, sys
user, pw, marker, out = sys.argv[1:5]
try:
    m = imaplib.IMAP4("mail.test", 143, timeout=30)
    m.login(user, pw)
    m.select("INBOX", readonly=True)
    typ, data = m.uid("SEARCH", None, "SUBJECT", '"%s"' % marker)
    uids = data[0].split()
    if typ != "OK" or len(uids) != 1:
        raise RuntimeError("search for %s: %s %r" % (marker, typ, data))
    typ, data = m.uid("FETCH", uids[0], "(BODY.PEEK[])")
    open(out, "wb").write(data[0][1])
    m.logout()
except Exception as e:
    print("ERROR %s: %s" % (type(e).__name__, e))
    sys.exit(1)
print("FETCHED")
PY
tls_logins() { grep -c "imap-login: Info: Login: user=<$STS_USER>.*rip=127.0.0.1, lip=127.0.0.2.*, TLS" "$STS_DOVECOT_LOG"; }
# check_fetch CASE OUTFILE: the fetched file equals the stored message.
check_fetch() {
    local stored why
    stored=$(sts_find_delivered "SEED-$$")
    if why=$(sts_compare_fetched "$stored" "$2"); then case_pass "$1"; else case_fail "$1" "$why"; fi
}
CURL=(curl -sS -v --max-time 30 "imap://mail.test/INBOX/;UID=1" --user "$STS_USER:$STS_PASS")

# Without the shim.
sts_exec "${CURL[@]}" -o "$W/plain.msg" >"$W/plain.out" 2>&1; rc=$?
if [ $rc -ne 0 ] && grep -q '^< \* OK \[CAPABILITY .*STARTTLS LOGINDISABLED' "$W/plain.out" &&
   ! grep -qE '^> A[0-9]+ (LOGIN|AUTHENTICATE)' "$W/plain.out" && [ ! -s "$W/plain.msg" ]; then
    case_pass curl-imap-without-shim-refused
else
    case_fail curl-imap-without-shim-refused "curl rc=$rc: $(tail -3 "$W/plain.out" | tr '\n' '|')"
fi
sts_exec "$PYTHON" "$W/fetch.py" "$STS_USER" "$STS_PASS" "SEED-$$" "$W/plainpy.msg" >"$W/plainpy.out" 2>&1; rc=$?
if [ $rc -ne 0 ] && grep -q 'PRIVACYREQUIRED\] Plaintext authentication disallowed' "$W/plainpy.out"; then
    case_pass imaplib-without-shim-refused
else
    case_fail imaplib-without-shim-refused "rc=$rc: $(cat "$W/plainpy.out")"
fi
n=$(grep -c "imap-login: Info: Login: " "$STS_DOVECOT_LOG")
if [ "$n" -eq 0 ]; then case_pass imap-without-shim-no-login
else case_fail imap-without-shim-no-login "Dovecot logged $n logins"; fi

if ! have_shim; then
    for c in curl-imap-shim-fetched curl-imap-shim-tls-login imaplib-shim-fetched imaplib-preload-fetched \
             imaplib-shim-tls-logins; do
        case_skip $c "$SHIM_MISSING"
    done
else
    sts_shim STARTTLS_SHIM_LOG="$W/curl.log" -- "${CURL[@]}" -o "$W/curl.msg" >"$W/curl.out" 2>&1; rc=$?
    if [ $rc -ne 0 ]; then
        case_fail curl-imap-shim-fetched "curl rc=$rc: $(tail -3 "$W/curl.out" | tr '\n' '|')"; sts_dump "$W/curl.log"
    else
        check_fetch curl-imap-shim-fetched "$W/curl.msg"
    fi
    n=$(tls_logins)
    if [ "$n" -eq 1 ]; then case_pass curl-imap-shim-tls-login
    else case_fail curl-imap-shim-tls-login "expected 1 TLS login in Dovecot's log, found $n"; fi

    sts_shim STARTTLS_SHIM_LOG="$W/py.log" -- "$PYTHON" "$W/fetch.py" "$STS_USER" "$STS_PASS" "SEED-$$" "$W/py.msg" \
        >"$W/py.out" 2>&1 || { sts_dump "$W/py.log"; }
    if grep -q FETCHED "$W/py.out"; then check_fetch imaplib-shim-fetched "$W/py.msg"
    else case_fail imaplib-shim-fetched "$(cat "$W/py.out")"; fi

    sts_preload STARTTLS_SHIM_LOG="$W/pre.log" "$PYTHON" "$W/fetch.py" "$STS_USER" "$STS_PASS" "SEED-$$" "$W/pre.msg" \
        >"$W/pre.out" 2>&1 || { sts_dump "$W/pre.log"; }
    if grep -q FETCHED "$W/pre.out"; then check_fetch imaplib-preload-fetched "$W/pre.msg"
    else case_fail imaplib-preload-fetched "$(cat "$W/pre.out")"; fi
    n=$(tls_logins)
    if [ "$n" -eq 3 ]; then case_pass imaplib-shim-tls-logins
    else case_fail imaplib-shim-tls-logins "expected 3 TLS logins in Dovecot's log, found $n"; fi
fi
sts_finish
