#!/usr/bin/env bash
# tests/io/settings.sh: settings that must never do something the user did not
# ask for.  Each case prints PASS/FAIL.
#  - STARTTLS_SHIM_LOG takes stderr, syslog or an absolute path (or file:/path):
#    a bare word (a level typed into the wrong variable) is a bad setting that
#    names STARTTLS_SHIM_LOG_LEVEL, never a file in the working directory; the
#    wrapper refuses to start and the preloaded library refuses mail
#    connections (fail closed).
#  - a log file is created 0600; as root a symlink planted at its name is not
#    followed.
#  - the shim's own EHLO, sent before TLS, does not carry the host name.
. "$(dirname "$0")/../lib/common.sh"
[ -f "$SHIM_LIB" ] && [ -x "$SHIM_BIN" ] || skip "build/libstarttls-shim.so not built"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ok() { echo "PASS $1"; }
ko() { echo "FAIL $1: $2"; }

# A free loopback port for a watched-port list.
port=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# 1. the wrapper refuses a level word and says which variable was meant.
mkdir -p "$work/cwd1"
out=$(cd "$work/cwd1" && STARTTLS_SHIM_LOG=info "$SHIM_BIN" true 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "STARTTLS_SHIM_LOG_LEVEL" <<<"$out" && [ -z "$(ls -A "$work/cwd1")" ]; then
    ok "log-word-wrapper"
else
    ko "log-word-wrapper" "rc=$rc out='$out' files='$(ls -A "$work/cwd1")'"
fi
out=$(cd "$work/cwd1" && "$SHIM_BIN" --log debug true 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "STARTTLS_SHIM_LOG_LEVEL=debug" <<<"$out" && [ -z "$(ls -A "$work/cwd1")" ]; then
    ok "log-word-option"
else
    ko "log-word-option" "rc=$rc out='$out'"
fi
out=$(cd "$work/cwd1" && STARTTLS_SHIM_LOG=logs/shim.log "$SHIM_BIN" true 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "absolute file path" <<<"$out" && [ -z "$(ls -A "$work/cwd1")" ]; then
    ok "log-relative-path-wrapper"
else
    ko "log-relative-path-wrapper" "rc=$rc out='$out'"
fi

# 2. the preloaded library alone: a level word refuses mail connections in
#    protocol and creates no file in the working directory.
client='
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
data = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    data += b
sys.stdout.write(data.decode("latin-1"))
'
mkdir -p "$work/cwd2"
srv_log="$work/srv.log"
# A server on the port: with a bad setting the shim must not even connect.
$PYTHON - "$port" "$srv_log" <<'EOF' &
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(8); l.settimeout(15)
try:
    while True:
        c, _ = l.accept()
        open(sys.argv[2], "a").write("connected\n")
        c.sendall(b"220 cleartext greeting\r\n"); c.close()
except Exception:
    pass
EOF
srv=$!
sleep 0.3
out=$(cd "$work/cwd2" && STARTTLS_SHIM_LOG=warn STARTTLS_SHIM_PORTS="$port/smtp" LD_PRELOAD="$SHIM_LIB" \
      $PYTHON -c "$client" "$port" 2>"$work/err2"); rc=$?
if [[ $out == 421*"bad setting"* ]] && grep -q "STARTTLS_SHIM_LOG_LEVEL" "$work/err2" &&
   [ -z "$(ls -A "$work/cwd2")" ] && [ ! -s "$srv_log" ]; then
    ok "log-word-preload-fails-closed"
else
    ko "log-word-preload-fails-closed" "rc=$rc out='$out' err='$(cat "$work/err2")' files='$(ls -A "$work/cwd2")' server='$(cat "$srv_log" 2>/dev/null)'"
fi

# 3. file:/path and /path work; the file is 0600 and holds the line.
for dest in "file:$work/a.log" "$work/b.log"; do
    f=${dest#file:}
    kind=absolute; [ "$f" != "$dest" ] && kind=file-prefix
    rm -f "$f"
    (cd "$work/cwd2" && umask 022 && STARTTLS_SHIM_LOG="$dest" STARTTLS_SHIM_POLICY=bogus \
        STARTTLS_SHIM_PORTS="$port/smtp" LD_PRELOAD="$SHIM_LIB" $PYTHON -c "$client" "$port" >/dev/null 2>&1)
    mode=$(stat -c %a "$f" 2>/dev/null)
    if [ "$mode" = 600 ] && grep -q "^starttls-shim: .*STARTTLS_SHIM_POLICY" "$f"; then
        ok "log-file-$kind"
    else
        ko "log-file-$kind" "mode=$mode content='$(cat "$f" 2>/dev/null)'"
    fi
done
kill $srv 2>/dev/null; wait $srv 2>/dev/null

# 4. as root, a symlink at the log's name is not followed.
if [ "$(id -u)" -eq 0 ]; then
    echo "precious" > "$work/target"
    ln -s "$work/target" "$work/link.log"
    (cd "$work/cwd2" && STARTTLS_SHIM_LOG="$work/link.log" STARTTLS_SHIM_POLICY=bogus \
        STARTTLS_SHIM_PORTS="$port/smtp" LD_PRELOAD="$SHIM_LIB" $PYTHON -c "$client" "$port" >/dev/null 2>"$work/err4")
    if [ "$(cat "$work/target")" = precious ] && grep -q "cannot open log file" "$work/err4"; then
        ok "log-symlink-not-followed-as-root"
    else
        ko "log-symlink-not-followed-as-root" "target='$(cat "$work/target")' err='$(cat "$work/err4")'"
    fi
else
    echo "SKIP log-symlink-not-followed-as-root: needs root"
fi

# 5. the shim's own EHLO (before TLS) does not name this host.
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
    $PYTHON - "$port" "$work/ehlo" <<'EOF' &
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(1); l.settimeout(15)
c, _ = l.accept(); c.settimeout(10)
c.sendall(b"220 test ESMTP\r\n")
line = b""
while not line.endswith(b"\n"):
    b = c.recv(1)
    if not b:
        break
    line += b
open(sys.argv[2], "wb").write(line)
c.sendall(b"250 test\r\n")  # no STARTTLS: the shim refuses under verify
c.close()
EOF
    srv=$!
    sleep 0.3
    unshare --uts sh -c "hostname secret-host.example && STARTTLS_SHIM_PORTS=$port/smtp LD_PRELOAD=$SHIM_LIB \
        $PYTHON -c '$client' $port" >/dev/null 2>&1
    wait $srv 2>/dev/null
    got=$(tr -d '\r\n' < "$work/ehlo" 2>/dev/null)
    if [ "$got" = "EHLO localhost" ]; then
        ok "ehlo-neutral-name"
    else
        ko "ehlo-neutral-name" "the shim sent '$got' before TLS"
    fi
else
    echo "SKIP ehlo-neutral-name: needs root for a private UTS namespace"
fi
