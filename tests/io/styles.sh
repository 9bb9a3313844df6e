#!/usr/bin/env bash
# tests/io/styles.sh - every way a program does socket I/O works through the
# shim, against the real Postfix and Dovecot of tests/lib/servers.sh.
#
# One server start, then one PASS/FAIL line per case:
#  io-STYLE-*      each C client in examples/ (blocking, stdio, poll, select,
#                  epoll, iovec, msg, threads, fork, sendfile): without the shim
#                  Postfix refuses it (530); under the shim (wrapper or plain
#                  LD_PRELOAD, AUTH PLAIN on 587) the message is delivered byte
#                  for byte and Postfix's Received header shows TLS + AUTH.
#  io-RUNTIME-*    programs on other runtimes: Node.js net (libuv/epoll),
#                  Python asyncio (epoll), curl (poll), swaks (Perl).
#  io-imap-fetch   the message read back over IMAP equals the stored one.
#  io-50mib-*      a 50 MiB message through blocking, poll, epoll, stdio and
#                  threads arrives byte for byte; one is fetched back over IMAP.
#  io-conns-*      one process makes 1,000 connections in a row, then 100 held
#                  at once (blocking, poll, epoll): every dialogue completes, no
#                  fd is left over, memory stops growing; the same process
#                  under valgrind: no error, nothing lost (also the stdio,
#                  threads and fork clients).
#  io-delayed-*    40 non-blocking connections driven by one poll (then epoll)
#                  loop against a server that delays the greeting by 1 s on
#                  every second connection: about 1 s in all (< 5 s), not 20 s.
# STS_IO_BIG=0 leaves out the 50 MiB cases; STS_IO_VALGRIND=0 the valgrind one.
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"

have_shim || skip "$SHIM_MISSING"
need_root

EX=$BUILD/examples
STYLES=(blocking stdio poll select epoll iovec msg threads fork sendfile)

# ---------------------------------------------------------------- build
# The examples are built by `make check`; build what is missing when run alone.
missing=()
for s in "${STYLES[@]}"; do [ -x "$EX/smtp-$s" ] || missing+=("$EX/smtp-$s"); done
[ -x "$EX/imap-fetch" ] || missing+=("$EX/imap-fetch")
if [ ${#missing[@]} -gt 0 ]; then
    make -s -C "$TOP" B="$BUILD" "${missing[@]}" >&2 || fail "could not build ${missing[*]}"
fi
CONNS=$BUILD/tests/io/conns
if [ ! -x "$CONNS" ] || [ "$TOP/tests/io/conns.c" -nt "$CONNS" ]; then
    mkdir -p "$BUILD/tests/io"
    ${CC:-cc} -O2 -g -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -o "$CONNS" \
        "$TOP/tests/io/conns.c" || fail "could not build $CONNS"
fi

# ---------------------------------------------------------------- servers
FAKE_PIDS=()
stop_fakes() {
    local p
    for p in "${FAKE_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    FAKE_PIDS=()
}
trap stop_fakes EXIT          # servers_start keeps it and runs it after its own
servers_start
W=$STS_DIR/work; mkdir -p "$W"
FROM=sender@mail.test
TO=$STS_USER@mail.test

# A 50 MiB message needs Postfix's size limits raised (defaults: 10 MB per
# message, 51,200,000 bytes per virtual mailbox file).
PFX=$STS_DIR/postfix/etc
BIG_BYTES=$((50 * 1024 * 1024 + 4096))
if [ "${STS_IO_BIG:-1}" != 0 ]; then
    lim=$(postconf -c "$PFX" -h message_size_limit)
    vlim=$(postconf -c "$PFX" -h virtual_mailbox_limit)
    too_small() { [ "$1" -ne 0 ] && [ "$1" -lt $((BIG_BYTES + 65536)) ]; }
    if too_small "$lim" || too_small "$vlim"; then
        note "raising Postfix message_size_limit ($lim) and virtual_mailbox_limit ($vlim) for 50 MiB"
        postconf -c "$PFX" -e message_size_limit=104857600 virtual_mailbox_limit=0 &&
            timeout 20 postfix -c "$PFX" reload >/dev/null 2>&1 || fail "could not raise Postfix's size limit"
        sleep 1
    fi
fi

# ---------------------------------------------------------------- helpers
# run_client OUT RUNNER [NAME=VALUE...] CMD...: RUNNER is plain (no shim),
# shim (the wrapper) or preload (LD_PRELOAD only); the shim logs to OUT.log.
run_client() {
    local out=$1 how=$2 envs=(STARTTLS_SHIM_LOG="$1.log"); shift 2
    while [ $# -gt 0 ] && [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do envs+=("$1"); shift; done
    case $how in
    plain)   sts_exec "$@" >"$out" 2>&1 ;;
    shim)    sts_shim "${envs[@]}" -- "$@" >"$out" 2>&1 ;;
    preload) sts_preload "${envs[@]}" "$@" >"$out" 2>&1 ;;
    esac
}

