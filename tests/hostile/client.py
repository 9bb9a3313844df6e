#!/usr/bin/env python3
"""client.py: a dumb cleartext mail client for the hostile-server suite.

It knows nothing about TLS or STARTTLS: plain socket connect/send/recv (so the
shim's libc hooks see every call).  It reads the greeting, sends EHLO / CAPA /
CAPABILITY, then a command carrying SECRET (MAIL FROM, USER+PASS, LOGIN), then
QUIT / LOGOUT, whatever the server answers: after a refusal it keeps writing,
so the suite can check that those writes never reach the network.

Every byte received is appended to --out as it arrives.  Diagnostics go to
stderr as "client: ..." lines (the shim logs to stderr too).

    client.py --proto smtp|pop3|imap --port N --secret S --out FILE
              [--host 127.0.0.1] [--io select|poll|timeout|blocking|nonblock]
              [--recv N] [--step-timeout S]

--io: how the program waits for data
    select    blocking socket, select() then recv()           (default)
    poll      blocking socket, poll() then recv()
    timeout   socket.settimeout(): non-blocking connect and recv, poll() inside Python
    blocking  blocking connect and recv(), no readiness call (SIGALRM bounds a step)
    nonblock  O_NONBLOCK after connect, select() then recv(); EAGAIN is retried
Exit status: 0 when the script ran to its end (whatever the replies were),
2 on a usage error.
"""

import argparse
import errno
import re
import select
import signal
import socket
import sys
import time


T0 = time.monotonic()


def log(msg):
    sys.stderr.write(f"client: T+{time.monotonic() - T0:.3f} {msg}\n")
    sys.stderr.flush()


class StepTimeout(Exception):
    pass


