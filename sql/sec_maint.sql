--
-- sec_maint: colcrypt's operations on user tables never run a table
-- owner's code with the caller's rights.  reencrypt and encrypt_column run
-- it as the table's owner under SECURITY_RESTRICTED_OPERATION (as VACUUM,
-- ANALYZE, CLUSTER, REINDEX do); counting values before a destroy and
-- verify read below the executor, where no user code runs at all.
--
SELECT colcrypt.create_key('mk', 'cmk');
SELECT colcrypt.grant_key('mk', 'sec_mallory', 'encrypt');
SET ROLE sec_mallory;
CREATE TABLE mal.log (who name, what text);
-- Each of these records who runs it and tries to make mallory superuser.
CREATE FUNCTION mal.trap(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.log VALUES (current_user, what);
    BEGIN
        EXECUTE 'ALTER ROLE sec_mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    RETURN true;
END$$;
CREATE FUNCTION mal.chk(int) RETURNS boolean LANGUAGE sql AS $$SELECT mal.trap('check')$$;
CREATE FUNCTION mal.idx(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS
    $$BEGIN PERFORM mal.trap('index'); RETURN $1; END$$;
CREATE FUNCTION mal.trg() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN PERFORM mal.trap('trigger'); RETURN NEW; END$$;
CREATE FUNCTION mal.pol(int) RETURNS boolean LANGUAGE sql AS $$SELECT mal.trap('policy')$$;
CREATE TABLE mal.t (id int CHECK (mal.chk(id)), s colcrypt.encrypted_text(mk));
CREATE INDEX ON mal.t (mal.idx(id));
CREATE TRIGGER t_trg BEFORE UPDATE ON mal.t FOR EACH ROW EXECUTE FUNCTION mal.trg();
ALTER TABLE mal.t ENABLE ROW LEVEL SECURITY;
CREATE POLICY t_pol ON mal.t USING (mal.pol(id));
INSERT INTO mal.t SELECT g, 'MARKER-mal-' || g FROM generate_series(1, 20) g;
DELETE FROM mal.log;
RESET ROLE;

-- A superuser rotates the key and re-encrypts mallory's table.
SELECT colcrypt.rotate_key('mk');
CALL colcrypt.reencrypt('mal.t');
SELECT colcrypt._key_version(s) AS version, count(*) FROM mal.t GROUP BY 1;
SELECT DISTINCT who, what FROM mal.log ORDER BY 1, 2;
SELECT rolsuper FROM pg_roles WHERE rolname = 'sec_mallory';
DELETE FROM mal.log;

-- encrypt_column by a superuser on mallory's table: the rewrite runs as
-- mallory; the table's new key belongs to the table's owner.
SET ROLE sec_mallory;
CREATE TABLE mal.t2 (id int CHECK (mal.chk(id)), p text);
CREATE INDEX ON mal.t2 (mal.idx(id));
INSERT INTO mal.t2 SELECT g, 'MARKER-plain-' || g FROM generate_series(1, 5) g;
DELETE FROM mal.log;
RESET ROLE;
SET colcrypt.default_master_key = 'cmk';
SELECT colcrypt.encrypt_column('mal.t2', 'p');
RESET colcrypt.default_master_key;
SELECT DISTINCT who, what FROM mal.log ORDER BY 1, 2;
SELECT rolsuper FROM pg_roles WHERE rolname = 'sec_mallory';
SELECT name, owner FROM colcrypt.keys WHERE name = 't2';
DELETE FROM mal.log;

-- Counting the values of a version before a destroy, and verify: no user
-- code runs, and the policy hides no row from the count.
SELECT colcrypt.rotate_key('mk');
SELECT try($$SELECT colcrypt.set_key_state('mk', 2, 'destroyed')$$);
SELECT * FROM colcrypt.verify('mal.t');
SELECT count(*) AS user_code_ran FROM mal.log;
SELECT rolsuper FROM pg_roles WHERE rolname = 'sec_mallory';

-- Only the table's owner (or a superuser) may run them.
SET ROLE sec_mallory;
\set VERBOSITY terse
CALL colcrypt.reencrypt('customers');
\set VERBOSITY default
SELECT attempt($q$SELECT colcrypt._reencrypt_count('customers', true)$q$);
SELECT attempt($q$SELECT colcrypt._reencrypt_batch('customers', 0, 100, 'x', 0, 0)$q$);
SELECT attempt($q$SELECT * FROM colcrypt.verify('customers')$q$);
SELECT attempt($q$SELECT * FROM colcrypt._version_usage(1, 1)$q$);
SELECT attempt($q$SELECT colcrypt.encrypt_column('customers', 'name')$q$);
RESET ROLE;

-- reencrypt of a table whose row level security applies to its owner
-- (FORCE) fails loudly rather than skipping hidden rows.
ALTER TABLE mal.t FORCE ROW LEVEL SECURITY;
\set VERBOSITY terse
CALL colcrypt.reencrypt('mal.t');
\set VERBOSITY default
ALTER TABLE mal.t NO FORCE ROW LEVEL SECURITY;
CALL colcrypt.reencrypt('mal.t');
SELECT colcrypt._key_version(s) AS version, count(*) FROM mal.t GROUP BY 1;
SELECT rolsuper FROM pg_roles WHERE rolname = 'sec_mallory';
