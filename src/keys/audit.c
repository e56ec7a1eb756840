/*-------------------------------------------------------------------------
 *
 * audit.c
 *	  The audit trail: a queue in shared memory and a writer per database.
 *
 * Recording must not depend on the transaction that causes the event: a
 * failed key management call, a provider failure and a denied decryption
 * are all followed by an error that rolls the transaction back, and
 * decryptions happen in read-only transactions and on standbys.  So every
 * event is put on a ring of fixed-size slots in shared memory, and a
 * background worker per database, started on demand and leaving after a
 * while without work, inserts them into colcrypt.audit_event in its own
 * transactions.  Key management actions are held back in the acting backend
 * until its transaction ends, then queued as "ok" (commit) or "rolled back"
 * (abort).  With colcrypt.audit = log or all every event is also a server
 * log line (without the statement, which may hold plaintext); on a standby,
 * which cannot write, that line is all there is.
 *
 * Nobody can drown the trail:
 *	- Under pressure (the role has MERGE_AFTER denials waiting, or a quarter
 *	  of the queue is in use) a denial identical to one still waiting (same
 *	  database, role, action, object and detail) is merged into it:
 *	  audit_event.occurrences counts them, last_at says when the last was.
 *	  A loop of denied calls is a few rows with counts, not a million rows.
 *	- Denials, failures and warnings are the events any role can cause at
 *	  will (a refused call, a call with a bad name).  Together they may
 *	  hold at most half the slots, and one role's at most ROLE_SLOTS; the
 *	  rest is reserved for key management actions.  A session whose event
 *	  finds no room waits for the writer (back-pressure, interruptible, at
 *	  most colcrypt.audit_wait_timeout) instead of pushing an event out.
 *	  A role with ROLE_ACTION_SLOTS events waiting waits likewise before
 *	  each key management action (wait_for_room).
 *	- Only where waiting is impossible (interrupts held, as at commit, or
 *	  inside a critical section) is an event that finds no room lost; a
 *	  key management event first pushes out a waiting denial.  Every loss
 *	  is counted per database and written to the audit log itself by the
 *	  writer as an "events_lost" row, so the count is durable.
 *	- The writer inserts each event in a subtransaction of its own: an event
 *	  the table refuses is recorded in a plain form instead, and never
 *	  holds up the ones after it.
 *	- Writers are dynamic background workers; when none can be started (an
 *	  unprivileged parallel query may hold every free slot) a static worker
 *	  registered at start-up, whose slot nobody else can take, serves the
 *	  database instead, shredding included.
 *
 * Locking protocol: lock (one LWLock) guards every slot's state and
 * contents, the next sequence number, the loss counters and the worker
 * table.  Producers take it exclusively to claim, fill or merge into a
 * slot; a writer takes it to copy its database's ready slots out (marking
 * them TAKEN), and again to free them after its insert committed.  Merging
 * only joins READY slots, never TAKEN ones.  The global drop counter is an
 * atomic.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "colcrypt/audit.h"
#include "colcrypt/catalog.h"
#include "colcrypt/lifecycle.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#define AUDIT_SLOTS			1024
#define AUDIT_WRITERS		8	/* databases with a writer at once */
/*
 * A writer leaves after this long without work: while it is connected,
 * DROP DATABASE and CREATE DATABASE ... TEMPLATE of its database would wait
 * (they wait up to 5 s for other sessions to leave).
 */
#define WRITER_IDLE_MS		1000
#define DETAIL_LEN			400
#define WRITER_MAX_FAILURES	8
#define LOW_SLOTS			(AUDIT_SLOTS / 2)	/* all denials together */
#define ROLE_SLOTS			(AUDIT_SLOTS / 16)	/* one role's denials */
#define MERGE_AFTER			8	/* a role's waiting denials before merging */
#define ROLE_ACTION_SLOTS	(AUDIT_SLOTS / 4)	/* one role's waiting events, before
												 * its key management waits */
#define LOSS_DBS			16	/* databases whose losses are counted apart */

typedef enum SlotState
{
	SLOT_FREE = 0,
	SLOT_READY,					/* filled, waiting for its writer */
	SLOT_TAKEN					/* copied out by a writer, insert in progress */
} SlotState;

typedef struct AuditSlot
{
	SlotState	state;
	uint64		seq;			/* position in the stream of events */
	Oid			dboid;			/* database whose audit_event gets it */
	TimestampTz at;
	int			pid;
	char		role[NAMEDATALEN];
	char		session_role[NAMEDATALEN];
	char		action[24];
	char		object_type[16];
	char		object_name[NAMEDATALEN];
	int32		version;
	char		outcome[16];
	char		detail[DETAIL_LEN];
	bool		low;			/* a denial: capacity limited, see above */
	int64		count;			/* occurrences merged into this slot */
	TimestampTz last_at;		/* the last of them */
} AuditSlot;

typedef struct LossCount
{
	Oid			dboid;
	uint64		n;
} LossCount;

typedef struct WriterEntry
{
	Oid			dboid;			/* InvalidOid: free entry */
	int			pid;			/* 0 while starting */
	Latch	   *latch;			/* to wake it */
	TimestampTz started;		/* when it was requested */
	bool		shred_requested;	/* run ColcryptShredPending() */
	uint64		lost_taken;		/* loss count taken, not yet written */
} WriterEntry;

typedef struct AuditShared
{
	LWLock	   *lock;
	ConditionVariable written;	/* broadcast after each batch is inserted */
	uint64		next_seq;		/* sequence number of the next event */
	pg_atomic_uint64 dropped;	/* events lost since start, all databases */
	pg_atomic_uint64 merged;	/* events merged into a waiting one */
	LossCount	losses[LOSS_DBS];	/* lost and not yet logged, per database */
	Latch	   *static_latch;	/* the static writer, while it waits */
	Oid			static_shred_dbs[AUDIT_WRITERS];	/* shredding wanted, no writer
													 * could start */
	Oid			static_trying;	/* the database the static writer connects to,
								 * until it is in */
	WriterEntry writers[AUDIT_WRITERS];
	uint64		written_seq[AUDIT_WRITERS]; /* highest seq written per writer db */
	AuditSlot	slots[AUDIT_SLOTS];
} AuditShared;

