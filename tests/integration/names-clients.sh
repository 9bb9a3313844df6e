#!/usr/bin/env bash
# The certificate is checked against the name the program used for THIS
# connection (issue 12 §1, issue 13 items 10 and 13), with real clients
# against real Postfix and Dovecot under --policy verify.
#
# The machine's host name (myhost.example, set in a private UTS namespace
# with unshare --uts) resolves to the server's address in the namespace's
# /etc/hosts, as on Debian machines and in containers whose host name maps to
# the address where a local relay listens.  Programs that look up their own
# name (swaks, fetchmail, mutt, Python's socket.getfqdn() in smtplib) made
# the old shim check the server's certificate (DNS:mail.test, DNS:localhost,
# IP:127.0.0.2, ...) against "myhost.example": a false "name mismatch".
#  - swaks, fetchmail (POP3 and IMAP), mutt, curl and smtplib (two messages in
#    one process) connect by address (127.0.0.2) and by "localhost" (mapped
#    to the server's address here): each delivers or fetches under verify;
#  - the shim's log says which name matched and why;
#  - item 10: another thread resolves wrong.example (whose certificate the
#    server on 2504 holds) to the server's address after the connecting
#    thread resolved mail.test: refused (the control: the same server
#    accepted when the connecting thread itself resolved wrong.example);
#  - getaddrinfo_a (GAI_WAIT, and GAI_NOWAIT seen through gai_error) lookups
#    count; "127.2" (an inet_aton form of 127.0.0.2) is the literal address,
#    not a DNS name;
#  - item 13: a certificate whose only name is its subject CN (no
#    subjectAltName) is refused under verify (the control: the same server
#    with a SAN certificate is accepted).
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
need_pkgs swaks fetchmail mutt curl python3
have_shim || skip "$SHIM_MISSING"
servers_start
W=$STS_DIR/work; mkdir -p "$W"; chmod 700 "$W"
umask 077

CLIENT=$BUILD/tests/io/names-client
mkdir -p "$BUILD/tests/io"
${CC:-cc} -O2 -Wall -Wextra -Werror -std=gnu11 -o "$CLIENT" "$TOP/tests/io/names-client.c" -lpthread ||
    fail "could not build $CLIENT"

# The namespace's hosts file, replaced (new inode: the running servers keep
# theirs; every later `ip netns exec` binds this one).
cat > "/etc/netns/$STS_NS/hosts.new" <<'H'
127.0.0.2	localhost
127.0.0.2	mail.test
127.0.0.2	myhost.example myhost
127.0.0.2	wrong.example
H
chmod 644 "/etc/netns/$STS_NS/hosts.new"
mv "/etc/netns/$STS_NS/hosts.new" "/etc/netns/$STS_NS/hosts"

# myhost CASE CMD...: CMD under the shim (--policy verify, info log in
# W/CASE.log), in the namespace, host name myhost.example.
myhost() {
    local case=$1; shift
    sts_exec HOME="$W" FETCHMAILHOME="$W" STARTTLS_SHIM_LOG="$W/$case.log" STARTTLS_SHIM_LOG_LEVEL=info \
        unshare --uts sh -c 'hostname myhost.example && exec "$@"' sh \
        "$SHIM_BIN" --cafile "$STS_CA" --policy verify -- "$@"
}
check_hostname() {
    local h
    h=$(sts_exec unshare --uts sh -c 'hostname myhost.example && hostname && getent hosts "$(hostname)"')
    [[ $h == *"127.0.0.2"*myhost.example* ]] || fail "host name setup: $h"
}
check_hostname

# logged CASE REGEX: the shim's log for CASE has a line matching REGEX.
logged() { grep -qE -- "$2" "$W/$1.log" 2>/dev/null; }

# ---------------------------------------------------------------- swaks
for by in 127.0.0.2 localhost; do
    c=swaks-$by
    sts_message "$W/$c.eml" "NAMES-$c-$$"; head -c -2 "$W/$c.eml" > "$W/$c.data"
    # no --helo: swaks looks up its own host name for it
    myhost "$c" swaks --server "$by:25" --from sender@mail.test --to "$STS_USER@mail.test" \
        --timeout 30 --data "$W/$c.data" >"$W/$c.out" 2>&1
    sts_sent_check "$c-verify" $? "$W/$c.out" "$W/$c.eml" "NAMES-$c-$$" ESMTPS || sts_dump "$W/$c.log"
