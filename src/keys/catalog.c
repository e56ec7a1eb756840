/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Reading colcrypt's catalog tables and caching key metadata per
 *	  backend.
 *
 * Reads go straight to the tables through their primary key indexes with
 * the catalog snapshot, which PostgreSQL refreshes on every scan of a table
 * without a syscache.  So a read always sees the latest committed state
 * (plus this transaction's own changes), in any isolation level, in
 * parallel workers and on hot standbys, and needs no SQL privilege on the
 * tables (which PUBLIC cannot read).
 *
 * Cached metadata is thrown away when
 *	 - the shared catalog epoch moved: another backend committed a change
 *	   (primary only; shared memory is per server), or
 *	 - another backend is committing a change right now (the epoch is not
 *	   settled): its commit becomes visible before it can move the epoch,
 *	   and in between a third backend may already read the change (a new
 *	   active version) and commit values under it.  A statement whose
 *	   snapshot sees those values must see the version too, or a
 *	   deterministic lookup (_det_candidates) misses them: t/017 caught
 *	   such a lookup finding 201 of 202 rows just after a rotate_key.  So
 *	   the change is announced before it becomes visible (PRE_COMMIT), and
 *	   while it is, a check reloads (reads the catalog afresh) once per
 *	   snapshot, or
 *	 - a relcache invalidation names one of our tables: sent by every change
 *	   through ColcryptCatalogChanged, WAL-logged with the commit and so
 *	   replayed on standbys too, or
 *	 - this backend's own transaction that changed the catalog aborted.
 *
 * On a standby, a reload also removes destroyed key versions from the
 * server's shared key cache (forget_destroyed).  On a primary the destroying
 * transaction wiped them already; a standby's cache is out of the primary's
 * reach, and the replayed invalidation is how the standby learns of the
 * destroy, so there the first backend to use any data key after the replay
 * wipes it.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_namespace.h"
#include "executor/spi.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "colcrypt/audit.h"
#include "colcrypt/catalog.h"
#include "colcrypt/crypto.h"
#include "colcrypt/keycache.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/rel.h"
#include "utils/syscache.h"

/* ----------------------------------------------------------------------
 * Key ids and states
 * ----------------------------------------------------------------------
 */

uint32
ColcryptKeyIdFromName(const char *name)
{
	static const char label[] = "colcrypt/v1/key-id";
	size_t		namelen = strlen(name);
	uint8	   *buf = palloc(sizeof(label) + namelen);
	uint8		digest[32];

	memcpy(buf, label, sizeof(label));	/* including its NUL separator */
	memcpy(buf + sizeof(label), name, namelen);
	if (cc_sha256(buf, sizeof(label) + namelen, digest) != CC_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a key id")));
	pfree(buf);
	return (((uint32) digest[0] << 24) | ((uint32) digest[1] << 16) |
			((uint32) digest[2] << 8) | (uint32) digest[3]) & 0x1FFFFFFF;
}

static const char *const state_names[] = {
	[COLCRYPT_KEY_PRE_ACTIVATION] = "pre-activation",
	[COLCRYPT_KEY_ACTIVE] = "active",
	[COLCRYPT_KEY_DEACTIVATED] = "deactivated",
	[COLCRYPT_KEY_COMPROMISED] = "compromised",
	[COLCRYPT_KEY_DESTROYED] = "destroyed",
	[COLCRYPT_KEY_DESTROYED_COMPROMISED] = "destroyed-compromised",
};

const char *
ColcryptKeyStateName(ColcryptKeyState state)
{
	if ((int) state < 0 || (int) state >= (int) lengthof(state_names))
		return "unknown";
	return state_names[state];
}

bool
ColcryptKeyStateFromName(const char *name, ColcryptKeyState *state)
{
	for (int i = 0; i < (int) lengthof(state_names); i++)
	{
		if (strcmp(name, state_names[i]) == 0)
		{
			*state = (ColcryptKeyState) i;
			return true;
		}
	}
	return false;
}

/* ----------------------------------------------------------------------
 * Catalog relations
 * ----------------------------------------------------------------------
 */

typedef enum CatRel
{
	CAT_PROVIDER,
	CAT_MASTER_KEY,
	CAT_DATA_KEY,
	CAT_KEY_VERSION,
	CAT_KEY_GRANT,
	CAT_NRELS
} CatRel;

typedef struct CatRelInfo
{
	const char *relname;		/* table in schema colcrypt */
	const char *pkey;			/* its primary key index */
	Oid			relid;			/* resolved lazily, reset on invalidation */
	Oid			pkeyid;
} CatRelInfo;

/* Times the relcache callback reset catrels[] (see catrel_resolve). */
static uint64 catrels_resets = 0;

static CatRelInfo catrels[CAT_NRELS] = {
	[CAT_PROVIDER] = {"provider", "provider_pkey", InvalidOid, InvalidOid},
	[CAT_MASTER_KEY] = {"master_key", "master_key_pkey", InvalidOid, InvalidOid},
	[CAT_DATA_KEY] = {"data_key", "data_key_pkey", InvalidOid, InvalidOid},
	[CAT_KEY_VERSION] = {"data_key_version", "data_key_version_pkey", InvalidOid, InvalidOid},
	[CAT_KEY_GRANT] = {"key_grant", "key_grant_pkey", InvalidOid, InvalidOid},
};

Oid
ColcryptCatalogRelid(const char *relname)
{
	Oid			nsp = get_namespace_oid(COLCRYPT_SCHEMA, true);

	if (!OidIsValid(nsp))
		return InvalidOid;
	return get_relname_relid(relname, nsp);
}

/*
 * Resolve one catalog table; false when the extension is not installed.
 *
 * A lookup that misses the syscache reads pg_class, and taking its lock
 * processes pending invalidations, whose callback resets catrels[] when one
 * names our tables (every key rotation sends one).  Assigning the results
 * straight into catrels[] could leave relid reset by the second lookup
 * while pkeyid was set, and the answer was then "not installed": under
 * t/017's key rotations a pgbench client's statement failed with "master
 * key ... is missing from the catalog" (ColcryptFetchUnwrapInfo), and with
 * "data key with id ... does not exist" (load_meta) when autovacuum or
 * VACUUM had just invalidated the syscache entry of a primary key's name.
 * So the OIDs are kept only if no reset came during the lookups; otherwise
 * they are looked up again (from the syscache entries just loaded).
 */
static bool
catrel_resolve(CatRel which)
{
	CatRelInfo *c = &catrels[which];

	while (!OidIsValid(c->relid) || !OidIsValid(c->pkeyid))
	{
		uint64		resets = catrels_resets;
		Oid			relid = ColcryptCatalogRelid(c->relname);
		Oid			pkeyid = ColcryptCatalogRelid(c->pkey);

		if (!OidIsValid(relid) || !OidIsValid(pkeyid))
			return false;
		if (resets == catrels_resets)
		{
			c->relid = relid;
			c->pkeyid = pkeyid;
		}
	}
	return true;
}

/*
 * Open catalog table `which` with its primary key's OID in *pkeyid; NULL
 * when the extension is not installed.  The OIDs are copied before the
 * lock is taken: taking it processes invalidations, whose callback may
 * reset the cached ones.
 */
static Relation
catrel_open(CatRel which, Oid *pkeyid)
{
	Oid			relid;

	if (!catrel_resolve(which))
		return NULL;
	relid = catrels[which].relid;
	*pkeyid = catrels[which].pkeyid;
	return table_open(relid, AccessShareLock);
}

/* A column of a catalog tuple by name; the tables have a handful each. */
static Datum
getcol(HeapTuple tup, TupleDesc td, const char *col, bool *isnull)
{
	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), col) == 0)
			return heap_getattr(tup, att->attnum, td, isnull);
	}
	elog(ERROR, "colcrypt catalog column \"%s\" not found", col);
	return (Datum) 0;			/* keep compiler quiet */
}

