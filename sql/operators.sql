--
-- operators: comparisons, ordering, grouping and joins on encrypted
-- columns give the answers the same queries give on plaintext.  Every
-- encrypted column has a plain twin in the same row; each check is a
-- set difference between the two results, which must be empty.
--
SET TimeZone = 'UTC';
CREATE TABLE twin (
    id   integer PRIMARY KEY,
    t    colcrypt.encrypted_text(k1),   pt  text,
    td   colcrypt.encrypted_text(k1, deterministic), 
    i4   colcrypt.encrypted_int4(k1),   pi4 int4,
    i8   colcrypt.encrypted_int8(k2),   pi8 int8,
    n    colcrypt.encrypted_numeric(k1), pn numeric,
    f8   colcrypt.encrypted_float8(k2), pf8 float8,
    d    colcrypt.encrypted_date(k1),   pd  date,
    ts   colcrypt.encrypted_timestamptz(k1), pts timestamptz,
    j    colcrypt.encrypted_jsonb(k2),  pj  jsonb,
    b    colcrypt.encrypted_bytea(k1),  pb  bytea
);
-- 300 rows with duplicates, NULLs, and the values that are equal without
-- equal bytes (1.0 and 1.00, -0 and 0, jsonb numbers).
INSERT INTO twin (id, pt, pi4, pi8, pn, pf8, pd, pts, pj, pb)
SELECT g,
       CASE WHEN g % 17 = 0 THEN NULL ELSE 'v' || (g % 23) END,
       CASE WHEN g % 19 = 0 THEN NULL ELSE (g % 31) - 15 END,
       (g % 29)::int8 * 1000000007 - 14000000000,
       CASE WHEN g % 3 = 0 THEN 1.0 WHEN g % 3 = 1 THEN 1.00 ELSE (g % 13) / 4.0 END,
       CASE WHEN g % 5 = 0 THEN '-0'::float8 WHEN g % 5 = 1 THEN 0 ELSE (g % 11) * 0.5 END,
       date '2024-01-01' + (g % 37),
       timestamptz '2024-03-10 06:00:00+00' + (g % 41) * interval '7 minutes',
       CASE WHEN g % 4 = 0 THEN '{"a": 1.0}'::jsonb WHEN g % 4 = 1 THEN '{"a": 1}' ELSE jsonb_build_object('a', g % 7) END,
       CASE WHEN g % 13 = 0 THEN NULL ELSE decode(lpad(to_hex(g % 9), 2, '0'), 'hex') END
  FROM generate_series(1, 300) g;
UPDATE twin SET t = pt, td = pt, i4 = pi4, i8 = pi8, n = pn, f8 = pf8, d = pd, ts = pts, j = pj, b = pb;
-- The comparisons below are only worth something on real data.
SELECT count(*) AS rows, count(t) AS texts, count(DISTINCT pn) AS numerics, count(DISTINCT pj) AS jsons FROM twin;

-- Comparison operators, each type, against the same type, a plain value
-- and a plain value on the left.
CREATE FUNCTION same(q1 text, q2 text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE n1 bigint; n2 bigint; d1 bigint; d2 bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (%s) x', q1) INTO n1;
    EXECUTE format('SELECT count(*) FROM (%s) x', q2) INTO n2;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL (%s)) x', q1, q2) INTO d1;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL (%s)) x', q2, q1) INTO d2;
    RETURN CASE WHEN n1 = n2 AND d1 = 0 AND d2 = 0 THEN 'same (' || n1 || ' rows)'
                ELSE format('DIFFERENT: %s vs %s rows, %s and %s differing', n1, n2, d1, d2) END;
END $$;

