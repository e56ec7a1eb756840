# No plaintext of an encrypted column on disk or in the server log: unique
# markers go in through INSERT, COPY and UPDATE; sorts and hash joins spill
# them to temp files (held open by cursors while we look); after a
# CHECKPOINT no marker appears anywhere under the data directory (heap,
# TOAST, indexes, WAL, temp files) or in the server log.  The same is done
# with a plain-text control table, whose markers must be found in each place
# we scan: a scan that could not find anything proves nothing.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $run = sprintf('%08x%08x', int(rand(2**32)), int(rand(2**32)));
my $secret = "SECRETMARK$run";    # goes into encrypted columns only
my $control = "PLAINMARK$run";    # goes into the plain control table

# Production-like logging: statements are not logged (PostgreSQL's own
# statement log would of course hold literals), errors are.
my $node = ColcryptTest::new_node('no_plaintext', conf => qq{
log_statement = 'none'
log_min_error_statement = 'panic'
log_min_messages = 'info'
work_mem = '64kB'
max_parallel_workers_per_gather = 0
});
$node->start;
ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring', 'k1', 'k2');

$node->safe_psql('postgres', qq{
	CREATE TABLE enc (id integer PRIMARY KEY, s colcrypt.encrypted_text(k1),
	                  b colcrypt.encrypted_bytea(k2), pad text);
	CREATE TABLE ctl (id integer PRIMARY KEY, s text, b bytea, pad text);
	INSERT INTO enc SELECT g, '$secret-ins-' || g, convert_to('$secret-bin-' || g, 'UTF8'), repeat('p', 100)
	  FROM generate_series(1, 3000) g;
	INSERT INTO ctl SELECT g, '$control-ins-' || g, convert_to('$control-bin-' || g, 'UTF8'), repeat('p', 100)
	  FROM generate_series(1, 3000) g;
	UPDATE enc SET s = '$secret-upd-' || id WHERE id % 10 = 0;
	UPDATE ctl SET s = '$control-upd-' || id WHERE id % 10 = 0;
	-- one value large enough to be TOASTed, in each table
	INSERT INTO enc VALUES (0, '$secret-toast-' || repeat('t', 300000), NULL, NULL);
	INSERT INTO ctl VALUES (0, '$control-toast-' || repeat(md5(random()::text), 10000), NULL, NULL);
});
# COPY FROM STDIN, text and csv.
my $copy = join('', map { "$_\t$secret-copy-$_\n" } 4001 .. 4500);
$node->safe_psql('postgres', "COPY enc (id, s) FROM STDIN;\n$copy\\.\n");
$copy = join('', map { "$_\t$control-copy-$_\n" } 4001 .. 4500);
$node->safe_psql('postgres', "COPY ctl (id, s) FROM STDIN;\n$copy\\.\n");
# A failing input of an encrypted type: its error must not echo the value.
my ($ret, $out, $err) = $node->psql('postgres', qq{INSERT INTO enc (id, b) VALUES (9000, '\\xZZ$secret-err')});
isnt($ret, 0, 'invalid bytea input fails');
unlike($err, qr/$secret/, 'and its error message does not echo the value');
# Plaintext that is both read and shown must not be logged by colcrypt.
$node->safe_psql('postgres', 'SELECT count(*) FROM enc WHERE s = (SELECT s FROM enc WHERE id = 1)');

# Spill sorts and hash joins to temp files and keep the cursors open.
my $session = $node->background_psql('postgres');
$session->query_safe(q{SET work_mem = '64kB'});
$session->query_safe('BEGIN');
$session->query_safe('DECLARE c1 CURSOR FOR SELECT id, s, b FROM enc ORDER BY md5(id::text)');
$session->query_safe('FETCH 1 FROM c1');
$session->query_safe('SET enable_mergejoin = off; SET enable_nestloop = off');
$session->query_safe('DECLARE c2 CURSOR FOR SELECT a.s, b.b FROM enc a JOIN enc b ON a.id = b.id + 1');
$session->query_safe('FETCH 1 FROM c2');
$session->query_safe('DECLARE c3 CURSOR FOR SELECT id, s, b FROM ctl ORDER BY md5(id::text)');
$session->query_safe('FETCH 1 FROM c3');
$session->query_safe('DECLARE c4 CURSOR FOR SELECT a.s, b.b FROM ctl a JOIN ctl b ON a.id = b.id + 1');
$session->query_safe('FETCH 1 FROM c4');
$node->safe_psql('postgres', 'CHECKPOINT');

my $datadir = $node->data_dir;
my @tempfiles = grep { m{pgsql_tmp/} } ColcryptTest::files_containing($datadir, '');
cmp_ok(scalar(@tempfiles), '>=', 2, 'sorts and hash joins spilled to temp files (' . scalar(@tempfiles) . ' files)');

my @secret_files = ColcryptTest::files_containing($datadir, $secret);
is(scalar(@secret_files), 0, 'no marker of an encrypted column anywhere under the data directory')
  or diag("found in: @secret_files");
my @control_files = ColcryptTest::files_containing($datadir, $control);
ok((grep { m{^base/} && !m{pgsql_tmp} } @control_files), 'control markers are found in heap files');
ok((grep { m{^pg_wal/} } @control_files), 'control markers are found in WAL');
ok((grep { m{pgsql_tmp/} } @control_files), 'control markers are found in temp files');
note('control markers in: ' . join(' ', sort @control_files));

$session->query_safe('COMMIT');
$session->quit;

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/$secret/, 'no marker in the server log');
# After shutdown, once more, including everything written at the shutdown checkpoint.
@secret_files = ColcryptTest::files_containing($datadir, $secret);
is(scalar(@secret_files), 0, 'no marker under the data directory after shutdown')
  or diag("found in: @secret_files");
note("markers checked: " . (3000 * 2 + 300 + 1 + 500) . " values, run id $run");
done_testing();
