/*-------------------------------------------------------------------------
 *
 * fuzz_http.c
 *	  libFuzzer harness: what the vault and aws-kms providers do with the
 *	  answers of a hostile or broken server.  The real code runs: http.c
 *	  (response collection, Retry-After, retries, JSON parsing of the
 *	  body), json.c, and vault.c / awskms.c whole (error bodies,
 *	  "vault:vN:" ciphertexts, base64 data keys and blobs, token and key
 *	  descriptions).  libcurl is replaced by the fake below, which plays
 *	  the input's answers back through http.c's own callbacks.
 *
 * Input: one selector byte, then answers separated by the byte 0x1E.
 *	 selector bit 0x80: AWS KMS, else Vault; bits 0-2: the operation;
 *	 FZ_FLAG_A/B/C (fuzz_http.h): handle and call variants.
 *	 An answer: a status line starting with the status ("200\n" or
 *	 "429 Too Many\n"), header lines, an empty line, the body.  Without
 *	 the empty line the rest is body.  An answer that does not start
 *	 with a digit is a transport failure (its first byte picks which).
 *	 When the answers run out, connections are refused.
 *
 * Findings: crashes, sanitizer reports, leaks (the fake's header lists are
 * malloc'd), an ERROR thrown (provider functions must not throw for what a
 * server says), a failure without an error, or a success with output of
 * the wrong shape.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include <curl/curl.h>

#include "colcrypt/http.h"
#include "colcrypt/provider.h"
#include "fuzz_http.h"
#include "pgshim.h"

#define RECORD_SEP 0x1E

/* ---------------------------------------------------------------------
 * Fake libcurl: one easy handle, one multi handle, answers from the input
 * ---------------------------------------------------------------------
 */

static const uint8_t *script;
static size_t script_left;

static char easy_storage;
static char multi_storage;
static curl_write_callback write_cb;
static void *write_data;
static curl_write_callback header_cb;
static void *header_data;
static long status_code;
static CURLcode transfer_result;
static bool msg_pending;
static CURLMsg done_msg;
static int	attached;
static int	requests;

CURLcode
curl_global_init(long flags)
{
	return CURLE_OK;
}

CURL *
curl_easy_init(void)
{
	return &easy_storage;
}

void
curl_easy_cleanup(CURL *curl)
{
}

CURLM *
curl_multi_init(void)
{
	return &multi_storage;
}

CURLMcode
curl_multi_cleanup(CURLM *multi)
{
	return CURLM_OK;
}

void
curl_easy_reset(CURL *curl)
{
	write_cb = header_cb = NULL;
	write_data = header_data = NULL;
	status_code = 0;
}

CURLcode
(curl_easy_setopt) (CURL *curl, CURLoption option,...)
{
	va_list		ap;

	va_start(ap, option);
	switch (option)
	{
		case CURLOPT_WRITEFUNCTION:
			write_cb = va_arg(ap, curl_write_callback);
			break;
		case CURLOPT_WRITEDATA:
			write_data = va_arg(ap, void *);
			break;
		case CURLOPT_HEADERFUNCTION:
			header_cb = va_arg(ap, curl_write_callback);
			break;
		case CURLOPT_HEADERDATA:
			header_data = va_arg(ap, void *);
			break;
		default:
			break;
	}
	va_end(ap);
	return CURLE_OK;
}

CURLMcode
curl_multi_add_handle(CURLM *multi, CURL *easy)
{
	if (attached++ != 0)
		abort();				/* added twice without a remove */
	return CURLM_OK;
}

CURLMcode
curl_multi_remove_handle(CURLM *multi, CURL *easy)
{
	attached--;
	return CURLM_OK;
}

/* Hand n bytes to a callback as libcurl does: a copy it may not keep. */
static bool
deliver(curl_write_callback cb, void *data, const uint8_t *p, size_t n)
{
	char	   *copy;
	size_t		took;

	if (n == 0)
		return true;
	copy = malloc(n);
	memcpy(copy, p, n);
	took = cb(copy, 1, n, data);
	free(copy);
	return took == n;
}

