#!/usr/bin/env bash
# What goes over the wire: tcpdump on the namespace's loopback while shim-wrapped,
# unmodified clients submit a message with AUTH (curl: AUTH PLAIN-or-LOGIN, swaks:
# AUTH LOGIN) and read it back (curl IMAP, poplib). Proves that neither the
# message marker, nor the password, nor its base64 forms (AUTH PLAIN \0user\0pass,
# user\0user\0pass, AUTH LOGIN pass) appear in any TCP stream, reassembled.
# Controls that prove the capture and the search work: the cleartext part of the
# dialogues (Postfix banner, "STARTTLS", Dovecot greetings, "STLS") is found, and
# a message sent in plaintext to the no-STARTTLS port 2525 without the shim is
# found by the same search.
. "$(dirname "$0")/../lib/common.sh"
. "$TOP/tests/lib/servers.sh"
need_pkgs tcpdump
have_shim || skip "$SHIM_MISSING"
servers_start
W=$STS_DIR/work; mkdir -p "$W"
MARK=cap-marker-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
CONTROL=cap-control-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

cat > "$W/pcapgrep.py" <<'PY'
# pcapgrep.py PCAP NEEDLE...: reassemble every IPv4 TCP stream in PCAP (per
# direction, in sequence order) and print "FOUND n" / "ABSENT n" for each NEEDLE
# (n = its index), searching the streams and the raw file. First line: stats.
import struct, sys
data = open(sys.argv[1], "rb").read()
needles = [a.encode("latin-1") for a in sys.argv[2:]]
magic = data[:4]
if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
    end = "<"
elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
    end = ">"
else:
    sys.exit("not a pcap file")
linktype = struct.unpack(end + "I", data[20:24])[0]
off, packets, flows = 24, 0, {}
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack(end + "IIII", data[off:off + 16])
    pkt = data[off + 16: off + 16 + incl]
    off += 16 + incl
    packets += 1
    if linktype == 1:            # Ethernet (Linux lo)
        if pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
    elif linktype == 113:        # Linux cooked
        if pkt[14:16] != b"\x08\x00":
            continue
        ip = pkt[16:]
    elif linktype in (12, 101):  # raw IP
        ip = pkt
    else:
        sys.exit("unsupported link type %d" % linktype)
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
        continue
    ihl = (ip[0] & 15) * 4
    total = struct.unpack(">H", ip[2:4])[0]
    tcp = ip[ihl:total]
    sport, dport, seq = struct.unpack(">HHI", tcp[:8])
    payload = tcp[(tcp[12] >> 4) * 4:]
    if payload:
        key = (ip[12:16], sport, ip[16:20], dport)
        flows.setdefault(key, {})[seq] = payload
streams = []
for segs in flows.values():
    seqs = sorted(segs)
    base, buf = seqs[0], bytearray()
    for s in seqs:
        pos = (s - base) & 0xffffffff
        p = segs[s]
        if pos > len(buf):
            buf += b"\0" * (pos - len(buf))   # a hole: keep offsets
        buf[pos:pos + len(p)] = p
    streams.append(bytes(buf))
print("packets=%d streams=%d bytes=%d" % (packets, len(streams), sum(map(len, streams))))
for i, n in enumerate(needles):
    hit = n in data or any(n in s for s in streams)
    print("%s %d" % ("FOUND" if hit else "ABSENT", i))
PY

# Start the capture and wait until tcpdump says it listens.
ip netns exec "$STS_NS" timeout 300 tcpdump -i lo -n -s 0 -U --immediate-mode -Z root -w "$W/cap.pcap" tcp \
    >"$W/tcpdump.out" 2>&1 &
TCPDUMP=$!
end=$(( $(date +%s) + 15 ))
until grep -q 'listening on lo' "$W/tcpdump.out"; do
    kill -0 $TCPDUMP 2>/dev/null || fail "tcpdump died: $(cat "$W/tcpdump.out")"
    [ "$(date +%s)" -lt "$end" ] || fail "tcpdump not listening after 15s"
    sleep 0.1
done

# Shim-wrapped clients: submit with AUTH, then read back over IMAP and POP3.
sts_message "$W/m1.eml" "$MARK-curl" 8
sts_shim STARTTLS_SHIM_LOG="$W/shim.log" -- curl -sS --max-time 30 smtp://mail.test:587 \
    --user "$STS_USER:$STS_PASS" --mail-from sender@mail.test --mail-rcpt "$STS_USER@mail.test" \
    -T "$W/m1.eml" >"$W/c1.out" 2>&1
