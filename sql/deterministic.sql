--
-- deterministic: AES-SIV columns, equality on ciphertext, UNIQUE, indexes
-- that serve "col = literal" and "col = $1", lookups across key versions
--
SELECT colcrypt.create_key('dk', 'cmk');
CREATE TABLE people_det (
    id     integer PRIMARY KEY,
    email  colcrypt.encrypted_text(dk, deterministic),
    ssn    colcrypt.encrypted_text(dk, deterministic),
    age    colcrypt.encrypted_int4(dk, deterministic),
    note   colcrypt.encrypted_text(dk)
);
\d people_det

INSERT INTO people_det VALUES
    (1, 'alice@example.com', '111-11-1111', 30, 'first'),
    (2, 'bob@example.com',   '222-22-2222', 40, 'second'),
    (3, 'alice@example.com', '333-33-3333', 30, 'third'),
    (4, '',                  NULL,          NULL, NULL);

-- Equal plaintexts under one key version: equal ciphertexts.
SELECT colcrypt.inspect(email)->>'algorithm' AS alg,
       count(*) AS rows, count(DISTINCT colcrypt.ciphertext(email)) AS distinct_ciphertexts
  FROM people_det GROUP BY 1;
SELECT a.id, b.id FROM people_det a JOIN people_det b
    ON colcrypt.ciphertext(a.email) = colcrypt.ciphertext(b.email) AND a.id < b.id;
-- The same plaintext in another deterministic column of the same key has
-- the same ciphertext too (the key, not the column, decides).
SELECT colcrypt.ciphertext(age) = colcrypt.ciphertext(age) AS self,
       (SELECT colcrypt.ciphertext(age) FROM people_det WHERE id = 1) =
       (SELECT colcrypt.ciphertext(age) FROM people_det WHERE id = 3) AS same_age_same_ciphertext
  FROM people_det WHERE id = 1;

-- =, IN, GROUP BY, DISTINCT, joins.
SELECT id FROM people_det WHERE email = 'alice@example.com' ORDER BY id;
SELECT id FROM people_det WHERE email IN ('bob@example.com', 'nobody') ORDER BY id;
SELECT email, count(*) FROM people_det GROUP BY email ORDER BY email;
SELECT DISTINCT age FROM people_det ORDER BY age;
SELECT a.id, b.id FROM people_det a JOIN people_det b ON a.email = b.email AND a.id < b.id;
SELECT id FROM people_det WHERE age = 30 ORDER BY id;

-- UNIQUE on a deterministic column, as a constraint (its index has the
-- default class: plaintext order, so it holds across key versions; a
-- warning says what such an index reveals) and as a ciphertext index.
CREATE TABLE accounts (
    id     integer PRIMARY KEY,
    login  colcrypt.encrypted_text(dk, deterministic) UNIQUE,
    token  colcrypt.encrypted_text(dk, deterministic)
);
CREATE UNIQUE INDEX accounts_token ON accounts (token colcrypt.encrypted_text_det_ops);
-- The same order, asked for by name for a plain unique index.
CREATE UNIQUE INDEX accounts_login_ord ON accounts (login colcrypt.encrypted_text_ord_ops);
DROP INDEX accounts_login_ord;
INSERT INTO accounts VALUES (1, 'root', 't-1'), (2, 'guest', 't-2');
SELECT try($$INSERT INTO accounts VALUES (3, 'root', 't-3')$$);
SELECT try($$INSERT INTO accounts VALUES (3, 'admin', 't-1')$$);
INSERT INTO accounts VALUES (3, 'admin', 't-3') ON CONFLICT DO NOTHING;
INSERT INTO accounts VALUES (4, 'admin', 't-4') ON CONFLICT (login) DO NOTHING;
SELECT id, login FROM accounts ORDER BY id;

