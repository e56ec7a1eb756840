/*-------------------------------------------------------------------------
 *
 * vault.c
 *	  The "vault" provider: CMKs are keys of a HashiCorp Vault or OpenBao
 *	  Transit engine.
 *
 * Options: "url" (https://vault:8200; plain http only to a loopback agent),
 * "mount" ("transit"), "namespace" (sent as X-Vault-Namespace), "ca_file",
 * "retries" (2), and one way to authenticate:
 *
 *	 "token"			a token, kept in the catalog (redacted in views);
 *	 "token_file"		a file holding the token, read again whenever it
 *						changes (an agent's sink file, say);
 *	 "role_id" with "secret_id" or "secret_id_file" (and "approle_mount",
 *						default "approle"): AppRole login; the token is
 *						renewed at two thirds of its lease and a new login
 *						made when renewal fails or the lease is over.
 *
 * A token that Vault refuses (403) is dropped and, with token_file or
 * AppRole, obtained again once before the call fails.
 *
 * The master key's key_ref is the Transit key's name.  Wrap is
 * POST <mount>/encrypt/<key>, unwrap POST <mount>/decrypt/<key>; the
 * ciphertext ("vault:vN:...") is stored as Vault returned it.  Each wrapped
 * data key is bound to its identity (ColcryptWrapAad: CMK name, data key
 * id and version), in one of two ways chosen per key:
 *
 *	 derived keys ("derived": true; what create_cmk makes): as the
 *		key-derivation "context".  Vault's rewrap carries the context, so
 *		rotate_master_key re-wraps at the server (POST rewrap/<key>) and
 *		the data keys never travel;
 *	 other keys: as AEAD "associated_data".  Vault's rewrap takes no
 *		associated data, so rotation unwraps and wraps instead.
 *
 * The way and the Transit key version are kept in wrap_meta
 * ("cmk_version=3;binding=context"); the version shows in colcrypt.keys.
 * A rotation without a new key_ref rotates the Transit key (POST
 * keys/<key>/rotate) and re-wraps every data key under the new version.
 *
 * The Vault policy colcrypt needs: "update" on <mount>/encrypt/<key>,
 * <mount>/decrypt/<key> and <mount>/rewrap/<key>, "read" on
 * <mount>/keys/<key>; and to create or rotate keys from SQL, "update" on
 * <mount>/keys/<key> and <mount>/keys/<key>/rotate.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include <sys/stat.h>

#include "catalog/pg_authid.h"
#include "colcrypt/http.h"
#include "colcrypt/provider.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#define VAULT_AAD_DOMAIN		"colcrypt-vault-v1"
#define VAULT_MAX_CIPHERTEXT	1024
#define VAULT_MAX_KEYS			32

typedef enum VaultAuth
{
	AUTH_TOKEN,
	AUTH_TOKEN_FILE,
	AUTH_APPROLE
} VaultAuth;

typedef enum VaultBinding
{
	BIND_UNKNOWN,
	BIND_CONTEXT,
	BIND_AAD
} VaultBinding;

typedef struct KeyInfo
{
	char		name[256];
	VaultBinding binding;
} KeyInfo;

typedef struct VaultHandle
{
	char		name[NAMEDATALEN];
	char	   *url;			/* without a trailing slash */
	char	   *mount;
	char	   *namespace;
	VaultAuth	auth;
	char	   *token_file;
	char	   *role_id;
	char	   *secret_id;		/* option, or NULL */
	char	   *secret_id_file;
	char	   *approle_mount;
	ColcryptHttp *http;

	/* The token in use (wiped when replaced) and what is known of it. */
	char	   *token;
	struct stat token_st;		/* token_file as last read */
	TimestampTz renew_at;		/* AppRole: renew from here on (0: never) */
	TimestampTz expires_at;		/* AppRole: lease end (0: none) */
	bool		renewable;

	KeyInfo		keys[VAULT_MAX_KEYS];
	int			nkeys;
} VaultHandle;

static const char *const vault_options[] = {
	"url", "mount", "namespace", "ca_file", "retries",
	"token", "token_file", "role_id", "secret_id", "secret_id_file", "approle_mount",
	NULL
};

/* ---------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------
 */

/* A mount path or namespace: segments of [A-Za-z0-9_.-], no "..". */
static bool
valid_path(const char *s)
{
	if (s == NULL || s[0] == '\0' || s[0] == '/' || strlen(s) > 200 || strstr(s, "..") != NULL)
		return false;
	for (const char *p = s; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '-' || *p == '.' || *p == '/'))
			return false;
	return s[strlen(s) - 1] != '/';
}

