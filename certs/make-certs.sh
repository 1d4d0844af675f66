#!/usr/bin/env bash
# Makes a certificate set for the dispatcher <-> relay TLS link (spec B.1)
# and the management interface (spec C.1) with Debian's openssl.
#
# Owns the layout the daemons expect under [TLS] certs_path: ca.pem, crl.pem,
# dispatcher.crt/.key, relay.crt/.key and the management client's
# management.crt/.key (the CN the default management_passport admits, which
# relay and dispatcher certificates never carry), plus the private CA material
# (ca.key and the openssl "ca" database in ca-db/) needed to issue or revoke
# more certificates later. With --test-extras it also makes the deliberately
# broken certificates the unit tests use (revoked, expired, other CA).
#
# Run with --help for the options. The defaults make a set whose subjects say
# "mediaproxy TEST ONLY": for production pass --org and the CN/SAN values.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: make-certs.sh [options] OUTDIR

Makes a new CA, a dispatcher certificate, a relay certificate and a
management client certificate (for "mediaproxy sessions" and other management
tools) in OUTDIR (created if missing; existing files are never overwritten
without --force).

  --org NAME              O of every subject      (default "mediaproxy TEST ONLY")
  --ou NAME               OU of every subject     (default "MediaProxy")
  --ca-cn CN              CA common name          (default "<org> CA")
  --dispatcher-cn CN      dispatcher common name  (default "mediaproxy test dispatcher")
  --dispatcher-san LIST   subjectAltName, e.g. "DNS:proxy.example.com,IP:192.0.2.10"
  --relay-cn CN           relay common name       (default "mediaproxy test relay")
  --relay-san LIST        subjectAltName of the relay certificate
  --management-cn CN      management client common name (default
                          "mediaproxy management"); the dispatcher's default
                          management_passport admits only CNs that start with
                          "mediaproxy management"; for another CN set it
  --key-type ec|rsa       P-256 ECDSA (default) or RSA 3072 keys
  --not-after TIME        end of validity, YYYYMMDDHHMMSSZ (default 20361231235959Z)
  --test-extras           also make the test-only files: crl-empty.pem,
                          relay-revoked.crt/.key (listed in crl.pem),
                          relay-expired.crt/.key (valid 2020 only),
                          other-ca.pem and relay-otherca.crt/.key
  --force                 overwrite existing files in OUTDIR
  -h, --help              this text

Issue another relay certificate later with the kept CA:
  openssl ca -config OUTDIR/ca-db/openssl.cnf ...   (see certs/README)
EOF
}

org="mediaproxy TEST ONLY"
ou="MediaProxy"
ca_cn=""
dispatcher_cn="mediaproxy test dispatcher"
dispatcher_san=""
relay_cn="mediaproxy test relay"
relay_san=""
management_cn="mediaproxy management"
key_type="ec"
not_after="20361231235959Z"
extras=0
force=0
out=""

while [ $# -gt 0 ]; do
  case "$1" in
    --org) org=$2; shift 2 ;;
    --ou) ou=$2; shift 2 ;;
    --ca-cn) ca_cn=$2; shift 2 ;;
    --dispatcher-cn) dispatcher_cn=$2; shift 2 ;;
    --dispatcher-san) dispatcher_san=$2; shift 2 ;;
    --relay-cn) relay_cn=$2; shift 2 ;;
    --relay-san) relay_san=$2; shift 2 ;;
    --management-cn) management_cn=$2; shift 2 ;;
    --key-type) key_type=$2; shift 2 ;;
    --not-after) not_after=$2; shift 2 ;;
    --test-extras) extras=1; shift ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "make-certs.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      [ -z "$out" ] || { echo "make-certs.sh: only one OUTDIR" >&2; exit 2; }
      out=$1; shift ;;
  esac
done

[ -n "$out" ] || { usage >&2; exit 2; }
[ -n "$ca_cn" ] || ca_cn="$org CA"
case "$key_type" in ec | rsa) ;; *) echo "make-certs.sh: --key-type must be ec or rsa" >&2; exit 2 ;; esac
[[ "$not_after" =~ ^[0-9]{14}Z$ ]] ||
  { echo "make-certs.sh: --not-after must look like 20361231235959Z" >&2; exit 2; }
command -v openssl >/dev/null || { echo "make-certs.sh: openssl not found (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ "$force" -eq 0 ]; then
  for f in ca.pem ca.key crl.pem dispatcher.crt dispatcher.key relay.crt relay.key \
    management.crt management.key ca-db; do
    if [ -e "$out/$f" ]; then
      echo "make-certs.sh: $out/$f exists; use --force to replace the whole set" >&2
      exit 1
    fi
  done
fi
rm -rf "$out/ca-db"
umask 077

# Validity starts a day ago so that hosts with a slightly late clock accept it.
not_before=$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)
crl_days=$(( ($(date -u -d "${not_after:0:8} ${not_after:8:2}:${not_after:10:2}" +%s) - $(date -u +%s)) / 86400 ))
[ "$crl_days" -gt 0 ] || { echo "make-certs.sh: --not-after is in the past" >&2; exit 2; }