static AuditShared *audit = NULL;

int			colcrypt_audit_wait_timeout = 10000;

/* ----------------------------------------------------------------------
 * Shared memory
 * ----------------------------------------------------------------------
 */

void
ColcryptAuditShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(AuditShared)));
	RequestNamedLWLockTranche("colcrypt_audit", 1);
}

void
ColcryptAuditShmemStartup(void)
{
	bool		found;

	audit = ShmemInitStruct("colcrypt audit queue", sizeof(AuditShared), &found);
	if (!found)
	{
		memset(audit, 0, sizeof(AuditShared));
		audit->lock = &(GetNamedLWLockTranche("colcrypt_audit"))->lock;
		ConditionVariableInit(&audit->written);
		pg_atomic_init_u64(&audit->dropped, 0);
		pg_atomic_init_u64(&audit->merged, 0);
		audit->next_seq = 1;
	}
}

/* ----------------------------------------------------------------------
 * Producing events
 * ----------------------------------------------------------------------
 */

static bool
mode_table(void)
{
	return colcrypt_audit == COLCRYPT_AUDIT_TABLE || colcrypt_audit == COLCRYPT_AUDIT_ALL;
}

static bool
mode_log(void)
{
	return colcrypt_audit == COLCRYPT_AUDIT_LOG || colcrypt_audit == COLCRYPT_AUDIT_ALL;
}

static void start_writer(Oid dboid, bool shred);
static void kick_writer(Oid dboid, bool shred);

/* The writer entry for a database, or NULL; caller holds the lock. */
static WriterEntry *
writer_for(Oid dboid)
{
	for (int i = 0; i < AUDIT_WRITERS; i++)
		if (audit->writers[i].dboid == dboid)
			return &audit->writers[i];
	return NULL;
}

/*
 * Add to a database's count of lost events not yet logged (caller holds
 * the lock).  With more databases losing events at once than entries, only
 * the total counts them.
 */
static void
add_losses(Oid dboid, uint64 n)
{
	if (n == 0)
		return;
	for (int i = 0; i < LOSS_DBS; i++)
		if (audit->losses[i].dboid == dboid || audit->losses[i].n == 0)
		{
			audit->losses[i].dboid = dboid;
			audit->losses[i].n += n;
			return;
		}
}

/* Count lost events of a database (caller holds the lock). */
static void
note_loss(Oid dboid, int64 n)
{
	pg_atomic_fetch_add_u64(&audit->dropped, n);
	add_losses(dboid, (uint64) n);
}

static bool
same_event(const AuditSlot *a, const AuditSlot *b)
{
	return a->dboid == b->dboid && a->version == b->version &&
		strcmp(a->role, b->role) == 0 && strcmp(a->session_role, b->session_role) == 0 &&
		strcmp(a->action, b->action) == 0 && strcmp(a->object_type, b->object_type) == 0 &&
		strcmp(a->object_name, b->object_name) == 0 && strcmp(a->outcome, b->outcome) == 0 &&
		strcmp(a->detail, b->detail) == 0;
}

/*
 * Put an event on the queue: merged into an identical waiting one, or in a
 * free slot within its class's share; a denial that finds no room waits for
 * the writer where it can (see the header).
 */
/* Whether this backend may wait for room in the queue now. */
static bool
may_wait(void)
{
	return colcrypt_audit_wait_timeout > 0 && InterruptHoldoffCount == 0 &&
		CritSectionCount == 0 && MyBackendType == B_BACKEND && IsTransactionState();
}