/* A Transit key name as Vault accepts it. */
static bool
valid_key_name(const char *s)
{
	size_t		n = s ? strlen(s) : 0;

	if (n == 0 || n >= sizeof(((KeyInfo *) 0)->name))
		return false;
	for (const char *p = s; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '-' || *p == '.' || *p == '@'))
			return false;
	return true;
}

static void
vault_validate(const char *name, Jsonb *options)
{
	char	   *token = ColcryptOptionText(options, "token");
	char	   *token_file = ColcryptOptionText(options, "token_file");
	char	   *role_id = ColcryptOptionText(options, "role_id");
	char	   *secret_id = ColcryptOptionText(options, "secret_id");
	char	   *secret_id_file = ColcryptOptionText(options, "secret_id_file");
	char	   *mount = ColcryptOptionText(options, "mount");
	char	   *ns = ColcryptOptionText(options, "namespace");
	char	   *approle_mount = ColcryptOptionText(options, "approle_mount");
	char	   *ca_file = ColcryptOptionText(options, "ca_file");
	int			ways = (token != NULL) + (token_file != NULL) + (role_id != NULL);

	ColcryptCheckOptionNames("vault", options, vault_options);
	ColcryptHttpCheckUrl("vault", "url", ColcryptOptionText(options, "url"));
	if (ways != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a vault provider needs exactly one of \"token\", \"token_file\" and \"role_id\""),
				 errhint("\"token_file\" (kept current by a Vault agent) or AppRole (\"role_id\" with \"secret_id_file\") keep the token out of the catalog.")));
	if (token != NULL && (token[0] == '\0' || strlen(token) > 1024))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"token\" must be a Vault token")));
	if (secret_id != NULL && secret_id_file != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("give \"secret_id\" or \"secret_id_file\", not both")));
	if (role_id == NULL && (secret_id != NULL || secret_id_file != NULL || approle_mount != NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"secret_id\", \"secret_id_file\" and \"approle_mount\" belong to AppRole login, which needs \"role_id\"")));
	if (mount != NULL && !valid_path(mount))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid \"mount\" \"%s\"", mount),
				 errhint("A mount path such as \"transit\" or \"team/transit\".")));
	if (approle_mount != NULL && !valid_path(approle_mount))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid \"approle_mount\" \"%s\"", approle_mount)));
	if (ns != NULL && !valid_path(ns))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid \"namespace\" \"%s\"", ns)));
	(void) ColcryptHttpRetries(options, true);

	/* File options: read on the server, so only for who may read server files. */
	if (token_file != NULL || secret_id_file != NULL || ca_file != NULL)
	{
		const char *const files[] = {token_file, secret_id_file, ca_file};
		const char *const names[] = {"token_file", "secret_id_file", "ca_file"};

		if (!superuser() && !has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to give a vault provider a file"),
					 errdetail("\"token_file\", \"secret_id_file\" and \"ca_file\" are read on the database server."),
					 errhint("Only superusers and members of pg_read_server_files may use them.")));
		for (int i = 0; i < (int) lengthof(files); i++)
		{
			if (files[i] == NULL)
				continue;
			if (files[i][0] != '/')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("\"%s\" must be an absolute path", names[i])));
			if (access(files[i], R_OK) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("cannot read \"%s\" file \"%s\": %m", names[i], files[i])));
		}
	}
}

static Jsonb *
vault_describe(Jsonb *options)
{
	static const char *const secret[] = {"token", "secret_id", NULL};
	static const char *const defaults[] = {"mount", "transit", "retries", "2", NULL};

	return ColcryptRedactOptions(options, secret, defaults);
}

/* ---------------------------------------------------------------------
 * Handles
 * ---------------------------------------------------------------------
 */

static void
set_token(VaultHandle *h, const char *token)
{
	if (h->token)
		ColcryptWipeFree(h->token, strlen(h->token));
	h->token = token ? MemoryContextStrdup(TopMemoryContext, token) : NULL;
}

