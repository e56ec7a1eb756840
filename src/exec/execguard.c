/*-------------------------------------------------------------------------
 *
 * execguard.c
 *	  What the executor must check that no comparison checks: plaintext
 *	  order handed out by an index, and who a foreign key check runs for.
 *
 * Plaintext order.  An index whose operator class orders plaintext (the
 * default btree class of an encrypted type, or its explicit twin
 * encrypted_<type>_ord_ops) returns rows in plaintext order without
 * comparing anything at query time: "ORDER BY age LIMIT 10", or with
 * enable_sort off any ORDER BY, a min()/max() through the index, an
 * index-only scan.  No comparison runs, so no privilege check would fire.
 * So before every ExecutorRun (each FETCH of a cursor included, and in
 * parallel workers) every index scan and index-only scan of the plan on
 * such an index needs the decrypt privilege on the key of each encrypted
 * key column, for the role running it at that moment.  Bitmap scans return
 * rows in physical order, and their conditions compare (and check).
 *
 * Who asks.  Each ExecutorRun and ExecutorFinish is reported to the keys
 * layer on entry and exit (ColcryptAskerPush/Pop), so that a foreign key
 * check, which PostgreSQL runs as a table owner, can be attributed to the
 * role whose statement caused it (keyaccess.c).
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/genam.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_opfamily.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "colcrypt/batch.h"
#include "colcrypt/keys.h"
#include "colcrypt/types.h"

static ExecutorRun_hook_type prev_executor_run = NULL;
static ExecutorFinish_hook_type prev_executor_finish = NULL;

/* ----------------------------------------------------------------------
 * Indexes that keep plaintext order
 * ----------------------------------------------------------------------
 */

#define MAX_ORDER_KEYS INDEX_MAX_KEYS

typedef struct IndexOrder
{
	Oid			indexoid;		/* hash key */
	int			nkeys;			/* key columns in plaintext order */
	int32		typmods[MAX_ORDER_KEYS];	/* their type modifiers */
} IndexOrder;

static HTAB *index_orders = NULL;

static void
index_orders_invalidate(Datum arg, Oid relid)
{
	if (index_orders == NULL)
		return;
	if (!OidIsValid(relid))
	{
		hash_destroy(index_orders);
		index_orders = NULL;
	}
	else
		hash_search(index_orders, &relid, HASH_REMOVE, NULL);
}

static void
opfamily_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	index_orders_invalidate(arg, InvalidOid);
}

/* Whether a btree operator family of an encrypted type orders plaintext. */
bool
ColcryptOpfamilyOrdersPlaintext(Oid opfamily)
{
	HeapTuple	tup = SearchSysCache1(OPFAMILYOID, ObjectIdGetDatum(opfamily));
	Form_pg_opfamily fam;
	bool		result;

	if (!HeapTupleIsValid(tup))
		return false;
	fam = (Form_pg_opfamily) GETSTRUCT(tup);
	/* The det_ops families order ciphertext bytes. */
	result = fam->opfmethod == BTREE_AM_OID &&
		!(fam->opfnamespace == get_namespace_oid(COLCRYPT_SCHEMA, true) &&
		  strstr(NameStr(fam->opfname), "_det_ops") != NULL);
	ReleaseSysCache(tup);
	return result;
}

static IndexOrder *
index_order(Relation irel)
{
	Oid			indexoid = RelationGetRelid(irel);
	IndexOrder *io;
	bool		found;

	if (index_orders == NULL)
	{
		HASHCTL		ctl;
		static bool registered = false;

		if (!registered)
		{
			CacheRegisterRelcacheCallback(index_orders_invalidate, (Datum) 0);
			CacheRegisterSyscacheCallback(OPFAMILYOID, opfamily_invalidate, (Datum) 0);
			registered = true;
		}
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(IndexOrder);
		ctl.hcxt = TopMemoryContext;
		index_orders = hash_create("colcrypt index orders", 32, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	io = hash_search(index_orders, &indexoid, HASH_ENTER, &found);
	if (!found)
	{
		io->nkeys = 0;
		for (int i = 0; i < IndexRelationGetNumberOfKeyAttributes(irel); i++)
		{
			if (!ColcryptIsEncryptedType(irel->rd_opcintype[i]) ||
				!ColcryptOpfamilyOrdersPlaintext(irel->rd_opfamily[i]))
				continue;
			io->typmods[io->nkeys++] = TupleDescAttr(RelationGetDescr(irel), i)->atttypmod;
		}
	}
	return io;
}

/* Refuse (42501) an index scan in plaintext order to a role without decrypt. */
static void
check_index_scan(Relation irel)
{
	IndexOrder *io;

	if (irel == NULL)
		return;
	io = index_order(irel);
	for (int i = 0; i < io->nkeys; i++)
	{
		int32		typmod = io->typmods[i];

		if (typmod < 0)
		{
			/* An expression of an encrypted type: its key is not known. */
			if (!superuser())
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to scan index \"%s\", which keeps encrypted values in plaintext order",
								RelationGetRelationName(irel)),
						 errdetail("Its key names no data key, so only a superuser may scan it.")));
			continue;
		}
		if (!ColcryptHasKeyPrivilege(ColcryptTypmodKeyId(typmod), COLCRYPT_PRIV_DECRYPT))
		{
			/* The usual error and audit event, with where it came from. */
			ErrorContextCallback *save = error_context_stack;

			PG_TRY();
			{
				ColcryptCheckKeyPrivilege(ColcryptTypmodKeyId(typmod), COLCRYPT_PRIV_DECRYPT);
			}
			PG_CATCH();
			{
				error_context_stack = save;
				errcontext("scan of index \"%s\", which returns rows in plaintext order",
						   RelationGetRelationName(irel));
				PG_RE_THROW();
			}
			PG_END_TRY();
		}
	}
}

static bool
check_plan_node(PlanState *ps, void *context)
{
	if (ps == NULL)
		return false;
	if (IsA(ps, IndexScanState))
		check_index_scan(((IndexScanState *) ps)->iss_RelationDesc);
	else if (IsA(ps, IndexOnlyScanState))
		check_index_scan(((IndexOnlyScanState *) ps)->ioss_RelationDesc);
	return planstate_tree_walker(ps, check_plan_node, context);
}

/* ----------------------------------------------------------------------
 * Hooks
 * ----------------------------------------------------------------------
 */

static void
guard_executor_run(QueryDesc *queryDesc, ScanDirection direction, uint64 count,
				   bool execute_once)
{
	if (queryDesc->planstate != NULL && ColcryptTypesInstalled())
		check_plan_node(queryDesc->planstate, NULL);

	ColcryptAskerPush();
	PG_TRY();
	{
		if (prev_executor_run)
			prev_executor_run(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		ColcryptAskerPop();
	}
	PG_END_TRY();
}

static void
guard_executor_finish(QueryDesc *queryDesc)
{
	ColcryptAskerPush();
	PG_TRY();
	{
		if (prev_executor_finish)
			prev_executor_finish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		ColcryptAskerPop();
	}
	PG_END_TRY();
}

void
ColcryptExecGuardInit(void)
{
	prev_executor_run = ExecutorRun_hook;
	ExecutorRun_hook = guard_executor_run;
	prev_executor_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = guard_executor_finish;
}
