#!/usr/bin/env bash
# The colcrypt benchmark, from a fresh Debian 12 machine (as root): installs
# what it needs (and gnuplot), builds and installs colcrypt, starts its own
# throwaway cluster, loads the rows, and times every workload for a plain
# column, colcrypt randomized and deterministic, and pgcrypto (encrypt_iv
# AES-256-CBC and pgp_sym_*), as medians of several runs in one session.
# Prints the table of times and ratios to plain, the provider calls of the
# connection storm and each variant's backend memory after a scan, and
# writes bench/out/results.md, results.csv and ratios.png.
#
#   bench/run.sh [--rows N] [--runs R]     defaults: 1,000,000 rows, 5 runs
#
# Settings for every variant alike: shared_buffers 1 GB, jit off, no
# parallel query (per-value cost is what is compared), fsync on.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
require_root "$@"

ROWS=1000000
RUNS=5
while [ $# -gt 0 ]; do
    case $1 in
        --rows) ROWS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        *) die "usage: bench/run.sh [--rows N] [--runs R]" ;;
    esac
done

install_packages "${BUILD_PACKAGES[@]}" gnuplot-nox
build_and_install

OUT=$ROOT/bench/out
mkdir -p "$OUT"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/colcrypt-bench.XXXXXX")
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
shared_buffers = 1GB
max_wal_size = 8GB
jit = off
max_parallel_workers_per_gather = 0
max_connections = 100
CONF
as_postgres pg_ctl -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
psql_() { as_postgres psql -X -q -h "$DIR" -p "$PORT" -d postgres "$@"; }

say "Loading $ROWS rows per variant and timing (median of $RUNS runs; CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
START=$(date +%s)
psql_ -v dir="$DIR" -v rows="$ROWS" -v runs="$RUNS" -v copyfile="$DIR/copy.data" -f "$ROOT/bench/bench.sql" 2>&1 |
    sed -n 's/^psql:[^ ]* NOTICE:  /  /p; s/^loading/  loading/p'

# Backend memory after a full decrypting scan, each in a fresh session.
memory() {
    psql_ -At -c "SELECT $1" -c "SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'RssAnon:\s+(\d+) kB'))[1]" | tail -n 1
}
psql_ -c "CREATE TABLE bench_memory (variant text PRIMARY KEY, rss_anon_kb int8)"
for v in "plain|sum(length(s)) FROM t_plain" "colcrypt|sum(length(s::text)) FROM t_rand" \
    "colcrypt det|sum(length(s::text)) FROM t_det" "pgcrypto cbc|sum(length(cbc_dec(s))) FROM t_cbc" \
    "pgcrypto pgp|sum(length(pgp_dec(s))) FROM t_pgp"; do
    kb=$(memory "${v#*|}")
    psql_ -c "INSERT INTO bench_memory VALUES ('${v%%|*}', $kb)"
done

# Connection storm: pgbench -C, every transaction a new connection reading
# one value.  The colcrypt runs start with an empty key cache and count
# the provider calls.
psql_ -c "CREATE TABLE bench_storm (variant text PRIMARY KEY, tps float8, provider_calls int8, key_versions int8)"
storm() {
    local variant=$1 key=$2 sql=$3 script="$DIR/storm.sql" calls0 calls1 tps
    printf '\\set id random(1, %d)\n%s\n' "$ROWS" "$sql" >"$script"
    chown postgres "$script"
    psql_ -c "SELECT colcrypt.key_cache_evict()" >/dev/null
    calls0=$(psql_ -At -c "SELECT kms_calls FROM colcrypt.key_cache")
    tps=$(as_postgres pgbench -n -C -c 8 -j 2 -T 10 -f "$script" -h "$DIR" -p "$PORT" postgres 2>&1 |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)
    calls1=$(psql_ -At -c "SELECT kms_calls FROM colcrypt.key_cache")
    psql_ -c "INSERT INTO bench_storm VALUES ('$variant', ${tps:-0}, $((calls1 - calls0)),
        (SELECT count(*) FROM colcrypt.keys WHERE name = '$key' AND state = 'active'))"
}
storm plain - 'SELECT s FROM t_plain WHERE id = :id;'
storm colcrypt kr 'SELECT s FROM t_rand WHERE id = :id;'
storm 'colcrypt det' kd 'SELECT s FROM t_det WHERE id = :id;'
storm 'pgcrypto cbc' - 'SELECT cbc_dec(s) FROM t_cbc WHERE id = :id;'
storm 'pgcrypto pgp' - 'SELECT pgp_dec(s) FROM t_pgp WHERE id = :id;'

say "Results ($ROWS rows, median of $RUNS runs, $(( $(date +%s) - START )) s in all)"
psql_ -v rows="$ROWS" -v runs="$RUNS" -v out="$DIR" -f "$ROOT/bench/report.sql"
cp "$DIR/results.md" "$DIR/results.csv" "$DIR/ratios.csv" "$OUT/"
cat "$OUT/results.md"

# The chart: every workload's ratio to plain, per variant, log scale.
cat >"$DIR/chart.gp" <<GP
set terminal pngcairo size 1100,560 font "DejaVu Sans,10"
set output "$OUT/ratios.png"
set title "colcrypt vs pgcrypto: time relative to a plain column ($ROWS rows, median of $RUNS; lower is better)"
set datafile separator ","
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set yrange [0.5:*]
set ylabel "time / plain (log scale)"
set grid ytics
set xtics rotate by -20 noenhanced
set key top left noenhanced
plot "$OUT/ratios.csv" using 2:xtic(1) title columnheader(2), \
     "" using 3 title columnheader(3), "" using 4 title columnheader(4), "" using 5 title columnheader(5)
GP
gnuplot "$DIR/chart.gp"
echo "wrote $OUT/results.md, $OUT/results.csv, $OUT/ratios.png"
