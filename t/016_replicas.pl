# Replicas, against every provider kind (file, kmip, vault, aws-kms,
# pkcs11: t/ColcryptKms.pm), each in a database of its own on the same
# three clusters, whose master key "cmk" and data keys k1 and k2 live in
# that kind's key manager.  The databases' keys share names, so their key
# ids are the same: the shared caches of all three servers must keep them
# apart.
#
# A physical streaming standby decrypts with its own shared key cache and
# follows key rotation, re-encryption, master key rotation and destruction
# on the primary without a restart: in a session left open across all of
# them and in new sessions, every row reads back with its exact plaintext,
# values under a destroyed version fail with 55000 while the other versions
# keep working, and the standby's cache lets go of the destroyed version
# (the primary cannot reach it).  Nothing colcrypt does on a read writes
# there.
#
# Logical replication of an encrypted table to another cluster with the
# same keys: initial sync and streamed INSERT/UPDATE/DELETE, in text and in
# binary mode, read back exactly, and only ciphertext moves: markers written
# in encrypted columns are in neither what the walsender sends (captured
# with pg_recvlogical), nor what SQL-level decoding of the publication
# emits, nor the table sync's COPY, while a plain column's marker is found
# in each; the subscriber holds the publisher's ciphertexts byte for byte.
#
# COLCRYPT_TEST_KINDS=file,vault runs only those kinds.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ColcryptTest;
use ColcryptKms;

my $mark = ColcryptTest::run_marker('REPLSECRET');    # encrypted columns only
my $ctl = ColcryptTest::run_marker('REPLPLAIN');      # the plain column only

# Every key manager, before any server starts.  The providers' options
# (the keyring's path, the key managers' addresses, certificates and PIN
# file) are in the key catalog, so every node reaches the same key manager,
# as a standby on another host would (or finds a copy of the keyring at the
# same path).
my $kms = ColcryptKms->new;

# Statements are not logged: their literals are the client's plaintext.
my $conf = qq{
log_statement = 'none'
log_min_error_statement = 'panic'
max_worker_processes = 16
};
my $primary = ColcryptTest::new_node('primary', allows_streaming => 'logical', conf => $conf . qq{
max_wal_senders = 12
max_replication_slots = 12
wal_receiver_status_interval = 1s
});
$primary->start;
# (colcrypt in "postgres" too, for the cluster-wide cache statistics)
$primary->safe_psql('postgres', 'CREATE EXTENSION colcrypt; CREATE ROLE reader LOGIN');
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
is(ColcryptTest::server_children($standby, qr/colcrypt key cache janitor/), 1,
	'the key cache janitor runs on the standby too');
my $cache0 = ColcryptTest::cache_stats($standby);
is($cache0->{entries} . '/' . $cache0->{kms_calls}, '0/0',
	'the standby starts with an empty cache of its own (shared memory is per server)');

my $subscriber = ColcryptTest::new_node('subscriber', conf => $conf);
$subscriber->start;
$subscriber->safe_psql('postgres', 'CREATE ROLE reader LOGIN');
my $dumpdir = PostgreSQL::Test::Utils::tempdir();
my @scanned;    # streams and dumps for the no-plaintext scan

my %sum = (
	t => q{SELECT count(*) || ':' || md5(string_agg(concat_ws('|', id, coalesce(s::text, '<null>'),
	       coalesce(d::text, '<null>'), coalesce(encode(b::bytea, 'hex'), '<null>'), coalesce(note, '<null>')),
	       ',' ORDER BY id)) FROM t},
	t_old => q{SELECT count(*) || ':' || md5(string_agg(id || '|' || s::text, ',' ORDER BY id)) FROM t_old},
	t2 => q{SELECT count(*) || ':' || md5(string_agg(id || '|' || s::text, ',' ORDER BY id)) FROM t2},
);
my $lsum = q{SELECT count(*) || ':' || md5(string_agg(concat_ws('|', id, coalesce(s::text, '<null>'),
	coalesce(d::text, '<null>'), coalesce(n::text, '<null>'), coalesce(j::text, '<null>'),
	coalesce(encode(b::bytea, 'hex'), '<null>'), coalesce(ts::text, '<null>'), coalesce(note, '<null>')),
	',' ORDER BY id)) FROM lt};
