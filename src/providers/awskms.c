/*-------------------------------------------------------------------------
 *
 * awskms.c
 *	  The "aws-kms" provider: CMKs are AWS KMS keys (or keys of a service
 *	  that speaks the KMS API), reached over its JSON 1.1 protocol with
 *	  Signature Version 4.
 *
 * Options: "region" (required), "endpoint" (default
 * https://kms.<region>.amazonaws.com; plain http only to loopback), "ca_file",
 * "retries" (2), and credentials, the first found of:
 *
 *	 "access_key_id" + "secret_access_key" (+ "session_token") in options;
 *	 the server process's environment: AWS_ACCESS_KEY_ID,
 *		AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *	 a shared credentials file: "credentials_file" (else
 *		AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials of the server's
 *		OS user), section "profile" (else AWS_PROFILE, else "default").  It is
 *		read again whenever it changes, so a process that refreshes
 *		temporary credentials there is followed without a reconnect.
 *
 * The master key's key_ref is a key id, key ARN, alias name ("alias/x") or
 * alias ARN.  Wrap is Encrypt, unwrap Decrypt (naming the key, so that a
 * blob of another key is refused), both with an EncryptionContext that
 * binds the data key to its identity: {"colcrypt:cmk": key_ref,
 * "colcrypt:key_id": id, "colcrypt:key_version": version}.  KMS logs the
 * context in CloudTrail, so the audit trail there names the data key.
 * rotate_master_key re-wraps with ReEncrypt: the data key never leaves KMS.
 * Without a new key_ref it first asks KMS for on-demand rotation of the key
 * (RotateKeyOnDemand: new key material behind the same ARN).  add_master_key
 * with create_cmk => true runs CreateKey (and CreateAlias for an alias
 * name).  With "data_key_source": "kms", data keys come from KMS's
 * generator (GenerateDataKey returns the key and its blob in one call)
 * instead of the database's.  The health check signs a ListAliases call: an AccessDenied answer
 * still proves the credentials and signature good.
 *
 * Every request is signed anew (X-Amz-Date of its first attempt; retries
 * within colcrypt.kms_timeout resend the same signed request).  KMS
 * throttles with HTTP 400 ThrottlingException: that, 429 and 5xx are
 * retried.  Secrets are never sent except as the signature, and are wiped
 * when the handle closes.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include <pwd.h>
#include <sys/stat.h>
#include <time.h>

#include "catalog/pg_authid.h"
#include "colcrypt/http.h"
#include "colcrypt/provider.h"
#include "colcrypt/sigv4.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#define AWS_MAX_BLOB	6144		/* KMS ciphertext blobs are < 6 kB */

typedef enum CredSource
{
	CRED_OPTIONS,
	CRED_ENV,
	CRED_FILE
} CredSource;

typedef struct AwsHandle
{
	char		name[NAMEDATALEN];
	char	   *region;
	char	   *endpoint;
	char	   *host;			/* the Host header */
	ColcryptHttp *http;

	CredSource	source;
	char	   *cred_file;		/* CRED_FILE: path and profile */
	char	   *profile;
	struct stat cred_st;		/* the file as last read */
	bool		cred_loaded;

	/* Current credentials; wiped when replaced. */
	char	   *access_key_id;
	char	   *secret_access_key;
	char	   *session_token;

	bool		kms_data_keys;	/* data_key_source "kms": GenerateDataKey */
} AwsHandle;

static const char *const aws_options[] = {
	"region", "endpoint", "ca_file", "retries", "data_key_source",
	"access_key_id", "secret_access_key", "session_token",
	"credentials_file", "profile",
	NULL
};

/* ---------------------------------------------------------------------
 * Options and credentials
 * ---------------------------------------------------------------------
 */

static bool
valid_region(const char *r)
{
	if (r == NULL || r[0] == '\0' || strlen(r) > 32)
		return false;
	for (const char *p = r; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '-'))
			return false;
	return true;
}