static void *
vault_open(const char *name, Jsonb *options, ColcryptProviderError *err)
{
	VaultHandle *h = MemoryContextAllocZero(TopMemoryContext, sizeof(VaultHandle));
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char	   *url = ColcryptOptionText(options, "url");
	char	   *token = ColcryptOptionText(options, "token");
	char	   *ca_file = ColcryptOptionText(options, "ca_file");
	size_t		n;

	strlcpy(h->name, name, sizeof(h->name));
	h->url = url ? url : pstrdup("");
	n = strlen(h->url);
	while (n > 0 && h->url[n - 1] == '/')
		h->url[--n] = '\0';
	h->mount = ColcryptOptionText(options, "mount");
	if (h->mount == NULL)
		h->mount = pstrdup("transit");
	h->namespace = ColcryptOptionText(options, "namespace");
	h->token_file = ColcryptOptionText(options, "token_file");
	h->role_id = ColcryptOptionText(options, "role_id");
	h->secret_id = ColcryptOptionText(options, "secret_id");
	h->secret_id_file = ColcryptOptionText(options, "secret_id_file");
	h->approle_mount = ColcryptOptionText(options, "approle_mount");
	if (h->approle_mount == NULL)
		h->approle_mount = pstrdup("approle");
	h->auth = h->role_id ? AUTH_APPROLE : h->token_file ? AUTH_TOKEN_FILE : AUTH_TOKEN;
	MemoryContextSwitchTo(old);
	if (token)
	{
		set_token(h, token);
		ColcryptWipeFree(token, strlen(token));
	}
	h->http = ColcryptHttpCreate(psprintf("Vault at %s", h->url), ca_file,
								 ColcryptHttpRetries(options, false), err);
	if (h->http == NULL)
	{
		pfree(h);
		return NULL;
	}
	return h;
}

static void
vault_close(void *handle)
{
	VaultHandle *h = handle;

	set_token(h, NULL);
	if (h->secret_id)
		ColcryptWipeFree(h->secret_id, strlen(h->secret_id));
	ColcryptHttpDestroy(h->http);
	pfree(h);
}

/* ---------------------------------------------------------------------
 * Requests
 * ---------------------------------------------------------------------
 */

/* Vault's "errors" array, printable, for an error detail. */
static char *
vault_errors(const ColcryptHttpResponse *resp)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (resp->json_ok)
	{
		for (int i = 0; i < 3; i++)
		{
			char		path[32];
			const char *e;

			snprintf(path, sizeof(path), "errors[%d]", i);
			if ((e = ColcryptJsonString(&resp->doc, path)) == NULL)
				break;
			if (buf.len > 0)
				appendStringInfoString(&buf, "; ");
			/* Printable, each run of white space one space, trimmed. */
			for (const char *p = e; *p && buf.len < 300; p++)
			{
				char		c = (*p > ' ' && *p < 127) ? *p : ' ';

				if (c == ' ' && (buf.len == 0 || buf.data[buf.len - 1] == ' ' || p[1] == '\0'))
					continue;
				appendStringInfoChar(&buf, c);
			}
			while (buf.len > 0 && buf.data[buf.len - 1] == ' ')
				buf.data[--buf.len] = '\0';
		}
	}
	if (buf.len == 0)
		appendStringInfoString(&buf, resp->json_ok ? "no error text" : "the body is not JSON");
	return buf.data;
}

/* Fill err from an answer that is not 2xx. */
static void
answer_error(VaultHandle *h, const char *what, const ColcryptHttpResponse *resp,
			 ColcryptProviderError *err)
{
	char	   *detail = psprintf("HTTP %ld: %s (%d attempt%s).", resp->status, vault_errors(resp),
								  resp->attempts, resp->attempts == 1 ? "" : "s");
	int			code;
	const char *msg;

	switch (resp->status)
	{
		case 403:
			code = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
			msg = psprintf("Vault denied %s (the token was refused or its policy does not allow it)", what);
			break;
		case 404:
			code = ERRCODE_UNDEFINED_OBJECT;
			msg = psprintf("Vault found nothing for %s (is the Transit engine mounted at \"%s\"%s%s?)",
						   what, h->mount, h->namespace ? " in namespace " : "",
						   h->namespace ? h->namespace : "");
			break;
		case 429:
			code = COLCRYPT_ERRCODE_UNREACHABLE;
			msg = psprintf("Vault throttled %s", what);
			break;
		case 500:
		case 502:
		case 503:
		case 504:
			code = COLCRYPT_ERRCODE_UNREACHABLE;
			msg = psprintf("Vault could not serve %s", what);
			break;
		default:
			code = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
			msg = psprintf("Vault refused %s", what);
			break;
	}
	ColcryptProviderSetError(err, code, msg, detail);
}

/*
 * One request: POST with body, or GET when body is NULL.  with_token adds
 * the token; a 2xx answer returns true with resp filled (the caller frees
 * it), anything else false with err filled.
 */
