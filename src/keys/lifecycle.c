/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *	  The life of keys: NIST SP 800-57 states and crypto-shredding, master
 *	  key rotation without touching table data, the pieces of online
 *	  re-encryption, and turning a plaintext column into an encrypted one.
 *
 * States of a data key version and the legal transitions:
 *
 *	 pre-activation --> active --> deactivated --> destroyed
 *	 pre-activation ------------------------------> destroyed
 *	 pre-activation, active, deactivated --> compromised --> destroyed-compromised
 *
 * Activating a version deactivates the active one (a key has at most one).
 * Active encrypts and decrypts; deactivated and compromised decrypt only
 * (compromised with a WARNING and an audit row); the others do neither.
 * Destroying records the state with a NULL wrapped key and, at commit,
 * wipes the key from the shared cache (every backend drops its own context
 * of it at its next key use); then the background worker zeroes every other
 * copy of the wrapped key in the catalog's pages (see ColcryptShredPending).
 * Destroying a version that values still use needs force.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/genam.h"
#include "access/generic_xlog.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "colcrypt/audit.h"
#include "colcrypt/catalog.h"
#include "colcrypt/keys.h"
#include "colcrypt/lifecycle.h"
#include "colcrypt/provider.h"
#include "colcrypt/types.h"
#include "executor/spi.h"
#include "parser/parse_func.h"
#include "parser/parse_relation.h"
#include "utils/array.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "../types/enctype_int.h"

static void
require_key_owner(ColcryptKeyMeta *meta, const char *what)
{
	if (!superuser() && !(OidIsValid(meta->owner) && has_privs_of_role(GetUserId(), meta->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be the owner of data key \"%s\" to %s it", meta->name, what)));
}

/* ----------------------------------------------------------------------
 * States
 * ----------------------------------------------------------------------
 */

static bool
transition_legal(ColcryptKeyState from, ColcryptKeyState to)
{
	switch (to)
	{
		case COLCRYPT_KEY_ACTIVE:
			return from == COLCRYPT_KEY_PRE_ACTIVATION;
		case COLCRYPT_KEY_DEACTIVATED:
			return from == COLCRYPT_KEY_ACTIVE;
		case COLCRYPT_KEY_DESTROYED:
			return from == COLCRYPT_KEY_DEACTIVATED || from == COLCRYPT_KEY_PRE_ACTIVATION;
		case COLCRYPT_KEY_COMPROMISED:
			return from == COLCRYPT_KEY_PRE_ACTIVATION || from == COLCRYPT_KEY_ACTIVE ||
				from == COLCRYPT_KEY_DEACTIVATED;
		case COLCRYPT_KEY_DESTROYED_COMPROMISED:
			return from == COLCRYPT_KEY_COMPROMISED;
		case COLCRYPT_KEY_PRE_ACTIVATION:
			return false;
	}
	return false;
}

/*
 * Crypto-shredding.  A wrapped key leaves copies in the catalog table's
 * pages: the live row version, dead versions that earlier updates (state
 * changes, master key rotations) left behind until vacuum, and the free
 * space of pages, where pruning leaves the bytes of removed row versions.
 *
 * Destroying a version sets its state and a NULL wrapped key in one
 * transaction, like any catalog change.  Once that has committed, the
 * database's background worker (the audit writer) shreds the copies, in a
 * transaction of its own: every page of colcrypt.data_key_version is
 * rewritten through generic WAL (crash-safe, replicated, full page images
 * whose hole is zero-filled), the wrapped key bytes of every row version of
 * a destroyed version become zeros, as does each page's free space, and
 * the versions are marked shredded_at.  Shredding only after commit is what
 * keeps a rolled-back destroy (a savepoint, a serialization failure, a
 * crash before the commit record) from losing the key; a version destroyed
 * but not yet shredded, after a crash say, is found and shredded when key
 * metadata is next read.  The column is STORAGE PLAIN, so its bytes are
 * always in line on these pages.  Copies in older WAL and in backups taken
 * before remain; they are wrapped by the master key, so rotating it and
 * destroying its old versions in the KMS ends them too.
 */
static bool destroyed_in_xact = false;
static SubTransactionId destroyed_subid = InvalidSubTransactionId;	/* outermost */
static bool destroy_callback_registered = false;

/* Does the row version at `tup` belong to a version in `victims`? */
static bool
tuple_is_victim(HeapTuple tup, TupleDesc td, AttrNumber a_key, AttrNumber a_ver,
				List *victims)
{
	bool		isnull;
	int64		kv;
	Datum		d;
	ListCell   *lc;

	d = heap_getattr(tup, a_key, td, &isnull);
	if (isnull)
		return false;
	kv = (int64) (uint32) DatumGetInt32(d) << 32;
	d = heap_getattr(tup, a_ver, td, &isnull);
	if (isnull)
		return false;
	kv |= (uint32) DatumGetInt32(d);
	foreach(lc, victims)
		if (*(int64 *) lfirst(lc) == kv)
			return true;
	return false;
}

