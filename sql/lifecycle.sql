--
-- lifecycle: rotation, re-encryption, NIST states, crypto-shredding,
-- master key rotation, encrypt_column, and their audit records
--
SELECT colcrypt.create_key('life', 'cmk');
CREATE TABLE life (id integer PRIMARY KEY, r colcrypt.encrypted_text(life),
                   d colcrypt.encrypted_int4(life, deterministic), note text);
INSERT INTO life SELECT g, 'row ' || g, g % 10, 'plain ' || g FROM generate_series(1, 2000) g;
CREATE INDEX life_d ON life (d colcrypt.encrypted_int4_det_ops);
CREATE FUNCTION life_checksum() RETURNS text LANGUAGE sql AS $$
    SELECT md5(string_agg(r::text || '|' || d::text, ',' ORDER BY id)) FROM life
$$;
SELECT life_checksum() AS checksum_v1 \gset

-- rotate_key: a new active version; the old one decrypts only.
SELECT colcrypt.rotate_key('life');
SELECT version, state FROM colcrypt.keys WHERE name = 'life' ORDER BY version;
INSERT INTO life VALUES (3001, 'after rotation', 7, NULL);
SELECT colcrypt._key_version(r) AS version, count(*) FROM life GROUP BY 1 ORDER BY 1;
SELECT count(*) AS still_found FROM life WHERE d = 7;

-- reencrypt moves every value to version 2; data is unchanged.
SET client_min_messages = warning;
CALL colcrypt.reencrypt('life', 300);
RESET client_min_messages;
SELECT colcrypt._key_version(r) AS r_version, colcrypt._key_version(d) AS d_version, count(*)
  FROM life GROUP BY 1, 2 ORDER BY 1, 2;
DELETE FROM life WHERE id = 3001;
SELECT life_checksum() = :'checksum_v1' AS unchanged;
SELECT count(*) AS no_progress_rows_left FROM colcrypt.reencrypt_progress;
CALL colcrypt.reencrypt('life');
SELECT try($$CALL colcrypt.reencrypt('life', 0)$$);
CREATE TABLE plain_only (x int);
CALL colcrypt.reencrypt('plain_only');
-- In a transaction block it cannot commit its batches.
BEGIN;
SELECT try($$CALL colcrypt.reencrypt('life')$$);
ROLLBACK;
SELECT count(*) AS no_progress_rows_left FROM colcrypt.reencrypt_progress;

-- States: a pre-activation version, activated; illegal transitions refused.
SELECT colcrypt.rotate_key('life', activate => false);
SELECT version, state FROM colcrypt.keys WHERE name = 'life' ORDER BY version;
SELECT try($$INSERT INTO life VALUES (4000, 'x', 1, NULL)$$) AS still_version_2;
SELECT colcrypt._key_version(r) FROM life WHERE id = 4000;
SELECT try($$SELECT colcrypt.set_key_state('life', 3, 'deactivated')$$);
SELECT try($$SELECT colcrypt.set_key_state('life', 3, 'destroyed-compromised')$$);
SELECT try($$SELECT colcrypt.set_key_state('life', 1, 'active')$$);
SELECT try($$SELECT colcrypt.set_key_state('life', 2, 'pre-activation')$$);
SELECT try($$SELECT colcrypt.set_key_state('life', 2, 'active')$$);
SELECT try($$SELECT colcrypt.set_key_state('life', 2, 'sleeping')$$);
SELECT try($$SELECT colcrypt.set_key_state('life', 9, 'deactivated')$$);
SELECT try($$SELECT colcrypt.set_key_state('nokey', 1, 'deactivated')$$);
SELECT colcrypt.set_key_state('life', 3, 'active');
SELECT version, state, activated_at IS NOT NULL AS activated, deactivated_at IS NOT NULL AS deactivated
  FROM colcrypt.keys WHERE name = 'life' ORDER BY version;
INSERT INTO life VALUES (4001, 'under version 3', 3, NULL);
SELECT colcrypt._key_version(r) FROM life WHERE id = 4001;

-- A key with no active version cannot encrypt, but still decrypts.
SELECT colcrypt.set_key_state('life', 3, 'deactivated');
SELECT try($$INSERT INTO life VALUES (4002, 'x', 1, NULL)$$);
SELECT r FROM life WHERE id = 4001;
SELECT colcrypt.rotate_key('life');

