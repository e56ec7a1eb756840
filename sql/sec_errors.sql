--
-- sec_errors: an error report sent to a client carries no plaintext the
-- session's role may not decrypt, even when the values were decrypted
-- for another role (inside a SECURITY DEFINER function) to build it.
--
CREATE TABLE err_t (id int, name text, ssn colcrypt.encrypted_text(cust) NOT NULL,
                    age colcrypt.encrypted_int4(cust) CHECK (age::int < 200));
CREATE TABLE err_u (ssn colcrypt.encrypted_text(cust));
CREATE UNIQUE INDEX err_u_ssn ON err_u (ssn colcrypt.encrypted_text_ord_ops);
INSERT INTO err_u SELECT ssn FROM customers WHERE id <= 3;
ALTER TABLE err_t OWNER TO sec_app;
ALTER TABLE err_u OWNER TO sec_app;
SET ROLE sec_app;
-- Copies a customer's row under a new id, with a bad age or no SSN.
CREATE FUNCTION appfn.copy_bad_age(cid int) RETURNS void SECURITY DEFINER LANGUAGE sql AS
    $$INSERT INTO public.err_t SELECT 1000 + id, name, ssn, 500 FROM public.customers WHERE id = cid$$;
CREATE FUNCTION appfn.copy_no_ssn(cid int) RETURNS void SECURITY DEFINER LANGUAGE sql AS
    $$INSERT INTO public.err_t SELECT 1000 + id, ssn::text, NULL, age FROM public.customers WHERE id = cid$$;
CREATE FUNCTION appfn.copy_dup(cid int) RETURNS void SECURITY DEFINER LANGUAGE sql AS
    $$INSERT INTO public.err_u SELECT ssn FROM public.customers WHERE id = cid$$;
CREATE FUNCTION appfn.ssn_number(cid int) RETURNS int SECURITY DEFINER LANGUAGE sql AS
    $$SELECT ssn::text::int FROM public.customers WHERE id = cid$$;
GRANT EXECUTE ON FUNCTION appfn.copy_bad_age(int), appfn.copy_no_ssn(int), appfn.copy_dup(int),
    appfn.ssn_number(int) TO PUBLIC;
RESET ROLE;

-- The application itself gets the whole report: it may read the values.
SET ROLE sec_app;
SELECT attempt('SELECT appfn.copy_bad_age(1)');
RESET ROLE;

-- Mallory gets the SQLSTATE and the message's form, no values.
SET ROLE sec_mallory;
\set VERBOSITY verbose
SELECT appfn.copy_bad_age(1);
SELECT appfn.copy_no_ssn(1);
SELECT appfn.copy_dup(2);
SELECT appfn.ssn_number(1);
\set VERBOSITY default
SELECT attempt('SELECT appfn.copy_bad_age(1)');
SELECT attempt('SELECT appfn.copy_no_ssn(2)');
SELECT attempt('SELECT appfn.copy_dup(3)');
SELECT attempt('SELECT appfn.ssn_number(2)');
-- Caught by the caller's own handler, the error is as bare.
DO $$
BEGIN
    PERFORM appfn.copy_bad_age(1);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'caught: % / % / %', SQLERRM,
        (SELECT d FROM (SELECT 1) x, LATERAL (SELECT NULL::text) y(d)), SQLSTATE;
END$$;
DO $$
DECLARE
    det text;
BEGIN
    PERFORM appfn.copy_no_ssn(3);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS det = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'caught detail: %', det;
END$$;
-- colcrypt's own errors keep their message: they never hold values.
SELECT ssn::text FROM customers WHERE appfn.mask_ssn(ssn) IS NOT NULL;
RESET ROLE;