# The stored ciphertexts themselves.
my $lcipher = q{SELECT md5(string_agg(concat_ws('|', id, colcrypt.ciphertext(s), colcrypt.ciphertext(d),
	colcrypt.ciphertext(n), colcrypt.ciphertext(j), colcrypt.ciphertext(b), colcrypt.ciphertext(ts)),
	',' ORDER BY id)) FROM lt};

# The kind under test, its database, and what the helpers below share.
my ($kind, $tag, $db, $bs, $expect, %follow, %lexpect);

sub sums_on
{
	my ($node, @tables) = @_;
	return { map { $_ => $node->safe_psql($db, $sum{$_}) } @tables };
}

# Seconds for the standby to replay each change.
sub follow
{
	my ($what) = @_;
	my $t0 = time;
	$primary->wait_for_catchup($standby);
	$follow{$kind}{$what} = sprintf('%.2f', time - $t0);
	note("$kind: standby followed '$what' in $follow{$kind}{$what} s");
	return;
}

# Checks on the standby after each change on the primary: the open session
# and a new one read every row exactly as the primary does.
sub standby_reads
{
	my ($what, @tables) = @_;
	$expect = { %$expect, %{ sums_on($primary, @tables) } };
	for my $tbl (@tables)
	{
		is($bs->query_safe($sum{$tbl}), $expect->{$tbl}, "$kind, $what: the open standby session reads every row of $tbl");
		is($standby->safe_psql($db, $sum{$tbl}), $expect->{$tbl},
			"$kind, $what: a new standby session reads every row of $tbl");
	}
	return;
}

sub versions_in_use
{
	my ($node, $tbl) = @_;
	return $node->safe_psql($db, qq{SELECT string_agg(DISTINCT colcrypt._key_version(s)::text, ',') FROM $tbl});
}

sub key_states
{
	my ($node) = @_;
	return $node->safe_psql($db,
		q{SELECT string_agg(version || ':' || state, ',' ORDER BY version) FROM colcrypt.keys WHERE name = 'k1'});
}

sub cached_versions
{
	my ($node, $key) = @_;
	return $node->safe_psql($db, qq{SELECT coalesce(string_agg(version::text, ',' ORDER BY version), '')
		FROM colcrypt.key_cache_contents WHERE name = '$key'});
}

# This database's entries in a server's shared cache.
sub cached_here
{
	my ($node) = @_;
	return $node->safe_psql($db, 'SELECT count(*) FROM colcrypt.key_cache_contents');
}

# What wraps the master key's data key versions: its key reference, and
# each version's wrapped key and wrapping metadata.
sub wrapping
{
	my ($node) = @_;
	return $node->safe_psql($db, q{SELECT m.key_ref || ' ' || md5(string_agg(v.key_id || '/' || v.version || ':'
			|| coalesce(encode(v.wrapped_key, 'hex'), '-') || ':' || coalesce(v.wrap_meta, '-'), ','
			ORDER BY v.key_id, v.version))
		FROM colcrypt.master_key m JOIN colcrypt.data_key_version v ON v.master_key = m.name
		WHERE m.name = 'cmk' GROUP BY m.key_ref});
}

for my $k ($kms->kinds)
{
	($kind, $tag) = ($k, $kms->tag($k));
	$db = "db_$tag";
	$primary->safe_psql('postgres', "CREATE DATABASE $db");
	$kms->setup($primary, $db, $kind, masters => { cmk => "repl-$tag" }, keys => [ 'k1', 'k2' ]);
	$primary->safe_psql($db, qq{
		CREATE TABLE t (id integer PRIMARY KEY, s colcrypt.encrypted_text(k1),
		                d colcrypt.encrypted_int4(k1, deterministic), b colcrypt.encrypted_bytea(k1),
		                note text);
		CREATE INDEX t_d ON t (d colcrypt.encrypted_int4_det_ops);
		INSERT INTO t SELECT g, '$mark-s-' || g || repeat(' é', g % 20), g,
		                     convert_to('$mark-b-' || g, 'UTF8'), '$ctl-' || g
		  FROM generate_series(1, 1000) g;
		INSERT INTO t VALUES (0, '', 0, '', NULL), (-1, NULL, NULL, NULL, NULL);
		-- Values left under version 1 (not re-encrypted), destroyed at the end.
		CREATE TABLE t_old (id integer PRIMARY KEY, s colcrypt.encrypted_text(k1));
		INSERT INTO t_old SELECT g, '$mark-old-' || g FROM generate_series(1, 100) g;
		-- A table under the other key.
		CREATE TABLE t2 (id integer PRIMARY KEY, s colcrypt.encrypted_text(k2));
		INSERT INTO t2 SELECT g, '$mark-k2-' || g FROM generate_series(1, 100) g;
		GRANT SELECT ON t TO reader;
	});
	$expect = sums_on($primary, sort keys %sum);
	like($expect->{t}, qr/^1002:/, "$kind: the primary holds the rows");
	is($primary->safe_psql($db, q{SELECT kind FROM colcrypt.master_keys WHERE name = 'cmk'}), $kind,
		"$kind: under a master key of that kind");
	run_kind();
}
$kms->report_missing;

