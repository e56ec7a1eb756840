#!/bin/bash
# AWS KMS emulator harness for colcrypt's aws-kms tests.
#
#   server.sh certs <dir>                          make <dir>/certs (CA, server cert for localhost/127.0.0.1)
#   server.sh start <dir> <port> [--tls|--plain]   start kms_emu.py on 127.0.0.1:<port> (default --tls),
#                                                  return once it answers
#   server.sh stop  <dir>                          stop it (safe if not running)
#
# Everything lives in <dir>: config.json (written with the test credentials
# and alias if missing), state.json (keys and key material; survives
# stop/start), server.log, server.pid, certs/.  Needs /usr/bin/python3 with
# python3-cryptography, and openssl.
set -euo pipefail

PYTHON=/usr/bin/python3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMU=$HERE/kms_emu.py
MARKER=config.json
# shellcheck source-path=SCRIPTDIR source=../lib/harness.sh disable=SC2034
source "$HERE/../lib/harness.sh"

usage() { echo "usage: $0 certs <dir> | start <dir> <port> [--tls|--plain] | stop <dir>" >&2; exit 2; }

do_certs() {
	local d=$1/certs
	mkdir -p "$d"
	# Don't let the system openssl.cnf add extensions of its own.
	export OPENSSL_CONF=/dev/null
	mkcert "$d" ca "colcrypt test KMS CA" self \
		basicConstraints=critical,CA:TRUE keyUsage=critical,keyCertSign,cRLSign \
		subjectKeyIdentifier=hash
	mkcert "$d" server localhost ca \
		basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature \
		extendedKeyUsage=serverAuth subjectAltName=DNS:localhost,IP:127.0.0.1
}

write_config() {
	local f=$1/config.json
	[ -f "$f" ] && return 0
	cat > "$f.tmp" <<'EOF'
{"account":"111122223333","region":"us-east-1",
 "credentials":[{"access_key_id":"AKIDCOLCRYPTTEST","secret_access_key":"colcrypt/test/secret/key/0123456789abcdef","session_token":null},
                {"access_key_id":"ASIACOLCRYPTTEMP","secret_access_key":"temp/secret/key/fedcba9876543210","session_token":"FwoGZXIvYXdzEXAMPLEsessiontoken//colcrypt=="},
                {"access_key_id":"AKIDNOACCESS","secret_access_key":"noaccess/secret","session_token":null,"deny":["Encrypt","Decrypt","ReEncrypt","GenerateDataKey"]}],
 "keys":[{"alias":"alias/colcrypt-test"}]}
EOF
	mv "$f.tmp" "$f"
}

# Does our emulator (process <pid>, not some other server on that port)
# answer GET /_emu/health on <port>?
answers() {
	local dir=$1 port=$2 scheme=$3 pid=$4
	$PYTHON - "$scheme://127.0.0.1:$port/_emu/health" "$dir/certs/ca.crt" "$pid" <<'EOF' 2>/dev/null
import json, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2]) if sys.argv[1].startswith("https") else None
with urllib.request.urlopen(sys.argv[1], timeout=2, context=ctx) as r:
    sys.exit(0 if json.load(r).get("pid") == int(sys.argv[3]) else 1)
EOF
}

do_start() {
	local dir=$1 port=$2 mode=$3 pid scheme=https
	if pid=$(server_pid "$dir"); then
		echo "KMS emulator already running (pid $pid)" >&2
		exit 1
	fi
	do_certs "$dir"
	write_config "$dir"
	local tls=(--cert "$dir/certs/server.crt" --key "$dir/certs/server.key")
	if [ "$mode" = --plain ]; then
		tls=()
		scheme=http
	fi
	local log=$dir/server.log
	touch "$log"
	# setsid: its own session and process group, away from the caller's
	# terminal signals; stop signals it by pid.
	setsid "$PYTHON" "$EMU" --port "$port" "${tls[@]}" --config "$dir/config.json" \
		--state "$dir/state.json" >> "$log" 2>&1 < /dev/null &
	pid=$!
	echo "$pid" > "$dir/server.pid"
	wait_started "$dir" "$pid" "$port" "KMS emulator" 100 answers "$dir" "$port" "$scheme" "$pid"
}

do_stop() {
	stop_server "$1" TERM 50
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")
case "$cmd" in
	certs) [ $# -eq 2 ] || usage; do_certs "$dir" ;;
	start)
		[ $# -eq 3 ] || [ $# -eq 4 ] || usage
		mode=${4:---tls}
		case "$mode" in --tls | --plain) ;; *) usage ;; esac
		[[ $3 =~ ^[0-9]+$ ]] || usage
		mkdir -p "$dir"
		do_start "$dir" "$3" "$mode"
		;;
	stop) [ $# -eq 2 ] || usage; do_stop "$dir" ;;
	*) usage ;;
esac
