/*-------------------------------------------------------------------------
 *
 * fuzz_ttlv.c
 *	  libFuzzer harness: the KMIP TTLV decoder (src/providers/ttlv.c) and
 *	  the kmip provider's handling of what a KMIP server sends back
 *	  (src/providers/kmip.c, included here whole so that its static
 *	  functions run unchanged).
 *
 * Input: one selector byte, then bytes.
 *	 selector & 0x0F == 0: the bytes are one TTLV message: ttlv_parse
 *		into a full and into a small item table, every item read with
 *		every getter, the tree's links and bounds checked.
 *	 otherwise: the bytes are the byte stream a KMIP server sends on the
 *		TLS connection, and one provider operation runs against it:
 *		wrap and unwrap in both modes, ensure_cmk (create, check), rotate,
 *		health.  Bit 0x10 starts without a connection (TCP connect, TLS
 *		handshake and Discover Versions first, all faked below: only the
 *		server's bytes are input); bit 0x20 makes the agreed version 1.2.
 *		TLS is replaced by a fake SSL_* that reads the input; sockets by
 *		fakes of getaddrinfo/socket/connect.
 *
 * What counts as a finding: a crash, a sanitizer report, a leak (the
 * response buffers are malloc'd), an operation that fails without an
 * error, or one that reports success with output of the wrong shape.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

/* Everything kmip.c includes, first: the renames below must not reach headers. */
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

#include "catalog/pg_authid.h"
#include "colcrypt/provider.h"
#include "colcrypt/ttlv.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

/* kmip.c's sockets, replaced by fakes below (only in that file's code). */
/* Function-like, so that a struct field named close is left alone. */
#define getaddrinfo(n, s, h, r) fz_getaddrinfo(n, s, h, r)
#define freeaddrinfo(r) fz_freeaddrinfo(r)
#define gai_strerror(c) fz_gai_strerror(c)
#define socket(d, t, p) fz_socket(d, t, p)
#define connect(f, a, l) fz_connect(f, a, l)
#define setsockopt(f, l, n, v, s) fz_setsockopt(f, l, n, v, s)
#define getsockopt(f, l, n, v, s) fz_getsockopt(f, l, n, v, s)
#define close(f) fz_close(f)

static int	fz_getaddrinfo(const char *node, const char *service,
						   const struct addrinfo *hints, struct addrinfo **res);
static void fz_freeaddrinfo(struct addrinfo *res);
static const char *fz_gai_strerror(int code);
static int	fz_socket(int domain, int type, int protocol);
static int	fz_connect(int fd, const struct sockaddr *addr, socklen_t len);
static int	fz_setsockopt(int fd, int level, int name, const void *val, socklen_t len);
static int	fz_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
static int	fz_close(int fd);

#include "../../src/providers/kmip.c"

#undef getaddrinfo
#undef freeaddrinfo
#undef gai_strerror
#undef socket
#undef connect
#undef setsockopt
#undef getsockopt
#undef close

#include "pgshim.h"

/* ---------------------------------------------------------------------
 * The peer: what the server "sends" is the fuzz input
 * ---------------------------------------------------------------------
 */

static const uint8_t *stream;
static size_t stream_left;
static int	last_rc;
static long open_sockets;

static struct sockaddr_in fake_addr;
static struct addrinfo fake_ai;

static int
fz_getaddrinfo(const char *node, const char *service,
			   const struct addrinfo *hints, struct addrinfo **res)
{
	memset(&fake_ai, 0, sizeof(fake_ai));
	fake_addr.sin_family = AF_INET;
	fake_ai.ai_family = AF_INET;
	fake_ai.ai_socktype = SOCK_STREAM;
	fake_ai.ai_addr = (struct sockaddr *) &fake_addr;
	fake_ai.ai_addrlen = sizeof(fake_addr);
	*res = &fake_ai;
	return 0;
}

static void
fz_freeaddrinfo(struct addrinfo *res)
{
}

static const char *
fz_gai_strerror(int code)
{
	return "fake resolver error";
}

static int
fz_socket(int domain, int type, int protocol)
{
	open_sockets++;
	return 1000;
}

static int
fz_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	return 0;
}

static int
fz_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	return 0;
}

static int
fz_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	memset(val, 0, *len);
	return 0;
}

static int
fz_close(int fd)
{
	open_sockets--;
	return 0;
}

