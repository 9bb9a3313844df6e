# Real-server test bed for starttls-shim's integration tests. Source it after
# common.sh; never run it.
#
# servers_start   creates a network namespace, a throwaway PKI and starts, inside
#                 the namespace and listening on 127.0.0.2 (= mail.test there):
#                   Postfix  25   STARTTLS required (smtpd_tls_security_level=encrypt)
#                            587  same, plus SASL AUTH (Dovecot) required
#                            2501 2502 2503 2504  STARTTLS with the selfsigned,
#                                 unknownca, expired, wrongname certificates
#                            2525 no STARTTLS offered, plaintext accepted
#                   Dovecot  143 IMAP, 110 POP3: ssl=required, no plaintext auth
#                 Every message for STS_USER@mail.test lands in STS_MAILDIR.
#                 Exports STS_NS STS_DIR STS_MAILDIR STS_PKI STS_CA STS_USER STS_PASS
#                 STS_POSTFIX_LOG STS_DOVECOT_LOG. Installs an EXIT trap that calls
#                 servers_stop (an EXIT trap set before is kept and run after it).
# servers_stop    stops both servers (pid files, then every process left in the
#                 namespace), deletes the namespace and the temp dir. Idempotent.
#
# Clients run in the namespace with sts_exec / sts_shim and connect to mail.test
# (127.0.0.2) from source 127.0.0.1: Dovecot 2.3 counts client-ip == server-ip
# as secure, so the two addresses must differ for the refusals to be real.
#
# Helpers: sts_exec / sts_shim / sts_preload (run a client), sts_message (make a
# message), sts_seed (deliver one with a genuine TLS client), sts_wait_delivered,
# sts_check_delivered, sts_compare_fetched, sts_check_tls (Received header says
# ESMTPS/ESMTPSA/ESMTP), sts_wait_log; case_pass NAME | case_fail NAME WHY |
# case_skip NAME WHY for files that print one line per case, then sts_finish
# (exits 1 when any case failed, else 0).
# Knobs: STS_WAIT (s, servers / delivery, default 20), STS_TIMEOUT (s per client
# run, default 40), STS_DUMP_LOGS=1 (server logs to stderr at stop, always done
# after a failed case), STS_KEEP=1 (keep the temp dir).

STS_SERVERS_DIR="$TOP/tests/servers"
STS_WAIT=${STS_WAIT:-20}          # seconds to wait for the servers / a delivery
STS_TIMEOUT=${STS_TIMEOUT:-40}    # seconds any one client run may take
STS_FAILED=0

# ---------------------------------------------------------------- cases
case_pass() { echo "PASS $1"; }
case_skip() { echo "SKIP $1: $2"; }
case_fail() { # one line each, however long or multi-line WHY is
    local why
    why=$(printf '%s' "$2" | tr '\r\n' '||' | cut -c1-400)
    echo "FAIL $1: $why"
    echo "FAIL $1: $why" >&2
    STS_FAILED=1
}
sts_finish() { [ "$STS_FAILED" -eq 0 ] && exit 0; exit 1; }

# have_shim: true when the library and wrapper are built.
have_shim() { [ -f "$SHIM_LIB" ] && [ -x "$SHIM_BIN" ]; }
export SHIM_MISSING="build/libstarttls-shim.so not built"

