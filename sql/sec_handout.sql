--
-- sec_handout: plaintext opened for one role is never handed to another.
-- A batch of values decrypted inside a SECURITY DEFINER function, a call
-- site's kept plaintext, a cursor's open batch: every value handed out is
-- checked for the role asking at that moment.
--
SET ROLE sec_app;
CREATE FUNCTION appfn.mask_ssn(v colcrypt.encrypted_text) RETURNS text
    SECURITY DEFINER LANGUAGE sql AS $$SELECT 'XXX-' || right(v::text, 3)$$;
CREATE FUNCTION appfn.mask_plpgsql(v colcrypt.encrypted_text) RETURNS text
    SECURITY DEFINER LANGUAGE plpgsql AS $$BEGIN RETURN 'XXX-' || right(v::text, 3); END$$;
CREATE FUNCTION appfn.mask_parallel(v colcrypt.encrypted_text) RETURNS text
    SECURITY DEFINER PARALLEL SAFE LANGUAGE plpgsql AS $$BEGIN RETURN 'XXX-' || right(v::text, 3); END$$;
CREATE FUNCTION appfn.age_band(v colcrypt.encrypted_int4) RETURNS int
    SECURITY DEFINER LANGUAGE sql AS $$SELECT (v::int / 10) * 10$$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA appfn TO PUBLIC;
RESET ROLE;

-- What the definer functions are for: they work for mallory.
SET ROLE sec_mallory;
SELECT id, appfn.mask_ssn(ssn), appfn.mask_plpgsql(ssn), appfn.age_band(age)
  FROM customers WHERE id <= 2 ORDER BY id;

-- The reported attack, with the batch scan and without, index scans off.
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT probe($q$SELECT id, ssn::text FROM customers
                WHERE (id = 1 AND appfn.mask_ssn(ssn) IS NOT NULL) OR id BETWEEN 2 AND 250$q$);
SELECT probe($q$SELECT id, ssn::text FROM customers
                WHERE (id = 1 AND appfn.mask_plpgsql(ssn) IS NOT NULL) OR id BETWEEN 2 AND 250$q$);
SET colcrypt.batch_scan = off;
SELECT probe($q$SELECT id, ssn::text FROM customers
                WHERE (id = 1 AND appfn.mask_ssn(ssn) IS NOT NULL) OR id BETWEEN 2 AND 250$q$);
RESET colcrypt.batch_scan;
-- Other ways to ask for the plaintext of a value opened for the definer:
-- functions, comparison, ordering, hashing, casts of other types, output.
SELECT probe($q$SELECT id, upper(ssn) FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL$q$);
SELECT probe($q$SELECT id FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL AND ssn = 'MARKER-0002-SSN'$q$);
SELECT probe($q$SELECT id FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL AND ssn > 'MARKER-0150'$q$);
SELECT probe($q$SELECT id FROM customers WHERE appfn.age_band(age) > 0 AND age > 40$q$);
SELECT probe($q$SELECT ssn, count(*) FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL GROUP BY ssn$q$);
SELECT probe($q$SELECT DISTINCT age FROM customers WHERE appfn.age_band(age) IS NOT NULL$q$);
SELECT probe($q$SELECT id FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL ORDER BY ssn$q$);
SELECT probe($q$SELECT id, age::int + 0 FROM customers WHERE appfn.age_band(age) IS NOT NULL$q$);
SELECT probe($q$SELECT id, 'x' || ssn FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL$q$);
SELECT probe($q$SELECT id, ssn FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL$q$);
SELECT probe($q$SELECT length(ssn::text) FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL$q$);
-- A join that opens both sides inside the definer, then compares them outside.
SELECT probe($q$SELECT a.id FROM customers a JOIN customers b ON a.ssn = b.ssn
                WHERE appfn.mask_ssn(a.ssn) IS NOT NULL AND appfn.mask_ssn(b.ssn) IS NOT NULL$q$);
RESET enable_indexscan;
RESET enable_bitmapscan;
RESET ROLE;

-- Views over the same: plain, security_barrier, security_invoker (owned by
-- the application role, which may decrypt).
SET ROLE sec_app;
CREATE VIEW appfn.v_plain AS SELECT id, appfn.mask_ssn(ssn) AS masked, ssn FROM customers;
CREATE VIEW appfn.v_barrier WITH (security_barrier) AS
    SELECT id, ssn FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL;
CREATE VIEW appfn.v_invoker WITH (security_invoker) AS
    SELECT id, appfn.mask_ssn(ssn) AS masked, ssn FROM customers;
CREATE VIEW appfn.v_plaintext AS SELECT id, ssn::text AS ssn FROM customers;
GRANT SELECT ON appfn.v_plain, appfn.v_barrier, appfn.v_invoker, appfn.v_plaintext TO sec_mallory;
RESET ROLE;
SET ROLE sec_mallory;
SELECT probe('SELECT id, masked FROM appfn.v_plain WHERE id <= 3');
SELECT probe('SELECT id, masked, ssn::text FROM appfn.v_plain');
SELECT probe('SELECT id, ssn::text FROM appfn.v_barrier');
SELECT probe('SELECT id, masked, ssn::text FROM appfn.v_invoker');
SELECT probe('SELECT id, masked, upper(ssn) FROM appfn.v_invoker');
-- A view's casts run as the role querying it, not the view's owner.
SELECT probe('SELECT * FROM appfn.v_plaintext');
RESET ROLE;

