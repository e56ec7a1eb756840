# The same provider outage against every provider kind, all at once, each
# with its own data key, table and pgbench workload (issue 8):
#
#   file         the keyring made unreadable (chmod 000)
#   kmip_down    a PyKMIP server killed (SIGKILL)
#   kmip_silent  a PyKMIP server frozen (SIGSTOP): the kernel still accepts
#                connections, nothing answers
#   vault_down   a Vault emulator stopped
#   vault_hang   a Vault emulator that takes requests and never answers
#   aws_down     an AWS KMS emulator stopped
#   aws_hang     an AWS KMS emulator that never answers
#   pkcs11_hang  a PKCS#11 token that stops answering (test/p11shim.so in
#                front of SoftHSM2)
#
# With colcrypt.key_cache_ttl = 4 s and colcrypt.kms_timeout = 1.5 s, for
# each: (a) a read/write workload (pgbench -c 4) runs while the provider
# goes away; (b) until the cached key's TTL no operation fails; after it,
# nothing is served without the provider; (c) statements needing the key
# fail with the SQLSTATE of the README's error table, each within a bound
# (kms_timeout + 5 s: generous, this is about hangs, not speed), clients see
# the same error, and no backend is left waiting; (d) once the provider is
# back the workload recovers without a restart (its same four sessions
# succeed again, and from a second after the first success every
# operation does), a pgbench run afterwards has no failures, and every
# value decrypts to what the last committed write stored, checked against
# a plain shadow table (md5 of each value, and a write counter) written in
# the same transactions.
#
# The workload function catches each operation's error and records it
# (SQLSTATE, message, when the failing statement began and ended) in a plain
# table, so that pgbench's clients keep going through the outage; the run
# afterwards lets errors through to pgbench.  Plaintext values are built in
# the server from a marker passed as a connection option (PGOPTIONS), never
# in a statement's text, and at the end no marker may be in the data
# directory or the server log.
#
# Per scenario the figures (seconds served from the cache after the outage
# began, failed operations and their SQLSTATEs, the longest failing
# statement, seconds to recover) are reported with note().  A kind whose
# fixture this machine lacks is skipped, except under scripts/test.sh
# (COLCRYPT_TEST_KMIP set), where every one must run.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ColcryptTest;
use ColcryptKms;

my $TTL = 4;                           # colcrypt.key_cache_ttl, s
my $KMS_TIMEOUT = 1500;                # colcrypt.kms_timeout, ms
my $BOUND = $KMS_TIMEOUT / 1000 + 5;   # "bounded, not hung", s
my $ROWS = 200;
my $RATE = 100;                        # workload transactions per second, per scenario

# scripts/test.sh provides every fixture: there, none may be skipped.
my $all_required = defined $ENV{COLCRYPT_TEST_KMIP};

my $marker = ColcryptTest::run_marker('OUTAGESECRET');   # plaintext of encrypted values only
my $control = ColcryptTest::run_marker('OUTAGEPLAIN');   # in a plain column, must be found

my $node = ColcryptTest::new_node('outages', conf => qq{
colcrypt.key_cache_ttl = $TTL
colcrypt.kms_timeout = $KMS_TIMEOUT
max_connections = 120
});
my $base = $node->basedir;
my $src = "$FindBin::RealBin/..";

# ---- Which fixtures this machine has ----
my %missing;
for my $kind ('kmip', 'vault', 'aws-kms', 'pkcs11')
{
	my $why = ColcryptKms::why_missing($kind);
	$missing{$kind} = $why if defined $why;
}
$missing{pkcs11} //= 'test/p11shim.so is not built (make test-programs)' unless -f "$src/test/p11shim.so";

# The token (before the server starts: the postmaster's environment
# carries its configuration and the shim's hang file).
my $hsm = "$base/hsm";
my $hang_file = "$base/p11-hang";
if (!$missing{pkcs11})
{
	my $out = `$src/test/hsm/softhsm.sh init $hsm colcrypt 24682468 2>&1`;
	if ($? != 0) { $missing{pkcs11} = "SoftHSM2 token could not be made: $out" }
	$ENV{SOFTHSM2_CONF} = "$hsm/softhsm2.conf";
	$ENV{P11SHIM_HANG} = $hang_file;
}
$node->start;
my $keyring = "$base/keyring";
ColcryptTest::setup_keys($node, 'postgres', $keyring);