static void
aws_validate(const char *name, Jsonb *options)
{
	char	   *region = ColcryptOptionText(options, "region");
	char	   *endpoint = ColcryptOptionText(options, "endpoint");
	char	   *akid = ColcryptOptionText(options, "access_key_id");
	char	   *secret = ColcryptOptionText(options, "secret_access_key");
	char	   *token = ColcryptOptionText(options, "session_token");
	char	   *cred_file = ColcryptOptionText(options, "credentials_file");
	char	   *ca_file = ColcryptOptionText(options, "ca_file");

	ColcryptCheckOptionNames("aws-kms", options, aws_options);
	if (!valid_region(region))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an aws-kms provider needs \"region\", such as \"eu-central-1\"")));
	if (endpoint != NULL)
		ColcryptHttpCheckUrl("aws-kms", "endpoint", endpoint);
	if ((akid == NULL) != (secret == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"access_key_id\" and \"secret_access_key\" go together")));
	if (token != NULL && akid == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"session_token\" needs \"access_key_id\" and \"secret_access_key\"")));
	if (akid != NULL && (akid[0] == '\0' || strlen(akid) > 128 || secret[0] == '\0' || strlen(secret) > 128))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid AWS access key")));
	if (akid != NULL && cred_file != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("give keys in options or \"credentials_file\", not both")));
	(void) ColcryptHttpRetries(options, true);
	{
		char	   *src = ColcryptOptionText(options, "data_key_source");

		if (src != NULL && strcmp(src, "local") != 0 && strcmp(src, "kms") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"data_key_source\" is \"local\" (the database's generator, the default) or \"kms\" (GenerateDataKey)")));
	}
	if (cred_file != NULL || ca_file != NULL)
	{
		if (!superuser() && !has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to give an aws-kms provider a file"),
					 errdetail("\"credentials_file\" and \"ca_file\" are read on the database server."),
					 errhint("Only superusers and members of pg_read_server_files may use them.")));
		if ((cred_file && cred_file[0] != '/') || (ca_file && ca_file[0] != '/'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"credentials_file\" and \"ca_file\" must be absolute paths")));
		if (ca_file && access(ca_file, R_OK) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("cannot read \"ca_file\" file \"%s\": %m", ca_file)));
	}
	/* Reading the environment or ~/.aws is for superusers only. */
	if (akid == NULL && cred_file == NULL && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to use the server's own AWS credentials"),
				 errdetail("Without keys in options, the provider uses the server process's environment or ~/.aws/credentials."),
				 errhint("Give \"access_key_id\" and \"secret_access_key\", or ask a superuser.")));
}

static Jsonb *
aws_describe(Jsonb *options)
{
	static const char *const secret[] = {"secret_access_key", "session_token", NULL};
	static const char *const defaults[] = {"retries", "2", "data_key_source", "local", NULL};

	return ColcryptRedactOptions(options, secret, defaults);
}

static void
wipe_str(char **s)
{
	if (*s)
		ColcryptWipeFree(*s, strlen(*s));
	*s = NULL;
}

static void
set_credentials(AwsHandle *h, const char *akid, const char *secret, const char *token)
{
	wipe_str(&h->access_key_id);
	wipe_str(&h->secret_access_key);
	wipe_str(&h->session_token);
	h->access_key_id = akid ? MemoryContextStrdup(TopMemoryContext, akid) : NULL;
	h->secret_access_key = secret ? MemoryContextStrdup(TopMemoryContext, secret) : NULL;
	h->session_token = token && token[0] ? MemoryContextStrdup(TopMemoryContext, token) : NULL;
}

/* Trim spaces around s in place. */
static char *
trim(char *s)
{
	char	   *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/*
 * Read the profile's keys from a shared credentials file (INI: [profile],
 * then key = value lines; '#' and ';' start comments).
 */
static bool
read_credentials_file(AwsHandle *h, ColcryptProviderError *err)
{
	struct stat st;
	FILE	   *f;
	char		line[2048];
	bool		in_profile = false;
	char	   *akid = NULL;
	char	   *secret = NULL;
	char	   *token = NULL;
	bool		ok;

	if (stat(h->cred_file, &st) != 0)
	{
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 "could not read the AWS credentials file",
								 psprintf("\"%s\": %s", h->cred_file, strerror(errno)));
		return false;
	}
	if (h->cred_loaded && st.st_ino == h->cred_st.st_ino && st.st_size == h->cred_st.st_size &&
		st.st_mtim.tv_sec == h->cred_st.st_mtim.tv_sec &&
		st.st_mtim.tv_nsec == h->cred_st.st_mtim.tv_nsec)
		return true;
	if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0 ||
		st.st_uid != geteuid() || st.st_size > 64 * 1024)
	{
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 "the AWS credentials file is not safe to use",
								 psprintf("\"%s\" must be a regular file of at most 64 kB, owned by the server's OS user, with no group or other permissions (chmod 600).",
										  h->cred_file));
		return false;
	}
	if ((f = fopen(h->cred_file, "r")) == NULL)
	{
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 "could not read the AWS credentials file",
								 psprintf("\"%s\": %s", h->cred_file, strerror(errno)));
		return false;
	}
	while (fgets(line, sizeof(line), f) != NULL)
	{
		char	   *l;
		char	   *eq;

		line[strcspn(line, "\n")] = '\0';
		l = trim(line);
		if (*l == '\0' || *l == '#' || *l == ';')
			continue;
		if (*l == '[')
		{
			char	   *close = strchr(l, ']');

			if (close)
				*close = '\0';
			in_profile = strcmp(trim(l + 1), h->profile) == 0;
			continue;
		}
		if (!in_profile || (eq = strchr(l, '=')) == NULL)
			continue;
		*eq = '\0';
		if (strcmp(trim(l), "aws_access_key_id") == 0)
			akid = pstrdup(trim(eq + 1));
		else if (strcmp(trim(l), "aws_secret_access_key") == 0)
			secret = pstrdup(trim(eq + 1));
		else if (strcmp(trim(l), "aws_session_token") == 0)
			token = pstrdup(trim(eq + 1));
	}
	cc_wipe(line, sizeof(line));
	fclose(f);
	ok = akid != NULL && secret != NULL && akid[0] && secret[0];
	if (ok)
	{
		set_credentials(h, akid, secret, token);
		h->cred_st = st;
		h->cred_loaded = true;
	}
	else
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 "no AWS access key in the credentials file",
								 psprintf("Profile \"%s\" of \"%s\" needs aws_access_key_id and aws_secret_access_key.",
										  h->profile, h->cred_file));
	wipe_str(&akid);
	wipe_str(&secret);
	wipe_str(&token);
	return ok;
}