static void
enqueue(const AuditSlot *ev)
{
	bool		low = ev->low;
	bool		can_wait = low && may_wait();
	bool		slept = false;
	TimestampTz start = GetCurrentTimestamp();

	for (;;)
	{
		AuditSlot  *slot = NULL;
		AuditSlot  *victim = NULL;
		AuditSlot  *same = NULL;
		int			nused = 0;
		int			nlow = 0;
		int			nrole = 0;
		bool		done = true;

		LWLockAcquire(audit->lock, LW_EXCLUSIVE);
		for (int i = 0; i < AUDIT_SLOTS; i++)
		{
			AuditSlot  *s = &audit->slots[i];

			if (s->state == SLOT_FREE)
			{
				if (slot == NULL)
					slot = s;
				continue;
			}
			nused++;
			if (low && s->state == SLOT_READY && same == NULL && same_event(s, ev))
				same = s;
			if (s->low)
			{
				nlow++;
				if (strcmp(s->role, ev->role) == 0)
					nrole++;
				if (s->state == SLOT_READY && (victim == NULL || s->seq < victim->seq))
					victim = s;
			}
		}
		if (same != NULL && (nrole >= MERGE_AFTER || nused >= AUDIT_SLOTS / 4))
		{
			/* Under pressure: one row with a count. */
			same->count += ev->count;
			same->last_at = ev->at;
			pg_atomic_fetch_add_u64(&audit->merged, ev->count);
			LWLockRelease(audit->lock);
			break;
		}
		if (low && (nlow >= LOW_SLOTS || nrole >= ROLE_SLOTS))
			slot = NULL;		/* its class is at its share */
		else if (slot == NULL && !low && victim != NULL)
		{
			/* Key management before a denial: push the oldest one out. */
			note_loss(victim->dboid, victim->count);
			slot = victim;
		}
		if (slot != NULL)
		{
			*slot = *ev;
			slot->seq = audit->next_seq++;
			slot->state = SLOT_READY;
		}
		else if (!can_wait ||
				 TimestampDifferenceExceeds(start, GetCurrentTimestamp(), colcrypt_audit_wait_timeout))
			note_loss(ev->dboid, ev->count);	/* counted, and logged as lost */
		else
			done = false;
		LWLockRelease(audit->lock);
		if (done)
			break;

		/*
		 * Back-pressure: wait for the writer to make room.  A cancel or a
		 * timeout ending the wait counts the event as lost first: nobody
		 * escapes the record by cancelling.
		 */
		kick_writer(ev->dboid, false);
		slept = true;
		PG_TRY();
		{
			(void) ConditionVariableTimedSleep(&audit->written, 100, PG_WAIT_EXTENSION);
			CHECK_FOR_INTERRUPTS();
		}
		PG_CATCH();
		{
			LWLockAcquire(audit->lock, LW_EXCLUSIVE);
			note_loss(ev->dboid, ev->count);
			LWLockRelease(audit->lock);
			ConditionVariableCancelSleep();
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	if (slept)
		ConditionVariableCancelSleep();
	kick_writer(ev->dboid, false);
}

/*
 * Wake the writer of a database, starting one if it has none; with shred,
 * ask it to run ColcryptShredPending() too.  Never errors.
 */
static void
kick_writer(Oid dboid, bool shred)
{
	WriterEntry *w;
	Latch	   *wake = NULL;

	LWLockAcquire(audit->lock, LW_EXCLUSIVE);
	w = writer_for(dboid);
	/* A writer that never started, or that died: free its entry. */
	if (w != NULL &&
		((w->pid == 0 && TimestampDifferenceExceeds(w->started, GetCurrentTimestamp(), 10000)) ||
		 (w->pid != 0 && kill(w->pid, 0) != 0)))
	{
		w->dboid = InvalidOid;
		w = NULL;
	}
	if (w != NULL)
	{
		w->shred_requested |= shred;
		wake = w->latch;
	}
	LWLockRelease(audit->lock);

	if (wake != NULL)
		SetLatch(wake);
	else if (w == NULL)
		start_writer(dboid, shred);
}

void
ColcryptRequestShred(Oid dboid)
{
	if (audit == NULL || !OidIsValid(dboid) || RecoveryInProgress())
		return;
	kick_writer(dboid, true);
}

/* strlcpy that does not cut a multibyte character in two. */
static void
copy_clipped(char *dst, const char *src, size_t size)
{
	int			len = pg_mbcliplen(src, strlen(src), size - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

static void
fill_event(AuditSlot *ev, const char *action, const char *object_type,
		   const char *object_name, int32 version, const char *outcome,
		   const char *detail)
{
	const char *role = IsTransactionState() ? GetUserNameFromId(GetUserId(), true) : NULL;
	const char *srole = IsTransactionState() ? GetUserNameFromId(GetSessionUserId(), true) : NULL;

	memset(ev, 0, sizeof(*ev));
	ev->dboid = MyDatabaseId;
	ev->at = GetCurrentTimestamp();
	ev->pid = MyProcPid;
	copy_clipped(ev->role, role ? role : "?", sizeof(ev->role));
	copy_clipped(ev->session_role, srole ? srole : "?", sizeof(ev->session_role));
	copy_clipped(ev->action, action, sizeof(ev->action));
	copy_clipped(ev->object_type, object_type, sizeof(ev->object_type));
	copy_clipped(ev->object_name, object_name ? object_name : "", sizeof(ev->object_name));
	ev->version = version;
	copy_clipped(ev->outcome, outcome, sizeof(ev->outcome));
	copy_clipped(ev->detail, detail ? detail : "", sizeof(ev->detail));
	/* Everything but a key management action is in the shared class. */
	ev->low = true;
	ev->count = 1;
	ev->last_at = ev->at;
}

static bool line_in_progress = false;

/*
 * A field of an audit log line: control characters always escaped (no
 * field can start a line of its own), and within quotes, quotes and
 * backslashes too (a name cannot close its quotes and forge the fields
 * after it).
 */
static char *
log_field(const char *s, bool quoted)
{
	StringInfoData b;

	initStringInfo(&b);
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if (*p < 0x20 || *p == 0x7f)
			appendStringInfo(&b, "\\x%02x", *p);
		else if (quoted && (*p == '"' || *p == '\\'))
		{
			appendStringInfoChar(&b, '\\');
			appendStringInfoChar(&b, (char) *p);
		}
		else
			appendStringInfoChar(&b, (char) *p);
	}
	return b.data;
}

bool
ColcryptAuditLineInProgress(void)
{
	return line_in_progress;
}

/* Record one complete event: log line and/or queue, as configured. */
static void
record(const AuditSlot *ev)
{
	bool		standby = RecoveryInProgress();
	char		version[32] = "";

	if (colcrypt_audit == COLCRYPT_AUDIT_OFF)
		return;
	if (ev->version > 0)
		snprintf(version, sizeof(version), " version %d", ev->version);
	if (mode_log() || (mode_table() && standby))
	{
		line_in_progress = true;
		PG_TRY();
		{
			ereport(LOG,
					(errmsg(COLCRYPT_AUDIT_LOG_PREFIX " %s %s \"%s\"%s by \"%s\": %s%s%s",
							log_field(ev->action, false), log_field(ev->object_type, false),
							log_field(ev->object_name, true), version,
							log_field(ev->role, true), ev->outcome, ev->detail[0] ? ": " : "",
							log_field(ev->detail, false)),
					 errhidestmt(true), errhidecontext(true)));
		}
		PG_FINALLY();
		{
			line_in_progress = false;
		}
		PG_END_TRY();
	}
	if (mode_table() && !standby && audit != NULL && OidIsValid(ev->dboid))
		enqueue(ev);
}

void
ColcryptAuditEvent(const char *action, const char *object_type,
				   const char *object_name, int32 version,
				   const char *outcome, const char *detail)
{
	AuditSlot	ev;

	fill_event(&ev, action, object_type, object_name, version, outcome, detail);
	record(&ev);
}

void
ColcryptAuditProviderFailure(const char *provider, const char *op,
							 const ColcryptProviderError *err)
{
	char	   *detail = psprintf("%s: %s (SQLSTATE %s)%s%s", op, err->message,
								  unpack_sql_state(err->sqlerrcode ? err->sqlerrcode
												   : ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
								  err->detail[0] ? "; " : "", err->detail);

	ColcryptAuditEvent("kms_failure", "provider", provider, 0, "failed", detail);
	pfree(detail);
}

/* Actions of the current transaction, recorded when it ends. */
/* Key management actions of this transaction, with their subtransaction. */
typedef struct PendingAction
{
	SubTransactionId subid;
	AuditSlot	ev;
} PendingAction;

static List *pending = NIL;
static bool xact_callback_registered = false;

/* Record, with `outcome`, the pending actions of subtransactions >= subid. */
static void
settle_pending(const char *outcome, SubTransactionId subid)
{
	List	   *keep = NIL;
	ListCell   *lc;

	foreach(lc, pending)
	{
		PendingAction *pa = lfirst(lc);

		if (pa->subid < subid)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			keep = lappend(keep, pa);
			MemoryContextSwitchTo(old);
			continue;
		}
		strlcpy(pa->ev.outcome, outcome, sizeof(pa->ev.outcome));
		pa->ev.at = pa->ev.last_at = GetCurrentTimestamp();
		record(&pa->ev);
		pfree(pa);
	}
	list_free(pending);
	pending = keep;
}

static void
audit_xact_cb(XactEvent event, void *arg)
{
	if (pending == NIL)
		return;
	if (event == XACT_EVENT_COMMIT)
		settle_pending("ok", InvalidSubTransactionId);
	else if (event == XACT_EVENT_ABORT)
		settle_pending("rolled back", InvalidSubTransactionId);
	else if (event == XACT_EVENT_PREPARE)
		settle_pending("prepared", InvalidSubTransactionId);
}

/*
 * A subtransaction that aborts (ROLLBACK TO SAVEPOINT, an exception block)
 * takes its actions, and those of its children, with it.  Subtransaction
 * ids grow, and any still pending with an id at least the aborting one's
 * belongs to it or to a child.
 */
static void
audit_subxact_cb(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && pending != NIL)
		settle_pending("rolled back", mySubid);
}

/*
 * Back-pressure on key management: a role with ROLE_ACTION_SLOTS events
 * waiting waits here, while it can (its event is queued only at commit,
 * where nobody can wait), for the writer to make room, at most
 * colcrypt.audit_wait_timeout.  So one role's stream of key management
 * cannot fill the queue that others' events need.
 */
static void
wait_for_room(const AuditSlot *ev)
{
	TimestampTz start = GetCurrentTimestamp();
	bool		slept = false;

	if (audit == NULL || !may_wait() || RecoveryInProgress())
		return;
	for (;;)
	{
		int			nrole = 0;

		LWLockAcquire(audit->lock, LW_SHARED);
		for (int i = 0; i < AUDIT_SLOTS; i++)
			if (audit->slots[i].state != SLOT_FREE && strcmp(audit->slots[i].role, ev->role) == 0)
				nrole++;
		LWLockRelease(audit->lock);
		if (nrole < ROLE_ACTION_SLOTS ||
			TimestampDifferenceExceeds(start, GetCurrentTimestamp(), colcrypt_audit_wait_timeout))
			break;
		kick_writer(ev->dboid, false);
		slept = true;
		(void) ConditionVariableTimedSleep(&audit->written, 100, PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
	}
	if (slept)
		ConditionVariableCancelSleep();
}

void
ColcryptAuditAction(const char *action, const char *object_type,
					const char *object_name, int32 version, const char *detail)
{
	PendingAction *pa;
	MemoryContext old;

	if (colcrypt_audit == COLCRYPT_AUDIT_OFF)
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(audit_xact_cb, NULL);
		RegisterSubXactCallback(audit_subxact_cb, NULL);
		xact_callback_registered = true;
	}
	pa = MemoryContextAlloc(TopMemoryContext, sizeof(PendingAction));
	pa->subid = GetCurrentSubTransactionId();
	fill_event(&pa->ev, action, object_type, object_name, version, "", detail);
	pa->ev.low = false;
	wait_for_room(&pa->ev);
	old = MemoryContextSwitchTo(TopMemoryContext);
	pending = lappend(pending, pa);
	MemoryContextSwitchTo(old);
}

char *
ColcryptTextArg(FunctionCallInfo fcinfo, int n, const char *what)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

Datum
ColcryptAudited(FunctionCallInfo fcinfo, const char *action, const char *object_type,
				Datum (*body) (FunctionCallInfo fcinfo))
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *name = NULL;
	Datum		result = (Datum) 0;

	if (PG_NARGS() > 0 && !PG_ARGISNULL(0) &&
		get_fn_expr_argtype(fcinfo->flinfo, 0) == TEXTOID)
		name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	else if (PG_NARGS() > 0 && !PG_ARGISNULL(0) &&
			 get_fn_expr_argtype(fcinfo->flinfo, 0) == REGCLASSOID)
	{
		Oid			relid = PG_GETARG_OID(0);
		char	   *rel = get_rel_name(relid);

		if (rel != NULL)
			name = psprintf("%s.%s", get_namespace_name(get_rel_namespace(relid)), rel);
		if (name != NULL && PG_NARGS() > 1 && !PG_ARGISNULL(1) &&
			get_fn_expr_argtype(fcinfo->flinfo, 1) == NAMEOID)
			name = psprintf("%s.%s", name, NameStr(*PG_GETARG_NAME(1)));
	}

	/*
	 * The body runs in a subtransaction of its own, so that a failure is
	 * recorded after it is cleaned up: locks and buffers released, the
	 * caller's user id back (an error inside ColcryptCatalogExec happens as
	 * the catalog's owner), the error state cleared (recording may wait for
	 * room in the queue).  Then the same error is raised again.
	 */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		result = body(fcinfo);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ColcryptAuditEvent(action, object_type, name, 0,
						   edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE ? "denied" : "failed",
						   psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode), edata->message));
		ReThrowError(edata);
	}
	PG_END_TRY();
	return result;
}

