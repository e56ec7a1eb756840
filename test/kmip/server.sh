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
MARKER=server.conf
# shellcheck source-path=SCRIPTDIR source=../lib/harness.sh disable=SC2034
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/harness.sh"

usage() { echo "usage: $0 certs <dir> | start <dir> <port> | stop <dir>" >&2; exit 2; }

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
	wait_started "$dir" "$pid" "$port" "PyKMIP server" 300 listening "$log" "$logstart"
}

listening() {
	grep -q "Starting connection service" < <(tail -c "+$2" "$1")
}

do_stop() {
	local dir=$1
	# SIGINT makes it shut down at once (SIGTERM waits for its 10 s accept
	# timeout, and so does an open client connection).
	stop_server "$dir" INT 10
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
