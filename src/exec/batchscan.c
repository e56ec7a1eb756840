/*-------------------------------------------------------------------------
 *
 * batchscan.c
 *	  The batch scan: a sequential scan that hands encrypted attributes on
 *	  as batch values (batch.h), so that their plaintexts are opened many
 *	  values per crypto call instead of one.
 *
 * Planning: set_rel_pathlist_hook offers a CustomPath next to the
 * sequential scan of a plain table (or materialized view) whose encrypted
 * columns the query reads.  It costs what the sequential scan costs, less
 * the per-value decryption overhead it saves, so it replaces the
 * sequential scan; index scans and everything else are unchanged.  It is
 * not offered for the target of UPDATE/DELETE/MERGE, for tables with row
 * marks (FOR UPDATE, EvalPlanQual), for TABLESAMPLE, nor when the query
 * reads a system column: the scan tuple it produces is a virtual tuple.
 *
 * Execution: the node reads up to colcrypt.batch_size rows (and at most
 * BATCH_MAX_PAGES heap pages, which it keeps pinned so the rows' bytes stay
 * put) and keeps their deformed values, then returns them one at a time as
 * virtual tuples whose encrypted attributes are batch values and whose
 * other attributes point into the pinned pages.  Quals and projection run in
 * ExecScan as for a sequential scan.  Everything a row returned is valid
 * for lasts until the node is asked for the row after the batch's last:
 * the executor's contract is only "until the next call".  The scan tuple
 * holds only the columns the query reads (custom_scan_tlist), so a plain
 * column list needs no projection; the node projects (and so evaluates
 * casts such as col::text itself) when there is more.  If nothing has been
 * decrypted after BATCH_PROBE_ROWS rows, the rest of the scan passes rows
 * through unbatched, as a sequential scan would.
 *
 * Why a scan node and not, say, a batching aggregate: the scan is where
 * every decrypting query starts, so one node serves filters, projections,
 * aggregates and joins above it, and nothing above needs to know.  Nodes
 * that keep rows (sort, hash, material, tuplestores, tuple queues) copy
 * them, which flattens batch values to ciphertext.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/relscan.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/extensible.h"
#include "nodes/makefuncs.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/prep.h"
#include "optimizer/restrictinfo.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "colcrypt/batch.h"
#include "colcrypt/types.h"

/* Before 15, every custom scan was assumed to project. */
#ifndef CUSTOMPATH_SUPPORT_PROJECTION
#define CUSTOMPATH_SUPPORT_PROJECTION 0
#endif

/* Pages whose pins one batch may hold at most. */
#define BATCH_MAX_PAGES 8

/*
 * Rows after which a scan that has decrypted nothing stops batching (a
 * deterministic equality filter compares ciphertexts and decrypts nothing,
 * and for it batching is pure overhead).
 */
#define BATCH_PROBE_ROWS 1024

bool		colcrypt_batch_scan = true;
int			colcrypt_batch_size = 256;

static set_rel_pathlist_hook_type prev_set_rel_pathlist_hook = NULL;

typedef struct BatchScanState
{
	CustomScanState css;
	int			nenc;			/* encrypted attributes batched */
	AttrNumber *enc;			/* their numbers */
	int			maxatt;			/* attributes deformed per row */
	int			nout;			/* attributes of the scan tuple */
	AttrNumber *map;			/* the table attribute of each */
	int		   *encpos;			/* and its index in enc, or -1 */
	int			batch_size;
	TupleTableSlot *scanslot;	/* the table scan's slot */
	Datum	   *values;			/* the batch's rows: batch_size x maxatt */
	bool	   *isnull;
	Datum	   *encvals;		/* batch values: batch_size x nenc */
	Buffer		pinned[BATCH_MAX_PAGES];	/* pages the rows point into */
	int			npinned;
	int			nrows;			/* rows in the batch */
	int			next;			/* next row to return */
	bool		exhausted;		/* the table scan returned its last row */
	bool		passthrough;	/* batching stopped: nothing was decrypted */
	uint64		rows_batched;	/* rows returned from batches */
	uint64		cut_by_size;	/* batches ended at COLCRYPT_BATCH_MAX_BYTES */
	ColcryptBatch *batch;
} BatchScanState;

