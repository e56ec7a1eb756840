# Key rotation under a mixed write load (issue 8).  pgbench, 8 clients,
# runs upserts (INSERT ... ON CONFLICT on a UNIQUE deterministic column),
# updates by id and by the deterministic column, deletes and reads on a
# table of randomized and deterministic encrypted columns under two data
# keys, while another session loops rotate_key (both keys), reencrypt and
# rotate_master_key.  Every statement writes the same change into a plain
# shadow table in the same transaction; reads compare what the encrypted
# table's indexes find with the shadow, in one snapshot, and fail the
# client if they differ.
#
# Beside it, a second session rotates two other keys (under a master key
# of their own) back to back, over and over, while the load inserts rows
# under both and looks them up: right after a rotate_key commits, a
# deterministic lookup must find the rows other sessions have already
# written under the new version (it once missed them: see catalog.c).
#
# Checked: no client error (pgbench's own counts, its exit status, and the
# server log: no ERROR and no deadlock while the load ran); every rotation
# step of every iteration succeeded; per column, the decrypted contents of
# the encrypted table equal the shadow's (md5 over the values in id
# order); after a final reencrypt every value is under its key's active
# version; no two rows share a deterministic plaintext; every index agrees
# with the heap (amcheck, and a lookup of every row through each index
# path); no marker written by pgbench reached the data directory or the log.
#
# All of it runs against every provider kind in turn (file, kmip, vault,
# aws-kms, pkcs11: t/ColcryptKms.pm), on a new server each time, with both
# master keys in that kind's key manager: every rotate_key wraps a new data
# key there, every rotate_master_key makes a new CMK (version) there and
# re-wraps every version under it.  COLCRYPT_TEST_KINDS=file,vault runs
# only those.
#
# Duration per kind: COLCRYPT_LONG_TESTS=1 runs the load for 60 s,
# otherwise 15 s (COLCRYPT_CONCURRENCY_SECONDS overrides both).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use Digest::MD5 qw(md5_hex);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ColcryptTest;
use ColcryptKms;

my $long = $ENV{COLCRYPT_LONG_TESTS} ? 1 : 0;
my $seconds = $ENV{COLCRYPT_CONCURRENCY_SECONDS} // ($long ? 60 : 15);
my $clients = 8;
my $rows = 10000;                  # initial rows, ids 1 .. $rows
my $kspace = int($rows * 1.5);     # upsert keys 'k1' .. 'k15000'
my $storm_pairs = $long ? 400 : 200;   # rotate_key('sa') + rotate_key('sb'), spread over the load

my $marker = ColcryptTest::run_marker('SECRETMARK');
my $control = ColcryptTest::run_marker('PLAINMARK');
# No statement text ever holds a marker whole (statements and their
# parameters may be logged): it travels in two halves, joined by the server.
my ($m1, $m2) = (substr($marker, 0, 14), substr($marker, 14));
my ($c1, $c2) = (substr($control, 0, 13), substr($control, 13));
my $mlen = length($marker);
# In SQL: an encrypted value read back as text, the marker replaced by the
# 'M' the shadow table holds.  The pattern does not contain the marker.
my $kms = ColcryptKms->new;    # before any server starts

sub unmark { return "regexp_replace($_[0]::text, '^SECRETMARK[0-9a-f]{16}', 'M')" }

