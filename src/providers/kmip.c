/*-------------------------------------------------------------------------
 *
 * kmip.c
 *	  The "kmip" provider: CMKs held by a KMIP 1.x key manager, reached over
 *	  mutual TLS.
 *
 * Options: "host", "port" (5696), "ca_file" (the CA that signed the
 * server's certificate), "cert_file" and "key_file" (this client's
 * certificate and key, PEM), "server_name" (the name to verify in the
 * server's certificate; default: host), and "mode":
 *
 *	 "encrypt" (default)  wrap and unwrap with the server's Encrypt and
 *		Decrypt operations, AES-256-GCM, the data key's identity as
 *		associated data: the CMK never leaves the server.  GCM's associated
 *		data and tag travel only in KMIP 1.4 messages (a 1.2 server drops
 *		them silently), so this mode needs 1.4 and checks that a tag came
 *		back.
 *	 "get"  for servers without Encrypt/Decrypt: Get the CMK and wrap here
 *		with AES-256-GCM; the CMK is in this backend's memory for the length
 *		of one wrap and wiped after.  The views show which mode is in use.
 *
 * The master key's key_ref is the CMK's KMIP Unique Identifier.
 * add_master_key with create_cmk => true Creates and Activates a new
 * AES-256 key (key_ref then names it, and the identifier the server gives
 * becomes the key_ref); rotate_master_key without a new key_ref does the
 * same and re-wraps under it.
 *
 * One TLS connection per backend and provider, opened on first use, kept
 * open, reopened after any failure.  Sockets are non-blocking and every wait
 * goes through WaitLatchOrSocket: a whole operation (connect, handshake,
 * version discovery, request, response) is bounded by colcrypt.kms_timeout
 * and a query cancel interrupts it.  Host names are resolved with a blocking
 * getaddrinfo; give an address to avoid depending on DNS.
 *
 * Wrapped blob formats:
 *	 0x01 | IV (12) | ciphertext (32) | tag (16)	server-side GCM
 *	 0x02 | IV (12) | ciphertext (32) | tag (16)	local GCM under a fetched CMK
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "colcrypt/provider.h"
#include "colcrypt/ttlv.h"
#include "miscadmin.h"
#include "catalog/pg_authid.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

/* Tags (KMIP 1.4, section 9.1.3.1) */
#define T_ATTRIBUTE				0x420008
#define T_ATTRIBUTE_NAME		0x42000A
#define T_ATTRIBUTE_VALUE		0x42000B
#define T_BATCH_COUNT			0x42000D
#define T_BATCH_ITEM			0x42000F
#define T_BLOCK_CIPHER_MODE		0x420011
#define T_CRYPTO_ALGORITHM		0x420028
#define T_CRYPTO_LENGTH			0x42002A
#define T_CRYPTO_PARAMETERS		0x42002B
#define T_CRYPTO_USAGE_MASK		0x42002C
#define T_IV_COUNTER_NONCE		0x42003D
#define T_KEY_BLOCK				0x420040
#define T_KEY_FORMAT_TYPE		0x420042
#define T_KEY_MATERIAL			0x420043
#define T_KEY_VALUE				0x420045
#define T_NAME					0x420053
#define T_NAME_TYPE				0x420054
#define T_NAME_VALUE			0x420055
#define T_OBJECT_TYPE			0x420057
#define T_OPERATION				0x42005C
#define T_PROTOCOL_VERSION		0x420069
#define T_PROTOCOL_MAJOR		0x42006A
#define T_PROTOCOL_MINOR		0x42006B
#define T_REQUEST_HEADER		0x420077
#define T_REQUEST_MESSAGE		0x420078
#define T_REQUEST_PAYLOAD		0x420079
#define T_RESPONSE_HEADER		0x42007A
#define T_RESPONSE_MESSAGE		0x42007B
#define T_RESPONSE_PAYLOAD		0x42007C
#define T_RESULT_MESSAGE		0x42007D
#define T_RESULT_REASON			0x42007E
#define T_RESULT_STATUS			0x42007F
#define T_REVOCATION_REASON		0x420081
#define T_REVOCATION_REASON_CODE 0x420082
#define T_STATE					0x42008D
#define T_SYMMETRIC_KEY			0x42008F
#define T_TEMPLATE_ATTRIBUTE	0x420091
#define T_UNIQUE_IDENTIFIER		0x420094
#define T_DATA					0x4200C2
#define T_TAG_LENGTH			0x4200CE
#define T_AE_ADDITIONAL_DATA	0x4200FE
#define T_AE_TAG				0x4200FF

/* Operations */
#define OP_CREATE				0x01
#define OP_GET					0x0A
#define OP_GET_ATTRIBUTES		0x0B
#define OP_ACTIVATE				0x12
#define OP_REVOKE				0x13
#define OP_DESTROY				0x14
#define OP_DISCOVER_VERSIONS	0x1E
#define OP_ENCRYPT				0x1F
#define OP_DECRYPT				0x20

/* Enumerations */
#define OBJECT_SYMMETRIC_KEY	0x02
#define ALG_AES					0x03
#define MODE_GCM				0x09
#define USAGE_ENCRYPT			0x04
#define USAGE_DECRYPT			0x08
#define KEY_FORMAT_RAW			0x01
#define NAME_TEXT				0x01
#define STATE_ACTIVE			0x02
#define REASON_ITEM_NOT_FOUND	0x01
#define REASON_AUTH_FAILED		0x03
#define REASON_PERMISSION_DENIED 0x0C

#define KMIP_FORMAT_SERVER_GCM	0x01
#define KMIP_FORMAT_LOCAL_GCM	0x02
#define KMIP_IV_LEN				12
#define KMIP_TAG_LEN			16
#define KMIP_MAX_UID			128

typedef struct KmipHandle
{
	char		name[NAMEDATALEN];
	char	   *host;
	char	   *port;
	char	   *ca_file;
	char	   *cert_file;
	char	   *key_file;
	char	   *server_name;
	bool		mode_get;

	SSL_CTX    *ctx;
	SSL		   *ssl;
	int			sock;
	bool		busy;			/* a request was under way when we last left */
	int			major,			/* negotiated protocol version */
				minor;
} KmipHandle;

static const char *const kmip_options[] = {
	"host", "port", "ca_file", "cert_file", "key_file", "server_name", "mode", NULL
};