static Plan *plan_batch_path(PlannerInfo *root, RelOptInfo *rel, CustomPath *best_path,
							 List *tlist, List *clauses, List *custom_plans);
static Node *create_batch_state(CustomScan *cscan);
static void batch_begin(CustomScanState *node, EState *estate, int eflags);
static TupleTableSlot *batch_exec(CustomScanState *node);
static void batch_end(CustomScanState *node);
static void batch_rescan(CustomScanState *node);
static void batch_explain(CustomScanState *node, List *ancestors, ExplainState *es);

static const CustomPathMethods batch_path_methods = {
	.CustomName = "ColcryptBatchScan",
	.PlanCustomPath = plan_batch_path,
};

static const CustomScanMethods batch_scan_methods = {
	.CustomName = "ColcryptBatchScan",
	.CreateCustomScanState = create_batch_state,
};

static const CustomExecMethods batch_exec_methods = {
	.CustomName = "ColcryptBatchScan",
	.BeginCustomScan = batch_begin,
	.ExecCustomScan = batch_exec,
	.EndCustomScan = batch_end,
	.ReScanCustomScan = batch_rescan,
	.ExplainCustomScan = batch_explain,
};

/* ----------------------------------------------------------------------
 * Planning
 * ----------------------------------------------------------------------
 */

/*
 * Whether clause is "det_col = <pseudo-constant>" with colcrypt's equality,
 * on a type and collation where equal plaintexts have equal ciphertexts:
 * compare.c decides those by comparing ciphertexts, without decrypting.
 */
static bool
is_ciphertext_equality(Node *clause, Index rti)
{
	OpExpr	   *op;
	Var		   *var;
	Node	   *other;
	const ColcryptTypeDesc *t;
	char	   *opname;
	Oid			coll;

	if (!IsA(clause, OpExpr) || list_length(((OpExpr *) clause)->args) != 2)
		return false;
	op = (OpExpr *) clause;
	if (IsA(linitial(op->args), Var))
		var = linitial(op->args), other = lsecond(op->args);
	else if (IsA(lsecond(op->args), Var))
		var = lsecond(op->args), other = linitial(op->args);
	else
		return false;
	if (var->varno != rti || var->varattno <= 0 || var->vartypmod < 0 ||
		!ColcryptTypmodIsDeterministic(var->vartypmod) ||
		!ColcryptIsEncryptedType(var->vartype) ||
		contain_var_clause(other) || contain_volatile_functions(other))
		return false;
	t = ColcryptTypeByOid(getBaseType(var->vartype));
	coll = op->inputcollid;
	if (!t->bitwise_eq ||
		!(!OidIsValid(coll) || coll == C_COLLATION_OID || coll == DEFAULT_COLLATION_OID))
		return false;
	opname = get_opname(op->opno);
	return opname != NULL && strcmp(opname, "=") == 0 &&
		get_func_namespace(op->opfuncid) == get_namespace_oid(COLCRYPT_SCHEMA, true);
}

/*
 * The encrypted attributes of rel the query reads; NIL if it cannot batch,
 * or if nothing it reads would be decrypted: columns only compared as
 * ciphertexts ("det_col = 'x'") gain nothing from a batch, and a sequential
 * scan does less per row.
 */
static List *
batchable_attributes(PlannerInfo *root, RelOptInfo *rel, Index rti, Oid relid)
{
	Bitmapset  *attrs = NULL;
	Bitmapset  *decrypting = NULL;
	List	   *enc = NIL;
	bool		any_decrypting = false;
	ListCell   *lc;
	int			x = -1;

	pull_varattnos((Node *) rel->reltarget->exprs, rti, &decrypting);
	foreach(lc, rel->baserestrictinfo)
	{
		Node	   *clause = (Node *) ((RestrictInfo *) lfirst(lc))->clause;

		pull_varattnos(clause, rti, &attrs);
		if (!is_ciphertext_equality(clause, rti))
			pull_varattnos(clause, rti, &decrypting);
	}
	attrs = bms_add_members(attrs, decrypting);
	while ((x = bms_next_member(attrs, x)) >= 0)
	{
		AttrNumber	attno = x + FirstLowInvalidHeapAttributeNumber;

		if (attno < 0)
			return NIL;			/* a system column: needs a heap tuple */
		if (attno > 0 && ColcryptIsEncryptedType(get_atttype(relid, attno)))
		{
			enc = lappend_int(enc, attno);
			any_decrypting |= bms_is_member(x, decrypting);
		}
	}
	return any_decrypting ? enc : NIL;
}

