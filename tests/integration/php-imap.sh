#!/usr/bin/env bash
# PHP's imap extension (c-client), unmodified, under the shim (issue 13 item
# 22).  PHP loads its extensions with dlopen(RTLD_GLOBAL | RTLD_DEEPBIND), so
# c-client's connect/read/write bind to libc ahead of the preloaded shim and
# the old shim never saw the connection.  imap_open() with /notls (c-client
# itself does no TLS) under verify:
#  - against the real Dovecot (LOGINDISABLED before TLS), with a capture of
#    the namespace's loopback: the login works (Dovecot logs it with TLS)
#    and neither the password nor its AUTHENTICATE PLAIN base64 forms cross
#    the wire; "STARTTLS" is found (the capture and the search work);
#  - against tests/fakeserver/fakeserver.py offering LOGIN before TLS (what
#    an attacker strips to): the password reaches the server inside TLS only
#    (on the old shim c-client sent LOGIN in cleartext).
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
need_root
need_pkgs php8.2-cli php8.2-imap tcpdump
php -m 2>/dev/null | grep -qx imap || skip "php has no imap extension"
have_shim || skip "$SHIM_MISSING"
servers_start
W=$STS_DIR/work; mkdir -p "$W"

cat > "$W/open.php" <<'PHP'
<?php
// open.php SPEC USER PASS FLAGS: imap_open, print LOGGED-IN or the errors.
[$_, $spec, $user, $pass, $flags] = $argv;
$s = @imap_open($spec, $user, $pass, (int)$flags, 0);
if ($s === false) {
    echo "OPEN-FAILED ", implode(" | ", imap_errors() ?: [imap_last_error()]), "\n";
    exit(1);
}
echo "LOGGED-IN\n";
@imap_close($s);
PHP

# The capture's search: capture.sh's reassembling pcapgrep.py.
sed -n "/^cat > \"\$W\/pcapgrep.py\" <<'PY'\$/,/^PY\$/p" "$TOP/tests/integration/capture.sh" | sed '1d;$d' \
    > "$W/pcapgrep.py"
grep -q '"FOUND" if hit' "$W/pcapgrep.py" || fail "could not take pcapgrep.py from capture.sh"

# ------------------------------------------------- real Dovecot, with a capture
: >"$W/tcpdump.out"
ip netns exec "$STS_NS" timeout 120 tcpdump -i lo -n -s 0 -U --immediate-mode -Z root -w "$W/cap.pcap" tcp \
    >"$W/tcpdump.out" 2>&1 &
TCPDUMP=$!
end=$(( $(date +%s) + 15 ))
until grep -q 'listening on lo' "$W/tcpdump.out"; do
    kill -0 $TCPDUMP 2>/dev/null || fail "tcpdump died: $(cat "$W/tcpdump.out")"
    [ "$(date +%s)" -lt "$end" ] || fail "tcpdump not listening after 15s"
    sleep 0.1
done
sts_preload STARTTLS_SHIM_POLICY=verify STARTTLS_SHIM_LOG="$W/dovecot-php.log" \
    php "$W/open.php" "{mail.test:143/imap/notls}INBOX" "$STS_USER" "$STS_PASS" 0 >"$W/dovecot-php.out" 2>&1
if grep -q LOGGED-IN "$W/dovecot-php.out"; then case_pass php-imap-dovecot-login
else case_fail php-imap-dovecot-login "$(cat "$W/dovecot-php.out")"; sts_dump "$W/dovecot-php.log"; fi
n=$(grep -c "imap-login: Info: Login: user=<$STS_USER>.*, TLS" "$STS_DOVECOT_LOG")
if [ "$n" -ge 1 ]; then case_pass php-imap-dovecot-tls-login
else case_fail php-imap-dovecot-tls-login "no TLS login in Dovecot's log"; fi

SENTINEL=cap-sentinel-$$-$RANDOM
sts_exec bash -c 'exec 3<>/dev/tcp/127.0.0.2/2525; read -r -t 5 l <&3; printf "NOOP %s\r\nQUIT\r\n" "$1" >&3; cat <&3 >/dev/null' \
    _ "$SENTINEL" </dev/null >/dev/null 2>&1
