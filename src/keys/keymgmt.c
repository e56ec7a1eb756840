/*-------------------------------------------------------------------------
 *
 * keymgmt.c
 *	  The key management SQL API: providers, master keys, data keys and
 *	  grants.
 *
 * Each function checks its arguments, talks to the provider where needed
 * before it records anything, writes the catalog as the schema owner
 * (ColcryptCatalogExec), marks the catalog changed so that every backend
 * sees the change at its next key use, and writes an audit record.  Who may
 * call which function is governed by EXECUTE privileges set in the install
 * script, plus the ownership checks below.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "catalog/pg_type.h"
#include "colcrypt/audit.h"
#include "colcrypt/catalog.h"
#include "colcrypt/keys.h"
#include "colcrypt/lifecycle.h"
#include "colcrypt/provider.h"
#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

/* ----------------------------------------------------------------------
 * Helpers
 * ----------------------------------------------------------------------
 */

/* A SQL-callable function whose failures are audited (see audit.h). */
/* Names of providers, master keys and data keys: 1 to 63 printable bytes. */
static void
check_name(const char *name, const char *what)
{
	size_t		len = strlen(name);

	if (len == 0 || len > COLCRYPT_MAX_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s name must be 1 to %d bytes long", what, COLCRYPT_MAX_NAME_LEN)));
	for (const char *p = name; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("%s name must not contain control characters", what)));
}

/* Run a one-text-argument statement on the catalog; returns rows. */
static uint64
exec1(const char *sql, const char *arg, Datum *result, bool *isnull)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	values[0] = CStringGetTextDatum(arg);
	return ColcryptCatalogExec(sql, 1, types, values, NULL, result, isnull);
}

static bool
exists1(const char *sql, const char *arg)
{
	return exec1(sql, arg, NULL, NULL) > 0;
}

typedef struct ProviderRow
{
	char	   *kind;
	Jsonb	   *options;
} ProviderRow;

static bool
fetch_provider(const char *name, ProviderRow *row)
{
	Datum		d;
	bool		isnull;
	Jsonb	   *arr;
	JsonbValue *v;

	exec1("SELECT jsonb_build_array(kind, options) FROM colcrypt.provider WHERE name = $1",
		  name, &d, &isnull);
	if (isnull)
		return false;
	arr = DatumGetJsonbP(d);
	v = getIthJsonbValueFromContainer(&arr->root, 0);
	row->kind = pnstrdup(v->val.string.val, v->val.string.len);
	v = getIthJsonbValueFromContainer(&arr->root, 1);
	row->options = JsonbValueToJsonb(v);
	return true;
}

static void
provider_must_exist(const char *name, ProviderRow *row)
{
	if (!fetch_provider(name, row))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key provider \"%s\" does not exist", name)));
}

/*
 * Prove a CMK works: wrap a throwaway key and unwrap it again.  Uses data
 * key id 0 (never a real key) so the blob can never pass as a real one.
 */
