/*-------------------------------------------------------------------------
 *
 * reencrypt.c
 *	  Work on the encrypted values of user tables: counting the values
 *	  under a key version (before a destroy), re-encrypting those not under
 *	  their key's active version (colcrypt.reencrypt), and checking that
 *	  every value opens (colcrypt.verify).
 *
 * Whose code runs.  Counting (stale values, the values of a version
 * before a destroy) and verifying read below the executor: a heap scan
 * under the statement's snapshot deforms each row and walks its encrypted
 * values (in arrays and composites too).  No planner, executor, row level
 * security policy or user function runs, so nothing a table's owner
 * planted runs with the caller's rights, and every row counts whatever the
 * policies say.  Rewriting goes through SPI, which runs what PostgreSQL
 * runs on SELECT ... FOR UPDATE and UPDATE (triggers, CHECK constraints,
 * index expressions, domain checks, policies): that runs as the table's
 * owner, under SECURITY_RESTRICTED_OPERATION, with search_path =
 * pg_catalog, pg_temp and row_security off, in a GUC nest level of its
 * own: as VACUUM, ANALYZE, CLUSTER, REINDEX and REFRESH MATERIALIZED VIEW
 * run user code (CVE-2022-1552).  The cryptography runs here, between the
 * locking and the update, with the caller's key privileges; no user code
 * sees a plaintext.
 *
 * Values that do not open.  A value that fails authentication (forged,
 * altered) or does not parse cannot be re-encrypted.  reencrypt leaves it
 * as it is, goes on with every other value, remembers it (so later passes
 * and counts skip it) and reports each one at the end: table, column, row
 * (ctid) and what is wrong.  colcrypt.verify(table) finds such values
 * before they bite.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "catalog/pg_type.h"
#include "colcrypt/audit.h"
#include "colcrypt/catalog.h"
#include "colcrypt/keys.h"
#include "colcrypt/lifecycle.h"
#include "colcrypt/types.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/wait_event.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "../types/enctype_int.h"

/* ----------------------------------------------------------------------
 * Running user code as the table's owner
 * ----------------------------------------------------------------------
 */

Oid
ColcryptTableOwner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