static AttrNumber
colnum(Relation rel, const char *col)
{
	TupleDesc	td = RelationGetDescr(rel);

	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), col) == 0)
			return att->attnum;
	}
	elog(ERROR, "colcrypt catalog column \"%s\" not found", col);
	return InvalidAttrNumber;
}

static char *
getcol_text(HeapTuple tup, TupleDesc td, const char *col)
{
	bool		isnull;
	Datum		d = getcol(tup, td, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* Scan key on an int4 column. */
static void
key_int4(ScanKey k, Relation rel, const char *col, int32 value)
{
	ScanKeyInit(k, colnum(rel, col), BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(value));
}

/* Scan key on a text column. */
static void
key_text(ScanKey k, Relation rel, const char *col, const char *value)
{
	ScanKeyEntryInitialize(k, 0, colnum(rel, col), BTEqualStrategyNumber,
						   InvalidOid, C_COLLATION_OID, F_TEXTEQ,
						   CStringGetTextDatum(value));
}

/* ----------------------------------------------------------------------
 * Freshness: epoch, invalidation callbacks, transaction end
 * ----------------------------------------------------------------------
 */

static MemoryContext MetaContext = NULL;
static HTAB *meta_cache = NULL;
static uint64 meta_epoch = 0;	/* catalog epoch the cache was loaded at */
static uint64 meta_generation = 1;
static bool meta_stale = true;
static bool changed_in_xact = false;
/* The outermost subtransaction that changed the catalog (see subxact_cb). */
static SubTransactionId changed_subid = InvalidSubTransactionId;
static bool commit_announced = false;	/* ColcryptCatalogCommitBegins done */
static List *forget_at_commit = NIL;	/* (key_id, version) pairs, as int8 */
static bool callbacks_registered = false;

static void forget_destroyed(void);

/*
 * Which snapshot the last reload served while a change was being
 * committed (0: none, or the epoch was settled).
 */
static uint64 unsettled_mark = 0;

/*
 * Identifies what the active snapshot can see: equal marks, equal visible
 * commits.  0 when unknown (no active snapshot, or one not built from the
 * proc array), which makes the caller reload.
 */
static uint64
snapshot_mark(void)
{
	Snapshot	snap;

	if (!ActiveSnapshotSet())
		return 0;
	snap = GetActiveSnapshot();
#if PG_VERSION_NUM >= 140000
	return snap->snapXactCompletionCount;
#else
	(void) snap;
	return 0;					/* before 14: no such count; reload each time */
#endif
}

static void
catalog_relcache_cb(Datum arg, Oid relid)
{
	if (relid == InvalidOid)
	{
		meta_stale = true;
		for (int i = 0; i < CAT_NRELS; i++)
			catrels[i].relid = catrels[i].pkeyid = InvalidOid;
		catrels_resets++;
		return;
	}
	for (int i = 0; i < CAT_NRELS; i++)
	{
		if (relid == catrels[i].relid)
		{
			meta_stale = true;
			/* A dropped and recreated extension has new OIDs. */
			for (int j = 0; j < CAT_NRELS; j++)
				catrels[j].relid = catrels[j].pkeyid = InvalidOid;
			catrels_resets++;
			return;
		}
	}
}

static void
catalog_xact_cb(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:

			/*
			 * COMMIT PREPARED runs no callback of ours, so a prepared change
			 * would never move the epoch, nor wipe the keys it should.
			 */
			if (changed_in_xact)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that changes colcrypt's key catalog")));
			break;
		case XACT_EVENT_PRE_COMMIT:
			/* Announce the change before it becomes visible (see the top). */
			if (changed_in_xact && !commit_announced)
			{
				ColcryptCatalogCommitBegins();
				commit_announced = true;
			}
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (commit_announced)
				ColcryptCatalogCommitEnds();
			else if (changed_in_xact)
				ColcryptBumpCatalogEpoch();
			commit_announced = false;
			{
				ListCell   *lc;

				foreach(lc, forget_at_commit)
				{
					int64		kv = *(int64 *) lfirst(lc);

					ColcryptKeyCacheForget((uint32) (kv >> 32), (int64) (uint32) kv);
				}
			}
			list_free_deep(forget_at_commit);
			forget_at_commit = NIL;
			changed_in_xact = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* An error after PRE_COMMIT: the change never became visible. */
			if (commit_announced)
				ColcryptCatalogCommitEnds();
			commit_announced = false;
			/* The cache may hold this transaction's rolled-back changes. */
			if (changed_in_xact)
				meta_stale = true;
			list_free_deep(forget_at_commit);
			forget_at_commit = NIL;
			changed_in_xact = false;
			break;
		default:
			break;
	}
}

static void
catalog_subxact_cb(SubXactEvent event, SubTransactionId mySubid,
				   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && changed_in_xact)
	{
		meta_stale = true;
		/* A savepoint rolled back takes its changes (and its children's) along. */
		if (mySubid <= changed_subid)
			changed_in_xact = false;
	}
}