/* Make sure current credentials are loaded. */
static bool
ensure_credentials(AwsHandle *h, ColcryptProviderError *err)
{
	if (h->source == CRED_FILE)
		return read_credentials_file(h, err);
	return h->access_key_id != NULL;
}

static void *
aws_open(const char *name, Jsonb *options, ColcryptProviderError *err)
{
	AwsHandle  *h = MemoryContextAllocZero(TopMemoryContext, sizeof(AwsHandle));
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char	   *akid = ColcryptOptionText(options, "access_key_id");
	char	   *secret = ColcryptOptionText(options, "secret_access_key");
	char	   *token = ColcryptOptionText(options, "session_token");
	char	   *cred_file = ColcryptOptionText(options, "credentials_file");
	char	   *profile = ColcryptOptionText(options, "profile");
	char	   *ca_file = ColcryptOptionText(options, "ca_file");
	size_t		n;

	strlcpy(h->name, name, sizeof(h->name));
	h->region = ColcryptOptionText(options, "region");
	if (h->region == NULL || !valid_region(h->region))
		h->region = pstrdup("invalid");
	h->endpoint = ColcryptOptionText(options, "endpoint");
	if (h->endpoint == NULL)
		h->endpoint = psprintf("https://kms.%s.amazonaws.com", h->region);
	n = strlen(h->endpoint);
	while (n > 0 && h->endpoint[n - 1] == '/')
		h->endpoint[--n] = '\0';
	h->host = ColcryptHttpHostHeader(h->endpoint);
	{
		char	   *src = ColcryptOptionText(options, "data_key_source");

		h->kms_data_keys = src != NULL && strcmp(src, "kms") == 0;
	}

	if (akid != NULL)
	{
		h->source = CRED_OPTIONS;
		set_credentials(h, akid, secret, token);
	}
	else if (cred_file == NULL && getenv("AWS_ACCESS_KEY_ID") && getenv("AWS_SECRET_ACCESS_KEY"))
	{
		h->source = CRED_ENV;
		set_credentials(h, getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"),
						getenv("AWS_SESSION_TOKEN"));
	}
	else
	{
		h->source = CRED_FILE;
		if (cred_file != NULL)
			h->cred_file = cred_file;
		else if (getenv("AWS_SHARED_CREDENTIALS_FILE"))
			h->cred_file = pstrdup(getenv("AWS_SHARED_CREDENTIALS_FILE"));
		else
		{
			struct passwd *pw = getpwuid(geteuid());
			const char *home = getenv("HOME") ? getenv("HOME") : pw ? pw->pw_dir : "/";

			h->cred_file = psprintf("%s/.aws/credentials", home);
		}
		h->profile = profile ? profile : getenv("AWS_PROFILE") ? pstrdup(getenv("AWS_PROFILE")) : pstrdup("default");
	}
	MemoryContextSwitchTo(old);
	wipe_str(&secret);
	wipe_str(&token);
	if (h->host == NULL)
	{
		ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE,
								 "invalid aws-kms endpoint", NULL);
		pfree(h);
		return NULL;
	}
	h->http = ColcryptHttpCreate(psprintf("AWS KMS at %s", h->endpoint), ca_file,
								 ColcryptHttpRetries(options, false), err);
	if (h->http == NULL)
	{
		pfree(h);
		return NULL;
	}
	return h;
}

