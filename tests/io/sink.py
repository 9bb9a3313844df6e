#!/usr/bin/env python3
"""sink.py - a STARTTLS SMTP server for tests/io/stress.sh that records
every byte the client sends inside TLS, and can stop reading.

    sink.py --cert PEM --key KEY --dir DIR [--host H] [--port P] [--ready-file F]

Before TLS: EHLO -> 250 with STARTTLS, STARTTLS -> 220 then the handshake.
Inside TLS the first line must be

    SINK <pause-seconds> <id>

answered "250 sink".  The server then reads nothing for <pause-seconds>
(the client's writes back up: its socket buffers fill), then reads to the
end of the stream (close_notify, FIN or a reset) and writes what it got to
DIR/<id>.bin, then DIR/<id>.done holding the byte count.  One thread per
connection; stdlib only.  Port 0 picks a free port, written to --ready-file.
"""
import argparse
import os
import re
import socket
import ssl
import threading
import time


def readline(sock):
    line = b""
    while not line.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise EOFError
        line += b
        if len(line) > 1000:
            raise EOFError
    return line


def handle(conn, ctx, outdir):
    tls = None
    try:
        conn.sendall(b"220 sink.test ESMTP\r\n")
        while True:
            cmd = readline(conn).strip().upper()
            if cmd.startswith(b"EHLO"):
                conn.sendall(b"250-sink.test\r\n250 STARTTLS\r\n")
            elif cmd == b"STARTTLS":
                conn.sendall(b"220 go ahead\r\n")
                break
            else:
                conn.sendall(b"500 what\r\n")
        tls = ctx.wrap_socket(conn, server_side=True)
        m = None
        while m is None:
            line = readline(tls).strip()
            m = re.match(rb"SINK ([0-9.]+) ([A-Za-z0-9_.-]+)$", line)
            if m is None:
                tls.sendall(b"250 ok\r\n" if line.upper().startswith(b"EHLO") else b"500 what\r\n")
        tls.sendall(b"250 sink\r\n")
        time.sleep(float(m.group(1)))
        name = m.group(2).decode()
        got = bytearray()
        while True:
            try:
                b = tls.recv(1 << 20)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionResetError):
                break
            except ssl.SSLError as e:
                got += b""  # a broken session ends the stream here
                print("ssl error on %s after %d bytes: %s" % (name, len(got), e), flush=True)
                break
            if not b:
                break
            got += b
        with open(os.path.join(outdir, name + ".bin.tmp"), "wb") as f:
            f.write(got)
        os.rename(os.path.join(outdir, name + ".bin.tmp"), os.path.join(outdir, name + ".bin"))
        with open(os.path.join(outdir, name + ".done"), "w") as f:
            f.write("%d\n" % len(got))
    except (OSError, EOFError, ssl.SSLError):
        pass
    finally:
        try:
            (tls or conn).close()
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--ready-file")
    args = p.parse_args()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(512)
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write("%d\n" % srv.getsockname()[1])
        os.rename(args.ready_file + ".tmp", args.ready_file)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, ctx, args.dir), daemon=True).start()


if __name__ == "__main__":
    main()