# ---- Fixtures and providers ----
my $kmip_server = "$src/test/kmip/server.sh";
my @cleanup;
sub kmip_start
{
	my ($dir, $port) = @_;
	system($kmip_server, 'start', $dir, $port) == 0 or die "PyKMIP did not start in $dir";
}
sub kmip_group { my $pid = slurp_file("$_[0]/server.pid"); chomp $pid; return $pid }

my %fixture;    # scenario name -> { provider, key, ... }
sub add_kmip
{
	my ($name) = @_;
	my $dir = "$base/$name";
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	kmip_start($dir, $port);
	push @cleanup, sub { kill 'CONT', -kmip_group($dir) if -f "$dir/server.pid"; system($kmip_server, 'stop', $dir) };
	$node->safe_psql('postgres', qq{
		SELECT colcrypt.add_provider('p_$name', 'kmip', jsonb_build_object('host', '127.0.0.1', 'port', $port,
			'ca_file', '$dir/certs/ca.crt', 'cert_file', '$dir/certs/client.crt', 'key_file', '$dir/certs/client.key'));
		SET client_min_messages = warning;
		SELECT colcrypt.add_master_key('m_$name', 'p_$name', 'outage $name', create_cmk => true);
	});
	return { dir => $dir, port => $port };
}
sub add_vault
{
	my ($name) = @_;
	my $dir = "$base/$name";
	my $port = ColcryptTest::emu_start('vault', $dir);
	push @cleanup, sub { ColcryptTest::emu_stop('vault', $dir) };
	# The Transit key is made with the root token; the provider logs in
	# with AppRole, as an application's would (and logs in again after the
	# emulator's restart).
	$node->safe_psql('postgres', qq{
		SELECT colcrypt.add_provider('root_$name', 'vault', jsonb_build_object('url', 'http://127.0.0.1:$port', 'token', 'root-token'));
		SELECT colcrypt.add_provider('p_$name', 'vault', jsonb_build_object('url', 'http://127.0.0.1:$port',
			'role_id', 'colcrypt-role-id', 'secret_id', 'colcrypt-secret-id'));
		SET client_min_messages = warning;
		SELECT colcrypt.add_master_key('setup_$name', 'root_$name', 'outage-cmk', create_cmk => true);
		SELECT colcrypt.add_master_key('m_$name', 'p_$name', 'outage-cmk');
	});
	return { dir => $dir, port => $port };
}
sub add_aws
{
	my ($name) = @_;
	my $dir = "$base/$name";
	my $port = ColcryptTest::emu_start('awskms', $dir);
	push @cleanup, sub { ColcryptTest::emu_stop('awskms', $dir) };
	$node->safe_psql('postgres', qq{
		SELECT colcrypt.add_provider('p_$name', 'aws-kms', jsonb_build_object('region', 'us-east-1',
			'endpoint', 'http://127.0.0.1:$port', 'access_key_id', 'AKIDCOLCRYPTTEST',
			'secret_access_key', 'colcrypt/test/secret/key/0123456789abcdef'));
		SET client_min_messages = warning;
		SELECT colcrypt.add_master_key('m_$name', 'p_$name', 'alias/colcrypt-outage', create_cmk => true);
	});
	return { dir => $dir, port => $port };
}