static void
aws_close(void *handle)
{
	AwsHandle  *h = handle;

	set_credentials(h, NULL, NULL, NULL);
	ColcryptHttpDestroy(h->http);
	pfree(h);
}

/* ---------------------------------------------------------------------
 * Requests
 * ---------------------------------------------------------------------
 */

/* KMS throttles with HTTP 400 and this error type. */
static bool
aws_retryable(long status, const ColcryptJsonDoc *doc)
{
	const char *type = doc ? ColcryptJsonString(doc, "__type") : NULL;

	if (type == NULL)
		return false;
	if (strchr(type, '#'))
		type = strchr(type, '#') + 1;
	return strcmp(type, "ThrottlingException") == 0 ||
		strcmp(type, "KMSInternalException") == 0 ||
		strcmp(type, "DependencyTimeoutException") == 0 ||
		strcmp(type, "ServiceUnavailableException") == 0;
}

static const char *
error_type(const ColcryptHttpResponse *resp)
{
	const char *type = resp->json_ok ? ColcryptJsonString(&resp->doc, "__type") : NULL;

	if (type == NULL)
		return "(no error type)";
	return strchr(type, '#') ? strchr(type, '#') + 1 : type;
}

static void
answer_error(AwsHandle *h, const char *op, const ColcryptHttpResponse *resp,
			 ColcryptProviderError *err)
{
	const char *type = error_type(resp);
	const char *message = NULL;
	StringInfoData detail;
	int			code;

	if (resp->json_ok)
	{
		message = ColcryptJsonString(&resp->doc, "message");
		if (message == NULL)
			message = ColcryptJsonString(&resp->doc, "Message");
	}
	initStringInfo(&detail);
	appendStringInfo(&detail, "HTTP %ld, %s", resp->status, type);
	if (message && message[0])
	{
		appendStringInfoString(&detail, ": ");
		for (const char *p = message; *p && detail.len < 400; p++)
			appendStringInfoChar(&detail, (*p >= ' ' && *p < 127) ? *p : ' ');
	}
	appendStringInfo(&detail, " (%d attempt%s).", resp->attempts, resp->attempts == 1 ? "" : "s");

	if (strcmp(type, "NotFoundException") == 0)
		code = ERRCODE_UNDEFINED_OBJECT;
	else if (strcmp(type, "AccessDeniedException") == 0 ||
			 strcmp(type, "UnrecognizedClientException") == 0 ||
			 strcmp(type, "InvalidSignatureException") == 0 ||
			 strcmp(type, "IncompleteSignatureException") == 0 ||
			 strcmp(type, "MissingAuthenticationTokenException") == 0 ||
			 strcmp(type, "ExpiredTokenException") == 0 ||
			 strcmp(type, "InvalidClientTokenId") == 0)
		code = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
	else if (strcmp(type, "DisabledException") == 0 ||
			 strcmp(type, "KMSInvalidStateException") == 0)
		code = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
	else if (aws_retryable(resp->status, resp->json_ok ? &resp->doc : NULL) ||
			 resp->status == 429 || resp->status >= 500)
		code = COLCRYPT_ERRCODE_UNREACHABLE;
	else
		code = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	ColcryptProviderSetError(err, code,
							 psprintf(code == COLCRYPT_ERRCODE_UNREACHABLE ? "AWS KMS could not serve %s"
									  : "AWS KMS refused %s", op),
							 detail.data);
}

/*
 * Call a KMS operation with a JSON body.  True with resp (2xx) filled; the
 * caller frees it.  An ExpiredToken or UnrecognizedClient answer with
 * credentials from a file reads the file again and tries once more.
 */