static void
batch_set_rel_pathlist(PlannerInfo *root, RelOptInfo *rel, Index rti, RangeTblEntry *rte)
{
	Path	   *seq = NULL;
	CustomPath *cpath;
	List	   *enc;
	ListCell   *lc;
	Cost		saved;

	if (prev_set_rel_pathlist_hook)
		prev_set_rel_pathlist_hook(root, rel, rti, rte);

	if (!colcrypt_batch_scan ||
		rte->rtekind != RTE_RELATION || rte->inh || rte->tablesample != NULL ||
		(rte->relkind != RELKIND_RELATION && rte->relkind != RELKIND_MATVIEW) ||
		(rel->reloptkind != RELOPT_BASEREL && rel->reloptkind != RELOPT_OTHER_MEMBER_REL) ||
		rti == (Index) root->parse->resultRelation ||
		get_plan_rowmark(root->rowMarks, rti) != NULL ||
		!ColcryptTypesInstalled())
		return;

	foreach(lc, rel->pathlist)
	{
		Path	   *p = (Path *) lfirst(lc);

		if (p->pathtype == T_SeqScan && p->param_info == NULL &&
			(seq == NULL || p->total_cost < seq->total_cost))
			seq = p;
	}
	if (seq == NULL)
		return;
	enc = batchable_attributes(root, rel, rti, rte->relid);
	if (enc == NIL)
		return;

	/*
	 * What batching saves: most of the per-value cost of a crypto call, half
	 * an operator's cost per encrypted value read, at most half the CPU part
	 * of the scan.
	 */
	saved = 0.5 * cpu_operator_cost * rel->tuples * list_length(enc);
	saved = Min(saved, 0.5 * (seq->total_cost - seq->startup_cost));

	cpath = makeNode(CustomPath);
	cpath->path.pathtype = T_CustomScan;
	cpath->path.parent = rel;
	cpath->path.pathtarget = rel->reltarget;
	cpath->path.param_info = NULL;
	cpath->path.parallel_aware = false;
	cpath->path.parallel_safe = rel->consider_parallel;
	cpath->path.parallel_workers = 0;
	cpath->path.rows = seq->rows;
	cpath->path.startup_cost = seq->startup_cost;
	cpath->path.total_cost = seq->total_cost - saved;
	cpath->path.pathkeys = NIL;
	cpath->flags = CUSTOMPATH_SUPPORT_PROJECTION;	/* ExecScan projects */
	cpath->custom_paths = NIL;
	cpath->custom_private = enc;
	cpath->methods = &batch_path_methods;
	add_path(rel, &cpath->path);
}

/*
 * The scan tuple: the columns the targetlist and quals read, those of the
 * targetlist first and in its order, so that a targetlist of plain columns
 * needs no projection.  (When the planner puts a projection on the scan, the
 * targetlist comes later, from the path's target, whose columns these are.)  NIL (the table's own row type) when a whole-row
 * reference needs every column.
 */
static List *
scan_tlist(Index relid, List *tlist, List *quals)
{
	List	   *vars = pull_var_clause((Node *) list_concat_copy(tlist, quals),
									   PVC_RECURSE_PLACEHOLDERS);
	List	   *result = NIL;
	Bitmapset  *seen = NULL;
	ListCell   *lc;

	foreach(lc, vars)
	{
		Var		   *var = lfirst_node(Var, lc);

		Assert(var->varno == relid && var->varlevelsup == 0);
		if (var->varattno <= 0)
			return NIL;
		if (bms_is_member(var->varattno, seen))
			continue;
		seen = bms_add_member(seen, var->varattno);
		result = lappend(result, makeTargetEntry((Expr *) copyObject(var),
												 list_length(result) + 1, NULL, false));
	}
	return result;
}

