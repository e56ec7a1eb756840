#!/usr/bin/env bash
# A private SoftHSM2 token for tests and the demo.
#
#   softhsm.sh init <dir> [label] [pin]
#       writes <dir>/softhsm2.conf and <dir>/tokens/, initialises a token
#       (label "colcrypt", user PIN 1234, SO PIN 5678 unless given), writes
#       the PIN to <dir>/pin (mode 0600) and creates an AES-256 key labelled
#       "cmk" that is sensitive and never extractable.  Prints the lines
#       SOFTHSM2_CONF=..., module=... for the caller.
#
# Run it as the OS user the database server runs as: SoftHSM2 token files
# are 0600 and a token the server cannot read silently disappears.
set -euo pipefail

MODULE=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

cmd=${1:-}
dir=${2:-}
label=${3:-colcrypt}
pin=${4:-1234}
[ "$cmd" = init ] && [ -n "$dir" ] || { echo "usage: $0 init <dir> [label] [pin]" >&2; exit 2; }
[ -f "$MODULE" ] || { echo "SoftHSM2 module not found at $MODULE (apt-get install softhsm2)" >&2; exit 1; }

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF=$dir/softhsm2.conf

softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin 5678 >/dev/null
(umask 077; printf '%s\n' "$pin" > "$dir/pin")
pkcs11-tool --module "$MODULE" --token-label "$label" --login --pin "$pin" \
    --keygen --key-type AES:32 --label cmk --sensitive \
    --usage-decrypt --usage-wrap >/dev/null 2>&1
# Check what was made: sensitive and never extractable.
pkcs11-tool --module "$MODULE" --token-label "$label" --login --pin "$pin" \
    --list-objects --type secrkey 2>/dev/null | grep -q "never extractable" ||
    { echo "SoftHSM2 key was not created non-extractable" >&2; exit 1; }
echo "SOFTHSM2_CONF=$SOFTHSM2_CONF"
echo "module=$MODULE"