static bool
aws_call(AwsHandle *h, const char *op, StringInfo body, bool idempotent,
		 ColcryptHttpResponse *resp, ColcryptProviderError *err)
{
	memset(resp, 0, sizeof(*resp));
	for (int round = 0; round < 2; round++)
	{
		char		amz_date[17];
		char	   *target = psprintf("TrentService.%s", op);
		cc_sigv4_header sh[5];
		int			nsh = 0;
		cc_sigv4_request sreq;
		cc_sigv4_result *sres;
		const char *why;
		const char *headers[7];
		int			nh = 0;
		char	   *auth_header;
		char	   *token_header = NULL;
		ColcryptHttpRequest req = {0};
		struct tm	tm;
		time_t		now = time(NULL);
		bool		ok;

		if (!ensure_credentials(h, err))
			return false;
		gmtime_r(&now, &tm);
		strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);

		sh[nsh++] = (cc_sigv4_header) {"Content-Type", "application/x-amz-json-1.1"};
		sh[nsh++] = (cc_sigv4_header) {"Host", h->host};
		sh[nsh++] = (cc_sigv4_header) {"X-Amz-Date", amz_date};
		sh[nsh++] = (cc_sigv4_header) {"X-Amz-Target", target};
		if (h->session_token)
			sh[nsh++] = (cc_sigv4_header) {"X-Amz-Security-Token", h->session_token};
		sreq = (cc_sigv4_request) {
			.method = "POST", .path = "/", .query = NULL,
			.headers = sh, .nheaders = (size_t) nsh,
			.body = (const uint8_t *) body->data, .bodylen = (size_t) body->len,
			.amz_date = amz_date, .region = h->region, .service = "kms",
			.access_key_id = h->access_key_id, .secret_access_key = h->secret_access_key,
		};
		sres = palloc(sizeof(cc_sigv4_result));
		why = cc_sigv4_sign(&sreq, sres);
		if (why != NULL)
		{
			ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE,
									 "could not sign the AWS request", why);
			pfree(sres);
			return false;
		}
		headers[nh++] = "Content-Type: application/x-amz-json-1.1";
		headers[nh++] = psprintf("Host: %s", h->host);
		headers[nh++] = psprintf("X-Amz-Date: %s", amz_date);
		headers[nh++] = psprintf("X-Amz-Target: %s", target);
		if (h->session_token)
			headers[nh++] = token_header = psprintf("X-Amz-Security-Token: %s", h->session_token);
		headers[nh++] = auth_header = psprintf("Authorization: %s", sres->authorization);
		headers[nh] = NULL;
		pfree(sres);

		req.method = "POST";
		req.url = psprintf("%s/", h->endpoint);
		req.headers = headers;
		req.body = body->data;
		req.bodylen = (size_t) body->len;
		req.idempotent = idempotent;
		req.retryable = aws_retryable;
		ok = ColcryptHttpPerform(h->http, &req, resp, err);
		if (token_header)
			ColcryptWipeFree(token_header, strlen(token_header));
		pfree(auth_header);
		if (!ok)
			return false;
		if (resp->status >= 200 && resp->status <= 299)
			return true;
		answer_error(h, op, resp, err);
		if (round == 0 && h->source == CRED_FILE &&
			(strcmp(error_type(resp), "ExpiredTokenException") == 0 ||
			 strcmp(error_type(resp), "UnrecognizedClientException") == 0))
		{
			h->cred_loaded = false; /* read the file again */
			ColcryptHttpResponseFree(resp);
			memset(err, 0, sizeof(*err));
			continue;
		}
		return false;
	}
	return false;
}

/* {"colcrypt:cmk": ..., "colcrypt:key_id": ..., "colcrypt:key_version": ...} */
static void
append_context(StringInfo body, const char *field, const ColcryptWrapContext *ctx)
{
	ColcryptJsonAppendKey(body, false, field);
	appendStringInfoChar(body, '{');
	ColcryptJsonAppendField(body, true, "colcrypt:cmk", ctx->key_ref);
	ColcryptJsonAppendField(body, false, "colcrypt:key_id", psprintf("%u", ctx->key_id));
	ColcryptJsonAppendField(body, false, "colcrypt:key_version", psprintf("%u", ctx->key_version));
	appendStringInfoChar(body, '}');
}

static bool
check_key_ref(const char *key_ref, ColcryptProviderError *err)
{
	size_t		n = key_ref ? strlen(key_ref) : 0;
	bool		ok = n > 0 && n <= 2048;

	for (size_t i = 0; ok && i < n; i++)
		ok = key_ref[i] > ' ' && key_ref[i] < 127;
	if (!ok)
		ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE,
								 "invalid AWS KMS key reference",
								 "A key id, key ARN, alias name (alias/...) or alias ARN.");
	return ok;
}

static bool
check_blob(size_t wrappedlen, ColcryptProviderError *err)
{
	if (wrappedlen > 0 && wrappedlen <= AWS_MAX_BLOB)
		return true;
	ColcryptProviderSetError(err, ERRCODE_DATA_CORRUPTED,
							 "the wrapped data key is not an AWS KMS ciphertext blob", NULL);
	return false;
}

