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
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

bool		colcrypt_provider_failed = false;

static const ColcryptProviderOps *const kinds[] = {
	&colcrypt_file_provider,
	&colcrypt_pkcs11_provider,
	&colcrypt_kmip_provider,
	&colcrypt_vault_provider,
	&colcrypt_aws_kms_provider,
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
		/* Opening reads secrets (tokens, PINs, keyring master keys). */
		ColcryptGuardKeyMaterial();
		e->ops = ColcryptProviderKindOrError(kind);
		e->handle = e->ops->open(provider, options, &err);
		if (e->handle == NULL)
		{
			ColcryptKeyCacheCountProviderCall(true);
			ColcryptAuditProviderFailure(provider, "open", &err);
			colcrypt_provider_failed = true;
			ereport(ERROR,
					(errcode(err.sqlerrcode ? err.sqlerrcode : COLCRYPT_ERRCODE_UNREACHABLE),
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
	colcrypt_provider_failed = true;
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
						  Jsonb *options, const char *key_ref, bool create,
						  char **actual_ref)
{
	HandleEntry *e = get_handle(provider, kind, options);
	ColcryptProviderError err = {0};
	bool		created = false;

	*actual_ref = NULL;
	if (!e->ops->ensure_cmk(e->handle, key_ref, create, &created, actual_ref, &err))
		raise_failure(provider, e, "use the master key", &err);
	ColcryptKeyCacheCountProviderCall(false);
	return created;
}

char *
ColcryptProviderRotateCmk(const char *provider, const char *kind,
						  Jsonb *options, const char *key_ref, char **new_key_ref)
{
	HandleEntry *e = get_handle(provider, kind, options);
	ColcryptProviderError err = {0};
	char	   *new_version = NULL;

	*new_key_ref = NULL;
	if (e->ops->rotate_cmk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("key provider \"%s\" (%s) has no versions of a master key", provider, kind),
				 errhint("Name a new provider or key_ref to re-wrap under another master key.")));
	if (!e->ops->rotate_cmk(e->handle, key_ref, new_key_ref, &new_version, &err))
		raise_failure(provider, e, "make a new master key", &err);
	ColcryptKeyCacheCountProviderCall(false);
	return new_version;
}

bool
ColcryptProviderCanRewrap(const char *kind)
{
	const ColcryptProviderOps *ops = ColcryptProviderKind(kind);

	return ops != NULL && ops->rewrap != NULL;
}

bool
ColcryptProviderRewrap(const char *provider, const char *kind, Jsonb *options,
					   const ColcryptWrapContext *from,
					   const uint8 *wrapped, size_t wrappedlen,
					   const char *wrap_meta,
					   const ColcryptWrapContext *to,
					   StringInfo rewrapped, char **new_wrap_meta)
{
	HandleEntry *e = get_handle(provider, kind, options);
	ColcryptProviderError err = {0};

	*new_wrap_meta = NULL;
	if (e->ops->rewrap == NULL)
		return false;
	if (!e->ops->rewrap(e->handle, from, wrapped, wrappedlen, wrap_meta,
						to, rewrapped, new_wrap_meta, &err))
	{
		if (err.sqlerrcode == 0)
			return false;		/* declined: the caller unwraps and wraps */
		raise_failure(provider, e, "re-wrap a data key", &err);
	}
	ColcryptKeyCacheCountProviderCall(false);
	return true;
}

bool
ColcryptProviderGenerate(const char *provider, const char *kind, Jsonb *options,
						 const ColcryptWrapContext *ctx, uint8 *dek, size_t deklen,
						 StringInfo wrapped, char **wrap_meta)
{
	const ColcryptProviderOps *ops = ColcryptProviderKind(kind);
	HandleEntry *e;
	ColcryptProviderError err = {0};

	*wrap_meta = NULL;
	if (ops == NULL || ops->generate == NULL)
		return false;
	e = get_handle(provider, kind, options);
	if (!e->ops->generate(e->handle, ctx, dek, deklen, wrapped, wrap_meta, &err))
	{
		cc_wipe(dek, deklen);
		if (err.sqlerrcode == 0)
			return false;		/* not configured to: the caller generates */
		raise_failure(provider, e, "generate a data key", &err);
	}
	ColcryptKeyCacheCountProviderCall(false);
	return true;
}

/*
 * Check a provider without raising: false with err filled (and audited)
 * when opening it or its health check fails.
 */
bool
ColcryptProviderHealth(const char *provider, const char *kind, Jsonb *options,
					   StringInfo detail, ColcryptProviderError *err)
{
	HandleEntry *e;
	MemoryContext cxt = CurrentMemoryContext;
	bool		ok;

	PG_TRY();
	{
		e = get_handle(provider, kind, options);
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		ColcryptProviderSetError(err, ed->sqlerrcode, ed->message, ed->detail);
		return false;
	}
	PG_END_TRY();
	ok = e->ops->health(e->handle, detail, err);
	ColcryptKeyCacheCountProviderCall(!ok);
	if (!ok)
	{
		char		msg[sizeof(err->message)];

		ColcryptAuditProviderFailure(provider, "check health", err);
		snprintf(msg, sizeof(msg), "key provider \"%s\" (%s): %s", provider, kind, err->message);
		strlcpy(err->message, msg, sizeof(err->message));
	}
	return ok;
}

/* ----------------------------------------------------------------------
 * Helpers for the kinds
 * ----------------------------------------------------------------------
 */

/* Raise 22023 for an option name that is not in allowed (NULL-terminated). */
void
ColcryptCheckOptionNames(const char *kind, Jsonb *options, const char *const *allowed)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (options == NULL || !JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options of a %s provider must be a JSON object", kind)));
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		bool		known = false;
		StringInfoData list;

		if (tok != WJB_KEY)
			continue;
		for (const char *const *a = allowed; *a; a++)
			if (strlen(*a) == (size_t) v.val.string.len &&
				strncmp(*a, v.val.string.val, v.val.string.len) == 0)
				known = true;
		if (known)
			continue;
		initStringInfo(&list);
		for (const char *const *a = allowed; *a; a++)
			appendStringInfo(&list, "%s\"%s\"", a == allowed ? "" : ", ", *a);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown option \"%.*s\" for %s %s provider",
						v.val.string.len, v.val.string.val,
						strchr("aeiou", kind[0]) ? "an" : "a", kind),
				 errhint("Its options are %s.", list.data)));
	}
}

