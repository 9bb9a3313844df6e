#!/usr/bin/env bash
# tests/bench/bench.sh: `make bench`, the figures of issue 5 ("Speed").
#
# Contenders, all against the same STARTTLS sink (tests/bench/sink.c, TLS 1.3
# pinned to TLS_AES_256_GCM_SHA384 and X25519, RSA-2048 certificate from
# tests/lib/mkcerts.sh):
#   native   tests/bench/native.c, a hand-written OpenSSL STARTTLS client: the limit
#   shim     tests/bench/plain.c (no TLS code) under LD_PRELOAD=build/libstarttls-shim.so
#   stunnel  plain.c talking plaintext to Debian's stunnel4 (client = yes,
#            protocol = smtp, verifyChain = yes, checkHost) which does STARTTLS
#   plain    plain.c against a plaintext sink: the network-path bound
# The machine is noisy: every row is measured in BENCH_ROUNDS rounds; in a
# round the bulk and rate rows run BENCH_REPS passes, each pass running every
# contender once back to back (order rotated pass by pass). Each cell is
# "median [min-max]" over the passes; "shim / native" is the median of the
# per-pass ratios (paired: runs seconds apart share the same noise, so drift
# between passes cancels).
#
# Settings (environment):
#   BENCH_ROUNDS=7        rounds
#   BENCH_REPS=4          bulk and rate passes per round
#   BENCH_SIZE_MIB=128    bulk payload per run
#   BENCH_RATE_CONNS=300  connections per rate run
#   BENCH_COLD_RUNS=15    spawns per cold-start sample
#   BENCH_TRUE_RUNS=1000  spawns per /bin/true sample
#   BENCH_DD_COUNT=1000000  dd records per wall-time sample
#   BENCH_IDLE_CONNS=1000 BENCH_ROW_CONNS=10000   memory rows
#   BENCH_SHIM_ENV="NAME=VALUE ..."  extra settings for every shim run
#   SHIM_LIB=path         the library (default build/libstarttls-shim.so)
# Rows (each with its target from issue 5 and MET / MISSED; "info" rows
# explain the others): bulk at 512 B / 4 KiB / 64 KiB writes (+ the opt-in
# coalescing mode vs stunnel), connection rate with full handshakes and the
# delayed-ACK stall, resumption rate, cold start, /bin/true with and without
# the preload, untracked-fd cost (callgrind instructions, dd wall time),
# memory per idle connection and over 10,000 connections in a row.
# Output: the table on stdout and in build/bench/results.md; raw samples,
# sink logs and errors in build/bench/run/. Exit 0 when every run worked
# (targets MISSED do not fail the bench), 1 when a contender failed to run.
set -u
. "$(cd "$(dirname "$0")" && pwd)/../lib/common.sh"
cd "$TOP" || exit 1

B=$BUILD/bench
W=$B/run
ROUNDS=${BENCH_ROUNDS:-7}
REPS=${BENCH_REPS:-4}
SIZE_MIB=${BENCH_SIZE_MIB:-128}
RATE_N=${BENCH_RATE_CONNS:-300}
COLD_N=${BENCH_COLD_RUNS:-15}
TRUE_N=${BENCH_TRUE_RUNS:-1000}
DD_COUNT=${BENCH_DD_COUNT:-1000000}
IDLE_N=${BENCH_IDLE_CONNS:-1000}
ROW_N=${BENCH_ROW_CONNS:-10000}
read -r -a EXTRA_SHIM_ENV <<<"${BENCH_SHIM_ENV:-}"
SHIM_LIB_REL=${SHIM_LIB#"$TOP"/}
# "The system trust store" means OpenSSL's defaults here, whatever the
# caller's environment says (the cold-start row sets SSL_CERT_DIR itself).
unset SSL_CERT_FILE SSL_CERT_DIR
START=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }

# ---------------------------------------------------------------- build --
mkdir -p "$B"
rm -rf "$W"
mkdir -p "$W/samples"
BCFLAGS="-O2 -Wall -Wextra -Werror"
OSSL=$(pkg-config --cflags --libs openssl) || die "pkg-config openssl failed (apt-get install libssl-dev pkg-config)"
for p in sink native; do
    # shellcheck disable=SC2086
    cc $BCFLAGS -o "$B/$p" "tests/bench/$p.c" $OSSL -lpthread || die "compiling $p failed"
done
for p in plain spawn; do # no OpenSSL on purpose: the shim's lazy loading must show
    # shellcheck disable=SC2086
    cc $BCFLAGS -o "$B/$p" "tests/bench/$p.c" || die "compiling $p failed"
done
if ldd "$B/plain" | grep -q libssl; then die "plain is linked with libssl; the cold-start rows would lie"; fi

