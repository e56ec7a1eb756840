#!/usr/bin/env bash
# Cost of wrapping and unwrapping a data key through each key provider
# (file, pkcs11 on SoftHSM2 with GCM and with key wrap, kmip on PyKMIP in
# both modes, vault and aws-kms on the emulators of test/, over TLS) and of
# the shared key cache's hit path, on a throwaway
# cluster.  As root:  bench/providers.sh [number of data keys, default 200]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
require_root "$@"
N=${1:-200}

install_packages "${BUILD_PACKAGES[@]}"
build_and_install

DIR=$(mktemp -d "${TMPDIR:-/tmp}/colcrypt-bench.XXXXXX")
chown postgres:postgres "$DIR"
PORT=$(free_port)
KMIP_PORT=$(free_port)
VAULT_PORT=$(free_port)
AWS_PORT=$(free_port)
cleanup() {
    as_postgres "$ROOT/test/vault/server.sh" stop "$DIR/vault" || true
    as_postgres "$ROOT/test/awskms/server.sh" stop "$DIR/awskms" || true
    as_postgres pg_ctl -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
    as_postgres "$ROOT/test/kmip/server.sh" stop "$DIR/kmip" || true
    rm -rf "$DIR"
}
trap cleanup EXIT

as_postgres "$ROOT/test/hsm/softhsm.sh" init "$DIR/hsm" >/dev/null
as_postgres "$ROOT/test/kmip/server.sh" start "$DIR/kmip" "$KMIP_PORT"
as_postgres "$ROOT/test/vault/server.sh" start "$DIR/vault" "$VAULT_PORT"
as_postgres "$ROOT/test/awskms/server.sh" start "$DIR/awskms" "$AWS_PORT"
export SOFTHSM2_CONF="$DIR/hsm/softhsm2.conf"
as_postgres initdb -D "$DIR/data" -A trust -U postgres >/dev/null
cat >>"$DIR/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_preload_libraries = 'colcrypt'
colcrypt.key_cache_entries = $((N * 2 + 100))
CONF
as_postgres pg_ctl -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null

say "Provider costs over $N data keys (CPU: $(nproc) cores)"
as_postgres psql -X -q -h "$DIR" -p "$PORT" -d postgres -v dir="$DIR" -v n="$N" \
    -v kmip_port="$KMIP_PORT" -v vault_port="$VAULT_PORT" -v aws_port="$AWS_PORT" -f "$ROOT/bench/providers.sql"
