# The vault provider against the Vault emulator (test/vault): the server
# stopped in the middle of a pgbench workload (cached keys serve, uncached
# ones fail fast with 08001, recovery without restart), a server that
# accepts requests and never answers (bounded by colcrypt.kms_timeout, and
# a cancel answered at once), throttling and server errors retried with
# back-off, expired and renewed AppRole tokens, audit rows.
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

my $node = ColcryptTest::new_node('vault', conf => "colcrypt.audit = 'all'\ncolcrypt.kms_timeout = 2000\n");
$node->start;
my $dir = $node->basedir . '/vault';
my $port = ColcryptTest::emu_start('vault', $dir);
my $ctl = sub { ColcryptTest::emu_ctl($port, @_) };
my $ops = sub { $ctl->('stats')->{by_op}{ $_[0] } // 0 };

ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring');
# AppRole tokens: long-lived until the renewal test below.
$node->safe_psql('postgres', qq{
	SELECT colcrypt.add_provider('vt', 'vault', jsonb_build_object('url', 'http://127.0.0.1:$port',
		'role_id', 'colcrypt-role-id', 'secret_id', 'colcrypt-secret-id'));
	SELECT colcrypt.add_provider('vroot', 'vault', jsonb_build_object('url', 'http://127.0.0.1:$port', 'token', 'root-token'));
	SET client_min_messages = warning;
	SELECT colcrypt.add_master_key('v_setup', 'vroot', 'tap-cmk', create_cmk => true);
	SELECT colcrypt.add_master_key('v_cmk', 'vt', 'tap-cmk');
	SELECT colcrypt.create_key('vk', 'v_cmk');
	CREATE TABLE t (id int PRIMARY KEY, s colcrypt.encrypted_text(vk));
	INSERT INTO t SELECT g, 'vault row ' || g FROM generate_series(1, 500) g;
});
my $sum_sql = q{SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM t};
my $good = $node->safe_psql('postgres', $sum_sql);
my $try = sub { $node->safe_psql('postgres', "SELECT try(\$q\$$_[0]\$q\$)") };
# Calls with a cold cache, from one session that stays (it logs in to
# Vault once and keeps its token, as an application's backend does).
my $bg = $node->background_psql('postgres');
my $cold = sub {
	my ($set) = @_;
	$bg->query_safe($set) if $set;
	$bg->query_safe('SELECT colcrypt.key_cache_evict()');
	my $r = $bg->query_safe("SELECT try(\$q\$$sum_sql\$q\$)");
	$bg->query_safe('RESET colcrypt.kms_timeout') if $set;
	return $r;
};
# ---- The server stops in the middle of a read/write workload ----
my $script = $node->basedir . '/workload.sql';
open(my $fh, '>', $script) or die;
print $fh q{\set id random(1, 500)
SELECT s FROM t WHERE id = :id;
UPDATE t SET s = s WHERE id = :id;
};
close $fh;
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '4', '-T', '6', '-f', $script, '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err);
sleep 1;
ColcryptTest::emu_stop('vault', $dir);
my $down_at = time;
sleep 3;
ColcryptTest::emu_start('vault', $dir, $port);
note(sprintf('Vault was down for %.1f s during the workload', time - $down_at));
$bench->finish;
like($out, qr/number of transactions actually processed: \d+/, 'pgbench ran through the outage');
unlike($err, qr/ERROR/, 'no client saw an error: the cached key served through the outage');
my ($tx) = $out =~ /number of transactions actually processed: (\d+)/;
note('pgbench transactions during the run: ' . ($tx // '?'));
is($node->safe_psql('postgres', $sum_sql), $good, 'data unchanged after the workload');

# ---- Uncached keys while the server is down: fail fast, recover ----
ColcryptTest::emu_stop('vault', $dir);
my $t0 = time;
like($cold->(),
	qr/^08001: key provider "vt" \(vault\) could not unwrap a data key: could not reach Vault at http:\/\/127\.0\.0\.1:\d+$/,
	'server down: 08001 naming provider and cause');
note(sprintf('server down: failed after %.3f s (connection refused, 3 attempts with back-off)', time - $t0));
ColcryptTest::emu_start('vault', $dir, $port);
is($cold->(), 'ok', 'the next call after the server returns succeeds (new AppRole login), no restart');
is($node->safe_psql('postgres', $sum_sql), $good, 'every value reads back');

# ---- A server that takes the request and never answers ----
$ctl->('fault', { mode => 'hang' });
$t0 = time;
like($cold->(), qr/^08001: key provider "vt" \(vault\) could not unwrap a data key: Vault at http:\/\/127\.0\.0\.1:\d+ did not answer in time$/,
	'a silent server: 08001 after colcrypt.kms_timeout');
my $hang_s = time - $t0;
note(sprintf('silent server: gave up after %.2f s (kms_timeout 2 s)', $hang_s));
# A cancel interrupts the wait.
$node->safe_psql('postgres', 'SELECT colcrypt.key_cache_evict()');
$t0 = time;
my ($rc, $stdout, $stderr) = $node->psql('postgres',
	"SET colcrypt.kms_timeout = 60000; SET statement_timeout = 300; $sum_sql");
like($stderr, qr/ERROR:  canceling statement due to statement timeout/,
	'a statement timeout cancels a provider call in progress');
note(sprintf('statement_timeout 300 ms during a call allowed 60 s: canceled after %.2f s', time - $t0));
$ctl->('fault', { mode => 'none' });

# ---- Throttling and server errors: retried with back-off ----
# Vault's 429 carries Retry-After: 1, which the back-off honours: two of
# them need more than the 2 s allowed so far.
$ctl->('reset-stats', {});
$ctl->('fault', { mode => 'throttle', count => 2 });
$t0 = time;
is($cold->('SET colcrypt.kms_timeout = 5000'), 'ok', 'two 429 answers, then success: retried');
my $st = $ctl->('stats');
note(sprintf('throttled twice: succeeded after %.3f s, %d decrypt requests', time - $t0, $st->{by_op}{decrypt} // 0));
is($st->{by_op}{decrypt}, 3, 'the decrypt was sent three times');

$ctl->('reset-stats', {});
$ctl->('fault', { mode => 'throttle' });
$t0 = time;
like($cold->('SET colcrypt.kms_timeout = 5000'), qr/^08001: key provider "vt" \(vault\) could not unwrap a data key: Vault throttled the decrypt request$/,
	'throttled beyond the retries: 08001');
$st = $ctl->('stats');
note(sprintf('always throttled: gave up after %.3f s and %d decrypt requests (retries 2)', time - $t0, $st->{by_op}{decrypt} // 0));
is($st->{by_op}{decrypt}, 3, 'one try and two retries');
$ctl->('fault', { mode => 'none' });

$ctl->('fault', { mode => 'error', status => 500, count => 1 });
is($cold->(), 'ok', 'a 500 is retried');
$ctl->('fault', { mode => 'error', status => 503, count => 1 });
is($cold->(), 'ok', 'a 503 is retried');
$ctl->('fault', { mode => 'close', count => 1 });
is($cold->(), 'ok', 'a connection closed without an answer is retried');
$ctl->('fault', { mode => 'error', status => 500 });
like($cold->(), qr/^08001: key provider "vt" \(vault\) could not unwrap a data key: Vault could not serve the decrypt request$/,
	'a server that keeps failing: 08001');
$ctl->('fault', { mode => 'none' });

# ---- AppRole tokens: renewed before expiry, a new login when revoked ----
# Tokens that live 4 s from the next login on.
$ctl->('approle', { token_ttl => 4, token_max_ttl => 3600 });
$ctl->('expire-tokens', {});
$ctl->('reset-stats', {});
is($cold->(), 'ok', 'a call with a fresh token');
sleep 3;                                 # past 2/3 of the 4 s lease
is($cold->(), 'ok', 'a call after two thirds of the lease');
$st = $ctl->('stats');
cmp_ok($st->{by_op}{renew} // 0, '>=', 1, 'the token was renewed before it expired');
$ctl->('expire-tokens', {});
$ctl->('reset-stats', {});
is($cold->(), 'ok', 'tokens expired at Vault: a new login, then success');
$st = $ctl->('stats');
cmp_ok($st->{by_op}{login} // 0, '>=', 1, 'a new AppRole login was made');
$ctl->('revoke-secret-id', {});
$ctl->('expire-tokens', {});
like($cold->(), qr/^28000: key provider "vt" \(vault\) could not unwrap a data key: Vault refused the AppRole login$/,
	'secret_id revoked: 28000');
$ctl->('restore-secret-id', {});
is($cold->(), 'ok', 'secret_id restored: works again');

# ---- Audit rows ----
$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
my $audit = $node->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT object_name || ' ' || substring(detail from 'SQLSTATE .....'), ', ')
	  FROM colcrypt.audit_log WHERE action = 'kms_failure'});
like($audit, qr/vt SQLSTATE 08001/, 'outages audited');
like($audit, qr/vt SQLSTATE 28000/, 'refused login audited');
is($node->safe_psql('postgres', $sum_sql), $good, 'data intact at the end');

$bg->quit;
ColcryptTest::emu_stop('vault', $dir);
$node->stop;
done_testing();
