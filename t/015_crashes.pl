# Crashes in the middle of every long or key-changing operation, each both
# ways: the operation's backend killed with SIGKILL (the postmaster then
# resets every backend), and the whole server stopped in immediate mode.
#   - COPY FROM into an encrypted table (many multi-insert batches written)
#   - colcrypt.set_key_state: a state change, and a destroy (crash while it
#     waits, and crash after its commit before the copies are shredded)
#   - colcrypt.encrypt_column (while it waits for its lock, with its key
#     created in the same transaction, and during the table rewrite)
#   - colcrypt.rotate_master_key in immediate mode (t/009 kills its backend,
#     and crashes colcrypt.reencrypt both ways)
# After each restart: every committed row reads back with its exact
# plaintext (checksums taken before), the heap, indexes and key catalog are
# consistent (amcheck; one active version per key; a destroyed version has
# no wrapped key), and running the operation again finishes it.  At the
# end, no marker of an encrypted column is anywhere on disk or in the log.
#
# All of it runs against every provider kind in turn (file, kmip, vault,
# aws-kms, pkcs11: t/ColcryptKms.pm), on a new server each time, with the
# master key in that kind's key manager: after each restart the keys are
# unwrapped through it again, encrypt_column's key is made and wrapped
# there, and rotate_master_key makes a new CMK (version) there.
# COLCRYPT_TEST_KINDS=file,vault runs only those.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ColcryptTest;
use ColcryptKms;

my $kms = ColcryptKms->new;    # before any server starts
my $secret = ColcryptTest::run_marker('SECRETMARK');
my $control = ColcryptTest::run_marker('PLAINMARK');
my $nrows = 120000;
my $ec_rows = 100000;
my $node;    # the server of the kind under test

for my $kind ($kms->kinds)
{
	subtest $kind => sub { run_kind($kind) };
}
$kms->report_missing;
$kms->stop;
done_testing();

# ---- helpers ------------------------------------------------------------

sub wait_until_up
{
	$node->poll_query_until('postgres', 'SELECT 1', '1') or die 'server did not come back';
	return;
}

# Crash the server the given way while $pid is in the middle of something.
sub crash
{
	my ($how, $pid, @sessions) = @_;
	my $t0 = time;
	if ($how eq 'immediate')
	{
		$node->stop('immediate');
		eval { $_->quit } for @sessions;
		$node->start;
	}
	else
	{
		kill 'KILL', $pid or die "could not kill $pid";
		eval { $_->quit } for @sessions;
		wait_until_up();
		like(slurp_file($node->logfile), qr/\(PID $pid\) was terminated by signal 9/,
			"$how: the backend was killed");
	}
	note(sprintf('%s: serving again %.2f s after the crash', $how, time - $t0));
	return;
}

# A background session running $sql; returns it and its pid.
sub start_bg
{
	my ($sql) = @_;
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	$bg->query_until(qr/started/, "\\echo started\n$sql\n");
	return ($bg, $pid);
}

sub wait_lock
{
	my ($pid, $what) = @_;
	$node->poll_query_until('postgres',
		"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid")
	  or die "$what did not reach its lock wait";
	return;
}

# Heap and index consistency of a table, and of colcrypt's catalog.
sub consistent
{
	my ($what, @tables) = @_;
	my $tables = join(',', map { "'$_'::regclass" } @tables,
		qw(colcrypt.data_key colcrypt.data_key_version colcrypt.master_key));
	is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM unnest(ARRAY[$tables]) t, verify_heapam(t)}), '0',
		"$what: heap pages verify (amcheck)");
	my ($ret, $out, $err) = $node->psql('postgres', qq{
		SELECT count(bt_index_parent_check(i.indexrelid, true)) FROM pg_index i
		 WHERE i.indrelid = ANY (ARRAY[$tables]) AND
		       (SELECT amname FROM pg_am a JOIN pg_class c ON c.relam = a.oid
		         WHERE c.oid = i.indexrelid) = 'btree'});
	ok($ret == 0 && $out > 0, "$what: every btree index matches its heap ($out indexes checked by amcheck)")
	  or diag($err);
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM (
		  SELECT key_id FROM colcrypt.data_key_version GROUP BY key_id
		  HAVING count(*) FILTER (WHERE state = 'active') > 1
		  UNION ALL
		  SELECT key_id FROM colcrypt.data_key_version
		   WHERE (state IN ('destroyed', 'destroyed-compromised')) <> (wrapped_key IS NULL)) x}), '0',
		"$what: key catalog consistent (one active version per key; wrapped key gone iff destroyed)");
	return;
}

# ---- the scenarios, against one kind ------------------------------------

