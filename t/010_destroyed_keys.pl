# Crypto-shredding: destroying a data key version wipes it from the shared
# cache for every backend at once and overwrites its wrapped key in the
# catalog's files; its values then fail with a clear error, in running
# sessions, new ones, after a restart and after crash recovery, while the
# key's other versions keep working.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $node = ColcryptTest::new_node('destroyed_keys',
	conf => "restart_after_crash = on\nmax_prepared_transactions = 2\n");
$node->start;
ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring', 'k1');
$node->safe_psql('postgres', q{
	CREATE TABLE t (id integer PRIMARY KEY, v colcrypt.encrypted_text(k1), d colcrypt.encrypted_int4(k1, deterministic));
	CREATE INDEX t_d ON t (d colcrypt.encrypted_int4_det_ops);
	INSERT INTO t SELECT g, 'old secret ' || g, g FROM generate_series(1, 100) g;
	SELECT colcrypt.rotate_key('k1');
	INSERT INTO t SELECT g, 'new secret ' || g, g FROM generate_series(101, 200) g;
});
# Leave copies of the wrapped keys behind: dead row versions, and after a
# VACUUM the bytes of removed ones in the pages' free space.
$node->safe_psql('postgres', q{
	UPDATE colcrypt.data_key_version SET wrap_meta = wrap_meta;
	UPDATE colcrypt.data_key_version SET wrap_meta = wrap_meta;
});
$node->safe_psql('postgres', 'VACUUM colcrypt.data_key_version');
$node->safe_psql('postgres', 'UPDATE colcrypt.data_key_version SET wrap_meta = wrap_meta');
my $destroyed_err = qr/^55000: data key "k1" version 1 is destroyed and cannot be used to decrypt/;

# A session that has both versions in use (and cached).
my $s = $node->background_psql('postgres');
is($s->query_safe('SELECT count(*) FROM t WHERE v::text LIKE $$%secret%$$'), '200', 'a session reads both versions');
is($node->safe_psql('postgres', q{SELECT string_agg(version::text, ',' ORDER BY version)
	FROM colcrypt.key_cache_contents WHERE name = 'k1'}), '1,2', 'both versions are in the shared cache');

# The wrapped key of version 1, as stored.
my $wrapped = $node->safe_psql('postgres', q{SELECT encode(wrapped_key, 'hex') FROM colcrypt.data_key_version
	WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'k1') AND version = 1});
like($wrapped, qr/^[0-9a-f]{64,}$/, 'version 1 has a wrapped key');
my $catalog_file = $node->safe_psql('postgres', q{SELECT pg_relation_filepath('colcrypt.data_key_version')});
$node->safe_psql('postgres', 'CHECKPOINT');
my $datadir = $node->data_dir;
my $needle = pack('H*', $wrapped);
is(scalar(ColcryptTest::files_containing("$datadir/" . ($catalog_file =~ s{/[^/]+$}{}r), $needle)), 1,
	'the wrapped key is in the catalog file before');

my ($ret, $out, $err) = $node->psql('postgres', q{SELECT colcrypt.set_key_state('k1', 1, 'destroyed')});
like($err, qr/version 1 still encrypts 200 values/, 'destroying a version in use needs force, and says how many values');
$node->safe_psql('postgres', q{SELECT colcrypt.set_key_state('k1', 1, 'destroyed', force => true)});

# At once, in the session that had it cached.
like($s->query_safe(q{SELECT try('SELECT v::text FROM t WHERE id = 1')}), $destroyed_err,
	'the running session cannot decrypt it any more');
is($s->query_safe('SELECT v FROM t WHERE id = 150'), 'new secret 150', 'but still decrypts version 2');
is($node->safe_psql('postgres', q{SELECT string_agg(version::text, ',' ORDER BY version)
	FROM colcrypt.key_cache_contents WHERE name = 'k1'}), '2', 'the shared cache no longer holds version 1');
like($node->safe_psql('postgres', q{SELECT try('SELECT v::text FROM t WHERE id = 1')}), $destroyed_err,
	'a new session cannot either');
$s->quit;

# After the commit the background worker zeroes every other copy of the
# wrapped key in the catalog's files: dead row versions and free space.
is($node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()'), 't', 'the shredding is done');
is($node->safe_psql('postgres', q{SELECT shredded_at IS NOT NULL FROM colcrypt.keys WHERE name = 'k1' AND version = 1}),
	't', 'and recorded');
$node->safe_psql('postgres', 'CHECKPOINT');
is(scalar(ColcryptTest::files_containing("$datadir/base", $needle)), 0, 'the wrapped key is in no table file');
is($node->safe_psql('postgres', q{SELECT wrapped_key IS NULL FROM colcrypt.data_key_version
	WHERE key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'k1') AND version = 1}), 't',
	'and the catalog row has none');