void
ColcryptBecomeTableOwner(Oid relid, bool replica, ColcryptOwnerContext *ctx)
{
	Oid			owner = ColcryptTableOwner(relid);

	GetUserIdAndSecContext(&ctx->save_userid, &ctx->save_sec_context);
	SetUserIdAndSecContext(owner, ctx->save_sec_context | SECURITY_RESTRICTED_OPERATION);
	ctx->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	/* Every row: a policy that would hide one is an error, not a gap. */
	(void) set_config_option("row_security", "off",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (replica)
		(void) set_config_option("session_replication_role", "replica",
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

void
ColcryptRestoreUser(ColcryptOwnerContext *ctx)
{
	AtEOXact_GUC(false, ctx->save_nestlevel);
	SetUserIdAndSecContext(ctx->save_userid, ctx->save_sec_context);
}

/* The caller must own the table (superusers do). */
static void
require_table_owner(Oid relid, const char *what)
{
	if (get_rel_relkind(relid) == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (!pg_class_ownercheck(relid, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s table %s", what, get_rel_name(relid)),
				 errdetail("Only the table's owner or a superuser may.")));
}

/* ----------------------------------------------------------------------
 * Walking the encrypted values of a datum
 * ----------------------------------------------------------------------
 */

/*
 * Called for each encrypted value (an envelope datum, detoasted); sets
 * *replacement to re-encrypt it.
 */
typedef void (*ValueFn) (void *arg, struct varlena *value, struct varlena **replacement);

/*
 * Walk every encrypted value inside d, of type typid (an encrypted type,
 * or arrays, composites and domains holding one).  Returns d, or the datum
 * rebuilt when fn replaced a value (*changed set).
 */
static Datum
walk_value(Oid typid, Datum d, ValueFn fn, void *arg, bool *changed, int depth)
{
	Oid			base = getBaseType(typid);
	Oid			elem;

	check_stack_depth();
	if (ColcryptIsEncryptedType(base))
	{
		struct varlena *v = PG_DETOAST_DATUM_PACKED(d);
		struct varlena *r = NULL;

		fn(arg, v, &r);
		if (r == NULL)
			return d;
		*changed = true;
		return PointerGetDatum(r);
	}
	if (depth > 32 || !ColcryptTypeHoldsEncrypted(base))
		return d;
	elem = get_element_type(base);
	if (OidIsValid(elem))
	{
		ArrayType  *arr = DatumGetArrayTypeP(d);
		int16		typlen;
		bool		typbyval;
		char		typalign;
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		bool		any = false;

		get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
		deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign, &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				elems[i] = walk_value(ARR_ELEMTYPE(arr), elems[i], fn, arg, &any, depth + 1);
		if (!any)
			return d;
		*changed = true;
		return PointerGetDatum(construct_md_array(elems, nulls, ARR_NDIM(arr), ARR_DIMS(arr),
												  ARR_LBOUND(arr), ARR_ELEMTYPE(arr),
												  typlen, typbyval, typalign));
	}
	if (get_typtype(base) == TYPTYPE_COMPOSITE)
	{
		HeapTupleHeader th = DatumGetHeapTupleHeader(d);
		TupleDesc	td = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(th),
												HeapTupleHeaderGetTypMod(th));
		HeapTupleData tuple;
		Datum	   *values = palloc(sizeof(Datum) * td->natts);
		bool	   *nulls = palloc(sizeof(bool) * td->natts);
		bool		any = false;
		Datum		result = d;

		tuple.t_len = HeapTupleHeaderGetDatumLength(th);
		ItemPointerSetInvalid(&tuple.t_self);
		tuple.t_tableOid = InvalidOid;
		tuple.t_data = th;
		heap_deform_tuple(&tuple, td, values, nulls);
		for (int i = 0; i < td->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(td, i);

			if (!att->attisdropped && !nulls[i])
				values[i] = walk_value(att->atttypid, values[i], fn, arg, &any, depth + 1);
		}
		if (any)
		{
			*changed = true;
			result = HeapTupleGetDatum(heap_form_tuple(td, values, nulls));
		}
		ReleaseTupleDesc(td);
		return result;
	}
	return d;
}

/* The attributes of a relation that can hold encrypted values. */
static List *
encrypted_attributes(Relation rel)
{
	List	   *atts = NIL;
	TupleDesc	td = RelationGetDescr(rel);

	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (!att->attisdropped && ColcryptTypeHoldsEncrypted(att->atttypid))
			atts = lappend_int(atts, att->attnum);
	}
	return atts;
}

/*
 * Called per row of a scan with the slot (all attributes deformed); return
 * false to stop.
 */
typedef bool (*RowFn) (void *arg, Relation rel, List *atts, TupleTableSlot *slot);

/* Scan a table under the active snapshot, below the executor. */
static void
scan_table(Relation rel, RowFn fn, void *arg)
{
	List	   *atts = encrypted_attributes(rel);
	TupleTableSlot *slot;
	TableScanDesc scan;
	Snapshot	snapshot;
	MemoryContext rowcxt,
				old;

	if (atts == NIL)
		return;
	snapshot = RegisterSnapshot(ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot());
	slot = table_slot_create(rel, NULL);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "colcrypt value scan",
								   ALLOCSET_DEFAULT_SIZES);
	scan = table_beginscan(rel, snapshot, 0, NULL);
	for (;;)
	{
		bool		more;

		CHECK_FOR_INTERRUPTS();
		if (!table_scan_getnextslot(scan, ForwardScanDirection, slot))
			break;
		slot_getallattrs(slot);
		old = MemoryContextSwitchTo(rowcxt);
		more = fn(arg, rel, atts, slot);
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
		if (!more)
			break;
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextDelete(rowcxt);
	UnregisterSnapshot(snapshot);
}

/* ----------------------------------------------------------------------
 * Values that did not open in this backend's reencrypt
 * ----------------------------------------------------------------------
 */

typedef struct BadValue
{
	Oid			relid;
	AttrNumber	attnum;
	ItemPointerData tid;
	uint32		key_id;
	uint32		version;
	uint64		hash;			/* of the envelope bytes */
	char		problem[80];
} BadValue;

static List *bad_values = NIL;	/* in TopMemoryContext, for one run */
static Oid	bad_values_rel = InvalidOid;

static uint64
value_hash(struct varlena *v)
{
	return hash_bytes_extended((const unsigned char *) VARDATA_ANY(v),
							   VARSIZE_ANY_EXHDR(v), 0);
}

static bool
known_bad(uint64 h)
{
	ListCell   *lc;

	foreach(lc, bad_values)
		if (((BadValue *) lfirst(lc))->hash == h)
			return true;
	return false;
}

static void
forget_bad_values(Oid relid)
{
	list_free_deep(bad_values);
	bad_values = NIL;
	bad_values_rel = relid;
}

/* ----------------------------------------------------------------------
 * Which values are stale
 * ----------------------------------------------------------------------
 */

/*
 * Whether a value is not under its key's active version but can be moved
 * there: its own version still decrypts (deactivated or compromised), and
 * it was not found unopenable earlier in this run.
 */
static bool
envelope_is_stale(const cc_envelope *env)
{
	ColcryptKeyMeta *meta;
	ColcryptKeyVersionMeta *v;

	if (env->key_id == CC_TRANSIT_KEY_ID)
		return false;
	meta = ColcryptGetKeyMeta(env->key_id, true);
	if (meta == NULL || meta->active_version <= 0 ||
		(int32) env->key_version == meta->active_version)
		return false;
	v = ColcryptFindVersion(meta, (int32) env->key_version);
	return v != NULL && (v->state == COLCRYPT_KEY_DEACTIVATED ||
						 v->state == COLCRYPT_KEY_COMPROMISED);
}

static bool
value_is_stale(struct varlena *v)
{
	cc_envelope env;

	if (cc_envelope_parse((const uint8 *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), &env) != CC_ENV_OK)
		return false;
	return envelope_is_stale(&env) && (bad_values == NIL || !known_bad(value_hash(v)));
}

typedef struct StaleScan
{
	bool		found;			/* in the current row (value) */
	int64		rows;			/* rows with a stale value */
} StaleScan;

static void
stale_value(void *arg, struct varlena *value, struct varlena **replacement)
{
	StaleScan  *s = arg;

	if (!s->found && value_is_stale(value))
		s->found = true;
}

static bool
stale_row(void *arg, Relation rel, List *atts, TupleTableSlot *slot)
{
	StaleScan  *s = arg;
	ListCell   *lc;
	TupleDesc	td = RelationGetDescr(rel);

	s->found = false;
	foreach(lc, atts)
	{
		int			i = lfirst_int(lc) - 1;
		bool		changed = false;

		if (slot->tts_isnull[i])
			continue;
		(void) walk_value(TupleDescAttr(td, i)->atttypid, slot->tts_values[i],
						  stale_value, s, &changed, 0);
		if (s->found)
			break;
	}
	if (s->found)
		s->rows++;
	return true;
}

/* ----------------------------------------------------------------------
 * Progress (colcrypt.reencrypt_progress)
 * ----------------------------------------------------------------------
 */

#define PROGRESS_SLOTS 64

typedef struct ProgressSlot
{
	int			pid;			/* 0: free */
	Oid			dboid;
	Oid			relid;
	char		phase[32];
	int64		total;
	int64		done;
	TimestampTz started;
	TimestampTz updated;
} ProgressSlot;

typedef struct ProgressShared
{
	LWLock	   *lock;
	ProgressSlot slots[PROGRESS_SLOTS];
} ProgressShared;

static ProgressShared *progress = NULL;

void
ColcryptLifecycleShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(ProgressShared)));
	RequestNamedLWLockTranche("colcrypt_progress", 1);
}

