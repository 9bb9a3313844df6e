#!/usr/bin/env python3
"""slowsmtp.py - a minimal STARTTLS SMTP server for tests/io, that can delay
its greeting.

    slowsmtp.py --host H --port P --cert PEM --key KEY [--delay S] [--every N]
                [--no-starttls] [--ready-file F]

Connection number k (1, 2, ...) gets its 220 greeting after --delay seconds
when k % --every == 0 (--every 2: every second connection), else at once.
Before TLS: EHLO -> 250 with STARTTLS (without, under --no-starttls),
STARTTLS -> 220 then the handshake.
Inside TLS: EHLO -> 250 (no STARTTLS), NOOP/RSET/MAIL/RCPT -> 250, DATA ->
354 ... "." -> 250, QUIT -> 221 and close; for the I/O tests:
  TWICE  -> "250 one\r\n250 two\r\n" in one write (one TLS record)
  BIG N  -> N lines "250-" + 94 x "x", then "250 end": 100 * N + 9 bytes
  SLEEP S -> reads nothing for S seconds (the client's writes back up),
            then "250 slept"
Anything else -> 500.  Port 0 picks a free port.  Writes the port to
--ready-file once listening.  asyncio, stdlib only.
"""
import argparse
import asyncio
import os
import ssl
import sys


async def serve(args):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    count = 0

    async def handle(reader, writer):
        nonlocal count
        count += 1
        k = count
        tls = False
        try:
            if args.every and k % args.every == 0:
                await asyncio.sleep(args.delay)
            writer.write(b"220 slow.test ESMTP\r\n")
            await writer.drain()
            while True:
                line = await asyncio.wait_for(reader.readline(), 30)
                if not line:
                    break
                cmd = line.strip().upper()
                if cmd.startswith(b"EHLO"):
                    last = b"250 8BITMIME\r\n" if tls or args.no_starttls else b"250 STARTTLS\r\n"
                    writer.write(b"250-slow.test\r\n250-PIPELINING\r\n" + last)
                elif cmd == b"TWICE" and tls:
                    writer.write(b"250 one\r\n250 two\r\n")
                elif cmd.startswith(b"SLEEP ") and tls:
                    await asyncio.sleep(float(cmd[6:]))
                    writer.write(b"250 slept\r\n")
                elif cmd.startswith(b"BIG ") and tls:
                    writer.write((b"250-" + b"x" * 94 + b"\r\n") * int(cmd[4:]) + b"250 end\r\n")
                elif cmd == b"STARTTLS" and not tls and not args.no_starttls:
                    writer.write(b"220 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(ctx)
                    tls = True
                    continue
                elif cmd == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                elif cmd == b"DATA" and tls:
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    tail = b"\r\n"
                    while not tail.endswith(b"\r\n.\r\n"):
                        chunk = await reader.read(1 << 20)
                        if not chunk:
                            break
                        tail = (tail + chunk)[-5:]
                    writer.write(b"250 accepted\r\n")
                elif cmd.split(b" ")[0] in (b"NOOP", b"RSET", b"MAIL", b"RCPT") and tls:
                    writer.write(b"250 ok\r\n")
                else:
                    writer.write(b"500 what\r\n")
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, args.host, args.port, backlog=512)
    if args.ready_file:
        port = server.sockets[0].getsockname()[1]
        with open(args.ready_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.rename(args.ready_file + ".tmp", args.ready_file)
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--delay", type=float, default=1.0)
    p.add_argument("--every", type=int, default=0)
    p.add_argument("--no-starttls", action="store_true")
    p.add_argument("--ready-file")
    args = p.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
