#!/usr/bin/env bash
# make demo: an unmodified curl sends mail to a real Postfix that requires
# STARTTLS — refused without starttls-shim, delivered over TLS with it.
# Needs root (network namespace, real Postfix and Dovecot); cleans up after itself.
. "$(dirname "$0")/lib/common.sh"
. "$TOP/tests/lib/servers.sh"
if ! [ -x "$SHIM_BIN" ] || ! [ -f "$SHIM_LIB" ]; then echo "demo: build first (make)" >&2; exit 1; fi

bold() { if [ -t 1 ]; then printf '\n\033[1m%s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }
# dialogue FILE: curl -v's protocol lines, readable.
dialogue() { grep -E '^[<>] |^curl: ' "$1" | sed -e 's/^> /  client> /' -e 's/^< /  server< /' -e 's/^curl: /  curl: /'; }

echo "Starting Postfix (25: STARTTLS required) and Dovecot in a private network namespace..."
servers_start 2>/dev/null
W=$STS_DIR/work; mkdir -p "$W"
sts_message "$W/plain.eml" "demo-without-shim" 0
sts_message "$W/shim.eml" "demo-with-shim" 0
CURL=(curl -sS -v --max-time 30 smtp://mail.test:25/client.test --mail-from sender@mail.test
      --mail-rcpt "$STS_USER@mail.test" -T)

bold "1. Without the shim:  curl smtp://mail.test:25 --mail-from ... --mail-rcpt ... -T message"
sts_exec "${CURL[@]}" "$W/plain.eml" >"$W/plain.out" 2>&1; rc=$?
dialogue "$W/plain.out"
echo "  -> curl exit status $rc: the server refuses mail without TLS, curl never asked for it."
if [ $rc -eq 0 ] || ! grep -q '^< 530' "$W/plain.out"; then echo "demo: expected a 530 refusal" >&2; exit 1; fi

bold "2. With the shim:  starttls-shim --cafile ca.pem -- curl (same arguments)"
sts_shim STARTTLS_SHIM_LOG="$W/shim.log" -v -- "${CURL[@]}" "$W/shim.eml" >"$W/shim.out" 2>&1; rc=$?
dialogue "$W/shim.out"
echo "  -> curl exit status $rc. (curl's dialogue above ran inside TLS; curl does not know.)"
[ -s "$W/shim.log" ] && { echo "  shim log:"; sed 's/^/    /' "$W/shim.log"; }
[ $rc -eq 0 ] || { echo "demo: curl failed under the shim" >&2; exit 1; }

f=$(sts_wait_delivered "demo-with-shim") || { echo "demo: message not delivered" >&2; exit 1; }
bold "Delivered to $STS_USER's Maildir ($(basename "$(dirname "$f")")/$(basename "$f")):"
sed 's/^/  | /' "$f"
bold "Postfix's log for that connection:"
l=$(sts_wait_log "$STS_POSTFIX_LOG" 0 'TLS connection established from') &&
    echo "  ${l#* mail }" | fold -s -w 100 | sed '2,$s/^/    /'
[ -n "$l" ] || { echo "demo: no TLS line in Postfix's log" >&2; exit 1; }
echo
echo "Demo done: refused without the shim, delivered over $(echo "$l" | grep -oE 'TLSv1\.[0-9]+ with cipher [A-Z0-9_-]+') with it."
