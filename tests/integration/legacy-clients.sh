#!/usr/bin/env bash
# Two classic mail programs from Debian, unmodified and with their own TLS
# switched off, against real Postfix and Dovecot:
#  - msmtp (tls off): without the shim Postfix refuses the mail on 25 (530, no
#    STARTTLS yet) and does not offer AUTH on 587, so nothing is delivered; with
#    the shim the mail on 25 and the mail with AUTH LOGIN on 587 are delivered
#    byte for byte over TLS (Received: ESMTPS / ESMTPSA).
#  - fetchmail over POP3 (110) and IMAP (143), with its opportunistic
#    STLS/STARTTLS disabled (--sslproto ''): without the shim Dovecot refuses
#    the plaintext login (POP3 "-ERR [AUTH] Plaintext authentication
#    disallowed"; IMAP LOGINDISABLED, so fetchmail never sends the password) and
#    nothing is fetched; with the shim both log in over TLS (Dovecot says so) and
#    the message handed to fetchmail's MDA equals the Maildir file byte for byte.
# Each client's command line is the same in both runs: only the shim differs.
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
need_pkgs msmtp fetchmail
servers_start
W=$STS_DIR/work; mkdir -p "$W"; chmod 700 "$W"

# A message for fetchmail to read, delivered with a genuine TLS client (no shim
# involved), as pop3.sh and imap.sh do.
sts_seed "SEED-$$" "$W/seed.eml" 32 || fail "could not seed the mailbox"

# The client configurations hold the password: msmtp and fetchmail both refuse
# files that others may read.
umask 077

# ---------------------------------------------------------------- msmtp
# Its own configuration only (-C; HOME is the work dir, so no ~/.msmtprc or
# ~/.netrc of the machine is read), TLS off for both accounts.
cat > "$W/msmtprc" <<RC
defaults
tls off
timeout 30
domain client.test
from sender@mail.test
syslog off

account mx
host mail.test
port 25
auth off

account submission
host mail.test
port 587
# "auth on" would pick a method automatically, and with its own TLS off msmtp
# then considers only methods that avoid cleartext passwords (none offered
# here): name the method, as a legacy setup that logs in in the clear does.
auth login
user $STS_USER
password $STS_PASS
RC

# msmtp_run OUT ACCOUNT MESSAGE: RUN[@] msmtp, recipient on the command line,
# the message on stdin; --debug shows the dialogue (lines "--> " and "<-- ").
msmtp_run() {
    "${RUN[@]}" msmtp -C "$W/msmtprc" -a "$2" --debug -- "$STS_USER@mail.test" <"$3" >"$1" 2>&1
}

RUN=(sts_exec HOME="$W")
sts_message "$W/plain587.eml" "REFUSED587-$$"
msmtp_run "$W/plain587.out" submission "$W/plain587.eml"; rc=$?
if [ $rc -ne 0 ] && grep -q 'the server does not support authentication' "$W/plain587.out" &&
   ! grep -qE '^--> (AUTH|STARTTLS)' "$W/plain587.out"; then
    case_pass msmtp-587-auth-without-shim-refused
else
    case_fail msmtp-587-auth-without-shim-refused "msmtp rc=$rc: $(grep '^msmtp:' "$W/plain587.out" | tail -3)"
fi
sts_message "$W/plain25.eml" "REFUSED25-$$"
msmtp_run "$W/plain25.out" mx "$W/plain25.eml"; rc=$?
if [ $rc -ne 0 ] && grep -q '530 5.7.0 Must issue a STARTTLS command first' "$W/plain25.out" &&
   grep -q '^--> MAIL FROM:' "$W/plain25.out" && ! grep -q '^--> STARTTLS' "$W/plain25.out"; then
    case_pass msmtp-25-without-shim-refused
else
    case_fail msmtp-25-without-shim-refused "msmtp rc=$rc: $(grep '^msmtp:' "$W/plain25.out" | tail -3)"
fi

if ! have_shim; then
    for c in msmtp-587-auth-shim-delivered msmtp-587-auth-shim-esmtpsa msmtp-25-shim-delivered msmtp-25-shim-esmtps; do
        case_skip $c "$SHIM_MISSING"
    done
