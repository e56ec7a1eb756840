/*-------------------------------------------------------------------------
 *
 * ddl_guard.c
 *	  Refuses columns of an encrypted type that do not name a data key.
 *
 * A value without a key is encrypted under the transit key, which lives
 * only in this server's memory: stored in a table it would become
 * unreadable at the next restart.  So every attribute that stores data
 * (tables, partitioned tables, materialized views, foreign tables and
 * composite types) and whose type is an encrypted type, an array of one or
 * a domain over one, must carry a type modifier.  Checked by an object
 * access hook after CREATE TABLE (and CREATE TABLE AS, CREATE TYPE AS),
 * ALTER TABLE ADD COLUMN and ALTER COLUMN TYPE.
 *
 * Indexes: a hash index would keep hash codes made with a per-server key
 * (compare.c) and is refused, as is hash partitioning; a btree index with
 * the default operator class keeps values in plaintext order and gets a
 * WARNING saying so; the det_ops classes are refused on randomized columns,
 * where no lookup could ever use them.
 *
 * For the same reason as columns, an expression the catalog keeps (a column or domain
 * default, a CHECK constraint, a view or rule, an index expression or
 * predicate, a trigger's WHEN, a policy, a SQL-standard function body) must
 * not hold a constant under the transit key: after a restart it could never
 * be decrypted again, and a DEFAULT would break every insert.  Such
 * constants come from literals written as the encrypted type; written as
 * the plain type ('x'::text) they are stored as the plain literal and
 * encrypted under the column's key each time they are used.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_am.h"
#include "catalog/pg_attrdef.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_index.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_policy.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_rewrite.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "colcrypt/batch.h"
#include "colcrypt/envelope.h"
#include "commands/defrem.h"
#include "parser/parse_type.h"
#include "access/genam.h"
#include "nodes/nodeFuncs.h"
#include "tcop/utility.h"
#include "utils/partcache.h"
#include "colcrypt/types.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

static object_access_hook_type prev_object_access_hook = NULL;
static ProcessUtility_hook_type prev_process_utility_hook = NULL;

/* The typmod a column effectively has: its own, or its domain's. */
static int32
effective_typmod(Oid typid, int32 typmod)
{
	while (typmod < 0)
	{
		HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
		Form_pg_type typ;

		if (!HeapTupleIsValid(tup))
			break;
		typ = (Form_pg_type) GETSTRUCT(tup);
		if (typ->typtype != TYPTYPE_DOMAIN)
		{
			ReleaseSysCache(tup);
			break;
		}
		typid = typ->typbasetype;
		typmod = typ->typtypmod;
		ReleaseSysCache(tup);
	}
	/* An array of a domain that names the key. */
	if (typmod < 0)
	{
		Oid			elem = get_element_type(typid);

		if (OidIsValid(elem))
			return effective_typmod(elem, -1);
	}
	return typmod;
}

static bool
stores_data(char relkind)
{
	return relkind == RELKIND_RELATION || relkind == RELKIND_PARTITIONED_TABLE ||
		relkind == RELKIND_MATVIEW || relkind == RELKIND_FOREIGN_TABLE ||
		relkind == RELKIND_COMPOSITE_TYPE;
}

