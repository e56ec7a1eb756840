#!/bin/bash
# Vault / OpenBao emulator harness for colcrypt's vault provider tests.
#
#   server.sh certs <dir>                          make <dir>/certs (CA, server, rogue CA)
#   server.sh start <dir> <port> [--tls|--plain]   start vault_emu.py on 127.0.0.1:<port>
#                                                  (https by default), wait until it answers
#   server.sh stop  <dir>                          stop it (safe if not running)
#
# Everything lives in <dir>: config.json (written with the test tokens,
# namespaces and AppRole if missing), state.json (Transit keys, kept across
# stop/start), server.log and server.pid.  Needs /usr/bin/python3 with
# python3-cryptography, openssl and curl.
set -euo pipefail

PYTHON=/usr/bin/python3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MARKER=config.json
# shellcheck source-path=SCRIPTDIR source=../lib/harness.sh disable=SC2034
source "$HERE/../lib/harness.sh"

usage() {
	echo "usage: $0 certs <dir> | start <dir> <port> [--tls|--plain] | stop <dir>" >&2
	exit 2
}

do_certs() {
	local d=$1/certs
	mkdir -p "$d"
	# Don't let the system openssl.cnf add extensions of its own.
	export OPENSSL_CONF=/dev/null
	local ca=(basicConstraints=critical,CA:TRUE keyUsage=critical,keyCertSign,cRLSign
		subjectKeyIdentifier=hash)
	local leaf=(basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature)
	mkcert "$d" ca "colcrypt vault test CA" self "${ca[@]}"
	mkcert "$d" server localhost ca "${leaf[@]}" extendedKeyUsage=serverAuth \
		subjectAltName=DNS:localhost,IP:127.0.0.1
	mkcert "$d" rogue-ca "colcrypt vault rogue CA" self "${ca[@]}"
}

write_config() {
	local f=$1/config.json
	[ -f "$f" ] && return 0
	cat > "$f.tmp" <<'EOF'
{
 "root_token": "root-token",
 "tokens": {"transit-user": {"policies": ["transit-use"], "namespace": "", "ttl": 0},
            "ns-token": {"policies": ["root"], "namespace": "team1", "ttl": 0},
            "no-access": {"policies": ["default"], "namespace": "", "ttl": 0}},
 "namespaces": ["team1"],
 "approle": {"colcrypt-role-id": {"secret_ids": ["colcrypt-secret-id"], "token_ttl": 3600, "token_max_ttl": 86400, "policies": ["transit-use"], "namespace": ""}},
 "keys": [{"namespace": "", "mount": "transit", "name": "preexisting", "derived": false}]
}
EOF
	mv "$f.tmp" "$f"
}

do_start() {
	local dir=$1 port=$2 mode=$3 pid
	if pid=$(server_pid "$dir"); then
		echo "Vault emulator already running (pid $pid)" >&2
		exit 1
	fi
	write_config "$dir"
	local tls=() url=http://127.0.0.1:$port curl_ca=()
	if [ "$mode" = tls ]; then
		do_certs "$dir"
		tls=(--cert "$dir/certs/server.crt" --key "$dir/certs/server.key")
		url=https://localhost:$port
		curl_ca=(--cacert "$dir/certs/ca.crt")
	fi
	local log=$dir/server.log
	touch "$log"
	local logstart
	logstart=$(($(stat -c %s "$log") + 1))
	# In its own session, so that a terminal's ^C reaches only the caller.
	$PYTHON "$HERE/vault_emu.py" --new-session --port "$port" "${tls[@]}" \
		--config "$dir/config.json" --state "$dir/state.json" >> "$log" 2>&1 < /dev/null &
	pid=$!
	echo "$pid" > "$dir/server.pid"
	wait_started "$dir" "$pid" "$port" "Vault emulator" 100 \
		ready "$log" "$logstart" "$pid" "$url" "${curl_ca[@]}"
}

# ready <log> <logstart> <pid> <url> [curl CA options]: this process has
# logged that it listens (after bind, so not another server on a taken
# port) and its control endpoint (never faulted) answers.
ready() {
	local log=$1 logstart=$2 pid=$3 url=$4 code
	shift 4
	tail -c "+$logstart" "$log" | grep -qF "(pid $pid," || return 1
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" \
		"$url/_emu/stats" 2>/dev/null) || true
	[ "$code" = 200 ]
}

do_stop() {
	# SIGTERM makes it exit at once, even with requests hanging.
	stop_server "$1" TERM 50
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")
case "$cmd" in
	certs) [ $# -eq 2 ] || usage; do_certs "$dir" ;;
	start)
		[ $# -eq 3 ] || [ $# -eq 4 ] || usage
		mode=tls
		case "${4:---tls}" in
			--tls) mode=tls ;;
			--plain) mode=plain ;;
			*) usage ;;
		esac
		mkdir -p "$dir"
		do_start "$dir" "$3" "$mode"
		;;
	stop) [ $# -eq 2 ] || usage; do_stop "$dir" ;;
	*) usage ;;
esac
