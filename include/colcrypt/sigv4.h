/*-------------------------------------------------------------------------
 *
 * sigv4.h
 *	  AWS Signature Version 4 (header-based), over OpenSSL's HMAC-SHA256.
 *
 * Plain C without PostgreSQL headers, so that the unit test checks it
 * against AWS's own test suite (test/test_sigv4.c) outside the server.
 *
 * The signer signs every header it is given (names in any case, repeated
 * names allowed: their values are joined with ',' in the order given).  The
 * path is the request's path before percent-encoding: it is normalized
 * (dot segments removed, repeated slashes collapsed, as AWS does for every
 * service but S3) and each segment encoded.  The query is split on '&' and
 * '='; each name and value is percent-decoded and re-encoded with the
 * RFC 3986 unreserved set, then sorted.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_SIGV4_H
#define COLCRYPT_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#define CC_SIGV4_MAX_HEADERS	32
#define CC_SIGV4_MAX_TEXT		8192

typedef struct cc_sigv4_header
{
	const char *name;
	const char *value;
} cc_sigv4_header;

typedef struct cc_sigv4_request
{
	const char *method;			/* "POST" */
	const char *path;			/* "/" (not yet percent-encoded) */
	const char *query;			/* without '?'; NULL or "" for none */
	const cc_sigv4_header *headers; /* every header to sign */
	size_t		nheaders;
	const uint8_t *body;
	size_t		bodylen;
	const char *amz_date;		/* YYYYMMDDTHHMMSSZ, as in X-Amz-Date */
	const char *region;
	const char *service;
	const char *access_key_id;
	const char *secret_access_key;
} cc_sigv4_request;

typedef struct cc_sigv4_result
{
	char		canonical_request[CC_SIGV4_MAX_TEXT];
	char		string_to_sign[512];
	char		authorization[CC_SIGV4_MAX_TEXT];
	char		payload_hash[65];	/* hex SHA-256 of the body */
} cc_sigv4_result;

/*
 * Sign req.  Returns NULL on success, or a short reason (a static string)
 * when the request cannot be signed: too many headers, a text over
 * CC_SIGV4_MAX_TEXT, a malformed date, or a header name or value with
 * control characters.
 */
extern const char *cc_sigv4_sign(const cc_sigv4_request *req, cc_sigv4_result *out);

#endif							/* COLCRYPT_SIGV4_H */
