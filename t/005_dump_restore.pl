# pg_dump with colcrypt.output = ciphertext holds no plaintext; restoring it
# into a fresh database, and into a fresh cluster that reaches the same
# keyring, gives back every value.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $run = sprintf('%08x', int(rand(2**32)));
my $secret = "DUMPMARK$run";
my $shared = PostgreSQL::Test::Utils::tempdir();    # keyring outside both data dirs
my $keyring = "$shared/keyring";

my $src = ColcryptTest::new_node('dump_src');
$src->start;
ColcryptTest::setup_keys($src, 'postgres', $keyring, 'customers', 'Mixed Case Key');
$src->safe_psql('postgres', qq{
	CREATE ROLE app;
	SELECT colcrypt.grant_key('customers', 'app', 'decrypt');
	CREATE TABLE customers (
	    id integer PRIMARY KEY,
	    email colcrypt.encrypted_text(customers),
	    photo colcrypt.encrypted_bytea("Mixed Case Key"),
	    note text);
	INSERT INTO customers SELECT g, '$secret-' || g || '\@example.com',
	       convert_to('$secret-photo-' || g, 'UTF8'), 'plain note ' || g
	  FROM generate_series(1, 1000) g;
	INSERT INTO customers VALUES (0, '', '', NULL), (-1, NULL, NULL, NULL),
	       (-2, 'Zoë 東京 \\ tab\t"quote"', '\\x00ff', NULL);
	UPDATE customers SET email = 'view target' WHERE id = 1;
	-- A view's literal is schema, kept as written: not a marker.
	CREATE VIEW v AS SELECT id FROM customers WHERE email = 'view target'::text;
});
my $checksum_sql = q{
	SELECT count(*) || ':' || md5(string_agg(coalesce(email::text, '<null>') || '|' ||
	       coalesce(encode(photo::bytea, 'hex'), '<null>') || '|' || coalesce(note, '<null>'), ',' ORDER BY id))
	  FROM customers};
my $before = $src->safe_psql('postgres', $checksum_sql);

my $dumpdir = PostgreSQL::Test::Utils::tempdir();
# A plain dump (the default plaintext mode) holds the plaintext: the marker
# scan below can tell the difference.
$src->command_ok([ 'pg_dump', '-d', $src->connstr('postgres'), '-f', "$dumpdir/plain.sql" ],
	'pg_dump in plaintext mode');
ok(index(slurp_file("$dumpdir/plain.sql"), $secret) >= 0, 'control: a plaintext-mode dump contains the markers');

{
	local $ENV{PGOPTIONS} = '-c colcrypt.output=ciphertext';
	$src->command_ok([ 'pg_dump', '-d', $src->connstr('postgres'), '-f', "$dumpdir/cipher.sql" ],
		'pg_dump in ciphertext mode (plain format)');
	$src->command_ok([ 'pg_dump', '-Fc', '-d', $src->connstr('postgres'), '-f', "$dumpdir/cipher.dump" ],
		'pg_dump in ciphertext mode (custom format)');
}
my $dump = slurp_file("$dumpdir/cipher.sql");
ok(index($dump, $secret) < 0, 'the ciphertext-mode dump holds no marker');
like($dump, qr/colcrypt:[A-Za-z0-9+\/]+=*/, 'it holds ciphertext text forms');
like($dump, qr/encrypted_text\(customers\)/, 'columns keep their key');
like($dump, qr/encrypted_bytea\("Mixed Case Key"\)/, 'a key name that needs quoting is quoted');
ok(index(slurp_file("$dumpdir/cipher.dump"), $secret) < 0, 'the custom-format dump holds no marker either');

# Restore into a new database of the same cluster, from the plain dump.
$src->safe_psql('postgres', 'CREATE DATABASE restored');
$src->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $src->connstr('restored'),
	'-f', "$dumpdir/cipher.sql" ], 'restore into a fresh database');
is($src->safe_psql('restored', $checksum_sql), $before, 'every value reads back in the restored database');
is($src->safe_psql('restored', 'SELECT * FROM v'), '1', 'the view works');

# Restore into a fresh cluster that reaches the same keyring, with pg_restore.
my $dst = ColcryptTest::new_node('dump_dst');
$dst->start;
$dst->safe_psql('postgres', 'CREATE ROLE app');
$dst->command_ok([ 'pg_restore', '-d', $dst->connstr('postgres'), "$dumpdir/cipher.dump" ],
	'pg_restore into a fresh cluster');
is($dst->safe_psql('postgres', $checksum_sql), $before, 'every value reads back in the other cluster');
is($dst->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.key_grants WHERE grantee = 'app'::regrole}),
	'1', 'grants came along');
my $stats = ColcryptTest::cache_stats($dst);
is($stats->{kms_calls}, 2, 'the restored cluster unwrapped each key once through the keyring');

# Restoring with plain psql into a database without the setting: the dump
# sets check_function_bodies = off, which colcrypt treats as a restore.
$dst->safe_psql('postgres', 'CREATE DATABASE again');
$dst->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $dst->connstr('again'),
	'-f', "$dumpdir/cipher.sql" ], 'plain psql restore without PGOPTIONS');
is($dst->safe_psql('again', $checksum_sql), $before, 'every value reads back there too');

$src->stop;
$dst->stop;
done_testing();