/* Check one relation's attributes (attnum 0: all of them). */
static void
check_relation(Oid relid, AttrNumber only)
{
	Relation	rel = RelationIdGetRelation(relid);
	char		relkind;
	Relation	attrel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;

	/*
	 * The relcache has the relation from the moment it is created; the
	 * syscache sees it only after the next command counter increment.
	 */
	if (!RelationIsValid(rel))
		return;
	relkind = rel->rd_rel->relkind;
	RelationClose(rel);
	if (!stores_data(relkind))
		return;
	attrel = table_open(AttributeRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_attribute_attrelid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	/* SnapshotSelf: the attributes were written by this very command. */
	scan = systable_beginscan(attrel, AttributeRelidNumIndexId, true,
							  SnapshotSelf, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_attribute att = (Form_pg_attribute) GETSTRUCT(tup);
		Oid			typid = att->atttypid;
		Oid			elem;

		if (att->attnum <= 0 || att->attisdropped || (only != 0 && att->attnum != only))
			continue;
		elem = get_element_type(getBaseType(typid));
		if (!ColcryptIsEncryptedType(typid) &&
			!(OidIsValid(elem) && ColcryptIsEncryptedType(elem)))
			continue;
		if (effective_typmod(typid, att->atttypmod) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_DEFINITION),
					 errmsg("column \"%s\" of type %s must name a data key",
							NameStr(att->attname), format_type_be(typid)),
					 errdetail("An encrypted column stores values under a data key given as the type modifier."),
					 errhint("Declare it as, for example, %s(customers).",
							 format_type_be(OidIsValid(elem) ? elem : getBaseType(typid)))));

		/*
		 * Deterministic encryption of a small domain: whoever may encrypt
		 * with the key can encrypt every value and compare (README, threat
		 * model).  Said once, when the column is made.
		 */
		if (ColcryptTypmodIsPadded(effective_typmod(typid, att->atttypmod)))
		{
			Oid			plain = ColcryptTypeByOid(getBaseType(OidIsValid(elem) ? elem : typid))->plain_type;

			if (get_typlen(plain) > 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_COLUMN_DEFINITION),
						 errmsg("column \"%s\": padding applies to variable-length types only",
								NameStr(att->attname)),
						 errdetail("Every %s value has the same length already.", format_type_be(plain))));
		}
		if (ColcryptTypmodIsDeterministic(effective_typmod(typid, att->atttypmod)))
		{
			Oid			plain = ColcryptTypeByOid(getBaseType(OidIsValid(elem) ? elem : typid))->plain_type;

			if (plain == INT4OID || plain == DATEOID)
				ereport(WARNING,
						(errmsg("column \"%s\" encrypts %s values deterministically",
								NameStr(att->attname), format_type_be(plain)),
						 errdetail("A role that may encrypt with its data key can encrypt every %s value and compare ciphertexts: deterministic encryption hides a small domain only from roles that may not encrypt.",
								   format_type_be(plain)),
						 errhint("Use a randomized column unless equality lookups need it, and grant encrypt on its key sparingly.")));
		}
	}
	systable_endscan(scan);
	table_close(attrel, AccessShareLock);
}

/* ----------------------------------------------------------------------
 * Transit-key constants in stored expressions
 * ----------------------------------------------------------------------
 */

static bool
find_transit_const(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Const))
	{
		Const	   *c = (Const *) node;

		/*
		 * A stored literal of an array, composite or range holding encrypted
		 * values: its elements were encrypted under the transit key (input
		 * passes no column modifier down to them).
		 */
		if (!c->constisnull && !ColcryptIsEncryptedType(c->consttype) &&
			ColcryptTypeHoldsEncrypted(c->consttype))
		{
			*(Const **) context = c;
			return true;
		}
		if (!c->constisnull && ColcryptIsEncryptedType(c->consttype))
		{
			struct varlena *v = PG_DETOAST_DATUM_PACKED(c->constvalue);
			cc_envelope env;

			if (cc_envelope_parse((const uint8 *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v),
								  &env) == CC_ENV_OK &&
				env.key_id == CC_TRANSIT_KEY_ID)
			{
				*(Const **) context = c;
				return true;
			}
		}
		return false;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, find_transit_const, context, 0);
	return expression_tree_walker(node, find_transit_const, context);
}

/* Check one stored node tree (the text of a pg_node_tree column). */
static void
check_node_tree(Datum tree, const char *what)
{
	Node	   *node = stringToNode(TextDatumGetCString(tree));
	Const	   *found = NULL;

	if (find_transit_const(node, &found))
	{
		if (!ColcryptIsEncryptedType(found->consttype))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("%s cannot hold a literal of type %s", what,
							format_type_be(found->consttype)),
					 errdetail("The encrypted values inside a literal of an array, composite or range type are encrypted under the server's transit key, which does not survive a restart."),
					 errhint("Build the value from plain literals, for example ARRAY['value'::text]::%s; its elements are then encrypted under the column's key when used.",
							 format_type_be(found->consttype))));
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s cannot hold a literal of type %s", what,
						format_type_be(found->consttype)),
				 errdetail("A literal of an encrypted type that names no key is encrypted under the server's transit key, which does not survive a restart."),
				 errhint("Write the literal as its plain type, for example 'value'::%s; it is then encrypted under the column's key when used.",
						 format_type_be(ColcryptTypeByOid(getBaseType(found->consttype))->plain_type))));
	}
}