/* ----------------------------------------------------------------------
 * Errors
 * ----------------------------------------------------------------------
 */

/* The OpenSSL error queue as one line (and emptied). */
static char *
ssl_errors(void)
{
	StringInfoData s;
	unsigned long e;

	initStringInfo(&s);
	while ((e = ERR_get_error()) != 0)
	{
		char		buf[256];

		ERR_error_string_n(e, buf, sizeof(buf));
		appendStringInfo(&s, "%s%s", s.len ? "; " : "", buf);
	}
	return s.data;
}

static void
unreachable(KmipHandle *h, ColcryptProviderError *err, const char *what, const char *detail)
{
	ColcryptProviderSetError(err, COLCRYPT_ERRCODE_UNREACHABLE,
							 psprintf("%s (KMIP server %s:%s)", what, h->host, h->port),
							 detail);
}

/* ----------------------------------------------------------------------
 * Connection
 * ----------------------------------------------------------------------
 */

static void
disconnect(KmipHandle *h)
{
	if (h->ssl != NULL)
	{
		/* No close_notify exchange: it could block on a dead peer. */
		SSL_free(h->ssl);
		h->ssl = NULL;
	}
	if (h->sock >= 0)
	{
		close(h->sock);
		h->sock = -1;
	}
	h->busy = false;
	h->major = h->minor = 0;
}

static bool
tcp_connect(KmipHandle *h, TimestampTz deadline, ColcryptProviderError *err)
{
	struct addrinfo hints;
	struct addrinfo *res;
	struct addrinfo *ai;
	int			rc;
	char	   *last = NULL;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(h->host, h->port, &hints, &res);
	if (rc != 0)
	{
		unreachable(h, err, "could not resolve the KMIP server's address", gai_strerror(rc));
		return false;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next)
	{
		int			s = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
							   ai->ai_protocol);
		int			one = 1;
		int			soerr = 0;
		socklen_t	sl = sizeof(soerr);

		if (s < 0)
		{
			last = psprintf("socket: %s", strerror(errno));
			continue;
		}
		(void) setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(s, ai->ai_addr, ai->ai_addrlen) != 0)
		{
			if (errno != EINPROGRESS)
			{
				last = psprintf("connect: %s", strerror(errno));
				close(s);
				continue;
			}
			if (!ColcryptProviderWaitFd(s, true, deadline))
			{
				close(s);
				freeaddrinfo(res);
				unreachable(h, err, "timed out connecting to the KMIP server",
							psprintf("No connection within colcrypt.kms_timeout (%d ms).", colcrypt_kms_timeout));
				return false;
			}
			if (getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0)
			{
				last = psprintf("connect: %s", strerror(soerr ? soerr : errno));
				close(s);
				continue;
			}
		}
		h->sock = s;
		freeaddrinfo(res);
		return true;
	}
	freeaddrinfo(res);
	unreachable(h, err, "could not connect to the KMIP server", last);
	return false;
}

/*
 * Drive a non-blocking TLS call to completion or the deadline.  Returns
 * the call's positive result, 0 for a clean EOF, -1 on failure (err set).
 */
typedef int (*ssl_step) (SSL *ssl, void *buf, int len);

static int
step_connect(SSL *ssl, void *buf, int len)
{
	return SSL_connect(ssl);
}

static int
step_read(SSL *ssl, void *buf, int len)
{
	return SSL_read(ssl, buf, len);
}

static int
step_write(SSL *ssl, void *buf, int len)
{
	return SSL_write(ssl, buf, len);
}

static int
ssl_drive(KmipHandle *h, ssl_step step, void *buf, int len, TimestampTz deadline,
		  const char *what, ColcryptProviderError *err)
{
	for (;;)
	{
		int			rc;
		int			e;

		ERR_clear_error();
		errno = 0;
		rc = step(h->ssl, buf, len);
		if (rc > 0)
			return rc;
		e = SSL_get_error(h->ssl, rc);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		{
			if (!ColcryptProviderWaitFd(h->sock, e == SSL_ERROR_WANT_WRITE, deadline))
			{
				unreachable(h, err, psprintf("the KMIP server did not answer in time (%s)", what),
							psprintf("No answer within colcrypt.kms_timeout (%d ms).", colcrypt_kms_timeout));
				return -1;
			}
			continue;
		}
		if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && rc == 0 && errno == 0))
		{
			if (step == step_connect)
				unreachable(h, err, "the KMIP server closed the connection during the TLS handshake",
							"The server may not accept this client's certificate.");
			else
				unreachable(h, err, psprintf("the KMIP server closed the connection (%s)", what), NULL);
			return step == step_connect ? -1 : 0;
		}
		if (step == step_connect && SSL_get_verify_result(h->ssl) != X509_V_OK)
		{
			long		v = SSL_get_verify_result(h->ssl);

			(void) ssl_errors();
			unreachable(h, err, "the KMIP server's certificate was not accepted",
						psprintf("Certificate verification failed: %s (expected name \"%s\", CA file \"%s\").",
								 X509_verify_cert_error_string(v), h->server_name, h->ca_file));
			return -1;
		}
		{
			char	   *q = ssl_errors();
			bool		refused_us = strstr(q, "alert unknown ca") || strstr(q, "alert bad certificate") ||
				strstr(q, "alert certificate unknown") || strstr(q, "alert certificate required") ||
				strstr(q, "alert certificate expired") || strstr(q, "alert unsupported certificate");

			unreachable(h, err,
						refused_us ? "the KMIP server did not accept this client's certificate" :
						step == step_connect ? "TLS handshake with the KMIP server failed"
						: psprintf("TLS failure talking to the KMIP server (%s)", what),
						q[0] ? q : (errno ? strerror(errno) : "connection reset"));
		}
		return -1;
	}
}

