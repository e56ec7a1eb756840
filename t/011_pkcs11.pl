# The pkcs11 provider against a real SoftHSM2 token made by the test:
# a wrong PIN, a token that stops answering (a shim module in front of
# SoftHSM2 that hangs while a file exists), calls bounded by
# colcrypt.kms_timeout and interruptible, the cache serving through the
# outage until its TTL, recovery without a restart, audit rows, and no PIN
# in the server log.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ColcryptTest;

my $module = '/usr/lib/softhsm/libsofthsm2.so';
plan skip_all => 'SoftHSM2 is not installed' unless -f $module;
my $shim = "$FindBin::RealBin/../test/p11shim.so";
die "build test/p11shim.so first (make test-programs)" unless -f $shim;

my $node = ColcryptTest::new_node('pkcs11', conf => "colcrypt.audit = 'all'\ncolcrypt.kms_timeout = 2000\n");

# The token: its files belong to the server's OS user (this test's user).
my $hsm = $node->basedir . '/hsm';
my $out = `$FindBin::RealBin/../test/hsm/softhsm.sh init $hsm colcrypt 47114711 2>&1`;
is($?, 0, 'SoftHSM2 token initialised with a non-extractable AES-256 key') or diag $out;
$ENV{SOFTHSM2_CONF} = "$hsm/softhsm2.conf";
my $hang = $node->basedir . '/hang';
$ENV{P11SHIM_HANG} = $hang;
$node->start;

ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring');
$node->safe_psql('postgres', qq{
	SELECT colcrypt.add_provider('hsm', 'pkcs11', jsonb_build_object('module', '$shim',
		'token_label', 'colcrypt', 'pin_file', '$hsm/pin'));
	SELECT colcrypt.add_master_key('hsm_cmk', 'hsm', 'cmk');
	SELECT colcrypt.create_key('hk', 'hsm_cmk');
	CREATE TABLE t (id int PRIMARY KEY, s colcrypt.encrypted_text(hk));
	INSERT INTO t SELECT g, 'hsm row ' || g FROM generate_series(1, 200) g;
});
my $sum_sql = q{SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM t};
my $good = $node->safe_psql('postgres', $sum_sql);

# ---- A wrong PIN, in a fresh backend and in one already logged in ----
# (One line: log_statement = all logs the statement, PIN included, as it
# would any SQL carrying a secret; pin_file avoids that.)
$node->safe_psql('postgres', qq{SELECT colcrypt.add_provider('badpin', 'pkcs11', jsonb_build_object('module', '$module', 'token_label', 'colcrypt', 'pin', '98765'))});
like($node->safe_psql('postgres', q{SELECT try($$SELECT colcrypt.add_master_key('bad_cmk', 'badpin', 'cmk')$$)}),
	qr/^28P01: key provider "badpin" \(pkcs11\): the token "colcrypt" refused the PIN$/,
	'wrong PIN in a fresh backend: 28P01 naming provider and token');
like($node->safe_psql('postgres', q{
	SELECT colcrypt.check_provider('hsm');
	SELECT try($$SELECT colcrypt.add_master_key('bad_cmk', 'badpin', 'cmk')$$)}),
	qr/\n28P01: .*refused the PIN$/,
	'wrong PIN while another provider of the backend is logged in (through another module path): still refused');
is($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.master_keys WHERE name = 'bad_cmk'}),
	'0', 'nothing recorded');

# ---- A token the module could not read when the backend first used it ----
# (SoftHSM2 leaves out, for the life of the process, a token whose file it
# cannot read at C_Initialize, as when another process is rewriting it.)
# The backend says there is no such token, and its next statement, once the
# file is readable again, reads the tokens anew: no reconnect needed.
{
	my ($tokdir) = glob("$hsm/tokens/*/token.object") or die 'no token file';
	my $bg = $node->background_psql('postgres');
	$node->safe_psql('postgres', 'SELECT colcrypt.key_cache_evict()');
	chmod 0000, $tokdir or die "chmod: $!";
	like($bg->query_safe(qq{SELECT try(\$q\$$sum_sql\$q\$)}),
		qr/^08001: key provider "hsm" \(pkcs11\).*no token labelled "colcrypt"$/,
		'a token the module cannot read: 08001, no token with that label');
	chmod 0600, $tokdir or die "chmod: $!";
	is($bg->query_safe($sum_sql), $good, 'the same session reads every value once the token file is readable');
	$bg->quit;
}