/* Take a base64 blob field of an answer into out. */
static bool
take_blob(const ColcryptHttpResponse *resp, const char *field, StringInfo out,
		  ColcryptProviderError *err)
{
	const char *b64 = ColcryptJsonString(&resp->doc, field);
	uint8	   *raw = palloc(AWS_MAX_BLOB);
	int			n = b64 ? ColcryptBase64Decode(b64, strlen(b64), raw, AWS_MAX_BLOB) : -1;

	if (n <= 0)
	{
		ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
								 psprintf("AWS KMS's answer has no valid %s", field), NULL);
		pfree(raw);
		return false;
	}
	appendBinaryStringInfo(out, (char *) raw, n);
	pfree(raw);
	return true;
}

static void
append_blob(StringInfo body, bool first, const char *field, const uint8 *data, size_t len)
{
	char	   *b64 = ColcryptBase64Encode(data, len);

	ColcryptJsonAppendField(body, first, field, b64);
	ColcryptWipeFree(b64, strlen(b64));
}

/* ---------------------------------------------------------------------
 * Operations
 * ---------------------------------------------------------------------
 */

static bool
aws_wrap(void *handle, const ColcryptWrapContext *ctx,
		 const uint8 *dek, size_t deklen, StringInfo wrapped, char **wrap_meta,
		 ColcryptProviderError *err)
{
	AwsHandle  *h = handle;
	StringInfoData body;
	ColcryptHttpResponse resp;
	bool		ok;

	if (!check_key_ref(ctx->key_ref, err))
		return false;
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	ColcryptJsonAppendField(&body, true, "KeyId", ctx->key_ref);
	append_blob(&body, false, "Plaintext", dek, deklen);
	append_context(&body, "EncryptionContext", ctx);
	appendStringInfoChar(&body, '}');
	ok = aws_call(h, "Encrypt", &body, true, &resp, err);
	ColcryptWipeFree(body.data, body.maxlen);
	if (ok)
		ok = take_blob(&resp, "CiphertextBlob", wrapped, err);
	ColcryptHttpResponseFree(&resp);
	*wrap_meta = NULL;
	return ok;
}

static bool
aws_unwrap(void *handle, const ColcryptWrapContext *ctx,
		   const uint8 *wrapped, size_t wrappedlen, const char *wrap_meta,
		   uint8 *dek, size_t deklen, ColcryptProviderError *err)
{
	AwsHandle  *h = handle;
	StringInfoData body;
	ColcryptHttpResponse resp;
	bool		ok;

	if (!check_key_ref(ctx->key_ref, err) || !check_blob(wrappedlen, err))
		return false;
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	append_blob(&body, true, "CiphertextBlob", wrapped, wrappedlen);
	ColcryptJsonAppendField(&body, false, "KeyId", ctx->key_ref);
	append_context(&body, "EncryptionContext", ctx);
	appendStringInfoChar(&body, '}');
	ok = aws_call(h, "Decrypt", &body, true, &resp, err);
	pfree(body.data);
	if (ok)
	{
		const char *pt = ColcryptJsonString(&resp.doc, "Plaintext");

		if (pt == NULL || ColcryptBase64Decode(pt, strlen(pt), dek, deklen) != (int) deklen)
		{
			ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
									 "AWS KMS's Decrypt answer does not hold a data key", NULL);
			cc_wipe(dek, deklen);
			ok = false;
		}
	}
	ColcryptHttpResponseFree(&resp);
	return ok;
}

/* data_key_source "kms": the data key comes from GenerateDataKey. */
static bool
aws_generate(void *handle, const ColcryptWrapContext *ctx,
			 uint8 *dek, size_t deklen, StringInfo wrapped, char **wrap_meta,
			 ColcryptProviderError *err)
{
	AwsHandle  *h = handle;
	StringInfoData body;
	ColcryptHttpResponse resp;
	bool		ok;

	*wrap_meta = NULL;
	if (!h->kms_data_keys)
		return false;			/* declined: err left empty */
	if (!check_key_ref(ctx->key_ref, err))
		return false;
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	ColcryptJsonAppendField(&body, true, "KeyId", ctx->key_ref);
	appendStringInfo(&body, ",\"NumberOfBytes\":%d", (int) deklen);
	append_context(&body, "EncryptionContext", ctx);
	appendStringInfoChar(&body, '}');
	ok = aws_call(h, "GenerateDataKey", &body, true, &resp, err);
	pfree(body.data);
	if (ok)
	{
		const char *pt = ColcryptJsonString(&resp.doc, "Plaintext");

		if (pt == NULL || ColcryptBase64Decode(pt, strlen(pt), dek, deklen) != (int) deklen)
		{
			ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
									 "AWS KMS's GenerateDataKey answer does not hold a data key", NULL);
			ok = false;
		}
	}
	if (ok)
		ok = take_blob(&resp, "CiphertextBlob", wrapped, err);
	if (!ok)
		cc_wipe(dek, deklen);
	ColcryptHttpResponseFree(&resp);
	return ok;
}

