# rotate_master_key crashed half-way, by SIGKILL of its backend and by an
# immediate stop, against every provider kind (t/ColcryptKms.pm), each in a
# database of its own: for Vault and AWS KMS it re-wraps through the key
# manager itself (Transit rewrap, ReEncrypt); for kmip and pkcs11 it makes
# a new CMK there, then unwraps and wraps each version; for file it adds a
# CMK version to the keyring.  After each crash no version is left
# re-wrapped, every value reads back with an empty cache (each key
# unwrapped again through the key manager, whose key has already rotated),
# and the command run again re-wraps every version.  t/015 crashes it in
# immediate mode among other operations.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;
use ColcryptKms;

my $kms = ColcryptKms->new;    # before the server starts
my $node = ColcryptTest::new_node('provider_crashes', production_logging => 1,
	conf => "restart_after_crash = on\ncolcrypt.kms_timeout = 5000\n");
$node->start;
my $secret = ColcryptTest::run_marker('SECRETMARK');
my @kinds = $kms->kinds;
my %db = map { $_ => 'db_' . $kms->tag($_) } @kinds;
for my $kind (@kinds)
{
	$node->safe_psql('postgres', "CREATE DATABASE $db{$kind}");
	$kms->setup($node, $db{$kind}, $kind, masters => { cmk => 'crash-cmk' });
}

my $nkeys = 20;
for my $kind (@kinds)
{
	$node->safe_psql($db{$kind}, qq{
		SET client_min_messages = warning;
		DO \$\$ BEGIN
			FOR i IN 1..$nkeys LOOP
				PERFORM colcrypt.create_key('k' || i, 'cmk');
				EXECUTE format('CREATE TABLE t%s (id int, v colcrypt.encrypted_text(k%s))', i, i);
				EXECUTE format('INSERT INTO t%s SELECT g, %L || g FROM generate_series(1, 50) g',
				               i, '$secret-$kind-' || i || '-');
			END LOOP;
		END \$\$;
	});
}

sub read_all
{
	my ($kind) = @_;
	return $node->safe_psql($db{$kind}, 'SELECT * FROM (' . join(' UNION ALL ', map {
		"SELECT $_ AS k, md5(string_agg(v::text, ',' ORDER BY id)) FROM t$_" } 1 .. $nkeys) . ') x ORDER BY k');
}

sub wraps
{
	my ($kind) = @_;
	return $node->safe_psql($db{$kind}, q{
		SELECT string_agg(key_id || '/' || version || ':' || md5(wrapped_key) || ':' || coalesce(wrap_meta, '-'), ' '
		                  ORDER BY key_id, version)
		  FROM colcrypt.data_key_version WHERE master_key = 'cmk'});
}

for my $kind (@kinds)
{
	for my $how ('backend killed', 'immediate')
	{
		my $before = wraps($kind);
		my $sums = read_all($kind);
		# Hold the last version it will re-wrap, so that it waits there with
		# every other version re-wrapped (uncommitted), then crash.
		my $holder = $node->background_psql($db{$kind});
		$holder->query_safe(qq{BEGIN; SELECT 1 FROM colcrypt.data_key_version
			WHERE (key_id, version) = (SELECT key_id, version FROM colcrypt.data_key_version
			                           WHERE master_key = 'cmk'
			                           ORDER BY key_id DESC, version DESC LIMIT 1)
			FOR UPDATE});
		my $rot = $node->background_psql($db{$kind}, on_error_stop => 0);
		my $pid = $rot->query_safe('SELECT pg_backend_pid()');
		$rot->query_until(qr/started/, "\\echo started\nSELECT colcrypt.rotate_master_key('cmk');\n");
		$node->poll_query_until('postgres',
			"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid")
		  or die "rotate_master_key ($kind) did not reach the last version";
		if ($how eq 'immediate')
		{
			$node->stop('immediate');
			eval { $_->quit } for $rot, $holder;
			$node->start;
		}
		else
		{
			kill 'KILL', $pid or die;
			eval { $_->quit } for $rot, $holder;
			$node->poll_query_until('postgres', 'SELECT 1', '1') or die 'no restart';
		}
		is(wraps($kind), $before, "$kind, $how: no version re-wrapped");
		$node->restart;    # empty cache: every key unwrapped through the key manager
		is(read_all($kind), $sums, "$kind, $how: every value reads back, keys unwrapped again");
		my $n = $node->safe_psql($db{$kind}, "SELECT colcrypt.rotate_master_key('cmk')");
		is($n, $nkeys, "$kind, $how: rotate_master_key runs again and re-wraps all $nkeys versions");
		isnt(wraps($kind), $before, "$kind, $how: under a new master key version");
		$node->restart;
		is(read_all($kind), $sums, "$kind, $how: every value reads back after it");
	}
}
for my $kind (@kinds)
{
	$node->safe_psql($db{$kind}, 'SELECT colcrypt.audit_flush()');
	my $by_provider = $kind eq 'vault' || $kind eq 'aws-kms' ? 2 * $nkeys : 0;
	is($node->safe_psql($db{$kind}, q{SELECT count(*) || ' ' || count(*) FILTER (WHERE detail LIKE '%by the provider%')
		FROM colcrypt.audit_log WHERE action = 'rewrap' AND outcome = 'ok'}), 2 * $nkeys . " $by_provider",
		"$kind: the $nkeys versions were re-wrapped twice" . ($by_provider ? ', by the key manager' : ''));
}
$kms->report_missing;

$node->safe_psql('postgres', q{CREATE TABLE ctl AS SELECT 'PLAIN' || 'MARK-020' AS s; CHECKPOINT});
ColcryptTest::assert_no_plaintext($node, [$secret], controls => ['PLAINMARK-020'], what => 'after the crashes');
$node->stop;
$kms->stop;
done_testing();
