#!/usr/bin/env python3
"""fakeserver.py: a scriptable hostile SMTP/POP3/IMAP server for starttls-shim's tests.

Usage:
    fakeserver.py SCENARIO.scn [--host 127.0.0.1] [--port 0] [--certs DIR]
                  [--record DIR] [--count N] [--ready-file F] [--max-time S]
    fakeserver.py --check SCENARIO.scn...     parse and lint scenarios, exit 1 on error

It listens on HOST:PORT (port 0 picks a free port), prints "PORT <n>" on stdout
(and writes <n> to --ready-file), and plays the scenario once for each incoming
connection, each in its own thread, until N connections were served (--count,
0 = until killed).  Python 3 standard library only.  Certificates come from
tests/lib/mkcerts.sh (--certs DIR: DIR/<name>.pem + DIR/<name>.key).

Recording (--record DIR), per connection number K (1, 2, ...):
    conn-K.pre   every byte received before the server started TLS (cleartext)
    conn-K.tls   every byte received inside TLS, decrypted
    conn-K.raw   every raw byte received after the `tls` action began (ciphertext
                 of a real handshake, or whatever the client sent after a fake one)
    conn-K.log   events, one per line: "T+0.012 RECV 14", "SEND 27 '220 ...'",
                 "RULE ^EHLO", "NOMATCH ...", "TLS good version=TLSv1.3",
                 "HANDSHAKE ok TLSv1.3", "HANDSHAKE failed <why>", "EARLY <n>"
                 (when a rule that starts TLS fired, n bytes had already
                 arrived behind the line that fired it: the client did not
                 wait for the reply), "EOF", "END <why>".

Scenario format (line based; '#' starts a comment line; blank lines ignored):

  Header lines, before the first section:
    proto smtp|pop3|imap
    desc TEXT                          what the scenario plays (may repeat)
    expect POLICY OUTCOME ["reason"...]
        POLICY is verify, encrypt or may.  OUTCOME is `upgraded`, `plaintext`
        or `refused` followed by one or more quoted reason substrings (any
        one of them must appear in the refusal).  All three policies required.
    client KEY=VALUE...                options for tests/hostile/client.py
                                       (io=select|poll|timeout|blocking|nonblock, recv=N,
                                       host=127.0.0.1|localhost: the name it connects to)
    timeout SECONDS                    STARTTLS_SHIM_TIMEOUT for this scenario (default 2)

  Sections:
    [plain]    the dialogue before TLS.  Action lines before the first `on` run
               when the client connects (the greeting).
    [tls]      the dialogue after a successful handshake.  Action lines before
               the first `on` run right after the handshake.

  Rules, inside a section:
    on REGEX           the actions below run when a received line matches REGEX
    on once REGEX      same, but the rule fires only once
        REGEX is a Python regular expression searched (case-insensitively) in
        the line without its line end.  For IMAP it is searched in the line
        without its leading tag, so `on ^STARTTLS` matches "a2 STARTTLS".
        `on *` matches any line.  The first matching rule in the section wins;
        a line that matches nothing is recorded and ignored.
    include FILE       splices another file's lines here (FILE relative to the
                       scenario's directory, then to scenarios/common/)

  Actions (bytes are queued and go out in ONE write at the next flush point:
  `flush`, `sleep`, `tls`, `close`, `reset`, `stall`, `keyupdate`, `ticket`,
  or the end of the rule; inside TLS one flush is one TLS record):
    send TEXT          TEXT exactly, no line end added
    line TEXT          TEXT followed by CRLF
        TEXT escapes: \\r \\n \\t \\0 \\\\ \\xHH; {tag} is the IMAP tag of the line
        that fired the rule, {nexttag} that tag with its trailing number + 1
        (a1 -> a2, A0001 -> A0002, x -> x1).
    fill N TEXT        TEXT repeated until exactly N bytes (no line end)
    repeat N TEXT      TEXT N times; {i} in TEXT becomes 0, 1, ... N-1
    drip SECONDS TEXT  flush, then TEXT one byte per write, SECONDS apart
    flush              write what is queued now
    sleep SECONDS      flush, then pause
    close              flush, then close the connection (FIN)
    halfclose          flush, shutdown(SHUT_WR), keep reading until the client closes
    reset              flush, then close with SO_LINGER 0 (the client gets RST)
    stall [SECONDS]    flush, then send nothing more; keep reading and recording
                       until the client closes or SECONDS (default --max-time) pass
    tls KIND [OPTION...]
                       flush, then start TLS (the rest of the rule is ignored;
                       the [tls] section takes over after a good handshake).
        KIND good|selfsigned|unknownca|expired|wrongname: a real handshake
             with that certificate from --certs.  OPTIONS:
             version=1.0|1.1|1.2|1.3  allow only that TLS version
             tickets=N                TLS 1.3 session tickets sent at the end of
                                      the handshake (Python's default is 2)
             cut=N then=close|reset|stall
                                      send only the first N bytes of the server's
                                      first flight, then do `then`
        KIND garbage [TEXT] | alert | close | reset | stall: no handshake.  The
             server waits for the client's first TLS bytes (the ClientHello),
             then answers with TEXT (default a line with PRETLS in it) / a fatal
             handshake_failure alert record / FIN / RST / nothing, and keeps
             recording what the client sends into conn-K.raw.
    ticket [N]         (TLS only) send N (default 1) TLS 1.3 NewSessionTicket messages now
    keyupdate          (TLS only) send a TLS 1.3 KeyUpdate (update_requested) now
        Python's ssl module cannot send these after the handshake; the server
        calls SSL_new_session_ticket/SSL_key_update + SSL_do_handshake through
        ctypes on the SSL* of Python's SSLObject, after checking that ctypes
        loaded the same libssl as Python's _ssl and that SSL_version() of the
        pointer matches.  If that check fails the event "UNSUPPORTED ..." is
        logged and the action is skipped.

Example:
    proto smtp
    expect verify refused "STARTTLS refused (454)"
    expect encrypt refused "STARTTLS refused (454)"
    expect may plaintext
    [plain]
    line 220 mail.test ESMTP PRETLS-greeting
    on ^EHLO
    line 250-mail.test PRETLS-hello
    line 250 STARTTLS
    on ^STARTTLS
    line 454 4.7.0 PRETLS-TLS not available
    include smtp-plain-tail.inc
"""

