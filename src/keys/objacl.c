/*-------------------------------------------------------------------------
 *
 * objacl.c
 *	  Who may use key providers and master keys.
 *
 * A provider's options name files the server reads (file), libraries it
 * loads (pkcs11) and hosts it connects to (kmip, vault, aws-kms): whoever
 * sets them can read server files, run code in the server, or make the
 * server send data keys wherever he likes (rotate_master_key to a provider
 * of his own would POST every data key to it).  So providers are added,
 * altered, dropped and granted by superusers only, like COPY FROM a file or
 * LOAD.  Other roles use a provider (add master keys at it, check it) with
 * the usage privilege a superuser grants.
 *
 * A master key belongs to the role that added it.  Its owner (or a
 * superuser) rotates it, moves it to another provider (usage on both
 * needed), drops it and grants usage on it; usage lets a role create data
 * keys under it.  A data key's owner chose its master key, so rotating the
 * data key does not ask again.
 *
 * EXECUTE on the functions (revoked from PUBLIC by the install script) is
 * needed as well: these checks are on the objects the calls touch.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "catalog/pg_type.h"
#include "colcrypt/audit.h"
#include "colcrypt/catalog.h"
#include "colcrypt/keys.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

void
ColcryptCheckProviderAdmin(const char *action)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s", action),
				 errdetail("Only superusers add, alter, drop and grant key providers: their options name files the server reads, libraries it loads and hosts it sends data keys to.")));
}

/* Whether a row of `sql` ($1 text name, $2 role oid) exists. */
static bool
acl_row_exists(const char *sql, const char *name, Oid role)
{
	Oid			types[2] = {TEXTOID, OIDOID};
	Datum		values[2];

	values[0] = CStringGetTextDatum(name);
	values[1] = ObjectIdGetDatum(role);
	return ColcryptCatalogExec(sql, 2, types, values, NULL, NULL, NULL) > 0;
}

bool
ColcryptProviderUsable(Oid role, const char *provider)
{
	return superuser_arg(role) ||
		acl_row_exists("SELECT 1 FROM colcrypt.provider_grant WHERE provider = $1"
					   " AND privilege = 'usage' AND pg_has_role($2, grantee, 'USAGE')",
					   provider, role);
}

void
ColcryptCheckProviderUsage(const char *provider)
{
	if (!ColcryptProviderUsable(GetUserId(), provider))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for key provider \"%s\"", provider),
				 errhint("A superuser can run: SELECT colcrypt.grant_provider('%s', '%s');",
						 provider, GetUserNameFromId(GetUserId(), false))));
}

/* The owner of a master key; ERROR 42704 if there is none of that name. */
static Oid
master_key_owner(const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	Datum		d;
	bool		isnull;

	values[0] = CStringGetTextDatum(name);
	ColcryptCatalogExec("SELECT owner::oid FROM colcrypt.master_key WHERE name = $1",
						1, types, values, NULL, &d, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("master key \"%s\" does not exist", name),
				 errhint("Add it with colcrypt.add_master_key(name, provider, key_ref).")));
	return DatumGetObjectId(d);
}

void
ColcryptCheckMasterKeyOwner(const char *name, const char *action)
{
	Oid			owner = master_key_owner(name);

	if (!superuser() && !has_privs_of_role(GetUserId(), owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be the owner of master key \"%s\" to %s it", name, action)));
}

void
ColcryptCheckMasterKeyUsage(const char *name)
{
	Oid			owner = master_key_owner(name);
	Oid			role = GetUserId();

	if (superuser() || has_privs_of_role(role, owner) ||
		acl_row_exists("SELECT 1 FROM colcrypt.master_key_grant WHERE master_key = $1"
					   " AND privilege = 'usage' AND pg_has_role($2, grantee, 'USAGE')",
					   name, role))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for master key \"%s\"", name),
			 errhint("Its owner can run: SELECT colcrypt.grant_master_key('%s', '%s');",
					 name, GetUserNameFromId(role, false))));
}

/* ----------------------------------------------------------------------
 * grant_provider, revoke_provider, grant_master_key, revoke_master_key
 * ----------------------------------------------------------------------
 */

static void
check_usage_privilege(FunctionCallInfo fcinfo)
{
	char	   *priv = PG_NARGS() > 2 && !PG_ARGISNULL(2) ? text_to_cstring(PG_GETARG_TEXT_PP(2)) : "usage";

	if (pg_strcasecmp(priv, "usage") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown privilege \"%s\"", priv),
				 errhint("Providers and master keys have one privilege, \"usage\".")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("grantee must not be null")));
}

static Datum
change_usage(FunctionCallInfo fcinfo, bool provider, bool grant)
{
	const char *what = provider ? "provider" : "master_key";
	char	   *name = ColcryptTextArg(fcinfo, 0, provider ? "provider name" : "master key name");
	Oid			grantee;
	Oid			types[3] = {TEXTOID, OIDOID, TEXTOID};
	Datum		values[3];
	char	   *sql;

	ColcryptRequirePreload();
	check_usage_privilege(fcinfo);
	grantee = PG_GETARG_OID(1);
	if (provider)
	{
		ColcryptCheckProviderAdmin(grant ? "grant usage on key providers" : "revoke usage on key providers");
		values[0] = CStringGetTextDatum(name);
		if (ColcryptCatalogExec("SELECT 1 FROM colcrypt.provider WHERE name = $1",
								1, types, values, NULL, NULL, NULL) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("key provider \"%s\" does not exist", name)));
	}
	else
		ColcryptCheckMasterKeyOwner(name, grant ? "grant usage on" : "revoke usage on");

	values[0] = CStringGetTextDatum(name);
	values[1] = ObjectIdGetDatum(grantee);
	values[2] = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));
	if (grant)
		sql = psprintf("INSERT INTO colcrypt.%s_grant (%s, grantee, privilege, granted_by)"
					   " VALUES ($1, $2::regrole, 'usage', $3) ON CONFLICT DO NOTHING",
					   what, what);
	else
		sql = psprintf("DELETE FROM colcrypt.%s_grant WHERE %s = $1 AND grantee = $2::regrole",
					   what, what);
	/* The delete takes the first two parameters only. */
	ColcryptCatalogExec(sql, grant ? 3 : 2, types, values, NULL, NULL, NULL);
	ColcryptCatalogChanged();
	ColcryptAuditAction(grant ? "grant" : "revoke", what, name, 0,
						psprintf("usage %s %s", grant ? "to" : "from",
								 GetUserNameFromId(grantee, false)));
	PG_RETURN_VOID();
}

static Datum
grant_provider_body(FunctionCallInfo fcinfo)
{
	return change_usage(fcinfo, true, true);
}

static Datum
revoke_provider_body(FunctionCallInfo fcinfo)
{
	return change_usage(fcinfo, true, false);
}

static Datum
grant_master_key_body(FunctionCallInfo fcinfo)
{
	return change_usage(fcinfo, false, true);
}

static Datum
revoke_master_key_body(FunctionCallInfo fcinfo)
{
	return change_usage(fcinfo, false, false);
}

COLCRYPT_AUDITED_FN(colcrypt_grant_provider, grant_provider_body, "grant", "provider")
COLCRYPT_AUDITED_FN(colcrypt_revoke_provider, revoke_provider_body, "revoke", "provider")
COLCRYPT_AUDITED_FN(colcrypt_grant_master_key, grant_master_key_body, "grant", "master_key")
COLCRYPT_AUDITED_FN(colcrypt_revoke_master_key, revoke_master_key_body, "revoke", "master_key")
