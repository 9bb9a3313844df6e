#!/usr/bin/env python3
"""mkseeds.py: (re)write the seed corpora in tests/fuzz/corpus/.

    tests/fuzz/mkseeds.py            writes corpus/{smtp,pop3,imap,engine,config}/

Seeds come from two places:
  - realistic pre-TLS server dialogues written below (Postfix, Exim, Dovecot,
    Courier, Exchange style replies, refusals, multi-line greetings);
  - the hostile-server scenarios in tests/hostile/scenarios/ when present: the
    bytes each scenario's [plain] section sends for the greeting and in answer
    to the commands the shim sends (EHLO + STARTTLS, STLS, TAG STARTTLS).
Dialogue seeds are the server's bytes; engine seeds add the selector byte
fuzz_engine.c reads (protocol + 3 * policy + 9 * eager); config seeds start
with fuzz_config.c's selector byte.  File names are stable hashes, so running
this twice changes nothing.
"""
import hashlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCN = os.path.join(HERE, "..", "hostile", "scenarios")
TAG = "S0123456789"      # FUZZ_TAG in fuzz.h
MAXLEN = 12000           # keep seeds short: libFuzzer's -max_len in run.sh

REAL = {
    "smtp": [
        b"220 mail.example.net ESMTP Postfix (Debian/GNU)\r\n"
        b"250-mail.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
        b"250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
        b"220 2.0.0 Ready to start TLS\r\n",
        b"220-mx.example.org ESMTP Exim 4.96 Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        b"220-We do not authorize the use of this system to transport unsolicited,\r\n"
        b"220 and/or bulk e-mail.\r\n"
        b"250-mx.example.org Hello client.example [127.0.0.1]\r\n250-SIZE 52428800\r\n"
        b"250-8BITMIME\r\n250-PIPELINING\r\n250-PIPE_CONNECT\r\n250-STARTTLS\r\n250 HELP\r\n"
        b"220 TLS go ahead\r\n",
        b"220 EXCH01.corp.example Microsoft ESMTP MAIL Service ready at Mon, 1 Jan 2024\r\n"
        b"250-EXCH01.corp.example Hello [127.0.0.1]\r\n250-SIZE 37748736\r\n250-PIPELINING\r\n"
        b"250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-starttls\r\n250-AUTH NTLM\r\n250-8BITMIME\r\n"
        b"250-BINARYMIME\r\n250 CHUNKING\r\n220 2.0.0 SMTP server ready\r\n",
        b"220 mail.example ESMTP\n250-mail.example\n250 STARTTLS\n220 go\n",
        b"220 mail.example ESMTP\r\n250-mail.example\r\n250 8BITMIME\r\n",
        b"220 mail.example ESMTP\r\n250-mail.example\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n",
        b"220 mail.example ESMTP\r\n250-mail.example\r\n250 STARTTLS\r\n502 5.5.1 not implemented\r\n",
        b"220 mail.example ESMTP\r\n250-mail.example\r\n250 STARTTLS\r\n501 5.5.4 syntax\r\n",
        b"220 mail.example ESMTP\r\n250-mail.example\r\n250 STARTTLS\r\n354 go ahead\r\n",
        b"220 mail.example ESMTP\r\n500 5.5.1 EHLO unknown\r\n",
        b"554 5.7.1 go away\r\n",
        b"421 4.3.2 service shutting down\r\n",
        b"220 mail.example ESMTP\r\n250-mail.example\r\n251 STARTTLS\r\n",
        b"220 mail.example ESMTP\r\n250-mail.example\r\n250 STARTTLS\r\n220 go\r\n250 injected\r\n",
        b"220 mail.example ESMTP\r\n250-mail.example\r\n250 STARTTLS\r\n220 go\r\n\x16\x03\x01\x00\x05hello",
        b"220\r\n250 STARTTLS\r\n220\r\n",
        b"220-a\r\n220-b\r\n221 c\r\n",
    ],
    "pop3": [
        b"+OK Dovecot (Debian) ready.\r\n+OK Begin TLS negotiation now.\r\n",
        b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n+OK\r\n",
        b"+OK\r\n-ERR STLS not available\r\n",
        b"+OK ready\n+OK go\n",
        b"-ERR [SYS/TEMP] server busy\r\n",
        b"+OK ready\r\n+ go on\r\n",
        b"+OKAY\r\n",
        b"+OK ready\r\n+OK go\r\n+OK injected\r\n",
        b"* OK this is imap\r\n",
    ],
    "imap": [
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED] Dovecot (Debian) ready.\r\n"
        + TAG.encode() + b" OK Begin TLS negotiation now.\r\n",
        b"* OK Courier-IMAP ready.\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\n" + TAG.encode() + b" OK Begin SSL/TLS negotiation now.\r\n",
        b"* OK IMAP4rev1 Service Ready\r\n" + TAG.encode() + b" NO STARTTLS not available\r\n",
        b"* OK IMAP4rev1 Service Ready\r\n" + TAG.encode() + b" BAD unknown command\r\n",
        b"* PREAUTH [CAPABILITY IMAP4rev1] logged in as joe\r\n",
        b"* BYE [ALERT] server shutting down\r\n",
        b"* OK ready\r\n* 23 EXISTS\r\n* 1 RECENT\r\n* OK [ALERT] pre-TLS alert\r\n* OK [REFERRAL imap://evil/] go\r\n"
        + TAG.encode() + b" OK go\r\n",
        b"* OK ready\r\n+ continue\r\n",
        b"* OK ready\r\nA001 OK wrong tag\r\n",
        b"* ok ready\n" + TAG.encode() + b" ok go\n",
        b"* OK ready\r\n" + TAG.encode() + b" OK go\r\n* OK injected\r\n",
        b"S0123456789 OK tagged greeting\r\n",
        # Untagged chatter (RFC 9051 §7) behind the greeting and before the tagged OK.
        b"* OK IMAP4rev1 ready\r\n* OK [ALERT] call +1-555-EVIL\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\n"
        b"* 2 EXISTS\r\n* LIST () \"/\" INBOX\r\n* NO [ALERT] quota\r\n" + TAG.encode() + b" OK go\r\n",
        b"* OK ready\r\n* OK [ALERT] partial line cut here",
        b"* OK ready\r\n* OK chatter\r\n* BYE [ALERT] go away\r\n",
        b"* OK ready\r\n* PREAUTH logged in\r\n",
        b"* OK ready\r\n* LIST () \"/\" {5}\r\nINBOX\r\n" + TAG.encode() + b" OK go\r\n",
        b"* OK ready\r\n* 1 FETCH (BINARY[] ~{3}\r\n\0\0\0)\r\n",
        b"* OK ready\r\n* OK text {5+}\r\n",
        b"* OK ready\r\n* OK [ALERT] x\r\nA001 OK guessed\r\n",
        b"* OK ready\r\n" + b"* OK [ALERT] again\r\n" * 64 + TAG.encode() + b" OK go\r\n",
        b"* OK ready\r\n" + b"* 1 EXISTS\r\n" * 65,
        b"* OK ready\r\n* 1 EXISTS\r\n" + TAG.encode() + b" OK go\r\n* 2 EXISTS\r\n",
    ],
}

