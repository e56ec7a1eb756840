# Every provider kind colcrypt has, as fixtures a TAP test can run one
# scenario against in turn (issue 8: "run it against every provider kind"):
#
#   file     a keyring file outside every data directory
#   kmip     a PyKMIP server (test/kmip/server.sh), mutual TLS
#   vault    the Vault Transit emulator (test/vault), token auth
#   aws-kms  the AWS KMS emulator (test/awskms), SigV4 with static keys
#   pkcs11   a SoftHSM2 token of its own (test/hsm/softhsm.sh)
#
#   my $kms = ColcryptKms->new;          # before any node starts: the
#                                        # postmaster's environment carries
#                                        # SoftHSM2's configuration
#   for my $kind ($kms->kinds) {
#       $kms->setup($node, $db, $kind, masters => { cmk => 'cmk-a' }, keys => ['k1']);
#   }
#   $kms->stop;
#
# setup() creates the extension in $db, the try() helper, a provider named
# "kms" of that kind (for "file": "dev", the name setup_keys uses), one
# master key per entry of "masters" (name => a key reference unique to the
# database: the CMK is created in the key manager where the kind can) and
# the data keys under the first master key.  The provider's options are
# absolute paths and loopback addresses, so a standby or another cluster on
# this machine that restores the key catalog reaches the same key manager.
#
# A kind whose fixture this machine lacks is left out of kinds() and
# reported by report_missing() as a skip; under scripts/test.sh
# (COLCRYPT_TEST_KMIP set), which installs every fixture, as a failure.
package ColcryptKms;

use strict;
use warnings;

use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ColcryptTest;

my $SRC = "$FindBin::RealBin/..";
my $SOFTHSM = '/usr/lib/softhsm/libsofthsm2.so';
my @ALL = ('file', 'kmip', 'vault', 'aws-kms', 'pkcs11');
my @running;    # fixtures to stop if the test dies first

sub new
{
	my ($class, %opts) = @_;
	my $self = bless {
		dir => $opts{dir} // PostgreSQL::Test::Utils::tempdir(),
		missing => {},
		fixture => {},
	}, $class;
	my $only = $ENV{COLCRYPT_TEST_KINDS};    # e.g. "file,vault" while working on one
	for my $kind (@ALL)
	{
		next if defined $only && !grep { $_ eq $kind } split /,/, $only;
		my $why = $self->_start($kind);
		if (defined $why) { $self->{missing}{$kind} = $why }
		else { push @{ $self->{kinds} }, $kind }
	}
	push @running, $self;
	return $self;
}

# A short name for database, table and object names.
sub tag { my ($self, $kind) = @_; return $kind =~ s/-/_/gr }

