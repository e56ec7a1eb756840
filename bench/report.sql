-- The benchmark's report (bench/run.sh): a Markdown table of medians and
-- ratios to plain, the storm, memory, and CSV files for the chart.
\set ON_ERROR_STOP 1
\pset footer off
-- Storm throughput as a time per connection, so that it sits with the rest.
INSERT INTO bench_result SELECT 'connection storm (ms/conn)', variant, 1000.0 / nullif(tps, 0), 1 FROM bench_storm;

CREATE TEMP VIEW report AS
    WITH v(variant, o) AS (VALUES ('plain', 1), ('colcrypt', 2), ('colcrypt det', 3), ('pgcrypto cbc', 4), ('pgcrypto pgp', 5)),
         w AS (SELECT workload, min(at) AS first FROM bench_result GROUP BY workload)
    SELECT r.workload, v.variant, v.o, r.ms, r.ms / p.ms AS ratio, w.first
      FROM bench_result r JOIN v USING (variant) JOIN w USING (workload)
      LEFT JOIN bench_result p ON p.workload = r.workload AND p.variant = 'plain';

CREATE TEMP TABLE md (line text, n serial);
INSERT INTO md (line) VALUES
    ('| workload | plain | colcrypt | colcrypt det | pgcrypto cbc | pgcrypto pgp |'),
    ('|---|---|---|---|---|---|');
INSERT INTO md (line)
SELECT '| ' || workload || ' | ' || string_agg(cell, ' | ' ORDER BY o) || ' |'
  FROM (SELECT w.workload, w.first, v.o,
               coalesce((SELECT CASE WHEN r.variant = 'plain' THEN round(r.ms::numeric, 1) || ' ms'
                                     ELSE round(r.ms::numeric, 1) || ' ms (' || round(r.ratio::numeric, 2) || 'x)' END
                           FROM report r WHERE r.workload = w.workload AND r.o = v.o), 'n/a') AS cell
          FROM (SELECT DISTINCT workload, first FROM report) w
         CROSS JOIN (VALUES (1), (2), (3), (4), (5)) v(o)) c
 GROUP BY workload, first ORDER BY first;
INSERT INTO md (line) VALUES (''), ('| connection storm | plain | colcrypt | colcrypt det | pgcrypto cbc | pgcrypto pgp |'), ('|---|---|---|---|---|---|');
INSERT INTO md (line)
SELECT '| tps (pgbench -C -c 8, 10 s) | ' || string_agg(round(tps::numeric) || CASE WHEN variant = 'plain' THEN '' ELSE ' (' || round((tps / (SELECT tps FROM bench_storm WHERE variant = 'plain'))::numeric, 2) || 'x)' END, ' | ' ORDER BY o) || ' |'
  FROM bench_storm JOIN (VALUES ('plain', 1), ('colcrypt', 2), ('colcrypt det', 3), ('pgcrypto cbc', 4), ('pgcrypto pgp', 5)) v(variant, o) USING (variant);
INSERT INTO md (line)
SELECT '| provider calls (cache emptied first) / active key versions | ' || string_agg(CASE WHEN variant LIKE 'colcrypt%' THEN provider_calls || ' / ' || key_versions ELSE '-' END, ' | ' ORDER BY o) || ' |'
  FROM bench_storm JOIN (VALUES ('plain', 1), ('colcrypt', 2), ('colcrypt det', 3), ('pgcrypto cbc', 4), ('pgcrypto pgp', 5)) v(variant, o) USING (variant);
INSERT INTO md (line) VALUES (''), ('| backend private memory after the 32 B scan (RssAnon) | plain | colcrypt | colcrypt det | pgcrypto cbc | pgcrypto pgp |'), ('|---|---|---|---|---|---|');
INSERT INTO md (line)
SELECT '| kB | ' || string_agg(rss_anon_kb || CASE WHEN variant = 'plain' THEN '' ELSE ' (' || round((rss_anon_kb::numeric / (SELECT rss_anon_kb FROM bench_memory WHERE variant = 'plain')), 2) || 'x)' END, ' | ' ORDER BY o) || ' |'
  FROM bench_memory JOIN (VALUES ('plain', 1), ('colcrypt', 2), ('colcrypt det', 3), ('pgcrypto cbc', 4), ('pgcrypto pgp', 5)) v(variant, o) USING (variant);

\set mdfile :out '/results.md'
\set csvfile :out '/results.csv'
\set ratiofile :out '/ratios.csv'
COPY (SELECT line FROM md ORDER BY n) TO :'mdfile';
COPY (SELECT workload, variant, round(ms::numeric, 3) AS ms, round(ratio::numeric, 3) AS ratio_to_plain FROM report ORDER BY first, o)
    TO :'csvfile' WITH (FORMAT csv, HEADER);
COPY (SELECT workload AS "workload",
             max(ratio) FILTER (WHERE variant = 'colcrypt') AS "colcrypt",
             max(ratio) FILTER (WHERE variant = 'colcrypt det') AS "colcrypt det",
             max(ratio) FILTER (WHERE variant = 'pgcrypto cbc') AS "pgcrypto cbc",
             max(ratio) FILTER (WHERE variant = 'pgcrypto pgp') AS "pgcrypto pgp"
        FROM report GROUP BY workload, first ORDER BY first)
    TO :'ratiofile' WITH (FORMAT csv, HEADER);
