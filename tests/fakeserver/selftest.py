#!/usr/bin/env python3
"""selftest.py: proves fakeserver.py plays the scenarios as they claim, using
clients that are not the shim: Python's smtplib / poplib / imaplib starttls(),
raw sockets, and `openssl s_client -starttls`.

    selftest.py CERTDIR          (CERTDIR from tests/lib/mkcerts.sh)

Prints one line per check, "PASS fakeserver/<name>" or "FAIL fakeserver/<name>: why".
"""

import imaplib
import os
import poplib
import re
import select
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
FS = os.path.join(HERE, "fakeserver.py")
SCN = os.path.join(HERE, "..", "hostile", "scenarios")
CERTS = sys.argv[1] if len(sys.argv) > 1 else ""
results = []


class Play:
    """Run fakeserver.py on one scenario for `count` connections."""

    def __init__(self, scn, count=1):
        self.dir = tempfile.mkdtemp(prefix="fs-selftest.")
        self.rec = os.path.join(self.dir, "rec")
        ready = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen(
            [sys.executable, FS, os.path.join(SCN, scn + ".scn"), "--certs", CERTS,
             "--record", self.rec, "--count", str(count), "--ready-file", ready, "--max-time", "20"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "server.err"), "wb"))
        for _ in range(100):
            if os.path.exists(ready):
                break
            time.sleep(0.05)
        with open(ready) as f:
            self.port = int(f.read())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = open(os.path.join(self.dir, "server.err"), "rb").read().decode()
        shutil.rmtree(self.dir, ignore_errors=True)
        if "Traceback" in err:
            raise AssertionError("fakeserver crashed:\n" + err)

    def rec_file(self, ext, n=1):
        self.settle()
        try:
            return open(os.path.join(self.rec, f"conn-{n}.{ext}"), "rb").read()
        except OSError:
            return b""

    def settle(self):
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass


def case(name):
    def deco(fn):
        def run():
            t0 = time.monotonic()
            try:
                fn()
                if os.environ.get("SELFTEST_TIMES"):
                    print(f"{name}: {time.monotonic() - t0:.1f}s", file=sys.stderr)
                results.append(("PASS", name, ""))
            except Exception as e:  # report, never stop the suite
                why = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                if not isinstance(e, AssertionError):
                    traceback.print_exc()
                results.append(("FAIL", name, why))
        run.__name__ = name
        CASES.append(run)
        return fn
    return deco


CASES = []


def ctx(permissive=False):
    c = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))
    if permissive:
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
    return c


def expect_raises(exc, fn, text=None):
    try:
        fn()
    except exc as e:
        if text and not re.search(text, str(e), re.I):
            raise AssertionError(f"{type(e).__name__} without {text!r}: {e}")
        return e
    raise AssertionError(f"no {exc} raised")


def raw_lines(sock, until, timeout=3):
    """Receive until regex `until` matches the accumulated bytes."""
    sock.settimeout(timeout)
    buf = b""
    while not re.search(until, buf):
        d = sock.recv(65536)
        if not d:
            break
        buf += d
    return buf


def smtp_to_starttls(port):
    """Raw socket through EHLO; returns the socket after sending STARTTLS."""
    s = socket.create_connection(("127.0.0.1", port))
    raw_lines(s, rb"(^|\n)220 [^\n]*\n")
    s.sendall(b"EHLO selftest\r\n")
    raw_lines(s, rb"(^|\n)250 [^\n]*\n")
    s.sendall(b"STARTTLS\r\n")
    return s


# ---------------------------------------------------------------- SMTP
@case("smtp-good-smtplib")
def _():
    with Play("smtp/good") as p:
        s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
        code, msg = s.ehlo()
        assert b"PRETLS" in msg and s.has_extn("starttls"), msg
        s.starttls(context=ctx())
        code, msg = s.ehlo()
        assert code == 250 and b"INTLS" in msg and not s.has_extn("starttls"), msg
        code, msg = s.mail("SECRET-x@example.org")
        assert b"INTLS-ACK" in msg, msg
        s.quit()
        pre, tls, log = p.rec_file("pre"), p.rec_file("tls"), p.rec_file("log")
        assert pre == b"ehlo " + socket.getfqdn().encode() + b"\r\nSTARTTLS\r\n" or \
            pre.endswith(b"STARTTLS\r\n"), pre
        assert b"SECRET-x" in tls and b"SECRET-x" not in pre
        assert b"HANDSHAKE ok TLSv1.3" in log, log