/* ----------------------------------------------------------------------
 * The writer
 * ----------------------------------------------------------------------
 */

static void
start_writer(Oid dboid, bool shred)
{
	BackgroundWorker bgw;
	WriterEntry *w;

	LWLockAcquire(audit->lock, LW_EXCLUSIVE);
	if ((w = writer_for(dboid)) != NULL)
	{
		/* Another backend started one meanwhile: hand it the request. */
		w->shred_requested |= shred;
		LWLockRelease(audit->lock);
		return;
	}
	w = writer_for(InvalidOid);
	if (w == NULL)
	{
		LWLockRelease(audit->lock);
		return;					/* all writer entries busy: the next event retries */
	}
	w->dboid = dboid;
	w->pid = 0;
	w->latch = NULL;
	w->started = GetCurrentTimestamp();
	w->shred_requested = shred;
	audit->written_seq[w - audit->writers] = 0;
	LWLockRelease(audit->lock);

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "colcrypt", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "colcrypt_audit_writer_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "colcrypt audit writer for database %u", dboid);
	strlcpy(bgw.bgw_type, "colcrypt audit writer", BGW_MAXLEN);
	bgw.bgw_main_arg = ObjectIdGetDatum(dboid);
	bgw.bgw_notify_pid = 0;
	if (!RegisterDynamicBackgroundWorker(&bgw, NULL))
	{
		Latch	   *wake;

		/*
		 * No worker slot (a parallel query may hold them all): free the
		 * entry and hand the database to the static writer, whose slot is
		 * reserved.
		 */
		LWLockAcquire(audit->lock, LW_EXCLUSIVE);
		if (shred || w->shred_requested)
		{
			int			free_i = -1;
			bool		listed = false;

			for (int i = 0; i < AUDIT_WRITERS; i++)
			{
				if (audit->static_shred_dbs[i] == dboid)
					listed = true;
				else if (!OidIsValid(audit->static_shred_dbs[i]) && free_i < 0)
					free_i = i;
			}
			if (!listed && free_i >= 0)
				audit->static_shred_dbs[free_i] = dboid;
			/* (else: a writer's start-up shreds what it finds pending) */
		}
		w->dboid = InvalidOid;
		wake = audit->static_latch;
		LWLockRelease(audit->lock);
		if (wake != NULL)
			SetLatch(wake);
		ereport(DEBUG1,
				(errmsg("colcrypt: no worker slot for an audit writer; the reserved writer serves database %u",
						dboid)));
	}
}