/* libssl, faked: the executable's definitions are the ones called. */
static char fake_ctx_storage[64];
static char fake_ssl_storage[64];
static long open_ssl;

const SSL_METHOD *
TLS_client_method(void)
{
	return NULL;
}

SSL_CTX *
SSL_CTX_new(const SSL_METHOD *meth)
{
	return (SSL_CTX *) fake_ctx_storage;
}

void
SSL_CTX_free(SSL_CTX *ctx)
{
}

long
SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg)
{
	return 1;
}

void
SSL_CTX_set_verify(SSL_CTX *ctx, int mode, SSL_verify_cb callback)
{
}

int
SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *CAfile, const char *CApath)
{
	return 1;
}

int
SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file)
{
	return 1;
}

int
SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int type)
{
	return 1;
}

int
SSL_CTX_check_private_key(const SSL_CTX *ctx)
{
	return 1;
}

SSL *
SSL_new(SSL_CTX *ctx)
{
	open_ssl++;
	return (SSL *) fake_ssl_storage;
}

void
SSL_free(SSL *ssl)
{
	open_ssl--;
}

int
SSL_set_fd(SSL *s, int fd)
{
	return 1;
}

long
SSL_ctrl(SSL *ssl, int cmd, long larg, void *parg)
{
	return 1;
}

int
SSL_set1_host(SSL *s, const char *hostname)
{
	return 1;
}

X509_VERIFY_PARAM *
SSL_get0_param(SSL *ssl)
{
	abort();					/* only for a server_name that is an address */
}

int
SSL_connect(SSL *ssl)
{
	return 1;
}

int
SSL_read(SSL *ssl, void *buf, int num)
{
	size_t		n = Min((size_t) num, stream_left);

	if (num <= 0)
		abort();
	memcpy(buf, stream, n);
	stream += n;
	stream_left -= n;
	last_rc = (int) n;
	return (int) n;
}

int
SSL_write(SSL *ssl, const void *buf, int num)
{
	const volatile uint8_t *p = buf;

	/* The request is read in full, as a TLS library would. */
	for (int i = 0; i < num; i++)
		(void) p[i];
	last_rc = num;
	return num;
}

int
SSL_get_error(const SSL *s, int ret_code)
{
	return ret_code == 0 ? SSL_ERROR_ZERO_RETURN : SSL_ERROR_SSL;
}

long
SSL_get_verify_result(const SSL *ssl)
{
	return X509_V_OK;
}

const char *
SSL_get_version(const SSL *s)
{
	return "TLSv1.3";
}

const SSL_CIPHER *
SSL_get_current_cipher(const SSL *s)
{
	return NULL;
}

const char *
SSL_CIPHER_get_name(const SSL_CIPHER *c)
{
	return "(NONE)";
}

/* ---------------------------------------------------------------------
 * Raw TTLV
 * ---------------------------------------------------------------------
 */

static ttlv_item items[TTLV_MAX_ITEMS];
static volatile uint64_t sink;

static void
fail(const char *what, int item)
{
	fprintf(stderr, "fuzz_ttlv: %s (item %d)\n", what, item);
	abort();
}