# Subject strings for openssl: "/" and "\" inside values must be escaped.
dn_escape() { printf '%s' "$1" | sed -e 's/[\\/]/\\&/g'; }
subject() { printf '/O=%s/OU=%s/CN=%s' "$(dn_escape "$org")" "$(dn_escape "$ou")" "$(dn_escape "$1")"; }

new_key() {  # new_key FILE
  if [ "$key_type" = ec ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  else
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$1" 2>/dev/null
  fi
  chmod 600 "$1"
}

# make_ca DBDIR CERT KEY CN: a self-signed CA with its own openssl "ca" database.
make_ca() {
  local db=$1 cert=$2 key=$3 cn=$4
  mkdir -p "$db/newcerts"
  : >"$db/index.txt"
  # Random serials: certificates of two sets made with the same names never collide.
  echo "01$(openssl rand -hex 15)" >"$db/serial"
  echo 1000 >"$db/crlnumber"
  cat >"$db/openssl.cnf" <<EOF
# openssl "ca" configuration written by make-certs.sh for this CA.
[ ca ]
default_ca = mp_ca
[ mp_ca ]
dir = $db
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = $cert
private_key = $key
default_md = sha256
default_crl_days = $crl_days
policy = mp_policy
unique_subject = no
copy_extensions = none
preserve = yes
[ mp_policy ]
organizationName = optional
organizationalUnitName = optional
commonName = supplied
[ req ]
distinguished_name = mp_dn
prompt = no
[ mp_dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ v3_leaf ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  new_key "$key"
  openssl req -new -config "$db/openssl.cnf" -key "$key" -subj "$(subject "$cn")" -out "$db/ca.csr"
  openssl ca -batch -config "$db/openssl.cnf" -selfsign -keyfile "$key" -in "$db/ca.csr" \
    -extensions v3_ca -startdate "$not_before" -enddate "$not_after" -notext -out "$cert" 2>/dev/null
  rm -f "$db/ca.csr"
  chmod 644 "$cert"
}

# issue DBDIR NAME CN SAN [STARTDATE ENDDATE [EKU]]: NAME.crt and NAME.key in $out.
issue() {
  local db=$1 name=$2 cn=$3 san=$4 start=${5:-$not_before} end=${6:-$not_after}
  local eku=${7:-serverAuth, clientAuth}
  local ext="$db/$name.ext"
  {
    echo "[ leaf ]"
    echo "basicConstraints = critical, CA:false"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = $eku"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid"
    [ -z "$san" ] || echo "subjectAltName = $san"
  } >"$ext"
  new_key "$out/$name.key"
  openssl req -new -config "$db/openssl.cnf" -key "$out/$name.key" -subj "$(subject "$cn")" \
    -out "$db/$name.csr"
  openssl ca -batch -config "$db/openssl.cnf" -in "$db/$name.csr" -extfile "$ext" -extensions leaf \
    -startdate "$start" -enddate "$end" -notext -out "$out/$name.crt" 2>/dev/null
  rm -f "$db/$name.csr" "$ext"
  chmod 644 "$out/$name.crt"
}

gencrl() {  # gencrl DBDIR FILE
  openssl ca -batch -config "$1/openssl.cnf" -gencrl -crldays "$crl_days" -out "$2" 2>/dev/null
  chmod 644 "$2"
}

db="$out/ca-db"
make_ca "$db" "$out/ca.pem" "$out/ca.key" "$ca_cn"
issue "$db" dispatcher "$dispatcher_cn" "$dispatcher_san"
issue "$db" relay "$relay_cn" "$relay_san"
# A client only: it cannot serve as a dispatcher or relay.
issue "$db" management "$management_cn" "" "$not_before" "$not_after" clientAuth

if [ "$extras" -eq 1 ]; then
  gencrl "$db" "$out/crl-empty.pem"
  issue "$db" relay-revoked "$relay_cn" "$relay_san"
  openssl ca -batch -config "$db/openssl.cnf" -revoke "$out/relay-revoked.crt" \
    -crl_reason keyCompromise 2>/dev/null
  issue "$db" relay-expired "$relay_cn" "$relay_san" 20200101000000Z 20210101000000Z
  other="$out/other-ca-db"
  rm -rf "$other"
  make_ca "$other" "$out/other-ca.pem" "$out/other-ca.key" "$org other CA"
  issue "$other" relay-otherca "$relay_cn" "$relay_san"
fi
gencrl "$db" "$out/crl.pem"

echo "made in $out:"
(cd "$out" && ls -1 ./*.pem ./*.crt ./*.key | sed 's|^\./|  |')
echo "keep ca.key and ca-db/ private (off the relay and dispatcher hosts): they issue and revoke"
echo "certificates. Install ca.pem, crl.pem and each host's own .crt/.key under [TLS] certs_path;"
echo "management.crt/.key where \"mediaproxy sessions\" runs (usually the dispatcher host)."