/* Zero the wrapped key bytes of every row version on `page` of a victim. */
static void
scrub_page(Relation rel, Page page, BlockNumber blk, AttrNumber a_key, AttrNumber a_ver,
		   AttrNumber a_wrap, List *victims)
{
	TupleDesc	td = RelationGetDescr(rel);
	OffsetNumber maxoff = PageGetMaxOffsetNumber(page);

	for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
	{
		ItemId		lp = PageGetItemId(page, off);
		HeapTupleData tup;
		Datum		d;
		bool		isnull;

		if (!ItemIdIsNormal(lp))
			continue;
		tup.t_data = (HeapTupleHeader) PageGetItem(page, lp);
		tup.t_len = ItemIdGetLength(lp);
		tup.t_tableOid = RelationGetRelid(rel);
		ItemPointerSet(&tup.t_self, blk, off);
		if (!tuple_is_victim(&tup, td, a_key, a_ver, victims))
			continue;
		d = heap_getattr(&tup, a_wrap, td, &isnull);
		if (isnull)
			continue;
		if (VARATT_IS_EXTERNAL(DatumGetPointer(d)) || VARATT_IS_COMPRESSED(DatumGetPointer(d)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot shred a wrapped key stored out of line"),
					 errhint("Run ALTER TABLE colcrypt.data_key_version ALTER COLUMN wrapped_key SET STORAGE PLAIN, then VACUUM FULL it.")));
		memset(VARDATA_ANY(DatumGetPointer(d)), 0, VARSIZE_ANY_EXHDR(DatumGetPointer(d)));
	}
}

static void
scrub_wrapped_keys(List *victims)
{
	Oid			relid = ColcryptCatalogRelid("data_key_version");
	Relation	rel;
	AttrNumber	a_key;
	AttrNumber	a_ver;
	AttrNumber	a_wrap;
	BlockNumber nblocks;

	if (!OidIsValid(relid))
		return;					/* the extension was dropped meanwhile */
	rel = table_open(relid, RowExclusiveLock);
	a_key = attnameAttNum(rel, "key_id", false);
	a_ver = attnameAttNum(rel, "version", false);
	a_wrap = attnameAttNum(rel, "wrapped_key", false);
	nblocks = RelationGetNumberOfBlocks(rel);
	for (BlockNumber blk = 0; blk < nblocks; blk++)
	{
		Buffer		buf = ReadBuffer(rel, blk);
		GenericXLogState *xs;
		Page		page;

		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		if (PageIsNew(BufferGetPage(buf)))
		{
			UnlockReleaseBuffer(buf);
			continue;
		}
		xs = GenericXLogStart(rel);
		page = GenericXLogRegisterBuffer(xs, buf, GENERIC_XLOG_FULL_IMAGE);
		scrub_page(rel, page, blk, a_key, a_ver, a_wrap, victims);
		GenericXLogFinish(xs);	/* also zero-fills the page's free space */
		UnlockReleaseBuffer(buf);
	}
	table_close(rel, NoLock);
}

/*
 * Shred the copies of every destroyed version not shredded yet, in the
 * current transaction (the writer's); returns how many versions.
 */
int
ColcryptShredPending(void)
{
	List	   *victims = NIL;
	Datum		d;
	bool		isnull;
	ArrayType  *arr;
	Datum	   *elems;
	int			nelems;

	if (!OidIsValid(ColcryptCatalogRelid("data_key_version")))
		return 0;

	/*
	 * Mark and list them in one statement, so that the versions marked are
	 * exactly those scrubbed; an error below rolls the marks back.
	 */
	ColcryptCatalogExec("WITH m AS (UPDATE colcrypt.data_key_version SET shredded_at = now()"
						"  WHERE state IN ('destroyed', 'destroyed-compromised') AND shredded_at IS NULL"
						"  RETURNING (key_id::int8 << 32) | version::int8 AS kv)"
						" SELECT array_agg(kv) FROM m",
						0, NULL, NULL, NULL, &d, &isnull);
	if (isnull)
		return 0;
	arr = DatumGetArrayTypeP(d);
	deconstruct_array(arr, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, NULL, &nelems);
	for (int i = 0; i < nelems; i++)
	{
		int64	   *kv = palloc(sizeof(int64));

		*kv = DatumGetInt64(elems[i]);
		victims = lappend(victims, kv);
	}
	scrub_wrapped_keys(victims);
	return nelems;
}

bool
ColcryptShredIsPending(void)
{
	if (!OidIsValid(ColcryptCatalogRelid("data_key_version")))
		return false;
	return ColcryptCatalogExec("SELECT 1 FROM colcrypt.data_key_version"
							   " WHERE state IN ('destroyed', 'destroyed-compromised') AND shredded_at IS NULL",
							   0, NULL, NULL, NULL, NULL, NULL) > 0;
}

/* After a destroy commits, have the copies shredded. */
static void
destroy_xact_cb(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (destroyed_in_xact)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that destroys a data key version")));
			break;
		case XACT_EVENT_COMMIT:
			if (destroyed_in_xact)
				ColcryptRequestShred(MyDatabaseId);
			destroyed_in_xact = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			destroyed_in_xact = false;
			break;
		default:
			break;
	}
}

