/*-------------------------------------------------------------------------
 *
 * sigv4.c
 *	  AWS Signature Version 4: canonical request, string to sign, signing
 *	  key and Authorization header.
 *
 * Follows "Create a signed AWS API request" of the IAM user guide.  Every
 * text is built in a fixed buffer of the caller's; nothing is allocated.
 * The signing key (derived from the secret access key) lives on the stack
 * and is wiped before returning.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/sigv4.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* A bounded string builder over a caller's buffer. */
typedef struct sbuf
{
	char	   *p;
	size_t		len;
	size_t		cap;
	bool		overflow;
} sbuf;

static void
sb_init(sbuf *b, char *p, size_t cap)
{
	b->p = p;
	b->len = 0;
	b->cap = cap;
	b->overflow = false;
	p[0] = '\0';
}

static void
sb_putn(sbuf *b, const char *s, size_t n)
{
	if (b->overflow || b->len + n + 1 > b->cap)
	{
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
sb_puts(sbuf *b, const char *s)
{
	sb_putn(b, s, strlen(s));
}

static void
sb_putc(sbuf *b, char c)
{
	sb_putn(b, &c, 1);
}

static bool
unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		(c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
}

/* Percent-encode n bytes (RFC 3986 unreserved set kept, upper-case hex). */
static void
sb_encode(sbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (unreserved(c))
			sb_putc(b, (char) c);
		else
		{
			char		e[3] = {'%', hex[c >> 4], hex[c & 15]};

			sb_putn(b, e, 3);
		}
	}
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode %XX escapes of s[0..n) into out (at most n bytes); returns length. */
static size_t
percent_decode(const char *s, size_t n, char *out)
{
	size_t		o = 0;

	for (size_t i = 0; i < n; i++)
	{
		if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0)
		{
			out[o++] = (char) (hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		}
		else
			out[o++] = s[i];
	}
	return o;
}

static void
hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++)
	{
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static bool
sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return false;
	hex_encode(md, 32, out);
	return true;
}

static bool
hmac256(const void *key, size_t keylen, const void *data, size_t len, unsigned char out[32])
{
	unsigned int outlen = 0;

	return HMAC(EVP_sha256(), key, (int) keylen, data, len, out, &outlen) != NULL && outlen == 32;
}

/*
 * The canonical URI: dot segments resolved, empty segments dropped, each
 * segment percent-encoded; a trailing slash kept.
 */
static void
canonical_uri(sbuf *b, const char *path)
{
	const char *segs[256];
	size_t		lens[256];
	int			nseg = 0;
	const char *p = path;
	bool		trailing = false;

	if (path == NULL || path[0] == '\0')
	{
		sb_putc(b, '/');
		return;
	}
	while (*p)
	{
		const char *s;
		size_t		n;

		while (*p == '/')
			p++;
		if (*p == '\0')
		{
			trailing = true;
			break;
		}
		s = p;
		while (*p && *p != '/')
			p++;
		n = (size_t) (p - s);
		trailing = (*p == '/');
		if (n == 1 && s[0] == '.')
		{
			trailing = true;
			continue;
		}
		if (n == 2 && s[0] == '.' && s[1] == '.')
		{
			if (nseg > 0)
				nseg--;
			trailing = true;
			continue;
		}
		if (nseg == (int) (sizeof(segs) / sizeof(segs[0])))
		{
			b->overflow = true;
			return;
		}
		segs[nseg] = s;
		lens[nseg] = n;
		nseg++;
	}
	sb_putc(b, '/');
	for (int i = 0; i < nseg; i++)
	{
		if (i > 0)
			sb_putc(b, '/');
		sb_encode(b, segs[i], lens[i]);
	}
	if (trailing && nseg > 0)
		sb_putc(b, '/');
}

typedef struct qparam
{
	char		name[512];
	char		value[1024];
} qparam;

static int
qparam_cmp(const void *a, const void *b)
{
	const qparam *x = a;
	const qparam *y = b;
	int			c = strcmp(x->name, y->name);

	return c != 0 ? c : strcmp(x->value, y->value);
}

/* Encode one decoded query component into a fixed field. */
static bool
encode_component(const char *s, size_t n, char *out, size_t cap)
{
	char		tmp[1024];
	size_t		dn;
	sbuf		b;

	if (n >= sizeof(tmp))
		return false;
	dn = percent_decode(s, n, tmp);
	sb_init(&b, out, cap);
	sb_encode(&b, tmp, dn);
	return !b.overflow;
}

static const char *
canonical_query(sbuf *b, const char *query)
{
	qparam	   *params;
	int			n = 0;
	int			cap = 64;
	const char *p = query;

	if (query == NULL || query[0] == '\0')
		return NULL;
	params = calloc((size_t) cap, sizeof(qparam));
	if (params == NULL)
		return "out of memory";
	while (*p)
	{
		const char *s = p;
		const char *eq;
		size_t		n_all;

		while (*p && *p != '&')
			p++;
		n_all = (size_t) (p - s);
		if (*p == '&')
			p++;
		if (n_all == 0)
			continue;
		if (n == cap)
		{
			free(params);
			return "too many query parameters";
		}
		eq = memchr(s, '=', n_all);
		if (!encode_component(s, eq ? (size_t) (eq - s) : n_all,
							  params[n].name, sizeof(params[n].name)) ||
			!encode_component(eq ? eq + 1 : "", eq ? n_all - (size_t) (eq - s) - 1 : 0,
							  params[n].value, sizeof(params[n].value)))
		{
			free(params);
			return "query parameter too long";
		}
		n++;
	}
	qsort(params, (size_t) n, sizeof(qparam), qparam_cmp);
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			sb_putc(b, '&');
		sb_puts(b, params[i].name);
		sb_putc(b, '=');
		sb_puts(b, params[i].value);
	}
	free(params);
	return NULL;
}

