# colcrypt.reencrypt beside a concurrent pgbench load of updates, inserts,
# deletes and reads: no client error, no lost row or update (a plaintext
# shadow table written in the same transactions must match), every value
# under the active version afterwards, progress visible from another session.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use ColcryptTest;

my $rows = 40000;
my $clients = 8;

my $node = ColcryptTest::new_node('reencrypt_concurrent', conf => "max_connections = 40\n");
$node->start;
ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring', 'acct');
$node->safe_psql('postgres', qq{
	CREATE TABLE acct (id bigint PRIMARY KEY,
	                   v colcrypt.encrypted_text(acct),
	                   n colcrypt.encrypted_int8(acct),
	                   d colcrypt.encrypted_int4(acct, deterministic),
	                   filler text);
	CREATE INDEX acct_d ON acct (d colcrypt.encrypted_int4_det_ops);
	CREATE TABLE shadow (id bigint PRIMARY KEY, v text, n int8, d int4);
	INSERT INTO acct SELECT g, 'value ' || g, g * 7, g % 100, repeat('x', 40) FROM generate_series(1, $rows) g;
	INSERT INTO shadow SELECT g, 'value ' || g, g * 7, g % 100 FROM generate_series(1, $rows) g;
	CREATE SEQUENCE new_ids START 1000000;
	VACUUM ANALYZE acct;
});

my $dir = PostgreSQL::Test::Utils::tempdir;
my %scripts = (
	'update.sql' => q{
\set id random(1, } . $rows . q{)
\set x random(1, 1000000000)
BEGIN;
UPDATE acct SET v = 'updated ' || :x, n = :x, d = :x % 100 WHERE id = :id;
UPDATE shadow SET v = 'updated ' || :x, n = :x, d = :x % 100 WHERE id = :id;
END;
},
	'insert.sql' => q{
\set x random(1, 1000000000)
SELECT nextval('new_ids') AS nid \gset
BEGIN;
INSERT INTO acct VALUES (:nid, 'inserted ' || :x, :x, :x % 100, 'y');
INSERT INTO shadow VALUES (:nid, 'inserted ' || :x, :x, :x % 100);
END;
},
	'delete.sql' => q{
\set id random(1, } . $rows . q{)
BEGIN;
DELETE FROM acct WHERE id = :id;
DELETE FROM shadow WHERE id = :id;
END;
},
	'read.sql' => q{
\set id random(1, } . $rows . q{)
\set m random(0, 99)
SELECT v, n, d FROM acct WHERE id = :id;
SELECT count(*) FROM acct WHERE d = :m;
},
);
for my $f (keys %scripts)
{
	open(my $fh, '>', "$dir/$f") or die;
	print $fh $scripts{$f};
	close $fh;
}

# Start pgbench for $seconds with the given scripts; returns a handle.
sub start_pgbench
{
	my ($seconds, @files) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ('pgbench', '-n', '-c', $clients, '-j', 4, '-T', $seconds,
		(map { ('-f', "$dir/$_") } @files), '-h', $node->host, '-p', $node->port, 'postgres');
	local $ENV{PGAPPNAME} = 'load';
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	# Wait until every client is connected and working.
	for (my $i = 0; pgbench_running() < $clients; $i++)
	{
		die "pgbench did not start: $err" if $i > 1000 || !$h->pumpable;
		usleep(10_000);
	}
	return { h => $h, out => \$out, err => \$err };
}

