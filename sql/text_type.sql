--
-- text_type: colcrypt.encrypted_text written and read every way
--
CREATE TABLE people (
    id     integer PRIMARY KEY,
    name   colcrypt.encrypted_text(k1),
    note   colcrypt.encrypted_text(k2)
);

-- Literals, NULL, empty, non-ASCII, quotes and backslashes.
INSERT INTO people VALUES
    (1, 'Alice', 'first'),
    (2, '', NULL),
    (3, 'Zoë Ünicode – 東京 🎉', 'multi-byte'),
    (4, E'quote '' and back\\slash and tab\t', 'escapes'),
    (5, NULL, NULL);
SELECT id, name, note FROM people ORDER BY id;

-- Every value is stored under its column's key, randomized, version 1.
SELECT id, colcrypt.inspect(name)->>'key' AS key, colcrypt.inspect(name)->>'algorithm' AS alg,
       (colcrypt.inspect(name)->>'key_version')::int AS ver,
       (colcrypt.inspect(name)->>'plaintext_bytes')::int AS bytes
  FROM people WHERE name IS NOT NULL ORDER BY id;
SELECT id, colcrypt.inspect(note)->>'key' AS key FROM people WHERE note IS NOT NULL ORDER BY id;

-- Randomized: the same plaintext never gives the same ciphertext.
INSERT INTO people SELECT 100 + g, 'same', 'same' FROM generate_series(1, 50) g;
SELECT count(*) AS n, count(DISTINCT colcrypt.ciphertext(name)) AS distinct_ciphertexts
  FROM people WHERE id > 100;
DELETE FROM people WHERE id > 100;

-- Prepared statements (typed parameters), INSERT ... SELECT, UPDATE.
PREPARE ins(integer, text) AS INSERT INTO people (id, name) VALUES ($1, $2);
EXECUTE ins(10, 'prepared');
PREPARE ins_unknown AS INSERT INTO people (id, name) VALUES ($1, $2);
EXECUTE ins_unknown(11, 'untyped literal param');
CREATE TABLE plain_names (id integer, name text);
INSERT INTO plain_names VALUES (12, 'from plain table'), (13, 'another');
INSERT INTO people (id, name) SELECT id, name FROM plain_names;
UPDATE people SET name = name || ' (updated)' WHERE id = 13;
UPDATE people SET note = 'set by update' WHERE id = 12;
SELECT id, name, note FROM people WHERE id >= 10 ORDER BY id;

-- COPY in text and csv.
COPY people (id, name, note) FROM stdin;
20	copy text	with\ttab
21	\N	copy null name
\.
COPY people (id, name, note) FROM stdin WITH (FORMAT csv);
22,"csv, with comma","csv ""quoted"""
\.
SELECT id, name, note FROM people WHERE id >= 20 ORDER BY id;

-- Binary COPY: plaintext out (this role can decrypt) and back in.
\getenv abs_builddir PG_ABS_BUILDDIR
\set binfile :abs_builddir '/results/people.bin'
COPY (SELECT id + 100, name, note FROM people WHERE id IN (1, 3, 20)) TO :'binfile' WITH (FORMAT binary);
COPY people (id, name, note) FROM :'binfile' WITH (FORMAT binary);
SELECT id, name, note, colcrypt.inspect(name)->>'key' AS key FROM people WHERE id > 100 ORDER BY id;

-- Reads: casts and functions of text apply through the implicit cast.
SELECT id, name::text, upper(name), length(name), name || '!' AS bang,
       name LIKE 'A%' AS starts_a
  FROM people WHERE id IN (1, 3) ORDER BY id;
SELECT colcrypt.text(name) FROM people WHERE id = 1;

-- Equality against literals, text values and other encrypted values,
-- with colcrypt's operators (on the search path) and without them.
SELECT id FROM people WHERE name = 'Alice';
SELECT id FROM people WHERE name <> 'Alice' AND id < 10 ORDER BY id;
SELECT id FROM people WHERE name = 'Alice'::text;
SELECT id FROM people WHERE 'Alice'::text = name;
SELECT p.id, n.id FROM people p JOIN plain_names n ON p.name = n.name ORDER BY 1;
SELECT id FROM people WHERE name = ''; -- the empty string, not NULL
SELECT id FROM people WHERE name IS NULL ORDER BY id;
SET search_path = public, colcrypt;
SELECT id FROM people WHERE name = 'Alice';
SELECT id FROM people WHERE name OPERATOR(pg_catalog.=) 'Zoë Ünicode – 東京 🎉';
SELECT a.id, b.id FROM people a, people b WHERE a.name = b.name AND a.id < b.id ORDER BY 1, 2;
SELECT id FROM people WHERE name <> 'Alice'::text AND id < 10 ORDER BY id;
EXPLAIN (COSTS OFF) SELECT id FROM people WHERE name = 'Alice';
RESET search_path;

-- A value moves to the key of the column it is stored in.
CREATE TABLE people_k2 (id integer, name colcrypt.encrypted_text(k2));
INSERT INTO people_k2 SELECT id, name FROM people WHERE id IN (1, 3);
SELECT id, name, colcrypt.inspect(name)->>'key' AS key FROM people_k2 ORDER BY id;

-- A value without a column key is under the server's transit key.
SELECT 'transit'::colcrypt.encrypted_text AS v,
       colcrypt.inspect('transit'::colcrypt.encrypted_text)->>'key' AS key;

-- A 1 MB value is stored out of line (TOAST), still as ciphertext.
INSERT INTO people (id, name) VALUES (30, repeat('0123456789abcdef', 65536));
SELECT id, length(name), md5(name::text) = md5(repeat('0123456789abcdef', 65536)) AS same,
       pg_column_size(name) > 1048576 AS stored_whole
  FROM people WHERE id = 30;
SELECT (SELECT reltoastrelid FROM pg_class WHERE relname = 'people') <> 0 AS has_toast,
       pg_relation_size((SELECT reltoastrelid FROM pg_class WHERE relname = 'people')) > 1048576 AS toasted;
