--
-- sec_setup: the cast of the security tests (sec_*.sql).  An application
-- role that may decrypt (sec_app), an encrypt-only role (sec_clerk), and an
-- attacker with table privileges and no key privilege (sec_mallory).  The
-- plaintexts all carry "MARKER", so that probe() can tell whether any
-- reached a role that may not see them.
--
CREATE ROLE sec_app;
CREATE ROLE sec_clerk;
CREATE ROLE sec_mallory;
GRANT CREATE ON SCHEMA public TO sec_app, sec_mallory, sec_clerk;
CREATE SCHEMA appfn AUTHORIZATION sec_app;
CREATE SCHEMA mal AUTHORIZATION sec_mallory;
GRANT USAGE ON SCHEMA appfn, mal TO PUBLIC;

SELECT colcrypt.create_key('cust', 'cmk');
SELECT colcrypt.grant_key('cust', 'sec_app', 'all');
SELECT colcrypt.grant_key('cust', 'sec_clerk', 'encrypt');

CREATE TABLE customers (
    id     integer PRIMARY KEY,
    name   text,
    ssn    colcrypt.encrypted_text(cust),
    age    colcrypt.encrypted_int4(cust),
    email  colcrypt.encrypted_text(cust, deterministic)
);
INSERT INTO customers
SELECT g, 'name' || g, format('MARKER-%s-SSN', lpad(g::text, 4, '0')), 18 + (g * 37) % 60,
       format('MARKER-%s@example.com', g)
  FROM generate_series(1, 300) g;
GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO sec_app, sec_clerk, sec_mallory;

-- probe(sql): run a query as the current role and say whether any
-- plaintext ("MARKER") came back, in rows or in the error, and how far it
-- got.  Variables keep their values into the handler, so rows that leaked
-- before an error are still counted.
CREATE FUNCTION probe(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
    leaked integer := 0;
    st text;
    msg text;
    det text;
BEGIN
    FOR r IN EXECUTE sql LOOP
        n := n + 1;
        IF row_to_json(r)::text LIKE '%MARKER%' THEN
            leaked := leaked + 1;
        END IF;
    END LOOP;
    IF leaked > 0 THEN
        RETURN format('PLAINTEXT in %s of %s rows', leaked, n);
    END IF;
    RETURN format('%s rows, no plaintext', n);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN 'refused ' || st ||
        CASE WHEN leaked > 0 THEN format(' after PLAINTEXT in %s of %s rows', leaked, n) ELSE '' END ||
        CASE WHEN msg || coalesce(det, '') LIKE '%MARKER%' THEN ' (PLAINTEXT in the error)' ELSE '' END;
END
$$;

-- The same, for a statement that returns nothing: its outcome.
CREATE FUNCTION attempt(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    det text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN 'refused ' || st ||
        CASE WHEN msg || coalesce(det, '') LIKE '%MARKER%' THEN ' (PLAINTEXT in the error)' ELSE '' END;
END
$$;

-- What the application role sees, for comparison.
SET ROLE sec_app;
SELECT probe('SELECT id, ssn FROM customers WHERE id <= 3');
SELECT id, ssn, age, email FROM customers WHERE id <= 2 ORDER BY id;
RESET ROLE;
SET ROLE sec_mallory;
SELECT probe('SELECT id, ssn, age, email FROM customers');
SELECT probe('SELECT id, ssn::text FROM customers');
RESET ROLE;