static bool
load_context(KmipHandle *h, ColcryptProviderError *err)
{
	SSL_CTX    *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
	{
		ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR, "could not create a TLS context", ssl_errors());
		return false;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	ERR_clear_error();
	if (SSL_CTX_load_verify_locations(ctx, h->ca_file, NULL) != 1)
	{
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 "could not load the KMIP CA certificates",
								 psprintf("\"%s\": %s", h->ca_file, ssl_errors()));
		SSL_CTX_free(ctx);
		return false;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, h->cert_file) != 1)
	{
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 "could not load the KMIP client certificate",
								 psprintf("\"%s\": %s", h->cert_file, ssl_errors()));
		SSL_CTX_free(ctx);
		return false;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, h->key_file, SSL_FILETYPE_PEM) != 1 ||
		SSL_CTX_check_private_key(ctx) != 1)
	{
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR,
								 "could not load the KMIP client key, or it does not match the certificate",
								 psprintf("\"%s\": %s", h->key_file, ssl_errors()));
		SSL_CTX_free(ctx);
		return false;
	}
	h->ctx = ctx;
	return true;
}

static void
doc_init(ttlv_doc *doc)
{
	doc->cap = TTLV_MAX_ITEMS;
	doc->items = palloc(sizeof(ttlv_item) * doc->cap);
	doc->nitems = 0;
}

static void
raw_free(uint8_t *raw, ttlv_doc *doc)
{
	if (raw != NULL)
	{
		if (doc->nitems > 0)
			explicit_bzero(raw, doc->items[0].len + TTLV_HEADER_LEN);
		free(raw);
	}
}

static bool kmip_call(KmipHandle *h, int op, ttlv_buf *payload, TimestampTz deadline,
					  ttlv_doc *doc, int *resp_payload, uint8_t **raw,
					  ColcryptProviderError *err);

/* Connect, handshake and agree on a protocol version, unless connected. */
static bool
ensure_connected(KmipHandle *h, TimestampTz deadline, ColcryptProviderError *err)
{
	ttlv_buf	p;
	ttlv_doc	doc;
	int			pl;
	int			v;
	uint8_t    *raw = NULL;
	bool		ok;
	static const int versions[][2] = {{1, 4}, {1, 3}, {1, 2}, {1, 1}};

	if (h->busy)
		disconnect(h);			/* left mid-request (a cancel): start over */
	if (h->ssl != NULL)
		return true;
	if (h->ctx == NULL && !load_context(h, err))
		return false;
	if (!tcp_connect(h, deadline, err))
		return false;
	h->ssl = SSL_new(h->ctx);
	if (h->ssl == NULL || SSL_set_fd(h->ssl, h->sock) != 1)
	{
		disconnect(h);
		ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR, "could not set up TLS", ssl_errors());
		return false;
	}
	{
		struct in6_addr a6;
		struct in_addr a4;
		bool		is_ip = inet_pton(AF_INET, h->server_name, &a4) == 1 ||
			inet_pton(AF_INET6, h->server_name, &a6) == 1;

		if (is_ip)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(h->ssl), h->server_name);
		else
		{
			SSL_set_tlsext_host_name(h->ssl, h->server_name);
			SSL_set1_host(h->ssl, h->server_name);
		}
	}
	if (ssl_drive(h, step_connect, NULL, 0, deadline, "handshake", err) <= 0)
	{
		disconnect(h);
		return false;
	}

	/* Discover Versions (KMIP 1.1+), sent as 1.1; the server answers in our order. */
	h->major = 1;
	h->minor = 1;
	ttlv_buf_init(&p);
	for (int i = 0; i < (int) lengthof(versions); i++)
	{
		size_t		m = ttlv_begin(&p, T_PROTOCOL_VERSION);

		ttlv_put_int(&p, T_PROTOCOL_MAJOR, versions[i][0]);
		ttlv_put_int(&p, T_PROTOCOL_MINOR, versions[i][1]);
		ttlv_end(&p, m);
	}
	doc_init(&doc);
	ok = kmip_call(h, OP_DISCOVER_VERSIONS, &p, deadline, &doc, &pl, &raw, err);
	ttlv_buf_free(&p);
	if (!ok)
	{
		raw_free(raw, &doc);	/* a refusal or a malformed answer was read */
		disconnect(h);
		return false;
	}
	v = ttlv_child(&doc, pl, T_PROTOCOL_VERSION);
	{
		int32_t		major,
					minor;

		if (v < 0 || !ttlv_get_int(&doc, ttlv_child(&doc, v, T_PROTOCOL_MAJOR), &major) ||
			!ttlv_get_int(&doc, ttlv_child(&doc, v, T_PROTOCOL_MINOR), &minor) ||
			major != 1 || minor < 1 || minor > 4)
		{
			raw_free(raw, &doc);
			disconnect(h);
			ColcryptProviderSetError(err, ERRCODE_FEATURE_NOT_SUPPORTED,
									 psprintf("the KMIP server at %s:%s speaks no KMIP version from 1.1 to 1.4", h->host, h->port),
									 NULL);
			return false;
		}
		h->major = major;
		h->minor = minor;
	}
	raw_free(raw, &doc);
	return true;
}

/* Write all of buf; false with err set on failure. */
static bool
send_all(KmipHandle *h, const uint8_t *buf, size_t len, TimestampTz deadline,
		 ColcryptProviderError *err)
{
	/* SSL_write without partial writes: one call per message, retried as is. */
	return ssl_drive(h, step_write, (void *) buf, (int) len, deadline, "sending a request", err) > 0;
}

static bool
recv_exact(KmipHandle *h, uint8_t *buf, size_t len, TimestampTz deadline,
		   ColcryptProviderError *err)
{
	size_t		got = 0;

	while (got < len)
	{
		int			n = ssl_drive(h, step_read, buf + got, (int) (len - got), deadline,
								  "reading a response", err);

		if (n <= 0)
			return false;
		got += n;
	}
	return true;
}

static const char *
reason_name(uint32_t r)
{
	static const char *const names[] = {
		NULL, "Item Not Found", "Response Too Large", "Authentication Not Successful",
		"Invalid Message", "Operation Not Supported", "Missing Data", "Invalid Field",
		"Feature Not Supported", "Operation Canceled By Requester", "Cryptographic Failure",
		"Illegal Operation", "Permission Denied", "Object Archived", "Index Out of Bounds",
		"Application Namespace Not Supported", "Key Format Type Not Supported",
		"Key Compression Type Not Supported", "Encoding Option Error", "Key Value Not Present",
		"Attestation Required", "Attestation Failed", "Sensitive", "Not Extractable",
		"Object Already Exists"
	};

	if (r < lengthof(names) && names[r] != NULL)
		return names[r];
	if (r == 0x100)
		return "General Failure";
	return "unknown reason";
}