/*
 * Scan catalog rows (just written: SnapshotSelf) matching one or two oid
 * keys and check the named pg_node_tree columns.
 */
static void
check_catalog_trees(Oid catalog, Oid index, AttrNumber key1, Oid value1,
					AttrNumber key2, int16 value2,
					const AttrNumber *cols, int ncols, const char *what)
{
	Relation	rel = table_open(catalog, AccessShareLock);
	ScanKeyData keys[2];
	int			nkeys = 1;
	SysScanDesc scan;
	HeapTuple	tup;

	ScanKeyInit(&keys[0], key1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(value1));
	if (key2 != InvalidAttrNumber)
	{
		ScanKeyInit(&keys[1], key2, BTEqualStrategyNumber, F_INT2EQ, Int16GetDatum(value2));
		nkeys = 2;
	}
	scan = systable_beginscan(rel, index, true, SnapshotSelf, nkeys, keys);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		for (int i = 0; i < ncols; i++)
		{
			bool		isnull;
			Datum		d = heap_getattr(tup, cols[i], RelationGetDescr(rel), &isnull);

			if (!isnull)
				check_node_tree(d, what);
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/*
 * The key columns of a new index on encrypted values.  Allowed: a btree
 * with colcrypt.encrypted_<type>_det_ops on a deterministic column
 * (ciphertext order); in plaintext order (a WARNING says what that
 * reveals), a btree with colcrypt.encrypted_<type>_ord_ops, the explicit
 * opt-in, and the indexes of UNIQUE, PRIMARY KEY and EXCLUDE constraints
 * (and CREATE UNIQUE INDEX), which can only have the default class and
 * are asked for by the constraint.  Refused: a non-unique index with the
 * default btree class (CREATE INDEX without a class: plaintext order
 * nobody asked for), hash indexes (hash codes keyed per server start),
 * and any index whose key holds encrypted values inside an array,
 * composite, range or domain over one (their operator classes order or
 * hash the plaintexts).  INCLUDE columns are stored, not ordered.
 */
static void
check_index_opclasses(Oid indexoid)
{
	Relation	rel = table_open(IndexRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	ScanKeyInit(&key, Anum_pg_index_indexrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(indexoid));
	scan = systable_beginscan(rel, IndexRelidIndexId, true, SnapshotSelf, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_index idx = (Form_pg_index) GETSTRUCT(tup);
		bool		isnull;
		oidvector  *classes = (oidvector *) DatumGetPointer(
			heap_getattr(tup, Anum_pg_index_indclass, RelationGetDescr(rel), &isnull));
		Relation	irel = RelationIdGetRelation(indexoid);
		const char *iname = RelationIsValid(irel) ? pstrdup(RelationGetRelationName(irel)) : "?";
		Oid		   *keytypes = palloc0(sizeof(Oid) * Max(idx->indnkeyatts, 1));

		if (RelationIsValid(irel))
		{
			for (int i = 0; i < idx->indnkeyatts; i++)
				keytypes[i] = TupleDescAttr(RelationGetDescr(irel), i)->atttypid;
			RelationClose(irel);
		}
		for (int i = 0; i < idx->indnkeyatts; i++)
		{
			HeapTuple	oc = SearchSysCache1(CLAOID, ObjectIdGetDatum(classes->values[i]));
			Form_pg_opclass opc;
			AttrNumber	attno = idx->indkey.values[i];
			const char *colname = attno > 0 ? get_attname(idx->indrelid, attno, true) : NULL;
			Oid			keytype = keytypes[i];

			if (!HeapTupleIsValid(oc))
				continue;
			opc = (Form_pg_opclass) GETSTRUCT(oc);
			if (attno > 0)
				keytype = get_atttype(idx->indrelid, attno);
			if (ColcryptIsEncryptedType(opc->opcintype))
			{
				bool		ours = opc->opcnamespace == get_namespace_oid(COLCRYPT_SCHEMA, true);
				bool		det_ops = ours && strstr(NameStr(opc->opcname), "_det_ops") != NULL;
				bool		ord_ops = ours && strstr(NameStr(opc->opcname), "_ord_ops") != NULL;
				const char *tname = ColcryptTypeByOid(opc->opcintype)->name;

				if (opc->opcmethod == HASH_AM_OID)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("hash indexes on encrypted values are not supported"),
							 errdetail("Hash codes of encrypted values are keyed per server start, so a hash index would not survive a restart."),
							 errhint("On a deterministic column, use a btree index with the operator class colcrypt.%s_det_ops.",
									 tname)));
				if (det_ops && attno > 0)
				{
					Oid			typid;
					int32		typmod;
					Oid			collid;

					get_atttypetypmodcoll(idx->indrelid, attno, &typid, &typmod, &collid);

					if (typmod < 0 || !ColcryptTypmodIsDeterministic(typmod))
						ereport(ERROR,
								(errcode(ERRCODE_WRONG_OBJECT_TYPE),
								 errmsg("operator class %s needs a deterministic column", NameStr(opc->opcname)),
								 errdetail("Column \"%s\" is encrypted with randomized encryption, whose ciphertexts no lookup can find.",
										   colname ? colname : "?")));
				}
				else if (opc->opcmethod == BTREE_AM_OID && !det_ops && !ord_ops &&
						 !idx->indisunique && !idx->indisexclusion)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("index \"%s\" would keep encrypted values in plaintext order", iname),
							 errdetail("An index with the default operator class of %s orders plaintexts: whoever reads its files learns the order of the values%s%s%s. It is made only when asked for by name, or for a constraint.",
									   tname, colname ? " of column \"" : "", colname ? colname : "", colname ? "\"" : ""),
							 errhint("For equality lookups and uniqueness on a deterministic column, use the operator class colcrypt.%s_det_ops; to accept the plaintext order, name colcrypt.%s_ord_ops (CREATE [UNIQUE] INDEX ... (col colcrypt.%s_ord_ops)).",
									 tname, tname, tname)));
				else if (opc->opcmethod == BTREE_AM_OID && !det_ops)
					ereport(WARNING,
							(errmsg("index \"%s\" keeps encrypted values in plaintext order", iname),
							 errdetail("Whoever can read the index files learns the order of the values%s%s%s; scanning it needs the decrypt privilege, and every index access decrypts.",
									   colname ? " of column \"" : "", colname ? colname : "", colname ? "\"" : "")));
			}
			else if (ColcryptTypeHoldsEncrypted(keytype) || ColcryptTypeHoldsEncrypted(opc->opcintype))
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("index \"%s\" cannot have a key of type %s, which holds encrypted values",
								iname, format_type_be(keytype)),
						 errdetail("Its operator class would order or hash the plaintexts inside (an array's elements, a composite's fields), keeping their order in the index files or hash codes keyed per server start."),
						 errhint("Index a column of an encrypted type itself, or add the column to INCLUDE.")));
			ReleaseSysCache(oc);
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/* Stored expressions created or altered by this command. */
static void
check_stored_expressions(Oid classId, Oid objectId, int subId)
{
	switch (classId)
	{
		case AttrDefaultRelationId:
			{
				AttrNumber	cols[] = {Anum_pg_attrdef_adbin};

				check_catalog_trees(AttrDefaultRelationId, AttrDefaultIndexId,
									Anum_pg_attrdef_adrelid, objectId,
									Anum_pg_attrdef_adnum, (int16) subId,
									cols, lengthof(cols), "a column default");
				break;
			}
		case ConstraintRelationId:
			{
				AttrNumber	cols[] = {Anum_pg_constraint_conbin};

				check_catalog_trees(ConstraintRelationId, ConstraintOidIndexId,
									Anum_pg_constraint_oid, objectId, InvalidAttrNumber, 0,
									cols, lengthof(cols), "a constraint");
				break;
			}
		case RewriteRelationId:
			{
				AttrNumber	cols[] = {Anum_pg_rewrite_ev_qual, Anum_pg_rewrite_ev_action};

				check_catalog_trees(RewriteRelationId, RewriteOidIndexId,
									Anum_pg_rewrite_oid, objectId, InvalidAttrNumber, 0,
									cols, lengthof(cols), "a view or rule");
				break;
			}
		case TriggerRelationId:
			{
				AttrNumber	cols[] = {Anum_pg_trigger_tgqual};

				check_catalog_trees(TriggerRelationId, TriggerOidIndexId,
									Anum_pg_trigger_oid, objectId, InvalidAttrNumber, 0,
									cols, lengthof(cols), "a trigger condition");
				break;
			}
		case PolicyRelationId:
			{
				AttrNumber	cols[] = {Anum_pg_policy_polqual, Anum_pg_policy_polwithcheck};

				check_catalog_trees(PolicyRelationId, PolicyOidIndexId,
									Anum_pg_policy_oid, objectId, InvalidAttrNumber, 0,
									cols, lengthof(cols), "a policy");
				break;
			}
		case ProcedureRelationId:
			{
				AttrNumber	cols[] = {Anum_pg_proc_prosqlbody};

				check_catalog_trees(ProcedureRelationId, ProcedureOidIndexId,
									Anum_pg_proc_oid, objectId, InvalidAttrNumber, 0,
									cols, lengthof(cols), "a function body");
				break;
			}
		case TypeRelationId:
			{
				AttrNumber	cols[] = {Anum_pg_type_typdefaultbin};

				check_catalog_trees(TypeRelationId, TypeOidIndexId,
									Anum_pg_type_oid, objectId, InvalidAttrNumber, 0,
									cols, lengthof(cols), "a domain default");
				break;
			}
		case RelationRelationId:
			{
				AttrNumber	cols[] = {Anum_pg_index_indexprs, Anum_pg_index_indpred};

				if (subId == 0)
				{
					check_catalog_trees(IndexRelationId, IndexRelidIndexId,
										Anum_pg_index_indexrelid, objectId, InvalidAttrNumber, 0,
										cols, lengthof(cols), "an index");
					check_index_opclasses(objectId);
				}
				break;
			}
		default:
			break;
	}
}