static bool
vault_send(VaultHandle *h, const char *what, const char *path, StringInfo body,
		   bool idempotent, bool with_token, ColcryptHttpResponse *resp,
		   ColcryptProviderError *err)
{
	const char *headers[5];
	int			nh = 0;
	char	   *token_header = NULL;
	ColcryptHttpRequest req = {0};
	bool		ok;

	headers[nh++] = "X-Vault-Request: true";
	headers[nh++] = "Content-Type: application/json";
	if (h->namespace)
		headers[nh++] = psprintf("X-Vault-Namespace: %s", h->namespace);
	if (with_token)
		headers[nh++] = token_header = psprintf("X-Vault-Token: %s", h->token ? h->token : "");
	headers[nh] = NULL;

	req.method = body ? "POST" : "GET";
	req.url = psprintf("%s/v1/%s", h->url, path);
	req.headers = headers;
	req.body = body ? body->data : NULL;
	req.bodylen = body ? (size_t) body->len : 0;
	req.idempotent = idempotent;
	ok = ColcryptHttpPerform(h->http, &req, resp, err);
	if (token_header)
		ColcryptWipeFree(token_header, strlen(token_header));
	if (!ok)
		return false;
	if (resp->status < 200 || resp->status > 299)
	{
		answer_error(h, what, resp, err);
		return false;
	}
	return true;
}

/* Read a number field (such as a lease in seconds), or -1. */
static long
json_long(const ColcryptJsonDoc *doc, const char *path)
{
	const ColcryptJsonItem *it = ColcryptJsonGet(doc, path);
	char	   *end;
	long		v;

	if (it == NULL || it->kind != CJ_NUMBER)
		return -1;
	v = strtol(it->value, &end, 10);
	return (*end == '\0' && v >= 0) ? v : -1;
}

/* Take the token and lease from an AppRole login or renewal answer. */
static bool
take_auth(VaultHandle *h, const ColcryptHttpResponse *resp, bool renewal,
		  ColcryptProviderError *err)
{
	const char *token = ColcryptJsonString(&resp->doc, "auth.client_token");
	long		lease = json_long(&resp->doc, "auth.lease_duration");
	const ColcryptJsonItem *renewable = ColcryptJsonGet(&resp->doc, "auth.renewable");
	TimestampTz now = GetCurrentTimestamp();

	if (!resp->json_ok || token == NULL || token[0] == '\0' || strlen(token) > 1024 || lease < 0)
	{
		ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
								 renewal ? "Vault's token renewal answer has no auth block"
								 : "Vault's AppRole login answer has no token", NULL);
		return false;
	}
	/* Any real lease is far shorter; a larger one would overflow the arithmetic below. */
	lease = Min(lease, (long) PG_INT32_MAX);
	if (!renewal || strcmp(token, h->token ? h->token : "") != 0)
		set_token(h, token);
	h->renewable = renewable != NULL && strcmp(renewable->value, "true") == 0;
	if (lease == 0)
		h->renew_at = h->expires_at = 0;
	else
	{
		h->expires_at = TimestampTzPlusMilliseconds(now, lease * 1000);
		h->renew_at = TimestampTzPlusMilliseconds(now, lease * 1000 * 2 / 3);
	}
	return true;
}

static bool
approle_login(VaultHandle *h, ColcryptProviderError *err)
{
	StringInfoData body;
	ColcryptHttpResponse resp;
	char	   *secret = NULL;
	bool		ok;

	if (h->secret_id_file)
	{
		secret = ColcryptReadSecretFile(h->secret_id_file, "Vault AppRole secret_id", err);
		if (secret == NULL)
			return false;
	}
	else if (h->secret_id)
		secret = pstrdup(h->secret_id);
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	ColcryptJsonAppendField(&body, true, "role_id", h->role_id);
	if (secret)
	{
		ColcryptJsonAppendField(&body, false, "secret_id", secret);
		ColcryptWipeFree(secret, strlen(secret));
	}
	appendStringInfoChar(&body, '}');
	set_token(h, NULL);
	ok = vault_send(h, "the AppRole login", psprintf("auth/%s/login", h->approle_mount),
					&body, true, false, &resp, err);
	ColcryptWipeFree(body.data, body.maxlen);
	if (!ok && resp.status == 400)
	{
		/* Vault answers a wrong role_id or secret_id with 400. */
		err->sqlerrcode = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		snprintf(err->message, sizeof(err->message), "Vault refused the AppRole login");
	}
	if (ok)
		ok = take_auth(h, &resp, false, err);
	ColcryptHttpResponseFree(&resp);
	return ok;
}

/* Renew an AppRole token; false (no error raised) if Vault would not. */
static bool
renew_token(VaultHandle *h)
{
	StringInfoData body;
	ColcryptHttpResponse resp;
	ColcryptProviderError ignored = {0};
	bool		ok;

	initStringInfo(&body);
	appendStringInfoString(&body, "{}");
	ok = vault_send(h, "the token renewal", "auth/token/renew-self", &body, true, true,
					&resp, &ignored);
	if (ok)
		ok = take_auth(h, &resp, true, &ignored);
	ColcryptHttpResponseFree(&resp);
	return ok;
}

