#!/usr/bin/env bash
# tests/sanitize.sh: what `make check-sanitize` runs.  Builds the library, the
# wrapper, the unit tests, the examples and the C test clients with
# ASan+UBSan into build-san/, runs the suites below under them, then a
# valgrind memcheck pass over C clients under the normal build.  One line per
# suite ("PASS sanitize/hostile (...)", "FAIL valgrind/scenarios: ..."), then
# "N passed, M failed[, K skipped]"; exit 0 only when every suite is clean.
#
# A suite fails on any sanitizer or valgrind report that involves our code (a
# frame in shim/*.c or libstarttls-shim*.so; tests/sanitize/reports.py decides)
# and on a client that hangs or crashes.  Reports that only involve other code
# (Python, Perl, an example's own leak) are listed as FOREIGN and do not fail
# a suite.  Whether each
# hostile scenario gives its expected outcome is `make check`'s business; here
# the outcomes are counted, not judged.
#
# Suites:
#   sanitize/build      make B=build-san with -fsanitize=address,undefined
#   sanitize/unit       build-san/tests/unit/* (leak detection on)
#   sanitize/clients    tests/sanitize/client.c (ASan, leak detection on) under
#                       the ASan shim against every hostile scenario (policy
#                       verify) and tests/bench/plain.c against the STARTTLS
#                       sink (bulk 8 MiB, 50 connections)
#   sanitize/calls      tests/io/calls.sh (one check per hooked call style), its
#                       program built with ASan, under the ASan shim
#   sanitize/race       tests/io/race.sh (fd ownership races), its program built
#                       with ASan, under the ASan shim
#   sanitize/glibc, sanitize/backend, sanitize/stress
#                       tests/io/{glibc,backend,stress}.sh the same way
#   sanitize/hostile    tests/hostile/run.sh, every scenario under every policy,
#                       its Python client under the ASan shim (through
#                       tests/sanitize/launch.c); Python's own leaks are not
#                       checked
#   sanitize/real-servers  against real Postfix and Dovecot (tests/lib/servers.sh)
#                       under the ASan shim: unmodified smtplib (25, 587 + AUTH),
#                       swaks (587 + AUTH), imaplib, poplib; client.c, every
#                       examples/smtp-* client and examples/imap-fetch (ASan
#                       builds, leak detection on).  Skipped without root / network namespaces.
#                       (curl cannot run with libasan preloaded on Debian 12:
#                       it deadlocks in setlocale() before main.)
#   valgrind/scenarios  client.c under memcheck, normal build, against every
#                       hostile scenario (policy may): no error, no definite
#                       leak from the shim
#   valgrind/sink       tests/bench/plain.c under memcheck against the sink
#
# Environment: SANITIZE_SUITES (names above without the prefix, e.g.
# "unit clients"; default all), SANITIZE_JOBS (parallel scenario runs,
# default 4), SANITIZE_KEEP=1 (keep the work directory build-san/work),
# HOSTILE_POLICIES / HOSTILE_JOBS (passed to tests/hostile/run.sh).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib/common.sh"

SAN=$TOP/build-san
W=$SAN/work
SUITES=${SANITIZE_SUITES:-build unit clients calls race glibc backend stress hostile real-servers scenarios sink}
JOBS=${SANITIZE_JOBS:-4}
SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer"
REPORTS=$HERE/sanitize/reports.py
FS=$TOP/tests/fakeserver/fakeserver.py
SCNDIR=$TOP/tests/hostile/scenarios

# ASan's runtime for programs that are not built with it (Python, Perl).
ASAN_RT=$(gcc -print-file-name=libasan.so)
PY_REAL=$("$PYTHON" -c 'import sys; print(sys.executable)')
export UBSAN_OPTIONS=print_stacktrace=1
# exitcode 86: an ASan error or a leak is told apart from a client's own exit 1.
ASAN_C="detect_leaks=1:halt_on_error=1:exitcode=86"         # our C clients
ASAN_FOREIGN="detect_leaks=0:halt_on_error=1:exitcode=86"   # Python: its own leaks are not ours