static int
slot_seq_cmp(const void *a, const void *b)
{
	uint64		sa = ((const AuditSlot *) a)->seq;
	uint64		sb = ((const AuditSlot *) b)->seq;

	return (sa > sb) - (sa < sb);
}

/*
 * Insert one event, in a subtransaction of its own; false (the error logged)
 * if the table refused it.
 */
static void
event_values(const AuditSlot *ev, Datum *values)
{
	values[0] = TimestampTzGetDatum(ev->at);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(ev->role));
	values[2] = DirectFunctionCall1(namein, CStringGetDatum(ev->session_role));
	values[3] = CStringGetTextDatum(ev->action);
	values[4] = CStringGetTextDatum(ev->object_type);
	values[5] = CStringGetTextDatum(ev->object_name);
	values[6] = Int32GetDatum(ev->version);
	values[7] = CStringGetTextDatum(ev->outcome);
	values[8] = CStringGetTextDatum(ev->detail);
	values[9] = Int32GetDatum(ev->pid);
	values[10] = Int64GetDatum(Max(ev->count, 1));
	values[11] = TimestampTzGetDatum(ev->last_at ? ev->last_at : ev->at);
}

/*
 * Insert events, in one subtransaction; false if the table refused one (all
 * of them rolled back; the error logged when report).
 */
static bool
insert_some(SPIPlanPtr plan, const AuditSlot *evs, int n, bool report)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	bool		ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		for (int i = 0; i < n; i++)
		{
			Datum		values[12];

			event_values(&evs[i], values);
			if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not insert an audit event");
		}
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		if (report)
			EmitErrorReport();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return ok;
}

static bool
insert_one(SPIPlanPtr plan, const AuditSlot *ev)
{
	return insert_some(plan, ev, 1, true);
}

/*
 * Insert a batch of events in the order they happened (audit_event.id
 * follows it), and a row for the events of this database lost since the
 * last batch, in the current transaction; false if this database has no
 * colcrypt to take them.  An event the table refuses (a constraint, an
 * outcome it does not know) is recorded in a plain form instead; one that
 * cannot be recorded at all is counted as lost.  None stops the others.
 */