typedef struct hdr
{
	char		name[128];
	int			order;			/* position given, to keep repeated values in order */
	const char *value;
} hdr;

static int
hdr_cmp(const void *a, const void *b)
{
	const hdr  *x = a;
	const hdr  *y = b;
	int			c = strcmp(x->name, y->name);

	return c != 0 ? c : x->order - y->order;
}

/* A header value trimmed, with every run of spaces and tabs made one space. */
static void
sb_header_value(sbuf *b, const char *v)
{
	bool		space = false;
	bool		started = false;

	for (; *v; v++)
	{
		if (*v == ' ' || *v == '\t')
		{
			space = started;
			continue;
		}
		if (space)
			sb_putc(b, ' ');
		space = false;
		started = true;
		sb_putc(b, *v);
	}
}

const char *
cc_sigv4_sign(const cc_sigv4_request *req, cc_sigv4_result *out)
{
	hdr			hdrs[CC_SIGV4_MAX_HEADERS];
	char		signed_headers[2048];
	char		date[9];
	char		creq_hash[65];
	char		scope[256];
	sbuf		b;
	sbuf		sh;
	const char *why;
	unsigned char key[32];
	unsigned char sig[32];
	char		sighex[65];
	char		kseed[256];
	size_t		klen;
	bool		ok;

	memset(out, 0, sizeof(*out));
	if (req->nheaders > CC_SIGV4_MAX_HEADERS)
		return "too many headers";
	if (req->amz_date == NULL || strlen(req->amz_date) != 16 || req->amz_date[8] != 'T' ||
		req->amz_date[15] != 'Z')
		return "the date is not YYYYMMDDTHHMMSSZ";
	memcpy(date, req->amz_date, 8);
	date[8] = '\0';

	/* Headers: lower-case names, sorted, repeated names merged. */
	for (size_t i = 0; i < req->nheaders; i++)
	{
		const char *n = req->headers[i].name;
		size_t		len = strlen(n);

		if (len == 0 || len >= sizeof(hdrs[i].name))
			return "a header name is empty or too long";
		for (size_t j = 0; j < len; j++)
		{
			unsigned char c = (unsigned char) n[j];

			if (c <= ' ' || c >= 127 || c == ':')
				return "a header name has a character not allowed";
			hdrs[i].name[j] = (char) ((c >= 'A' && c <= 'Z') ? c + 32 : c);
		}
		hdrs[i].name[len] = '\0';
		for (const char *v = req->headers[i].value; *v; v++)
			if ((unsigned char) *v < ' ' && *v != '\t')
				return "a header value has a control character";
		hdrs[i].order = (int) i;
		hdrs[i].value = req->headers[i].value;
	}
	qsort(hdrs, req->nheaders, sizeof(hdr), hdr_cmp);

	sb_init(&b, out->canonical_request, sizeof(out->canonical_request));
	sb_init(&sh, signed_headers, sizeof(signed_headers));
	sb_puts(&b, req->method);
	sb_putc(&b, '\n');
	canonical_uri(&b, req->path);
	sb_putc(&b, '\n');
	if ((why = canonical_query(&b, req->query)) != NULL)
		return why;
	sb_putc(&b, '\n');
	for (size_t i = 0; i < req->nheaders; i++)
	{
		if (i > 0 && strcmp(hdrs[i].name, hdrs[i - 1].name) == 0)
		{
			sb_putc(&b, ',');
			sb_header_value(&b, hdrs[i].value);
			continue;
		}
		if (i > 0)
		{
			sb_putc(&b, '\n');
			sb_putc(&sh, ';');
		}
		sb_puts(&b, hdrs[i].name);
		sb_putc(&b, ':');
		sb_header_value(&b, hdrs[i].value);
		sb_puts(&sh, hdrs[i].name);
	}
	if (req->nheaders > 0)
		sb_putc(&b, '\n');
	sb_putc(&b, '\n');
	sb_puts(&b, signed_headers);
	sb_putc(&b, '\n');
	if (!sha256_hex(req->body ? (const void *) req->body : (const void *) "",
					req->body ? req->bodylen : 0, out->payload_hash))
		return "SHA-256 failed";
	sb_puts(&b, out->payload_hash);
	if (b.overflow || sh.overflow)
		return "the canonical request is too long";

	/* The string to sign. */
	if (snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request",
				 date, req->region, req->service) >= (int) sizeof(scope))
		return "region or service too long";
	if (!sha256_hex(out->canonical_request, b.len, creq_hash))
		return "SHA-256 failed";
	snprintf(out->string_to_sign, sizeof(out->string_to_sign),
			 "AWS4-HMAC-SHA256\n%s\n%s\n%s", req->amz_date, scope, creq_hash);

	/* The signing key: HMAC chain from "AWS4" + secret over date, region, service. */
	klen = (size_t) snprintf(kseed, sizeof(kseed), "AWS4%s", req->secret_access_key);
	if (klen >= sizeof(kseed))
	{
		OPENSSL_cleanse(kseed, sizeof(kseed));
		return "the secret access key is too long";
	}
	ok = hmac256(kseed, klen, date, strlen(date), key) &&
		hmac256(key, 32, req->region, strlen(req->region), key) &&
		hmac256(key, 32, req->service, strlen(req->service), key) &&
		hmac256(key, 32, "aws4_request", 12, key) &&
		hmac256(key, 32, out->string_to_sign, strlen(out->string_to_sign), sig);
	OPENSSL_cleanse(kseed, sizeof(kseed));
	OPENSSL_cleanse(key, sizeof(key));
	if (!ok)
		return "HMAC-SHA256 failed";
	hex_encode(sig, 32, sighex);

	sb_init(&b, out->authorization, sizeof(out->authorization));
	sb_puts(&b, "AWS4-HMAC-SHA256 Credential=");
	sb_puts(&b, req->access_key_id);
	sb_putc(&b, '/');
	sb_puts(&b, scope);
	sb_puts(&b, ", SignedHeaders=");
	sb_puts(&b, signed_headers);
	sb_puts(&b, ", Signature=");
	sb_puts(&b, sighex);
	if (b.overflow)
		return "the Authorization header is too long";
	return NULL;
}