want() { case " $SUITES " in *" $1 "*) return 0 ;; esac; return 1; }

# --- helpers --------------------------------------------------------------
pass=0 failn=0 skipn=0
suite_pass() { echo "PASS $1${2:+ ($2)}"; pass=$((pass + 1)); }
suite_fail() { echo "FAIL $1: $2"; failn=$((failn + 1)); }
suite_skip() { echo "SKIP $1: $2"; skipn=$((skipn + 1)); }

# judge SUITE KIND SUMMARY FILE...: scan FILEs (KIND sanitizer or valgrind);
# PASS with SUMMARY when nothing is ours, else FAIL naming the reports.
judge() {
    local suite=$1 kind=$2 summary=$3 out ours foreign
    shift 3
    out=$("$PYTHON" "$REPORTS" "$kind" "$@" 2>&1)
    ours=$(grep -c '^OURS' <<<"$out")
    foreign=$(grep -c '^FOREIGN' <<<"$out")
    [ -n "$out" ] && sed 's/^/    /' <<<"$out" >&2
    if [ "$ours" -gt 0 ]; then
        suite_fail "$suite" "$ours distinct report(s) in the shim: $(grep -m3 '^OURS' <<<"$out" | sed 's/^OURS //; s/ (.*//' | paste -sd';' | cut -c1-600)"
        return 1
    fi
    if [ "$foreign" -gt 0 ]; then summary+=", $foreign foreign report(s) ignored"; fi
    suite_pass "$suite" "$summary"
}

