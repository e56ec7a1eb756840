--
-- pkcs11: a SoftHSM2 token as the master key's home (scripts/test.sh makes
-- the token: label "colcrypt", PIN in $COLCRYPT_TEST_HSM/pin, and an
-- AES-256 key "cmk" created sensitive and never extractable; the server
-- runs with SOFTHSM2_CONF pointing at it)
--
\getenv hsm COLCRYPT_TEST_HSM
\set pin_file :hsm '/pin'
\set module '/usr/lib/softhsm/libsofthsm2.so'
-- A keyring file provider of its own, to move master keys to and from.
\getenv abs_builddir PG_ABS_BUILDDIR
\set keyring :abs_builddir '/tmp_regress/providers.keyring'
SET client_min_messages = warning;
SELECT colcrypt.add_provider('keyring', 'file', jsonb_build_object('path', :'keyring'));
RESET client_min_messages;

-- Options are checked before anything is stored.
\set VERBOSITY terse
SELECT colcrypt.add_provider('hsm', 'pkcs11', '{"module": "libsofthsm2.so", "token_label": "colcrypt", "pin": "1234"}');
SELECT colcrypt.add_provider('hsm', 'pkcs11', '{"module": "/nonexistent/lib.so", "token_label": "colcrypt", "pin": "1234"}');
SELECT colcrypt.add_provider('hsm', 'pkcs11', jsonb_build_object('module', :'module', 'token_label', 'colcrypt'));
SELECT colcrypt.add_provider('hsm', 'pkcs11', jsonb_build_object('module', :'module', 'token_label', 'colcrypt', 'pin', '1234', 'pin_file', :'pin_file'));
SELECT colcrypt.add_provider('hsm', 'pkcs11', jsonb_build_object('module', :'module', 'token_label', 'colcrypt', 'pin', '1234', 'slot', 0));
SELECT colcrypt.add_provider('hsm', 'pkcs11', jsonb_build_object('module', :'module', 'token_label', 'colcrypt', 'pin', '1234', 'mechanism', 'aes-ecb'));
SELECT colcrypt.add_provider('hsm', 'pkcs11', jsonb_build_object('module', :'module', 'token_label', 'a label longer than thirty-two bytes', 'pin', '1234'));
\set VERBOSITY default

-- The PIN comes from a file; a second provider on the same token uses
-- AES key wrap with padding instead of GCM, and an inline PIN (redacted).
SELECT colcrypt.add_provider('hsm', 'pkcs11', jsonb_build_object('module', :'module', 'token_label', 'colcrypt', 'pin_file', :'pin_file'));
SELECT colcrypt.add_provider('hsm_kwp', 'pkcs11', jsonb_build_object('module', :'module', 'token_label', 'colcrypt', 'pin', '1234', 'mechanism', 'aes-key-wrap-pad'));
SELECT name, kind, options - 'pin_file' AS options FROM colcrypt.providers WHERE kind = 'pkcs11' ORDER BY name;
SELECT ok, detail LIKE 'Implementation of PKCS11 % (SoftHSM)%session read-write, logged in; mechanism CKM_AES_GCM' AS detail_ok
  FROM colcrypt.check_provider('hsm');

-- A CMK that is not in the token is not created unless asked.
SELECT colcrypt.add_master_key('hsm_missing', 'hsm', 'no-such-key');
SELECT colcrypt.add_master_key('hsm_new', 'hsm', 'colcrypt-regress-new', create_cmk => true);
-- The key made by pkcs11-tool, through both mechanisms.
SELECT colcrypt.add_master_key('hsm_cmk', 'hsm', 'cmk');
SELECT colcrypt.add_master_key('hsm_cmk_kwp', 'hsm_kwp', 'cmk');
SELECT name, provider, kind, key_ref FROM colcrypt.master_keys WHERE kind = 'pkcs11' ORDER BY name;

-- Data keys wrapped inside the token; the blob formats show the mechanism.
SELECT colcrypt.create_key('hsm_t', 'hsm_cmk');
SELECT colcrypt.create_key('hsm_t2', 'hsm_cmk_kwp');
SELECT k.name, length(v.wrapped_key) AS wrapped_len, get_byte(v.wrapped_key, 0) AS format
  FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id)
 WHERE k.name IN ('hsm_t', 'hsm_t2') ORDER BY 1;