/*
 * A backend leaving between PRE_COMMIT and the end of its transaction
 * without the ABORT callback (an error while aborting that escalated)
 * must not leave the in-flight count up: every backend would reload its
 * metadata at every check until a restart.
 */
static void
catalog_exit_cb(int code, Datum arg)
{
	if (commit_announced)
	{
		ColcryptCatalogCommitEnds();
		commit_announced = false;
	}
}

static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	on_shmem_exit(catalog_exit_cb, (Datum) 0);
	CacheRegisterRelcacheCallback(catalog_relcache_cb, (Datum) 0);
	RegisterXactCallback(catalog_xact_cb, NULL);
	RegisterSubXactCallback(catalog_subxact_cb, NULL);
	callbacks_registered = true;
}

void
ColcryptCatalogCheckFreshness(void)
{
	uint64		epoch;

	register_callbacks();
	/*
	 * Read the epoch before loading anything, so a later bump is noticed;
	 * after the caller's snapshot (the read barrier), so a change that
	 * snapshot sees is either counted or still being committed.
	 */
	pg_read_barrier();
	epoch = ColcryptCatalogEpoch();
	if (!meta_stale && epoch == meta_epoch && meta_cache != NULL)
	{
		uint64		mark;

		if (ColcryptCatalogEpochSettled(epoch))
			return;

		/*
		 * A change is being committed.  Reloading once per snapshot is
		 * enough: the reload reads the catalog after that snapshot was
		 * taken, so it sees every change the snapshot can.  Reloading at
		 * every check instead would make every value of every backend pay
		 * for a reload for as long as the commit takes, which a
		 * synchronous standby that is down makes unbounded.
		 */
		mark = snapshot_mark();
		if (mark != 0 && mark == unsettled_mark)
			return;
	}

	if (MetaContext == NULL)
		MetaContext = AllocSetContextCreate(TopMemoryContext,
											"colcrypt key metadata",
											ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(MetaContext);

	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint32);
		ctl.entrysize = sizeof(ColcryptKeyMeta);
		ctl.hcxt = MetaContext;
		meta_cache = hash_create("colcrypt key metadata", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	meta_epoch = epoch;
	meta_stale = false;
	meta_generation++;
	unsettled_mark = ColcryptCatalogEpochSettled(epoch) ? 0 : snapshot_mark();

	/*
	 * After the flags: an invalidation while this reads the catalog marks
	 * the new cache stale again.  Only a standby needs it: a primary wipes
	 * its own cache when a destroy commits.
	 */
	if (RecoveryInProgress())
		forget_destroyed();
}

uint64
ColcryptMetaGeneration(void)
{
	return meta_generation;
}

bool
ColcryptMetaIsStale(void)
{
	return meta_stale;
}

void
ColcryptCatalogChanged(void)
{
	Oid			relid;

	register_callbacks();
	relid = ColcryptCatalogRelid(catrels[CAT_KEY_VERSION].relname);
	if (OidIsValid(relid))
		CacheInvalidateRelcacheByRelid(relid);
	if (!changed_in_xact || GetCurrentSubTransactionId() < changed_subid)
		changed_subid = GetCurrentSubTransactionId();
	changed_in_xact = true;
	meta_stale = true;
}

void
ColcryptForgetAtCommit(uint32 key_id, int32 version)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	int64	   *kv = palloc(sizeof(int64));

	*kv = ((int64) key_id << 32) | (uint32) version;
	forget_at_commit = lappend(forget_at_commit, kv);
	MemoryContextSwitchTo(old);
	/* Wipe it now too: a concurrent load after commit finds the new state. */
	ColcryptKeyCacheForget(key_id, version);
}