static bool
aws_ensure_cmk(void *handle, const char *key_ref, bool create, bool *created,
			   char **actual_ref, ColcryptProviderError *err)
{
	AwsHandle  *h = handle;
	StringInfoData body;
	ColcryptHttpResponse resp;
	const char *state;
	const char *usage;
	const char *spec;
	bool		ok;
	bool		new_key;

	*created = false;
	initStringInfo(&body);

	/*
	 * With create_cmk, a key_ref that is neither an alias nor an ARN only
	 * describes the new key; the ARN KMS gives it is recorded.
	 */
	new_key = create && strncmp(key_ref, "alias/", 6) != 0 && strncmp(key_ref, "arn:", 4) != 0;
	if (new_key)
	{
		ok = false;
		err->sqlerrcode = ERRCODE_UNDEFINED_OBJECT;
		memset(&resp, 0, sizeof(resp));
		if (strlen(key_ref) > 200)
		{
			ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE,
									 "a key description of at most 200 characters", NULL);
			return false;
		}
	}
	else
	{
		if (!check_key_ref(key_ref, err))
			return false;
		appendStringInfoChar(&body, '{');
		ColcryptJsonAppendField(&body, true, "KeyId", key_ref);
		appendStringInfoChar(&body, '}');
		ok = aws_call(h, "DescribeKey", &body, true, &resp, err);
	}
	if (!ok && err->sqlerrcode == ERRCODE_UNDEFINED_OBJECT && create)
	{
		const char *arn;
		const char *key_id;

		ColcryptHttpResponseFree(&resp);
		memset(err, 0, sizeof(*err));
		resetStringInfo(&body);
		appendStringInfoChar(&body, '{');
		ColcryptJsonAppendField(&body, true, "Description", psprintf("colcrypt customer master key %s", key_ref));
		appendStringInfoString(&body, ",\"KeyUsage\":\"ENCRYPT_DECRYPT\",\"KeySpec\":\"SYMMETRIC_DEFAULT\"}");
		/* Not repeated: a retry could create two keys. */
		if (!aws_call(h, "CreateKey", &body, false, &resp, err))
		{
			ColcryptHttpResponseFree(&resp);
			return false;
		}
		arn = ColcryptJsonString(&resp.doc, "KeyMetadata.Arn");
		key_id = ColcryptJsonString(&resp.doc, "KeyMetadata.KeyId");
		if (arn == NULL || key_id == NULL)
		{
			ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
									 "AWS KMS's CreateKey answer has no key ARN", NULL);
			ColcryptHttpResponseFree(&resp);
			return false;
		}
		*created = true;
		if (strncmp(key_ref, "alias/", 6) == 0)
		{
			char	   *target = pstrdup(key_id);

			ColcryptHttpResponseFree(&resp);
			resetStringInfo(&body);
			appendStringInfoChar(&body, '{');
			ColcryptJsonAppendField(&body, true, "AliasName", key_ref);
			ColcryptJsonAppendField(&body, false, "TargetKeyId", target);
			appendStringInfoChar(&body, '}');
			ok = aws_call(h, "CreateAlias", &body, true, &resp, err);
			ColcryptHttpResponseFree(&resp);
			return ok;
		}
		*actual_ref = pstrdup(arn);
		ColcryptHttpResponseFree(&resp);
		return true;
	}
	if (!ok)
	{
		bool		denied = strcmp(error_type(&resp), "AccessDeniedException") == 0;

		ColcryptHttpResponseFree(&resp);
		/* Without kms:DescribeKey, the caller's round trip is the proof. */
		if (denied && !create)
		{
			memset(err, 0, sizeof(*err));
			return true;
		}
		if (err->sqlerrcode == ERRCODE_UNDEFINED_OBJECT)
			snprintf(err->message, sizeof(err->message),
					 "AWS KMS key \"%.200s\" does not exist (pass create_cmk => true to create it)", key_ref);
		return false;
	}
	state = ColcryptJsonString(&resp.doc, "KeyMetadata.KeyState");
	usage = ColcryptJsonString(&resp.doc, "KeyMetadata.KeyUsage");
	spec = ColcryptJsonString(&resp.doc, "KeyMetadata.KeySpec");
	if (state != NULL && strcmp(state, "Enabled") != 0)
	{
		ColcryptProviderSetError(err, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
								 psprintf("AWS KMS key \"%s\" is %s", key_ref, state), NULL);
		ok = false;
	}
	else if ((usage != NULL && strcmp(usage, "ENCRYPT_DECRYPT") != 0) ||
			 (spec != NULL && strcmp(spec, "SYMMETRIC_DEFAULT") != 0))
	{
		ColcryptProviderSetError(err, ERRCODE_WRONG_OBJECT_TYPE,
								 psprintf("AWS KMS key \"%s\" cannot wrap data keys", key_ref),
								 psprintf("Its usage is %s and its spec %s; colcrypt needs a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT).",
										  usage ? usage : "?", spec ? spec : "?"));
		ok = false;
	}
	ColcryptHttpResponseFree(&resp);
	return ok;
}

