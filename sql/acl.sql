--
-- acl: who may execute every function and read every view and table of
-- the extension.  PUBLIC keeps EXECUTE on the user API and on what every
-- role's queries call (type I/O, casts, operators, operator class support,
-- _det_candidates, which the planner puts into index conditions, the
-- functions behind the views granted to PUBLIC, and the steps of
-- reencrypt and verify, which run with their caller's rights and check
-- table ownership themselves).  A new function shows up here and must be
-- classified.
--
-- Functions PUBLIC may execute, by kind (per-type ones counted).
SELECT CASE
         WHEN p.proname ~ '^encrypted_[a-z0-9]+_(in|out|recv|send)$' THEN 'type I/O'
         WHEN p.proname ~ '^encrypted_[a-z0-9]+$' OR p.prorettype::regtype::text !~ 'encrypted'
              AND p.proname IN ('text', 'bytea', 'int4', 'int8', 'numeric', 'float8', 'date',
                                'timestamptz', 'jsonb', 'integer', 'bigint', 'double precision',
                                'timestamp with time zone') THEN 'casts'
         WHEN p.proname ~ '^encrypted_[a-z0-9]+_(eq|ne|lt|le|gt|ge|cmp)(_plain)?$'
              OR p.proname ~ '^encrypted_[a-z0-9]+_plain_(eq|ne|lt|le|gt|ge|cmp)$'
              OR p.proname ~ '^encrypted_[a-z0-9]+_ct_(eq|ne|lt|le|gt|ge|cmp)$'
              OR p.proname ~ '^encrypted_[a-z0-9]+_hash' THEN 'operators and opclass support'
         WHEN p.proname ~ '^_op_' THEN 'exact-signature operators on encrypted types (in pg_catalog)'
         WHEN p.proname ~ '^_cross_' OR p.proname ~ '^encrypted_[a-z0-9]+_(eq|ne|lt|le|gt|ge)_' THEN 'cross-type operators'
         ELSE p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
       END AS public_may_execute,
       count(*)
  FROM pg_proc p
 WHERE p.pronamespace = 'colcrypt'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 GROUP BY 1 ORDER BY 1;

-- Functions PUBLIC may not execute.
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS revoked_from_public
  FROM pg_proc p
 WHERE p.pronamespace = 'colcrypt'::regnamespace
   AND NOT has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1;

-- Exact-signature functions on encrypted types in pg_catalog: members of
-- the extension, inlinable SQL, executable by PUBLIC, none SECURITY DEFINER.
SELECT count(*) > 200 AS many, bool_and(p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'sql')) AS sql,
       bool_and(has_function_privilege('public', p.oid, 'EXECUTE')) AS public,
       bool_and(NOT p.prosecdef AND p.proconfig IS NULL) AS inlinable,
       bool_and(EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')) AS members
  FROM pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::regnamespace
   AND p.proargtypes::oid[] && ARRAY(SELECT oid FROM pg_type WHERE typnamespace = 'colcrypt'::regnamespace);

-- SECURITY DEFINER functions of the extension: none.
SELECT count(*) AS security_definer FROM pg_proc
 WHERE pronamespace = 'colcrypt'::regnamespace AND prosecdef;

-- Operators' functions live in pg_catalog too (the operators do).
SELECT count(*) AS operator_functions_not_public
  FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode
 WHERE (o.oprleft::regtype::text LIKE 'colcrypt.%' OR o.oprright::regtype::text LIKE 'colcrypt.%')
   AND NOT has_function_privilege('public', p.oid, 'EXECUTE');

-- Relations: what PUBLIC may read, and that it may write none.
SELECT c.relname, c.relkind,
       has_table_privilege('public', c.oid, 'SELECT') AS public_select,
       has_table_privilege('public', c.oid, 'INSERT') OR has_table_privilege('public', c.oid, 'UPDATE')
         OR has_table_privilege('public', c.oid, 'DELETE') OR has_table_privilege('public', c.oid, 'TRUNCATE') AS public_writes
  FROM pg_class c
 WHERE c.relnamespace = 'colcrypt'::regnamespace AND c.relkind IN ('r', 'v', 'S')
 ORDER BY c.relname;

-- The internal functions refuse a role that may not use them.
SET ROLE sec_mallory;
SELECT attempt($q$SELECT colcrypt._version_usage(1, 1)$q$);
SELECT attempt($q$SELECT colcrypt._key_version(ssn) FROM customers LIMIT 1$q$);
SELECT attempt($q$SELECT colcrypt._require_preload()$q$);
SELECT attempt($q$SELECT colcrypt.key_cache_evict()$q$);
SELECT attempt($q$SELECT * FROM colcrypt.audit_log$q$);
SELECT attempt($q$SELECT colcrypt._reencrypt_finish('customers', 'x')$q$);
SELECT attempt($q$SELECT * FROM colcrypt._reencrypt_rows('customers') AS r(t tid, c colcrypt.encrypted_text)$q$);
RESET ROLE;
