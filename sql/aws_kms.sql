--
-- aws_kms: the AWS KMS emulator (test/awskms/kms_emu.py; scripts/test.sh
-- starts it on https://127.0.0.1:$COLCRYPT_TEST_AWSKMS_PORT).  The emulator
-- checks the Signature Version 4 of every request with its own
-- implementation; credentials and the alias come from its test
-- configuration.
--
\getenv adir COLCRYPT_TEST_AWSKMS
\getenv aport COLCRYPT_TEST_AWSKMS_PORT
\set ca :adir '/certs/ca.crt'
\set endpoint 'https://127.0.0.1:' :aport
\set credfile :adir '/regress-credentials'
\set credwrite 'umask 077 && cat > ' :credfile
CREATE FUNCTION aport(t text) RETURNS text LANGUAGE sql
    AS $$ SELECT regexp_replace(regexp_replace(t, '127\.0\.0\.1:[0-9]+', '127.0.0.1:<port>', 'g'),
                                'arn:aws:kms:us-east-1:111122223333:key/[0-9a-f-]{36}', '<key arn>', 'g') $$;

\set VERBOSITY terse
SELECT colcrypt.add_provider('a', 'aws-kms', '{"access_key_id": "x", "secret_access_key": "y"}');
SELECT colcrypt.add_provider('a', 'aws-kms', '{"region": "us east 1", "access_key_id": "x", "secret_access_key": "y"}');
SELECT colcrypt.add_provider('a', 'aws-kms', '{"region": "us-east-1", "access_key_id": "x"}');
SELECT colcrypt.add_provider('a', 'aws-kms', '{"region": "us-east-1", "session_token": "t"}');
SELECT colcrypt.add_provider('a', 'aws-kms', '{"region": "us-east-1", "endpoint": "http://kms.example.com", "access_key_id": "x", "secret_access_key": "y"}');
SELECT colcrypt.add_provider('a', 'aws-kms', '{"region": "us-east-1", "access_key_id": "x", "secret_access_key": "y", "secret_key": "z"}');
SELECT colcrypt.add_provider('a', 'aws-kms', '{"region": "us-east-1", "access_key_id": "x", "secret_access_key": "y", "data_key_source": "hsm"}');
\set VERBOSITY default

SELECT colcrypt.add_provider('a', 'aws-kms', jsonb_build_object('region', 'us-east-1', 'endpoint', :'endpoint',
    'access_key_id', 'AKIDCOLCRYPTTEST', 'secret_access_key', 'colcrypt/test/secret/key/0123456789abcdef', 'ca_file', :'ca'));
SELECT name, kind, options - 'endpoint' - 'ca_file' AS options FROM colcrypt.providers WHERE name = 'a';
SELECT ok, aport(detail) AS detail FROM colcrypt.check_provider('a');

-- A wrong secret: the emulator's signature check refuses it (28000).
SELECT colcrypt.add_provider('a_badsig', 'aws-kms', jsonb_build_object('region', 'us-east-1', 'endpoint', :'endpoint',
    'access_key_id', 'AKIDCOLCRYPTTEST', 'secret_access_key', 'not-the-secret', 'ca_file', :'ca'));
SELECT ok, aport(left(detail, 160)) AS detail FROM colcrypt.check_provider('a_badsig');
-- The signature covers the region.
SELECT colcrypt.add_provider('a_region', 'aws-kms', jsonb_build_object('region', 'eu-west-1', 'endpoint', :'endpoint',
    'access_key_id', 'AKIDCOLCRYPTTEST', 'secret_access_key', 'colcrypt/test/secret/key/0123456789abcdef', 'ca_file', :'ca'));
SELECT ok, aport(detail) ~ 'SQLSTATE 28000' AS refused FROM colcrypt.check_provider('a_region');
-- An unknown access key.
SELECT colcrypt.add_provider('a_unknown', 'aws-kms', jsonb_build_object('region', 'us-east-1', 'endpoint', :'endpoint',
    'access_key_id', 'AKIDUNKNOWN', 'secret_access_key', 'x', 'ca_file', :'ca'));
SELECT ok, aport(detail) AS detail FROM colcrypt.check_provider('a_unknown');

-- Master keys: an alias that exists, a missing one, and one made by create_cmk
-- (CreateKey, then CreateAlias).
SELECT colcrypt.add_master_key('a_missing', 'a', 'alias/no-such-key');
SELECT colcrypt.add_master_key('a_cmk', 'a', 'alias/colcrypt-test');
SET client_min_messages = warning;
SELECT colcrypt.add_master_key('a_new', 'a', 'alias/colcrypt-regress-new', create_cmk => true);
-- create_cmk without an alias name records the new key's ARN.
SELECT colcrypt.add_master_key('a_arn', 'a', 'colcrypt regress key', create_cmk => true);
RESET client_min_messages;
SELECT name, aport(key_ref) AS key_ref FROM colcrypt.master_keys WHERE provider = 'a' ORDER BY name;

SELECT colcrypt.create_key('a_t', 'a_cmk');
SELECT colcrypt.create_key('a_t2', 'a_new');
CREATE TABLE a_t (id int PRIMARY KEY, s colcrypt.encrypted_text(a_t), d colcrypt.encrypted_text(a_t2, deterministic));
INSERT INTO a_t SELECT g, 'aws secret ' || g, 'tag' || (g % 4) FROM generate_series(1, 100) g;
SELECT md5(string_agg(s::text || d::text, ',' ORDER BY id)) AS a_sum FROM a_t \gset
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT md5(string_agg(s::text || d::text, ',' ORDER BY id)) = :'a_sum' AS same FROM a_t;
SELECT count(*) FROM a_t WHERE d = 'tag2';

-- The EncryptionContext binds each wrapped key to its data key: a blob
-- copied to another data key's row is refused (InvalidCiphertextException).
SELECT colcrypt.create_key('a_t3', 'a_cmk');
CREATE TABLE a_t3 (s colcrypt.encrypted_text(a_t3));
INSERT INTO a_t3 VALUES ('other key');
CREATE TEMP TABLE a_saved AS SELECT key_id, wrapped_key FROM colcrypt.data_key_version
 WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'a_t3');
