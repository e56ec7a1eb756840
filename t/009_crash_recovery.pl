# A cancel and crashes in the middle of colcrypt.reencrypt (its backend
# killed, and the whole server stopped in immediate mode) and of rotate_master_key (killed
# while it waits half-way), and a provider failure half-way through
# rotate_master_key: afterwards everything is readable, nothing is half
# re-wrapped, and running the command again finishes the job.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $rows = 150000;
my $nkeys = 200;

my $secret = ColcryptTest::run_marker('SECRETMARK');
my $node = ColcryptTest::new_node('crash_recovery', production_logging => 1,
	conf => "restart_after_crash = on\n");
$node->start;
ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring', 'big');
$node->safe_psql('postgres', qq{
	CREATE TABLE big (id integer PRIMARY KEY,
	                  v colcrypt.encrypted_text(big),
	                  n colcrypt.encrypted_int8(big),
	                  d colcrypt.encrypted_int4(big, deterministic));
	INSERT INTO big SELECT g, '$secret ' || g, g * 3, g % 1000 FROM generate_series(1, $rows) g;
	VACUUM ANALYZE big;
});

my $checksum_sql = q{SELECT md5(string_agg(v::text || n::text || d::text, ',' ORDER BY id)) FROM big};
my $checksum = $node->safe_psql('postgres', $checksum_sql);

sub stale
{
	return $node->safe_psql('postgres',
		q{SELECT colcrypt._reencrypt_count('big', false)});
}

# Start reencrypt in a background session; returns it and its backend pid
# once at least $min_done rows are done (committed batches).
sub start_reencrypt
{
	my ($min_done) = @_;
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	$bg->query_until(qr/started/, "\\echo started\nCALL colcrypt.reencrypt('big', 1000);\n");
	$node->poll_query_until('postgres',
		"SELECT coalesce(max(rows_done), 0) >= $min_done FROM colcrypt.reencrypt_progress")
	  or die 'reencrypt made no progress';
	return ($bg, $pid);
}

sub wait_until_up
{
	$node->poll_query_until('postgres', 'SELECT 1', '1')
	  or die 'server did not come back';
	return;
}

sub check_after_crash
{
	my ($what) = @_;
	my $left = stale();
	cmp_ok($left, '>', 0, "$what: the crash came before the end ($left rows left)");
	cmp_ok($left, '<', $rows, "$what: and after some batches committed");
	is($node->safe_psql('postgres', $checksum_sql), $checksum, "$what: every value readable, data unchanged");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM colcrypt.reencrypt_progress'), '0',
		"$what: no progress row is left behind");
	my ($ret, $out, $err) = $node->psql('postgres', q{CALL colcrypt.reencrypt('big', 5000)});
	is($ret, 0, "$what: reencrypt runs again");
	like($err, qr/reencrypt big: $left rows hold values not under/, "$what: and starts where the crash left off");
	is(stale(), '0', "$what: and finishes");
	is($node->safe_psql('postgres', $checksum_sql), $checksum, "$what: data unchanged");
	return;
}

# --- reencrypt: cancelled ---------------------------------------------
$node->safe_psql('postgres', q{SELECT colcrypt.rotate_key('big')});
my ($bg, $pid) = start_reencrypt(20000);
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement due to user request/, 'reencrypt was cancelled');
$bg->{stderr} = '';
is($bg->query_safe('SELECT pg_backend_pid()'), $pid, 'its session lives on');
is($node->safe_psql('postgres', 'SELECT count(*) FROM colcrypt.reencrypt_progress'), '0',
	'and its progress row ended with the cancel');
$bg->quit;
check_after_crash('cancelled');

# --- reencrypt: its backend killed -------------------------------------
$node->safe_psql('postgres', q{SELECT colcrypt.rotate_key('big')});
($bg, $pid) = start_reencrypt(20000);
kill 'KILL', $pid or die "could not kill $pid";
eval { $bg->quit };
wait_until_up();
like(slurp_file($node->logfile), qr/\(PID $pid\) was terminated by signal 9/, 'the reencrypt backend crashed');
check_after_crash('backend killed');

# --- reencrypt: the whole server stopped in immediate mode --------------
$node->safe_psql('postgres', q{SELECT colcrypt.rotate_key('big')});
($bg, $pid) = start_reencrypt(20000);
$node->stop('immediate');
eval { $bg->quit };
$node->start;
check_after_crash('immediate stop');

# --- rotate_master_key: killed half-way ---------------------------------
# Many data keys, each encrypting a value of its own table.
$node->safe_psql('postgres', qq{
	DO \$\$ BEGIN
		FOR i IN 1..$nkeys LOOP
			PERFORM colcrypt.create_key('mk' || i, 'cmk');
			EXECUTE format('CREATE TABLE m%s (v colcrypt.encrypted_text(mk%s))', i, i);
			EXECUTE format('INSERT INTO m%s VALUES (%L)', i, '$secret of key ' || i);
		END LOOP;
	END \$\$;
	CREATE FUNCTION read_all() RETURNS text LANGUAGE plpgsql AS \$\$
	DECLARE s text := ''; x text;
	BEGIN
		FOR i IN 1..$nkeys LOOP
			EXECUTE format('SELECT v::text FROM m%s', i) INTO x;
			s := s || x || ',';
		END LOOP;
		RETURN md5(s || (SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM big));
	END \$\$;
});
my $all = $node->safe_psql('postgres', 'SELECT read_all()');
my $wraps_sql = q{SELECT string_agg(DISTINCT coalesce(wrap_meta, '-'), ' ') || ' ' || count(*)
	FROM colcrypt.data_key_version WHERE wrapped_key IS NOT NULL};