void
ColcryptLifecycleShmemStartup(void)
{
	bool		found;

	progress = ShmemInitStruct("colcrypt reencrypt progress", sizeof(ProgressShared), &found);
	if (!found)
	{
		memset(progress, 0, sizeof(ProgressShared));
		progress->lock = &(GetNamedLWLockTranche("colcrypt_progress"))->lock;
	}
}

/* Give this backend's progress row back (it may hold none). */
static void
progress_release(void)
{
	LWLockAcquire(progress->lock, LW_EXCLUSIVE);
	for (int i = 0; i < PROGRESS_SLOTS; i++)
		if (progress->slots[i].pid == MyProcPid)
			progress->slots[i].pid = 0;
	LWLockRelease(progress->lock);
}

/*
 * A reencrypt that fails or is cancelled ends with its transaction's abort
 * (its batches commit one by one, so commits do not end it); a backend
 * that exits takes its row with it.
 */
static void
progress_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		progress_release();
}

static void
progress_exit(int code, Datum arg)
{
	progress_release();
}

/* This backend's progress row; phase NULL ends it. */
static void
progress_set(Oid relid, const char *phase, int64 total, int64 done)
{
	ProgressSlot *mine = NULL;
	static bool callbacks_registered = false;

	ColcryptRequirePreload();
	if (!callbacks_registered)
	{
		RegisterXactCallback(progress_xact_callback, NULL);
		before_shmem_exit(progress_exit, (Datum) 0);
		callbacks_registered = true;
	}
	LWLockAcquire(progress->lock, LW_EXCLUSIVE);
	for (int i = 0; i < PROGRESS_SLOTS && mine == NULL; i++)
		if (progress->slots[i].pid == MyProcPid)
			mine = &progress->slots[i];
	if (phase == NULL)
	{
		if (mine)
			mine->pid = 0;
		LWLockRelease(progress->lock);
		return;
	}
	for (int i = 0; i < PROGRESS_SLOTS && mine == NULL; i++)
		if (progress->slots[i].pid == 0)
		{
			mine = &progress->slots[i];
			mine->started = GetCurrentTimestamp();
		}
	if (mine)
	{
		mine->pid = MyProcPid;
		mine->dboid = MyDatabaseId;
		mine->relid = relid;
		strlcpy(mine->phase, phase, sizeof(mine->phase));
		mine->total = total;
		mine->done = done;
		mine->updated = GetCurrentTimestamp();
	}
	LWLockRelease(progress->lock);
}

PG_FUNCTION_INFO_V1(colcrypt_progress_rows);

/* The rows behind colcrypt.reencrypt_progress (this database's). */
Datum
colcrypt_progress_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	ColcryptRequirePreload();
	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(progress->lock, LW_SHARED);
	for (int i = 0; i < PROGRESS_SLOTS; i++)
	{
		ProgressSlot *s = &progress->slots[i];
		Datum		values[7];
		bool		nulls[7] = {0};

		if (s->pid == 0 || s->dboid != MyDatabaseId)
			continue;
		values[0] = Int32GetDatum(s->pid);
		values[1] = ObjectIdGetDatum(s->relid);
		values[2] = CStringGetTextDatum(s->phase);
		values[3] = Int64GetDatum(s->total);
		values[4] = Int64GetDatum(s->done);
		values[5] = TimestampTzGetDatum(s->started);
		values[6] = TimestampTzGetDatum(s->updated);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(progress->lock);
	return (Datum) 0;
}

/* ----------------------------------------------------------------------
 * reencrypt: counting, batches, report
 * ----------------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(colcrypt_reencrypt_count);

/*
 * _reencrypt_count(tbl, start): rows of tbl (only) holding a stale value,
 * NULL if it has no column that can hold encrypted values.  start begins
 * a run: the values found unopenable are forgotten, and the progress row
 * says "counting".
 */
