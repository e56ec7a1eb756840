-- colcrypt demo: run by scripts/demo.sh against a throwaway cluster.
\set ON_ERROR_STOP 0
\set ECHO queries
\pset footer off
\set VERBOSITY default

\echo
\echo '################################################################################'
\echo '# 1. Keys.  A customer master key (CMK) lives in a key provider outside the'
\echo '#    database: a keyring file for development (with --hsm: a SoftHSM2 token;'
\echo '#    with --vault it moves into Vault Transit later).'
\echo '#    A data key (DEK) per table'
\echo '#    is generated in the database and stored only wrapped by the CMK.'
\echo '################################################################################'
CREATE EXTENSION colcrypt;
SELECT colcrypt.add_provider('dev', 'file', jsonb_build_object('path', :'keyring'));
\if :{?hsm}
-- scripts/demo.sh --hsm: the CMK is an AES-256 key inside a SoftHSM2 token,
-- created sensitive and never extractable; the PIN is read from a 0600 file.
\set pin_file :hsm '/pin'
SELECT colcrypt.add_provider('hsm', 'pkcs11', jsonb_build_object(
    'module', '/usr/lib/softhsm/libsofthsm2.so', 'token_label', 'colcrypt', 'pin_file', :'pin_file'));
SELECT ok, regexp_replace(detail, 'serial [0-9a-f]+, slot [0-9]+', 'serial ..., slot ...') AS detail
  FROM colcrypt.check_provider('hsm');
SELECT colcrypt.add_master_key('main', 'hsm', 'cmk');
\else
SELECT colcrypt.add_master_key('main', 'dev', 'demo-cmk');
\endif
SELECT name, provider, kind, key_ref FROM colcrypt.master_keys;
SELECT colcrypt.create_key('customers', 'main');
SELECT name, version, state, master_key, owner FROM colcrypt.keys;
-- What the catalog holds: the DEK wrapped by the CMK (AES-256-GCM), never the key.
SELECT key_id, version, length(wrapped_key) AS wrapped_bytes, wrap_meta FROM colcrypt.data_key_version;

\echo
\echo '################################################################################'
\echo '# 2. An encrypted table.  The type modifier names the data key.'
\echo '################################################################################'
CREATE TABLE customers (
    id      integer PRIMARY KEY,
    name    text,                                               -- plain, for contrast
    email   colcrypt.encrypted_text(customers, deterministic),  -- equality lookups
    ssn     colcrypt.encrypted_text(customers),                 -- randomized
    salary  colcrypt.encrypted_numeric(customers),
    born    colcrypt.encrypted_date(customers),
    photo   colcrypt.encrypted_bytea(customers)
);
-- An index on the deterministic column's ciphertext: lookups decrypt nothing.
CREATE INDEX customers_email ON customers (email colcrypt.encrypted_text_det_ops);

\echo
\echo '################################################################################'
\echo '# 3. Applications write plaintext, unchanged: INSERT and COPY.'
\echo '################################################################################'
INSERT INTO customers VALUES
    (1, 'Alice Martin', 'alice@example.com', '123-45-6789', 85000, '1990-04-01', '\x89504e47'),
    (2, 'Bob Chen',     'bob@example.com',   '987-65-4321', 72500.50, '1985-11-23', NULL);
COPY customers (id, name, email, ssn, salary, born) FROM stdin WITH (FORMAT csv);
3,Chloé Dubois,chloe@example.fr,555-12-3456,91000,1979-07-14
4,Dmitri Ivanov,dmitri@example.ru,222-33-4444,64000,2001-02-28
\.

