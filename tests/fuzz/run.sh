#!/usr/bin/env bash
# tests/fuzz/run.sh [TARGET...]: build the libFuzzer targets into build/fuzz/
# and run each for FUZZ_SECONDS (default 20), two at a time.  Prints per target
#     PASS fuzz/smtp (123456 execs, cov 210, ft 640, corpus 95)
#     FAIL fuzz/imap: crash; input build/fuzz/artifacts/imap-crash-...; reproduce: build/fuzz/fuzz_imap FILE
# then "N passed, M failed".  Exit 0 only when every target ran clean.
#
# Targets (tests/fuzz/*.c, see the comment at the top of each):
#   smtp pop3 imap   the dialogues of shim/{smtp,pop3,imap}.c fed line by line
#                    through line_split() (and smtp_reply_line()), fuzz_dialogue.c
#   engine           the upgrade engine (shim/conn.c) over a socketpair with a
#                    stub TLS backend: buffers, refusals, plaintext fallback
#   config           config_parse_ports/policy/timeout and config_load
#
# Environment:
#   FUZZ_SECONDS   seconds per target (default 20; 0 = only replay the seeds)
#   FUZZ_JOBS      targets run at once (default 2)
#   FUZZ_OUT       build and work directory (default build/fuzz)
#   FUZZ_CC        compiler (default clang; it needs libclang-rt-14-dev)
#   FUZZ_CFLAGS    extra compiler flags, e.g. -fno-sanitize=pointer-overflow
#                  to look past a known finding for the next one
#   FUZZ_SHIM_SRC  fuzz another copy of shim/ (e.g. a patched one)
# The growing corpus is kept in $FUZZ_OUT/corpus/<target>/ between runs; the
# seeds in tests/fuzz/corpus/<target>/ are only read (regenerate them with
# tests/fuzz/mkseeds.py).  Longer runs: FUZZ_SECONDS=3600 make fuzz, or
# FUZZ_SECONDS=3600 tests/fuzz/run.sh engine smtp.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../lib/common.sh"

SECONDS_EACH=${FUZZ_SECONDS:-20}
JOBS=${FUZZ_JOBS:-2}
OUT=${FUZZ_OUT:-$TOP/build/fuzz}
FCC=${FUZZ_CC:-clang}
SRC=${FUZZ_SHIM_SRC:-$TOP/shim}
ALL_TARGETS="smtp pop3 imap engine config"
TARGETS=${*:-$ALL_TARGETS}

for t in $TARGETS; do
    case " $ALL_TARGETS " in *" $t "*) ;; *) echo "unknown fuzz target '$t' (known: $ALL_TARGETS)" >&2; exit 2 ;; esac
done

command -v "$FCC" >/dev/null 2>&1 || need_pkgs clang libclang-rt-14-dev
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
    >"${TMPDIR:-/tmp}/sts-fuzzprobe.$$.c"
if ! "$FCC" -fsanitize=fuzzer,address,undefined -o "${TMPDIR:-/tmp}/sts-fuzzprobe.$$" \
        "${TMPDIR:-/tmp}/sts-fuzzprobe.$$.c" 2>/dev/null; then
    need_pkgs clang libclang-rt-14-dev
    "$FCC" -fsanitize=fuzzer,address,undefined -o "${TMPDIR:-/tmp}/sts-fuzzprobe.$$" \
        "${TMPDIR:-/tmp}/sts-fuzzprobe.$$.c" 2>/dev/null ||
        { rm -f "${TMPDIR:-/tmp}"/sts-fuzzprobe.$$*; skip "$FCC cannot build -fsanitize=fuzzer (apt-get install clang libclang-rt-14-dev)"; }
fi
rm -f "${TMPDIR:-/tmp}"/sts-fuzzprobe.$$*