# The scenarios: kind, expected SQLSTATE after the TTL (README: a keyring
# the server cannot read is 42501; unreachable, timed out, token hung is
# 08001), how the provider goes away and comes back.
my @scenarios = (
	{ name => 'file', kind => 'file', provider => 'dev', master => 'cmk', sqlstate => '42501',
		how => 'keyring chmod 000',
		setup => sub { {} },
		down => sub { chmod 0000, $keyring or die "chmod: $!" },
		up => sub { chmod 0600, $keyring or die "chmod: $!" } },
	{ name => 'kmip_down', kind => 'kmip', sqlstate => '08001', how => 'PyKMIP killed (SIGKILL)',
		setup => \&add_kmip,
		# (server.sh stop waits up to a second for a clean exit, and with
		# clients connected it does not come: kill it, then let stop tidy up)
		down => sub { kill('KILL', -kmip_group($_[0]{dir})) or die "SIGKILL: $!"; system($kmip_server, 'stop', $_[0]{dir}) == 0 or die },
		up => sub { kmip_start($_[0]{dir}, $_[0]{port}) } },
	{ name => 'kmip_silent', kind => 'kmip', sqlstate => '08001', how => 'PyKMIP frozen (SIGSTOP)',
		setup => \&add_kmip,
		down => sub { kill('STOP', -kmip_group($_[0]{dir})) or die "SIGSTOP: $!" },
		up => sub { kill('CONT', -kmip_group($_[0]{dir})) or die "SIGCONT: $!" } },
	{ name => 'vault_down', kind => 'vault', sqlstate => '08001', how => 'Vault emulator stopped',
		setup => \&add_vault,
		down => sub { ColcryptTest::emu_stop('vault', $_[0]{dir}) },
		up => sub { ColcryptTest::emu_start('vault', $_[0]{dir}, $_[0]{port}) } },
	{ name => 'vault_hang', kind => 'vault', sqlstate => '08001', how => 'Vault emulator never answers',
		setup => \&add_vault,
		down => sub { ColcryptTest::emu_ctl($_[0]{port}, 'fault', { mode => 'hang' }) },
		up => sub { ColcryptTest::emu_ctl($_[0]{port}, 'fault', { mode => 'none' }) } },
	{ name => 'aws_down', kind => 'aws-kms', sqlstate => '08001', how => 'AWS KMS emulator stopped',
		setup => \&add_aws,
		down => sub { ColcryptTest::emu_stop('awskms', $_[0]{dir}) },
		up => sub { ColcryptTest::emu_start('awskms', $_[0]{dir}, $_[0]{port}) } },
	{ name => 'aws_hang', kind => 'aws-kms', sqlstate => '08001', how => 'AWS KMS emulator never answers',
		setup => \&add_aws,
		down => sub { ColcryptTest::emu_ctl($_[0]{port}, 'fault', { mode => 'hang' }) },
		up => sub { ColcryptTest::emu_ctl($_[0]{port}, 'fault', { mode => 'none' }) } },
	{ name => 'pkcs11_hang', kind => 'pkcs11', sqlstate => '08001', how => 'token hangs (p11shim)',
		setup => sub {
			$node->safe_psql('postgres', qq{
				SELECT colcrypt.add_provider('p_pkcs11_hang', 'pkcs11', jsonb_build_object('module', '$src/test/p11shim.so',
					'token_label', 'colcrypt', 'pin_file', '$hsm/pin'));
				SELECT colcrypt.add_master_key('m_pkcs11_hang', 'p_pkcs11_hang', 'cmk');
			});
			push @cleanup, sub { unlink $hang_file };
			return {};
		},
		down => sub { open(my $fh, '>', $hang_file) or die; close $fh },
		up => sub { unlink $hang_file or die "unlink: $!" } },
);

my @run;
for my $sc (@scenarios)
{
	if (my $why = $missing{ $sc->{kind} })
	{
		if ($all_required)
		{
			fail("$sc->{name}: fixture available under scripts/test.sh");
			diag($why);
		}
		else
		{
		  SKIP: { skip("$sc->{name}: $why", 1); }
		}
		next;
	}
	$sc->{fx} = $sc->{setup}->($sc->{name});
	$sc->{provider} //= "p_$sc->{name}";
	$sc->{master} //= "m_$sc->{name}";
	$sc->{key} = "k_$sc->{name}";
	push @run, $sc;
}

