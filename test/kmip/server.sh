#!/usr/bin/env bash
# A real PyKMIP server (Debian's python3-pykmip) for tests.
#
#   server.sh certs <dir>          EC P-256 CA, server and client certificates
#   server.sh start <dir> <port>   start on 127.0.0.1:<port>; returns when it accepts
#   server.sh stop <dir>           stop it (SIGKILL after 1 s: PyKMIP only looks at
#                                  SIGTERM at its 10 s accept timeout)
#
# Everything lives in <dir>: certs/, server.conf, pykmip.db (SQLite, kept
# across stop/start), policies/, server.log, server.pid.  Run it as the user
# the tests run as.
set -euo pipefail
PY=/usr/bin/python3

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 certs|start|stop <dir> [port]" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
certs=$dir/certs

# A key and a certificate signed by a CA: name, CN, extensions, CA name.
issue() {
    local name=$1 cn=$2 ext=$3 ca=$4
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$certs/$name.key" -subj "/CN=$cn" -out "$certs/$name.csr" 2>/dev/null
    printf '%s\n' "$ext" > "$certs/$name.ext"
    openssl x509 -req -in "$certs/$name.csr" -CA "$certs/$ca.crt" -CAkey "$certs/$ca.key" \
        -CAcreateserial -days 30 -sha256 -extfile "$certs/$name.ext" -out "$certs/$name.crt" 2>/dev/null
    rm -f "$certs/$name.csr" "$certs/$name.ext"
    chmod 600 "$certs/$name.key"
}

make_ca() {
    local name=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -sha256 \
        -keyout "$certs/$name.key" -out "$certs/$name.crt" -subj "/CN=colcrypt test $name" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    chmod 600 "$certs/$name.key"
}

do_certs() {
    [ -f "$certs/client.crt" ] && return 0
    mkdir -p "$certs"
    make_ca ca
    issue server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature" ca
    issue client colcrypt "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature" ca
    # A client the server does not trust, and a server name that does not match.
    make_ca rogue-ca
    issue rogue-client colcrypt "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature" rogue-ca
}

do_stop() {
    local pid
    [ -f "$dir/server.pid" ] || return 0
    pid=$(cat "$dir/server.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 10); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$dir/server.pid"
}

do_start() {
    local port=$1 pid
    do_certs
    do_stop
    mkdir -p "$dir/policies"
    cat > "$dir/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$certs/server.crt
key_path=$certs/server.key
ca_path=$certs/ca.crt
auth_suite=TLS1.2
enable_tls_client_auth=True
tls_cipher_suites=ECDHE-ECDSA-AES256-GCM-SHA384
logging_level=INFO
policy_path=$dir/policies
database_path=$dir/pykmip.db
CONF
    (cd "$dir" && exec setsid $PY -c 'from kmip.services.server.server import main; main()' \
        -f "$dir/server.conf" -l "$dir/server.log" >>"$dir/server.out" 2>&1) &
    pid=$!
    echo "$pid" > "$dir/server.pid"
    for _ in $(seq 300); do
        if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "PyKMIP server did not start on port $port:" >&2
    tail -n 20 "$dir/server.out" "$dir/server.log" >&2 2>/dev/null || true
    do_stop
    return 1
}

case $cmd in
    certs) do_certs ;;
    start) do_start "${3:?port}" ;;
    stop) do_stop ;;
    *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