# ---- The workload ----------------------------------------------------
# Each transaction touches one logical row, the encrypted table first and
# then the shadow, so the row lock on the encrypted row orders everything
# done to the pair (no deadlock by construction, and the shadow mirrors
# the encrypted table at every commit).  Keys of the UNIQUE column: 'k<n>'
# (upserted, contended) and 'i<id>-<x>' (set by updates by id: never
# another row's).  In prepared mode the \set integers and -D strings are
# bound parameters.
my $enc_text = sub { ":m1::text || :m2 || '$_[0]'" };
my $dir = PostgreSQL::Test::Utils::tempdir;
my %scripts = (
	'upsert.sql' => qq{
\\set k random(1, $kspace)
\\set x random(1, 1000000)
BEGIN;
INSERT INTO enc (id, r, det, n, tag)
  VALUES (nextval('enc_ids'), @{[ $enc_text->('-r') ]} || :x, @{[ $enc_text->('-k') ]} || :k, :x::int8, :x::int4 % 50)
  ON CONFLICT (det) DO UPDATE SET r = EXCLUDED.r, n = enc.n + EXCLUDED.n, tag = EXCLUDED.tag
  RETURNING id AS uid \\gset
INSERT INTO shadow (id, r, det, n, tag)
  VALUES (:uid, 'M-r' || :x, 'M-k' || :k, :x::int8, :x::int4 % 50)
  ON CONFLICT (det) DO UPDATE SET r = EXCLUDED.r, n = shadow.n + EXCLUDED.n, tag = EXCLUDED.tag;
END;
},
	'update_id.sql' => qq{
\\set id random(1, $rows)
\\set x random(1, 1000000)
BEGIN;
UPDATE enc SET r = @{[ $enc_text->('-u') ]} || :x, n = n - :x::int8,
               det = @{[ $enc_text->('-i') ]} || :id || '-' || :x, tag = :x::int4 % 50
 WHERE id = :id;
UPDATE shadow SET r = 'M-u' || :x, n = n - :x::int8, det = 'M-i' || :id || '-' || :x, tag = :x::int4 % 50
 WHERE id = :id;
END;
},
	# One statement: the shadow's update runs after the encrypted table's
	# (its filter needs e), and both see the same snapshot.
	'update_det.sql' => qq{
\\set k random(1, $kspace)
\\set x random(1, 1000)
WITH e AS (UPDATE enc SET n = n + :x::int8, r = @{[ $enc_text->('-d') ]} || :x
            WHERE det = @{[ $enc_text->('-k') ]} || :k RETURNING id),
     s AS (UPDATE shadow SET n = n + :x::int8, r = 'M-d' || :x
            WHERE det = 'M-k' || :k AND (SELECT count(*) FROM e) >= 0 RETURNING id)
SELECT same((SELECT array_agg(id ORDER BY id) FROM e), (SELECT array_agg(id ORDER BY id) FROM s), 'update by det');
},
	'delete_id.sql' => qq{
\\set id random(1, $rows)
BEGIN;
DELETE FROM enc WHERE id = :id;
DELETE FROM shadow WHERE id = :id;
END;
},
	'delete_det.sql' => qq{
\\set k random(1, $kspace)
WITH e AS (DELETE FROM enc WHERE det = @{[ $enc_text->('-k') ]} || :k RETURNING id),
     s AS (DELETE FROM shadow WHERE det = 'M-k' || :k AND (SELECT count(*) FROM e) >= 0 RETURNING id)
SELECT same((SELECT array_agg(id ORDER BY id) FROM e), (SELECT array_agg(id ORDER BY id) FROM s), 'delete by det');
},
	'read.sql' => qq{
\\set id random(1, $rows)
\\set k random(1, $kspace)
\\set t random(0, 49)
SELECT r, det, n, tag FROM enc WHERE id = :id;
SELECT same((SELECT array_agg(id ORDER BY id) FROM enc WHERE det = @{[ $enc_text->('-k') ]} || :k),
            (SELECT array_agg(id ORDER BY id) FROM shadow WHERE det = 'M-k' || :k), 'det lookup');
SELECT same((SELECT count(*) FROM enc WHERE tag = :t::int4), (SELECT count(*) FROM shadow WHERE tag = :t::int4), 'tag lookup');
SELECT id FROM enc WHERE det >= @{[ $enc_text->('-k') ]} || :k ORDER BY det LIMIT 5;
},
	# A row under both storm keys' active versions, then lookups by each.
	'storm.sql' => q{
\set v random(0, 9)
SELECT nextval('storm_ids') AS sid \gset
BEGIN;
INSERT INTO storm VALUES (:sid, :v::int4, :v::int4);
INSERT INTO storm_shadow VALUES (:sid, :v::int4, :v::int4);
END;
SELECT same((SELECT count(*) FROM storm WHERE b = :v::int4), (SELECT count(*) FROM storm_shadow WHERE b = :v::int4), 'storm lookup by b');
SELECT same((SELECT count(*) FROM storm WHERE a = :v::int4), (SELECT count(*) FROM storm_shadow WHERE a = :v::int4), 'storm lookup by a');
},
);
for my $f (keys %scripts)
{
	open(my $fh, '>', "$dir/$f") or die;
	print $fh $scripts{$f};
	close $fh;
}
my @weights = ('upsert.sql@4', 'update_id.sql@3', 'update_det.sql@2', 'delete_id.sql@1',
	'delete_det.sql@1', 'read.sql@3', 'storm.sql@3');