sub kinds { return @{ $_[0]{kinds} // [] } }

sub report_missing
{
	my ($self) = @_;
	for my $kind (sort keys %{ $self->{missing} })
	{
		if (defined $ENV{COLCRYPT_TEST_KMIP})
		{
			fail("$kind: fixture available under scripts/test.sh");
			diag($self->{missing}{$kind});
		}
		else
		{
		  SKIP: { skip("$kind: $self->{missing}{$kind}", 1); }
		}
	}
	return;
}

# Why this machine cannot run a kind's fixture, or undef when it can.
sub why_missing
{
	my ($kind) = @_;
	if ($kind eq 'kmip')
	{
		return 'PyKMIP is not installed' unless -d '/usr/lib/python3/dist-packages/kmip';
	}
	elsif ($kind eq 'vault' || $kind eq 'aws-kms')
	{
		return 'python3-cryptography is not installed (emulators)'
		  if system('/usr/bin/python3', '-c', 'import cryptography') != 0;
	}
	elsif ($kind eq 'pkcs11')
	{
		return 'SoftHSM2 is not installed' unless -f $SOFTHSM;
		return 'softhsm2-util or pkcs11-tool is missing'
		  if system('sh', '-c', '{ command -v softhsm2-util && command -v pkcs11-tool; } >/dev/null 2>&1') != 0;
	}
	return undef;
}

sub _start
{
	my ($self, $kind) = @_;
	my $dir = "$self->{dir}/$kind";
	my $fx = $self->{fixture}{$kind} = { dir => $dir };
	my $why = why_missing($kind);
	return $why if defined $why;
	if ($kind eq 'file')
	{
		mkdir $dir;
		$fx->{keyring} = "$dir/keyring";
	}
	elsif ($kind eq 'kmip')
	{
		$fx->{port} = PostgreSQL::Test::Cluster::get_free_port();
		system("$SRC/test/kmip/server.sh", 'start', $dir, $fx->{port}) == 0
		  or return "PyKMIP did not start in $dir";
		$fx->{stop} = sub { system("$SRC/test/kmip/server.sh", 'stop', $dir) };
	}
	elsif ($kind eq 'vault' || $kind eq 'aws-kms')
	{
		my $emu = $kind eq 'vault' ? 'vault' : 'awskms';
		$fx->{port} = ColcryptTest::emu_start($emu, $dir);
		$fx->{stop} = sub { ColcryptTest::emu_stop($emu, $dir) };
	}
	elsif ($kind eq 'pkcs11')
	{
		my $out = `$SRC/test/hsm/softhsm.sh init $dir colcrypt 13571357 2>&1`;
		return "SoftHSM2 token could not be made: $out" if $? != 0;
		$ENV{SOFTHSM2_CONF} = "$dir/softhsm2.conf";
	}
	return undef;
}

# The provider's options, as a SQL jsonb expression.
sub _options
{
	my ($self, $kind) = @_;
	my $fx = $self->{fixture}{$kind};
	my $d = $fx->{dir};
	return {
		file => qq{jsonb_build_object('path', '$fx->{keyring}')},
		kmip => qq{jsonb_build_object('host', '127.0.0.1', 'port', $fx->{port}, 'ca_file', '$d/certs/ca.crt',
			'cert_file', '$d/certs/client.crt', 'key_file', '$d/certs/client.key')},
		vault => qq{jsonb_build_object('url', 'http://127.0.0.1:$fx->{port}', 'token', 'root-token')},
		'aws-kms' => qq{jsonb_build_object('region', 'us-east-1', 'endpoint', 'http://127.0.0.1:$fx->{port}',
			'access_key_id', 'AKIDCOLCRYPTTEST', 'secret_access_key', 'colcrypt/test/secret/key/0123456789abcdef')},
		pkcs11 => qq{jsonb_build_object('module', '$SOFTHSM', 'token_label', 'colcrypt', 'pin_file', '$d/pin')},
	}->{$kind};
}

# The provider name setup() gives a kind.
sub provider { return $_[1] eq 'file' ? 'dev' : 'kms' }

sub setup
{
	my ($self, $node, $db, $kind, %opts) = @_;
	my %masters = %{ $opts{masters} // { cmk => "cmk-$db" } };
	my $first = $opts{first} // (sort keys %masters)[0];
	my $p = $self->provider($kind);
	my $sql = qq{
		CREATE EXTENSION IF NOT EXISTS colcrypt;
		SET client_min_messages = warning;
		SELECT colcrypt.add_provider('$p', '$kind', @{[ $self->_options($kind) ]});
	};
	for my $m (sort keys %masters)
	{
		# AWS KMS makes a key for an alias; the others take a name.
		my $ref = $kind eq 'aws-kms' ? "alias/$masters{$m}" : $masters{$m};
		my $create = $kind eq 'file' ? '' : ', create_cmk => true';
		$sql .= "SELECT colcrypt.add_master_key('$m', '$p', '$ref'$create);\n";
	}
	$sql .= "SELECT colcrypt.create_key('$_', '$first');\n" for @{ $opts{keys} // [] };
	$node->safe_psql($db, $sql . ColcryptTest::try_function());
	return;
}

sub stop
{
	my ($self) = @_;
	for my $fx (values %{ $self->{fixture} })
	{
		(delete $fx->{stop})->() if $fx->{stop};
	}
	return;
}

END
{
	local $?;    # the test's exit status
	$_->stop for @running;
}

1;
