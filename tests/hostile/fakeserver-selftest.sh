#!/usr/bin/env bash
# tests/hostile/fakeserver-selftest.sh: proves the fake server plays the hostile
# scenarios as they claim, without the shim: Python smtplib/poplib/imaplib
# starttls(), raw sockets and `openssl s_client -starttls` talk to it and check
# what arrives (injected bytes in the same write as the STARTTLS reply, TLS 1.0
# only servers, session tickets + KeyUpdate while idle, stalls, resets...), and
# the scenario linter accepts every scenario and rejects broken ones.
# One line per check: "PASS fakeserver/NAME" / "FAIL fakeserver/NAME: why".
set -u
. "$(dirname "$0")/../lib/common.sh"
command -v openssl >/dev/null || skip "openssl not installed"
mk_tmpdir
"$TOP/tests/lib/mkcerts.sh" "$T/certs" || fail "mkcerts.sh failed"
timeout -k 5 240 "$PYTHON" "$TOP/tests/fakeserver/selftest.py" "$T/certs" "$@"
rc=$?
[ $rc -eq 0 ] || echo "FAIL fakeserver/selftest: exited $rc"
exit 0