/* A savepoint rolled back takes its destroys (and its children's) along. */
static void
destroy_subxact_cb(SubXactEvent event, SubTransactionId mySubid,
				   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && destroyed_in_xact && mySubid <= destroyed_subid)
		destroyed_in_xact = false;
}

static void
note_destroy(void)
{
	SubTransactionId subid = GetCurrentSubTransactionId();

	if (!destroy_callback_registered)
	{
		RegisterXactCallback(destroy_xact_cb, NULL);
		RegisterSubXactCallback(destroy_subxact_cb, NULL);
		destroy_callback_registered = true;
	}
	if (!destroyed_in_xact || subid < destroyed_subid)
		destroyed_subid = subid;
	destroyed_in_xact = true;
}

/*
 * Values still under (key_id, version) in tables, and where; *locked lists
 * the tables that could not be read (locked by others past
 * colcrypt.lock_timeout), or is NULL.
 */
static int64
version_usage(uint32 key_id, int32 version, char **where, char **locked)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum((int32) key_id), Int32GetDatum(version)};
	Datum		d;
	bool		isnull;
	Jsonb	   *arr;
	JsonbValue *v;
	int64		used;

	ColcryptCatalogExec("SELECT jsonb_build_array(coalesce(sum(n), 0)::int8,"
						"   string_agg(format('%s.%s: %s', relation, col, n), ', ' ORDER BY relation, col) FILTER (WHERE n > 0),"
						"   string_agg(relation, ', ' ORDER BY relation) FILTER (WHERE n IS NULL))"
						" FROM colcrypt._version_usage($1, $2)",
						2, types, values, NULL, &d, &isnull);
	arr = DatumGetJsonbP(d);
	v = getIthJsonbValueFromContainer(&arr->root, 0);
	used = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
	v = getIthJsonbValueFromContainer(&arr->root, 1);
	*where = v->type == jbvString ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
	v = getIthJsonbValueFromContainer(&arr->root, 2);
	*locked = v->type == jbvString ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
	return used;
}


static Datum
set_key_state_body(FunctionCallInfo fcinfo)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "data key name");
	int32		version;
	char	   *statename = ColcryptTextArg(fcinfo, 2, "state");
	bool		force = PG_NARGS() > 3 && !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
	ColcryptKeyState to;
	ColcryptKeyState from;
	ColcryptKeyMeta *meta;
	uint32		key_id;
	char		keyname[NAMEDATALEN];
	Oid			types[3] = {INT4OID, INT4OID, TEXTOID};
	Datum		values[3];

	ColcryptRequirePreload();
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("version must not be null")));
	version = PG_GETARG_INT32(1);
	if (!ColcryptKeyStateFromName(statename, &to))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown key state \"%s\"", statename),
				 errhint("States: pre-activation, active, deactivated, compromised, destroyed, destroyed-compromised.")));
	meta = ColcryptGetKeyMetaByName(name, false);
	require_key_owner(meta, "change the state of");
	key_id = meta->key_id;
	strlcpy(keyname, meta->name, sizeof(keyname));

	/* Lock the version's row and read its state as committed. */
	values[0] = Int32GetDatum((int32) key_id);
	values[1] = Int32GetDatum(version);
	{
		Datum		d;
		bool		isnull;

		ColcryptCatalogExec("SELECT state FROM colcrypt.data_key_version"
							" WHERE key_id = $1 AND version = $2 FOR UPDATE",
							2, types, values, NULL, &d, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("data key \"%s\" has no version %d", keyname, version)));
		(void) ColcryptKeyStateFromName(TextDatumGetCString(d), &from);
	}
	if (from == to)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("data key \"%s\" version %d is already %s", keyname, version,
						ColcryptKeyStateName(to))));
	if (!transition_legal(from, to))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("data key \"%s\" version %d cannot go from %s to %s",
						keyname, version, ColcryptKeyStateName(from), ColcryptKeyStateName(to)),
				 errdetail("Legal transitions: pre-activation to active, compromised or destroyed; active to deactivated or compromised; deactivated to destroyed or compromised; compromised to destroyed-compromised.")));

	if (to == COLCRYPT_KEY_DESTROYED || to == COLCRYPT_KEY_DESTROYED_COMPROMISED)
	{
		char	   *where;
		char	   *locked;
		int64		used = version_usage(key_id, version, &where, &locked);

		/*
		 * A table another transaction keeps locked could not be counted.
		 * Without force that is an error (the count decides whether data
		 * would be lost); with force, destruction goes ahead: nobody's lock
		 * can hold up the shredding of a key.
		 */
		if (locked != NULL && !force)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("cannot count the values under data key \"%s\" version %d", keyname, version),
					 errdetail("Locked by other transactions for longer than colcrypt.lock_timeout: %s.", locked),
					 errhint("Try again, or destroy with force => true, which does not need the count.")));
		if (locked != NULL)
			ereport(WARNING,
					(errmsg("values under data key \"%s\" version %d were not counted in %s",
							keyname, version, locked),
					 errdetail("Other transactions held them locked for longer than colcrypt.lock_timeout; any values there are shredded with the rest.")));

		if (used > 0 && !force)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("data key \"%s\" version %d still encrypts " INT64_FORMAT " values",
							keyname, version, used),
					 errdetail("Values under it: %s.", where),
					 errhint("Re-encrypt them with CALL colcrypt.reencrypt(table), or destroy with force => true to shred them.")));
		if (used > 0)
			ereport(NOTICE,
					(errmsg("shredding " INT64_FORMAT " values under data key \"%s\" version %d",
							used, keyname, version),
					 errdetail("Values under it: %s. They can never be decrypted again.", where)));
		/* Every check passed: record the state, shred at commit. */
		values[2] = CStringGetTextDatum(ColcryptKeyStateName(to));
		ColcryptCatalogExec("UPDATE colcrypt.data_key_version SET state = $3, wrapped_key = NULL,"
							" destroyed_at = now() WHERE key_id = $1 AND version = $2",
							3, types, values, NULL, NULL, NULL);
		note_destroy();
		ColcryptForgetAtCommit(key_id, version);
		ColcryptDekForget(key_id, version);
	}
	else
	{
		values[2] = CStringGetTextDatum(ColcryptKeyStateName(to));
		if (to == COLCRYPT_KEY_ACTIVE)
			ColcryptCatalogExec("UPDATE colcrypt.data_key_version SET state = 'deactivated', deactivated_at = now()"
								" WHERE key_id = $1 AND state = 'active'",
								1, types, values, NULL, NULL, NULL);
		ColcryptCatalogExec("UPDATE colcrypt.data_key_version SET state = $3,"
							" activated_at = CASE WHEN $3 = 'active' THEN now() ELSE activated_at END,"
							" deactivated_at = CASE WHEN $3 = 'deactivated' THEN now() ELSE deactivated_at END,"
							" compromised_at = CASE WHEN $3 = 'compromised' THEN now() ELSE compromised_at END"
							" WHERE key_id = $1 AND version = $2",
							3, types, values, NULL, NULL, NULL);
	}
	ColcryptCatalogChanged();
	ColcryptAuditAction("state", "key", keyname, version,
						psprintf("%s to %s%s", ColcryptKeyStateName(from), ColcryptKeyStateName(to),
								 force ? " (forced)" : ""));
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------------
 * Master key rotation
 * ----------------------------------------------------------------------
 */

