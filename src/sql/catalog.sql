-- colcrypt install script, part 1: preload check, catalog, key management
-- API and views.  Built into colcrypt--1.0.sql by src/sql/gen.sh.

\echo Use "CREATE EXTENSION colcrypt" to load this file. \quit

-- Fail early and clearly on a server that did not preload the library.
CREATE FUNCTION colcrypt._require_preload() RETURNS void
    AS 'MODULE_PATHNAME', 'colcrypt_require_preload' LANGUAGE C STRICT;
SELECT colcrypt._require_preload();

------------------------------------------------------------------------
-- Catalog.  Only wrapped keys are stored.  PUBLIC has no access to the
-- tables; the views below show what may be shown.
------------------------------------------------------------------------

CREATE TABLE colcrypt.provider (
    name        text PRIMARY KEY,
    kind        text NOT NULL
                CHECK (kind IN ('file', 'pkcs11', 'kmip', 'vault', 'aws-kms')),
    options     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  name NOT NULL,
    CHECK (length(name) BETWEEN 1 AND 63)
);
-- Only superusers add, alter or drop providers: their options name files
-- the server reads, libraries it loads and hosts it connects to.  Others
-- use a provider (add master keys at it, check it) with the usage privilege.
CREATE TABLE colcrypt.provider_grant (
    provider    text NOT NULL REFERENCES colcrypt.provider (name),
    grantee     regrole NOT NULL,
    privilege   text NOT NULL CHECK (privilege = 'usage'),
    granted_by  name NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, grantee, privilege)
);
COMMENT ON TABLE colcrypt.provider_grant IS 'Usage privileges on key providers: who may add master keys at them and check them';
COMMENT ON TABLE colcrypt.provider IS 'Key providers: connections to a KMS, HSM or keyring file holding customer master keys';

CREATE TABLE colcrypt.master_key (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
    provider    text NOT NULL REFERENCES colcrypt.provider (name),
    key_ref     text NOT NULL,
    owner       regrole NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz
);
-- The owner of a master key (or a superuser) rotates, moves and drops it
-- and grants usage on it; usage lets a role create data keys under it.
CREATE TABLE colcrypt.master_key_grant (
    master_key  text NOT NULL REFERENCES colcrypt.master_key (name),
    grantee     regrole NOT NULL,
    privilege   text NOT NULL CHECK (privilege = 'usage'),
    granted_by  name NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (master_key, grantee, privilege)
);
COMMENT ON TABLE colcrypt.master_key_grant IS 'Usage privileges on master keys: who may create data keys under them';
COMMENT ON TABLE colcrypt.master_key IS 'Master keys: references to customer master keys at a provider';

CREATE TABLE colcrypt.data_key (
    key_id      integer PRIMARY KEY CHECK (key_id > 0),
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 63 AND name !~ '^#'),
    owner       regrole NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE colcrypt.data_key IS 'Data keys; key_id is derived from the name so type modifiers resolve before a restore fills this table';

CREATE TABLE colcrypt.data_key_version (
    key_id          integer NOT NULL REFERENCES colcrypt.data_key (key_id),
    version         integer NOT NULL CHECK (version > 0),
    state           text NOT NULL CHECK (state IN ('pre-activation', 'active', 'deactivated',
                                                   'compromised', 'destroyed', 'destroyed-compromised')),
    master_key      text NOT NULL REFERENCES colcrypt.master_key (name),
    wrapped_key     bytea,
    wrap_meta       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    activated_at    timestamptz,
    deactivated_at  timestamptz,
    compromised_at  timestamptz,
    destroyed_at    timestamptz,
    shredded_at     timestamptz,    -- every copy of the wrapped key zeroed
    PRIMARY KEY (key_id, version),
    CHECK ((wrapped_key IS NULL) = (state IN ('destroyed', 'destroyed-compromised')))
);
-- In line on the table's pages, never compressed or toasted: destroying a
-- version zeroes its bytes where they lie (see lifecycle.c).
ALTER TABLE colcrypt.data_key_version ALTER COLUMN wrapped_key SET STORAGE PLAIN;
COMMENT ON TABLE colcrypt.data_key_version IS 'Data key versions: the DEK wrapped by its master key, and its NIST SP 800-57 state';
-- At most one active version per key.
CREATE UNIQUE INDEX data_key_version_one_active ON colcrypt.data_key_version (key_id)
    WHERE state = 'active';