scenarios() { ls "$SCNDIR"/{smtp,pop3,imap}/*.scn 2>/dev/null; }

# run_scenarios MODE POLICY: every hostile scenario, each played once by its
# own fake server, against client.c under the shim (MODE asan: build-san with
# leak detection; valgrind: the normal build under memcheck).  The scenarios
# are dealt to at least SANITIZE_JOBS client processes that play their share
# in a row (at most 30 each: the shim watches at most 32 ports), each after a
# warm-up session against smtp/good that loads OpenSSL.  Every session has a
# 5 s upgrade timeout (stalling scenarios wait it out).  Leaves DIR/results
# ("NAME OUTCOME" lines, OUTCOME from client.c or "hang"), DIR/bad (client
# processes that crashed or hung) and each process's stderr and valgrind XML.
run_scenarios() {
    local mode=$1 pol=$2 d=$W/$1 n i g ngroups warm to=5 pids=() spids=() ports lims targets
    local -a scns
    rm -rf "$d"; mkdir -p "$d"
    mapfile -t scns < <(scenarios | while read -r f; do
        if grep -qE '^timeout|stall|sleep' "$f"; then echo "0 $f"; else echo "1 $f"; fi
    done | sort -s -k1,1 | cut -d' ' -f2-)
    n=${#scns[@]}
    ngroups=$(( (n + 29) / 30 )); [ "$ngroups" -lt "$JOBS" ] && ngroups=$JOBS
    warm=$SCNDIR/smtp/good.scn
    start_fs() { # start_fs SCENARIO DIR
        mkdir -p "$2"
        "$PYTHON" "$FS" "$1" --certs "$W/certs" --count 1 --ready-file "$2/port" --max-time 600 \
            >"$2/server.out" 2>"$2/server.err" </dev/null &
        spids+=($!)
    }
    for ((i = 0; i < n; i++)); do start_fs "${scns[$i]}" "$d/s$i"; done
    if [ -f "$warm" ]; then for ((g = 0; g < ngroups; g++)); do start_fs "$warm" "$d/w$g"; done; fi
    for ((i = 0; i < 200; i++)); do
        [ "$(cat "$d"/s*/port "$d"/w*/port 2>/dev/null | wc -l)" -ge ${#spids[@]} ] && break
        sleep 0.1
    done
    : >"$d/bad"
    for ((g = 0; g < ngroups; g++)); do
        ports= targets=() lims=60
        if [ -s "$d/w$g/port" ]; then
            ports="$(cat "$d/w$g/port")/smtp"; targets+=("smtp:$(cat "$d/w$g/port")")
        fi
        for ((i = g; i < n; i += ngroups)); do
            [ -s "$d/s$i/port" ] || { echo "$(scn_name "${scns[$i]}"): fake server did not start" >>"$d/bad"; continue; }
            proto=$(sed -n 's/^proto  *\([a-z0-9]*\).*/\1/p' "${scns[$i]}" | head -1)
            ports+="${ports:+,}$(cat "$d/s$i/port")/$proto"
            targets+=("$proto:$(cat "$d/s$i/port")")
            lims=$((lims + to + 10))
        done
        if [ "$mode" = asan ]; then
            run=(env LD_PRELOAD="$ASAN_RT:$SAN/libstarttls-shim.so" ASAN_OPTIONS="$ASAN_C" "$SAN/clients/client")
        else
            run=(env LD_PRELOAD="$TOP/build/libstarttls-shim.so"
                 valgrind -q --xml=yes --xml-file="$d/g$g.xml" --leak-check=full --show-leak-kinds=definite
                 --errors-for-leak-kinds=definite --error-exitcode=99 "$TOP/build/clients/client")
        fi
        (
            timeout -k 5 "$lims" env STARTTLS_SHIM_PORTS="$ports" STARTTLS_SHIM_CAFILE="$W/certs/ca.pem" \
                STARTTLS_SHIM_POLICY="$pol" STARTTLS_SHIM_TIMEOUT="$to" "${run[@]}" -s "SECRET$RANDOM" \
                "${targets[@]}" >"$d/g$g.out" 2>"$d/g$g.err" </dev/null
            echo $? >"$d/g$g.rc"
        ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    kill "${spids[@]}" 2>/dev/null; wait "${spids[@]}" 2>/dev/null
    # Map ports back to scenario names.
    : >"$d/results"
    for ((i = 0; i < n; i++)); do
        [ -s "$d/s$i/port" ] || continue
        port=$(cat "$d/s$i/port")
        out=$(grep -h " [a-z0-9]*:$port\( \|$\)" "$d"/g*.out)
        if grep -q "^RESULT" <<<"$out"; then
            echo "$(scn_name "${scns[$i]}") $(sed -n 's/^RESULT [^ ]* //p' <<<"$out")"
        elif grep -q "^BEGIN" <<<"$out"; then
            echo "$(scn_name "${scns[$i]}") hang"
        fi
    done >"$d/results"
    for ((g = 0; g < ngroups; g++)); do
        rc=$(cat "$d/g$g.rc" 2>/dev/null || echo "?")
        case $rc in
        0|99) ;;  # 99: valgrind found errors; judged from the XML
        124|137) echo "client process $g hung (killed after its time limit)" >>"$d/bad" ;;
        86) echo "client process $g: ASan error or leak (exit 86)" >>"$d/bad" ;;
        *) echo "client process $g exited $rc: $(grep -v '^ *#' "$d/g$g.err" | head -2 | paste -sd' ' | cut -c1-200)" >>"$d/bad" ;;
        esac
    done
    grep ' hang$' "$d/results" >>"$d/bad"
}
scn_name() { echo "$(basename "$(dirname "$1")")/$(basename "$1" .scn)"; }
# scenario_summary MODE: "N scenarios: A session, B refused, C error"
scenario_summary() {
    echo "$(wc -l <"$W/$1/results") scenarios: $(awk '{ print $2 }' "$W/$1/results" | sort | uniq -c |
        awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')"
}