/* Play the next answer of the script through the callbacks. */
static void
play_answer(void)
{
	const uint8_t *rec = script;
	const uint8_t *sep = memchr(script, RECORD_SEP, script_left);
	size_t		len = sep ? (size_t) (sep - script) : script_left;
	size_t		pos = 0;
	long		status = 0;
	int			digits = 0;

	requests++;
	script += len + (sep ? 1 : 0);
	script_left -= len + (sep ? 1 : 0);
	if (len == 0 && sep == NULL)
	{
		transfer_result = CURLE_COULDNT_CONNECT;	/* no more answers */
		return;
	}
	while (pos < len && digits < 3 && rec[pos] >= '0' && rec[pos] <= '9')
	{
		status = status * 10 + (rec[pos++] - '0');
		digits++;
	}
	if (digits == 0)
	{
		static const CURLcode failures[] = {
			CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_SSL_CONNECT_ERROR,
			CURLE_RECV_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_GOT_NOTHING
		};

		transfer_result = failures[(len ? rec[0] : 0) % lengthof(failures)];
		return;
	}
	while (pos < len && rec[pos] != '\n')
		pos++;
	if (pos < len)
		pos++;

	/* The status line, then each header line, to the header callback. */
	{
		char		line[32];

		snprintf(line, sizeof(line), "HTTP/1.1 %ld\r\n", status);
		if (header_cb && !deliver(header_cb, header_data, (const uint8_t *) line, strlen(line)))
		{
			transfer_result = CURLE_WRITE_ERROR;
			return;
		}
	}
	{
		const uint8_t *blank = NULL;

		for (size_t i = pos; i < len; i++)
			if (rec[i] == '\n' && (i == pos || rec[i - 1] == '\n'))
			{
				blank = rec + i;
				break;
			}
		if (blank != NULL)
		{
			while (rec + pos < blank)
			{
				const uint8_t *eol = memchr(rec + pos, '\n', blank - (rec + pos));
				size_t		n = eol - (rec + pos) + 1;

				if (header_cb && !deliver(header_cb, header_data, rec + pos, n))
				{
					transfer_result = CURLE_WRITE_ERROR;
					return;
				}
				pos += n;
			}
			pos++;				/* the blank line */
		}
	}
	status_code = status;

	/* The body, in two pieces (the buffer grows between them). */
	{
		size_t		n = len - pos;
		size_t		half = n / 2;

		if (!deliver(write_cb, write_data, rec + pos, half) ||
			!deliver(write_cb, write_data, rec + pos + half, n - half))
		{
			transfer_result = CURLE_WRITE_ERROR;
			return;
		}
	}
	transfer_result = CURLE_OK;
}

CURLMcode
curl_multi_perform(CURLM *multi, int *running)
{
	if (write_cb == NULL)
		abort();
	play_answer();
	done_msg.msg = CURLMSG_DONE;
	done_msg.easy_handle = &easy_storage;
	done_msg.data.result = transfer_result;
	msg_pending = true;
	*running = 0;
	return CURLM_OK;
}

CURLMsg *
curl_multi_info_read(CURLM *multi, int *msgs_in_queue)
{
	*msgs_in_queue = 0;
	if (!msg_pending)
		return NULL;
	msg_pending = false;
	return &done_msg;
}

CURLMcode
curl_multi_poll(CURLM *multi, struct curl_waitfd extra_fds[], unsigned int extra_nfds,
				int timeout_ms, int *ret)
{
	abort();					/* never: every transfer ends at once */
}

CURLcode
(curl_easy_getinfo) (CURL *curl, CURLINFO info,...)
{
	va_list		ap;

	va_start(ap, info);
	if (info == CURLINFO_RESPONSE_CODE)
		*va_arg(ap, long *) = status_code;
	va_end(ap);
	return CURLE_OK;
}

struct curl_slist *
curl_slist_append(struct curl_slist *list, const char *data)
{
	struct curl_slist *n = malloc(sizeof(*n));
	struct curl_slist *p = list;

	n->data = strdup(data);
	n->next = NULL;
	if (list == NULL)
		return n;
	while (p->next)
		p = p->next;
	p->next = n;
	return list;
}

void
curl_slist_free_all(struct curl_slist *list)
{
	while (list)
	{
		struct curl_slist *next = list->next;

		free(list->data);
		free(list);
		list = next;
	}
}

const char *
curl_easy_strerror(CURLcode code)
{
	return "fake libcurl failure";
}

char *
curl_version(void)
{
	return (char *) "libcurl/fake";
}

void
curl_free(void *p)
{
	free(p);
}

/* The URL API is for option checks, which the harness does not make. */
CURLU *
curl_url(void)
{
	abort();
}

void
curl_url_cleanup(CURLU *handle)
{
	abort();
}

CURLUcode
curl_url_get(CURLU *handle, CURLUPart what, char **part, unsigned int flags)
{
	abort();
}

CURLUcode
curl_url_set(CURLU *handle, CURLUPart what, const char *part, unsigned int flags)
{
	abort();
}

/* ---------------------------------------------------------------------
 * The operations
 * ---------------------------------------------------------------------
 */

typedef struct Op
{
	uint8_t		sel;
} Op;

static const uint8 dek_in[32] = {
	0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9, 0xba, 0xcb, 0xdc, 0xed, 0xfe, 0x0f,
	0x01, 0x12, 0x23, 0x34, 0x45, 0x56, 0x67, 0x78, 0x89, 0x9a, 0xab, 0xbc, 0xcd, 0xde, 0xef, 0xf0
};