-- Compromised: decrypts with a warning (and an audit record), encrypts not.
SELECT colcrypt.set_key_state('life', 2, 'compromised');
SELECT count(*) FROM life WHERE r::text LIKE 'row 1%';
SELECT colcrypt.set_key_state('life', 4, 'compromised');
SELECT try($$INSERT INTO life VALUES (4003, 'x', 1, NULL)$$);
SELECT colcrypt.rotate_key('life');

-- Destroying a version that values use needs force, and says how many.
SELECT try($$SELECT colcrypt.set_key_state('life', 2, 'destroyed-compromised')$$);
SELECT count(*) AS values_under_version_2 FROM life WHERE colcrypt._key_version(r) = 2;
SELECT colcrypt.set_key_state('life', 2, 'destroyed-compromised', force => true);
SELECT version, state, destroyed_at IS NOT NULL AS destroyed FROM colcrypt.keys WHERE name = 'life' ORDER BY version;
-- The wrapped key is gone from the catalog (no row version keeps it).
SELECT version, wrapped_key IS NULL AS wrapped_key_gone FROM colcrypt.data_key_version
 WHERE key_id = colcrypt._key_id((SELECT r FROM life WHERE id = 4001)) ORDER BY version;
SELECT try($$SELECT r::text FROM life WHERE id = 1$$);
SELECT try($$SELECT count(*) FROM life WHERE r::text = 'row 1'$$);
-- A deterministic index lookup cannot match a shredded value (its
-- ciphertext can no longer be computed); a scan that decrypts one fails.
SELECT count(*) AS found_unshredded FROM life WHERE d = 3;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT try($$SELECT count(*) FROM life WHERE d = 3$$);
RESET enable_indexscan;
RESET enable_bitmapscan;
SELECT r FROM life WHERE id = 4001;
-- Values under a destroyed version are not re-encrypted (they cannot be).
SET client_min_messages = warning;
CALL colcrypt.reencrypt('life');
RESET client_min_messages;
SELECT colcrypt._key_version(r) AS version, count(*) FROM life GROUP BY 1 ORDER BY 1;
-- A version no value uses is destroyed without force.
SELECT colcrypt.set_key_state('life', 1, 'destroyed');
SELECT try($$SELECT colcrypt.set_key_state('life', 1, 'compromised')$$);

-- Master key rotation: a new CMK version, then another provider; table
-- files untouched (same relfilenode), every value readable after each.
SELECT colcrypt.create_key('mk_data', 'cmk');
CREATE TABLE mk (id integer, v colcrypt.encrypted_text(mk_data));
INSERT INTO mk SELECT g, 'secret ' || g FROM generate_series(1, 100) g;
SELECT pg_relation_filenode('mk') AS filenode, md5(string_agg(v::text, ',' ORDER BY id)) AS mk_sum FROM mk \gset
SELECT wrap_meta FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id) WHERE k.name = 'mk_data';
SELECT colcrypt.rotate_master_key('cmk') AS rewrapped;
SELECT wrap_meta FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id) WHERE k.name = 'mk_data';
SELECT pg_relation_filenode('mk') = :filenode AS same_files,
       md5(string_agg(v::text, ',' ORDER BY id)) = :'mk_sum' AS same_values FROM mk;
\getenv abs_builddir PG_ABS_BUILDDIR
\set other_keyring :abs_builddir '/tmp_regress/other.keyring'
SET client_min_messages = warning;
SELECT colcrypt.add_provider('other', 'file', jsonb_build_object('path', :'other_keyring'));
RESET client_min_messages;
SELECT colcrypt.rotate_master_key('cmk', 'other', 'moved-cmk') AS rewrapped;
SELECT name, provider, key_ref, rotated_at IS NOT NULL AS rotated FROM colcrypt.master_keys WHERE name = 'cmk';
-- A fresh start of every backend's key cache is not needed: the data keys
-- did not change.  Every value still reads, under every key.
SELECT pg_relation_filenode('mk') = :filenode AS same_files,
       md5(string_agg(v::text, ',' ORDER BY id)) = :'mk_sum' AS same_values FROM mk;
