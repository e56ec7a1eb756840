--
-- sec_stats: no plaintext order or frequencies in pg_statistic or
-- pg_statistic_ext_data.  Scalar encrypted columns keep only null
-- fraction, width and (deterministic) distinct count; values that hold
-- encrypted values inside (arrays, composites, domains) and extended
-- statistics are computed with ANALYZE comparing ciphertext bytes, so what
-- is stored is in ciphertext order with ciphertext frequencies.
--
CREATE TYPE addr AS (zip colcrypt.encrypted_int4(cust), city text);
CREATE DOMAIN zips AS colcrypt.encrypted_int4(cust)[];
CREATE TABLE stats_t (
    id    integer,
    tags  colcrypt.encrypted_int4(cust)[],
    dtags colcrypt.encrypted_int4(cust, deterministic)[],
    home  addr,
    z     zips,
    age   colcrypt.encrypted_int4(cust),
    grp   colcrypt.encrypted_int4(cust, deterministic)
);
INSERT INTO stats_t
SELECT g, ARRAY[g % 5, g % 7], ARRAY[g % 5, g % 7], ROW(g % 10, 'city')::addr, ARRAY[g % 3],
       g % 10, g % 10
  FROM generate_series(1, 600) g;
GRANT SELECT ON stats_t TO sec_mallory, sec_app;
ANALYZE stats_t;

-- Randomized values: every ciphertext distinct, so no common value, and
-- each element counted in one row, whatever the plaintexts repeat (10
-- zips, each in 60 rows; 7 tags, each in 120 or so).
SELECT attname, n_distinct, most_common_vals IS NULL AS no_mcv,
       (SELECT round(max(f) * 600) FROM unnest(most_common_elem_freqs) WITH ORDINALITY AS u(f, o)
         WHERE o <= array_length(most_common_elems::text::text[], 1)) AS most_rows_per_element
  FROM pg_stats WHERE tablename = 'stats_t' AND attname IN ('tags', 'home', 'z', 'age')
 ORDER BY attname;
-- Deterministic elements repeat as ciphertexts (what deterministic
-- encryption shows anyway); scalar deterministic columns keep only the
-- distinct count.
SELECT attname, n_distinct, most_common_vals IS NULL AS no_mcv,
       array_length(most_common_elems::text::text[], 1) AS common_elems
  FROM pg_stats WHERE tablename = 'stats_t' AND attname IN ('dtags', 'grp')
 ORDER BY attname;

-- The histogram of the composite column is in ciphertext order: decrypted
-- by a role that may, its bounds are not sorted.
SET ROLE sec_app;
WITH b AS (SELECT array_agg(zip::int ORDER BY o) AS zips
             FROM pg_stats, unnest(histogram_bounds::text::addr[]) WITH ORDINALITY AS u(zip, city, o)
            WHERE tablename = 'stats_t' AND attname = 'home')
SELECT cardinality(zips) > 10 AS has_histogram,
       zips = (SELECT array_agg(z ORDER BY z) FROM unnest(zips) z) AS in_plaintext_order
  FROM b;
RESET ROLE;

-- Extended statistics over encrypted columns: computed on ciphertexts.
CREATE STATISTICS stats_t_ext (ndistinct, mcv, dependencies) ON age, grp, id FROM stats_t;
ANALYZE stats_t;
SELECT n_distinct FROM pg_stats_ext WHERE statistics_name = 'stats_t_ext';
SELECT count(*) AS mcv_items, max(frequency) * 600 AS top_count
  FROM pg_statistic_ext s JOIN pg_statistic_ext_data d ON d.stxoid = s.oid,
       pg_mcv_list_items(d.stxdmcv) WHERE s.stxname = 'stats_t_ext';
DROP STATISTICS stats_t_ext;

-- ANALYZE needs no key: a table owner without the decrypt privilege
-- analyzes a table of ciphertexts it copied.
SET ROLE sec_mallory;
CREATE TABLE mal.copied AS SELECT id, tags, home, age FROM stats_t;
ANALYZE mal.copied;
SELECT attname, n_distinct, most_common_vals IS NULL AS no_mcv
  FROM pg_stats WHERE schemaname = 'mal' AND tablename = 'copied' ORDER BY attname;
DROP TABLE mal.copied;
RESET ROLE;
