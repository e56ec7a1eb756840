--
-- kmip: a PyKMIP server as the master key's home (scripts/test.sh starts it
-- on 127.0.0.1:$COLCRYPT_TEST_KMIP_PORT with certificates from its own CA in
-- $COLCRYPT_TEST_KMIP/certs), and moving a master key between the file,
-- pkcs11 and kmip providers
--
\getenv kmip COLCRYPT_TEST_KMIP
\getenv kmip_port COLCRYPT_TEST_KMIP_PORT
\set ca :kmip '/certs/ca.crt'
\set cert :kmip '/certs/client.crt'
\set key :kmip '/certs/client.key'
\set rogue_cert :kmip '/certs/rogue-client.crt'
\set rogue_key :kmip '/certs/rogue-client.key'

\set VERBOSITY terse
SELECT colcrypt.add_provider('km', 'kmip', jsonb_build_object('port', :'kmip_port', 'ca_file', :'ca', 'cert_file', :'cert', 'key_file', :'key'));
SELECT colcrypt.add_provider('km', 'kmip', jsonb_build_object('host', '127.0.0.1', 'ca_file', :'ca', 'cert_file', :'cert'));
SELECT colcrypt.add_provider('km', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', 'x', 'ca_file', :'ca', 'cert_file', :'cert', 'key_file', :'key'));
SELECT colcrypt.add_provider('km', 'kmip', jsonb_build_object('host', '127.0.0.1', 'ca_file', :'ca', 'cert_file', :'cert', 'key_file', :'key', 'mode', 'export'));
SELECT colcrypt.add_provider('km', 'kmip', jsonb_build_object('host', '127.0.0.1', 'ca_file', :'ca', 'cert_file', :'cert', 'key_file', :'key', 'password', 'x'));
\set VERBOSITY default

SELECT colcrypt.add_provider('km', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', :'kmip_port',
    'ca_file', :'ca', 'cert_file', :'cert', 'key_file', :'key'));
SELECT colcrypt.add_provider('km_get', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', :'kmip_port',
    'ca_file', :'ca', 'cert_file', :'cert', 'key_file', :'key', 'mode', 'get'));
-- The views show which mode each uses.
SELECT name, options->>'mode' AS mode, options->>'host' AS host FROM colcrypt.providers WHERE kind = 'kmip' ORDER BY name;
SELECT ok, detail ~ '^KMIP 1\.4 at 127\.0\.0\.1:[0-9]+ over TLSv1\.2 \(ECDHE-ECDSA-AES256-GCM-SHA384\); mode encrypt' AS detail_ok
  FROM colcrypt.check_provider('km');
SELECT ok, detail ~ 'mode get \(the CMK is fetched to wrap locally\)$' AS detail_ok FROM colcrypt.check_provider('km_get');

-- key_ref is the server's unique identifier; create_cmk makes (and
-- activates) a new AES-256 key and records the identifier the server gave.
SELECT colcrypt.add_master_key('km_missing', 'km', '999999');
SET client_min_messages = warning;
SELECT colcrypt.add_master_key('km_cmk', 'km', 'colcrypt regress CMK', create_cmk => true);
RESET client_min_messages;
SELECT name, provider, kind, key_ref ~ '^[0-9]+$' AS server_id FROM colcrypt.master_keys WHERE kind = 'kmip';
SELECT key_ref AS km_uid FROM colcrypt.master_keys WHERE name = 'km_cmk' \gset
-- The same server key through the "get" mode.
SELECT colcrypt.add_master_key('km_get_cmk', 'km_get', :'km_uid');

SELECT colcrypt.create_key('km_t', 'km_cmk');
SELECT colcrypt.create_key('km_t2', 'km_get_cmk');
SELECT k.name, length(v.wrapped_key) AS wrapped_len, get_byte(v.wrapped_key, 0) AS format, v.wrap_meta
  FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id)
 WHERE k.name IN ('km_t', 'km_t2') ORDER BY 1;
CREATE TABLE km_t (id int PRIMARY KEY, s colcrypt.encrypted_text(km_t), n colcrypt.encrypted_int8(km_t2, deterministic));
INSERT INTO km_t SELECT g, 'kmip secret ' || g, g % 5 FROM generate_series(1, 100) g;
SELECT md5(string_agg(s::text || n::text, ',' ORDER BY id)) AS km_checksum FROM km_t \gset
-- Read back through the server (Decrypt, and Get for the other mode).
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT md5(string_agg(s::text || n::text, ',' ORDER BY id)) = :'km_checksum' AS same, count(*) FILTER (WHERE n = 2::bigint) AS twos FROM km_t;

