--
-- sec_input: whether input takes a ciphertext is not decided by settings
-- of the calling session when the code storing it runs as another role.
--
CREATE TABLE sec_accounts (owner name PRIMARY KEY, ssn colcrypt.encrypted_text(cust));
INSERT INTO sec_accounts VALUES ('alice', 'MARKER-ALICE-SSN'), ('sec_mallory', 'MARKER-MALLORY-SSN');
ALTER TABLE sec_accounts OWNER TO sec_app;
SET ROLE sec_app;
GRANT SELECT ON sec_accounts TO sec_mallory;
-- An application API that builds SQL from its argument.
CREATE FUNCTION appfn.set_ssn(who name, p text) RETURNS void SECURITY DEFINER LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('UPDATE public.sec_accounts SET ssn = %L WHERE owner = %L', p, who);
END$$;
CREATE FUNCTION appfn.set_ssn_sql(who name, p text) RETURNS void SECURITY DEFINER LANGUAGE sql AS
    $$UPDATE public.sec_accounts SET ssn = p::colcrypt.encrypted_text WHERE owner = who$$;
CREATE FUNCTION appfn.get_ssn(who name) RETURNS text SECURITY DEFINER LANGUAGE sql AS
    $$SELECT 'ends in ' || right(ssn::text, 8) FROM public.sec_accounts WHERE owner = who$$;
GRANT EXECUTE ON FUNCTION appfn.set_ssn(name, text), appfn.set_ssn_sql(name, text),
    appfn.get_ssn(name) TO sec_mallory;
RESET ROLE;

-- Mallory copies alice's ciphertext (he may read it) and hands it to the
-- application as his own SSN, under each setting he controls.
SET ROLE sec_mallory;
SELECT colcrypt.ciphertext(ssn) AS alice_ct FROM sec_accounts WHERE owner = 'alice' \gset
SELECT attempt(format('SELECT appfn.set_ssn(%L, %L)', 'sec_mallory', :'alice_ct'));
SET colcrypt.output = 'ciphertext';
SELECT attempt(format('SELECT appfn.set_ssn(%L, %L)', 'sec_mallory', :'alice_ct'));
SELECT attempt(format('SELECT appfn.set_ssn_sql(%L, %L)', 'sec_mallory', :'alice_ct'));
RESET colcrypt.output;
SET check_function_bodies = off;
SELECT attempt(format('SELECT appfn.set_ssn(%L, %L)', 'sec_mallory', :'alice_ct'));
SELECT attempt(format('SELECT appfn.set_ssn_sql(%L, %L)', 'sec_mallory', :'alice_ct'));
RESET check_function_bodies;
SELECT probe($q$SELECT appfn.get_ssn('sec_mallory')$q$);
RESET ROLE;
-- (A text argument cast to the encrypted type is plaintext by definition:
-- set_ssn_sql stored the string "colcrypt:..." itself, not alice's value.)
SELECT owner, ssn::text = 'MARKER-ALICE-SSN' AS holds_alices_ssn,
       ssn::text LIKE 'colcrypt:%' AS holds_the_string FROM sec_accounts ORDER BY owner;

-- The application's own session moving ciphertext (a restore, say) still
-- may: the settings are its own.
SET ROLE sec_app;
SET colcrypt.output = 'ciphertext';
UPDATE sec_accounts SET ssn = :'alice_ct' WHERE owner = 'alice';
RESET colcrypt.output;
SELECT attempt(format('UPDATE sec_accounts SET ssn = %L WHERE owner = %L', :'alice_ct', 'alice'));
RESET ROLE;

-- A role that may not decrypt stores the ciphertext as it is anyway: it
-- learns nothing by it (its copy reads back only for roles that could
-- read the original).
CREATE TABLE mallory_copy (ssn colcrypt.encrypted_text(cust));
GRANT SELECT, INSERT ON mallory_copy TO sec_mallory;
SET ROLE sec_mallory;
SELECT attempt(format('INSERT INTO mallory_copy VALUES (%L)', :'alice_ct'));
SELECT probe('SELECT ssn FROM mallory_copy');
RESET ROLE;
SELECT ssn FROM mallory_copy;
DROP TABLE mallory_copy;