typedef struct MasterKeyRow
{
	char	   *provider;
	char	   *key_ref;
	char	   *kind;
	Jsonb	   *options;
} MasterKeyRow;

static bool
fetch_master_key(const char *name, const char *provider_override, MasterKeyRow *row)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	Datum		d;
	bool		isnull;
	Jsonb	   *arr;
	JsonbValue *v;

	values[0] = CStringGetTextDatum(name);
	values[1] = provider_override ? CStringGetTextDatum(provider_override) : (Datum) 0;
	nulls[1] = provider_override ? ' ' : 'n';
	ColcryptCatalogExec("SELECT jsonb_build_array(p.name, m.key_ref, p.kind, p.options)"
						" FROM colcrypt.master_key m JOIN colcrypt.provider p"
						"   ON p.name = coalesce($2, m.provider) WHERE m.name = $1",
						2, types, values, nulls, &d, &isnull);
	if (isnull)
		return false;
	arr = DatumGetJsonbP(d);
	v = getIthJsonbValueFromContainer(&arr->root, 0);
	row->provider = pnstrdup(v->val.string.val, v->val.string.len);
	v = getIthJsonbValueFromContainer(&arr->root, 1);
	row->key_ref = pnstrdup(v->val.string.val, v->val.string.len);
	v = getIthJsonbValueFromContainer(&arr->root, 2);
	row->kind = pnstrdup(v->val.string.val, v->val.string.len);
	v = getIthJsonbValueFromContainer(&arr->root, 3);
	row->options = JsonbValueToJsonb(v);
	return true;
}


/*
 * Re-wrap every data key version of a master key under a new CMK (another
 * provider and/or key_ref), or under a new version of the same CMK.  One
 * transaction: if the provider fails half-way, nothing changes.  Table data
 * is not touched: the data keys stay the same.
 */