static volatile uint8 sink;

static void
fail(const char *what, int which)
{
	fprintf(stderr, "fuzz_http: %s (operation %d)\n", what, which);
	abort();
}

static void
run_op(void *arg)
{
	Op		   *op = arg;
	bool		aws = (op->sel & 0x80) != 0;
	int			which = op->sel & 0x07;
	bool		variant = (op->sel & FZ_FLAG_C) != 0;
	const ColcryptProviderOps *ops = aws ? &colcrypt_aws_kms_provider : &colcrypt_vault_provider;
	void	   *h = aws ? fz_aws_handle(op->sel) : fz_vault_handle(op->sel);
	ColcryptWrapContext ctx = {aws ? "alias/colcrypt" : "colcrypt-cmk", 7, 3};
	ColcryptWrapContext ctx2 = ctx;
	ColcryptProviderError err;
	StringInfoData out;
	char	   *meta = NULL;
	char	   *ref = NULL;
	char	   *version = NULL;
	uint8		dek[32];
	bool		created = false;
	bool		ok = false;
	bool		may_decline = false;
	const char *vault_blob = "vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==";
	static const uint8 aws_blob[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	const uint8 *wrapped = aws ? aws_blob : (const uint8 *) vault_blob;
	size_t		wrappedlen = aws ? sizeof(aws_blob) : strlen(vault_blob);
	const char *binding = variant ? "cmk_version=1;binding=associated_data" : "cmk_version=1;binding=context";

	memset(&err, 0, sizeof(err));
	initStringInfo(&out);
	switch (which)
	{
		case 0:
			ok = ops->wrap(h, &ctx, dek_in, sizeof(dek_in), &out, &meta, &err);
			if (ok && (out.len == 0 || (!aws && (strncmp(out.data, "vault:v", 7) != 0 || meta == NULL))))
				fail("wrap succeeded with a blob of the wrong shape", which);
			break;
		case 1:
			ok = ops->unwrap(h, &ctx, wrapped, wrappedlen, binding, dek, sizeof(dek), &err);
			break;
		case 2:
			if (aws)
			{
				may_decline = true;
				ok = ops->generate(h, &ctx, dek, sizeof(dek), &out, &meta, &err);
				if (ok && out.len == 0)
					fail("generate succeeded without a blob", which);
			}
			else
				ok = ops->ensure_cmk(h, ctx.key_ref, variant, &created, &ref, &err);
			break;
		case 3:
			ok = ops->rotate_cmk(h, ctx.key_ref, &ref, &version, &err);
			break;
		case 4:
			may_decline = true;
			if (variant)
				ctx2.key_ref = aws ? "alias/other" : "colcrypt-cmk";
			ok = ops->rewrap(h, &ctx, wrapped, wrappedlen, binding, &ctx2, &out, &meta, &err);
			if (ok && (out.len == 0 || (!aws && strncmp(out.data, "vault:v", 7) != 0)))
				fail("rewrap succeeded with a blob of the wrong shape", which);
			break;
		case 5:
			ok = ops->health(h, &out, &err);
			break;
		case 6:
			if (aws)
				ok = ops->ensure_cmk(h, variant ? "colcrypt new key" : "alias/colcrypt", true,
									 &created, &ref, &err);
			else
				ok = ops->unwrap(h, &ctx, wrapped, wrappedlen,
								 "cmk_version=1;binding=associated_data", dek, sizeof(dek), &err);
			break;
		default:
			ok = ops->ensure_cmk(h, aws ? "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
								 : ctx.key_ref, false, &created, &ref, &err);
			break;
	}
	if (!ok && err.sqlerrcode == 0 && !may_decline)
		fail("an operation failed without an error", which);
	if (strnlen(err.message, sizeof(err.message)) == sizeof(err.message) ||
		strnlen(err.detail, sizeof(err.detail)) == sizeof(err.detail))
		fail("error text not terminated", which);
	if (ok && (which == 1 || (aws && which == 2)))
		for (size_t i = 0; i < sizeof(dek); i++)
			sink ^= dek[i];		/* every byte written */
	ops->close(h);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Op			op;

	if (size < 1)
		return 0;
	op.sel = data[0];
	script = data + 1;
	script_left = size - 1;
	attached = 0;
	msg_pending = false;
	requests = 0;
	fz_now = 700000000000000;
	if (!fz_run(run_op, &op))
		fail("an ERROR was thrown", op.sel & 0x07);
	if (attached != 0)
		fail("a transfer was left attached", op.sel & 0x07);
	fz_reset();
	return 0;
}