static void
colcrypt_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					   int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access != OAT_POST_CREATE && access != OAT_POST_ALTER)
		return;
	/* Nothing to guard until the extension's types exist. */
	if (!OidIsValid(get_namespace_oid(COLCRYPT_SCHEMA, true)))
		return;
	check_stored_expressions(classId, objectId, subId);
	if (classId != RelationRelationId)
		return;
	if (access == OAT_POST_CREATE || subId > 0)
		check_relation(objectId, (AttrNumber) subId);
}

/*
 * After CREATE TABLE ... PARTITION BY: no partition key that holds
 * encrypted values.  Hash partitions would route by hash codes keyed per
 * server start; range and list partitions keep their bounds as literals
 * (under the transit key) and tell whoever can read one partition which
 * plaintexts its rows hold.
 */
static void
check_partition_key(CreateStmt *stmt)
{
	Oid			relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	Relation	rel;
	PartitionKey key;

	if (!OidIsValid(relid))
		return;
	rel = relation_open(relid, NoLock);
	key = RelationGetPartitionKey(rel);
	if (key != NULL)
	{
		for (int i = 0; i < key->partnatts; i++)
			if (ColcryptTypeHoldsEncrypted(key->parttypid[i]))
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("partitioning by an encrypted value is not supported"),
						 key->strategy == PARTITION_STRATEGY_HASH ?
						 errdetail("Hash codes of encrypted values are keyed per server start, so rows would be routed differently after a restart.") :
						 errdetail("Each partition's bounds would tell whoever can read one partition which plaintexts its rows hold, and the bounds would be stored under the transit key, which does not survive a restart."),
						 errhint("Partition by a plain column.")));
	}
	relation_close(rel, NoLock);
}

