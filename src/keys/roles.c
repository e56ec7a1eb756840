/*-------------------------------------------------------------------------
 *
 * roles.c
 *	  Roles named in colcrypt's catalog: owners of data keys and master
 *	  keys, grantees of key, master key and provider privileges.
 *
 * The catalog stores roles as OIDs (regrole columns).  Left alone, DROP
 * ROLE would succeed and leave the number behind, and a role created later
 * with the same OID (after wraparound, or in another cluster a dump is
 * restored into) would inherit decrypt rights and ownership it was never
 * given.  So colcrypt does what PostgreSQL does for ACLs:
 *
 *	- Every role the catalog names has a pg_shdepend entry, "privileges for
 *	  extension colcrypt", kept in step by a statement trigger on each
 *	  catalog table (a restore's COPY included).  DROP ROLE refuses while the
 *	  role is named, in this database or in any other.
 *	- DROP ROLE, in a database with colcrypt, says which keys name the role.
 *	- DROP OWNED BY removes the role's grants; it refuses while the role
 *	  owns data keys or master keys (dropping a key destroys data: its
 *	  owner moves them with REASSIGN OWNED, or destroys them knowingly).
 *	- REASSIGN OWNED BY moves ownership of data keys and master keys.
 *
 * pg_dump writes regrole columns as role names, so grants and ownership
 * restore by name (the roles must exist first: pg_dumpall --globals-only).
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/xlog.h"
#include "catalog/dependency.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "colcrypt/audit.h"
#include "colcrypt/catalog.h"
#include "colcrypt/keys.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "commands/user.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

/* Every role the catalog names, as one query (oid, what). */
#define NAMED_ROLES \
	"SELECT k.owner::oid AS r, format('owner of data key %s', k.name) AS what FROM colcrypt.data_key k" \
	" UNION ALL SELECT g.grantee::oid, format('%s privilege on data key %s', g.privilege, k.name)" \
	"   FROM colcrypt.key_grant g JOIN colcrypt.data_key k USING (key_id)" \
	" UNION ALL SELECT m.owner::oid, format('owner of master key %s', m.name) FROM colcrypt.master_key m" \
	" UNION ALL SELECT grantee::oid, format('usage privilege on master key %s', master_key) FROM colcrypt.master_key_grant" \
	" UNION ALL SELECT grantee::oid, format('usage privilege on key provider %s', provider) FROM colcrypt.provider_grant"

static ProcessUtility_hook_type prev_process_utility = NULL;

/* An oid[] datum as a sorted, de-duplicated palloc'd array. */
static int
oid_array(Datum d, bool isnull, Oid **out)
{
	ArrayType  *arr;
	Datum	   *elems;
	int			n;
	int			j = 0;

	*out = NULL;
	if (isnull)
		return 0;
	arr = DatumGetArrayTypeP(d);
	deconstruct_array(arr, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &elems, NULL, &n);
	if (n == 0)
		return 0;
	*out = palloc(sizeof(Oid) * n);
	for (int i = 0; i < n; i++)
	{
		Oid			o = DatumGetObjectId(elems[i]);

		if (j == 0 || (*out)[j - 1] != o)
			(*out)[j++] = o;
	}
	return j;
}

/*
 * Make pg_shdepend's record of the roles the catalog names (in this
 * database) match the catalog.
 */
static void
sync_role_deps(void)
{
	Oid			extoid = get_extension_oid("colcrypt", true);
	Oid		   *oldm;
	Oid		   *newm;
	int			nold;
	int			nnew;
	Datum		d;
	bool		isnull;
	Oid			types[1] = {OIDOID};
	Datum		values[1];

	if (!OidIsValid(extoid))
		return;

	/*
	 * One at a time, each reading what the others committed: two changes
	 * that each see the other's role as named could otherwise both leave
	 * the record without it.  (The lock is held to the end of the
	 * transaction; in read committed the statements below see what the
	 * transaction before committed.)
	 */
	LockDatabaseObject(ExtensionRelationId, extoid, 0, ShareUpdateExclusiveLock);
	values[0] = ObjectIdGetDatum(extoid);
	ColcryptCatalogExec("SELECT array_agg(DISTINCT refobjid ORDER BY refobjid) FROM pg_shdepend"
						" WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
						"   AND classid = 'pg_extension'::regclass AND objid = $1 AND objsubid = 0"
						"   AND refclassid = 'pg_authid'::regclass AND deptype = 'a'",
						1, types, values, NULL, &d, &isnull);
	nold = oid_array(d, isnull, &oldm);
	ColcryptCatalogExec("SELECT array_agg(DISTINCT r ORDER BY r) FROM (" NAMED_ROLES ") s",
						0, NULL, NULL, NULL, &d, &isnull);
	nnew = oid_array(d, isnull, &newm);
	/*
	 * No owner to skip: the extension's owner is recorded too, so that it
	 * stays recorded when REASSIGN OWNED gives the extension to another.
	 */
	updateAclDependencies(ExtensionRelationId, extoid, 0, InvalidOid, nold, oldm, nnew, newm);
}

PG_FUNCTION_INFO_V1(colcrypt_role_deps);

/* Statement trigger on the catalog tables that name roles. */
Datum
colcrypt_role_deps(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("colcrypt._role_deps() must be called as a trigger")));
	sync_role_deps();
	return PointerGetDatum(NULL);
}