/* Make sure h->token is a token worth sending. */
static bool
ensure_token(VaultHandle *h, ColcryptProviderError *err)
{
	switch (h->auth)
	{
		case AUTH_TOKEN:
			return true;
		case AUTH_TOKEN_FILE:
			{
				struct stat st;
				char	   *t;

				if (stat(h->token_file, &st) == 0 && h->token != NULL &&
					st.st_ino == h->token_st.st_ino && st.st_size == h->token_st.st_size &&
					st.st_mtim.tv_sec == h->token_st.st_mtim.tv_sec &&
					st.st_mtim.tv_nsec == h->token_st.st_mtim.tv_nsec)
					return true;
				t = ColcryptReadSecretFile(h->token_file, "Vault token", err);
				if (t == NULL)
					return false;
				set_token(h, t);
				ColcryptWipeFree(t, strlen(t));
				h->token_st = st;
				return true;
			}
		case AUTH_APPROLE:
			{
				TimestampTz now = GetCurrentTimestamp();

				if (h->token != NULL && (h->renew_at == 0 || now < h->renew_at))
					return true;
				if (h->token != NULL && h->renewable && now < h->expires_at && renew_token(h))
					return true;
				return approle_login(h, err);
			}
	}
	return false;
}

/* Forget the token so that the next ensure_token gets a new one. */
static bool
drop_token(VaultHandle *h)
{
	switch (h->auth)
	{
		case AUTH_TOKEN:
			return false;		/* nothing new to get */
		case AUTH_TOKEN_FILE:
			memset(&h->token_st, 0, sizeof(h->token_st));
			set_token(h, NULL);
			return true;
		case AUTH_APPROLE:
			set_token(h, NULL);
			return true;
	}
	return false;
}

/*
 * An authenticated call.  A 403 with a token that may have gone stale
 * (expired AppRole token, replaced token file) gets one more try with a
 * fresh one.
 */
static bool
vault_call(VaultHandle *h, const char *what, const char *path, StringInfo body,
		   bool idempotent, ColcryptHttpResponse *resp, ColcryptProviderError *err)
{
	memset(resp, 0, sizeof(*resp));
	for (int round = 0; round < 2; round++)
	{
		if (!ensure_token(h, err))
			return false;
		if (vault_send(h, what, path, body, idempotent, true, resp, err))
			return true;
		if (resp->status != 403 || round == 1 || !drop_token(h))
			return false;
		ColcryptHttpResponseFree(resp);
		memset(err, 0, sizeof(*err));
	}
	return false;
}

/* ---------------------------------------------------------------------
 * Keys
 * ---------------------------------------------------------------------
 */

static bool
check_key_ref(const char *key_ref, ColcryptProviderError *err)
{
	if (valid_key_name(key_ref))
		return true;
	ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE,
							 "invalid Transit key name",
							 "A Transit key name has letters, digits, '_', '-', '.' and '@' only.");
	return false;
}

/*
 * Read a Transit key's description.  *found false (and true returned) when
 * Vault has no such key; binding gets how to bind data keys to it.
 */
static bool
read_key(VaultHandle *h, const char *key_ref, bool *found, VaultBinding *binding,
		 long *latest, ColcryptProviderError *err)
{
	ColcryptHttpResponse resp;
	const char *type;
	const ColcryptJsonItem *derived;
	const ColcryptJsonItem *enc;

	*found = false;
	*binding = BIND_UNKNOWN;
	if (latest)
		*latest = -1;
	if (!vault_call(h, "reading the Transit key", psprintf("%s/keys/%s", h->mount, key_ref),
					NULL, true, &resp, err))
	{
		bool		absent = resp.status == 404;

		ColcryptHttpResponseFree(&resp);
		if (absent)
		{
			memset(err, 0, sizeof(*err));
			return true;
		}
		return false;
	}
	*found = true;
	type = ColcryptJsonString(&resp.doc, "data.type");
	derived = ColcryptJsonGet(&resp.doc, "data.derived");
	enc = ColcryptJsonGet(&resp.doc, "data.supports_encryption");
	if (latest)
		*latest = json_long(&resp.doc, "data.latest_version");
	if (type == NULL || (strcmp(type, "aes256-gcm96") != 0 && strcmp(type, "aes128-gcm96") != 0 &&
						 strcmp(type, "chacha20-poly1305") != 0) ||
		(enc != NULL && strcmp(enc->value, "true") != 0))
	{
		ColcryptProviderSetError(err, ERRCODE_WRONG_OBJECT_TYPE,
								 psprintf("Transit key \"%s\" cannot wrap data keys", key_ref),
								 psprintf("Its type is %s; colcrypt needs an AEAD key: aes256-gcm96 (recommended), aes128-gcm96 or chacha20-poly1305.",
										  type ? type : "unknown"));
		ColcryptHttpResponseFree(&resp);
		return false;
	}
	*binding = (derived != NULL && strcmp(derived->value, "true") == 0) ? BIND_CONTEXT : BIND_AAD;
	ColcryptHttpResponseFree(&resp);
	return true;
}