# ---------------------------------------------------------------- running clients
# sts_exec CMD...: run CMD inside the namespace, bounded by STS_TIMEOUT.
sts_exec() {
    timeout -k 5 "$STS_TIMEOUT" ip netns exec "$STS_NS" \
        env -u http_proxy -u https_proxy -u all_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY \
            -u LD_PRELOAD -u STARTTLS_SHIM_POLICY -u STARTTLS_SHIM_CAFILE -u STARTTLS_SHIM_PORTS \
            -u STARTTLS_SHIM_TIMEOUT -u STARTTLS_SHIM_LOG -u STARTTLS_SHIM_LOG_LEVEL "$@"
}
# sts_shim [NAME=VALUE...] [SHIM-OPTIONS...] -- CMD...: CMD run by the shim's
# wrapper with the test CA (--cafile STS_CA), inside the namespace, with the
# given environment.
sts_shim() {
    local envs=() opts=()
    while [ $# -gt 0 ] && [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do envs+=("$1"); shift; done
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do opts+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    sts_exec "${envs[@]}" "$SHIM_BIN" --cafile "$STS_CA" "${opts[@]}" -- "$@"
}
# sts_preload [NAME=VALUE...] CMD...: CMD with LD_PRELOAD=SHIM_LIB and
# STARTTLS_SHIM_CAFILE=STS_CA (no wrapper), inside the namespace.
sts_preload() {
    sts_exec LD_PRELOAD="$SHIM_LIB" STARTTLS_SHIM_CAFILE="$STS_CA" "$@"
}

# ---------------------------------------------------------------- messages
# sts_message FILE MARKER [BODY-KB]: write an RFC 5322 message (CRLF line ends)
# to STS_USER@mail.test whose Subject and body carry MARKER. The body has lines
# that need dot-stuffing, and BODY-KB kilobytes of filler (default 1).
sts_message() {
    local file=$1 marker=$2 kb=${3:-1}
    "$PYTHON" - "$file" "$marker" "$kb" "$STS_USER" <<'PY'
import sys
path, marker, kb, user = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lines = [
    "From: Sender <sender@mail.test>",
    "To: %s@mail.test" % user,
    "Subject: starttls-shim test %s" % marker,
    "Date: Thu, 01 Jan 2026 00:00:00 +0000",
    "Message-ID: <%s@mail.test>" % marker,
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "Body marker: %s" % marker,
    ".a line that starts with a dot",
    "..two dots",
    "",
]
filler = "%s line %%06d: the quick brown fox jumps over the lazy dog 0123456789" % marker
n = 0
size = 0
while size < kb * 1024:
    line = filler % n
    lines.append(line)
    size += len(line) + 2
    n += 1
lines.append("end of %s" % marker)
with open(path, "wb") as f:
    f.write(("\r\n".join(lines) + "\r\n").encode())
PY
}

# sts_find_delivered MARKER: print the Maildir file holding MARKER (new/ or cur/).
sts_find_delivered() {
    grep -rlF -- "$1" "$STS_MAILDIR/new" "$STS_MAILDIR/cur" 2>/dev/null | head -1
}

# sts_wait_delivered MARKER: wait (bounded by STS_WAIT) until a message holding
# MARKER is in the Maildir; print its path. Returns 1 on timeout.
sts_wait_delivered() {
    local end=$(( $(date +%s) + STS_WAIT )) f
    while :; do
        f=$(sts_find_delivered "$1")
        [ -n "$f" ] && { echo "$f"; return 0; }
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.1
    done
}

# sts_wait_absent SECONDS MARKER...: wait SECONDS unless one of the MARKERs
# shows up in the Maildir first (for "was never delivered" checks).
sts_wait_absent() {
    local end=$(( $(date +%s) + $1 )) m; shift
    while [ "$(date +%s)" -lt "$end" ]; do
        for m in "$@"; do [ -n "$(sts_find_delivered "$m")" ] && return 0; done
        sleep 0.2
    done
}

# sts_compare_delivered SENT DELIVERED: true when DELIVERED minus the trace
# headers Postfix prepends (Return-Path, X-Original-To, Delivered-To, Received)
# equals SENT with CRLF turned into LF, byte for byte. Says why on stdout if not.
sts_compare_delivered() {
    "$PYTHON" - "$1" "$2" <<'PY'
import sys
sent = open(sys.argv[1], "rb").read().replace(b"\r\n", b"\n")
got = open(sys.argv[2], "rb").read()
lines = got.split(b"\n")
trace = {b"return-path", b"x-original-to", b"delivered-to", b"received"}
i = 0
while i < len(lines) and lines[i].split(b":", 1)[0].lower() in trace:
    i += 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
if i == 0:
    print("no trace headers at the top of the delivered file")
    sys.exit(1)
rest = b"\n".join(lines[i:])
if rest != sent:
    n = next((k for k in range(min(len(rest), len(sent))) if rest[k] != sent[k]), min(len(rest), len(sent)))
    print("differs at byte %d (sent %d bytes, delivered body %d): sent %r got %r"
          % (n, len(sent), len(rest), sent[n:n+40], rest[n:n+40]))
    sys.exit(1)
PY
}

# sts_compare_fetched STORED FETCHED: true when a message fetched over IMAP/POP3
# equals the stored Maildir file (CRLF in FETCHED turned into LF).
sts_compare_fetched() {
    "$PYTHON" - "$1" "$2" <<'PY'
import sys
stored = open(sys.argv[1], "rb").read()
got = open(sys.argv[2], "rb").read().replace(b"\r\n", b"\n")
if got != stored:
    n = next((k for k in range(min(len(got), len(stored))) if got[k] != stored[k]), min(len(got), len(stored)))
    print("differs at byte %d (stored %d bytes, fetched %d): stored %r got %r"
          % (n, len(stored), len(got), stored[n:n+40], got[n:n+40]))
    sys.exit(1)
PY
}

# sts_check_delivered CASE SENT MARKER: case_pass/case_fail on "MARKER delivered
# and equal to SENT"; sets STS_DELIVERED to the delivered file's path.
sts_check_delivered() {
    local name=$1 sent=$2 marker=$3 why
    STS_DELIVERED=$(sts_wait_delivered "$marker") ||
        { case_fail "$name" "message $marker not delivered within ${STS_WAIT}s"; return 1; }
    why=$(sts_compare_delivered "$sent" "$STS_DELIVERED") ||
        { case_fail "$name" "delivered message differs from sent: $why"; return 1; }
    case_pass "$name"
}

# sts_received FILE: the first Received header of a delivered file, unfolded
# on one line, e.g. "from ... (using TLSv1.3 with cipher ...) ... with ESMTPSA id ...".
sts_received() {
    awk 'NR==1,/^$/ { if (/^Received:/) { r=$0; on=1; next }
                      if (on && /^[ \t]/) { r=r $0; next }
                      if (on) exit }
         END { gsub(/[ \t]+/, " ", r); print r }' "$1"
}