static void
check_doc(const uint8_t *msg, size_t len, const ttlv_doc *doc)
{
	for (int i = 0; i < doc->nitems; i++)
	{
		const ttlv_item *it = &doc->items[i];
		int32_t		i32;
		uint32_t	u32;
		int64_t		i64;
		bool		b;
		const uint8_t *p;
		const char *t;
		size_t		n;

		if (it->value < msg + TTLV_HEADER_LEN || it->value + it->len > msg + len)
			fail("value outside the message", i);
		if (it->parent >= i || (it->parent < 0 && i != 0) ||
			(it->first_child >= 0 && it->first_child != i + 1) ||
			(it->next >= 0 && it->next <= i) || it->next >= doc->nitems ||
			it->first_child >= doc->nitems)
			fail("links out of order", i);
		if (it->parent >= 0)
		{
			const ttlv_item *pa = &doc->items[it->parent];

			if (pa->type != TTLV_STRUCTURE || it->value < pa->value ||
				it->value + it->len > pa->value + pa->len)
				fail("item outside its structure", i);
		}
		if (it->first_child >= 0 && it->type != TTLV_STRUCTURE)
			fail("children of a non-structure", i);
		if (ttlv_get_int(doc, i, &i32))
			sink += (uint64_t) i32;
		if (ttlv_get_enum(doc, i, &u32))
			sink += u32;
		if (ttlv_get_long(doc, i, &i64))
			sink += (uint64_t) i64;
		if (ttlv_get_bool(doc, i, &b))
			sink += b;
		if (ttlv_get_bytes(doc, i, &p, &n))
		{
			if (p != it->value || n != it->len)
				fail("bytes getter", i);
			for (size_t k = 0; k < n; k++)
				sink += p[k];
		}
		if (ttlv_get_text(doc, i, &t, &n))
		{
			for (size_t k = 0; k < n; k++)
				sink += (uint8_t) t[k];
		}
		if (ttlv_child(doc, it->parent, it->tag) > i)
			fail("ttlv_child passed the first item with its tag", i);
		if (it->type == TTLV_STRUCTURE)
			sink += (uint64_t) ttlv_child(doc, i, T_RESPONSE_PAYLOAD);
		{
			int			nx = ttlv_next_same(doc, i);

			if (nx >= 0 && (nx <= i || doc->items[nx].tag != it->tag ||
							doc->items[nx].parent != it->parent))
				fail("ttlv_next_same", i);
		}
	}
	/* Out-of-range indexes are refused, not read. */
	if (ttlv_get_int(doc, doc->nitems, &(int32_t) {0}) || ttlv_get_int(doc, -1, &(int32_t) {0}) ||
		ttlv_next_same(doc, doc->nitems) != -1 || ttlv_child(doc, doc->nitems, 0x420000) != -1)
		fail("an index past the table was accepted", doc->nitems);
}

static void
fuzz_raw(const uint8_t *data, size_t size, uint8_t sel)
{
	/* An exact-size copy: libFuzzer's buffer is one, but data is past the selector. */
	uint8_t    *msg = malloc(size ? size : 1);
	ttlv_doc	doc = {items, 0, TTLV_MAX_ITEMS};
	const char *why;
	bool		ok;

	memcpy(msg, data, size);
	ok = ttlv_parse(msg, size, &doc, &why);
	if (ok != (why == NULL))
		fail("result and reason disagree", -1);
	if (ok)
	{
		if (doc.nitems < 1 || ((doc.items[0].len + 7) & ~7u) + TTLV_HEADER_LEN != size)
			fail("the root item does not fill the message", 0);
		if (doc.items[0].type == TTLV_STRUCTURE &&
			ttlv_message_length(msg, TTLV_MAX_MESSAGE) != size)
			fail("ttlv_message_length disagrees with the parse", 0);
		check_doc(msg, size, &doc);
	}
	else if (doc.nitems > doc.cap)
		fail("more items than the table holds", doc.nitems);

	/* A small table: "too many items", never a write past it. */
	{
		int			cap = 1 + (sel >> 4);
		ttlv_item  *small = malloc(sizeof(ttlv_item) * cap);
		ttlv_doc	d2 = {small, 0, cap};

		bool		ok2 = ttlv_parse(msg, size, &d2, &why);

		if (ok2 && !ok)
			fail("a smaller table accepted what a full one did not", -1);
		if (d2.nitems > cap)
			fail("more items than the table holds", d2.nitems);
		if (ok2)
			check_doc(msg, size, &d2);
		free(small);
	}
	if (size >= TTLV_HEADER_LEN)
		sink += ttlv_message_length(msg, TTLV_MAX_MESSAGE);
	free(msg);
}

/* ---------------------------------------------------------------------
 * Provider operations against the input
 * ---------------------------------------------------------------------
 */

typedef struct Op
{
	uint8_t		sel;
	bool		ok;
} Op;

static const uint8 dek_in[32] = {
	1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
	17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32
};

static KmipHandle *
make_handle(bool connected, bool mode_get, int minor)
{
	KmipHandle *h = palloc0(sizeof(KmipHandle));

	strlcpy(h->name, "fz", sizeof(h->name));
	h->host = pstrdup("kmip.test");
	h->port = pstrdup("5696");
	h->ca_file = pstrdup("/nonexistent/ca.pem");
	h->cert_file = pstrdup("/nonexistent/cert.pem");
	h->key_file = pstrdup("/nonexistent/key.pem");
	h->server_name = pstrdup("kmip.test");
	h->mode_get = mode_get;
	h->sock = -1;
	if (connected)
	{
		h->ctx = SSL_CTX_new(NULL);
		h->ssl = SSL_new(h->ctx);
		h->sock = fz_socket(AF_INET, SOCK_STREAM, 0);
		h->major = 1;
		h->minor = minor;
	}
	return h;
}

