# Helpers shared by colcrypt's TAP tests.
package ColcryptTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;

# A cluster with colcrypt preloaded.  Extra settings are appended.
# production_logging => 1: statements are not logged, as in production
# (PostgreSQL::Test::Cluster logs them all, and a statement's text holds
# its literals); needed wherever assert_no_plaintext checks the log.
sub new_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $opts{allows_streaming} // 0);
	$node->append_conf('postgresql.conf', "shared_preload_libraries = 'colcrypt'\n");
	$node->append_conf('postgresql.conf', qq{
log_statement = 'none'
log_min_error_statement = 'panic'
log_min_messages = 'info'
}) if $opts{production_logging};
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	return $node;
}

# The extension, a file provider at $keyring, master key "cmk" and the
# given data keys (default: k1), plus the try() helper.
sub setup_keys
{
	my ($node, $db, $keyring, @keys) = @_;
	@keys = ('k1') unless @keys;
	my $sql = qq{
		CREATE EXTENSION colcrypt;
		SELECT colcrypt.add_provider('dev', 'file', jsonb_build_object('path', '$keyring'));
		SELECT colcrypt.add_master_key('cmk', 'dev', 'test-cmk');
	};
	$sql .= "SELECT colcrypt.create_key('$_', 'cmk');\n" for @keys;
	$node->safe_psql($db, $sql . try_function());
	return;
}

# try(sql): runs sql and returns 'ok' or 'SQLSTATE: message'.
sub try_function
{
	return q{
		CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
		DECLARE st text; msg text;
		BEGIN
			EXECUTE sql;
			RETURN 'ok';
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
			RETURN st || ': ' || msg;
		END $$;
	};
}

# colcrypt.key_cache as a hash.
sub cache_stats
{
	my ($node, $db) = @_;
	my $row = $node->safe_psql($db // 'postgres',
		'SELECT entries, hits, misses, kms_calls, kms_failures, evictions, expirations FROM colcrypt.key_cache');
	my @v = split /\|/, $row;
	my %h;
	@h{qw(entries hits misses kms_calls kms_failures evictions expirations)} = @v;
	return \%h;
}

# Child processes of a node's postmaster whose process title matches $re
# (background workers without a database are not in pg_stat_activity).
sub server_children
{
	my ($node, $re) = @_;
	my $ppid = $node->{_pid} or return 0;
	my $n = 0;
	for my $stat (glob('/proc/[0-9]*/stat'))
	{
		open(my $fh, '<', $stat) or next;
		my $line = <$fh>;
		close $fh;
		next unless defined $line && $line =~ /\) \S+ (\d+) / && $1 == $ppid;
		(my $cmd = $stat) =~ s/stat$/cmdline/;
		open($fh, '<', $cmd) or next;
		local $/;
		my $args = <$fh> // '';
		close $fh;
		$n++ if $args =~ $re;
	}
	return $n;
}

# Files under $dir (recursively) whose bytes contain $needle: a list of
# paths relative to $dir.  Unreadable files are reported as failures.
sub files_containing
{
	my ($dir, $needle) = @_;
	my @found;
	my @stack = ($dir);
	while (my $d = pop @stack)
	{
		opendir(my $dh, $d) or next;    # a directory may vanish meanwhile
		for my $e (readdir $dh)
		{
			next if $e eq '.' || $e eq '..';
			my $p = "$d/$e";
			if (-l $p) { next; }
			if (-d $p) { push @stack, $p; next; }
			next unless -f $p;
			open(my $fh, '<:raw', $p) or next;    # removed temp files
			local $/;
			my $content = <$fh>;
			close $fh;
			push @found, substr($p, length($dir) + 1)
			  if defined $content && index($content, $needle) >= 0;
		}
		closedir $dh;
	}
	return @found;
}

# ---- The no-plaintext scanner (issue 8): run at the end of every test ----