CREATE FUNCTION check_ops(col text, pcol text, val text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE op text;
BEGIN
    FOREACH op IN ARRAY ARRAY['=', '<>', '<', '<=', '>', '>='] LOOP
        RETURN NEXT format('%-4s %-3s', col, op) || same(
            format('SELECT id FROM twin WHERE %s %s %s', col, op, val),
            format('SELECT id FROM twin WHERE %s %s %s', pcol, op, val));
        RETURN NEXT format('%-4s %-3s (plain on the left)', col, op) || same(
            format('SELECT id FROM twin WHERE %s %s %s', val, op, col),
            format('SELECT id FROM twin WHERE %s %s %s', val, op, pcol));
        RETURN NEXT format('%-4s %-3s (column to column)', col, op) || same(
            format('SELECT a.id, b.id FROM twin a JOIN twin b ON a.%s %s b.%s WHERE a.id < 40 AND b.id < 40', col, op, col),
            format('SELECT a.id, b.id FROM twin a JOIN twin b ON a.%s %s b.%s WHERE a.id < 40 AND b.id < 40', pcol, op, pcol));
    END LOOP;
END $$;
SELECT check_ops('t', 'pt', $$'v7'::text$$);
SELECT check_ops('td', 'pt', $$'v7'::text$$);
SELECT check_ops('i4', 'pi4', '3');
SELECT check_ops('i8', 'pi8', '98::int8');
SELECT check_ops('n', 'pn', '1.000');
SELECT check_ops('f8', 'pf8', '0::float8');
SELECT check_ops('d', 'pd', $$'2024-01-20'::date$$);
SELECT check_ops('ts', 'pts', $$'2024-03-10 07:10:00+00'::timestamptz$$);
SELECT check_ops('j', 'pj', $$'{"a": 1}'::jsonb$$);
SELECT check_ops('b', 'pb', $$'\x05'::bytea$$);

-- Against the types the plain type has its own operators with, and is not
-- cast to implicitly: an int4 literal against encrypted_int8, int2 and
-- int8 against encrypted_int4, float4 against encrypted_float8, date and
-- timestamp against encrypted_timestamptz.  Each resolves to one operator
-- (they once failed with "operator is not unique", 42725).
SELECT check_ops('i8', 'pi8', '98');
SELECT check_ops('i8', 'pi8', '98::int2');
SELECT check_ops('i4', 'pi4', '3::int8');
SELECT check_ops('i4', 'pi4', '3::int2');
SELECT check_ops('f8', 'pf8', '0.5::float4');
SELECT check_ops('ts', 'pts', $$'2024-03-10 07:10:00'::timestamp$$);
SELECT check_ops('ts', 'pts', $$'2024-03-11'::date$$);
-- Encrypted numbers of different types against each other compare as
-- their plain types do.
SELECT same($$SELECT a.id, b.id FROM twin a JOIN twin b ON a.i4 <= b.i8 WHERE a.id < 60 AND b.id < 60$$,
            $$SELECT a.id, b.id FROM twin a JOIN twin b ON a.pi4 <= b.pi8 WHERE a.id < 60 AND b.id < 60$$) AS i4_le_i8,
       same($$SELECT a.id, b.id FROM twin a JOIN twin b ON a.n < b.f8 WHERE a.id < 60 AND b.id < 60$$,
            $$SELECT a.id, b.id FROM twin a JOIN twin b ON a.pn < b.pf8 WHERE a.id < 60 AND b.id < 60$$) AS n_lt_f8,
       same($$SELECT a.id, b.id FROM twin a JOIN twin b ON a.i8 >= b.n WHERE a.id < 60 AND b.id < 60$$,
            $$SELECT a.id, b.id FROM twin a JOIN twin b ON a.pi8 >= b.pn WHERE a.id < 60 AND b.id < 60$$) AS i8_ge_n,
       same($$SELECT a.id, b.id FROM twin a JOIN twin b ON a.f8 <> b.i4 WHERE a.id < 60 AND b.id < 60$$,
            $$SELECT a.id, b.id FROM twin a JOIN twin b ON a.pf8 <> b.pi4 WHERE a.id < 60 AND b.id < 60$$) AS f8_ne_i4;

-- Every comparison of two columns whose plain twins resolve resolves too,
-- for each pair of encrypted and plain types (none is listed).
CREATE TABLE resolve (p_int2 int2, p_int4 int4, p_int8 int8, p_numeric numeric, p_float4 float4,
    p_float8 float8, p_date date, p_timestamp timestamp, p_timestamptz timestamptz, p_text text,
    p_varchar varchar, p_name name, p_bytea bytea, p_jsonb jsonb, p_json json,
    e_int4 colcrypt.encrypted_int4(k1), e_int8 colcrypt.encrypted_int8(k1),
    e_numeric colcrypt.encrypted_numeric(k1), e_float8 colcrypt.encrypted_float8(k1),
    e_date colcrypt.encrypted_date(k1), e_timestamptz colcrypt.encrypted_timestamptz(k1),
    e_text colcrypt.encrypted_text(k1), e_bytea colcrypt.encrypted_bytea(k1), e_jsonb colcrypt.encrypted_jsonb(k1));
CREATE FUNCTION resolves(l text, r text, op text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('EXPLAIN SELECT 1 FROM resolve WHERE %s %s %s', l, op, r);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
WITH c AS (SELECT attname::text AS col FROM pg_attribute WHERE attrelid = 'resolve'::regclass AND attnum > 0),
     pairs AS (SELECT a.col AS l, b.col AS r, op FROM c a, c b, unnest(ARRAY['=', '<>', '<', '>=']) op
                WHERE a.col LIKE 'e\_%' OR b.col LIKE 'e\_%')
SELECT l, op, r, resolves(l, r, op) AS encrypted
  FROM pairs
 WHERE resolves(regexp_replace(l, '^e_', 'p_'), regexp_replace(r, '^e_', 'p_'), op) = 'ok'
   AND resolves(l, r, op) <> 'ok';
DROP TABLE resolve;

-- A parameter of such a type, and a deterministic index serving it: the
-- operator is an SQL function the planner inlines into "col = x::int8".
CREATE TABLE det8 (id integer, v colcrypt.encrypted_int8(k2, deterministic));
INSERT INTO det8 SELECT g, g % 50 FROM generate_series(1, 500) g;
CREATE INDEX det8_v ON det8 (v colcrypt.encrypted_int8_det_ops);
ANALYZE det8;
SET enable_seqscan = off;
PREPARE by_int4(int4) AS SELECT count(*) FROM det8 WHERE v = $1;
EXPLAIN (COSTS OFF) EXECUTE by_int4(7);
EXECUTE by_int4(7);
SELECT count(*) FROM det8 WHERE v = 7::int2;
RESET enable_seqscan;
DEALLOCATE by_int4;
DROP TABLE det8;

-- Literals of the encrypted type itself (unknown literals resolve to it).
SELECT same($$SELECT id FROM twin WHERE t = 'v3'$$, $$SELECT id FROM twin WHERE pt = 'v3'$$) AS text_literal,
       same($$SELECT id FROM twin WHERE n = '1'$$, $$SELECT id FROM twin WHERE pn = '1'$$) AS numeric_literal,
       same($$SELECT id FROM twin WHERE d < '2024-01-10'$$, $$SELECT id FROM twin WHERE pd < '2024-01-10'$$) AS date_literal,
       same($$SELECT id FROM twin WHERE td IN ('v1', 'v2', 'nothing')$$, $$SELECT id FROM twin WHERE pt IN ('v1', 'v2', 'nothing')$$) AS det_in_list;

-- ORDER BY in plaintext order, with NULLS FIRST/LAST and DESC; ranges.
CREATE FUNCTION check_order(col text, pcol text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE a text; p text;
BEGIN
    EXECUTE format('SELECT string_agg(coalesce(%s::text, ''~''), '','' ORDER BY %s, id) FROM twin', col, col) INTO a;
    EXECUTE format('SELECT string_agg(coalesce(%s::text, ''~''), '','' ORDER BY %s, id) FROM twin', pcol, pcol) INTO p;
    IF a IS DISTINCT FROM p THEN RETURN col || ': DIFFERENT ORDER'; END IF;
    EXECUTE format('SELECT string_agg(coalesce(%s::text, ''~''), '','' ORDER BY %s DESC NULLS LAST, id) FROM twin', col, col) INTO a;
    EXECUTE format('SELECT string_agg(coalesce(%s::text, ''~''), '','' ORDER BY %s DESC NULLS LAST, id) FROM twin', pcol, pcol) INTO p;
    IF a IS DISTINCT FROM p THEN RETURN col || ': DIFFERENT DESC ORDER'; END IF;
    RETURN col || ': same order';
END $$;
SELECT check_order(c, p) FROM (VALUES ('t', 'pt'), ('td', 'pt'), ('i4', 'pi4'), ('i8', 'pi8'), ('n', 'pn'),
    ('f8', 'pf8'), ('d', 'pd'), ('ts', 'pts'), ('j', 'pj'), ('b', 'pb')) v(c, p);
SELECT same($$SELECT id FROM twin WHERE i4 BETWEEN -3 AND 5$$, $$SELECT id FROM twin WHERE pi4 BETWEEN -3 AND 5$$) AS between_range,
       same($$SELECT max(ts), min(ts) FROM twin$$, $$SELECT max(pts), min(pts) FROM twin$$) AS min_max;

-- GROUP BY and DISTINCT, hashed and sorted.
CREATE FUNCTION check_grouping(col text, pcol text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE mode text;
BEGIN
    FOREACH mode IN ARRAY ARRAY['hash', 'sort'] LOOP
        EXECUTE format('SET enable_hashagg = %s', mode = 'hash');
        EXECUTE format('SET enable_sort = %s', mode = 'sort');
        RETURN NEXT format('%-3s GROUP BY (%s)  ', col, mode) || same(
            format('SELECT %s::text, count(*) FROM twin GROUP BY %s', col, col),
            format('SELECT %s::text, count(*) FROM twin GROUP BY %s', pcol, pcol));
        RETURN NEXT format('%-3s DISTINCT (%s)  ', col, mode) || same(
            format('SELECT DISTINCT %s::text FROM twin', col),
            format('SELECT DISTINCT %s::text FROM twin', pcol));
    END LOOP;
    RESET enable_hashagg;
    RESET enable_sort;
END $$;
SELECT check_grouping(c, p) FROM (VALUES ('t', 'pt'), ('td', 'pt'), ('i4', 'pi4'), ('n', 'pn'), ('f8', 'pf8'),
    ('j', 'pj'), ('b', 'pb')) v(c, p);
-- The planner really hashes and sorts.
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT n, count(*) FROM twin GROUP BY n;
RESET enable_sort;
SET enable_hashagg = off;
EXPLAIN (COSTS OFF) SELECT DISTINCT n FROM twin;
RESET enable_hashagg;

-- Joins: hash, merge and nested loop, between two encrypted columns of
-- different keys, and between an encrypted and a plain column.
CREATE TABLE twin2 AS SELECT id, pn, pt, pi8 FROM twin WHERE id % 3 = 0;
ALTER TABLE twin2 ADD COLUMN n colcrypt.encrypted_numeric(k2), ADD COLUMN i8 colcrypt.encrypted_int8(k1);
UPDATE twin2 SET n = pn, i8 = pi8;
CREATE FUNCTION check_joins(ecols text, pcols text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE method text; plan text;
BEGIN
    FOREACH method IN ARRAY ARRAY['hashjoin', 'mergejoin', 'nestloop'] LOOP
        SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_nestloop = off;
        EXECUTE format('SET enable_%s = on', method);
        EXECUTE format('EXPLAIN (COSTS OFF) SELECT a.id, b.id FROM twin a JOIN twin2 b ON %s', ecols) INTO plan;
        RETURN NEXT format('%-20s %-9s (%s) ', ecols, method, plan) || same(
            format('SELECT a.id, b.id FROM twin a JOIN twin2 b ON %s', ecols),
            format('SELECT a.id, b.id FROM twin a JOIN twin2 b ON %s', pcols));
    END LOOP;
    RESET enable_hashjoin; RESET enable_mergejoin; RESET enable_nestloop;
END $$;
SELECT check_joins('a.n = b.n', 'a.pn = b.pn');
SELECT check_joins('a.i8 = b.i8', 'a.pi8 = b.pi8');
SELECT check_joins('a.n = b.pn', 'a.pn = b.pn');
SELECT check_joins('a.t = b.pt', 'a.pt = b.pt');

-- UNION, INTERSECT, EXCEPT and window functions.
SELECT same($$SELECT n::text FROM twin UNION SELECT n::text FROM twin2$$,
            $$SELECT pn::text FROM twin UNION SELECT pn::text FROM twin2$$) AS union_text,
       same($$SELECT n FROM twin INTERSECT SELECT n FROM twin2$$,
            $$SELECT pn FROM twin INTERSECT SELECT pn FROM twin2$$) AS intersect_values,
       same($$SELECT id, rank() OVER (ORDER BY i4) FROM twin$$,
            $$SELECT id, rank() OVER (ORDER BY pi4) FROM twin$$) AS window_rank;

-- Aggregates through the casts.
SELECT sum(i4) = sum(pi4) AS sum_i4, avg(n) = avg(pn) AS avg_n, max(t) = max(pt) AS max_t,
       min(d) = min(pd) AS min_d, count(DISTINCT td) = count(DISTINCT pt) AS count_distinct
  FROM twin;

-- ANALYZE keeps no sample values of encrypted columns (no most-common
-- values, no histogram); deterministic columns get a distinct count.
ANALYZE twin;
SELECT attname, most_common_vals IS NULL AND histogram_bounds IS NULL AS no_values,
       n_distinct <> 0 AS has_n_distinct
  FROM pg_stats WHERE tablename = 'twin' AND attname IN ('t', 'td', 'n', 'pt') ORDER BY attname;
SELECT n_distinct FROM pg_stats WHERE tablename = 'twin' AND attname = 'td';