# stunnel4 (a contender) and valgrind (row 9) are optional: installed when
# missing and we are root, else their rows say n/a.
soft_install() {
    local missing=() p
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
    if [ ${#missing[@]} -eq 0 ] || [ "$(id -u)" -ne 0 ]; then return 0; fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } ||
        say "could not install ${missing[*]}; those rows will say n/a"
}
soft_install stunnel4 valgrind

CERTS=$B/certs
bash tests/lib/mkcerts.sh "$CERTS" || die "mkcerts failed"
CA=$CERTS/ca.pem

HAVE_SHIM=0
[ -f "$SHIM_LIB" ] && HAVE_SHIM=1
NO_SHIM="n/a ($SHIM_LIB_REL missing)"

ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
[ "$(ulimit -n)" -ge $((IDLE_N * 2 + 100)) ] || say "warning: ulimit -n $(ulimit -n) is low for $IDLE_N idle connections"

# ------------------------------------------------------------- services --
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_sink NAME ARGS...: sets P_NAME (port) and L_NAME (stats log).
start_sink() {
    local name=$1; shift
    local log=$W/sink-$name.log pf=$W/sink-$name.port
    : >"$log"
    "$B/sink" -o "$pf" -l "$log" "$@" 2>>"$W/sink-$name.err" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -s "$pf" ] && break; sleep 0.05; done
    [ -s "$pf" ] || die "sink $name did not start: $(cat "$W/sink-$name.err")"
    printf -v "P_$name" '%s' "$(cat "$pf")"
    printf -v "L_$name" '%s' "$log"
}
TLSARGS=(-c "$CERTS/good.pem" -k "$CERTS/good.key")
start_sink TBULK "${TLSARGS[@]}" -m bulk          # STARTTLS, read to EOF
start_sink TRATE "${TLSARGS[@]}" -m rate          # STARTTLS, EHLO/QUIT, no tickets
start_sink TTIX  "${TLSARGS[@]}" -m rate -T       # same, issues session tickets
start_sink PBULK -P -m bulk                       # plaintext bounds
start_sink PRATE -P -m rate

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_listen() { for _ in $(seq 100); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.05; done; return 1; }
HAVE_STUNNEL=0
if command -v stunnel4 >/dev/null || command -v stunnel >/dev/null; then
    ST_BIN=$(command -v stunnel4 || command -v stunnel)
    S_BULK=$(free_port); S_RATE=$(free_port); S_WRONG=$(free_port)
    stsvc() { # stsvc NAME ACCEPT CONNECT CHECKHOST
        printf '[%s]\nclient = yes\naccept = 127.0.0.1:%s\nconnect = 127.0.0.1:%s\nprotocol = smtp\n' "$1" "$2" "$3"
        printf 'verifyChain = yes\ncheckHost = %s\nsni = %s\nCAfile = %s\n' "$4" "$4" "$CA"
    }
    {
        printf 'foreground = yes\npid =\ndebug = 3\noutput = %s\n' "$W/stunnel.log"
        stsvc bulk "$S_BULK" "$P_TBULK" localhost
        stsvc rate "$S_RATE" "$P_TRATE" localhost
        stsvc wrong "$S_WRONG" "$P_TRATE" wrong.example
    } >"$W/stunnel.conf"
    "$ST_BIN" "$W/stunnel.conf" >>"$W/stunnel.err" 2>&1 &
    ST_PID=$!
    PIDS+=("$ST_PID")
    if wait_listen "$S_BULK" && wait_listen "$S_RATE" && wait_listen "$S_WRONG"; then
        HAVE_STUNNEL=1
    else
        say "stunnel did not start: $(cat "$W/stunnel.err" "$W/stunnel.log" 2>/dev/null | tail -3)"
    fi
fi
NO_STUNNEL="n/a (stunnel4 not installed)"

# The cold-start rows verify against "the system trust store". We cannot
# (and must not) add the test CA to the machine's store, so both contenders
# get SSL_CERT_DIR = a temporary hashed directory holding links to every
# certificate of /etc/ssl/certs plus the test CA (openssl rehash). That is
# exactly how OpenSSL consults the system store (default directory, per
# issuer hash, lazily); SSL_CERT_FILE stays unset, so whoever also loads the
# default bundle file (/usr/lib/ssl/cert.pem) pays to parse it, as in real life.
CERTDIR=$W/certdir
mkdir -p "$CERTDIR"
for f in /etc/ssl/certs/*.pem; do [ -e "$f" ] && ln -s "$f" "$CERTDIR/" 2>/dev/null; done
cp "$CA" "$CERTDIR/starttls-shim-bench-test-ca.pem"
openssl rehash "$CERTDIR" >/dev/null 2>&1 || die "openssl rehash failed"

SHIM_ENV=(LD_PRELOAD="$SHIM_LIB" STARTTLS_SHIM_POLICY=verify STARTTLS_SHIM_LOG="$W/shim.log" "${EXTRA_SHIM_ENV[@]}")

# ------------------------------------------------------------- sampling --
ERRS=$W/errors.log
: >"$ERRS"
NFAIL=0
rec() { echo "$3" >>"$W/samples/$1.$2"; }          # rec ROW CONTENDER VALUE
failrun() { # failrun WHAT: note a failed run with its stderr
    NFAIL=$((NFAIL + 1))
    { echo "=== $1"; sed 's/^/    /' "$W/err" | tail -20; } >>"$ERRS"
    say "FAILED: $1 (see ${ERRS#"$TOP"/})"
}

# new_lines LOG N0 WANT: wait (<= 3 s) until LOG has N0+WANT lines, print the new ones.
new_lines() {
    local i
    for i in $(seq 60); do [ "$(wc -l <"$1")" -ge $(($2 + $3)) ] && break; sleep 0.05; done
    tail -n +$(($2 + 1)) "$1"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

# check_tls LINES: every line is TLSv1.3 with the pinned suite.
check_tls() { ! grep -v 'proto=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 group=x25519' <<<"$1" | grep -q .; }

# bulk CONTENDER WSIZE: one BENCH_SIZE_MIB run; records MiB/s at the sink.
bulk() {
    local c=$1 w=$2 log n0 line bytes secs
    local -a cmd
    case $c in
    native)  log=$L_TBULK; cmd=("$B/native" -H localhost -p "$P_TBULK" -C "$CA") ;;
    shim)    log=$L_TBULK; cmd=(env "${SHIM_ENV[@]}" STARTTLS_SHIM_CAFILE="$CA" STARTTLS_SHIM_PORTS="$P_TBULK/smtp" "$B/plain" -H localhost -p "$P_TBULK") ;;
    shimc)   log=$L_TBULK; cmd=(env "${SHIM_ENV[@]}" STARTTLS_SHIM_COALESCE=yes STARTTLS_SHIM_CAFILE="$CA" STARTTLS_SHIM_PORTS="$P_TBULK/smtp" "$B/plain" -H localhost -p "$P_TBULK") ;;
    stunnel) log=$L_TBULK; cmd=("$B/plain" -H 127.0.0.1 -p "$S_BULK") ;;
    plain)   log=$L_PBULK; cmd=("$B/plain" -H localhost -p "$P_PBULK") ;;
    esac
    n0=$(wc -l <"$log")
    local st0; st0=$(st_ticks)
    timeout 300 "${cmd[@]}" -m bulk -s "${SIZE_MIB}M" -w "$w" >"$W/out" 2>"$W/err"
    local rc=$? st1; st1=$(st_ticks)
    if [ $rc -ne 0 ]; then
        failrun "bulk $c w=$w: exit $rc$([ $rc = 124 ] && echo ' (timed out)')"; rec "bulk$w" "$c" ERR; rec "cpu$w" "$c" ERR; return
    fi
    line=$(new_lines "$log" "$n0" 1 | head -1)
    bytes=$(field bytes <<<"$line"); secs=$(field secs <<<"$line")
    if [ "$bytes" != $((SIZE_MIB * 1048576)) ] || { [ "$c" != plain ] && ! check_tls "$line"; }; then
        echo "sink saw: $line" >"$W/err"; failrun "bulk $c w=$w: wrong bytes or cipher"; rec "bulk$w" "$c" ERR; rec "cpu$w" "$c" ERR; return
    fi
    rec "bulk$w" "$c" "$(awk -v s="$SIZE_MIB" -v t="$secs" 'BEGIN { printf "%.1f", s / t }')"
    # CPU time is far less disturbed by other load than wall time: the
    # client's own (from its getrusage), plus stunnel's for that contender
    local cpu; cpu=$(field cpu <"$W/out")
    [ "$c" = stunnel ] || { st0=0; st1=0; }
    rec "cpu$w" "$c" "$(awk -v c="$cpu" -v a="$st0" -v b="$st1" -v hz="$HZ" 'BEGIN { printf "%.1f", c * 1000 + (b - a) * 1000 / hz }')"
}
HZ=$(getconf CLK_TCK)
st_ticks() { if [ -n "${ST_PID:-}" ]; then awk '{ print $14 + $15 }' "/proc/$ST_PID/stat" 2>/dev/null || echo 0; else echo 0; fi; }

# rate ROW CONTENDER: one run of RATE_N connections; records conn/s, the
# median per-connection time (ms) and (ticket sink) how many were resumed.
rate() {
    local row=$1 c=$2 log n0 lines out r p50 rc
    local -a cmd
    case $row.$c in
    full.native)   log=$L_TRATE; cmd=("$B/native" -H localhost -p "$P_TRATE" -C "$CA") ;;
    full.shim)     log=$L_TRATE; cmd=(env "${SHIM_ENV[@]}" STARTTLS_SHIM_CAFILE="$CA" STARTTLS_SHIM_PORTS="$P_TRATE/smtp" "$B/plain" -H localhost -p "$P_TRATE") ;;
    full.stunnel)  log=$L_TRATE; cmd=("$B/plain" -H 127.0.0.1 -p "$S_RATE") ;;
    full.plain)    log=$L_PRATE; cmd=("$B/plain" -H localhost -p "$P_PRATE") ;;
    resume.native) log=$L_TTIX;  cmd=("$B/native" -H localhost -p "$P_TTIX" -C "$CA") ;;
    resume.nativer) log=$L_TTIX; cmd=("$B/native" -H localhost -p "$P_TTIX" -C "$CA" -r) ;;
    resume.shim)   log=$L_TTIX;  cmd=(env "${SHIM_ENV[@]}" STARTTLS_SHIM_CAFILE="$CA" STARTTLS_SHIM_PORTS="$P_TTIX/smtp" "$B/plain" -H localhost -p "$P_TTIX") ;;
    esac
    n0=$(wc -l <"$log")
    timeout 300 "${cmd[@]}" -m rate -N "$RATE_N" >"$W/out" 2>"$W/err"
    rc=$?
    if [ $rc -ne 0 ]; then
        failrun "rate $row $c: exit $rc$([ $rc = 124 ] && echo ' (timed out)')"; rec "rate$row" "$c" ERR; rec "p50$row" "$c" ERR; return
    fi
    out=$(grep ' rate conns=' "$W/out")
    r=$(field rate <<<"$out"); p50=$(field p50_ms <<<"$out")
    lines=$(new_lines "$log" "$n0" "$RATE_N")
    if [ "$(grep -c . <<<"$lines")" -ne "$RATE_N" ] || { [ "$c" != plain ] && ! check_tls "$lines"; }; then
        echo "sink saw $(grep -c . <<<"$lines") connections; first odd line: $(grep -v 'cipher=TLS_AES_256_GCM_SHA384' <<<"$lines" | head -1)" >"$W/err"
        failrun "rate $row $c: sink log disagrees"; rec "rate$row" "$c" ERR; rec "p50$row" "$c" ERR; return
    fi
    rec "rate$row" "$c" "$r"; rec "p50$row" "$c" "$p50"
    rec "resumed$row" "$c" "$(grep -c 'resumed=1' <<<"$lines")"
}

# spawnrow ROW RUNS NAME... -- VARIANT [-- VARIANT]...: one interleaved
# spawn run (tests/bench/spawn.c); records each NAME's median µs, and the
# median of its per-cycle ratios to the first variant as ROW.NAME.pratio.
spawnrow() {
    local row=$1 n=$2 out k=0 name; shift 2
    local -a names=()
    while [ "$1" != -- ]; do names+=("$1"); shift; done
    : >"$W/err"
    if ! out=$(timeout 600 "$B/spawn" -n "$n" -E "$W/err" "$@" 2>>"$W/err"); then
        failrun "$row (${names[*]})"
        for name in "${names[@]}"; do rec "$row" "$name" ERR; rec "$row" "$name.pratio" ERR; done
        return
    fi
    for name in "${names[@]}"; do
        local l; l=$(grep "variant=$k " <<<"$out")
        rec "$row" "$name" "$(field median_us <<<"$l")"
        rec "$row" "$name.pratio" "$(field ratio <<<"$l")"
        k=$((k + 1))
    done
}

# Cold start: native (hashed dir), native (bundle), shim -- interleaved.
cold() {
    local -a names=(native nativeB) v=(
        -- SSL_CERT_DIR="$CERTDIR" "$B/native" -H localhost -p "$P_TRATE" -S -m cold
        -- SSL_CERT_DIR="$CERTDIR" "$B/native" -H localhost -p "$P_TRATE" -B -m cold)
    if [ $HAVE_SHIM = 1 ]; then
        names+=(shim)
        v+=(-- "${SHIM_ENV[@]}" STARTTLS_SHIM_PORTS="$P_TRATE/smtp" SSL_CERT_DIR="$CERTDIR"
            "$B/plain" -H localhost -p "$P_TRATE" -m rate -N 1)
    fi
    spawnrow cold "$COLD_N" "${names[@]}" "${v[@]}"
    # the same against the ticket-issuing sink: after the handshake the server
    # sends tickets, which ACK the client's Finished, so no Nagle wait is
    # possible; what remains is start-up and handshake cost
    [ $HAVE_SHIM = 1 ] || return 0
    spawnrow coldT "$COLD_N" native shim \
        -- SSL_CERT_DIR="$CERTDIR" "$B/native" -H localhost -p "$P_TTIX" -S -m cold \
        -- "${SHIM_ENV[@]}" STARTTLS_SHIM_PORTS="$P_TTIX/smtp" SSL_CERT_DIR="$CERTDIR" \
           "$B/plain" -H localhost -p "$P_TTIX" -m rate -N 1
}

# /bin/true: no preload, an empty preloaded library (the floor of any
# LD_PRELOAD), libssl preloaded (what eager OpenSSL loading costs), the shim.
LIBSSL=$(ldd "$B/native" | awk '/libssl\.so/ { print $3 }')
echo 'int starttls_bench_empty;' | cc -O2 -shared -fPIC -x c - -o "$B/empty.so" || die "cannot build empty.so"
truestart() {
    local -a names=(none empty ssl) v=(-- /bin/true -- LD_PRELOAD="$B/empty.so" /bin/true -- LD_PRELOAD="$LIBSSL" /bin/true)
    if [ $HAVE_SHIM = 1 ]; then names+=(shim); v+=(-- LD_PRELOAD="$SHIM_LIB" /bin/true); fi
    spawnrow true "$TRUE_N" "${names[@]}" "${v[@]}"
}

ddwall() {
    local -a names=(none) v=(-- dd if=/dev/zero of=/dev/null bs=64 count="$DD_COUNT")
    if [ $HAVE_SHIM = 1 ]; then names+=(shim); v+=(-- LD_PRELOAD="$SHIM_LIB" dd if=/dev/zero of=/dev/null bs=64 count="$DD_COUNT"); fi
    spawnrow ddwall 10 "${names[@]}" "${v[@]}"
}

# rotate the list by the round number so no contender always goes first
rot() { local k=$1; shift; local -a a=("$@"); local n=${#a[@]} i; for ((i = 0; i < n; i++)); do echo "${a[$(((i + k) % n))]}"; done; }

# ------------------------------------------------------ sanity checks --
# Each contender must really verify: a wrong name / untrusted CA must fail.
VERIFY_NOTES=()
: >"$W/err"
if "$B/native" -H localhost -p "$P_TRATE" -C "$CA" -m rate -N 1 >/dev/null 2>>"$W/err" &&
   ! "$B/native" -H localhost -n wrong.example -p "$P_TRATE" -C "$CA" -m cold 2>/dev/null &&
   ! "$B/native" -H localhost -p "$P_TRATE" -C "$CERTS/other-ca.pem" -m cold 2>/dev/null; then
    VERIFY_NOTES+=("native: accepts the test CA, refuses a wrong name and an unknown CA")
else
    failrun "sanity: native does not verify as expected"
fi
if [ $HAVE_STUNNEL = 1 ]; then
    if "$B/plain" -H 127.0.0.1 -p "$S_RATE" -m rate -N 1 >/dev/null 2>>"$W/err" &&
       ! timeout 20 "$B/plain" -H 127.0.0.1 -p "$S_WRONG" -m rate -N 1 >/dev/null 2>&1; then
        VERIFY_NOTES+=("stunnel: works with checkHost = localhost, fails with checkHost = wrong.example")
    else
        failrun "sanity: stunnel does not verify as expected"; HAVE_STUNNEL=0
    fi
fi
if [ $HAVE_SHIM = 1 ]; then
    if env "${SHIM_ENV[@]}" STARTTLS_SHIM_CAFILE="$CA" STARTTLS_SHIM_PORTS="$P_TRATE/smtp" \
           timeout 20 "$B/plain" -H localhost -p "$P_TRATE" -m rate -N 1 >/dev/null 2>>"$W/err" &&
       ! env "${SHIM_ENV[@]}" STARTTLS_SHIM_CAFILE="$CERTS/other-ca.pem" STARTTLS_SHIM_PORTS="$P_TRATE/smtp" \
           timeout 20 "$B/plain" -H localhost -p "$P_TRATE" -m rate -N 1 >/dev/null 2>&1; then
        VERIFY_NOTES+=("shim: works with the test CA, refuses the connection when only an unknown CA is given")
    else
        failrun "sanity: shim does not upgrade+verify as expected (plain -m rate -N 1 under the shim)"
    fi
fi

# --------------------------------------------------------------- rounds --
CONTS=(native plain)
[ $HAVE_SHIM = 1 ] && CONTS+=(shim)
[ $HAVE_STUNNEL = 1 ] && CONTS+=(stunnel)
for ((r = 1; r <= ROUNDS; r++)); do
    say "round $r/$ROUNDS ($(($(date +%s) - START)) s so far)"
    for ((p = r * REPS; p < (r + 1) * REPS; p++)); do
        for w in 512 4096 65536; do
            BC=("${CONTS[@]}")
            [ $HAVE_SHIM = 1 ] && [ $w = 512 ] && BC+=(shimc) # the opt-in coalescing mode
            for c in $(rot "$p" "${BC[@]}"); do bulk "$c" "$w"; done
        done
        for c in $(rot "$p" "${CONTS[@]}"); do rate full "$c"; done
        RC=(native nativer); [ $HAVE_SHIM = 1 ] && RC+=(shim)
        for c in $(rot "$p" "${RC[@]}"); do rate resume "$c"; done
    done
    cold      # these three interleave their variants run by run (spawn.c)
    truestart
    ddwall
done

# ------------------------------------------------------- instructions --
# Per-call cost from the slope between two dd sizes, so the library's load
# and constructor cost (paid once) does not count as per-call cost.
say "callgrind (dd bs=64)"
cg() { # cg COUNT [env ...]: prints the Ir total
    local n=$1; shift
    env "$@" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        dd if=/dev/zero of=/dev/null bs=64 count="$n" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
IR_NOTE=""
if command -v valgrind >/dev/null; then
    IR_N1=$(cg 100000); IR_N2=$(cg 200000)
    if [ $HAVE_SHIM = 1 ]; then
        IR_S1=$(cg 100000 LD_PRELOAD="$SHIM_LIB"); IR_S2=$(cg 200000 LD_PRELOAD="$SHIM_LIB")
    fi
else
    IR_NOTE="valgrind not installed (apt-get install valgrind)"
fi

# --------------------------------------------------------------- memory --
say "memory ($IDLE_N idle, $ROW_N in a row)"
hold() { # hold CONTENDER: prints "start warm end" KiB
    local -a cmd
    case $1 in
    native) cmd=("$B/native" -H localhost -p "$P_TBULK" -C "$CA") ;;
    shim)   cmd=(env "${SHIM_ENV[@]}" STARTTLS_SHIM_CAFILE="$CA" STARTTLS_SHIM_PORTS="$P_TBULK/smtp" "$B/plain" -H localhost -p "$P_TBULK") ;;
    plain)  cmd=("$B/plain" -H localhost -p "$P_PBULK") ;;
    esac
    if ! timeout 300 "${cmd[@]}" -m hold -N "$IDLE_N" >"$W/out" 2>"$W/err"; then failrun "hold $1"; return; fi
    local o; o=$(grep ' hold n=' "$W/out")
    echo "$(field rss_start <<<"$o") $(field rss_warm <<<"$o") $(field rss_end <<<"$o")"
}
row10k() { # row10k CONTENDER: prints "rss@1000 rss@N"
    local -a cmd
    case $1 in
    native) cmd=("$B/native" -H localhost -p "$P_TTIX" -C "$CA" -r) ;;
    shim)   cmd=(env "${SHIM_ENV[@]}" STARTTLS_SHIM_CAFILE="$CA" STARTTLS_SHIM_PORTS="$P_TTIX/smtp" "$B/plain" -H localhost -p "$P_TTIX") ;;
    esac
    if ! timeout 600 "${cmd[@]}" -m rate -R -N "$ROW_N" >"$W/out" 2>"$W/err"; then failrun "10k in a row $1"; return; fi
    cp "$W/out" "$W/row10k-$1.out"
    echo "$(sed -n 's/.* rss at=1000 kib=\([0-9]*\).*/\1/p' "$W/out") $(sed -n "s/.* rss at=$ROW_N kib=\([0-9]*\).*/\1/p" "$W/out")"
}
MEM_NATIVE=$(hold native); MEM_PLAIN=$(hold plain)
ROW_NATIVE=$(row10k native)
if [ $HAVE_SHIM = 1 ]; then MEM_SHIM=$(hold shim); ROW_SHIM=$(row10k shim); fi

