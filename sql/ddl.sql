--
-- ddl: type modifiers and the guard against columns without a key
--
\set VERBOSITY terse
-- Every place a column can get an encrypted type needs a key.
CREATE TABLE nokey (c colcrypt.encrypted_text);
\echo SQLSTATE :SQLSTATE
CREATE TABLE nokey (c colcrypt.encrypted_bytea[]);
\echo SQLSTATE :SQLSTATE
CREATE TABLE nokey AS SELECT 'x'::colcrypt.encrypted_text AS c;
\echo SQLSTATE :SQLSTATE
CREATE TABLE nokey (i integer);
\echo SQLSTATE :SQLSTATE
ALTER TABLE nokey ADD COLUMN c colcrypt.encrypted_text;
\echo SQLSTATE :SQLSTATE
ALTER TABLE nokey ALTER COLUMN i TYPE colcrypt.encrypted_text USING i::text;
\echo SQLSTATE :SQLSTATE
CREATE DOMAIN enc_nokey AS colcrypt.encrypted_text;
\echo SQLSTATE :SQLSTATE
CREATE TABLE nokey2 (c enc_nokey);
\echo SQLSTATE :SQLSTATE
CREATE TYPE nokey_composite AS (c colcrypt.encrypted_text);
\echo SQLSTATE :SQLSTATE
CREATE MATERIALIZED VIEW nokey_mv AS SELECT 'x'::colcrypt.encrypted_text AS c;
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default

-- With a key they work, including arrays, domains and converted columns.
CREATE DOMAIN enc_k1 AS colcrypt.encrypted_text(k1);
CREATE TABLE withkey (
    a colcrypt.encrypted_text(k1),
    b colcrypt.encrypted_bytea("k2"),
    c enc_k1,
    d colcrypt.encrypted_text(k1)[],
    e colcrypt.encrypted_text('k2')
);
INSERT INTO withkey VALUES ('a', '\x62', 'c', ARRAY['d1', 'd2'], 'e');
SELECT a, b, c, d, e FROM withkey;
SELECT colcrypt.inspect(d[2])->>'key' AS array_element_key, colcrypt.inspect(c)->>'key' AS domain_key FROM withkey;
ALTER TABLE nokey ALTER COLUMN i TYPE colcrypt.encrypted_text(k1) USING i::text;
INSERT INTO nokey VALUES ('42');
SELECT i, colcrypt.inspect(i)->>'key' AS key FROM nokey;
\d withkey

-- Bad modifiers.
\set VERBOSITY terse
CREATE TABLE badmod (c colcrypt.encrypted_text(nosuchkey));
\echo SQLSTATE :SQLSTATE
CREATE TABLE badmod (c colcrypt.encrypted_text(k1, k2, k1));
\echo SQLSTATE :SQLSTATE
CREATE TABLE badmod (c colcrypt.encrypted_text(k1, sideways));
\echo SQLSTATE :SQLSTATE
CREATE TABLE badmod (c colcrypt.encrypted_text(''));
\echo SQLSTATE :SQLSTATE
CREATE TABLE badmod (c colcrypt.encrypted_text("#0"));
\echo SQLSTATE :SQLSTATE
CREATE TABLE badmod (c colcrypt.encrypted_text("#abc"));
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default
CREATE TABLE goodmod (c colcrypt.encrypted_text(k1, randomized), d colcrypt.encrypted_text(k1, DETERMINISTIC));
\d goodmod

-- During a restore (check_function_bodies off) the key may not exist yet:
-- the modifier resolves from the name alone.
SET check_function_bodies = off;
CREATE TABLE restored_early (c colcrypt.encrypted_text(not_yet_restored));
RESET check_function_bodies;
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'restored_early'::regclass AND attname = 'c';
\set VERBOSITY terse
INSERT INTO restored_early VALUES ('no key yet');
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default

-- Stored expressions must not keep a literal under the transit key (it
-- would be unreadable after a restart); written as the plain type they work.
\set VERBOSITY terse
SET search_path = public, colcrypt;
CREATE TABLE dflt (id integer, s colcrypt.encrypted_text(k1) DEFAULT 'x');
\echo SQLSTATE :SQLSTATE
CREATE TABLE dflt (id integer, s colcrypt.encrypted_text(k1) DEFAULT 'x'::text);
\echo SQLSTATE :SQLSTATE
ALTER TABLE dflt ALTER COLUMN s SET DEFAULT 'y';
\echo SQLSTATE :SQLSTATE
ALTER TABLE dflt ADD CONSTRAINT nonempty CHECK (s <> '');
\echo SQLSTATE :SQLSTATE
ALTER TABLE dflt ADD CONSTRAINT nonempty CHECK (s <> ''::text);
\echo SQLSTATE :SQLSTATE
CREATE VIEW dflt_x AS SELECT id FROM dflt WHERE s = 'x';
\echo SQLSTATE :SQLSTATE
CREATE VIEW dflt_x AS SELECT id FROM dflt WHERE s = 'x'::text;
\echo SQLSTATE :SQLSTATE
CREATE DOMAIN enc_dflt AS colcrypt.encrypted_text(k1) DEFAULT 'x';
\echo SQLSTATE :SQLSTATE
CREATE FUNCTION enc_lit() RETURNS boolean LANGUAGE sql
    BEGIN ATOMIC SELECT 'a'::colcrypt.encrypted_text = 'a'::text; END;
\echo SQLSTATE :SQLSTATE
RESET search_path;
\set VERBOSITY default
INSERT INTO dflt (id) VALUES (1);
SELECT id, s, colcrypt.inspect(s)->>'key' AS key FROM dflt;
SELECT * FROM dflt_x;