static const char *
op_name(int op)
{
	switch (op)
	{
		case OP_CREATE:
			return "Create";
		case OP_GET:
			return "Get";
		case OP_GET_ATTRIBUTES:
			return "Get Attributes";
		case OP_ACTIVATE:
			return "Activate";
		case OP_REVOKE:
			return "Revoke";
		case OP_DESTROY:
			return "Destroy";
		case OP_DISCOVER_VERSIONS:
			return "Discover Versions";
		case OP_ENCRYPT:
			return "Encrypt";
		case OP_DECRYPT:
			return "Decrypt";
	}
	return "operation";
}

/*
 * One request, one batch item, one response.  On success the response is
 * parsed into doc (items point into *raw, which the caller frees with
 * free() after wiping if it held key material) and *resp_payload is the
 * index of the response payload (-1 if the response has none).
 */
static bool
kmip_call(KmipHandle *h, int op, ttlv_buf *payload, TimestampTz deadline,
		  ttlv_doc *doc, int *resp_payload, uint8_t **raw, ColcryptProviderError *err)
{
	ttlv_buf	req;
	size_t		m_msg,
				m_hdr,
				m_ver,
				m_item;
	uint8_t		hdr[TTLV_HEADER_LEN];
	size_t		total;
	uint8_t    *buf;
	const char *why;
	int			rh,
				bi,
				v;
	uint32_t	status = 0,
				reason = 0,
				rop = 0;
	int32_t		count = 0;
	bool		ok;

	*raw = NULL;
	ttlv_buf_init(&req);
	m_msg = ttlv_begin(&req, T_REQUEST_MESSAGE);
	m_hdr = ttlv_begin(&req, T_REQUEST_HEADER);
	m_ver = ttlv_begin(&req, T_PROTOCOL_VERSION);
	ttlv_put_int(&req, T_PROTOCOL_MAJOR, h->major);
	ttlv_put_int(&req, T_PROTOCOL_MINOR, h->minor);
	ttlv_end(&req, m_ver);
	ttlv_put_int(&req, T_BATCH_COUNT, 1);
	ttlv_end(&req, m_hdr);
	m_item = ttlv_begin(&req, T_BATCH_ITEM);
	ttlv_put_enum(&req, T_OPERATION, op);
	{
		size_t		m_pl = ttlv_begin(&req, T_REQUEST_PAYLOAD);

		if (payload != NULL)
			ttlv_put_raw(&req, payload);
		ttlv_end(&req, m_pl);
	}
	ttlv_end(&req, m_item);
	ttlv_end(&req, m_msg);
	if (req.failed)
	{
		ttlv_buf_free(&req);
		ColcryptProviderSetError(err, ERRCODE_PROGRAM_LIMIT_EXCEEDED, "KMIP request too large", NULL);
		return false;
	}

	h->busy = true;
	ok = send_all(h, req.data, req.len, deadline, err);
	ttlv_buf_free(&req);
	if (!ok)
	{
		disconnect(h);
		return false;
	}
	if (!recv_exact(h, hdr, TTLV_HEADER_LEN, deadline, err))
	{
		disconnect(h);
		return false;
	}
	total = ttlv_message_length(hdr, TTLV_MAX_MESSAGE);
	if (total == 0)
	{
		disconnect(h);
		ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
								 psprintf("the KMIP server at %s:%s sent a malformed or oversized response", h->host, h->port),
								 psprintf("Response header %02x%02x%02x type %u length %u (at most %d bytes accepted).",
										  hdr[0], hdr[1], hdr[2], hdr[3],
										  ((uint32) hdr[4] << 24) | ((uint32) hdr[5] << 16) | ((uint32) hdr[6] << 8) | hdr[7],
										  TTLV_MAX_MESSAGE));
		return false;
	}
	buf = malloc(total);
	if (buf == NULL)
	{
		disconnect(h);
		ColcryptProviderSetError(err, ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
		return false;
	}
	memcpy(buf, hdr, TTLV_HEADER_LEN);
	if (!recv_exact(h, buf + TTLV_HEADER_LEN, total - TTLV_HEADER_LEN, deadline, err))
	{
		free(buf);
		disconnect(h);
		return false;
	}
	h->busy = false;
	*raw = buf;

	if (!ttlv_parse(buf, total, doc, &why) || doc->items[0].tag != T_RESPONSE_MESSAGE)
	{
		disconnect(h);
		ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
								 psprintf("the KMIP server at %s:%s sent a malformed response", h->host, h->port),
								 why ? why : "not a Response Message");
		return false;
	}
	rh = ttlv_child(doc, 0, T_RESPONSE_HEADER);
	bi = ttlv_child(doc, 0, T_BATCH_ITEM);
	if (rh < 0 || bi < 0 || ttlv_next_same(doc, bi) >= 0 ||
		!ttlv_get_int(doc, ttlv_child(doc, rh, T_BATCH_COUNT), &count) || count != 1 ||
		!ttlv_get_enum(doc, ttlv_child(doc, bi, T_RESULT_STATUS), &status))
	{
		disconnect(h);
		ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
								 psprintf("the KMIP server at %s:%s sent a response without one result", h->host, h->port),
								 NULL);
		return false;
	}
	v = ttlv_child(doc, bi, T_OPERATION);
	if (v >= 0 && (!ttlv_get_enum(doc, v, &rop) || rop != (uint32_t) op))
	{
		disconnect(h);
		ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
								 psprintf("the KMIP server answered %s with another operation", op_name(op)),
								 NULL);
		return false;
	}
	if (status != 0)
	{
		const char *msg = NULL;
		size_t		msglen = 0;
		int			code = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;

		(void) ttlv_get_enum(doc, ttlv_child(doc, bi, T_RESULT_REASON), &reason);
		(void) ttlv_get_text(doc, ttlv_child(doc, bi, T_RESULT_MESSAGE), &msg, &msglen);
		if (reason == REASON_ITEM_NOT_FOUND)
			code = ERRCODE_UNDEFINED_OBJECT;
		else if (reason == REASON_AUTH_FAILED)
			code = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		ColcryptProviderSetError(err, code,
								 psprintf("the KMIP server refused %s", op_name(op)),
								 psprintf("Result status %u, reason %s (%u)%s%.*s", status,
										  reason_name(reason), reason,
										  msg ? ": " : ".", (int) Min(msglen, 300), msg ? msg : ""));
		return false;
	}
	*resp_payload = ttlv_child(doc, bi, T_RESPONSE_PAYLOAD);
	return true;
}