# sts_check_tls CASE FILE PROTO: case_pass when Postfix's Received header in
# FILE says the message came with PROTO (ESMTPS: STARTTLS; ESMTPSA: STARTTLS
# and AUTH; ESMTP: plaintext) and, for ESMTPS*, "using TLSv1.2|TLSv1.3".
sts_check_tls() {
    local r
    r=$(sts_received "$2")
    if ! [[ $r =~ \ with\ $3\ id\  ]]; then
        case_fail "$1" "expected 'with $3' in Received: $r"; return 1
    fi
    if [[ $3 == ESMTPS* ]] && ! [[ $r =~ using\ TLSv1\.[23]\  ]]; then
        case_fail "$1" "no TLS 1.2/1.3 in Received: $r"; return 1
    fi
    if [[ $3 == ESMTP ]] && [[ $r =~ using\ TLS ]]; then
        case_fail "$1" "TLS used where plaintext expected: $r"; return 1
    fi
    case_pass "$1"
}

# sts_sent_check NAME RC OUT SENT MARKER PROTO: the cases NAME-delivered and
# NAME-<proto> (e.g. NAME-esmtps) for one client run that exited RC (its output in OUT): delivered
# byte for byte, and Received says PROTO (see sts_check_tls). When the client
# failed, one FAIL NAME-delivered with its last lines (no waiting).
sts_sent_check() {
    if [ "$2" -ne 0 ]; then
        case_fail "$1-delivered" "client exited $2: $(grep -v '^[<>*} {] \|^ *[~<>-]' "$3" | tail -3)"
        sts_dump "$3"
        return 1
    fi
    sts_check_delivered "$1-delivered" "$4" "$5" &&
        sts_check_tls "$1-$(echo "$6" | tr '[:upper:]' '[:lower:]')" "$STS_DELIVERED" "$6"
}

# sts_seed MARKER FILE: deliver a message with a genuine TLS client (Python
# smtplib with starttls() and the test CA, port 25, no shim) and wait for it.
# For tests of reading mail that must not depend on the shim's SMTP side.
sts_seed() {
    sts_message "$2" "$1" "${3:-1}"
    sts_exec "$PYTHON" - "$2" "$STS_USER" "$STS_CA" <<'PY' >&2 || return 1
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
with smtplib.SMTP("mail.test", 25, timeout=20) as s:
    s.starttls(context=ctx)
    s.sendmail("sender@mail.test", [sys.argv[2] + "@mail.test"], open(sys.argv[1], "rb").read())
PY
    sts_wait_delivered "$1" >/dev/null
}

# ---------------------------------------------------------------- logs
# sts_postfix_tls_line: the last "TLS connection established" line of Postfix.
sts_postfix_tls_line() { grep -h 'TLS connection established' "$STS_POSTFIX_LOG" 2>/dev/null | tail -1; }

# sts_log_mark FILE: the number of lines FILE has now (for sts_wait_log).
sts_log_mark() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }

# sts_wait_log FILE MARK REGEX: wait (bounded by STS_WAIT) for a line matching
# the extended REGEX after line MARK of FILE (server logs are written
# asynchronously); print the first such line. Returns 1 on timeout.
sts_wait_log() {
    local end=$(( $(date +%s) + STS_WAIT )) l
    while :; do
        l=$(tail -n +"$(( $2 + 1 ))" "$1" 2>/dev/null | grep -E -m1 -- "$3")
        [ -n "$l" ] && { echo "$l"; return 0; }
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.1
    done
}