# ---------------------------------------------------------------- table --
# stats FILE: "median min max" of the numeric lines, or "" when none.
stats() {
    [ -f "$1" ] || return 0
    grep -v ERR "$1" | sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) exit
        m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        print m, a[1], a[NR] }'
}
nerr() { [ -f "$1" ] || { echo 0; return; }; grep -c ERR "$1" || true; }
# cell FILE DECIMALS [SCALE]: "median [min–max]" (values divided by SCALE).
cell() {
    local s; s=$(stats "$1")
    if [ -z "$s" ]; then echo "FAILED (see run/errors.log)"; return; fi
    awk -v d="$2" -v k="${3:-1}" -v e="$(nerr "$1")" '{ f = "%." d "f"
        printf(f " [" f "–" f "]%s", $1 / k, $2 / k, $3 / k, e > 0 ? " (" e " failed)" : "") }' <<<"$s"
}
# ratio A B: median [min–max] of per-round A/B (paired by round).
ratio_stats() {
    if [ -f "$1.pratio" ]; then stats "$1.pratio"; return; fi # paired run by run
    [ -f "$1" ] && [ -f "$2" ] || return 0
    paste "$1" "$2" | awk '$1 != "ERR" && $2 != "ERR" && $2 > 0 { print $1 / $2 }' | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) exit
            m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m, a[1], a[NR] }'
}
ratio_cell() { local s; s=$(ratio_stats "$1" "$2"); [ -n "$s" ] && awk '{ printf("%.3f× [%.2f–%.2f]", $1, $2, $3) }' <<<"$s" || echo "n/a"; }
ratio_med() { ratio_stats "$1" "$2" | awk '{ print $1 }'; }
# verdict VALUE OP TARGET: MET / MISSED / n/a
verdict() { [ -z "$1" ] && { echo "n/a"; return; }; awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
    ok = (op == ">=") ? v >= t : v <= t; print ok ? "MET" : "MISSED" }'; }
