--
-- sec_searchpath: search_path hijacks.  A role that may create objects in
-- a schema on someone's search_path plants functions and operators there:
-- none of them may run inside colcrypt's own statements (with colcrypt's
-- or a superuser's rights), and none may capture an application's
-- decrypted values by matching the encrypted type exactly.
--
CREATE ROLE sp_mallory;
CREATE ROLE sp_app;
CREATE SCHEMA sp_open;
GRANT ALL ON SCHEMA sp_open TO sp_mallory, sp_app;
GRANT USAGE ON SCHEMA colcrypt TO sp_app;
SELECT colcrypt.create_key('sp_key', 'cmk');
SELECT colcrypt.grant_key('sp_key', 'sp_app', 'all');
CREATE TABLE sp_open.loot (what text);
GRANT ALL ON sp_open.loot TO PUBLIC;

-- mallory's traps: each records that it ran, and with what.
SET ROLE sp_mallory;
CREATE FUNCTION sp_open.note(v text) RETURNS void LANGUAGE sql AS $$INSERT INTO sp_open.loot VALUES (v)$$;
CREATE FUNCTION sp_open.upper(colcrypt.encrypted_text) RETURNS text LANGUAGE sql
    AS $$SELECT sp_open.note('upper ' || $1::text); SELECT 'x'$$;
CREATE FUNCTION sp_open.length(colcrypt.encrypted_text) RETURNS integer LANGUAGE sql
    AS $$SELECT sp_open.note('length ' || $1::text); SELECT 0$$;
CREATE FUNCTION sp_open.like_trap(colcrypt.encrypted_text, text) RETURNS boolean LANGUAGE sql
    AS $$SELECT sp_open.note('like ' || $1::text); SELECT true$$;
CREATE OPERATOR sp_open.~~ (LEFTARG = colcrypt.encrypted_text, RIGHTARG = text, FUNCTION = sp_open.like_trap);
CREATE FUNCTION sp_open.concat_trap(colcrypt.encrypted_text, text) RETURNS text LANGUAGE sql
    AS $$SELECT sp_open.note('concat ' || $1::text); SELECT 'x'$$;
CREATE OPERATOR sp_open.|| (LEFTARG = colcrypt.encrypted_text, RIGHTARG = text, FUNCTION = sp_open.concat_trap);
CREATE FUNCTION sp_open.mul_trap(colcrypt.encrypted_int4, integer) RETURNS integer LANGUAGE sql
    AS $$SELECT sp_open.note('mul ' || $1::text); SELECT 0$$;
CREATE OPERATOR sp_open.* (LEFTARG = colcrypt.encrypted_int4, RIGHTARG = integer, FUNCTION = sp_open.mul_trap);
CREATE FUNCTION sp_open.add_trap(colcrypt.encrypted_int4, colcrypt.encrypted_int8) RETURNS bigint LANGUAGE sql
    AS $$SELECT sp_open.note('add ' || $1::text); SELECT 0::int8$$;
CREATE OPERATOR sp_open.+ (LEFTARG = colcrypt.encrypted_int4, RIGHTARG = colcrypt.encrypted_int8, FUNCTION = sp_open.add_trap);
CREATE FUNCTION sp_open.key_trap(colcrypt.encrypted_jsonb, colcrypt.encrypted_text) RETURNS jsonb LANGUAGE sql
    AS $$SELECT sp_open.note('key ' || $1::text); SELECT '{}'::jsonb$$;
CREATE OPERATOR sp_open.-> (LEFTARG = colcrypt.encrypted_jsonb, RIGHTARG = colcrypt.encrypted_text, FUNCTION = sp_open.key_trap);
CREATE FUNCTION sp_open.normalize(colcrypt.encrypted_text) RETURNS text LANGUAGE sql
    AS $$SELECT sp_open.note('normalize ' || $1::text); SELECT 'x'$$;
CREATE FUNCTION sp_open.mul_same(colcrypt.encrypted_int4, colcrypt.encrypted_int4) RETURNS integer LANGUAGE sql
    AS $$SELECT sp_open.note('mul same ' || $2::text); SELECT 0$$;
CREATE OPERATOR sp_open.* (LEFTARG = colcrypt.encrypted_int4, RIGHTARG = colcrypt.encrypted_int4, FUNCTION = sp_open.mul_same);
CREATE FUNCTION sp_open.mul_right(integer, colcrypt.encrypted_int4) RETURNS integer LANGUAGE sql
    AS $$SELECT sp_open.note('mul right ' || $2::text); SELECT 0$$;
CREATE OPERATOR sp_open.* (LEFTARG = integer, RIGHTARG = colcrypt.encrypted_int4, FUNCTION = sp_open.mul_right);
CREATE FUNCTION sp_open.arrow_trap(colcrypt.encrypted_jsonb, text) RETURNS jsonb LANGUAGE sql
    AS $$SELECT sp_open.note('arrow ' || $1::text); SELECT '{}'::jsonb$$;