CREATE TABLE colcrypt.key_grant (
    key_id      integer NOT NULL REFERENCES colcrypt.data_key (key_id),
    grantee     regrole NOT NULL,
    privilege   text NOT NULL CHECK (privilege IN ('encrypt', 'decrypt')),
    granted_by  name NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, grantee, privilege)
);
COMMENT ON TABLE colcrypt.key_grant IS 'Encrypt and decrypt privileges on data keys';

CREATE TABLE colcrypt.audit_event (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    role_name     name NOT NULL,
    session_role  name NOT NULL DEFAULT session_user,
    action        text NOT NULL,
    object_type   text NOT NULL,
    object_name   text,
    key_version   integer,
    success       boolean NOT NULL,
    outcome       text NOT NULL DEFAULT 'ok'
                  CHECK (outcome IN ('ok', 'failed', 'rolled back', 'prepared', 'denied', 'warning')),
    detail        text,
    backend_pid   integer NOT NULL DEFAULT pg_backend_pid(),
    -- Identical events (same role, action, object, outcome and detail)
    -- that waited in the queue together are one row: how many, and when
    -- the last happened.
    occurrences   bigint NOT NULL DEFAULT 1 CHECK (occurrences > 0),
    last_at       timestamptz
);
COMMENT ON TABLE colcrypt.audit_event IS 'Audit trail of key management, provider failures and denied decryptions';

-- pg_dump carries the key catalog (wrapped keys only) with the data.
SELECT pg_catalog.pg_extension_config_dump('colcrypt.provider', '');
SELECT pg_catalog.pg_extension_config_dump('colcrypt.master_key', '');
SELECT pg_catalog.pg_extension_config_dump('colcrypt.data_key', '');
SELECT pg_catalog.pg_extension_config_dump('colcrypt.data_key_version', '');
SELECT pg_catalog.pg_extension_config_dump('colcrypt.key_grant', '');
SELECT pg_catalog.pg_extension_config_dump('colcrypt.provider_grant', '');
SELECT pg_catalog.pg_extension_config_dump('colcrypt.master_key_grant', '');

-- Roles named in the catalog (owners, grantees) are recorded in
-- pg_shdepend as holding privileges on the extension, so that DROP ROLE
-- refuses while they are, in this database or any other; DROP OWNED and
-- REASSIGN OWNED act on the catalog too (roles.c).  The trigger keeps the
-- record in step with every change, a restore's included.
CREATE FUNCTION colcrypt._role_deps() RETURNS trigger
    AS 'MODULE_PATHNAME', 'colcrypt_role_deps' LANGUAGE C;
CREATE TRIGGER role_deps AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON colcrypt.data_key
    FOR EACH STATEMENT EXECUTE FUNCTION colcrypt._role_deps();
CREATE TRIGGER role_deps AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON colcrypt.key_grant
    FOR EACH STATEMENT EXECUTE FUNCTION colcrypt._role_deps();
CREATE TRIGGER role_deps AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON colcrypt.master_key
    FOR EACH STATEMENT EXECUTE FUNCTION colcrypt._role_deps();
CREATE TRIGGER role_deps AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON colcrypt.master_key_grant
    FOR EACH STATEMENT EXECUTE FUNCTION colcrypt._role_deps();
CREATE TRIGGER role_deps AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON colcrypt.provider_grant
    FOR EACH STATEMENT EXECUTE FUNCTION colcrypt._role_deps();
