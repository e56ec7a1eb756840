/*-------------------------------------------------------------------------
 *
 * test_ttlv.c
 *	  Unit tests of the KMIP TTLV codec: encoding against bytes worked out
 *	  from the KMIP 1.4 specification's encoding examples, round trips,
 *	  every truncation of a valid message, lying lengths, bad padding,
 *	  nesting and item limits, and random mutations.  Every parse reads from
 *	  an exactly-sized heap block; the Makefile builds this file with
 *	  AddressSanitizer and UndefinedBehaviorSanitizer, so a read past the
 *	  end fails the test.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/ttlv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int	failures = 0;
static long checks = 0;

#define CHECK(cond, ...) \
	do { \
		checks++; \
		if (!(cond)) { \
			failures++; \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__); \
			fputc('\n', stderr); \
		} \
	} while (0)

static ttlv_item items[TTLV_MAX_ITEMS];
static uint8_t *last_copy = NULL;

/*
 * Parse a copy of buf held in a heap block of exactly len bytes.  The block
 * lives until the next call, so that the caller can read the items.
 */
static bool
parse_exact(const uint8_t *buf, size_t len, ttlv_doc *doc, const char **why)
{
	uint8_t    *copy = malloc(len ? len : 1);
	bool		ok;

	free(last_copy);
	last_copy = copy;
	if (len)
		memcpy(copy, buf, len);
	doc->items = items;
	doc->cap = TTLV_MAX_ITEMS;
	ok = ttlv_parse(copy, len, doc, why);
	if (ok)
	{
		/* every value inside the block */
		for (int i = 0; i < doc->nitems; i++)
			CHECK(doc->items[i].value >= copy &&
				  doc->items[i].value + doc->items[i].len <= copy + len,
				  "item %d outside the buffer", i);
	}
	return ok;
}

static bool
hex_equal(const ttlv_buf *b, const char *hex)
{
	size_t		n = strlen(hex) / 2;

	if (b->len != n)
		return false;
	for (size_t i = 0; i < n; i++)
	{
		unsigned int v;

		sscanf(hex + 2 * i, "%2x", &v);
		if (b->data[i] != v)
			return false;
	}
	return true;
}

/* The KMIP 1.4 spec's section 9.1.2 examples, one item each. */
static void
test_spec_examples(void)
{
	ttlv_buf	b;
	size_t		m;

	ttlv_buf_init(&b);
	ttlv_put_int(&b, 0x420020, 8);
	CHECK(hex_equal(&b, "42002002000000040000000800000000"), "integer example");
	ttlv_buf_free(&b);

	ttlv_put_long(&b, 0x420020, 123456789000000000LL);
	CHECK(hex_equal(&b, "420020030000000801B69B4BA5749200"), "long integer example");
	ttlv_buf_free(&b);

	ttlv_put_enum(&b, 0x420020, 255);
	CHECK(hex_equal(&b, "4200200500000004000000FF00000000"), "enumeration example");
	ttlv_buf_free(&b);

	ttlv_put_bool(&b, 0x420020, true);
	CHECK(hex_equal(&b, "42002006000000080000000000000001"), "boolean example");
	ttlv_buf_free(&b);

	ttlv_put_text(&b, 0x420020, "Hello World", 11);
	CHECK(hex_equal(&b, "420020070000000B48656C6C6F20576F726C640000000000"), "text example");
	ttlv_buf_free(&b);

	ttlv_put_bytes(&b, 0x420020, (const uint8_t *) "\x01\x02\x03", 3);
	CHECK(hex_equal(&b, "42002008000000030102030000000000"), "byte string example");
	ttlv_buf_free(&b);

	ttlv_put_datetime(&b, 0x420020, 0x47DA67F8);
	CHECK(hex_equal(&b, "42002009000000080000000047DA67F8"), "date-time example");
	ttlv_buf_free(&b);

	m = ttlv_begin(&b, 0x420020);
	ttlv_put_enum(&b, 0x420004, 254);
	ttlv_put_int(&b, 0x420005, 255);
	ttlv_end(&b, m);
	CHECK(hex_equal(&b, "42002001000000204200040500000004000000FE000000004200050200000004000000FF00000000"),
		  "structure example");
	ttlv_buf_free(&b);
}