# why_failed OUT RC: a one-line account of a client run for a FAIL line.
why_failed() {
    printf 'rc=%s; out: %s; shim log: %s' "$2" "$(tail -4 "$1" 2>/dev/null | tr '\n' '|')" \
        "$(tail -3 "$1.log" 2>/dev/null | tr '\n' '|')"
}

# big_message FILE MARKER: MARKER's headers followed by the shared 50 MiB body.
big_message() {
    printf 'From: Sender <%s>\r\nTo: %s\r\nSubject: starttls-shim test %s\r\nMessage-ID: <%s@mail.test>\r\n\r\nBody marker: %s\r\n' \
        "$FROM" "$TO" "$2" "$2" "$2" > "$1"
    cat "$W/big.body" >> "$1"
}

# deliver_case NAME OUT RC SENT MARKER PROTO: the client said delivered and
# exited 0, the message is in the Maildir byte for byte, Received shows PROTO.
deliver_case() {
    local name=$1 out=$2 rc=$3 sent=$4 marker=$5 proto=$6
    if [ "$rc" -ne 0 ] || ! grep -qx delivered "$out"; then
        case_fail "$name-delivered" "$(why_failed "$out" "$rc")"
        sts_dump "$out" "$out.log"
        return 1
    fi
    sts_check_delivered "$name-delivered" "$sent" "$marker" &&
        sts_check_tls "$name-tls" "$STS_DELIVERED" "$proto"
}

