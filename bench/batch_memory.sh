#!/usr/bin/env bash
# Peak memory of a backend scanning large encrypted values (issue: forged or
# huge values detoasted a whole batch at once).  From a fresh Debian 12
# machine (as root): builds and installs colcrypt, starts a throwaway
# cluster, loads N values of SIZE bytes into a plain text column, a colcrypt
# column and a pgcrypto (pgp_sym_encrypt) column, and for each query runs it
# in a new connection and reads that backend's peak resident memory
# (VmHWM in /proc/<pid>/status; shared_buffers is 16 MB, so that pages read
# through shared memory weigh little).  Prints peak MB and the ratio to the plain
# column.
#
#   bench/batch_memory.sh [--values N] [--size BYTES]   defaults: 100, 2000000
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
require_root "$@"

N=100
SIZE=2000000
while [ $# -gt 0 ]; do
    case $1 in
        --values) N=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        *) die "usage: bench/batch_memory.sh [--values N] [--size BYTES]" ;;
    esac
done

install_packages "${BUILD_PACKAGES[@]}"
build_and_install

DIR=$(mktemp -d "${TMPDIR:-/tmp}/colcrypt-mem.XXXXXX")
chown postgres:postgres "$DIR"
PORT=$(free_port)
cleanup() {
    as_postgres pg_ctl -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT
as_postgres initdb -D "$DIR/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$DIR/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_preload_libraries = 'colcrypt'
jit = off
max_parallel_workers_per_gather = 0
shared_buffers = 16MB
CONF
as_postgres pg_ctl -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
psql_() { as_postgres psql -X -q -At -h "$DIR" -p "$PORT" -d postgres "$@"; }

say "Loading $N values of $SIZE bytes per variant"
psql_ -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE EXTENSION colcrypt;
CREATE EXTENSION pgcrypto;
SELECT colcrypt.add_provider('dev', 'file', '{"path": "$DIR/keyring"}');
SELECT colcrypt.add_master_key('cmk', 'dev', 'bench-cmk');
SELECT colcrypt.create_key('big', 'cmk');
-- Incompressible text (hex of random bytes), as ciphertext is.
CREATE TABLE big_plain AS
  SELECT g AS id, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, $SIZE / 32)) AS s
    FROM generate_series(1, $N) g;
ALTER TABLE big_plain ALTER COLUMN s SET STORAGE EXTERNAL;
CREATE TABLE big_enc (id int, s colcrypt.encrypted_text(big));
INSERT INTO big_enc SELECT id, s FROM big_plain;
CREATE TABLE big_pgp (id int, s bytea);
INSERT INTO big_pgp SELECT id, pgp_sym_encrypt(s, 'bench', 'compress-algo=0') FROM big_plain;
SQL

# A new backend per query; after it, the backend's own peak resident set
# (VmHWM), read by itself from /proc/self/status.
measure() {
    local label=$1 settings=$2 query=$3
    {
        echo "$settings"
        echo '\o /dev/null'
        echo "$query"
        echo '\o'
        echo "SELECT substring(pg_read_file('/proc/self/status') from 'VmHWM:\s+(\d+)');"
    } >"$DIR/m.sql"
    chown postgres "$DIR/m.sql"
    printf '%s\t%s\n' "$label" "$(psql_ -f "$DIR/m.sql" | tail -1)"
}

say "Peak resident memory of the backend (MB), one query per new connection"
{
    measure "plain text, length(s)" "" "SELECT sum(length(s)) FROM big_plain;"
    measure "colcrypt, batch scan on, length(s::text)" "SET colcrypt.batch_scan = on;" "SELECT sum(length(s::text)) FROM big_enc;"
    measure "colcrypt, batch scan off, length(s::text)" "SET colcrypt.batch_scan = off;" "SELECT sum(length(s::text)) FROM big_enc;"
    measure "colcrypt, batch scan on, count(inspect(s))" "SET colcrypt.batch_scan = on;" "SELECT count(colcrypt.inspect(s)) FROM big_enc;"
    measure "colcrypt, batch_size 4096, length(s::text)" "SET colcrypt.batch_size = 4096;" "SELECT sum(length(s::text)) FROM big_enc;"
    measure "pgcrypto pgp_sym_decrypt, length" "" "SELECT sum(length(pgp_sym_decrypt(s, 'bench'))) FROM big_pgp;"
} | awk -F'\t' 'NR == 1 { base = $2 } { printf "  %-45s %8.1f MB  %5.2fx plain\n", $1, $2 / 1024, $2 / base }'