CREATE OPERATOR sp_open.-> (LEFTARG = colcrypt.encrypted_jsonb, RIGHTARG = text, FUNCTION = sp_open.arrow_trap);
CREATE FUNCTION sp_open.extract(text, colcrypt.encrypted_date) RETURNS numeric LANGUAGE sql
    AS $$SELECT sp_open.note('extract ' || $2::text); SELECT 0::numeric$$;
CREATE FUNCTION sp_open.replace(colcrypt.encrypted_text, text, text) RETURNS text LANGUAGE sql
    AS $$SELECT sp_open.note('replace ' || $1::text); SELECT 'x'$$;
-- Traps for colcrypt's own statements, which run as others.
CREATE FUNCTION sp_open.count_sfunc(bigint, text) RETURNS bigint LANGUAGE sql
    AS $$SELECT sp_open.note('count as ' || current_user); SELECT $1 + 1$$;
CREATE AGGREGATE sp_open.count(text) (SFUNC = sp_open.count_sfunc, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION sp_open.oideq_trap(oid, oid) RETURNS boolean LANGUAGE sql
    AS $$SELECT sp_open.note('oid = as ' || current_user); SELECT $1::int8 OPERATOR(pg_catalog.=) $2::int8$$;
CREATE OPERATOR sp_open.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = sp_open.oideq_trap);
CREATE FUNCTION sp_open.int4lt_trap(integer, integer) RETURNS boolean LANGUAGE sql
    AS $$SELECT sp_open.note('int < as ' || current_user); SELECT $1::int8 OPERATOR(pg_catalog.<) $2::int8$$;
CREATE OPERATOR sp_open.< (LEFTARG = integer, RIGHTARG = integer, FUNCTION = sp_open.int4lt_trap);
RESET ROLE;

-- The application's table, and its queries with sp_open on its path
-- (pg_catalog implicitly first, as by default).
CREATE TABLE sp_open.people (id int, name colcrypt.encrypted_text(sp_key), n colcrypt.encrypted_int4(sp_key),
    doc colcrypt.encrypted_jsonb(sp_key), born colcrypt.encrypted_date(sp_key),
    n8 colcrypt.encrypted_int8(sp_key), field colcrypt.encrypted_text(sp_key));
ALTER TABLE sp_open.people OWNER TO sp_app;
SET ROLE sp_app;
SET search_path = sp_open;
INSERT INTO people VALUES (1, 'Alice Secret', 41, '{"ssn": "123"}', '1980-02-03', 1000, 'ssn');
SELECT upper(name), length(name), name LIKE 'Alice%', name || '!', n * 2, n + n8, doc -> 'ssn',
       doc -> field, extract(year FROM born), replace(name, 'Secret', 'S.'), normalize(name),
       born - '1980-01-01', born + n, n8 - n FROM people;
SELECT count(*) FROM people WHERE name LIKE '%Secret%' AND n * 2 = 82;
-- Literals stay plain values: a view over them is allowed, and the filter
-- compares with a plain constant.
CREATE VIEW people_a AS SELECT id FROM people WHERE name LIKE 'A%' AND doc @> '{"ssn": "123"}';
SELECT * FROM people_a;
EXPLAIN (COSTS OFF) SELECT id FROM people WHERE name LIKE 'A%';
RESET search_path;
RESET ROLE;
SELECT count(*) AS captured FROM sp_open.loot;

-- The same functions and operators exist in pg_catalog for the encrypted
-- types, and plan as the built-ins through the cast (inlined).
SELECT count(*) > 300 AS functions FROM pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::regnamespace
   AND p.proargtypes::oid[] && ARRAY(SELECT oid FROM pg_type WHERE typnamespace = 'colcrypt'::regnamespace);
SET search_path = sp_open;
EXPLAIN (COSTS OFF, VERBOSE) SELECT upper(name), n * 2 FROM people WHERE name LIKE 'A%';
RESET search_path;

-- colcrypt's own statements with mallory's schema first on a superuser's
-- path: encrypt_column counts the rows, reencrypt walks the table.
CREATE TABLE sp_open.plain_t (id int, c text);
INSERT INTO sp_open.plain_t SELECT g, 'v' || g FROM generate_series(1, 20) g;
SET search_path = sp_open, pg_catalog;
SELECT colcrypt.encrypt_column('sp_open.plain_t', 'c', 'sp_key');
SELECT colcrypt.rotate_key('sp_key');
CALL colcrypt.reencrypt('sp_open.plain_t', 5);
SELECT count(*) FROM colcrypt.verify('sp_open.plain_t');
RESET search_path;
SELECT count(*) AS captured FROM sp_open.loot;
SELECT what FROM sp_open.loot;

-- What remains, as for plain types: a path that puts an untrusted schema
-- before pg_catalog explicitly lets its objects win.
SET ROLE sp_app;
SET search_path = sp_open, pg_catalog;
SELECT upper(name) FROM sp_open.people;
RESET search_path;
-- ...and an operator on two values of one type with the encrypted one on
-- the right (enc * enc, 5 * enc) is reached through the casts, so a planted
-- exact operator wins (README, threat model).
SET search_path = sp_open;
SELECT n * n, 5 * n FROM sp_open.people;
RESET search_path;
RESET ROLE;
SELECT what FROM sp_open.loot ORDER BY what;