static Datum
rotate_master_key_body(FunctionCallInfo fcinfo)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "master key name");
	char	   *new_provider = PG_NARGS() > 1 && !PG_ARGISNULL(1) ? text_to_cstring(PG_GETARG_TEXT_PP(1)) : NULL;
	char	   *new_key_ref = PG_NARGS() > 2 && !PG_ARGISNULL(2) ? text_to_cstring(PG_GETARG_TEXT_PP(2)) : NULL;
	MasterKeyRow old;
	MasterKeyRow target;
	char	   *cmk_version = NULL;
	int			count = 0;
	int			at_provider_count = 0;
	Oid			types[4] = {TEXTOID, INT4OID, INT4OID, BYTEAOID};
	Datum		values[4];

	ColcryptRequirePreload();

	/*
	 * Lock the master key first, then read it: concurrent rotations queue
	 * up, and each starts from the state the one before it left.
	 */
	values[0] = CStringGetTextDatum(name);
	ColcryptCatalogExec("SELECT 1 FROM colcrypt.master_key WHERE name = $1 FOR UPDATE",
						1, types, values, NULL, NULL, NULL);
	if (!fetch_master_key(name, NULL, &old))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("master key \"%s\" does not exist", name)));
	if (new_provider != NULL && !fetch_master_key(name, new_provider, &target))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key provider \"%s\" does not exist", new_provider)));

	/*
	 * Its owner re-wraps it, with usage on the provider that unwraps and on
	 * the one that wraps anew: data keys go nowhere a superuser has not
	 * set up, and to no provider the owner may not use.
	 */
	ColcryptCheckMasterKeyOwner(name, "rotate");
	ColcryptCheckProviderUsage(old.provider);
	if (new_provider != NULL)
		ColcryptCheckProviderUsage(new_provider);
	if (new_provider == NULL)
		target = old;
	if (new_key_ref != NULL)
		target.key_ref = new_key_ref;

	if (new_provider == NULL && new_key_ref == NULL)
	{
		char	   *rotated_ref = NULL;

		/* A new version of the CMK, or (HSMs, KMIP) a new CMK beside it. */
		cmk_version = ColcryptProviderRotateCmk(target.provider, target.kind, target.options,
												target.key_ref, &rotated_ref);
		if (rotated_ref != NULL)
		{
			ereport(NOTICE,
					(errmsg("created customer master key \"%s\" in provider \"%s\"",
							rotated_ref, target.provider),
					 errdetail("It replaces \"%s\", which stays at the provider until you retire it there.",
							   target.key_ref)));
			target.key_ref = rotated_ref;
		}
	}
	else
	{
		char	   *actual_ref = NULL;
		bool		created = ColcryptProviderEnsureCmk(target.provider, target.kind, target.options,
														target.key_ref, strcmp(target.kind, "file") == 0,
														&actual_ref);

		if (created)
			ereport(NOTICE,
					(errmsg("created customer master key \"%s\" in provider \"%s\"",
							actual_ref ? actual_ref : target.key_ref, target.provider)));
		if (actual_ref != NULL)
			target.key_ref = actual_ref;
	}

	/* Each version: unwrap (cache or old CMK), wrap under the new one. */
	{
		List	   *rows = NIL;
		ListCell   *lc;

		/* The versions it wraps, read as the catalog owner. */
		{
			Datum		d;
			bool		isnull;

			ColcryptCatalogExec("SELECT coalesce(array_agg(((key_id::int8 << 32) | version::int8) ORDER BY key_id, version), '{}')"
								" FROM colcrypt.data_key_version WHERE master_key = $1 AND wrapped_key IS NOT NULL",
								1, types, values, NULL, &d, &isnull);
			{
				ArrayType  *arr = DatumGetArrayTypeP(d);
				Datum	   *elems;
				int			nelems;

				deconstruct_array(arr, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, NULL, &nelems);
				for (int i = 0; i < nelems; i++)
				{
					int64	   *kv = palloc(sizeof(int64));

					*kv = DatumGetInt64(elems[i]);
					rows = lappend(rows, kv);
				}
			}
		}
		foreach(lc, rows)
		{
			int64		kv = *(int64 *) lfirst(lc);
			uint32		key_id = (uint32) (kv >> 32);
			int32		version = (int32) (uint32) kv;
			uint8		dek[CC_DEK_LEN];
			StringInfoData wrapped;
			char	   *wrap_meta = NULL;
			ColcryptWrapContext ctx;
			bytea	   *blob;

			bool		at_provider = false;

			ColcryptDekBytes(key_id, (uint32) version, dek);
			ctx.key_ref = target.key_ref;
			ctx.key_id = key_id;
			ctx.key_version = (uint32) version;
			initStringInfo(&wrapped);
			PG_TRY();
			{
				uint8		check[CC_DEK_LEN];
				ColcryptUnwrapInfo info;

				/*
				 * Within one provider that can, the provider re-wraps (Vault
				 * rewrap, KMS ReEncrypt): the data key does not travel.
				 * Otherwise, or where it declines, wrap the key anew.  Either
				 * way the new blob must unwrap to the same key before it is
				 * recorded.
				 */
				if (strcmp(old.provider, target.provider) == 0 &&
					ColcryptProviderCanRewrap(target.kind) &&
					ColcryptFetchUnwrapInfo(key_id, version, &info) && info.wrapped != NULL)
				{
					ColcryptWrapContext from = ctx;

					from.key_ref = old.key_ref;
					at_provider = ColcryptProviderRewrap(target.provider, target.kind, target.options,
														 &from, (uint8 *) VARDATA_ANY(info.wrapped),
														 VARSIZE_ANY_EXHDR(info.wrapped), info.wrap_meta,
														 &ctx, &wrapped, &wrap_meta);
				}
				if (!at_provider)
					ColcryptProviderWrap(target.provider, target.kind, target.options, &ctx,
										 dek, sizeof(dek), &wrapped, &wrap_meta);
				ColcryptProviderUnwrap(target.provider, target.kind, target.options, &ctx,
									   (uint8 *) wrapped.data, wrapped.len, wrap_meta,
									   check, sizeof(check));
				if (cc_memcmp_ct(check, dek, sizeof(dek)) != 0)
					ereport(ERROR,
							(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
							 errmsg("key provider \"%s\" returned a different key than it wrapped",
									target.provider)));
				cc_wipe(check, sizeof(check));
			}
			PG_FINALLY();
			{
				cc_wipe(dek, sizeof(dek));
			}
			PG_END_TRY();

			blob = palloc(VARHDRSZ + wrapped.len);
			SET_VARSIZE(blob, VARHDRSZ + wrapped.len);
			memcpy(VARDATA(blob), wrapped.data, wrapped.len);
			{
				Oid			utypes[4] = {INT4OID, INT4OID, BYTEAOID, TEXTOID};
				Datum		uvalues[4];
				char		unulls[4] = {' ', ' ', ' ', ' '};

				uvalues[0] = Int32GetDatum((int32) key_id);
				uvalues[1] = Int32GetDatum(version);
				uvalues[2] = PointerGetDatum(blob);
				uvalues[3] = wrap_meta ? CStringGetTextDatum(wrap_meta) : (Datum) 0;
				unulls[3] = wrap_meta ? ' ' : 'n';
				ColcryptCatalogExec("UPDATE colcrypt.data_key_version SET wrapped_key = $3, wrap_meta = $4"
									" WHERE key_id = $1 AND version = $2",
									4, utypes, uvalues, unulls, NULL, NULL);
			}
			ColcryptAuditAction("rewrap", "key", key_label(key_id), version,
								psprintf("under master key %s (%s %s)%s", name, target.provider, target.key_ref,
										 at_provider ? ", re-wrapped by the provider" : ""));
			if (at_provider)
				at_provider_count++;
			count++;
		}
	}

	{
		Oid			mtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
		Datum		mvalues[3];

		mvalues[0] = CStringGetTextDatum(name);
		mvalues[1] = CStringGetTextDatum(target.provider);
		mvalues[2] = CStringGetTextDatum(target.key_ref);
		ColcryptCatalogExec("UPDATE colcrypt.master_key SET provider = $2, key_ref = $3, rotated_at = now()"
							" WHERE name = $1",
							3, mtypes, mvalues, NULL, NULL, NULL);
	}
	ColcryptCatalogChanged();
	ColcryptAuditAction("rotate", "master_key", name, 0,
						psprintf("%d data key versions re-wrapped under %s %s%s%s%s", count,
								 target.provider, target.key_ref,
								 cmk_version ? " " : "", cmk_version ? cmk_version : "",
								 at_provider_count > 0 ? psprintf(", %d by the provider", at_provider_count) : ""));
	PG_RETURN_INT32(count);
}