/* A response-like message with every type, nested three deep. */
static void
build_sample(ttlv_buf *b)
{
	size_t		m0,
				m1,
				m2;
	static const uint8_t key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

	ttlv_buf_init(b);
	m0 = ttlv_begin(b, 0x42007B);
	m1 = ttlv_begin(b, 0x42007A);
	m2 = ttlv_begin(b, 0x420069);
	ttlv_put_int(b, 0x42006A, 1);
	ttlv_put_int(b, 0x42006B, 4);
	ttlv_end(b, m2);
	ttlv_put_datetime(b, 0x420092, 1700000000);
	ttlv_put_int(b, 0x42000D, 1);
	ttlv_end(b, m1);
	m1 = ttlv_begin(b, 0x42000F);
	ttlv_put_enum(b, 0x42005C, 0x1F);
	ttlv_put_enum(b, 0x42007F, 0);
	m2 = ttlv_begin(b, 0x42007C);
	ttlv_put_text(b, 0x420094, "1", 1);
	ttlv_put_bytes(b, 0x4200C2, key, sizeof(key));
	ttlv_put_bytes(b, 0x4200FF, key, 16);
	ttlv_put_bool(b, 0x420020, false);
	ttlv_put_long(b, 0x420021, -5);
	ttlv_put_text(b, 0x420022, "", 0);
	ttlv_end(b, m2);
	ttlv_end(b, m1);
	ttlv_end(b, m0);
}

