--
-- sec_fkey: constraint machinery that compares plaintexts on behalf of a
-- writer answers only a writer who could ask the question himself.
-- PostgreSQL runs foreign key checks as the referenced table's owner; the
-- comparison then needs the decrypt privilege of the writer too.
--
CREATE TABLE pk_t (ssn colcrypt.encrypted_text(cust));
CREATE UNIQUE INDEX pk_t_ssn ON pk_t (ssn colcrypt.encrypted_text_ord_ops);
INSERT INTO pk_t SELECT ssn FROM customers WHERE id <= 20;
CREATE TABLE fk_t (id integer, ref colcrypt.encrypted_text(cust) REFERENCES pk_t (ssn));
GRANT SELECT, INSERT, UPDATE, DELETE ON fk_t, pk_t TO sec_app, sec_clerk, sec_mallory;

-- The application may: a present and an absent plaintext.
SET ROLE sec_app;
SELECT attempt($q$INSERT INTO fk_t VALUES (1, 'MARKER-0001-SSN')$q$);
SELECT attempt($q$INSERT INTO fk_t VALUES (2, 'MARKER-9999-SSN')$q$);
RESET ROLE;

-- The encrypt-only clerk guesses: the same answer for a right and a wrong
-- guess (42501), nothing inserted.
SET ROLE sec_clerk;
SELECT attempt($q$INSERT INTO fk_t VALUES (3, 'MARKER-0002-SSN')$q$);
SELECT attempt($q$INSERT INTO fk_t VALUES (3, 'MARKER-9998-SSN')$q$);
-- In a prepared statement, and deferred to COMMIT.
PREPARE ins(int, text) AS INSERT INTO fk_t VALUES ($1, $2);
SELECT attempt($q$EXECUTE ins(4, 'MARKER-0003-SSN')$q$);
SELECT attempt($q$EXECUTE ins(4, 'MARKER-9997-SSN')$q$);
DEALLOCATE ins;
RESET ROLE;
ALTER TABLE fk_t DROP CONSTRAINT fk_t_ref_fkey;
ALTER TABLE fk_t ADD FOREIGN KEY (ref) REFERENCES pk_t (ssn) DEFERRABLE INITIALLY DEFERRED;
SET ROLE sec_clerk;
BEGIN;
INSERT INTO fk_t VALUES (5, 'MARKER-0004-SSN');
COMMIT;
BEGIN;
INSERT INTO fk_t VALUES (5, 'MARKER-9996-SSN');
COMMIT;
BEGIN;
INSERT INTO fk_t VALUES (5, 'MARKER-0004-SSN');
SET CONSTRAINTS ALL IMMEDIATE;
ROLLBACK;
RESET ROLE;
ALTER TABLE fk_t DROP CONSTRAINT fk_t_ref_fkey;
ALTER TABLE fk_t ADD FOREIGN KEY (ref) REFERENCES pk_t (ssn);

-- Mallory copies a ciphertext from another table (allowed: the same key)
-- to ask whether it is in pk_t: refused whatever the answer.
SET ROLE sec_mallory;
SELECT attempt($q$INSERT INTO fk_t SELECT 3, ssn FROM customers WHERE id = 1$q$);
SELECT attempt($q$INSERT INTO fk_t SELECT 3, ssn FROM customers WHERE id = 250$q$);
-- Updating the referenced side asks whether referencing rows exist.
SELECT attempt($q$UPDATE pk_t SET ssn = (SELECT ssn FROM customers WHERE id = 299)
                  WHERE ssn = (SELECT ssn FROM pk_t LIMIT 1)$q$);
SELECT attempt($q$DELETE FROM pk_t$q$);
RESET ROLE;

-- A definer function of the application's may insert for anyone: its
-- owner asked.
SET ROLE sec_app;
CREATE FUNCTION appfn.add_ref(i int, s text) RETURNS void SECURITY DEFINER LANGUAGE sql AS
    $$INSERT INTO public.fk_t VALUES (i, s)$$;
GRANT EXECUTE ON FUNCTION appfn.add_ref(int, text) TO PUBLIC;
RESET ROLE;
SET ROLE sec_mallory;
SELECT attempt($q$SELECT appfn.add_ref(6, 'MARKER-0005-SSN')$q$);
RESET ROLE;
SELECT id, ref FROM fk_t ORDER BY id;