else
    RUN=(sts_shim HOME="$W" STARTTLS_SHIM_LOG="$W/msmtp587.log" --)
    sts_message "$W/shim587.eml" "SHIM587-$$"
    msmtp_run "$W/shim587.out" submission "$W/shim587.eml"
    sts_sent_check msmtp-587-auth-shim $? "$W/shim587.out" "$W/shim587.eml" "SHIM587-$$" ESMTPSA ||
        sts_dump "$W/msmtp587.log"

    RUN=(sts_shim HOME="$W" STARTTLS_SHIM_LOG="$W/msmtp25.log" --policy verify --)
    sts_message "$W/shim25.eml" "SHIM25-$$"
    msmtp_run "$W/shim25.out" mx "$W/shim25.eml"
    sts_sent_check msmtp-25-shim $? "$W/shim25.out" "$W/shim25.eml" "SHIM25-$$" ESMTPS ||
        sts_dump "$W/msmtp25.log"
fi

[ -n "$(sts_find_delivered "SHIM25-$$")" ] || sts_wait_absent 2 "REFUSED25-$$" "REFUSED587-$$"
if [ -z "$(sts_find_delivered "REFUSED25-$$")$(sts_find_delivered "REFUSED587-$$")" ]; then
    case_pass msmtp-without-shim-nothing-delivered
else
    case_fail msmtp-without-shim-nothing-delivered "a message sent without the shim was delivered"
fi

# ---------------------------------------------------------------- fetchmail
# The MDA puts each message it is handed into a new file of DIR (the mailbox
# may hold the msmtp messages too; the seed is found by its marker).
cat > "$W/mda.sh" <<'SH'
#!/bin/sh
# mda.sh DIR: the message on stdin into a new file in DIR.
f=$(mktemp "$1/msg.XXXXXX") && exec cat > "$f"
SH
chmod 700 "$W/mda.sh"

# fm_rc NAME PROTO PORT: a throwaway run control file W/NAME.rc (mode 0600,
# fetchmail refuses a more open one) whose MDA writes into W/NAME.d.
# keep + fetchall: nothing is deleted or skipped as already seen, so the POP3
# and the IMAP run both get the seed.  no rewrite: headers as stored.
fm_rc() {
    mkdir -p "$W/$1.d"
    cat > "$W/$1.rc" <<RC
poll mail.test protocol $2 port $3 auth password timeout 30
    user "$STS_USER" there with password "$STS_PASS"
    keep fetchall no rewrite
    mda "$W/mda.sh $W/$1.d"
RC
}
# --sslproto '': "Disable STARTTLS" (fetchmail(1)). Without it fetchmail 6.4
# sends STLS/STARTTLS by itself, even when not offered (its default
# --sslcertck "implicitly requires STARTTLS"): without the shim
# it would fail on the test CA instead of meeting Dovecot's refusal, and with
# the shim Dovecot answers "TLS is already active" and fetchmail gives up.
# --invisible: no Received header of fetchmail's own, so the delivered bytes
# are the server's.
# --pidfile/--idfile and HOME=FETCHMAILHOME=W: nothing outside the work dir is
# read or written (as root the lock would be /var/run/fetchmail.pid).
# -v -v logs every command sent ("POP3> ", "IMAP> ") and every reply.
fm_run() { # fm_run NAME: RUN[@] fetchmail with W/NAME.rc, output in W/NAME.out
    "${RUN[@]}" fetchmail -v -v --nosyslog --invisible --sslproto '' -f "$W/$1.rc" \
        --pidfile "$W/fetchmail.pid" --idfile "$W/fetchids" >"$W/$1.out" 2>&1
}
FM_ENV=(HOME="$W" FETCHMAILHOME="$W")
# fm_check_fetched CASE NAME: the seed, as handed to the MDA in W/NAME.d,
# equals the Maildir file (fetchmail strips CRs for an MDA).
fm_check_fetched() {
    local got stored why
    got=$(grep -lF -- "SEED-$$" "$W/$2.d"/msg.* 2>/dev/null | head -1)
    stored=$(sts_find_delivered "SEED-$$")
    if [ -z "$got" ]; then
        case_fail "$1" "the seed was not handed to the MDA ($(ls "$W/$2.d" | wc -l) messages were)"
    elif why=$(sts_compare_fetched "$stored" "$got"); then
        case_pass "$1"
    else
        case_fail "$1" "$why"
    fi
}

