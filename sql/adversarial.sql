--
-- adversarial: hostile input, for randomized (AES-256-GCM) and deterministic
-- (AES-256-SIV) columns of text, bytea, int4, int8, numeric and jsonb.
-- Every hostile case is refused with a clear error and a SQLSTATE: never a
-- crash, never garbage, never the plaintext in a message.  The few values
-- that are accepted are accepted by design, and the comments say why.
--
-- Not repeated here: ciphertext.sql (text and binary forms, the output
-- modes, and one example each of a malformed text form, a tampered,
-- truncated or relabelled text value and a ciphertext moved to another
-- key), types.sql and bytea_type.sql (invalid plaintext input of every
-- type), privileges.sql (roles without grants), lifecycle.sql (key states
-- and shredding), deterministic.sql (equality on ciphertext).  Here the
-- same attacks are run systematically, over every region of the envelope,
-- every length, every pair of columns and both ways a value can reach a
-- table: its ciphertext text form, and its envelope bytes written straight
-- in through a binary-compatible cast (as a superuser could).
--
-- Outcomes are reported as "refused: SQLSTATE: message (detail)" when the
-- value is not stored, "stored, read: SQLSTATE: ..." when it is stored and
-- refused when read, or what was read back.  Ciphertexts are random and
-- never shown.  In the grouped tables <T> stands for the column's own type.
--
CREATE SCHEMA adv;
SET search_path = adv, public;
SELECT colcrypt.create_key('adv_a', 'cmk') AS adv_a, colcrypt.create_key('adv_b', 'cmk') AS adv_b;
CREATE ROLE adv_app;      -- encrypt and decrypt with adv_a, nothing with adv_b
CREATE ROLE adv_writer;   -- encrypt with adv_a only
SELECT colcrypt.grant_key('adv_a', 'adv_app', 'all'), colcrypt.grant_key('adv_a', 'adv_writer', 'encrypt');
GRANT USAGE ON SCHEMA adv TO adv_app, adv_writer;

-- One value per column, under adv_a version 1.
CREATE TABLE src (
    t_r  colcrypt.encrypted_text(adv_a),
    t_d  colcrypt.encrypted_text(adv_a, deterministic),
    b_r  colcrypt.encrypted_bytea(adv_a),
    b_d  colcrypt.encrypted_bytea(adv_a, deterministic),
    i4_r colcrypt.encrypted_int4(adv_a),
    i4_d colcrypt.encrypted_int4(adv_a, deterministic),
    i8_r colcrypt.encrypted_int8(adv_a),
    i8_d colcrypt.encrypted_int8(adv_a, deterministic),
    n_r  colcrypt.encrypted_numeric(adv_a),
    n_d  colcrypt.encrypted_numeric(adv_a, deterministic),
    j_r  colcrypt.encrypted_jsonb(adv_a),
    j_d  colcrypt.encrypted_jsonb(adv_a, deterministic)
);
INSERT INTO src VALUES ('Grüße, secret', 'Grüße, secret', '\x00ff0001', '\x00ff0001',
    -42, -42, 9000000000, 9000000000, 3.14159, 3.14159,
    '{"a": [1, "x"], "b": null}', '{"a": [1, "x"], "b": null}');
-- Where hostile values go: the same columns under adv_a (sink) and adv_b (sink_b).
CREATE TABLE sink (id integer, LIKE src);
DO $$ BEGIN
    EXECUTE (SELECT 'CREATE TABLE sink_b (id integer, ' ||
                    string_agg(format('%I %s', attname, replace(format_type(atttypid, atttypmod), 'adv_a', 'adv_b')),
                               ', ' ORDER BY attnum) || ')'
               FROM pg_attribute WHERE attrelid = 'src'::regclass AND attnum > 0);
END $$;
GRANT SELECT, INSERT, DELETE ON sink, sink_b TO adv_app, adv_writer;
-- adv_a gets a version 2, the active one; the values above stay under 1.
SELECT colcrypt.rotate_key('adv_a');

-- The envelope of each value, and its plaintext as text.
CREATE FUNCTION tf(env bytea) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'colcrypt:' || translate(encode(env, 'base64'), E'\n', '') $$;
CREATE FUNCTION env(ct text) RETURNS bytea LANGUAGE sql IMMUTABLE
    AS $$ SELECT decode(substr(ct, 10), 'base64') $$;
