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
	                  det colcrypt.encrypted_text(k1, deterministic),
	                  b colcrypt.encrypted_bytea(k2), pad text);
	CREATE TABLE ctl (id integer PRIMARY KEY, s text, b bytea, pad text);
	INSERT INTO enc SELECT g, '$secret-ins-' || g, '$secret-det-' || (g % 100),
	                       convert_to('$secret-bin-' || g, 'UTF8'), repeat('p', 100)
	  FROM generate_series(1, 3000) g;
	CREATE INDEX enc_det ON enc (det colcrypt.encrypted_text_det_ops);
	CREATE INDEX enc_s ON enc (s colcrypt.encrypted_text_ord_ops) WHERE id > 0;   -- plaintext order; not the 300 KB row
	INSERT INTO ctl SELECT g, '$control-ins-' || g, convert_to('$control-bin-' || g, 'UTF8'), repeat('p', 100)
	  FROM generate_series(1, 3000) g;
	UPDATE enc SET s = '$secret-upd-' || id WHERE id % 10 = 0;
	UPDATE ctl SET s = '$control-upd-' || id WHERE id % 10 = 0;
	-- one value large enough to be TOASTed, in each table
	INSERT INTO enc VALUES (0, '$secret-toast-' || repeat('t', 300000), NULL, NULL, NULL);
	INSERT INTO ctl VALUES (0, '$control-toast-' || repeat(md5(random()::text), 10000), NULL, NULL);
});
# Every other type: fixed-width values have no room for a text marker, so
# distinctive values are used (dates far in the future, so that their four
# bytes are not mostly zero) and their bytes searched for, as a plain heap
# stores them (little-endian) and as colcrypt serializes them before
# encrypting (big-endian).  The control table holds different values of the
# same kinds, which the scan must find.
my %val = (
	secret => { i4 => 1597463007, i8 => '7311543898345826401', f8 => '1.2345678912345678e+300',
		d => "'2000-01-01'::date + 1234567891", ts => '2087-03-04 05:06:07.891011+00',
		n => '314159265358979323846264338327', j => "{\"k\": \"$secret-json\"}" },
	control => { i4 => 1866011341, i8 => '8171165264729063293', f8 => '9.8765432198765432e-200',
		d => "'2000-01-01'::date + 1876543219", ts => '2091-11-12 13:14:15.161718+00',
		n => '271828182845904523536028747135', j => "{\"k\": \"$control-json\"}" });
$node->safe_psql('postgres', qq{
	CREATE TABLE enc_types (id integer,
	    i4 colcrypt.encrypted_int4(k2), i4d colcrypt.encrypted_int4(k2, deterministic),
	    i8 colcrypt.encrypted_int8(k2), f8 colcrypt.encrypted_float8(k2),
	    d colcrypt.encrypted_date(k2), ts colcrypt.encrypted_timestamptz(k2),
	    n colcrypt.encrypted_numeric(k2), j colcrypt.encrypted_jsonb(k2));
	CREATE INDEX enc_types_i4d ON enc_types (i4d colcrypt.encrypted_int4_det_ops);
	INSERT INTO enc_types SELECT g, $val{secret}{i4}, $val{secret}{i4}, $val{secret}{i8}, $val{secret}{f8},
	    $val{secret}{d}, '$val{secret}{ts}', $val{secret}{n}, '$val{secret}{j}'
	  FROM generate_series(1, 2000) g;
	CREATE TABLE ctl_types (id integer, i4 int4, i8 int8, f8 float8, d date, ts timestamptz, n numeric, j jsonb);
	INSERT INTO ctl_types SELECT g, $val{control}{i4}, $val{control}{i8}, $val{control}{f8},
	    $val{control}{d}, '$val{control}{ts}', $val{control}{n}, '$val{control}{j}'
	  FROM generate_series(1, 2000) g;
});
# The stored bytes of each value, computed by the server from the plain types.
my %patterns;
for my $which ('secret', 'control')
{
	my $v = $val{$which};
	my $row = $node->safe_psql('postgres', qq{
		SELECT encode(int4send($v->{i4}), 'hex'), encode(int8send($v->{i8}), 'hex'),
		       encode(float8send($v->{f8}::float8), 'hex'),
		       encode(int4send($v->{d} - '2000-01-01'::date), 'hex'),
		       encode(int8send(((extract(epoch FROM '$v->{ts}'::timestamptz) - 946684800) * 1000000)::int8), 'hex')});
	my ($i4, $i8, $f8, $d, $ts) = split /\|/, $row;
	for my $p ([ 'int4', $i4 ], [ 'int8', $i8 ], [ 'float8', $f8 ], [ 'date', $d ], [ 'timestamptz', $ts ])
	{
		my $be = pack('H*', $p->[1]);
		$patterns{$which}{"$p->[0] big-endian"} = $be;
		$patterns{$which}{"$p->[0] little-endian"} = reverse $be;
	}
	# numeric on disk: base-10000 digits as little-endian int16s.
	(my $digits = $v->{n}) =~ s/^0+//;
	$digits = ('0' x ((4 - length($digits) % 4) % 4)) . $digits;
	$patterns{$which}{'numeric digits'} = pack('v*', map { int($_) } ($digits =~ /(\d{4})/g));
	$patterns{$which}{'jsonb string'} = "$which" eq 'secret' ? "$secret-json" : "$control-json";
}

