# Everything written reads back after a clean restart and after a crash;
# a server without the library preloaded refuses clearly and loses nothing.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $node = ColcryptTest::new_node('restart');
$node->start;
my $keyring = $node->basedir . '/keyring';
ColcryptTest::setup_keys($node, 'postgres', $keyring, 'k1', 'k2');

$node->safe_psql('postgres', q{
	CREATE TABLE t (id integer PRIMARY KEY,
	                s colcrypt.encrypted_text(k1),
	                b colcrypt.encrypted_bytea(k2));
	INSERT INTO t SELECT g, 'value ' || g || ' ' || repeat('é', g % 40),
	                     decode(md5(g::text), 'hex')
	  FROM generate_series(1, 5000) g;
	INSERT INTO t VALUES (0, '', ''), (-1, NULL, NULL),
	                     (-2, repeat('long ', 200000), decode(repeat('ff', 300000), 'hex'));
});
my $checksum_sql = q{
	SELECT count(*) || ':' || md5(string_agg(coalesce(s::text, '<null>') || '|' ||
	       coalesce(encode(b::bytea, 'hex'), '<null>'), ',' ORDER BY id)) FROM t};
my $before = $node->safe_psql('postgres', $checksum_sql);
like($before, qr/^5003:/, 'rows written');

$node->restart;
my $cold = ColcryptTest::cache_stats($node);
is($cold->{entries}, 0, 'the key cache starts empty after a restart');
is($node->safe_psql('postgres', $checksum_sql), $before, 'every value reads back after a restart');
my $warm = ColcryptTest::cache_stats($node);
is($warm->{kms_calls}, 2, 'one provider call per key version after the restart');
is($warm->{entries}, 2, 'both key versions are cached');

# A crash (immediate stop) in the middle of nothing in particular: WAL
# replay brings back committed rows, still ciphertext, still readable.
$node->safe_psql('postgres', q{INSERT INTO t VALUES (5001, 'after restart', '\x01')});
my $before_crash = $node->safe_psql('postgres', $checksum_sql);
$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', $checksum_sql), $before_crash, 'every committed value reads back after a crash');

# Without the preload: a clear error (55000 with the hint), no crash, and
# nothing written.
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "''");
$node->restart;
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT s FROM t WHERE id = 1',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($ret, 0, 'reading fails without the preload');
like($err, qr/55000: colcrypt must be loaded via shared_preload_libraries/, 'with SQLSTATE 55000');
like($err, qr/HINT:  Add colcrypt to shared_preload_libraries/, 'and a hint');
($ret, $out, $err) = $node->psql('postgres', q{INSERT INTO t VALUES (9999, 'x', '\x00')});
isnt($ret, 0, 'writing fails without the preload');
$node->safe_psql('postgres', 'CREATE DATABASE other');
($ret, $out, $err) = $node->psql('other', 'CREATE EXTENSION colcrypt');
isnt($ret, 0, 'CREATE EXTENSION fails without the preload');
like($err, qr/colcrypt must be loaded via shared_preload_libraries/, 'CREATE EXTENSION says why');
is($node->safe_psql('other', q{SELECT count(*) FROM pg_extension WHERE extname = 'colcrypt'}),
	'0', 'nothing was created');
is($node->safe_psql('postgres', 'SELECT count(*) FROM t'), '5004', 'the table is intact (id 9999 not written)');

$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "'colcrypt'");
$node->restart;
is($node->safe_psql('postgres', $checksum_sql), $before_crash, 'everything reads back once preloaded again');

$node->stop;
done_testing();
