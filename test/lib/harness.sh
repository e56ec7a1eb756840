# shellcheck shell=bash
# Shared by test/{vault,awskms,kmip}/server.sh, which source it: test
# certificates, the server's pid, waiting for a server to start and
# stopping it.  The sourcing script sets MARKER, a file in <dir> that the
# server's command line names (so a pid reused by another process does not
# count), and defines do_stop <dir>.

# Run a command, showing its output only if it fails.
quiet() {
	local out
	out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }
}

# mkcert <certs> <name> <subject CN> <issuer name|self> <extensions...>
# An EC P-256 key and certificate, unless <certs>/<name>.crt exists.
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

# The server's pid, if it is running (a zombie waiting for init counts as gone).
server_pid() {
	local pid
	[ -f "$1/server.pid" ] && pid=$(cat "$1/server.pid") || return 1
	grep -qF "$1/$MARKER" "/proc/$pid/cmdline" 2>/dev/null || return 1
	case $(ps -o stat= -p "$pid") in Z* | "") return 1 ;; esac
	echo "$pid"
}

# wait_started <dir> <pid> <port> <name> <tries> <ready command...>
# Poll every 0.1 s, at most <tries> times, until the ready command succeeds
# while the server still runs.  Otherwise show the end of its log, stop it
# and exit 1.
wait_started() {
	local dir=$1 pid=$2 port=$3 name=$4 tries=$5 i
	shift 5
	for ((i = 0; i < tries; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		if "$@" && kill -0 "$pid" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "$name failed to start on port $port; $dir/server.log ends with:" >&2
	tail -n 20 "$dir/server.log" >&2
	do_stop "$dir"
	exit 1
}

# stop_server <dir> <signal> <tries>: send the signal, wait up to <tries> x
# 0.1 s, then SIGKILL its process group (or it alone, if it leads none).
stop_server() {
	local dir=$1 sig=$2 tries=$3 pid i
	if pid=$(server_pid "$dir"); then
		kill "-$sig" "$pid" 2>/dev/null || true
		for ((i = 0; i < tries; i++)); do
			server_pid "$dir" > /dev/null || break
			sleep 0.1
		done
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		while server_pid "$dir" > /dev/null; do sleep 0.05; done
	fi
	rm -f "$dir/server.pid"
}