UPDATE colcrypt.data_key_version SET wrapped_key = (SELECT wrapped_key FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id) WHERE k.name = 'a_t')
 WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'a_t3');
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
\set VERBOSITY terse
SELECT s FROM a_t3;
\set VERBOSITY default
-- Put it back (or rotate_master_key below could not unwrap it).
UPDATE colcrypt.data_key_version v SET wrapped_key = s.wrapped_key FROM a_saved s WHERE v.key_id = s.key_id;
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT s FROM a_t3;
DROP TABLE a_t3;

-- Rotation: on-demand rotation of the KMS key, then ReEncrypt of every
-- data key at KMS; and moving to another KMS key, also by ReEncrypt.
SELECT colcrypt.rotate_master_key('a_cmk') AS rewrapped;
SELECT colcrypt.rotate_master_key('a_new', NULL, 'alias/colcrypt-test') AS rewrapped;
SELECT colcrypt.audit_flush() IS NOT NULL AS flushed;
SELECT action, object_name, aport(left(detail, 100)) AS detail FROM colcrypt.audit_log
 WHERE action IN ('rewrap', 'rotate') AND object_name IN ('a_t', 'a_t2', 'a_cmk', 'a_new') ORDER BY id;
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT md5(string_agg(s::text || d::text, ',' ORDER BY id)) = :'a_sum' AS same FROM a_t;

-- A principal without kms:Encrypt: 28000 naming AccessDeniedException.
SELECT colcrypt.add_provider('a_denied', 'aws-kms', jsonb_build_object('region', 'us-east-1', 'endpoint', :'endpoint',
    'access_key_id', 'AKIDNOACCESS', 'secret_access_key', 'noaccess/secret', 'ca_file', :'ca'));
