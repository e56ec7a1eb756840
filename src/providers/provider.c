/*-------------------------------------------------------------------------
 *
 * provider.c
 *	  The registry of provider kinds, per-backend provider handles, and the
 *	  dispatch that turns a provider's failure into one clear error.
 *
 * Handles are opened in the backend that needs them, after fork (PKCS#11
 * sessions, TLS connections and curl handles must not cross fork), kept for
 * the backend's life, and reopened when the provider's options change.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "colcrypt/audit.h"
#include "colcrypt/keycache.h"
#include "colcrypt/provider.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

static const ColcryptProviderOps *const kinds[] = {
	&colcrypt_file_provider,
};

const ColcryptProviderOps *
ColcryptProviderKind(const char *kind)
{
	for (int i = 0; i < (int) lengthof(kinds); i++)
		if (strcmp(kinds[i]->kind, kind) == 0)
			return kinds[i];
	return NULL;
}

const ColcryptProviderOps *
ColcryptProviderKindOrError(const char *kind)
{
	const ColcryptProviderOps *ops = ColcryptProviderKind(kind);

	if (ops == NULL)
	{
		StringInfoData known;

		initStringInfo(&known);
		for (int i = 0; i < (int) lengthof(kinds); i++)
			appendStringInfo(&known, "%s%s", i ? ", " : "", kinds[i]->kind);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown key provider kind \"%s\"", kind),
				 errhint("Known kinds: %s.", known.data)));
	}
	return ops;
}

void
ColcryptProviderSetError(ColcryptProviderError *err, int sqlerrcode,
						 const char *message, const char *detail)
{
	err->sqlerrcode = sqlerrcode;
	strlcpy(err->message, message ? message : "", sizeof(err->message));
	strlcpy(err->detail, detail ? detail : "", sizeof(err->detail));
}

char *
ColcryptOptionText(Jsonb *options, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;

	if (options == NULL || !JB_ROOT_IS_OBJECT(options))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&options->root, JB_FOBJECT, &k);
	if (v == NULL)
		return NULL;
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		default:
			return NULL;
	}
}

/* ----------------------------------------------------------------------
 * Per-backend handles
 * ----------------------------------------------------------------------
 */

typedef struct HandleEntry
{
	char		name[NAMEDATALEN];	/* provider name: hash key */
	const ColcryptProviderOps *ops; /* its kind */
	Jsonb	   *options;		/* options it was opened with (TopMemoryContext) */
	void	   *handle;			/* the kind's state */
} HandleEntry;

static HTAB *handles = NULL;

static void
close_entry(HandleEntry *e)
{
	if (e->handle != NULL)
		e->ops->close(e->handle);
	e->handle = NULL;
	if (e->options != NULL)
		pfree(e->options);
	e->options = NULL;
}

void
ColcryptProviderCloseAll(void)
{
	HASH_SEQ_STATUS seq;
	HandleEntry *e;

	if (handles == NULL)
		return;
	hash_seq_init(&seq, handles);
	while ((e = hash_seq_search(&seq)) != NULL)
		close_entry(e);
	hash_destroy(handles);
	handles = NULL;
}

static bool
same_options(Jsonb *a, Jsonb *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return VARSIZE(a) == VARSIZE(b) && memcmp(a, b, VARSIZE(a)) == 0;
}

