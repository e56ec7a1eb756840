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
