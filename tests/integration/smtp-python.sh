#!/usr/bin/env bash
# Unmodified Python smtplib (never calls starttls()) against real Postfix.
#  - without the shim: port 25 refuses MAIL with 530, port 587 offers no AUTH;
#  - with the shim (wrapper and raw LD_PRELOAD): delivered byte for byte over TLS,
#    with login() on 587.
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
servers_start
W=$STS_DIR/work; mkdir -p "$W"

cat > "$W/send.py" <<'PY'
# send.py PORT MESSAGE-FILE RCPT [USER PASS]: plain smtplib, no starttls().
import smtplib, sys
port, path, rcpt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    with smtplib.SMTP("mail.test", port, local_hostname="client.test", timeout=30) as s:
        if len(sys.argv) > 5:
            s.login(sys.argv[4], sys.argv[5])
        s.sendmail("sender@mail.test", [rcpt], open(path, "rb").read())
except Exception as e:
    print("ERROR %s: %s" % (type(e).__name__, e))
    sys.exit(1)
print("SENT")
PY
send() { # send OUT PORT MSG [USER PASS]
    local out=$1; shift
    "${RUN[@]}" "$PYTHON" "$W/send.py" "$1" "$2" "$STS_USER@mail.test" "${@:3}" >"$out" 2>&1
}

RUN=(sts_exec)
sts_message "$W/p25.eml" "REFUSED25-$$"
send "$W/p25.out" 25 "$W/p25.eml"; rc=$?
if [ $rc -ne 0 ] && grep -q "ERROR SMTPSenderRefused: (530, b'5.7.0 Must issue a STARTTLS command first'" "$W/p25.out"; then
    case_pass smtplib-25-without-shim-refused
else
    case_fail smtplib-25-without-shim-refused "rc=$rc: $(cat "$W/p25.out")"
fi
sts_message "$W/p587.eml" "REFUSED587-$$"
send "$W/p587.out" 587 "$W/p587.eml" "$STS_USER" "$STS_PASS"; rc=$?
if [ $rc -ne 0 ] && grep -q 'ERROR SMTPNotSupportedError: SMTP AUTH extension not supported' "$W/p587.out"; then
    case_pass smtplib-587-without-shim-no-auth
else
    case_fail smtplib-587-without-shim-no-auth "rc=$rc: $(cat "$W/p587.out")"
fi

if ! have_shim; then
    for c in smtplib-25-shim-delivered smtplib-25-shim-esmtps smtplib-587-shim-login-delivered \
             smtplib-587-shim-login-esmtpsa smtplib-587-preload-login-delivered smtplib-587-preload-login-esmtpsa; do
        case_skip $c "$SHIM_MISSING"
    done
else
    RUN=(sts_shim STARTTLS_SHIM_LOG="$W/s25.log" --)
    sts_message "$W/s25.eml" "SHIM25-$$"
    send "$W/s25.out" 25 "$W/s25.eml"
    sts_sent_check smtplib-25-shim $? "$W/s25.out" "$W/s25.eml" "SHIM25-$$" ESMTPS || sts_dump "$W/s25.log"

    RUN=(sts_shim STARTTLS_SHIM_LOG="$W/s587.log" --)
    sts_message "$W/s587.eml" "SHIM587-$$" 64
    send "$W/s587.out" 587 "$W/s587.eml" "$STS_USER" "$STS_PASS"
    sts_sent_check smtplib-587-shim-login $? "$W/s587.out" "$W/s587.eml" "SHIM587-$$" ESMTPSA || sts_dump "$W/s587.log"

    RUN=(sts_preload STARTTLS_SHIM_LOG="$W/pre.log")
    sts_message "$W/pre.eml" "PRELOAD587-$$"
    send "$W/pre.out" 587 "$W/pre.eml" "$STS_USER" "$STS_PASS"
    sts_sent_check smtplib-587-preload-login $? "$W/pre.out" "$W/pre.eml" "PRELOAD587-$$" ESMTPSA ||
        sts_dump "$W/pre.log"
fi

[ -n "$(sts_find_delivered "SHIM25-$$")" ] || sts_wait_absent 2 "REFUSED25-$$" "REFUSED587-$$"
if [ -z "$(sts_find_delivered "REFUSED25-$$")$(sts_find_delivered "REFUSED587-$$")" ]; then
    case_pass smtplib-without-shim-nothing-delivered
else
    case_fail smtplib-without-shim-nothing-delivered "a message sent without the shim was delivered"
fi
sts_finish