/* How new wraps under key_ref bind the data key's identity (cached). */
static bool
key_binding(VaultHandle *h, const char *key_ref, VaultBinding *binding,
			ColcryptProviderError *err)
{
	bool		found;

	for (int i = 0; i < h->nkeys; i++)
		if (strcmp(h->keys[i].name, key_ref) == 0)
		{
			*binding = h->keys[i].binding;
			return true;
		}
	if (!read_key(h, key_ref, &found, binding, NULL, err))
	{
		/* A policy without "read" on keys/<key>: bind as associated data. */
		if (err->sqlerrcode != ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION)
			return false;
		memset(err, 0, sizeof(*err));
		*binding = BIND_AAD;
	}
	else if (!found)
	{
		ColcryptProviderSetError(err, ERRCODE_UNDEFINED_OBJECT,
								 psprintf("Transit key \"%s\" does not exist", key_ref),
								 psprintf("Mount \"%s\"%s%s.", h->mount,
										  h->namespace ? ", namespace " : "",
										  h->namespace ? h->namespace : ""));
		return false;
	}
	if (h->nkeys == VAULT_MAX_KEYS)
		h->nkeys = 0;
	strlcpy(h->keys[h->nkeys].name, key_ref, sizeof(h->keys[0].name));
	h->keys[h->nkeys++].binding = *binding;
	return true;
}

static void
forget_key(VaultHandle *h, const char *key_ref)
{
	for (int i = 0; i < h->nkeys; i++)
		if (strcmp(h->keys[i].name, key_ref) == 0)
			h->keys[i] = h->keys[--h->nkeys];
}

/* The binding field ("context" or "associated_data") and its value. */
static void
append_binding(StringInfo body, VaultBinding binding, const ColcryptWrapContext *ctx)
{
	uint8		aad[512];
	size_t		n = ColcryptWrapAad(VAULT_AAD_DOMAIN, ctx, aad, sizeof(aad));
	char	   *b64 = ColcryptBase64Encode(aad, n);

	ColcryptJsonAppendField(body, false, binding == BIND_CONTEXT ? "context" : "associated_data", b64);
	pfree(b64);
}

static VaultBinding
meta_binding(const char *wrap_meta)
{
	if (wrap_meta == NULL)
		return BIND_UNKNOWN;
	if (strstr(wrap_meta, "binding=context") != NULL)
		return BIND_CONTEXT;
	if (strstr(wrap_meta, "binding=associated_data") != NULL)
		return BIND_AAD;
	return BIND_UNKNOWN;
}

/* Take "vault:vN:..." from an answer into out; N into *version. */
static bool
take_ciphertext(const ColcryptHttpResponse *resp, StringInfo out, long *version,
				ColcryptProviderError *err)
{
	const char *ct = ColcryptJsonString(&resp->doc, "data.ciphertext");
	char	   *end;

	*version = -1;
	if (ct != NULL && strncmp(ct, "vault:v", 7) == 0 && strlen(ct) < VAULT_MAX_CIPHERTEXT)
	{
		*version = strtol(ct + 7, &end, 10);
		if (end == ct + 7 || *end != ':' || *version < 1)
			*version = -1;
	}
	if (*version < 0)
	{
		ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
								 "Vault's answer has no ciphertext of the form vault:vN:...", NULL);
		return false;
	}
	appendBinaryStringInfo(out, ct, strlen(ct));
	return true;
}

static bool
check_blob(const uint8 *wrapped, size_t len, ColcryptProviderError *err)
{
	bool		ok = len > 8 && len < VAULT_MAX_CIPHERTEXT && memcmp(wrapped, "vault:v", 7) == 0;

	for (size_t i = 0; ok && i < len; i++)
		ok = wrapped[i] > ' ' && wrapped[i] < 127;
	if (!ok)
		ColcryptProviderSetError(err, ERRCODE_DATA_CORRUPTED,
								 "the wrapped data key is not a Vault ciphertext", NULL);
	return ok;
}

/* ---------------------------------------------------------------------
 * Operations
 * ---------------------------------------------------------------------
 */

