#!/bin/bash
# PyKMIP test server harness for colcrypt's KMIP tests.
#
#   server.sh certs <dir>          make <dir>/certs (CA, server, client, rogue CA/client)
#   server.sh start <dir> <port>   start PyKMIP on 127.0.0.1:<port>, wait until it serves
#   server.sh stop  <dir>          stop it (safe if not running)
#
# Everything (config, sqlite database, log, pid) lives in <dir>; the database
# survives stop/start.  Runs as the invoking user; needs python3-pykmip.
set -euo pipefail

PYTHON=/usr/bin/python3

usage() { echo "usage: $0 certs <dir> | start <dir> <port> | stop <dir>" >&2; exit 2; }

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
		openssl req -new -key "$d/$name.key" -subj "/CN=$cn" -out "$d/$name.csr"
		quiet openssl x509 -req -in "$d/$name.csr" -sha256 -days 3650 \
			-CA "$d/$issuer.crt" -CAkey "$d/$issuer.key" \
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
	local ca=(basicConstraints=critical,CA:TRUE keyUsage=critical,keyCertSign,cRLSign
		subjectKeyIdentifier=hash)
	local leaf=(basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature)
	mkcert "$d" ca "colcrypt test CA" self "${ca[@]}"
	mkcert "$d" server localhost ca "${leaf[@]}" extendedKeyUsage=serverAuth \
		subjectAltName=DNS:localhost,IP:127.0.0.1
	mkcert "$d" client colcrypt ca "${leaf[@]}" extendedKeyUsage=clientAuth
	mkcert "$d" rogue-ca "colcrypt rogue CA" self "${ca[@]}"
	mkcert "$d" rogue-client colcrypt rogue-ca "${leaf[@]}" extendedKeyUsage=clientAuth
}

# The server's pid, if it is running (a zombie waiting for init counts as gone).
server_pid() {
	local pid
	[ -f "$1/server.pid" ] && pid=$(cat "$1/server.pid") || return 1
	grep -qF "$1/server.conf" "/proc/$pid/cmdline" 2>/dev/null || return 1
	case $(ps -o stat= -p "$pid") in Z* | "") return 1 ;; esac
	echo "$pid"
}

do_start() {
	local dir=$1 port=$2 pid
	if pid=$(server_pid "$dir"); then
		echo "PyKMIP server already running (pid $pid)" >&2
		exit 1
	fi
	do_certs "$dir"
	mkdir -p "$dir/policies"
	cat > "$dir/server.conf" <<EOF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$dir/certs/server.crt
key_path=$dir/certs/server.key
ca_path=$dir/certs/ca.crt
auth_suite=TLS1.2
enable_tls_client_auth=True
tls_cipher_suites=ECDHE-ECDSA-AES256-GCM-SHA384
logging_level=INFO
database_path=$dir/pykmip.db
policy_path=$dir/policies
EOF
	local log=$dir/server.log
	touch "$log"
	local logstart
	logstart=$(($(stat -c %s "$log") + 1))
	# Like pykmip-server, but in its own session (stop signals the whole
	# group), with the log (default /var/log/pykmip) in <dir> and without
	# live policy monitoring, whose 1 s poll would slow down stopping.  The
	# helper process's socket directory (in $TMPDIR) is noted for stop.
	$PYTHON -W ignore -c '
import os, sys
from multiprocessing import util
from kmip.services.server import KmipServer
os.setsid()
with open(sys.argv[3], "w") as f:
    f.write(util.get_temp_dir())
with KmipServer(config_path=sys.argv[1], log_path=sys.argv[2]) as s:
    s.serve()
' "$dir/server.conf" "$log" "$dir/server.tmpdir" >> "$log" 2>&1 < /dev/null &
	pid=$!
	echo "$pid" > "$dir/server.pid"
	# "Starting connection service" is logged just after listen().
	local i
	for ((i = 0; i < 300; i++)); do
		if grep -q "Starting connection service" < <(tail -c "+$logstart" "$log"); then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "PyKMIP server failed to start on port $port; $log ends with:" >&2
	tail -n 20 "$log" >&2
	do_stop "$dir"
	exit 1
}

do_stop() {
	local dir=$1 pid i
	if pid=$(server_pid "$dir"); then
		# SIGINT makes it shut down at once (SIGTERM waits for its 10 s
		# accept timeout, and so does an open client connection).
		kill -INT "$pid" 2>/dev/null || true
		for ((i = 0; i < 10; i++)); do
			server_pid "$dir" > /dev/null || break
			sleep 0.1
		done
		kill -KILL -- "-$pid" 2>/dev/null || true
		while server_pid "$dir" > /dev/null; do sleep 0.05; done
	fi
	# After a SIGKILL, its multiprocessing temp dir is left behind.
	if [ -f "$dir/server.tmpdir" ]; then
		rm -rf "$(cat "$dir/server.tmpdir")"
	fi
	rm -f "$dir/server.pid" "$dir/server.tmpdir"
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")
case "$cmd" in
	certs) do_certs "$dir" ;;
	start) [ $# -eq 3 ] || usage; mkdir -p "$dir"; do_start "$dir" "$3" ;;
	stop) do_stop "$dir" ;;
	*) usage ;;
esac