for my $kind ($kms->kinds)
{
	subtest $kind => sub { run_kind($kind) };
}
$kms->report_missing;
$kms->stop;
done_testing();

sub run_kind
{
	my ($kind) = @_;
	my $node = ColcryptTest::new_node('concurrency_' . $kms->tag($kind), conf => qq{
	max_connections = 40
	deadlock_timeout = '100ms'
	log_lock_waits = on
	});
	$node->start;
	# Both master keys in the kind's key manager: "cmk" wraps acct and tags
	# (rotate_master_key re-wraps them in the loop), "smk" the storm's keys.
	$kms->setup($node, 'postgres', $kind, masters => { cmk => 'conc-cmk', smk => 'conc-smk' }, first => 'cmk',
		keys => [ 'acct', 'tags' ]);
	is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT kind, ',') FROM colcrypt.master_keys}), $kind,
		"both master keys are in a $kind key manager");
	# The UNIQUE index has the plaintext-order class (ord_ops, asked for by
	# name), which holds across key versions; a unique det_ops index holds
	# per version only (see README), so after a rotate_key an upsert would add
	# a second row for a plaintext still stored under the old version.
	# Lookups by det go through either index; enc_det_ct is the det_ops one.
	$node->safe_psql('postgres', qq{
		CREATE EXTENSION amcheck;
		CREATE TABLE enc (id bigint PRIMARY KEY,
		                  r colcrypt.encrypted_text(acct),
		                  det colcrypt.encrypted_text(acct, deterministic),
		                  n colcrypt.encrypted_int8(acct),
		                  tag colcrypt.encrypted_int4(tags, deterministic));
		CREATE UNIQUE INDEX enc_det_key ON enc (det colcrypt.encrypted_text_ord_ops);
		CREATE INDEX enc_det_ct ON enc (det colcrypt.encrypted_text_det_ops);
		CREATE INDEX enc_tag_ct ON enc (tag colcrypt.encrypted_int4_det_ops);
		CREATE TABLE shadow (id bigint PRIMARY KEY, r text, det text UNIQUE, n int8, tag int4);
		CREATE INDEX shadow_tag ON shadow (tag);
		INSERT INTO enc SELECT g, '$m1' || '$m2' || '-r' || g, '$m1' || '$m2' || '-k' || g, g, g % 50
		  FROM generate_series(1, $rows) g;
		INSERT INTO shadow SELECT g, 'M-r' || g, 'M-k' || g, g, g % 50 FROM generate_series(1, $rows) g;
		CREATE SEQUENCE enc_ids START @{[ $rows + 1 ]};
		-- Fails the statement (and so the pgbench client) when the encrypted
		-- table and its shadow disagree in one snapshot.
		CREATE FUNCTION same(a anyelement, b anyelement, what text) RETURNS void LANGUAGE plpgsql AS \$\$
		BEGIN
			IF a IS DISTINCT FROM b THEN
				RAISE EXCEPTION 'encrypted table and shadow disagree on %: % vs %', what, a, b;
			END IF;
		END \$\$;
		CREATE TABLE ctl (id integer PRIMARY KEY, s text);
		INSERT INTO ctl SELECT g, '$c1' || '$c2' || '-' || g FROM generate_series(1, 1000) g;
		VACUUM ANALYZE enc, shadow, ctl;
		-- The rotation storm's keys, table and shadow.
		SELECT colcrypt.create_key('sa', 'smk');
		SELECT colcrypt.create_key('sb', 'smk');
		CREATE TABLE storm (id bigint PRIMARY KEY, a colcrypt.encrypted_int4(sa, deterministic),
		                    b colcrypt.encrypted_int4(sb, deterministic));
		CREATE INDEX storm_a ON storm (a colcrypt.encrypted_int4_det_ops);
		CREATE INDEX storm_b ON storm (b colcrypt.encrypted_int4_det_ops);
		CREATE TABLE storm_shadow (id bigint PRIMARY KEY, a int4, b int4);
		CREATE INDEX storm_shadow_a ON storm_shadow (a);
		CREATE INDEX storm_shadow_b ON storm_shadow (b);
		CREATE SEQUENCE storm_ids;
	});


	my $load_running = sub
	{
		return $node->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'load'");
	};

	# pgbench: a non-retryable error aborts its client (and makes the exit
	# status 2); a deadlock or serialization failure is not retried
	# (--max-tries=1) and is counted as a failed transaction.  Its statements
	# are not logged (there are hundreds of thousands; errors still are).
	my ($out, $err) = ('', '');
	my @cmd = ('pgbench', '-n', '-M', 'prepared', '-c', $clients, '-j', 2, '-T', $seconds,
		'--max-tries=1', '--failures-detailed', '-D', "m1=$m1", '-D', "m2=$m2",
		(map { ('-f', "$dir/$_") } @weights), '-h', $node->host, '-p', $node->port, 'postgres');
	my $log_start = -s $node->logfile;
	my $t0 = time;
	my $pg;
	{
		local $ENV{PGAPPNAME} = 'load';
		local $ENV{PGOPTIONS} = '-c log_statement=none';
		$pg = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	}
	for (my $i = 0; $load_running->() < $clients; $i++)
	{
		die "pgbench did not start: $err" if $i > 1000 || !$pg->pumpable;
		usleep(10_000);
	}

	# ---- The rotation storm, in a session of its own ---------------------------
	# Back to back, each in its own transaction, paced to last the load.
	my $storm = $node->background_psql('postgres', on_error_stop => 0);
	$storm->query_until(qr/storm started/, sprintf(q{\echo storm started
	DO $$
	DECLARE n integer := 0;
	BEGIN
		WHILE n < %d AND clock_timestamp() < to_timestamp(%.3f) LOOP
			PERFORM colcrypt.rotate_key('sa');
			COMMIT;
			PERFORM colcrypt.rotate_key('sb');
			COMMIT;
			n := n + 1;
			PERFORM pg_sleep(%.3f);
		END LOOP;
		RAISE NOTICE 'storm: % rotations of each key', n;
	END $$;
	\echo storm finished
	}, $storm_pairs, $t0 + $seconds - 1, ($seconds - 1) / $storm_pairs));

	# ---- The rotation loop, in one session, while the load runs ---------------
	my $rot = $node->background_psql('postgres', on_error_stop => 0);
	$rot->set_query_timer_restart;
	my (%done, @rewrapped, @reencrypted, @step_errors, @iter_secs);
	my ($iters, $iters_under_load) = (0, 0);
	my $step = sub
	{
		my ($what, $sql) = @_;
		my $res = $rot->query($sql);
		my $stderr = $rot->{stderr};
		$rot->{stderr} = '';
		if ($stderr =~ /ERROR|WARNING|FATAL/)
		{
			push @step_errors, "$what: $stderr";
			return undef;
		}
		$done{$what}++;
		return ($res, $stderr);
	};
	while (time < $t0 + $seconds && $pg->pumpable)
	{
		my $it0 = time;
		$step->('rotate_key acct', q{SELECT colcrypt.rotate_key('acct')});
		$step->('rotate_key tags', q{SELECT colcrypt.rotate_key('tags')});
		# What autovacuum does to the key catalogs at any time; it invalidates
		# syscache entries of their names (which once made lookups fail).
		$step->('vacuum', q{VACUUM colcrypt.master_key, colcrypt.provider, colcrypt.data_key, colcrypt.data_key_version});
		my (undef, $notices) = $step->('reencrypt', q{CALL colcrypt.reencrypt('enc', 1000)});
		push @reencrypted, $1 if defined $notices && $notices =~ /reencrypt enc: done, (\d+) rows re-encrypted/;
		my ($n) = $step->('rotate_master_key', q{SELECT colcrypt.rotate_master_key('cmk')});
		push @rewrapped, $n;
		$iters++;
		$iters_under_load++ if $pg->pumpable && $load_running->() >= $clients;
		push @iter_secs, time - $it0;
		eval { $pg->pump_nb };    # pgbench's output; it may have ended meanwhile
	}
	my $loop_secs = time - $t0;
	$storm->query_until(qr/storm finished/, '');
	my ($storm_n) = $storm->{stderr} =~ /storm: (\d+) rotations of each key/;
	unlike($storm->{stderr}, qr/ERROR|WARNING|FATAL/, 'the rotation storm ran without error') or diag $storm->{stderr};
	$storm->quit;

	# ---- The load's outcome --------------------------------------------------
	$pg->finish;
	my $load_secs = time - $t0;
	my $status = $pg->result(0);
	my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	my ($ser_fail) = $out =~ /number of serialization failures: (\d+)/;
	my ($dl_fail) = $out =~ /number of deadlock failures: (\d+)/;
	my ($nclients) = $out =~ /number of clients: (\d+)/;
	is($status, 0, 'pgbench exits 0 (no client aborted)') or diag "stdout:\n$out\nstderr:\n$err";
	unlike($err, qr/aborted|ERROR|FATAL|error:/, 'pgbench reports no client error') or diag $err;
	is($nclients, $clients, "pgbench ran $clients clients");
	ok(defined $processed && $processed > 0, 'pgbench processed transactions');
	is($failed, 0, 'no failed transaction');
	is($ser_fail, 0, 'no serialization failure');
	is($dl_fail, 0, 'no deadlock failure');
	# Per script: each ran, none failed.
	my @per_script = $out =~ /^ - (\d+) transactions \(/mg;
	is(scalar(@per_script), scalar(@weights), 'every script reported') or diag $out;
	ok(!(grep { $_ == 0 } @per_script), 'every script ran transactions');

	my $load_log = slurp_file($node->logfile, $log_start);
	unlike($load_log, qr/deadlock detected/, 'no deadlock in the server log');
	my @log_errors = $load_log =~ /^.*(?:ERROR|FATAL|PANIC):.*$/mg;
	is(scalar(@log_errors), 0, 'no ERROR in the server log while the load ran')
	  or diag join("\n", @log_errors[0 .. ($#log_errors < 9 ? $#log_errors : 9)]);
	my @waits = $load_log =~ /still waiting for/g;
	note scalar(@waits) . ' lock waits over deadlock_timeout logged';

	# Which index paths the load itself used (its backends have exited, so
	# their statistics are flushed): lookups under rotation went through the
	# plaintext-order UNIQUE index (det: the planner prefers it to enc_det_ct,
	# which the checks below read) and a ciphertext (det_ops) index, whose
	# lookups encrypt the value under every live version (tag).
	my %idx_scans = split /[|\n]/, $node->safe_psql('postgres',
		q{SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname = 'enc'});
	note 'index scans during the load: ' . join(', ', map { "$_ $idx_scans{$_}" } sort keys %idx_scans);
	cmp_ok($idx_scans{$_} // 0, '>', 0, "the load used index $_") for qw(enc_det_key enc_tag_ct);

	# ---- The rotation loop's outcome -------------------------------------------
	is(scalar(@step_errors), 0, 'every rotation step succeeded') or diag join("\n", @step_errors);
	cmp_ok($iters, '>=', 2, 'the rotation loop completed at least two iterations');
	cmp_ok($iters_under_load, '>=', 1, 'at least one iteration ended with the load still running');
	is($done{$_} // 0, $iters, "$_ ran in every iteration")
	  for ('rotate_key acct', 'rotate_key tags', 'vacuum', 'reencrypt', 'rotate_master_key');
	is($node->safe_psql('postgres', q{SELECT string_agg(name || '=' || max, ',' ORDER BY name)
		FROM (SELECT name, max(version) FROM colcrypt.keys GROUP BY name) k}),
		'acct=' . ($iters + 1) . ',sa=' . ($storm_n + 1) . ',sb=' . ($storm_n + 1) . ',tags=' . ($iters + 1),
		'each rotation added one version per key');
	cmp_ok($storm_n // 0, '>=', 20, 'the storm rotated both of its keys, back to back, many times (no timing: at least 20)');
	# rotate_master_key re-wraps every version of both keys: 2 (i + 1) at iteration i.
	is_deeply(\@rewrapped, [ map { 2 * ($_ + 1) } 1 .. $iters ], 'each master key rotation re-wrapped every version');
	is(scalar(@reencrypted), $iters, 'each reencrypt reported its end');
	$rot->quit;

	# ---- Final state ---------------------------------------------------------
	$node->safe_psql('postgres', q{CALL colcrypt.reencrypt('enc', 1000)});
	my $active = $node->safe_psql('postgres', q{SELECT string_agg(name || '=' || version, ',' ORDER BY name)
		FROM colcrypt.keys WHERE state = 'active' AND name IN ('acct', 'tags')});
	is($active, 'acct=' . ($iters + 1) . ',tags=' . ($iters + 1), 'the last versions are the active ones');
	my $nrows = $node->safe_psql('postgres', 'SELECT count(*) FROM enc');
	my $not_active = $node->safe_psql('postgres', q{
		WITH a AS (SELECT name, version FROM colcrypt.keys WHERE state = 'active')
		SELECT count(*) FILTER (WHERE colcrypt._key_version(r) <> (SELECT version FROM a WHERE name = 'acct')) || ' ' ||
		       count(*) FILTER (WHERE colcrypt._key_version(det) <> (SELECT version FROM a WHERE name = 'acct')) || ' ' ||
		       count(*) FILTER (WHERE colcrypt._key_version(n) <> (SELECT version FROM a WHERE name = 'acct')) || ' ' ||
		       count(*) FILTER (WHERE colcrypt._key_version(tag) <> (SELECT version FROM a WHERE name = 'tags')) || ' ' ||
		       count(*) FILTER (WHERE r IS NULL OR det IS NULL OR n IS NULL OR tag IS NULL) || ' ' ||
		       colcrypt._reencrypt_count('enc', false)
		  FROM enc});
	is($not_active, '0 0 0 0 0 0', "after a final reencrypt all $nrows rows' values are under the active versions");

	# Per column, the decrypted values in id order against the shadow's.
	my $shadow_rows = $node->safe_psql('postgres', 'SELECT count(*) FROM shadow');
	is($nrows, $shadow_rows, "the encrypted table and the shadow have the same rows ($nrows)");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM enc FULL JOIN shadow USING (id) WHERE enc.id IS NULL OR shadow.id IS NULL'),
		'0', 'with the same ids');
	my %sum;
	for my $col (qw(r det n tag))
	{
		my $encv = $col =~ /^(?:r|det)$/ ? unmark($col) : "${col}::text";
		my ($e, $s) = map {
			$node->safe_psql('postgres', "SELECT md5(string_agg(id || ':' || $_->[1], ',' ORDER BY id)) FROM $_->[0]")
		} ([ 'enc', $encv ], [ 'shadow', "${col}::text" ]);
		is($e, $s, "column $col: md5 of the decrypted values equals the shadow's");
		$sum{$col} = $e;
	}
	# The marker the regexp removed was this run's, in every value.
	is($node->safe_psql('postgres', qq{SELECT string_agg(h || ' ' || c, ',') FROM
		(SELECT md5(left(v, $mlen)) h, count(*) c FROM (SELECT r::text v FROM enc UNION ALL SELECT det::text FROM enc) x GROUP BY 1) y}),
		md5_hex($marker) . ' ' . (2 * $nrows), 'every r and det value begins with this run\'s marker');

	# The UNIQUE column: no plaintext twice, by colcrypt's grouping and by text.
	is($node->safe_psql('postgres', 'SELECT count(*) FROM (SELECT det, count(*) FROM enc GROUP BY det HAVING count(*) > 1) d'),
		'0', 'no duplicate deterministic plaintext (GROUP BY det)');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM (SELECT ' . unmark('det') . ' FROM enc GROUP BY 1 HAVING count(*) > 1) d'),
		'0', 'nor after decryption to text');

	# Every index against the heap: amcheck (order by the opclass, every heap
	# tuple in the index), then every row looked up through each index path.
	$node->safe_psql('postgres', q{SELECT bt_index_parent_check(i, true) FROM unnest(
		ARRAY['enc_pkey', 'enc_det_key', 'enc_det_ct', 'enc_tag_ct']::regclass[]) i});
	pass('amcheck: enc_pkey, enc_det_key (plaintext order), enc_det_ct and enc_tag_ct are consistent with the heap');

	# For every shadow row, its det looked up in enc (the marker rebuilt from
	# its halves) must find exactly that row's id.
	my $lookup_all = qq{SELECT count(*) || ' ' || count(*) FILTER (WHERE e.ids = ARRAY[s.id])
		FROM shadow s CROSS JOIN LATERAL (SELECT array_agg(id) ids FROM enc
			WHERE det = ('$m1' || '$m2' || substr(s.det, 2))) e};
	my $tag_all = q{SELECT count(*) FILTER (WHERE e.c = s.c) FROM generate_series(0, 49) t
		CROSS JOIN LATERAL (SELECT count(*) c FROM enc WHERE tag = t) e
		CROSS JOIN LATERAL (SELECT count(*) c FROM shadow WHERE tag = t) s};
	# (EXPLAIN shows the marker whole, folded into a constant: masked in diagnostics.)
	my $no_ct = 'DROP INDEX enc_det_ct;';
	my $no_uniq = 'DROP INDEX enc_det_key;';
	my $idx = 'SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off;';
	my $bmp = 'SET enable_seqscan = off; SET enable_indexscan = off; SET enable_indexonlyscan = off;';
	my @paths = (
		[ 'UNIQUE (plaintext order) index scan', "$idx $no_ct", qr/Index Scan using enc_det_key on enc/, $lookup_all ],
		[ 'UNIQUE (plaintext order) bitmap scan', "$bmp $no_ct", qr/Bitmap Index Scan on enc_det_key/, $lookup_all ],
		[ 'det_ops index scan', "$idx $no_uniq", qr/Index Scan using enc_det_ct on enc\n.*=#\) ANY \(colcrypt._det_candidates/, $lookup_all ],
		[ 'det_ops bitmap scan', "$bmp $no_uniq", qr/Bitmap Index Scan on enc_det_ct\n.*=#\) ANY \(colcrypt._det_candidates/, $lookup_all ],
		[ 'tag det_ops index scan', $idx, qr/Index Scan using enc_tag_ct on enc/, $tag_all, '50' ],
		[ 'tag det_ops bitmap scan', $bmp, qr/Bitmap Index Scan on enc_tag_ct/, $tag_all, '50' ],
	);
	for my $p (@paths)
	{
		my ($what, $set, $uses, $sql, $want) = @$p;
		my $plan = $node->safe_psql('postgres', "BEGIN; $set EXPLAIN (COSTS OFF) $sql; ROLLBACK;");
		like($plan, $uses, "the $what plan reads enc that way") or diag($plan =~ s/\Q$marker\E/<marker>/gr);
		is($node->safe_psql('postgres', "BEGIN; $set $sql; ROLLBACK;"), $want // "$nrows $nrows",
			$want ? "$what: each of the 50 tag values finds as many rows as in the shadow"
			  : "$what: every row's det finds exactly that row");
	}

	# The storm's table against its shadow, and every value looked up through
	# the det_ops indexes (under whichever of the many versions it was written).
	my $storm_rows = $node->safe_psql('postgres', 'SELECT count(*) FROM storm');
	is($storm_rows, $node->safe_psql('postgres', 'SELECT count(*) FROM storm_shadow'), "storm: the same rows ($storm_rows)");
	is($node->safe_psql('postgres', q{SELECT md5(string_agg(id || ':' || a || ':' || b, ',' ORDER BY id)) FROM storm}),
		$node->safe_psql('postgres', q{SELECT md5(string_agg(id || ':' || a || ':' || b, ',' ORDER BY id)) FROM storm_shadow}),
		'storm: md5 of the decrypted values equals the shadow\'s');
	my $storm_versions = $node->safe_psql('postgres',
		q{SELECT count(DISTINCT colcrypt._key_version(a)) || ' ' || count(DISTINCT colcrypt._key_version(b)) FROM storm});
	my $storm_lookup = q{SELECT count(*) FILTER (WHERE ea = sa AND eb = sb) FROM generate_series(0, 9) v,
		LATERAL (SELECT (SELECT count(*) FROM storm WHERE a = v) ea, (SELECT count(*) FROM storm WHERE b = v) eb,
		                (SELECT count(*) FROM storm_shadow WHERE a = v) sa, (SELECT count(*) FROM storm_shadow WHERE b = v) sb) x};
	my $storm_plan = $node->safe_psql('postgres', "BEGIN; $idx EXPLAIN (COSTS OFF) $storm_lookup; ROLLBACK;");
	like($storm_plan, qr/Index Scan using storm_a on storm.*Index Scan using storm_b on storm/s,
		'the storm lookups read the det_ops indexes') or diag $storm_plan;
	is($node->safe_psql('postgres', "BEGIN; $idx $storm_lookup; ROLLBACK;"), '10',
		"storm: lookups of the 10 values find the shadow's counts (values under $storm_versions versions of sa and sb)");

	# ---- Figures ------------------------------------------------------------
	my $kms = ColcryptTest::cache_stats($node);
	is($kms->{kms_failures}, 0, 'no provider call failed');
	my $summary = sprintf('%s mode: load %.1f s (asked %d s), %d transactions (%s), %d failed; '
		  . 'rotation loop %d iterations (%d ended under load; %.1f s each, max %.1f s): '
		  . 'rotate_key acct %d, rotate_key tags %d, reencrypt %d (%s rows), rotate_master_key %d (%s versions); '
		  . '%d rows checked in enc and shadow; storm: %d rotations of each key, %d rows (under %s versions); KMS calls %d',
		$long ? 'long' : 'short', $load_secs, $seconds, $processed // 0, join('/', @per_script), $failed // -1,
		$iters, $iters_under_load, $loop_secs / ($iters || 1), (sort { $b <=> $a } @iter_secs)[0] // 0,
		map({ $done{$_} // 0 } 'rotate_key acct', 'rotate_key tags', 'reencrypt'), join('+', @reencrypted),
		$done{'rotate_master_key'} // 0, join('+', @rewrapped), $nrows, $storm_n // 0, $storm_rows, $storm_versions,
		$kms->{kms_calls});
	diag "$kind: $summary";
	note "pgbench output:\n$out";

	# ---- No plaintext anywhere ----------------------------------------------------
	$node->safe_psql('postgres', 'CHECKPOINT');
	ColcryptTest::assert_no_plaintext($node, [$marker], controls => [$control], what => 'after the load');
	$node->stop;
	$node->stop;
	return;
}