/* ----------------------------------------------------------------------
 * Turning a plaintext column into an encrypted one
 * ----------------------------------------------------------------------
 */

/*
 * The encrypted type for a column type, and the plain type to cast through.
 * Only conversions that keep every value exactly are done: json (jsonb
 * normalizes it), real (float8 prints it differently) and character(n)
 * (text drops its padding) would change what applications read, so the
 * DBA converts those first, knowingly.  *lost names the property of the
 * old type the new one does not enforce for new values, if any.
 */
static bool
encrypted_type_for(Oid typid, int32 typmod, const char **enc, const char **plain,
				   const char **lost)
{
	*lost = NULL;
	switch (getBaseType(typid))
	{
		case VARCHAROID:
			if (typmod >= 0)
				*lost = "length limit";
			/* FALLTHROUGH */
		case TEXTOID:
		case NAMEOID:
			*enc = "encrypted_text";
			*plain = "pg_catalog.text";
			return true;
		case BYTEAOID:
			*enc = "encrypted_bytea";
			*plain = "pg_catalog.bytea";
			return true;
		case INT2OID:
			*lost = "range";
			/* FALLTHROUGH */
		case INT4OID:
			*enc = "encrypted_int4";
			*plain = "pg_catalog.int4";
			return true;
		case INT8OID:
			*enc = "encrypted_int8";
			*plain = "pg_catalog.int8";
			return true;
		case NUMERICOID:
			if (typmod >= 0)
				*lost = "precision and scale";
			*enc = "encrypted_numeric";
			*plain = "pg_catalog.numeric";
			return true;
		case FLOAT8OID:
			*enc = "encrypted_float8";
			*plain = "pg_catalog.float8";
			return true;
		case DATEOID:
			*enc = "encrypted_date";
			*plain = "pg_catalog.date";
			return true;
		case TIMESTAMPTZOID:
			if (typmod >= 0)
				*lost = "fractional-second precision";
			*enc = "encrypted_timestamptz";
			*plain = "pg_catalog.timestamptz";
			return true;
		case JSONBOID:
			*enc = "encrypted_jsonb";
			*plain = "pg_catalog.jsonb";
			return true;
	}
	return false;
}