Datum
colcrypt_reencrypt_count(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	bool		start = PG_GETARG_BOOL(1);
	Relation	rel;
	StaleScan	s = {0};
	List	   *atts;

	ColcryptRequirePreload();
	require_table_owner(relid, "re-encrypt");
	if (start || bad_values_rel != relid)
		forget_bad_values(relid);
	rel = table_open(relid, AccessShareLock);
	atts = encrypted_attributes(rel);
	if (atts == NIL)
	{
		table_close(rel, AccessShareLock);
		PG_RETURN_NULL();
	}
	if (start)
		progress_set(relid, "counting", 0, 0);
	scan_table(rel, stale_row, &s);
	table_close(rel, AccessShareLock);
	PG_RETURN_INT64(s.rows);
}

typedef struct Rewrite
{
	Oid			relid;
	AttrNumber	attnum;
	ItemPointerData tid;
} Rewrite;

static void
note_bad(Rewrite *rw, struct varlena *value, const cc_envelope *env, const char *problem)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	BadValue   *b = palloc0(sizeof(BadValue));

	b->relid = rw->relid;
	b->attnum = rw->attnum;
	ItemPointerCopy(&rw->tid, &b->tid);
	b->key_id = env ? env->key_id : 0;
	b->version = env ? env->key_version : 0;
	b->hash = value_hash(value);
	strlcpy(b->problem, problem, sizeof(b->problem));
	bad_values = lappend(bad_values, b);
	MemoryContextSwitchTo(old);
}

/* The value under its key's active version, same kind; unchanged if fresh. */
static void
reencrypt_value(void *arg, struct varlena *value, struct varlena **replacement)
{
	Rewrite    *rw = arg;
	cc_envelope env;
	uint8	   *pt;
	size_t		len;
	cc_status	status;
	const char *why;

	if (!value_is_stale(value))
		return;
	(void) cc_envelope_parse((const uint8 *) VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value), &env);
	if ((why = misfit(desc_of(env.type), &env)) != NULL)
	{
		note_bad(rw, value, &env, "does not hold a value of its type");
		return;
	}
	pt = try_open_envelope(&env, &len, &status);
	if (pt == NULL)
	{
		note_bad(rw, value, &env, status == CC_ERR_AUTH ?
				 "failed authentication (altered or forged)" : cc_status_string(status));
		return;
	}
	*replacement = seal_with(desc_of(env.type), ColcryptDekForEncrypt(env.key_id),
							 env.alg == CC_ALG_AES256_SIV, (env.flags & CC_ENV_FLAG_PADDED) != 0,
							 pt, len);
	cc_wipe(pt, len);
	pfree(pt);
}

/*
 * The rows a batch computed, while its update runs: (ctid, new value of
 * each encrypted column).  Served by _reencrypt_rows to that update only.
 */
static struct
{
	bool		active;
	Oid			relid;
	int			natts;
	int			nrows;
	Datum	  **rows;			/* [0]: the ctid, then the columns */
	char	  **nulls;			/* ' ' or 'n', likewise */
}			staged;

PG_FUNCTION_INFO_V1(colcrypt_reencrypt_rows);

/*
 * _reencrypt_rows(tbl): the rows the running batch of tbl is writing.
 * Ciphertexts only, and nothing outside that batch's own update.
 */
