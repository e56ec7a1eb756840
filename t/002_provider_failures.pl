# The file provider failing: a keyring that is too open, missing,
# unreadable or corrupt.  Each gives a clear error naming the provider and
# the cause, with a fitting SQLSTATE, writes nothing half-way, is counted
# and logged; cached keys keep serving until their TTL; the next call after
# the keyring is fixed succeeds without a restart.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $node = ColcryptTest::new_node('provider_failures', conf => "colcrypt.audit = 'all'\n");
$node->start;
my $keyring = $node->basedir . '/keyring';
ColcryptTest::setup_keys($node, 'postgres', $keyring);
$node->safe_psql('postgres', q{
	CREATE TABLE t (id integer, s colcrypt.encrypted_text(k1));
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g;
});
my $good = $node->safe_psql('postgres', 'SELECT string_agg(s::text, \',\' ORDER BY id) FROM t');

# Each case: break the keyring, restart (empty cache), expect an error.
sub expect_failure
{
	my ($what, $break, $fix, $sqlstate, $pattern) = @_;
	$node->restart;
	$break->();
	my $r = $node->safe_psql('postgres', q{SELECT try('SELECT s::text FROM t WHERE id = 1')});
	like($r, qr/^$sqlstate: key provider "dev" \(file\) could not unwrap a data key: $pattern/,
		"$what: read fails with $sqlstate naming the provider and cause");
	$r = $node->safe_psql('postgres', q{SELECT try($$INSERT INTO t VALUES (100, 'must not be written')$$)});
	like($r, qr/^$sqlstate: /, "$what: write fails too");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 100'), '0', "$what: nothing written");
	$fix->();
	is($node->safe_psql('postgres', 'SELECT string_agg(s::text, \',\' ORDER BY id) FROM t'), $good,
		"$what: works again once fixed, without a restart");
}

expect_failure('too open', sub { chmod 0644, $keyring }, sub { chmod 0600, $keyring },
	'F0000', 'keyring file has group or world access');
expect_failure('missing', sub { rename $keyring, "$keyring.away" or die }, sub { rename "$keyring.away", $keyring or die },
	'58P01', 'keyring file does not exist');
expect_failure('unreadable', sub { chmod 0000, $keyring }, sub { chmod 0600, $keyring },
	'42501', 'keyring file is not readable by the server');
my $saved = slurp_file($keyring);
expect_failure('corrupt',
	sub { open(my $fh, '>', $keyring) or die; print $fh "colcrypt-keyring 1\ncmk test-cmk 1 notbase64!!\n"; close $fh; },
	sub { open(my $fh, '>', $keyring) or die; print $fh $saved; close $fh; },
	'F0000', 'malformed keyring file');
expect_failure('different master key',
	sub {
		(my $other = $saved) =~ s/^cmk test-cmk 1 \S+$/cmk test-cmk 1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=/m;
		open(my $fh, '>', $keyring) or die; print $fh $other; close $fh;
	},
	sub { open(my $fh, '>', $keyring) or die; print $fh $saved; close $fh; },
	'XX001', 'wrapped data key failed authentication');

my $stats = ColcryptTest::cache_stats($node);
cmp_ok($stats->{kms_failures}, '>=', 2, 'failures are counted in colcrypt.key_cache');
my $log = slurp_file($node->logfile);
like($log, qr/colcrypt audit: kms_failure provider "dev" by "postgres": failed: unwrap a data key: wrapped data key failed authentication/, 'failures are in the audit log lines');
unlike($log, qr/[A-Za-z0-9+\/]{43}=/, 'no key material in the server log');

# Cached keys keep serving while the provider is down, until the TTL.
$node->restart;
is($node->safe_psql('postgres', 'SELECT s FROM t WHERE id = 2'), 'row 2', 'key loaded into the cache');
chmod 0000, $keyring;
is($node->safe_psql('postgres', 'SELECT s FROM t WHERE id = 3'), 'row 3', 'the cache serves while the keyring is unreadable');
my $psql_new = $node->safe_psql('postgres', 'SELECT s FROM t WHERE id = 4');
is($psql_new, 'row 4', 'a new connection is served from the shared cache too');
$node->safe_psql('postgres', 'ALTER SYSTEM SET colcrypt.key_cache_ttl = 1');
$node->reload;
sleep 2;
like($node->safe_psql('postgres', q{SELECT try('SELECT s::text FROM t WHERE id = 5')}),
	qr/^42501: key provider "dev"/, 'after the TTL the provider is asked again, and its failure shows');
chmod 0600, $keyring;
is($node->safe_psql('postgres', 'SELECT s FROM t WHERE id = 5'), 'row 5', 'and it recovers without a restart');
$stats = ColcryptTest::cache_stats($node);
cmp_ok($stats->{expirations}, '>=', 1, 'expirations are counted');

# An expired key is wiped from shared memory even when no one asks for it
# again: the janitor sweeps the cache once a second.  (Reading the
# statistics looks up no key.)
is(ColcryptTest::server_children($node, qr/colcrypt key cache janitor/), 1, 'the key cache janitor runs');
is(ColcryptTest::cache_stats($node)->{entries}, 1, 'the key just loaded is cached');
my $wiped = 0;
for (1 .. 50)
{
	last if ($wiped = ColcryptTest::cache_stats($node)->{entries} == 0);
	select(undef, undef, undef, 0.2);
}
ok($wiped, 'within a few seconds of its TTL (1 s) the entry is gone, with no lookup of it');

$node->stop;
done_testing();