/* Run one operation with a fresh deadline; reconnect once if a kept connection went stale. */
static bool
kmip_op(KmipHandle *h, int op, ttlv_buf *payload, ttlv_doc *doc, int *pl,
		uint8_t **raw, ColcryptProviderError *err)
{
	TimestampTz deadline = ColcryptProviderDeadline();

	for (int attempt = 0; attempt < 2; attempt++)
	{
		bool		reused = h->ssl != NULL && !h->busy;

		if (!ensure_connected(h, deadline, err))
			return false;
		if (kmip_call(h, op, payload, deadline, doc, pl, raw, err))
			return true;
		/* A server that closed an idle connection: try once on a new one. */
		if (!(reused && h->ssl == NULL && err->sqlerrcode == COLCRYPT_ERRCODE_UNREACHABLE &&
			  GetCurrentTimestamp() < deadline))
			return false;
		if (*raw)
		{
			free(*raw);
			*raw = NULL;
		}
	}
	return false;
}

static void
put_uid(ttlv_buf *p, const char *uid)
{
	ttlv_put_text(p, T_UNIQUE_IDENTIFIER, uid, strlen(uid));
}

static void
put_gcm_params(ttlv_buf *p)
{
	size_t		m = ttlv_begin(p, T_CRYPTO_PARAMETERS);

	/* In the specification's order: servers read the fields in sequence. */
	ttlv_put_enum(p, T_BLOCK_CIPHER_MODE, MODE_GCM);
	ttlv_put_enum(p, T_CRYPTO_ALGORITHM, ALG_AES);
	ttlv_put_int(p, T_TAG_LENGTH, KMIP_TAG_LEN);
	ttlv_end(p, m);
}

static bool
check_uid(const char *uid, ColcryptProviderError *err)
{
	size_t		len = strlen(uid);

	if (len == 0 || len > KMIP_MAX_UID)
	{
		ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE,
								 "a KMIP key_ref (unique identifier) must have 1 to 128 bytes", NULL);
		return false;
	}
	return true;
}

/* Fetch the raw AES-256 key (mode "get"); the caller wipes key. */
static bool
get_key(KmipHandle *h, const char *uid, uint8 key[32], ColcryptProviderError *err)
{
	ttlv_buf	p;
	ttlv_doc	doc;
	int			pl;
	uint8_t    *raw = NULL;
	bool		ok;
	const uint8_t *km;
	size_t		kmlen = 0;
	int			kv;

	ttlv_buf_init(&p);
	put_uid(&p, uid);
	ttlv_put_enum(&p, T_KEY_FORMAT_TYPE, KEY_FORMAT_RAW);
	doc_init(&doc);
	ok = kmip_op(h, OP_GET, &p, &doc, &pl, &raw, err);
	ttlv_buf_free(&p);
	if (ok)
	{
		kv = ttlv_child(&doc, ttlv_child(&doc, ttlv_child(&doc, pl, T_SYMMETRIC_KEY), T_KEY_BLOCK),
						T_KEY_VALUE);
		if (kv >= 0 && doc.items[kv].type == TTLV_STRUCTURE)
			kv = ttlv_child(&doc, kv, T_KEY_MATERIAL);
		if (!ttlv_get_bytes(&doc, kv, &km, &kmlen) || kmlen != 32)
		{
			ColcryptProviderSetError(err, ERRCODE_WRONG_OBJECT_TYPE,
									 "the KMIP object is not a raw AES-256 symmetric key",
									 psprintf("Object %s.", uid));
			ok = false;
		}
		else
			memcpy(key, km, 32);
	}
	raw_free(raw, &doc);
	return ok;
}

/* ----------------------------------------------------------------------
 * The provider operations
 * ----------------------------------------------------------------------
 */

static void
kmip_validate(const char *name, Jsonb *options)
{
	static const char *const files[] = {"ca_file", "cert_file", "key_file"};
	char	   *host;
	char	   *port;
	char	   *mode;

	/* The provider reads certificate and key files on the server. */
	if (!superuser() && !has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create a kmip key provider"),
				 errdetail("A kmip provider reads certificate and key files on the database server."),
				 errhint("Only superusers and members of pg_read_server_files may add or alter one.")));
	ColcryptCheckOptionNames("kmip", options, kmip_options);
	host = ColcryptOptionText(options, "host");
	port = ColcryptOptionText(options, "port");
	mode = ColcryptOptionText(options, "mode");
	if (host == NULL || host[0] == '\0' || strlen(host) > 255)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a kmip provider needs a \"host\"")));
	if (port != NULL)
	{
		char	   *end;
		long		p = strtol(port, &end, 10);

		if (*end != '\0' || p < 1 || p > 65535)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"port\" must be a TCP port number")));
	}
	for (int i = 0; i < (int) lengthof(files); i++)
	{
		char	   *f = ColcryptOptionText(options, files[i]);

		if (f == NULL || f[0] != '/')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a kmip provider needs \"%s\", an absolute path", files[i]),
					 errhint("Mutual TLS: \"ca_file\" verifies the server, \"cert_file\" and \"key_file\" identify this client.")));
		if (access(f, R_OK) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("cannot read \"%s\" file \"%s\": %m", files[i], f)));
	}
	if (mode != NULL && strcmp(mode, "encrypt") != 0 && strcmp(mode, "get") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown kmip mode \"%s\"", mode),
				 errhint("\"encrypt\" (the default) wraps with the server's Encrypt/Decrypt; \"get\" fetches the key for servers without them.")));
}

static void *
kmip_open(const char *name, Jsonb *options, ColcryptProviderError *err)
{
	KmipHandle *h = MemoryContextAllocZero(TopMemoryContext, sizeof(KmipHandle));
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char	   *mode;

	strlcpy(h->name, name, sizeof(h->name));
	h->host = ColcryptOptionText(options, "host");
	h->port = ColcryptOptionText(options, "port");
	if (h->port == NULL)
		h->port = pstrdup("5696");
	h->ca_file = ColcryptOptionText(options, "ca_file");
	h->cert_file = ColcryptOptionText(options, "cert_file");
	h->key_file = ColcryptOptionText(options, "key_file");
	h->server_name = ColcryptOptionText(options, "server_name");
	if (h->server_name == NULL)
		h->server_name = pstrdup(h->host ? h->host : "");
	mode = ColcryptOptionText(options, "mode");
	h->mode_get = mode != NULL && strcmp(mode, "get") == 0;
	MemoryContextSwitchTo(old);
	h->sock = -1;
	if (h->host == NULL || h->ca_file == NULL || h->cert_file == NULL || h->key_file == NULL)
	{
		ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE,
								 "incomplete kmip provider options", NULL);
		pfree(h);
		return NULL;
	}

	/* Connect lazily (first wrap or unwrap): opening a handle costs nothing. */
	return h;
}

