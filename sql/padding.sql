--
-- padding: the "padded" option hides each value's length within a bucket
-- (the next power of two of at least 16 bytes, leaving room for the
-- padding marker; above 64 kB the next multiple of 64 kB).
--
SELECT colcrypt.create_key('padk', 'cmk');
CREATE TABLE pad_t (
    id   int PRIMARY KEY,
    t    colcrypt.encrypted_text(padk, padded),
    b    colcrypt.encrypted_bytea(padk, padded),
    j    colcrypt.encrypted_jsonb(padk, padded),
    n    colcrypt.encrypted_numeric(padk, padded),
    d    colcrypt.encrypted_text(padk, deterministic, padded),
    u    colcrypt.encrypted_text(padk)
);
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'pad_t'::regclass AND attnum > 1 ORDER BY attnum;
INSERT INTO pad_t
SELECT i, s, convert_to(s, 'UTF8'), jsonb_build_object('s', s), length(s),
       CASE WHEN i <> 6 THEN s END, s
  FROM (VALUES (1, ''), (2, 'a'), (3, 'fifteen chars!!'), (4, 'sixteen chars!!!'),
               (5, repeat('x', 100)), (6, repeat('é', 40000)), (7, 'sixteen chars!!!')) v(i, s);

-- Every value reads back as it was, through the batch scan and without it.
SELECT id, length(t), t = u AS same, length(b), j ->> 's' = t AS json_ok, n, coalesce(d = t, id = 6) AS det_ok FROM pad_t ORDER BY id;
SET colcrypt.batch_scan = off;
SELECT id, length(t), t = u AS same, length(b), j ->> 's' = t AS json_ok, n, coalesce(d = t, id = 6) AS det_ok FROM pad_t ORDER BY id;
RESET colcrypt.batch_scan;

-- What the envelope shows: the bucket, not the length.
SELECT id, colcrypt.inspect(t) ->> 'padded' AS padded, colcrypt.inspect(t) ->> 'padded_bytes' AS bucket,
       colcrypt.inspect(u) ->> 'plaintext_bytes' AS unpadded_length,
       octet_length(colcrypt.ciphertext(t)) AS ct_text_len
  FROM pad_t ORDER BY id;
-- Values of one bucket are stored in the same size.
SELECT count(DISTINCT pg_column_size(t)) AS sizes_of_short_values FROM pad_t WHERE id <= 3;
SELECT count(DISTINCT pg_column_size(u)) AS sizes_unpadded FROM pad_t WHERE id <= 3;
-- Numbers are padded too (numeric is variable-length).
SELECT colcrypt.inspect(n) ->> 'padded_bytes' FROM pad_t WHERE id = 6;

-- Deterministic and padded: equal plaintexts, equal ciphertexts; lookups
-- through a det_ops index.
CREATE INDEX pad_t_d ON pad_t (d colcrypt.encrypted_text_det_ops);
SET enable_seqscan = off;
SELECT id FROM pad_t WHERE d = 'sixteen chars!!!';
EXPLAIN (COSTS OFF) SELECT id FROM pad_t WHERE d = 'sixteen chars!!!';
RESET enable_seqscan;
SELECT a.id, colcrypt.ciphertext(a.d) = colcrypt.ciphertext(b.d) AS same_ciphertext
  FROM pad_t a JOIN pad_t b ON a.d = b.d AND a.id <> b.id ORDER BY a.id;

-- Moving values between padded and unpadded columns pads and unpads them.
CREATE TABLE pad_copy (id int, p colcrypt.encrypted_text(padk, padded), q colcrypt.encrypted_text(padk));
INSERT INTO pad_copy SELECT id, u, t FROM pad_t;
SELECT bool_and(p = q) AS equal, bool_and((colcrypt.inspect(p) ->> 'padded')::boolean) AS p_padded,
       bool_and(colcrypt.inspect(q) ->> 'padded' IS NULL) AS q_unpadded FROM pad_copy;

-- Rotation and re-encryption keep the padding.
SELECT colcrypt.rotate_key('padk');
SET client_min_messages = warning;
CALL colcrypt.reencrypt('pad_t');
RESET client_min_messages;
SELECT bool_and((colcrypt.inspect(t) ->> 'key_version')::int = 2) AS rotated,
       bool_and((colcrypt.inspect(t) ->> 'padded')::boolean) AS still_padded,
       bool_and(t = u) AS readable FROM pad_t;
SELECT count(*) AS problems FROM colcrypt.verify('pad_t');

-- Fixed-width types have nothing to hide; bad options are refused.
SELECT try($$CREATE TABLE pad_bad (x colcrypt.encrypted_int4(padk, padded))$$);
SELECT try($$CREATE TABLE pad_bad (x colcrypt.encrypted_date(padk, padded))$$);
SELECT try($$CREATE TABLE pad_bad (x colcrypt.encrypted_text(padk, padded, padded))$$);
SELECT try($$CREATE TABLE pad_bad (x colcrypt.encrypted_text(padk, padding))$$);
SELECT try($$CREATE TABLE pad_bad (x colcrypt.encrypted_text(padk, deterministic, randomized))$$);
CREATE TABLE pad_order (x colcrypt.encrypted_text(padk, padded, deterministic));
SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'pad_order'::regclass AND attnum = 1;
DROP TABLE pad_order, pad_copy;