sub check_after
{
	my ($what) = @_;
	is($node->safe_psql('postgres', q{SELECT state FROM colcrypt.keys WHERE name = 'k1' AND version = 1}),
		'destroyed', "$what: version 1 is destroyed");
	like($node->safe_psql('postgres', q{SELECT try('SELECT v::text FROM t WHERE id = 1')}), $destroyed_err,
		"$what: its values fail with a clear error");
	like($node->safe_psql('postgres', q{SELECT try('SELECT count(*) FROM t WHERE v::text = ''x''')}), $destroyed_err,
		"$what: so do scans that decrypt them");
	is($node->safe_psql('postgres', q{SELECT string_agg(v::text, ',' ORDER BY id) = string_agg('new secret ' || id, ',' ORDER BY id)
		FROM t WHERE id > 100}), 't', "$what: values under version 2 read");
	is($node->safe_psql('postgres', 'SET enable_seqscan = off; SELECT count(*) FROM t WHERE d = 150'), '1',
		"$what: deterministic index lookups of version 2 values work");
	is($node->safe_psql('postgres', 'SET enable_seqscan = off; SELECT count(*) FROM t WHERE d = 50'), '0',
		"$what: and find no shredded value");
	return;
}

check_after('in the same run');
$node->restart;
check_after('after a restart');
$node->stop('immediate');
$node->start;
check_after('after crash recovery');

# A destroyed version not marked shredded (as after a crash between the
# commit and the shredding) is shredded when its key is next used.
$node->safe_psql('postgres', q{UPDATE colcrypt.data_key_version SET shredded_at = NULL
	WHERE version = 1 AND key_id = (SELECT key_id FROM colcrypt.data_key WHERE name = 'k1')});
$node->restart;
$node->safe_psql('postgres', q{SELECT count(*) FROM t WHERE id > 100 AND v::text LIKE 'new%'});
$node->poll_query_until('postgres', q{SELECT shredded_at IS NOT NULL FROM colcrypt.keys WHERE name = 'k1' AND version = 1})
  or die 'not shredded';
pass('it is shredded again after the next use of the key');

# Rows of shredded values can be deleted; new values go to version 2.
$node->safe_psql('postgres', q{DELETE FROM t WHERE colcrypt._key_version(v) = 1});
is($node->safe_psql('postgres', 'SELECT count(*) FROM t'), '100', 'shredded rows can be deleted');
$node->safe_psql('postgres', q{INSERT INTO t VALUES (1, 'fresh', 1)});
is($node->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1'), 'fresh', 'and new values written');

# A prepared transaction cannot destroy: the shredding happens at commit,
# which COMMIT PREPARED would run elsewhere.
$node->safe_psql('postgres', q{SELECT colcrypt.rotate_key('k1')});
($ret, $out, $err) = $node->psql('postgres', q{BEGIN;
	SELECT colcrypt.set_key_state('k1', 2, 'destroyed', force => true);
	PREPARE TRANSACTION 'shred'});
like($err, qr/cannot prepare a transaction that destroys a data key version/, 'PREPARE TRANSACTION is refused');
is($node->safe_psql('postgres', q{SELECT state FROM colcrypt.keys WHERE name = 'k1' AND version = 2}
	. q{ UNION ALL SELECT count(*)::text FROM pg_prepared_xacts}), "deactivated\n0", 'and nothing changed');
is($node->safe_psql('postgres', 'SELECT v FROM t WHERE id = 150'), 'new secret 150', 'version 2 still decrypts');
# A destroy rolled back to a savepoint does not stand in PREPARE's way.
($ret, $out, $err) = $node->psql('postgres', q{BEGIN; SAVEPOINT s;
	SELECT colcrypt.set_key_state('k1', 2, 'destroyed', force => true);
	ROLLBACK TO s;
	PREPARE TRANSACTION 'no_shred'});
is($ret, 0, 'PREPARE after a destroy rolled back to a savepoint works') or diag $err;
$node->safe_psql('postgres', q{ROLLBACK PREPARED 'no_shred'});
# Nor can it change the key catalog at all: COMMIT PREPARED would not tell
# the other backends (the catalog epoch) nor wipe what it should.
($ret, $out, $err) = $node->psql('postgres', q{BEGIN; SELECT colcrypt.rotate_key('k1');
	PREPARE TRANSACTION 'rotate'});
like($err, qr/ERROR:  cannot prepare a transaction that changes colcrypt's key catalog/,
	'PREPARE TRANSACTION after rotate_key is refused');
is($node->safe_psql('postgres', q{SELECT count(*)::text FROM colcrypt.keys WHERE name = 'k1'}
	. q{ UNION ALL SELECT count(*)::text FROM pg_prepared_xacts}), "3\n0", 'and nothing changed');

$node->stop;
done_testing();
