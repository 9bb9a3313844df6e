#!/usr/bin/env bash
# A program that says goodbye and shuts its write side before reading the
# answer (`nc -N`, socat, scripts): QUIT (SMTP, POP3) or LOGOUT (IMAP), then
# shutdown(SHUT_WR), then read to end of file.  On a plain socket it reads
# the farewell reply and a clean end of file; under the shim, against real
# Postfix and Dovecot, it must too (no reset, the reply not lost), and the
# mail sent before the QUIT is delivered byte for byte.
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
servers_start
W=$STS_DIR/work; mkdir -p "$W"

cat > "$W/halfclose.py" <<'PY'
# halfclose.py PROTO PORT [MESSAGE-FILE]: a line-by-line dialogue on a plain
# socket, then the farewell, shutdown(SHUT_WR), and everything up to EOF.
import re, socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection(("mail.test", port), timeout=30)
f = s.makefile("rb")

def reply():
    lines = []
    while True:
        l = f.readline()
        if not l:
            raise EOFError("EOF after %r" % lines)
        lines.append(l)
        if proto.startswith("smtp") and (len(l) < 4 or l[3:4] != b"-"):
            return lines
        if proto != "smtp":
            return lines

def say(cmd):
    s.sendall(cmd + b"\r\n")
    return reply()

try:
    greeting = reply()
    if proto == "smtp-burst":  # all at once, as `printf ... | nc -N` does
        s.sendall(b"EHLO client.test\r\nQUIT\r\n")
    elif proto == "smtp-burst-noquit":  # the same without the goodbye
        s.sendall(b"EHLO client.test\r\nNOOP\r\n")
    elif proto == "smtp":
        say(b"EHLO client.test")
        if len(sys.argv) > 3:
            assert say(b"MAIL FROM:<sender@mail.test>")[-1].startswith(b"250")
            assert say(b"RCPT TO:<%s@mail.test>" % sys.argv[4].encode())[-1].startswith(b"250")
            r = say(b"DATA")[-1]
            if not r.startswith(b"354"):
                raise RuntimeError("DATA: %r" % r)
            body = open(sys.argv[3], "rb").read()
            s.sendall(re.sub(rb"(?m)^\.", b"..", body) + b".\r\n")  # dot-stuffed
            print("DOT %s" % reply()[-1][:3].decode())
        s.sendall(b"QUIT\r\n")
    elif proto == "pop3":
        s.sendall(b"QUIT\r\n")
    else:
        s.sendall(b"a1 LOGOUT\r\n")
    s.shutdown(socket.SHUT_WR)
    rest = f.read()  # to EOF; a reset raises ConnectionResetError
    print("FAREWELL %r" % rest)
    print("EOF")
except Exception as e:
    print("ERROR %s: %s" % (type(e).__name__, e))
    sys.exit(1)
PY
run() { # run OUT PROTO PORT [MSG USER]
    local out=$1; shift
    "${RUN[@]}" "$PYTHON" "$W/halfclose.py" "$@" >"$out" 2>&1
}
# expect NAME OUT PATTERN: the farewell reply arrived, then a clean EOF
expect() {
    if grep -q "^FAREWELL .*$3" "$2" && grep -q '^EOF$' "$2"; then
        case_pass "$1"
    else
        case_fail "$1" "$(tr '\n' '|' <"$2" | cut -c1-300)"
    fi
}

# Without the shim Postfix refuses the mail (530 before STARTTLS) but the
# goodbye itself works: the reference for what a plain socket gives.
RUN=(sts_exec)
run "$W/plain-smtp.out" smtp 25
expect half-close-smtp-without-shim-221 "$W/plain-smtp.out" "221 "
run "$W/plain-burst.out" smtp-burst 25
expect half-close-smtp-burst-without-shim-250-221 "$W/plain-burst.out" "250 .*221 "
run "$W/plain-noquit.out" smtp-burst-noquit 25
expect half-close-smtp-noquit-without-shim-250-250 "$W/plain-noquit.out" "250 .*250 "

if ! have_shim; then
    for c in half-close-smtp-shim-mail-then-221 half-close-smtp-shim-delivered half-close-smtp-burst-shim-250-221 \
             half-close-smtp-noquit-shim-250-250 half-close-pop3-shim-ok half-close-pop3-first-command-quit-fin-only \
             half-close-imap-shim-bye; do
        case_skip $c "$SHIM_MISSING"
    done
    sts_finish
fi
RUN=(sts_shim STARTTLS_SHIM_LOG="$W/shim.log" --)
sts_message "$W/m.eml" "HALFCLOSE-$$"
run "$W/shim-smtp.out" smtp 25 "$W/m.eml" "$STS_USER"
if grep -q '^DOT 250' "$W/shim-smtp.out"; then
    expect half-close-smtp-shim-mail-then-221 "$W/shim-smtp.out" "221 "
else
    case_fail half-close-smtp-shim-mail-then-221 "$(tr '\n' '|' <"$W/shim-smtp.out" | cut -c1-300)"
fi
sts_check_delivered half-close-smtp-shim-delivered "$W/m.eml" "HALFCLOSE-$$"
run "$W/shim-burst.out" smtp-burst 25
expect half-close-smtp-burst-shim-250-221 "$W/shim-burst.out" "250 .*221 "
run "$W/shim-noquit.out" smtp-burst-noquit 25
expect half-close-smtp-noquit-shim-250-250 "$W/shim-noquit.out" "250 .*250 "
RUN=(sts_shim STARTTLS_SHIM_LOG="$W/shim-pop3.log" -v -v --)
run "$W/shim-pop3.out" pop3 110
expect half-close-pop3-shim-ok "$W/shim-pop3.out" "+OK"
# QUIT as the program's very first command is its farewell too: no
# close_notify for Dovecot to find unread when it closes (it then reset the
# connection, and the program's shutdown() failed with ENOTCONN now and then).
if grep -q "shutdown(SHUT_WR) after the program's QUIT: TCP FIN only" "$W/shim-pop3.log"; then
    case_pass half-close-pop3-first-command-quit-fin-only
else
    case_fail half-close-pop3-first-command-quit-fin-only "$(grep -i shutdown "$W/shim-pop3.log" | head -3 | tr '\n' '|')"
fi
RUN=(sts_shim STARTTLS_SHIM_LOG="$W/shim.log" --)
run "$W/shim-imap.out" imap 143
expect half-close-imap-shim-bye "$W/shim-imap.out" "BYE.*a1 OK"
sts_finish
