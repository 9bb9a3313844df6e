#!/usr/bin/env bash
# deps.sh: install the Debian packages that building and testing need.
# As root it installs what is missing; otherwise it prints the apt-get line.
set -eu
pkgs="gcc make pkg-config libssl-dev uthash-dev openssl ca-certificates python3 iproute2 procps
      postfix dovecot-core dovecot-imapd dovecot-pop3d swaks curl tcpdump stunnel4 msmtp fetchmail
      clang libclang-rt-14-dev valgrind mutt php8.2-cli php8.2-imap libgnutls-openssl27"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
[ -z "$missing" ] && { echo "deps: all packages present"; exit 0; }
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages; run:"
    echo "  sudo apt-get install -y$missing"
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Postfix asks how to configure itself; the tests bring their own config.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
# The package lists may be stale or absent on a fresh machine: update once
# and retry.  A failure stops here (make then stops before compiling).
if ! apt-get install -y -q $missing >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || echo "deps: apt-get update failed" >&2
    if ! apt-get install -y -q $missing >/dev/null; then
        echo "deps: apt-get install failed; install them by hand:" >&2
        echo "  apt-get install -y$missing" >&2
        exit 1
    fi
fi
for p in $missing; do
    [ "$p" = nodejs ] && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        { echo "deps: $p is still not installed after apt-get" >&2; exit 1; }
done
echo "deps: done"
