#!/usr/bin/env node
// smtp-node.js - a plaintext SMTP client on Node.js `net` (libuv: a
// non-blocking socket driven by epoll).
//
//   node smtp-node.js HOST PORT FROM TO FILE [USER PASS]
//
// Sends FILE (dot-stuffed, CRLF line ends), with AUTH PLAIN when USER and
// PASS are given; prints the server's replies; exits 0 only on a 250 after
// the final dot.  It knows nothing about TLS: under starttls-shim the
// socket is upgraded underneath libuv.
'use strict';
const net = require('net');
const fs = require('fs');

const args = process.argv.slice(2);
if (args.length !== 5 && args.length !== 7) {
  console.error('usage: smtp-node.js HOST PORT FROM TO FILE [USER PASS]');
  process.exit(2);
}
const [host, port, from, to, file, user, pass] = args;

// The message as DATA content: CRLF line ends, dot-stuffed, then ".\r\n".
function dataContent(path) {
  let text = fs.readFileSync(path, 'latin1').replace(/\r?\n/g, '\r\n');
  if (!text.endsWith('\r\n')) text += '\r\n';
  text = text.replace(/^\./gm, '..');
  return Buffer.from(text + '.\r\n', 'latin1');
}

const body = dataContent(file);
const steps = [];   // [command or null, expected codes, after]
steps.push([null, [220]]);
steps.push(['EHLO client.test', [250]]);
if (user !== undefined) {
  const token = Buffer.from('\0' + user + '\0' + pass).toString('base64');
  steps.push(['AUTH PLAIN ' + token, [235]]);
}
steps.push([`MAIL FROM:<${from}>`, [250]]);
steps.push([`RCPT TO:<${to}>`, [250, 251]]);
steps.push(['DATA', [354]]);
steps.push([body, [250]]);
steps.push(['QUIT', [221]]);

let delivered = false;
let step = 0;
let pending = '';
const sock = net.createConnection({ host, port: Number(port) });
sock.setTimeout(60000, () => { console.error('timed out'); sock.destroy(); });
sock.on('error', (e) => console.error('error: ' + e.message));
sock.on('close', () => {
  console.log(delivered ? 'delivered' : 'NOT delivered');
  process.exitCode = delivered ? 0 : 1;
});

function send(what) {
  if (Buffer.isBuffer(what)) {
    console.log(`C: <${what.length} bytes of message>`);
    sock.write(what);
  } else {
    console.log('C: ' + (what.startsWith('AUTH') ? 'AUTH PLAIN ...' : what));
    sock.write(what + '\r\n');
  }
}

// One complete reply: check it, move on.
function reply(code) {
  const [, want] = steps[step];
  if (steps[step][0] === body && code === 250) delivered = true;
  if (!want.includes(code)) {
    if (steps[step][0] !== 'QUIT') { step = steps.length - 1; send('QUIT'); }
    return;
  }
  step++;
  if (step < steps.length) send(steps[step][0]);
  else sock.end();
}

sock.on('data', (chunk) => {
  pending += chunk.toString('latin1');
  let nl;
  while ((nl = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, nl).replace(/\r$/, '');
    pending = pending.slice(nl + 1);
    console.log('S: ' + line);
    if (!/^[2-5]\d\d([ -]|$)/.test(line)) { sock.destroy(); return; }
    if (line[3] !== '-') reply(Number(line.slice(0, 3)));
  }
});