# want CMD PKG: true when CMD exists, after installing Debian's PKG if needed.
want() {
    command -v "$1" >/dev/null 2>&1 && return 0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1
    command -v "$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------- 1. the C zoo
i=0
for s in "${STYLES[@]}"; do
    # Without the shim: plaintext, and Postfix will not take AUTH or mail.
    m=PLAIN-$s-$$
    sts_message "$W/$m.eml" "$m" 4
    run_client "$W/$m.out" plain "$EX/smtp-$s" mail.test 587 "$FROM" "$TO" "$W/$m.eml" "$STS_USER" "$STS_PASS"
    rc=$?
    if [ $rc -ne 0 ] && grep -q '^S: 530 ' "$W/$m.out" && grep -qx 'NOT delivered' "$W/$m.out"; then
        case_pass "io-$s-plain-refused"
    else
        case_fail "io-$s-plain-refused" "$(why_failed "$W/$m.out" $rc)"
    fi
    # Under the shim: the wrapper for even ones, bare LD_PRELOAD for odd ones.
    how=shim; [ $((i % 2)) -eq 1 ] && how=preload
    m=ZOO-$s-$$
    sts_message "$W/$m.eml" "$m" 64
    run_client "$W/$m.out" $how "$EX/smtp-$s" mail.test 587 "$FROM" "$TO" "$W/$m.eml" "$STS_USER" "$STS_PASS"
    rc=$?
    deliver_case "io-$s" "$W/$m.out" $rc "$W/$m.eml" "$m" ESMTPSA
    i=$((i + 1))
done
# Port 25, no AUTH: the upgrade without credentials.
for s in poll threads; do
    m=ZOO25-$s-$$
    sts_message "$W/$m.eml" "$m" 4
    run_client "$W/$m.out" shim "$EX/smtp-$s" mail.test 25 "$FROM" "$TO" "$W/$m.eml"
    deliver_case "io-$s-25" "$W/$m.out" $? "$W/$m.eml" "$m" ESMTPS
done

# ---------------------------------------------------------------- 2. other runtimes
if want node nodejs; then
    m=NODE-$$
    sts_message "$W/$m.eml" "$m" 256
    run_client "$W/$m.out" shim node "$TOP/examples/smtp-node.js" mail.test 587 "$FROM" "$TO" \
        "$W/$m.eml" "$STS_USER" "$STS_PASS"
    deliver_case io-node "$W/$m.out" $? "$W/$m.eml" "$m" ESMTPSA
else
    case_skip io-node-delivered "node not installed (apt-get install nodejs)"
fi

m=ASYNCIO-$$
sts_message "$W/$m.eml" "$m" 256
run_client "$W/$m.out" preload "$PYTHON" "$TOP/examples/smtp-asyncio.py" mail.test 587 "$FROM" "$TO" \
    "$W/$m.eml" "$STS_USER" "$STS_PASS"
deliver_case io-asyncio "$W/$m.out" $? "$W/$m.eml" "$m" ESMTPSA

m=CURL-$$
sts_message "$W/$m.eml" "$m" 256
run_client "$W/$m.out" shim curl -sS --max-time 30 "smtp://mail.test:587/client.test" \
    --mail-from "$FROM" --mail-rcpt "$TO" -T "$W/$m.eml" --user "$STS_USER:$STS_PASS"
rc=$?
[ $rc -eq 0 ] && echo delivered >> "$W/$m.out"
deliver_case io-curl "$W/$m.out" $rc "$W/$m.eml" "$m" ESMTPSA

if want swaks swaks; then
    m=SWAKS-$$
    sts_message "$W/$m.eml" "$m" 64
    head -c -2 "$W/$m.eml" > "$W/$m.data"     # swaks adds the last CRLF itself
    run_client "$W/$m.out" preload swaks --server mail.test:587 --helo client.test --from "$FROM" \
        --to "$TO" --timeout 30 --auth PLAIN --auth-user "$STS_USER" --auth-password "$STS_PASS" \
        --data "$W/$m.data"
    rc=$?
    [ $rc -eq 0 ] && echo delivered >> "$W/$m.out"
    deliver_case io-swaks "$W/$m.out" $rc "$W/$m.eml" "$m" ESMTPSA
else
    case_skip io-swaks-delivered "swaks not installed"
fi

# ---------------------------------------------------------------- 3. read back
m=ZOO-blocking-$$
stored=$(sts_find_delivered "$m")
run_client "$W/fetch.out" shim "$EX/imap-fetch" mail.test 143 "$STS_USER" "$STS_PASS" "$m" "$W/fetch.eml"
rc=$?
if [ -z "$stored" ]; then
    case_fail io-imap-fetch "nothing to fetch: $m was not delivered"
elif [ $rc -ne 0 ]; then
    case_fail io-imap-fetch "$(why_failed "$W/fetch.out" $rc)"
elif why=$(sts_compare_fetched "$stored" "$W/fetch.eml"); then
    case_pass io-imap-fetch
else
    case_fail io-imap-fetch "$why"
fi
run_client "$W/fetchp.out" plain "$EX/imap-fetch" mail.test 143 "$STS_USER" "$STS_PASS" "$m" "$W/fetchp.eml"
rc=$?
if [ $rc -ne 0 ] && grep -q 'a1 NO' "$W/fetchp.out"; then
    case_pass io-imap-fetch-plain-refused
else
    case_fail io-imap-fetch-plain-refused "$(why_failed "$W/fetchp.out" $rc)"
fi

# ---------------------------------------------------------------- 4. 50 MiB
if [ "${STS_IO_BIG:-1}" = 0 ]; then
    case_skip io-50mib "STS_IO_BIG=0"
else
    "$PYTHON" - "$W/big.body" $((50 * 1024 * 1024)) <<'PY'
import sys
path, size = sys.argv[1], int(sys.argv[2])
line = b"%08d the quick brown fox jumps over the lazy dog 0123456789 ,;:!?/\\'\"()[]{}<>\r\n"
with open(path, "wb") as f:
    n = 0
    while n < size:
        chunk = b"".join(line % k for k in range(n // 100, n // 100 + 10000))
        if n // 100 % 50000 == 0:
            chunk = b".a dot-stuffed line\r\n" + chunk
        f.write(chunk)
        n += len(chunk)
PY
    for s in blocking poll epoll stdio threads; do
        m=BIG-$s-$$
        big_message "$W/$m.eml" "$m"
        start=$(date +%s%N)
        run_client "$W/$m.out" shim "$EX/smtp-$s" mail.test 587 "$FROM" "$TO" "$W/$m.eml" "$STS_USER" "$STS_PASS"
        rc=$?
        note "50 MiB via $s: rc=$rc in $(( ($(date +%s%N) - start) / 1000000 )) ms"
        deliver_case "io-50mib-$s" "$W/$m.out" $rc "$W/$m.eml" "$m" ESMTPSA
    done
    m=BIG-epoll-$$
    stored=$(sts_find_delivered "$m")
    run_client "$W/bigfetch.out" shim "$EX/imap-fetch" mail.test 143 "$STS_USER" "$STS_PASS" "$m" "$W/bigfetch.eml"
    rc=$?
    if [ -z "$stored" ]; then
        case_fail io-50mib-imap-fetch "nothing to fetch: $m was not delivered"
    elif [ $rc -ne 0 ]; then
        case_fail io-50mib-imap-fetch "$(why_failed "$W/bigfetch.out" $rc)"
    elif why=$(sts_compare_fetched "$stored" "$W/bigfetch.eml"); then
        case_pass io-50mib-imap-fetch
    else
        case_fail io-50mib-imap-fetch "$why"
    fi
    rm -f "$W"/BIG-* "$W/big.body" "$W/bigfetch.eml"
    rm -f $(grep -rlF -- "BIG-" "$STS_MAILDIR/new" "$STS_MAILDIR/cur" 2>/dev/null)
fi

# ---------------------------------------------------------------- 5. many connections
PKI=$(dirname "$STS_CA")
# start_fake PORT [ARGS...]: slowsmtp.py on mail.test:PORT inside the namespace.
start_fake() {
    local port=$1; shift
    rm -f "$W/fake$port.ready"
    ip netns exec "$STS_NS" "$PYTHON" "$TOP/tests/io/slowsmtp.py" --host 127.0.0.2 --port "$port" \
        --cert "$PKI/good-chain.pem" --key "$PKI/good.key" --ready-file "$W/fake$port.ready" "$@" \
        >"$W/fake$port.log" 2>&1 &
    FAKE_PIDS+=($!)
    local end=$(( $(date +%s) + 10 ))
    until [ -f "$W/fake$port.ready" ]; do
        [ "$(date +%s)" -ge "$end" ] && { sts_dump "$W/fake$port.log"; fail "slowsmtp.py on $port did not start"; }
        sleep 0.1
    done
}
start_fake 2601
start_fake 2602 --every 2 --delay 1

# field LINE KEY: the value of KEY=VALUE in a conns output line.
field() { sed -n "s/.* $2=\([0-9-]*\).*/\1/p" <<<"$1"; }

# conns_cases PREFIX OUT RC: one PASS/FAIL per phase (all dialogues done),
# then PREFIX-no-fd-leak (fds after each phase = after the warm-up) and
# PREFIX-no-memory-growth (RSS after the last phase within 1 MiB of RSS
# after the first round of each phase: the second round must not grow).
conns_cases() {
    local prefix=$1 out=$2 rc=$3 line base_fds fds phase ok failed name
    local first_round=() rss_mark= rss_end= rss_prev= leak= anyfail=
    base_fds=$(field "$(grep '^BASE' "$out")" fds)
    if [ -z "$base_fds" ]; then
        case_fail "$prefix" "no output: $(why_failed "$out" "$rc")"; return
    fi
    while read -r line; do
        phase=$(awk '{print $2}' <<<"$line")
        ok=$(field "$line" ok); failed=$(field "$line" failed); fds=$(field "$line" fds)
        note "$prefix $line"
        name=$prefix-$phase
        [[ " ${first_round[*]} " == *" ${phase%%:*} "* ]] && name=$name-again
        if [ "$failed" = 0 ]; then
            case_pass "$name"
        else
            anyfail=1
            case_fail "$name" "$failed failed, $ok ok: $(grep -m2 -v -E '^(BASE|PHASE) ' "$out" | tr '\n' '|') shim log: $(tail -2 "$out.log" 2>/dev/null | tr '\n' '|')"
        fi
        [ "$fds" = "$base_fds" ] || leak="$leak $phase: $fds fds (after warm-up: $base_fds);"
        rss_end=$(field "$line" rss_kb)
        # the RSS once every phase kind ran once
        if [[ " ${first_round[*]} " == *" ${phase%%:*} "* ]] && [ -z "$rss_mark" ]; then
            rss_mark=$rss_prev
        fi
        first_round+=("${phase%%:*}")
        rss_prev=$rss_end
    done < <(grep '^PHASE' "$out")
    [ "$rc" -eq 0 ] || [ -n "$anyfail" ] ||
        case_fail "$prefix-run" "exit status $rc (killed by the timeout?): $(grep -m2 -v -E '^(BASE|PHASE) ' "$out" | tr '\n' '|')"
    if [ -z "$leak" ]; then case_pass "$prefix-no-fd-leak"; else case_fail "$prefix-no-fd-leak" "$leak"; fi
    if [ -n "$rss_mark" ]; then
        if [ $((rss_end - rss_mark)) -le 1024 ]; then
            case_pass "$prefix-no-memory-growth"
        else
            case_fail "$prefix-no-memory-growth" "RSS grew from $rss_mark KiB to $rss_end KiB over the second round"
        fi
    fi
}

STS_TIMEOUT=120 run_client "$W/conns.out" shim STARTTLS_SHIM_PORTS=2601/smtp "$CONNS" mail.test 2601 \
    seq:1000 par:100 poll:100 epoll:100 seq:1000 par:100 poll:100 epoll:100
conns_cases io-conns "$W/conns.out" $?

# The same against real Postfix (fewer: it allows 50 connections per client).
run_client "$W/pconns.out" shim "$CONNS" mail.test 25 seq:50 par:40 epoll:40
conns_cases io-postfix-conns "$W/pconns.out" $?

if [ "${STS_IO_VALGRIND:-1}" = 0 ]; then
    case_skip io-conns-valgrind "STS_IO_VALGRIND=0"
elif ! want valgrind valgrind; then
    case_skip io-conns-valgrind "valgrind not installed (apt-get install valgrind)"
else
    STS_TIMEOUT=120 sts_preload STARTTLS_SHIM_PORTS=2601/smtp STARTTLS_SHIM_LOG="$W/vg.shimlog" \
        valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --log-file="$W/vg.log" \
        "$CONNS" mail.test 2601 seq:20 par:10 poll:10 epoll:10 >"$W/vg.out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && [ "$(grep -c '^PHASE.* failed=0 ' "$W/vg.out")" -eq 4 ]; then
        case_pass io-conns-valgrind
    else
        case_fail io-conns-valgrind "rc=$rc (99: valgrind found errors or leaks); $(grep -m3 -E 'Invalid|uninitialised|unaddressable|definitely lost|indirectly lost' "$W/vg.log" | tr '\n' '|')"
        sts_dump "$W/vg.log" "$W/vg.out"
    fi
    # The styles with the most machinery behind them: fopencookie streams,
    # two threads on one session, a session inherited across fork().
    for s in stdio threads fork; do
        m=VG-$s-$$
        sts_message "$W/$m.eml" "$m" 64
        STS_TIMEOUT=120 sts_preload STARTTLS_SHIM_LOG="$W/$m.out.log" \
            valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
            --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --log-file="$W/$m.vg" \
            "$EX/smtp-$s" mail.test 587 "$FROM" "$TO" "$W/$m.eml" "$STS_USER" "$STS_PASS" >"$W/$m.out" 2>&1
        rc=$?
        if [ $rc -eq 0 ] && grep -qx delivered "$W/$m.out"; then
            case_pass "io-$s-valgrind"
        else
            case_fail "io-$s-valgrind" "rc=$rc (99: valgrind found errors or leaks); $(grep -m3 -E 'Invalid|uninitialised|unaddressable|definitely lost|indirectly lost' "$W/$m.vg" | tr '\n' '|')"
            sts_dump "$W/$m.vg" "$W/$m.out"
        fi
    done
fi

# ---------------------------------------------------------------- 6. delayed greetings
# Connections 2, 4, 6, ... to port 2602 get their greeting after 1 s.
for loop in poll epoll; do
    run_client "$W/delay-$loop.out" shim STARTTLS_SHIM_PORTS=2602/smtp "$CONNS" mail.test 2602 "$loop:40"
    rc=$?
    line=$(grep '^PHASE' "$W/delay-$loop.out")
    ms=$(field "$line" ms); failed=$(field "$line" failed)
    note "delayed greeting, $loop: $line"
    if [ $rc -ne 0 ] || [ "$failed" != 0 ]; then
        case_fail "io-delayed-greeting-$loop" "$(why_failed "$W/delay-$loop.out" $rc)"
    elif [ "$ms" -lt 900 ]; then
        case_fail "io-delayed-greeting-$loop" "took $ms ms: the fake server did not delay (test broken)"
    elif [ "$ms" -ge 5000 ]; then
        case_fail "io-delayed-greeting-$loop" "40 connections took $ms ms (>= 5 s): upgrades waited one after the other"
    else
        case_pass "io-delayed-greeting-$loop"
    fi
done

stop_fakes
sts_finish
