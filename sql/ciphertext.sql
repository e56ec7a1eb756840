--
-- ciphertext: the text and binary forms, output modes, and every kind of
-- malformed, tampered, relabelled or misplaced ciphertext.
--
-- Ciphertexts below are always fed back as literals (\gset variables): an
-- expression of type text would be taken as plaintext, by design.
--
CREATE TABLE secrets (id integer, s colcrypt.encrypted_text(k1), b colcrypt.encrypted_bytea(k1));
CREATE TABLE secrets_k2 (id integer, s colcrypt.encrypted_text(k2));
INSERT INTO secrets VALUES (1, 'top secret', '\x0102'), (2, 'also secret', NULL);

-- format('%s', x) shows what the output function prints.
SELECT id, format('%s', s) AS s, format('%s', b) AS b FROM secrets ORDER BY id;

-- colcrypt.output = ciphertext: output is the text form (casts to the
-- plain type still decrypt: the setting is about output only).
SET colcrypt.output = ciphertext;
SELECT id, format('%s', s) LIKE 'colcrypt:%' AS s_text_form, format('%s', b) LIKE 'colcrypt:%' AS b_text_form,
       format('%s', s) = colcrypt.ciphertext(s) AS same_as_function, s::text AS cast_to_text
  FROM secrets WHERE id = 1;
SELECT colcrypt.ciphertext(s) AS ct1, colcrypt.ciphertext(b) AS ctb FROM secrets WHERE id = 1 \gset
CREATE TABLE copied (id integer, s colcrypt.encrypted_text(k1));
INSERT INTO copied VALUES (1, :'ct1');
SELECT colcrypt.ciphertext(s) = :'ct1' AS stored_unchanged FROM copied;
RESET colcrypt.output;
SELECT id, s FROM copied;

-- In plaintext mode a role that can decrypt gets an error, not a string.
SELECT try(format('INSERT INTO copied VALUES (2, %L)', :'ct1'));
-- ...but a cast from text stores the string itself as the plaintext.
INSERT INTO copied VALUES (3, :'ct1'::text);
SELECT id, s = :'ct1'::text AS holds_the_string FROM copied WHERE id = 3;

-- A restore session (check_function_bodies = off) loads ciphertext too.
SET check_function_bodies = off;
INSERT INTO copied VALUES (4, :'ct1');
RESET check_function_bodies;
SELECT id, s FROM copied WHERE id = 4;

-- Ciphertext under k1 stored in a k2 column is re-encrypted under k2
-- (this role may decrypt k1).
SET colcrypt.output = ciphertext;
INSERT INTO secrets_k2 VALUES (1, :'ct1');
RESET colcrypt.output;
SELECT id, s, colcrypt.inspect(s)->>'key' AS key FROM secrets_k2;

-- Text forms of hand-made envelopes.
CREATE FUNCTION tf(env bytea) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'colcrypt:' || translate(encode(env, 'base64'), E'\n', '') $$;
CREATE FUNCTION env(ct text) RETURNS bytea LANGUAGE sql IMMUTABLE
    AS $$ SELECT decode(substr(ct, 10), 'base64') $$;
SELECT tf('\x02010100000000010000000100000000000000000000000000000000000000000000000000000000') AS bad_version,
       tf('\x01090100000000010000000100000000000000000000000000000000000000000000000000000000') AS bad_alg,
       tf('\x01016300000000010000000100000000000000000000000000000000000000000000000000000000') AS bad_type,
       tf('\x01010180000000010000000100000000000000000000000000000000000000000000000000000000') AS bad_flags,
       tf(substr(env(:'ct1'), 1, 39)) AS too_short
\gset

-- Malformed text forms: 22P02, never a crash.
SET colcrypt.output = ciphertext;
INSERT INTO copied VALUES (10, 'colcrypt:');
\echo SQLSTATE :SQLSTATE
INSERT INTO copied VALUES (10, 'colcrypt:!!!!');
\echo SQLSTATE :SQLSTATE
INSERT INTO copied VALUES (10, 'colcrypt:AQ');
\echo SQLSTATE :SQLSTATE
INSERT INTO copied VALUES (10, 'colcrypt:AQE=');
\echo SQLSTATE :SQLSTATE
INSERT INTO copied VALUES (10, 'colcrypt:AR==');
\echo SQLSTATE :SQLSTATE
INSERT INTO copied VALUES (10, 'colcrypt:AQEB AAAA');
\echo SQLSTATE :SQLSTATE
INSERT INTO copied VALUES (10, :'bad_version');
\echo SQLSTATE :SQLSTATE
INSERT INTO copied VALUES (10, :'bad_alg');
\echo SQLSTATE :SQLSTATE
INSERT INTO copied VALUES (10, :'bad_type');
\echo SQLSTATE :SQLSTATE
INSERT INTO copied VALUES (10, :'bad_flags');
\echo SQLSTATE :SQLSTATE
SELECT try(format('INSERT INTO copied VALUES (10, %L)', :'too_short'));
-- A text ciphertext offered to a bytea column, and the other way round.
SELECT try(format('INSERT INTO secrets (id, b) VALUES (10, %L)', :'ct1'));
SELECT try(format('INSERT INTO secrets (id, s) VALUES (10, %L)', :'ctb'));
SELECT count(*) AS nothing_stored FROM copied WHERE id = 10;

