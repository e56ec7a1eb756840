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

usage() { echo "usage: $0 certs <dir> | start <dir> <port> [--tls|--plain] | stop <dir>" >&2; exit 2; }

# Run a command, showing its output only if it fails.
quiet() {
	local out
	out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }
}

# mkcert <certs> <name> <subject CN> <issuer name|self> <extensions...>
mkcert() {
	local d=$1 name=$2 cn=$3 issuer=$4
	shift 4
	[ -f "$d/$name.crt" ] && return 0
	(umask 077 && quiet openssl genpkey -algorithm EC \
		-pkeyopt ec_paramgen_curve:P-256 -out "$d/$name.key")
	if [ "$issuer" = self ]; then
		local addext=()
		for e in "$@"; do addext+=(-addext "$e"); done
		quiet openssl req -x509 -new -key "$d/$name.key" -subj "/CN=$cn" \
			-sha256 -days 3650 "${addext[@]}" -out "$d/$name.crt"
	else
		quiet openssl req -new -key "$d/$name.key" -subj "/CN=$cn" -out "$d/$name.csr"
		quiet openssl x509 -req -in "$d/$name.csr" -sha256 -days 3650 \
			-CA "$d/$issuer.crt" -CAkey "$d/$issuer.key" -set_serial "0x$(openssl rand -hex 8)" \
			-extfile <(printf '%s\n' "$@" authorityKeyIdentifier=keyid \
				subjectKeyIdentifier=hash) \
			-out "$d/$name.crt"
		rm -f "$d/$name.csr"
	fi
}

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

# The server's pid, if it is running (a zombie counts as gone).
server_pid() {
	local pid
	[ -f "$1/server.pid" ] && pid=$(cat "$1/server.pid") || return 1
	grep -qF "$1/config.json" "/proc/$pid/cmdline" 2>/dev/null || return 1
	case $(ps -o stat= -p "$pid") in Z* | "") return 1 ;; esac
	echo "$pid"
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
	local i
	for ((i = 0; i < 100; i++)); do
		if answers "$dir" "$port" "$scheme" "$pid"; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "KMS emulator failed to start on port $port; $log ends with:" >&2
	tail -n 20 "$log" >&2
	do_stop "$dir"
	exit 1
}

do_stop() {
	local dir=$1 pid i
	if pid=$(server_pid "$dir"); then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			server_pid "$dir" > /dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		while server_pid "$dir" > /dev/null; do sleep 0.05; done
	fi
	rm -f "$dir/server.pid"
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
