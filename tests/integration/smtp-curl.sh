#!/usr/bin/env bash
# Unmodified curl (smtp://, no TLS options) against real Postfix that requires
# STARTTLS on 25 and STARTTLS + AUTH on 587.
#  - without the shim Postfix refuses the mail (530 Must issue a STARTTLS command first)
#    and nothing is delivered;
#  - with the shim (wrapper, and raw LD_PRELOAD) the message is in the Maildir byte
#    for byte, and Postfix's Received header says it came over TLS (ESMTPS / ESMTPSA).
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
servers_start
W=$STS_DIR/work; mkdir -p "$W"

# send_curl OUT PORT MSG [CURL-ARGS...] -- run curl (prefix given by RUN array)
send_curl() {
    local out=$1 port=$2 msg=$3; shift 3
    "${RUN[@]}" curl -sS -v --max-time 30 "smtp://mail.test:$port/client.test" \
        --mail-from sender@mail.test --mail-rcpt "$STS_USER@mail.test" -T "$msg" "$@" >"$out" 2>&1
}

# 1. Without the shim: refused on both ports.
RUN=(sts_exec)
sts_message "$W/plain25.eml" "REFUSED25-$$"
send_curl "$W/plain25.out" 25 "$W/plain25.eml"; rc=$?
if [ $rc -ne 0 ] && grep -q '^< 530 5.7.0 Must issue a STARTTLS command first' "$W/plain25.out"; then
    case_pass curl-25-without-shim-refused
else
    case_fail curl-25-without-shim-refused "curl rc=$rc, no 530 STARTTLS reply: $(tail -3 "$W/plain25.out" | tr '\n' '|')"
fi
sts_message "$W/plain587.eml" "REFUSED587-$$"
send_curl "$W/plain587.out" 587 "$W/plain587.eml" --user "$STS_USER:$STS_PASS"; rc=$?
if [ $rc -ne 0 ] && ! grep -q '^< 250.*AUTH' "$W/plain587.out" &&
   grep -q '^< 530 5.7.0 Must issue a STARTTLS command first' "$W/plain587.out"; then
    case_pass curl-587-without-shim-refused
else
    case_fail curl-587-without-shim-refused "curl rc=$rc: $(tail -3 "$W/plain587.out" | tr '\n' '|')"
fi

# 2. With the shim's wrapper.
if ! have_shim; then
    for c in curl-25-shim-delivered curl-25-shim-esmtps curl-587-shim-auth-delivered curl-587-shim-auth-esmtpsa \
             curl-25-preload-256k-delivered curl-25-preload-256k-esmtps; do case_skip $c "$SHIM_MISSING"; done
else
    RUN=(sts_shim STARTTLS_SHIM_LOG="$W/shim25.log" --)
    sts_message "$W/shim25.eml" "SHIM25-$$"
    send_curl "$W/shim25.out" 25 "$W/shim25.eml"
    sts_sent_check curl-25-shim $? "$W/shim25.out" "$W/shim25.eml" "SHIM25-$$" ESMTPS || sts_dump "$W/shim25.log"

    RUN=(sts_shim STARTTLS_SHIM_LOG="$W/shim587.log" --)
    sts_message "$W/shim587.eml" "SHIM587-$$"
    send_curl "$W/shim587.out" 587 "$W/shim587.eml" --user "$STS_USER:$STS_PASS"
    sts_sent_check curl-587-shim-auth $? "$W/shim587.out" "$W/shim587.eml" "SHIM587-$$" ESMTPSA ||
        sts_dump "$W/shim587.log"

    # 3. Raw LD_PRELOAD form, a 256 KiB message (many TLS records each way).
    RUN=(sts_preload STARTTLS_SHIM_LOG="$W/preload.log")
    sts_message "$W/big.eml" "PRELOAD-$$" 256
    send_curl "$W/big.out" 25 "$W/big.eml"
    sts_sent_check curl-25-preload-256k $? "$W/big.out" "$W/big.eml" "PRELOAD-$$" ESMTPS || sts_dump "$W/preload.log"
fi

# 4. The refused messages never arrived. Postfix refused them before a queue
#    file existed; if the shim's later messages were delivered, the refused ones
#    would be there by now; without those, give the queue two seconds.
[ -n "$(sts_find_delivered "SHIM25-$$")" ] || sts_wait_absent 2 "REFUSED25-$$" "REFUSED587-$$"
if [ -z "$(sts_find_delivered "REFUSED25-$$")$(sts_find_delivered "REFUSED587-$$")" ]; then
    case_pass curl-without-shim-nothing-delivered
else
    case_fail curl-without-shim-nothing-delivered "a message sent without the shim was delivered"
fi
sts_finish
