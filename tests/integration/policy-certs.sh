#!/usr/bin/env bash
# Certificate policy against real servers. Postfix offers STARTTLS on extra ports
# with bad certificates (2501 self-signed, 2502 unknown CA, 2503 expired, 2504 wrong
# name); an unmodified curl goes through the shim with STARTTLS_SHIM_PORTS=PORT/smtp.
#  - policy verify (the default): curl sees the shim's 421 with the reason, the log has
#    "starttls-shim: HOST:PORT policy=verify: REASON", nothing is delivered, and none of
#    curl's commands reached Postfix (its disconnect line counts no MAIL/RCPT/DATA);
#  - policy encrypt: delivered byte for byte over TLS.
# Also: the good certificate without the test CA (no --cafile) is refused under verify
# for SMTP, IMAP and POP3 (with the protocol's own refusal: 421 / * BYE / -ERR) and
# accepted under encrypt; Python smtplib sees the 421 as an SMTPConnectError.
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
have_shim || skip "$SHIM_MISSING"
servers_start
W=$STS_DIR/work; mkdir -p "$W"

# smtp_curl OUT PORT MSG PREFIX...: curl to PORT, run by the command PREFIX.
smtp_curl() {
    local out=$1 port=$2 msg=$3; shift 3
    "$@" curl -sS -v --max-time 30 "smtp://mail.test:$port" --mail-from sender@mail.test \
        --mail-rcpt "$STS_USER@mail.test" -T "$msg" >"$out" 2>&1
}
# refused CASE RC OUT SHIMLOG PORT POLICY REASON REPLY-REGEX: the checks of a refusal.
refused() {
    local name=$1 rc=$2 out=$3 log=$4 port=$5 policy=$6 reason=$7 reply=$8
    if [ "$rc" -eq 0 ]; then case_fail "$name" "client succeeded (rc 0)"; return 1; fi
    if ! grep -qE -- "$reply" "$out"; then
        case_fail "$name" "client did not see /$reply/: $(tail -4 "$out")"; return 1
    fi
    if ! grep -qE -- "^starttls-shim: (mail\.test|127\.0\.0\.2):$port policy=$policy: $reason" "$log"; then
        case_fail "$name" "no log line for $port policy=$policy '$reason': $(cat "$log" 2>/dev/null)"; return 1
    fi
    case_pass "$name"
}
# no_commands CASE SERVICE MARK: Postfix's disconnect line for the connection
# after log line MARK shows that no MAIL, RCPT or DATA reached it.
no_commands() {
    local l
    l=$(sts_wait_log "$STS_POSTFIX_LOG" "$3" "postfix/$2/smtpd\[[0-9]+\]: disconnect from") ||
        { case_fail "$1" "no disconnect line for postfix/$2"; return 1; }
    if [[ $l =~ (mail|rcpt|data|auth)= ]]; then
        case_fail "$1" "program's commands reached the server: ${l#*disconnect}"
    else
        case_pass "$1"
    fi
}

CERTS=(2501:selfsigned:"certificate not trusted" 2502:unknownca:"certificate not trusted"
       2503:expired:"certificate not trusted: certificate has expired"
       2504:wrongname:"certificate name mismatch")