/* The open handle of a provider; raises (after auditing) when opening fails. */
static HandleEntry *
get_handle(const char *provider, const char *kind, Jsonb *options)
{
	HandleEntry *e;
	bool		found;
	ColcryptProviderError err = {0};

	if (handles == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(HandleEntry);
		handles = hash_create("colcrypt provider handles", 8, &ctl,
							  HASH_ELEM | HASH_STRINGS);
	}
	if (strlen(provider) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("provider name is too long")));
	e = hash_search(handles, provider, HASH_ENTER, &found);
	if (!found)
	{
		e->ops = NULL;
		e->options = NULL;
		e->handle = NULL;
	}
	if (e->handle != NULL &&
		(strcmp(e->ops->kind, kind) != 0 || !same_options(e->options, options)))
		close_entry(e);
	if (e->handle == NULL)
	{
		e->ops = ColcryptProviderKindOrError(kind);
		e->handle = e->ops->open(provider, options, &err);
		if (e->handle == NULL)
		{
			ColcryptKeyCacheCountProviderCall(true);
			ColcryptAuditProviderFailure(provider, "open", &err);
			ereport(ERROR,
					(errcode(err.sqlerrcode ? err.sqlerrcode : ERRCODE_CONNECTION_FAILURE),
					 errmsg("key provider \"%s\" (%s): %s", provider, kind, err.message),
					 err.detail[0] ? errdetail("%s", err.detail) : 0));
		}
		e->options = options ? (Jsonb *) MemoryContextAlloc(TopMemoryContext, VARSIZE(options)) : NULL;
		if (options)
			memcpy(e->options, options, VARSIZE(options));
	}
	return e;
}

static void
raise_failure(const char *provider, HandleEntry *e, const char *op,
			  ColcryptProviderError *err)
{
	ColcryptKeyCacheCountProviderCall(true);
	ColcryptAuditProviderFailure(provider, op, err);
	ereport(ERROR,
			(errcode(err->sqlerrcode ? err->sqlerrcode : ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("key provider \"%s\" (%s) could not %s: %s",
					provider, e->ops->kind, op, err->message),
			 err->detail[0] ? errdetail("%s", err->detail) : 0));
}

void
ColcryptProviderWrap(const char *provider, const char *kind, Jsonb *options,
					 const ColcryptWrapContext *ctx,
					 const uint8 *dek, size_t deklen,
					 StringInfo wrapped, char **wrap_meta)
{
	HandleEntry *e = get_handle(provider, kind, options);
	ColcryptProviderError err = {0};

	*wrap_meta = NULL;
	if (!e->ops->wrap(e->handle, ctx, dek, deklen, wrapped, wrap_meta, &err))
		raise_failure(provider, e, "wrap a data key", &err);
	ColcryptKeyCacheCountProviderCall(false);
}

void
ColcryptProviderUnwrap(const char *provider, const char *kind, Jsonb *options,
					   const ColcryptWrapContext *ctx,
					   const uint8 *wrapped, size_t wrappedlen,
					   const char *wrap_meta,
					   uint8 *dek, size_t deklen)
{
	HandleEntry *e = get_handle(provider, kind, options);
	ColcryptProviderError err = {0};

	if (!e->ops->unwrap(e->handle, ctx, wrapped, wrappedlen, wrap_meta,
						dek, deklen, &err))
		raise_failure(provider, e, "unwrap a data key", &err);
	ColcryptKeyCacheCountProviderCall(false);
}

bool
ColcryptProviderEnsureCmk(const char *provider, const char *kind,
						  Jsonb *options, const char *key_ref, bool create)
{
	HandleEntry *e = get_handle(provider, kind, options);
	ColcryptProviderError err = {0};
	bool		created = false;

	if (!e->ops->ensure_cmk(e->handle, key_ref, create, &created, &err))
		raise_failure(provider, e, "use the master key", &err);
	ColcryptKeyCacheCountProviderCall(false);
	return created;
}

char *
ColcryptProviderRotateCmk(const char *provider, const char *kind,
						  Jsonb *options, const char *key_ref)
{
	HandleEntry *e = get_handle(provider, kind, options);
	ColcryptProviderError err = {0};
	char	   *new_version = NULL;

	if (e->ops->rotate_cmk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("key provider \"%s\" (%s) has no versions of a master key", provider, kind),
				 errhint("Name a new provider or key_ref to re-wrap under another master key.")));
	if (!e->ops->rotate_cmk(e->handle, key_ref, &new_version, &err))
		raise_failure(provider, e, "make a new master key version", &err);
	ColcryptKeyCacheCountProviderCall(false);
	return new_version;
}
