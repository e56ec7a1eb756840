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
 * Locking protocol: lock (one LWLock) guards every slot's state and
 * contents, the head and tail positions and the worker table.  Producers
 * take it exclusively to claim and fill a slot; a writer takes it to copy
 * its database's ready slots out (marking them TAKEN), and again to free
 * them after its insert committed.  written_seq and the drop counter are
 * atomics.  When the ring is full the oldest ready event is overwritten and
 * counted as dropped (the log line, if configured, was written already).
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
} AuditSlot;

typedef struct WriterEntry
{
	Oid			dboid;			/* InvalidOid: free entry */
	int			pid;			/* 0 while starting */
	Latch	   *latch;			/* to wake it */
	TimestampTz started;		/* when it was requested */
	bool		shred_requested;	/* run ColcryptShredPending() */
} WriterEntry;

typedef struct AuditShared
{
	LWLock	   *lock;
	ConditionVariable written;	/* broadcast after each batch is inserted */
	uint64		next_seq;		/* sequence number of the next event */
	pg_atomic_uint64 dropped;	/* events overwritten before being written */
	WriterEntry writers[AUDIT_WRITERS];
	uint64		written_seq[AUDIT_WRITERS]; /* highest seq written per writer db */
	AuditSlot	slots[AUDIT_SLOTS];
} AuditShared;

static AuditShared *audit = NULL;

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

static void
enqueue(const AuditSlot *ev)
{
	AuditSlot  *slot = NULL;

	LWLockAcquire(audit->lock, LW_EXCLUSIVE);
	/* A free slot, else the oldest ready one (dropped). */
	for (int i = 0; i < AUDIT_SLOTS && slot == NULL; i++)
		if (audit->slots[i].state == SLOT_FREE)
			slot = &audit->slots[i];
	if (slot == NULL)
	{
		for (int i = 0; i < AUDIT_SLOTS; i++)
			if (audit->slots[i].state == SLOT_READY &&
				(slot == NULL || audit->slots[i].seq < slot->seq))
				slot = &audit->slots[i];
		if (slot != NULL)
			pg_atomic_fetch_add_u64(&audit->dropped, 1);
	}
	if (slot != NULL)
	{
		*slot = *ev;
		slot->seq = audit->next_seq++;
		slot->state = SLOT_READY;
	}
	LWLockRelease(audit->lock);

	if (slot == NULL)
	{
		pg_atomic_fetch_add_u64(&audit->dropped, 1);
		return;
	}
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
		ereport(LOG,
				(errmsg("colcrypt audit: %s %s \"%s\"%s by \"%s\": %s%s%s",
						ev->action, ev->object_type, ev->object_name, version,
						ev->role, ev->outcome, ev->detail[0] ? ": " : "", ev->detail),
				 errhidestmt(true), errhidecontext(true)));
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
		pa->ev.at = GetCurrentTimestamp();
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
	PG_TRY();
	{
		result = body(fcinfo);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		ColcryptAuditEvent(action, object_type, name, 0,
						   edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE ? "denied" : "failed",
						   psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode), edata->message));
		FreeErrorData(edata);
		PG_RE_THROW();
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
		/* No worker slot: free the entry; the next event tries again. */
		LWLockAcquire(audit->lock, LW_EXCLUSIVE);
		w->dboid = InvalidOid;
		LWLockRelease(audit->lock);
		ereport(LOG,
				(errmsg("colcrypt: could not start the audit writer; events wait in the queue"),
				 errhint("Raise max_worker_processes.")));
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
 * Insert a batch of events in the order they happened (audit_event.id
 * follows it), in the current transaction; false if this database has no
 * colcrypt to take them.
 */