# withratio FILE BASE DECIMALS: cell plus "(×ratio vs BASE)"
withratio() { local c r; c=$(cell "$1" "$3" "${4:-1}"); r=$(ratio_med "$1" "$2"); [ -n "$r" ] && c="$c ($(printf '%.2f' "$r")×)"; echo "$c"; }

S=$W/samples
ROWS=()
row() { ROWS+=("| $(printf '%s | ' "$@")"); }
shimcell() { if [ $HAVE_SHIM = 1 ]; then "$@"; else echo "$NO_SHIM"; fi; }
stcell() { if [ $HAVE_STUNNEL = 1 ]; then "$@"; else echo "$NO_STUNNEL"; fi; }

n=0
for w in 512 4096 65536; do
    n=$((n + 1))
    case $w in 512) lbl="512 B"; tgt=0.90 ;; 4096) lbl="4 KiB"; tgt=0.95 ;; 65536) lbl="64 KiB"; tgt=0.95 ;; esac
    f=$S/bulk$w
    row "$n" "Bulk ${SIZE_MIB} MiB in $lbl writes, MiB/s at the sink (first payload byte → EOF)" \
        "$(cell "$f.native" 0)" "$(shimcell withratio "$f.shim" "$f.native" 0)" \
        "$(stcell withratio "$f.stunnel" "$f.native" 0)" "$(withratio "$f.plain" "$f.native" 0)" \
        "$(shimcell ratio_cell "$f.shim" "$f.native")" "shim ÷ native ≥ $tgt" \
        "$([ $HAVE_SHIM = 1 ] && verdict "$(ratio_med "$f.shim" "$f.native")" ">=" "$tgt" || echo n/a)"