static Plan *
plan_batch_path(PlannerInfo *root, RelOptInfo *rel, CustomPath *best_path,
				List *tlist, List *clauses, List *custom_plans)
{
	CustomScan *cscan = makeNode(CustomScan);

	cscan->scan.plan.targetlist = tlist;
	cscan->scan.plan.qual = extract_actual_clauses(clauses, false);
	cscan->scan.scanrelid = rel->relid;
	cscan->flags = best_path->flags;
	cscan->custom_plans = NIL;
	cscan->custom_exprs = NIL;
	cscan->custom_private = best_path->custom_private;
	cscan->custom_scan_tlist = scan_tlist(rel->relid,
										  tlist ? tlist : best_path->path.pathtarget->exprs,
										  cscan->scan.plan.qual);
	cscan->methods = &batch_scan_methods;
	return &cscan->scan.plan;
}

/* ----------------------------------------------------------------------
 * Execution
 * ----------------------------------------------------------------------
 */

static Node *
create_batch_state(CustomScan *cscan)
{
	BatchScanState *s = palloc0(sizeof(BatchScanState));

	NodeSetTag(s, T_CustomScanState);
	s->css.flags = cscan->flags;
	s->css.methods = &batch_exec_methods;
	return (Node *) s;
}

static void
batch_begin(CustomScanState *node, EState *estate, int eflags)
{
	BatchScanState *s = (BatchScanState *) node;
	CustomScan *cscan = (CustomScan *) node->ss.ps.plan;
	Relation	rel = node->ss.ss_currentRelation;
	ListCell   *lc;
	int			i = 0;

	s->nenc = list_length(cscan->custom_private);
	s->enc = palloc(sizeof(AttrNumber) * s->nenc);
	foreach(lc, cscan->custom_private)
		s->enc[i++] = (AttrNumber) lfirst_int(lc);

	/* Where each attribute of the scan tuple comes from. */
	if (cscan->custom_scan_tlist != NIL)
	{
		s->nout = list_length(cscan->custom_scan_tlist);
		s->map = palloc(sizeof(AttrNumber) * s->nout);
		i = 0;
		foreach(lc, cscan->custom_scan_tlist)
			s->map[i++] = castNode(Var, lfirst_node(TargetEntry, lc)->expr)->varattno;
	}
	else
	{
		s->nout = RelationGetDescr(rel)->natts;
		s->map = palloc(sizeof(AttrNumber) * s->nout);
		for (i = 0; i < s->nout; i++)
			s->map[i] = i + 1;
	}
	s->encpos = palloc(sizeof(int) * s->nout);
	s->maxatt = 0;
	for (i = 0; i < s->nout; i++)
	{
		s->encpos[i] = -1;
		for (int c = 0; c < s->nenc; c++)
			if (s->enc[c] == s->map[i])
				s->encpos[i] = c;
		s->maxatt = Max(s->maxatt, s->map[i]);
	}
	for (i = 0; i < s->nenc; i++)
		s->maxatt = Max(s->maxatt, s->enc[i]);

	s->batch_size = colcrypt_batch_size;
	s->scanslot = table_slot_create(rel, NULL);
	s->values = palloc(sizeof(Datum) * s->batch_size * s->maxatt);
	s->isnull = palloc(sizeof(bool) * s->batch_size * s->maxatt);
	s->encvals = palloc(sizeof(Datum) * s->batch_size * s->nenc);
	s->batch = ColcryptBatchCreate(CurrentMemoryContext, s->nenc, s->batch_size);
	{
		Relation	rel = node->ss.ss_currentRelation;
		char	   *relname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
														 RelationGetRelationName(rel));

		for (int c = 0; c < s->nenc; c++)
			ColcryptBatchSetOrigin(s->batch, c,
								   psprintf("column %s of relation %s",
											quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel), s->enc[c] - 1)->attname)),
											relname));
	}
}

/* Drop the last batch: wipe its plaintexts, release its pages. */
static void
drop_batch(BatchScanState *s)
{
	ColcryptBatchReset(s->batch);
	for (int i = 0; i < s->npinned; i++)
		ReleaseBuffer(s->pinned[i]);
	s->npinned = 0;
	s->nrows = 0;
	s->next = 0;
}

