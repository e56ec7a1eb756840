# An audit trail that cannot be drowned or blocked, and shredding that
# cannot be blocked, attacked as an unprivileged role would:
#  - three sessions looping denied calls do not push out anyone else's
#    events, and nothing is lost;
#  - a prepared transaction's event does not stop the writer;
#  - a parallel query holding every free worker slot stops neither the
#    audit writer nor shredding;
#  - a LOCK TABLE on tables of one's own holds up no key destruction for
#    longer than colcrypt.lock_timeout, and none of a key the table cannot
#    hold;
#  - identical denials of one statement are one event, however they
#    alternate; refused cross-key moves are audited;
#  - a RAISE LOG imitating an audit line is marked as not one.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ColcryptTest;

# Worker slots: the logical replication launcher, colcrypt's key cache
# janitor and reserved audit writer, and exactly one to share.
my $node = ColcryptTest::new_node('audit_pressure', conf => q{
max_prepared_transactions = 2
max_worker_processes = 4
max_parallel_workers = 4
max_parallel_workers_per_gather = 1
});
$node->start;
ColcryptTest::setup_keys($node, 'postgres', $node->basedir . '/keyring', 'customers', 'other');
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE clerk LOGIN;
	GRANT USAGE ON SCHEMA colcrypt TO mallory, clerk;
	GRANT EXECUTE ON FUNCTION try(text) TO mallory, clerk;
	SELECT colcrypt.grant_key('customers', 'clerk', 'encrypt');
	CREATE TABLE customers (id int PRIMARY KEY, ssn colcrypt.encrypted_text(customers));
	INSERT INTO customers SELECT g, 'ssn-' || g FROM generate_series(1, 10) g;
	CREATE TABLE other_t (id int, v colcrypt.encrypted_text(other));
	INSERT INTO other_t VALUES (1, 'o1');
	GRANT SELECT, INSERT ON customers, other_t TO mallory;
	CREATE SCHEMA clerkschema AUTHORIZATION clerk;
	GRANT CREATE ON SCHEMA public TO mallory;
});

# ---- 1. Flooding --------------------------------------------------------
my @floods;
# Two sessions loop denied calls; the third loops failing calls, each on
# another (missing) key, so that none can be merged.
for my $i (1 .. 3)
{
	my $s = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'mallory' ]);
	my $call = $i < 3 ? q{colcrypt.rotate_key('customers')} : q{colcrypt.rotate_key('nosuch_' || n)};
	$s->query_until(qr/flooding/, qq{
\\echo flooding
DO \$\$
DECLARE t0 timestamptz := clock_timestamp(); n int := 0;
BEGIN
	WHILE clock_timestamp() < t0 + interval '6 seconds' LOOP
		n := n + 1;
		BEGIN
			PERFORM $call;
		EXCEPTION WHEN OTHERS THEN NULL;
		END;
	END LOOP;
END \$\$;
\\echo flood_done
});
	push @floods, $s;
}
# Meanwhile, 80 key management events by the key's owner.
sleep 1;
for my $i (1 .. 40)
{
	$node->safe_psql('postgres', "SELECT colcrypt.grant_key('customers', 'clerk', 'decrypt')");
	$node->safe_psql('postgres', "SELECT colcrypt.revoke_key('customers', 'clerk', 'decrypt')");
}
$_->query_until(qr/flood_done/, '') for @floods;
$_->quit for @floods;
is($node->safe_psql('postgres', 'SELECT colcrypt.audit_flush(60000)'), 't', 'the flood is written');
is($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.audit_log
	WHERE role_name = 'postgres' AND action IN ('grant', 'revoke') AND object_name = 'customers'
	  AND detail LIKE 'decrypt % clerk'}), '80', 'every one of the 80 concurrent grant and revoke events is there');