# ---- The token stops answering ----
$node->safe_psql('postgres', $sum_sql);    # every key cached
open(my $fh, '>', $hang) or die;
close $fh;
is($node->safe_psql('postgres', $sum_sql), $good, 'cached keys keep serving while the token hangs');

$node->safe_psql('postgres', 'SELECT colcrypt.key_cache_evict()');
my $t0 = time;
my $r = $node->safe_psql('postgres', qq{SELECT try(\$q\$$sum_sql\$q\$)});
my $elapsed = time - $t0;
like($r, qr/^08001: key provider "hsm" \(pkcs11\)( could not unwrap a data key)?: the PKCS#11 module did not answer in time$/,
	'a hanging token: 08001 after colcrypt.kms_timeout');
note(sprintf('hanging token: statement failed after %.2f s (kms_timeout 2 s)', $elapsed));

# The module is now known to be stuck: calls fail at once instead of piling up threads.
$r = $node->safe_psql('postgres', qq{SELECT try(\$q\$$sum_sql\$q\$); SELECT try(\$q\$$sum_sql\$q\$)});
like($r, qr/08001: .*(did not answer in time|has not yet returned from a call that timed out)$/,
	'further calls while it hangs fail with 08001 too');

# A statement timeout (or cancel) interrupts the wait.
$t0 = time;
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	qq{SET statement_timeout = '300ms'; SET colcrypt.kms_timeout = '60s'; $sum_sql});
like($stderr, qr/canceling statement due to statement timeout/, 'a statement timeout interrupts a hanging provider call');
note(sprintf('statement timeout 0.3 s, kms_timeout 60 s: returned after %.2f s', time - $t0));

# The token answers again: the next statement works, no restart.
unlink $hang;
my $recovered = 0;
for (1 .. 50)
{
	if ($node->safe_psql('postgres', qq{SELECT try(\$q\$$sum_sql\$q\$)}) eq 'ok')
	{
		$recovered = 1;
		last;
	}
	select(undef, undef, undef, 0.1);
}
ok($recovered, 'the provider works again once the token answers, without a restart');
is($node->safe_psql('postgres', $sum_sql), $good, 'every value reads back');

# ---- A token that comes back to many waiting backends at once ----
# Sixteen backends, each loading a key of its own, wait on the hung token;
# when it answers again they all log in at once, which makes SoftHSM2 answer
# some logins CKR_GENERAL_ERROR (another process is rewriting the token's
# file).  Every statement must succeed: three rounds.
{
	my $n = 16;
	$node->safe_psql('postgres', join('', map { qq{
		SELECT colcrypt.create_key('herd$_', 'hsm_cmk');
		CREATE TABLE herd$_ (v colcrypt.encrypted_text(herd$_));
		INSERT INTO herd$_ VALUES ('herd $_');} } 1 .. $n));
	my @failed;
	for my $round (1 .. 3)
	{
		$node->safe_psql('postgres', 'SELECT colcrypt.key_cache_evict()');
		open(my $fh, '>', $hang) or die;
		close $fh;
		my @runs;
		for my $i (1 .. $n)
		{
			my ($out, $err) = ('', '');
			my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'),
				'-c', "SELECT v FROM herd$i" ], '>', \$out, '2>', \$err);
			push @runs, [ $i, $h, \$out, \$err ];
		}
		select(undef, undef, undef, 0.7);
		unlink $hang or die "unlink: $!";
		for my $r (@runs)
		{
			my ($i, $h, $out, $err) = @$r;
			$h->finish;
			push @failed, "round $round, herd$i: $$err" unless $$out eq "herd $i\n";
		}
	}
	is(scalar(@failed), 0, 'sixteen backends logging in at once when the token answers again all succeed, three rounds')
	  or diag(join('', @failed[0 .. ($#failed < 4 ? $#failed : 4)]));
}

# ---- Audit rows and the server log ----
$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
my $audit = $node->safe_psql('postgres', q{
	SELECT object_name || ' ' || substring(detail from 'SQLSTATE .....')
	  FROM colcrypt.audit_log WHERE action = 'kms_failure' ORDER BY id});
like($audit, qr/badpin SQLSTATE 28P01/, 'wrong PIN audited');
like($audit, qr/hsm SQLSTATE 08001/, 'timeout audited');
my $log = join("\n", grep { !/LOG:  statement: / } split /\n/, slurp_file($node->logfile));
unlike($log, qr/98765/, 'the wrong PIN is in no log line of ours');
unlike($log, qr/47114711/, 'the right PIN is in no log line');

$node->stop;
done_testing();