static bool
insert_events(AuditSlot *evs, int n, uint64 lost)
{
	static const char sql[] =
		"INSERT INTO colcrypt.audit_event (at, role_name, session_role, action, object_type,"
		" object_name, key_version, success, outcome, detail, backend_pid, occurrences, last_at)"
		" VALUES ($1, $2, $3, $4, $5, nullif($6, ''), nullif($7, 0), $8 = 'ok', $8, nullif($9, ''), $10,"
		"         $11, CASE WHEN $11 > 1 THEN $12 END)";
	Oid			types[12] = {TIMESTAMPTZOID, NAMEOID, NAMEOID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID, TEXTOID, TEXTOID, INT4OID, INT8OID, TIMESTAMPTZOID};
	SPIPlanPtr	plan;
	uint64		unrecorded = 0;

	if (!OidIsValid(get_relname_relid("audit_event", get_namespace_oid(COLCRYPT_SCHEMA, true))))
		return false;
	qsort(evs, n, sizeof(AuditSlot), slot_seq_cmp);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(sql, 12, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare the audit insert: %s", SPI_result_code_string(SPI_result));
	/* All at once; one by one only when the table refused something. */
	if (n > 0 && !insert_some(plan, evs, n, false))
		ereport(LOG,
				(errmsg("colcrypt: the audit table refused a batch of %d events; inserting them one by one", n)));
	else
		n = 0;					/* all in */
	for (int i = 0; i < n; i++)
	{
		AuditSlot	plain;

		if (insert_one(plan, &evs[i]))
			continue;
		plain = evs[i];
		strlcpy(plain.outcome, "warning", sizeof(plain.outcome));
		snprintf(plain.detail, sizeof(plain.detail),
				 "this event (outcome \"%.15s\") could not be recorded as it was; see the server log",
				 evs[i].outcome);
		if (!insert_one(plan, &plain))
			unrecorded += Max(evs[i].count, 1);
	}
	lost += unrecorded;
	if (lost > 0)
	{
		AuditSlot	ev;

		memset(&ev, 0, sizeof(ev));
		ev.at = ev.last_at = GetCurrentTimestamp();
		ev.pid = MyProcPid;
		strlcpy(ev.role, "?", sizeof(ev.role));
		strlcpy(ev.session_role, "?", sizeof(ev.session_role));
		strlcpy(ev.action, "events_lost", sizeof(ev.action));
		strlcpy(ev.object_type, "audit", sizeof(ev.object_type));
		strlcpy(ev.outcome, "warning", sizeof(ev.outcome));
		snprintf(ev.detail, sizeof(ev.detail),
				 UINT64_FORMAT " audit events of this database were lost: the queue was full where the session could not wait, or the table refused them",
				 lost);
		ev.count = (int64) lost;	/* occurrences: how many were lost */
		if (!insert_one(plan, &ev))
			elog(ERROR, "could not record " UINT64_FORMAT " lost audit events", lost);
	}
	SPI_finish();
	return true;
}

/* Take the count of this database's lost events (caller holds the lock). */
static uint64
take_losses(Oid dboid)
{
	uint64		n = 0;

	for (int i = 0; i < LOSS_DBS; i++)
		if (audit->losses[i].dboid == dboid && audit->losses[i].n > 0)
		{
			n += audit->losses[i].n;
			audit->losses[i].n = 0;
			audit->losses[i].dboid = InvalidOid;
		}
	return n;
}

/*
 * Run one unit of the writer's work in a transaction of its own; an error
 * is logged and the transaction rolled back, and false returned, so that
 * the worker lives on and retries.
 */
typedef struct WriterWork
{
	AuditSlot  *batch;
	int			n;
	uint64		lost;			/* events lost, to be logged as such */
	bool		installed;		/* out: colcrypt is installed here */
	bool		shred;
} WriterWork;

static bool
run_work(WriterWork *work)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		ok = true;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (work->shred)
			(void) ColcryptShredPending();
		else
			work->installed = insert_events(work->batch, work->n, work->lost);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Give a writer's taken slots back to the queue (seq <= maxseq). */
static void
return_taken(Oid dboid, uint64 maxseq)
{
	for (int i = 0; i < AUDIT_SLOTS; i++)
	{
		AuditSlot  *s = &audit->slots[i];

		if (s->state == SLOT_TAKEN && s->dboid == dboid && s->seq <= maxseq)
			s->state = SLOT_READY;
	}
}

/*
 * On any exit, give the writer entry back if it is still ours, and the
 * events it had taken but not written.
 */
static void
writer_exit(int code, Datum arg)
{
	WriterEntry *w = &audit->writers[DatumGetInt32(arg)];

	LWLockAcquire(audit->lock, LW_EXCLUSIVE);
	if (w->pid == MyProcPid)
	{
		return_taken(w->dboid, PG_UINT64_MAX);
		add_losses(w->dboid, w->lost_taken);
		w->lost_taken = 0;
		w->dboid = InvalidOid;
		w->pid = 0;
		w->latch = NULL;
	}
	LWLockRelease(audit->lock);
}

/*
 * Connect to a database and serve it as its writer until idle: insert its
 * events, log its losses, run its shredding.  Leaves the process with
 * idle_exit_code.
 */
static void
writer_loop(Oid dboid, int idle_exit_code)
{
	WriterEntry *w;
	int			wi;
	AuditSlot  *batch;
	TimestampTz last_work = GetCurrentTimestamp();
	long		retry_ms = 0;
	int			failures = 0;
	bool		first = true;	/* shred what a crash or a lost request left */

	/* A database its owner closed to connections still gets its events. */
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, BGWORKER_BYPASS_ALLOWCONN);
	if (idle_exit_code != 0)
	{
		/* The static writer got in (see colcrypt_audit_static_main). */
		LWLockAcquire(audit->lock, LW_EXCLUSIVE);
		audit->static_trying = InvalidOid;
		LWLockRelease(audit->lock);
	}
	batch = MemoryContextAlloc(TopMemoryContext, sizeof(AuditSlot) * AUDIT_SLOTS);
	/* Settings of the database or the cluster must not stop it writing. */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("session_replication_role", "origin", PGC_SUSET, PGC_S_OVERRIDE);

	LWLockAcquire(audit->lock, LW_EXCLUSIVE);
	w = writer_for(dboid);
	if (w == NULL || (w->pid != 0 && w->pid != MyProcPid))
	{
		LWLockRelease(audit->lock);
		proc_exit(idle_exit_code);
	}
	w->pid = MyProcPid;
	w->latch = MyLatch;
	wi = w - audit->writers;
	LWLockRelease(audit->lock);
	before_shmem_exit(writer_exit, Int32GetDatum(wi));

	for (;;)
	{
		WriterWork	work = {batch, 0, 0, true, false};
		uint64		maxseq = 0;
		bool		failed = false;

		CHECK_FOR_INTERRUPTS();
		ResetLatch(MyLatch);

		LWLockAcquire(audit->lock, LW_EXCLUSIVE);
		for (int i = 0; i < AUDIT_SLOTS; i++)
		{
			AuditSlot  *s = &audit->slots[i];

			if (s->state == SLOT_READY && s->dboid == dboid)
			{
				batch[work.n++] = *s;
				s->state = SLOT_TAKEN;
				maxseq = Max(maxseq, s->seq);
			}
		}
		work.lost = take_losses(dboid);
		w->lost_taken = work.lost;
		work.shred = w->shred_requested || first;
		w->shred_requested = false;
		for (int i = 0; i < AUDIT_WRITERS; i++)
			if (audit->static_shred_dbs[i] == dboid)
			{
				work.shred = true;
				audit->static_shred_dbs[i] = InvalidOid;
			}
		first = false;
		if (work.n == 0 && work.lost == 0 && !work.shred &&
			TimestampDifferenceExceeds(last_work, GetCurrentTimestamp(), WRITER_IDLE_MS))
		{
			/* Idle long enough: leave; the next event starts a new writer. */
			w->dboid = InvalidOid;
			w->pid = 0;
			w->latch = NULL;
			LWLockRelease(audit->lock);
			proc_exit(idle_exit_code);
		}
		LWLockRelease(audit->lock);

		if (work.n > 0 || work.lost > 0)
		{
			bool		shred = work.shred;

			work.shred = false;
			if (run_work(&work))
			{
				if (!work.installed)
					ereport(LOG,
							(errmsg("colcrypt: %d audit events (and " UINT64_FORMAT " lost ones) for database %u discarded: colcrypt is not installed there",
									work.n, work.lost, dboid)));
				LWLockAcquire(audit->lock, LW_EXCLUSIVE);
				w->lost_taken = 0;
				for (int i = 0; i < AUDIT_SLOTS; i++)
				{
					AuditSlot  *s = &audit->slots[i];

					if (s->state == SLOT_TAKEN && s->dboid == dboid && s->seq <= maxseq)
						s->state = SLOT_FREE;
				}
				audit->written_seq[wi] = Max(audit->written_seq[wi], maxseq);
				LWLockRelease(audit->lock);
				ConditionVariableBroadcast(&audit->written);
			}
			else
			{
				/* Back into the queue, to be tried again. */
				LWLockAcquire(audit->lock, LW_EXCLUSIVE);
				return_taken(dboid, maxseq);
				add_losses(dboid, work.lost);
				w->lost_taken = 0;
				LWLockRelease(audit->lock);
				failed = true;
			}
			work.shred = shred;
		}
		if (work.shred)
		{
			if (run_work(&work))
				ConditionVariableBroadcast(&audit->written);
			else
			{
				LWLockAcquire(audit->lock, LW_EXCLUSIVE);
				w->shred_requested = true;	/* tried again */
				LWLockRelease(audit->lock);
				failed = true;
			}
		}
		if (failed)
		{
			/*
			 * Retry after a pause that grows to 10 s; after that many
			 * failures in a row leave (the work stays queued, and the next
			 * event starts a new writer), so as not to hold the database.
			 */
			if (++failures >= WRITER_MAX_FAILURES)
				proc_exit(1);
			retry_ms = Min(Max(retry_ms * 2, 100), 10000);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 retry_ms, PG_WAIT_EXTENSION);
			last_work = GetCurrentTimestamp();
			continue;
		}
		retry_ms = 0;
		failures = 0;
		if (work.n > 0 || work.lost > 0 || work.shred)
		{
			last_work = GetCurrentTimestamp();
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
	}
}