cleanup() {
    [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null
    [ "${SANITIZE_KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT

# --- build ----------------------------------------------------------------
rm -rf "$W"; mkdir -p "$W"
need_pkgs valgrind
unit_targets=() ex_targets=()
for f in "$TOP"/tests/unit/*.c; do [ -f "$f" ] && unit_targets+=("build-san/tests/unit/$(basename "$f" .c)"); done
for f in "$TOP"/examples/*.c; do [ -f "$f" ] && ex_targets+=("build-san/examples/$(basename "$f" .c)"); done
build_ok=1
if ! make -C "$TOP" -s B=build-san OPTFLAGS="-O1 -g $SANFLAGS" LDFLAGS="$SANFLAGS" \
        all "${unit_targets[@]}" "${ex_targets[@]}" >"$W/build.log" 2>&1; then
    build_ok=0
elif ! make -C "$TOP" -s all >>"$W/build.log" 2>&1; then   # valgrind uses the normal build
    build_ok=0
fi
mkdir -p "$SAN/clients" "$TOP/build/clients"
# shellcheck disable=SC2086
if [ $build_ok = 1 ] &&
   gcc -O1 -g $SANFLAGS -Wall -Wextra -Werror -o "$SAN/clients/client" "$HERE/sanitize/client.c" >>"$W/build.log" 2>&1 &&
   gcc -O1 -g -Wall -Wextra -Werror -o "$TOP/build/clients/client" "$HERE/sanitize/client.c" >>"$W/build.log" 2>&1 &&
   gcc -static -O2 -Wall -Wextra -Werror -o "$SAN/launch" "$HERE/sanitize/launch.c" >>"$W/build.log" 2>&1 &&
   gcc -O1 -g $SANFLAGS -Wall -Wextra -o "$SAN/clients/plain" "$TOP/tests/bench/plain.c" >>"$W/build.log" 2>&1 &&
   gcc -O1 -g -Wall -Wextra -o "$TOP/build/clients/plain" "$TOP/tests/bench/plain.c" >>"$W/build.log" 2>&1 &&
   gcc -O2 -Wall -Wextra -o "$SAN/clients/sink" "$TOP/tests/bench/sink.c" $(pkg-config --cflags --libs openssl) \
       -lpthread >>"$W/build.log" 2>&1; then
    suite_pass sanitize/build "build-san/: library, wrapper, ${#unit_targets[@]} unit tests, ${#ex_targets[@]} examples, clients"
else
    sed 's/^/    /' "$W/build.log" | tail -30 >&2
    suite_fail sanitize/build "see the compiler output above"
    echo "$pass passed, $failn failed"
    exit 1
fi
"$TOP/tests/lib/mkcerts.sh" "$W/certs" >/dev/null 2>&1 || fail "mkcerts.sh failed"

# --- unit tests -------------------------------------------------------------
if want unit; then
    if [ ${#unit_targets[@]} -eq 0 ]; then
        suite_skip sanitize/unit "no tests/unit/*.c yet"
    else
        ufail=()
        for t in "${unit_targets[@]}"; do
            ASAN_OPTIONS=$ASAN_C timeout -k 2 120 "$TOP/$t" >"$W/unit-$(basename "$t").err" 2>&1 </dev/null ||
                ufail+=("$(basename "$t")")
        done
        if [ ${#ufail[@]} -gt 0 ]; then
            "$PYTHON" "$REPORTS" sanitizer "$W"/unit-*.err | sed 's/^/    /' >&2
            suite_fail sanitize/unit "failed under ASan+UBSan: ${ufail[*]}"
        else
            judge sanitize/unit sanitizer "${#unit_targets[@]} tests" "$W"/unit-*.err
        fi
    fi
fi

# --- C clients under the ASan shim -----------------------------------------------
start_sink() { # start_sink MODE: sets SINK_PID and SINK_PORT
    rm -f "$W/sink.port"
    "$SAN/clients/sink" -o "$W/sink.port" -l "$W/sink.log" -m "$1" \
        -c "$W/certs/good.pem" -k "$W/certs/good.key" 2>>"$W/sink.err" &
    SINK_PID=$!
    for ((i = 0; i < 100; i++)); do [ -s "$W/sink.port" ] && break; sleep 0.05; done
    SINK_PORT=$(cat "$W/sink.port" 2>/dev/null)
}
stop_sink() { kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; SINK_PID=; }

if want clients; then
    if [ -z "$(scenarios)" ]; then
        suite_skip sanitize/clients "no tests/hostile/scenarios"
    else
        run_scenarios asan verify
        bad=$(cat "$W/asan/bad")
        sinkerr=
        for m in bulk rate; do
            start_sink "$m"
            [ -n "$SINK_PORT" ] || { sinkerr="sink did not start"; break; }
            if [ "$m" = bulk ]; then args=(-m bulk -s 8388608); else args=(-m rate -N 50); fi
            timeout -k 2 120 env LD_PRELOAD="$ASAN_RT:$SAN/libstarttls-shim.so" ASAN_OPTIONS="$ASAN_C" \
                STARTTLS_SHIM_PORTS="$SINK_PORT/smtp" STARTTLS_SHIM_CAFILE="$W/certs/ca.pem" \
                "$SAN/clients/plain" -p "$SINK_PORT" -H localhost "${args[@]}" \
                >"$W/plain-$m.out" 2>"$W/plain-$m.err" </dev/null ||
                sinkerr+="plain $m exited $?: $(grep -v '^ *#' "$W/plain-$m.err" | head -2 | paste -sd' ' | cut -c1-200); "
            stop_sink
        done
        if [ -n "$bad" ] || [ -n "$sinkerr" ]; then
            "$PYTHON" "$REPORTS" sanitizer "$W"/asan/g*.err "$W"/plain-*.err | sed 's/^/    /' >&2
            suite_fail sanitize/clients "$(echo "$bad" | head -5 | paste -sd';')${sinkerr}"
        else
            judge sanitize/clients sanitizer "$(scenario_summary asan); plain bulk+rate vs sink ok" \
                "$W"/asan/g*.err "$W"/plain-*.err
        fi
    fi
fi

# --- the hostile suite with its Python client under the ASan shim --------------------
if want hostile; then
    if [ ! -x "$TOP/tests/hostile/run.sh" ]; then
        suite_skip sanitize/hostile "tests/hostile/run.sh missing"
    else
        HOSTILE_KEEP=1 STS_LAUNCH_EXEC="$PY_REAL" STS_LAUNCH_MODE=asan STS_LAUNCH_ASAN="$ASAN_RT" \
            STS_LAUNCH_ASAN_OPTIONS="$ASAN_FOREIGN" PYBIN="$SAN/launch" SHIM_LIB="$SAN/libstarttls-shim.so" \
            timeout -k 5 900 "$TOP/tests/hostile/run.sh" >"$W/hostile.out" 2>"$W/hostile.err" </dev/null
        hrc=$?
        kept=$(sed -n 's/^case directories kept in //p' "$W/hostile.err" | tail -1)
        np=$(grep -c '^PASS' "$W/hostile.out"); nf=$(grep -c '^FAIL' "$W/hostile.out")
        errs=()
        [ -n "$kept" ] && [ -d "$kept" ] && mapfile -t errs < <(ls "$kept"/cases/*/client.err 2>/dev/null)
        if [ $hrc -eq 77 ]; then
            suite_skip sanitize/hostile "$(grep -h '^SKIP' "$W/hostile.err" | tail -1)"
        elif [ ${#errs[@]} -eq 0 ]; then
            suite_fail sanitize/hostile "the suite left no client output to scan (exit $hrc)"
        else
            judge sanitize/hostile sanitizer "${#errs[@]} client runs; hostile verdicts: $np passed, $nf failed" \
                "${errs[@]}"
        fi
        [ -n "$kept" ] && [ "${SANITIZE_KEEP:-0}" != 1 ] && case $kept in /tmp/*|"${TMPDIR:-/tmp}"/*) rm -rf "$kept" ;; esac
    fi
fi

# --- real clients against real Postfix and Dovecot ---------------------------
real_servers() { # in a subshell: servers.sh installs its own EXIT trap
    trap - EXIT    # servers.sh would chain our cleanup (rm -rf $W) into its trap
    . "$TOP/tests/lib/servers.sh"
    servers_start >"$W/servers.log" 2>&1 || exit 3
    local rw=$W/real m port r s ex bad=() ZOO=()
    mkdir -p "$rw"
    # Unmodified Python and Perl clients (curl cannot run with libasan
    # preloaded on Debian 12: it deadlocks in setlocale() before main).
    san() { sts_exec LD_PRELOAD="$ASAN_RT:$SAN/libstarttls-shim.so" STARTTLS_SHIM_CAFILE="$STS_CA" \
        ASAN_OPTIONS="$1" UBSAN_OPTIONS="$UBSAN_OPTIONS" "${@:2}"; }
    # SMTP: smtplib on 25, smtplib with AUTH on 587, swaks with AUTH on 587.
    for port in 25 587; do
        m="SANPY$port-$$"
        sts_message "$rw/m$port.eml" "$m"
        san "$ASAN_FOREIGN" "$PY_REAL" -c '
import smtplib, sys
port, msg, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = smtplib.SMTP("mail.test", port, timeout=30)
s.ehlo("client.test")
if port == 587:
    s.login(user, pw)
s.sendmail("sender@mail.test", [user + "@mail.test"], open(msg, "rb").read())
s.quit()' "$port" "$rw/m$port.eml" "$STS_USER" "$STS_PASS" >"$rw/py-smtp$port.out" 2>"$rw/py-smtp$port.err" ||
            bad+=("smtplib $port exited $?: $(tail -1 "$rw/py-smtp$port.err")")
        sts_wait_delivered "$m" >/dev/null 2>&1 || bad+=("smtplib $port: message $m not delivered")
    done
    m="SANSWAKS-$$"
    san "$ASAN_FOREIGN" swaks --server mail.test --port 587 --auth PLAIN --auth-user "$STS_USER" \
        --auth-password "$STS_PASS" --from sender@mail.test --to "$STS_USER@mail.test" \
        --header "Subject: $m" --body "$m" >"$rw/swaks.out" 2>"$rw/swaks.err" ||
        bad+=("swaks exited $?: $(grep -- '<-\*\*\*\|\*\*\*' "$rw/swaks.out" | tail -1)")
    sts_wait_delivered "$m" >/dev/null 2>&1 || bad+=("swaks: message $m not delivered")
    # IMAP and POP3: fetch the first message back.
    san "$ASAN_FOREIGN" "$PY_REAL" -c '
import imaplib, poplib, sys
user, pw = sys.argv[1], sys.argv[2]
m = imaplib.IMAP4("mail.test", timeout=30)
m.login(user, pw)
m.select("INBOX")
typ, data = m.fetch("1", "(RFC822)")
sys.stdout.write("IMAP %s %d\n" % (typ, len(data[0][1])))
m.logout()
p = poplib.POP3("mail.test", timeout=30)
p.user(user)
p.pass_(pw)
resp, lines, octets = p.retr(1)
sys.stdout.write("POP3 %s %d\n" % (resp.decode()[:3], octets))
p.quit()' "$STS_USER" "$STS_PASS" >"$rw/py-fetch.out" 2>"$rw/py-fetch.err" ||
        bad+=("imaplib/poplib exited $?: $(tail -1 "$rw/py-fetch.err")")
    grep -q '^IMAP OK [1-9]' "$rw/py-fetch.out" || bad+=("imaplib: no message fetched")
    grep -q '^POP3 +OK [1-9]' "$rw/py-fetch.out" || bad+=("poplib: no message fetched")
    # client.c (ASan, leak detection on) on every protocol.
    for pp in smtp/25 imap/143 pop3/110; do
        san "$ASAN_C" "$SAN/clients/client" -h mail.test -s secret "${pp%/*}:${pp#*/}" \
            >"$rw/client-${pp%/*}.out" 2>"$rw/client-${pp%/*}.err"
        r=$?
        [ $r -eq 0 ] || bad+=("client ${pp%/*} exited $r")
        grep -q '^RESULT .* session$' "$rw/client-${pp%/*}.out" ||
            bad+=("client ${pp%/*}: $(grep -h '^RESULT' "$rw/client-${pp%/*}.out" || echo no result) (expected an upgraded session)")
    done
    # The examples/ zoo, built with ASan: AUTH on 587, each must deliver.  An
    # exit 86 (a leak of the example's own) is left to the report scanner.
    for ex in "$SAN"/examples/smtp-*; do
        [ -x "$ex" ] || continue
        s=$(basename "$ex")
        m="SANZOO-$s-$$"
        sts_message "$rw/$s.eml" "$m" 64
        san "$ASAN_C" "$ex" mail.test 587 sender@mail.test "$STS_USER@mail.test" "$rw/$s.eml" \
            "$STS_USER" "$STS_PASS" >"$rw/zoo-$s.out" 2>"$rw/zoo-$s.err"
        r=$?
        if ! grep -qx delivered "$rw/zoo-$s.out" || ! sts_wait_delivered "$m" >/dev/null 2>&1; then
            bad+=("$s exited $r, not delivered: $(tail -2 "$rw/zoo-$s.out" | paste -sd'|')")
        fi
        ZOO+=("$s")
    done
    if [ -x "$SAN/examples/imap-fetch" ]; then
        san "$ASAN_C" "$SAN/examples/imap-fetch" mail.test 143 "$STS_USER" "$STS_PASS" "SANPY25-$$" \
            "$rw/imap-fetch.eml" >"$rw/zoo-imap-fetch.out" 2>"$rw/zoo-imap-fetch.err"
        r=$?
        grep -q "SANPY25-$$" "$rw/imap-fetch.eml" 2>/dev/null ||
            bad+=("imap-fetch exited $r, message not fetched: $(tail -2 "$rw/zoo-imap-fetch.out" | paste -sd'|')")
        ZOO+=(imap-fetch)
    fi
    echo "${#ZOO[@]}" >"$rw/zoo-count"
    printf '%s\n' "${bad[@]}" | grep . >"$rw/bad"
    servers_stop >/dev/null 2>&1
    exit 0
}
if want real-servers; then
    if [ "$(id -u)" -ne 0 ]; then
        suite_skip sanitize/real-servers "needs root (network namespace, real servers)"
    else
        ( real_servers ) >"$W/real-servers.log" 2>&1; rrc=$?
        if [ $rrc -eq 77 ] || [ $rrc -eq 3 ]; then
            suite_skip sanitize/real-servers "servers did not start: $(grep -h 'SKIP\|FAIL' "$W/servers.log" | tail -1)"
        elif [ $rrc -ne 0 ] || [ ! -f "$W/real/bad" ]; then
            suite_fail sanitize/real-servers "the run stopped early (exit $rrc): $(tail -3 "$W/real-servers.log" | paste -sd'|' | cut -c1-300)"
        elif [ -s "$W/real/bad" ]; then
            "$PYTHON" "$REPORTS" sanitizer "$W"/real/*.err | sed 's/^/    /' >&2
            suite_fail sanitize/real-servers "$(paste -sd';' "$W/real/bad" | cut -c1-400)"
        else
            judge sanitize/real-servers sanitizer "smtplib 25 + 587 AUTH, swaks 587 AUTH, imaplib, poplib, client.c smtp/imap/pop3, $(cat "$W/real/zoo-count" 2>/dev/null || echo 0) examples" "$W"/real/*.err
        fi
    fi
fi

# --- valgrind memcheck, normal build --------------------------------------------
if want scenarios; then
    if [ -z "$(scenarios)" ]; then
        suite_skip valgrind/scenarios "no tests/hostile/scenarios"
    else
        run_scenarios valgrind may
        bad=$(cat "$W/valgrind/bad")
        mapfile -t xmls < <(ls "$W"/valgrind/g*.xml 2>/dev/null)
        if [ -n "$bad" ]; then
            "$PYTHON" "$REPORTS" valgrind "${xmls[@]}" | sed 's/^/    /' >&2
            suite_fail valgrind/scenarios "$(echo "$bad" | head -5 | paste -sd';')"
        else
            judge valgrind/scenarios valgrind "$(scenario_summary valgrind)" "${xmls[@]}"
        fi
    fi
fi
# --- tests/io/{calls,race,glibc,backend,stress}.sh under the ASan shim ------
# Each script builds its C program with the flags it is given (CALLS_CFLAGS,
# BACKEND_CFLAGS) and preloads the ASan runtime ahead of the shim.
#   calls    one check per hooked call style
#   race     fd ownership races (close, dup, connect windows)
#   glibc    glibc's own roads out (stdio vtables, dprintf, AIO, vfork, spawn, loader)
#   backend  the TLS backend's isolation (look-alike OpenSSL, OPENSSL_CONF, forged FIN, fork)
#   stress   partial writes, held bytes, splice, signal handlers, fork loop, select/epoll
io_suite() {
    local name=$1 r npass nfail reports f
    rm -f "$W/$name"-asan.*
    BUILD=$SAN CALLS_CFLAGS="$SANFLAGS" CALLS_PRELOAD="$ASAN_RT" \
        BACKEND_CFLAGS="$SANFLAGS" BACKEND_PRELOAD="$ASAN_RT" STRESS_FORKS=300 STRESS_FORK_CONNECT=0 \
        STRESS_SKIP="stress-signal-handler-close:the handler's close() frees memory, and ASan's allocator deadlocks when the interrupted thread holds its lock (calls from handlers are not async-signal-safe; README)" \
        ASAN_OPTIONS="$ASAN_C:log_path=$W/$name-asan" \
        bash "$TOP/tests/io/$name.sh" >"$W/$name.out" 2>"$W/$name.err" </dev/null
    r=$?
    npass=$(grep -c '^PASS' "$W/$name.out") nfail=$(grep -c '^FAIL' "$W/$name.out")
    reports=("$W/$name.err")
    for f in "$W/$name"-asan.*; do [ -f "$f" ] && reports+=("$f"); done
    if [ $r -ne 0 ] || [ "$nfail" -gt 0 ] || [ "$npass" -eq 0 ]; then
        grep '^FAIL' "$W/$name.out" | head -5 | sed 's/^/    /' >&2
        "$PYTHON" "$REPORTS" sanitizer "${reports[@]}" | sed 's/^/    /' >&2
        suite_fail "sanitize/$name" "tests/io/$name.sh under ASan: $npass passed, $nfail failed, exit $r"
    else
        judge "sanitize/$name" sanitizer "$npass checks of tests/io/$name.sh" "${reports[@]}"
    fi
}
for s_ in calls race glibc backend stress; do
    want "$s_" && io_suite "$s_"
done

if want sink; then
    sinkerr=
    for m in bulk rate; do
        start_sink "$m"
        [ -n "$SINK_PORT" ] || { sinkerr="sink did not start"; break; }
        if [ "$m" = bulk ]; then args=(-m bulk -s 2097152); else args=(-m rate -N 10); fi
        timeout -k 2 300 env LD_PRELOAD="$TOP/build/libstarttls-shim.so" STARTTLS_SHIM_PORTS="$SINK_PORT/smtp" \
            STARTTLS_SHIM_CAFILE="$W/certs/ca.pem" \
            valgrind -q --xml=yes --xml-file="$W/vg-plain-$m.xml" --leak-check=full --show-leak-kinds=definite \
            --errors-for-leak-kinds=definite --error-exitcode=99 \
            "$TOP/build/clients/plain" -p "$SINK_PORT" -H localhost "${args[@]}" \
            >"$W/vg-plain-$m.out" 2>"$W/vg-plain-$m.err" </dev/null
        r=$?
        [ $r -eq 0 ] || [ $r -eq 99 ] || sinkerr+="plain $m exited $r: $(head -2 "$W/vg-plain-$m.err" | paste -sd' ' | cut -c1-200); "
        stop_sink
    done
    if [ -n "$sinkerr" ]; then
        suite_fail valgrind/sink "$sinkerr"
    else
        judge valgrind/sink valgrind "plain bulk 2 MiB + 10 connections" "$W"/vg-plain-*.xml
    fi
fi

if [ $skipn -gt 0 ]; then
    echo "$pass passed, $failn failed, $skipn skipped"
else
    echo "$pass passed, $failn failed"
fi
[ $failn -eq 0 ]