static void
kmip_close(void *handle)
{
	KmipHandle *h = handle;

	disconnect(h);
	if (h->ctx != NULL)
		SSL_CTX_free(h->ctx);
	pfree(h);
}

static bool
kmip_wrap(void *handle, const ColcryptWrapContext *ctx,
		  const uint8 *dek, size_t deklen,
		  StringInfo wrapped, char **wrap_meta, ColcryptProviderError *err)
{
	KmipHandle *h = handle;
	uint8		iv[KMIP_IV_LEN];
	uint8		aad[KMIP_MAX_UID + 64];
	size_t		aadlen;

	if (!check_uid(ctx->key_ref, err))
		return false;
	aadlen = ColcryptWrapAad("colcrypt-kmip-dek-v1", ctx, aad, sizeof(aad));
	if (cc_random(iv, sizeof(iv)) != CC_OK)
	{
		ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR, "could not generate an IV", NULL);
		return false;
	}

	if (h->mode_get)
	{
		uint8		key[32];
		uint8		ct[64];
		uint8		tag[KMIP_TAG_LEN];
		cc_status	st;

		if (!get_key(h, ctx->key_ref, key, err))
			return false;
		st = cc_gcm_seal_any(key, sizeof(key), iv, sizeof(iv), aad, aadlen,
							 dek, deklen, ct, tag, sizeof(tag));
		cc_wipe(key, sizeof(key));
		if (st != CC_OK)
		{
			ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR, "could not wrap the data key",
									 cc_status_string(st));
			return false;
		}
		appendStringInfoChar(wrapped, KMIP_FORMAT_LOCAL_GCM);
		appendBinaryStringInfo(wrapped, (char *) iv, sizeof(iv));
		appendBinaryStringInfo(wrapped, (char *) ct, deklen);
		appendBinaryStringInfo(wrapped, (char *) tag, sizeof(tag));
		*wrap_meta = pstrdup("mode=get");
		return true;
	}
	else
	{
		ttlv_buf	p;
		ttlv_doc	doc;
		int			pl;
		uint8_t    *raw = NULL;
		const uint8_t *ct = NULL,
				   *tag = NULL,
				   *riv = NULL;
		size_t		ctlen = 0,
					taglen = 0,
					rivlen = 0;
		bool		ok;

		if (!ensure_connected(h, ColcryptProviderDeadline(), err))
			return false;
		if (h->minor < 4)
		{
			ColcryptProviderSetError(err, ERRCODE_FEATURE_NOT_SUPPORTED,
									 psprintf("the KMIP server speaks KMIP 1.%d; wrapping with its Encrypt needs 1.4", h->minor),
									 "Before 1.4, KMIP messages cannot carry GCM's associated data and tag. Use \"mode\": \"get\" for this server.");
			return false;
		}
		ttlv_buf_init(&p);
		put_uid(&p, ctx->key_ref);
		put_gcm_params(&p);
		ttlv_put_bytes(&p, T_DATA, dek, deklen);
		ttlv_put_bytes(&p, T_IV_COUNTER_NONCE, iv, sizeof(iv));
		ttlv_put_bytes(&p, T_AE_ADDITIONAL_DATA, aad, aadlen);
		doc_init(&doc);
		ok = kmip_op(h, OP_ENCRYPT, &p, &doc, &pl, &raw, err);
		ttlv_buf_free(&p);
		if (ok)
		{
			int			ivi = ttlv_child(&doc, pl, T_IV_COUNTER_NONCE);

			if (!ttlv_get_bytes(&doc, ttlv_child(&doc, pl, T_DATA), &ct, &ctlen) || ctlen != deklen)
			{
				ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
										 "the KMIP server's Encrypt returned no ciphertext of the right length", NULL);
				ok = false;
			}
			else if (!ttlv_get_bytes(&doc, ttlv_child(&doc, pl, T_AE_TAG), &tag, &taglen) ||
					 taglen != KMIP_TAG_LEN)
			{
				ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
										 "the KMIP server's Encrypt returned no 16-byte GCM tag",
										 "Without the tag the wrapping is not authenticated; the server may have ignored the associated data.");
				ok = false;
			}
			else if (ivi >= 0 && (!ttlv_get_bytes(&doc, ivi, &riv, &rivlen) ||
								  rivlen != KMIP_IV_LEN || memcmp(riv, iv, KMIP_IV_LEN) != 0))
			{
				ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
										 "the KMIP server's Encrypt used another IV than the one sent", NULL);
				ok = false;
			}
		}
		if (ok)
		{
			appendStringInfoChar(wrapped, KMIP_FORMAT_SERVER_GCM);
			appendBinaryStringInfo(wrapped, (char *) iv, sizeof(iv));
			appendBinaryStringInfo(wrapped, (const char *) ct, ctlen);
			appendBinaryStringInfo(wrapped, (const char *) tag, taglen);
			*wrap_meta = NULL;
		}
		raw_free(raw, &doc);
		return ok;
	}
}