class Client:
    def __init__(self, a):
        self.a = a
        self.out = open(a.out, "ab", buffering=0)
        self.buf = b""          # bytes of the current reply
        self.eof = False
        self.sock = None

    def connect(self):
        a = self.a
        if a.io == "timeout":
            self.sock = socket.create_connection((a.host, a.port), timeout=a.step_timeout)
        else:
            self.sock = socket.create_connection((a.host, a.port))
        if a.io == "nonblock":
            self.sock.setblocking(False)
        log(f"connected to {a.host}:{a.port} io={a.io} recv={a.recv}")

    def _wait(self, left):
        """True when the socket is readable within `left` seconds."""
        io = self.a.io
        if io in ("select", "nonblock"):
            r, _, _ = select.select([self.sock], [], [], left)
            return bool(r)
        if io == "poll":
            p = select.poll()
            p.register(self.sock, select.POLLIN | select.POLLHUP | select.POLLERR)
            return bool(p.poll(int(left * 1000) + 1))
        return True     # timeout / blocking: recv itself waits

    def _recv_once(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise StepTimeout()
        if not self._wait(left):
            raise StepTimeout()
        io = self.a.io
        try:
            if io == "timeout":
                self.sock.settimeout(left)
            if io == "blocking":
                signal.setitimer(signal.ITIMER_REAL, left)
            try:
                return self.sock.recv(self.a.recv)
            finally:
                if io == "blocking":
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except socket.timeout:
            raise StepTimeout()
        except BlockingIOError:
            if io == "nonblock":
                return None     # select said readable, no application data: wait again
            log("recv on a blocking socket failed with EAGAIN")
            raise
        except OSError as e:
            log(f"recv error: {e}")
            return b""

    def _read_some(self, deadline, what):
        """Append the next bytes to self.buf and return them; None after a
        step timeout or EOF (both logged)."""
        while True:
            try:
                data = self._recv_once(deadline)
            except StepTimeout:
                log(f"timeout waiting for the reply to {what} (got {len(self.buf)} bytes)")
                return None
            except BlockingIOError:
                self.eof = True
                return None
            if data is None:
                continue        # nonblock: readable but no application data yet
            if data == b"":
                log(f"EOF while waiting for the reply to {what}")
                self.eof = True
                return None
            self.out.write(data)
            self.buf += data
            if self.a.verbose and (len(self.buf) - len(data) < 65536 or b"\n" in data):
                log(f"recv {len(data)} {data[:60]!r}")
            return data

    def read_until(self, done, what):
        """Read until done(bytes of this reply, start) is true, EOF or the step timeout."""
        self.buf = b""
        if self.eof:
            return
        deadline = time.monotonic() + self.a.step_timeout
        start = 0
        while not done(self.buf, start):
            start = self.buf.rfind(b"\n") + 1
            while True:     # every completion test needs a line end: read on until one comes
                data = self._read_some(deadline, what)
                if data is None:
                    return
                if b"\n" in data:
                    break

    def send(self, line):
        data = line.encode() + b"\r\n"
        if self.a.verbose:
            log(f"send {data[:60]!r}")
        try:
            if self.a.io == "nonblock":
                self.sock.setblocking(True)
            self.sock.sendall(data)
            if self.a.io == "nonblock":
                self.sock.setblocking(False)
        except OSError as e:
            log(f"send of {line.split()[0]!r} failed: {e}")

    # Completion tests on the bytes of one reply; `start` is where the line
    # holding the first new byte begins (so 1 MiB replies stay linear).
    SMTP_LAST = re.compile(rb"^\d{3}(\r?\n| [^\n]*\n)", re.M)

    @classmethod
    def smtp_done(cls, b, start):
        return cls.SMTP_LAST.search(b, start) is not None or \
            (b and not re.match(rb"\d{3}[- ]", b) and b.endswith(b"\n"))

    @staticmethod
    def line_done(b, start):
        return b.endswith(b"\n")

    @staticmethod
    def pop3_multi_done(b, start):
        return b.startswith(b"-") and b.endswith(b"\n") or b.endswith(b"\r\n.\r\n") or b == b".\r\n"

    @staticmethod
    def imap_tagged(tag):
        rx = re.compile(rb"^" + re.escape(tag.encode()) + rb" [^\n]*\n", re.M)

        def done(b, start):
            return rx.search(b, start) is not None
        return done

    def run(self):
        a = self.a
        self.connect()
        s = a.secret
        if a.proto == "smtp":
            self.read_until(self.smtp_done, "greeting")
            self.send("EHLO CLIENTHELO.example")
            self.read_until(self.smtp_done, "EHLO")
            self.send(f"MAIL FROM:<{s}@example.org>")
            self.read_until(self.smtp_done, "MAIL")
            self.send("QUIT")
            self.read_until(self.smtp_done, "QUIT")
        elif a.proto == "pop3":
            self.read_until(self.line_done, "greeting")
            self.send("CAPA")
            self.read_until(self.pop3_multi_done, "CAPA")
            self.send(f"USER {s}")
            self.read_until(self.line_done, "USER")
            self.send(f"PASS {s}-password")
            self.read_until(self.line_done, "PASS")
            self.send("QUIT")
            self.read_until(self.line_done, "QUIT")
        else:
            self.read_until(self.line_done, "greeting")
            self.send("CLNT1 CAPABILITY")
            self.read_until(self.imap_tagged("CLNT1"), "CAPABILITY")
            self.send(f'CLNT2 LOGIN {s} "{s}-password"')
            self.read_until(self.imap_tagged("CLNT2"), "LOGIN")
            self.send("CLNT3 LOGOUT")
            self.read_until(self.imap_tagged("CLNT3"), "LOGOUT")
        try:
            self.sock.close()
        except OSError:
            pass
        log("done")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto", required=True, choices=("smtp", "pop3", "imap"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--io", default="select", choices=("select", "poll", "timeout", "blocking", "nonblock"))
    p.add_argument("--recv", type=int, default=4096)
    p.add_argument("--step-timeout", type=float, default=4.0)
    p.add_argument("-v", "--verbose", action="store_true", help="log every send and recv")
    a = p.parse_args()
    if a.io == "blocking":
        def alarm(signum, frame):
            raise StepTimeout()
        signal.signal(signal.SIGALRM, alarm)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        Client(a).run()
    except ConnectionError as e:
        log(f"connection error: {e}")
    except OSError as e:
        log(f"error: {e} (errno {errno.errorcode.get(e.errno, e.errno)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