done
if logged swaks-127.0.0.2 'name=127\.0\.0\.2 \(address literal\)'; then case_pass swaks-log-says-literal
else case_fail swaks-log-says-literal "no 'name=127.0.0.2 (address literal)' in the log"; sts_dump "$W/swaks-127.0.0.2.log"; fi
if logged swaks-localhost 'name=localhost \(resolved by the program\)'; then case_pass swaks-log-says-resolved
else case_fail swaks-log-says-resolved "no 'name=localhost (resolved by the program)' in the log"; sts_dump "$W/swaks-localhost.log"; fi

# ---------------------------------------------------------------- curl
# curl (7.78+) resolves "localhost" itself, to 127.0.0.1, without asking the
# resolver: relay 127.0.0.1:25 to the server, as a local relay would listen.
ip netns exec "$STS_NS" "$PYTHON" - "$W/relay.port" >"$W/relay.log" 2>&1 <<'PY' &
import asyncio, sys
async def pipe(r, w):
    try:
        while (b := await r.read(65536)):
            w.write(b); await w.drain()
    finally:
        w.close()
async def handle(r1, w1):
    r2, w2 = await asyncio.open_connection("127.0.0.2", 25)
    await asyncio.gather(pipe(r1, w2), pipe(r2, w1), return_exceptions=True)
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 25)
    open(sys.argv[1], "w").write("25")
    await srv.serve_forever()
asyncio.run(main())
PY
for ((i = 0; i < 100; i++)); do [ -s "$W/relay.port" ] && break; sleep 0.05; done
[ -s "$W/relay.port" ] || fail "the 127.0.0.1:25 relay did not start: $(cat "$W/relay.log")"
for by in 127.0.0.2 localhost; do
    c=curl-$by
    sts_message "$W/$c.eml" "NAMES-$c-$$"
    myhost "$c" curl -sS --max-time 30 "smtp://$by:25" --mail-from sender@mail.test \
        --mail-rcpt "$STS_USER@mail.test" -T "$W/$c.eml" >"$W/$c.out" 2>&1
    sts_sent_check "$c-verify" $? "$W/$c.out" "$W/$c.eml" "NAMES-$c-$$" ESMTPS || sts_dump "$W/$c.log"
done

# ---------------------------------------------------------------- Python smtplib
# Two messages in one process: smtplib looks up socket.getfqdn() (the host
# name) after its first connect, so the second connect comes after it.
for by in 127.0.0.2 localhost; do
    c=smtplib-$by
    sts_message "$W/$c-1.eml" "NAMES-$c-1-$$"; sts_message "$W/$c-2.eml" "NAMES-$c-2-$$"
    myhost "$c" "$PYTHON" - "$by" "$STS_USER@mail.test" "$W/$c-1.eml" "$W/$c-2.eml" >"$W/$c.out" 2>&1 <<'PY'
import smtplib, sys
host, rcpt = sys.argv[1], sys.argv[2]
for path in sys.argv[3:]:
    with smtplib.SMTP(host, 25, timeout=30) as s:
        s.sendmail("sender@mail.test", [rcpt], open(path, "rb").read())
PY
    rc=$?
    sts_sent_check "$c-verify-first" $rc "$W/$c.out" "$W/$c-1.eml" "NAMES-$c-1-$$" ESMTPS
    sts_sent_check "$c-verify-second" $rc "$W/$c.out" "$W/$c-2.eml" "NAMES-$c-2-$$" ESMTPS || sts_dump "$W/$c.log"
done

# ---------------------------------------------------------------- mutt
# Its own SMTP client, its own TLS off; no hostname set (it takes the
# machine's).
for by in 127.0.0.2 localhost; do
    c=mutt-$by
    cat > "$W/$c.muttrc" <<RC
