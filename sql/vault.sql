--
-- vault: the Transit engine of the Vault emulator (test/vault/vault_emu.py;
-- scripts/test.sh starts it on https://127.0.0.1:$COLCRYPT_TEST_VAULT_PORT
-- with a certificate from its own CA in $COLCRYPT_TEST_VAULT/certs).  Tokens
-- and the AppRole come from the emulator's test configuration.
--
\getenv vdir COLCRYPT_TEST_VAULT
\getenv vport COLCRYPT_TEST_VAULT_PORT
\set ca :vdir '/certs/ca.crt'
\set rogue_ca :vdir '/certs/rogue-ca.crt'
\set url 'https://127.0.0.1:' :vport
\set tokfile :vdir '/regress-token'
\set tokwrite 'umask 077 && cat > ' :tokfile
\set port_re '127\\.0\\.0\\.1:[0-9]+'
-- Map the port to <port> in texts that show it.
CREATE FUNCTION vport(t text) RETURNS text LANGUAGE sql
    AS $$ SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(t, '127\.0\.0\.1:[0-9]+', '127.0.0.1:<port>', 'g'),
                 '/[^" ]*/certs', '<dir>/certs', 'g'), 'after [0-9]+ ms', 'after <n> ms', 'g'), 'ttl [0-9]+ s', 'ttl <n> s', 'g') $$;

-- Options are checked before anything is stored.
\set VERBOSITY terse
SELECT colcrypt.add_provider('v', 'vault', '{"token": "x"}');
SELECT colcrypt.add_provider('v', 'vault', '{"url": "http://vault.example.com:8200", "token": "x"}');
SELECT colcrypt.add_provider('v', 'vault', '{"url": "ftp://127.0.0.1/", "token": "x"}');
SELECT colcrypt.add_provider('v', 'vault', '{"url": "https://user:pw@vault.example.com", "token": "x"}');
SELECT colcrypt.add_provider('v', 'vault', '{"url": "https://vault.example.com/?x=1", "token": "x"}');
SELECT colcrypt.add_provider('v', 'vault', jsonb_build_object('url', :'url'));
SELECT colcrypt.add_provider('v', 'vault', jsonb_build_object('url', :'url', 'token', 'a', 'role_id', 'b'));
SELECT colcrypt.add_provider('v', 'vault', jsonb_build_object('url', :'url', 'token', 'a', 'secret_id', 'b'));
SELECT colcrypt.add_provider('v', 'vault', jsonb_build_object('url', :'url', 'token', 'a', 'mount', '../sys'));
SELECT colcrypt.add_provider('v', 'vault', jsonb_build_object('url', :'url', 'token', 'a', 'namespace', '/x'));
SELECT colcrypt.add_provider('v', 'vault', jsonb_build_object('url', :'url', 'token', 'a', 'retries', '99'));
SELECT colcrypt.add_provider('v', 'vault', jsonb_build_object('url', :'url', 'token', 'a', 'tokne', 'b'));
SELECT colcrypt.add_provider('v', 'vault', jsonb_build_object('url', :'url', 'token_file', 'relative/path'));
\set VERBOSITY default

SELECT colcrypt.add_provider('v', 'vault', jsonb_build_object('url', :'url', 'token', 'root-token', 'ca_file', :'ca'));
-- The token is never shown back.
SELECT name, kind, options - 'url' - 'ca_file' AS options FROM colcrypt.providers WHERE name = 'v';
SELECT ok, vport(detail) AS detail FROM colcrypt.check_provider('v');

-- TLS is verified: another CA's certificate, or no CA file (the system's
-- bundle does not know the test CA), fails with 08001.
SELECT colcrypt.add_provider('v_rogue', 'vault', jsonb_build_object('url', :'url', 'token', 'root-token', 'ca_file', :'rogue_ca'));
SELECT ok, vport(detail) AS detail FROM colcrypt.check_provider('v_rogue');
SELECT colcrypt.add_provider('v_sys', 'vault', jsonb_build_object('url', :'url', 'token', 'root-token'));
SELECT ok, vport(detail) ~ 'SQLSTATE 08001' AS refused FROM colcrypt.check_provider('v_sys');
-- A token Vault does not know: 28000.
SELECT colcrypt.add_provider('v_bad', 'vault', jsonb_build_object('url', :'url', 'token', 'not-a-token', 'ca_file', :'ca'));
SELECT ok, vport(detail) AS detail FROM colcrypt.check_provider('v_bad');
-- Nobody listening: 08001 at once.
SELECT colcrypt.add_provider('v_down', 'vault', jsonb_build_object('url', 'https://127.0.0.1:1', 'token', 'root-token', 'ca_file', :'ca', 'retries', '0'));
SELECT ok, vport(detail) AS detail FROM colcrypt.check_provider('v_down');