my ($denied_rows, $denied_total) = split /\|/, $node->safe_psql('postgres', q{SELECT count(*), sum(occurrences)
	FROM colcrypt.audit_log WHERE role_name = 'mallory' AND action = 'rotate' AND outcome = 'denied'});
cmp_ok($denied_total, '>', 1000, "the flood's denials are all counted ($denied_total in $denied_rows rows)");
cmp_ok($denied_rows, '<', $denied_total, 'repeated denials under pressure are merged into rows with counts');
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.audit_log
	WHERE role_name = 'mallory' AND outcome = 'failed' AND object_name LIKE 'nosuch%'}), '>', 100,
	'failing calls on ever new names are recorded too (in the flooding role\'s share)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.audit_log WHERE action = 'events_lost'}), '0',
	'no event was lost');
is($node->safe_psql('postgres', 'SELECT dropped FROM colcrypt.audit_queue'), '0', 'the queue dropped nothing');

# ---- 2. A prepared transaction ------------------------------------------
$node->safe_psql('postgres', q{CREATE TABLE clerkschema.ct (c text); ALTER TABLE clerkschema.ct OWNER TO clerk;
	INSERT INTO clerkschema.ct VALUES ('x');});
$node->safe_psql('postgres', q{BEGIN; SELECT colcrypt.encrypt_column('clerkschema.ct', 'c', 'customers');
	PREPARE TRANSACTION 'p';}, extra_params => [ '-U', 'clerk' ]);
$node->safe_psql('postgres', q{
	SELECT colcrypt.create_key('after_prepare', 'cmk');
	SELECT colcrypt.rotate_key('after_prepare');
	SELECT colcrypt.set_key_state('after_prepare', 1, 'destroyed');
});
is($node->safe_psql('postgres', 'SELECT colcrypt.audit_flush(20000)'), 't',
	'the writer goes on after the prepared transaction\'s event');
is($node->safe_psql('postgres', q{SELECT outcome FROM colcrypt.audit_log WHERE action = 'encrypt_column'
	AND object_name = 'clerkschema.ct.c'}), 'prepared', 'the prepared transaction\'s event is recorded as prepared');
is($node->safe_psql('postgres', q{SELECT string_agg(action, ',' ORDER BY id) FROM colcrypt.audit_log
	WHERE object_name = 'after_prepare'}), 'create,rotate,state', 'the events after it are all there');
$node->safe_psql('postgres', q{ROLLBACK PREPARED 'p'});
# An event the table refuses is written in a plain form; the rest go on.
$node->safe_psql('postgres', q{ALTER TABLE colcrypt.audit_event ADD CONSTRAINT no_grants
	CHECK (action <> 'grant' OR outcome <> 'ok') NOT VALID});
$node->safe_psql('postgres', q{SELECT colcrypt.grant_key('customers', 'clerk', 'decrypt');
	SELECT colcrypt.revoke_key('customers', 'clerk', 'decrypt');});
is($node->safe_psql('postgres', 'SELECT colcrypt.audit_flush(20000)'), 't', 'a refused event does not block the writer');
is($node->safe_psql('postgres', q{SELECT string_agg(action || ':' || outcome, ',' ORDER BY id) FROM (
	SELECT * FROM colcrypt.audit_log WHERE object_name = 'customers' ORDER BY id DESC LIMIT 2) s}),
	'grant:warning,revoke:ok', 'the refused one is recorded as a warning, the next as it was');
$node->safe_psql('postgres', 'ALTER TABLE colcrypt.audit_event DROP CONSTRAINT no_grants');

# ---- 3. Every free worker slot taken --------------------------------------
$node->safe_psql('postgres', q{CREATE TABLE mallory_big AS SELECT g FROM generate_series(1, 100000) g;
	ALTER TABLE mallory_big OWNER TO mallory; ANALYZE mallory_big;});