static void
prove_master_key(const char *provider, ProviderRow *row, const char *key_ref)
{
	uint8		probe[CC_DEK_LEN];
	uint8		back[CC_DEK_LEN];
	StringInfoData wrapped;
	char	   *wrap_meta;
	ColcryptWrapContext ctx = {key_ref, 0, 0};

	if (cc_random(probe, sizeof(probe)) != CC_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a probe key")));
	initStringInfo(&wrapped);
	ColcryptProviderWrap(provider, row->kind, row->options, &ctx, probe,
						 sizeof(probe), &wrapped, &wrap_meta);
	ColcryptProviderUnwrap(provider, row->kind, row->options, &ctx,
						   (uint8 *) wrapped.data, wrapped.len, wrap_meta,
						   back, sizeof(back));
	if (cc_memcmp_ct(probe, back, sizeof(probe)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("master key \"%s\" at provider \"%s\" did not return the key it wrapped",
						key_ref, provider)));
	cc_wipe(probe, sizeof(probe));
	cc_wipe(back, sizeof(back));
}

/* ----------------------------------------------------------------------
 * Providers
 * ----------------------------------------------------------------------
 */


static Datum
add_provider_body(FunctionCallInfo fcinfo)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "provider name");
	char	   *kind = ColcryptTextArg(fcinfo, 1, "provider kind");
	Jsonb	   *options;
	const ColcryptProviderOps *ops;
	Oid			types[4] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID};
	Datum		values[4];

	ColcryptRequirePreload();
	ColcryptCheckProviderAdmin("add key providers");
	check_name(name, "provider");
	ops = ColcryptProviderKindOrError(kind);
	options = PG_ARGISNULL(2) ? DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")))
		: PG_GETARG_JSONB_P(2);
	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("provider options must be a JSON object")));
	if (exists1("SELECT 1 FROM colcrypt.provider WHERE name = $1", name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("key provider \"%s\" already exists", name)));

	ops->validate(name, options);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(kind);
	values[2] = JsonbPGetDatum(options);
	values[3] = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));
	ColcryptCatalogExec("INSERT INTO colcrypt.provider (name, kind, options, created_by)"
						" VALUES ($1, $2, $3, $4)",
						4, types, values, NULL, NULL, NULL);
	ColcryptCatalogChanged();
	ColcryptAuditAction("create", "provider", name, 0, psprintf("kind %s", kind));
	PG_RETURN_VOID();
}


static Datum
alter_provider_body(FunctionCallInfo fcinfo)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "provider name");
	Jsonb	   *options;
	ProviderRow row;
	Oid			types[2] = {TEXTOID, JSONBOID};
	Datum		values[2];

	ColcryptRequirePreload();
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("provider options must not be null")));
	ColcryptCheckProviderAdmin("alter key providers");
	options = PG_GETARG_JSONB_P(1);
	provider_must_exist(name, &row);
	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("provider options must be a JSON object")));
	ColcryptProviderKindOrError(row.kind)->validate(name, options);

	values[0] = CStringGetTextDatum(name);
	values[1] = JsonbPGetDatum(options);
	ColcryptCatalogExec("UPDATE colcrypt.provider SET options = $2 WHERE name = $1",
						2, types, values, NULL, NULL, NULL);
	ColcryptProviderCloseAll();
	ColcryptCatalogChanged();
	ColcryptAuditAction("alter", "provider", name, 0, NULL);
	PG_RETURN_VOID();
}


static Datum
drop_provider_body(FunctionCallInfo fcinfo)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "provider name");
	ProviderRow row;
	Datum		d;
	bool		isnull;

	ColcryptRequirePreload();
	ColcryptCheckProviderAdmin("drop key providers");
	provider_must_exist(name, &row);
	exec1("SELECT string_agg(name, ', ' ORDER BY name) FROM colcrypt.master_key WHERE provider = $1",
		  name, &d, &isnull);
	if (!isnull)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("key provider \"%s\" is used by master keys", name),
				 errdetail("Master keys using it: %s.", TextDatumGetCString(d)),
				 errhint("Move them to another provider with colcrypt.rotate_master_key(), or drop them first.")));
	exec1("DELETE FROM colcrypt.provider_grant WHERE provider = $1", name, NULL, NULL);
	exec1("DELETE FROM colcrypt.provider WHERE name = $1", name, NULL, NULL);
	ColcryptProviderCloseAll();
	ColcryptCatalogChanged();
	ColcryptAuditAction("drop", "provider", name, 0, NULL);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(colcrypt_check_provider);

/*
 * check_provider(name): open the provider (if this backend has not) and run
 * its health check.  Returns (ok, detail, elapsed_ms) instead of raising, so
 * that monitoring can poll it; failures are audited like any other.
 */