-- A row level security policy that calls the definer function.
CREATE TABLE rls_t AS SELECT id, ssn FROM customers WHERE id <= 50;
ALTER TABLE rls_t ALTER COLUMN ssn TYPE colcrypt.encrypted_text(cust);
ALTER TABLE rls_t ENABLE ROW LEVEL SECURITY;
CREATE POLICY rls_t_mask ON rls_t USING (appfn.mask_ssn(ssn) IS NOT NULL);
GRANT SELECT ON rls_t TO sec_mallory;
SET ROLE sec_mallory;
SELECT probe('SELECT id, ssn::text FROM rls_t');
SELECT probe('SELECT id, ssn FROM rls_t');
RESET ROLE;

-- A trigger of the application's that opens the value; the writer then
-- reads it back with RETURNING.
CREATE TABLE trig_t (id integer, ssn colcrypt.encrypted_text(cust), note text);
SET ROLE sec_app;
CREATE FUNCTION appfn.note_ssn() RETURNS trigger SECURITY DEFINER LANGUAGE plpgsql AS $$
BEGIN
    NEW.note := 'ends in ' || right(NEW.ssn::text, 3);
    RETURN NEW;
END$$;
RESET ROLE;
CREATE TRIGGER trig_t_note BEFORE INSERT ON trig_t FOR EACH ROW EXECUTE FUNCTION appfn.note_ssn();
GRANT SELECT, INSERT ON trig_t TO sec_mallory;
SET ROLE sec_mallory;
SELECT probe($q$INSERT INTO trig_t SELECT id, ssn FROM customers WHERE id <= 5 RETURNING id, note$q$);
SELECT probe($q$INSERT INTO trig_t SELECT id, ssn FROM customers WHERE id <= 5 RETURNING id, ssn::text$q$);
RESET ROLE;

-- Prepared statements and cursors opened by the application role, used
-- after SET ROLE (the plan and the open batch outlive the role).
SET ROLE sec_app;
PREPARE ssns AS SELECT id, ssn::text FROM customers WHERE id <= 20;
SELECT probe('EXECUTE ssns');
RESET ROLE;
SET ROLE sec_mallory;
SELECT probe('EXECUTE ssns');
RESET ROLE;
DEALLOCATE ssns;

BEGIN;
SET LOCAL ROLE sec_app;
DECLARE cur CURSOR FOR SELECT id, ssn::text FROM customers;
FETCH 3 FROM cur;
SET LOCAL ROLE sec_mallory;
SAVEPOINT s;
FETCH 3 FROM cur;
ROLLBACK TO s;
ROLLBACK;

-- A cursor over batch values (no cast in the query: the value is opened
-- when fetched); the application fetches, then another role does.
BEGIN;
SET LOCAL ROLE sec_app;
DECLARE cur2 CURSOR FOR SELECT id, upper(ssn) FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL;
FETCH 2 FROM cur2;
SET LOCAL ROLE sec_mallory;
SAVEPOINT s;
FETCH 2 FROM cur2;
ROLLBACK TO s;
ROLLBACK;

-- A revoke takes effect in the middle of an open cursor.
CREATE ROLE sec_temp;
GRANT SELECT ON customers TO sec_temp;
SELECT colcrypt.grant_key('cust', 'sec_temp', 'decrypt');
BEGIN;
SET LOCAL ROLE sec_temp;
DECLARE cur3 CURSOR FOR SELECT id, ssn::text FROM customers;
FETCH 2 FROM cur3;
RESET ROLE;
SELECT colcrypt.revoke_key('cust', 'sec_temp', 'decrypt');
SET LOCAL ROLE sec_temp;
SAVEPOINT s;
FETCH 2 FROM cur3;
ROLLBACK TO s;
ROLLBACK;
REVOKE SELECT ON customers FROM sec_temp;
-- A role named in the key catalog cannot be dropped (its OID would stay
-- behind for a later role to inherit); DROP OWNED takes its key grants.
DROP ROLE sec_temp;
DROP OWNED BY sec_temp;
SELECT count(*) FROM colcrypt.key_grants WHERE grantee::text = 'sec_temp';
DROP ROLE sec_temp;

-- Parallel workers: each checks for the role the leader runs as.
SET ROLE sec_mallory;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET force_parallel_mode = on;
SELECT probe($q$SELECT count(*) FROM customers WHERE appfn.mask_parallel(ssn) IS NOT NULL$q$);
SELECT probe($q$SELECT id, ssn::text FROM customers WHERE appfn.mask_parallel(ssn) IS NOT NULL$q$);
SELECT probe($q$SELECT count(*) FROM customers WHERE appfn.mask_parallel(ssn) IS NOT NULL AND ssn::text LIKE 'M%'$q$);
RESET force_parallel_mode;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET ROLE;

-- Each refusal is audited as a denied decryption by sec_mallory.
SELECT colcrypt.audit_flush();
SELECT count(*) > 0 AS denials_audited FROM colcrypt.audit_log
 WHERE action = 'decrypt' AND outcome = 'denied' AND role_name = 'sec_mallory' AND object_name = 'cust';