static void
blob(uint8 *out, uint8 format)
{
	out[0] = format;
	for (int i = 1; i < 1 + KMIP_IV_LEN + 32 + KMIP_TAG_LEN; i++)
		out[i] = (uint8) (i * 7);
}

static void
run_op(void *arg)
{
	Op		   *op = arg;
	uint8_t		sel = op->sel;
	int			which = (sel & 0x0F) % 9;
	bool		connected = (sel & 0x10) == 0;
	int			minor = (sel & 0x20) ? 2 : 4;
	const ColcryptProviderOps *ops = &colcrypt_kmip_provider;
	KmipHandle *h = make_handle(connected, which == 2 || which == 4 || which == 7, minor);
	ColcryptWrapContext ctx = {"cmk-0001", 7, 3};
	ColcryptProviderError err;
	StringInfoData out;
	char	   *meta = (char *) "unset";
	uint8		dek[32];
	uint8		wrapped[1 + KMIP_IV_LEN + 32 + KMIP_TAG_LEN];
	char	   *ref = NULL;
	char	   *version = NULL;
	bool		created = false;
	bool		ok = false;

	memset(&err, 0, sizeof(err));
	initStringInfo(&out);
	switch (which)
	{
		case 1:					/* wrap, server-side GCM */
		case 2:					/* wrap, "get" mode */
			ok = ops->wrap(h, &ctx, dek_in, sizeof(dek_in), &out, &meta, &err);
			if (ok && (out.len != (int) sizeof(wrapped) ||
					   (uint8) out.data[0] != (which == 1 ? KMIP_FORMAT_SERVER_GCM : KMIP_FORMAT_LOCAL_GCM)))
				fail("wrap succeeded with a blob of the wrong shape", out.len);
			break;
		case 3:					/* unwrap, server-side GCM */
		case 4:					/* unwrap, "get" mode */
			blob(wrapped, which == 3 ? KMIP_FORMAT_SERVER_GCM : KMIP_FORMAT_LOCAL_GCM);
			ok = ops->unwrap(h, &ctx, wrapped, sizeof(wrapped), NULL, dek, sizeof(dek), &err);
			if (ok)
				sink += dek[0] + dek[31];
			break;
		case 5:					/* ensure_cmk, create */
			ok = ops->ensure_cmk(h, "colcrypt new cmk", true, &created, &ref, &err);
			if (ok && (!created || ref == NULL || strlen(ref) == 0 || strlen(ref) > KMIP_MAX_UID))
				fail("create succeeded without a usable identifier", -1);
			break;
		case 6:					/* ensure_cmk, check */
		case 7:
			ok = ops->ensure_cmk(h, "cmk-0001", false, &created, &ref, &err);
			break;
		case 8:					/* rotate */
			ok = ops->rotate_cmk(h, "cmk-0001", &ref, &version, &err);
			if (ok && (ref == NULL || strlen(ref) == 0))
				fail("rotation succeeded without a new key", -1);
			break;
		default:				/* health: reconnects, Discover Versions */
			ok = ops->health(h, &out, &err);
			if (ok && (h->major != 1 || h->minor < 1 || h->minor > 4))
				fail("health accepted a version outside 1.1 to 1.4", h->minor);
			break;
	}
	if (!ok && err.sqlerrcode == 0)
		fail("an operation failed without an error", which);
	if (!ok && (strnlen(err.message, sizeof(err.message)) == sizeof(err.message) ||
				strnlen(err.detail, sizeof(err.detail)) == sizeof(err.detail)))
		fail("error text not terminated", which);
	ops->close(h);
	op->ok = ok;
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Op			op;

	if (size < 1)
		return 0;
	op.sel = data[0];
	if ((op.sel & 0x0F) == 0)
	{
		fuzz_raw(data + 1, size - 1, op.sel);
		return 0;
	}
	stream = data + 1;
	stream_left = size - 1;
	open_sockets = 0;
	open_ssl = 0;
	(void) fz_run(run_op, &op);
	if (open_sockets != 0 || open_ssl != 0)
	{
		fprintf(stderr, "fuzz_ttlv: %ld sockets and %ld TLS connections left open\n",
				open_sockets, open_ssl);
		abort();
	}
	fz_reset();
	return 0;
}