static bool
vault_wrap(void *handle, const ColcryptWrapContext *ctx,
		   const uint8 *dek, size_t deklen, StringInfo wrapped, char **wrap_meta,
		   ColcryptProviderError *err)
{
	VaultHandle *h = handle;
	VaultBinding binding;
	StringInfoData body;
	ColcryptHttpResponse resp;
	char	   *b64;
	long		version;
	bool		ok;

	if (!check_key_ref(ctx->key_ref, err) || !key_binding(h, ctx->key_ref, &binding, err))
		return false;
	b64 = ColcryptBase64Encode(dek, deklen);
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	ColcryptJsonAppendField(&body, true, "plaintext", b64);
	ColcryptWipeFree(b64, strlen(b64));
	append_binding(&body, binding, ctx);
	appendStringInfoChar(&body, '}');
	ok = vault_call(h, "the encrypt request", psprintf("%s/encrypt/%s", h->mount, ctx->key_ref),
					&body, true, &resp, err);
	ColcryptWipeFree(body.data, body.maxlen);
	if (ok)
		ok = take_ciphertext(&resp, wrapped, &version, err);
	if (ok)
		*wrap_meta = psprintf("cmk_version=%ld;binding=%s", version,
							  binding == BIND_CONTEXT ? "context" : "associated_data");
	ColcryptHttpResponseFree(&resp);
	return ok;
}

static bool
vault_unwrap(void *handle, const ColcryptWrapContext *ctx,
			 const uint8 *wrapped, size_t wrappedlen, const char *wrap_meta,
			 uint8 *dek, size_t deklen, ColcryptProviderError *err)
{
	VaultHandle *h = handle;
	VaultBinding binding = meta_binding(wrap_meta);
	StringInfoData body;
	ColcryptHttpResponse resp;
	const char *pt;
	bool		ok;

	if (!check_key_ref(ctx->key_ref, err) || !check_blob(wrapped, wrappedlen, err))
		return false;
	if (binding == BIND_UNKNOWN)
	{
		ColcryptProviderSetError(err, ERRCODE_DATA_CORRUPTED,
								 "the wrapped data key has no binding note",
								 psprintf("wrap_meta is \"%s\".", wrap_meta ? wrap_meta : ""));
		return false;
	}
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	ColcryptJsonAppendField(&body, true, "ciphertext", pnstrdup((const char *) wrapped, wrappedlen));
	append_binding(&body, binding, ctx);
	appendStringInfoChar(&body, '}');
	ok = vault_call(h, "the decrypt request", psprintf("%s/decrypt/%s", h->mount, ctx->key_ref),
					&body, true, &resp, err);
	pfree(body.data);
	if (ok)
	{
		pt = ColcryptJsonString(&resp.doc, "data.plaintext");
		if (pt == NULL || ColcryptBase64Decode(pt, strlen(pt), dek, deklen) != (int) deklen)
		{
			ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
									 "Vault's decrypt answer does not hold a data key", NULL);
			cc_wipe(dek, deklen);
			ok = false;
		}
	}
	ColcryptHttpResponseFree(&resp);
	return ok;
}

static bool
create_key(VaultHandle *h, const char *key_ref, ColcryptProviderError *err)
{
	StringInfoData body;
	ColcryptHttpResponse resp;
	bool		ok;

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"type\":\"aes256-gcm96\",\"derived\":true,\"exportable\":false}");
	ok = vault_call(h, "creating the Transit key", psprintf("%s/keys/%s", h->mount, key_ref),
					&body, true, &resp, err);
	ColcryptHttpResponseFree(&resp);
	pfree(body.data);
	return ok;
}

static bool
vault_ensure_cmk(void *handle, const char *key_ref, bool create, bool *created,
				 char **actual_ref, ColcryptProviderError *err)
{
	VaultHandle *h = handle;
	VaultBinding binding;
	bool		found;

	*created = false;
	if (!check_key_ref(key_ref, err))
		return false;
	forget_key(h, key_ref);
	if (!read_key(h, key_ref, &found, &binding, NULL, err))
	{
		/* Without "read" on keys/<key>, the round trip of the caller proves it. */
		if (err->sqlerrcode == ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION && !create)
		{
			memset(err, 0, sizeof(*err));
			return true;
		}
		return false;
	}
	if (!found && !create)
	{
		ColcryptProviderSetError(err, ERRCODE_UNDEFINED_OBJECT,
								 psprintf("Transit key \"%s\" does not exist", key_ref),
								 psprintf("Create it in Vault (derived, aes256-gcm96) or pass create_cmk => true; mount \"%s\".",
										  h->mount));
		return false;
	}
	if (!found)
	{
		if (!create_key(h, key_ref, err))
			return false;
		*created = true;
	}
	return true;
}