SELECT count(*) FROM people WHERE name IS NOT NULL;
-- The old provider is now unused and can go; the new one cannot.
SELECT try($$SELECT colcrypt.drop_provider('other')$$);
SELECT colcrypt.drop_provider('dev');
SELECT name FROM colcrypt.providers ORDER BY name;
-- Errors leave nothing half-done.
SELECT try($$SELECT colcrypt.rotate_master_key('cmk', 'nosuchprovider')$$);
SELECT try($$SELECT colcrypt.rotate_master_key('nosuchmaster')$$);
SELECT name, provider, key_ref FROM colcrypt.master_keys WHERE name = 'cmk';

-- encrypt_column: a plaintext column becomes encrypted in place.
CREATE TABLE legacy (id integer PRIMARY KEY, email varchar(100), salary numeric(10, 2),
                     born date, tags json, bin bytea, flag boolean, ratio real, code char(6));
INSERT INTO legacy SELECT g, 'user' || g || '@example.com', g * 1000.5, date '1990-01-01' + g,
       json_build_object('g', g), decode(md5(g::text), 'hex'), g % 2 = 0, g / 10.0, 'c' || g
  FROM generate_series(1, 50) g;
CREATE INDEX legacy_email ON legacy (email);
-- Types whose values would read differently are refused, with the way out.
SELECT try($$SELECT colcrypt.encrypt_column('legacy', 'tags')$$);
SELECT try($$SELECT colcrypt.encrypt_column('legacy', 'ratio')$$);
SELECT try($$SELECT colcrypt.encrypt_column('legacy', 'code')$$);
SELECT tags FROM legacy WHERE id = 1;
ALTER TABLE legacy ALTER COLUMN tags TYPE jsonb;
SELECT md5(string_agg(email || salary || born || tags::text || encode(bin, 'hex'), ',' ORDER BY id)) AS legacy_sum FROM legacy \gset
-- An index on the column would be rebuilt in plaintext order: refused
-- up front, with what to do instead.
SELECT try($$SELECT colcrypt.encrypt_column('legacy', 'email', 'k2', deterministic => true)$$);
DROP INDEX legacy_email;
SELECT colcrypt.encrypt_column('legacy', 'email', 'k2', deterministic => true);
CREATE INDEX legacy_email ON legacy (email colcrypt.encrypted_text_det_ops);
SELECT colcrypt.encrypt_column('legacy', 'salary');
SELECT colcrypt.encrypt_column('legacy', 'born');
SELECT colcrypt.encrypt_column('legacy', 'tags');
SELECT colcrypt.encrypt_column('legacy', 'bin', 'k2');
\d legacy
SELECT md5(string_agg(email || salary || born || tags::text || encode(bin, 'hex'), ',' ORDER BY id)) = :'legacy_sum' AS same_data
  FROM legacy;
SELECT id FROM legacy WHERE email = 'user7@example.com';
SELECT name, version, state FROM colcrypt.keys WHERE name = 'legacy';
SELECT try($$SELECT colcrypt.encrypt_column('legacy', 'email')$$);
SELECT try($$SELECT colcrypt.encrypt_column('legacy', 'flag')$$);
SELECT try($$SELECT colcrypt.encrypt_column('legacy', 'nosuchcolumn')$$);
SELECT try($$SELECT colcrypt.encrypt_column('legacy', 'id', 'nosuchkey')$$);
CREATE ROLE cc_stranger;
GRANT SELECT, UPDATE ON legacy TO cc_stranger;
SET ROLE cc_stranger;
SELECT try($$SELECT colcrypt.encrypt_column('legacy', 'id', 'k2')$$);
RESET ROLE;

-- Everything above is in the audit log, failures included.
SELECT colcrypt.audit_flush();
SELECT action, object_name, key_version, outcome, left(detail, 70) AS detail
  FROM colcrypt.audit_log
 WHERE object_name IN ('life', 'mk_data', 'cmk', 'legacy', 'k2', 'other')
    OR action = 'encrypt_column' OR (action, object_name) = ('drop', 'dev')
 ORDER BY id;

-- Arrays and domains of encrypted types: counted when destroying,
-- re-encrypted element by element with their dimensions and bounds.
SELECT colcrypt.create_key('arrk', 'cmk');
CREATE DOMAIN arr_dom AS colcrypt.encrypted_text(arrk);
CREATE TABLE arr_t (id integer, a colcrypt.encrypted_text(arrk)[], dm arr_dom, da arr_dom[]);
INSERT INTO arr_t SELECT g, ARRAY[ARRAY['a' || g, 'b' || g], ARRAY['c' || g, NULL]],
       'd' || g, ('[0:1]={x' || g || ',y' || g || '}')::text[]
  FROM generate_series(1, 20) g;
