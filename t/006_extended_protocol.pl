# Writes and reads through the extended query protocol, as drivers do:
# untyped parameters (node-postgres, DBD::Pg), text and varchar parameters
# (PgJDBC), binary parameters and binary results, prepared statements.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $client = "$FindBin::RealBin/../test/proto_client";
ok(-x $client, 'test/proto_client is built (make test-programs)') or BAIL_OUT('no client');

my $node = ColcryptTest::new_node('protocol');
$node->start;
ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring');
$node->safe_psql('postgres', 'CREATE TABLE t (id integer, s colcrypt.encrypted_text(k1))');

my ($stdout, $stderr);
IPC::Run::run([ $client, $node->connstr('postgres'), 't' ], '>', \$stdout, '2>', \$stderr);
note($stdout);
is($stderr, '', 'no client errors');
for my $what ('untyped param', 'text param', 'varchar param', 'binary untyped param',
	'binary text param', 'prepare untyped')
{
	like($stdout, qr/^\Q$what\E: ok$/m, "$what: accepted");
}
like($stdout, qr/^execute prepared: 20 done$/m, 'a prepared statement with untyped parameters ran 20 times');
like($stdout, qr/^where untyped: 3$/m, 'WHERE s = $1 with an untyped parameter finds the row');
like($stdout, qr/^where text: 3$/m, 'WHERE s = $1 with a text parameter finds the row');
like($stdout, qr/^text row 1: untyped value$/m, 'untyped parameter reads back');
like($stdout, qr/^text row 3: varchar value$/m, 'varchar parameter reads back');
like($stdout, qr/^text row 4: binary value$/m, 'binary parameter reads back');
like($stdout, qr/^text row 119: prepared 19$/m, 'prepared statement rows read back');
like($stdout, qr/^binary row 2: text value$/m, 'binary results carry the plain type\'s binary form');

# Every stored value is under the column's key, never the transit key.
is($node->safe_psql('postgres',
	q{SELECT count(*) FILTER (WHERE colcrypt.inspect(s)->>'key' = 'k1') || '/' || count(*) FROM t}),
	'25/25', 'all 25 values are stored under the column key');

$node->stop;
done_testing();