/* Read the next batch of rows; false at the end of the table. */
static bool
fill_batch(BatchScanState *s)
{
	ScanState  *ss = &s->css.ss;
	TableScanDesc scan = ss->ss_currentScanDesc;
	TupleTableSlot *slot = s->scanslot;

	/*
	 * Rows of a heap table are kept as their deformed values, which point
	 * into the page; the page stays pinned (once per page, not per row)
	 * until the batch is dropped.  Another table AM gives no such
	 * guarantee: its values last until the next row, so batches of one.
	 */
	int			limit = TTS_IS_BUFFERTUPLE(slot) ? s->batch_size : 1;

	drop_batch(s);
	if (s->exhausted)
		return false;
	if (scan == NULL)
		scan = ss->ss_currentScanDesc =
			table_beginscan(ss->ss_currentRelation, ss->ps.state->es_snapshot, 0, NULL);

	while (s->nrows < limit)
	{
		Datum	   *values = s->values + s->nrows * s->maxatt;
		bool	   *isnull = s->isnull + s->nrows * s->maxatt;

		if (!table_scan_getnextslot(scan, ForwardScanDirection, slot))
		{
			s->exhausted = true;
			break;
		}
		slot_getsomeattrs(slot, s->maxatt);
		memcpy(values, slot->tts_values, sizeof(Datum) * s->maxatt);
		memcpy(isnull, slot->tts_isnull, sizeof(bool) * s->maxatt);
		ColcryptBatchSetRow(s->batch, s->nrows, &slot->tts_tid);
		for (int c = 0; c < s->nenc; c++)
		{
			int			a = s->enc[c] - 1;

			if (!isnull[a])
				s->encvals[s->nrows * s->nenc + c] =
					ColcryptBatchAdd(s->batch, c, s->nrows, values[a]);
		}
		s->nrows++;

		/*
		 * Bounded by bytes too: forged or huge values (detoasted here,
		 * opened beside) must not multiply memory by the batch size.
		 */
		if (ColcryptBatchBytes(s->batch) >= COLCRYPT_BATCH_MAX_BYTES)
		{
			if (s->nrows < limit)
				s->cut_by_size++;
			break;
		}

		if (TTS_IS_BUFFERTUPLE(slot))
		{
			Buffer		buf = ((BufferHeapTupleTableSlot *) slot)->buffer;

			if (s->npinned == 0 || s->pinned[s->npinned - 1] != buf)
			{
				IncrBufferRefCount(buf);
				s->pinned[s->npinned++] = buf;
				if (s->npinned == BATCH_MAX_PAGES)
					break;
			}
		}
	}
	return s->nrows > 0;
}

/* A row as a sequential scan would return it, with no batch values. */
static TupleTableSlot *
next_unbatched(BatchScanState *s)
{
	ScanState  *ss = &s->css.ss;
	TupleTableSlot *slot = s->scanslot;
	TupleTableSlot *dst = ss->ss_ScanTupleSlot;

	ExecClearTuple(dst);
	if (s->exhausted ||
		!table_scan_getnextslot(ss->ss_currentScanDesc, ForwardScanDirection, slot))
	{
		s->exhausted = true;
		return dst;
	}
	slot_getsomeattrs(slot, s->maxatt);
	for (int i = 0; i < s->nout; i++)
	{
		dst->tts_values[i] = slot->tts_values[s->map[i] - 1];
		dst->tts_isnull[i] = slot->tts_isnull[s->map[i] - 1];
	}
	return ExecStoreVirtualTuple(dst);
}

