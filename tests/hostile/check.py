#!/usr/bin/env python3
"""check.py: judge one hostile-server case (scenario x policy) from its recordings.

    check.py --scenario S.scn --policy P --dir CASEDIR --secret SECRET
             --rc RC --elapsed SECONDS --limit SECONDS

CASEDIR holds client.out (bytes the program received), client.err (the
program's stderr, where the shim logs), server.err and rec/conn-1.{pre,tls,raw,log}
from fakeserver.py.  Prints exactly one line, "PASS proto/name policy" or
"FAIL proto/name policy: why; why", and exits 0 either way (1 on a usage error).

What is asserted for every case:
  - the client finished by itself, within the limit (timeout + 5 s);
  - exactly one connection reached the server; the fake server did not crash;
  - the shim never sent TLS bytes before the server answered STARTTLS (EARLY);
and per expected outcome:
  upgraded   the program's first bytes are a greeting with the right status word;
             it never saw PRETLS (bytes sent before TLS); it saw INTLS-ACK (the
             reply to its secret-carrying command came through TLS); the secret
             reached the server inside TLS and nowhere else; the only cleartext
             the server got is the shim's own dialogue lines; no client timeout.
  refused    the program received exactly one line, the protocol's refusal
             ("421 4.7.0 starttls-shim: " / "-ERR starttls-shim: " /
             "* BYE starttls-shim: ") containing one of the expected reasons,
             then EOF; stderr has a "starttls-shim: " line with that reason;
             the server got no byte of the program (no secret, nothing inside
             TLS, only the shim's dialogue lines in cleartext).
  plaintext  the program talked to the server directly: it saw the server's
             PRETLS replies, the secret arrived in cleartext, no TLS was
             attempted, no refusal was synthesized, and stderr has a
             "starttls-shim: " warning.
"""

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakeserver"))
from fakeserver import Scenario, ScenarioError  # noqa: E402

GREETING = {"smtp": b"220", "pop3": b"+OK", "imap": b"* OK"}
REFUSAL = {"smtp": b"421 4.7.0 starttls-shim: ", "pop3": b"-ERR starttls-shim: ",
           "imap": b"* BYE starttls-shim: "}
# The cleartext lines the shim itself may send, each at most once.  The program's
# own lines are recognisable: EHLO CLIENTHELO..., tags CLNTn, the secret.
SHIM_LINES = {
    "smtp": [("EHLO/HELO", rb"(EHLO|HELO) [\x21-\x7e]+\r\n"), ("STARTTLS", rb"STARTTLS\r\n"),
             ("QUIT", rb"QUIT\r\n")],
    "pop3": [("CAPA", rb"CAPA\r\n"), ("STLS", rb"STLS\r\n"), ("QUIT", rb"QUIT\r\n")],
    "imap": [("CAPABILITY", rb"(?!CLNT)[\x21-\x7e]+ CAPABILITY\r\n"),
             ("STARTTLS", rb"(?!CLNT)[\x21-\x7e]+ STARTTLS\r\n"),
             ("LOGOUT", rb"(?!CLNT)[\x21-\x7e]+ LOGOUT\r\n")],
}


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def short(b, n=90):
    s = b[:n].decode("latin-1")
    return repr(s + ("..." if len(b) > n else ""))