\set VERBOSITY terse
SELECT colcrypt.add_master_key('a_denied_cmk', 'a_denied', 'alias/colcrypt-test');
\set VERBOSITY default

-- Temporary credentials from a shared credentials file, with a session token.
-- (Written through a program: the file must be mode 0600.)
COPY (SELECT unnest(ARRAY['[default]', 'aws_access_key_id = AKIDCOLCRYPTTEST', 'aws_secret_access_key = wrong', '',
    '[colcrypt]', 'aws_access_key_id = ASIACOLCRYPTTEMP', 'aws_secret_access_key = temp/secret/key/fedcba9876543210',
    'aws_session_token = FwoGZXIvYXdzEXAMPLEsessiontoken//colcrypt=='])) TO PROGRAM :'credwrite';
SELECT colcrypt.add_provider('a_file', 'aws-kms', jsonb_build_object('region', 'us-east-1', 'endpoint', :'endpoint',
    'credentials_file', :'credfile', 'profile', 'colcrypt', 'ca_file', :'ca'));
SELECT ok, aport(detail) AS detail FROM colcrypt.check_provider('a_file');
SELECT colcrypt.add_master_key('a_file_cmk', 'a_file', 'alias/colcrypt-test');
SELECT colcrypt.create_key('a_file_t', 'a_file_cmk');
-- The default profile of the same file has a wrong secret.
SELECT colcrypt.add_provider('a_file_default', 'aws-kms', jsonb_build_object('region', 'us-east-1', 'endpoint', :'endpoint',
    'credentials_file', :'credfile', 'ca_file', :'ca'));
SELECT ok, aport(detail) ~ 'InvalidSignatureException' AS refused FROM colcrypt.check_provider('a_file_default');
-- Options with a session token.
SELECT colcrypt.add_provider('a_sts', 'aws-kms', jsonb_build_object('region', 'us-east-1', 'endpoint', :'endpoint',
    'access_key_id', 'ASIACOLCRYPTTEMP', 'secret_access_key', 'temp/secret/key/fedcba9876543210',
    'session_token', 'FwoGZXIvYXdzEXAMPLEsessiontoken//colcrypt==', 'ca_file', :'ca'));
SELECT name, options - 'endpoint' - 'ca_file' AS options FROM colcrypt.providers WHERE name = 'a_sts';
SELECT ok FROM colcrypt.check_provider('a_sts');

-- Data keys from KMS's generator: GenerateDataKey returns the key and its
-- blob in one call (bound by the same EncryptionContext).
SELECT colcrypt.add_provider('a_gen', 'aws-kms', jsonb_build_object('region', 'us-east-1', 'endpoint', :'endpoint',
    'access_key_id', 'AKIDCOLCRYPTTEST', 'secret_access_key', 'colcrypt/test/secret/key/0123456789abcdef',
    'ca_file', :'ca', 'data_key_source', 'kms'));
SELECT colcrypt.add_master_key('a_gen_cmk', 'a_gen', 'alias/colcrypt-test');
SELECT colcrypt.create_key('a_gen_t', 'a_gen_cmk');
SELECT colcrypt.rotate_key('a_gen_t');
CREATE TABLE a_gen (s colcrypt.encrypted_text(a_gen_t));
INSERT INTO a_gen VALUES ('from the KMS generator');
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT s FROM a_gen;
DROP TABLE a_gen;

SELECT colcrypt.audit_flush() IS NOT NULL AS flushed;
SELECT object_name, substring(detail from 'SQLSTATE [0-9A-Z]{5}') AS sqlstate
  FROM colcrypt.audit_log WHERE action = 'kms_failure' AND object_name LIKE 'a\_%' ORDER BY id;

DROP TABLE a_t;
DROP FUNCTION aport(text);
