#!/usr/bin/env bash
# tests/run.sh [TEST...]: run starttls-shim's tests and print one summary line
#   N passed, M failed, K skipped
# A test is an executable. It either exits 0 (pass), 77 (skip, reason on
# stderr) or anything else (fail), or it runs several cases and prints one line
# per case on stdout: "PASS name", "FAIL name: why", "SKIP name: why"; then those
# lines are what counts. Without arguments every test under tests/ runs, in the
# order: setup, unit, io, integration, hostile.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
logdir=${STS_LOGDIR:-$top/build/test-logs}
mkdir -p "$logdir"

if [ $# -eq 0 ]; then
    set -- $(ls tests/setup/*.sh 2>/dev/null) \
           $(ls build/tests/unit/* 2>/dev/null) \
           $(ls tests/io/*.sh 2>/dev/null) \
           $(ls tests/integration/*.sh 2>/dev/null) \
           $(ls tests/hostile/*.sh 2>/dev/null)
fi

pass=0 failn=0 skipn=0
failed=()
for t in "$@"; do
    name=${t#"$top"/}
    log="$logdir/$(echo "$name" | tr '/' '_').log"
    start=$(date +%s)
    "$t" >"$log.out" 2>"$log" </dev/null
    rc=$?
    dur=$(( $(date +%s) - start ))
    if grep -qE '^(PASS|FAIL|SKIP) ' "$log.out"; then
        while IFS= read -r line; do
            case $line in
            "PASS "*) pass=$((pass + 1)); echo "  $line" ;;
            "FAIL "*) failn=$((failn + 1)); failed+=("$name: ${line#FAIL }"); echo "  $line" ;;
            "SKIP "*) skipn=$((skipn + 1)); echo "  $line" ;;
            esac
        done < <(grep -E '^(PASS|FAIL|SKIP) ' "$log.out")
        if [ $rc -ne 0 ] && ! grep -q '^FAIL ' "$log.out"; then
            failn=$((failn + 1)); failed+=("$name: exited $rc"); echo "FAIL $name (exit $rc)"
        fi
        echo "$name: ($dur s)"
    else
        case $rc in
        0)  pass=$((pass + 1)); echo "PASS $name (${dur}s)" ;;
        77) skipn=$((skipn + 1)); echo "SKIP $name: $(grep -h '^SKIP' "$log" | tail -1 | sed 's/^SKIP: //')" ;;
        *)  failn=$((failn + 1)); failed+=("$name"); echo "FAIL $name (exit $rc, ${dur}s)"
            tail -n 15 "$log" | sed 's/^/    | /' ;;
        esac
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed:"; printf '  %s\n' "${failed[@]}"
fi
if [ $skipn -gt 0 ]; then
    echo "$pass passed, $failn failed, $skipn skipped"
else
    echo "$pass passed, $failn failed"
fi
[ $failn -eq 0 ]