/*
 * Remove every destroyed key version of this database from the shared key
 * cache, a load in progress included (see the file header for why).  The
 * versions table has a row per version ever made, a few per key, so a scan
 * of it is cheap, and this runs only when metadata is reloaded; the cache
 * itself is only locked exclusively when it holds one of them.
 */
static void
forget_destroyed(void)
{
	Relation	rel;
	Oid			pkeyid;
	SysScanDesc scan;
	HeapTuple	tup;
	uint64	   *kvs = NULL;
	int			n = 0;
	int			cap = 0;

	if ((rel = catrel_open(CAT_KEY_VERSION, &pkeyid)) == NULL)
		return;
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		TupleDesc	td = RelationGetDescr(rel);
		bool		isnull;
		char	   *statename = getcol_text(tup, td, "state");
		ColcryptKeyState state;
		int32		key_id;
		int32		version;

		if (statename == NULL || !ColcryptKeyStateFromName(statename, &state) ||
			(state != COLCRYPT_KEY_DESTROYED && state != COLCRYPT_KEY_DESTROYED_COMPROMISED))
			continue;
		key_id = DatumGetInt32(getcol(tup, td, "key_id", &isnull));
		version = DatumGetInt32(getcol(tup, td, "version", &isnull));
		if (n == cap)
		{
			cap = Max(16, cap * 2);
			kvs = kvs ? repalloc(kvs, sizeof(uint64) * cap) : palloc(sizeof(uint64) * cap);
		}
		kvs[n++] = ((uint64) (uint32) key_id << 32) | (uint32) version;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (n > 0)
	{
		ColcryptKeyCacheForgetVersions(kvs, n);
		pfree(kvs);
	}
}

