--
-- bytea_type: colcrypt.encrypted_bytea
--
CREATE TABLE blobs (id integer PRIMARY KEY, b colcrypt.encrypted_bytea(k1));

INSERT INTO blobs VALUES
    (1, '\xdeadbeef'),
    (2, ''),
    (3, '\x00010200ff'),
    (4, 'escape\000format\\'),
    (5, NULL);
SELECT id, b FROM blobs ORDER BY id;
SET bytea_output = escape;
SELECT id, b FROM blobs ORDER BY id;
RESET bytea_output;
SELECT id, length(b), b::bytea = '\xdeadbeef'::bytea AS is_deadbeef FROM blobs ORDER BY id;
SELECT id FROM blobs WHERE b = '\x00010200ff';
SELECT id FROM blobs WHERE b = '\x00010200ff'::bytea;
SELECT id FROM blobs WHERE b <> '\xdeadbeef' ORDER BY id;
SELECT colcrypt.inspect(b)->>'type' AS type, (colcrypt.inspect(b)->>'plaintext_bytes')::int AS bytes
  FROM blobs WHERE id = 3;

-- From bytea values, and a large value.
INSERT INTO blobs SELECT 10, decode(repeat('ab', 300000), 'hex');
SELECT id, length(b), md5(b::bytea) = md5(decode(repeat('ab', 300000), 'hex')) AS same
  FROM blobs WHERE id = 10;

COPY blobs (id, b) FROM stdin;
20	\\x6869
\.
SELECT id, b FROM blobs WHERE id = 20;

-- Invalid bytea input: bytea's SQLSTATE, without the value.
\set VERBOSITY default
INSERT INTO blobs VALUES (30, '\xZZ');
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default