Datum
colcrypt_reencrypt_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *values;
	bool	   *nulls;

	if (!staged.active || staged.relid != PG_GETARG_OID(0))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("colcrypt._reencrypt_rows is internal to colcrypt.reencrypt")));
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (rsinfo->setDesc->natts != staged.natts + 1)
		elog(ERROR, "colcrypt._reencrypt_rows called with %d columns, not %d",
			 rsinfo->setDesc->natts, staged.natts + 1);
	values = palloc(sizeof(Datum) * (staged.natts + 1));
	nulls = palloc(sizeof(bool) * (staged.natts + 1));
	for (int r = 0; r < staged.nrows; r++)
	{
		for (int i = 0; i <= staged.natts; i++)
		{
			values[i] = staged.rows[r][i];
			nulls[i] = staged.nulls[r][i] == 'n';
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(colcrypt_reencrypt_batch);

/*
 * _reencrypt_batch(tbl, first_block, blocks, phase, total, done): rewrite
 * the rows of blocks [first_block, first_block + blocks) that hold stale
 * values; returns how many rows were rewritten.  Rows locked by others are
 * skipped (a later pass takes them); each row is re-encrypted from its
 * latest version, under its row lock.
 */
Datum
colcrypt_reencrypt_batch(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int64		first = PG_GETARG_INT64(1);
	int64		nblocks = PG_GETARG_INT64(2);
	char	   *phase = text_to_cstring(PG_GETARG_TEXT_PP(3));
	int64		total = PG_GETARG_INT64(4);
	int64		done = PG_GETARG_INT64(5);
	bool		replica = superuser();
	Relation	rel;
	List	   *atts;
	ColcryptOwnerContext owner;
	StringInfoData sql;
	ListCell   *lc;
	int			natts;
	int64		rewritten = 0;
	Datum		range[2];
	SPITupleTable *locked;
	uint64		nlocked;
	Datum	  **rows;
	char	  **rownulls;
	int			nchanged = 0;

	ColcryptRequirePreload();
	require_table_owner(relid, "re-encrypt");
	if (bad_values_rel != relid)
		forget_bad_values(relid);
	if (first < 0 || nblocks < 1)
		PG_RETURN_INT64(0);

	/*
	 * Lock the rows of the block range that hold stale values and read
	 * their latest versions, as the table's owner.  The range is scanned
	 * at lock time, so a row an application updated meanwhile (in place,
	 * HOT) is found in its new version rather than skipped.
	 */
	rel = table_open(relid, AccessShareLock);
	atts = encrypted_attributes(rel);
	natts = list_length(atts);
	if (natts == 0)
	{
		table_close(rel, AccessShareLock);
		PG_RETURN_INT64(0);
	}
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ctid");
	foreach(lc, atts)
		appendStringInfo(&sql, ", %s",
						 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel), lfirst_int(lc) - 1)->attname)));
	appendStringInfo(&sql, " FROM ONLY %s.%s WHERE ctid >= $1 AND ctid < $2 AND (",
					 quote_identifier(get_namespace_name(RelationGetNamespace(rel))),
					 quote_identifier(RelationGetRelationName(rel)));
	{
		int			i = 0;

		foreach(lc, atts)
			appendStringInfo(&sql, "%scolcrypt._stale(%s)", i++ > 0 ? " OR " : "",
							 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel), lfirst_int(lc) - 1)->attname)));
	}
	appendStringInfoString(&sql, ") FOR UPDATE SKIP LOCKED");
	range[0] = PointerGetDatum(palloc(sizeof(ItemPointerData)));
	range[1] = PointerGetDatum(palloc(sizeof(ItemPointerData)));
	ItemPointerSet((ItemPointer) DatumGetPointer(range[0]), (BlockNumber) first, 0);
	ItemPointerSet((ItemPointer) DatumGetPointer(range[1]),
				   (BlockNumber) Min(first + nblocks, (int64) MaxBlockNumber), 0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ColcryptBecomeTableOwner(relid, replica, &owner);
	{
		Oid			tids[2] = {TIDOID, TIDOID};

		if (SPI_execute_with_args(sql.data, 2, tids, range, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not lock the rows of %s", RelationGetRelationName(rel));
	}
	ColcryptRestoreUser(&owner);
	locked = SPI_tuptable;
	nlocked = SPI_processed;

	/*
	 * The update, one statement per batch: the new values come from
	 * _reencrypt_rows, which serves the rows computed below to this
	 * backend's own update and to nothing else.
	 */
	resetStringInfo(&sql);
	appendStringInfo(&sql, "UPDATE ONLY %s.%s t SET ",
					 quote_identifier(get_namespace_name(RelationGetNamespace(rel))),
					 quote_identifier(RelationGetRelationName(rel)));
	{
		StringInfoData cols;
		int			i = 0;

		initStringInfo(&cols);
		foreach(lc, atts)
		{
			Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), lfirst_int(lc) - 1);

			appendStringInfo(&sql, "%s%s = r.c%d", i > 0 ? ", " : "",
							 quote_identifier(NameStr(att->attname)), i + 1);
			appendStringInfo(&cols, ", c%d %s", i + 1, format_type_be_qualified(att->atttypid));
			i++;
		}
		appendStringInfo(&sql, " FROM colcrypt._reencrypt_rows($1) AS r(row_ctid tid%s)"
						 " WHERE t.ctid = r.row_ctid", cols.data);
	}

	/* The new values, computed here with the caller's key privileges... */
	rows = palloc(sizeof(Datum *) * Max(nlocked, 1));
	rownulls = palloc(sizeof(char *) * Max(nlocked, 1));
	for (uint64 r = 0; r < nlocked; r++)
	{
		HeapTuple	tup = locked->vals[r];
		Datum	   *values = palloc(sizeof(Datum) * (natts + 1));
		char	   *nulls = palloc(natts + 1);
		bool		row_changed = false;
		bool		isnull;
		Rewrite		rw;
		int			i = 0;

		CHECK_FOR_INTERRUPTS();
		values[0] = SPI_getbinval(tup, locked->tupdesc, 1, &isnull);
		nulls[0] = ' ';
		rw.relid = relid;
		ItemPointerCopy((ItemPointer) DatumGetPointer(values[0]), &rw.tid);
		foreach(lc, atts)
		{
			Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), lfirst_int(lc) - 1);
			Datum		d = SPI_getbinval(tup, locked->tupdesc, i + 2, &isnull);

			nulls[i + 1] = isnull ? 'n' : ' ';
			values[i + 1] = d;
			if (!isnull)
			{
				rw.attnum = att->attnum;
				values[i + 1] = walk_value(att->atttypid, d, reencrypt_value, &rw,
										   &row_changed, 0);
			}
			i++;
		}
		if (row_changed)
		{
			rows[nchanged] = values;
			rownulls[nchanged] = nulls;
			nchanged++;
		}
	}

	/* ...and written as the table's owner, whose code the update runs. */
	if (nchanged > 0)
	{
		Oid			argtype = REGCLASSOID;
		Datum		arg = ObjectIdGetDatum(relid);

		staged.relid = relid;
		staged.natts = natts;
		staged.nrows = nchanged;
		staged.rows = rows;
		staged.nulls = rownulls;
		staged.active = true;
		ColcryptBecomeTableOwner(relid, replica, &owner);
		PG_TRY();
		{
			if (SPI_execute_with_args(sql.data, 1, &argtype, &arg, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update the rows of %s", RelationGetRelationName(rel));
		}
		PG_FINALLY();
		{
			staged.active = false;
		}
		PG_END_TRY();
		ColcryptRestoreUser(&owner);
		rewritten = SPI_processed;
	}
	SPI_finish();
	table_close(rel, AccessShareLock);
	progress_set(relid, phase, total, done + rewritten);
	PG_RETURN_INT64(rewritten);
}

PG_FUNCTION_INFO_V1(colcrypt_reencrypt_finish);

/*
 * _reencrypt_finish(tbl, label): end the run: a WARNING per value that
 * did not open (the first 100; then a count), one audit event, the
 * progress row given back.  Returns the number of such values.
 */
Datum
colcrypt_reencrypt_finish(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *label = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int			n = 0;
	ListCell   *lc;

	ColcryptRequirePreload();
	require_table_owner(relid, "re-encrypt");
	progress_set(relid, NULL, 0, 0);
	if (bad_values_rel != relid)
		PG_RETURN_INT32(0);
	foreach(lc, bad_values)
	{
		BadValue   *b = lfirst(lc);

		if (++n <= 100)
			ereport(WARNING,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("reencrypt %s: column %s of row %s was not re-encrypted: its value %s",
							label, get_attname(relid, b->attnum, false),
							DatumGetCString(DirectFunctionCall1(tidout, PointerGetDatum(&b->tid))),
							b->problem),
					 errdetail("It is under data key \"%s\" version %u; every other value was re-encrypted.",
							   key_label(b->key_id), b->version),
					 errhint("Inspect it with colcrypt.verify('%s'); delete or correct the row, or destroy the version with force => true.",
							 label)));
	}
	if (n > 100)
		ereport(WARNING,
				(errmsg("reencrypt %s: %d more values were not re-encrypted", label, n - 100),
				 errhint("colcrypt.verify('%s') lists them all.", label)));
	if (n > 0)
		ColcryptAuditEvent("reencrypt", "table", label, 0, "warning",
						   psprintf("%d values could not be opened and were left as they were", n));
	forget_bad_values(InvalidOid);
	PG_RETURN_INT32(n);
}

