--
-- init: the extension, a file provider, a master key and data keys shared
-- by the other regression files.
--
\getenv abs_builddir PG_ABS_BUILDDIR
\set keyring :abs_builddir '/tmp_regress/regress.keyring'

CREATE EXTENSION colcrypt;
SELECT extversion FROM pg_extension WHERE extname = 'colcrypt';

-- try(sql): run a statement, report its SQLSTATE, message and detail
-- without echoing the statement (some hold random ciphertext literals).
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    det text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN st || ': ' || msg || coalesce(' (' || nullif(det, '') || ')', '');
END
$$;

-- The NOTICE names the absolute keyring path, which differs per machine.
SET client_min_messages = warning;
SELECT colcrypt.add_provider('dev', 'file', jsonb_build_object('path', :'keyring'));
RESET client_min_messages;
SELECT colcrypt.add_master_key('cmk', 'dev', 'regress-cmk');
SELECT colcrypt.create_key('k1', 'cmk') AS k1_version, colcrypt.create_key('k2', 'cmk') AS k2_version;

SELECT name, version, state, master_key, owner::text, key_id
  FROM colcrypt.keys ORDER BY name;
SELECT name, provider, kind, key_ref, data_key_versions FROM colcrypt.master_keys;
SELECT name, kind FROM colcrypt.providers;

-- Bad arguments: each a clear error, nothing recorded.
\set VERBOSITY terse
SELECT colcrypt.add_provider('dev', 'file', jsonb_build_object('path', :'keyring'));
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider('p2', 'nosuchkind', '{}');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider('p2', 'file', '{"path": "relative/keyring"}');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider('p2', 'file', '{"paht": "/tmp/x"}');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider('p2', 'file', '[1, 2]');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider('p2', 'file', '{}');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider('p2', 'file', jsonb_build_object('path', current_setting('data_directory') || '/keyring'));
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider('p2', 'file', '{"path": "/nonexistent-dir/keyring"}');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider('', 'file', '{}');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider(NULL, 'file', '{}');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_master_key('cmk', 'dev', 'other');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_master_key('m2', 'nosuchprovider', 'x');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_master_key('m2', 'dev', 'bad name with spaces');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.create_key('k1', 'cmk');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.create_key('k3', 'nosuchmaster');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.create_key('', 'cmk');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.create_key('#12', 'cmk');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.create_key(repeat('x', 64), 'cmk');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.drop_master_key('cmk');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.drop_master_key('nosuch');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.drop_provider('dev');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.drop_provider('nosuch');
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default
SELECT count(*) AS providers FROM colcrypt.providers;
SELECT count(*) AS master_keys FROM colcrypt.master_keys;
SELECT count(*) AS key_versions FROM colcrypt.keys;

-- A second provider can be added and dropped while unused.
SET client_min_messages = warning;
SELECT colcrypt.add_provider('spare', 'file', jsonb_build_object('path', :'abs_builddir' || '/tmp_regress/spare.keyring'));
RESET client_min_messages;
SELECT colcrypt.add_master_key('spare_cmk', 'spare', 'spare-1');
SELECT colcrypt.drop_master_key('spare_cmk');
SELECT colcrypt.drop_provider('spare');
SELECT name FROM colcrypt.providers ORDER BY name;
