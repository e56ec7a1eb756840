/*-------------------------------------------------------------------------
 *
 * test_envelope.c
 *	  Unit tests of the envelope format: round trips, every truncation and
 *	  extension of a valid envelope, every header field out of range, and
 *	  random inputs, each parsed from an exactly-sized heap buffer so that
 *	  AddressSanitizer or valgrind catches any read past the end.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/crypto.h"
#include "colcrypt/envelope.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int	failures = 0;
static int	checks = 0;

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

/* Parse a copy of buf in a heap block of exactly len bytes. */
static cc_env_status
parse_exact(const uint8_t *buf, size_t len, cc_envelope *env)
{
	uint8_t    *copy = malloc(len ? len : 1);
	cc_env_status st;

	if (len)
		memcpy(copy, buf, len);
	st = cc_envelope_parse(len ? copy : NULL, len, env);
	/* Fields must point into the block; check before freeing it. */
	if (st == CC_ENV_OK)
	{
		CHECK(env->header == copy, "header outside buffer");
		CHECK(env->ct >= copy && env->ct + env->ctlen <= copy + len, "ciphertext outside buffer");
		CHECK(env->tag >= copy && env->tag + CC_ENV_TAG_LEN == copy + len, "tag not at the end");
		CHECK(env->nonce == NULL || (env->nonce >= copy && env->nonce + CC_ENV_NONCE_LEN <= env->ct),
			  "nonce outside header");
	}
	free(copy);
	return st;
}

/* Build a real envelope: seal pt under a random key, like the data path. */
static size_t
build(uint8_t *buf, cc_alg alg, size_t ptlen, const uint8_t *key, const uint8_t *pt)
{
	cc_envelope env;
	cc_aead_item it;

	cc_envelope_init(buf, alg, CC_TYPE_TEXT, 0x1234567, 42, ptlen, &env);
	it.nonce = env.nonce;
	it.aad = env.header;
	it.aadlen = CC_ENV_HEADER_LEN;
	it.in = pt;
	it.inlen = ptlen;
	it.out = (uint8_t *) env.ct;
	it.tag = (uint8_t *) env.tag;
	if (alg == CC_ALG_AES256_GCM)
	{
		cc_gcm_key *k = cc_gcm_key_new(key);

		cc_random((uint8_t *) env.nonce, CC_ENV_NONCE_LEN);
		CHECK(cc_gcm_seal_batch(k, &it, 1) == 0, "gcm seal");
		cc_gcm_key_free(k);
	}
	else
	{
		uint8_t		sivkey[CC_SIV_KEY_LEN];
		cc_siv_key *k;

		memcpy(sivkey, key, 32);
		memcpy(sivkey + 32, key, 32);
		k = cc_siv_key_new(sivkey, sizeof(sivkey));
		CHECK(cc_siv_seal_batch(k, &it, 1) == 0, "siv seal");
		cc_siv_key_free(k);
	}
	return cc_envelope_size(alg, ptlen);
}

static void
test_alg(cc_alg alg)
{
	uint8_t		key[32];
	uint8_t		pt[100];
	uint8_t		buf[256];
	cc_envelope env;

	cc_random(key, sizeof(key));
	cc_random(pt, sizeof(pt));
	for (size_t ptlen = 0; ptlen <= sizeof(pt); ptlen += (ptlen < 20 ? 1 : 17))
	{
		size_t		len = build(buf, alg, ptlen, key, pt);

		CHECK(parse_exact(buf, len, &env) == CC_ENV_OK, "valid envelope rejected (len %zu)", len);
		CHECK(env.key_id == 0x1234567 && env.key_version == 42 && env.type == CC_TYPE_TEXT &&
			  env.alg == alg && env.ctlen == ptlen, "fields wrong");

		/* Every truncation is rejected or, if still long enough, shorter. */
		for (size_t cut = 0; cut < len; cut++)
		{
			cc_env_status st = parse_exact(buf, cut, &env);
			size_t		min = cc_envelope_size(alg, 0);

			if (cut < min)
				CHECK(st == CC_ENV_TRUNCATED, "truncation to %zu accepted", cut);
			else
				CHECK(st == CC_ENV_OK && env.ctlen == cut - min, "truncation to %zu misparsed", cut);
		}
	}

	/* Header fields out of range. */
	{
		size_t		len = build(buf, alg, 5, key, pt);
		uint8_t		save;

		save = buf[0];
		for (int v = 0; v < 256; v++)
		{
			buf[0] = (uint8_t) v;
			CHECK((parse_exact(buf, len, &env) == CC_ENV_OK) == (v == CC_ENV_VERSION),
				  "version %d", v);
		}
		buf[0] = save;
		save = buf[1];
		for (int v = 0; v < 256; v++)
		{
			cc_env_status st;

			buf[1] = (uint8_t) v;
			st = parse_exact(buf, len, &env);
			CHECK(v == CC_ALG_AES256_GCM || v == CC_ALG_AES256_SIV ? st != CC_ENV_BAD_ALG
				  : st == CC_ENV_BAD_ALG, "algorithm %d", v);
		}
		buf[1] = save;
		save = buf[2];
		for (int v = 0; v < 256; v++)
		{
			buf[2] = (uint8_t) v;
			CHECK((parse_exact(buf, len, &env) == CC_ENV_OK) == (v >= 1 && v <= CC_TYPE_MAX),
				  "type %d", v);
		}
		buf[2] = save;
		for (int bit = 0; bit < 8; bit++)
		{
			buf[3] = (uint8_t) (1 << bit);
			if ((1 << bit) == CC_ENV_FLAG_PADDED)
				CHECK(parse_exact(buf, len, &env) == CC_ENV_OK && env.flags == CC_ENV_FLAG_PADDED,
					  "the padded flag");
			else
				CHECK(parse_exact(buf, len, &env) == CC_ENV_BAD_FLAGS, "flag bit %d", bit);
		}
		buf[3] = 0;
	}
}