/* ----------------------------------------------------------------------
 * Key metadata
 * ----------------------------------------------------------------------
 */

static int
version_cmp(const void *a, const void *b)
{
	int32		va = ((const ColcryptKeyVersionMeta *) a)->version;
	int32		vb = ((const ColcryptKeyVersionMeta *) b)->version;

	return (va > vb) - (va < vb);
}

/* Fill meta (key_id already set) from the tables; false if no such key. */
static bool
load_meta(ColcryptKeyMeta *meta)
{
	Relation	rel;
	Oid			pkeyid;
	SysScanDesc scan;
	ScanKeyData skey;
	HeapTuple	tup;
	bool		found = false;
	List	   *versions = NIL;
	List	   *grants = NIL;
	ListCell   *lc;
	int			i;

	/* The key itself. */
	if ((rel = catrel_open(CAT_DATA_KEY, &pkeyid)) == NULL)
		return false;
	key_int4(&skey, rel, "key_id", (int32) meta->key_id);
	scan = systable_beginscan(rel, pkeyid, true, NULL, 1, &skey);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		TupleDesc	td = RelationGetDescr(rel);
		bool		isnull;
		char	   *name = getcol_text(tup, td, "name");

		strlcpy(meta->name, name, NAMEDATALEN);
		meta->owner = DatumGetObjectId(getcol(tup, td, "owner", &isnull));
		if (isnull)
			meta->owner = InvalidOid;
		found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!found)
		return false;

	/* Its versions. */
	if ((rel = catrel_open(CAT_KEY_VERSION, &pkeyid)) == NULL)
		return false;
	key_int4(&skey, rel, "key_id", (int32) meta->key_id);
	scan = systable_beginscan(rel, pkeyid, true, NULL, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		TupleDesc	td = RelationGetDescr(rel);
		bool		isnull;
		ColcryptKeyVersionMeta *v = palloc(sizeof(ColcryptKeyVersionMeta));
		char	   *state = getcol_text(tup, td, "state");

		v->version = DatumGetInt32(getcol(tup, td, "version", &isnull));
		if (state == NULL || !ColcryptKeyStateFromName(state, &v->state))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("data key \"%s\" version %d has an invalid state in the catalog",
							meta->name, v->version)));
		/* Destroyed, its copies not shredded yet (a crash came between)? */
		if ((v->state == COLCRYPT_KEY_DESTROYED || v->state == COLCRYPT_KEY_DESTROYED_COMPROMISED))
		{
			(void) getcol(tup, td, "shredded_at", &isnull);
			if (isnull)
				ColcryptRequestShred(MyDatabaseId);
		}
		versions = lappend(versions, v);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	/* Grants on it. */
	if ((rel = catrel_open(CAT_KEY_GRANT, &pkeyid)) == NULL)
		return false;
	key_int4(&skey, rel, "key_id", (int32) meta->key_id);
	scan = systable_beginscan(rel, pkeyid, true, NULL, 1, &skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		TupleDesc	td = RelationGetDescr(rel);
		bool		isnull;
		ColcryptGrantMeta *g = palloc(sizeof(ColcryptGrantMeta));
		char	   *priv = getcol_text(tup, td, "privilege");

		g->grantee = DatumGetObjectId(getcol(tup, td, "grantee", &isnull));
		g->privs = (priv && strcmp(priv, "encrypt") == 0) ? COLCRYPT_PRIV_ENCRYPT :
			(priv && strcmp(priv, "decrypt") == 0) ? COLCRYPT_PRIV_DECRYPT : 0;
		grants = lappend(grants, g);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	/* Copy into the cache's context. */
	meta->nversions = list_length(versions);
	meta->versions = MemoryContextAlloc(MetaContext,
										sizeof(ColcryptKeyVersionMeta) * Max(meta->nversions, 1));
	i = 0;
	foreach(lc, versions)
		meta->versions[i++] = *(ColcryptKeyVersionMeta *) lfirst(lc);
	qsort(meta->versions, meta->nversions, sizeof(ColcryptKeyVersionMeta), version_cmp);
	meta->active_version = 0;
	for (i = 0; i < meta->nversions; i++)
		if (meta->versions[i].state == COLCRYPT_KEY_ACTIVE)
			meta->active_version = meta->versions[i].version;

	meta->ngrants = list_length(grants);
	meta->grants = MemoryContextAlloc(MetaContext,
									  sizeof(ColcryptGrantMeta) * Max(meta->ngrants, 1));
	i = 0;
	foreach(lc, grants)
		meta->grants[i++] = *(ColcryptGrantMeta *) lfirst(lc);

	list_free_deep(versions);
	list_free_deep(grants);
	return true;
}