Datum
colcrypt_check_provider(PG_FUNCTION_ARGS)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "provider name");
	ProviderRow row;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	StringInfoData detail;
	ColcryptProviderError err = {0};
	TimestampTz start;
	bool		ok;

	ColcryptRequirePreload();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	provider_must_exist(name, &row);
	ColcryptCheckProviderUsage(name);
	initStringInfo(&detail);
	start = GetCurrentTimestamp();
	ok = ColcryptProviderHealth(name, row.kind, row.options, &detail, &err);
	values[0] = BoolGetDatum(ok);
	if (ok)
		values[1] = CStringGetTextDatum(detail.data);
	else
		values[1] = CStringGetTextDatum(err.detail[0]
										? psprintf("%s (SQLSTATE %s): %s", err.message,
												   unpack_sql_state(err.sqlerrcode), err.detail)
										: psprintf("%s (SQLSTATE %s)", err.message,
												   unpack_sql_state(err.sqlerrcode)));
	values[2] = Float8GetDatum((double) (GetCurrentTimestamp() - start) / 1000.0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(colcrypt_redact_options);

/* Provider options as views show them: the kind's describe() output. */
Datum
colcrypt_redact_options(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *options = PG_GETARG_JSONB_P(1);
	const ColcryptProviderOps *ops = ColcryptProviderKind(kind);

	if (ops == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(ops->describe(options));
}

/* ----------------------------------------------------------------------
 * Master keys
 * ----------------------------------------------------------------------
 */


static Datum
add_master_key_body(FunctionCallInfo fcinfo)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "master key name");
	char	   *provider = ColcryptTextArg(fcinfo, 1, "provider name");
	char	   *key_ref = ColcryptTextArg(fcinfo, 2, "key_ref");
	bool		create = PG_NARGS() > 3 && !PG_ARGISNULL(3) ? PG_GETARG_BOOL(3) : false;
	ProviderRow row;
	bool		created;
	char	   *actual_ref = NULL;
	Oid			types[4] = {TEXTOID, TEXTOID, TEXTOID, OIDOID};
	Datum		values[4];

	ColcryptRequirePreload();
	check_name(name, "master key");
	provider_must_exist(provider, &row);
	ColcryptCheckProviderUsage(provider);
	if (exists1("SELECT 1 FROM colcrypt.master_key WHERE name = $1", name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("master key \"%s\" already exists", name)));

	/* The development keyring makes missing CMKs; real providers only if asked. */
	created = ColcryptProviderEnsureCmk(provider, row.kind, row.options, key_ref,
										create || strcmp(row.kind, "file") == 0,
										&actual_ref);
	if (created)
		ereport(NOTICE,
				(errmsg("created customer master key \"%s\" in provider \"%s\"",
						actual_ref ? actual_ref : key_ref, provider),
				 actual_ref ? errdetail("The provider named it; \"%s\" is its name attribute.", key_ref) : 0));
	if (actual_ref != NULL)
		key_ref = actual_ref;
	prove_master_key(provider, &row, key_ref);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(provider);
	values[2] = CStringGetTextDatum(key_ref);
	values[3] = ObjectIdGetDatum(GetUserId());
	ColcryptCatalogExec("INSERT INTO colcrypt.master_key (name, provider, key_ref, owner)"
						" VALUES ($1, $2, $3, $4::regrole)",
						4, types, values, NULL, NULL, NULL);
	ColcryptCatalogChanged();
	ColcryptAuditAction("create", "master_key", name, 0,
						psprintf("provider %s%s", provider, created ? ", new CMK" : ""));
	PG_RETURN_VOID();
}


static Datum
drop_master_key_body(FunctionCallInfo fcinfo)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "master key name");
	Datum		d;
	bool		isnull;

	ColcryptRequirePreload();
	ColcryptCheckMasterKeyOwner(name, "drop");
	exec1("SELECT string_agg(DISTINCT k.name, ', ') FROM colcrypt.data_key_version v"
		  " JOIN colcrypt.data_key k USING (key_id) WHERE v.master_key = $1",
		  name, &d, &isnull);
	if (!isnull)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("master key \"%s\" still wraps data keys", name),
				 errdetail("Data keys wrapped by it: %s.", TextDatumGetCString(d)),
				 errhint("Re-wrap them under another master key with colcrypt.rotate_master_key() first.")));
	exec1("DELETE FROM colcrypt.master_key_grant WHERE master_key = $1", name, NULL, NULL);
	exec1("DELETE FROM colcrypt.master_key WHERE name = $1", name, NULL, NULL);
	ColcryptCatalogChanged();
	ColcryptAuditAction("drop", "master_key", name, 0, NULL);
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------------
 * Data keys
 * ----------------------------------------------------------------------
 */