\echo
\echo '################################################################################'
\echo '# 4. ...and read plaintext, unchanged: equality, functions, casts just work.'
\echo '################################################################################'
SELECT id, name, email, ssn, salary, born, photo FROM customers ORDER BY id;
SELECT id, upper(email) AS email_upper FROM customers WHERE ssn = '987-65-4321';
SELECT name, salary, salary * 1.1 AS after_raise FROM customers WHERE born < '1990-12-31' ORDER BY salary DESC;
SELECT count(*) AS example_com, round(avg(salary)) AS avg_salary FROM customers WHERE email LIKE '%@example.com';
-- The deterministic column's index serves the lookup:
EXPLAIN (COSTS OFF) SELECT name FROM customers WHERE email = 'chloe@example.fr';
SELECT name FROM customers WHERE email = 'chloe@example.fr';

\echo
\echo '################################################################################'
\echo '# 5. What is stored is ciphertext: AES-256-GCM, a fresh nonce per value,'
\echo '#    bound to its key id and version.  colcrypt.output = ciphertext shows the'
\echo '#    stored form (what pg_dump writes in that mode).'
\echo '################################################################################'
SET colcrypt.output = ciphertext;
SELECT id, name, email, ssn, salary FROM customers WHERE id <= 2 ORDER BY id;
RESET colcrypt.output;
SELECT id, colcrypt.inspect(ssn) AS envelope FROM customers WHERE id = 1;
SELECT id, colcrypt.inspect(email)->>'algorithm' AS email_algorithm FROM customers WHERE id = 1;
\echo
\echo '-- On disk: the table file holds the plain names, and not one email or SSN.'
CHECKPOINT;
\set ECHO none
SELECT current_setting('data_directory') || '/' || pg_relation_filepath('customers') AS relfile \gset
\setenv RELFILE :relfile
\echo 'occurrences of "Alice Martin" in the table file (plain column):'
\! grep -a -o "Alice Martin" "$RELFILE" | wc -l
\echo 'occurrences of "alice@example.com" in the table file (encrypted column):'
\! grep -a -o "alice@example.com" "$RELFILE" | wc -l
\echo 'occurrences of "123-45-6789" in the table file (encrypted column):'
\! grep -a -o "123-45-6789" "$RELFILE" | wc -l
\set ECHO queries

\echo
\echo '################################################################################'
\echo '# 6. Privileges on keys.  A role without decrypt never gets plaintext: output'
\echo '#    is ciphertext, and anything that needs plaintext is refused (no oracle).'
\echo '################################################################################'
CREATE ROLE analyst;
CREATE ROLE support;
GRANT SELECT ON customers TO analyst, support;
SELECT colcrypt.grant_key('customers', 'support', 'decrypt');
SET ROLE analyst;
SELECT id, name, email FROM customers WHERE id = 1;
SELECT id FROM customers WHERE ssn = '123-45-6789';
RESET ROLE;
CREATE SCHEMA support_api AUTHORIZATION support;
GRANT USAGE ON SCHEMA support_api TO analyst;
SET ROLE support;
SELECT id, name, email FROM customers WHERE id = 1;
-- support publishes a masking function that runs with its own rights:
CREATE FUNCTION support_api.ssn_last4(v colcrypt.encrypted_text) RETURNS text
    SECURITY DEFINER LANGUAGE sql AS $$SELECT '***-**-' || right(v::text, 4)$$;
RESET ROLE;
\echo '-- The analyst may use it, but the values it opened (a whole batch of rows)'
\echo '-- are checked again for whoever asks next: nothing else reaches the analyst.'
SET ROLE analyst;
SELECT id, support_api.ssn_last4(ssn) FROM customers ORDER BY id;
SELECT id, ssn::text FROM customers WHERE support_api.ssn_last4(ssn) IS NOT NULL;
RESET ROLE;
\echo '-- An index in plaintext order is made only when asked for by name, and only'
\echo '-- roles that may decrypt can scan it (no ORDER BY oracle):'
SELECT colcrypt.create_key('scores', 'main') AS scores_key \gset
CREATE TABLE scores (id integer, score colcrypt.encrypted_int4(scores));
INSERT INTO scores SELECT g, (g * 37) % 100 FROM generate_series(1, 20) g;
GRANT SELECT ON scores TO analyst;
CREATE INDEX ON scores (score);
CREATE INDEX scores_score ON scores (score colcrypt.encrypted_int4_ord_ops);
SET ROLE analyst;
SET enable_sort = off;
SELECT id FROM scores ORDER BY score LIMIT 3;
RESET enable_sort;
RESET ROLE;