# sts_dump FILE...: copy files to stderr (the runner keeps stderr in build/test-logs).
sts_dump() {
    local f
    for f in "$@"; do
        [ -f "$f" ] || continue
        echo "----- $f (last 40 lines)" >&2
        tail -n 40 "$f" | sed 's/^/    /' >&2
    done
}

# ---------------------------------------------------------------- start / stop
_sts_render() { # _sts_render TEMPLATE OUT
    sed -e "s|@SPOOL@|$STS_DIR/postfix/spool|g" -e "s|@DATA@|$STS_DIR/postfix/data|g" \
        -e "s|@ETC@|$STS_DIR/etc|g" -e "s|@LOGDIR@|$STS_DIR/log|g" -e "s|@PKI@|$STS_PKI|g" \
        -e "s|@MAILBASE@|$STS_DIR/mail|g" -e "s|@MAILDIR@|$STS_MAILDIR|g" \
        -e "s|@UID@|$_sts_uid|g" -e "s|@GID@|$_sts_gid|g" \
        -e "s|@RUN@|$STS_DIR/dovecot/run|g" -e "s|@DOVECOT_RUN@|$STS_DIR/dovecot/run|g" \
        -e "s|@STATE@|$STS_DIR/dovecot/state|g" -e "s|@INSTANCE@|$STS_NS|g" "$1" > "$2"
}

_sts_on_exit() {
    local rc=$?
    servers_stop
    [ -n "${_STS_PREV_EXIT:-}" ] && eval "$_STS_PREV_EXIT"
    exit $rc
}

_sts_install_trap() {
    _STS_PREV_EXIT=
    local prev words
    prev=$(trap -p EXIT)
    if [ -n "$prev" ]; then
        eval "words=(${prev})"   # trap -- 'CMD' EXIT
        _STS_PREV_EXIT=${words[2]}
    fi
    trap _sts_on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# _sts_port_ready PORT: true when PORT on mail.test answers with a greeting.
_sts_port_ready() {
    timeout 3 ip netns exec "$STS_NS" bash -c '
        exec 3<>/dev/tcp/127.0.0.2/'"$1"' || exit 1
        IFS= read -r -t 2 line <&3 || exit 1
        case $line in 220*|"+OK"*|"* OK"*) exit 0 ;; esac; exit 1' 2>/dev/null
}