PGDLLEXPORT void colcrypt_audit_writer_main(Datum arg);

/* A dynamic writer, started for one database. */
void
colcrypt_audit_writer_main(Datum arg)
{
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	writer_loop(DatumGetObjectId(arg), 0);
}

static void
static_writer_exit(int code, Datum arg)
{
	LWLockAcquire(audit->lock, LW_EXCLUSIVE);
	if (audit->static_latch == MyLatch)
		audit->static_latch = NULL;
	LWLockRelease(audit->lock);
}

/*
 * A database whose events or shredding wait with no writer to serve them
 * (none could be started); claims a writer entry for it.  Caller holds the
 * lock exclusively.
 */
static Oid
unserved_database(void)
{
	Oid			dboid = InvalidOid;
	WriterEntry *w;

	for (int i = 0; i < AUDIT_SLOTS && !OidIsValid(dboid); i++)
		if (audit->slots[i].state == SLOT_READY && writer_for(audit->slots[i].dboid) == NULL)
			dboid = audit->slots[i].dboid;
	for (int i = 0; i < LOSS_DBS && !OidIsValid(dboid); i++)
		if (audit->losses[i].n > 0 && writer_for(audit->losses[i].dboid) == NULL)
			dboid = audit->losses[i].dboid;
	for (int i = 0; i < AUDIT_WRITERS && !OidIsValid(dboid); i++)
		if (OidIsValid(audit->static_shred_dbs[i]) && writer_for(audit->static_shred_dbs[i]) == NULL)
			dboid = audit->static_shred_dbs[i];
	if (!OidIsValid(dboid) || (w = writer_for(InvalidOid)) == NULL)
		return InvalidOid;
	w->dboid = dboid;
	w->pid = MyProcPid;
	w->latch = MyLatch;
	w->started = GetCurrentTimestamp();
	w->shred_requested = false;
	audit->written_seq[w - audit->writers] = 0;
	return dboid;
}

PGDLLEXPORT void colcrypt_audit_static_main(Datum arg);

/*
 * The static writer: registered at start-up, so its worker slot is its own.
 * It waits, connected to no database, until a database has events or
 * shredding that no writer serves (no dynamic worker could be started);
 * then it serves that database until idle and exits, to be restarted by
 * the postmaster, ready for the next.
 */