-- ON DELETE CASCADE: deleting a referenced row makes the owner's cascade
-- compare plaintexts for the deleting role.
CREATE TABLE fk_cascade (ref colcrypt.encrypted_text(cust) REFERENCES pk_t (ssn) ON DELETE CASCADE);
INSERT INTO fk_cascade SELECT ssn FROM pk_t LIMIT 3;
GRANT SELECT, DELETE ON fk_cascade TO sec_mallory;
SET ROLE sec_mallory;
SELECT attempt($q$DELETE FROM pk_t WHERE ctid = (SELECT min(ctid) FROM pk_t)$q$);
RESET ROLE;
SELECT count(*) AS cascade_rows FROM fk_cascade;

-- Deterministic columns reveal equality by design (README): a foreign key
-- over a det_ops unique index compares ciphertexts, for anyone.
CREATE TABLE pk_det (e colcrypt.encrypted_text(cust, deterministic));
CREATE UNIQUE INDEX pk_det_e ON pk_det (e colcrypt.encrypted_text_det_ops);
INSERT INTO pk_det SELECT email FROM customers WHERE id <= 5;
CREATE TABLE fk_det (e colcrypt.encrypted_text(cust, deterministic) REFERENCES pk_det (e));
GRANT INSERT ON fk_det TO sec_clerk;
SET ROLE sec_clerk;
SELECT attempt($q$INSERT INTO fk_det VALUES ('MARKER-1@example.com')$q$);
SELECT attempt($q$INSERT INTO fk_det VALUES ('MARKER-6@example.com')$q$);
RESET ROLE;

-- Uniqueness and exclusion checks run as the writer, who needs decrypt
-- for a plaintext-order index (ON CONFLICT arbiters too).
CREATE TABLE uniq_t (id int, ssn colcrypt.encrypted_text(cust));
CREATE UNIQUE INDEX uniq_t_ssn ON uniq_t (ssn colcrypt.encrypted_text_ord_ops);
INSERT INTO uniq_t SELECT id, ssn FROM customers WHERE id <= 5;
GRANT SELECT, INSERT, UPDATE ON uniq_t TO sec_clerk, sec_mallory;
SET ROLE sec_clerk;
SELECT attempt($q$INSERT INTO uniq_t VALUES (10, 'MARKER-0001-SSN')$q$);
SELECT attempt($q$INSERT INTO uniq_t VALUES (10, 'MARKER-9999-SSN')$q$);
SELECT attempt($q$INSERT INTO uniq_t VALUES (10, 'MARKER-0001-SSN') ON CONFLICT (ssn) DO NOTHING$q$);
SELECT attempt($q$INSERT INTO uniq_t VALUES (10, 'MARKER-9999-SSN') ON CONFLICT (ssn) DO NOTHING$q$);
RESET ROLE;
SET ROLE sec_mallory;
SELECT attempt($q$INSERT INTO uniq_t SELECT 11, ssn FROM customers WHERE id = 2$q$);
SELECT attempt($q$INSERT INTO uniq_t SELECT 11, ssn FROM customers WHERE id = 200$q$);
RESET ROLE;
CREATE TABLE excl_t (ssn colcrypt.encrypted_text(cust),
                     EXCLUDE USING btree (ssn colcrypt.encrypted_text_ord_ops WITH =));
INSERT INTO excl_t SELECT ssn FROM customers WHERE id <= 5;
-- (With the default class, which the constraint asks for, the same.)
SELECT try($$CREATE TABLE excl_default (ssn colcrypt.encrypted_text(cust), EXCLUDE USING btree (ssn WITH =))$$);
GRANT INSERT ON excl_t TO sec_clerk;
SET ROLE sec_clerk;
SELECT attempt($q$INSERT INTO excl_t VALUES ('MARKER-0001-SSN')$q$);
SELECT attempt($q$INSERT INTO excl_t VALUES ('MARKER-9999-SSN')$q$);
RESET ROLE;
SELECT count(*) AS uniq_rows FROM uniq_t;
SELECT count(*) AS excl_rows FROM excl_t;

-- The refusals on the writer's behalf are audited as such.
SELECT colcrypt.audit_flush();
SELECT DISTINCT role_name, detail FROM colcrypt.audit_log
 WHERE action = 'decrypt' AND outcome = 'denied' AND detail LIKE '%foreign key%' ORDER BY 1;