/*
 * Whether an index keeps rows of encrypted values in plaintext order (an
 * ord_ops index): CLUSTER by it would store the table itself in that
 * order, for anyone who may read the table (or its files) to see.
 */
static bool
index_orders_plaintext(Oid indexoid)
{
	Relation	irel = index_open(indexoid, AccessShareLock);
	bool		result = false;

	for (int i = 0; i < IndexRelationGetNumberOfKeyAttributes(irel); i++)
		if (ColcryptTypeHoldsEncrypted(irel->rd_opcintype[i]) &&
			ColcryptOpfamilyOrdersPlaintext(irel->rd_opfamily[i]))
			result = true;
	index_close(irel, AccessShareLock);
	return result;
}

static void
refuse_cluster(Oid indexoid)
{
	if (OidIsValid(indexoid) && index_orders_plaintext(indexoid))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot cluster on index \"%s\", which keeps encrypted values in plaintext order",
						get_rel_name(indexoid)),
				 errdetail("The table's rows would be stored in plaintext order, which anyone who may read the table would see.")));
}

/* CLUSTER ... USING and ALTER TABLE ... CLUSTER ON an ord_ops index. */
static void
check_cluster(Node *parsetree)
{
	if (IsA(parsetree, ClusterStmt))
	{
		ClusterStmt *stmt = (ClusterStmt *) parsetree;
		Oid			relid;

		if (stmt->relation == NULL)
			return;				/* tables marked before: never such an index */
		relid = RangeVarGetRelid(stmt->relation, NoLock, true);
		if (!OidIsValid(relid))
			return;
		if (stmt->indexname != NULL)
			refuse_cluster(get_relname_relid(stmt->indexname, get_rel_namespace(relid)));
		else
		{
			Relation	rel = relation_open(relid, AccessShareLock);
			List	   *indexes = RelationGetIndexList(rel);
			ListCell   *lc;

			relation_close(rel, AccessShareLock);
			foreach(lc, indexes)
			{
				HeapTuple	itup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));

				if (HeapTupleIsValid(itup))
				{
					if (((Form_pg_index) GETSTRUCT(itup))->indisclustered)
						refuse_cluster(lfirst_oid(lc));
					ReleaseSysCache(itup);
				}
			}
		}
	}
	else if (IsA(parsetree, AlterTableStmt))
	{
		AlterTableStmt *stmt = (AlterTableStmt *) parsetree;
		ListCell   *lc;
		Oid			relid = InvalidOid;

		foreach(lc, stmt->cmds)
		{
			AlterTableCmd *cmd = (AlterTableCmd *) lfirst(lc);

			if (cmd->subtype != AT_ClusterOn)
				continue;
			if (!OidIsValid(relid))
				relid = RangeVarGetRelid(stmt->relation, NoLock, true);
			if (OidIsValid(relid))
				refuse_cluster(get_relname_relid(cmd->name, get_rel_namespace(relid)));
		}
	}
}