-- Master keys are Transit keys.  create_cmk makes a derived aes256-gcm96
-- key: each data key is bound to its identity as the derivation context.
-- A key that exists already and is not derived binds by associated data.
SELECT colcrypt.add_master_key('v_missing', 'v', 'no-such-key');
SELECT colcrypt.add_master_key('v_badname', 'v', 'bad/name');
SET client_min_messages = warning;
SELECT colcrypt.add_master_key('v_cmk', 'v', 'colcrypt-regress', create_cmk => true);
RESET client_min_messages;
SELECT colcrypt.add_master_key('v_pre', 'v', 'preexisting');
SELECT colcrypt.create_key('v_t', 'v_cmk');
SELECT colcrypt.create_key('v_t2', 'v_pre');
SELECT k.name, convert_from(substring(v.wrapped_key from 1 for 9), 'UTF8') AS wrapped_prefix,
       v.wrap_meta, k2.cmk_version
  FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id)
  JOIN colcrypt.keys k2 ON k2.key_id = k.key_id AND k2.version = v.version
 WHERE k.name IN ('v_t', 'v_t2') ORDER BY 1;

CREATE TABLE v_t (id int PRIMARY KEY, s colcrypt.encrypted_text(v_t), n colcrypt.encrypted_int8(v_t2, deterministic));
INSERT INTO v_t SELECT g, 'vault secret ' || g, g % 7 FROM generate_series(1, 100) g;
SELECT md5(string_agg(s::text || n::text, ',' ORDER BY id)) AS v_sum FROM v_t \gset
-- Cold cache: the keys come back through Transit decrypt.
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT md5(string_agg(s::text || n::text, ',' ORDER BY id)) = :'v_sum' AS same FROM v_t;
SELECT count(*) FROM v_t WHERE n = 3::bigint;

-- The binding holds: a wrapped key copied to another data key's row (same
-- CMK, other key id) is refused by Vault.
SELECT colcrypt.create_key('v_t3', 'v_cmk');
CREATE TABLE v_t3 (id int, s colcrypt.encrypted_text(v_t3));
INSERT INTO v_t3 VALUES (1, 'other key');
CREATE TEMP TABLE v_saved AS SELECT key_id, wrapped_key FROM colcrypt.data_key_version
 WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'v_t3');
UPDATE colcrypt.data_key_version SET wrapped_key = (SELECT wrapped_key FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id) WHERE k.name = 'v_t')
 WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'v_t3');
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
\set VERBOSITY terse
SELECT s FROM v_t3;
\set VERBOSITY default
-- Put it back (or rotate_master_key below could not unwrap it).
UPDATE colcrypt.data_key_version v SET wrapped_key = s.wrapped_key FROM v_saved s WHERE v.key_id = s.key_id;
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT s FROM v_t3;
DROP TABLE v_t3;

-- Rotating the master key: Vault rotates the Transit key, then re-wraps
-- each data key itself (rewrap carries the derivation context), so no
-- data key is sent to Vault.  The non-derived key cannot be re-wrapped
-- there (Vault's rewrap takes no associated data): colcrypt unwraps and
-- wraps instead.
SELECT colcrypt.rotate_master_key('v_cmk') AS rewrapped;
SELECT colcrypt.rotate_master_key('v_pre') AS rewrapped;
SELECT k.name, v.wrap_meta, k2.cmk_version
  FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id)
  JOIN colcrypt.keys k2 ON k2.key_id = k.key_id AND k2.version = v.version
 WHERE k.name IN ('v_t', 'v_t2') ORDER BY 1;
SELECT colcrypt.audit_flush() IS NOT NULL AS flushed;
SELECT action, object_name, left(detail, 90) AS detail FROM colcrypt.audit_log
 WHERE action IN ('rewrap', 'rotate') AND object_name IN ('v_t', 'v_t2', 'v_cmk', 'v_pre') ORDER BY id;
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT md5(string_agg(s::text || n::text, ',' ORDER BY id)) = :'v_sum' AS same FROM v_t;