/* The type to convert a column to before encrypting it, if there is one. */
static const char *
convert_first_to(Oid typid)
{
	switch (getBaseType(typid))
	{
		case JSONOID:
			return "jsonb";
		case FLOAT4OID:
			return "double precision";
		case BPCHAROID:
			return "text";
	}
	return NULL;
}

static char *default_master_key = NULL;

/* The master key for a key encrypt_column creates. */
static char *
master_key_for_new_key(void)
{
	Datum		d;
	bool		isnull;

	if (default_master_key != NULL && default_master_key[0] != '\0')
		return default_master_key;
	ColcryptCatalogExec("SELECT CASE WHEN count(*) = 1 THEN min(name) END FROM colcrypt.master_key",
						0, NULL, NULL, NULL, &d, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot choose a master key for the table's new data key"),
				 errhint("Name a data key, or set colcrypt.default_master_key.")));
	return TextDatumGetCString(d);
}

void
ColcryptLifecycleDefineSettings(void)
{
	DefineCustomIntVariable("colcrypt.lock_timeout",
							gettext_noop("Longest time colcrypt's own work waits for a lock another transaction holds on a table."),
							gettext_noop("Counting the values of a key version before destroying it skips tables that cannot hold the key and waits this long for the others; a table locked longer is reported, and only force => true destroys without its count."),
							&colcrypt_lock_timeout,
							5000, 0, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomStringVariable("colcrypt.default_master_key",
							   gettext_noop("Master key for the data keys encrypt_column creates."),
							   gettext_noop("Empty: the only master key, if there is exactly one."),
							   &default_master_key,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);
}


/*
 * A non-unique index with the column among its keys would be rebuilt
 * with the encrypted type's default operator class, which keeps plaintext
 * order and is made only when asked for by name or for a constraint
 * (ddl_guard.c): say so before anything is done, and what to do instead.
 */
static void
refuse_indexed_column(Oid relid, AttrNumber attnum, const char *colname, bool det)
{
	Relation	rel = relation_open(relid, NoLock);
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;

	relation_close(rel, NoLock);
	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index idx;
		bool		keyed = false;

		if (!HeapTupleIsValid(tup))
			continue;
		idx = (Form_pg_index) GETSTRUCT(tup);
		/* A constraint's index is rebuilt as such (ddl_guard.c allows it). */
		for (int i = 0; i < idx->indnkeyatts; i++)
			if (idx->indkey.values[i] == attnum && !idx->indisunique && !idx->indisexclusion)
				keyed = true;
		ReleaseSysCache(tup);
		if (keyed)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("column \"%s\" is a key of index \"%s\"", colname, get_rel_name(lfirst_oid(lc))),
					 errdetail("Rebuilt for the encrypted type, the index would keep the values in plaintext order."),
					 det ?
					 errhint("Drop the index (or the constraint that made it), encrypt the column, and index it with the operator class colcrypt.<type>_det_ops (equality and per-version uniqueness) or colcrypt.<type>_ord_ops (plaintext order, revealed).") :
					 errhint("Drop the index (or the constraint that made it), encrypt the column, and index it, if it must be, with the operator class colcrypt.<type>_ord_ops (plaintext order, revealed).")));
	}
}

/*
 * encrypt_column(tbl, col, key, deterministic): ALTER the column to its
 * encrypted type in place (a table rewrite under an exclusive lock), with
 * the table's own key (named after it) when no key is named.
 */