set smtp_url="smtp://$by:25/"
set ssl_starttls=no
set ssl_force_tls=no
set from="sender@mail.test"
set use_from=yes
set record=""
set copy=no
RC
    printf 'Body marker: NAMES-%s-%s\n' "$c" "$$" > "$W/$c.body"
    myhost "$c" mutt -n -F "$W/$c.muttrc" -s "names test NAMES-$c-$$" -- "$STS_USER@mail.test" \
        <"$W/$c.body" >"$W/$c.out" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        case_fail "$c-verify-delivered" "mutt exited $rc: $(tail -3 "$W/$c.out") | $(tail -2 "$W/$c.log" 2>/dev/null)"
    elif f=$(sts_wait_delivered "NAMES-$c-$$"); then
        sts_check_tls "$c-verify-esmtps" "$f" ESMTPS
    else
        case_fail "$c-verify-delivered" "not delivered within ${STS_WAIT}s: $(tail -2 "$W/$c.log" 2>/dev/null)"
    fi
done

# ---------------------------------------------------------------- fetchmail
sts_seed "SEED-$$" "$W/seed.eml" 4 || fail "could not seed the mailbox"
cat > "$W/mda.sh" <<'SH'
#!/bin/sh
f=$(mktemp "$1/msg.XXXXXX") && exec cat > "$f"
SH
chmod 700 "$W/mda.sh"
for pp in pop3:110 imap:143; do
    proto=${pp%%:*} port=${pp#*:}
    for by in 127.0.0.2 localhost; do
        c=fetchmail-$proto-$by
        mkdir -p "$W/$c.d"
        cat > "$W/$c.rc" <<RC
poll $by protocol $proto port $port auth password timeout 30
    user "$STS_USER" there with password "$STS_PASS"
    keep fetchall no rewrite
    mda "$W/mda.sh $W/$c.d"
RC
        myhost "$c" fetchmail -v --nosyslog --invisible --sslproto '' -f "$W/$c.rc" \
            --pidfile "$W/fetchmail.pid" --idfile "$W/fetchids" >"$W/$c.out" 2>&1
        rc=$?
        got=$(grep -lF -- "SEED-$$" "$W/$c.d"/msg.* 2>/dev/null | head -1)
        if [ $rc -eq 0 ] && [ -n "$got" ]; then
            case_pass "$c-verify-fetched"
        else
            case_fail "$c-verify-fetched" "fetchmail rc=$rc: $(grep -E 'fetchmail: [A-Za-z]' "$W/$c.out" | tail -2) | $(tail -1 "$W/$c.log" 2>/dev/null)"
        fi
    done
done

# ---------------------------------------------------------------- threads, getaddrinfo_a, literals
# client CASE PORT MODE NAME [OTHER]: names-client under the shim, port PORT
# watched as SMTP; prints the first line the program got.
client() {
    local c=$1 p=$2; shift 2
    sts_exec STARTTLS_SHIM_LOG="$W/$c.log" STARTTLS_SHIM_LOG_LEVEL=info STARTTLS_SHIM_PORTS="$p/smtp" \
        "$SHIM_BIN" --cafile "$STS_CA" --policy verify -- "$CLIENT" "$1" "$p" "${@:2}" 2>&1
}
# expect CASE upgraded|refused OUTPUT [LOG-REGEX]
expect() {
    local want=$1 out=$3 ok=0
    case $2 in
    upgraded) [[ $out == "220 "*"TLS by starttls-shim"* ]] && ok=1 ;;
    refused)  [[ $out == *"421 4.7.0 starttls-shim: certificate name mismatch"* ]] && ok=1 ;;
    esac
    if [ $ok = 1 ] && { [ -z "${4:-}" ] || logged "$want" "$4"; }; then case_pass "$want"
    else case_fail "$want" "expected $2${4:+ and log /$4/}, got: $out | $(tail -1 "$W/$want.log" 2>/dev/null)"; fi
}
expect thread-own-attacker-name-control upgraded "$(client thread-own-attacker-name-control 2504 own wrong.example)" \
    'name=wrong\.example \(resolved by the program\)'
expect thread-other-resolved-attacker-name-refused refused \
    "$(client thread-other-resolved-attacker-name-refused 2504 other-after mail.test wrong.example)" \
    'certificate name mismatch \(tried mail\.test\)'
expect thread-other-resolved-attacker-name-real-server-ok upgraded \
    "$(client thread-other-resolved-attacker-name-real-server-ok 25 other-after mail.test wrong.example)" \
    'name=mail\.test \(resolved by the program\)'
expect getaddrinfo-a-wait-recorded upgraded "$(client getaddrinfo-a-wait-recorded 2504 gai-wait wrong.example)" \
    'name=wrong\.example'
