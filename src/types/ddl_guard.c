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
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "colcrypt/types.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

static object_access_hook_type prev_object_access_hook = NULL;

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
	}
	systable_endscan(scan);
	table_close(attrel, AccessShareLock);
}

static void
colcrypt_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					   int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (classId != RelationRelationId)
		return;
	if (access == OAT_POST_CREATE)
		check_relation(objectId, (AttrNumber) subId);
	else if (access == OAT_POST_ALTER && subId > 0)
		check_relation(objectId, (AttrNumber) subId);
}

void
ColcryptDdlGuardInit(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = colcrypt_object_access;
}