/*
 * Options as views show them: the values of the secret keys replaced, and
 * defaults (name, value pairs, NULL-terminated) added where not given.
 */
Jsonb *
ColcryptRedactOptions(Jsonb *options, const char *const *secret,
					  const char *const *defaults)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue *res = NULL;
	bool		redact_next = false;

	if (options == NULL || !JB_ROOT_IS_OBJECT(options))
		return options;
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			redact_next = false;
			for (const char *const *s = secret; s && *s; s++)
				if (strlen(*s) == (size_t) v.val.string.len &&
					strncmp(*s, v.val.string.val, v.val.string.len) == 0)
					redact_next = true;
			pushJsonbValue(&state, tok, &v);
		}
		else if (tok == WJB_VALUE && redact_next)
		{
			JsonbValue	r;

			r.type = jbvString;
			r.val.string.val = "********";
			r.val.string.len = 8;
			pushJsonbValue(&state, tok, &r);
		}
		else if (tok == WJB_END_OBJECT)
		{
			for (const char *const *d = defaults; d && d[0]; d += 2)
			{
				char	   *have = ColcryptOptionText(options, d[0]);
				JsonbValue	k;
				JsonbValue	dv;

				if (have != NULL)
					continue;
				k.type = jbvString;
				k.val.string.val = (char *) d[0];
				k.val.string.len = strlen(d[0]);
				dv.type = jbvString;
				dv.val.string.val = (char *) d[1];
				dv.val.string.len = strlen(d[1]);
				pushJsonbValue(&state, WJB_KEY, &k);
				pushJsonbValue(&state, WJB_VALUE, &dv);
			}
			res = pushJsonbValue(&state, tok, NULL);
		}
		else
			pushJsonbValue(&state, tok, tok == WJB_BEGIN_OBJECT ? NULL : &v);
	}
	return JsonbValueToJsonb(res);
}

/*
 * Read a secret (a PIN, a token) from a file that only the server's OS
 * user may read: a regular file, no group or other permissions, at most
 * 4 kB, one trailing newline dropped.  NULL with err filled on failure;
 * the caller wipes and frees the result.
 */
char *
ColcryptReadSecretFile(const char *path, const char *what, ColcryptProviderError *err)
{
	int			fd;
	struct stat st;
	char	   *buf;
	ssize_t		n;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
	{
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 psprintf("could not open %s file", what),
								 psprintf("\"%s\": %s", path, strerror(errno)));
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
		(st.st_mode & (S_IRWXG | S_IRWXO)) != 0 || st.st_uid != geteuid() ||
		st.st_size > 4096)
	{
		close(fd);
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 psprintf("%s file is not safe to use", what),
								 psprintf("\"%s\" must be a regular file of at most 4 kB, owned by the server's OS user, with no group or other permissions (chmod 600).", path));
		return NULL;
	}
	buf = palloc0(st.st_size + 1);
	n = read(fd, buf, st.st_size);
	close(fd);
	if (n != st.st_size)
	{
		pfree(buf);
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 psprintf("could not read %s file", what),
								 psprintf("\"%s\"", path));
		return NULL;
	}
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	if (n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	if (n == 0 || strlen(buf) != (size_t) n)
	{
		cc_wipe(buf, st.st_size + 1);
		pfree(buf);
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 psprintf("%s file is empty or holds a NUL byte", what),
								 psprintf("\"%s\"", path));
		return NULL;
	}
	return buf;
}

char *
ColcryptUtcStamp(void)
{
	pg_time_t	now = (pg_time_t) time(NULL);
	char		stamp[32];

	pg_strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", pg_gmtime(&now));
	return pstrdup(stamp);
}

TimestampTz
ColcryptProviderDeadline(void)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), colcrypt_kms_timeout);
}

/*
 * Wait for fd (a socket or a pipe) until the deadline, serving interrupts
 * on the way: a query cancel or termination throws from here.  Returns
 * false when the deadline passed first.
 */
bool
ColcryptProviderWaitFd(int fd, bool for_write, TimestampTz deadline)
{
	for (;;)
	{
		long		ms;
		int			rc;

		CHECK_FOR_INTERRUPTS();
		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (ms <= 0)
			return false;
		rc = WaitLatchOrSocket(MyLatch,
							   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH |
							   (for_write ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE),
							   fd, ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
		if (rc & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
			return true;
	}
}