-- An index on ciphertext serves "col = literal" and "col = $1", also in a
-- generic plan, decrypting nothing.  (2,000 more rows, so that the planner
-- prefers an index on its own.)
INSERT INTO people_det SELECT 100 + g, 'user' || g || '@example.com', NULL, 100 + g FROM generate_series(1, 2000) g;
CREATE INDEX people_det_email ON people_det (email colcrypt.encrypted_text_det_ops);
CREATE INDEX people_det_age ON people_det (age colcrypt.encrypted_int4_det_ops);
ANALYZE people_det;
EXPLAIN (COSTS OFF) SELECT id FROM people_det WHERE email = 'alice@example.com';
SELECT id FROM people_det WHERE email = 'alice@example.com' ORDER BY id;
EXPLAIN (COSTS OFF) SELECT id FROM people_det WHERE age = 40;
SELECT id FROM people_det WHERE age = 40;
PREPARE by_email(text) AS SELECT id FROM people_det WHERE email = $1 ORDER BY id;
PREPARE by_email_untyped AS SELECT id FROM people_det WHERE email = $1 ORDER BY id;
SET plan_cache_mode = force_generic_plan;
EXPLAIN (COSTS OFF) EXECUTE by_email('bob@example.com');
EXECUTE by_email('bob@example.com');
EXPLAIN (COSTS OFF) EXECUTE by_email_untyped('alice@example.com');
EXECUTE by_email_untyped('alice@example.com');
RESET plan_cache_mode;

-- After a key rotation, new values use version 2; lookups find both.
SELECT colcrypt.rotate_key('dk');
INSERT INTO people_det VALUES (5, 'alice@example.com', '555-55-5555', 30, 'after rotation');
SELECT id, colcrypt.inspect(email)->>'key_version' AS version FROM people_det
 WHERE email IS NOT NULL AND id < 100 ORDER BY id;
SELECT id FROM people_det WHERE email = 'alice@example.com' ORDER BY id;
EXECUTE by_email_untyped('alice@example.com');
SET plan_cache_mode = force_generic_plan;
EXECUTE by_email('alice@example.com');
RESET plan_cache_mode;
SELECT id FROM people_det WHERE age = 30 ORDER BY id;
SELECT count(*) AS rows, count(DISTINCT email) AS distinct_emails FROM people_det;
SELECT email, count(*) FROM people_det WHERE id < 100 GROUP BY email ORDER BY email;
SELECT count(*) AS pairs FROM people_det a JOIN people_det b ON a.email = b.email WHERE a.id < b.id;
-- The default-class UNIQUE holds across versions; the ciphertext index
-- is per key version (a known limit until values are re-encrypted).
SELECT try($$INSERT INTO accounts VALUES (5, 'root', 't-5')$$);
SELECT try($$INSERT INTO accounts VALUES (5, 'other', 't-1')$$);

-- Randomized and deterministic values of one key compare by plaintext.
ALTER TABLE people_det ADD COLUMN email_r colcrypt.encrypted_text(dk);
UPDATE people_det SET email_r = email;
SELECT colcrypt.inspect(email_r)->>'algorithm' AS alg, count(*) FROM people_det WHERE email_r IS NOT NULL GROUP BY 1;
SELECT count(*) AS matches FROM people_det a JOIN people_det b ON a.email = b.email_r WHERE a.id < 10;
SELECT id FROM people_det WHERE note = 'first' AND email = 'alice@example.com';

-- Indexes that cannot work are refused; plaintext-order ones need asking
-- for by name, and are warned about.
SELECT try($$CREATE INDEX ON people_det (note colcrypt.encrypted_text_det_ops)$$);
SELECT try($$CREATE INDEX ON people_det USING hash (email)$$);
SELECT try($$CREATE TABLE hashed (k colcrypt.encrypted_int4(dk, deterministic)) PARTITION BY HASH (k)$$);
SELECT try($$CREATE INDEX people_det_note ON people_det (note)$$);
CREATE INDEX people_det_note ON people_det (note colcrypt.encrypted_text_ord_ops);
DROP INDEX people_det_note;

-- Deterministic under another key: different ciphertext, same plaintext.
CREATE TABLE other_key (email colcrypt.encrypted_text(k2, deterministic));
INSERT INTO other_key VALUES ('alice@example.com');
SELECT colcrypt.ciphertext(o.email) <> colcrypt.ciphertext(p.email) AS ciphertexts_differ,
       o.email = p.email AS plaintexts_equal
  FROM other_key o, people_det p WHERE p.id = 1;
