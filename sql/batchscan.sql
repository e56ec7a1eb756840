--
-- batchscan: sequential scans hand encrypted columns on as batch values
-- and decrypt them a batch at a time (ColcryptBatchScan).  Every answer and
-- every error must be the per-value path's.
--
SELECT colcrypt.create_key('bk', 'cmk');
CREATE TABLE bt (
    id   integer PRIMARY KEY,
    s    colcrypt.encrypted_text(bk),
    n    colcrypt.encrypted_int8(bk),
    d    colcrypt.encrypted_text(bk, deterministic),
    big  colcrypt.encrypted_text(bk),
    p    text
);
-- NULLs every 10th row, a TOASTed value every 100th, two key versions
-- interleaved within batches (every 3rd early row rewritten after rotation).
INSERT INTO bt SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'v' || g END, g * 1000,
    'd' || (g % 7), CASE WHEN g % 100 = 1 THEN repeat(md5(g::text), 200) END, 'p' || g
  FROM generate_series(1, 1500) g;
SELECT colcrypt.rotate_key('bk');
INSERT INTO bt SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'v' || g END, g * 1000,
    'd' || (g % 7), NULL, 'p' || g
  FROM generate_series(1501, 2000) g;
UPDATE bt SET s = s::text, n = n::int8 WHERE id % 3 = 0 AND id <= 1500;
SELECT colcrypt.inspect(s)->>'key_version' AS version, count(*) FROM bt GROUP BY 1 ORDER BY 1;
VACUUM ANALYZE bt;
SET colcrypt.batch_size = 16;

-- Which scans batch.
EXPLAIN (COSTS OFF) SELECT sum(length(s::text)) FROM bt;
EXPLAIN (COSTS OFF, VERBOSE) SELECT id, s, n FROM bt WHERE d = 'd3' AND p <> 'x';
EXPLAIN (COSTS OFF) SELECT count(*) FROM bt;                 -- reads no encrypted column
EXPLAIN (COSTS OFF) SELECT s::text FROM bt FOR UPDATE;       -- row marks need a heap tuple
EXPLAIN (COSTS OFF) SELECT ctid, s::text FROM bt;            -- so do system columns
EXPLAIN (COSTS OFF) UPDATE bt SET p = s::text WHERE id + 0 = 3;
SET colcrypt.batch_scan = off;
EXPLAIN (COSTS OFF) SELECT sum(length(s::text)) FROM bt;
RESET colcrypt.batch_scan;

-- The same answers with and without batching, through the nodes above a
-- scan that keep or copy rows (sort, hash, aggregate, subplans, CTEs).
CREATE FUNCTION both_ways(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE a text; b text;
BEGIN
    PERFORM set_config('colcrypt.batch_scan', 'on', true);
    EXECUTE format('SELECT md5(string_agg(x::text, %L ORDER BY x::text)) FROM (%s) x', '|', q) INTO a;
    PERFORM set_config('colcrypt.batch_scan', 'off', true);
    EXECUTE format('SELECT md5(string_agg(x::text, %L ORDER BY x::text)) FROM (%s) x', '|', q) INTO b;
    PERFORM set_config('colcrypt.batch_scan', 'on', true);
    RETURN CASE WHEN a IS NOT DISTINCT FROM b THEN 'same' ELSE 'DIFFERENT' END;
END $$;
SELECT q, both_ways(q) FROM (VALUES
    ('SELECT id, s::text, n::int8, d::text, md5(big::text), p FROM bt'),
    ('SELECT id, s, n, d, big FROM bt'),
    ('SELECT sum(length(s::text)), sum(n::int8), count(s), count(big) FROM bt'),
    ('SELECT id, s FROM bt WHERE s::text LIKE ''v1%'' AND n::int8 > 5000'),
    ('SELECT id, s FROM bt WHERE s > ''v1990'''),
    ('SELECT d::text, count(*), max(s::text) FROM bt GROUP BY 1'),
    ('SELECT d, count(*) FROM bt GROUP BY d'),
    ('SELECT s FROM bt ORDER BY s DESC LIMIT 20'),
    ('SELECT a.id, b.id FROM bt a JOIN bt b ON a.s::text = b.s::text AND a.id < b.id'),
    ('SELECT a.id FROM bt a JOIN bt b ON a.s = b.s WHERE b.id % 50 = 0'),
    ('SELECT array_agg(s ORDER BY id), string_agg(s::text, '','' ORDER BY id) FROM bt WHERE id < 40'),
    ('SELECT (SELECT s FROM bt WHERE id + 0 = 7), (SELECT max(s::text) FROM bt)'),
    ('WITH c AS MATERIALIZED (SELECT id, s FROM bt) SELECT id, s::text FROM c WHERE id % 7 = 0'),
    ('SELECT b FROM bt b WHERE id + 0 < 4'),
    ('SELECT id, s::text FROM bt WHERE id IN (SELECT id FROM bt WHERE s::text LIKE ''%77'')')
) v(q);

-- A sort that spills: the rows it writes are copies, i.e. ciphertext.
SET work_mem = '64kB';
SELECT both_ways('SELECT id, s, n FROM bt ORDER BY n, id');
RESET work_mem;

-- Batching happens: far fewer crypto calls than values, none left alone.
CREATE FUNCTION batch_stats(q text, OUT calls bigint, OUT decrypted bigint,
                            OUT alone bigint, OUT stopped_after bigint)
LANGUAGE plpgsql AS $$
DECLARE plan jsonb; node jsonb;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, FORMAT JSON) ' || q INTO plan;
    node := jsonb_path_query_first(plan, 'strict $.**?(@."Custom Plan Provider" == "ColcryptBatchScan")');
    calls := node->'Decrypt Calls';
    decrypted := node->'Values Decrypted';
    alone := node->'Values Opened Alone';
    stopped_after := node->'Batching Stopped After Rows';