# A marker unique to this run: markers of earlier runs left in shared
# places (the system log, /tmp) can never make a test pass or fail.
sub run_marker
{
	my ($prefix) = @_;
	return sprintf('%s%08x%08x', $prefix // 'SECRETMARK', int(rand(2**32)), int(rand(2**32)));
}

# Where in $path (a file or a directory, recursively) $needle occurs: a
# list of "relative/path" entries, one per file holding it.
sub _paths_holding
{
	my ($path, $needle) = @_;
	return () unless -e $path;
	return files_containing($path, $needle) if -d $path;
	return _file_holds($path, $needle) ? ($path) : ();
}

sub _file_holds
{
	my ($file, $needle) = @_;
	open(my $fh, '<:raw', $file) or return 0;
	local $/;
	my $c = <$fh>;
	close $fh;
	return defined $c && index($c, $needle) >= 0;
}

# Check that no byte string in @$secrets appears anywhere a security team
# would look, and that the scan could have seen it: every string in
# @$controls (written in plaintext on purpose) must be found in the places
# named by $opts{control_in} (default: the data directory).
#
# Looked at: each node's data directory (heap, TOAST, indexes, WAL, temp
# files, stats, everything), each node's server log (make the nodes with
# new_node(..., production_logging => 1): a logged statement's text holds
# its literals, which is PostgreSQL's doing, not colcrypt's), and every file or
# directory in $opts{files} (pg_dump outputs, core files, ...).  Reports
# one test per place; returns the number of places that held a secret.
#
#   ColcryptTest::assert_no_plaintext([$primary, $standby], [$marker],
#       controls => [$ctl], files => [$dumpfile], what => 'after the crash');
sub assert_no_plaintext
{
	my ($nodes, $secrets, %opts) = @_;
	$nodes = [$nodes] if ref($nodes) ne 'ARRAY';
	my $what = $opts{what} ? " ($opts{what})" : '';
	my @places;
	for my $n (@$nodes)
	{
		my $name = $n->name;
		push @places, [ "data directory of $name", $n->data_dir ];
		push @places, [ "server log of $name", $n->logfile ] if -f $n->logfile;
	}
	push @places, map { [ "file $_", $_ ] } @{ $opts{files} // [] };

	my $bad = 0;
	for my $place (@places)
	{
		my ($label, $path) = @$place;
		my @hits;
		for my $s (@$secrets)
		{
			push @hits, _paths_holding($path, $s);
		}
		$bad++ if @hits;
		is(scalar(@hits), 0, "no plaintext marker in the $label$what")
		  or diag("found in: " . join(' ', @hits));
	}
	# The scan must be able to see what it looks for.
	for my $c (@{ $opts{controls} // [] })
	{
		my @where = map { _paths_holding($_->data_dir, $c) } @$nodes;
		ok(scalar(@where) > 0, "the plain control marker is found by the same scan$what")
		  or diag("control marker not found under any data directory");
	}
	return $bad;
}

# A core file of a running process, made with gdb's gcore (which, like the
# kernel, leaves out mappings marked MADV_DONTDUMP).  Returns its path, or
# undef when gcore is missing or refused.
sub gcore
{
	my ($pid, $dir) = @_;
	my $prefix = "$dir/core";
	my $out = `gcore -o $prefix $pid 2>&1`;
	my $file = "$prefix.$pid";
	return -s $file ? $file : (diag("gcore failed: $out"), undef)[1];
}

# ---- The HTTP key manager emulators (test/vault, test/awskms) ----

# Start an emulator ('vault' or 'awskms') over plain http on loopback in
# $dir; returns its port.
sub emu_start
{
	my ($kind, $dir, $port) = @_;
	$port //= PostgreSQL::Test::Cluster::get_free_port();
	my $script = "$FindBin::RealBin/../test/$kind/server.sh";
	system($script, 'start', $dir, $port, '--plain') == 0 or die "$kind emulator did not start";
	return $port;
}

sub emu_stop
{
	my ($kind, $dir) = @_;
	system("$FindBin::RealBin/../test/$kind/server.sh", 'stop', $dir);
	return;
}

# A control request to an emulator: /_emu/<what>; returns the decoded JSON
# answer (or undef).
sub emu_ctl
{
	my ($port, $what, $body) = @_;
	require HTTP::Tiny;
	require JSON::PP;
	my $http = HTTP::Tiny->new(timeout => 10);
	my $url = "http://127.0.0.1:$port/_emu/$what";
	my $res = defined $body
	  ? $http->post($url, { content => JSON::PP::encode_json($body),
			headers => { 'Content-Type' => 'application/json' } })
	  : $http->get($url);
	die "emulator control $what: $res->{status} $res->{content}" unless $res->{success};
	return length($res->{content}) ? JSON::PP::decode_json($res->{content}) : undef;
}

1;