ColcryptKeyMeta *
ColcryptGetKeyMeta(uint32 key_id, bool missing_ok)
{
	ColcryptKeyMeta *meta;
	bool		found;

	ColcryptCatalogCheckFreshness();
	meta = hash_search(meta_cache, &key_id, HASH_FIND, NULL);
	if (meta == NULL)
	{
		ColcryptKeyMeta tmp;

		memset(&tmp, 0, sizeof(tmp));
		tmp.key_id = key_id;
		if (!load_meta(&tmp))
		{
			if (missing_ok)
				return NULL;
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("data key with id %u does not exist", key_id),
					 errhint("The value was encrypted with a key this database does not have.")));
		}
		/* An invalidation during the load makes what we read suspect. */
		if (meta_stale)
			return ColcryptGetKeyMeta(key_id, missing_ok);
		meta = hash_search(meta_cache, &key_id, HASH_ENTER, &found);
		*meta = tmp;
	}
	return meta;
}

ColcryptKeyMeta *
ColcryptGetKeyMetaByName(const char *name, bool missing_ok)
{
	ColcryptKeyMeta *meta = NULL;

	if (strlen(name) > 0 && strlen(name) <= COLCRYPT_MAX_NAME_LEN)
		meta = ColcryptGetKeyMeta(ColcryptKeyIdFromName(name), true);
	if (meta != NULL && strcmp(meta->name, name) == 0)
		return meta;
	if (!missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("data key \"%s\" does not exist", name),
				 errhint("Create it with colcrypt.create_key(name, master_key).")));
	return NULL;
}

ColcryptKeyVersionMeta *
ColcryptFindVersion(ColcryptKeyMeta *meta, int32 version)
{
	ColcryptKeyVersionMeta key = {version, 0};

	return bsearch(&key, meta->versions, meta->nversions,
				   sizeof(ColcryptKeyVersionMeta), version_cmp);
}

/* ----------------------------------------------------------------------
 * What unwrapping needs
 * ----------------------------------------------------------------------
 */

