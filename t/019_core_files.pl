# Core files hold no key and no plaintext of an encrypted column.
#
# The shared key cache is excluded from every core dump (MADV_DONTDUMP);
# a process that has handled key material (its private AES key schedules
# begin with the derived subkeys) makes itself non-dumpable, unless
# colcrypt.allow_core_dumps is on.  Checked with gcore on live backends and,
# where the kernel writes core files into the working directory, with real
# crashes (SIGABRT):
#  - a backend that used a key: not dumpable, cannot be traced by the same
#    OS user, and its crash leaves no core file;
#  - a backend that never used a key: dumpable, and its core file (which
#    includes shared memory: shared buffers, WAL buffers, the statement
#    texts of every backend) holds neither the data key, its subkeys, the
#    master key, nor any marker written to an encrypted column, while the
#    marker of a plain control table is found in it;
#  - with colcrypt.allow_core_dumps = on, a key-using backend's core does
#    hold the subkeys: the scan can find what it looks for.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

# Under scripts/test.sh --sanitize every process carries ASan's terabytes
# of shadow mappings: core files would hold them, and ASan turns them off.
plan skip_all => 'core files are not made under AddressSanitizer' if $ENV{COLCRYPT_SANITIZE};

my $node = ColcryptTest::new_node('core_files', production_logging => 1, conf => "restart_after_crash = on\n");
$node->start;
my $keyring = $node->basedir . '/keyring';
ColcryptTest::setup_keys($node, 'postgres', $keyring, 'k1');

my $secret = ColcryptTest::run_marker('SECRETMARK');
my $control = ColcryptTest::run_marker('PLAINMARK');
# Statement texts live in shared memory (pg_stat_activity), which every
# core file includes, as applications' statements do not hold values when
# they bind parameters: so no statement here holds a marker whole.
my ($s1, $s2) = (substr($secret, 0, 12), substr($secret, 12));
my ($c1, $c2) = (substr($control, 0, 11), substr($control, 11));
$node->safe_psql('postgres', qq{
	CREATE TABLE enc (id integer, s colcrypt.encrypted_text(k1),
	                  d colcrypt.encrypted_text(k1, deterministic));
	INSERT INTO enc SELECT g, '$s1' || '$s2' || '-' || g, '$s1' || '$s2' || '-d' || (g % 10)
	  FROM generate_series(1, 2000) g;
	CREATE TABLE ctl (id integer, s text);
	INSERT INTO ctl SELECT g, '$c1' || '$c2' || '-' || g FROM generate_series(1, 2000) g;
});

# The key bytes: the data key, its GCM and SIV subkeys, the master key.
my $row = $node->safe_psql('postgres', q{
	SELECT m.key_ref, substring(v.wrap_meta FROM 'cmk_version=(\d+)'), key_id, v.version,
	       encode(v.wrapped_key, 'hex')
	  FROM colcrypt.data_key_version v JOIN colcrypt.data_key k USING (key_id)
	  JOIN colcrypt.master_key m ON m.name = v.master_key
	 WHERE k.name = 'k1' AND v.version = 1});
my @keys = split /\n/,
  `/usr/bin/python3 $FindBin::RealBin/../test/tools/key_bytes.py $keyring @{[ split /\|/, $row ]}`;
