--
-- sec_forged: one forged value blocks nothing.  reencrypt re-encrypts
-- everything it can and reports each value it cannot open (table, column,
-- row); colcrypt.verify() finds such values beforehand; an error about a
-- value read by a scan says where the value is.
--
SELECT colcrypt.create_key('fk8', 'cmk');
CREATE TABLE forged_t (id int, s colcrypt.encrypted_text(fk8), n colcrypt.encrypted_int4(fk8));
INSERT INTO forged_t SELECT g, 'MARKER-' || g, g FROM generate_series(1, 50) g;
GRANT SELECT, INSERT ON forged_t TO sec_mallory;

-- Mallory, with INSERT only, stores a version-1 ciphertext with one tag
-- bit flipped (he cannot decrypt, so ciphertext input is taken as is).
SELECT 'colcrypt:' || translate(encode(set_byte(b, length(b) - 1, get_byte(b, length(b) - 1) # 1), 'base64'), E'\n', '')
       AS forged
  FROM (SELECT decode(substr(colcrypt.ciphertext(s), 10), 'base64') AS b FROM forged_t WHERE id = 7) x \gset
SET ROLE sec_mallory;
SELECT attempt(format('INSERT INTO forged_t VALUES (51, %L, NULL)', :'forged'));
RESET ROLE;

-- Reading it fails with XX001 and says where the value is.
\set VERBOSITY default
SELECT id, s FROM forged_t WHERE id = 51;
SET colcrypt.batch_scan = off;
SELECT id, s FROM forged_t WHERE id = 51;
RESET colcrypt.batch_scan;

-- verify lists it, before anything else.
SELECT relation, column_name, row_ctid, key_name, key_version, problem FROM colcrypt.verify('forged_t');

-- The key is rotated; reencrypt finishes every other value and reports
-- the forged one (and does not pass over the table ten times for it).
SELECT colcrypt.rotate_key('fk8');
CALL colcrypt.reencrypt('forged_t');
SELECT colcrypt._key_version(s) AS s_version, colcrypt._key_version(n) AS n_version, count(*)
  FROM forged_t GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS readable FROM forged_t WHERE id <> 51 AND s::text = 'MARKER-' || id AND n::int = id;

-- Destroying version 1 says where the remaining value is; force shreds it.
SELECT try($$SELECT colcrypt.set_key_state('fk8', 1, 'destroyed')$$);
DELETE FROM forged_t WHERE id = 51;
SELECT colcrypt.set_key_state('fk8', 1, 'destroyed');
SELECT * FROM colcrypt.verify('forged_t');
SELECT colcrypt.audit_flush();
SELECT action, object_name, outcome, detail FROM colcrypt.audit_log
 WHERE action = 'reencrypt' AND object_name = 'forged_t';
DROP TABLE forged_t;
