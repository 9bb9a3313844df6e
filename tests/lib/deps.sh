#!/usr/bin/env bash
# deps.sh: install the Debian packages that building and testing need.
# As root it installs what is missing; otherwise it prints the apt-get line.
set -eu
pkgs="gcc make pkg-config libssl-dev uthash-dev openssl ca-certificates python3 iproute2 procps
      postfix dovecot-core dovecot-imapd dovecot-pop3d swaks curl tcpdump stunnel4 msmtp fetchmail
      clang libclang-rt-14-dev valgrind"
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
apt-get install -y -q $missing >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null; }
echo "deps: done"