sub run_kind
{
	# -- The standby, before it has used this database's keys -----------------
	$primary->wait_for_catchup($standby);
	is(cached_here($standby), '0', "$kind: the standby has none of this database's keys cached");
	my $calls0 = ColcryptTest::cache_stats($standby)->{kms_calls};

	# A session that stays open, without a restart, through every change below.
	$bs = $standby->background_psql($db);
	is($bs->query_safe($sum{t}), $expect->{t}, "$kind: an open standby session reads every row of t");
	is($bs->query_safe($sum{t_old}), $expect->{t_old}, "$kind: and of t_old");
	is($standby->safe_psql($db, $sum{t2}), $expect->{t2}, "$kind: a new standby session reads t2 (key k2)");
	is(ColcryptTest::cache_stats($standby)->{kms_calls} - $calls0, 2,
		"$kind: the standby asked the key provider itself, once per key version (k1 v1, k2 v1)");
	is(cached_here($standby), '2', "$kind: and caches both in its own shared memory");
	# The primary's cache is another one: emptying it leaves the standby's alone.
	$primary->safe_psql($db, 'SELECT colcrypt.key_cache_evict()');
	is(ColcryptTest::cache_stats($primary)->{entries}, 0, "$kind: the primary's cache emptied");
	is(cached_here($standby), '2', "$kind: the standby's cache is untouched by it");

	# -- 1. rotate_key: new writes under version 2 ------------------------------
	$primary->safe_psql($db, qq{
		SELECT colcrypt.rotate_key('k1');
		INSERT INTO t SELECT g, '$mark-s-' || g, g, convert_to('$mark-b-' || g, 'UTF8'), '$ctl-' || g
		  FROM generate_series(1001, 1500) g;
		UPDATE t SET s = '$mark-u-' || id, note = '$ctl-u-' || id WHERE id % 10 = 0;
	});
	follow('rotate_key');
	is(key_states($standby), '1:deactivated,2:active', "$kind, rotate_key: the standby sees version 2 active");
	is($bs->query_safe(q{SELECT string_agg(DISTINCT colcrypt._key_version(s)::text, ',') FROM t}), '1,2',
		"$kind, rotate_key: t holds values under both versions");
	my $calls = ColcryptTest::cache_stats($standby)->{kms_calls};
	standby_reads('rotate_key', 't', 't_old');
	is(ColcryptTest::cache_stats($standby)->{kms_calls}, $calls + 1,
		"$kind, rotate_key: the standby unwrapped version 2 once, through its own cache");
	is($standby->safe_psql($db, q{SET enable_seqscan = off; SELECT count(*) FROM t WHERE d = 1234}), '1',
		"$kind, rotate_key: a deterministic index lookup finds a version 2 value on the standby");
	is($standby->safe_psql($db, q{SET enable_seqscan = off; SELECT count(*) FROM t WHERE d = 12}), '1',
		"$kind, rotate_key: and a version 1 value");

	# -- 2. reencrypt: every value of t moves to version 2 -----------------------
	my $t0 = time;
	$primary->safe_psql($db, q{CALL colcrypt.reencrypt('t', 200)});
	note(sprintf("$kind: reencrypt of t on the primary took %.2f s", time - $t0));
	follow('reencrypt');
	is(versions_in_use($standby, 't'), '2', "$kind, reencrypt: on the standby every value of t is under version 2");
	is($standby->safe_psql($db, q{SELECT count(*) FROM t WHERE colcrypt._key_version(d) <> 2
		OR colcrypt._key_version(b) <> 2}), '0', "$kind, reencrypt: all three columns");
	is(versions_in_use($standby, 't_old'), '1', "$kind, reencrypt: t_old is still under version 1");
	standby_reads('reencrypt', 't', 't_old');

	# -- 3. rotate_master_key: the data keys are re-wrapped ----------------------
	my $wrapped_before = $primary->safe_psql($db, q{SELECT encode(wrapped_key, 'hex')
		FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id) WHERE k.name = 'k1' AND v.version = 1});
	my $wrapping_before = wrapping($primary);
	$calls = ColcryptTest::cache_stats($standby)->{kms_calls};
	is($primary->safe_psql($db, q{SELECT colcrypt.rotate_master_key('cmk')}), '3',
		"$kind: rotate_master_key re-wraps the three data key versions");
	follow('rotate_master_key');
	my $wrapping = wrapping($standby);
	isnt($wrapping, $wrapping_before, "$kind, rotate_master_key: the standby's catalog has every version re-wrapped");
	is($wrapping, wrapping($primary), "$kind, rotate_master_key: as the primary's has");
	if ($kind eq 'file' || $kind eq 'vault')    # the kinds that version a CMK in place
	{
		is($standby->safe_psql($db, q{SELECT string_agg(DISTINCT cmk_version::text, ',') FROM colcrypt.keys}), '2',
			"$kind, rotate_master_key: under CMK version 2");
	}
	standby_reads('rotate_master_key', 't', 't_old');
	is(ColcryptTest::cache_stats($standby)->{kms_calls}, $calls,
		"$kind, rotate_master_key: the data keys did not change, so the standby's cached keys keep serving");
	# Unwrapping the re-wrapped keys needs the new CMK (version), which the
	# standby reaches through the same provider options.
	$standby->safe_psql($db, 'SELECT colcrypt.key_cache_evict()');
	standby_reads('rotate_master_key, standby cache evicted', 't', 't_old');
	my $sc = ColcryptTest::cache_stats($standby);
	is($sc->{kms_calls}, $calls + 2, "$kind: the standby unwrapped both k1 versions again, under the new CMK");
	is($sc->{kms_failures}, 0, "$kind: without a provider failure");
	is(cached_versions($standby, 'k1'), '1,2', "$kind: both k1 versions are in the standby's cache before the destroy");

	# -- 4. destroy version 1 ----------------------------------------------------
	my $wrapped = $primary->safe_psql($db, q{SELECT encode(wrapped_key, 'hex')
		FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id) WHERE k.name = 'k1' AND v.version = 1});
	isnt($wrapped, $wrapped_before, "$kind: version 1 was re-wrapped");
	$primary->safe_psql($db, q{SELECT colcrypt.set_key_state('k1', 1, 'destroyed', force => true)});
	is($primary->safe_psql($db, 'SELECT colcrypt.audit_flush()'), 't', "$kind: the primary shredded the wrapped key");
	follow('destroy');
	is(key_states($standby), '1:destroyed,2:active', "$kind, destroy: the standby sees version 1 destroyed");
	is($standby->safe_psql($db, q{SELECT shredded_at IS NOT NULL FROM colcrypt.keys WHERE name = 'k1' AND version = 1}),
		't', "$kind, destroy: and shredded");

	# Before any session on the standby touches k1 again: the open session,
	# reading only k2 values, processes the replayed invalidation and drops the
	# destroyed version from the standby's shared cache.
	is(cached_versions($standby, 'k1'), '1,2', "$kind, destroy: replay alone does not touch the standby's cache");
	is($bs->query_safe($sum{t2}), $expect->{t2}, "$kind, destroy: the open standby session reads t2 (key k2)");
	is(cached_versions($standby, 'k1'), '2',
		"$kind, destroy: the standby's shared cache no longer holds version 1 (noticed by a session using another key)");

	my $destroyed_err = qr/^55000: data key "k1" version 1 is destroyed and cannot be used to decrypt/;
	like($bs->query_safe(q{SELECT try('SELECT s::text FROM t_old WHERE id = 1')}), $destroyed_err,
		"$kind, destroy: the open standby session cannot decrypt version 1 any more (55000)");
	like($standby->safe_psql($db, q{SELECT try('SELECT count(*) FROM t_old WHERE s::text LIKE ''x%''')}),
		$destroyed_err, "$kind, destroy: nor can a new one, nor a scan");
	my ($ret, $out, $err) = $standby->psql($db, 'SELECT s FROM t_old WHERE id = 2',
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ERROR:  55000: data key "k1" version 1 is destroyed and cannot be used to decrypt/,
		"$kind, destroy: plain output of a destroyed value fails with SQLSTATE 55000");
	like($err, qr/DETAIL:  Values encrypted under it can no longer be decrypted/, "$kind: with the documented detail");
	standby_reads('destroy', 't', 't2');
	is($standby->safe_psql($db, q{SET enable_seqscan = off; SELECT count(*) FROM t WHERE d = 12}), '1',
		"$kind, destroy: deterministic lookups of re-encrypted values work on the standby");
	is(cached_versions($standby, 'k1'), '2', "$kind, destroy: version 1 did not come back into the standby's cache");

	# The shredded pages reach the standby's files too: after a restartpoint no
	# table file there holds either wrapped copy of version 1.
	$primary->safe_psql($db, 'CHECKPOINT');
	$primary->wait_for_catchup($standby);
	$standby->safe_psql($db, 'CHECKPOINT');
	is(scalar(ColcryptTest::files_containing($standby->data_dir . '/base', pack('H*', $wrapped))), 0,
		"$kind, destroy: the wrapped key is in no table file of the standby");
	is(scalar(ColcryptTest::files_containing($standby->data_dir . '/base', pack('H*', $wrapped_before))), 0,
		"$kind, destroy: nor is its copy from before the master key rotation");

	# -- Reads write nothing on the standby --------------------------------------
	# A denied decryption is audited; on a standby the event goes to the log, not
	# to a table, and no audit writer is started.
	my $log_offset = -s $standby->logfile;
	($ret, $out, $err) = $standby->psql($db, 'SET ROLE reader; SELECT s::text FROM t WHERE id = 1',
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/42501: permission denied to decrypt with data key "k1"/, "$kind: a role without decrypt is refused on the standby");
	$standby->wait_for_log(qr/colcrypt audit: decrypt key "k1" by "reader": denied/, $log_offset);
	pass("$kind: the denied decryption is audited in the standby's log");
	# A destroyed version whose copies are not yet shredded (as after a crash on
	# the primary): the standby neither shreds (the primary does) nor waits for
	# a writer that cannot run there.
	$primary->safe_psql($db, q{UPDATE colcrypt.data_key_version SET shredded_at = NULL
		WHERE version = 1 AND key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'k1')});
	$primary->wait_for_catchup($standby);
	is($bs->query_safe($sum{t}), $expect->{t}, "$kind: the open standby session reads t while a shred is pending");
	is($standby->safe_psql($db, 'SELECT colcrypt.audit_flush(3000)'), 't',
		"$kind: audit_flush() on the standby has nothing to wait for");
	is($standby->safe_psql($db, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'colcrypt audit writer'}),
		'0', "$kind: no audit writer runs on the standby");
	is($standby->safe_psql($db, 'SELECT waiting FROM colcrypt.audit_queue'), '0', "$kind: and nothing is queued for one");
	$primary->safe_psql($db, q{SELECT count(*) FROM t WHERE s::text <> ''});    # the next use of k1 shreds again
	$primary->poll_query_until($db,
		q{SELECT shredded_at IS NOT NULL FROM colcrypt.keys WHERE name = 'k1' AND version = 1})
	  or die 'not shredded again';
	my $slog = slurp_file($standby->logfile, $log_offset);
	unlike($slog, qr/read-only transaction|cannot execute \w+ during recovery/,
		"$kind: nothing colcrypt did on the standby tried to write");
	$bs->quit;
	note("$kind: standby key cache: " . join(', ', map { "$_=$sc->{$_}" } sort keys %$sc));

	logical();
	return;
}