# --- build ---------------------------------------------------------------
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-g -O1 -fno-omit-frame-pointer $SAN -std=gnu11 -DVERSION=\"fuzz\" -DLIBDIR=\"/nonexistent\" ${FUZZ_CFLAGS:-}"
mkdir -p "$OUT/obj" "$OUT/artifacts"
build_log=$OUT/build.log
: >"$build_log"
objs=()
for src in "$SRC"/*.c; do
    base=$(basename "$src" .c)
    case $base in init|main|tls-openssl|hook-*) continue ;; esac   # no hooks, no OpenSSL
    obj=$OUT/obj/$base.o
    # shellcheck disable=SC2086
    "$FCC" $CFLAGS -fsanitize=fuzzer-no-link -c -o "$obj" "$src" >>"$build_log" 2>&1 ||
        { cat "$build_log" >&2; fail "cannot compile $src for fuzzing"; }
    objs+=("$obj")
done
rm -f "$OUT/libshim-fuzz.a"
ar rcs "$OUT/libshim-fuzz.a" "${objs[@]}" || fail "ar"

build_target() { # build_target NAME SOURCE EXTRA-CFLAGS
    # shellcheck disable=SC2086
    "$FCC" $CFLAGS -Wall -Wextra -Werror -fsanitize=fuzzer -I"$SRC" $3 -o "$OUT/fuzz_$1" "$HERE/$2" \
        "$OUT/libshim-fuzz.a" -ldl -lpthread >>"$build_log" 2>&1 ||
        { cat "$build_log" >&2; fail "cannot build fuzz target $1"; }
}
for t in $TARGETS; do
    case $t in
    smtp|pop3|imap) build_target "$t" fuzz_dialogue.c "-DFUZZ_PROTO=proto_$t" ;;
    engine)         build_target engine fuzz_engine.c "" ;;
    config)         build_target config fuzz_config.c "" ;;
    esac
done

# --- run -----------------------------------------------------------------
max_len() { case $1 in engine) echo 20000 ;; config) echo 1024 ;; *) echo 12000 ;; esac; }

run_target() { # run_target NAME: writes $OUT/NAME.log and $OUT/NAME.rc
    local t=$1 args rc
    mkdir -p "$OUT/corpus/$t"
    args=(-print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")"
          -dict="$HERE/dict/$t.dict" -artifact_prefix="$OUT/artifacts/$t-")
    if [ "$SECONDS_EACH" -gt 0 ]; then
        args+=(-max_total_time="$SECONDS_EACH")
    else
        args+=(-runs=0)
    fi
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        timeout -k 10 $((SECONDS_EACH + 120)) "$OUT/fuzz_$t" "${args[@]}" \
        "$OUT/corpus/$t" "$HERE/corpus/$t" >"$OUT/$t.log" 2>&1 </dev/null
    rc=$?
    echo "$rc" >"$OUT/$t.rc"
}

rm -f "$OUT"/*.rc
running=0
for t in $TARGETS; do
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
    run_target "$t" &
    running=$((running + 1))
done
wait

pass=0 failn=0
for t in $TARGETS; do
    log=$OUT/$t.log
    rc=$(cat "$OUT/$t.rc" 2>/dev/null || echo 99)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -aE '^#[0-9]+.*cov: ' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | head -1)
    if [ "$rc" -eq 0 ] && ! grep -aqE '^==[0-9]+==ERROR|runtime error:|INVARIANT BROKEN' "$log" && [ -n "$execs" ]; then
        echo "PASS fuzz/$t (${execs} execs in ${SECONDS_EACH}s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?})"
        pass=$((pass + 1))
    else
        why=$(grep -a -m1 -E 'INVARIANT BROKEN|^==[0-9]+==ERROR|runtime error:|ERROR: libFuzzer' "$log" | cut -c1-200 | LC_ALL=C tr -c '[:print:]\n' '?')
        echo "FAIL fuzz/$t: ${why:-exit $rc}${artifact:+; input $artifact; reproduce: $OUT/fuzz_$t $artifact}"
        {
            echo "--- $log (first report):"
            grep -a -m1 -A25 -E 'INVARIANT BROKEN|^==[0-9]+==ERROR|runtime error:' "$log" | sed 's/^/    /'
        } >&2
        failn=$((failn + 1))
    fi
done
echo "$pass passed, $failn failed"
[ "$failn" -eq 0 ]