uint32
ColcryptCreateKey(const char *name, const char *master_key, Oid owner)
{
	uint32		key_id;
	ColcryptKeyMeta *clash;
	StringInfoData wrapped;
	char	   *wrap_meta;
	bytea	   *blob;

	check_name(name, "data key");
	if (name[0] == '#')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("data key names must not start with \"#\"")));
	key_id = ColcryptKeyIdFromName(name);
	if (key_id == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("data key name \"%s\" maps to a reserved key id", name),
				 errhint("Choose another name.")));
	clash = ColcryptGetKeyMeta(key_id, true);
	if (clash != NULL && strcmp(clash->name, name) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("data key \"%s\" already exists", name)));
	if (clash != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("data key name \"%s\" has the same key id as data key \"%s\"",
						name, clash->name),
				 errdetail("Key ids are 29-bit hashes of the names, so that type modifiers resolve without the catalog."),
				 errhint("Choose another name.")));
	/* The asker (not the key's future owner) needs usage on the master key. */
	ColcryptCheckMasterKeyUsage(master_key);

	/* Generate and wrap before recording anything. */
	initStringInfo(&wrapped);
	wrap_meta = ColcryptGenerateWrappedDek(master_key, key_id, 1, &wrapped);
	blob = palloc(VARHDRSZ + wrapped.len);
	SET_VARSIZE(blob, VARHDRSZ + wrapped.len);
	memcpy(VARDATA(blob), wrapped.data, wrapped.len);

	{
		Oid			types[3] = {INT4OID, TEXTOID, OIDOID};
		Datum		values[3];

		values[0] = Int32GetDatum((int32) key_id);
		values[1] = CStringGetTextDatum(name);
		values[2] = ObjectIdGetDatum(owner);
		ColcryptCatalogExec("INSERT INTO colcrypt.data_key (key_id, name, owner)"
							" VALUES ($1, $2, $3::regrole)",
							3, types, values, NULL, NULL, NULL);
	}
	{
		Oid			types[4] = {INT4OID, TEXTOID, BYTEAOID, TEXTOID};
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};

		values[0] = Int32GetDatum((int32) key_id);
		values[1] = CStringGetTextDatum(master_key);
		values[2] = PointerGetDatum(blob);
		values[3] = wrap_meta ? CStringGetTextDatum(wrap_meta) : (Datum) 0;
		nulls[3] = wrap_meta ? ' ' : 'n';
		ColcryptCatalogExec("INSERT INTO colcrypt.data_key_version"
							" (key_id, version, state, master_key, wrapped_key, wrap_meta, activated_at)"
							" VALUES ($1, 1, 'active', $2, $3, $4, now())",
							4, types, values, nulls, NULL, NULL);
	}
	ColcryptCatalogChanged();
	ColcryptAuditAction("create", "key", name, 1, psprintf("master key %s", master_key));
	return key_id;
}

static Datum
create_key_body(FunctionCallInfo fcinfo)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "data key name");
	char	   *master_key = ColcryptTextArg(fcinfo, 1, "master key name");

	ColcryptCreateKey(name, master_key, GetUserId());
	PG_RETURN_INT32(1);
}


/*
 * A new version of a data key becomes active for new values, under the
 * master key of the version it replaces; that one becomes deactivated
 * (decrypt only).  Returns the new version.
 */