-- Tampering: well-formed, so stored; refused when read (XX001).
CREATE FUNCTION flip(ct text, pos integer) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT tf(set_byte(env(ct), pos, get_byte(env(ct), pos) # 1)) $$;
SELECT flip(:'ct1', 4) AS t_keyid,
       flip(:'ct1', 12) AS t_nonce,
       flip(:'ct1', 24) AS t_ciphertext,
       flip(:'ct1', length(env(:'ct1')) - 1) AS t_tag,
       tf(substr(env(:'ct1'), 1, length(env(:'ct1')) - 1)) AS t_truncated,
       tf(env(:'ct1') || '\x00'::bytea) AS t_extended,
       tf(set_byte(env(:'ct1'), 11, 2)) AS t_version2,
       tf(set_byte(env(:'ctb'), 2, 1)) AS t_bytea_as_text
\gset
CREATE TABLE tampered (what text, s colcrypt.encrypted_text(k1));
INSERT INTO tampered VALUES
    ('nonce', :'t_nonce'),
    ('ciphertext', :'t_ciphertext'),
    ('tag', :'t_tag'),
    ('truncated by one byte', :'t_truncated'),
    ('extended by one byte', :'t_extended'),
    ('relabelled as version 2', :'t_version2'),
    ('bytea relabelled as text', :'t_bytea_as_text');
SELECT count(*) AS stored FROM tampered;
RESET colcrypt.output;
SELECT s FROM tampered WHERE what = 'nonce';
\echo SQLSTATE :SQLSTATE
SELECT s FROM tampered WHERE what = 'ciphertext';
\echo SQLSTATE :SQLSTATE
SELECT s FROM tampered WHERE what = 'tag';
\echo SQLSTATE :SQLSTATE
SELECT s FROM tampered WHERE what = 'truncated by one byte';
\echo SQLSTATE :SQLSTATE
SELECT s FROM tampered WHERE what = 'extended by one byte';
\echo SQLSTATE :SQLSTATE
SELECT s FROM tampered WHERE what = 'bytea relabelled as text';
\echo SQLSTATE :SQLSTATE
SELECT s FROM tampered WHERE what = 'relabelled as version 2';
\echo SQLSTATE :SQLSTATE
SELECT s::text FROM tampered WHERE what = 'tag';
\echo SQLSTATE :SQLSTATE
SELECT count(*) FROM tampered WHERE s = 'top secret';
\echo SQLSTATE :SQLSTATE
-- The envelope still says what it claims, without decrypting.
SELECT what, colcrypt.inspect(s)->>'key' AS key, (colcrypt.inspect(s)->>'key_version')::int AS ver
  FROM tampered ORDER BY what;

-- A k1 envelope relabelled with k2's key id goes into the k2 column as is
-- (its form is fine and this session loads ciphertext) and fails on read:
-- the key id is authenticated.
SET colcrypt.output = ciphertext;
SELECT tf(overlay(env(:'ct1') placing substr(env(colcrypt.ciphertext(s)), 5, 4) from 5 for 4)) AS t_keyid_k2
  FROM secrets_k2 \gset
INSERT INTO secrets_k2 VALUES (2, :'t_keyid_k2');
RESET colcrypt.output;
SELECT s FROM secrets_k2 WHERE id = 2;
\echo SQLSTATE :SQLSTATE

-- Binary COPY in ciphertext mode carries the binary form, which loads back
-- unchanged in ciphertext mode and is refused in plaintext mode.
\getenv abs_builddir PG_ABS_BUILDDIR
\set binfile :abs_builddir '/results/secrets.bin'
SET colcrypt.output = ciphertext;
COPY (SELECT id, s, b FROM secrets WHERE id IN (1, 2)) TO :'binfile' WITH (FORMAT binary);
CREATE TABLE secrets_copy (id integer, s colcrypt.encrypted_text(k1), b colcrypt.encrypted_bytea(k1));
COPY secrets_copy FROM :'binfile' WITH (FORMAT binary);
SELECT count(*) AS same_ciphertext FROM secrets a JOIN secrets_copy c USING (id)
 WHERE colcrypt.ciphertext(a.s) = colcrypt.ciphertext(c.s);
RESET colcrypt.output;
SELECT id, s, b FROM secrets_copy ORDER BY id;
COPY secrets_copy FROM :'binfile' WITH (FORMAT binary);
\echo SQLSTATE :SQLSTATE