static bool
kmip_unwrap(void *handle, const ColcryptWrapContext *ctx,
			const uint8 *wrapped, size_t wrappedlen, const char *wrap_meta,
			uint8 *dek, size_t deklen, ColcryptProviderError *err)
{
	KmipHandle *h = handle;
	uint8		aad[KMIP_MAX_UID + 64];
	size_t		aadlen;
	const uint8 *iv = wrapped + 1;
	const uint8 *ct = wrapped + 1 + KMIP_IV_LEN;
	const uint8 *tag = wrapped + 1 + KMIP_IV_LEN + deklen;

	if (!check_uid(ctx->key_ref, err))
		return false;
	if (wrappedlen != 1 + KMIP_IV_LEN + deklen + KMIP_TAG_LEN ||
		(wrapped[0] != KMIP_FORMAT_SERVER_GCM && wrapped[0] != KMIP_FORMAT_LOCAL_GCM))
	{
		ColcryptProviderSetError(err, ERRCODE_DATA_CORRUPTED,
								 "the wrapped data key is not in a format of this provider",
								 psprintf("%lu bytes, format byte %u.", (unsigned long) wrappedlen,
										  wrappedlen ? wrapped[0] : 0));
		return false;
	}
	aadlen = ColcryptWrapAad("colcrypt-kmip-dek-v1", ctx, aad, sizeof(aad));

	if (wrapped[0] == KMIP_FORMAT_LOCAL_GCM)
	{
		uint8		key[32];
		cc_status	st;

		if (!get_key(h, ctx->key_ref, key, err))
			return false;
		st = cc_gcm_open_any(key, sizeof(key), iv, KMIP_IV_LEN, aad, aadlen,
							 ct, deklen, tag, KMIP_TAG_LEN, dek);
		cc_wipe(key, sizeof(key));
		if (st != CC_OK)
		{
			ColcryptProviderSetError(err, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
									 "could not unwrap the data key (another master key, or the wrapped key was altered)",
									 NULL);
			return false;
		}
		return true;
	}
	else
	{
		ttlv_buf	p;
		ttlv_doc	doc;
		int			pl;
		uint8_t    *raw = NULL;
		const uint8_t *pt;
		size_t		ptlen = 0;
		bool		ok;

		if (!ensure_connected(h, ColcryptProviderDeadline(), err))
			return false;
		if (h->minor < 4)
		{
			ColcryptProviderSetError(err, ERRCODE_FEATURE_NOT_SUPPORTED,
									 psprintf("the KMIP server speaks KMIP 1.%d; this data key was wrapped with KMIP 1.4 GCM", h->minor),
									 NULL);
			return false;
		}
		ttlv_buf_init(&p);
		put_uid(&p, ctx->key_ref);
		put_gcm_params(&p);
		ttlv_put_bytes(&p, T_DATA, ct, deklen);
		ttlv_put_bytes(&p, T_IV_COUNTER_NONCE, iv, KMIP_IV_LEN);
		ttlv_put_bytes(&p, T_AE_ADDITIONAL_DATA, aad, aadlen);
		ttlv_put_bytes(&p, T_AE_TAG, tag, KMIP_TAG_LEN);
		doc_init(&doc);
		ok = kmip_op(h, OP_DECRYPT, &p, &doc, &pl, &raw, err);
		ttlv_buf_free(&p);
		if (!ok && err->sqlerrcode == ERRCODE_EXTERNAL_ROUTINE_EXCEPTION)
			snprintf(err->message, sizeof(err->message), "%s",
					 "the KMIP server refused to unwrap the data key (another master key, the key is not active, or the wrapped key was altered)");
		if (ok && (!ttlv_get_bytes(&doc, ttlv_child(&doc, pl, T_DATA), &pt, &ptlen) || ptlen != deklen))
		{
			ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
									 "the KMIP server's Decrypt returned no key of the right length", NULL);
			ok = false;
		}
		if (ok)
			memcpy(dek, pt, deklen);
		raw_free(raw, &doc);
		return ok;
	}
}

static const char *
state_name(uint32_t s)
{
	static const char *const names[] = {
		"unknown", "Pre-Active", "Active", "Deactivated", "Compromised",
		"Destroyed", "Destroyed Compromised"
	};

	return s < lengthof(names) ? names[s] : "unknown";
}

/* Create and Activate a new AES-256 key named name; its identifier to *uid. */
static bool
create_key(KmipHandle *h, const char *name, char **uid, ColcryptProviderError *err)
{
	ttlv_buf	p;
	ttlv_doc	doc;
	int			pl;
	uint8_t    *raw = NULL;
	bool		ok;
	const char *u;
	size_t		ulen = 0;
	size_t		m_ta;

	ttlv_buf_init(&p);
	ttlv_put_enum(&p, T_OBJECT_TYPE, OBJECT_SYMMETRIC_KEY);
	m_ta = ttlv_begin(&p, T_TEMPLATE_ATTRIBUTE);
	{
		size_t		m = ttlv_begin(&p, T_ATTRIBUTE);

		ttlv_put_text(&p, T_ATTRIBUTE_NAME, "Cryptographic Algorithm", 23);
		ttlv_put_enum(&p, T_ATTRIBUTE_VALUE, ALG_AES);
		ttlv_end(&p, m);
		m = ttlv_begin(&p, T_ATTRIBUTE);
		ttlv_put_text(&p, T_ATTRIBUTE_NAME, "Cryptographic Length", 20);
		ttlv_put_int(&p, T_ATTRIBUTE_VALUE, 256);
		ttlv_end(&p, m);
		m = ttlv_begin(&p, T_ATTRIBUTE);
		ttlv_put_text(&p, T_ATTRIBUTE_NAME, "Cryptographic Usage Mask", 24);
		ttlv_put_int(&p, T_ATTRIBUTE_VALUE, USAGE_ENCRYPT | USAGE_DECRYPT);
		ttlv_end(&p, m);
		m = ttlv_begin(&p, T_ATTRIBUTE);
		ttlv_put_text(&p, T_ATTRIBUTE_NAME, "Name", 4);
		{
			size_t		mv = ttlv_begin(&p, T_ATTRIBUTE_VALUE);

			ttlv_put_text(&p, T_NAME_VALUE, name, strlen(name));
			ttlv_put_enum(&p, T_NAME_TYPE, NAME_TEXT);
			ttlv_end(&p, mv);
		}
		ttlv_end(&p, m);
	}
	ttlv_end(&p, m_ta);
	doc_init(&doc);
	ok = kmip_op(h, OP_CREATE, &p, &doc, &pl, &raw, err);
	ttlv_buf_free(&p);
	if (ok && (!ttlv_get_text(&doc, ttlv_child(&doc, pl, T_UNIQUE_IDENTIFIER), &u, &ulen) ||
			   ulen == 0 || ulen > KMIP_MAX_UID || memchr(u, '\0', ulen) != NULL))
	{
		ColcryptProviderSetError(err, ERRCODE_PROTOCOL_VIOLATION,
								 "the KMIP server's Create returned no usable unique identifier", NULL);
		ok = false;
	}
	if (ok)
		*uid = pnstrdup(u, ulen);
	raw_free(raw, &doc);
	if (!ok)
		return false;

	ttlv_buf_init(&p);
	put_uid(&p, *uid);
	doc_init(&doc);
	ok = kmip_op(h, OP_ACTIVATE, &p, &doc, &pl, &raw, err);
	ttlv_buf_free(&p);
	raw_free(raw, &doc);
	return ok;
}