/* CREATE TYPE ... AS RANGE over a subtype that holds encrypted values. */
static void
check_range(CreateRangeStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->params)
	{
		DefElem    *d = (DefElem *) lfirst(lc);

		if (strcmp(d->defname, "subtype") == 0)
		{
			Oid			subtype = typenameTypeId(NULL, defGetTypeName(d));

			if (ColcryptTypeHoldsEncrypted(subtype))
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("range types over %s are not supported", format_type_be(subtype)),
						 errdetail("A range's bounds name no data key: they would be encrypted under the server's transit key, which does not survive a restart, and ordering them needs their plaintexts.")));
		}
	}
}

static void
colcrypt_process_utility(PlannedStmt *pstmt, const char *queryString,
						 bool readOnlyTree, ProcessUtilityContext context,
						 ParamListInfo params, QueryEnvironment *queryEnv,
						 DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	bool		installed = OidIsValid(get_namespace_oid(COLCRYPT_SCHEMA, true));

	if (installed)
	{
		if (IsA(parsetree, CreateRangeStmt))
			check_range((CreateRangeStmt *) parsetree);
		else if (IsA(parsetree, ClusterStmt) || IsA(parsetree, AlterTableStmt))
			check_cluster(parsetree);
	}

	if (prev_process_utility_hook)
		prev_process_utility_hook(pstmt, queryString, readOnlyTree, context,
								  params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (IsA(parsetree, CreateStmt) && ((CreateStmt *) parsetree)->partspec != NULL && installed)
		check_partition_key((CreateStmt *) parsetree);
}

void
ColcryptDdlGuardInit(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = colcrypt_object_access;
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = colcrypt_process_utility;
}