def check_pre(proto, pre, errs):
    """The cleartext the server received must be only the shim's own lines."""
    counts = {}
    lines = pre.split(b"\n")
    tail = lines.pop()          # bytes after the last \n
    if tail:
        errs.append(f"server got a partial cleartext line {short(tail)}")
    for ln in lines:
        ln += b"\n"
        for name, rx in SHIM_LINES[proto]:
            if re.fullmatch(rx, ln, re.IGNORECASE) and b"CLIENTHELO" not in ln:
                counts[name] = counts.get(name, 0) + 1
                if counts[name] > 1:
                    errs.append(f"server got {name} twice in cleartext (a program line leaked?)")
                break
        else:
            errs.append(f"server got a non-shim cleartext line {short(ln)}")
            break


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", required=True)
    p.add_argument("--policy", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--rc", type=int, required=True)
    p.add_argument("--elapsed", type=float, required=True)
    p.add_argument("--limit", type=float, required=True)
    a = p.parse_args()
    scn_name = "/".join(a.scenario.rstrip("/").split("/")[-2:]).removesuffix(".scn")
    label = f"{scn_name} {a.policy}"
    try:
        scn = Scenario(a.scenario)
    except (ScenarioError, OSError) as e:
        print(f"FAIL {label}: bad scenario: {e}")
        return 0
    outcome, reasons = scn.expect[a.policy]
    proto = scn.proto
    d = a.dir
    out = read(os.path.join(d, "client.out"))
    err = read(os.path.join(d, "client.err")).decode("utf-8", "replace")
    serr = read(os.path.join(d, "server.err")).decode("utf-8", "replace")
    rec = os.path.join(d, "rec")
    pre, tls, raw = (read(os.path.join(rec, f"conn-1.{x}")) for x in ("pre", "tls", "raw"))
    slog = read(os.path.join(rec, "conn-1.log")).decode("utf-8", "replace")
    secret = a.secret.encode()
    errs = []

    # -- every case --
    if a.rc in (124, 137):
        errs.append(f"client hung: killed after {a.elapsed:.1f}s (limit {a.limit:.0f}s)")
    elif a.rc != 0:
        errs.append(f"client exited {a.rc}")
    elif a.elapsed > a.limit:
        errs.append(f"took {a.elapsed:.1f}s, limit {a.limit:.0f}s")
    if "Traceback" in serr:
        errs.append("fakeserver crashed: " + serr.strip().splitlines()[-1])
    if "Traceback" in err:
        errs.append("client crashed: " + [ln for ln in err.splitlines() if ln.strip()][-1])
    if not os.path.exists(os.path.join(rec, "conn-1.log")):
        errs.append("the program never reached the server")
    if os.path.exists(os.path.join(rec, "conn-2.log")):
        errs.append("more than one connection reached the server")
    if re.search(r"^T\+\S+ EARLY", slog, re.M):
        errs.append("the shim sent bytes after STARTTLS before the server's reply")
    if re.search(r"^T\+\S+ UNSUPPORTED", slog, re.M):
        errs.append("fakeserver could not play ticket/keyupdate (see conn-1.log)")
    shim_lines = [ln for ln in err.splitlines() if "starttls-shim: " in ln]

    if outcome == "upgraded":
        if not out.startswith(GREETING[proto]):
            errs.append(f"no {GREETING[proto].decode()} greeting; program got {short(out)}")
        if b"PRETLS" in out:
            i = out.find(b"PRETLS")
            errs.append(f"program saw pre-TLS bytes: {short(out[max(0, i - 30):])}")
        if b"INTLS-ACK" not in out:
            errs.append("program never got the in-TLS reply to its secret command (INTLS-ACK)")
        if secret not in tls:
            errs.append("secret did not reach the server inside TLS")
        if "HANDSHAKE ok" not in slog:
            errs.append("no TLS handshake completed")
        if re.search(r"client: T\+\S+ timeout", err):
            errs.append("program timed out waiting: " +
                        [ln for ln in err.splitlines() if " timeout waiting" in ln][0])
    elif outcome == "refused":
        pfx = REFUSAL[proto]
        first, _, rest = out.partition(b"\n")
        if not out.startswith(pfx):
            errs.append(f"expected {pfx.decode()!r}..., program got {short(out)}")
        else:
            text = first.decode("latin-1")
            if not any(r in text for r in reasons):
                errs.append(f"refusal {short(first)} lacks reason {' or '.join(map(repr, reasons))}")
            if not first.endswith(b"\r"):
                errs.append("refusal line does not end in CRLF")
            if rest:
                errs.append(f"program got bytes after the refusal: {short(rest)}")
        if not any(any(r in ln for r in reasons) for ln in shim_lines):
            errs.append("stderr has no 'starttls-shim: ' line with the reason" +
                        (f" (has {shim_lines[0]!r})" if shim_lines else ""))
        if b"PRETLS" in out:
            errs.append("program saw pre-TLS bytes")
        if tls:
            errs.append(f"server got application data inside TLS: {short(tls)}")
        if secret in tls:
            errs.append("secret reached the server (inside TLS) despite the refusal")
    elif outcome == "plaintext":
        if secret not in pre:
            errs.append("secret did not reach the server in cleartext (program was not left alone)")
        if b"PRETLS" not in out:
            errs.append(f"program did not see the server's own replies; got {short(out)}")
        if b"starttls-shim" in out:
            errs.append(f"program got a synthesized line: {short(out)}")
        if "TLS " in slog and re.search(r"^T\+\S+ TLS ", slog, re.M):
            errs.append("TLS was attempted")
        if not shim_lines:
            errs.append("no 'starttls-shim: ' warning on stderr")

    if outcome in ("upgraded", "refused"):
        if secret in pre:
            errs.append("SECRET SENT IN CLEARTEXT")
        if secret in raw or b"CLIENTHELO" in raw or b"CLNT" in raw:
            errs.append("program bytes sent in cleartext after STARTTLS (in conn-1.raw)")
        if raw and raw[0] not in (0x14, 0x15, 0x16, 0x17):
            errs.append(f"non-TLS bytes after STARTTLS: {short(raw)}")
        check_pre(proto, pre, errs)

    if errs:
        print(f"FAIL {label}: " + "; ".join(dict.fromkeys(errs)))
    else:
        print(f"PASS {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
