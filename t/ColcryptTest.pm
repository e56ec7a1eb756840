# Helpers shared by colcrypt's TAP tests.
package ColcryptTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;

# A cluster with colcrypt preloaded.  Extra settings are appended.
sub new_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $opts{allows_streaming} // 0);
	$node->append_conf('postgresql.conf', "shared_preload_libraries = 'colcrypt'\n");
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
	$sql .= q{
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
	$node->safe_psql($db, $sql);
	return;
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