sub finish_pgbench
{
	my ($pg, $name) = @_;
	$pg->{h}->finish;
	my $status = $pg->{h}->result(0);
	my ($done) = ${ $pg->{out} } =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = ${ $pg->{out} } =~ /number of failed transactions: (\d+)/;
	is($status, 0, "$name: pgbench exits 0");
	unlike(${ $pg->{err} }, qr/ERROR|aborted|FATAL/, "$name: no client error")
	  or diag ${ $pg->{err} };
	ok(defined $done && $done > 0, "$name: pgbench processed transactions");
	is($failed // 0, 0, "$name: no failed transaction");
	note "$name: $done transactions, " . ($failed // 0) . " failed";
	diag "$name: pgbench processed $done transactions with " . ($failed // 0) . ' failed';
	return;
}

# Run reencrypt in a background session while watching its progress row
# from this one; returns its NOTICE output and the progress rows seen.
sub reencrypt_watched
{
	my ($batch) = @_;
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/started/, "\\echo started\nCALL colcrypt.reencrypt('acct', $batch);\n\\echo finished\n");
	my @seen;
	my $deadline = time + 120;
	while (time < $deadline)
	{
		my $row = $node->safe_psql('postgres',
			"SELECT phase || ' ' || rows_done || '/' || rows_total || ' ' || coalesce(percent::text, '') FROM colcrypt.reencrypt_progress WHERE relation = 'acct'::regclass");
		push @seen, $row if $row ne '' && (!@seen || $seen[-1] ne $row);
		last if $row eq '' && @seen;
		usleep(20_000);
	}
	$bg->query_until(qr/finished/, '');
	my $notices = $bg->{stderr};
	$bg->quit;
	return ($notices, @seen);
}

sub stale_values
{
	return $node->safe_psql('postgres',
		q{SELECT colcrypt._reencrypt_count('acct', false)});
}

sub pgbench_running
{
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'load'");
}

# --- Under a write load -------------------------------------------------
$node->safe_psql('postgres', q{SELECT colcrypt.rotate_key('acct')});
is(stale_values(), $rows, 'after rotate_key every row is stale');

# Long enough that both re-encryptions below run under it on a busy 2-core machine.
my $pg = start_pgbench(20, 'update.sql@5', 'insert.sql@2', 'delete.sql@1', 'read.sql@4');
my ($notices, @progress) = reencrypt_watched(500);
cmp_ok(pgbench_running(), '>=', $clients, 'the load was still running when reencrypt finished');
like($notices, qr/reencrypt acct: \d+ of \d+ rows \(\d+\.\d %\)/, 'NOTICE lines report rows and a percentage');
like($notices, qr/reencrypt acct: done, \d+ rows re-encrypted/, 'and the end');
ok(scalar(grep { /^pass \d+ [1-9]\d*\/\d+ \d+\.\d$/ } @progress) >= 2,
	'another session watched reencrypt_progress advance')
  or diag explain \@progress;
note "progress rows seen: @progress[0 .. ($#progress < 5 ? $#progress : 5)]";
my @notice_lines = grep { /reencrypt acct/ } split /\n/, $notices;
diag 'reencrypt output (first and last lines): ' . join(' | ', @notice_lines[0 .. 2], $notice_lines[-2], $notice_lines[-1]);

# A second rotation and re-encryption while the same load continues.
$node->safe_psql('postgres', q{SELECT colcrypt.rotate_key('acct')});
($notices) = reencrypt_watched(2000);
cmp_ok(pgbench_running(), '>=', $clients, 'the load was still running after the second reencrypt');
is(stale_values(), 0, 'every value is under the active version');
finish_pgbench($pg, 'write load');
is(stale_values(), 0, 'and stays so');

my $check = q{SELECT count(*) || ' ' || md5(string_agg(id || ':' || v::text || ':' || n::text || ':' || d::text, ',' ORDER BY id)) FROM %s};
my $enc = $node->safe_psql('postgres', sprintf($check, 'acct'));
my $plain = $node->safe_psql('postgres', sprintf($check, 'shadow'));
is($enc, $plain, 'the encrypted table matches its plaintext shadow: no lost row or update');
note "rows and checksum: $enc";
is($node->safe_psql('postgres', q{SELECT count(*) FROM acct a FULL JOIN shadow s USING (id)
	WHERE a.id IS NULL OR s.id IS NULL OR a.v::text IS DISTINCT FROM s.v}), '0', 'row by row too');
is($node->safe_psql('postgres', 'SELECT count(*) FROM acct WHERE d = 42'),
	$node->safe_psql('postgres', 'SELECT count(*) FROM shadow WHERE d = 42'),
	'deterministic index lookups find every row');

# Versions 1 and 2 hold no value now: destroying them needs no force.
$node->safe_psql('postgres', q{SELECT colcrypt.set_key_state('acct', 1, 'destroyed');
	SELECT colcrypt.set_key_state('acct', 2, 'destroyed')});
is($node->safe_psql('postgres', sprintf($check, 'acct')), $enc, 'all data readable after destroying the old versions');

# --- Under a read load: plaintext identical before and after ------------
$node->safe_psql('postgres', q{SELECT colcrypt.rotate_key('acct')});
my $before = $node->safe_psql('postgres', sprintf($check, 'acct'));
$pg = start_pgbench(12, 'read.sql');
($notices) = reencrypt_watched(1000);
cmp_ok(pgbench_running(), '>=', $clients, 'the read load was still running when reencrypt finished');
finish_pgbench($pg, 'read load');
is(stale_values(), 0, 'every value re-encrypted under a read load');
is($node->safe_psql('postgres', sprintf($check, 'acct')), $before, 'plaintext checksum unchanged');

$node->stop;
done_testing();