# COPY FROM STDIN, text and csv.
my $copy = join('', map { "$_\t$secret-copy-$_\n" } 4001 .. 4500);
$node->safe_psql('postgres', "COPY enc (id, s) FROM STDIN;\n$copy\\.\n");
$copy = join('', map { "$_\t$control-copy-$_\n" } 4001 .. 4500);
$node->safe_psql('postgres', "COPY ctl (id, s) FROM STDIN;\n$copy\\.\n");
# A failing input of an encrypted type: its error must not echo the value.
my ($ret, $out, $err) = $node->psql('postgres', qq{INSERT INTO enc (id, b) VALUES (9000, '\\xZZ$secret-err')});
isnt($ret, 0, 'invalid bytea input fails');
unlike($err, qr/$secret/, 'and its error message does not echo the value');
# Constraint violations: PostgreSQL details the offending values, through
# the output functions (plaintext for this role), to the client; the server
# log must get a detail without them.
$node->safe_psql('postgres', q{
	CREATE TABLE uq (id integer NOT NULL, e colcrypt.encrypted_text(k1, deterministic),
	                 CHECK (id > 0));
	CREATE UNIQUE INDEX uq_e ON uq (e colcrypt.encrypted_text_det_ops);
});
$node->safe_psql('postgres', qq{INSERT INTO uq VALUES (1, '$secret-uq')});
for my $case ([ 'unique violation', qq{INSERT INTO uq VALUES (2, '$secret-uq')}, qr/Key \(e\)=\($secret-uq\) already exists/ ],
	[ 'NOT NULL violation', qq{INSERT INTO uq VALUES (NULL, '$secret-nn')}, qr/Failing row contains \(null, $secret-nn\)/ ],
	[ 'CHECK violation', qq{INSERT INTO uq VALUES (-1, '$secret-ck')}, qr/Failing row contains \(-1, $secret-ck\)/ ])
{
	my ($what, $sql, $detail) = @$case;
	($ret, $out, $err) = $node->psql('postgres', $sql);
	like($err, $detail, "$what: the client gets the detail with the values");
}
# A CHECK violation in COPY: its context line would quote the input line.
($ret, $out, $err) = $node->psql('postgres', "COPY uq FROM STDIN;\n-5\t$secret-copyck\n\\.\n");
like($err, qr/Failing row contains \(-5, $secret-copyck\)/, 'COPY CHECK violation: the client gets the detail');
# A view WITH CHECK OPTION names no table in its error; an array column's
# values go through array_out.
$node->safe_psql('postgres', q{
	CREATE VIEW uq_pos AS SELECT * FROM uq WHERE id > 100 WITH CHECK OPTION;
	CREATE TABLE arr (id integer CHECK (id > 0), a colcrypt.encrypted_text(k1)[]);
});
($ret, $out, $err) = $node->psql('postgres', qq{INSERT INTO uq_pos VALUES (7, '$secret-view')});
like($err, qr/Failing row contains \(7, $secret-view\)/, 'view check option: the client gets the detail');
($ret, $out, $err) = $node->psql('postgres', qq{INSERT INTO arr VALUES (-1, ARRAY['$secret-arr'])});
like($err, qr/Failing row contains \(-1, \{$secret-arr\}\)/, 'array column: the client gets the detail');
my $redacted = () = slurp_file($node->logfile) =~ /DETAIL:  Values are not logged: the statement handled encrypted values\./g;
# Six, and any other error with a detail in a statement that handled
# encrypted values (the invalid bytea input above).
cmp_ok($redacted, '>=', 6, "the server log gets a detail without them, for each of the six ($redacted in all)");

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
# Fixed-width patterns: 8-byte ones must not occur at all; a 4-byte one can
# turn up by chance in random bytes (about 2^-32 per position), so it must
# not occur more than a handful of times, where 2,000 plaintext copies would
# show up as thousands.
sub count_occurrences
{
	my ($dir, $needle) = @_;
	my $count = 0;
	my @stack = ($dir);
	while (my $d = pop @stack)
	{
		opendir(my $dh, $d) or next;
		for my $e (readdir $dh)
		{
			next if $e eq '.' || $e eq '..';
			my $p = "$d/$e";
			next if -l $p;
			if (-d $p) { push @stack, $p; next; }
			open(my $fh, '<:raw', $p) or next;
			local $/;
			my $c = <$fh>;
			close $fh;
			next unless defined $c;
			my $pos = 0;
			while (($pos = index($c, $needle, $pos)) >= 0) { $count++; $pos++; }
		}
		closedir $dh;
	}
	return $count;
}
for my $name (sort keys %{ $patterns{secret} })
{
	my $limit = length($patterns{secret}{$name}) >= 8 ? 0 : 5;
	my $found = count_occurrences($datadir, $patterns{secret}{$name});
	cmp_ok($found, '<=', $limit, "encrypted $name: $found occurrences (at most $limit)");
	my $controls = count_occurrences($datadir, $patterns{control}{$name});
	cmp_ok($controls, '>=', 2000, "control $name found $controls times") if $name !~ /big-endian/;
}

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
note("markers checked: " . (3000 * 3 + 300 + 1 + 500 + 2000 * 8) . " values, run id $run");
done_testing();
