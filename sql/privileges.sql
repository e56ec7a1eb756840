--
-- privileges: key owners, grants, and roles that must never see plaintext
--
CREATE ROLE cc_owner;
CREATE ROLE cc_app;
CREATE ROLE cc_writer;
CREATE ROLE cc_reader;
CREATE ROLE cc_member IN ROLE cc_app;
GRANT USAGE ON SCHEMA colcrypt TO cc_owner;
GRANT EXECUTE ON FUNCTION colcrypt.create_key(text, text) TO cc_owner;
-- EXECUTE is not enough: creating a data key needs usage on its master key.
SET ROLE cc_owner;
SELECT colcrypt.create_key('owned', 'cmk');
RESET ROLE;
SELECT colcrypt.grant_master_key('cmk', 'cc_owner');

-- A key created by cc_owner belongs to it.
SET ROLE cc_owner;
SELECT colcrypt.create_key('owned', 'cmk');
RESET ROLE;
SELECT name, owner FROM colcrypt.keys WHERE name = 'owned';

CREATE TABLE vault (id integer, v colcrypt.encrypted_text(owned));
GRANT SELECT, INSERT, UPDATE ON vault TO cc_owner, cc_app, cc_writer, cc_reader;
SET ROLE cc_owner;
INSERT INTO vault VALUES (1, 'owner wrote this');
SELECT id, v FROM vault;

-- Only the owner (or a superuser) grants.
SELECT colcrypt.grant_key('owned', 'cc_app', 'all');
SELECT colcrypt.grant_key('owned', 'cc_writer', 'encrypt');
RESET ROLE;
SET ROLE cc_app;
SELECT colcrypt.grant_key('owned', 'cc_reader', 'decrypt');
RESET ROLE;
SELECT name, grantee, privilege FROM colcrypt.key_grants ORDER BY grantee::text, privilege;

-- cc_app: encrypt and decrypt, like the owner.
SET ROLE cc_app;
INSERT INTO vault VALUES (2, 'app wrote this');
SELECT id, v FROM vault ORDER BY id;
RESET ROLE;

-- Membership in a role with the grant is enough.
SET ROLE cc_member;
SELECT id, v FROM vault WHERE id = 1;
RESET ROLE;

-- cc_writer: may write, never reads plaintext back.
SET ROLE cc_writer;
INSERT INTO vault VALUES (3, 'writer wrote this');
SELECT id, format('%s', v) LIKE 'colcrypt:%' AS sees_ciphertext FROM vault ORDER BY id;
\set VERBOSITY terse
SELECT v::text FROM vault WHERE id = 3;
\echo SQLSTATE :SQLSTATE
SELECT id FROM vault WHERE v = 'writer wrote this';
\echo SQLSTATE :SQLSTATE
SELECT id FROM vault WHERE v = 'x'::text;
\echo SQLSTATE :SQLSTATE
SELECT upper(v) FROM vault;
\echo SQLSTATE :SQLSTATE
SELECT length(v) FROM vault;
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default
RESET ROLE;

-- cc_reader: no grant at all.  Output is the ciphertext; everything that
-- needs plaintext is refused, so there is no equality or ordering oracle.
SET ROLE cc_reader;
SELECT id, format('%s', v) LIKE 'colcrypt:%' AS sees_ciphertext FROM vault ORDER BY id;
\set VERBOSITY default
SELECT id FROM vault WHERE v = 'owner wrote this';
\echo SQLSTATE :SQLSTATE
\set VERBOSITY terse
SELECT id FROM vault WHERE v <> 'owner wrote this';
\echo SQLSTATE :SQLSTATE
SELECT id FROM vault WHERE 'owner wrote this'::text = v;
\echo SQLSTATE :SQLSTATE
SELECT a.id FROM vault a JOIN vault b ON a.v = b.v;
\echo SQLSTATE :SQLSTATE
SELECT v || '' FROM vault;
\echo SQLSTATE :SQLSTATE
INSERT INTO vault VALUES (4, 'reader tries to write');
\echo SQLSTATE :SQLSTATE
UPDATE vault SET v = 'reader tries to update' WHERE id = 1;
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.grant_key('owned', 'cc_reader', 'all');
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default
-- What it may do: move ciphertext it sees back in, unchanged.
SELECT colcrypt.ciphertext(v) AS ct FROM vault WHERE id = 1 \gset
UPDATE vault SET v = :'ct' WHERE id = 2;
RESET ROLE;
SELECT id, v FROM vault ORDER BY id;

