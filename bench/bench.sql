-- The colcrypt benchmark's SQL half (bench/run.sh drives it): load the
-- data, then time every workload for every variant as the median of :runs
-- runs after one warm-up.  Results go to bench_result.
--
-- Variants: plain text/int8 columns; colcrypt randomized; colcrypt
-- deterministic; pgcrypto encrypt_iv/decrypt_iv AES-256-CBC with a fixed IV
-- (the deterministic pgcrypto idiom, so it can be indexed and compared);
-- pgcrypto pgp_sym_encrypt/pgp_sym_decrypt (AES-256, randomized; salted
-- S2K without iterations and no compression, its cheapest setting: with the
-- default iterated S2K each value costs ~0.4 ms more).
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS colcrypt;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
SELECT colcrypt.add_provider('bench', 'file', jsonb_build_object('path', :'dir' || '/keyring'));
SELECT colcrypt.add_master_key('bench', 'bench', 'bench-cmk');
SELECT colcrypt.create_key('kr', 'bench');
SELECT colcrypt.create_key('kd', 'bench');

-- pgcrypto's key material, as an application would hold it.
CREATE TABLE pgc (key bytea, iv bytea, pw text);
INSERT INTO pgc VALUES (gen_random_bytes(32), gen_random_bytes(16), encode(gen_random_bytes(24), 'base64'));
CREATE FUNCTION k() RETURNS bytea LANGUAGE sql IMMUTABLE AS $$ SELECT key FROM pgc $$;
CREATE FUNCTION iv() RETURNS bytea LANGUAGE sql IMMUTABLE AS $$ SELECT iv FROM pgc $$;
CREATE FUNCTION pw() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT pw FROM pgc $$;
CREATE FUNCTION cbc_enc(t text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT encrypt_iv(convert_to(t, 'UTF8'), k(), iv(), 'aes-cbc') $$;
CREATE FUNCTION cbc_dec(b bytea) RETURNS text LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT convert_from(decrypt_iv(b, k(), iv(), 'aes-cbc'), 'UTF8') $$;
CREATE FUNCTION pgp_enc(t text) RETURNS bytea LANGUAGE sql VOLATILE STRICT
    AS $$ SELECT pgp_sym_encrypt(t, pw(), 'cipher-algo=aes256, compress-algo=0, s2k-mode=1') $$;
CREATE FUNCTION pgp_dec(b bytea) RETURNS text LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT pgp_sym_decrypt(b, pw()) $$;

-- The source rows: 32-byte text, 8-byte integers, 1 kB text.
CREATE TABLE src (id int PRIMARY KEY, s text, n int8, l text);
INSERT INTO src SELECT g, md5(g::text), g::int8 * 7919, repeat(md5(g::text), 32) FROM generate_series(1, :rows) g;

CREATE TABLE t_plain (id int PRIMARY KEY, s text, n int8, l text);
CREATE TABLE t_rand (id int PRIMARY KEY, s colcrypt.encrypted_text(kr), n colcrypt.encrypted_int8(kr), l colcrypt.encrypted_text(kr));
CREATE TABLE t_det (id int PRIMARY KEY, s colcrypt.encrypted_text(kd, deterministic), n colcrypt.encrypted_int8(kd, deterministic), l colcrypt.encrypted_text(kd, deterministic));
CREATE TABLE t_cbc (id int PRIMARY KEY, s bytea, n bytea, l bytea);
CREATE TABLE t_pgp (id int PRIMARY KEY, s bytea, n bytea, l bytea);
-- Tables the write workloads fill (id, s, n), emptied before each run.
CREATE TABLE w_plain (id int, s text, n int8);
CREATE TABLE w_rand (id int, s colcrypt.encrypted_text(kr), n colcrypt.encrypted_int8(kr));
CREATE TABLE w_det (id int, s colcrypt.encrypted_text(kd, deterministic), n colcrypt.encrypted_int8(kd, deterministic));
CREATE TABLE w_cbc (id int, s bytea, n bytea);
CREATE TABLE w_pgp (id int, s bytea, n bytea);

\echo loading :rows rows into each variant
INSERT INTO t_plain SELECT * FROM src;
INSERT INTO t_rand SELECT id, s, n, l FROM src;
INSERT INTO t_det SELECT id, s, n, l FROM src;
INSERT INTO t_cbc SELECT id, cbc_enc(s), cbc_enc(n::text), cbc_enc(l) FROM src;
INSERT INTO t_pgp SELECT id, pgp_enc(s), pgp_enc(n::text), pgp_enc(l) FROM src;
-- Indexes for the point lookups: plain btree, colcrypt's ciphertext index,
-- a btree over the fixed-IV CBC ciphertext.
CREATE INDEX ON t_plain (s);
CREATE INDEX ON t_det (s colcrypt.encrypted_text_det_ops);
CREATE INDEX ON t_cbc (s);
VACUUM ANALYZE;
COPY (SELECT id, s, n FROM src) TO :'copyfile';
CHECKPOINT;

-- Median of :runs timed runs (after one warm-up) of sql; setup runs
-- untimed before each.
CREATE TABLE bench_result (workload text, variant text, ms float8, runs int,
    at timestamptz DEFAULT clock_timestamp(), PRIMARY KEY (workload, variant));
CREATE FUNCTION bench(workload text, variant text, sql text, setup text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    runs int := current_setting('bench.runs')::int;
    t0 timestamptz;
    times float8[] := '{}';
BEGIN
    FOR i IN 0 .. runs LOOP
        IF setup IS NOT NULL THEN EXECUTE setup; END IF;
        t0 := clock_timestamp();
        EXECUTE sql;
        IF i > 0 THEN
            times := times || extract(epoch FROM clock_timestamp() - t0) * 1000;
        END IF;
    END LOOP;
    INSERT INTO bench_result
        SELECT workload, variant, percentile_cont(0.5) WITHIN GROUP (ORDER BY x), runs FROM unnest(times) x;
    RAISE NOTICE '% %: % ms', workload, variant,
        (SELECT round(ms::numeric, 1) FROM bench_result r WHERE r.workload = bench.workload AND r.variant = bench.variant);
END $$;
SELECT set_config('bench.runs', :'runs', false) \g /dev/null
SET client_min_messages = notice;
-- The value at the middle of the table: what the filters and lookups look for.
SELECT md5((:rows / 2)::text) AS needle \gset
SELECT set_config('bench.needle', :'needle', false) \g /dev/null

-- 0. The same scan without decrypting (count of the column): what reading
-- the wider encrypted rows costs by itself, the floor under the scans below.
SELECT bench('read 32 B column, no decryption', 'plain', 'SELECT count(s) FROM t_plain');
SELECT bench('read 32 B column, no decryption', 'colcrypt', 'SELECT count(s) FROM t_rand');
SELECT bench('read 32 B column, no decryption', 'colcrypt det', 'SELECT count(s) FROM t_det');

-- 1. Full decrypting scans.
SELECT bench('scan 32 B text', 'plain', 'SELECT sum(length(s)) FROM t_plain');
SELECT bench('scan 32 B text', 'colcrypt', 'SELECT sum(length(s::text)) FROM t_rand');
SELECT bench('scan 32 B text', 'colcrypt det', 'SELECT sum(length(s::text)) FROM t_det');
SELECT bench('scan 32 B text', 'pgcrypto cbc', 'SELECT sum(length(cbc_dec(s))) FROM t_cbc');
SELECT bench('scan 32 B text', 'pgcrypto pgp', 'SELECT sum(length(pgp_dec(s))) FROM t_pgp');
SELECT bench('scan int8', 'plain', 'SELECT sum(n) FROM t_plain');
SELECT bench('scan int8', 'colcrypt', 'SELECT sum(n::int8) FROM t_rand');
SELECT bench('scan int8', 'colcrypt det', 'SELECT sum(n::int8) FROM t_det');
SELECT bench('scan int8', 'pgcrypto cbc', 'SELECT sum(cbc_dec(n)::int8) FROM t_cbc');
SELECT bench('scan int8', 'pgcrypto pgp', 'SELECT sum(pgp_dec(n)::int8) FROM t_pgp');
SELECT bench('scan 1 kB text', 'plain', 'SELECT sum(length(l)) FROM t_plain');
SELECT bench('scan 1 kB text', 'colcrypt', 'SELECT sum(length(l::text)) FROM t_rand');
SELECT bench('scan 1 kB text', 'colcrypt det', 'SELECT sum(length(l::text)) FROM t_det');
SELECT bench('scan 1 kB text', 'pgcrypto cbc', 'SELECT sum(length(cbc_dec(l))) FROM t_cbc');
SELECT bench('scan 1 kB text', 'pgcrypto pgp', 'SELECT sum(length(pgp_dec(l))) FROM t_pgp');

-- 2. Equality filter over the whole table: indexes are kept out of it.
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT bench('equality filter', 'plain', format('SELECT count(*) FROM t_plain WHERE s = %L', :'needle'));
SELECT bench('equality filter', 'colcrypt', format('SELECT count(*) FROM t_rand WHERE s = %L', :'needle'));
SELECT bench('equality filter', 'colcrypt det', format('SELECT count(*) FROM t_det WHERE s = %L', :'needle'));
SELECT bench('equality filter', 'pgcrypto cbc', format('SELECT count(*) FROM t_cbc WHERE s = cbc_enc(%L)', :'needle'));
SELECT bench('equality filter', 'pgcrypto pgp', format('SELECT count(*) FROM t_pgp WHERE pgp_dec(s) = %L', :'needle'));
RESET enable_indexscan;
RESET enable_bitmapscan;

-- 3. Point lookups through an index: 10,000 of them, one plan reused.
CREATE FUNCTION lookups(tbl text, expr text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE c int; n int := current_setting('bench.rows')::int;
BEGIN
    FOR i IN 1 .. 10000 LOOP
        EXECUTE format('SELECT count(*) FROM %I WHERE s = %s', tbl, expr) INTO c USING md5(((i * 7919) % n + 1)::text);
    END LOOP;
END $$;
SELECT set_config('bench.rows', :'rows', false) \g /dev/null
SELECT bench('index lookup x10k', 'plain', $$SELECT lookups('t_plain', '$1')$$);
SELECT bench('index lookup x10k', 'colcrypt det', $$SELECT lookups('t_det', '$1')$$);
SELECT bench('index lookup x10k', 'pgcrypto cbc', $$SELECT lookups('t_cbc', 'cbc_enc($1)')$$);

-- 4. Writes: COPY FROM a file and INSERT ... SELECT (id, 32 B text, int8).
SELECT bench('COPY FROM', 'plain', format('COPY w_plain FROM %L', :'copyfile'), 'TRUNCATE w_plain');
SELECT bench('COPY FROM', 'colcrypt', format('COPY w_rand FROM %L', :'copyfile'), 'TRUNCATE w_rand');
SELECT bench('COPY FROM', 'colcrypt det', format('COPY w_det FROM %L', :'copyfile'), 'TRUNCATE w_det');
SELECT bench('INSERT ... SELECT', 'plain', 'INSERT INTO w_plain SELECT id, s, n FROM src', 'TRUNCATE w_plain');
SELECT bench('INSERT ... SELECT', 'colcrypt', 'INSERT INTO w_rand SELECT id, s, n FROM src', 'TRUNCATE w_rand');
SELECT bench('INSERT ... SELECT', 'colcrypt det', 'INSERT INTO w_det SELECT id, s, n FROM src', 'TRUNCATE w_det');
SELECT bench('INSERT ... SELECT', 'pgcrypto cbc', 'INSERT INTO w_cbc SELECT id, cbc_enc(s), cbc_enc(n::text) FROM src', 'TRUNCATE w_cbc');
SELECT bench('INSERT ... SELECT', 'pgcrypto pgp', 'INSERT INTO w_pgp SELECT id, pgp_enc(s), pgp_enc(n::text) FROM src', 'TRUNCATE w_pgp');