/* Fetch the first row of table `which` whose pkey column `col` is `value`. */
static bool
lookup_by_name(CatRel which, const char *col, const char *value,
			   void (*fill) (HeapTuple, TupleDesc, ColcryptUnwrapInfo *),
			   ColcryptUnwrapInfo *info)
{
	Relation	rel;
	Oid			pkeyid;
	SysScanDesc scan;
	ScanKeyData skey;
	HeapTuple	tup;
	bool		found = false;

	if ((rel = catrel_open(which, &pkeyid)) == NULL)
		return false;
	key_text(&skey, rel, col, value);
	scan = systable_beginscan(rel, pkeyid, true, NULL, 1, &skey);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		fill(tup, RelationGetDescr(rel), info);
		found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

static void
fill_master_key(HeapTuple tup, TupleDesc td, ColcryptUnwrapInfo *info)
{
	info->provider = getcol_text(tup, td, "provider");
	info->key_ref = getcol_text(tup, td, "key_ref");
}

static void
fill_provider(HeapTuple tup, TupleDesc td, ColcryptUnwrapInfo *info)
{
	bool		isnull;
	Datum		opts = getcol(tup, td, "options", &isnull);

	info->kind = getcol_text(tup, td, "kind");
	info->options = isnull ? NULL : DatumGetJsonbPCopy(opts);
}

bool
ColcryptFetchUnwrapInfo(uint32 key_id, int32 version, ColcryptUnwrapInfo *info)
{
	Relation	rel;
	Oid			pkeyid;
	SysScanDesc scan;
	ScanKeyData skey[2];
	HeapTuple	tup;
	bool		found = false;

	memset(info, 0, sizeof(*info));
	info->key_id = key_id;
	info->version = version;
	if ((rel = catrel_open(CAT_KEY_VERSION, &pkeyid)) == NULL)
		return false;
	key_int4(&skey[0], rel, "key_id", (int32) key_id);
	key_int4(&skey[1], rel, "version", version);
	scan = systable_beginscan(rel, pkeyid, true, NULL, 2, skey);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		TupleDesc	td = RelationGetDescr(rel);
		bool		isnull;
		Datum		w = getcol(tup, td, "wrapped_key", &isnull);
		char	   *state = getcol_text(tup, td, "state");

		info->wrapped = isnull ? NULL : DatumGetByteaPCopy(w);
		info->wrap_meta = getcol_text(tup, td, "wrap_meta");
		info->master_key = getcol_text(tup, td, "master_key");
		if (state == NULL || !ColcryptKeyStateFromName(state, &info->state))
			info->state = COLCRYPT_KEY_DESTROYED;
		found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!found || info->master_key == NULL)
		return found;

	if (!lookup_by_name(CAT_MASTER_KEY, "name", info->master_key,
						fill_master_key, info) ||
		!lookup_by_name(CAT_PROVIDER, "name", info->provider,
						fill_provider, info))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("master key \"%s\" of data key version %d is missing from the catalog",
						info->master_key, version)));
	return true;
}

/* ----------------------------------------------------------------------
 * Writing
 * ----------------------------------------------------------------------
 */

static Oid
catalog_owner(void)
{
	Oid			nsp = get_namespace_oid(COLCRYPT_SCHEMA, false);
	HeapTuple	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for namespace %u", nsp);
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

uint64
ColcryptCatalogExec(const char *sql, int nargs, Oid *argtypes, Datum *values,
					const char *nulls, Datum *result, bool *result_isnull)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	MemoryContext caller = CurrentMemoryContext;
	uint64		processed;
	int			rc;

	/*
	 * As the catalog's owner, and with a search_path the caller cannot
	 * populate (else a function or operator of the caller's could run with
	 * the owner's rights).  Transaction abort restores both if this errors.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(catalog_owner(),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "colcrypt catalog statement failed: %s", SPI_result_code_string(rc));
	processed = SPI_processed;
	if (result != NULL)
	{
		*result_isnull = true;
		*result = (Datum) 0;
		if (SPI_tuptable != NULL && SPI_processed > 0)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
			{
				Form_pg_attribute att = TupleDescAttr(SPI_tuptable->tupdesc, 0);
				MemoryContext old = MemoryContextSwitchTo(caller);

				*result = datumCopy(d, att->attbyval, att->attlen);
				MemoryContextSwitchTo(old);
				*result_isnull = false;
			}
		}
	}
	SPI_finish();
	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return processed;
}