# ---------------------------------------------------------------------------
# Logical replication
# ---------------------------------------------------------------------------
sub logical
{
	$primary->safe_psql($db, qq{
		CREATE TABLE lt (id integer PRIMARY KEY, s colcrypt.encrypted_text(k2),
		                 d colcrypt.encrypted_int4(k2, deterministic), n colcrypt.encrypted_numeric(k2),
		                 j colcrypt.encrypted_jsonb(k2), b colcrypt.encrypted_bytea(k2),
		                 ts colcrypt.encrypted_timestamptz(k2), note text);
		INSERT INTO lt SELECT g, '$mark-ls-' || g || repeat(' ü', g % 7), g, g * 1.25,
		                      jsonb_build_object('m', '$mark-lj-' || g), convert_to('$mark-lb-' || g, 'UTF8'),
		                      '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour', '$ctl-l-' || g
		  FROM generate_series(1, 400) g;
		INSERT INTO lt VALUES (0, '', 0, 0, '{}', '', '-infinity', NULL), (-1, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
		-- One value big enough to be TOASTed.
		INSERT INTO lt VALUES (-2, '$mark-toast-' || repeat('x', 100000), NULL, NULL, NULL, NULL, NULL, 'toast');
		CREATE PUBLICATION pub FOR TABLE lt;
	});

	# The subscriber gets the same keys the way a restore does: the key catalog
	# (wrapped keys only, and the provider's options) in a ciphertext-mode
	# dump, without table data.
	my $dump = "$dumpdir/keys_$tag.sql";
	{
		local $ENV{PGOPTIONS} = '-c colcrypt.output=ciphertext';
		$primary->command_ok([ 'pg_dump', '-d', $primary->connstr($db), '--exclude-table-data=public.*',
			'--no-publications', '--no-subscriptions', '-f', $dump ], "$kind: pg_dump of the schema and key catalog");
	}
	push @scanned, $dump;
	my %subs = ("${tag}_sub_text" => 'false', "${tag}_sub_bin" => 'true');
	for my $sdb (sort keys %subs)
	{
		$subscriber->safe_psql('postgres', "CREATE DATABASE $sdb");
		$subscriber->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $subscriber->connstr($sdb),
			'-f', $dump ], "$kind: restore into $sdb");
		is($subscriber->safe_psql($sdb, 'SELECT count(*) FROM lt'), '0', "$sdb: lt starts empty");
	}
	# Slots that capture the stream of changes after the initial copy.
	my %slot = map { $_ => "${tag}_$_" } ('peek', 'recv_text', 'recv_bin');
	for my $slot (sort values %slot)
	{
		$primary->safe_psql($db, qq{SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')});
	}
	my $pubconn = $primary->connstr($db);
	my $pubconn_sql = $pubconn =~ s/'/''/gr;
	for my $sdb (sort keys %subs)
	{
		$subscriber->safe_psql($sdb, qq{CREATE SUBSCRIPTION $sdb CONNECTION '$pubconn_sql' PUBLICATION pub
			WITH (binary = $subs{$sdb})});
	}
	for my $sdb (sort keys %subs)
	{
		$subscriber->wait_for_subscription_sync($primary, $sdb, $sdb);
	}
	my $lexpect = $primary->safe_psql($db, $lsum);
	like($lexpect, qr/^403:/, "$kind: the publisher holds the rows");
	for my $sdb (sort keys %subs)
	{
		is($subscriber->safe_psql($sdb, $lsum), $lexpect, "$sdb (binary = $subs{$sdb}): the initial sync reads back exactly");
		is($subscriber->safe_psql($sdb, $lcipher), $primary->safe_psql($db, $lcipher),
			"$sdb: the subscriber stores the publisher's ciphertexts byte for byte");
	}

	# Streamed changes.
	$primary->safe_psql($db, qq{
		INSERT INTO lt SELECT g, '$mark-ls-' || g, g, g / 3.0, jsonb_build_object('m', '$mark-lj-' || g, 'n', g),
		                      convert_to('$mark-lb-' || g, 'UTF8'), now(), '$ctl-l-' || g
		  FROM generate_series(401, 700) g;
		UPDATE lt SET s = '$mark-lu-' || id, j = j::jsonb || '{"updated": true}', note = '$ctl-lu-' || id WHERE id % 7 = 0;
		UPDATE lt SET n = n + 1 WHERE id % 5 = 0;       -- the other encrypted columns are sent unchanged
		DELETE FROM lt WHERE id % 11 = 0;
		UPDATE lt SET s = '$mark-toast2-' || repeat('y', 100000) WHERE id = -2;
	});
	for my $sdb (sort keys %subs)
	{
		$primary->wait_for_catchup($sdb);
	}
	$lexpect = $primary->safe_psql($db, $lsum);
	like($lexpect, qr/^639:/, "$kind: the publisher holds the changed rows");
	for my $sdb (sort keys %subs)
	{
		is($subscriber->safe_psql($sdb, $lsum), $lexpect, "$sdb (binary = $subs{$sdb}): streamed changes read back exactly");
		is($subscriber->safe_psql($sdb, $lcipher), $primary->safe_psql($db, $lcipher),
			"$sdb: and are the publisher's ciphertexts byte for byte");
	}
	is($subscriber->safe_psql("${tag}_sub_text", q{SET enable_seqscan = off; SELECT s::text = (SELECT s::text FROM lt WHERE id = 14)
		FROM lt WHERE d = 14}), 't', "$kind: equality on a deterministic column works on the subscriber");

	# What the publication emits.  The changes above, decoded by pgoutput in a
	# walsender (pg_recvlogical), and in a backend through SQL (which a superuser
	# with the decrypt privilege could run too), in text and binary mode.
	my $decoded = "pg_logical_slot_peek_binary_changes('$slot{peek}', NULL, NULL, 'proto_version', '1',"
	  . " 'publication_names', 'pub'%s)";
	my $endpos = $primary->safe_psql($db, 'SELECT max(lsn) FROM ' . sprintf($decoded, ''));
	my %stream;
	for my $mode ('text', 'binary')
	{
		my $opt = $mode eq 'binary' ? ', \'binary\', \'true\'' : '';
		$stream{"SQL decoding, $mode"} = pack('H*', $primary->safe_psql($db,
			'SELECT encode(string_agg(data, \'\'::bytea ORDER BY lsn), \'hex\') FROM ' . sprintf($decoded, $opt)));
		my $file = "$dumpdir/recv_${tag}_$mode";
		my ($stdout, $stderr);
		my $ok = IPC::Run::run([ 'pg_recvlogical', '-d', $pubconn, '-S', ($mode eq 'binary' ? $slot{recv_bin} : $slot{recv_text}),
			'--start', '--no-loop', '-E', $endpos, '-f', $file, '-o', 'proto_version=1', '-o', 'publication_names=pub',
			($mode eq 'binary' ? ('-o', 'binary=true') : ()) ],
			'>', \$stdout, '2>', \$stderr, IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
		ok($ok, "$kind: pg_recvlogical received the $mode stream from the walsender") or diag($stderr);
		$stream{"walsender, $mode"} = slurp_file($file);
		push @scanned, $file;
	}
	for my $what (sort keys %stream)
	{
		my $bytes = $stream{$what};
		ok(length($bytes) > 100_000, "$kind, $what: the stream was captured (" . length($bytes) . ' bytes)');
		ok(index($bytes, "$ctl-l-700") >= 0 && index($bytes, "$ctl-lu-") >= 0,
			"$kind, $what: the plain column's marker is in it (the check can see plaintext)");
		is(index($bytes, $mark), -1, "$kind, $what: no marker of an encrypted column is in it");
		if ($what =~ /text/)
		{
			my $n = () = $bytes =~ /colcrypt:[A-Za-z0-9+\/]{20,}/g;
			ok($n >= 6 * 300, "$kind, $what: encrypted values travel in their ciphertext text form ($n)");
		}
		else
		{
			my $n = () = $bytes =~ /\xffccx\x01/g;
			ok($n >= 6 * 300, "$kind, $what: encrypted values travel in their binary ciphertext form ($n)");
		}
	}
	# The initial table sync reads the table with COPY in a walsender.
	{
		my ($stdout, $stderr);
		IPC::Run::run([ 'psql', '-XAtq', '-d', "$pubconn replication=database", '-c', 'COPY lt TO STDOUT' ],
			'>', \$stdout, '2>', \$stderr, IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
		ok(index($stdout, "$ctl-l-1\n") >= 0, "$kind, table sync COPY: the plain column is in it") or diag($stderr);
		is(index($stdout, $mark), -1, "$kind, table sync COPY: no marker of an encrypted column is in it");
		like($stdout, qr/\tcolcrypt:[A-Za-z0-9+\/]{20,}/, "$kind, table sync COPY: ciphertext text forms");
	}
	# The same COPY in an ordinary session prints plaintext to a role that may
	# decrypt: what the walsender sends is not just what anyone would see.
	ok(index($primary->safe_psql($db, 'COPY (SELECT s FROM lt WHERE id = 1) TO STDOUT'), "$mark-ls-1") == 0,
		"$kind, control: an ordinary session with the decrypt privilege sees the plaintext");

	# Key management is not replicated.  A value written on the publisher under
	# a version the subscriber's key catalog lacks arrives and is stored as it
	# is; reading it there fails with 42704, and only it.
	$primary->safe_psql($db, qq{
		SELECT colcrypt.rotate_key('k2');
		INSERT INTO lt VALUES (1000, '$mark-v2', 1000, 1, '{}', '', now(), '$ctl-v2');
	});
	my $sub_text = "${tag}_sub_text";
	$primary->wait_for_catchup($sub_text);
	is($subscriber->safe_psql($sub_text, q{SELECT colcrypt._key_version(s) FROM lt WHERE id = 1000}), '2',
		"$kind: a value under a data key version made after the key catalog was copied arrives");
	like($subscriber->safe_psql($sub_text, q{SELECT try('SELECT s::text FROM lt WHERE id = 1000')}),
		qr/^42704: data key "k2" has no version 2$/, "$kind: reading it on the subscriber fails with 42704");
	is($subscriber->safe_psql($sub_text, q{SELECT count(s::text) FROM lt WHERE id <> 1000}),
		$primary->safe_psql($db, q{SELECT count(s) FROM lt WHERE id <> 1000}), "$kind: the other rows still read");
	$lexpect{$kind} = $subscriber->safe_psql($sub_text, $lsum . ' WHERE id <> 1000');

	my $sub_cache = ColcryptTest::cache_stats($subscriber, $sub_text);
	is($sub_cache->{kms_failures}, 0, "$kind: the subscriber unwrapped its keys without a provider failure");

	for my $sdb (sort keys %subs)
	{
		$subscriber->safe_psql($sdb, "DROP SUBSCRIPTION $sdb");
	}
	$primary->safe_psql($db, "SELECT pg_drop_replication_slot(s) FROM unnest(ARRAY['"
		  . join("', '", sort values %slot) . "']) s");
	return;
}

# Another database of the subscriber, with a key of its own that is also
# named k2 (as every kind's database has): the server's shared cache must
# keep them apart (a key id is a hash of the name, and each database has its
# own key catalog).
$subscriber->safe_psql('postgres', 'CREATE DATABASE own');
ColcryptTest::setup_keys($subscriber, 'own', "$dumpdir/own-keyring", 'k2');
$subscriber->safe_psql('own', qq{
	CREATE TABLE o (id integer, s colcrypt.encrypted_text(k2));
	INSERT INTO o SELECT g, '$mark-own-' || g FROM generate_series(1, 10) g;
});
my $osum = q{SELECT count(*) || ':' || md5(string_agg(s::text, ',' ORDER BY id)) FROM o};
my $own_before = $subscriber->safe_psql('own', $osum);
$subscriber->safe_psql('own', 'SELECT colcrypt.key_cache_evict()');
my ($ret, $out, $err) = $subscriber->psql('own', $osum);
is($out, $own_before, 'a database with its own key named k2 reads its values back from an empty cache') or diag($err);
for my $k (sort keys %lexpect)
{
	my $sdb = $kms->tag($k) . '_sub_text';
	is($subscriber->safe_psql($sdb, $lsum . ' WHERE id <> 1000'), $lexpect{$k},
		"and the replicated $k database still reads its own k2 values");
}
is($subscriber->safe_psql('own', q{SELECT count(*) FROM colcrypt.key_cache_contents}), '1',
	'key_cache_contents shows the current database\'s entries');

$primary->safe_psql('postgres', 'CHECKPOINT');
$primary->wait_for_catchup($standby);
$standby->safe_psql('postgres', 'CHECKPOINT');
$subscriber->safe_psql('postgres', 'CHECKPOINT');

for my $k (sort keys %follow)
{
	note("$k: standby follow times (s): " . join(', ', map { "$_ $follow{$k}{$_}" } sort keys %{ $follow{$k} }));
}
note('primary key cache: ' . join(', ', map { "$_=" . ColcryptTest::cache_stats($primary)->{$_} } qw(entries kms_calls hits misses)));

ColcryptTest::assert_no_plaintext([ $primary, $standby, $subscriber ], [$mark], controls => [$ctl],
	files => \@scanned, what => 'replicas');

$subscriber->stop;
$standby->stop;
$primary->stop;
$kms->stop;
done_testing();