servers_start() {
    need_root
    need_pkgs postfix dovecot-core dovecot-imapd dovecot-pop3d swaks curl tcpdump python3 iproute2
    local p

    _sts_install_trap    # first: an interrupt from here on still cleans up
    STS_NS=sts-$$
    ip netns list 2>/dev/null | grep -qE "^$STS_NS( |\$)" && STS_NS=sts-$$-$RANDOM
    STS_DIR=$(mktemp -d /tmp/sts-srv.XXXXXX) || fail "mktemp"
    chmod 755 "$STS_DIR"

    # Namespace with its own loopback; mail.test = 127.0.0.2 there.
    ip netns add "$STS_NS" 2>/dev/null || skip "cannot create a network namespace (needs CAP_SYS_ADMIN)"
    ip -n "$STS_NS" link set lo up || fail "lo up in $STS_NS"
    mkdir -p "/etc/netns/$STS_NS"
    printf '127.0.0.1\tlocalhost\n127.0.0.2\tmail.test\n' > "/etc/netns/$STS_NS/hosts"
    # No DNS server in the namespace: lookups fail at once and stay on loopback.
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "/etc/netns/$STS_NS/resolv.conf"

    STS_PKI=$STS_DIR/pki
    "$TOP/tests/lib/mkcerts.sh" "$STS_PKI" mail.test || fail "mkcerts.sh failed"
    STS_CA=$STS_PKI/ca.pem
    STS_USER=alice
    STS_PASS=pw-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    STS_MAILDIR=$STS_DIR/mail/$STS_USER/Maildir
    STS_POSTFIX_LOG=$STS_DIR/log/postfix.log
    STS_DOVECOT_LOG=$STS_DIR/log/dovecot.log
    export STS_NS STS_DIR STS_MAILDIR STS_PKI STS_CA STS_USER STS_PASS STS_POSTFIX_LOG STS_DOVECOT_LOG

    # The mailbox belongs to nobody:nogroup; Postfix delivers and Dovecot reads as that.
    _sts_uid=$(id -u nobody) || fail "no user nobody"
    _sts_gid=$(getent group nogroup | cut -d: -f3) || fail "no group nogroup"
    mkdir -p "$STS_DIR/etc" "$STS_DIR/log" "$STS_DIR/postfix/etc" "$STS_DIR/postfix/spool" \
             "$STS_DIR/postfix/data" "$STS_DIR/dovecot/run" "$STS_DIR/dovecot/state" \
             "$STS_MAILDIR/new" "$STS_MAILDIR/cur" "$STS_MAILDIR/tmp"
    chown -R "$_sts_uid:$_sts_gid" "$STS_DIR/mail"
    chmod -R 700 "$STS_DIR/mail/$STS_USER"
    chown postfix:postfix "$STS_DIR/postfix/data"
    chmod 700 "$STS_DIR/postfix/data"
    printf '%s@mail.test %s/Maildir/\n' "$STS_USER" "$STS_USER" > "$STS_DIR/etc/vmailbox"
    printf '%s:{PLAIN}%s:%s:%s::%s::\n' "$STS_USER" "$STS_PASS" "$_sts_uid" "$_sts_gid" \
        "$STS_DIR/mail/$STS_USER" > "$STS_DIR/etc/passwd"
    chgrp dovecot "$STS_DIR/etc/passwd" && chmod 640 "$STS_DIR/etc/passwd"
    _sts_render "$STS_SERVERS_DIR/postfix/main.cf.in" "$STS_DIR/postfix/etc/main.cf"
    _sts_render "$STS_SERVERS_DIR/postfix/master.cf.in" "$STS_DIR/postfix/etc/master.cf"
    _sts_render "$STS_SERVERS_DIR/dovecot/dovecot.conf.in" "$STS_DIR/dovecot/dovecot.conf"

    # Dovecot first: Postfix's submission port needs its auth socket.
    timeout 30 ip netns exec "$STS_NS" dovecot -c "$STS_DIR/dovecot/dovecot.conf" \
        >"$STS_DIR/log/dovecot.start" 2>&1 ||
        { sts_dump "$STS_DIR/log/dovecot.start" "$STS_DOVECOT_LOG"; fail "dovecot did not start"; }
    timeout 60 ip netns exec "$STS_NS" postfix -c "$STS_DIR/postfix/etc" start \
        >"$STS_DIR/log/postfix.start" 2>&1 ||
        { # postfix(1) tells why only on a terminal (else syslog): ask again on one.
          script -qec "timeout 20 ip netns exec $STS_NS postfix -c $STS_DIR/postfix/etc check" /dev/null \
              </dev/null >>"$STS_DIR/log/postfix.start" 2>&1
          sts_dump "$STS_DIR/log/postfix.start" "$STS_POSTFIX_LOG"; fail "postfix did not start"; }

    local end=$(( $(date +%s) + STS_WAIT ))
    for p in 25 587 143 110 2501 2502 2503 2504 2525; do
        until _sts_port_ready "$p"; do
            if [ "$(date +%s)" -ge "$end" ]; then
                sts_dump "$STS_DIR/log/postfix.start" "$STS_POSTFIX_LOG" "$STS_DOVECOT_LOG"
                fail "port $p on mail.test not answering after ${STS_WAIT}s"
            fi
            sleep 0.1
        done
    done
    note "servers up in namespace $STS_NS (dir $STS_DIR)"
}

servers_stop() {
    [ -n "${STS_DIR:-}" ] || return 0
    local pids end
    if [ "$STS_FAILED" -ne 0 ] || [ -n "${STS_DUMP_LOGS:-}" ]; then
        sts_dump "$STS_POSTFIX_LOG" "$STS_DOVECOT_LOG"
    fi
    if ip netns list 2>/dev/null | grep -qE "^$STS_NS( |\$)"; then
        [ -f "$STS_DIR/postfix/spool/pid/master.pid" ] &&
            timeout 20 postfix -c "$STS_DIR/postfix/etc" stop >/dev/null 2>&1
        [ -f "$STS_DIR/dovecot/run/master.pid" ] &&
            kill -TERM "$(cat "$STS_DIR/dovecot/run/master.pid")" 2>/dev/null
        # Whatever is still in the namespace is ours: wait a little, then kill it.
        end=$(( $(date +%s) + 10 ))
        while pids=$(ip netns pids "$STS_NS" 2>/dev/null) && [ -n "$pids" ]; do
            if [ "$(date +%s)" -ge "$end" ]; then
                # shellcheck disable=SC2086
                kill -KILL $pids 2>/dev/null
                sleep 0.2
                break
            fi
            sleep 0.1
        done
        ip netns del "$STS_NS" 2>/dev/null
    fi
    rm -rf "/etc/netns/$STS_NS"
    rmdir /etc/netns 2>/dev/null
    if [ -n "${STS_KEEP:-}" ]; then note "kept $STS_DIR (STS_KEEP)"; else rm -rf "$STS_DIR"; fi
    STS_DIR=
}