static bool
insert_events(AuditSlot *evs, int n)
{
	static const char sql[] =
		"INSERT INTO colcrypt.audit_event (at, role_name, session_role, action, object_type,"
		" object_name, key_version, success, outcome, detail, backend_pid)"
		" VALUES ($1, $2, $3, $4, $5, nullif($6, ''), nullif($7, 0), $8 = 'ok', $8, nullif($9, ''), $10)";
	Oid			types[10] = {TIMESTAMPTZOID, NAMEOID, NAMEOID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID, TEXTOID, TEXTOID, INT4OID};
	SPIPlanPtr	plan;

	if (!OidIsValid(get_relname_relid("audit_event", get_namespace_oid(COLCRYPT_SCHEMA, true))))
		return false;
	qsort(evs, n, sizeof(AuditSlot), slot_seq_cmp);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(sql, 10, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare the audit insert: %s", SPI_result_code_string(SPI_result));
	for (int i = 0; i < n; i++)
	{
		Datum		values[10];

		values[0] = TimestampTzGetDatum(evs[i].at);
		values[1] = DirectFunctionCall1(namein, CStringGetDatum(evs[i].role));
		values[2] = DirectFunctionCall1(namein, CStringGetDatum(evs[i].session_role));
		values[3] = CStringGetTextDatum(evs[i].action);
		values[4] = CStringGetTextDatum(evs[i].object_type);
		values[5] = CStringGetTextDatum(evs[i].object_name);
		values[6] = Int32GetDatum(evs[i].version);
		values[7] = CStringGetTextDatum(evs[i].outcome);
		values[8] = CStringGetTextDatum(evs[i].detail);
		values[9] = Int32GetDatum(evs[i].pid);
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert an audit event");
	}
	SPI_finish();
	return true;
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
			work->installed = insert_events(work->batch, work->n);
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
		w->dboid = InvalidOid;
		w->pid = 0;
		w->latch = NULL;
	}
	LWLockRelease(audit->lock);
}

PGDLLEXPORT void colcrypt_audit_writer_main(Datum arg);

void
colcrypt_audit_writer_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	WriterEntry *w;
	int			wi;
	AuditSlot  *batch = palloc(sizeof(AuditSlot) * AUDIT_SLOTS);
	TimestampTz last_work = GetCurrentTimestamp();
	long		retry_ms = 0;
	int			failures = 0;
	bool		first = true;	/* shred what a crash or a lost request left */

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	/* Settings of the database or the cluster must not stop it writing. */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("session_replication_role", "origin", PGC_SUSET, PGC_S_OVERRIDE);

	LWLockAcquire(audit->lock, LW_EXCLUSIVE);
	w = writer_for(dboid);
	if (w == NULL)
	{
		LWLockRelease(audit->lock);
		proc_exit(0);
	}
	w->pid = MyProcPid;
	w->latch = MyLatch;
	wi = w - audit->writers;
	LWLockRelease(audit->lock);
	before_shmem_exit(writer_exit, Int32GetDatum(wi));

	for (;;)
	{
		WriterWork	work = {batch, 0, true, false};
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
		work.shred = w->shred_requested || first;
		w->shred_requested = false;
		first = false;
		if (work.n == 0 && !work.shred &&
			TimestampDifferenceExceeds(last_work, GetCurrentTimestamp(), WRITER_IDLE_MS))
		{
			/* Idle long enough: leave; the next event starts a new writer. */
			w->dboid = InvalidOid;
			w->pid = 0;
			w->latch = NULL;
			LWLockRelease(audit->lock);
			proc_exit(0);
		}
		LWLockRelease(audit->lock);

		if (work.n > 0)
		{
			bool		shred = work.shred;

			work.shred = false;
			if (run_work(&work))
			{
				if (!work.installed)
					ereport(LOG,
							(errmsg("colcrypt: %d audit events for database %u discarded: colcrypt is not installed there",
									work.n, dboid)));
				LWLockAcquire(audit->lock, LW_EXCLUSIVE);
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
		if (work.n > 0 || work.shred)
		{
			last_work = GetCurrentTimestamp();
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
	}
}

void
ColcryptAuditInit(void)
{
	/* Nothing at load time: shared memory is requested with the key cache's. */
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
	Datum		values[3];
	bool		nulls[3] = {0};
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
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
