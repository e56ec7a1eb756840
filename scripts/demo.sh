#!/usr/bin/env bash
# The colcrypt demo, from a fresh Debian 12 machine (as root): installs what
# it needs, builds and installs colcrypt, starts a throwaway PostgreSQL 15
# cluster with colcrypt preloaded and a keyring file provider, shows what
# the product does, then stops the cluster and removes it.
#
#   scripts/demo.sh          the CMK in a keyring file (development)
#   scripts/demo.sh --hsm    the CMK inside a SoftHSM2 token (PKCS#11)
#   scripts/demo.sh --vault  and then moved into (an emulator of) Vault's Transit engine
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root "$@"

HSM=0
VAULT=0
for arg in "$@"; do
    case $arg in
        --hsm) HSM=1 ;;
        --vault) VAULT=1 ;;
        *) die "unknown option $arg (use --hsm for a SoftHSM2 token, --vault for Vault Transit)" ;;
    esac
done

install_packages "${BUILD_PACKAGES[@]}"
build_and_install

DIR=$(mktemp -d "${TMPDIR:-/tmp}/colcrypt-demo.XXXXXX")
chown postgres:postgres "$DIR"
chmod 700 "$DIR"
PGDATA=$DIR/data
PORT=$(free_port)

cleanup() {
    as_postgres pg_ctl -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
    [ $VAULT = 1 ] && as_postgres "$ROOT/test/vault/server.sh" stop "$DIR/vault" >/dev/null 2>&1

    rm -rf "$DIR"
}
trap cleanup EXIT

say "Starting a throwaway cluster in $DIR (port $PORT, shared_preload_libraries = 'colcrypt')"
as_postgres initdb -D "$PGDATA" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$PGDATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_preload_libraries = 'colcrypt'
CONF
PSQL_VARS=(-v keyring="$DIR/keyring")
if [ $HSM = 1 ]; then
    say "Making a SoftHSM2 token with a non-extractable AES-256 master key"
    as_postgres "$ROOT/test/hsm/softhsm.sh" init "$DIR/hsm" >/dev/null
    # The server (and every backend) finds the token through this variable.
    export SOFTHSM2_CONF="$DIR/hsm/softhsm2.conf"
    PSQL_VARS+=(-v hsm="$DIR/hsm")
fi
if [ $VAULT = 1 ]; then
    say "Starting the Vault emulator (test/vault/vault_emu.py: the Transit API over TLS)"
    VAULT_PORT=$(free_port)
    as_postgres "$ROOT/test/vault/server.sh" start "$DIR/vault" "$VAULT_PORT" >/dev/null
    PSQL_VARS+=(-v vault="$DIR/vault" -v vault_port="$VAULT_PORT")
fi
as_postgres pg_ctl -D "$PGDATA" -l "$DIR/server.log" -w start >/dev/null

say "The demo"
as_postgres env PGHOST="$DIR" PGPORT="$PORT" PGDATABASE=postgres \
    psql -X "${PSQL_VARS[@]}" <"$ROOT/demo/demo.sql" 2>&1 |
    sed -e "s|$DIR|<demo dir>|g"

say "Stopping and removing the cluster"