import argparse
import ctypes
import ctypes.util
import os
import re
import select
import socket
import ssl
import struct
import sys
import threading
import time

PROTOS = ("smtp", "pop3", "imap")
POLICIES = ("verify", "encrypt", "may")
OUTCOMES = ("upgraded", "plaintext", "refused")
CERT_KINDS = ("good", "selfsigned", "unknownca", "expired", "wrongname")
FAKE_KINDS = ("garbage", "alert", "close", "reset", "stall")
CLIENT_KEYS = {"io": ("select", "poll", "timeout", "blocking", "nonblock"), "recv": None,
               "host": ("127.0.0.1", "localhost")}
MARKER = b"PRETLS"
TLS_MARKER = b"INTLS"
FLUSHING = ("flush", "drip", "sleep", "tls", "close", "halfclose", "reset", "stall", "keyupdate", "ticket")

# A fatal TLS alert record: handshake_failure (40), record version TLS 1.2.
ALERT_RECORD = b"\x15\x03\x03\x00\x02\x02\x28"


class ScenarioError(Exception):
    pass


def unescape(text, where):
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(text):
            raise ScenarioError(f"{where}: trailing backslash")
        n = text[i + 1]
        simple = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}
        if n in simple:
            out += simple[n]
            i += 2
        elif n == "x":
            h = text[i + 2:i + 4]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", h):
                raise ScenarioError(f"{where}: bad \\x escape")
            out.append(int(h, 16))
            i += 4
        else:
            raise ScenarioError(f"{where}: unknown escape \\{n}")
    return bytes(out)


class Rule:
    def __init__(self, pattern, once, where):
        self.source = pattern
        self.once = once
        self.fired = False
        self.actions = []
        if pattern == "*":
            self.regex = None
        else:
            try:
                self.regex = re.compile(pattern, re.IGNORECASE)
            except re.error as e:
                raise ScenarioError(f"{where}: bad regex: {e}")

    def matches(self, text):
        if self.once and self.fired:
            return False
        return self.regex is None or self.regex.search(text) is not None


