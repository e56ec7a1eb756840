--
-- catalog: views, the audit log, the shared key cache, and what pg_dump
-- carries
--
SELECT relname FROM pg_class c JOIN pg_extension e ON c.oid = ANY (e.extconfig)
 WHERE e.extname = 'colcrypt' ORDER BY relname;

-- Views never show key material.
SELECT column_name FROM information_schema.columns
 WHERE table_schema = 'colcrypt' AND table_name IN ('keys', 'providers', 'master_keys', 'key_cache', 'key_cache_contents')
   AND (column_name LIKE '%wrapped%' OR column_name LIKE '%secret%' OR column_name LIKE '%dek%');
SELECT name, version, state FROM colcrypt.key_cache_contents ORDER BY name, version;

-- The cache has served the keys used so far; its counters move.
SELECT capacity, ttl_seconds, entries > 0 AS has_entries, kms_calls > 0 AS called_provider,
       kms_failures
  FROM colcrypt.key_cache;

-- The audit log records key management, failed calls, provider failures and
-- denied decryptions (never a secret).  Events are written by a background
-- worker: audit_flush() waits for them.
SELECT colcrypt.audit_flush();
SELECT action, object_type, left(object_name, 20) AS object_name, key_version, outcome, detail
  FROM colcrypt.audit_log ORDER BY id;
SELECT waiting, dropped FROM colcrypt.audit_queue;

-- Dropping, in the right order, works and is audited.
SELECT colcrypt.add_master_key('audited', 'dev', 'audited-cmk');
SELECT colcrypt.drop_master_key('audited');
SELECT colcrypt.audit_flush();
SELECT action, object_type, object_name, outcome FROM colcrypt.audit_log
 WHERE object_name = 'audited' ORDER BY id;

-- colcrypt.audit = off records nothing.
SET colcrypt.audit = off;
SELECT colcrypt.add_master_key('unaudited', 'dev', 'unaudited-cmk');
RESET colcrypt.audit;
SELECT colcrypt.audit_flush();
SELECT count(*) FROM colcrypt.audit_log WHERE object_name = 'unaudited';

-- A transaction that rolls back is recorded as such.
BEGIN;
SELECT colcrypt.add_master_key('rolled', 'dev', 'rolled-cmk');
ROLLBACK;
SELECT colcrypt.audit_flush();
SELECT action, object_name, outcome FROM colcrypt.audit_log WHERE object_name = 'rolled';
SELECT count(*) AS not_created FROM colcrypt.master_keys WHERE name = 'rolled';
SELECT colcrypt.drop_master_key('unaudited');

-- When the writer cannot insert, events wait in the queue and are written
-- once it can; none is lost.
ALTER TABLE colcrypt.audit_event ADD CONSTRAINT refuse_all CHECK (false) NOT VALID;
SELECT colcrypt.add_master_key('while_blocked', 'dev', 'blocked-cmk');
SELECT colcrypt.audit_flush(1500) AS flushed_while_blocked;
SELECT waiting > 0 AS events_wait FROM colcrypt.audit_queue;
ALTER TABLE colcrypt.audit_event DROP CONSTRAINT refuse_all;
SELECT colcrypt.audit_flush() AS flushed;
SELECT action, object_name, outcome FROM colcrypt.audit_log WHERE object_name = 'while_blocked';
SELECT colcrypt.drop_master_key('while_blocked');

-- The settings.
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'colcrypt.%' ORDER BY name;