-- Also where triggers are off for replicas (logical replication's apply).
ALTER TABLE colcrypt.data_key ENABLE ALWAYS TRIGGER role_deps;
ALTER TABLE colcrypt.key_grant ENABLE ALWAYS TRIGGER role_deps;
ALTER TABLE colcrypt.master_key ENABLE ALWAYS TRIGGER role_deps;
ALTER TABLE colcrypt.master_key_grant ENABLE ALWAYS TRIGGER role_deps;
ALTER TABLE colcrypt.provider_grant ENABLE ALWAYS TRIGGER role_deps;

REVOKE ALL ON ALL TABLES IN SCHEMA colcrypt FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA colcrypt FROM PUBLIC;

------------------------------------------------------------------------
-- Key management API
------------------------------------------------------------------------

CREATE FUNCTION colcrypt.add_provider(name text, kind text, options jsonb)
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_add_provider' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.add_provider(text, text, jsonb) IS 'Register a key provider (file, pkcs11, kmip, vault, aws-kms)';

CREATE FUNCTION colcrypt.alter_provider(name text, options jsonb)
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_alter_provider' LANGUAGE C VOLATILE;

CREATE FUNCTION colcrypt.drop_provider(name text)
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_drop_provider' LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION colcrypt.check_provider(name text, OUT ok boolean, OUT detail text, OUT elapsed_ms float8)
    RETURNS record AS 'MODULE_PATHNAME', 'colcrypt_check_provider' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION colcrypt.check_provider(text) IS 'Health check of a key provider: whether it answers and accepts our credentials, what it is, and how long the check took';

CREATE FUNCTION colcrypt.add_master_key(name text, provider text, key_ref text, create_cmk boolean DEFAULT false)
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_add_master_key' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.add_master_key(text, text, text, boolean) IS 'Reference a customer master key at a provider, after proving it with a wrap/unwrap round trip; create_cmk asks the provider to make it (the file provider always does when it is missing)';

CREATE FUNCTION colcrypt.drop_master_key(name text)
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_drop_master_key' LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION colcrypt.create_key(name text, master_key text)
    RETURNS integer AS 'MODULE_PATHNAME', 'colcrypt_create_key' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.create_key(text, text) IS 'Create a data key (version 1, active), wrapped by a master key';

CREATE FUNCTION colcrypt.rotate_key(name text, activate boolean DEFAULT true)
    RETURNS integer AS 'MODULE_PATHNAME', 'colcrypt_rotate_key' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.rotate_key(text, boolean) IS 'Make a new version of a data key: active (the previous active version becomes deactivated, decrypt only), or with activate => false in pre-activation';

CREATE FUNCTION colcrypt.set_key_state(name text, version integer, state text, force boolean DEFAULT false)
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_set_key_state' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.set_key_state(text, integer, text, boolean) IS 'Move a data key version through the NIST SP 800-57 states; destroyed wipes the wrapped key (crypto-shredding), and needs force while values still use the version';

CREATE FUNCTION colcrypt.rotate_master_key(name text, new_provider text DEFAULT NULL, new_key_ref text DEFAULT NULL)
    RETURNS integer AS 'MODULE_PATHNAME', 'colcrypt_rotate_master_key' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.rotate_master_key(text, text, text) IS 'Re-wrap every data key version of a master key under a new CMK (or the newest version of its CMK), in one transaction, without touching table data; returns the number re-wrapped';

CREATE FUNCTION colcrypt.encrypt_column(tbl regclass, col name, key text DEFAULT NULL, deterministic boolean DEFAULT false)
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_encrypt_column' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.encrypt_column(regclass, name, text, boolean) IS 'Turn a plaintext column into its encrypted type in place, with the named key or the table''s own key (created when missing)';

CREATE FUNCTION colcrypt.grant_provider(name text, grantee regrole, privilege text DEFAULT 'usage')
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_grant_provider' LANGUAGE C VOLATILE;
CREATE FUNCTION colcrypt.revoke_provider(name text, grantee regrole, privilege text DEFAULT 'usage')
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_revoke_provider' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.grant_provider(text, regrole, text) IS 'Let a role use a key provider: add master keys at it and check it (superusers only)';
CREATE FUNCTION colcrypt.grant_master_key(name text, grantee regrole, privilege text DEFAULT 'usage')
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_grant_master_key' LANGUAGE C VOLATILE;
CREATE FUNCTION colcrypt.revoke_master_key(name text, grantee regrole, privilege text DEFAULT 'usage')
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_revoke_master_key' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.grant_master_key(text, regrole, text) IS 'Let a role create data keys under a master key (its owner or a superuser)';

CREATE FUNCTION colcrypt.grant_key(name text, grantee regrole, privilege text)
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_grant_key' LANGUAGE C VOLATILE;
CREATE FUNCTION colcrypt.revoke_key(name text, grantee regrole, privilege text)
    RETURNS void AS 'MODULE_PATHNAME', 'colcrypt_revoke_key' LANGUAGE C VOLATILE;

-- Provider and key management is for the extension's owner and those it
-- grants EXECUTE to; grants are checked against key ownership in C.
REVOKE EXECUTE ON FUNCTION colcrypt.add_provider(text, text, jsonb),
    colcrypt.alter_provider(text, jsonb), colcrypt.drop_provider(text),
    colcrypt.check_provider(text),
    colcrypt.add_master_key(text, text, text, boolean), colcrypt.drop_master_key(text),
    colcrypt.rotate_master_key(text, text, text),
    colcrypt.create_key(text, text),
    colcrypt.grant_provider(text, regrole, text), colcrypt.revoke_provider(text, regrole, text),
    colcrypt.grant_master_key(text, regrole, text), colcrypt.revoke_master_key(text, regrole, text)
    FROM PUBLIC;
-- EXECUTE alone is not enough (objacl.c): add_provider, alter_provider,
-- drop_provider and grant_provider are for superusers; check_provider and
-- add_master_key need usage on the provider; rotate_master_key,
-- drop_master_key and grant_master_key ownership of the master key (and
-- usage on every provider it touches); create_key usage on the master key.
-- rotate_key, set_key_state, grant_key and revoke_key check key ownership;
-- encrypt_column checks table ownership and the encrypt privilege.

------------------------------------------------------------------------
-- Re-encryption: values not under their key's active version are
-- rewritten in batches that each commit.
------------------------------------------------------------------------

CREATE FUNCTION colcrypt._key_version(anyelement) RETURNS integer
    AS 'MODULE_PATHNAME', 'colcrypt_key_version' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION colcrypt._key_id(anyelement) RETURNS integer
    AS 'MODULE_PATHNAME', 'colcrypt_key_id_of' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION colcrypt._progress_rows(OUT pid integer, OUT relid oid, OUT phase text,
        OUT rows_total bigint, OUT rows_done bigint, OUT started_at timestamptz, OUT updated_at timestamptz)
    RETURNS SETOF record AS 'MODULE_PATHNAME', 'colcrypt_progress_rows' LANGUAGE C VOLATILE;

CREATE VIEW colcrypt.reencrypt_progress AS
    SELECT pid, relid::regclass AS relation, phase, rows_total, rows_done,
           CASE WHEN rows_total > 0 THEN round(100.0 * least(rows_done, rows_total) / rows_total, 1) END AS percent,
           started_at, updated_at
      FROM colcrypt._progress_rows();
COMMENT ON VIEW colcrypt.reencrypt_progress IS 'One row per running colcrypt.reencrypt, like pg_stat_progress_*';

-- The steps of colcrypt.reencrypt (reencrypt.c).  A procedure that commits
-- runs with its caller's rights, so these are callable by whoever may call
-- it; each checks that the caller owns the table (_reencrypt_rows, which
-- the update run as the table's owner reads, serves only that update).  They read the table
-- below the executor (no user code runs) and run the update as the
-- table's owner under SECURITY_RESTRICTED_OPERATION.
CREATE FUNCTION colcrypt._reencrypt_count(tbl regclass, start boolean) RETURNS bigint
    AS 'MODULE_PATHNAME', 'colcrypt_reencrypt_count' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION colcrypt._reencrypt_batch(tbl regclass, first_block bigint, blocks bigint,
        phase text, total bigint, done bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'colcrypt_reencrypt_batch' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION colcrypt._stale(anyelement) RETURNS boolean
    AS 'MODULE_PATHNAME', 'colcrypt_stale' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION colcrypt._reencrypt_rows(tbl regclass) RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'colcrypt_reencrypt_rows' LANGUAGE C VOLATILE STRICT ROWS 1000;
CREATE FUNCTION colcrypt._reencrypt_finish(tbl regclass, label text) RETURNS integer
    AS 'MODULE_PATHNAME', 'colcrypt_reencrypt_finish' LANGUAGE C VOLATILE STRICT;

-- One table (no children): the work of colcrypt.reencrypt.  Each of its
-- transactions starts by fixing search_path (a transaction-local setting,
-- as a procedure that commits cannot have a SET clause), so nothing from
-- the caller's schemas runs in it.
CREATE PROCEDURE colcrypt._reencrypt_relation(tbl regclass, label text, batch_size integer)
LANGUAGE plpgsql AS $reencrypt$
DECLARE
    total       bigint;
    done        bigint := 0;
    updated     bigint;
    remaining   bigint := 0;
    failed      integer;
    pages       bigint;
    step        bigint;
    blk         bigint;
    pass        integer := 0;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    total := colcrypt._reencrypt_count(tbl, true);
    IF total IS NULL THEN
        RETURN;
    END IF;
    RAISE NOTICE 'reencrypt %: % rows hold values not under their key''s active version', label, total;
    COMMIT;

    -- Passes over the table in block ranges of about batch_size rows.  Rows
    -- locked by other transactions are skipped (no waiting, no deadlock)
    -- and caught by a later pass, as are rows others moved meanwhile.
    WHILE total > 0 LOOP
        pass := pass + 1;
        blk := 0;
        LOOP
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            pages := pg_relation_size(tbl) / current_setting('block_size')::integer;
            EXIT WHEN blk >= pages;
            step := greatest(1, batch_size / greatest(1.0,
                        (SELECT CASE WHEN relpages > 0 THEN reltuples / relpages ELSE 100 END
                           FROM pg_class WHERE oid = tbl)))::bigint;
            updated := colcrypt._reencrypt_batch(tbl, blk, step, format('pass %s', pass), total, done);
            done := done + updated;
            blk := blk + step;
            COMMIT;
            IF updated > 0 THEN
                RAISE NOTICE 'reencrypt %: % of % rows (% %%)', label, done, total,
                    round(100.0 * least(done, total) / total, 1);
            END IF;
        END LOOP;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        remaining := colcrypt._reencrypt_count(tbl, false);
        EXIT WHEN remaining = 0 OR pass >= 10;
        total := done + remaining;
    END LOOP;
    failed := colcrypt._reencrypt_finish(tbl, label);
    IF remaining > 0 THEN
        RAISE WARNING 'reencrypt %: % rows still locked by other transactions', label, remaining
            USING HINT = 'Run colcrypt.reencrypt again to finish.';
    END IF;
    IF failed > 0 THEN
        RAISE NOTICE 'reencrypt %: done, % rows re-encrypted, % values could not be opened', label, done, failed;
    ELSE
        RAISE NOTICE 'reencrypt %: done, % rows re-encrypted', label, done;
    END IF;
END
$reencrypt$;

-- The table and, for a partitioned or inheritance parent, every table
-- below it, one after the other.
CREATE PROCEDURE colcrypt.reencrypt(tbl regclass, batch_size integer DEFAULT 10000)
LANGUAGE plpgsql AS $reencrypt$
DECLARE
    -- Types by schema: the declarations are compiled under the caller's
    -- search_path.
    rels    pg_catalog.oid[];
    labels  pg_catalog.text[];
    n       pg_catalog.int4;
    caller_path pg_catalog.text := pg_catalog.current_setting('search_path');
    tbl_label   pg_catalog.text;
BEGIN
    -- Nothing from the caller's schemas may run here (a procedure that
    -- commits cannot have a SET clause): a transaction-local search_path,
    -- set again after every step that commits.
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer' USING ERRCODE = '22023';
    END IF;
    rels := colcrypt._tables_below(tbl);
    -- Names as the caller's search_path shows them, for the messages (the
    -- casts and the ordering below resolve nothing by name).
    PERFORM pg_catalog.set_config('search_path', caller_path, true);
    SELECT pg_catalog.array_agg(r::pg_catalog.regclass::pg_catalog.text ORDER BY o) INTO labels
      FROM pg_catalog.unnest(rels) WITH ORDINALITY AS u(r, o);
    tbl_label := tbl::pg_catalog.text;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    n := coalesce(pg_catalog.cardinality(rels), 0);
    IF n = 0 THEN
        RAISE NOTICE 'reencrypt %: no encrypted columns', tbl_label;
        RETURN;
    END IF;
    FOR i IN 1 .. n LOOP
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        CALL colcrypt._reencrypt_relation(rels[i]::pg_catalog.regclass, labels[i], batch_size);
    END LOOP;
END
$reencrypt$;
COMMENT ON PROCEDURE colcrypt.reencrypt(regclass, integer) IS 'Rewrite every value of a table (and of its partitions or children) that is not under its key''s active version, in batches that each commit; safe beside concurrent reads and writes, resumable; values that do not open are left as they are and reported';

CREATE FUNCTION colcrypt._holds_encrypted(oid) RETURNS boolean
    AS 'MODULE_PATHNAME', 'colcrypt_holds_encrypted' LANGUAGE C STABLE STRICT PARALLEL SAFE;
-- The tables at and below tbl (partitions, inheritance children) that have
-- a column able to hold encrypted values, ordered by name.
CREATE FUNCTION colcrypt._tables_below(tbl regclass) RETURNS oid[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $below$
    WITH RECURSIVE tree(relid) AS (
        SELECT tbl::oid
        UNION
        SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid
    )
    SELECT array_agg(c.oid ORDER BY c.oid::regclass::text)
      FROM tree t JOIN pg_class c ON c.oid = t.relid
     WHERE c.relkind IN ('r', 'm')
       AND EXISTS (SELECT FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                      AND colcrypt._holds_encrypted(a.atttypid))
$below$;

-- Every value of a table (and its partitions or children) that does not
-- open: forged or altered, malformed, under a missing or destroyed key
-- version, or not checked because the caller may not decrypt its key.
CREATE FUNCTION colcrypt._verify_table(tbl regclass, OUT relation regclass, OUT column_name text,
        OUT row_ctid tid, OUT key_name text, OUT key_version integer, OUT problem text)
    RETURNS SETOF record AS 'MODULE_PATHNAME', 'colcrypt_verify_table' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION colcrypt.verify(tbl regclass, OUT relation regclass, OUT column_name text,
        OUT row_ctid tid, OUT key_name text, OUT key_version integer, OUT problem text)
    RETURNS SETOF record
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp AS $verify$
    SELECT v.* FROM unnest(colcrypt._tables_below(tbl)) AS r(relid),
                    LATERAL colcrypt._verify_table(r.relid::regclass) v
$verify$;
COMMENT ON FUNCTION colcrypt.verify(regclass) IS 'Open every encrypted value of a table (and its partitions or children) and list those that do not open, where they are and why; for the table''s owner';

-- Where values of a key version are, for destroying it: counted by what
-- their envelopes say, in every table and column that can hold encrypted
-- values (arrays and composites too), below the executor.
CREATE FUNCTION colcrypt._version_usage(key_id integer, version integer,
        OUT relation text, OUT col text, OUT n bigint)
    RETURNS SETOF record AS 'MODULE_PATHNAME', 'colcrypt_version_usage' LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION colcrypt.audit_flush(timeout_ms integer DEFAULT 10000) RETURNS boolean
    AS 'MODULE_PATHNAME', 'colcrypt_audit_flush' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.audit_flush(integer) IS 'Wait until the audit events of this database queued so far are in colcrypt.audit_log, and the shredding of destroyed keys asked for so far is done';
CREATE FUNCTION colcrypt._audit_queue(OUT waiting integer, OUT dropped bigint, OUT writers integer,
        OUT merged bigint)
    RETURNS record AS 'MODULE_PATHNAME', 'colcrypt_audit_queue_stats' LANGUAGE C VOLATILE;
CREATE VIEW colcrypt.audit_queue AS SELECT * FROM colcrypt._audit_queue();
COMMENT ON VIEW colcrypt.audit_queue IS 'The audit queue of the server: events waiting for their writer, events lost since start (each database''s losses are also written to its audit log as events_lost rows), writers running, events merged into an identical waiting one';

------------------------------------------------------------------------
-- Views
------------------------------------------------------------------------

CREATE FUNCTION colcrypt._redact_options(kind text, options jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'colcrypt_redact_options' LANGUAGE C STABLE STRICT;

CREATE VIEW colcrypt.providers AS
    SELECT p.name, p.kind, colcrypt._redact_options(p.kind, p.options) AS options,
           p.created_at, p.created_by
      FROM colcrypt.provider p;

CREATE VIEW colcrypt.master_keys AS
    SELECT m.name, m.provider, p.kind, m.key_ref, m.owner, m.created_at, m.rotated_at,
           (SELECT count(*) FROM colcrypt.data_key_version v WHERE v.master_key = m.name) AS data_key_versions
      FROM colcrypt.master_key m JOIN colcrypt.provider p ON p.name = m.provider;

CREATE VIEW colcrypt.keys AS
    SELECT k.name, v.version, v.state, v.master_key, k.owner,
           v.created_at, v.activated_at, v.deactivated_at, v.compromised_at, v.destroyed_at,
           v.shredded_at, k.key_id,
           CASE WHEN v.wrapped_key IS NOT NULL
                THEN substring(v.wrap_meta from 'cmk_version=([0-9]+)')::integer END AS cmk_version
      FROM colcrypt.data_key k JOIN colcrypt.data_key_version v USING (key_id);
COMMENT ON COLUMN colcrypt.keys.cmk_version IS 'The version of the master key (CMK) that wraps this data key version, where the provider versions keys (file, vault); NULL once destroyed';

CREATE VIEW colcrypt.key_grants AS
    SELECT k.name, g.grantee, g.privilege, g.granted_by, g.granted_at
      FROM colcrypt.key_grant g JOIN colcrypt.data_key k USING (key_id);

CREATE VIEW colcrypt.provider_grants AS
    SELECT provider AS name, grantee, privilege, granted_by, granted_at FROM colcrypt.provider_grant;
CREATE VIEW colcrypt.master_key_grants AS
    SELECT master_key AS name, grantee, privilege, granted_by, granted_at FROM colcrypt.master_key_grant;

CREATE FUNCTION colcrypt._key_cache_stats(
        OUT entries integer, OUT capacity integer, OUT hits bigint, OUT misses bigint,
        OUT kms_calls bigint, OUT kms_failures bigint, OUT evictions bigint,
        OUT expirations bigint, OUT ttl_seconds integer)
    RETURNS record AS 'MODULE_PATHNAME', 'colcrypt_key_cache_stats' LANGUAGE C VOLATILE;

CREATE VIEW colcrypt.key_cache AS SELECT * FROM colcrypt._key_cache_stats();
CREATE FUNCTION colcrypt.key_cache_evict() RETURNS integer
    AS 'MODULE_PATHNAME', 'colcrypt_key_cache_evict' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION colcrypt.key_cache_evict() IS 'Wipe every unwrapped data key from the shared cache and every backend''s key schedules (incident response; the next use asks the provider again); returns the number of cached keys wiped';
REVOKE EXECUTE ON FUNCTION colcrypt.key_cache_evict() FROM PUBLIC;
COMMENT ON VIEW colcrypt.key_cache IS 'The cluster-wide shared cache of unwrapped data keys: entries, hits, misses, provider (KMS) calls, evictions';

CREATE FUNCTION colcrypt._key_cache_contents(
        OUT key_id bigint, OUT version integer, OUT state text,
        OUT loaded_at timestamptz, OUT expires_at timestamptz)
    RETURNS SETOF record AS 'MODULE_PATHNAME', 'colcrypt_key_cache_contents' LANGUAGE C VOLATILE;

CREATE VIEW colcrypt.key_cache_contents AS
    SELECT k.name, c.version, c.state, c.loaded_at, c.expires_at
      FROM colcrypt._key_cache_contents() c LEFT JOIN colcrypt.data_key k ON k.key_id = c.key_id;

CREATE VIEW colcrypt.audit_log AS
    SELECT id, at, role_name, session_role, action, object_type, object_name,
           key_version, outcome, success, detail, backend_pid, occurrences, last_at
      FROM colcrypt.audit_event;

GRANT USAGE ON SCHEMA colcrypt TO PUBLIC;
GRANT SELECT ON colcrypt.providers, colcrypt.master_keys, colcrypt.keys,
    colcrypt.key_grants, colcrypt.provider_grants, colcrypt.master_key_grants,
    colcrypt.key_cache, colcrypt.key_cache_contents TO PUBLIC;
-- (colcrypt.reencrypt_progress and colcrypt.audit_queue are granted below,
-- where they are created.)
-- colcrypt.audit_log is for the extension owner and whom it grants SELECT.

------------------------------------------------------------------------
-- Encrypted types: one block per type, generated from typelist.h
------------------------------------------------------------------------

CREATE FUNCTION colcrypt._typmod_in(cstring[]) RETURNS integer
    AS 'MODULE_PATHNAME', 'colcrypt_typmod_in' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION colcrypt._typmod_out(integer) RETURNS cstring
    AS 'MODULE_PATHNAME', 'colcrypt_typmod_out' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION colcrypt._typanalyze(internal) RETURNS boolean
    AS 'MODULE_PATHNAME', 'colcrypt_typanalyze' LANGUAGE C STRICT;
CREATE FUNCTION colcrypt._eq_support(internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'colcrypt_eq_support' LANGUAGE C STRICT;