/* ----------------------------------------------------------------------
 * Where the values of a key version are (before a destroy)
 * ----------------------------------------------------------------------
 */

typedef struct UsageScan
{
	uint32		key_id;
	uint32		version;
	int64		n;
} UsageScan;

static void
usage_value(void *arg, struct varlena *value, struct varlena **replacement)
{
	UsageScan  *u = arg;
	cc_envelope env;

	if (cc_envelope_parse((const uint8 *) VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value), &env) == CC_ENV_OK &&
		env.key_id == u->key_id && env.key_version == u->version)
		u->n++;
}

typedef struct UsageCol
{
	UsageScan  *u;
	int64	   *counts;			/* per attribute */
} UsageCol;

static bool
usage_row(void *arg, Relation rel, List *atts, TupleTableSlot *slot)
{
	UsageCol   *uc = arg;
	ListCell   *lc;

	foreach(lc, atts)
	{
		int			i = lfirst_int(lc) - 1;
		bool		changed = false;
		int64		before = uc->u->n;

		if (slot->tts_isnull[i])
			continue;
		(void) walk_value(TupleDescAttr(RelationGetDescr(rel), i)->atttypid,
						  slot->tts_values[i], usage_value, uc->u, &changed, 0);
		uc->counts[i] += uc->u->n - before;
	}
	return true;
}

/*
 * Whether a table may hold values under a key, from the catalog alone (no
 * lock on it): an encrypted column whose type modifier names another key
 * never does (a value stored there is moved to the column's key), arrays,
 * composites, domains and unmodified encrypted columns may.
 */
static bool
may_hold_key(Oid relid, uint32 key_id)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	int			natts;
	bool		may = false;

	if (!HeapTupleIsValid(tup))
		return false;
	natts = ((Form_pg_class) GETSTRUCT(tup))->relnatts;
	ReleaseSysCache(tup);
	for (int i = 1; i <= natts && !may; i++)
	{
		HeapTuple	at = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(i));
		Form_pg_attribute att;

		if (!HeapTupleIsValid(at))
			continue;
		att = (Form_pg_attribute) GETSTRUCT(at);
		if (!att->attisdropped)
		{
			if (ColcryptIsEncryptedType(att->atttypid))
				may = att->atttypmod < 0 || ColcryptTypmodKeyId(att->atttypmod) == key_id;
			else
				may = ColcryptTypeHoldsEncrypted(att->atttypid);
		}
		ReleaseSysCache(at);
	}
	return may;
}

int			colcrypt_lock_timeout = 5000;

/*
 * Take AccessShareLock on a table, waiting at most colcrypt.lock_timeout
 * for others' locks (interruptibly); false if that ran out.  No other
 * user's LOCK TABLE can hold up colcrypt's own work for longer.
 */
