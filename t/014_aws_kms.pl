# The aws-kms provider against the AWS KMS emulator (test/awskms), which
# checks every request's Signature Version 4 with its own implementation:
# the server stopped in the middle of a pgbench workload, a server that
# never answers, KMS throttling (HTTP 400 ThrottlingException) and
# internal errors retried with back-off, temporary credentials refreshed
# in the credentials file and followed without a restart, audit rows.
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

my $node = ColcryptTest::new_node('awskms', conf => "colcrypt.audit = 'all'\ncolcrypt.kms_timeout = 2000\n");
$node->start;
my $dir = $node->basedir . '/awskms';
my $port = ColcryptTest::emu_start('awskms', $dir);
my $ctl = sub { ColcryptTest::emu_ctl($port, @_) };

# Temporary credentials in a shared credentials file.
my $credfile = $node->basedir . '/aws-credentials';
my $write_creds = sub {
	my ($token) = @_;
	open(my $fh, '>', "$credfile.new") or die;
	print $fh "[colcrypt]\naws_access_key_id = ASIACOLCRYPTTEMP\n"
	  . "aws_secret_access_key = temp/secret/key/fedcba9876543210\naws_session_token = $token\n";
	close $fh;
	chmod 0600, "$credfile.new";
	rename("$credfile.new", $credfile) or die;
};
$write_creds->('FwoGZXIvYXdzEXAMPLEsessiontoken//colcrypt==');

ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring');
$node->safe_psql('postgres', qq{
	SELECT colcrypt.add_provider('aws', 'aws-kms', jsonb_build_object('region', 'us-east-1',
		'endpoint', 'http://127.0.0.1:$port', 'credentials_file', '$credfile', 'profile', 'colcrypt'));
	SET client_min_messages = warning;
	SELECT colcrypt.add_master_key('a_cmk', 'aws', 'alias/colcrypt-tap', create_cmk => true);
	SELECT colcrypt.create_key('ak', 'a_cmk');
	CREATE TABLE t (id int PRIMARY KEY, s colcrypt.encrypted_text(ak));
	INSERT INTO t SELECT g, 'aws row ' || g FROM generate_series(1, 500) g;
});
my $sum_sql = q{SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM t};
my $good = $node->safe_psql('postgres', $sum_sql);
my $try = sub { $node->safe_psql('postgres', "SELECT try(\$q\$$_[0]\$q\$)") };
my $cold = sub { $node->safe_psql('postgres', 'SELECT colcrypt.key_cache_evict()'); $try->($sum_sql) };