CREATE TABLE hsm_t (id int PRIMARY KEY, s colcrypt.encrypted_text(hsm_t), n colcrypt.encrypted_int4(hsm_t2, deterministic));
INSERT INTO hsm_t SELECT g, 'hsm secret ' || g, g % 7 FROM generate_series(1, 100) g;
SELECT md5(string_agg(s::text || n::text, ',' ORDER BY id)) AS checksum FROM hsm_t \gset
SELECT count(*), min(s), max(n) FROM hsm_t WHERE n = 3;

-- A wrapped key altered in the catalog is refused by the token (GCM tag),
-- the error names the provider and the failure is audited.
SELECT colcrypt.rotate_key('hsm_t');
SELECT wrapped_key AS good_wrapped FROM colcrypt.data_key_version
 WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'hsm_t') AND version = 2 \gset
UPDATE colcrypt.data_key_version SET wrapped_key = overlay(wrapped_key placing '\x00'::bytea from 20)
 WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'hsm_t') AND version = 2;
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
INSERT INTO hsm_t VALUES (101, 'under version 2', 1);
SELECT colcrypt.audit_flush();
SELECT action, object_name, detail LIKE '%token refused to unwrap%SQLSTATE 38000%CKR_%' AS names_cause
  FROM colcrypt.audit_log WHERE action = 'kms_failure' ORDER BY id DESC LIMIT 1;
-- Put it back: the next use asks the token again and succeeds.
UPDATE colcrypt.data_key_version SET wrapped_key = :'good_wrapped'
 WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'hsm_t') AND version = 2;
INSERT INTO hsm_t VALUES (101, 'under version 2', 1);

-- Master key rotation inside the HSM makes a new CMK beside the old one,
-- and moving between mechanisms and providers never touches table data.
SET client_min_messages = warning;  -- the NOTICE names the new label, which holds the time
SELECT colcrypt.rotate_master_key('hsm_cmk') AS rewrapped;
RESET client_min_messages;
SELECT key_ref ~ '^cmk@[0-9]{8}T[0-9]{6}Z$' AS new_label FROM colcrypt.master_keys WHERE name = 'hsm_cmk';
-- Rotations back to back (some in the same second): a label already taken
-- gets a suffix instead of failing.
SET client_min_messages = warning;
DO $$ BEGIN FOR i IN 1..3 LOOP PERFORM colcrypt.rotate_master_key('hsm_cmk'); COMMIT; END LOOP; END $$;
RESET client_min_messages;
SELECT key_ref ~ '^cmk@[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$' AS new_label FROM colcrypt.master_keys WHERE name = 'hsm_cmk';
SELECT colcrypt.rotate_master_key('hsm_cmk', 'hsm_kwp', 'cmk') AS rewrapped;
SELECT colcrypt.rotate_master_key('hsm_cmk_kwp', 'keyring', 'from-hsm') AS rewrapped;
SELECT colcrypt.rotate_master_key('hsm_cmk_kwp', 'hsm', 'cmk') AS rewrapped;
SELECT md5(string_agg(s::text || n::text, ',' ORDER BY id)) = :'checksum' AS unchanged FROM hsm_t WHERE id <= 100;
SELECT s FROM hsm_t WHERE id = 101;

-- A wrong PIN: refused with 28P01 and audited, whether this process has
-- logged in to the token already or not.
SELECT colcrypt.add_provider('hsm_badpin', 'pkcs11', jsonb_build_object('module', :'module', 'token_label', 'colcrypt', 'pin', '0000'));
SELECT ok, detail FROM colcrypt.check_provider('hsm_badpin');
\c
SELECT ok, detail FROM colcrypt.check_provider('hsm_badpin');
SELECT colcrypt.add_provider('hsm_notoken', 'pkcs11', jsonb_build_object('module', :'module', 'token_label', 'missing', 'pin', '1234'));
SELECT ok, detail LIKE 'key provider "hsm_notoken" (pkcs11): no token labelled "missing" (SQLSTATE 08001)%' AS detail_ok
  FROM colcrypt.check_provider('hsm_notoken');
SELECT colcrypt.audit_flush();
SELECT object_name, substring(detail from 'SQLSTATE .....') AS sqlstate
  FROM colcrypt.audit_log WHERE action = 'kms_failure' ORDER BY id;
-- Every value is readable through the token once the cache is empty.
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT count(*) AS rows_readable, count(DISTINCT s) AS distinct_values FROM hsm_t;