static void
test_round_trip(void)
{
	ttlv_buf	b;
	ttlv_doc	doc;
	const char *why;
	int			hdr,
				ver,
				bi,
				pl;
	int32_t		major = 0,
				minor = 0;
	uint32_t	op = 0;
	const uint8_t *p;
	size_t		len;
	const char *t;
	bool		bv = true;
	int64_t		lv = 0;

	build_sample(&b);
	CHECK(!b.failed, "encoding failed");
	CHECK(ttlv_message_length(b.data, TTLV_MAX_MESSAGE) == b.len, "message length from header");
	CHECK(parse_exact(b.data, b.len, &doc, &why), "parse failed: %s", why);
	hdr = ttlv_child(&doc, 0, 0x42007A);
	ver = ttlv_child(&doc, hdr, 0x420069);
	CHECK(ttlv_get_int(&doc, ttlv_child(&doc, ver, 0x42006A), &major) && major == 1, "major");
	CHECK(ttlv_get_int(&doc, ttlv_child(&doc, ver, 0x42006B), &minor) && minor == 4, "minor");
	bi = ttlv_child(&doc, 0, 0x42000F);
	CHECK(ttlv_next_same(&doc, bi) == -1, "one batch item");
	CHECK(ttlv_get_enum(&doc, ttlv_child(&doc, bi, 0x42005C), &op) && op == 0x1F, "operation");
	pl = ttlv_child(&doc, bi, 0x42007C);
	CHECK(ttlv_get_text(&doc, ttlv_child(&doc, pl, 0x420094), &t, &len) && len == 1 && t[0] == '1', "uid");
	CHECK(ttlv_get_bytes(&doc, ttlv_child(&doc, pl, 0x4200C2), &p, &len) && len == 32 && p[9] == 10, "data");
	CHECK(ttlv_get_bool(&doc, ttlv_child(&doc, pl, 0x420020), &bv) && !bv, "bool");
	CHECK(ttlv_get_long(&doc, ttlv_child(&doc, pl, 0x420021), &lv) && lv == -5, "long");
	CHECK(ttlv_get_text(&doc, ttlv_child(&doc, pl, 0x420022), &t, &len) && len == 0, "empty text");
	/* wrong-type access fails */
	CHECK(!ttlv_get_int(&doc, ttlv_child(&doc, bi, 0x42005C), &major), "enum read as integer");
	CHECK(!ttlv_get_bytes(&doc, -1, &p, &len), "missing item");
	CHECK(ttlv_child(&doc, pl, 0x429999) == -1, "absent tag");

	/* Every truncation is refused; so is every extension by 8 bytes of zeros. */
	for (size_t n = 0; n < b.len; n++)
		CHECK(!parse_exact(b.data, n, &doc, &why), "truncation to %zu accepted", n);
	{
		uint8_t    *ext = calloc(b.len + 8, 1);

		memcpy(ext, b.data, b.len);
		CHECK(!parse_exact(ext, b.len + 8, &doc, &why), "trailing bytes accepted");
		free(ext);
	}
	ttlv_buf_free(&b);
}

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static void
test_malformed(void)
{
	ttlv_buf	b;
	ttlv_doc	doc;
	const char *why;
	uint8_t    *m;

	build_sample(&b);
	m = malloc(b.len);

	/* The outer length lying upward and downward, and huge. */
	static const uint32_t lies[] = {8, 16, 0xFFFFFFF8u, 0x7FFFFFF8u, 0xFFFFFFFFu};

	for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++)
	{
		memcpy(m, b.data, b.len);
		put_be32(m + 4, lies[i]);
		CHECK(!parse_exact(m, b.len, &doc, &why), "outer length %u accepted", lies[i]);
		CHECK(ttlv_message_length(m, TTLV_MAX_MESSAGE) == 0 || lies[i] < b.len,
			  "oversized header accepted: %u", lies[i]);
	}
	/* Every item's length field set to every interesting value. */
	for (size_t off = 0; off + 8 <= b.len; off += 8)
	{
		static const uint32_t vals[] = {0, 1, 3, 4, 7, 9, 15, 0x10000, 0xFFFFFFFFu};

		for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
		{
			memcpy(m, b.data, b.len);
			put_be32(m + off + 4, vals[i]);
			(void) parse_exact(m, b.len, &doc, &why);	/* must not crash */
		}
		/* every type byte */
		for (int t = 0; t < 256; t++)
		{
			memcpy(m, b.data, b.len);
			m[off + 3] = (uint8_t) t;
			(void) parse_exact(m, b.len, &doc, &why);
		}
	}
	/* Non-zero padding after a 4-byte integer is refused. */
	{
		ttlv_buf	one;
		size_t		mk;

		ttlv_buf_init(&one);
		mk = ttlv_begin(&one, 0x420078);
		ttlv_put_int(&one, 0x42000D, 1);
		ttlv_end(&one, mk);
		CHECK(parse_exact(one.data, one.len, &doc, &why), "valid small message refused: %s", why);
		one.data[one.len - 1] = 1;
		CHECK(!parse_exact(one.data, one.len, &doc, &why), "non-zero integer padding accepted");
		ttlv_buf_free(&one);

		ttlv_buf_init(&one);
		mk = ttlv_begin(&one, 0x420078);
		ttlv_put_text(&one, 0x420094, "abc", 3);
		ttlv_end(&one, mk);
		one.data[one.len - 1] = 'x';
		CHECK(!parse_exact(one.data, one.len, &doc, &why), "non-zero text padding accepted");
		ttlv_buf_free(&one);

		ttlv_buf_init(&one);
		mk = ttlv_begin(&one, 0x420078);
		ttlv_put_bool(&one, 0x420020, true);
		ttlv_end(&one, mk);
		one.data[one.len - 1] = 2;
		CHECK(!parse_exact(one.data, one.len, &doc, &why), "boolean 2 accepted");
		ttlv_buf_free(&one);

		/* A tag outside the KMIP ranges. */
		ttlv_buf_init(&one);
		mk = ttlv_begin(&one, 0x420078);
		ttlv_put_int(&one, 0x430001, 1);
		ttlv_end(&one, mk);
		CHECK(!parse_exact(one.data, one.len, &doc, &why), "tag 0x430001 accepted");
		ttlv_buf_free(&one);
	}
	free(m);
	ttlv_buf_free(&b);

	/* Nesting: TTLV_MAX_DEPTH structures inside each other parse, more do not. */
	for (int depth = TTLV_MAX_DEPTH; depth <= TTLV_MAX_DEPTH + 2; depth++)
	{
		size_t		marks[64];

		ttlv_buf_init(&b);
		for (int i = 0; i < depth; i++)
			marks[i] = ttlv_begin(&b, 0x420078);
		for (int i = depth - 1; i >= 0; i--)
			ttlv_end(&b, marks[i]);
		CHECK(parse_exact(b.data, b.len, &doc, &why) == (depth <= TTLV_MAX_DEPTH),
			  "depth %d: %s", depth, why ? why : "accepted");
		ttlv_buf_free(&b);
	}

	/* Item table: TTLV_MAX_ITEMS items parse, one more does not. */
	for (int n = TTLV_MAX_ITEMS - 1; n <= TTLV_MAX_ITEMS; n++)
	{
		size_t		mk;

		ttlv_buf_init(&b);
		mk = ttlv_begin(&b, 0x420078);
		for (int i = 0; i < n; i++)
			ttlv_put_int(&b, 0x42000D, i);
		ttlv_end(&b, mk);
		CHECK(parse_exact(b.data, b.len, &doc, &why) == (n + 1 <= TTLV_MAX_ITEMS),
			  "%d items: %s", n + 1, why ? why : "accepted");
		ttlv_buf_free(&b);
	}

	/* The encoder refuses to build a message over the limit. */
	{
		uint8_t    *big = calloc(TTLV_MAX_MESSAGE, 1);
		size_t		mk;

		ttlv_buf_init(&b);
		mk = ttlv_begin(&b, 0x420078);
		ttlv_put_bytes(&b, 0x4200C2, big, TTLV_MAX_MESSAGE);
		ttlv_end(&b, mk);
		CHECK(b.failed, "oversized message encoded");
		ttlv_buf_free(&b);
		free(big);
	}

	/* Two top-level items, and a non-structure message, are refused. */
	{
		ttlv_buf_init(&b);
		ttlv_put_int(&b, 0x42000D, 1);
		CHECK(ttlv_message_length(b.data, TTLV_MAX_MESSAGE) == 0, "integer as message header");
		ttlv_put_int(&b, 0x42000D, 2);
		CHECK(!parse_exact(b.data, b.len, &doc, &why), "two top-level items accepted");
		ttlv_buf_free(&b);
	}
}

