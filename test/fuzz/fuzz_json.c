/*-------------------------------------------------------------------------
 *
 * fuzz_json.c
 *	  libFuzzer harness: the JSON reader of the HTTP providers
 *	  (src/providers/json.c over PostgreSQL's pg_parse_json) and their
 *	  strict base64 decoder, on response bodies as a server sends them.
 *
 * ColcryptJsonParse gets the input as a body.  When it succeeds, every
 * item is read through ColcryptJsonGet/ColcryptJsonString, and every
 * string value goes through ColcryptBase64Decode (what takes data keys and
 * ciphertext blobs out of Vault and AWS KMS answers), whose result must
 * agree with cc_text_decode (envelope.c, the other strict decoder):
 * canonical base64 both, with the same bytes, or neither.  The whole input
 * is also tried as base64.  The doc is freed as the providers free it.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "colcrypt/envelope.h"
#include "colcrypt/http.h"
#include "pgshim.h"

static void
check_base64(const char *s, size_t len)
{
	size_t		cap = len / 4 * 3 + 3;
	uint8	   *a = palloc(cap);
	uint8	   *b = palloc(cap);
	size_t		blen = 0;
	int			n = ColcryptBase64Decode(s, len, a, cap);
	cc_text_status st = cc_text_decode(s, len, b, &blen);

	if (len > 1024 * 1024)		/* ColcryptBase64Decode's limit */
		return;
	if ((n >= 0) != (st == CC_TEXT_OK) ||
		(n >= 0 && ((size_t) n != blen || memcmp(a, b, blen) != 0)))
	{
		fprintf(stderr, "fuzz_json: ColcryptBase64Decode %d, cc_text_decode %d (%zu bytes) for \"%.*s\"\n",
				n, st, blen, (int) Min(len, 200), s);
		abort();
	}
	/* Too small a buffer is refused, never overrun. */
	if (n > 0)
	{
		uint8	   *small = palloc(n - 1 ? n - 1 : 1);

		if (ColcryptBase64Decode(s, len, small, n - 1) != -1)
		{
			fprintf(stderr, "fuzz_json: ColcryptBase64Decode fit %d bytes into %d\n", n, n - 1);
			abort();
		}
	}
}

typedef struct Input
{
	const char *data;
	size_t		size;
} Input;

static void
run(void *arg)
{
	Input	   *in = arg;
	ColcryptJsonDoc doc;
	const char *why = "unset";

	if (ColcryptJsonParse(in->data, in->size, &doc, &why))
	{
		if (why != NULL)
			abort();
		for (int i = 0; i < doc.nitems; i++)
		{
			const ColcryptJsonItem *it = &doc.items[i];
			const ColcryptJsonItem *found = ColcryptJsonGet(&doc, it->path);

			/* A path can repeat ({"a":1,"a":2}): the first one is found. */
			if (found == NULL || found > it || strlen(it->value) != it->valuelen ||
				(found->kind == CJ_STRING) != (ColcryptJsonString(&doc, it->path) != NULL))
			{
				fprintf(stderr, "fuzz_json: item %d (%s) is not found by its path\n", i, it->path);
				abort();
			}
			if (it->kind == CJ_STRING)
				check_base64(it->value, it->valuelen);
		}
		/* The paths the providers read. */
		(void) ColcryptJsonString(&doc, "data.ciphertext");
		(void) ColcryptJsonString(&doc, "errors[0]");
		(void) ColcryptJsonGet(&doc, "auth.lease_duration");
		ColcryptJsonFree(&doc);
		if (doc.nitems != 0 || doc.items != NULL)
			abort();
	}
	else if (why == NULL || doc.nitems != 0 || doc.items != NULL)
	{
		fprintf(stderr, "fuzz_json: failed parse without a reason or with items left\n");
		abort();
	}
	check_base64(in->data, in->size);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Input		in = {(const char *) data, size};

	if (!fz_run(run, &in))
	{
		/* ColcryptJsonParse never throws for bad input (http.h). */
		fprintf(stderr, "fuzz_json: an ERROR was raised\n");
		abort();
	}
	fz_reset();
	return 0;
}
