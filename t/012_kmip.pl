# The kmip provider against a real PyKMIP server started by the test: the
# server stopped in the middle of a pgbench workload and started again
# (cached keys keep serving, uncached ones fail fast with 08001, the next
# call after it returns works without a restart), a server that accepts
# connections and never answers (bounded by colcrypt.kms_timeout), a
# revoked CMK, and audit rows for each failure.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ColcryptTest;

plan skip_all => 'PyKMIP is not installed' unless -d '/usr/lib/python3/dist-packages/kmip';

my $node = ColcryptTest::new_node('kmip', conf => "colcrypt.audit = 'all'\ncolcrypt.kms_timeout = 2000\n");
$node->start;
my $server = "$FindBin::RealBin/../test/kmip/server.sh";
my $kmipctl = "$FindBin::RealBin/../test/kmip/kmipctl.py";
my $dir = $node->basedir . '/kmip';
my $port = PostgreSQL::Test::Cluster::get_free_port();
system($server, 'start', $dir, $port) == 0 or die "PyKMIP did not start";

ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring');
$node->safe_psql('postgres', qq{
	SELECT colcrypt.add_provider('km', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', $port,
		'ca_file', '$dir/certs/ca.crt', 'cert_file', '$dir/certs/client.crt', 'key_file', '$dir/certs/client.key'));
	SET client_min_messages = warning;
	SELECT colcrypt.add_master_key('km_cmk', 'km', 'tap cmk', create_cmk => true);
	SELECT colcrypt.create_key('kt', 'km_cmk');
	CREATE TABLE t (id int PRIMARY KEY, s colcrypt.encrypted_text(kt));
	INSERT INTO t SELECT g, 'kmip row ' || g FROM generate_series(1, 500) g;
});
my $sum_sql = q{SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM t};
my $good = $node->safe_psql('postgres', $sum_sql);
my $try = sub { $node->safe_psql('postgres', "SELECT try(\$q\$$_[0]\$q\$)") };

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
system($server, 'stop', $dir) == 0 or die;
my $down_at = time;
sleep 3;
system($server, 'start', $dir, $port) == 0 or die;
note(sprintf('PyKMIP was down for %.1f s during the workload', time - $down_at));
$bench->finish;
like($out, qr/number of failed transactions: 0 \(0\.000%\)|number of transactions actually processed: \d+/,
	'pgbench ran through the outage');
unlike($err, qr/ERROR/, 'no client saw an error: the cached key served through the outage');
my ($tx) = $out =~ /number of transactions actually processed: (\d+)/;
note("pgbench transactions during the run: " . ($tx // '?'));
is($node->safe_psql('postgres', $sum_sql), $good, 'data unchanged after the workload');

# ---- Uncached keys while the server is down: fail fast, recover without restart ----
system($server, 'stop', $dir) == 0 or die;
$node->safe_psql('postgres', 'SELECT colcrypt.key_cache_evict()');
my $t0 = time;
like($try->($sum_sql), qr/^08001: key provider "km" \(kmip\) could not unwrap a data key: could not connect to the KMIP server \(KMIP server 127\.0\.0\.1:\d+\)$/,
	'server down: 08001 naming provider and cause');
note(sprintf('server down: failed after %.3f s', time - $t0));
system($server, 'start', $dir, $port) == 0 or die;
is($try->($sum_sql), 'ok', 'the next call after the server returns succeeds, no restart');
is($node->safe_psql('postgres', $sum_sql), $good, 'every value reads back');

# A backend whose kept connection died with the server reconnects by itself.
my $psql = $node->background_psql('postgres');
$psql->query_safe('SELECT colcrypt.key_cache_evict()');
$psql->query_safe($sum_sql);    # connection opened and kept
system($server, 'stop', $dir) == 0 or die;
system($server, 'start', $dir, $port) == 0 or die;
$psql->query_safe('SELECT colcrypt.key_cache_evict()');
is($psql->query_safe($sum_sql), $good, 'a kept connection that died is replaced on the next call');
$psql->quit;

# ---- A server that accepts connections and never answers ----
my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5, ReuseAddr => 1)
  or die "listen: $!";
my $hang_port = $listener->sockport;
$node->safe_psql('postgres', qq{
	SELECT colcrypt.add_provider('km_hang', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', $hang_port,
		'ca_file', '$dir/certs/ca.crt', 'cert_file', '$dir/certs/client.crt', 'key_file', '$dir/certs/client.key'));
});
$t0 = time;
like($node->safe_psql('postgres', q{SELECT detail FROM colcrypt.check_provider('km_hang')}),
	qr/^key provider "km_hang" \(kmip\): the KMIP server did not answer in time \(handshake\) \(KMIP server 127\.0\.0\.1:\d+\) \(SQLSTATE 08001\)/,
	'a silent server: 08001 after colcrypt.kms_timeout');
note(sprintf('silent server: gave up after %.2f s (kms_timeout 2 s)', time - $t0));
close $listener;

# ---- A revoked CMK ----
my $uid = $node->safe_psql('postgres', q{SELECT key_ref FROM colcrypt.master_keys WHERE name = 'km_cmk'});
system("/usr/bin/python3 $kmipctl $dir $port revoke $uid 2>/dev/null") == 0 or die "revoke failed";
$node->safe_psql('postgres', 'SELECT colcrypt.key_cache_evict()');
like($try->($sum_sql), qr/^38000: key provider "km" \(kmip\) could not unwrap a data key: the KMIP server refused to unwrap the data key/,
	'revoked CMK: the server refuses, 38000');
like($node->safe_psql('postgres', qq{SELECT try(\$q\$SELECT colcrypt.add_master_key('again', 'km', '$uid')\$q\$)}),
	qr/^55000: key provider "km" \(kmip\) could not use the master key: KMIP key $uid is Deactivated, not Active$/,
	'a revoked CMK cannot become a master key: 55000 naming its state');

# ---- Audit rows ----
$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
my $audit = $node->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT object_name || ' ' || substring(detail from 'SQLSTATE .....'), ', ')
	  FROM colcrypt.audit_log WHERE action = 'kms_failure'});
like($audit, qr/km SQLSTATE 08001/, 'outage audited');
like($audit, qr/km SQLSTATE 38000/, 'refusal audited');
like($audit, qr/km SQLSTATE 55000/, 'revoked key audited');
like($audit, qr/km_hang SQLSTATE 08001/, 'silent server audited');

system($server, 'stop', $dir);
$node->stop;
done_testing();