RUN=(sts_exec "${FM_ENV[@]}")
fm_rc pop3-plain pop3 110
fm_run pop3-plain; rc=$?
# Exit status 3 is fetchmail's "authentication failure".
if [ $rc -eq 3 ] && grep -q '^fetchmail: POP3> USER ' "$W/pop3-plain.out" &&
   grep -q 'POP3< -ERR \[AUTH\] Plaintext authentication disallowed' "$W/pop3-plain.out" &&
   ! grep -qE '^fetchmail: POP3> (STLS|PASS|AUTH|APOP|RETR)' "$W/pop3-plain.out" &&
   [ -z "$(ls -A "$W/pop3-plain.d")" ]; then
    case_pass fetchmail-pop3-without-shim-refused
else
    case_fail fetchmail-pop3-without-shim-refused "fetchmail rc=$rc: $(grep -E 'POP3[<>]|fetchmail: [A-Z]' "$W/pop3-plain.out" | tail -4)"
    sts_dump "$W/pop3-plain.out"
fi
fm_rc imap-plain imap 143
fm_run imap-plain; rc=$?
# Dovecot says LOGINDISABLED before TLS; fetchmail then does not send LOGIN.
if [ $rc -eq 3 ] && grep -q '^fetchmail: IMAP< \* OK \[CAPABILITY .*STARTTLS LOGINDISABLED' "$W/imap-plain.out" &&
   ! grep -qE '^fetchmail: IMAP> A[0-9]+ (STARTTLS|LOGIN|AUTHENTICATE|SELECT|FETCH)' "$W/imap-plain.out" &&
   [ -z "$(ls -A "$W/imap-plain.d")" ]; then
    case_pass fetchmail-imap-without-shim-refused
else
    case_fail fetchmail-imap-without-shim-refused "fetchmail rc=$rc: $(grep -E 'IMAP[<>]|fetchmail: [A-Z]' "$W/imap-plain.out" | tail -4)"
    sts_dump "$W/imap-plain.out"
fi
n=$(grep -cE '(pop3|imap)-login: Info: Login: ' "$STS_DOVECOT_LOG")
if [ "$n" -eq 0 ]; then case_pass fetchmail-without-shim-no-login
else case_fail fetchmail-without-shim-no-login "Dovecot logged $n logins"; fi

if ! have_shim; then
    for c in fetchmail-pop3-shim-fetched fetchmail-imap-shim-fetched fetchmail-shim-tls-logins; do
        case_skip $c "$SHIM_MISSING"
    done
else
    for pp in pop3:110:POP3 imap:143:IMAP; do
        IFS=: read -r proto port tag <<<"$pp"
        RUN=(sts_shim "${FM_ENV[@]}" STARTTLS_SHIM_LOG="$W/fm-$proto.log" --)
        fm_rc "$proto-shim" "$proto" "$port"
        fm_run "$proto-shim"; rc=$?
        if [ $rc -ne 0 ]; then
            case_fail "fetchmail-$proto-shim-fetched" "fetchmail rc=$rc: $(grep -E "$tag[<>]|fetchmail: [A-Z]" "$W/$proto-shim.out" | tail -4)"
            sts_dump "$W/$proto-shim.out" "$W/fm-$proto.log"
        else
            fm_check_fetched "fetchmail-$proto-shim-fetched" "$proto-shim"
        fi
    done
    # One login each, over TLS, from the client address (not a trusted one).
    p=$(grep -c "pop3-login: Info: Login: user=<$STS_USER>.*rip=127.0.0.1, lip=127.0.0.2.*, TLS" "$STS_DOVECOT_LOG")
    i=$(grep -c "imap-login: Info: Login: user=<$STS_USER>.*rip=127.0.0.1, lip=127.0.0.2.*, TLS" "$STS_DOVECOT_LOG")
    if [ "$p" -eq 1 ] && [ "$i" -eq 1 ]; then case_pass fetchmail-shim-tls-logins
    else case_fail fetchmail-shim-tls-logins "expected 1 POP3 and 1 IMAP TLS login in Dovecot's log, found $p and $i"; fi
fi
sts_finish