expect getaddrinfo-a-nowait-recorded upgraded "$(client getaddrinfo-a-nowait-recorded 2504 gai-nowait wrong.example)" \
    'name=wrong\.example'
expect inet-aton-literal-127.2 upgraded "$(client inet-aton-literal-127.2 25 own 127.2)" \
    'name=127\.0\.0\.2 \(address literal\)'

# ---------------------------------------------------------------- SNI
# A STARTTLS server that writes the SNI of each handshake ("-" for none).
ip netns exec "$STS_NS" "$PYTHON" - "$STS_PKI/good-chain.pem" "$STS_PKI/good.key" "$W/sni.txt" \
    >"$W/sni.server.log" 2>&1 <<'PY' &
import socket, ssl, sys
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
def note(sock, name, c):
    with open(sys.argv[3], "a") as f:
        f.write((name or "-") + "\n")
ctx.sni_callback = note
srv = socket.create_server(("127.0.0.2", 2601))
while True:
    c, _ = srv.accept()
    try:
        c.settimeout(10)
        r = c.makefile("rb")
        c.sendall(b"220 sni.test ESMTP\r\n")
        r.readline()
        c.sendall(b"250-sni.test\r\n250 STARTTLS\r\n")
        r.readline()
        c.sendall(b"220 go ahead\r\n")
        t = ctx.wrap_socket(c, server_side=True)
        t.recv(100)
        t.close()
    except Exception as e:
        print(e, flush=True)
        c.close()
PY
sleep 0.5
# sni CASE WANT MODE NAME...: names-client on port 2601; WANT: the SNI.
sni() {
    local c=$1 want=$2 got
    shift 2
    : > "$W/sni.txt"
    client "$c" 2601 "$@" >/dev/null
    got=$(cat "$W/sni.txt")
    if [ "$got" = "$want" ]; then case_pass "$c"; else case_fail "$c" "SNI: expected '$want', got '$got'"; fi
}
sni sni-is-the-resolved-name mail.test own mail.test
sni sni-none-for-a-literal - own 127.0.0.2
# by address, then the host name looked up: still none (the host name must
# not leave in clear; the program connected by address)
sni sni-none-beside-a-literal - then 127.0.0.2 myhost.example

# ---------------------------------------------------------------- CN only
# A leaf signed by the test CA whose only name is CN=mail.test (no SAN), and
# its control with the same CN and a SAN, each behind slowsmtp.py.
( cd "$STS_PKI" &&
  for k in cnonly:"" cnsan:"subjectAltName=DNS:mail.test"; do
      n=${k%%:*} ext=${k#*:}
      openssl req -newkey rsa:2048 -nodes -keyout "$n.key" -out "$n.csr" -subj "/CN=mail.test" 2>/dev/null &&
      printf '%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$ext" > "$n.ext" &&
      openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$n.pem" -days 30 \
          -sha256 -extfile "$n.ext" 2>/dev/null && chmod 644 "$n.key" "$n.pem" || exit 1
  done ) || fail "could not make the CN-only certificates"
openssl x509 -in "$STS_PKI/cnonly.pem" -noout -ext subjectAltName 2>/dev/null | grep -q DNS &&
    fail "cnonly.pem has a subjectAltName"
SPIDS=()	# servers_stop kills whatever is left in the namespace
port=2598
for n in cnsan cnonly; do
    port=$((port + 1))
    ip netns exec "$STS_NS" "$PYTHON" "$TOP/tests/io/slowsmtp.py" --host 127.0.0.2 --port $port \
        --cert "$STS_PKI/$n.pem" --key "$STS_PKI/$n.key" --delay 0 --ready-file "$W/$n.port" \
        >"$W/$n.server.log" 2>&1 &
    SPIDS+=($!)
    for ((i = 0; i < 100; i++)); do [ -s "$W/$n.port" ] && break; sleep 0.05; done
    printf -v "PORT_$n" %s "$port"
done
expect cert-cn-and-san-control upgraded "$(client cert-cn-and-san-control "$PORT_cnsan" own mail.test)" \
    'name=mail\.test'
expect cert-cn-only-refused refused "$(client cert-cn-only-refused "$PORT_cnonly" own mail.test)"
for p in "${SPIDS[@]}"; do kill "$p" 2>/dev/null; done
sts_finish
