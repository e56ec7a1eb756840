--
-- sec_keymgmt: key management that cannot be hijacked.  A role granted
-- EXECUTE on key management functions gets no power over providers and
-- master keys it was not given: no provider of its own (a server it runs
-- would receive every data key), no re-wrap or move of another's master
-- key, no probing of providers it may not use.  And roles named in the key
-- catalog cannot be dropped from under it.
--
\getenv abs_builddir PG_ABS_BUILDDIR
\set keyring1 :abs_builddir '/tmp_regress/keymgmt1.keyring'
\set keyring2 :abs_builddir '/tmp_regress/keymgmt2.keyring'
SET client_min_messages = warning;
SELECT colcrypt.add_provider('km_dev', 'file', jsonb_build_object('path', :'keyring1'));
SELECT colcrypt.add_provider('km_other', 'file', jsonb_build_object('path', :'keyring2'));
SELECT colcrypt.add_master_key('km_base', 'km_dev', 'base-cmk');
RESET client_min_messages;

CREATE ROLE km_owner;
CREATE ROLE km_clerk;
GRANT USAGE ON SCHEMA colcrypt TO km_owner, km_clerk;
GRANT EXECUTE ON FUNCTION colcrypt.add_provider(text, text, jsonb), colcrypt.alter_provider(text, jsonb),
    colcrypt.drop_provider(text), colcrypt.check_provider(text),
    colcrypt.add_master_key(text, text, text, boolean), colcrypt.drop_master_key(text),
    colcrypt.rotate_master_key(text, text, text), colcrypt.create_key(text, text),
    colcrypt.grant_provider(text, regrole, text), colcrypt.revoke_provider(text, regrole, text),
    colcrypt.grant_master_key(text, regrole, text), colcrypt.revoke_master_key(text, regrole, text)
    TO km_owner, km_clerk;

-- EXECUTE on everything, no object privilege: every path refused.
SET ROLE km_owner;
SELECT try($$SELECT colcrypt.add_provider('evil', 'vault', '{"url": "http://127.0.0.1:58599", "token": "x"}')$$);
SELECT try($$SELECT colcrypt.add_provider('evil', 'file', '{"path": "/tmp/evil.keyring"}')$$);
SELECT try($$SELECT colcrypt.alter_provider('km_dev', '{"path": "/tmp/evil.keyring"}')$$);
SELECT try($$SELECT colcrypt.drop_provider('km_other')$$);
SELECT try($$SELECT * FROM colcrypt.check_provider('km_dev')$$);
SELECT try($$SELECT colcrypt.grant_provider('km_dev', 'km_owner')$$);
SELECT try($$SELECT colcrypt.rotate_master_key('km_base')$$);
SELECT try($$SELECT colcrypt.rotate_master_key('km_base', 'km_other', 'stolen')$$);
SELECT try($$SELECT colcrypt.drop_master_key('km_base')$$);
SELECT try($$SELECT colcrypt.grant_master_key('km_base', 'km_owner')$$);
SELECT try($$SELECT colcrypt.add_master_key('mine', 'km_dev', 'km-cmk')$$);
SELECT try($$SELECT colcrypt.create_key('km_key', 'km_base')$$);
RESET ROLE;
-- Nothing was created or moved.
SELECT name, provider, key_ref FROM colcrypt.master_keys WHERE name = 'km_base';
SELECT count(*) FROM colcrypt.providers WHERE name = 'evil';

-- Usage on a provider: km_owner adds a master key there, which it owns.
SELECT colcrypt.grant_provider('km_dev', 'km_owner');
SELECT name, grantee, privilege, granted_by FROM colcrypt.provider_grants WHERE name LIKE 'km%' ORDER BY name, grantee::text;
SET ROLE km_owner;
SELECT ok FROM colcrypt.check_provider('km_dev');
SELECT colcrypt.add_master_key('km_mk', 'km_dev', 'km-cmk');
SELECT colcrypt.create_key('km_key', 'km_mk');
SELECT name, provider, owner FROM colcrypt.master_keys WHERE name = 'km_mk';
-- Its own master key: rotated in place, but not moved to a provider it
-- may not use.
SELECT colcrypt.rotate_master_key('km_mk');
SELECT try($$SELECT colcrypt.rotate_master_key('km_mk', 'km_other', 'moved')$$);
-- Still not another's master key, nor grants on it.
SELECT try($$SELECT colcrypt.rotate_master_key('km_base')$$);
SELECT try($$SELECT colcrypt.grant_master_key('km_base', 'km_clerk')$$);
-- km_clerk may not create keys under km_mk until its owner grants usage.
SET ROLE km_clerk;
SELECT try($$SELECT colcrypt.create_key('clerk_key', 'km_mk')$$);
SET ROLE km_owner;
SELECT colcrypt.grant_master_key('km_mk', 'km_clerk');
SET ROLE km_clerk;
SELECT colcrypt.create_key('clerk_key', 'km_mk');
-- ...but usage is not ownership.
SELECT try($$SELECT colcrypt.rotate_master_key('km_mk')$$);
SELECT try($$SELECT colcrypt.drop_master_key('km_mk')$$);
SELECT try($$SELECT colcrypt.grant_master_key('km_mk', 'km_clerk')$$);
RESET ROLE;
SELECT name, grantee, privilege, granted_by FROM colcrypt.master_key_grants WHERE name LIKE 'km%' ORDER BY name, grantee::text;

