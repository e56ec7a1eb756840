# A change made by one backend (grants, provider options, new keys) is seen
# by every other backend at its next use, without reconnecting.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $node = ColcryptTest::new_node('cross_backend');
$node->start;
my $keyring = $node->basedir . '/keyring';
ColcryptTest::setup_keys($node, 'postgres', $keyring);
$node->safe_psql('postgres', q{
	CREATE ROLE reader LOGIN;
	CREATE TABLE t (id integer, s colcrypt.encrypted_text(k1));
	INSERT INTO t VALUES (1, 'visible');
	GRANT SELECT, INSERT ON t TO reader;
	GRANT USAGE ON SCHEMA colcrypt TO reader;
	GRANT EXECUTE ON FUNCTION try(text) TO reader;
	SELECT colcrypt.grant_key('k1', 'reader', 'decrypt');
});

# A long-lived session of the reader.
my $s = $node->background_psql('postgres', extra_params => [ '-U', 'reader' ]);
is($s->query_safe('SELECT s FROM t'), 'visible', 'reader decrypts');

$node->safe_psql('postgres', q{SELECT colcrypt.revoke_key('k1', 'reader', 'decrypt')});
like($s->query_safe('SELECT format($$%s$$, s) FROM t'), qr/^colcrypt:/,
	'after a revoke in another backend, the same session sees ciphertext');
like($s->query_safe(q{SELECT try('SELECT s::text FROM t')}), qr/^42501: permission denied to decrypt/,
	'and may not decrypt');

$node->safe_psql('postgres', q{SELECT colcrypt.grant_key('k1', 'reader', 'all')});
is($s->query_safe('SELECT s FROM t'), 'visible', 'after a grant in another backend it decrypts again');
is($s->query_safe(q{INSERT INTO t VALUES (2, 'written by reader'); SELECT count(*) FROM t}), '2',
	'and may now encrypt');

# A key created in another backend is usable at once.
$node->safe_psql('postgres', q{SELECT colcrypt.create_key('k_new', 'cmk'); SELECT colcrypt.grant_key('k_new', 'reader', 'all');
	CREATE TABLE t2 (s colcrypt.encrypted_text(k_new)); GRANT SELECT, INSERT ON t2 TO reader;});
is($s->query_safe(q{INSERT INTO t2 VALUES ('new key'); SELECT s FROM t2}), 'new key',
	'a key created by another backend is usable in the same session');

# Provider options changed in another backend take effect at the next
# provider call: move the keyring and point the provider at it.
rename $keyring, "$keyring.moved" or die;
$node->safe_psql('postgres', qq{SELECT colcrypt.alter_provider('dev', jsonb_build_object('path', '$keyring.moved'))});
$node->restart;    # empty the cache so the next read must call the provider
$s->quit;
$s = $node->background_psql('postgres', extra_params => [ '-U', 'reader' ]);
is($s->query_safe('SELECT s FROM t WHERE id = 1'), 'visible', 'the provider is reached at its new path');
is(ColcryptTest::cache_stats($node)->{kms_failures}, 0, 'no provider failure');
$s->quit;

$node->stop;
done_testing();
