#!/usr/bin/env python3
"""backend-server.py - a small STARTTLS SMTP server for the TLS backend tests
(tests/io/backend.sh, tests/integration/backend-setuid.sh).

    backend-server.py --host H --port P --cert PEM --key KEY --ready-file F
                      [--tls12-port P2]

Before TLS: greeting 220, EHLO -> 250 with STARTTLS, STARTTLS -> 220, then
the handshake.  Inside TLS: EHLO -> 250, MAIL/RCPT/NOOP/RSET -> 250, and
  CUT  -> "250 cut", then the TCP stream ends WITHOUT close_notify (a forged
          FIN: what an on-path attacker can send)
  LATE -> "250 late", then, once the client has ended its side, the TCP
          end without close_notify (a server answering a client's FIN so)
  BYE  -> "221 bye", then close_notify, then the TCP end (a clean close)
  QUIT -> as BYE.
--tls12-port also listens for plain TLS (no SMTP) capped at TLS 1.2, answering
"hello over TLS" to any connection: the program's own TLS in the
OPENSSL_CONF test.  Writes "PORT[ P2]" to the ready file.  Threads, stdlib
only; runs until killed.
"""
import argparse
import os
import socket
import ssl
import threading


def smtp(conn, ctx):
    rf = conn.makefile("rb")
    conn.sendall(b"220 backend.test ESMTP\r\n")
    tls = None
    while True:
        line = rf.readline()
        if not line:
            return
        cmd = line.strip().upper()
        out = tls if tls else conn
        if cmd.startswith(b"EHLO"):
            out.sendall(b"250-backend.test\r\n" + (b"250 8BITMIME\r\n" if tls else b"250 STARTTLS\r\n"))
        elif cmd == b"STARTTLS" and tls is None:
            conn.sendall(b"220 go ahead\r\n")
            tls = ctx.wrap_socket(conn, server_side=True)
            rf = tls.makefile("rb")
        elif cmd == b"CUT" and tls:
            tls.sendall(b"250 cut\r\n")
            tls.shutdown(socket.SHUT_RDWR)      # the TCP FIN alone: no close_notify
            return
        elif cmd == b"LATE" and tls:
            tls.sendall(b"250 late\r\n")
            try:
                while rf.read(4096):            # until the client's end
                    pass
            except (OSError, ssl.SSLError):
                pass
            tls.shutdown(socket.SHUT_RDWR)      # then our FIN alone
            return
        elif cmd in (b"BYE", b"QUIT") and tls:
            tls.sendall(b"221 bye\r\n")
            try:
                tls.unwrap()                    # close_notify (and wait for the peer's)
            except (OSError, ssl.SSLError):
                pass
            return
        elif cmd.split(b" ")[0] in (b"MAIL", b"RCPT", b"NOOP", b"RSET"):
            out.sendall(b"250 ok\r\n")
        else:
            out.sendall(b"500 what\r\n")


def plain_tls(conn, ctx):
    with ctx.wrap_socket(conn, server_side=True) as t:
        t.sendall(b"hello over TLS\r\n")
        try:
            t.unwrap()
        except (OSError, ssl.SSLError):
            pass


def serve(sock, fn, ctx):
    while True:
        conn, _ = sock.accept()

        def run(c=conn):
            try:
                fn(c, ctx)
            except (OSError, ssl.SSLError):
                pass
            finally:
                c.close()
        threading.Thread(target=run, daemon=True).start()


def listen(host, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    return s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--tls12-port", type=int)
    a = p.parse_args()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    s = listen(a.host, a.port)
    ready = str(s.getsockname()[1])
    if a.tls12_port is not None:
        ctx12 = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx12.load_cert_chain(a.cert, a.key)
        ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
        s12 = listen(a.host, a.tls12_port)
        ready += " " + str(s12.getsockname()[1])
        threading.Thread(target=serve, args=(s12, plain_tls, ctx12), daemon=True).start()
    with open(a.ready_file + ".tmp", "w") as f:
        f.write(ready + "\n")
    os.rename(a.ready_file + ".tmp", a.ready_file)
    serve(s, smtp, ctx)


if __name__ == "__main__":
    main()
