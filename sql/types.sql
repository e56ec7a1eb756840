--
-- types: every encrypted type, its edge values, casts and input errors
--
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET extra_float_digits = 0;

CREATE TABLE every (
    id  integer PRIMARY KEY,
    t   colcrypt.encrypted_text(k1),
    b   colcrypt.encrypted_bytea(k1),
    i4  colcrypt.encrypted_int4(k1),
    i8  colcrypt.encrypted_int8(k1),
    n   colcrypt.encrypted_numeric(k1),
    f8  colcrypt.encrypted_float8(k1),
    d   colcrypt.encrypted_date(k1),
    ts  colcrypt.encrypted_timestamptz(k1),
    j   colcrypt.encrypted_jsonb(k1)
);

-- NULLs, empty values, and the ends of every range.
INSERT INTO every VALUES
    (1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (2, '', '', 0, 0, 0, 0, '2000-01-01', '2000-01-01 00:00:00+00', '{}'),
    (3, 'min', '\x00', -2147483648, -9223372036854775808, -1e-1000, '-Infinity',
        '4713-01-01 BC', '4713-01-01 00:00:00+00 BC', '[]'),
    (4, 'max', '\xff', 2147483647, 9223372036854775807, 9.99e999, 'Infinity',
        '5874897-12-31', '294276-12-31 23:59:59.999999+00', 'null'),
    (5, 'special', '\x00ff00', -1, -1, 'NaN', 'NaN', 'infinity', 'infinity', '""'),
    (6, 'negative zero', NULL, NULL, NULL, -0.0, '-0', '-infinity', '-infinity', '-0');
SELECT id, t, b, i4, i8, CASE WHEN length(n::text) > 30 THEN left(n::text, 12) || '...' || right(n::text, 6) || ' (' || length(n::text) || ' chars)' ELSE n::text END AS n,
       f8, d, ts, j FROM every ORDER BY id;

-- -0 is kept (its sign shows), and compares equal to 0, as for float8.
SELECT id, f8, f8 = 0 AS equals_zero, f8::float8 = 0::float8 AS plain_equals_zero
  FROM every WHERE id IN (2, 6) ORDER BY id;

-- A numeric with 1,000 digits before and 1,000 after the point.
INSERT INTO every (id, n) VALUES (7, (repeat('9', 1000) || '.' || repeat('1', 1000))::numeric);
SELECT length(n::text) AS chars, n::numeric = (repeat('9', 1000) || '.' || repeat('1', 1000))::numeric AS exact,
       (n + 1)::text LIKE '10000%' AS arithmetic
  FROM every WHERE id = 7;

-- Non-ASCII text, and jsonb with unicode and nesting.
INSERT INTO every (id, t, j) VALUES
    (8, 'Ünïcödé – Ελληνικά – 日本語 – 🔐', '{"name": "Zoë", "tags": ["α", "β"], "n": {"deep": [1, 2.50, null]}}');
SELECT t, j FROM every WHERE id = 8;

-- jsonb operators and functions through the cast to jsonb.
SELECT j -> 'name' AS name, j ->> 'name' AS name_text, j -> 'tags' -> 1 AS second_tag,
       j #> '{n,deep,1}' AS path, j ? 'tags' AS has_tags, j @> '{"name": "Zoë"}' AS contains,
       jsonb_array_length(j -> 'tags') AS ntags, jsonb_typeof(j -> 'n') AS typ
  FROM every WHERE id = 8;
SELECT id FROM every WHERE j @> '{"tags": ["β"]}';

-- Time zones and DST: the same instant shown in several zones, and
-- wall-clock times around a DST change stored as instants.
INSERT INTO every (id, ts) VALUES
    (10, '2024-03-10 01:59:59 America/New_York'),
    (11, '2024-03-10 03:00:00 America/New_York'),
    (12, '2024-11-03 01:30:00-04'),
    (13, '2024-11-03 01:30:00-05'),
    (14, '2024-06-30 23:59:60 UTC');
SELECT id, ts, ts - lag(ts) OVER (ORDER BY id) AS step FROM every WHERE id BETWEEN 10 AND 13 ORDER BY id;
SET TimeZone = 'Asia/Kathmandu';
SELECT id, ts FROM every WHERE id IN (10, 12, 14) ORDER BY id;
SET TimeZone = 'America/New_York';
SELECT id, ts FROM every WHERE id IN (12, 13) ORDER BY id;
SET TimeZone = 'UTC';

-- Arithmetic and functions of each plain type apply through the cast.
SELECT i4 + 1 AS i4, i8 / 2 AS i8, n * 2 AS n, f8 * 3 AS f8, d + 1 AS d,
       ts + interval '1 hour' AS ts, length(t) AS len, length(b) AS blen
  FROM every WHERE id = 2;

-- Values of other types go in where PostgreSQL would cast them on
-- assignment: integer and numeric literals, varchar, json, timestamps.
INSERT INTO every (id, i4, i8, n, f8, t, j, d, ts) VALUES
    (20, 5::int2, 5, 5, 5, 'varchar'::varchar, '{"json": true}'::json,
     '2024-05-05 13:00:00'::timestamp, '2024-05-05'::date);
INSERT INTO every (id, i4, i8, n, f8) VALUES (21, 5.4, 5.5, 5::int8, 5.5::numeric);
SELECT id, i4, i8, n, f8, t, j, d, ts FROM every WHERE id IN (20, 21) ORDER BY id;

-- Explicit casts to each plain type.
SELECT t::text, b::bytea, i4::int4, i8::int8, n::numeric, f8::float8, d::date,
       ts::timestamptz, j::jsonb
  FROM every WHERE id = 2;
SELECT colcrypt.int4(i4), length(colcrypt.numeric(n)::text) AS numeric_digits, colcrypt.jsonb(j) FROM every WHERE id = 4;

-- Every value is stored under k1, as its own type, randomized.
SELECT colcrypt.inspect(t)->>'type' AS type, colcrypt.inspect(t)->>'key' AS key,
       colcrypt.inspect(t)->>'algorithm' AS alg, count(*)
  FROM every WHERE t IS NOT NULL GROUP BY 1, 2, 3;
SELECT 'int4' AS col, colcrypt.inspect(i4)->>'type' AS type, count(*) FROM every WHERE i4 IS NOT NULL GROUP BY 2
UNION ALL SELECT 'int8', colcrypt.inspect(i8)->>'type', count(*) FROM every WHERE i8 IS NOT NULL GROUP BY 2
UNION ALL SELECT 'numeric', colcrypt.inspect(n)->>'type', count(*) FROM every WHERE n IS NOT NULL GROUP BY 2
UNION ALL SELECT 'float8', colcrypt.inspect(f8)->>'type', count(*) FROM every WHERE f8 IS NOT NULL GROUP BY 2
UNION ALL SELECT 'date', colcrypt.inspect(d)->>'type', count(*) FROM every WHERE d IS NOT NULL GROUP BY 2
UNION ALL SELECT 'timestamptz', colcrypt.inspect(ts)->>'type', count(*) FROM every WHERE ts IS NOT NULL GROUP BY 2
UNION ALL SELECT 'jsonb', colcrypt.inspect(j)->>'type', count(*) FROM every WHERE j IS NOT NULL GROUP BY 2
ORDER BY 1;

-- Input errors: the plain type's SQLSTATE, a message without the value.
SELECT try($$INSERT INTO every (id, i4) VALUES (90, 'abc')$$);
SELECT try($$INSERT INTO every (id, i4) VALUES (90, '2147483648')$$);
SELECT try($$INSERT INTO every (id, i8) VALUES (90, '9223372036854775808')$$);
SELECT try($$INSERT INTO every (id, n) VALUES (90, '1.2.3')$$);
SELECT try($$INSERT INTO every (id, f8) VALUES (90, '1e400')$$);
SELECT try($$INSERT INTO every (id, d) VALUES (90, '2024-02-30')$$);
SELECT try($$INSERT INTO every (id, d) VALUES (90, 'someday')$$);
SELECT try($$INSERT INTO every (id, ts) VALUES (90, '2024-01-01 25:00')$$);
SELECT try($$INSERT INTO every (id, j) VALUES (90, '{"unclosed": ')$$);
SELECT try($$INSERT INTO every (id, b) VALUES (90, '\x0')$$);
SELECT try($$INSERT INTO every (id, i4) VALUES (90, 3000000000::int8)$$);
SELECT count(*) AS nothing_written FROM every WHERE id = 90;

-- Wrong types: no cast between encrypted types, none from unrelated types.
SELECT try($$INSERT INTO every (id, i4) SELECT 91, t FROM every WHERE id = 2$$);
SELECT try($$INSERT INTO every (id, d) VALUES (91, 42)$$);
SELECT try($$SELECT i4 = t FROM every$$);
SELECT try($$SELECT colcrypt.inspect(42)$$);

-- Binary COPY of every type: plaintext out, back in.
\getenv abs_builddir PG_ABS_BUILDDIR
\set binfile :abs_builddir '/results/every.bin'
COPY (SELECT id + 100, t, b, i4, i8, n, f8, d, ts, j FROM every WHERE id BETWEEN 2 AND 8) TO :'binfile' WITH (FORMAT binary);
COPY every FROM :'binfile' WITH (FORMAT binary);
SELECT count(*) AS same_rows FROM every a JOIN every c ON c.id = a.id + 100
 WHERE a.t IS NOT DISTINCT FROM c.t AND a.b IS NOT DISTINCT FROM c.b AND a.i4 IS NOT DISTINCT FROM c.i4
   AND a.i8 IS NOT DISTINCT FROM c.i8 AND a.n IS NOT DISTINCT FROM c.n
   AND a.f8::text IS NOT DISTINCT FROM c.f8::text AND a.d IS NOT DISTINCT FROM c.d
   AND a.ts IS NOT DISTINCT FROM c.ts AND a.j IS NOT DISTINCT FROM c.j;
-- ...and in ciphertext mode, ciphertext out and back in, unchanged.
SET colcrypt.output = ciphertext;
\set cbinfile :abs_builddir '/results/every_ct.bin'
COPY (SELECT id + 200, t, b, i4, i8, n, f8, d, ts, j FROM every WHERE id BETWEEN 2 AND 8) TO :'cbinfile' WITH (FORMAT binary);
COPY every FROM :'cbinfile' WITH (FORMAT binary);
SELECT count(*) AS same_ciphertexts FROM every a JOIN every c ON c.id = a.id + 200
 WHERE colcrypt.ciphertext(a.i8) = colcrypt.ciphertext(c.i8) AND colcrypt.ciphertext(a.j) = colcrypt.ciphertext(c.j);
RESET colcrypt.output;

-- 1 MB values that TOAST, for the varlena types.
INSERT INTO every (id, t, b, n, j) VALUES (30, repeat('x', 1048576), decode(repeat('ab', 1048576), 'hex'),
    repeat('7', 100000)::numeric, jsonb_build_object('big', repeat('y', 1048576)));
SELECT length(t) AS t_len, length(b) AS b_len, length(n::text) AS n_digits,
       length(j ->> 'big') AS j_len, pg_column_size(t) > 1048576 AS t_stored_whole
  FROM every WHERE id = 30;