# ---- Tables, the workload function, the watchers ----
{
	local $ENV{PGOPTIONS} = "-c outage.m=$marker";
	my $sql = qq{
		CREATE TABLE outage_ctl (note text);
		INSERT INTO outage_ctl VALUES ('$control');
		CREATE SEQUENCE outage_ids START 1000000;
		CREATE TABLE outage_ops (scen text, strict bool, pid int, t0 timestamptz, st0 timestamptz, t1 timestamptz,
			ok bool, stmt int, sqlstate text, message text, detail text);
		CREATE TABLE outage_activity (at timestamptz, appname text, active int, max_age float8, ext_waits int);
	};
	for my $sc (@run)
	{
		my $n = $sc->{name};
		$sql .= qq{
			SELECT colcrypt.create_key('$sc->{key}', '$sc->{master}');
			CREATE TABLE t_$n (id int PRIMARY KEY, s colcrypt.encrypted_text($sc->{key}));
			CREATE TABLE sh_$n (id int PRIMARY KEY, h text NOT NULL, n int NOT NULL);
			INSERT INTO t_$n SELECT g, current_setting('outage.m') || ':$n:' || g || ':0' FROM generate_series(1, $ROWS) g;
			INSERT INTO sh_$n SELECT g, md5(current_setting('outage.m') || ':$n:' || g || ':0'), 0 FROM generate_series(1, $ROWS) g;
		};
	}
	# One operation: lock the shadow row (no key needed, so lock waits
	# happen here), read and check the encrypted value (decrypt), write a
	# new one (encrypt) and its shadow; one in ten inserts a new row.  With
	# strict = false an error is recorded and swallowed (the subtransaction
	# rolls back both tables); st0 is when the failing statement began.
	$sql .= q{
		CREATE FUNCTION outage_op(scen text, p_id int, strict bool DEFAULT false) RETURNS void
		LANGUAGE plpgsql AS $f$
		DECLARE
			t0 timestamptz := clock_timestamp();
			st0 timestamptz;
			stmt int := 0;
			v text; sh_h text; sh_n int; nv text; new_id int; st text; msg text; det text;
		BEGIN
			BEGIN
				IF random() < 0.1 THEN
					new_id := nextval('outage_ids');
					nv := current_setting('outage.m') || ':' || scen || ':' || new_id || ':1';
					stmt := 4; st0 := clock_timestamp();
					EXECUTE format('INSERT INTO %I VALUES ($1, $2)', 't_' || scen) USING new_id, nv;
					EXECUTE format('INSERT INTO %I VALUES ($1, md5($2), 1)', 'sh_' || scen) USING new_id, nv;
				ELSE
					stmt := 1; st0 := clock_timestamp();
					EXECUTE format('SELECT h, n FROM %I WHERE id = $1 FOR UPDATE', 'sh_' || scen)
						INTO sh_h, sh_n USING p_id;
					stmt := 2; st0 := clock_timestamp();
					EXECUTE format('SELECT s::text FROM %I WHERE id = $1', 't_' || scen) INTO v USING p_id;
					IF md5(v) IS DISTINCT FROM sh_h THEN
						RAISE EXCEPTION 'row % does not hold what was last written to it', p_id
							USING ERRCODE = 'CC001';
					END IF;
					nv := current_setting('outage.m') || ':' || scen || ':' || p_id || ':' || (sh_n + 1);
					stmt := 3; st0 := clock_timestamp();
					EXECUTE format('UPDATE %I SET s = $2 WHERE id = $1', 't_' || scen) USING p_id, nv;
					EXECUTE format('UPDATE %I SET h = md5($2), n = n + 1 WHERE id = $1', 'sh_' || scen) USING p_id, nv;
				END IF;
				INSERT INTO outage_ops VALUES (scen, strict, pg_backend_pid(), t0, NULL, clock_timestamp(), true, NULL, NULL, NULL, NULL);
			EXCEPTION WHEN OTHERS THEN
				IF strict THEN
					RAISE;
				END IF;
				GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
				INSERT INTO outage_ops VALUES (scen, strict, pg_backend_pid(), t0, st0, clock_timestamp(), false, stmt, st, msg, det);
			END;
		END $f$;
	};
	$node->safe_psql('postgres', $sql);
}

# Rows that do not decrypt to what their shadow says, rows, writes.
sub check_data
{
	my ($n) = @_;
	my $r = $node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE t.id IS NULL OR sh.id IS NULL OR md5(t.s::text) IS DISTINCT FROM sh.h),
		       count(*), sum(sh.n),
		       md5(string_agg(md5(t.s::text), ',' ORDER BY id))
		  FROM t_$n t FULL JOIN sh_$n sh USING (id)});
	my @v = split /\|/, $r;
	return { bad => $v[0], rows => $v[1], writes => $v[2], sum => $v[3] };
}

