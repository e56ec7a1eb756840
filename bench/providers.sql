-- Cost of one data key wrap and unwrap through each key provider, and of
-- the shared cache's hit path.  Run by bench/providers.sh.
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION colcrypt;
SELECT colcrypt.add_provider('file', 'file', jsonb_build_object('path', :'dir' || '/keyring'));
SELECT colcrypt.add_provider('pkcs11-gcm', 'pkcs11', jsonb_build_object('module', '/usr/lib/softhsm/libsofthsm2.so', 'token_label', 'colcrypt', 'pin_file', :'dir' || '/hsm/pin'));
SELECT colcrypt.add_provider('pkcs11-kwp', 'pkcs11', jsonb_build_object('module', '/usr/lib/softhsm/libsofthsm2.so', 'token_label', 'colcrypt', 'pin_file', :'dir' || '/hsm/pin', 'mechanism', 'aes-key-wrap-pad'));
SELECT colcrypt.add_provider('kmip-encrypt', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', :'kmip_port', 'ca_file', :'dir' || '/kmip/certs/ca.crt', 'cert_file', :'dir' || '/kmip/certs/client.crt', 'key_file', :'dir' || '/kmip/certs/client.key'));
SELECT colcrypt.add_provider('kmip-get', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', :'kmip_port', 'ca_file', :'dir' || '/kmip/certs/ca.crt', 'cert_file', :'dir' || '/kmip/certs/client.crt', 'key_file', :'dir' || '/kmip/certs/client.key', 'mode', 'get'));
SELECT colcrypt.add_provider('vault', 'vault', jsonb_build_object('url', 'https://127.0.0.1:' || :'vault_port', 'token', 'root-token', 'ca_file', :'dir' || '/vault/certs/ca.crt'));
SELECT colcrypt.add_provider('aws-kms', 'aws-kms', jsonb_build_object('region', 'us-east-1', 'endpoint', 'https://127.0.0.1:' || :'aws_port',
    'access_key_id', 'AKIDCOLCRYPTTEST', 'secret_access_key', 'colcrypt/test/secret/key/0123456789abcdef', 'ca_file', :'dir' || '/awskms/certs/ca.crt'));
SELECT colcrypt.add_master_key('file', 'file', 'bench');
SELECT colcrypt.add_master_key('vault', 'vault', 'bench', create_cmk => true);
SELECT colcrypt.add_master_key('aws-kms', 'aws-kms', 'alias/colcrypt-test');
SELECT colcrypt.add_master_key('pkcs11-gcm', 'pkcs11-gcm', 'cmk');
SELECT colcrypt.add_master_key('pkcs11-kwp', 'pkcs11-kwp', 'cmk');
SELECT colcrypt.add_master_key('kmip-encrypt', 'kmip-encrypt', 'bench', create_cmk => true);
SELECT key_ref AS kmip_uid FROM colcrypt.master_keys WHERE name = 'kmip-encrypt' \gset
SELECT colcrypt.add_master_key('kmip-get', 'kmip-get', :'kmip_uid');

-- N data keys under the file provider; each measurement moves or reads them.
SELECT colcrypt.create_key('k' || g, 'file') FROM generate_series(1, :n) g \g /dev/null
CREATE FUNCTION touch_all() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. current_setting('bench.n')::int LOOP
        EXECUTE format('SELECT $1::colcrypt.encrypted_text(%I)', 'k' || i) USING 'x'::text;
    END LOOP;
END $$;
SELECT set_config('bench.n', :'n', false) \g /dev/null

CREATE TEMP TABLE result (provider text, wrap_and_unwrap_ms float8, unwrap_ms float8);
CREATE FUNCTION measure(p text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; w float8; u float8; n int := current_setting('bench.n')::int;
BEGIN
    -- rotate_master_key: per version one wrap under the new CMK and one
    -- unwrap to check it (the old key comes from the cache).
    PERFORM touch_all();
    t0 := clock_timestamp();
    PERFORM colcrypt.rotate_master_key('file', p, (SELECT key_ref FROM colcrypt.master_keys WHERE name = p));
    w := extract(epoch FROM clock_timestamp() - t0) * 1000 / n;
    -- An empty cache: every first use unwraps through the provider.
    PERFORM colcrypt.key_cache_evict();
    t0 := clock_timestamp();
    PERFORM touch_all();
    u := extract(epoch FROM clock_timestamp() - t0) * 1000 / n;
    INSERT INTO result VALUES (p, w, u);
END $$;
SELECT measure('pkcs11-gcm') \g /dev/null
SELECT measure('pkcs11-kwp') \g /dev/null
SELECT measure('kmip-encrypt') \g /dev/null
SELECT measure('kmip-get') \g /dev/null
SELECT measure('vault') \g /dev/null
SELECT measure('aws-kms') \g /dev/null
SELECT measure('file') \g /dev/null
-- The same loop with every key cached: the cache hit path (plus the loop's own SQL).
SELECT touch_all() \g /dev/null
SELECT clock_timestamp() AS t0 \gset
SELECT touch_all() \g /dev/null
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000 / :n AS hit_ms \gset
SELECT provider, round(wrap_and_unwrap_ms::numeric, 3) AS "wrap+unwrap ms",
       round(unwrap_ms::numeric, 3) AS "first use (unwrap) ms",
       round((unwrap_ms - :hit_ms)::numeric, 3) AS "unwrap alone ms",
       round(:hit_ms::numeric, 4) AS "cached use ms (incl. SQL)"
  FROM result ORDER BY 1;
SELECT kms_calls, kms_failures, hits, misses FROM colcrypt.key_cache;