static Datum
encrypt_column_body(FunctionCallInfo fcinfo)
{
	Oid			relid;
	char	   *colname;
	char	   *keyname;
	bool		det = PG_NARGS() > 3 && !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
	AttrNumber	attnum;
	Oid			atttype;
	int32		atttypmod;
	Oid			attcoll;
	const char *enc;
	const char *plain;
	const char *lost;
	char	   *qualified;
	int64		rows;
	bool		created = false;
	StringInfoData sql;
	Oid			table_owner;
	ColcryptOwnerContext owner;

	ColcryptRequirePreload();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("table and column must not be null")));
	relid = PG_GETARG_OID(0);
	colname = NameStr(*PG_GETARG_NAME(1));
	attnum = get_attnum(relid, colname);
	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist", colname, get_rel_name(relid))));
	get_atttypetypmodcoll(relid, attnum, &atttype, &atttypmod, &attcoll);
	if (ColcryptIsEncryptedType(atttype))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("column \"%s\" is encrypted already", colname),
				 errhint("Move it to another key with ALTER TABLE ... ALTER COLUMN ... TYPE.")));
	if (convert_first_to(atttype) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of type %s cannot be encrypted without changing its values",
						colname, format_type_be(atttype)),
				 errdetail("Its values would read differently as %s.", convert_first_to(atttype)),
				 errhint("If that is acceptable, convert it first: ALTER TABLE %s ALTER COLUMN %s TYPE %s.",
						 get_rel_name(relid), quote_identifier(colname), convert_first_to(atttype))));
	if (!encrypted_type_for(atttype, atttypmod, &enc, &plain, &lost))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("no encrypted type for column \"%s\" of type %s", colname, format_type_be(atttype)),
				 errhint("Encrypted types hold text, bytea, int4, int8, numeric, float8, date, timestamptz and jsonb.")));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(relid)), get_rel_name(relid));
	table_owner = ColcryptTableOwner(relid);
	/* The lock ALTER TABLE takes anyway, now, so the count below is exact. */
	LockRelationOid(relid, AccessExclusiveLock);

	/* The key: named, or the table's own (created if missing). */
	if (!PG_ARGISNULL(2))
		keyname = text_to_cstring(PG_GETARG_TEXT_PP(2));
	else
		keyname = get_rel_name(relid);
	{
		ColcryptKeyMeta *meta = ColcryptGetKeyMetaByName(keyname, true);

		if (meta == NULL)
		{
			Oid			argtypes[2] = {TEXTOID, TEXTOID};
			Oid			create_fn;

			if (!PG_ARGISNULL(2))
				(void) ColcryptGetKeyMetaByName(keyname, false);	/* 42704 */
			/* Creating the table's key takes what create_key takes. */
			create_fn = LookupFuncName(list_make2(makeString(COLCRYPT_SCHEMA), makeString("create_key")),
									   2, argtypes, false);
			if (pg_proc_aclcheck(create_fn, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to create data key \"%s\" for the table", keyname),
						 errhint("Name an existing data key you may encrypt with, or have it created with colcrypt.create_key().")));
			/* The table's own key belongs to the table's owner. */
			ColcryptCreateKey(keyname, master_key_for_new_key(), table_owner);
			created = true;
			CommandCounterIncrement();
		}
		else if (PG_ARGISNULL(2) && !has_privs_of_role(GetUserId(), meta->owner))
		{
			/* A key named after the table, but someone else's: not implied. */
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("data key \"%s\" is not owned by the current role", keyname),
					 errdetail("A key named after the table is used without being named only when the current role owns it."),
					 errhint("Name the key to use explicitly.")));
		}
	}
	ColcryptCheckKeyPrivilege(ColcryptKeyIdFromName(keyname), COLCRYPT_PRIV_ENCRYPT);
	refuse_indexed_column(relid, attnum, colname, det);
	/* The rewrite runs as the table's owner, who encrypts. */
	if (!ColcryptRoleHasKeyPrivilege(table_owner, ColcryptKeyIdFromName(keyname), COLCRYPT_PRIV_ENCRYPT))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the owner of table %s may not encrypt with data key \"%s\"",
						get_rel_name(relid), keyname),
				 errdetail("encrypt_column rewrites the table as its owner, role \"%s\".",
						   GetUserNameFromId(table_owner, false)),
				 errhint("The key's owner can run: SELECT colcrypt.grant_key('%s', '%s', 'encrypt');",
						 keyname, GetUserNameFromId(table_owner, false))));

	qualified = psprintf("%s.%s", quote_identifier(get_namespace_name(get_rel_namespace(relid))),
						 quote_identifier(get_rel_name(relid)));
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT count(%s) FROM %s", quote_identifier(colname), qualified);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * The rewrite runs the table's own code (CHECK constraints, index
	 * expressions, domain checks): as its owner, as maintenance commands
	 * do, never with the caller's rights (a superuser's, say).
	 */
	ColcryptBecomeTableOwner(relid, false, &owner);
	if (SPI_execute(sql.data, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count the rows of %s", qualified);
	{
		bool		isnull;

		rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	resetStringInfo(&sql);
	appendStringInfo(&sql, "ALTER TABLE %s ALTER COLUMN %s TYPE colcrypt.%s(%s%s) USING %s::%s",
					 qualified, quote_identifier(colname), enc, quote_identifier(keyname),
					 det ? ", deterministic" : "", quote_identifier(colname), plain);
	if (SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not alter column %s of %s", colname, qualified);
	ColcryptRestoreUser(&owner);
	SPI_finish();

	ereport(NOTICE,
			(errmsg("encrypted " INT64_FORMAT " values of column \"%s\" of %s with data key \"%s\"%s",
					rows, colname, qualified, keyname,
					created ? " (created for this table)" : "")));
	if (lost != NULL)
		ereport(NOTICE,
				(errmsg("column \"%s\" no longer enforces the %s of %s on new values",
						colname, lost, format_type_with_typemod(atttype, atttypmod)),
				 errhint("Add a CHECK constraint if the application relies on it.")));
	ColcryptAuditAction("encrypt_column", "column",
						psprintf("%s.%s.%s", get_namespace_name(get_rel_namespace(relid)),
								 get_rel_name(relid), colname), 0,
						psprintf("data key %s%s, " INT64_FORMAT " values, %s", keyname,
								 created ? " (created)" : "", rows,
								 det ? "deterministic" : "randomized"));
	PG_RETURN_VOID();
}

COLCRYPT_AUDITED_FN(colcrypt_set_key_state, set_key_state_body, "state", "key")
COLCRYPT_AUDITED_FN(colcrypt_rotate_master_key, rotate_master_key_body, "rotate", "master_key")
COLCRYPT_AUDITED_FN(colcrypt_encrypt_column, encrypt_column_body, "encrypt_column", "column")