for kind, why in (("selfsigned", "self.signed"), ("unknownca", "unable to get local issuer"),
                  ("expired", "expired"), ("wrongname", "mismatch")):
    def make(kind=kind, why=why):
        @case(f"smtp-cert-{kind}-rejected-by-verifier")
        def _():
            with Play(f"smtp/cert-{kind}", count=2) as p:
                s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
                s.ehlo()
                expect_raises(ssl.SSLCertVerificationError, lambda: s.starttls(context=ctx()), why)
                s.close()
                s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
                s.starttls(context=ctx(permissive=True))
                code, msg = s.ehlo()
                assert b"INTLS" in msg
                s.quit()
    make()


for v, tv in (("10", ssl.TLSVersion.TLSv1), ("11", ssl.TLSVersion.TLSv1_1)):
    def make(v=v, tv=tv):
        @case(f"smtp-tls{v}-only")
        def _():
            with Play(f"smtp/tls{v}-only", count=2) as p:
                s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
                expect_raises(ssl.SSLError, lambda: s.starttls(context=ctx()))
                s.close()
                old = ctx(permissive=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    old.minimum_version = tv
                old.set_ciphers("DEFAULT:@SECLEVEL=0")
                s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
                s.starttls(context=old)
                assert s.sock.version() == {"10": "TLSv1", "11": "TLSv1.1"}[v], s.sock.version()
                s.quit()
    make()


for code in (454, 502, 501):
    def make(code=code):
        @case(f"smtp-strip-{code}")
        def _():
            with Play(f"smtp/strip-{code}") as p:
                s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
                e = expect_raises(smtplib.SMTPResponseException, lambda: s.starttls(context=ctx()))
                assert e.smtp_code == code, e
                c, msg = s.mail("x@example.org")   # the dialogue goes on in cleartext
                assert b"PRETLS" in msg
                s.quit()
    make()


@case("smtp-strip-not-advertised")
def _():
    with Play("smtp/strip-not-advertised") as p:
        s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
        expect_raises(smtplib.SMTPNotSupportedError, lambda: s.starttls(context=ctx()))
        s.quit()


@case("smtp-starttls-lookalike-not-advertised")
def _():
    with Play("smtp/starttls-lookalike") as p:
        s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
        s.ehlo()
        assert not s.has_extn("starttls"), s.esmtp_features
        s.quit()


@case("smtp-inject-after-220-same-write")
def _():
    with Play("smtp/inject-after-220") as p:
        s = smtp_to_starttls(p.port)
        time.sleep(0.3)
        got = s.recv(65536)
        assert got.startswith(b"220 2.0.0") and b"PRETLS-injected\r\n250 AUTH" in got, got
        s.close()


@case("smtp-inject-partial-line")
def _():
    with Play("smtp/inject-partial-line") as p:
        s = smtp_to_starttls(p.port)
        time.sleep(0.3)
        got = s.recv(65536)
        assert got == b"220 2.0.0 PRETLS-ready to start TLS\r\n250-PRETLS-partial", got
        s.close()


@case("smtp-inject-after-220-delayed")
def _():
    with Play("smtp/inject-after-220-delayed") as p:
        s = smtp_to_starttls(p.port)
        first = s.recv(65536)
        assert first == b"220 2.0.0 PRETLS-ready to start TLS\r\n", first
        second = raw_lines(s, rb"\n")
        assert second == b"250 PRETLS-injected late\r\n", second
        s.close()


@case("smtp-ehlo-extra-after-reply")
def _():
    with Play("smtp/ehlo-extra-after-reply") as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        raw_lines(s, rb"\n")
        s.sendall(b"EHLO x\r\n")
        time.sleep(0.2)
        got = s.recv(65536)
        assert got.endswith(b"250 STARTTLS\r\n220 2.0.0 PRETLS-ready (sent before STARTTLS was)\r\n"), got
        s.close()


@case("smtp-greeting-split-and-multiline")
def _():
    for name in ("greeting-split", "greeting-multiline", "starttls-reply-split"):
        with Play("smtp/" + name) as p:
            s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
            s.starttls(context=ctx())
            code, msg = s.mail("x@example.org")
            assert b"INTLS-ACK" in msg, (name, msg)
            s.quit()


def handshake_error(scn, exc, text=None):
    with Play(scn) as p:
        s = smtplib.SMTP("127.0.0.1", p.port, timeout=3)
        e = expect_raises(exc, lambda: s.starttls(context=ctx()), text)
        s.sock.close()
        s.close()
        return e, p.rec_file("raw"), p.rec_file("log")


@case("smtp-garbage-serverhello")
def _():
    _, raw, log = handshake_error("smtp/garbage-serverhello", ssl.SSLError, "wrong version number|record")
    assert raw[:1] == b"\x16", raw[:10]          # the client's ClientHello was recorded
    assert b"SEND-GARBAGE" in log


@case("smtp-alert-serverhello")
def _():
    handshake_error("smtp/alert-serverhello", ssl.SSLError, "handshake failure")


@case("smtp-close-mid-handshake")
def _():
    handshake_error("smtp/close-mid-handshake", (ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected))


@case("smtp-reset-mid-handshake")
def _():
    e, _, log = handshake_error("smtp/reset-mid-handshake", (ConnectionResetError, ssl.SSLError))
    assert b"CUT flight" in log and b"RESET" in log, log


@case("smtp-cut-mid-handshake")
def _():
    handshake_error("smtp/cut-mid-handshake", (ssl.SSLError, ConnectionError, OSError))


@case("smtp-stall-after-220")
def _():
    handshake_error("smtp/stall-after-220", (TimeoutError, socket.timeout))


@case("smtp-stall-mid-handshake")
def _():
    handshake_error("smtp/stall-mid-handshake", (TimeoutError, socket.timeout))


@case("smtp-stall-greeting-and-no-line-end")
def _():
    for name, want in (("stall-greeting", b""), ("no-line-end", b"220 mail.test ESMTP PRETLS-greeting without a line end")):
        with Play("smtp/" + name) as p:
            s = socket.create_connection(("127.0.0.1", p.port))
            s.settimeout(1)
            got = b""
            try:
                while True:
                    d = s.recv(4096)
                    if not d:
                        raise AssertionError("server closed")
                    got += d
            except socket.timeout:
                pass
            assert got == want, got
            s.close()


@case("smtp-1mib-lines")
def _():
    with Play("smtp/greeting-1mib") as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        got = raw_lines(s, rb"\r\n")
        assert len(got) > 1048576 and got.startswith(b"220 ") and got.count(b"\n") == 1, len(got)
        s.close()
    with Play("smtp/ehlo-many-lines") as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        raw_lines(s, rb"\n")
        s.sendall(b"EHLO x\r\n")
        got = raw_lines(s, rb"\n250 STARTTLS\r\n")
        assert got.count(b"\n") == 20002, got.count(b"\n")
        s.close()


@case("smtp-greeting-endless")
def _():
    with Play("smtp/greeting-endless") as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        s.settimeout(1)
        got = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except socket.timeout:
            pass
        assert len(got) > 1048576 and b"\n" not in got, len(got)
        s.close()


@case("smtp-close-reset-after-ehlo")
def _():
    with Play("smtp/close-after-ehlo") as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        raw_lines(s, rb"\n")
        s.sendall(b"EHLO x\r\n")
        s.settimeout(3)
        assert s.recv(100) == b""
    with Play("smtp/reset-after-greeting") as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        raw_lines(s, rb"\n")
        s.sendall(b"EHLO x\r\n")
        s.settimeout(3)
        expect_raises(ConnectionResetError, lambda: s.recv(100))


def s_client(proto, port, stdin, extra=()):
    cmd = ["openssl", "s_client", "-starttls", proto, "-connect", f"127.0.0.1:{port}",
           "-CAfile", os.path.join(CERTS, "ca.pem"), "-msg", "-crlf", "-ign_eof", *extra]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for delay, data in stdin:
        time.sleep(delay)
        p.stdin.write(data)
        p.stdin.flush()
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out.decode("latin-1")


@case("smtp-tickets-idle-s_client")
def _():
    with Play("smtp/tickets-idle") as p:
        out = s_client("smtp", p.port, [(1, b"EHLO x\n"), (2.5, b"MAIL FROM:<x@y>\n"), (1.2, b"QUIT\n")])
        assert "Verify return code: 0 (ok)" in out
        assert out.count("NewSessionTicket") >= 3 and "<<< TLS 1.3, Handshake [length 0005], KeyUpdate" in out, out[-3000:]
        assert "INTLS-ACK" in out and "PRETLS" not in out.split("KeyUpdate")[1]


@case("smtp-cert-expired-s_client")
def _():
    with Play("smtp/cert-expired") as p:
        out = s_client("smtp", p.port, [(0.5, b"QUIT\n")])
        assert "Verify return code: 10 (certificate has expired)" in out, out[-1500:]


@case("smtp-two-replies-one-record")
def _():
    with Play("smtp/two-replies-one-record") as p:
        s = smtp_to_starttls(p.port)
        assert raw_lines(s, rb"\n").startswith(b"220 ")
        t = ctx().wrap_socket(s, server_hostname="127.0.0.1")
        t.sendall(b"EHLO x\r\n")
        first = t.recv(65536)       # one TLS record: all four lines at once
        assert first.count(b"\r\n") == 4 and first.endswith(b"250 AUTH PLAIN\r\n"), first
        t.close()


@case("smtp-readvertised-and-second-greeting")
def _():
    with Play("smtp/starttls-readvertised") as p:
        s = smtplib.SMTP("127.0.0.1", p.port, timeout=5)
        s.starttls(context=ctx())
        s.ehlo()
        assert s.has_extn("starttls")
        s.quit()
    with Play("smtp/second-greeting-after-tls") as p:
        s = smtp_to_starttls(p.port)
        raw_lines(s, rb"\n")
        t = ctx().wrap_socket(s, server_hostname="127.0.0.1")
        t.settimeout(3)
        assert t.recv(4096) == b"220 mail.test ESMTP INTLS-second greeting\r\n"
        t.close()


@case("smtp-app-data-in-the-same-segment-as-finished")
def _():
    # A client whose first application record travels with its Finished: the
    # server must not leave it unread in its memory BIO.
    with Play("smtp/good") as p:
        s = smtp_to_starttls(p.port)
        assert raw_lines(s, rb"\n").startswith(b"220 ")
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx().wrap_bio(inc, out, server_hostname="127.0.0.1")
        s.settimeout(3)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out.pending:
                    s.sendall(out.read())
                inc.write(s.recv(65536))
        obj.write(b"EHLO together\r\n")
        s.sendall(out.read())                     # Finished + data in one write
        got = b""
        while b"250 AUTH PLAIN" not in got:
            try:
                got += obj.read(65536)
            except ssl.SSLWantReadError:
                inc.write(s.recv(65536))
        assert b"INTLS-hello" in got, got
        s.close()
        assert b"EARLY" not in p.rec_file("log")


@case("smtp-early-clienthello-detected")
def _():
    # A client that sends its ClientHello right behind STARTTLS, without
    # waiting for "220": the server logs EARLY (run.sh fails such a case).
    with Play("smtp/good") as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        raw_lines(s, rb"\n")
        s.sendall(b"EHLO x\r\n")
        raw_lines(s, rb"250 STARTTLS\r\n")
        s.sendall(b"STARTTLS\r\n\x16\x03\x01\x00\x05hello")
        time.sleep(0.3)
        s.close()
        assert re.search(rb"EARLY \d+", p.rec_file("log")), p.rec_file("log")


# ---------------------------------------------------------------- POP3
@case("pop3-good-poplib")
def _():
    with Play("pop3/good") as p:
        c = poplib.POP3("127.0.0.1", p.port, timeout=5)
        assert b"PRETLS" in c.getwelcome()
        c.stls(context=ctx())
        caps = c.capa()
        assert "STLS" not in caps and caps.get("SASL") == ["PLAIN"], caps
        assert b"INTLS-ACK" in c.user("SECRET-p")
        c.quit()
        assert b"SECRET-p" in p.rec_file("tls") and p.rec_file("pre").endswith(b"STLS\r\n")


@case("pop3-strip-err-and-not-advertised")
def _():
    with Play("pop3/strip-err") as p:
        c = poplib.POP3("127.0.0.1", p.port, timeout=5)
        expect_raises(poplib.error_proto, lambda: c.stls(context=ctx()), "-ERR")
        c.quit()
    with Play("pop3/strip-not-advertised") as p:
        c = poplib.POP3("127.0.0.1", p.port, timeout=5)
        expect_raises(poplib.error_proto, lambda: c.stls(context=ctx()), "STLS not supported")
        c.quit()


@case("pop3-inject-after-ok")
def _():
    with Play("pop3/inject-after-ok") as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        raw_lines(s, rb"\n")
        s.sendall(b"STLS\r\n")
        time.sleep(0.3)
        got = s.recv(4096)
        assert got == b"+OK PRETLS-begin TLS negotiation\r\n+OK PRETLS-injected\r\nUSER PRETLS\r\n.\r\n", got
        s.close()


@case("pop3-cert-wrongname")
def _():
    with Play("pop3/cert-wrongname") as p:
        c = poplib.POP3("127.0.0.1", p.port, timeout=5)
        expect_raises(ssl.SSLCertVerificationError, lambda: c.stls(context=ctx()), "mismatch")


@case("pop3-tickets-idle-s_client")
def _():
    with Play("pop3/tickets-idle") as p:
        out = s_client("pop3", p.port, [(1, b"CAPA\n"), (2.5, b"QUIT\n")])
        assert "KeyUpdate" in out and "INTLS-capability" in out, out[-2000:]


# ---------------------------------------------------------------- IMAP
@case("imap-good-imaplib")
def _():
    with Play("imap/good") as p:
        c = imaplib.IMAP4("127.0.0.1", p.port, timeout=5)
        assert "STARTTLS" in c.capabilities
        c.starttls(ssl_context=ctx())
        assert "AUTH=PLAIN" in c.capabilities and "STARTTLS" not in c.capabilities, c.capabilities
        typ, data = c.login("SECRET-i", "pw")
        assert typ == "OK" and b"INTLS-ACK" in data[0], data
        c.logout()
        tls = p.rec_file("tls")
        assert b"SECRET-i" in tls and b"SECRET-i" not in p.rec_file("pre")


@case("imap-good-s_client")
def _():
    with Play("imap/good") as p:
        out = s_client("imap", p.port, [(0.7, b"x1 CAPABILITY\n"), (0.5, b"x2 LOGOUT\n")])
        assert "Verify return code: 0 (ok)" in out and "INTLS-CAP" in out, out[-2000:]


@case("imap-preauth")
def _():
    with Play("imap/preauth") as p:
        c = imaplib.IMAP4("127.0.0.1", p.port, timeout=5)
        assert c.state == "AUTH", c.state
        c.logout()


@case("imap-strip-no-bad")
def _():
    for name, word in (("strip-no", "NO"), ("strip-bad", "BAD"), ("referral-on-starttls", "NO")):
        with Play("imap/" + name) as p:
            c = imaplib.IMAP4("127.0.0.1", p.port, timeout=5)
            expect_raises(imaplib.IMAP4.error, lambda: c.starttls(ssl_context=ctx()))
            c.logout()
            log = p.rec_file("log")
            assert b"RULE ^STARTTLS" in log and f" {word} ".encode() in log, log


@case("imap-tagged-ok-predicted")
def _():
    with Play("imap/tagged-ok-predicted") as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        raw_lines(s, rb"\n")
        s.sendall(b"Q0009 CAPABILITY\r\n")
        got = raw_lines(s, rb"Q0010 OK [^\n]*\n")
        assert b"Q0009 OK" in got and got.endswith(b"Q0010 OK PRETLS-begin TLS (predicted)\r\n"), got
        s.sendall(b"Q0010 STARTTLS\r\n")
        assert raw_lines(s, rb"\n") == b"Q0011 OK PRETLS-begin TLS (wrong tag)\r\n"
        t = ctx().wrap_socket(s, server_hostname="127.0.0.1")
        t.sendall(b"Q0011 LOGOUT\r\n")
        assert b"INTLS-BYE" in raw_lines(t, rb"Q0011 ")
        t.close()


@case("imap-untagged-data-and-alerts")
def _():
    for name in ("untagged-data-before-tls", "alert-before-tls", "referral-in-greeting",
                 "capabilities-in-greeting", "greeting-split"):
        with Play("imap/" + name) as p:
            c = imaplib.IMAP4("127.0.0.1", p.port, timeout=5)
            c.starttls(ssl_context=ctx())
            typ, data = c.login("u", "p")
            assert b"INTLS-ACK" in data[0], (name, data)
            c.logout()


@case("imap-two-replies-one-record")
def _():
    with Play("imap/two-replies-one-record") as p:
        c = imaplib.IMAP4("127.0.0.1", p.port, timeout=5)
        c.starttls(ssl_context=ctx())
        c.sock.sendall(b"z1 CAPABILITY\r\n")
        first = c.sock.recv(65536)
        assert first.count(b"\r\n") == 3 and b"z1 OK" in first, first
        c.shutdown()


# ---------------------------------------------------------------- scenarios
@case("scenarios-lint-clean")
def _():
    files = [os.path.join(d, f) for d, _, fs in os.walk(SCN) for f in fs if f.endswith(".scn")]
    assert len(files) >= 40, len(files)
    r = subprocess.run([sys.executable, FS, "--check", *files], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout, r.stdout


@case("scenarios-lint-catches-errors")
def _():
    d = tempfile.mkdtemp()
    try:
        bad = {
            "nomarker": "proto smtp\nexpect verify upgraded\nexpect encrypt upgraded\nexpect may upgraded\n"
                        "[plain]\nline 220 hello\non ^STARTTLS\ntls good\n[tls]\n",
            "noexpect": "proto smtp\nexpect verify upgraded\n[plain]\nline 220 PRETLS\n",
            "badaction": "proto smtp\nexpect verify plaintext\nexpect encrypt upgraded\nexpect may upgraded\n[plain]\nfrobnicate\n",
            "nesttls": "proto imap\nexpect verify upgraded\nexpect encrypt upgraded\nexpect may upgraded\n"
                       "[plain]\nline * OK PRETLS\non ^STARTTLS\ntls good\n[tls]\non ^STARTTLS\ntls good\n",
        }
        for name, text in bad.items():
            path = os.path.join(d, name + ".scn")
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run([sys.executable, FS, "--check", path], capture_output=True, text=True)
            assert r.returncode == 1 and r.stdout, (name, r.stdout)
    finally:
        shutil.rmtree(d)


def main():
    if not CERTS or not os.path.exists(os.path.join(CERTS, "ca.pem")):
        print("usage: selftest.py CERTDIR (made by tests/lib/mkcerts.sh)", file=sys.stderr)
        return 2
    only = sys.argv[2:]
    todo = [run for run in CASES if not only or any(o in run.__name__ for o in only)]
    # The checks are independent (one fake server each) and mostly wait: run
    # them side by side, report in a stable order.
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda run: run(), todo))
    order = {run.__name__: i for i, run in enumerate(CASES)}
    for status, name, why in sorted(results, key=lambda r: order[r[1]]):
        print(f"{status} fakeserver/{name}" + (f": {why}" if why else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