static Datum
rotate_key_body(FunctionCallInfo fcinfo)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "data key name");
	bool		activate = PG_NARGS() < 2 || PG_ARGISNULL(1) || PG_GETARG_BOOL(1);
	ColcryptKeyMeta *meta;
	uint32		key_id;
	int32		newver;
	int32		oldver;
	Datum		d;
	bool		isnull;
	char	   *master_key;
	StringInfoData wrapped;
	char	   *wrap_meta;
	bytea	   *blob;

	ColcryptRequirePreload();
	meta = ColcryptGetKeyMetaByName(name, false);
	key_id = meta->key_id;
	oldver = meta->active_version;
	newver = meta->nversions > 0 ? meta->versions[meta->nversions - 1].version + 1 : 1;
	if (!superuser() && !(OidIsValid(meta->owner) && has_privs_of_role(GetUserId(), meta->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be the owner of data key \"%s\" to rotate it", name)));

	/* Lock the key's row: concurrent rotations of one key queue up. */
	{
		Oid			types[1] = {INT4OID};
		Datum		values[1] = {Int32GetDatum((int32) key_id)};

		ColcryptCatalogExec("SELECT 1 FROM colcrypt.data_key WHERE key_id = $1 FOR UPDATE",
							1, types, values, NULL, NULL, NULL);
		ColcryptCatalogExec("SELECT master_key FROM colcrypt.data_key_version WHERE key_id = $1"
							" ORDER BY (state = 'active') DESC, version DESC LIMIT 1",
							1, types, values, NULL, &d, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("data key \"%s\" has no versions", name)));
		master_key = TextDatumGetCString(d);
		ColcryptCatalogExec("SELECT coalesce(max(version), 0) + 1 FROM colcrypt.data_key_version WHERE key_id = $1",
							1, types, values, NULL, &d, &isnull);
		newver = DatumGetInt32(d);
	}

	initStringInfo(&wrapped);
	wrap_meta = ColcryptGenerateWrappedDek(master_key, key_id, (uint32) newver, &wrapped);
	blob = palloc(VARHDRSZ + wrapped.len);
	SET_VARSIZE(blob, VARHDRSZ + wrapped.len);
	memcpy(VARDATA(blob), wrapped.data, wrapped.len);

	{
		Oid			types[5] = {INT4OID, INT4OID, TEXTOID, BYTEAOID, TEXTOID};
		Datum		values[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

		values[0] = Int32GetDatum((int32) key_id);
		values[1] = Int32GetDatum(newver);
		values[2] = CStringGetTextDatum(master_key);
		values[3] = PointerGetDatum(blob);
		values[4] = wrap_meta ? CStringGetTextDatum(wrap_meta) : (Datum) 0;
		nulls[4] = wrap_meta ? ' ' : 'n';
		if (activate)
			ColcryptCatalogExec("UPDATE colcrypt.data_key_version SET state = 'deactivated', deactivated_at = now()"
								" WHERE key_id = $1 AND state = 'active'",
								1, types, values, NULL, NULL, NULL);
		ColcryptCatalogExec(activate ?
							"INSERT INTO colcrypt.data_key_version"
							" (key_id, version, state, master_key, wrapped_key, wrap_meta, activated_at)"
							" VALUES ($1, $2, 'active', $3, $4, $5, now())" :
							"INSERT INTO colcrypt.data_key_version"
							" (key_id, version, state, master_key, wrapped_key, wrap_meta)"
							" VALUES ($1, $2, 'pre-activation', $3, $4, $5)",
							5, types, values, nulls, NULL, NULL);
	}
	ColcryptCatalogChanged();
	ColcryptAuditAction("rotate", "key", name, newver,
						!activate ? "new version in pre-activation" :
						oldver > 0 ? psprintf("version %d deactivated", oldver) : NULL);
	PG_RETURN_INT32(newver);
}

/* ----------------------------------------------------------------------
 * Grants
 * ----------------------------------------------------------------------
 */

/* The key by name, and a check that the caller may manage its grants. */
static ColcryptKeyMeta *
key_for_grant(const char *name, Oid *key_owner)
{
	ColcryptKeyMeta *meta = ColcryptGetKeyMetaByName(name, false);

	*key_owner = meta->owner;
	if (!superuser() && !(OidIsValid(meta->owner) && has_privs_of_role(GetUserId(), meta->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be the owner of data key \"%s\" to grant or revoke privileges on it", name)));
	return meta;
}