static TupleTableSlot *
batch_next(ScanState *ss)
{
	BatchScanState *s = (BatchScanState *) ss;
	TupleTableSlot *dst = ss->ss_ScanTupleSlot;
	Datum	   *values;
	bool	   *isnull;

	if (s->passthrough)
		return next_unbatched(s);
	if (s->next >= s->nrows)
	{
		const ColcryptBatchStats *st = ColcryptBatchGetStats(s->batch);

		if (s->rows_batched >= BATCH_PROBE_ROWS && st->calls == 0 && st->alone == 0)
		{
			drop_batch(s);
			s->passthrough = true;
			return next_unbatched(s);
		}
		if (!fill_batch(s))
			return ExecClearTuple(dst);
	}
	s->rows_batched++;

	ExecClearTuple(dst);
	values = s->values + s->next * s->maxatt;
	isnull = s->isnull + s->next * s->maxatt;
	for (int i = 0; i < s->nout; i++)
	{
		int			a = s->map[i] - 1;
		int			c = s->encpos[i];

		dst->tts_isnull[i] = isnull[a];
		dst->tts_values[i] = c >= 0 && !isnull[a] ?
			s->encvals[s->next * s->nenc + c] : values[a];
	}
	s->next++;
	return ExecStoreVirtualTuple(dst);
}

static bool
batch_recheck(ScanState *ss, TupleTableSlot *slot)
{
	/* Not offered where EvalPlanQual could recheck (see the planner hook). */
	return true;
}

static TupleTableSlot *
batch_exec(CustomScanState *node)
{
	return ExecScan(&node->ss, batch_next, batch_recheck);
}

static void
batch_end(CustomScanState *node)
{
	BatchScanState *s = (BatchScanState *) node;

	if (s->batch)
	{
		drop_batch(s);
		ExecDropSingleTupleTableSlot(s->scanslot);
	}
	if (node->ss.ss_currentScanDesc)
		table_endscan(node->ss.ss_currentScanDesc);
}

static void
batch_rescan(CustomScanState *node)
{
	BatchScanState *s = (BatchScanState *) node;

	drop_batch(s);
	s->exhausted = false;
	s->passthrough = false;
	s->rows_batched = 0;
	if (node->ss.ss_currentScanDesc)
		table_rescan(node->ss.ss_currentScanDesc, NULL);
	ExecScanReScan(&node->ss);
}

static void
batch_explain(CustomScanState *node, List *ancestors, ExplainState *es)
{
	BatchScanState *s = (BatchScanState *) node;
	Relation	rel = node->ss.ss_currentRelation;
	List	   *names = NIL;

	for (int c = 0; c < s->nenc; c++)
		names = lappend(names, NameStr(TupleDescAttr(RelationGetDescr(rel), s->enc[c] - 1)->attname));
	ExplainPropertyList("Batched Columns", names, es);
	ExplainPropertyInteger("Batch Size", NULL, s->batch_size, es);
	if (es->analyze)
	{
		const ColcryptBatchStats *st = ColcryptBatchGetStats(s->batch);

		ExplainPropertyInteger("Values Asked For", NULL, (int64) st->asked, es);
		ExplainPropertyInteger("Decrypt Calls", NULL, (int64) st->calls, es);
		ExplainPropertyInteger("Values Decrypted", NULL, (int64) st->opened, es);
		ExplainPropertyInteger("Values Opened Alone", NULL, (int64) st->alone, es);
		if (s->cut_by_size > 0)
			ExplainPropertyInteger("Batches Ended by Size", NULL, (int64) s->cut_by_size, es);
		if (s->passthrough)
			ExplainPropertyInteger("Batching Stopped After Rows", NULL, (int64) s->rows_batched, es);
	}
}

/* ----------------------------------------------------------------------
 * Settings and hook
 * ----------------------------------------------------------------------
 */

void
ColcryptBatchScanDefineSettings(void)
{
	DefineCustomBoolVariable("colcrypt.batch_scan",
							 gettext_noop("Whether sequential scans of tables with encrypted columns decrypt in batches."),
							 NULL,
							 &colcrypt_batch_scan,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("colcrypt.batch_size",
							gettext_noop("Rows the batch scan reads and decrypts at a time."),
							gettext_noop("A batch also ends after 8 heap pages, and after 1 MB of ciphertext."),
							&colcrypt_batch_size,
							256, 1, 4096,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);
}

void
ColcryptBatchScanInit(void)
{
	RegisterCustomScanMethods(&batch_scan_methods);
	prev_set_rel_pathlist_hook = set_rel_pathlist_hook;
	set_rel_pathlist_hook = batch_set_rel_pathlist;
}