END $$;
SELECT calls BETWEEN 2000 / 16 AND 2 * (2000 / 16 + 1) AS calls_per_batch_and_version,
       decrypted, alone, stopped_after
  FROM batch_stats('SELECT sum(length(s::text)) FROM bt');
SELECT calls BETWEEN 1 AND 2 * (2000 / 16 + 1) AS batched, decrypted, alone
  FROM batch_stats('SELECT sum(n::int8) FROM bt');
-- Values no expression asks for are not decrypted (the CASE never does).
SELECT calls, decrypted, alone FROM batch_stats('SELECT CASE WHEN id < 0 THEN s::text END FROM bt');
-- A deterministic equality filter compares ciphertexts: nothing to batch,
-- so the planner keeps the sequential scan.
EXPLAIN (COSTS OFF) SELECT count(*) FROM bt WHERE d = 'd3';
SELECT count(*) FROM bt WHERE d = 'd3';
-- A batch scan that turns out to decrypt nothing stops batching.
SELECT calls, decrypted, stopped_after FROM batch_stats('SELECT count(*) FROM bt WHERE d = ''d3'' AND s IS NOT NULL');
SELECT count(*) FROM bt WHERE d = 'd3' AND s IS NOT NULL;
-- A selective filter ahead of the decryption: batches narrow to the values
-- asked for once few of those opened were (1,800 would be opened otherwise).
SELECT calls < 100 AS narrowed, decrypted < 200 AS few_decrypted, alone
  FROM batch_stats('SELECT count(s::text) FROM bt WHERE id % 100 = 1');
SELECT count(s::text) FROM bt WHERE id % 100 = 1;
SET colcrypt.batch_size = 1;
SELECT calls, decrypted, alone FROM batch_stats('SELECT sum(length(s::text)) FROM bt');
RESET colcrypt.batch_size;
SELECT calls BETWEEN 2000 / 256 AND 40 AS few_calls, decrypted FROM batch_stats('SELECT sum(length(s::text)) FROM bt');
SET colcrypt.batch_size = 16;

-- A cursor, and rescans of the inner side of a nested loop.
BEGIN;
DECLARE cur CURSOR FOR SELECT id, s::text, n::int8 FROM bt WHERE id % 100 = 1 ORDER BY id;
FETCH 3 FROM cur;
FETCH 2 FROM cur;
COMMIT;
SET enable_hashjoin = off;
SET enable_mergejoin = off;
SET enable_material = off;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT v.x, b.s::text FROM (VALUES (1), (2), (3)) v(x) JOIN bt b ON b.n::int8 = v.x * 1000;
SELECT v.x, b.s::text FROM (VALUES (1), (2), (3)) v(x) JOIN bt b ON b.n::int8 = v.x * 1000 ORDER BY 1;
RESET enable_hashjoin;
RESET enable_mergejoin;
RESET enable_material;
RESET enable_indexscan;
RESET enable_bitmapscan;