my $wraps = $node->safe_psql('postgres', $wraps_sql);
like($wraps, qr/^cmk_version=1 \d+$/, "every version wrapped under CMK version 1 ($wraps)");
my ($nversions) = $wraps =~ / (\d+)$/;

# Hold a lock on the last version it will re-wrap, so that it waits there
# with every other version re-wrapped (uncommitted); then kill it.
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN; SELECT 1 FROM colcrypt.data_key_version
	WHERE (key_id, version) = (SELECT key_id, version FROM colcrypt.data_key_version
	                           WHERE wrapped_key IS NOT NULL ORDER BY key_id DESC, version DESC LIMIT 1)
	FOR UPDATE});
my $rot = $node->background_psql('postgres', on_error_stop => 0);
my $rpid = $rot->query_safe('SELECT pg_backend_pid()');
$rot->query_until(qr/started/, "\\echo started\nSELECT colcrypt.rotate_master_key('cmk');\n");
$node->poll_query_until('postgres',
	"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $rpid")
  or die 'rotate_master_key did not reach the last version';
kill 'KILL', $rpid or die;
eval { $rot->quit };
eval { $holder->quit };
wait_until_up();
is($node->safe_psql('postgres', $wraps_sql), $wraps, 'after the crash no version is re-wrapped');
is($node->safe_psql('postgres', q{SELECT rotated_at IS NULL FROM colcrypt.master_keys WHERE name = 'cmk'}), 't',
	'and the master key is not marked rotated');
$node->restart;    # an empty key cache: every key is unwrapped again
is($node->safe_psql('postgres', 'SELECT read_all()'), $all, 'every value of every key readable after the crash');
is($node->safe_psql('postgres', q{SELECT colcrypt.rotate_master_key('cmk')}), $nversions,
	'rotate_master_key runs again');
my $rewrapped = $node->safe_psql('postgres', $wraps_sql);
like($rewrapped, qr/^cmk_version=\d+ $nversions$/, 'every version re-wrapped under one new CMK version');
isnt($rewrapped, $wraps, 'a newer one');
$node->restart;
is($node->safe_psql('postgres', 'SELECT read_all()'), $all, 'every value readable with the keys unwrapped by the new CMK');
cmp_ok(ColcryptTest::cache_stats($node)->{kms_calls}, '>=', $nkeys, 'which were really unwrapped again');

# --- rotate_master_key: the provider fails half-way ---------------------
# Corrupt the last wrapped key it will re-wrap; with an empty cache it has
# to unwrap it, fails there, and must leave everything as it was.
my $last = q{(SELECT key_id, version FROM colcrypt.data_key_version WHERE wrapped_key IS NOT NULL
	ORDER BY key_id DESC, version DESC LIMIT 1)};
my $saved = $node->safe_psql('postgres',
	"SELECT encode(wrapped_key, 'hex') FROM colcrypt.data_key_version WHERE (key_id, version) = $last");
$node->safe_psql('postgres', qq{UPDATE colcrypt.data_key_version
	SET wrapped_key = set_byte(wrapped_key, 20, get_byte(wrapped_key, 20) # 1)
	WHERE (key_id, version) = $last});
$node->restart;
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT colcrypt.rotate_master_key('cmk')});
isnt($ret, 0, 'rotate_master_key fails when the provider fails on the last version');
like($err, qr/failed authentication/, 'with the provider error');
is($node->safe_psql('postgres', $wraps_sql), $rewrapped, 'no version was re-wrapped');
$node->safe_psql('postgres', qq{UPDATE colcrypt.data_key_version SET wrapped_key = decode('$saved', 'hex')
	WHERE (key_id, version) = $last});
is($node->safe_psql('postgres', q{SELECT colcrypt.rotate_master_key('cmk')}), $nversions,
	'with the wrapped key repaired it succeeds');
$node->restart;
is($node->safe_psql('postgres', 'SELECT read_all()'), $all, 'and everything is readable');
$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.audit_log
	WHERE action = 'rewrap' AND outcome = 'rolled back'}), $nversions - 1,
	'the re-wraps of the failed rotation are audited as rolled back');

$node->safe_psql('postgres', q{CREATE TABLE ctl AS SELECT 'PLAIN' || 'MARK-009' AS s; CHECKPOINT});
ColcryptTest::assert_no_plaintext($node, [$secret], controls => ['PLAINMARK-009'], what => 'after the crashes');
$node->stop;
done_testing();