CONFIG = [
    (0, b"25/smtp,587/smtp,110/pop3,143/imap"), (0, b"12525/smtp"), (0, b"25/smtp,25/imap"),
    (0, b"0/smtp"), (0, b"65536/smtp"), (0, b"25/smtps"), (0, b"25/smtp,"), (0, b",25/smtp"),
    (0, b"+25/smtp"), (0, b"25 /smtp"), (0, b"99999999999999999999/smtp"),
    (0, b",".join(b"%d/pop3" % p for p in range(1, 34))),
    (1, b"verify"), (1, b"encrypt"), (1, b"may"), (1, b"Verify"), (1, b""),
    (2, b"30"), (2, b"1"), (2, b"3600"), (2, b"3601"), (2, b"0"), (2, b"-5"), (2, b" 7"), (2, b"5s"),
    (2, b"99999999999999999999"),
    (3, b"verify\n25/smtp\n30\nclient.example\nupgrade\ninfo"),
    (3, b"bogus\n\n\n\n\n"), (3, b"may\n1/imap\n2\n[127.0.0.1]\ndefer\ndebug"),
    (3, b"encrypt\n25/smtp,25/smtp\nx\nbad name\nnope\nloud"),
]


def unescape(text):
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            n = text[i + 1]
            if n in "rnt0\\":
                out += {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}[n]
                i += 2
                continue
            if n == "x" and i + 3 < len(text) + 1:
                try:
                    out.append(int(text[i + 2:i + 4], 16))
                    i += 4
                    continue
                except ValueError:
                    pass
        out += ch.encode("utf-8")
        i += 1
    return bytes(out)