static bool
vault_rotate_cmk(void *handle, const char *key_ref, char **new_key_ref,
				 char **new_version, ColcryptProviderError *err)
{
	VaultHandle *h = handle;
	StringInfoData body;
	ColcryptHttpResponse resp;
	bool		ok;
	bool		found;
	VaultBinding binding;
	long		latest;

	*new_key_ref = NULL;
	if (!check_key_ref(key_ref, err))
		return false;
	initStringInfo(&body);
	appendStringInfoString(&body, "{}");
	/* Not repeated after a failure: a retry could rotate twice. */
	ok = vault_call(h, "rotating the Transit key", psprintf("%s/keys/%s/rotate", h->mount, key_ref),
					&body, false, &resp, err);
	ColcryptHttpResponseFree(&resp);
	pfree(body.data);
	if (!ok || !read_key(h, key_ref, &found, &binding, &latest, err))
		return false;
	*new_version = latest > 0 ? psprintf("cmk_version=%ld", latest) : NULL;
	return true;
}

static bool
vault_rewrap(void *handle, const ColcryptWrapContext *from,
			 const uint8 *wrapped, size_t wrappedlen, const char *wrap_meta,
			 const ColcryptWrapContext *to, StringInfo rewrapped, char **new_wrap_meta,
			 ColcryptProviderError *err)
{
	VaultHandle *h = handle;
	StringInfoData body;
	ColcryptHttpResponse resp;
	long		version;
	bool		ok;

	/*
	 * Vault re-wraps within one key and carries only the derivation context:
	 * anything else is declined (err left empty) and the caller unwraps and
	 * wraps.
	 */
	if (strcmp(from->key_ref, to->key_ref) != 0 || meta_binding(wrap_meta) != BIND_CONTEXT ||
		from->key_id != to->key_id || from->key_version != to->key_version)
		return false;
	if (!check_key_ref(to->key_ref, err) || !check_blob(wrapped, wrappedlen, err))
		return false;
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	ColcryptJsonAppendField(&body, true, "ciphertext", pnstrdup((const char *) wrapped, wrappedlen));
	append_binding(&body, BIND_CONTEXT, to);
	appendStringInfoChar(&body, '}');
	ok = vault_call(h, "the rewrap request", psprintf("%s/rewrap/%s", h->mount, to->key_ref),
					&body, true, &resp, err);
	pfree(body.data);
	if (ok)
		ok = take_ciphertext(&resp, rewrapped, &version, err);
	if (ok)
		*new_wrap_meta = psprintf("cmk_version=%ld;binding=context", version);
	ColcryptHttpResponseFree(&resp);
	return ok;
}

static bool
vault_health(void *handle, StringInfo detail, ColcryptProviderError *err)
{
	VaultHandle *h = handle;
	ColcryptHttpResponse resp;
	const char *version;
	long		ttl;
	bool		ok;

	/* sys/health answers 200 only when unsealed and active. */
	ok = vault_send(h, "the health check", "sys/health", NULL, true, false, &resp, err);
	if (!ok)
	{
		ColcryptHttpResponseFree(&resp);
		return false;
	}
	version = ColcryptJsonString(&resp.doc, "version");
	appendStringInfo(detail, "Vault %s at %s, unsealed", version ? version : "(version unknown)", h->url);
	ColcryptHttpResponseFree(&resp);

	if (!vault_call(h, "the token lookup", "auth/token/lookup-self", NULL, true, &resp, err))
	{
		ColcryptHttpResponseFree(&resp);
		return false;
	}
	ttl = json_long(&resp.doc, "data.ttl");
	appendStringInfo(detail, "; %s token, %s", h->auth == AUTH_APPROLE ? "AppRole" :
					 h->auth == AUTH_TOKEN_FILE ? "token_file" : "static",
					 ttl > 0 ? psprintf("ttl %ld s", ttl) : "no expiry");
	if (h->namespace)
		appendStringInfo(detail, "; namespace %s", h->namespace);
	appendStringInfo(detail, "; mount %s", h->mount);
	ColcryptHttpResponseFree(&resp);
	return true;
}

const ColcryptProviderOps colcrypt_vault_provider = {
	.kind = "vault",
	.validate = vault_validate,
	.open = vault_open,
	.close = vault_close,
	.wrap = vault_wrap,
	.unwrap = vault_unwrap,
	.ensure_cmk = vault_ensure_cmk,
	.rotate_cmk = vault_rotate_cmk,
	.rewrap = vault_rewrap,
	.health = vault_health,
	.describe = vault_describe,
};