done
n=0
for w in 512 4096 65536; do
    n=$((n + 1))
    f=$S/cpu$w
    row "${n}i" "(info) CPU time of the client side for one ${SIZE_MIB} MiB run in $w B writes, ms (its getrusage; stunnel: client + stunnel process); robust to other load, lower is better" \
        "$(cell "$f.native" 0)" "$(shimcell withratio "$f.shim" "$f.native" 0)" "$(stcell withratio "$f.stunnel" "$f.native" 0)" "$(withratio "$f.plain" "$f.native" 0)" \
        "$(shimcell ratio_cell "$f.shim" "$f.native")" "–" "info"
done
f=$S/bulk512
CO=""
[ $HAVE_SHIM = 1 ] && [ $HAVE_STUNNEL = 1 ] && CO=$(ratio_med "$f.shimc" "$f.stunnel")
row "1c" "Bulk in 512 B writes with the opt-in coalescing mode (STARTTLS_SHIM_COALESCE=yes), MiB/s; ratio here is shim ÷ stunnel" \
    "$(cell "$f.native" 0)" "$(shimcell withratio "$f.shimc" "$f.native" 0)" "$(stcell withratio "$f.stunnel" "$f.native" 0)" "–" \
    "$([ -n "$CO" ] && shimcell ratio_cell "$f.shimc" "$f.stunnel" || echo n/a)" "coalescing shim ≥ stunnel at 512 B" "$(verdict "$CO" ">=" 1.0)"