-- Moving a master key from the file keyring into Vault (a Transit key made
-- beforehand): the data keys are unwrapped from the keyring and wrapped by
-- Vault.
SET client_min_messages = warning;
SELECT colcrypt.add_provider('v_keyring', 'file', jsonb_build_object('path', :'vdir' || '/regress.keyring'));
SELECT colcrypt.add_master_key('v_mv', 'v_keyring', 'mv', create_cmk => true);
RESET client_min_messages;
SELECT colcrypt.create_key('v_mv_t', 'v_mv');
CREATE TABLE v_mv (s colcrypt.encrypted_text(v_mv_t));
INSERT INTO v_mv VALUES ('moving');
SET client_min_messages = warning;
SELECT colcrypt.add_master_key('v_mv_target', 'v', 'colcrypt-moved', create_cmk => true);
SELECT colcrypt.drop_master_key('v_mv_target');
RESET client_min_messages;
SELECT colcrypt.rotate_master_key('v_mv', 'v', 'colcrypt-moved') AS rewrapped;
SELECT k.name, v.wrap_meta FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id) WHERE k.name = 'v_mv_t';
SELECT name, provider, key_ref FROM colcrypt.master_keys WHERE name = 'v_mv';
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT s FROM v_mv;

-- Namespaces: X-Vault-Namespace selects the namespace; its keys are not
-- seen from the root namespace, and a token of the namespace is refused
-- outside it.
SELECT colcrypt.add_provider('v_ns', 'vault', jsonb_build_object('url', :'url', 'token', 'ns-token', 'namespace', 'team1', 'ca_file', :'ca'));
SET client_min_messages = warning;
SELECT colcrypt.add_master_key('v_ns_cmk', 'v_ns', 'team-key', create_cmk => true);
RESET client_min_messages;
SELECT colcrypt.create_key('v_ns_t', 'v_ns_cmk');
SELECT colcrypt.add_master_key('v_ns_root', 'v', 'team-key');
SELECT colcrypt.add_provider('v_ns_wrong', 'vault', jsonb_build_object('url', :'url', 'token', 'ns-token', 'ca_file', :'ca'));
SELECT colcrypt.add_master_key('v_ns_wrong_cmk', 'v_ns_wrong', 'team-key');

-- AppRole: login with role_id and secret_id; the policy of the role
-- allows encrypt, decrypt and reading keys, not rotating them.
SELECT colcrypt.add_provider('v_ar', 'vault', jsonb_build_object('url', :'url', 'role_id', 'colcrypt-role-id',
    'secret_id', 'colcrypt-secret-id', 'ca_file', :'ca'));
SELECT name, options - 'url' - 'ca_file' AS options FROM colcrypt.providers WHERE name = 'v_ar';
SELECT ok, vport(detail) AS detail FROM colcrypt.check_provider('v_ar');
SELECT colcrypt.add_master_key('v_ar_cmk', 'v_ar', 'colcrypt-regress');
SELECT colcrypt.create_key('v_ar_t', 'v_ar_cmk');
SELECT colcrypt.rotate_master_key('v_ar_cmk');
SELECT colcrypt.add_provider('v_ar_bad', 'vault', jsonb_build_object('url', :'url', 'role_id', 'colcrypt-role-id',
    'secret_id', 'wrong-secret', 'ca_file', :'ca'));
SELECT ok, vport(detail) AS detail FROM colcrypt.check_provider('v_ar_bad');

-- token_file: read again whenever it changes.
COPY (SELECT 'root-token') TO PROGRAM :'tokwrite';
SELECT colcrypt.add_provider('v_tf', 'vault', jsonb_build_object('url', :'url', 'token_file', :'tokfile', 'ca_file', :'ca'));
SELECT ok FROM colcrypt.check_provider('v_tf');
COPY (SELECT 'revoked-token') TO PROGRAM :'tokwrite';
SELECT ok, vport(detail) AS detail FROM colcrypt.check_provider('v_tf');
COPY (SELECT 'root-token') TO PROGRAM :'tokwrite';
SELECT ok FROM colcrypt.check_provider('v_tf');

-- Failures are audited with their SQLSTATE.
SELECT colcrypt.audit_flush() IS NOT NULL AS flushed;
SELECT object_name, substring(detail from 'SQLSTATE [0-9A-Z]{5}') AS sqlstate
  FROM colcrypt.audit_log WHERE action = 'kms_failure' AND object_name LIKE 'v\_%' ORDER BY id;

DROP TABLE v_t, v_mv;
DROP FUNCTION vport(text);