/*
 * Length padding: every length pads to its bucket (a power of two of at
 * least 16 bytes, above 64 kB a multiple of 64 kB, always with room for
 * the marker) and unpads back; a buffer without the marker, or with a
 * nonzero byte after it, is refused.
 */
static void
test_padding(void)
{
	static uint8_t buf[300000];
	size_t		back;
	int			n = 0;

	CHECK(cc_pad_size(0) == 16 && cc_pad_size(15) == 16 && cc_pad_size(16) == 32 &&
		  cc_pad_size(31) == 32 && cc_pad_size(32) == 64 && cc_pad_size(65535) == 65536 &&
		  cc_pad_size(65536) == 131072 && cc_pad_size(200000) == 262144, "bucket sizes");
	for (size_t len = 0; len < sizeof(buf) - 70000; len += (len < 1100 ? 1 : 997))
	{
		size_t		p = cc_pad_size(len);

		CHECK(p > len && p >= 16 && p <= sizeof(buf), "bucket of %zu", len);
		CHECK(p <= 65536 ? (p & (p - 1)) == 0 : p % 65536 == 0, "bucket shape of %zu", len);
		CHECK(cc_pad_is_bucket(p) && (len < 16 || !cc_pad_is_bucket(len + 1) || len + 1 == p),
			  "bucket test of %zu", len);
		memset(buf, 0x80, len);		/* plaintext bytes that look like markers */
		cc_pad(buf, len, p);
		CHECK(cc_unpad(buf, p, &back) && back == len, "round trip of %zu", len);
		n++;
	}
	memset(buf, 0, 64);
	CHECK(!cc_unpad(buf, 64, &back), "all zeros");
	CHECK(!cc_unpad(buf, 0, &back), "empty");
	buf[10] = 0x80;
	buf[20] = 0x01;
	CHECK(!cc_unpad(buf, 32, &back), "a byte after the marker");
	printf("padding: %d lengths round-trip, malformed padding refused\n", n);
}

/* Random bytes of random lengths: never a crash, never a field outside. */
static void
test_random(void)
{
	uint8_t		buf[128];
	cc_envelope env;
	int			ok = 0;

	for (int i = 0; i < 200000; i++)
	{
		uint8_t		len;

		cc_random(&len, 1);
		len %= sizeof(buf);
		cc_random(buf, len);
		/* Bias towards a plausible header so deeper paths are reached. */
		if (len > 4 && (i & 1))
		{
			buf[0] = CC_ENV_VERSION;
			buf[1] = 1 + (buf[1] & 1);
			buf[2] = 1 + (buf[2] % CC_TYPE_MAX);
			buf[3] = 0;
		}
		if (parse_exact(buf, len, &env) == CC_ENV_OK)
			ok++;
	}
	printf("random inputs: 200000 parsed, %d well-formed\n", ok);
}

/*
 * The text form's base64: what PostgreSQL's pg_b64_decode plus the
 * canonical check (the input function before cc_text_decode) said for
 * each; fuzz_envelope compares the two on arbitrary input.
 */
static void
test_text(void)
{
	static const struct
	{
		const char *in;
		cc_text_status st;
		const char *out;
	}			cases[] = {
		{"QQ==", CC_TEXT_OK, "A"},
		{"QUE=", CC_TEXT_OK, "AA"},
		{"QUFB", CC_TEXT_OK, "AAA"},
		{"QUFBQQ==", CC_TEXT_OK, "AAAA"},
		{"", CC_TEXT_NOT_BASE64, NULL},
		{"QQ=", CC_TEXT_NOT_BASE64, NULL},
		{"QQ= ", CC_TEXT_NOT_BASE64, NULL},
		{"QQ\n=", CC_TEXT_NOT_BASE64, NULL},
		{"Q-_=", CC_TEXT_NOT_BASE64, NULL},
		{"Q===", CC_TEXT_NOT_BASE64, NULL},
		{"====", CC_TEXT_NOT_BASE64, NULL},
		{"QUFB=QQQ", CC_TEXT_NOT_BASE64, NULL},
		{"QR==", CC_TEXT_NOT_CANONICAL, NULL},
		{"QUF=", CC_TEXT_NOT_CANONICAL, NULL},
		{"QQ=A", CC_TEXT_NOT_CANONICAL, NULL},
		{"QQ======", CC_TEXT_NOT_CANONICAL, NULL},
		{"QQ==QUFB", CC_TEXT_NOT_CANONICAL, NULL},
		{"QUE=QQ==", CC_TEXT_NOT_CANONICAL, NULL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		size_t		len = strlen(cases[i].in);
		uint8_t		out[16];
		size_t		outlen = 99;
		cc_text_status st = cc_text_decode(cases[i].in, len, out, &outlen);

		CHECK(st == cases[i].st, "text \"%s\": status %d, expected %d", cases[i].in, st, cases[i].st);
		if (cases[i].out)
			CHECK(st == CC_TEXT_OK && outlen == strlen(cases[i].out) &&
				  memcmp(out, cases[i].out, outlen) == 0, "text \"%s\" decoded wrongly", cases[i].in);
		else
			CHECK(outlen == 0, "text \"%s\": length %zu after failure", cases[i].in, outlen);
	}
}

int
main(void)
{
	test_text();
	test_alg(CC_ALG_AES256_GCM);
	test_alg(CC_ALG_AES256_SIV);
	test_random();
	test_padding();
	printf("test_envelope: %d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