/* Check the CMK: it exists, is an active AES-256 key allowed to encrypt and decrypt. */
static bool
check_key(KmipHandle *h, const char *uid, ColcryptProviderError *err)
{
	static const char *const wanted[] = {
		"State", "Cryptographic Algorithm", "Cryptographic Length", "Cryptographic Usage Mask"
	};
	ttlv_buf	p;
	ttlv_doc	doc;
	int			pl;
	uint8_t    *raw = NULL;
	bool		ok;
	uint32_t	state = 0,
				alg = 0;
	int32_t		length = 0,
				mask = 0;

	ttlv_buf_init(&p);
	put_uid(&p, uid);
	for (int i = 0; i < (int) lengthof(wanted); i++)
		ttlv_put_text(&p, T_ATTRIBUTE_NAME, wanted[i], strlen(wanted[i]));
	doc_init(&doc);
	ok = kmip_op(h, OP_GET_ATTRIBUTES, &p, &doc, &pl, &raw, err);
	ttlv_buf_free(&p);
	if (ok)
	{
		for (int a = ttlv_child(&doc, pl, T_ATTRIBUTE); a >= 0; a = ttlv_next_same(&doc, a))
		{
			const char *n;
			size_t		nlen;
			int			v = ttlv_child(&doc, a, T_ATTRIBUTE_VALUE);

			if (!ttlv_get_text(&doc, ttlv_child(&doc, a, T_ATTRIBUTE_NAME), &n, &nlen))
				continue;
			if (nlen == 5 && memcmp(n, "State", 5) == 0)
				(void) ttlv_get_enum(&doc, v, &state);
			else if (nlen == 23 && memcmp(n, "Cryptographic Algorithm", 23) == 0)
				(void) ttlv_get_enum(&doc, v, &alg);
			else if (nlen == 20 && memcmp(n, "Cryptographic Length", 20) == 0)
				(void) ttlv_get_int(&doc, v, &length);
			else if (nlen == 24 && memcmp(n, "Cryptographic Usage Mask", 24) == 0)
				(void) ttlv_get_int(&doc, v, &mask);
		}
		if (state != STATE_ACTIVE)
		{
			ColcryptProviderSetError(err, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
									 psprintf("KMIP key %s is %s, not Active", uid, state_name(state)),
									 "Only an active key can wrap and unwrap data keys.");
			ok = false;
		}
		else if ((alg != 0 && alg != ALG_AES) || (length != 0 && length != 256))
		{
			ColcryptProviderSetError(err, ERRCODE_WRONG_OBJECT_TYPE,
									 psprintf("KMIP key %s is not an AES-256 key", uid), NULL);
			ok = false;
		}
		else if (!h->mode_get && mask != 0 &&
				 (mask & (USAGE_ENCRYPT | USAGE_DECRYPT)) != (USAGE_ENCRYPT | USAGE_DECRYPT))
		{
			ColcryptProviderSetError(err, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
									 psprintf("KMIP key %s does not allow Encrypt and Decrypt", uid),
									 "Its Cryptographic Usage Mask lacks Encrypt or Decrypt.");
			ok = false;
		}
	}
	raw_free(raw, &doc);
	return ok;
}

static bool
kmip_ensure_cmk(void *handle, const char *key_ref, bool create, bool *created,
				char **actual_ref, ColcryptProviderError *err)
{
	KmipHandle *h = handle;
	char	   *uid;

	*created = false;
	if (!check_uid(key_ref, err))
		return false;
	if (create)
	{
		/* The server names new keys: key_ref becomes the key's Name attribute. */
		if (!create_key(h, key_ref, &uid, err))
			return false;
		*created = true;
		*actual_ref = uid;
		return true;
	}
	if (!check_key(h, key_ref, err))
	{
		if (err->sqlerrcode == ERRCODE_UNDEFINED_OBJECT)
			snprintf(err->detail, sizeof(err->detail),
					 "No key with unique identifier \"%s\" at the server. To make one, call add_master_key with create_cmk => true; key_ref then names it.",
					 key_ref);
		return false;
	}
	return true;
}

static bool
kmip_rotate_cmk(void *handle, const char *key_ref, char **new_key_ref,
				char **new_version, ColcryptProviderError *err)
{
	KmipHandle *h = handle;

	return create_key(h, psprintf("colcrypt rotation of %s at %s", key_ref, ColcryptUtcStamp()),
					  new_key_ref, err);
}

static bool
kmip_health(void *handle, StringInfo detail, ColcryptProviderError *err)
{
	KmipHandle *h = handle;

	/* A fresh connection proves the TLS set-up and the version agreement. */
	disconnect(h);
	if (!ensure_connected(h, ColcryptProviderDeadline(), err))
		return false;
	appendStringInfo(detail, "KMIP %d.%d at %s:%s over %s (%s); mode %s", h->major, h->minor,
					 h->host, h->port, SSL_get_version(h->ssl), SSL_get_cipher_name(h->ssl),
					 h->mode_get ? "get (the CMK is fetched to wrap locally)"
					 : "encrypt (the server wraps; the CMK stays there)");
	return true;
}

static Jsonb *
kmip_describe(Jsonb *options)
{
	static const char *const defaults[] = {"port", "5696", "mode", "encrypt", NULL};

	return ColcryptRedactOptions(options, NULL, defaults);
}

const ColcryptProviderOps colcrypt_kmip_provider = {
	.kind = "kmip",
	.validate = kmip_validate,
	.open = kmip_open,
	.close = kmip_close,
	.wrap = kmip_wrap,
	.unwrap = kmip_unwrap,
	.ensure_cmk = kmip_ensure_cmk,
	.rotate_cmk = kmip_rotate_cmk,
	.rewrap = NULL,				/* KMIP 1.x has no re-encrypt */
	.health = kmip_health,
	.describe = kmip_describe,
};