sub run_kind
{
	my ($kind) = @_;
	$node = ColcryptTest::new_node('crashes_' . $kms->tag($kind), production_logging => 1, conf => qq{
restart_after_crash = on
log_min_messages = info
});
	$node->start;
	$kms->setup($node, 'postgres', $kind, masters => { cmk => 'crash-cmk' }, keys => [ 'ck', 'sk', 'other' ]);
	$node->safe_psql('postgres', 'CREATE EXTENSION amcheck');

	# ---- COPY FROM ----------------------------------------------------------

	# The file: ids, a randomized and a deterministic encrypted text, an
	# encrypted int8.  What the table must hold is computed from the same
	# expressions (a plain copy would put the markers on disk).
	my $rows_sql = "SELECT g AS id, '$secret-copy-' || g AS s, '$secret-det-' || (g % 500) AS d, g * 7 AS n FROM generate_series(1, $nrows) g";
	my $copyfile = $node->basedir . '/copy.tsv';
	$node->safe_psql('postgres', "COPY ($rows_sql) TO '$copyfile'");
	$node->safe_psql('postgres', qq{
		CREATE TABLE cp (id integer PRIMARY KEY, s colcrypt.encrypted_text(ck),
		                 d colcrypt.encrypted_text(ck, deterministic), n colcrypt.encrypted_int8(ck));
		CREATE INDEX cp_d ON cp (d colcrypt.encrypted_text_det_ops);
		-- Rows committed before the crash.
		INSERT INTO cp SELECT -id, s, d, n FROM ($rows_sql) r WHERE id <= 1000;
	});
	my $cp_sum = q{SELECT md5(string_agg(id || ':' || s::text || ':' || d::text || ':' || n::text, ',' ORDER BY id)) FROM cp};
	my $before = $node->safe_psql('postgres', $cp_sum);
	my $want = $node->safe_psql('postgres', qq{
		SELECT md5(string_agg(id || ':' || s || ':' || d || ':' || n, ',' ORDER BY id))
		  FROM (SELECT -id AS id, s, d, n FROM ($rows_sql) a WHERE id <= 1000 UNION ALL $rows_sql) x});

	for my $how ('backend killed', 'immediate')
	{
		my ($bg, $pid) = start_bg("COPY cp FROM '$copyfile';");
		$node->poll_query_until('postgres',
			"SELECT coalesce(max(tuples_processed), 0) >= 20000 FROM pg_stat_progress_copy WHERE pid = $pid")
		  or die 'COPY made no progress';
		crash($how, $pid, $bg);
		is($node->safe_psql('postgres', 'SELECT count(*) FROM cp'), '1000', "COPY, $how: none of its rows is visible");
		is($node->safe_psql('postgres', $cp_sum), $before, "COPY, $how: the committed rows read back exactly");
		consistent("COPY, $how", 'cp');
	}
	$node->safe_psql('postgres', "COPY cp FROM '$copyfile'");
	is($node->safe_psql('postgres', $cp_sum), $want, 'COPY run again: every row reads back exactly');
	$node->safe_psql('postgres', 'ANALYZE cp');
	is($node->safe_psql('postgres', qq{SET enable_seqscan = off; SET colcrypt.batch_scan = off;
		SELECT count(*) FROM cp WHERE d = '$secret-det-7'}),
		$node->safe_psql('postgres', "SELECT count(*) FROM ($rows_sql) r WHERE d = '$secret-det-7'") + 2,
		'and the deterministic index finds its rows (ids 7 and 507 of the first rows too)');

	# ---- set_key_state ------------------------------------------------------

	$node->safe_psql('postgres', qq{
		CREATE TABLE st (id integer, v colcrypt.encrypted_text(sk));
		INSERT INTO st SELECT g, '$secret-st-' || g FROM generate_series(1, 1000) g;
		SELECT colcrypt.rotate_key('sk');   -- version 2 active, version 1 deactivated
		INSERT INTO st SELECT g, '$secret-st-' || g FROM generate_series(1001, 2000) g;
	});
	my $st_sum = q{SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM st};
	my $st_before = $node->safe_psql('postgres', $st_sum);
	my $state_of = q{SELECT string_agg(version || '=' || state, ' ' ORDER BY version)
		FROM colcrypt.keys WHERE name = 'sk'};
	is($node->safe_psql('postgres', $state_of), '1=deactivated 2=active', 'key sk: version 1 deactivated, 2 active');
	my $lock_v1 = q{BEGIN; SELECT 1 FROM colcrypt.data_key_version
		WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'sk') AND version = 1 FOR UPDATE};

	for my $how ('backend killed', 'immediate')
	{
		# A state change that waits for the version's row lock.
		my $holder = $node->background_psql('postgres');
		$holder->query_safe($lock_v1);
		my ($bg, $pid) = start_bg(q{SELECT colcrypt.set_key_state('sk', 1, 'compromised');});
		wait_lock($pid, 'set_key_state');
		crash($how, $pid, $bg, $holder);
		is($node->safe_psql('postgres', $state_of), '1=deactivated 2=active', "state change, $how: nothing changed");
		is($node->safe_psql('postgres', $st_sum), $st_before, "state change, $how: every value reads back");
		consistent("state change, $how", 'st');

		# A destroy, the same way.
		$holder = $node->background_psql('postgres');
		$holder->query_safe($lock_v1);
		($bg, $pid) = start_bg(q{SELECT colcrypt.set_key_state('sk', 1, 'destroyed', force => true);});
		wait_lock($pid, 'destroy');
		crash($how, $pid, $bg, $holder);
		is($node->safe_psql('postgres', $state_of), '1=deactivated 2=active', "destroy, $how: nothing destroyed");
		is($node->safe_psql('postgres', $st_sum), $st_before, "destroy, $how: version 1's values still read back");
		consistent("destroy, $how", 'st');
	}
	$node->safe_psql('postgres', q{SELECT colcrypt.set_key_state('sk', 1, 'compromised')});
	is($node->safe_psql('postgres', $state_of), '1=compromised 2=active', 'the state change runs again');

	# A destroy that committed, crashed before the audit writer shredded the
	# wrapped key's copies (the writer is stopped with SIGSTOP meanwhile): the
	# copies are shredded after the restart, when key metadata is next read.
	my $writer = $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'colcrypt audit writer'});
	SKIP:
	{
		skip 'no audit writer running', 4 unless $writer =~ /^\d+$/;
		my $wrapped = $node->safe_psql('postgres', q{SELECT encode(wrapped_key, 'hex') FROM colcrypt.data_key_version
			WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'sk') AND version = 1});
		kill 'STOP', $writer;
		$node->safe_psql('postgres', q{SELECT colcrypt.set_key_state('sk', 1, 'destroyed-compromised', force => true)});
		is($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.data_key_version
			WHERE state = 'destroyed-compromised' AND shredded_at IS NULL}), '1',
			'destroy committed; its copies are not shredded yet');
		$node->stop('immediate');    # SIGKILL reaches the stopped writer too
		$node->start;
		$node->safe_psql('postgres', q{SELECT count(*) FROM st WHERE id > 1000 AND v::text <> ''});
		$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM colcrypt.data_key_version
			WHERE state = 'destroyed-compromised' AND shredded_at IS NULL})
		  or diag('not shredded after the restart');
		$node->safe_psql('postgres', 'CHECKPOINT');
		# Its last 32 bytes: a key manager's blob begins with what every
		# blob under the same CMK shares (AWS KMS: the key's id).
		my $needle = pack('H*', substr($wrapped, -64));
		my $file = $node->safe_psql('postgres', q{SELECT pg_relation_filepath('colcrypt.data_key_version')});
		is(scalar(ColcryptTest::files_containing($node->data_dir . '/' . ($file =~ s{/[^/]+$}{}r), $needle)), 0,
			'after the restart the wrapped key is shredded from the catalog files');
		like($node->safe_psql('postgres', q{SELECT try('SELECT v::text FROM st WHERE id = 1')}),
			qr/^55000: .*destroyed/, "version 1's values fail cleanly");
		is($node->safe_psql('postgres', q{SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM st WHERE id > 1000}),
			$node->safe_psql('postgres', qq{SELECT md5(string_agg('$secret-st-' || g, ',' ORDER BY g))
				FROM generate_series(1001, 2000) g}),
			'version 2 serves on');
	}
	consistent('after the destroy', 'st');

	# ---- encrypt_column -----------------------------------------------------

	$node->safe_psql('postgres', qq{
		CREATE TABLE ec (id integer PRIMARY KEY, s text, n bigint);
		INSERT INTO ec SELECT g, 'pre-encryption ' || g, g * 11 FROM generate_series(1, $ec_rows) g;
	});
	my $ec_sum = q{SELECT md5(string_agg(id || ':' || s::text || ':' || n::text, ',' ORDER BY id)) FROM ec};
	my $ec_before = $node->safe_psql('postgres', $ec_sum);
	my $ec_type = q{SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'ec'::regclass AND attname = 's'};

	# A CHECK constraint on the column is re-checked row by row while ALTER
	# TABLE rewrites the table; its function waits on an advisory lock at the
	# middle row, so a crash can come with half the table rewritten.
	$node->safe_psql('postgres', q{
		CREATE FUNCTION gate(i integer, b boolean) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
		BEGIN
			IF i = 50000 THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF;
			RETURN b;
		END $$;
		ALTER TABLE ec ADD CONSTRAINT ec_gate CHECK (gate(id, s IS NOT NULL));
	});
	for my $how ('backend killed', 'immediate')
	{
		# Waiting for its lock on the table (with nothing done yet).
		my $holder = $node->background_psql('postgres');
		$holder->query_safe('BEGIN; SELECT count(*) FROM ec');
		my ($bg, $pid) = start_bg(q{SELECT colcrypt.encrypt_column('ec', 's');});
		wait_lock($pid, 'encrypt_column');
		crash($how, $pid, $bg, $holder);
		is($node->safe_psql('postgres', $ec_type), 'text', "encrypt_column waiting, $how: the column is still text");
		is($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.data_key WHERE name = 'ec'}), '0',
			"encrypt_column waiting, $how: the key it created went with its transaction");

		# Half-way through the rewrite.
		$holder = $node->background_psql('postgres');
		$holder->query_safe('SELECT pg_advisory_lock(4242)');
		($bg, $pid) = start_bg(q{SELECT colcrypt.encrypt_column('ec', 's');});
		$node->poll_query_until('postgres',
			"SELECT wait_event = 'advisory' FROM pg_stat_activity WHERE pid = $pid")
		  or die 'encrypt_column did not reach the middle of its rewrite';
		crash($how, $pid, $bg, $holder);
		is($node->safe_psql('postgres', $ec_type), 'text', "encrypt_column rewriting, $how: the column is still text");
		is($node->safe_psql('postgres', $ec_sum), $ec_before, "encrypt_column, $how: every value reads back");
		consistent("encrypt_column, $how", 'ec');
	}
	$node->safe_psql('postgres', q{SELECT colcrypt.encrypt_column('ec', 's'); SELECT colcrypt.encrypt_column('ec', 'n', 'ec')});
	is($node->safe_psql('postgres', $ec_type), 'colcrypt.encrypted_text(ec)', 'encrypt_column runs again');
	is($node->safe_psql('postgres', $ec_sum), $ec_before, 'and every value reads back');
	consistent('encrypt_column run again', 'ec');

	# ---- rotate_master_key in immediate mode --------------------------------

	my $wraps_sql = q{SELECT string_agg(key_id || '/' || version || ':' || md5(wrapped_key) || ':' || coalesce(wrap_meta, '-'), ' ' ORDER BY key_id, version)
		FROM colcrypt.data_key_version WHERE wrapped_key IS NOT NULL};
	my $wraps = $node->safe_psql('postgres', $wraps_sql);
	my $holder = $node->background_psql('postgres');
	$holder->query_safe(q{BEGIN; SELECT 1 FROM colcrypt.data_key_version
		WHERE (key_id, version) = (SELECT key_id, version FROM colcrypt.data_key_version
		                           WHERE wrapped_key IS NOT NULL ORDER BY key_id DESC, version DESC LIMIT 1)
		FOR UPDATE});
	my ($bg, $pid) = start_bg(q{SELECT colcrypt.rotate_master_key('cmk');});
	wait_lock($pid, 'rotate_master_key');
	crash('immediate', $pid, $bg, $holder);
	is($node->safe_psql('postgres', $wraps_sql), $wraps, 'rotate_master_key, immediate: no version re-wrapped');
	my $all_sum = join(' ', map { $node->safe_psql('postgres', $_) } $cp_sum, $ec_sum,
		q{SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM st WHERE id > 1000});
	$node->safe_psql('postgres', q{SELECT colcrypt.rotate_master_key('cmk')});
	isnt($node->safe_psql('postgres', $wraps_sql), $wraps, 'rotate_master_key runs again and re-wraps');
	$node->restart;    # empty cache: every key unwrapped under the new master key version
	is(join(' ', map { $node->safe_psql('postgres', $_) } $cp_sum, $ec_sum,
		q{SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM st WHERE id > 1000}),
		$all_sum, 'every value reads back with the keys re-wrapped');
	consistent('after rotate_master_key', 'cp', 'st', 'ec');

	# ---- nothing on disk or in the log --------------------------------------

	$node->safe_psql('postgres', qq{
		CREATE TABLE ctl (s text);
		INSERT INTO ctl SELECT '$control-' || g FROM generate_series(1, 100) g;
		CHECKPOINT});
	unlink $copyfile;    # the plaintext input file itself, outside the data directory
	ColcryptTest::assert_no_plaintext($node, [$secret], controls => [$control], what => 'after the crashes');
	$node->stop;
	return;
}