class Section:
    def __init__(self, name):
        self.name = name
        self.enter = []
        self.rules = []


class Scenario:
    def __init__(self, path):
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.proto = None
        self.desc = []
        self.expect = {}
        self.client = {}
        self.timeout = 2
        self.sections = {}
        self._parse(path)
        self._validate()

    # -- parsing ------------------------------------------------------------
    def _lines(self, path, depth=0):
        if depth > 4:
            raise ScenarioError(f"{path}: include nesting too deep")
        with open(path, encoding="utf-8") as f:
            for no, raw in enumerate(f, 1):
                line = raw.rstrip("\n").rstrip("\r")
                where = f"{path}:{no}"
                s = line.strip()
                if not s or s.startswith("#"):
                    continue
                if s.startswith("include "):
                    name = s.split(None, 1)[1].strip()
                    cands = [os.path.join(os.path.dirname(path), name),
                             os.path.join(os.path.dirname(os.path.dirname(path)), "common", name),
                             os.path.join(os.path.dirname(path), "common", name)]
                    for c in cands:
                        if os.path.exists(c):
                            yield from self._lines(c, depth + 1)
                            break
                    else:
                        raise ScenarioError(f"{where}: include {name}: not found")
                    continue
                yield where, line.lstrip()

    def _parse(self, path):
        section = None
        rule = None
        for where, line in self._lines(path):
            word, _, rest = line.partition(" ")
            if line.startswith("[") and line.endswith("]"):
                name = line[1:-1]
                if name not in ("plain", "tls"):
                    raise ScenarioError(f"{where}: unknown section {line}")
                section = self.sections.setdefault(name, Section(name))
                rule = None
                continue
            if section is None:
                self._header(where, word, rest)
                continue
            if word == "on":
                once = False
                pat = rest
                if rest.startswith("once "):
                    once, pat = True, rest[5:]
                pat = pat.strip()
                if not pat:
                    raise ScenarioError(f"{where}: `on` needs a pattern")
                rule = Rule(pat, once, where)
                section.rules.append(rule)
                continue
            act = self._action(where, section.name, word, rest)
            (rule.actions if rule else section.enter).append(act)

    def _header(self, where, word, rest):
        if word == "proto":
            if rest.strip() not in PROTOS:
                raise ScenarioError(f"{where}: proto must be one of {PROTOS}")
            self.proto = rest.strip()
        elif word == "desc":
            self.desc.append(rest.strip())
        elif word == "timeout":
            try:
                self.timeout = int(rest)
            except ValueError:
                raise ScenarioError(f"{where}: timeout needs whole seconds")
        elif word == "client":
            for kv in rest.split():
                k, _, v = kv.partition("=")
                if k not in CLIENT_KEYS:
                    raise ScenarioError(f"{where}: unknown client option {k}")
                allowed = CLIENT_KEYS[k]
                if allowed is None and not v.isdigit() or allowed and v not in allowed:
                    raise ScenarioError(f"{where}: bad value for client option {k}: {v}")
                self.client[k] = v
        elif word == "expect":
            m = re.fullmatch(r'(\w+)\s+(\w+)\s*(.*)', rest.strip())
            if not m:
                raise ScenarioError(f"{where}: expect POLICY OUTCOME [\"reason\"...]")
            pol, outcome, reasons = m.groups()
            if pol not in POLICIES:
                raise ScenarioError(f"{where}: unknown policy {pol}")
            if outcome not in OUTCOMES:
                raise ScenarioError(f"{where}: unknown outcome {outcome}")
            rs = re.findall(r'"([^"]+)"', reasons)
            if re.sub(r'"[^"]+"', "", reasons).strip():
                raise ScenarioError(f"{where}: reasons must be double-quoted")
            if (outcome == "refused") != bool(rs):
                raise ScenarioError(f"{where}: `refused` needs reasons, other outcomes none")
            if outcome == "plaintext" and pol != "may":
                raise ScenarioError(f"{where}: plaintext is only possible under may")
            self.expect[pol] = (outcome, rs)
        else:
            raise ScenarioError(f"{where}: unknown header line {word!r}")

    def _action(self, where, section, word, rest):
        if word in ("send", "line"):
            data = unescape(rest, where)
            return ("send", data + (b"\r\n" if word == "line" else b""))
        if word == "fill":
            n, _, text = rest.partition(" ")
            if not n.isdigit() or not text:
                raise ScenarioError(f"{where}: fill N TEXT")
            unit = unescape(text, where)
            n = int(n)
            return ("send", (unit * (n // len(unit) + 1))[:n])
        if word == "drip":
            secs, _, text = rest.partition(" ")
            try:
                return ("drip", float(secs), unescape(text, where))
            except ValueError:
                raise ScenarioError(f"{where}: drip SECONDS TEXT")
        if word == "repeat":
            n, _, text = rest.partition(" ")
            if not n.isdigit() or not text:
                raise ScenarioError(f"{where}: repeat N TEXT")
            unit = unescape(text, where)
            return ("send", b"".join(unit.replace(b"{i}", str(i).encode()) for i in range(int(n))))
        if word in ("flush", "close", "halfclose", "reset", "keyupdate"):
            if rest.strip():
                raise ScenarioError(f"{where}: {word} takes no argument")
            if word == "keyupdate" and section != "tls":
                raise ScenarioError(f"{where}: keyupdate only in [tls]")
            return (word,)
        if word in ("sleep", "stall"):
            if not rest.strip():
                if word == "sleep":
                    raise ScenarioError(f"{where}: sleep SECONDS")
                return ("stall", None)
            try:
                return (word, float(rest))
            except ValueError:
                raise ScenarioError(f"{where}: {word} needs seconds")
        if word == "ticket":
            if section != "tls":
                raise ScenarioError(f"{where}: ticket only in [tls]")
            n = rest.strip() or "1"
            if not n.isdigit():
                raise ScenarioError(f"{where}: ticket [N]")
            return ("ticket", int(n))
        if word == "tls":
            if section != "plain":
                raise ScenarioError(f"{where}: tls only in [plain] (never nest TLS)")
            parts = rest.split(None, 1) if rest.split(None, 1)[:1] == ["garbage"] else rest.split()
            if not parts:
                raise ScenarioError(f"{where}: tls KIND")
            kind = parts[0]
            opts = {}
            if kind == "garbage":
                opts["text"] = (unescape(parts[1], where) if len(parts) > 1
                                else b"PRETLS-garbage instead of a ServerHello\r\n")
            elif kind in CERT_KINDS:
                for kv in parts[1:]:
                    k, _, v = kv.partition("=")
                    if k == "version" and v in ("1.0", "1.1", "1.2", "1.3"):
                        opts[k] = v
                    elif k in ("tickets", "cut") and v.isdigit():
                        opts[k] = int(v)
                    elif k == "then" and v in ("close", "reset", "stall"):
                        opts[k] = v
                    else:
                        raise ScenarioError(f"{where}: bad tls option {kv}")
                if ("cut" in opts) != ("then" in opts):
                    raise ScenarioError(f"{where}: cut=N and then=... go together")
            elif kind in FAKE_KINDS:
                if len(parts) > 1:
                    raise ScenarioError(f"{where}: tls {kind} takes no option")
            else:
                raise ScenarioError(f"{where}: unknown tls kind {kind}")
            return ("tls", kind, opts)
        raise ScenarioError(f"{where}: unknown action {word!r}")

    def _validate(self):
        if self.proto is None:
            raise ScenarioError(f"{self.path}: no proto line")
        missing = [p for p in POLICIES if p not in self.expect]
        if missing:
            raise ScenarioError(f"{self.path}: no expect line for {', '.join(missing)}")
        if "plain" not in self.sections:
            raise ScenarioError(f"{self.path}: no [plain] section")
        has_tls = any(a[0] == "tls" for r in self.all_rules("plain") for a in r.actions) or \
            any(a[0] == "tls" for a in self.sections["plain"].enter)
        upgrade = any(o == "upgraded" for o, _ in self.expect.values())
        if upgrade and "tls" not in self.sections:
            raise ScenarioError(f"{self.path}: expects an upgrade but has no [tls] section")
        if upgrade and not has_tls:
            raise ScenarioError(f"{self.path}: expects an upgrade but never starts TLS")

    def all_rules(self, name):
        sec = self.sections.get(name)
        return sec.rules if sec else []

    def lint(self):
        """Problems that do not stop the scenario from running but break the
        suite's assertions: every write before TLS must carry the PRETLS marker."""
        problems = []
        plain = self.sections["plain"]
        groups = [("on connect", plain.enter)] + [(f"on {r.source}", r.actions) for r in plain.rules]
        for name, acts in groups:
            data = b"".join(a[1] if a[0] == "send" else a[2] for a in acts if a[0] in ("send", "drip"))
            fake = [a for a in acts if a[0] == "tls" and a[1] == "garbage"]
            for a in fake:
                if MARKER not in a[2]["text"]:
                    problems.append(f"{name}: tls garbage text lacks {MARKER.decode()}")
            if data and MARKER not in data:
                problems.append(f"{name}: bytes sent before TLS lack the {MARKER.decode()} marker")
        return problems


# -- ctypes access to the SSL* behind an SSLObject, for ticket/keyupdate ------

_libssl = None
_libssl_err = None


def _load_libssl():
    global _libssl, _libssl_err
    if _libssl or _libssl_err:
        return _libssl
    try:
        name = ctypes.util.find_library("ssl") or "libssl.so.3"
        lib = ctypes.CDLL(name)
        lib.OpenSSL_version_num.restype = ctypes.c_ulong
        if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
            raise OSError(f"{name} is not the libssl Python's _ssl uses")
        for fn in ("SSL_key_update", "SSL_do_handshake", "SSL_new_session_ticket", "SSL_version"):
            getattr(lib, fn).restype = ctypes.c_int
        lib.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.SSL_do_handshake.argtypes = [ctypes.c_void_p]
        lib.SSL_new_session_ticket.argtypes = [ctypes.c_void_p]
        lib.SSL_version.argtypes = [ctypes.c_void_p]
        _libssl = lib
    except (OSError, AttributeError) as e:
        _libssl_err = str(e)
    return _libssl


def ssl_pointer(sslobject):
    """SSL* of an ssl.SSLObject (CPython's PySSLSocket: PyObject_HEAD, Socket, ssl),
    or raise OSError when that layout cannot be confirmed."""
    lib = _load_libssl()
    if lib is None:
        raise OSError(f"libssl via ctypes: {_libssl_err}")
    inner = sslobject._sslobj
    ptr = ctypes.cast(id(inner), ctypes.POINTER(ctypes.c_void_p))[3]
    want = {"TLSv1.3": 0x0304, "TLSv1.2": 0x0303, "TLSv1.1": 0x0302, "TLSv1": 0x0301}.get(sslobject.version())
    if not ptr or lib.SSL_version(ptr) != want:
        raise OSError("could not locate SSL* inside the SSLObject")
    return ptr


# -- one connection ----------------------------------------------------------

class Closed(Exception):
    """The connection is over (EOF, error, or the scenario ended it)."""


class Conn:
    def __init__(self, server, sock, number):
        self.srv = server
        self.scn = server.scn
        self.sock = sock
        self.num = number
        self.t0 = time.monotonic()
        self.deadline = self.t0 + server.args.max_time
        self.inbuf = bytearray()
        self.outq = bytearray()
        self.tls = None            # ssl.SSLObject once the handshake succeeded
        self.bio_in = self.bio_out = None
        self.phase = "plain"
        self.section = self.scn.sections["plain"]
        self.fake_tls = False      # `tls` started without a real handshake
        rec = server.args.record
        self.files = {}
        if rec:
            for ext in ("pre", "tls", "raw", "log"):
                self.files[ext] = open(os.path.join(rec, f"conn-{number}.{ext}"), "wb", buffering=0)

    # -- recording --
    def log(self, msg):
        line = f"T+{time.monotonic() - self.t0:.3f} {msg}\n"
        if "log" in self.files:
            self.files["log"].write(line.encode("utf-8", "replace"))
        if self.srv.args.verbose:
            sys.stderr.write(f"conn {self.num}: {line}")

    def record(self, ext, data):
        if ext in self.files and data:
            self.files[ext].write(data)

    # -- raw socket --
    def _wait_readable(self, until):
        while True:
            left = min(until, self.deadline) - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], min(left, 0.5))
            if r:
                return True

    def raw_recv(self, until):
        """Bytes from the socket, b'' on EOF; None when `until` passed."""
        if not self._wait_readable(until):
            if time.monotonic() >= self.deadline:
                raise Closed("max-time reached")
            return None
        try:
            data = self.sock.recv(65536)
        except OSError as e:
            self.log(f"RECV-ERROR {e}")
            raise Closed(f"recv: {e}")
        if self.phase == "plain" and not self.fake_tls:
            self.record("pre", data)
        else:
            self.record("raw", data)
        self.log(f"RECV {len(data)}" if data else "EOF")
        return data

    def raw_send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.log(f"SEND-ERROR {e}")
            raise Closed(f"send: {e}")

    # -- application data --
    def fill_inbuf(self, until):
        """Read more application bytes into inbuf. False on timeout; Closed on EOF."""
        while True:
            if self.tls is not None:
                # Records that came in with the handshake's last flight (or
                # with an earlier record) are already in the memory BIO.
                got = self._tls_read()
                self._tls_flush()
                if got:
                    return True
            data = self.raw_recv(until)
            if data is None:
                return False
            if data == b"":
                raise Closed("client closed")
            if self.tls is None:
                self.inbuf += data
                return True
            self.bio_in.write(data)

    def _tls_read(self):
        got = False
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return got
            except ssl.SSLZeroReturnError:
                self.log("TLS close_notify")
                raise Closed("client closed TLS")
            except ssl.SSLError as e:
                self.log(f"TLS-ERROR {e}")
                raise Closed(f"tls: {e}")
            if not chunk:
                raise Closed("client closed TLS")
            self.record("tls", chunk)
            self.inbuf += chunk
            got = True

    def _tls_flush(self):
        data = self.bio_out.read()
        if data:
            self.raw_send(data)

    def flush(self):
        if not self.outq:
            return
        data = bytes(self.outq)
        self.outq.clear()
        shown = data[:70] + (b"..." if len(data) > 70 else b"")
        self.log(f"SEND {len(data)} {shown!r}")
        if self.tls is None:
            self.raw_send(data)
        else:
            self.tls.write(data)
            self._tls_flush()

    def next_line(self):
        while True:
            i = self.inbuf.find(b"\n")
            if i >= 0:
                line = bytes(self.inbuf[:i + 1])
                del self.inbuf[:i + 1]
                return line
            self.fill_inbuf(self.deadline)

    # -- running the scenario --
    def run(self):
        try:
            self.log(f"CONNECT {self.scn.proto} {self.scn.name}")
            self.do_actions(self.section.enter, b"")
            while True:
                line = self.next_line()
                self.dispatch(line)
        except Closed as e:
            self.log(f"END {e}")
        except Exception as e:  # a fakeserver bug: say so loudly
            self.log(f"END internal error {e!r}")
            import traceback
            traceback.print_exc()
            self.srv.errors += 1
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            for f in self.files.values():
                f.close()

    def dispatch(self, line):
        text = line.rstrip(b"\r\n").decode("latin-1")
        tag = b""
        if self.scn.proto == "imap":
            first, _, rest = text.partition(" ")
            tag, text = first.encode("latin-1"), rest
        for rule in self.section.rules:
            if rule.matches(text):
                rule.fired = True
                self.log(f"RULE {rule.source}")
                if any(a[0] == "tls" for a in rule.actions):
                    # The line that leads to TLS (STARTTLS): the client must
                    # now wait for our reply; anything already here is early.
                    early = self.early_bytes()
                    if early:
                        self.log(f"EARLY {early}")
                self.do_actions(rule.actions, tag)
                return
        self.log(f"NOMATCH {line[:70]!r}")

    @staticmethod
    def nexttag(tag):
        m = re.match(rb"^(.*?)(\d+)$", tag)
        if not m:
            return tag + b"1"
        n = str(int(m.group(2)) + 1).encode().rjust(len(m.group(2)), b"0")
        return m.group(1) + n

    def do_actions(self, actions, tag):
        for act in actions:
            kind = act[0]
            if kind in FLUSHING:
                self.flush()
            if kind == "send":
                self.outq += act[1].replace(b"{tag}", tag).replace(b"{nexttag}", self.nexttag(tag))
            elif kind == "flush":
                pass
            elif kind == "drip":
                for i in range(len(act[2])):
                    self.outq += act[2][i:i + 1]
                    self.flush()
                    time.sleep(act[1])
            elif kind == "sleep":
                time.sleep(act[1])
            elif kind == "close":
                self.log("CLOSE")
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise Closed("scenario closed")
            elif kind == "halfclose":
                self.log("HALFCLOSE")
                self.sock.shutdown(socket.SHUT_WR)
                self.drain(None)
            elif kind == "reset":
                self.reset()
            elif kind == "stall":
                self.log("STALL")
                self.drain(act[1])
            elif kind == "tls":
                self.start_tls(act[1], act[2])
                return          # the [tls] section (or the end) follows
            elif kind in ("ticket", "keyupdate"):
                self.post_handshake(kind, act[1] if kind == "ticket" else 0)
        self.flush()

    def reset(self):
        self.log("RESET")
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raise Closed("scenario reset")

    def drain(self, seconds):
        """Send nothing more; record what arrives until EOF or `seconds`."""
        until = self.deadline if seconds is None else time.monotonic() + seconds
        while time.monotonic() < until:
            if self.tls is not None:
                self.fill_inbuf(until)
                self.inbuf.clear()
                continue
            data = self.raw_recv(until)
            if data == b"":
                raise Closed("client closed")
        raise Closed("stall ended")

    def early_bytes(self):
        """Bytes the client sent after the line that triggered `tls`, before our reply."""
        n = len(self.inbuf)
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
            if r:
                n += len(self.sock.recv(65536, socket.MSG_PEEK))
        except OSError:
            pass
        return n

    def start_tls(self, kind, opts):
        leftover = bytes(self.inbuf)
        self.inbuf.clear()
        self.fake_tls = True
        self.log(f"TLS {kind} " + " ".join(f"{k}={v!r}" for k, v in sorted(opts.items())))
        if kind in FAKE_KINDS:
            if not leftover:
                data = self.raw_recv(self.deadline)
                if not data:
                    raise Closed("client closed before sending a ClientHello")
            if kind == "garbage":
                self.log(f"SEND-GARBAGE {opts['text'][:70]!r}")
                self.raw_send(opts["text"])
            elif kind == "alert":
                self.log("SEND-ALERT handshake_failure")
                self.raw_send(ALERT_RECORD)
            elif kind == "close":
                self.log("CLOSE")
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise Closed("closed instead of a handshake")
            elif kind == "reset":
                self.reset()
            self.drain(None)
        ctx = self.srv.context(kind, opts)
        self.bio_in, self.bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(self.bio_in, self.bio_out, server_side=True)
        if leftover:
            self.record("raw", leftover)
            self.bio_in.write(leftover)
        first_flight = True
        while True:
            try:
                obj.do_handshake()
                self._send_flight(opts, first_flight)
                break
            except ssl.SSLWantReadError:
                if self._send_flight(opts, first_flight):
                    first_flight = False
                data = self.raw_recv(self.deadline)
                if not data:
                    self.log("HANDSHAKE failed: client closed")
                    raise Closed("client closed during the handshake")
                self.bio_in.write(data)
            except ssl.SSLError as e:
                try:
                    self._send_flight({}, False)      # our alert, if any
                except Closed:
                    pass
                self.log(f"HANDSHAKE failed {e}")
                self.drain(None)
        self.tls = obj
        self.fake_tls = False
        self.phase = "tls"
        self.log(f"HANDSHAKE ok {obj.version()} {obj.cipher()[0]}")
        sec = self.scn.sections.get("tls")
        if sec is None:
            self.log("no [tls] section: stalling")
            self.drain(None)
        self.section = sec
        self.do_actions(sec.enter, b"")

    def _send_flight(self, opts, first):
        """Send what OpenSSL wrote; True when something went out."""
        data = self.bio_out.read()
        if not data:
            return False
        if first and "cut" in opts:
            self.log(f"CUT flight of {len(data)} bytes after {opts['cut']}")
            self.raw_send(data[:opts["cut"]])
            then = opts["then"]
            if then == "close":
                self.log("CLOSE")
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise Closed("closed mid-handshake")
            if then == "reset":
                self.reset()
            self.log("STALL")
            self.drain(None)
        self.raw_send(data)
        return True

    def post_handshake(self, kind, n):
        try:
            ptr = ssl_pointer(self.tls)
        except OSError as e:
            self.log(f"UNSUPPORTED {kind}: {e}")
            return
        lib = _libssl
        if kind == "ticket":
            for _ in range(n):
                if lib.SSL_new_session_ticket(ptr) != 1 or lib.SSL_do_handshake(ptr) != 1:
                    self.log("UNSUPPORTED ticket: SSL_new_session_ticket failed")
                    return
            self.log(f"TICKET {n}")
        else:
            if lib.SSL_key_update(ptr, 1) != 1 or lib.SSL_do_handshake(ptr) != 1:
                self.log("UNSUPPORTED keyupdate: SSL_key_update failed")
                return
            self.log("KEYUPDATE")
        self._tls_flush()


class Server:
    def __init__(self, scn, args):
        self.scn = scn
        self.args = args
        self.errors = 0
        self._ctx = {}
        self._lock = threading.Lock()

    def context(self, kind, opts):
        key = (kind, opts.get("version"), opts.get("tickets"))
        with self._lock:
            if key in self._ctx:
                return self._ctx[key]
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            d = self.args.certs
            ctx.load_cert_chain(os.path.join(d, kind + ".pem"), os.path.join(d, kind + ".key"))
            v = opts.get("version")
            if v:
                ver = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
                       "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[v]
                if v in ("1.0", "1.1"):
                    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                ctx.minimum_version = ver
                ctx.maximum_version = ver
            if "tickets" in opts:
                ctx.num_tickets = opts["tickets"]
            self._ctx[key] = ctx
            return ctx

    def serve(self):
        a = self.args
        ls = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((a.host, a.port))
        ls.listen(16)
        port = ls.getsockname()[1]
        print(f"PORT {port}", flush=True)
        if a.ready_file:
            tmp = a.ready_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{port}\n")
            os.rename(tmp, a.ready_file)
        threads = []
        n = 0
        while a.count == 0 or n < a.count:
            s, _ = ls.accept()
            n += 1
            c = Conn(self, s, n)
            t = threading.Thread(target=c.run, daemon=True)
            t.start()
            threads.append(t)
        ls.close()
        for t in threads:
            t.join()
        return 1 if self.errors else 0


def main():
    p = argparse.ArgumentParser(description="scriptable hostile mail server (see the module docstring)")
    p.add_argument("scenario", nargs="+")
    p.add_argument("--check", action="store_true", help="only parse and lint the scenarios")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--certs", default=os.environ.get("FAKESERVER_CERTS", ""))
    p.add_argument("--record", default="")
    p.add_argument("--count", type=int, default=0, help="connections to serve (0: until killed)")
    p.add_argument("--ready-file", default="")
    p.add_argument("--max-time", type=float, default=60, help="seconds a connection may live")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args()
    if a.check:
        bad = 0
        for path in a.scenario:
            try:
                problems = Scenario(path).lint()
            except (ScenarioError, OSError) as e:
                problems = [str(e)]
            for pr in problems:
                print(f"{path}: {pr}")
                bad += 1
        return 1 if bad else 0
    if len(a.scenario) != 1:
        p.error("one scenario per run")
    try:
        scn = Scenario(a.scenario[0])
    except (ScenarioError, OSError) as e:
        print(f"fakeserver: {e}", file=sys.stderr)
        return 2
    if not a.certs:
        p.error("--certs DIR (from tests/lib/mkcerts.sh) is required to play a scenario")
    if a.record:
        os.makedirs(a.record, exist_ok=True)
    return Server(scn, a).serve()


if __name__ == "__main__":
    sys.exit(main())
