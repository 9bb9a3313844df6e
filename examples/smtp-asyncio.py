#!/usr/bin/env python3
"""smtp-asyncio.py - a plaintext SMTP client on Python asyncio (epoll).

    python3 smtp-asyncio.py HOST PORT FROM TO FILE [USER PASS]

Sends FILE (dot-stuffed, CRLF line ends), with AUTH PLAIN when USER and PASS
are given; prints the server's replies; exits 0 only on a 250 after the final
dot.  asyncio's streams never call start_tls() here: under starttls-shim the
non-blocking socket under the event loop is upgraded without asyncio knowing.
"""
import asyncio
import base64
import re
import sys


def data_content(path):
    text = open(path, "rb").read()
    text = re.sub(rb"\r?\n", b"\r\n", text)
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    text = re.sub(rb"(?m)^\.", b"..", text)
    return text + b".\r\n"


async def reply(reader):
    """One complete reply: its code (lines printed), or None at EOF."""
    while True:
        line = await reader.readline()
        if not line:
            print("connection closed by server", file=sys.stderr)
            return None
        line = line.rstrip(b"\r\n").decode("latin-1")
        print("S: " + line, flush=True)
        if not re.match(r"^[2-5]\d\d([ -]|$)", line):
            return None
        if line[3:4] != "-":
            return int(line[:3])


async def main(host, port, sender, rcpt, path, user=None, password=None):
    body = data_content(path)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 60)

    async def say(cmd, *want):
        if cmd is not None:
            print("C: " + ("AUTH PLAIN ..." if cmd.startswith("AUTH") else cmd), flush=True)
            writer.write(cmd.encode() + b"\r\n")
            await writer.drain()
        code = await asyncio.wait_for(reply(reader), 60)
        if code not in want:
            raise RuntimeError("unexpected reply %s" % code)

    delivered = False
    try:
        await say(None, 220)
        await say("EHLO client.test", 250)
        if user is not None:
            token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
            await say("AUTH PLAIN " + token, 235)
        await say("MAIL FROM:<%s>" % sender, 250)
        await say("RCPT TO:<%s>" % rcpt, 250, 251)
        await say("DATA", 354)
        print("C: <%d bytes of message>" % len(body), flush=True)
        writer.write(body)
        await writer.drain()
        await say(None, 250)
        delivered = True
        await say("QUIT", 221)
    except (RuntimeError, OSError, asyncio.TimeoutError) as e:
        print("error: %s" % (e or type(e).__name__), file=sys.stderr)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    print("delivered" if delivered else "NOT delivered")
    return 0 if delivered else 1


if __name__ == "__main__":
    if len(sys.argv) not in (6, 8):
        print("usage: smtp-asyncio.py HOST PORT FROM TO FILE [USER PASS]", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(*sys.argv[1:])))
