# The shared key cache cannot be flushed by one key owner: a key holds at
# most an eighth of the slots (at least 4); once the cache is full, an
# owner's keys hold at most three quarters (at least 8), and past that an
# owner's new entry takes the place of one of its own, so the hot keys of
# others stay resident and their next reads make no provider call.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $node = ColcryptTest::new_node('cache_shares', conf => "colcrypt.key_cache_entries = 16\n");
$node->start;
ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring', 'hot1', 'hot2');
$node->safe_psql('postgres', q{
	CREATE ROLE keyowner LOGIN;
	GRANT USAGE ON SCHEMA colcrypt TO keyowner;
	GRANT CREATE ON SCHEMA public TO keyowner;
	GRANT EXECUTE ON FUNCTION colcrypt.create_key(text, text) TO keyowner;
	SELECT colcrypt.grant_master_key('cmk', 'keyowner');
	CREATE TABLE hot (id int, v colcrypt.encrypted_text(hot1), w colcrypt.encrypted_text(hot2));
	INSERT INTO hot VALUES (1, 'a', 'b');
});
# The others' hot keys are cached.
is($node->safe_psql('postgres', 'SELECT v::text || w::text FROM hot'), 'ab', 'hot keys in use');

# keyowner makes a key and uses 40 versions of it, and 12 keys more.
$node->safe_psql('postgres', q{
	SELECT colcrypt.create_key('flood', 'cmk');
	CREATE TABLE flood_t (v colcrypt.encrypted_text(flood));
	DO $$
	BEGIN
		FOR i IN 1 .. 40 LOOP
			PERFORM colcrypt.rotate_key('flood');
			INSERT INTO flood_t VALUES ('x' || i);
		END LOOP;
	END $$;
	SELECT count(*) FROM flood_t WHERE v::text LIKE 'x%';
}, extra_params => [ '-U', 'keyowner' ]);
for my $i (1 .. 12)
{
	$node->safe_psql('postgres', qq{SELECT colcrypt.create_key('f$i', 'cmk');
		CREATE TABLE ft$i (v colcrypt.encrypted_text(f$i)); INSERT INTO ft$i VALUES ('y');
		SELECT v::text FROM ft$i;}, extra_params => [ '-U', 'keyowner' ]);
}
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.key_cache_contents WHERE name = 'flood'}),
	'<=', 4, 'one key holds at most its share of the cache');
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.key_cache_contents c
	JOIN colcrypt.keys k ON k.name = c.name AND k.version = c.version WHERE k.owner::text = 'keyowner'}),
	'<=', 14, 'one owner took the free slots but none of the others\' (16 slots, 2 of them hot)');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT name, ',' ORDER BY name) FROM colcrypt.key_cache_contents
	WHERE name IN ('hot1', 'hot2')}), 'hot1,hot2', 'the others\' keys are still cached');
my $before = ColcryptTest::cache_stats($node);
is($node->safe_psql('postgres', 'SELECT v::text || w::text FROM hot'), 'ab', 'and read');
is(ColcryptTest::cache_stats($node)->{kms_calls}, $before->{kms_calls}, '...without a provider call');

$node->stop;
done_testing();