/* Random bytes and random mutations of a valid message: no crash, no overread. */
static void
test_random(void)
{
	ttlv_buf	b;
	ttlv_doc	doc;
	const char *why;
	uint8_t    *m;
	unsigned int seed = 12345;
	long		accepted = 0;

	build_sample(&b);
	m = malloc(b.len);
	for (int i = 0; i < 200000; i++)
	{
		size_t		len;

		memcpy(m, b.data, b.len);
		for (int k = 0; k < 1 + (int) (rand_r(&seed) % 4); k++)
			m[rand_r(&seed) % b.len] = (uint8_t) rand_r(&seed);
		len = (rand_r(&seed) % 4 == 0) ? (size_t) (rand_r(&seed) % (b.len + 1)) : b.len;
		if (parse_exact(m, len, &doc, &why))
			accepted++;
		checks++;
	}
	for (int i = 0; i < 50000; i++)
	{
		size_t		len = rand_r(&seed) % 200;
		uint8_t    *r = malloc(len ? len : 1);

		for (size_t k = 0; k < len; k++)
			r[k] = (uint8_t) rand_r(&seed);
		if (len >= 8 && i % 2 == 0)
		{
			r[0] = 0x42;
			r[3] = TTLV_STRUCTURE;
			put_be32(r + 4, (uint32_t) ((len - 8) & ~7u));
		}
		(void) parse_exact(r, len, &doc, &why);
		free(r);
		checks++;
	}
	printf("test_ttlv: %ld of 200000 mutated messages still well-formed (payload bytes changed)\n", accepted);
	free(m);
	ttlv_buf_free(&b);
}

int
main(void)
{
	test_spec_examples();
	test_round_trip();
	test_malformed();
	test_random();
	printf("test_ttlv: %ld checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