-- A writer and unique indexes.  A deterministic one (det_ops) compares
-- ciphertext bytes: the writer's inserts work, a duplicate fails with
-- 23505, and the detail shows the ciphertext, never the plaintext.  A
-- default-class (plaintext-order) index compares plaintexts, which takes
-- the decrypt privilege: the writer's insert is refused with 42501 (else
-- inserting would tell a writer the equality and order of values it may
-- not read).
CREATE TABLE wuniq (id integer, d colcrypt.encrypted_text(owned, deterministic), p colcrypt.encrypted_text(owned));
CREATE UNIQUE INDEX wuniq_d ON wuniq (d colcrypt.encrypted_text_det_ops);
GRANT SELECT, INSERT ON wuniq TO cc_writer;
INSERT INTO wuniq VALUES (1, 'taken', 'x');
SET ROLE cc_writer;
INSERT INTO wuniq VALUES (2, 'free', 'y');
DO $$
DECLARE st text; det text;
BEGIN
    INSERT INTO wuniq VALUES (3, 'taken', 'z');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, det = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'SQLSTATE %, detail shows ciphertext: %, plaintext: %',
        st, det ~ '^Key \(d\)=\(colcrypt:[A-Za-z0-9+/=]+\) already exists\.$', strpos(det, 'taken') > 0;
END $$;
RESET ROLE;
CREATE UNIQUE INDEX wuniq_p ON wuniq (p colcrypt.encrypted_text_ord_ops);
SET ROLE cc_writer;
\set VERBOSITY terse
INSERT INTO wuniq VALUES (4, 'other', 'w');
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default
RESET ROLE;
SELECT id, d, p FROM wuniq ORDER BY id;
DROP TABLE wuniq;

-- Revoking takes effect at once.
SELECT colcrypt.revoke_key('owned', 'cc_app', 'decrypt');
SET ROLE cc_app;
SELECT id, format('%s', v) LIKE 'colcrypt:%' AS sees_ciphertext FROM vault WHERE id = 1;
INSERT INTO vault VALUES (5, 'app can still write');
RESET ROLE;
SELECT colcrypt.revoke_key('owned', 'cc_app', 'all');
SET ROLE cc_app;
\set VERBOSITY terse
INSERT INTO vault VALUES (6, 'app cannot write any more');
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default
RESET ROLE;

-- Grant argument errors.
\set VERBOSITY terse
SELECT colcrypt.grant_key('owned', 'cc_app', 'read');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.grant_key('nosuchkey', 'cc_app', 'all');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.grant_key('owned', 'nosuchrole', 'all');
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default

-- Key management functions are not for everyone.
SET ROLE cc_reader;
\set VERBOSITY terse
SELECT colcrypt.create_key('mine', 'cmk');
\echo SQLSTATE :SQLSTATE
SELECT colcrypt.add_provider('p', 'file', '{"path": "/tmp/x"}');
\echo SQLSTATE :SQLSTATE
SELECT * FROM colcrypt.data_key_version;
\echo SQLSTATE :SQLSTATE
SELECT * FROM colcrypt.provider;
\echo SQLSTATE :SQLSTATE
\set VERBOSITY default
SELECT name, version, state FROM colcrypt.keys WHERE name = 'owned';
RESET ROLE;