static bool
lock_bounded(Oid relid)
{
	TimestampTz start = GetCurrentTimestamp();

	while (!ConditionalLockRelationOid(relid, AccessShareLock))
	{
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), colcrypt_lock_timeout))
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

PG_FUNCTION_INFO_V1(colcrypt_version_usage);

/*
 * _version_usage(key_id, version): per table and column that can hold
 * encrypted values (in every table and materialized view of the database,
 * arrays and composites included), how many values are under that key
 * version, by what their envelopes say.  Reads below the executor: no
 * user code runs and row level security hides nothing.  Tables that cannot
 * hold the key are skipped unread; a table another transaction keeps locked
 * past colcrypt.lock_timeout is one row with col and n null.
 */
Datum
colcrypt_version_usage(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	UsageScan	u;
	Relation	pgclass;
	TableScanDesc scan;
	HeapTuple	tup;
	List	   *relids = NIL;
	ListCell   *lc;

	ColcryptRequirePreload();
	u.key_id = (uint32) PG_GETARG_INT32(0);
	u.version = (uint32) PG_GETARG_INT32(1);
	InitMaterializedSRF(fcinfo, 0);

	pgclass = table_open(RelationRelationId, AccessShareLock);
	scan = table_beginscan_catalog(pgclass, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_class c = (Form_pg_class) GETSTRUCT(tup);

		if (c->relkind == RELKIND_RELATION || c->relkind == RELKIND_MATVIEW)
			relids = lappend_oid(relids, c->oid);
	}
	table_endscan(scan);
	table_close(pgclass, AccessShareLock);

	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);
		Relation	rel;
		UsageCol	uc;
		List	   *atts;
		ListCell   *ac;

		/* Only tables that can hold the key are read (or locked). */
		if (!may_hold_key(relid, u.key_id))
			continue;
		if (!lock_bounded(relid))
		{
			/* Held by another transaction past colcrypt.lock_timeout. */
			Datum		values[3];
			bool		nulls[3] = {false, true, true};
			char	   *nsp = get_namespace_name(get_rel_namespace(relid));
			char	   *rname = get_rel_name(relid);

			if (nsp == NULL || rname == NULL)
				continue;		/* dropped meanwhile */
			values[0] = CStringGetTextDatum(quote_qualified_identifier(nsp, rname));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			continue;
		}
		rel = try_table_open(relid, NoLock);
		if (rel == NULL)
		{
			UnlockRelationOid(relid, AccessShareLock);
			continue;			/* dropped meanwhile */
		}
		atts = encrypted_attributes(rel);
		if (atts == NIL)
		{
			table_close(rel, AccessShareLock);
			continue;
		}
		uc.u = &u;
		uc.counts = palloc0(sizeof(int64) * RelationGetDescr(rel)->natts);
		u.n = 0;
		scan_table(rel, usage_row, &uc);
		foreach(ac, atts)
		{
			int			i = lfirst_int(ac) - 1;
			Datum		values[3];
			bool		nulls[3] = {0};

			values[0] = CStringGetTextDatum(quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
																	   RelationGetRelationName(rel)));
			values[1] = CStringGetTextDatum(NameStr(TupleDescAttr(RelationGetDescr(rel), i)->attname));
			values[2] = Int64GetDatum(uc.counts[i]);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		table_close(rel, AccessShareLock);
	}
	return (Datum) 0;
}

/* ----------------------------------------------------------------------
 * verify: every value of a table, opened
 * ----------------------------------------------------------------------
 */

typedef struct VerifyScan
{
	ReturnSetInfo *rsinfo;
	Oid			relid;
	AttrNumber	attnum;
	ItemPointerData tid;
	const char *colname;
	int64		problems;
} VerifyScan;

static void
verify_report(VerifyScan *vs, const cc_envelope *env, const char *problem)
{
	Datum		values[6];
	bool		nulls[6] = {0};

	values[0] = ObjectIdGetDatum(vs->relid);
	values[1] = CStringGetTextDatum(vs->colname);
	values[2] = PointerGetDatum(&vs->tid);
	if (env != NULL)
	{
		values[3] = CStringGetTextDatum(key_label(env->key_id));
		values[4] = Int32GetDatum((int32) env->key_version);
	}
	else
		nulls[3] = nulls[4] = true;
	values[5] = CStringGetTextDatum(problem);
	tuplestore_putvalues(vs->rsinfo->setResult, vs->rsinfo->setDesc, values, nulls);
	vs->problems++;
}

