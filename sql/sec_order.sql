--
-- sec_order: no plan gives a role without decrypt rows in plaintext order.
-- An index that keeps plaintext order exists only when asked for by name
-- (ord_ops); every scan of one needs the decrypt privilege, checked at
-- each ExecutorRun (each FETCH too), whether or not anything compares.
--
CREATE INDEX cust_age ON customers (age colcrypt.encrypted_int4_ord_ops);
CREATE INDEX cust_ssn ON customers (ssn colcrypt.encrypted_text_ord_ops);
ANALYZE customers;

-- The application: the index serves ORDER BY and min().
SET ROLE sec_app;
SET enable_sort = off;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM customers ORDER BY age LIMIT 3;
SELECT id, age FROM customers ORDER BY age, id LIMIT 3;
SELECT min(age), max(age) FROM customers;
RESET enable_sort;
RESET enable_seqscan;
RESET ROLE;

-- Mallory, by every plan that could return rows in index order.
SET ROLE sec_mallory;
SET enable_sort = off;
SELECT probe('SELECT id FROM customers WHERE id <= 4 ORDER BY age');
SELECT probe('SELECT id FROM customers ORDER BY age LIMIT 10');
SELECT probe('SELECT id FROM customers ORDER BY ssn DESC LIMIT 10');
SET enable_seqscan = off;
SELECT probe('SELECT age FROM customers ORDER BY age');
SELECT probe('SELECT min(age) FROM customers');
SELECT probe('SELECT max(ssn) FROM customers');
SELECT probe('SELECT id FROM customers WHERE id < 10');
RESET enable_seqscan;
RESET enable_sort;
-- Sorting or comparing decrypts, and is refused the same.
SELECT probe('SELECT id FROM customers ORDER BY age LIMIT 10');
SELECT probe('SELECT min(age) FROM customers');
-- A merge join of two plaintext-order index scans.
SET enable_hashjoin = off;
SET enable_nestloop = off;
SELECT probe('SELECT a.id FROM customers a JOIN customers b ON a.ssn = b.ssn');
RESET enable_hashjoin;
RESET enable_nestloop;
-- In a prepared statement's generic plan.
SET plan_cache_mode = force_generic_plan;
PREPARE by_age(int) AS SELECT id FROM customers WHERE id < $1 ORDER BY age;
SET enable_sort = off;
SELECT probe('EXECUTE by_age(10)');
RESET enable_sort;
DEALLOCATE by_age;
RESET plan_cache_mode;
RESET ROLE;

-- A cursor the application opened, fetched from after SET ROLE.
BEGIN;
SET LOCAL ROLE sec_app;
SET LOCAL enable_sort = off;
DECLARE by_age CURSOR FOR SELECT id FROM customers ORDER BY age;
FETCH 2 FROM by_age;
SET LOCAL ROLE sec_mallory;
SAVEPOINT s;
FETCH 2 FROM by_age;
ROLLBACK TO s;
ROLLBACK;

-- A plan the application prepared, executed after SET ROLE.
SET ROLE sec_app;
SET enable_sort = off;
PREPARE youngest AS SELECT id FROM customers ORDER BY age LIMIT 5;
SELECT count(*) FROM (SELECT 1) x, LATERAL (SELECT probe('EXECUTE youngest')) p;
RESET ROLE;
SET ROLE sec_mallory;
SELECT probe('EXECUTE youngest');
RESET enable_sort;
RESET ROLE;
DEALLOCATE youngest;

-- A definer function of the application's may return what it chooses.
SET ROLE sec_app;
CREATE FUNCTION appfn.youngest_ids(n int) RETURNS SETOF int SECURITY DEFINER
    LANGUAGE sql AS $$SELECT id FROM public.customers ORDER BY age, id LIMIT n$$;
GRANT EXECUTE ON FUNCTION appfn.youngest_ids(int) TO PUBLIC;
RESET ROLE;
SET ROLE sec_mallory;
SELECT probe('SELECT * FROM appfn.youngest_ids(3)');
RESET ROLE;

-- CLUSTER would store the table itself in plaintext order.
SELECT try($$CLUSTER customers USING cust_age$$);
SELECT try($$ALTER TABLE customers CLUSTER ON cust_ssn$$);

-- A UNIQUE constraint's index keeps plaintext order too (the constraint
-- asks for it): scanning it is checked the same, and it clusters nothing.
CREATE TABLE uq_t (id int, ssn colcrypt.encrypted_text(cust) UNIQUE);
INSERT INTO uq_t SELECT id, ssn FROM customers;
GRANT SELECT ON uq_t TO sec_mallory;
SET ROLE sec_mallory;
SET enable_sort = off;
SET enable_seqscan = off;
SELECT probe('SELECT id FROM uq_t ORDER BY ssn LIMIT 5');
RESET enable_seqscan;
RESET enable_sort;
RESET ROLE;
SELECT try($$CLUSTER uq_t USING uq_t_ssn_key$$);
DROP TABLE uq_t;

-- The default class, asked for by omission, is refused for plain indexes.
SELECT try($$CREATE INDEX ON customers (age)$$);
SELECT try($$CREATE INDEX ON customers (age, id)$$);
SELECT try($$CREATE INDEX ON customers (id) INCLUDE (age)$$);
DROP INDEX customers_id_age_idx;
DROP INDEX cust_age;
DROP INDEX cust_ssn;