for c in "${CERTS[@]}"; do
    port=${c%%:*}; rest=${c#*:}; svc=${rest%%:*}; reason=${rest#*:}
    m="$W/$svc"
    sts_message "$m-verify.eml" "VERIFY-$svc-$$"
    mark=$(sts_log_mark "$STS_POSTFIX_LOG")
    smtp_curl "$m-verify.out" "$port" "$m-verify.eml" \
        sts_shim STARTTLS_SHIM_PORTS="$port/smtp" STARTTLS_SHIM_LOG="$m-verify.log" --; rc=$?
    refused "$svc-verify-refused" $rc "$m-verify.out" "$m-verify.log" "$port" verify "$reason" \
        "^< 421 4\.7\.0 starttls-shim: $reason"
    no_commands "$svc-verify-no-commands-sent" "$svc" "$mark"

    sts_message "$m-encrypt.eml" "ENCRYPT-$svc-$$"
    smtp_curl "$m-encrypt.out" "$port" "$m-encrypt.eml" \
        sts_shim STARTTLS_SHIM_PORTS="$port/smtp" STARTTLS_SHIM_LOG="$m-encrypt.log" --policy encrypt --
    sts_sent_check "$svc-encrypt" $? "$m-encrypt.out" "$m-encrypt.eml" "ENCRYPT-$svc-$$" ESMTPS ||
        sts_dump "$m-encrypt.log"
done

# The good certificate, but without the test CA: untrusted under verify.
NOCA=(sts_exec STARTTLS_SHIM_LOG="$W/noca.log" "$SHIM_BIN" --)
sts_message "$W/noca.eml" "NOCA-$$"
smtp_curl "$W/noca-smtp.out" 25 "$W/noca.eml" "${NOCA[@]}"; rc=$?
refused noca-smtp-verify-refused $rc "$W/noca-smtp.out" "$W/noca.log" 25 verify "certificate not trusted" \
    '^< 421 4\.7\.0 starttls-shim: certificate not trusted'
"${NOCA[@]}" curl -sS -v --max-time 30 "imap://mail.test/INBOX" --user "$STS_USER:$STS_PASS" >"$W/noca-imap.out" 2>&1; rc=$?
refused noca-imap-verify-refused $rc "$W/noca-imap.out" "$W/noca.log" 143 verify "certificate not trusted" \
    '^< \* BYE starttls-shim: certificate not trusted'
"${NOCA[@]}" curl -sS -v --max-time 30 "pop3://mail.test/" --user "$STS_USER:$STS_PASS" >"$W/noca-pop3.out" 2>&1; rc=$?
refused noca-pop3-verify-refused $rc "$W/noca-pop3.out" "$W/noca.log" 110 verify "certificate not trusted" \
    '^< -ERR starttls-shim: certificate not trusted'
n=$(grep -cE "(imap|pop3)-login: Info: Login: " "$STS_DOVECOT_LOG")
if [ "$n" -eq 0 ]; then case_pass noca-verify-no-dovecot-login
else case_fail noca-verify-no-dovecot-login "Dovecot logged $n logins"; fi

sts_exec STARTTLS_SHIM_LOG="$W/noca-py.log" "$SHIM_BIN" -- "$PYTHON" -c '
import smtplib
try:
    smtplib.SMTP("mail.test", 25, timeout=30)
except smtplib.SMTPConnectError as e:
    print("CONNECT-ERROR", e.smtp_code, e.smtp_error.decode())
' >"$W/noca-py.out" 2>&1; rc=$?
if grep -q '^CONNECT-ERROR 421 4.7.0 starttls-shim: certificate not trusted' "$W/noca-py.out"; then
    case_pass noca-smtplib-verify-421
else
    case_fail noca-smtplib-verify-421 "rc=$rc: $(cat "$W/noca-py.out")"
fi

# ... and fine under encrypt (not checked), over SMTP and IMAP.
sts_message "$W/noca-enc.eml" "NOCAENC-$$"
smtp_curl "$W/noca-enc.out" 25 "$W/noca-enc.eml" sts_exec "$SHIM_BIN" --policy encrypt --
sts_sent_check noca-smtp-encrypt $? "$W/noca-enc.out" "$W/noca-enc.eml" "NOCAENC-$$" ESMTPS
sts_exec "$SHIM_BIN" --policy encrypt -- curl -sS --max-time 30 "imap://mail.test/INBOX/;UID=1" \
    --user "$STS_USER:$STS_PASS" -o "$W/noca-enc.msg" >"$W/noca-imap-enc.out" 2>&1; rc=$?
if [ $rc -eq 0 ] && grep -q "ENCRYPT-selfsigned-$$" "$W/noca-enc.msg"; then
    case_pass noca-imap-encrypt-fetched
else
    case_fail noca-imap-encrypt-fetched "curl rc=$rc: $(tail -3 "$W/noca-imap-enc.out")"
fi

# Nothing refused was delivered (the encrypt ones after them were).
if [ -z "$(sts_find_delivered "VERIFY-")$(sts_find_delivered "NOCA-$$")" ]; then
    case_pass verify-refused-nothing-delivered
else
    case_fail verify-refused-nothing-delivered "a refused message was delivered"
fi
sts_finish
