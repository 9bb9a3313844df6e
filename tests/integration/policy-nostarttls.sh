#!/usr/bin/env bash
# A real Postfix port that does not offer STARTTLS (2525, smtpd_tls_security_level
# = none, plaintext mail accepted), reached by unmodified curl / smtplib through
# the shim with STARTTLS_SHIM_PORTS=2525/smtp:
#  - verify (default) and encrypt: refused with 421 "STARTTLS not offered", logged,
#    nothing delivered, none of the program's commands reached Postfix;
#  - may: the connection is left plaintext and works exactly as without the shim
#    (delivered byte for byte, Received says plain ESMTP), with a warning logged;
#  - may on port 25, where STARTTLS is offered: TLS is used (ESMTPS).
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
have_shim || skip "$SHIM_MISSING"
servers_start
W=$STS_DIR/work; mkdir -p "$W"
PORTS=STARTTLS_SHIM_PORTS=25/smtp,2525/smtp

smtp_curl() { # smtp_curl OUT PORT MSG PREFIX...
    local out=$1 port=$2 msg=$3; shift 3
    "$@" curl -sS -v --max-time 30 "smtp://mail.test:$port" --mail-from sender@mail.test \
        --mail-rcpt "$STS_USER@mail.test" -T "$msg" >"$out" 2>&1
}
LOGRE='^starttls-shim: (mail\.test|127\.0\.0\.2):2525 policy'

for policy in verify encrypt; do
    sts_message "$W/$policy.eml" "REFUSED-$policy-$$"
    mark=$(sts_log_mark "$STS_POSTFIX_LOG")
    if [ $policy = verify ]; then    # the default: no option, no variable
        smtp_curl "$W/$policy.out" 2525 "$W/$policy.eml" sts_shim "$PORTS" STARTTLS_SHIM_LOG="$W/$policy.log" --
    else                             # the variable instead of --policy
        smtp_curl "$W/$policy.out" 2525 "$W/$policy.eml" \
            sts_shim "$PORTS" STARTTLS_SHIM_POLICY=$policy STARTTLS_SHIM_LOG="$W/$policy.log" --
    fi
    rc=$?
    if [ $rc -ne 0 ] && grep -q '^< 421 4.7.0 starttls-shim: STARTTLS not offered' "$W/$policy.out" &&
       ! grep -q '^< 220 .*test bed' "$W/$policy.out"; then
        case_pass nostarttls-$policy-refused
    else
        case_fail nostarttls-$policy-refused "curl rc=$rc: $(grep -E '^[<*] ' "$W/$policy.out" | tail -4)"
    fi
    if grep -qE "$LOGRE=$policy: STARTTLS not offered" "$W/$policy.log"; then
        case_pass nostarttls-$policy-logged
    else
        case_fail nostarttls-$policy-logged "log: $(cat "$W/$policy.log" 2>/dev/null)"
    fi
    l=$(sts_wait_log "$STS_POSTFIX_LOG" "$mark" 'postfix/notls/smtpd\[[0-9]+\]: disconnect from')
    if [ -n "$l" ] && ! [[ $l =~ (mail|rcpt|data)= ]]; then
        case_pass nostarttls-$policy-no-commands-sent
    else
        case_fail nostarttls-$policy-no-commands-sent "Postfix: ${l:-no disconnect line}"
    fi
done

# smtplib under verify: the 421 arrives as the greeting.
sts_shim "$PORTS" STARTTLS_SHIM_LOG="$W/py.log" -- "$PYTHON" -c '
import smtplib
try:
    smtplib.SMTP("mail.test", 2525, timeout=30)
except smtplib.SMTPConnectError as e:
    print("CONNECT-ERROR", e.smtp_code, e.smtp_error.decode())
' >"$W/py.out" 2>&1
if grep -q '^CONNECT-ERROR 421 4.7.0 starttls-shim: STARTTLS not offered' "$W/py.out"; then
    case_pass nostarttls-smtplib-verify-421
else
    case_fail nostarttls-smtplib-verify-421 "$(cat "$W/py.out")"
fi

# may: plaintext, exactly as without the shim, and a warning.
sts_message "$W/may.eml" "MAY-$$"
smtp_curl "$W/may.out" 2525 "$W/may.eml" sts_shim "$PORTS" STARTTLS_SHIM_LOG="$W/may.log" --policy may --; rc=$?
if grep -q '^< 220 mail.test ESMTP starttls-shim test bed' "$W/may.out"; then
    case_pass nostarttls-may-real-greeting
else
    case_fail nostarttls-may-real-greeting "$(grep '^< 220' "$W/may.out")"
fi
sts_sent_check nostarttls-may $rc "$W/may.out" "$W/may.eml" "MAY-$$" ESMTP
if grep -qE "$LOGRE=may: .*STARTTLS not offered" "$W/may.log"; then
    case_pass nostarttls-may-warning-logged
else
    case_fail nostarttls-may-warning-logged "log: $(cat "$W/may.log" 2>/dev/null)"
fi

# may where STARTTLS is offered: upgraded.
sts_message "$W/may25.eml" "MAY25-$$"
smtp_curl "$W/may25.out" 25 "$W/may25.eml" sts_shim "$PORTS" STARTTLS_SHIM_LOG="$W/may25.log" --policy may --
sts_sent_check may-25 $? "$W/may25.out" "$W/may25.eml" "MAY25-$$" ESMTPS

if [ -z "$(sts_find_delivered "REFUSED-verify-$$")$(sts_find_delivered "REFUSED-encrypt-$$")" ]; then
    case_pass nostarttls-refused-nothing-delivered
else
    case_fail nostarttls-refused-nothing-delivered "a refused message was delivered"
fi
sts_finish