static int
parse_privilege(const char *priv)
{
	if (pg_strcasecmp(priv, "encrypt") == 0)
		return COLCRYPT_PRIV_ENCRYPT;
	if (pg_strcasecmp(priv, "decrypt") == 0)
		return COLCRYPT_PRIV_DECRYPT;
	if (pg_strcasecmp(priv, "all") == 0)
		return COLCRYPT_PRIV_ALL;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown key privilege \"%s\"", priv),
			 errhint("Use \"encrypt\", \"decrypt\" or \"all\".")));
	return 0;
}

static Datum
change_grant(FunctionCallInfo fcinfo, bool grant)
{
	char	   *name = ColcryptTextArg(fcinfo, 0, "data key name");
	Oid			grantee;
	char	   *privname = ColcryptTextArg(fcinfo, 2, "privilege");
	int			privs = parse_privilege(privname);
	Oid			owner;
	ColcryptKeyMeta *meta;
	uint32		key_id;
	char	   *grantee_name;

	ColcryptRequirePreload();
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("grantee must not be null")));
	grantee = PG_GETARG_OID(1);
	grantee_name = GetUserNameFromId(grantee, false);
	meta = key_for_grant(name, &owner);
	key_id = meta->key_id;

	for (int bit = COLCRYPT_PRIV_ENCRYPT; bit <= COLCRYPT_PRIV_DECRYPT; bit <<= 1)
	{
		Oid			types[4] = {INT4OID, OIDOID, TEXTOID, TEXTOID};
		Datum		values[4];

		if ((privs & bit) == 0)
			continue;
		values[0] = Int32GetDatum((int32) key_id);
		values[1] = ObjectIdGetDatum(grantee);
		values[2] = CStringGetTextDatum(bit == COLCRYPT_PRIV_ENCRYPT ? "encrypt" : "decrypt");
		values[3] = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));
		if (grant)
			ColcryptCatalogExec("INSERT INTO colcrypt.key_grant (key_id, grantee, privilege, granted_by)"
								" VALUES ($1, $2::regrole, $3, $4)"
								" ON CONFLICT (key_id, grantee, privilege) DO NOTHING",
								4, types, values, NULL, NULL, NULL);
		else
			ColcryptCatalogExec("DELETE FROM colcrypt.key_grant"
								" WHERE key_id = $1 AND grantee = $2::regrole AND privilege = $3",
								3, types, values, NULL, NULL, NULL);
	}
	ColcryptCatalogChanged();
	ColcryptAuditAction(grant ? "grant" : "revoke", "key", name, 0,
						psprintf("%s %s %s", privname, grant ? "to" : "from", grantee_name));
	PG_RETURN_VOID();
}


static Datum
grant_key_body(FunctionCallInfo fcinfo)
{
	return change_grant(fcinfo, true);
}


static Datum
revoke_key_body(FunctionCallInfo fcinfo)
{
	return change_grant(fcinfo, false);
}

COLCRYPT_AUDITED_FN(colcrypt_add_provider, add_provider_body, "create", "provider")
COLCRYPT_AUDITED_FN(colcrypt_alter_provider, alter_provider_body, "alter", "provider")
COLCRYPT_AUDITED_FN(colcrypt_drop_provider, drop_provider_body, "drop", "provider")
COLCRYPT_AUDITED_FN(colcrypt_add_master_key, add_master_key_body, "create", "master_key")
COLCRYPT_AUDITED_FN(colcrypt_drop_master_key, drop_master_key_body, "drop", "master_key")
COLCRYPT_AUDITED_FN(colcrypt_rotate_key, rotate_key_body, "rotate", "key")
COLCRYPT_AUDITED_FN(colcrypt_grant_key, grant_key_body, "grant", "key")
COLCRYPT_AUDITED_FN(colcrypt_revoke_key, revoke_key_body, "revoke", "key")
COLCRYPT_AUDITED_FN(colcrypt_create_key, create_key_body, "create", "key")