CREATE FUNCTION flip(env bytea, pos integer, mask integer) RETURNS bytea LANGUAGE sql IMMUTABLE
    AS $$ SELECT set_byte(env, pos, get_byte(env, pos) # mask) $$;
CREATE FUNCTION put32(env bytea, pos integer, v bigint) RETURNS bytea LANGUAGE sql IMMUTABLE
    AS $$ SELECT overlay(env PLACING decode(lpad(to_hex(v), 8, '0'), 'hex') FROM pos + 1 FOR 4) $$;
CREATE TABLE cols AS
    SELECT attname::text AS col, attnum AS ord, format_type(atttypid, NULL) AS typ,
           CASE WHEN attname LIKE '%\_d' THEN 'SIV' ELSE 'GCM' END AS alg
      FROM pg_attribute WHERE attrelid = 'src'::regclass AND attnum > 0;
CREATE TABLE envs (col text, env bytea, plain text);
DO $$
DECLARE c text;
BEGIN
    FOR c IN SELECT col FROM cols ORDER BY ord LOOP
        EXECUTE format('INSERT INTO envs SELECT %L, env(colcrypt.ciphertext(%I)), %I::text FROM src', c, c, c);
    END LOOP;
END $$;
SELECT e.col, c.alg, length(e.env) AS envelope_bytes, e.plain FROM envs e JOIN cols c USING (col) ORDER BY c.ord;

-- readback(tbl, col, expect): read row 0 of tbl back (its output function:
-- plaintext, or the ciphertext form for a role that may not decrypt),
-- report, delete it.
CREATE FUNCTION readback(tbl text, col text, expect text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v text; info jsonb; st text; msg text; det text; r text;
BEGIN
    BEGIN
        EXECUTE format('SELECT format(%L, %I), colcrypt.inspect(%I) FROM %I WHERE id = 0', '%s', col, col, tbl) INTO v, info;
        r := CASE WHEN v IS NOT DISTINCT FROM expect THEN 'read back the original'
                  WHEN v LIKE 'colcrypt:%' THEN 'read back its ciphertext form'
                  ELSE 'read back ' || coalesce(quote_literal(v), 'NULL') END ||
             format(', stored as %s under %s v%s', info->>'algorithm', info->>'key', info->>'key_version');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
        r := 'stored, read: ' || st || ': ' || msg || coalesce(' (' || nullif(det, '') || ')', '');
    END;
    EXECUTE format('DELETE FROM %I WHERE id = 0', tbl);
    RETURN r;
END $$;
-- feed(tbl, col, ct, expect): insert the text form ct into tbl.col in
-- ciphertext mode (as a restore would), then read it back in plaintext mode.
CREATE FUNCTION feed(tbl text, col text, ct text, expect text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text;
BEGIN
    BEGIN
        PERFORM set_config('colcrypt.output', 'ciphertext', true);
        EXECUTE format('INSERT INTO %I (id, %I) VALUES (0, %L)', tbl, col, ct);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
        RETURN 'refused: ' || st || ': ' || msg || coalesce(' (' || nullif(det, '') || ')', '');
    END;
    PERFORM set_config('colcrypt.output', 'plaintext', true);
    RETURN readback(tbl, col, expect);
END $$;
-- feed_raw(tbl, col, env, expect): the same with the envelope bytes made a
-- value of the column's type by binary-compatible casts (no input function,
-- no check but the one storing into a column applies), then read back.
CREATE CAST (bytea AS colcrypt.encrypted_text) WITHOUT FUNCTION;
CREATE CAST (colcrypt.encrypted_text AS colcrypt.encrypted_bytea) WITHOUT FUNCTION;
CREATE CAST (colcrypt.encrypted_text AS colcrypt.encrypted_int4) WITHOUT FUNCTION;
CREATE CAST (colcrypt.encrypted_text AS colcrypt.encrypted_int8) WITHOUT FUNCTION;
CREATE CAST (colcrypt.encrypted_text AS colcrypt.encrypted_numeric) WITHOUT FUNCTION;
CREATE CAST (colcrypt.encrypted_text AS colcrypt.encrypted_jsonb) WITHOUT FUNCTION;
CREATE FUNCTION feed_raw(tbl text, col text, env bytea, expect text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    typ text; st text; msg text; det text;
BEGIN
    SELECT format_type(atttypid, NULL) INTO typ FROM pg_attribute WHERE attrelid = tbl::regclass AND attname = col;
    BEGIN
        EXECUTE format('INSERT INTO %I (id, %I) VALUES (0, $1::colcrypt.encrypted_text::%s)', tbl, col, typ) USING env;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
        RETURN 'refused: ' || st || ': ' || msg || coalesce(' (' || nullif(det, '') || ')', '');
    END;
    RETURN readback(tbl, col, expect);
END $$;
-- t_r <-> t_d, ...
CREATE FUNCTION other_kind(col text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT left(col, -1) || CASE right(col, 1) WHEN 'r' THEN 'd' ELSE 'r' END $$;
-- The column's own type name in a result becomes <T>.
CREATE FUNCTION norm(r text, col text) RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT replace(r, (SELECT substr(typ, 10) FROM cols c WHERE c.col = norm.col), '<T>') $$;

-- Unchanged, both ways in give back every value as it was.
SELECT c.col, feed('sink', c.col, tf(e.env), e.plain) AS text_form, feed_raw('sink', c.col, e.env, e.plain) AS envelope
  FROM envs e JOIN cols c USING (col) ORDER BY c.ord;

--
-- Tampering: one bit (or field) changed in each region of the envelope.
-- Header fields the parser checks are refused on input; a changed key id
-- makes colcrypt move the value to the column's key, which means
-- decrypting it, which fails (no such key: 42704; another key's: XX001);
-- the rest (key version, nonce, body, tag) is
-- well-formed, so stored as is, and refused when read: the header is the
-- associated data, so nothing in it can change without breaking the tag.
--
SELECT key_id AS id_b FROM colcrypt.keys WHERE name = 'adv_b' \gset
CREATE TABLE regions (ord integer, region text, tbl text);
INSERT INTO regions VALUES
    (1, 'format version 1 -> 0', 'sink'),
    (2, 'algorithm: unknown (xor 4)', 'sink'),
    (3, 'algorithm: GCM <-> SIV', 'sink'),
    (4, 'type: unknown (xor 16)', 'sink'),
    (5, 'type: another valid type', 'sink'),
    (6, 'flags: a reserved bit', 'sink'),
    (7, 'key id: lowest bit', 'sink'),
    (8, 'key id: highest bit', 'sink'),
    (9, 'key id: adv_b''s, into the adv_a column', 'sink'),
    (10, 'key id: adv_b''s, into an adv_b column', 'sink_b'),
    (11, 'key id: 0 (the transit key)', 'sink'),
    (12, 'key version 1 -> 0', 'sink'),
    (13, 'key version 1 -> 2 (exists, active)', 'sink'),
    (14, 'key version 1 -> 2^32 - 1', 'sink'),
    (15, 'nonce: first byte', 'sink'),
    (16, 'nonce: last byte', 'sink'),
    (17, 'body: first byte', 'sink'),
    (18, 'body: last byte', 'sink'),
    (19, 'tag: first byte', 'sink'),
    (20, 'tag: last byte, top bit', 'sink'),
    (21, 'flags: the padded bit', 'sink');
CREATE TABLE tampered AS
SELECT c.ord AS cord, c.col, c.alg, r.ord, r.region, r.tbl, e.plain,
       CASE r.ord
         WHEN 1 THEN flip(e.env, 0, 1)
         WHEN 2 THEN flip(e.env, 1, 4)
         WHEN 3 THEN flip(e.env, 1, 3)
         WHEN 4 THEN flip(e.env, 2, 16)
         WHEN 5 THEN set_byte(e.env, 2, CASE get_byte(e.env, 2) WHEN 1 THEN 2 ELSE 1 END)
         WHEN 6 THEN flip(e.env, 3, 2)
         WHEN 7 THEN flip(e.env, 7, 1)
         WHEN 8 THEN flip(e.env, 4, 128)
         WHEN 9 THEN put32(e.env, 4, :id_b)
         WHEN 10 THEN put32(e.env, 4, :id_b)
         WHEN 11 THEN put32(e.env, 4, 0)
         WHEN 12 THEN put32(e.env, 8, 0)
         WHEN 13 THEN put32(e.env, 8, 2)
         WHEN 14 THEN put32(e.env, 8, 4294967295)
         WHEN 15 THEN CASE c.alg WHEN 'GCM' THEN flip(e.env, 12, 1) END
         WHEN 16 THEN CASE c.alg WHEN 'GCM' THEN flip(e.env, 23, 1) END
         WHEN 17 THEN flip(e.env, CASE c.alg WHEN 'GCM' THEN 24 ELSE 12 END, 1)
         WHEN 18 THEN flip(e.env, length(e.env) - 17, 1)
         WHEN 19 THEN flip(e.env, length(e.env) - 16, 1)
         WHEN 20 THEN flip(e.env, length(e.env) - 1, 128)
         WHEN 21 THEN flip(e.env, 3, 1)
       END AS env
  FROM envs e JOIN cols c USING (col) CROSS JOIN regions r;
DELETE FROM tampered WHERE env IS NULL;    -- SIV has no nonce
CREATE TABLE tamper_results AS
SELECT cord, col, ord, region, feed(tbl, col, tf(env), plain) AS text_form, feed_raw(tbl, col, env, plain) AS envelope
  FROM tampered;
SELECT region, string_agg(col, ' ' ORDER BY cord) AS columns, norm(text_form, col) AS text_form, norm(envelope, col) AS envelope
  FROM tamper_results GROUP BY ord, region, 3, 4 ORDER BY ord, min(cord);
-- The same, read without the batch scan (value by value): same outcomes.
SET colcrypt.batch_scan = off;
SELECT count(*) AS cases, count(*) FILTER (WHERE feed(t.tbl, t.col, tf(t.env), t.plain) = r.text_form
                                             AND feed_raw(t.tbl, t.col, t.env, t.plain) = r.envelope) AS same_outcome
  FROM tampered t JOIN tamper_results r USING (col, ord);
RESET colcrypt.batch_scan;

-- Every single bit of a randomized text value and of a deterministic int8
-- value flipped in turn, both ways in: none is ever read back.
CREATE TABLE bitflips AS
SELECT c.col, c.alg, b AS bit, feed('sink', c.col, tf(flip(e.env, b / 8, 1 << (b % 8))), e.plain) AS text_form,
       feed_raw('sink', c.col, flip(e.env, b / 8, 1 << (b % 8)), e.plain) AS envelope
  FROM envs e JOIN cols c USING (col), generate_series(0, 8 * length(e.env) - 1) b
 WHERE c.col IN ('t_r', 'i8_d');
SELECT col, CASE WHEN bit < 96 THEN 'header' ELSE 'nonce, body, tag' END AS bits, count(*) AS flips,
       split_part(text_form, ':', 1) || ':' || split_part(text_form, ':', 2) AS text_form,
       split_part(envelope, ':', 1) || ':' || split_part(envelope, ':', 2) AS envelope
  FROM bitflips GROUP BY 1, 2, 4, 5 ORDER BY 1 DESC, min(bit);
SELECT count(*) AS flips, count(*) FILTER (WHERE text_form LIKE 'read back%' OR envelope LIKE 'read back%') AS read_back
  FROM bitflips;

-- Comparing: "=" on a deterministic column compares ciphertexts and
-- decrypts nothing, so a tampered value matches nothing (no error, no
-- wrong row); anything that decrypts it fails.
SET colcrypt.output = ciphertext;
DO $$ BEGIN
    EXECUTE format('INSERT INTO sink (id, t_r, t_d) VALUES (1, %L, %L)',
                   (SELECT tf(flip(env, length(env) - 1, 1)) FROM envs WHERE col = 't_r'),
                   (SELECT tf(flip(env, length(env) - 1, 1)) FROM envs WHERE col = 't_d'));
END $$;
RESET colcrypt.output;
SELECT colcrypt.inspect(t_r)->>'algorithm' AS t_r, colcrypt.inspect(t_d)->>'algorithm' AS t_d FROM sink;
SELECT count(*) AS det_matches FROM sink WHERE t_d = 'Grüße, secret';
SELECT try($$SELECT count(*) FROM adv.sink WHERE t_r = 'Grüße, secret'$$) AS randomized_equality;
SELECT try($$SELECT count(*) FROM adv.sink WHERE t_d > 'A'$$) AS det_range;
SELECT try($$SELECT upper(t_d) FROM adv.sink$$) AS det_function;
DELETE FROM sink;

--
-- Truncation: every length from 0 to the whole envelope, and one byte more.
--
CREATE TABLE cut AS
SELECT c.ord AS cord, c.col, c.alg, n, e.plain, length(e.env) AS whole,
       CASE WHEN n <= length(e.env) THEN substr(e.env, 1, n) ELSE e.env || '\x00'::bytea END AS env
  FROM envs e JOIN cols c USING (col), generate_series(0, 100) n WHERE n <= length(e.env) + 1;
CREATE TABLE cut_results AS
SELECT cord, col, alg, n,
       CASE WHEN n = 0 THEN '0: nothing'
            WHEN n < 12 THEN '1-11: inside the header'
            WHEN n < CASE alg WHEN 'GCM' THEN 40 ELSE 28 END THEN '12-: header, less than nonce and tag'
            WHEN n < whole THEN 'header, nonce and tag, body cut short'
            WHEN n = whole THEN 'whole'
            ELSE 'one byte appended' END AS lengths,
       feed('sink', col, tf(env), plain) AS text_form, feed_raw('sink', col, env, plain) AS envelope
  FROM cut;
SELECT alg, lengths, count(*) AS cases, string_agg(DISTINCT col COLLATE "C", ' ') AS columns,
       regexp_replace(norm(text_form, col), 'this ciphertext has \d+', 'this ciphertext has <n>') AS text_form,
       regexp_replace(norm(envelope, col), 'this ciphertext has \d+', 'this ciphertext has <n>') AS envelope
  FROM cut_results GROUP BY alg, lengths, 5, 6 ORDER BY alg, min(n), min(cord);

--
-- Values swapped between columns: every value into every column of the
-- same key (sink) and of the other key (sink_b).
--
-- The associated data binds the key id, key version, algorithm and
-- plaintext type, not the column, on purpose: deterministic joins across
-- tables under one key, INSERT ... SELECT and dump and restore need a value
-- to be valid in any column of its key, type and kind.  So a value copied
-- into another column of the same key, type and kind is accepted as is and
-- reads back the original: by design (README, "What the envelope binds").
-- A value of the same type under another key or of the other kind is not
-- stored as is: colcrypt moves it to the column's key and kind by
-- decrypting and re-encrypting it, which needs the decrypt privilege on
-- its key and the encrypt privilege on the column's (below, by role).  A
-- value of another type is refused.
--
CREATE TABLE swaps AS
SELECT s.ord AS sord, s.col AS from_col, d.ord AS dord, d.col AS to_col, tbl,
       CASE WHEN s.typ <> d.typ THEN 'another type'
            WHEN tbl = 'sink_b' THEN 'same type, other key' || CASE WHEN s.alg <> d.alg THEN ' and kind' ELSE '' END
            WHEN s.alg <> d.alg THEN 'same type and key, other kind'
            WHEN s.col = d.col THEN 'same type, key and kind'
       END AS relation,
       CASE WHEN s.typ <> d.typ THEN 5 WHEN tbl = 'sink_b' THEN 3 + (s.alg <> d.alg)::int
            WHEN s.alg <> d.alg THEN 2 ELSE 1 END AS rel_ord,
       feed(tbl, d.col, tf(e.env), e.plain) AS text_form, feed_raw(tbl, d.col, e.env, e.plain) AS envelope
  FROM envs e JOIN cols s USING (col) CROSS JOIN cols d CROSS JOIN (VALUES ('sink'), ('sink_b')) t(tbl);
SELECT relation, count(*) AS pairs,
       regexp_replace(norm(text_form, to_col), 'type encrypted_\w+', 'type <other>') AS text_form,
       regexp_replace(norm(envelope, to_col), 'type encrypted_\w+', 'type <other>') AS envelope
  FROM swaps GROUP BY 1, 3, 4 ORDER BY min(rel_ord), min(dord);
-- Copies between two tables: the same ciphertext, and joins on it.
CREATE TABLE copy_a (id integer, t colcrypt.encrypted_text(adv_a, deterministic));
CREATE TABLE copy_b (id integer, t colcrypt.encrypted_text(adv_a, deterministic));
INSERT INTO copy_a SELECT 1, t_d FROM src;
INSERT INTO copy_b SELECT 2, t FROM copy_a;
SELECT a.t, colcrypt.ciphertext(a.t) = colcrypt.ciphertext(b.t) AS same_ciphertext,
       colcrypt.inspect(b.t)->>'key_version' AS version
  FROM copy_a a JOIN copy_b b ON a.t = b.t;

-- By role.  adv_app may decrypt adv_a but not use adv_b; adv_writer may
-- only encrypt with adv_a.  Moving ciphertext it cannot decrypt is all the
-- writer may do.
CREATE TABLE src_b (col text, env bytea);
GRANT SELECT ON ALL TABLES IN SCHEMA adv TO adv_app, adv_writer;
INSERT INTO sink_b (id, t_r, i8_d) SELECT 1, t_r, i8_d FROM src;
INSERT INTO src_b SELECT 't_r', env(colcrypt.ciphertext(t_r)) FROM sink_b WHERE id = 1;
INSERT INTO src_b SELECT 'i8_d', env(colcrypt.ciphertext(i8_d)) FROM sink_b WHERE id = 1;
DELETE FROM sink_b;
SET ROLE adv_app;
SELECT what, col, text_form FROM (
    SELECT 1 AS o, 'adv_b value into adv_a column' AS what, b.col, feed('sink', b.col, tf(b.env), e.plain) AS text_form
      FROM src_b b JOIN envs e USING (col)
    UNION ALL
    SELECT 2, 'adv_a value into adv_b column', e.col, feed('sink_b', e.col, tf(e.env), e.plain)
      FROM envs e WHERE col IN ('t_r', 'i8_d')
    UNION ALL
    SELECT 3, 'adv_a value, other kind', e.col, feed('sink', other_kind(e.col), tf(e.env), e.plain)
      FROM envs e WHERE col IN ('t_r', 'i8_d')) u
 ORDER BY o, col COLLATE "C";
RESET ROLE;
SET ROLE adv_writer;
SELECT what, col, text_form FROM (
    SELECT 1 AS o, 'own value, same column' AS what, e.col, feed('sink', e.col, tf(e.env), e.plain) AS text_form
      FROM envs e WHERE col IN ('t_r', 'i8_d')
    UNION ALL
    SELECT 2, 'own value, other kind', e.col, feed('sink', other_kind(e.col), tf(e.env), e.plain)
      FROM envs e WHERE col IN ('t_r', 'i8_d')
    UNION ALL
    SELECT 3, 'adv_b value into adv_a column', b.col, feed('sink', b.col, tf(b.env), e.plain)
      FROM src_b b JOIN envs e USING (col)) u
 ORDER BY o, col COLLATE "C";
RESET ROLE;

--
-- Keys: a destroyed version's values, unknown keys, the transit key.
--
SELECT colcrypt.create_key('adv_c', 'cmk');
CREATE TABLE doomed (id integer, r colcrypt.encrypted_text(adv_c), d colcrypt.encrypted_int8(adv_c, deterministic));
INSERT INTO doomed VALUES (1, 'doomed text', 7);
CREATE TABLE doomed_envs AS
    SELECT 'r' AS col, env(colcrypt.ciphertext(r)) AS env FROM doomed
    UNION ALL SELECT 'd', env(colcrypt.ciphertext(d)) FROM doomed;
SELECT colcrypt.rotate_key('adv_c');
SELECT colcrypt.set_key_state('adv_c', 1, 'destroyed', force => true);
SELECT try($$SELECT r::text FROM adv.doomed$$) AS read_r;
SELECT try($$SELECT d::bigint FROM adv.doomed$$) AS read_d;
SELECT try($$SELECT count(*) FROM adv.doomed WHERE r = 'doomed text'$$) AS compare_r;
SELECT try($$SELECT count(*) FROM adv.doomed WHERE d = 7::bigint$$) AS compare_d;
-- Its ciphertext loads into its own column (a restore), and stays unreadable;
-- into another key's column it would have to be decrypted.
CREATE TABLE doomed_sink (id integer, r colcrypt.encrypted_text(adv_c), d colcrypt.encrypted_int8(adv_c, deterministic));
SELECT col, feed('doomed_sink', col, tf(env), NULL) AS text_form, feed_raw('doomed_sink', col, env, NULL) AS envelope
  FROM doomed_envs ORDER BY col DESC;
SELECT col, feed('sink', CASE col WHEN 'r' THEN 't_r' ELSE 'i8_d' END, tf(env), NULL) AS text_form,
       feed_raw('sink', CASE col WHEN 'r' THEN 't_r' ELSE 'i8_d' END, env, NULL) AS envelope
  FROM doomed_envs ORDER BY col DESC;
-- A key id no key has (from another database, say): its ciphertext cannot
-- be stored, where storing it means moving it.
SELECT feed('sink', 't_r', tf(put32(env, 4, 12345)), plain) AS unknown_key_id,
       feed('sink', 't_r', tf(put32(put32(env, 4, 12345), 8, 0)), plain) AS and_version_0
  FROM envs WHERE col = 't_r';
-- A genuine transit value (a literal before its column's key applies)
-- moves to the column's key; a forged one fails authentication.
SELECT colcrypt.ciphertext('transit value'::colcrypt.encrypted_text) AS transit_ct \gset
-- (The transit key's generation depends on what the server did before.)
SELECT feed('sink', 't_r', :'transit_ct', 'transit value') AS genuine,
       feed('sink', 't_d', :'transit_ct', 'transit value') AS into_deterministic;
SELECT regexp_replace(feed('sink', 't_r', tf(flip(env(:'transit_ct'), 30, 1)), 'transit value'),
                      'version \d+', 'version <generation>') AS forged;

--
-- Huge values.
--
-- 4 MB text, randomized and deterministic, and its 5.3 MB text form fed
-- back; a deterministic lookup of it.
INSERT INTO sink (id, t_r, t_d) VALUES (1, repeat('0123456789abcdef', 262144), repeat('0123456789abcdef', 262144));
SELECT length(t_r) AS r_chars, md5(t_r) = md5(repeat('0123456789abcdef', 262144)) AS r_same,
       length(t_d) AS d_chars, md5(t_d) = md5(repeat('0123456789abcdef', 262144)) AS d_same,
       length(colcrypt.ciphertext(t_r)) AS text_form_chars
  FROM sink WHERE id = 1;
SELECT feed('sink', 't_r', colcrypt.ciphertext(t_r), t_r::text) AS text_form_fed_back,
       feed('sink', 't_d', colcrypt.ciphertext(t_d), t_d::text) AS det_fed_back
  FROM sink WHERE id = 1;
SELECT count(*) AS found FROM sink WHERE t_d = repeat('0123456789abcdef', 262144);
DELETE FROM sink;
-- A text form longer than any valid one of its type (an int4 envelope
-- holds 4 bytes), and a 1 MB body with a header and tag of a text value.
-- (A decoded length cannot overflow: the text form's decoder counts in
-- size_t, and an input string is at most 1 GB.)
SELECT feed('sink', 'i4_r', tf(substr(env, 1, 24) || decode(repeat('00', 1048576), 'hex') || substr(env, 29)), plain) AS int4_1mb,
       feed_raw('sink', 'i4_r', substr(env, 1, 24) || decode(repeat('00', 1048576), 'hex') || substr(env, 29), plain) AS int4_1mb_envelope
  FROM envs WHERE col = 'i4_r';
SELECT feed('sink', 't_r', tf(substr(env, 1, 24) || decode(repeat('00', 1048576), 'hex') || substr(env, length(env) - 15)), plain) AS text_1mb
  FROM envs WHERE col = 't_r';
-- An over-long key name as type modifier: the identifier is truncated to
-- 63 bytes by the parser (NOTICE), a string is refused as it is.
SELECT try(format('SELECT ''x''::colcrypt.encrypted_text(%s)', repeat('k', 70)));
SELECT try(format('SELECT ''x''::colcrypt.encrypted_text(%L)', repeat('k', 70)));
SELECT try(format('CREATE TABLE adv.longname (v colcrypt.encrypted_text(%L))', repeat('k', 1000)));

--
-- NUL bytes and invalid encodings.
--
-- bytea holds NULs, both kinds, and distinguishes '\x00' from '\x0000'.
INSERT INTO sink (id, b_r, b_d) VALUES (1, '\x00', '\x00'), (2, '\x0000', '\x0000'), (3, '\x610062', '\x610062');
SELECT id, b_r, b_d, length(b_d) AS bytes FROM sink ORDER BY id;
SELECT id FROM sink WHERE b_d = '\x00'::bytea;
SELECT count(DISTINCT colcrypt.ciphertext(b_d)) AS distinct_det_ciphertexts FROM sink;
DELETE FROM sink;
-- text cannot hold a NUL, nor invalid UTF-8: PostgreSQL refuses them before
-- colcrypt sees a value (convert_from's message names the bytes of its own
-- argument).
SELECT try($$INSERT INTO adv.sink (id, t_r) VALUES (1, E'a\000b')$$);
SELECT try($$INSERT INTO adv.sink (id, t_d) VALUES (1, chr(0))$$);
SELECT try($$INSERT INTO adv.sink (id, t_r) VALUES (1, convert_from('\x61c362', 'UTF8'))$$);
-- 'a\000b' with standard_conforming_strings is six characters, stored as such.
INSERT INTO sink (id, t_r) VALUES (1, 'a\000b');
SELECT t_r, length(t_r) FROM sink;
DELETE FROM sink;
-- jsonb's own refusals keep their SQLSTATE, without the value.
SELECT try($$INSERT INTO adv.sink (id, j_r) VALUES (1, '{"secret": "\u0000"}')$$);
SELECT try($$INSERT INTO adv.sink (id, j_d) VALUES (1, '{"secret": "\ud800"}')$$);
SELECT try($$INSERT INTO adv.sink (id, j_r) VALUES (1, '{"secret": 1} trailing')$$);
SELECT try($$INSERT INTO adv.sink (id, n_d) VALUES (1, 'secret')$$);

--
-- Malformed text forms (ciphertext mode, where input takes ciphertext).
--
SET colcrypt.output = ciphertext;
SELECT what, try(format('INSERT INTO adv.sink (id, t_r) VALUES (1, %L)', v)) AS text_column,
       try(format('INSERT INTO adv.sink (id, i4_d) VALUES (1, %L)', v)) AS int4_column
  FROM (VALUES ('url-safe alphabet', 'colcrypt:AQEBAA-_'),
               ('padding inside', 'colcrypt:AQ==AQEB'),
               ('a quantum of padding', 'colcrypt:AQEB===='),
               ('padding first', 'colcrypt:=AQE'),
               ('trailing newline', E'colcrypt:AQEB\n'),
               ('trailing space', 'colcrypt:AQEB '),
               ('tab inside', E'colcrypt:AQ\tEB'),
               ('hex instead of base64', 'colcrypt:\x01010100'),
               ('100,000 characters, then garbage', 'colcrypt:' || repeat('A', 100000) || '!'),
               ('prefix twice', 'colcrypt:colcrypt:AQEB'),
               ('prefix only', 'colcrypt:'),
               ('empty string', '')) v(what, v);
-- Not the text form (prefix not at the very start, or another spelling):
-- plaintext, which a text column stores and an int4 column refuses.
SELECT v AS input, try(format('INSERT INTO adv.sink (id, t_r) VALUES (1, %L)', v)) AS text_column,
       try(format('INSERT INTO adv.sink (id, i4_d) VALUES (1, %L)', v)) AS int4_column
  FROM (VALUES (' colcrypt:AQEB'), ('COLCRYPT:AQEB'), ('colcrypt AQEB'), ('colcrypt')) v(v);
RESET colcrypt.output;
SELECT t_r FROM sink ORDER BY t_r::text COLLATE "C";
DELETE FROM sink;
-- A text form with the right prefix is refused in plaintext mode too,
-- whatever follows.
SELECT try($$INSERT INTO adv.sink (id, t_r) VALUES (1, 'colcrypt:my secret note')$$);
-- The empty string, for each type.
SELECT c.col, try(format('INSERT INTO adv.sink (id, %I) VALUES (1, %L)', c.col, '')) AS empty_string
  FROM cols c ORDER BY c.ord;
SELECT count(*) FILTER (WHERE t_r::text = '') AS t_r, count(*) FILTER (WHERE t_d::text = '') AS t_d,
       count(*) FILTER (WHERE length(b_r::bytea) = 0) AS b_r, count(*) FILTER (WHERE length(b_d::bytea) = 0) AS b_d
  FROM sink;
DELETE FROM sink;

-- COPY names the line and column of a refused value, never the value (text
-- and csv COPY would otherwise add it to the error's context).
\getenv abs_builddir PG_ABS_BUILDDIR
\set copyfile :abs_builddir '/results/adversarial.copy'
\set VERBOSITY default
COPY (SELECT 1, '123-45-6789') TO :'copyfile';
COPY sink (id, i4_r) FROM :'copyfile';
\echo SQLSTATE :SQLSTATE
COPY (SELECT 1, '{"ssn": "123-45-6789"') TO :'copyfile' (FORMAT csv);
COPY sink (id, j_d) FROM :'copyfile' (FORMAT csv);
\echo SQLSTATE :SQLSTATE
COPY (SELECT 1, 'colcrypt:my secret note') TO :'copyfile';
COPY sink (id, t_r) FROM :'copyfile';
\echo SQLSTATE :SQLSTATE
COPY (SELECT 1, 'secret for adv_b') TO :'copyfile';
GRANT pg_read_server_files TO adv_app;
SET ROLE adv_app;
COPY sink_b (id, t_r) FROM :'copyfile';
\echo SQLSTATE :SQLSTATE
RESET ROLE;
REVOKE pg_read_server_files FROM adv_app;
SELECT count(*) AS nothing_stored FROM sink;

--
-- Casts and type modifiers.
--
-- First the binary-compatible casts made for writing envelopes in go.
DROP CAST (bytea AS colcrypt.encrypted_text);
DROP CAST (colcrypt.encrypted_text AS colcrypt.encrypted_bytea);
DROP CAST (colcrypt.encrypted_text AS colcrypt.encrypted_int4);
DROP CAST (colcrypt.encrypted_text AS colcrypt.encrypted_int8);
DROP CAST (colcrypt.encrypted_text AS colcrypt.encrypted_numeric);
DROP CAST (colcrypt.encrypted_text AS colcrypt.encrypted_jsonb);
-- Between keys: the value moves (re-encrypted) for whom may decrypt the
-- source and encrypt with the target, else 42501.
SELECT t_r::colcrypt.encrypted_text(adv_b) AS moved, colcrypt.inspect(t_r::colcrypt.encrypted_text(adv_b))->>'key' AS key,
       colcrypt.inspect(t_r::colcrypt.encrypted_text(adv_a, deterministic))->>'algorithm' AS to_deterministic
  FROM src;
SET ROLE adv_app;
SELECT try($$SELECT t_r::colcrypt.encrypted_text(adv_b) FROM adv.src$$);
RESET ROLE;
SET ROLE adv_writer;
SELECT try($$SELECT t_r::colcrypt.encrypted_text(adv_a, deterministic) FROM adv.src$$);
RESET ROLE;
-- Between types: no cast (the implicit casts to the plain types do not
-- chain), except what PostgreSQL does for any type through its text form
-- (as for text::bytea and jsonb::text): the plaintext's text for whom may
-- decrypt, the ciphertext form, refused by the other type, for whom not.
SELECT try($$SELECT i4_r::colcrypt.encrypted_int8 FROM adv.src$$);
SELECT t_r::colcrypt.encrypted_bytea AS text_as_bytea, j_r::colcrypt.encrypted_text AS jsonb_as_text,
       colcrypt.inspect(j_r::colcrypt.encrypted_text)->>'type' AS type
  FROM src;
SET ROLE adv_writer;
SELECT try($$SELECT t_r::colcrypt.encrypted_bytea FROM adv.src$$);
RESET ROLE;
-- Keys that do not exist, and malformed modifiers.
SELECT try($$SELECT 'x'::colcrypt.encrypted_text(nonexistent_key)$$);
SELECT try($$SELECT t_r::colcrypt.encrypted_text(nonexistent_key) FROM adv.src$$);
SELECT try($$CREATE TABLE adv.bad (v colcrypt.encrypted_text(nonexistent_key))$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text()$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text(adv_a, deterministic, extra)$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text(adv_a, determinstic)$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text(deterministic, adv_a)$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text(adv_a.x)$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text(NULL)$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text(1)$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text(-1)$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text('')$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text('#0')$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text('#536870912')$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text('#12x')$$);
SELECT try($$SELECT 'x'::colcrypt.encrypted_text('#12345')$$);
-- "#<key id>" is how a type modifier names a key missing from the catalog
-- (a restore); a key that exists is the same key under either name.
SELECT '#' || key_id AS adv_a_ref FROM colcrypt.keys WHERE name = 'adv_a' LIMIT 1 \gset
SELECT colcrypt.inspect('5'::colcrypt.encrypted_int4(:"adv_a_ref"))->>'key' AS key;

RESET search_path;