-- In a parallel worker: the plan is serialised to it, and rows come back
-- through the tuple queue as copies, i.e. ciphertext.
SET force_parallel_mode = on;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 1e9;
EXPLAIN (COSTS OFF) SELECT sum(length(s::text)), sum(n::int8) FROM bt;
SELECT sum(length(s::text)), sum(n::int8) FROM bt;
SELECT id, s, n FROM bt WHERE id + 0 < 4 ORDER BY id;
RESET force_parallel_mode;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
SELECT sum(length(s::text)), sum(n::int8) FROM bt;

-- TOASTed values are fetched into the batch.
SELECT id, length(big::text), md5(big::text) = md5(repeat(md5(id::text), 200)) AS intact
  FROM bt WHERE big IS NOT NULL ORDER BY id LIMIT 3;

-- Partitions batch one by one.
CREATE TABLE bparts (id int, s colcrypt.encrypted_text(bk)) PARTITION BY RANGE (id);
CREATE TABLE bparts_1 PARTITION OF bparts FOR VALUES FROM (0) TO (100);
CREATE TABLE bparts_2 PARTITION OF bparts FOR VALUES FROM (100) TO (200);
INSERT INTO bparts SELECT g, 'part ' || g FROM generate_series(95, 104) g;
EXPLAIN (COSTS OFF) SELECT id, s::text FROM bparts;
SELECT id, s::text FROM bparts ORDER BY id;

-- An altered ciphertext in the middle of a batch: the rows around it
-- still read, and reading it raises the per-value path's error.
CREATE FUNCTION bs_tf(env bytea) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'colcrypt:' || translate(encode(env, 'base64'), E'\n', '') $$;
CREATE FUNCTION bs_env(ct text) RETURNS bytea LANGUAGE sql IMMUTABLE
    AS $$ SELECT decode(substr(ct, 10), 'base64') $$;
SET colcrypt.output = ciphertext;
SELECT format('%s', s) AS ct5 FROM bt WHERE id = 5 \gset
RESET colcrypt.output;
SELECT bs_tf(set_byte(bs_env(:'ct5'), length(bs_env(:'ct5')) - 1,
                      get_byte(bs_env(:'ct5'), length(bs_env(:'ct5')) - 1) # 1)) AS bad5 \gset
SET colcrypt.output = ciphertext;
UPDATE bt SET s = :'bad5' WHERE id = 5;
RESET colcrypt.output;
SELECT count(*) FROM bt WHERE id <> 5 AND length(s::text) > 0;
SELECT decrypted, alone FROM batch_stats('SELECT count(*) FROM bt WHERE id <> 5 AND length(s::text) > 0');
\set VERBOSITY default
SELECT id, s::text FROM bt WHERE id + 0 < 10;
SET colcrypt.batch_scan = off;
SELECT id, s::text FROM bt WHERE id + 0 < 10;
RESET colcrypt.batch_scan;
\set VERBOSITY terse
UPDATE bt SET s = 'v5' WHERE id = 5;

-- Privileges: a role without the decrypt grant reads what needs no
-- decryption, and fails where the per-value path fails.
CREATE ROLE cc_batch_reader;
GRANT USAGE ON SCHEMA colcrypt TO cc_batch_reader;
GRANT SELECT ON bt TO cc_batch_reader;
SET ROLE cc_batch_reader;
SELECT count(*), count(s), count(big) FROM bt;
SELECT count(CASE WHEN id < 0 THEN s::text END) FROM bt;
SELECT s::text FROM bt WHERE id + 0 = 1;
RESET ROLE;
SELECT colcrypt.grant_key('bk', 'cc_batch_reader', 'decrypt');
SET ROLE cc_batch_reader;
SELECT s::text FROM bt WHERE id + 0 = 1;
RESET ROLE;

DROP TABLE bparts;
DROP TABLE bt;
DROP FUNCTION both_ways(text);
DROP FUNCTION batch_stats(text);
DROP FUNCTION bs_tf(bytea);
DROP FUNCTION bs_env(text);
SELECT colcrypt.revoke_key('bk', 'cc_batch_reader', 'decrypt');
DROP OWNED BY cc_batch_reader;
DROP ROLE cc_batch_reader;
RESET colcrypt.batch_size;