sleep 2;    # the last dynamic writer has left
my $par = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'mallory' ]);
$par->query_until(qr/parallel/, q{
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
\echo parallel
SELECT count(*) FROM mallory_big WHERE pg_sleep(0.0001) IS NOT NULL;
\echo parallel_done
});
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'parallel worker'})
  or die 'no parallel worker';
my $t0 = time;
$node->safe_psql('postgres', q{SELECT colcrypt.create_key('while_busy', 'cmk');
	SELECT colcrypt.rotate_key('while_busy');});
is($node->safe_psql('postgres', 'SELECT colcrypt.audit_flush(15000)'), 't',
	'with every free worker slot taken, the reserved writer records the events');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parallel worker'}), '1',
	'(the parallel query still held the slot)');
$node->safe_psql('postgres', q{SELECT colcrypt.set_key_state('while_busy', 1, 'destroyed')});
is($node->safe_psql('postgres', 'SELECT colcrypt.audit_flush(15000)'), 't', 'and shreds');
is($node->safe_psql('postgres', q{SELECT shredded_at IS NOT NULL FROM colcrypt.keys WHERE name = 'while_busy' AND version = 1}),
	't', 'the destroyed version is shredded');
$node->safe_psql('postgres', q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity
	WHERE usename = 'mallory' AND query LIKE '%mallory_big%'});
$par->query_until(qr/parallel_done/, '');
$par->quit;

# ---- 4. LOCK TABLE against shredding --------------------------------------
$node->safe_psql('postgres', q{CREATE TABLE public.mt (c colcrypt.encrypted_text(customers));
	CREATE TABLE public.mu (x int); ALTER TABLE mt OWNER TO mallory; ALTER TABLE mu OWNER TO mallory;
	SELECT colcrypt.rotate_key('customers'); SELECT colcrypt.rotate_key('other');});
my $lock = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'mallory' ]);
$lock->query_safe('BEGIN; LOCK mt; LOCK mu;');
$t0 = time;
is($node->safe_psql('postgres', q{SELECT try($$SELECT colcrypt.set_key_state('other', 1, 'destroyed', force => true)$$)}),
	'ok', 'a key mallory\'s locked tables cannot hold is destroyed');
cmp_ok(time - $t0, '<', 4, '...without waiting for the locks');
my ($r, $out, $err) = $node->psql('postgres', q{SET colcrypt.lock_timeout = '500ms';
	SELECT colcrypt.set_key_state('customers', 1, 'destroyed')});
like($err, qr/cannot count the values under data key "customers" version 1.*Locked by other transactions for longer than colcrypt.lock_timeout: public.mt/s,
	'without force, a locked table that may hold the key stops destruction after colcrypt.lock_timeout, with a clear error');
$t0 = time;
($r, $out, $err) = $node->psql('postgres', q{SET colcrypt.lock_timeout = '500ms';
	SELECT colcrypt.set_key_state('customers', 1, 'destroyed', force => true)});
is($r, 0, 'with force, destruction goes ahead');
like($err, qr/were not counted in public.mt/, '...and says what was not counted');
cmp_ok(time - $t0, '<', 4, '...within the lock timeout');
is($node->safe_psql('postgres', 'SELECT colcrypt.audit_flush(15000)'), 't', 'shredding is not held up by the lock');
is($node->safe_psql('postgres', q{SELECT shredded_at IS NOT NULL FROM colcrypt.keys WHERE name = 'customers' AND version = 1}),
	't', 'the version is shredded while mallory still holds the lock');
$lock->quit;