def read_scenario(path, seen=None):
    """Lines of a scenario with includes spliced in."""
    seen = seen or set()
    lines = []
    for raw in open(path, encoding="utf-8"):
        raw = raw.rstrip("\n")
        if raw.startswith("include "):
            name = raw.split(None, 1)[1].strip()
            for cand in (os.path.join(os.path.dirname(path), name), os.path.join(SCN, "common", name)):
                if os.path.exists(cand) and cand not in seen:
                    seen.add(cand)
                    lines += read_scenario(cand, seen)
                    break
            continue
        lines.append(raw)
    return lines


def plain_bytes(path):
    """(proto, bytes the [plain] section sends for the greeting and for the
    shim's commands), or None."""
    lines = read_scenario(path)
    proto = None
    section = None
    greeting = []
    rules = []              # (regex, [actions])
    for ln in lines:
        if ln.startswith("proto "):
            proto = ln.split()[1]
        if not ln.strip() or ln.startswith("#"):
            continue
        if ln.startswith("["):
            section = ln.strip()
            continue
        if section != "[plain]":
            continue
        if ln.startswith("on "):
            rx = ln[3:].strip()
            if rx.startswith("once "):
                rx = rx[5:].strip()
            rules.append((rx, []))
            continue
        (rules[-1][1] if rules else greeting).append(ln)
    if proto not in REAL:
        return None
    cmds = {"smtp": ["EHLO client.example", "STARTTLS"], "pop3": ["STLS"], "imap": ["STARTTLS"]}[proto]

    def play(actions):
        out = bytearray()
        for a in actions:
            word, _, rest = a.partition(" ")
            rest = rest.replace("{tag}", TAG)
            if word == "line":
                out += unescape(rest) + b"\r\n"
            elif word == "send":
                out += unescape(rest)
            elif word == "fill":
                n, _, text = rest.partition(" ")
                pat = unescape(text) or b"x"
                out += (pat * (int(n) // len(pat) + 1))[:min(int(n), MAXLEN)]
            elif word == "repeat":
                n, _, text = rest.partition(" ")
                for i in range(min(int(n), 200)):
                    out += unescape(text.replace("{i}", str(i)))
            elif word in ("tls", "close", "reset", "stall", "halfclose"):
                break
        return bytes(out)

    data = play(greeting)
    for cmd in cmds:
        for rx, actions in rules:
            if rx == "*" or re.search(rx, cmd, re.I):
                data += play(actions)
                break
    return proto, data[:MAXLEN]


def write(dirname, blob):
    d = os.path.join(HERE, "corpus", dirname)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(blob).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


def main():
    seeds = {p: list(v) for p, v in REAL.items()}
    nscn = 0
    if os.path.isdir(SCN):
        for proto in sorted(os.listdir(SCN)):
            d = os.path.join(SCN, proto)
            if proto not in REAL or not os.path.isdir(d):
                continue
            for f in sorted(os.listdir(d)):
                if f.endswith(".scn"):
                    got = plain_bytes(os.path.join(d, f))
                    if got and got[1]:
                        seeds[got[0]].append(got[1])
                        nscn += 1
    pidx = {"smtp": 0, "pop3": 1, "imap": 2}
    for proto, blobs in seeds.items():
        for b in blobs:
            write(proto, b)
            # engine: verify polite, verify eager, may polite
            for sel in (pidx[proto] + 3 * 2, pidx[proto] + 3 * 2 + 9, pidx[proto]):
                write("engine", bytes([sel]) + b)
    for sel, text in CONFIG:
        write("config", bytes([sel]) + text)
    print("seeds: %s; %d from scenarios" % (", ".join("%s %d" % (p, len(v)) for p, v in seeds.items()), nscn))


if __name__ == "__main__":
    sys.exit(main())