end=$(( $(date +%s) + 10 ))
until grep -qaF "$SENTINEL" "$W/cap.pcap" || [ "$(date +%s)" -ge "$end" ]; do sleep 0.1; done
kill -TERM $TCPDUMP 2>/dev/null
wait $TCPDUMP 2>/dev/null
b64() { printf '%b' "$1" | base64 -w0; }
U=$STS_USER P=$STS_PASS
names=(password "b64(\\0user\\0pass)" "b64(user\\0user\\0pass)" "b64(pass)" STARTTLS)
needles=("$P" "$(b64 "\\0$U\\0$P")" "$(b64 "$U\\0$U\\0$P")" "$(b64 "$P")" "STARTTLS")
expect=(ABSENT ABSENT ABSENT ABSENT FOUND)
"$PYTHON" "$W/pcapgrep.py" "$W/cap.pcap" "${needles[@]}" >"$W/grep.out" 2>&1 ||
    fail "pcapgrep: $(cat "$W/grep.out")"
note "capture: $(head -1 "$W/grep.out")"
for i in "${!needles[@]}"; do
    got=$(grep -E "^(FOUND|ABSENT) $i\$" "$W/grep.out" | cut -d' ' -f1)
    name="php-imap-capture-${names[$i]}-$(echo "${expect[$i]}" | tr A-Z a-z)"
    if [ "$got" = "${expect[$i]}" ]; then case_pass "$name"
    else case_fail "$name" "expected ${expect[$i]}, got '$got'"; fi
done

# ------------------------- a server offering LOGIN in cleartext (recorded)
mkdir -p "$W/scn"
cat > "$W/scn/login.scn" <<'SCN'
proto imap
desc STARTTLS offered and LOGIN allowed before TLS: a client that skips TLS sends its password in clear.
expect verify upgraded
expect encrypt upgraded
expect may upgraded
[plain]
line * OK PRETLS-IMAP4rev1 server ready
on ^CAPABILITY
line * CAPABILITY IMAP4rev1 STARTTLS PRETLS-CAP
line {tag} OK PRETLS-capability done
on ^STARTTLS
line {tag} OK PRETLS-begin TLS negotiation
tls good
on ^LOGOUT
line * BYE PRETLS-bye
line {tag} OK PRETLS-logout done
close
on *
line {tag} OK PRETLS-ok
[tls]
on ^CAPABILITY
line * CAPABILITY IMAP4rev1 INTLS-CAP
line {tag} OK INTLS-capability done
on ^LOGIN
line {tag} OK INTLS-ACK logged in
on ^LOGOUT
line * BYE INTLS-BYE
line {tag} OK INTLS-logout done
close
on *
line {tag} OK INTLS-ok
SCN
"$PYTHON" -S "$TOP/tests/fakeserver/fakeserver.py" "$W/scn/login.scn" --certs "$STS_PKI" --record "$W/rec" \
    --count 1 --ready-file "$W/fs.port" --max-time 40 >"$W/fs.out" 2>"$W/fs.err" &
FS=$!
for ((i = 0; i < 100; i++)); do [ -s "$W/fs.port" ] && break; sleep 0.05; done
[ -s "$W/fs.port" ] || fail "fakeserver did not start: $(tail -2 "$W/fs.err")"
FPORT=$(cat "$W/fs.port")
SECRET=pw-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
timeout -k 2 30 env LD_PRELOAD="$SHIM_LIB" STARTTLS_SHIM_CAFILE="$STS_CA" STARTTLS_SHIM_POLICY=verify \
    STARTTLS_SHIM_PORTS="$FPORT/imap" STARTTLS_SHIM_LOG="$W/fs-php.log" \
    php "$W/open.php" "{127.0.0.1:$FPORT/imap/notls}" alice "$SECRET" "$(php -r 'echo OP_HALFOPEN;')" \
    >"$W/fs-php.out" 2>&1 </dev/null
for ((i = 0; i < 40; i++)); do kill -0 $FS 2>/dev/null || break; sleep 0.05; done
kill $FS 2>/dev/null; wait $FS 2>/dev/null
if grep -q LOGGED-IN "$W/fs-php.out"; then case_pass php-imap-fakeserver-login
else case_fail php-imap-fakeserver-login "$(cat "$W/fs-php.out")"; sts_dump "$W/fs-php.log"; fi
if grep -qaF "$SECRET" "$W/rec/conn-1.pre" "$W/rec/conn-1.raw" 2>/dev/null; then
    case_fail php-imap-fakeserver-no-cleartext-password "the password reached the server outside TLS"
elif ! grep -qaF "LOGIN alice $SECRET" "$W/rec/conn-1.tls" 2>/dev/null; then
    case_fail php-imap-fakeserver-no-cleartext-password "no LOGIN inside TLS"
else
    case_pass php-imap-fakeserver-no-cleartext-password
fi
sts_finish