\echo
\echo '################################################################################'
\echo '# 7. Tampering is detected: one flipped bit and the value is refused.'
\echo '################################################################################'
\set ECHO none
SELECT colcrypt.ciphertext(ssn) AS ct FROM customers WHERE id = 4 \gset
SELECT 'colcrypt:' || translate(encode(set_byte(decode(substr(:'ct', 10), 'base64'), 30,
       get_byte(decode(substr(:'ct', 10), 'base64'), 30) # 1), 'base64'), E'\n', '') AS bad \gset
\echo '-- Writing back Dmitri''s SSN ciphertext with one bit flipped (in ciphertext mode):'
SET colcrypt.output = ciphertext;
\set ECHO queries
UPDATE customers SET ssn = :'bad' WHERE id = 4;
RESET colcrypt.output;
SELECT id, ssn FROM customers WHERE id = 4;
\echo '-- colcrypt.verify finds such values, with where they are:'
SELECT * FROM colcrypt.verify('customers');

\echo
\echo '################################################################################'
\echo '# 8. One provider call per key, however many connections: the unwrapped key'
\echo '#    lives in a shared-memory cache (excluded from core dumps).'
\echo '################################################################################'
SELECT * FROM colcrypt.key_cache;
\echo '-- 20 new connections, each reading an encrypted value:'
\! for i in $(seq 20); do psql -X -q -At -c "SELECT ssn FROM customers WHERE id = 1" >/dev/null; done
SELECT entries, hits, misses, kms_calls FROM colcrypt.key_cache;
\echo '-- kms_calls did not move: every new backend was served by the shared cache.'

\echo
\echo '################################################################################'
\echo '# 9. Data key rotation and online re-encryption.  rotate_key adds an active'
\echo '#    version; the old one still decrypts.  reencrypt moves the old values in'
\echo '#    batches that each commit, beside the application, reporting progress.'
\echo '################################################################################'
SELECT colcrypt.create_key('orders', 'main');
CREATE TABLE orders (id integer PRIMARY KEY, card colcrypt.encrypted_text(orders),
                     amount colcrypt.encrypted_numeric(orders));
INSERT INTO orders SELECT g, '4111-0000-0000-' || lpad(g::text, 4, '0'), g * 1.25
  FROM generate_series(1, 60000) g;
SELECT md5(string_agg(card || amount, ',' ORDER BY id)) AS before FROM orders \gset
SELECT colcrypt.rotate_key('orders');
SELECT name, version, state FROM colcrypt.keys WHERE name = 'orders' ORDER BY version;
INSERT INTO orders VALUES (60001, '4111-9999-9999-9999', 10);
SELECT colcrypt._key_version(card) AS version, count(*) FROM orders GROUP BY 1 ORDER BY 1;
CALL colcrypt.reencrypt('orders', 10000);
SELECT colcrypt._key_version(card) AS version, count(*) FROM orders GROUP BY 1 ORDER BY 1;
DELETE FROM orders WHERE id = 60001;
SELECT md5(string_agg(card || amount, ',' ORDER BY id)) = :'before' AS same_plaintext FROM orders;
-- No value uses version 1 any more: it can be destroyed without force.
SELECT colcrypt.set_key_state('orders', 1, 'destroyed');
SELECT name, version, state FROM colcrypt.keys WHERE name = 'orders' ORDER BY version;

\echo
\echo '################################################################################'
\echo '# 10. Crypto-shredding.  Destroying a key version in use needs force and says'
\echo '#     how many values it shreds; after commit every copy of its wrapped key in'
\echo '#     the catalog files is zeroed, and the values can never be read again.'
\echo '################################################################################'
SELECT colcrypt.create_key('sessions', 'main');
CREATE TABLE sessions (id integer, token colcrypt.encrypted_text(sessions));
INSERT INTO sessions SELECT g, 'token-' || g FROM generate_series(1, 1000) g;
SELECT colcrypt.rotate_key('sessions');
SELECT colcrypt.set_key_state('sessions', 1, 'destroyed');
SELECT colcrypt.set_key_state('sessions', 1, 'destroyed', force => true);
SELECT token FROM sessions WHERE id = 1;
SELECT colcrypt.audit_flush();   -- waits for the background worker's shredding too
SELECT version, k.state, wrapped_key IS NULL AS wrapped_key_gone, k.shredded_at IS NOT NULL AS shredded
  FROM colcrypt.keys k JOIN colcrypt.data_key_version v USING (key_id, version)
 WHERE k.name = 'sessions' ORDER BY version;
-- A compromised version still decrypts, loudly, and encrypts nothing.
SELECT colcrypt.set_key_state('customers', 1, 'compromised');
SELECT name, ssn FROM customers WHERE id = 1;
SELECT colcrypt.rotate_key('customers');

\echo
\echo '################################################################################'
\echo '# 11. Master key rotation: every data key re-wrapped under a new CMK version'
\echo '#     in one transaction.  No table file is touched.'
\echo '################################################################################'
SELECT pg_relation_filenode('orders') AS filenode \gset
SELECT DISTINCT wrap_meta FROM colcrypt.data_key_version WHERE wrapped_key IS NOT NULL;
SELECT colcrypt.rotate_master_key('main') AS rewrapped_versions;
SELECT DISTINCT wrap_meta FROM colcrypt.data_key_version WHERE wrapped_key IS NOT NULL;
SELECT pg_relation_filenode('orders') = :filenode AS same_table_file, count(*) AS readable
  FROM orders WHERE card LIKE '4111-%';
\if :{?hsm}
-- The CMK in the HSM was a new key made inside the token; now move the
-- master key out to the keyring file and back into the HSM: every time,
-- only the wrapped data keys change, never the table.
SELECT name, provider, regexp_replace(key_ref, '@.*', '@<timestamp>') AS key_ref FROM colcrypt.master_keys;
SELECT colcrypt.rotate_master_key('main', 'dev', 'moved-from-hsm') AS rewrapped_versions;
SELECT colcrypt.rotate_master_key('main', 'hsm', 'cmk') AS rewrapped_versions;
SELECT colcrypt.key_cache_evict() AS cached_keys_wiped;
SELECT pg_relation_filenode('orders') = :filenode AS same_table_file, count(*) AS readable_through_the_hsm
  FROM orders WHERE card LIKE '4111-%';
\endif
\if :{?vault}
-- scripts/demo.sh --vault: move the master key into Vault's Transit engine
-- (an emulator of its API here).  The Transit key is derived, so each data
-- key is bound to its identity as the derivation context; rotating the
-- master key then rotates the Transit key and Vault re-wraps every data key
-- itself (rewrap): the data keys never travel.
\set vault_url 'https://127.0.0.1:' :vault_port
\set vault_ca :vault '/certs/ca.crt'
SELECT colcrypt.add_provider('vault', 'vault', jsonb_build_object('url', :'vault_url', 'token', 'root-token', 'ca_file', :'vault_ca'));
SELECT name, kind, options - 'url' - 'ca_file' AS options FROM colcrypt.providers WHERE name = 'vault';
SELECT ok, regexp_replace(detail, '127.0.0.1:[0-9]+', '127.0.0.1:<port>') AS detail FROM colcrypt.check_provider('vault');
SET client_min_messages = warning;
SELECT colcrypt.add_master_key('vault_staging', 'vault', 'colcrypt-demo', create_cmk => true);
SELECT colcrypt.drop_master_key('vault_staging');
RESET client_min_messages;
SELECT colcrypt.rotate_master_key('main', 'vault', 'colcrypt-demo') AS rewrapped_versions;
SELECT colcrypt.rotate_master_key('main') AS rewrapped_by_vault;
SELECT name, version, state, cmk_version FROM colcrypt.keys ORDER BY name, version;
SELECT colcrypt.key_cache_evict() AS cached_keys_wiped;
SELECT count(*) AS readable_through_vault FROM orders WHERE card LIKE '4111-%';
\endif

\echo
\echo '################################################################################'
\echo '# 12. Encrypting an existing plaintext column in place.'
\echo '################################################################################'
CREATE TABLE legacy_users (id integer PRIMARY KEY, email varchar(200), note text);
INSERT INTO legacy_users SELECT g, 'user' || g || '@example.org', 'note ' || g FROM generate_series(1, 500) g;
SELECT colcrypt.encrypt_column('legacy_users', 'email', deterministic => true);
\d legacy_users
SELECT id, email FROM legacy_users WHERE email = 'user42@example.org';

\echo
\echo '################################################################################'
\echo '# 13. Key management nobody can hijack, lengths nobody can read.  Providers'
\echo '#     are a superuser''s; master keys have owners and usage grants; EXECUTE'
\echo '#     on the functions alone hands out nothing.  Padded columns show a'
\echo '#     length bucket, not the length.'
\echo '################################################################################'
CREATE ROLE keyowner;
GRANT USAGE ON SCHEMA colcrypt TO keyowner;
GRANT EXECUTE ON FUNCTION colcrypt.add_provider(text, text, jsonb), colcrypt.check_provider(text),
    colcrypt.rotate_master_key(text, text, text), colcrypt.create_key(text, text) TO keyowner;
SET ROLE keyowner;
SELECT colcrypt.add_provider('evil', 'vault', '{"url": "http://127.0.0.1:58599", "token": "x"}');
SELECT colcrypt.rotate_master_key('main');
SELECT * FROM colcrypt.check_provider('dev');
SELECT colcrypt.create_key('keyowner_key', 'main');
RESET ROLE;
SELECT colcrypt.grant_master_key('main', 'keyowner');
SET ROLE keyowner;
SELECT colcrypt.create_key('keyowner_key', 'main');
RESET ROLE;
SELECT name, owner, grantee, privilege FROM colcrypt.master_keys m
  JOIN colcrypt.master_key_grants g USING (name);
\echo '-- keyowner is now named in the key catalog: DROP ROLE refuses until'
\echo '-- REASSIGN OWNED and DROP OWNED have dealt with it.'
DROP ROLE keyowner;
REASSIGN OWNED BY keyowner TO CURRENT_USER;
DROP OWNED BY keyowner;
DROP ROLE keyowner;
CREATE TABLE lengths (plain_len integer,
                      exact  colcrypt.encrypted_text(customers),
                      padded colcrypt.encrypted_text(customers, padded));
INSERT INTO lengths SELECT length(s), s, s FROM (VALUES ('a'), ('123-45-6789'), ('Alice Example'), (repeat('x', 40))) v(s);
SELECT plain_len, pg_column_size(exact) AS exact_bytes, pg_column_size(padded) AS padded_bytes,
       padded = exact AS same_value FROM lengths;

\echo
\echo '################################################################################'
\echo '# 14. The audit log: every key management action, failures included, denied'
\echo '#     decryptions and uses of a compromised key.  Never a secret.'
\echo '################################################################################'
SELECT colcrypt.audit_flush();
SELECT at::time(0) AS at, role_name, action, object_type, object_name AS object, key_version AS v,
       outcome, occurrences AS n, left(detail, 60) AS detail
  FROM colcrypt.audit_log WHERE action <> 'rewrap' ORDER BY id;
SELECT count(*) AS rewrap_events FROM colcrypt.audit_log WHERE action = 'rewrap';
