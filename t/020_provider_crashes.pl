# rotate_master_key crashed half-way while it re-wraps through the key
# manager itself (Vault Transit rewrap, AWS KMS ReEncrypt, against the
# emulators), by SIGKILL of its backend and by an immediate stop: no
# version is left re-wrapped, every value reads back with an empty cache
# (each key unwrapped again through the key manager, whose key has already
# rotated), and the command run again re-wraps every version.  t/015 does
# the same with the file provider.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $node = ColcryptTest::new_node('provider_crashes', production_logging => 1,
	conf => "restart_after_crash = on\ncolcrypt.kms_timeout = 5000\n");
$node->start;
ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring');
my $secret = ColcryptTest::run_marker('SECRETMARK');

# Vault, with a root token.
my $vdir = $node->basedir . '/vault';
my $vport = ColcryptTest::emu_start('vault', $vdir);
# AWS KMS, with temporary credentials in a shared credentials file (as t/014).
my $adir = $node->basedir . '/awskms';
my $aport = ColcryptTest::emu_start('awskms', $adir);
my $credfile = $node->basedir . '/aws-credentials';
open(my $fh, '>', $credfile) or die;
print $fh "[colcrypt]\naws_access_key_id = ASIACOLCRYPTTEMP\n"
  . "aws_secret_access_key = temp/secret/key/fedcba9876543210\n"
  . "aws_session_token = FwoGZXIvYXdzEXAMPLEsessiontoken//colcrypt==\n";
close $fh;
chmod 0600, $credfile;

$node->safe_psql('postgres', qq{
	SET client_min_messages = warning;
	SELECT colcrypt.add_provider('vault', 'vault', jsonb_build_object('url', 'http://127.0.0.1:$vport', 'token', 'root-token'));
	SELECT colcrypt.add_master_key('vault_cmk', 'vault', 'crash-cmk', create_cmk => true);
	SELECT colcrypt.add_provider('aws', 'aws-kms', jsonb_build_object('region', 'us-east-1',
		'endpoint', 'http://127.0.0.1:$aport', 'credentials_file', '$credfile', 'profile', 'colcrypt'));
	SELECT colcrypt.add_master_key('aws_cmk', 'aws', 'alias/colcrypt-crash', create_cmk => true);
});

my $nkeys = 20;
for my $kind ('vault', 'aws')
{
	$node->safe_psql('postgres', qq{
		SET client_min_messages = warning;
		DO \$\$ BEGIN
			FOR i IN 1..$nkeys LOOP
				PERFORM colcrypt.create_key('${kind}_k' || i, '${kind}_cmk');
				EXECUTE format('CREATE TABLE ${kind}_t%s (id int, v colcrypt.encrypted_text(${kind}_k%s))', i, i);
				EXECUTE format('INSERT INTO ${kind}_t%s SELECT g, %L || g FROM generate_series(1, 50) g',
				               i, '$secret-$kind-' || i || '-');
			END LOOP;
		END \$\$;
	});
}

sub read_all
{
	my ($kind) = @_;
	return $node->safe_psql('postgres', 'SELECT * FROM (' . join(' UNION ALL ', map {
		"SELECT $_ AS k, md5(string_agg(v::text, ',' ORDER BY id)) FROM ${kind}_t$_" } 1 .. $nkeys) . ') x ORDER BY k');
}

sub wraps
{
	my ($kind) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(key_id || '/' || version || ':' || md5(wrapped_key) || ':' || coalesce(wrap_meta, '-'), ' '
		                  ORDER BY key_id, version)
		  FROM colcrypt.data_key_version WHERE master_key = '${kind}_cmk'});
}

for my $kind ('vault', 'aws')
{
	for my $how ('backend killed', 'immediate')
	{
		my $before = wraps($kind);
		my $sums = read_all($kind);
		# Hold the last version it will re-wrap, so that it waits there with
		# every other version re-wrapped (uncommitted), then crash.
		my $holder = $node->background_psql('postgres');
		$holder->query_safe(qq{BEGIN; SELECT 1 FROM colcrypt.data_key_version
			WHERE (key_id, version) = (SELECT key_id, version FROM colcrypt.data_key_version
			                           WHERE master_key = '${kind}_cmk'
			                           ORDER BY key_id DESC, version DESC LIMIT 1)
			FOR UPDATE});
		my $rot = $node->background_psql('postgres', on_error_stop => 0);
		my $pid = $rot->query_safe('SELECT pg_backend_pid()');
		$rot->query_until(qr/started/, "\\echo started\nSELECT colcrypt.rotate_master_key('${kind}_cmk');\n");
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
		my $n = $node->safe_psql('postgres', "SELECT colcrypt.rotate_master_key('${kind}_cmk')");
		is($n, $nkeys, "$kind, $how: rotate_master_key runs again and re-wraps all $nkeys versions");
		isnt(wraps($kind), $before, "$kind, $how: under a new master key version");
		$node->restart;
		is(read_all($kind), $sums, "$kind, $how: every value reads back after it");
	}
}
$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.audit_log
	WHERE action = 'rewrap' AND detail LIKE '%provider%'}), '>', 0, 'the re-wraps went through the key managers');

$node->safe_psql('postgres', q{CREATE TABLE ctl AS SELECT 'PLAIN' || 'MARK-020' AS s; CHECKPOINT});
ColcryptTest::assert_no_plaintext($node, [$secret], controls => ['PLAINMARK-020'], what => 'after the crashes');
$node->stop;
ColcryptTest::emu_stop('vault', $vdir);
ColcryptTest::emu_stop('awskms', $adir);
done_testing();
