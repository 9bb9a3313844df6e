#!/usr/bin/env bash
# mkcerts.sh DIR [NAME]: make a throwaway PKI in DIR for the tests.
#   ca.pem ca.key            the test CA (give it to the shim with STARTTLS_SHIM_CAFILE)
#   good.pem good.key        signed by ca, CN/SAN NAME (default mail.test), plus
#                            DNS:localhost, IP:127.0.0.1, IP:127.0.0.2, IP:::1
#   selfsigned.pem/.key      self-signed, same names
#   unknownca.pem/.key       signed by another CA (other-ca.pem) nobody trusts
#   expired.pem/.key         signed by ca, valid 2020-01-01 .. 2021-01-01
#   wrongname.pem/.key       signed by ca, only DNS:wrong.example
# Idempotent: does nothing when DIR/ca.pem exists.
set -eu
dir=$1; name=${2:-mail.test}
[ -f "$dir/ca.pem" ] && exit 0
mkdir -p "$dir"; cd "$dir"
q() { "$@" >/dev/null 2>&1 || { echo "mkcerts: failed: $*" >&2; exit 1; }; }
sans="DNS:$name,DNS:localhost,IP:127.0.0.1,IP:127.0.0.2,IP:::1"

mkca() { # mkca PREFIX CN
    q openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.pem" -days 3650 \
        -subj "/CN=$2" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
mkleaf() { # mkleaf OUT CAPREFIX SAN [startdate enddate]
    q openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$(echo "$3" | sed "s/^[A-Z]*://; s/,.*//")"
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "${3}" > "$1.ext"
    if [ $# -ge 5 ]; then
        mkdir -p ca.db; : > ca.db/index; [ -f ca.db/serial ] || echo 1000 > ca.db/serial
        cat > ca.db/cnf <<CNF
[ca]
default_ca=d
[d]
database=ca.db/index
new_certs_dir=ca.db
serial=ca.db/serial
default_md=sha256
policy=p
unique_subject=no
[p]
commonName=supplied
CNF
        q openssl ca -batch -config ca.db/cnf -cert "$2.pem" -keyfile "$2.key" -in "$1.csr" -out "$1.pem" \
            -startdate "$4" -enddate "$5" -extfile "$1.ext" -notext
    else
        q openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" \
            -days 825 -sha256 -extfile "$1.ext"
    fi
    rm -f "$1.csr" "$1.ext"
}
mkca ca "starttls-shim test CA"
mkca other-ca "untrusted test CA"
mkleaf good ca "$sans"
mkleaf unknownca other-ca "$sans"
mkleaf expired ca "$sans" 20200101000000Z 20210101000000Z
mkleaf wrongname ca "DNS:wrong.example"
q openssl req -x509 -newkey rsa:2048 -nodes -keyout selfsigned.key -out selfsigned.pem -days 825 \
    -subj "/CN=$name" -addext "subjectAltName=$sans"
# Full chain for servers that want one file.
cat good.pem ca.pem > good-chain.pem
chmod 644 ./*.pem ./*.key