# The check can see a lost write: one shadow row changed in a transaction
# that is rolled back.
is($node->safe_psql('postgres', q{
	BEGIN;
	UPDATE sh_file SET h = md5('not what the table holds') WHERE id = 7;
	SELECT count(*) FROM t_file t JOIN sh_file sh USING (id) WHERE md5(t.s::text) IS DISTINCT FROM sh.h;
	ROLLBACK;}), '1', 'the shadow comparison detects a value that differs from its last write')
  if grep { $_->{name} eq 'file' } @run;

for my $sc (@run)
{
	my $d = check_data($sc->{name});
	is($d->{bad}, '0', "$sc->{name}: data matches its shadow before the outage");
	$sc->{before} = $d;
}

# ---- pgbench ----
sub pgbench_start
{
	my (%o) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGOPTIONS} = "-c outage.m=$marker";
	local $ENV{PGAPPNAME} = $o{appname};
	my @cmd = ('pgbench', '-n', '-c', $o{clients}, '-T', $o{secs}, '-f', $o{script},
		(defined $o{rate} ? ('-R', $o{rate}) : ()), '-h', $node->host, '-p', $node->port, 'postgres');
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err };
}
sub pgbench_finish
{
	my ($b) = @_;
	$b->{h}->finish;
	my $rc = $b->{h}->result(0);
	my ($tx) = ${ $b->{out} } =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = ${ $b->{out} } =~ /number of failed transactions: (\d+)/;
	return { rc => $rc, tx => $tx // 0, failed => $failed, out => ${ $b->{out} }, err => ${ $b->{err} } };
}
# Stop a pgbench run that would go on (the workloads run until the test
# has seen them recover, however long the providers took to come back).
sub pgbench_stop
{
	my ($b) = @_;
	$b->{h}->kill_kill(grace => 5);
	return { out => ${ $b->{out} }, err => ${ $b->{err} } };
}
sub script
{
	my ($name, $body) = @_;
	my $f = "$base/$name.sql";
	open(my $fh, '>', $f) or die;
	print $fh $body;
	close $fh;
	return $f;
}
for my $sc (@run)
{
	my $n = $sc->{name};
	$sc->{script} = script("work_$n", "\\set id random(1, $ROWS)\nSELECT outage_op('$n', :id);\n");
	$sc->{strict_script} = script("strict_$n", "\\set id random(1, $ROWS)\nSELECT outage_op('$n', :id, true);\n");
}
my $watch_script = script('watch', q{INSERT INTO outage_activity SELECT clock_timestamp(), application_name, count(*), max(extract(epoch FROM clock_timestamp() - query_start)), count(*) FILTER (WHERE wait_event_type = 'Extension') FROM pg_stat_activity WHERE application_name LIKE 'outage\_%' AND state = 'active' GROUP BY application_name;
});

# ---- The outage ----
# Timeline (s): 0 cache emptied, workloads start and load their keys;
# ~0.8 every provider goes away; TTL after its load each key expires;
# failures for 3.5 s after the last expiry; every provider comes back;
# the workloads go on for 3.5 s more and are stopped, then a strict
# pgbench run.  ($WORK_SECS only bounds a run the test fails to stop.)
my $WORK_SECS = 120;
$node->safe_psql('postgres', 'SELECT colcrypt.key_cache_evict()');
my $t_start = time;
my $watch = pgbench_start(appname => 'watch_outages', clients => 1, secs => $WORK_SECS + 1,
	rate => 5, script => $watch_script);
for my $sc (@run)
{
	$sc->{bench} = pgbench_start(appname => "outage_$sc->{name}", clients => 4, secs => $WORK_SECS,
		rate => $RATE, script => $sc->{script});
}
sleep 0.8;

# Each key is cached now; when does it expire?
my %expires = map { split /\|/ } split /\n/, $node->safe_psql('postgres', q{
	SELECT name, extract(epoch FROM expires_at) FROM colcrypt.key_cache_contents WHERE state = 'valid'});
for my $sc (@run)
{
	$sc->{expires} = $expires{ $sc->{key} };
	ok(defined $sc->{expires}, "$sc->{name}: the workload's key is cached before the outage")
	  or $sc->{expires} = time + $TTL;
}
# down_at is when the provider is surely gone (the action has returned).
for my $sc (@run)
{
	my $t = time;
	$sc->{down}->($sc->{fx});
	$sc->{down_at} = time;
	note(sprintf('%s: %s at +%.2f s (took %.2f s); key expires at +%.2f s',
		$sc->{name}, $sc->{how}, $sc->{down_at} - $t_start, $sc->{down_at} - $t, $sc->{expires} - $t_start));
}

# Clients see the failure too: one fresh connection per scenario, shortly
# after its key expired, all at once; psql reports the SQLSTATE and the
# server the statement's duration.  (A statement_timeout at the bound keeps
# a hang from stalling the test: it would show as 57014.)
my $last_expiry = (sort { $b <=> $a } map { $_->{expires} } @run)[0];
sleep($last_expiry + 0.3 - time) if $last_expiry + 0.3 > time;
for my $sc (@run)
{
	# (stdin from a file: IPC::Run feeds a scalar only while it is pumped)
	my $in = script("probe_$sc->{name}", qq{\\set VERBOSITY verbose
SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset
SELECT length(s::text) FROM t_$sc->{name} WHERE id = 1;
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3) AS elapsed;
});
	my ($out, $err) = ('', '');
	local $ENV{PGAPPNAME} = "probe_$sc->{name}";
	local $ENV{PGOPTIONS} = '-c statement_timeout=' . int($BOUND * 1000);
	$sc->{probe} = { out => \$out, err => \$err, t0 => time,
		h => IPC::Run::start([ 'psql', '-X', '-A', '-t', '-h', $node->host, '-p', $node->port, 'postgres' ],
			'<', $in, '>', \$out, '2>', \$err) };
}
note(sprintf('probes started at +%.2f s', time - $t_start));
for my $sc (@run)
{
	my $p = $sc->{probe};
	$p->{h}->finish;
	my @lines = split /\n/, ${ $p->{out} };
	$p->{elapsed} = $lines[-1];
	($p->{sqlstate}, $p->{message}) = ${ $p->{err} } =~ /ERROR:  ([0-9A-Z]{5}): (.*)/;
}

