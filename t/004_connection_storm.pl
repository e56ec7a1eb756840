# Thousands of connections cost one provider call per key version, not one
# each: the shared cache serves new backends, and when many backends miss
# at once (cold cache) one asks the provider while the others wait.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $node = ColcryptTest::new_node('storm', conf => "max_connections = 100\n");
$node->start;
ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring', 'k1', 'k2');
$node->safe_psql('postgres', q{
	CREATE TABLE t (id integer PRIMARY KEY, s colcrypt.encrypted_text(k1), o colcrypt.encrypted_text(k2));
	INSERT INTO t SELECT g, 'value ' || g, 'other ' || g FROM generate_series(1, 100) g;
});

# Warm: one read loads both keys.
$node->safe_psql('postgres', 'SELECT count(*) FROM t WHERE s IS NOT NULL AND length(s) + length(o) > 0');
my $before = ColcryptTest::cache_stats($node);

# 50 new connections, each reading one encrypted value of each key.
$node->pgbench('--no-vacuum --connect --client=5 --transactions=10',
	0, [qr/number of transactions actually processed: 50/], [qr/^$/],
	'50 new connections each read encrypted values',
	{ 'storm_read' => q{
\set id random(1, 100)
SELECT s::text, o::text FROM t WHERE id = :id;
} });
my $after = ColcryptTest::cache_stats($node);
is($after->{kms_calls} - $before->{kms_calls}, 0, '50 new connections made no provider call');
cmp_ok($after->{hits} - $before->{hits}, '>=', 100, 'each connection was served by the shared cache (hits ' .
	($after->{hits} - $before->{hits}) . ')');
note("storm: provider calls before $before->{kms_calls}, after $after->{kms_calls}; hits +"
	. ($after->{hits} - $before->{hits}));

# Cold cache: 30 connections arrive at once after a restart.
$node->restart;
my $cold = ColcryptTest::cache_stats($node);
$node->pgbench('--no-vacuum --connect --client=30 --transactions=1',
	0, [qr/number of transactions actually processed: 30/], [qr/^$/],
	'30 simultaneous connections on a cold cache',
	{ 'storm_cold' => q{
SELECT s::text, o::text FROM t WHERE id = 1;
} });
my $warm = ColcryptTest::cache_stats($node);
is($warm->{kms_calls} - $cold->{kms_calls}, 2,
	'a cold cache costs one provider call per key version (2), however many backends miss at once');
note("cold storm: provider calls $warm->{kms_calls}, misses $warm->{misses}, hits $warm->{hits}");

$node->stop;
done_testing();