void
colcrypt_audit_static_main(Datum arg)
{
	Oid			dboid = InvalidOid;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	LWLockAcquire(audit->lock, LW_EXCLUSIVE);
	audit->static_latch = MyLatch;

	/*
	 * The last incarnation could not connect to the database it went for
	 * (with BGWORKER_BYPASS_ALLOWCONN that means the database was dropped):
	 * its waiting events have nowhere to go.  Let them go, loudly, so that
	 * they hold no slots and no writer tries again.
	 */
	if (OidIsValid(audit->static_trying))
	{
		Oid			gone = audit->static_trying;
		int			n = 0;
		uint64		lost;

		audit->static_trying = InvalidOid;
		for (int i = 0; i < AUDIT_SLOTS; i++)
			if (audit->slots[i].state != SLOT_FREE && audit->slots[i].dboid == gone)
			{
				audit->slots[i].state = SLOT_FREE;
				n++;
			}
		lost = take_losses(gone);
		for (int i = 0; i < AUDIT_WRITERS; i++)
			if (audit->static_shred_dbs[i] == gone)
				audit->static_shred_dbs[i] = InvalidOid;
		LWLockRelease(audit->lock);
		ereport(LOG,
				(errmsg("colcrypt: %d audit events (and " UINT64_FORMAT " lost ones) of database %u discarded: the writer could not connect to it",
						n, lost, gone)));
		ConditionVariableBroadcast(&audit->written);
	}
	else
		LWLockRelease(audit->lock);
	before_shmem_exit(static_writer_exit, (Datum) 0);

	while (!OidIsValid(dboid))
	{
		CHECK_FOR_INTERRUPTS();
		ResetLatch(MyLatch);
		LWLockAcquire(audit->lock, LW_EXCLUSIVE);
		/* A dynamic writer that never started, or died, frees its entry. */
		for (int i = 0; i < AUDIT_WRITERS; i++)
		{
			WriterEntry *w = &audit->writers[i];

			if (OidIsValid(w->dboid) &&
				((w->pid == 0 && TimestampDifferenceExceeds(w->started, GetCurrentTimestamp(), 10000)) ||
				 (w->pid != 0 && kill(w->pid, 0) != 0)))
				w->dboid = InvalidOid;
		}
		dboid = unserved_database();
		if (OidIsValid(dboid))
		{
			audit->static_latch = NULL;
			audit->static_trying = dboid;	/* cleared once connected */
		}
		LWLockRelease(audit->lock);
		if (!OidIsValid(dboid))
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000L, PG_WAIT_EXTENSION);
	}
	/* Exit 1 when done: a static worker that exits 0 is not restarted. */
	writer_loop(dboid, 1);
}

void
ColcryptAuditInit(void)
{
	BackgroundWorker bgw;

	/* Shared memory is requested with the key cache's; the static writer here. */
	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 1;
	strlcpy(bgw.bgw_library_name, "colcrypt", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "colcrypt_audit_static_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "colcrypt audit writer (reserved)", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "colcrypt audit writer", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/* ----------------------------------------------------------------------
 * SQL
 * ----------------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(colcrypt_audit_flush);

/*
 * Wait until every event of this database queued so far is in
 * colcrypt.audit_event (for tests and tools).  Returns false on timeout;
 * true at once on a standby, which queues and shreds nothing.
 */
Datum
colcrypt_audit_flush(PG_FUNCTION_ARGS)
{
	int32		timeout_ms = PG_NARGS() > 0 && !PG_ARGISNULL(0) ? PG_GETARG_INT32(0) : 10000;
	uint64		target = 0;
	TimestampTz start = GetCurrentTimestamp();
	bool		done = false;

	bool		shred_pending;

	ColcryptRequirePreload();

	/*
	 * A standby queues no events (record() logs them) and shreds nothing:
	 * the primary's shredding reaches it through WAL.  Waiting would end
	 * only at the timeout, and a writer registered meanwhile would hold a
	 * worker slot until promotion.
	 */
	if (RecoveryInProgress())
		PG_RETURN_BOOL(true);
	shred_pending = ColcryptShredIsPending();
	if (shred_pending)
		ColcryptRequestShred(MyDatabaseId);
	LWLockAcquire(audit->lock, LW_SHARED);
	for (int i = 0; i < AUDIT_SLOTS; i++)
		if (audit->slots[i].state != SLOT_FREE && audit->slots[i].dboid == MyDatabaseId)
			target = Max(target, audit->slots[i].seq);
	LWLockRelease(audit->lock);
	if (target == 0 && !shred_pending)
		PG_RETURN_BOOL(true);

	ConditionVariablePrepareToSleep(&audit->written);
	while (!done)
	{
		WriterEntry *w;
		bool		pending_left = false;

		LWLockAcquire(audit->lock, LW_SHARED);
		for (int i = 0; i < AUDIT_SLOTS; i++)
			if (audit->slots[i].state != SLOT_FREE && audit->slots[i].dboid == MyDatabaseId &&
				audit->slots[i].seq <= target)
				pending_left = true;
		w = writer_for(MyDatabaseId);
		LWLockRelease(audit->lock);
		/* Shredding is done when the catalog says so. */
		if (shred_pending && !pending_left)
			pending_left = shred_pending = ColcryptShredIsPending();
		if (!pending_left)
			done = true;
		else if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), timeout_ms))
			break;
		else
		{
			if (w == NULL)
				start_writer(MyDatabaseId, shred_pending);
			(void) ConditionVariableTimedSleep(&audit->written, 100, PG_WAIT_EXTENSION);
		}
	}
	ConditionVariableCancelSleep();
	PG_RETURN_BOOL(done);
}

PG_FUNCTION_INFO_V1(colcrypt_audit_queue_stats);

/* Events waiting in the queue and events dropped because it was full. */
Datum
colcrypt_audit_queue_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {0};
	int			waiting = 0;
	int			writers = 0;

	ColcryptRequirePreload();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	LWLockAcquire(audit->lock, LW_SHARED);
	for (int i = 0; i < AUDIT_SLOTS; i++)
		if (audit->slots[i].state != SLOT_FREE)
			waiting++;
	for (int i = 0; i < AUDIT_WRITERS; i++)
		if (OidIsValid(audit->writers[i].dboid))
			writers++;
	LWLockRelease(audit->lock);
	values[0] = Int32GetDatum(waiting);
	values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&audit->dropped));
	values[2] = Int32GetDatum(writers);
	values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&audit->merged));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
