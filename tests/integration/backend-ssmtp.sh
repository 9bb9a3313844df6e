#!/usr/bin/env bash
# sSMTP, unmodified, under the shim against real Postfix (issue 13 item 23).
# sSMTP links GnuTLS's OpenSSL compatibility library (libgnutls-openssl.so.27),
# whose unversioned SSL_CTX_new, SSL_new, ERR_get_error... used to capture the
# TLS backend's references: SIGSEGV on the first mail connection.  The backend
# must bind to the OpenSSL it was built against.
#  - without the shim Postfix refuses the mail (530, STARTTLS required);
#  - with the shim the message is in the Maildir and came over TLS (ESMTPS).
# The ssmtp package is unpacked (dpkg-deb -x) into the test's directory, never
# installed (it would replace Postfix); the .deb is fetched once with
# apt-get download into $BUILD/cache.
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
need_root
need_pkgs libgnutls-openssl27
have_shim || skip "$SHIM_MISSING"

CACHE=$BUILD/cache
mkdir -p "$CACHE"
DEB=$(ls "$CACHE"/ssmtp_*.deb 2>/dev/null | head -1)
if [ -z "$DEB" ]; then
    (cd "$CACHE" && apt-get download ssmtp >/dev/null 2>&1) ||
        skip "cannot fetch the ssmtp package (apt-get download ssmtp)"
    DEB=$(ls "$CACHE"/ssmtp_*.deb 2>/dev/null | head -1)
    [ -n "$DEB" ] || skip "apt-get download ssmtp left no .deb"
fi

servers_start
W=$STS_DIR/work; mkdir -p "$W"
dpkg-deb -x "$DEB" "$W/ssmtp" || fail "dpkg-deb -x $DEB"
SSMTP=$W/ssmtp/usr/sbin/ssmtp
[ -x "$SSMTP" ] || fail "no ssmtp binary in $DEB"
ldd "$SSMTP" | grep -q 'libgnutls-openssl\.so\.27' || fail "this ssmtp does not link libgnutls-openssl.so.27: the test would prove nothing"
# The package's ssmtp is setgid mail: the loader would ignore LD_PRELOAD (the
# shim reaches set-id programs only through /etc/ld.so.preload).  Our copy
# drops the bit so that plain LD_PRELOAD works.
chmod g-s "$SSMTP"
# sSMTP's own TLS off: the shim does STARTTLS.  -C names this file, so
# /etc/ssmtp is never read.
cat > "$W/ssmtp.conf" <<EOF
mailhub=mail.test:25
hostname=client.test
FromLineOverride=YES
UseSTARTTLS=NO
UseTLS=NO
EOF

send() { # send RUNNER... : the message on stdin, output in $W/$name.out
    "$@" "$SSMTP" -C"$W/ssmtp.conf" -f sender@mail.test "$STS_USER@mail.test"
}

sts_message "$W/plain.eml" "SSMTP-PLAIN-$$"
send sts_exec <"$W/plain.eml" >"$W/plain.out" 2>&1; rc=$?
if [ $rc -ne 0 ]; then
    case_pass ssmtp-without-shim-refused
else
    case_fail ssmtp-without-shim-refused "ssmtp exited 0 without the shim: $(tail -3 "$W/plain.out")"
fi

sts_message "$W/shim.eml" "SSMTP-SHIM-$$"
send sts_preload STARTTLS_SHIM_LOG="$W/shim.log" <"$W/shim.eml" >"$W/shim.out" 2>&1; rc=$?
if [ $rc -ne 0 ]; then
    why="exited $rc"
    [ $rc -ge 128 ] && why="killed by signal $((rc - 128))"
    case_fail ssmtp-shim-delivered "ssmtp $why: $(tail -3 "$W/shim.out") $(tail -3 "$W/shim.log" 2>/dev/null)"
elif f=$(sts_wait_delivered "SSMTP-SHIM-$$"); then
    case_pass ssmtp-shim-delivered
    # sSMTP adds a Received line of its own on top: Postfix's is the next.
    r=$(awk '/^$/ { exit } /^[ \t]/ { printf " %s", $0; next } { printf "\n%s", $0 }' "$f" |
        grep '^Received: from ' | head -1)
    if [[ $r =~ \ with\ ESMTPS\  ]] && [[ $r =~ using\ TLSv1\.[23]\  ]]; then
        case_pass ssmtp-shim-esmtps
    else
        case_fail ssmtp-shim-esmtps "Postfix's Received header does not say ESMTPS over TLS 1.2/1.3: $r"
    fi
else
    case_fail ssmtp-shim-delivered "ssmtp exited 0 but nothing arrived within ${STS_WAIT}s"
fi

[ -n "$(sts_find_delivered "SSMTP-SHIM-$$")" ] || sts_wait_absent 2 "SSMTP-PLAIN-$$"
if [ -z "$(sts_find_delivered "SSMTP-PLAIN-$$")" ]; then
    case_pass ssmtp-without-shim-nothing-delivered
else
    case_fail ssmtp-without-shim-nothing-delivered "the message sent without the shim was delivered"
fi
sts_finish
