/*-------------------------------------------------------------------------
 *
 * typedesc.c
 *	  The table of encrypted types and the mapping from their OIDs.
 *
 * Built from typelist.h, the list the SQL objects are generated from too.
 * Type codes are part of the stored format and never change.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_type.h"
#include "colcrypt/typelist.h"
#include "colcrypt/types.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#define TYPE_ENTRY(name, code, plainoid, plainsql, collatable, category, bitwise) \
	{code, "encrypted_" #name, plainoid, bitwise},

static const ColcryptTypeDesc type_table[] = {
	COLCRYPT_TYPES(TYPE_ENTRY)
};

const ColcryptTypeDesc *
ColcryptTypeByCode(int code)
{
	for (int i = 0; i < (int) lengthof(type_table); i++)
		if ((int) type_table[i].code == code)
			return &type_table[i];
	return NULL;
}

/* OID -> descriptor, resolved lazily and reset when pg_type changes. */
static Oid	type_oids[lengthof(type_table)];
static bool oids_valid = false;
static bool callback_registered = false;

static void
type_inval_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	oids_valid = false;
}

static void
resolve_oids(void)
{
	Oid			nsp;

	if (oids_valid)
		return;
	if (!callback_registered)
	{
		CacheRegisterSyscacheCallback(TYPEOID, type_inval_cb, (Datum) 0);
		callback_registered = true;
	}
	nsp = get_namespace_oid(COLCRYPT_SCHEMA, true);
	for (int i = 0; i < (int) lengthof(type_table); i++)
		type_oids[i] = OidIsValid(nsp) ?
			GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
							CStringGetDatum(type_table[i].name),
							ObjectIdGetDatum(nsp)) : InvalidOid;
	oids_valid = true;
}

static const ColcryptTypeDesc *
lookup_oid(Oid typid)
{
	resolve_oids();
	for (int i = 0; i < (int) lengthof(type_table); i++)
		if (OidIsValid(type_oids[i]) && type_oids[i] == typid)
			return &type_table[i];
	return NULL;
}

const ColcryptTypeDesc *
ColcryptTypeByOid(Oid typid)
{
	const ColcryptTypeDesc *t = lookup_oid(typid);

	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("type %s is not a colcrypt encrypted type", format_type_be(typid))));
	return t;
}

bool
ColcryptTypesInstalled(void)
{
	resolve_oids();
	return OidIsValid(type_oids[0]);
}

bool
ColcryptIsEncryptedType(Oid typid)
{
	return lookup_oid(getBaseType(typid)) != NULL;
}

/*
 * Whether values of typid can hold encrypted values: an encrypted type, or
 * an array, domain, composite, range or multirange with one somewhere
 * inside.  Deeper than 32 levels counts as yes (fails closed).
 */
static bool
holds_encrypted(Oid typid, int depth)
{
	Oid			base;
	char		typtype;

	if (depth > 32)
		return true;
	base = getBaseType(typid);
	if (lookup_oid(base) != NULL)
		return true;
	if (base < FirstNormalObjectId && !type_is_array(base))
		return false;			/* a built-in scalar, record or the like */
	if (OidIsValid(get_element_type(base)))
		return holds_encrypted(get_element_type(base), depth + 1);
	typtype = get_typtype(base);
	if (typtype == TYPTYPE_RANGE)
		return holds_encrypted(get_range_subtype(base), depth + 1);
	if (typtype == TYPTYPE_MULTIRANGE)
		return holds_encrypted(get_multirange_range(base), depth + 1);
	if (typtype == TYPTYPE_COMPOSITE)
	{
		Oid			relid = get_typ_typrelid(base);

		/* Attributes are numbered 1..n without gaps (dropped ones stay). */
		for (int i = 1; OidIsValid(relid); i++)
		{
			HeapTuple	tup = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(i));
			bool		found = false;

			if (!HeapTupleIsValid(tup))
				break;
			if (!((Form_pg_attribute) GETSTRUCT(tup))->attisdropped)
				found = holds_encrypted(((Form_pg_attribute) GETSTRUCT(tup))->atttypid, depth + 1);
			ReleaseSysCache(tup);
			if (found)
				return true;
		}
	}
	return false;
}

bool
ColcryptTypeHoldsEncrypted(Oid typid)
{
	if (!OidIsValid(typid) || !ColcryptTypesInstalled())
		return false;
	return holds_encrypted(typid, 0);
}