/* The text a one-role catalog query ($1) returns, or NULL. */
static char *
role_text(const char *sql, Oid role)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1];
	Datum		d;
	bool		isnull;

	values[0] = ObjectIdGetDatum(role);
	ColcryptCatalogExec(sql, 1, types, values, NULL, &d, &isnull);
	return isnull ? NULL : TextDatumGetCString(d);
}

/* What the catalog of this database names a role for, or NULL. */
static char *
role_uses(Oid role)
{
	return role_text("SELECT string_agg(what, E'\\n' ORDER BY what) FROM (" NAMED_ROLES ") s WHERE r = $1",
					 role);
}

/* The keys a role owns in this database, or NULL. */
static char *
owned_keys(Oid role)
{
	return role_text("SELECT string_agg(what, ', ' ORDER BY what) FROM ("
					 " SELECT format('data key %s', name) AS what FROM colcrypt.data_key WHERE owner::oid = $1"
					 " UNION ALL SELECT format('master key %s', name) FROM colcrypt.master_key WHERE owner::oid = $1) s",
					 role);
}

static bool
colcrypt_here(void)
{
	return !RecoveryInProgress() && OidIsValid(get_extension_oid("colcrypt", true));
}

static void
drop_role_check(DropRoleStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->roles)
	{
		RoleSpec   *spec = lfirst(lc);
		Oid			role;
		char	   *uses;

		if (spec->roletype != ROLESPEC_CSTRING)
			continue;			/* PostgreSQL refuses these itself */
		role = get_role_oid(spec->rolename, true);
		if (!OidIsValid(role) || (uses = role_uses(role)) == NULL)
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("role \"%s\" cannot be dropped because colcrypt keys depend on it",
						spec->rolename),
				 errdetail("%s", uses),
				 errhint("Run REASSIGN OWNED BY %s TO another role and DROP OWNED BY %s in each database first.",
						 quote_identifier(spec->rolename), quote_identifier(spec->rolename))));
	}
}

static void
drop_owned(DropOwnedStmt *stmt)
{
	List	   *roles = roleSpecsToIds(stmt->roles);
	ListCell   *lc;

	foreach(lc, roles)
	{
		Oid			role = lfirst_oid(lc);
		char	   *owned;
		Oid			types[1] = {OIDOID};
		Datum		values[1];
		uint64		n = 0;

		/* PostgreSQL's own check, first: it refuses the statement. */
		if (!has_privs_of_role(GetUserId(), role))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to drop objects")));
		if ((owned = owned_keys(role)) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("role \"%s\" owns colcrypt keys", GetUserNameFromId(role, false)),
					 errdetail("Owned: %s.  DROP OWNED does not drop keys: that would destroy the data they encrypt.",
							   owned),
					 errhint("Move them with REASSIGN OWNED BY %s TO another role first.",
							 quote_identifier(GetUserNameFromId(role, false)))));
		values[0] = ObjectIdGetDatum(role);
		n += ColcryptCatalogExec("DELETE FROM colcrypt.key_grant WHERE grantee::oid = $1",
								 1, types, values, NULL, NULL, NULL);
		n += ColcryptCatalogExec("DELETE FROM colcrypt.master_key_grant WHERE grantee::oid = $1",
								 1, types, values, NULL, NULL, NULL);
		n += ColcryptCatalogExec("DELETE FROM colcrypt.provider_grant WHERE grantee::oid = $1",
								 1, types, values, NULL, NULL, NULL);
		if (n > 0)
		{
			ColcryptCatalogChanged();
			ColcryptAuditAction("drop_owned", "role", GetUserNameFromId(role, false), 0,
								psprintf(UINT64_FORMAT " key, master key and provider grants revoked", n));
		}
	}
}

static void
reassign_owned(ReassignOwnedStmt *stmt)
{
	List	   *roles = roleSpecsToIds(stmt->roles);
	Oid			newrole = get_rolespec_oid(stmt->newrole, false);
	ListCell   *lc;

	if (!has_privs_of_role(GetUserId(), newrole))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to reassign objects")));
	foreach(lc, roles)
	{
		Oid			role = lfirst_oid(lc);
		Oid			types[2] = {OIDOID, OIDOID};
		Datum		values[2];
		uint64		n;

		if (!has_privs_of_role(GetUserId(), role))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to reassign objects")));
		values[0] = ObjectIdGetDatum(role);
		values[1] = ObjectIdGetDatum(newrole);
		n = ColcryptCatalogExec("UPDATE colcrypt.data_key SET owner = $2::regrole WHERE owner::oid = $1",
								2, types, values, NULL, NULL, NULL);
		n += ColcryptCatalogExec("UPDATE colcrypt.master_key SET owner = $2::regrole WHERE owner::oid = $1",
								 2, types, values, NULL, NULL, NULL);
		if (n > 0)
		{
			ColcryptCatalogChanged();
			ColcryptAuditAction("reassign_owned", "role", GetUserNameFromId(role, false), 0,
								psprintf(UINT64_FORMAT " keys to %s", n, GetUserNameFromId(newrole, false)));
		}
	}
}

static void
roles_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if ((IsA(parsetree, DropRoleStmt) || IsA(parsetree, DropOwnedStmt) ||
		 IsA(parsetree, ReassignOwnedStmt)) && colcrypt_here())
	{
		if (IsA(parsetree, DropRoleStmt))
			drop_role_check((DropRoleStmt *) parsetree);
		else if (IsA(parsetree, DropOwnedStmt))
			drop_owned((DropOwnedStmt *) parsetree);
		else
			reassign_owned((ReassignOwnedStmt *) parsetree);
	}
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
ColcryptRolesInit(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = roles_process_utility;
}