sts_sent_check capture-curl-587 $? "$W/c1.out" "$W/m1.eml" "$MARK-curl" ESMTPSA
sts_message "$W/m2.eml" "$MARK-swaks" 8
head -c -2 "$W/m2.eml" > "$W/m2.data"
sts_shim STARTTLS_SHIM_LOG="$W/shim.log" -- swaks --server mail.test:587 --from sender@mail.test \
    --to "$STS_USER@mail.test" --auth LOGIN --auth-user "$STS_USER" --auth-password "$STS_PASS" \
    --timeout 30 --data "$W/m2.data" >"$W/c2.out" 2>&1
sts_sent_check capture-swaks-587 $? "$W/c2.out" "$W/m2.eml" "$MARK-swaks" ESMTPSA
sts_shim STARTTLS_SHIM_LOG="$W/shim.log" -- curl -sS --max-time 30 "imap://mail.test/INBOX/;UID=1" \
    --user "$STS_USER:$STS_PASS" -o "$W/imap.msg" >"$W/c3.out" 2>&1
if grep -q -- "$MARK-curl" "$W/imap.msg" 2>/dev/null; then case_pass capture-curl-imap-fetched
else case_fail capture-curl-imap-fetched "marker not in the fetched message: $(cat "$W/c3.out")"; fi
sts_shim STARTTLS_SHIM_LOG="$W/shim.log" -- "$PYTHON" -c '
import poplib, sys
p = poplib.POP3("mail.test", 110, timeout=30)
p.user(sys.argv[1]); p.pass_(sys.argv[2])
sys.stdout.buffer.write(b"\n".join(p.retr(2)[1])); p.quit()' "$STS_USER" "$STS_PASS" >"$W/pop.msg" 2>"$W/c4.out"
if grep -q -- "$MARK-swaks" "$W/pop.msg"; then case_pass capture-poplib-retrieved
else case_fail capture-poplib-retrieved "marker not in the retrieved message: $(cat "$W/c4.out")"; fi

# Control: plaintext to the port without STARTTLS, no shim.
sts_message "$W/ctl.eml" "$CONTROL"
sts_exec curl -sS --max-time 30 smtp://mail.test:2525 --mail-from sender@mail.test \
    --mail-rcpt "$STS_USER@mail.test" -T "$W/ctl.eml" >"$W/ctl.out" 2>&1 ||
    case_fail capture-control-sent "$(cat "$W/ctl.out")"
sts_wait_delivered "$CONTROL" >/dev/null || case_fail capture-control-delivered "control message not delivered"

# Stop the capture once tcpdump has written everything: a last plaintext line,
# and wait until it is in the file.
SENTINEL=cap-sentinel-$$-$RANDOM
sts_exec bash -c 'exec 3<>/dev/tcp/127.0.0.2/2525; read -r -t 5 l <&3; printf "NOOP %s\r\nQUIT\r\n" "$1" >&3; cat <&3 >/dev/null' \
    _ "$SENTINEL" </dev/null >/dev/null 2>&1
end=$(( $(date +%s) + 10 ))
until grep -qaF "$SENTINEL" "$W/cap.pcap" || [ "$(date +%s)" -ge "$end" ]; do sleep 0.1; done
kill -TERM $TCPDUMP 2>/dev/null
wait $TCPDUMP 2>/dev/null

b64() { printf '%b' "$1" | base64 -w0; }
U=$STS_USER P=$STS_PASS
names=(marker password "b64(\\0user\\0pass)" "b64(user\\0user\\0pass)" "b64(pass)"
       banner STARTTLS imap-greeting pop3-STLS control-marker)
needles=("$MARK" "$P" "$(b64 "\\0$U\\0$P")" "$(b64 "$U\\0$U\\0$P")" "$(b64 "$P")"
         "ESMTP starttls-shim test bed" "STARTTLS" "* OK [CAPABILITY IMAP4rev1" "STLS" "$CONTROL")
expect=(ABSENT ABSENT ABSENT ABSENT ABSENT FOUND FOUND FOUND FOUND FOUND)
"$PYTHON" "$W/pcapgrep.py" "$W/cap.pcap" "${needles[@]}" >"$W/grep.out" 2>&1 ||
    fail "pcapgrep: $(cat "$W/grep.out")"
note "capture: $(head -1 "$W/grep.out")"
for i in "${!needles[@]}"; do
    got=$(grep -E "^(FOUND|ABSENT) $i\$" "$W/grep.out" | cut -d' ' -f1)
    if [ "$got" = "${expect[$i]}" ]; then
        case_pass "capture-${names[$i]}-$(echo "${expect[$i]}" | tr A-Z a-z)"
    else
        case_fail "capture-${names[$i]}-$(echo "${expect[$i]}" | tr A-Z a-z)" "expected ${expect[$i]}, got '$got'"
    fi
done
sts_finish