SELECT md5(string_agg(a::text || dm::text || da::text, ',' ORDER BY id)) AS arr_sum FROM arr_t \gset
-- A partitioned table under the same key.
CREATE TABLE part_t (id integer, v colcrypt.encrypted_text(arrk)) PARTITION BY RANGE (id);
CREATE TABLE part_t1 PARTITION OF part_t FOR VALUES FROM (0) TO (50);
CREATE TABLE part_t2 PARTITION OF part_t FOR VALUES FROM (50) TO (100);
INSERT INTO part_t SELECT g, 'p' || g FROM generate_series(1, 99) g;
SELECT colcrypt.rotate_key('arrk');
SELECT try($$SELECT colcrypt.set_key_state('arrk', 1, 'destroyed')$$);
CALL colcrypt.reencrypt('arr_t', 5);
CALL colcrypt.reencrypt('part_t');
SELECT colcrypt._key_version(e) AS version, count(*) FROM arr_t, unnest(a) e WHERE e IS NOT NULL GROUP BY 1;
SELECT colcrypt._key_version(e) AS version, count(*) FROM arr_t, unnest(da) e GROUP BY 1;
SELECT colcrypt._key_version(dm) AS version, count(*) FROM arr_t GROUP BY 1;
SELECT colcrypt._key_version(v) AS version, count(*) FROM part_t GROUP BY 1;
SELECT array_dims(a) AS a_dims, array_dims(da) AS da_dims, a[2][2] IS NULL AS null_kept FROM arr_t WHERE id = 1;
SELECT md5(string_agg(a::text || dm::text || da::text, ',' ORDER BY id)) = :'arr_sum' AS unchanged FROM arr_t;
SELECT colcrypt.set_key_state('arrk', 1, 'destroyed');

-- A destroy rolled back to a savepoint destroys nothing, and the audit
-- log says it was rolled back.
SELECT colcrypt.rotate_key('mk_data');
BEGIN;
SAVEPOINT s;
SELECT colcrypt.set_key_state('mk_data', 1, 'destroyed', force => true);
ROLLBACK TO s;
SELECT colcrypt.create_key('sp_key', 'cmk');
COMMIT;
SELECT colcrypt.audit_flush();
SELECT version, state, wrapped_key IS NOT NULL AS has_key, shredded_at IS NULL AS not_shredded
  FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id) WHERE k.name = 'mk_data' ORDER BY version;
SELECT md5(string_agg(v::text, ',' ORDER BY id)) = :'mk_sum' AS still_readable FROM mk;
SELECT action, object_name, key_version, outcome FROM colcrypt.audit_log
 WHERE (object_name = 'mk_data' AND action = 'state') OR object_name = 'sp_key' ORDER BY id;

-- Catalog statements run with a fixed search_path: a function of the
-- caller's with a catalog function's name does not run in them, nor in
-- reencrypt.
CREATE SCHEMA evil;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
  $$ BEGIN RAISE NOTICE 'evil.now() ran as %', current_user; RETURN pg_catalog.now(); END $$;
CREATE FUNCTION evil.quote_ident(text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN RAISE NOTICE 'evil.quote_ident() ran as %', current_user; RETURN pg_catalog.quote_ident($1); END $$;
SET search_path = evil, pg_catalog, public;
SELECT colcrypt.rotate_key('arrk');
CALL colcrypt.reencrypt('arr_t');
RESET search_path;
DROP SCHEMA evil CASCADE;

-- encrypt_column does not create keys for whom create_key would refuse,
-- nor take a key named after the table that someone else owns.
CREATE ROLE cc_tab_owner;
CREATE TABLE payroll (id integer, salary numeric);
CREATE TABLE notes (id integer, body text);
ALTER TABLE payroll OWNER TO cc_tab_owner;
ALTER TABLE notes OWNER TO cc_tab_owner;
SELECT colcrypt.create_key('payroll', 'cmk');
SELECT colcrypt.grant_key('payroll', 'cc_tab_owner', 'all');
SET ROLE cc_tab_owner;
SELECT try($$SELECT colcrypt.encrypt_column('payroll', 'salary')$$);
SELECT try($$SELECT colcrypt.encrypt_column('notes', 'body')$$);
SELECT colcrypt.encrypt_column('payroll', 'salary', 'payroll');
RESET ROLE;
