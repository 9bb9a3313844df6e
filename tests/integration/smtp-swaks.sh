#!/usr/bin/env bash
# Unmodified swaks (no -tls options) against real Postfix.
#  - without the shim: on 587 AUTH is not even offered ("Host did not advertise
#    authentication"), on 25 the mail is refused with 530;
#  - with the shim: AUTH LOGIN on 587 and plain mail on 25 are delivered byte for
#    byte over TLS (Received: ESMTPSA / ESMTPS).
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
servers_start
W=$STS_DIR/work; mkdir -p "$W"

# swaks adds the final CRLF itself: give it the message without one.
swaks_msg() { sts_message "$1.eml" "$2"; head -c -2 "$1.eml" > "$1.data"; }
swaks_run() { # swaks_run OUT PORT DATA [ARGS...]
    local out=$1 port=$2 data=$3; shift 3
    "${RUN[@]}" swaks --server "mail.test:$port" --helo client.test --from sender@mail.test \
        --to "$STS_USER@mail.test" --timeout 30 --data "$data" "$@" >"$out" 2>&1
}
AUTH=(--auth LOGIN --auth-user "$STS_USER" --auth-password "$STS_PASS")

RUN=(sts_exec)
swaks_msg "$W/plain587" "REFUSED587-$$"
swaks_run "$W/plain587.out" 587 "$W/plain587.data" "${AUTH[@]}"; rc=$?
if [ $rc -ne 0 ] && grep -q 'Host did not advertise authentication' "$W/plain587.out" &&
   ! grep -q -- '-> AUTH' "$W/plain587.out"; then
    case_pass swaks-587-auth-without-shim-refused
else
    case_fail swaks-587-auth-without-shim-refused "swaks rc=$rc: $(tail -4 "$W/plain587.out" | tr '\n' '|')"
fi
swaks_msg "$W/plain25" "REFUSED25-$$"
swaks_run "$W/plain25.out" 25 "$W/plain25.data"; rc=$?
if [ $rc -ne 0 ] && grep -q '530 5.7.0 Must issue a STARTTLS command first' "$W/plain25.out"; then
    case_pass swaks-25-without-shim-refused
else
    case_fail swaks-25-without-shim-refused "swaks rc=$rc: $(tail -4 "$W/plain25.out" | tr '\n' '|')"
fi

if ! have_shim; then
    for c in swaks-587-auth-shim-delivered swaks-587-auth-shim-esmtpsa swaks-25-shim-delivered swaks-25-shim-esmtps; do
        case_skip $c "$SHIM_MISSING"
    done
else
    RUN=(sts_shim STARTTLS_SHIM_LOG="$W/shim587.log" --)
    swaks_msg "$W/shim587" "SHIM587-$$"
    swaks_run "$W/shim587.out" 587 "$W/shim587.data" "${AUTH[@]}"
    sts_sent_check swaks-587-auth-shim $? "$W/shim587.out" "$W/shim587.eml" "SHIM587-$$" ESMTPSA ||
        sts_dump "$W/shim587.log"

    RUN=(sts_shim STARTTLS_SHIM_LOG="$W/shim25.log" --policy verify --)
    swaks_msg "$W/shim25" "SHIM25-$$"
    swaks_run "$W/shim25.out" 25 "$W/shim25.data"
    sts_sent_check swaks-25-shim $? "$W/shim25.out" "$W/shim25.eml" "SHIM25-$$" ESMTPS || sts_dump "$W/shim25.log"
fi

[ -n "$(sts_find_delivered "SHIM25-$$")" ] || sts_wait_absent 2 "REFUSED25-$$" "REFUSED587-$$"
if [ -z "$(sts_find_delivered "REFUSED25-$$")$(sts_find_delivered "REFUSED587-$$")" ]; then
    case_pass swaks-without-shim-nothing-delivered
else
    case_fail swaks-without-shim-nothing-delivered "a message sent without the shim was delivered"
fi
sts_finish
