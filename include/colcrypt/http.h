/*-------------------------------------------------------------------------
 *
 * http.h
 *	  HTTP and JSON for the key providers that speak them (vault, aws-kms).
 *
 * HTTP goes through libcurl, and only http.c calls libcurl.  One client
 * (an easy handle in a multi handle, so connections are kept and reused)
 * per provider handle, that is per backend and provider.  A request is
 * bounded as a whole by colcrypt.kms_timeout (every attempt and every
 * back-off sleep together), answers a query cancel within ~100 ms, and is
 * retried with jittered exponential back-off after connection failures,
 * HTTP 429 and 5xx (or what the caller's classifier says is worth another
 * try), when the caller says the request may be repeated.
 *
 * TLS peer and host verification are always on; "ca_file" replaces the
 * system's CA bundle.  Responses are limited in size.  Buffers that may
 * hold key material (request and response bodies, parsed JSON values) are
 * wiped before they are freed.  Error texts carry the URL's host and the
 * status, never a header or body that could hold a secret.
 *
 * JSON is parsed with PostgreSQL's own JSON parser (common/jsonapi) into a
 * flat list of scalars addressed by path ("data.ciphertext", "errors[0]"),
 * and built with escape_json; nothing is found by scanning text.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_HTTP_H
#define COLCRYPT_HTTP_H

#include "colcrypt/provider.h"

/* ---- JSON ---- */

typedef enum ColcryptJsonKind
{
	CJ_STRING,
	CJ_NUMBER,
	CJ_BOOL,
	CJ_NULL
} ColcryptJsonKind;

typedef struct ColcryptJsonItem
{
	char	   *path;
	char	   *value;			/* de-escaped, NUL-terminated */
	size_t		valuelen;
	ColcryptJsonKind kind;
} ColcryptJsonItem;

typedef struct ColcryptJsonDoc
{
	ColcryptJsonItem *items;
	int			nitems;
	int			cap;
	bool		root_is_object;
} ColcryptJsonDoc;

#define COLCRYPT_JSON_MAX_DEPTH	32
#define COLCRYPT_JSON_MAX_ITEMS	2048

/*
 * Parse len bytes of JSON.  False, with *why set to a short reason, for
 * invalid JSON, nesting deeper than COLCRYPT_JSON_MAX_DEPTH or more than
 * COLCRYPT_JSON_MAX_ITEMS scalars.  Never throws for bad input.
 */
extern bool ColcryptJsonParse(const char *text, size_t len, ColcryptJsonDoc *doc,
							  const char **why);

/* The scalar at path, or NULL; *kind (if not NULL) gets its kind. */
extern const ColcryptJsonItem *ColcryptJsonGet(const ColcryptJsonDoc *doc, const char *path);
extern const char *ColcryptJsonString(const ColcryptJsonDoc *doc, const char *path);

/* Wipe and free every value (they may hold key material). */
extern void ColcryptJsonFree(ColcryptJsonDoc *doc);

/* Append a "name": prefix (with a leading comma unless first). */
extern void ColcryptJsonAppendKey(StringInfo buf, bool first, const char *key);
/* "key":"value" (with a leading comma unless first). */
extern void ColcryptJsonAppendField(StringInfo buf, bool first, const char *key, const char *value);

/* ---- Base64 (standard alphabet, padded), for JSON blobs ---- */
extern char *ColcryptBase64Encode(const uint8 *data, size_t len);

/* Decode into out (cap bytes); -1 if not canonical base64 or too long. */
extern int	ColcryptBase64Decode(const char *s, size_t slen, uint8 *out, size_t cap);

/* ---- HTTP ---- */

typedef struct ColcryptHttp ColcryptHttp;

typedef struct ColcryptHttpRequest
{
	const char *method;			/* "GET" or "POST" */
	const char *url;
	const char *const *headers; /* "Name: value", NULL-terminated */
	const char *body;			/* NULL for none */
	size_t		bodylen;
	bool		idempotent;		/* may be sent again after a failure */

	/* Besides 429 and 5xx: is this answer worth another try? */
	bool		(*retryable) (long status, const ColcryptJsonDoc *doc);
} ColcryptHttpRequest;

typedef struct ColcryptHttpResponse
{
	long		status;
	char	   *body;			/* NUL-terminated; wipe with ColcryptHttpResponseFree */
	size_t		bodylen;
	size_t		bodycap;
	ColcryptJsonDoc doc;		/* the body parsed, when it is JSON */
	bool		json_ok;
	int			attempts;		/* how many times it was sent */
	double		elapsed_ms;
	long		retry_after_s;	/* Retry-After of the last answer, -1 if none */
} ColcryptHttpResponse;

/*
 * A client for one provider handle: what names the peer in errors
 * ("Vault at https://vault:8200"), the CA file (NULL: system CAs), and how
 * many times an idempotent request is retried.  NULL with err filled if
 * libcurl cannot be set up.
 */
extern ColcryptHttp *ColcryptHttpCreate(const char *what, const char *ca_file,
										int max_retries, ColcryptProviderError *err);
extern void ColcryptHttpDestroy(ColcryptHttp *http);

/*
 * Send a request; true with resp filled when an answer came (of any
 * status: the caller interprets it), false with err filled (08001) when
 * none did in time, the connection or TLS failed, or the answer was over
 * the size limit.
 */
extern bool ColcryptHttpPerform(ColcryptHttp *http, const ColcryptHttpRequest *req,
								ColcryptHttpResponse *resp, ColcryptProviderError *err);
extern void ColcryptHttpResponseFree(ColcryptHttpResponse *resp);

/* The libcurl version and TLS backend, for health details. */
extern const char *ColcryptHttpLibraryVersion(void);

/*
 * Check a URL option at add_provider time: http or https, a host, no user
 * name or password in it, plain http only to a loopback address.
 */
extern void ColcryptHttpCheckUrl(const char *kind, const char *option, const char *url);

/* The Host header for url (host, or host:port when the URL names a port); NULL if invalid. */
extern char *ColcryptHttpHostHeader(const char *url);

/* The "retries" option (0 to 10, default 2); validate: error if bad. */
extern int	ColcryptHttpRetries(Jsonb *options, bool validate);

/* Wipe and free a palloc'd string (a token, a request body). */
extern void ColcryptWipeFree(char *s, size_t len);

#endif							/* COLCRYPT_HTTP_H */