note(sprintf('probes done at +%.2f s', time - $t_start));
# No backend is still waiting on a provider: none of the workloads'
# statements has been running for longer than the bound.
sleep($last_expiry + 3.5 - time) if $last_expiry + 3.5 > time;
my $stuck = $node->safe_psql('postgres', qq{
	SELECT string_agg(application_name || ' pid ' || pid || ' ' || round(extract(epoch FROM clock_timestamp() - query_start)::numeric, 1) || ' s', ', ')
	  FROM pg_stat_activity
	 WHERE application_name LIKE 'outage\\_%' AND state = 'active'
	   AND clock_timestamp() - query_start > interval '$BOUND s'});
is($stuck, '', "during the outage no workload statement runs longer than kms_timeout + 5 s (no hang)");

note(sprintf('outage checked at +%.2f s', time - $t_start));
# Starting PyKMIP takes longest: last.
for my $sc (sort { ($a->{name} eq 'kmip_down') <=> ($b->{name} eq 'kmip_down') } @run)
{
	$sc->{up_at} = time;
	$sc->{up}->($sc->{fx});
	$sc->{up_took} = time - $sc->{up_at};
	note(sprintf('%s: provider back at +%.2f s (took %.2f s)', $sc->{name}, $sc->{up_at} - $t_start, $sc->{up_took}));
}
# Until each workload has succeeded again (at most 20 s), then 2.5 s more.
for (1 .. 100)
{
	my $waiting = 0;
	for my $sc (@run)
	{
		$waiting++ if $node->safe_psql('postgres', qq{SELECT count(*) FROM outage_ops
			WHERE scen = '$sc->{name}' AND ok AND extract(epoch FROM t0) > $sc->{up_at}}) eq '0';
	}
	last unless $waiting;
	sleep 0.2;
}
sleep 2.5;

# Every client of each workload is still connected: none was aborted.
my %sessions = map { split /\|/ } split /\n/, $node->safe_psql('postgres', q{
	SELECT application_name, count(*) FROM pg_stat_activity
	 WHERE application_name LIKE 'outage\_%' GROUP BY 1});
for my $sc (@run)
{
	$sc->{sessions} = $sessions{"outage_$sc->{name}"} // 0;
	$sc->{work} = pgbench_stop($sc->{bench});
}
pgbench_stop($watch);
note(sprintf('workloads stopped at +%.2f s', time - $t_start));