static void
verify_value(void *arg, struct varlena *value, struct varlena **replacement)
{
	VerifyScan *vs = arg;
	cc_envelope env;
	cc_env_status st;
	ColcryptKeyMeta *meta;
	ColcryptKeyVersionMeta *v;
	const char *why;
	uint8	   *pt;
	size_t		len;
	cc_status	status;

	st = cc_envelope_parse((const uint8 *) VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value), &env);
	if (st != CC_ENV_OK)
	{
		verify_report(vs, NULL, psprintf("malformed: %s", cc_env_status_string(st)));
		return;
	}
	if ((why = misfit(desc_of(env.type), &env)) != NULL)
	{
		verify_report(vs, &env, "does not hold a value of its type");
		return;
	}
	if (env.key_id == CC_TRANSIT_KEY_ID)
	{
		verify_report(vs, &env, "under the transit key, which does not survive a restart");
		return;
	}
	meta = ColcryptGetKeyMeta(env.key_id, true);
	if (meta == NULL)
	{
		verify_report(vs, &env, "its data key does not exist in this database");
		return;
	}
	v = ColcryptFindVersion(meta, (int32) env.key_version);
	if (v == NULL)
	{
		verify_report(vs, &env, "its key version does not exist");
		return;
	}
	if (v->state == COLCRYPT_KEY_DESTROYED || v->state == COLCRYPT_KEY_DESTROYED_COMPROMISED ||
		v->state == COLCRYPT_KEY_PRE_ACTIVATION)
	{
		verify_report(vs, &env, psprintf("its key version is %s", ColcryptKeyStateName(v->state)));
		return;
	}
	if (!ColcryptHasKeyPrivilege(env.key_id, COLCRYPT_PRIV_DECRYPT))
	{
		verify_report(vs, &env, "not checked: no decrypt privilege on its key");
		return;
	}
	pt = try_open_envelope(&env, &len, &status);
	if (pt == NULL)
	{
		verify_report(vs, &env, status == CC_ERR_AUTH ?
					  "failed authentication (altered or forged)" : cc_status_string(status));
		return;
	}
	cc_wipe(pt, len);
	pfree(pt);
}

static bool
verify_row(void *arg, Relation rel, List *atts, TupleTableSlot *slot)
{
	VerifyScan *vs = arg;
	ListCell   *lc;

	ItemPointerCopy(&slot->tts_tid, &vs->tid);
	foreach(lc, atts)
	{
		int			i = lfirst_int(lc) - 1;
		bool		changed = false;

		if (slot->tts_isnull[i])
			continue;
		vs->attnum = i + 1;
		vs->colname = NameStr(TupleDescAttr(RelationGetDescr(rel), i)->attname);
		(void) walk_value(TupleDescAttr(RelationGetDescr(rel), i)->atttypid,
						  slot->tts_values[i], verify_value, vs, &changed, 0);
	}
	return true;
}

PG_FUNCTION_INFO_V1(colcrypt_verify_table);

/*
 * _verify_table(tbl): one row per encrypted value of tbl (only) that does
 * not open, or that the caller may not check, with where it is and why.
 */
Datum
colcrypt_verify_table(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	VerifyScan	vs = {0};
	Relation	rel;

	ColcryptRequirePreload();
	require_table_owner(relid, "verify");
	InitMaterializedSRF(fcinfo, 0);
	vs.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	vs.relid = relid;
	rel = table_open(relid, AccessShareLock);
	scan_table(rel, verify_row, &vs);
	table_close(rel, AccessShareLock);
	return (Datum) 0;
}

/* ----------------------------------------------------------------------
 * Envelope fields, for tests and tools
 * ----------------------------------------------------------------------
 */

/* The envelope of an argument of an encrypted type. */
static void
envelope_arg(FunctionCallInfo fcinfo, cc_envelope *env)
{
	Oid			argtype = get_fn_expr_argtype(fcinfo->flinfo, 0);

	if (!OidIsValid(argtype) || !ColcryptIsEncryptedType(argtype))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("argument must be of an encrypted type")));
	parse_datum(enc_arg(PG_GETARG_DATUM(0)), env);
}

PG_FUNCTION_INFO_V1(colcrypt_key_version);

Datum
colcrypt_key_version(PG_FUNCTION_ARGS)
{
	cc_envelope env;

	envelope_arg(fcinfo, &env);
	PG_RETURN_INT32((int32) env.key_version);
}

PG_FUNCTION_INFO_V1(colcrypt_key_id_of);

Datum
colcrypt_key_id_of(PG_FUNCTION_ARGS)
{
	cc_envelope env;

	envelope_arg(fcinfo, &env);
	PG_RETURN_INT32((int32) env.key_id);
}

PG_FUNCTION_INFO_V1(colcrypt_stale);

/*
 * _stale(value): whether a value (or one inside an array or composite) is
 * under a version of its key other than the active one that still
 * decrypts, and not found unopenable earlier in this backend's reencrypt.
 * What colcrypt.inspect() shows anyone, so it is PUBLIC: reencrypt's
 * updates, run as the table's owner, call it.
 */
Datum
colcrypt_stale(PG_FUNCTION_ARGS)
{
	Oid			argtype = get_fn_expr_argtype(fcinfo->flinfo, 0);
	StaleScan	s = {0};
	bool		changed = false;

	if (!OidIsValid(argtype) || !ColcryptTypeHoldsEncrypted(argtype))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("argument must hold encrypted values")));
	(void) walk_value(argtype, PG_GETARG_DATUM(0), stale_value, &s, &changed, 0);
	PG_RETURN_BOOL(s.found);
}

PG_FUNCTION_INFO_V1(colcrypt_holds_encrypted);

/* _holds_encrypted(type): whether its values can hold encrypted values. */
Datum
colcrypt_holds_encrypted(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(ColcryptTypeHoldsEncrypted(PG_GETARG_OID(0)));
}