f=$S/ratefull
row 4 "Connection rate, full handshakes (connect, greeting, EHLO, STARTTLS, handshake with chain + name check, EHLO, QUIT, close; sink sends no tickets), conn/s, $RATE_N per run" \
    "$(cell "$f.native" 0)" "$(shimcell withratio "$f.shim" "$f.native" 0)" \
    "$(stcell withratio "$f.stunnel" "$f.native" 0)" "$(withratio "$f.plain" "$f.native" 0)" \
    "$(shimcell ratio_cell "$f.shim" "$f.native")" "shim ÷ native ≥ 0.95 (stunnel: 0.74)" \
    "$([ $HAVE_SHIM = 1 ] && verdict "$(ratio_med "$f.shim" "$f.native")" ">=" 0.95 || echo n/a)"
f=$S/p50full
STALL=""
[ $HAVE_SHIM = 1 ] && STALL=$(paste "$f.shim" "$f.native" | awk '$1 != "ERR" && $2 != "ERR" { print $1 - $2 }' | sort -g |
    awk '{ a[NR] = $1 } END { if (NR) print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
row 5 "Delayed-ACK stall: median time of one connection in the row-4 runs, ms (a ~40 ms stall on every connection shows here)" \
    "$(cell "$f.native" 2)" "$(shimcell cell "$f.shim" 2)" "$(stcell cell "$f.stunnel" 2)" "$(cell "$f.plain" 2)" \
    "$([ -n "$STALL" ] && printf '%+.2f ms' "$STALL" || echo n/a)" "no ~40 ms stall: shim − native < 20 ms" "$(verdict "$STALL" "<=" 20)"
f=$S/rateresume
RES=""
[ $HAVE_SHIM = 1 ] && RES=" (resumed: $(stats "$S/resumedresume.shim" | awk '{ print $1 }')/$RATE_N per run)"
row 6 "Resumption: shim with session resumption vs native full handshakes, same ticket-issuing sink, conn/s" \
    "$(cell "$f.native" 0)" "$(shimcell withratio "$f.shim" "$f.native" 0)$RES" "–" "–" \
    "$(shimcell ratio_cell "$f.shim" "$f.native")" "shim ÷ native-full ≥ 1.3" \
    "$([ $HAVE_SHIM = 1 ] && verdict "$(ratio_med "$f.shim" "$f.native")" ">=" 1.3 || echo n/a)"
row "6i" "(info) native resuming too (-r), same sink, conn/s" "$(withratio "$f.nativer" "$f.native" 0)" "–" "–" "–" "–" "–" "info"
f=$S/cold
row 7 "Cold start: spawn → exit of a fresh process making one upgraded, verified connection (EHLO, QUIT), system store = hashed dir (SSL_CERT_DIR), ms; $COLD_N spawns per sample" \
    "$(cell "$f.native" 2 1000)" "$(shimcell withratio "$f.shim" "$f.native" 2 1000)" "–" "–" \
    "$(shimcell ratio_cell "$f.shim" "$f.native")" "shim ÷ native ≤ 1.2" \
    "$([ $HAVE_SHIM = 1 ] && verdict "$(ratio_med "$f.shim" "$f.native")" "<=" 1.2 || echo n/a)"
row "7i" "(info) native loading the system store the usual way (SSL_CTX_set_default_verify_paths: parses the whole bundle), ms" \
    "$(cell "$f.nativeB" 2 1000) ($(printf '%.2f' "$(ratio_med "$f.nativeB" "$f.native")")× native)" "–" "–" "–" "–" "–" "info"
f=$S/coldT
row "7ii" "(info) cold start as row 7 but against the ticket-issuing sink (its tickets ACK the client's Finished, so no post-handshake Nagle wait), ms" \
    "$(cell "$f.native" 2 1000)" "$(shimcell withratio "$f.shim" "$f.native" 2 1000)" "–" "–" \
    "$(shimcell ratio_cell "$f.shim" "$f.native")" "–" "info"
f=$S/true
row 8 "/bin/true spawn → exit, µs (native column: no preload; shim column: LD_PRELOAD=$SHIM_LIB_REL); $TRUE_N spawns per sample" \
    "$(cell "$f.none" 0)" "$(shimcell withratio "$f.shim" "$f.none" 0)" "–" "–" \
    "$(shimcell ratio_cell "$f.shim" "$f.none")" "≤ 1.05" \
    "$([ $HAVE_SHIM = 1 ] && verdict "$(ratio_med "$f.shim" "$f.none")" "<=" 1.05 || echo n/a)"
row "8i" "(info) /bin/true with an empty library preloaded: what any LD_PRELOAD costs, µs" \
    "$(withratio "$f.empty" "$f.none" 0)" "–" "–" "–" "–" "–" "info"
row "8ii" "(info) /bin/true with libssl preloaded: what loading OpenSSL eagerly would cost, µs" \
    "$(withratio "$f.ssl" "$f.none" 0)" "–" "–" "–" "–" "–" "info"
if [ -n "$IR_NOTE" ]; then
    row 9 "Untracked fds: extra instructions per read/write call (callgrind, dd bs=64)" "$IR_NOTE" "$IR_NOTE" "–" "–" "–" "≤ 20" "n/a"
else
    IRB=$(awk -v a="$IR_N1" -v b="$IR_N2" 'BEGIN { printf "%.1f", (b - a) / 200000 }')
    if [ $HAVE_SHIM = 1 ]; then
        IRX=$(awk -v a="$IR_N1" -v b="$IR_N2" -v c="$IR_S1" -v d="$IR_S2" 'BEGIN { printf "%.1f", ((d - c) - (b - a)) / 200000 }')
        IRF=$(awk -v a="$IR_N1" -v c="$IR_S1" -v x="$IRX" 'BEGIN { printf "%.0f", (c - a) - x * 200000 }')
        IRS="+$IRX per call (plus $IRF instructions once per process)"
    else IRS=$NO_SHIM; IRX=""; fi
    row 9 "Untracked fds: extra instructions per read/write call (callgrind Ir, dd bs=64, slope between count=100000 and 200000 = 200,000 calls)" \
        "$IRB per call (libc + kernel entry)" "$IRS" "–" "–" "–" "≤ 20 extra" "$(verdict "$IRX" "<=" 20)"
fi
f=$S/ddwall
row 10 "Untracked fds: wall time of dd bs=64 count=$DD_COUNT, ms (10 runs per sample, interleaved)" \
    "$(cell "$f.none" 1 1000)" "$(shimcell withratio "$f.shim" "$f.none" 1 1000)" "–" "–" \
    "$(shimcell ratio_cell "$f.shim" "$f.none")" "≤ 1.02" \
    "$([ $HAVE_SHIM = 1 ] && verdict "$(ratio_med "$f.shim" "$f.none")" "<=" 1.02 || echo n/a)"
perconn() { # "start warm end" -> KiB per connection after the first
    [ -n "$1" ] || { echo "FAILED"; return; }
    awk -v n="$IDLE_N" '{ printf "%.1f KiB (RSS %d → %d → %d KiB)", ($3 - $2) / n, $1, $2, $3 }' <<<"$1"
}
MEMV=""
[ $HAVE_SHIM = 1 ] && [ -n "${MEM_SHIM:-}" ] && MEMV=$(awk -v n="$IDLE_N" '{ print ($3 - $2) / n }' <<<"$MEM_SHIM")
row 11 "Memory: RSS growth per idle upgraded connection, $IDLE_N open at once in one process (after 1 warm-up connection; RSS before any → after warm-up → after all)" \
    "$(perconn "${MEM_NATIVE:-}")" "$(shimcell perconn "${MEM_SHIM:-}")" "–" "$(perconn "${MEM_PLAIN:-}")" "–" "≤ 48 KiB" "$(verdict "$MEMV" "<=" 48)"
growth() { [ -n "$1" ] || { echo "FAILED"; return; }; awk '{ printf "%+d KiB (%d → %d KiB)", $2 - $1, $1, $2 }' <<<"$1"; }
ROWV=""
[ $HAVE_SHIM = 1 ] && [ -n "${ROW_SHIM:-}" ] && ROWV=$(awk '{ print $2 - $1 }' <<<"$ROW_SHIM")
row 12 "Memory: RSS growth from the 1,000th to the ${ROW_N}th connection in a row (ticket sink; native resumes)" \
    "$(growth "${ROW_NATIVE:-}")" "$(shimcell growth "${ROW_SHIM:-}")" "–" "–" "–" "no growth (≤ 128 KiB over $((ROW_N - 1000)) connections)" "$(verdict "$ROWV" "<=" 128)"

{
    echo "# starttls-shim benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $(nproc) CPUs, $(uname -sr), $(openssl version | cut -d' ' -f1-2), stunnel $( [ $HAVE_STUNNEL = 1 ] && "$ST_BIN" -version 2>&1 | sed -n 's/^stunnel \([0-9.]*\).*/\1/p' | head -1 || echo -)."
    echo "Load average (1/5/15 min) at start: $LOAD0; at end: $(cut -d' ' -f1-3 /proc/loadavg) -- anything above ~0.5 means other work shared the 2 CPUs."
    echo "Command: \`make bench\` (tests/bench/bench.sh), BENCH_ROUNDS=$ROUNDS BENCH_REPS=$REPS BENCH_SIZE_MIB=$SIZE_MIB BENCH_RATE_CONNS=$RATE_N; took $(($(date +%s) - START)) s."
    echo "Cells: median [min–max] over $((ROUNDS * REPS)) passes ($ROUNDS rounds × $REPS) for the bulk and rate rows, over $ROUNDS rounds for the spawn rows (7, 8, 10; those alternate their variants spawn by spawn); contenders alternate inside a pass; (n×) = median of the per-pass ratios to native (or to the no-preload baseline); \"shim ÷ native\" = median [min–max] of the per-pass ratios."
    echo "Sink: TLS 1.3 only, TLS_AES_256_GCM_SHA384, X25519, RSA-2048 (every TLS run's sink log line is checked for these); native = hand-written OpenSSL client, shim = plain.c (no TLS code) under the shim, stunnel = plain.c → stunnel4 → sink, plain TCP = plain.c → plaintext sink."
    echo
    echo "| # | what is measured | native (the limit) | shim | stunnel | plain TCP | shim ÷ native | target (issue 5) | verdict |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Verification is on for every contender (checked before the rounds):"
    printf -- '- %s\n' "${VERIFY_NOTES[@]}"
    [ $HAVE_SHIM = 1 ] || echo "- shim: $NO_SHIM; its rows are n/a."
    echo
    echo "Notes:"
    echo "- native sets TCP_NODELAY right after the handshake in the dialogue rows (4-7): without it, against a sink that sends no session tickets, its EHLO waits for the delayed ACK of its Finished (~40 ms, ~22 conn/s). In bulk it sets it just before SSL_shutdown."
    echo "- Cold start: both contenders get SSL_CERT_DIR = a temporary hashed directory (links to /etc/ssl/certs/*.pem plus the test CA, openssl rehash); SSL_CERT_FILE is left alone, so a client that also loads the default bundle parses it (row 7i shows that cost). The shim gets no STARTTLS_SHIM_CAFILE there."
    echo "- Bulk wall-time rows swing with other load on the 2 CPUs (see the load average above); rows 1i-3i give the client-side CPU time of the same runs, which load barely disturbs: a shim ÷ native CPU ratio above 1 is real work the shim adds per byte."
    echo "- Memory rows run once (not per round). Row 9 uses the slope between two dd sizes, so the one-time load/constructor cost is reported separately."
    [ "$NFAIL" -gt 0 ] && echo "- $NFAIL run(s) FAILED; details in build/bench/run/errors.log."
} >"$B/results.md"
cat "$B/results.md"
say "table written to ${B#"$TOP"/}/results.md ($(($(date +%s) - START)) s)"
[ "$NFAIL" -eq 0 ]