static bool
aws_rotate_cmk(void *handle, const char *key_ref, char **new_key_ref,
			   char **new_version, ColcryptProviderError *err)
{
	AwsHandle  *h = handle;
	StringInfoData body;
	ColcryptHttpResponse resp;
	bool		ok;

	*new_key_ref = NULL;
	if (!check_key_ref(key_ref, err))
		return false;
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	ColcryptJsonAppendField(&body, true, "KeyId", key_ref);
	appendStringInfoChar(&body, '}');
	/* Not repeated after a failure: a retry could rotate twice. */
	ok = aws_call(h, "RotateKeyOnDemand", &body, false, &resp, err);
	ColcryptHttpResponseFree(&resp);
	if (ok)
		*new_version = pstrdup("on-demand rotation");
	return ok;
}

static bool
aws_rewrap(void *handle, const ColcryptWrapContext *from,
		   const uint8 *wrapped, size_t wrappedlen, const char *wrap_meta,
		   const ColcryptWrapContext *to, StringInfo rewrapped, char **new_wrap_meta,
		   ColcryptProviderError *err)
{
	AwsHandle  *h = handle;
	StringInfoData body;
	ColcryptHttpResponse resp;
	bool		ok;

	if (!check_key_ref(from->key_ref, err) || !check_key_ref(to->key_ref, err) ||
		!check_blob(wrappedlen, err))
		return false;
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	append_blob(&body, true, "CiphertextBlob", wrapped, wrappedlen);
	ColcryptJsonAppendField(&body, false, "SourceKeyId", from->key_ref);
	append_context(&body, "SourceEncryptionContext", from);
	ColcryptJsonAppendField(&body, false, "DestinationKeyId", to->key_ref);
	append_context(&body, "DestinationEncryptionContext", to);
	appendStringInfoChar(&body, '}');
	ok = aws_call(h, "ReEncrypt", &body, true, &resp, err);
	pfree(body.data);
	if (ok)
		ok = take_blob(&resp, "CiphertextBlob", rewrapped, err);
	*new_wrap_meta = NULL;
	ColcryptHttpResponseFree(&resp);
	return ok;
}

static bool
aws_health(void *handle, StringInfo detail, ColcryptProviderError *err)
{
	AwsHandle  *h = handle;
	StringInfoData body;
	ColcryptHttpResponse resp;
	bool		ok;
	const char *source = h->source == CRED_OPTIONS ? "options" :
		h->source == CRED_ENV ? "environment" : "credentials file";

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"Limit\":1}");
	ok = aws_call(h, "ListAliases", &body, true, &resp, err);
	if (!ok && strcmp(error_type(&resp), "AccessDeniedException") == 0)
	{
		/* Signed and authenticated; only this call is not allowed. */
		memset(err, 0, sizeof(*err));
		ok = true;
		appendStringInfo(detail, "AWS KMS at %s (region %s), credentials from %s accepted (ListAliases denied by policy)",
						 h->endpoint, h->region, source);
	}
	else if (ok)
		appendStringInfo(detail, "AWS KMS at %s (region %s), credentials from %s accepted%s",
						 h->endpoint, h->region, source,
						 h->session_token ? ", session token" : "");
	ColcryptHttpResponseFree(&resp);
	return ok;
}

const ColcryptProviderOps colcrypt_aws_kms_provider = {
	.kind = "aws-kms",
	.validate = aws_validate,
	.open = aws_open,
	.close = aws_close,
	.wrap = aws_wrap,
	.unwrap = aws_unwrap,
	.ensure_cmk = aws_ensure_cmk,
	.rotate_cmk = aws_rotate_cmk,
	.rewrap = aws_rewrap,
	.generate = aws_generate,
	.health = aws_health,
	.describe = aws_describe,
};
