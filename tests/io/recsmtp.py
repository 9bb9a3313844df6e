#!/usr/bin/env python3
"""recsmtp.py - a loopback SMTP server for tests/io/race.sh that records every
raw byte a client sends and says whether anything but TLS records reached it
after STARTTLS.

    recsmtp.py --host H --port P --cert PEM --key KEY --log F [--ready-file F]
               [--mode tls|rst] [--accept-delay S]

--mode tls (default), per connection K:
  greets "220 rec.test ESMTP"; before TLS: EHLO -> 250 with STARTTLS,
  STARTTLS -> 220 then TLS; any other line is program data in cleartext:
  logged "LEAK K pre ..." and answered "500 plain ...".  Inside TLS every line
  is logged "TLS K <line>" and answered "250 tls <line>" (unless it ends in
  " NOREPLY": a client that closes with a reply unread would reset).  Every raw byte
  after the 220 to STARTTLS must parse as TLS records (type 20-23, version
  3.x, length <= 18432) until the client closes; otherwise "LEAK K raw ...".
  Any "SECRET" in the cleartext bytes is "LEAK K secret ...".  A clean TLS end
  logs "NOTIFY K".
--mode rst: greets "220 PRETLS-greeting" and resets the connection (RST).
--accept-delay S: listen queue of one, S seconds between accepts (a
connect() then waits in the kernel for a second or more).
Each connection logs "START K" first and "END K" last, so that a test can
wait for the server to have judged everything.  Stdlib only, a thread per
connection.
"""
import argparse
import os
import socket
import ssl
import struct
import sys
import threading
import time

lock = threading.Lock()
count = 0


def log(args, text):
    with lock:
        with open(args.log, "a") as f:
            f.write(text + "\n")


def records_ok(raw):
    """(True, '') if raw is whole TLS records (a truncated last one is
    tolerated only if its header is sane), else (False, where)."""
    i = 0
    while i < len(raw):
        hdr = raw[i:i + 5]
        if len(hdr) >= 1 and not 20 <= hdr[0] <= 23:
            return False, "offset %d: %r" % (i, raw[i:i + 40])
        if len(hdr) >= 2 and hdr[1] != 3:
            return False, "offset %d: %r" % (i, raw[i:i + 40])
        if len(hdr) < 5:
            return True, ""
        n = struct.unpack(">H", hdr[3:5])[0]
        if n > 18432:
            return False, "offset %d: length %d: %r" % (i, n, raw[i:i + 40])
        i += 5 + n
    return True, ""


def handle_tls(args, ctx, sock, k):
    pre = b""
    buf = b""
    sock.sendall(b"220 rec.test ESMTP\r\n")
    started = False
    while not started:
        data = sock.recv(65536)
        if not data:
            return
        pre += data
        buf += data
        while b"\n" in buf and not started:
            line, buf = buf.split(b"\n", 1)
            cmd = line.strip()
            log(args, "PRE %d %s" % (k, cmd[:80].decode("latin-1")))
            if cmd.upper().startswith(b"EHLO"):
                sock.sendall(b"250-rec.test\r\n250 STARTTLS\r\n")
            elif cmd.upper() == b"STARTTLS":
                sock.sendall(b"220 go ahead\r\n")
                started = True
            else:
                log(args, "LEAK %d pre %r" % (k, line[:80]))
                sock.sendall(b"500 plain " + cmd[:100] + b"\r\n")
    if b"SECRET" in pre:
        log(args, "LEAK %d secret before TLS: %r" % (k, pre[:200]))
    raw = buf
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_side=True)
    inc.write(buf)
    text = b""
    up = True
    shaken = False
    eof = False
    while True:
        if up:
            try:
                if not shaken:
                    tls.do_handshake()
                    shaken = True
                while True:
                    chunk = tls.read(65536)
                    if not chunk:	# a close_notify (no data would be WantRead)
                        raise ssl.SSLZeroReturnError()
                    text += chunk
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                log(args, "NOTIFY %d" % k)
                up = False
            except ssl.SSLError as e:
                log(args, "TLSERR %d %s" % (k, e))
                up = False
            pending = out.read()
            if pending:
                try:
                    sock.sendall(pending)
                except OSError:
                    up = False
            while b"\n" in text:
                line, text = text.split(b"\n", 1)
                log(args, "TLS %d %s" % (k, line.strip().decode("latin-1")))
                if line.strip().endswith(b" NOREPLY"):
                    continue
                out_line = b"250 tls " + line.strip()[:200] + b"\r\n"
                try:
                    tls.write(out_line)
                    sock.sendall(out.read())
                except (ssl.SSLError, OSError):
                    pass
        if eof:
            break
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            eof = True
            continue
        raw += data
        if up:
            inc.write(data)
    ok, where = records_ok(raw)
    if not ok:
        log(args, "LEAK %d raw not TLS at %s" % (k, where))
    if b"SECRET" in raw:
        log(args, "LEAK %d secret in raw bytes" % k)


def serve_one(args, ctx, sock, k):
    log(args, "START %d" % k)
    try:
        if args.mode == "rst":
            sock.sendall(b"220 PRETLS-greeting\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            handle_tls(args, ctx, sock, k)
    except OSError as e:
        log(args, "OSERR %d %s" % (k, e))
    finally:
        sock.close()
        log(args, "END %d" % k)


def main():
    global count
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--mode", default="tls", choices=("tls", "rst"))
    p.add_argument("--accept-delay", type=float, default=0.0)
    p.add_argument("--ready-file")
    args = p.parse_args()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    fam = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.host, args.port))
    # --accept-delay: a listen queue of one, served slowly, so that a client's
    # connect() waits in the kernel (SYN dropped, resent after 1 s)
    ls.listen(0 if args.accept_delay else 512)
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write("%d\n" % ls.getsockname()[1])
        os.rename(args.ready_file + ".tmp", args.ready_file)
    while True:
        s, _ = ls.accept()
        count += 1
        threading.Thread(target=serve_one, args=(args, ctx, s, count), daemon=True).start()
        if args.accept_delay:
            time.sleep(args.accept_delay)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        pass