my $st = $ctl->('stats');
is($st->{signature_failures} // 0, 0, 'every request so far carried a valid signature');
cmp_ok($st->{by_op}{Encrypt} // 0, '>=', 1, 'data keys wrapped with Encrypt');

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
ColcryptTest::emu_stop('awskms', $dir);
sleep 3;
ColcryptTest::emu_start('awskms', $dir, $port);
$bench->finish;
like($out, qr/number of transactions actually processed: \d+/, 'pgbench ran through the outage');
unlike($err, qr/ERROR/, 'no client saw an error: the cached key served through the outage');
is($node->safe_psql('postgres', $sum_sql), $good, 'data unchanged after the workload');

# ---- Uncached keys while the server is down, and recovery ----
ColcryptTest::emu_stop('awskms', $dir);
my $t0 = time;
like($cold->(), qr/^08001: key provider "aws" \(aws-kms\) could not unwrap a data key: could not reach AWS KMS at http:\/\/127\.0\.0\.1:\d+$/,
	'server down: 08001 naming provider and cause');
note(sprintf('server down: failed after %.3f s', time - $t0));
ColcryptTest::emu_start('awskms', $dir, $port);
is($cold->(), 'ok', 'the next call after the server returns succeeds, no restart');

# ---- A server that never answers ----
$ctl->('fault', { mode => 'hang' });
$t0 = time;
like($cold->(), qr/^08001: key provider "aws" \(aws-kms\) could not unwrap a data key: AWS KMS at http:\/\/127\.0\.0\.1:\d+ did not answer in time$/,
	'a silent server: 08001 after colcrypt.kms_timeout');
note(sprintf('silent server: gave up after %.2f s (kms_timeout 2 s)', time - $t0));
$ctl->('fault', { mode => 'none' });

# ---- Throttling (HTTP 400 ThrottlingException) and internal errors ----
$ctl->('reset-stats', {});
$ctl->('fault', { mode => 'throttle', count => 2 });
$t0 = time;
is($cold->(), 'ok', 'two ThrottlingException answers, then success');
$st = $ctl->('stats');
note(sprintf('throttled twice: succeeded after %.3f s, %d Decrypt requests', time - $t0, $st->{by_op}{Decrypt} // 0));
is($st->{by_op}{Decrypt}, 3, 'the Decrypt was sent three times');
$ctl->('reset-stats', {});
$ctl->('fault', { mode => 'throttle' });
$t0 = time;
like($cold->(), qr/^08001: key provider "aws" \(aws-kms\) could not unwrap a data key: AWS KMS could not serve Decrypt$/,
	'throttled beyond the retries: 08001');
$st = $ctl->('stats');
note(sprintf('always throttled: gave up after %.3f s and %d Decrypt requests (retries 2)', time - $t0, $st->{by_op}{Decrypt} // 0));
is($st->{by_op}{Decrypt}, 3, 'one try and two retries');
$ctl->('fault', { mode => 'error', status => 500, count => 1 });
is($cold->(), 'ok', 'a KMSInternalException (500) is retried');
$ctl->('fault', { mode => 'close', count => 1 });
is($cold->(), 'ok', 'a connection closed without an answer is retried');
$ctl->('fault', { mode => 'none' });

# ---- Temporary credentials refreshed in the file ----
$ctl->('credential', { access_key_id => 'ASIACOLCRYPTTEMP', session_token => 'FwoGZXIvYXdzEXAMPLEsecond', expires => undef });
like($cold->(), qr/^28000: key provider "aws" \(aws-kms\) could not unwrap a data key: AWS KMS refused Decrypt$/,
	'a session token KMS no longer accepts: 28000');
$write_creds->('FwoGZXIvYXdzEXAMPLEsecond');
is($cold->(), 'ok', 'the refreshed credentials file is used without a restart');
$ctl->('credential', { access_key_id => 'ASIACOLCRYPTTEMP', session_token => 'FwoGZXIvYXdzEXAMPLEsecond', expires => time - 10 });
like($cold->(), qr/^28000: .*AWS KMS refused Decrypt$/, 'an expired session token: 28000');
$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
like($node->safe_psql('postgres', q{SELECT detail FROM colcrypt.audit_log WHERE action = 'kms_failure' ORDER BY id DESC LIMIT 1}),
	qr/ExpiredTokenException/, 'the audit row names ExpiredTokenException');
$ctl->('credential', { access_key_id => 'ASIACOLCRYPTTEMP', session_token => 'FwoGZXIvYXdzEXAMPLEsecond', expires => undef });

# ---- Rotation at KMS ----
$ctl->('reset-stats', {});
is($node->safe_psql('postgres', q{SELECT colcrypt.rotate_master_key('a_cmk')}), '1', 'rotate_master_key: one data key version');
$st = $ctl->('stats');
is($st->{by_op}{RotateKeyOnDemand}, 1, 'the KMS key was rotated on demand');
is($st->{by_op}{ReEncrypt}, 1, 'the data key was re-encrypted at KMS');
is($st->{by_op}{Encrypt} // 0, 0, 'and never sent to KMS in an Encrypt');
is($cold->(), 'ok', 'reads after the rotation');
is($node->safe_psql('postgres', $sum_sql), $good, 'data intact');

# ---- Data keys from KMS's generator ----
$node->safe_psql('postgres', qq{
	SELECT colcrypt.add_provider('aws_gen', 'aws-kms', jsonb_build_object('region', 'us-east-1',
		'endpoint', 'http://127.0.0.1:$port', 'credentials_file', '$credfile', 'profile', 'colcrypt',
		'data_key_source', 'kms'));
	SELECT colcrypt.add_master_key('a_gen', 'aws_gen', 'alias/colcrypt-tap');
});
$ctl->('reset-stats', {});
$node->safe_psql('postgres', q{SELECT colcrypt.create_key('gk', 'a_gen')});
$st = $ctl->('stats');
is($st->{by_op}{GenerateDataKey}, 1, 'data_key_source kms: the data key came from GenerateDataKey');
is($st->{by_op}{Encrypt} // 0, 0, 'and was not generated here and sent to Encrypt');
is($node->safe_psql('postgres', q{CREATE TABLE g (s colcrypt.encrypted_text(gk)); INSERT INTO g VALUES ('kms-made key');
	SELECT colcrypt.key_cache_evict() > 0; SELECT s FROM g}), "t\nkms-made key", 'a key made by KMS encrypts and decrypts');

$st = $ctl->('stats');
is($st->{signature_failures} // 0, 0, 'no request in the whole run had a bad signature');

$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
my $audit = $node->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT object_name || ' ' || substring(detail from 'SQLSTATE .....'), ', ')
	  FROM colcrypt.audit_log WHERE action = 'kms_failure'});
like($audit, qr/aws SQLSTATE 08001/, 'outages audited');
like($audit, qr/aws SQLSTATE 28000/, 'credential failures audited');

ColcryptTest::emu_stop('awskms', $dir);
$node->stop;
done_testing();
