--
-- sec_ddl: nothing under the per-server transit key, and no per-start hash,
-- is stored: the DDL guard covers every container of encrypted values
-- (arrays, composites, domains, ranges, multiranges) and every stored
-- expression, index and partition key.
--
-- Ranges: bounds name no key (transit key), and ordering them decrypts.
SELECT try($$CREATE TYPE encrange AS RANGE (subtype = colcrypt.encrypted_int4)$$);
SELECT try($$CREATE TYPE encrange AS RANGE (subtype = addr)$$);
CREATE DOMAIN enc_dom AS colcrypt.encrypted_int4(cust);
SELECT try($$CREATE TYPE encrange AS RANGE (subtype = enc_dom)$$);
DROP DOMAIN enc_dom;

-- Stored literals of containers: defaults, views, domain defaults,
-- constraints, policies.
SELECT try($$CREATE TABLE lit_t (tags colcrypt.encrypted_text(cust)[] DEFAULT '{DEFAULT-MARKER}'::colcrypt.encrypted_text[])$$);
SELECT try($$CREATE VIEW lit_v AS SELECT '{VIEW-MARKER}'::colcrypt.encrypted_text[] AS tags$$);
SELECT try($$CREATE VIEW lit_v AS SELECT '(1,x)'::addr AS a$$);
SELECT try($$CREATE DOMAIN lit_d AS colcrypt.encrypted_text(cust)[] DEFAULT '{D}'::colcrypt.encrypted_text[]$$);
CREATE TABLE lit_t (id int, tags colcrypt.encrypted_int4(cust)[], home addr);
SELECT try($$ALTER TABLE lit_t ADD CHECK (tags <> '{1}'::colcrypt.encrypted_int4[])$$);
SELECT try($$ALTER TABLE lit_t ALTER COLUMN tags SET DEFAULT '{7}'::colcrypt.encrypted_int4[]$$);
SELECT try($$CREATE POLICY lit_p ON lit_t USING (home IS DISTINCT FROM '(1,x)'::addr)$$);
-- Built from plain literals, the values are encrypted under the column's
-- key when used: allowed, and readable after a restart.
ALTER TABLE lit_t ALTER COLUMN tags SET DEFAULT ARRAY[7, 8];
INSERT INTO lit_t (id) VALUES (1);
SELECT tags, colcrypt.inspect(tags[1])->>'key' AS key FROM lit_t;

-- Indexes on containers: their operator classes order or hash plaintexts.
SELECT try($$CREATE INDEX ON lit_t USING hash (tags)$$);
SELECT try($$CREATE INDEX ON lit_t (tags)$$);
SELECT try($$CREATE INDEX ON lit_t USING gin (tags)$$);
SELECT try($$CREATE INDEX ON lit_t (home)$$);
SELECT try($$CREATE INDEX ON lit_t USING hash (home)$$);
SELECT try($$CREATE INDEX ON lit_t ((tags[1]))$$);
SELECT try($$CREATE UNIQUE INDEX ON lit_t (id) INCLUDE (tags)$$);
SELECT try($$CREATE INDEX ON customers USING hash (email)$$);

-- Partitioning by encrypted values, by any strategy, scalars or not.
SELECT try($$CREATE TABLE sec_part (tags colcrypt.encrypted_int4(cust)[]) PARTITION BY HASH (tags)$$);
SELECT try($$CREATE TABLE sec_part (a colcrypt.encrypted_int4(cust)) PARTITION BY RANGE (a)$$);
SELECT try($$CREATE TABLE sec_part (a colcrypt.encrypted_int4(cust, deterministic)) PARTITION BY LIST (a)$$);
SELECT try($$CREATE TABLE sec_part (h addr) PARTITION BY HASH (h)$$);
SELECT try($$CREATE TABLE sec_part (h addr) PARTITION BY LIST (((h).zip))$$);
SELECT try($$CREATE TABLE sec_part (id int, a colcrypt.encrypted_int4(cust)) PARTITION BY RANGE (id)$$);
DROP TABLE IF EXISTS sec_part;

-- Columns of containers still need a key where the type does not name one.
SELECT try($$CREATE TABLE nokey_t (tags colcrypt.encrypted_int4[])$$);
SELECT try($$CREATE TYPE nokey_c AS (v colcrypt.encrypted_int4)$$);
DROP TABLE lit_t;