is(scalar(@keys), 4, 'data key, subkeys and master key recovered for the scan');
my %key_needles;
for my $i (0 .. $#keys)
{
	my $bytes = pack('H*', $keys[$i]);
	my $name = ('data key', 'GCM subkey', 'SIV subkey', 'master key')[$i];
	# 16-byte pieces: an AES-256 key schedule holds the key as its first two
	# round keys, and a SIV key is two AES keys.
	for (my $o = 0; $o < length($bytes); $o += 16)
	{
		$key_needles{"$name bytes $o-" . ($o + 15)} = substr($bytes, $o, 16);
	}
}

sub slurp_raw
{
	my ($file) = @_;
	open(my $fh, '<:raw', $file) or die "$file: $!";
	local $/;
	my $c = <$fh>;
	close $fh;
	return $c;
}

# What a core file holds: names of the key pieces and markers found.
sub core_holds
{
	my ($file) = @_;
	my $c = slurp_raw($file);
	my @found = grep { index($c, $key_needles{$_}) >= 0 } sort keys %key_needles;
	push @found, 'secret marker' if index($c, $secret) >= 0;
	push @found, 'control marker' if index($c, $control) >= 0;
	return @found;
}

my $cores = PostgreSQL::Test::Utils::tempdir();
my @core_files;

# --- a backend that used the key -------------------------------------------
my $a = $node->background_psql('postgres');
my $apid = $a->query_safe('SELECT pg_backend_pid()');
is($a->query_safe(qq{SELECT count(*) FROM enc WHERE s::text LIKE '$s1%' AND d = '$s1' || '$s2' || '-d3'}),
	'200', 'a session reads and compares encrypted values');
$a->query_safe(q{INSERT INTO enc SELECT 9000 + id, s, d FROM enc WHERE id <= 10});
is((stat("/proc/$apid/mem"))[4], 0,
	'its backend is not dumpable (/proc/<pid>/mem belongs to root, not to the server user)');
is(ColcryptTest::gcore($apid, $cores), undef, 'gcore by the server user is refused');

# --- a backend that never used a key ---------------------------------------
my $b = $node->background_psql('postgres');
my $bpid = $b->query_safe('SELECT pg_backend_pid()');
$b->query_safe(q{SELECT count(*) FROM enc});    # no decryption
$b->query_safe(q{SELECT string_agg(s, ',') FROM ctl});
isnt((stat("/proc/$bpid/mem"))[4], 0, 'a backend that used no key stays dumpable');
my $bcore = ColcryptTest::gcore($bpid, $cores);
ok(defined $bcore, 'gcore writes its core file');
push @core_files, $bcore if $bcore;
if ($bcore)
{
	my @found = core_holds($bcore);
	is_deeply([ grep { $_ ne 'control marker' } @found ], [],
		'its core (shared buffers, WAL buffers, statement texts included) holds no key and no secret marker');
	ok((grep { $_ eq 'control marker' } @found), 'while the plain control marker is found in it');
}

# --- the scan can find keys: colcrypt.allow_core_dumps = on ------------------
$node->safe_psql('postgres', 'ALTER SYSTEM SET colcrypt.allow_core_dumps = on; SELECT pg_reload_conf()');
$node->poll_query_until('postgres', 'SHOW colcrypt.allow_core_dumps', 'on');
# A session that has just read and compared values with the key, and what a
# live process's core holds (undef: gcore made none; the core is removed).
sub key_session
{
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$s->query_safe(qq{SELECT count(*) FROM enc WHERE s::text LIKE '$s1%' AND d = '$s1' || '$s2' || '-d3'});
	return ($s, $pid);
}
sub live_core_holds
{
	my ($pid) = @_;
	my $core = ColcryptTest::gcore($pid, $cores) or return undef;
	my @found = core_holds($core);
	unlink $core;
	return \@found;
}
my ($c, $cpid) = key_session();
my $cfound = live_core_holds($cpid);
ok(defined $cfound, 'with colcrypt.allow_core_dumps = on a key-using backend is dumpable');
if ($cfound)
{
	ok((grep { /^GCM subkey/ } @$cfound), 'and its core holds the GCM subkey: the scan finds keys ('
		  . join(', ', @$cfound) . ')');
	ok(!(grep { /^(data key|master key)/ } @$cfound), 'even then, no data key or master key bytes');
}

# An idle backend lets go of its key contexts.  key_cache_evict() reaches it
# while it waits for its client (the catch-up interrupt makes it run an empty
# transaction, at whose end it frees them)...
$node->safe_psql('postgres', 'SELECT colcrypt.key_cache_evict()');
my $idle_gone = sub {
	my ($pid, $what) = @_;
	my @found;
	for (1 .. 20)
	{
		my $held = live_core_holds($pid) or last;
		@found = grep { /subkey/ } @$held;
		last unless @found;
		sleep 1;
	}
	is_deeply(\@found, [], $what);
};
$idle_gone->($cpid, 'after key_cache_evict() the idle session\'s core holds no subkey');
is($c->query_safe(qq{SELECT count(*) FROM enc WHERE s::text LIKE '$s1%'}), '2010', 'and it reads on (keys fetched again)');
# ... and so does the end of the TTL, with no one evicting.
$node->safe_psql('postgres', 'ALTER SYSTEM SET colcrypt.key_cache_ttl = 3; SELECT pg_reload_conf()');
$node->poll_query_until('postgres', 'SHOW colcrypt.key_cache_ttl', '3s');
my ($e, $epid) = key_session();
my $efound = live_core_holds($epid);
ok($efound && (grep { /^GCM subkey/ } @$efound), 'a session that just used the key holds its subkeys');
$idle_gone->($epid, 'a few seconds after the TTL (3 s), idle, it holds none');
$e->quit;
$node->safe_psql('postgres', 'ALTER SYSTEM RESET colcrypt.key_cache_ttl; SELECT pg_reload_conf()');
$c->quit;
$node->safe_psql('postgres', 'ALTER SYSTEM RESET colcrypt.allow_core_dumps; SELECT pg_reload_conf()');
$node->poll_query_until('postgres', 'SHOW colcrypt.allow_core_dumps', 'off');

# --- real crashes, where the kernel writes core files into the cwd -----------
my $pattern = -r '/proc/sys/kernel/core_pattern' ? slurp_file('/proc/sys/kernel/core_pattern') : '';
chomp $pattern;
SKIP:
{
	skip "kernel core_pattern '$pattern' does not write into the working directory", 5
	  if $pattern eq '' || $pattern =~ m{^\||/};
	$a->quit;
	$b->quit;
	# pg_ctl -c lifts the core file size limit of the server's processes.
	$node->stop;
	command_ok([ 'pg_ctl', '-D', $node->data_dir, '-l', $node->logfile, '-c', '-w', 'start' ],
		'server started with core files allowed');
	$node->_update_pid(1);
	my $datadir = $node->data_dir;
	my %before = map { $_ => 1 } glob("$datadir/core*");

	my $k = $node->background_psql('postgres', on_error_stop => 0);
	my $kpid = $k->query_safe('SELECT pg_backend_pid()');
	$k->query_safe(qq{SELECT count(*) FROM enc WHERE s::text LIKE '$s1%'});
	kill 'ABRT', $kpid;
	eval { $k->quit };
	$node->poll_query_until('postgres', 'SELECT 1', '1') or die 'no restart';
	my @new = grep { !$before{$_} } glob("$datadir/core*");
	is(scalar(@new), 0, 'a key-using backend killed by SIGABRT leaves no core file');

	my $p = $node->background_psql('postgres', on_error_stop => 0);
	my $ppid = $p->query_safe('SELECT pg_backend_pid()');
	$p->query_safe(q{SELECT string_agg(s, ',') FROM ctl});
	kill 'ABRT', $ppid;
	eval { $p->quit };
	$node->poll_query_until('postgres', 'SELECT 1', '1') or die 'no restart';
	@new = grep { !$before{$_} } glob("$datadir/core*");
	is(scalar(@new), 1, 'a backend that used no key, killed the same way, leaves one')
	  or diag("core files: @new");
	if (@new)
	{
		my @found = core_holds($new[0]);
		is_deeply([ grep { $_ ne 'control marker' } @found ], [], 'which holds no key and no secret marker');
		ok((grep { $_ eq 'control marker' } @found), 'and does hold the plain control marker');
		push @core_files, $new[0];
	}
	ok(slurp_file($node->logfile) =~ /was terminated by signal 6/, 'both crashes are in the log');
}

# Everything else, with the key bytes as markers too: the data directory
# (the core files under it included) and the server log.
ColcryptTest::assert_no_plaintext($node, [ $secret, values %key_needles ],
	controls => [$control], files => \@core_files, what => 'after the crashes');
$node->stop;
done_testing();