# ---- 5. What one event is ---------------------------------------------------
$node->safe_psql('postgres', q{INSERT INTO customers VALUES (11, 'ssn-11'); INSERT INTO other_t VALUES (2, 'o2');});
$node->safe_psql('postgres', q{DO $$
BEGIN
	FOR i IN 1 .. 100 LOOP
		BEGIN PERFORM ssn::text FROM customers WHERE id = 11; EXCEPTION WHEN OTHERS THEN NULL; END;
		BEGIN PERFORM v::text FROM other_t WHERE id = 2; EXCEPTION WHEN OTHERS THEN NULL; END;
	END LOOP;
END $$;}, extra_params => [ '-U', 'mallory' ]);
$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
is($node->safe_psql('postgres', q{SELECT string_agg(object_name || ':' || occurrences, ',' ORDER BY object_name)
	FROM colcrypt.audit_log WHERE role_name = 'mallory' AND action = 'decrypt'}),
	'customers:1,other:1', 'denials alternating between two keys in one statement: one event per key');
# A refused cross-key move is audited.
like($node->safe_psql('postgres', q{SELECT try($$INSERT INTO customers SELECT 99, v::colcrypt.encrypted_text FROM other_t WHERE id = 2$$)},
	extra_params => [ '-U', 'mallory' ]), qr/^42501: value encrypted with data key "other" cannot be stored under data key "customers"/,
	'a cross-key move without decrypt is refused');
$node->safe_psql('postgres', 'SELECT colcrypt.audit_flush()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM colcrypt.audit_log WHERE role_name = 'mallory' AND action = 'move'
	AND object_name = 'other' AND outcome = 'denied'}), '1', '...and audited');

# ---- 6. Forged log lines ----------------------------------------------------
my $logstart = -s $node->logfile;
$node->safe_psql('postgres', q{DO $$BEGIN RAISE LOG 'colcrypt audit: grant key "customers" by "postgres": ok: decrypt to mallory'; END$$},
	extra_params => [ '-U', 'mallory' ]);
$node->safe_psql('postgres', q{SET colcrypt.audit = 'all'; SELECT colcrypt.grant_key('other', 'clerk', 'encrypt')});
my $log = slurp_file($node->logfile, $logstart);
like($log, qr/LOG:  \(not a colcrypt audit record\) colcrypt audit: grant key "customers" by "postgres"/,
	'a RAISE LOG imitating an audit line is marked');
unlike($log, qr/LOG:  colcrypt audit: grant key "customers"/, '...and never reads like one');
like($log, qr/LOG:  colcrypt audit: grant key "other" by "postgres": ok/, 'real audit lines are unmarked');

# ---- 7. Losses are durable --------------------------------------------------
# With the writer unable to insert, key management events fill the whole
# queue; those that then find no room at commit (where nobody can wait)
# are counted, and written as one events_lost row once the writer can.
$node->safe_psql('postgres', 'ALTER TABLE colcrypt.audit_event ADD CONSTRAINT refuse_all CHECK (false) NOT VALID');
$node->safe_psql('postgres', "SET colcrypt.audit_wait_timeout = 0;\n" . join('', map { "SELECT colcrypt.grant_key('other', 'clerk', 'decrypt');\n"
	. "SELECT colcrypt.revoke_key('other', 'clerk', 'decrypt');\n" } 1 .. 600));
cmp_ok($node->safe_psql('postgres', 'SELECT dropped FROM colcrypt.audit_queue'), '>', 0, 'a full queue of key management events loses some');
$node->safe_psql('postgres', 'ALTER TABLE colcrypt.audit_event DROP CONSTRAINT refuse_all');
is($node->safe_psql('postgres', 'SELECT colcrypt.audit_flush(60000)'), 't', 'the writer catches up');
my ($kept, $lost) = split /\|/, $node->safe_psql('postgres', q{SELECT
	(SELECT count(*) FROM colcrypt.audit_log WHERE object_name = 'other' AND detail LIKE 'decrypt % clerk'),
	(SELECT sum(occurrences) FROM colcrypt.audit_log WHERE action = 'events_lost')});
is($kept + $lost, 1200, "every event is either in the log ($kept) or counted there as lost ($lost)");
is($node->safe_psql('postgres', 'SELECT dropped FROM colcrypt.audit_queue'), $lost, 'the queue\'s count agrees');

$node->stop;
done_testing();