# A pgbench run afterwards, every scenario at once, errors not caught.
for my $sc (@run)
{
	$sc->{bench} = pgbench_start(appname => "strict_$sc->{name}", clients => 4, secs => 2,
		rate => $RATE, script => $sc->{strict_script});
}
$_->{strict} = pgbench_finish($_->{bench}) for @run;

# ---- Results per scenario ----
my @summary;
for my $sc (@run)
{
	my $n = $sc->{name};
	my ($down, $exp, $up) = ($sc->{down_at}, $sc->{expires}, $sc->{up_at});
	my $w = $sc->{work};
	my $q = sub { $node->safe_psql('postgres', $_[0]) };
	my ($ops, $pids) = split /\|/, $q->(qq{SELECT count(*), count(DISTINCT pid) FROM outage_ops
		WHERE scen = '$n' AND NOT strict});
	is($sc->{sessions}, 4, "$n: the workload's 4 clients were all connected at the end (none aborted)");
	is($pids, 4, "$n: and they were the same 4 sessions throughout (nothing reconnected)");
	unlike($w->{err}, qr/aborted|ERROR/, "$n: pgbench reported no error") or diag($w->{err});
	cmp_ok($ops, '>', 0, "$n: the workload ran operations");

	# (b) until the TTL: served from the cache, nothing fails.  (A failing
	# statement begun 0.5 s before the expiry could only be a scheduling
	# delay before the key's clock was read.)
	my $early = $q->(qq{SELECT count(*) FROM outage_ops WHERE scen = '$n' AND NOT ok
		AND extract(epoch FROM st0) < $exp - 0.5});
	is($early, '0', "$n: no operation failed while the key was cached");
	my $served = $q->(qq{SELECT count(*) FROM outage_ops WHERE scen = '$n' AND ok
		AND extract(epoch FROM t0) >= $down AND extract(epoch FROM t1) < $exp});
	cmp_ok($served, '>', 0, "$n: operations were served from the cache while the provider was away");
	# After the TTL and before the provider came back, nothing was served
	# (the TTL is read once per statement, at its first key use).
	my $late_ok = $q->(qq{SELECT count(*) FROM outage_ops WHERE scen = '$n' AND ok
		AND extract(epoch FROM t0) > $exp + 0.25 AND extract(epoch FROM t1) < $up});
	is($late_ok, '0', "$n: after the TTL nothing was served without the provider");

	# (c) failures: the documented SQLSTATE, bounded.
	my ($nfail, $states, $maxstmt, $maxop, $first_fail, $bad_msg, $shared) = split /\|/, $q->(qq{
		SELECT count(*),
		       coalesce(string_agg(DISTINCT sqlstate, ','), ''),
		       coalesce(round(max(extract(epoch FROM t1 - st0))::numeric, 3), 0),
		       coalesce(round(max(extract(epoch FROM t1 - t0))::numeric, 3), 0),
		       coalesce(min(extract(epoch FROM st0)), 0),
		       count(*) FILTER (WHERE message NOT LIKE 'key provider "$sc->{provider}" (%'),
		       count(*) FILTER (WHERE detail LIKE '%waited for another one''s call%')
		  FROM outage_ops WHERE scen = '$n' AND NOT ok});
	cmp_ok($nfail, '>', 0, "$n: statements needing the key failed after the TTL");
	is($states, $sc->{sqlstate}, "$n: every failure has SQLSTATE $sc->{sqlstate}");
	is($bad_msg, '0', "$n: every failure names the provider");
	cmp_ok($maxstmt, '<', $BOUND, "$n: every failing statement returned within kms_timeout + 5 s");
	my $p = $sc->{probe};
	is($p->{sqlstate} // 'none', $sc->{sqlstate}, "$n: a new client gets $sc->{sqlstate} too")
	  or diag(${ $p->{err} });
	like($p->{message} // '', qr/^key provider "\Q$sc->{provider}\E"/, "$n: the client's error names the provider");
	ok(defined $p->{elapsed} && $p->{elapsed} =~ /^[\d.]+$/ && $p->{elapsed} < $BOUND,
		"$n: the client's failing statement returned within kms_timeout + 5 s")
	  or diag(${ $p->{out} });
	my $watch_max = $q->(qq{SELECT coalesce(round(max(max_age)::numeric, 2), 0) FROM outage_activity
		WHERE appname = 'outage_$n'});
	cmp_ok($watch_max, '<', $BOUND, "$n: pg_stat_activity never showed a workload statement older than kms_timeout + 5 s");

	# (d) recovery: the first success after the failures, the strict run,
	# the data.
	my ($recovered) = $q->(qq{SELECT min(extract(epoch FROM t1)) FROM outage_ops
		WHERE scen = '$n' AND NOT strict AND ok AND extract(epoch FROM t0) > $first_fail});
	ok(defined $recovered && $recovered ne '', "$n: the workload recovered once the provider was back, without a restart");
	my ($ok_after, $all_after) = (0, 0);
	($ok_after, $all_after) = split /\|/, $q->(qq{SELECT count(*) FILTER (WHERE ok) || '|' || count(*) FROM outage_ops
		WHERE scen = '$n' AND NOT strict AND extract(epoch FROM t0) > $recovered + 1})
	  if defined $recovered && $recovered ne '';
	cmp_ok($ok_after, '>', 0, "$n: the workload ran on after it recovered");
	is($ok_after, $all_after, "$n: from 1 s after its first success, every operation of the workload succeeded");
	my $s = $sc->{strict};
	is($s->{rc}, 0, "$n: pgbench afterwards: exit 0") or diag($s->{err});
	is($s->{failed}, 0, "$n: pgbench afterwards: no failed transactions");
	unlike($s->{err}, qr/aborted|ERROR/, "$n: pgbench afterwards: no client aborted");
	cmp_ok($s->{tx}, '>', 0, "$n: pgbench afterwards ran transactions");
	my $d = check_data($n);
	is($d->{bad}, '0', "$n: every value decrypts to its last committed write ($d->{rows} rows)");
	cmp_ok($d->{writes}, '>', $sc->{before}{writes}, "$n: the workload's writes are there");

	my $per_state = $q->(qq{SELECT string_agg(sqlstate || ' x' || c, ', ') FROM
		(SELECT sqlstate, count(*) c FROM outage_ops WHERE scen = '$n' AND NOT ok GROUP BY 1) x});
	push @summary, sprintf('%-12s %-30s cache %5.2f s (%4d ops)  failed %4d [%s; %d shared]  max fail %5.2f s (op %5.2f, client %s s, pg_stat_activity %s s)  first success %s s after it began to come back (which took %.2f s)',
		$n, $sc->{how}, ($first_fail || $exp) - $down, $served, $nfail, $per_state // '', $shared, $maxstmt, $maxop,
		$p->{elapsed} // '?', $watch_max,
		(defined $recovered && $recovered ne '') ? sprintf('%.2f', $recovered - $up) : 'never',
		$sc->{up_took});
}
note("per scenario (key_cache_ttl $TTL s, kms_timeout $KMS_TIMEOUT ms): seconds served from the cache after the provider went away (and operations served), failed operations by SQLSTATE (and how many got the error of another session's provider call they waited for), longest failing statement (longest failing operation, the new client's failing statement, the oldest workload statement pg_stat_activity showed), seconds from when the provider began to come back to the workload's first success");
note($_) for @summary;

# Nothing left behind: no workload backend, no key half-loaded.
my $left = '';
for (1 .. 50)
{
	$left = $node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE application_name ~ '^(outage|strict|probe)_'});
	last if $left eq '0';
	sleep 0.1;
}
is($left, '0', 'no backend of the workloads is left');
is($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.key_cache_contents WHERE state = 'loading'}),
	'0', 'no cache slot is left loading');

# Provider failures are audited, per provider with its SQLSTATE.
$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
my %audited = map { $_ => 1 } split /\n/, $node->safe_psql('postgres', q{
	SELECT DISTINCT object_name || ' ' || substring(detail from 'SQLSTATE (.....)')
	  FROM colcrypt.audit_log WHERE action = 'kms_failure'});
ok($audited{"$_->{provider} $_->{sqlstate}"}, "$_->{name}: the provider failure is audited with $_->{sqlstate}")
  for @run;

$_->() for @cleanup;
$node->safe_psql('postgres', 'CHECKPOINT');
ColcryptTest::assert_no_plaintext($node, [$marker], controls => [$control], what => 'after the outages');
$node->stop;
done_testing();