-- Moving a master key needs usage on both providers.
SELECT colcrypt.grant_provider('km_other', 'km_owner');
SET ROLE km_owner;
SELECT colcrypt.rotate_master_key('km_mk', 'km_other', 'moved');
SELECT provider, key_ref FROM colcrypt.master_keys WHERE name = 'km_mk';
RESET ROLE;
-- Usage on the provider it is at revoked: no more rotations.
SELECT colcrypt.revoke_provider('km_other', 'km_owner');
SET ROLE km_owner;
SELECT try($$SELECT colcrypt.rotate_master_key('km_mk')$$);
SELECT try($$SELECT colcrypt.rotate_master_key('km_mk', 'km_dev', 'back')$$);
RESET ROLE;
-- A superuser may do all of it.
SELECT colcrypt.rotate_master_key('km_mk', 'km_dev', 'km-cmk');
SELECT try($$SELECT colcrypt.grant_provider('km_dev', 'km_clerk', 'decrypt')$$);
SELECT try($$SELECT colcrypt.grant_master_key('nosuch', 'km_clerk')$$);

-- The refusals are in the audit log, as denied.
SELECT colcrypt.audit_flush();
SELECT role_name, action, object_type, object_name, outcome
  FROM colcrypt.audit_log WHERE role_name IN ('km_owner', 'km_clerk') AND outcome = 'denied'
 ORDER BY id;

------------------------------------------------------------------------
-- Roles named in the key catalog.
------------------------------------------------------------------------
CREATE ROLE km_temp;
SELECT colcrypt.grant_key('km_key', 'km_temp', 'decrypt');
SELECT colcrypt.grant_master_key('km_mk', 'km_temp');
-- Recorded as PostgreSQL records ACL members.
SELECT count(*) FROM pg_shdepend
 WHERE refobjid = 'km_temp'::regrole AND classid = 'pg_extension'::regclass AND deptype = 'a';
SELECT try('DROP ROLE km_temp');
-- DROP OWNED takes its grants; then it can go, and leaves no number behind.
DROP OWNED BY km_temp;
SELECT count(*) FROM pg_shdepend WHERE refobjid = 'km_temp'::regrole;
DROP ROLE km_temp;
SELECT count(*) FROM colcrypt.key_grants WHERE grantee::text ~ '^[0-9]+$';

-- From a database without colcrypt, PostgreSQL's own check refuses.
CREATE ROLE km_far;
SELECT colcrypt.grant_key('km_key', 'km_far', 'decrypt');
\set regressdb :DBNAME
\c postgres
DROP ROLE km_far;
\c :regressdb
SELECT colcrypt.revoke_key('km_key', 'km_far', 'decrypt');
DROP ROLE km_far;

-- An owner: DROP OWNED refuses (it would destroy data), REASSIGN OWNED
-- moves the keys.
SELECT try('DROP ROLE km_owner');
SELECT try('DROP OWNED BY km_owner');
CREATE ROLE km_heir;
REASSIGN OWNED BY km_owner TO km_heir;
SELECT name, owner FROM colcrypt.master_keys WHERE name = 'km_mk';
SELECT DISTINCT name, owner FROM colcrypt.keys WHERE name = 'km_key';
-- The new owner has the owner's rights on them.
SET ROLE km_heir;
SELECT colcrypt.grant_key('km_key', 'km_clerk', 'encrypt');
RESET ROLE;
DROP OWNED BY km_owner;
DROP ROLE km_owner;
-- Through a rename, grants and ownership follow the role (they are OIDs).
ALTER ROLE km_heir RENAME TO km_heir2;
SELECT name, owner FROM colcrypt.master_keys WHERE name = 'km_mk';