-- rotate_master_key without a new key_ref creates a new server key.
SELECT colcrypt.rotate_master_key('km_cmk') AS rewrapped;
SELECT key_ref <> :'km_uid' AS new_server_key FROM colcrypt.master_keys WHERE name = 'km_cmk';

-- A wrapped key bound to another data key is refused by the server (the
-- identity is GCM associated data): swap two versions' wrapped keys.
SELECT colcrypt.rotate_key('km_t');
CREATE TEMP TABLE saved AS SELECT key_id, version, wrapped_key FROM colcrypt.data_key_version
 WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'km_t');
UPDATE colcrypt.data_key_version v SET wrapped_key = s.wrapped_key FROM saved s
 WHERE v.key_id = s.key_id AND v.version <> s.version;
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT s FROM km_t WHERE id = 1;
UPDATE colcrypt.data_key_version v SET wrapped_key = s.wrapped_key FROM saved s
 WHERE v.key_id = s.key_id AND v.version = s.version;
SELECT s FROM km_t WHERE id = 1;

-- TLS failures: a client certificate from another CA, and a server name
-- that is not in the server's certificate.
SELECT colcrypt.add_provider('km_rogue', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', :'kmip_port',
    'ca_file', :'ca', 'cert_file', :'rogue_cert', 'key_file', :'rogue_key'));
SELECT ok, regexp_replace(detail, '127\.0\.0\.1:[0-9]+', '127.0.0.1:<port>', 'g') AS detail FROM colcrypt.check_provider('km_rogue');
SELECT colcrypt.add_provider('km_name', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', :'kmip_port',
    'server_name', 'kms.example.com', 'ca_file', :'ca', 'cert_file', :'cert', 'key_file', :'key'));
SELECT ok, regexp_replace(regexp_replace(detail, '127\.0\.0\.1:[0-9]+', '127.0.0.1:<port>', 'g'), '/[^"]*/certs', '<dir>/certs') AS detail FROM colcrypt.check_provider('km_name');
-- Nothing listening: refused at once.
SELECT colcrypt.add_provider('km_down', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', 1,
    'ca_file', :'ca', 'cert_file', :'cert', 'key_file', :'key'));
SELECT ok, detail FROM colcrypt.check_provider('km_down');
-- Each failure is an audit row with its SQLSTATE.
SELECT colcrypt.audit_flush();
SELECT object_name, substring(detail from 'SQLSTATE .....') AS sqlstate
  FROM colcrypt.audit_log WHERE action = 'kms_failure' AND object_name LIKE 'km%' ORDER BY id;

-- One master key moves file -> pkcs11 -> kmip -> file; the table file and
-- every value stay the same, and each provider alone can unwrap.
SELECT colcrypt.add_master_key('roam', 'keyring', 'roam-cmk');
SELECT colcrypt.create_key('roam_t', 'roam');
CREATE TABLE roam_t (id int, s colcrypt.encrypted_text(roam_t));
INSERT INTO roam_t SELECT g, 'roaming ' || g FROM generate_series(1, 300) g;
SELECT colcrypt.rotate_key('roam_t');
INSERT INTO roam_t SELECT g, 'roaming ' || g FROM generate_series(301, 400) g;
CREATE TABLE roam_expect AS SELECT md5(string_agg(s::text, ',' ORDER BY id)) AS sum, pg_relation_filenode('roam_t') AS node FROM roam_t;
CREATE VIEW roam_check AS
    SELECT (SELECT provider FROM colcrypt.master_keys WHERE name = 'roam'),
           md5(string_agg(s::text, ',' ORDER BY id)) = (SELECT sum FROM roam_expect) AS unchanged,
           pg_relation_filenode('roam_t') = (SELECT node FROM roam_expect) AS same_file
      FROM roam_t;
SELECT colcrypt.rotate_master_key('roam', 'hsm', 'cmk') AS rewrapped;
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT * FROM roam_check;
SELECT colcrypt.rotate_master_key('roam', 'km', :'km_uid') AS rewrapped;
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT * FROM roam_check;
SELECT colcrypt.rotate_master_key('roam', 'keyring', 'roam-cmk') AS rewrapped;
SELECT colcrypt.key_cache_evict() > 0 AS evicted;
SELECT * FROM roam_check;
SELECT colcrypt.audit_flush();
SELECT action, object_name, regexp_replace(detail, 'under km [0-9]+', 'under km <uid>') AS detail
  FROM colcrypt.audit_log WHERE action = 'rotate' AND object_name = 'roam' ORDER BY id;
