/*-------------------------------------------------------------------------
 *
 * test_crypto.c
 *	  Runs colcrypt's crypto layer against Project Wycheproof's vectors:
 *	  AES-GCM (through the data-path API where the sizes are ours, and
 *	  through the any-size API for the whole file), AES-SIV, AES-KWP and
 *	  HKDF-SHA256.  Valid cases must give the expected output, invalid
 *	  ones must be rejected; "acceptable" cases are counted apart.
 *
 * usage: test_crypto <wycheproof directory>
 * Exit status 0 only when every case behaved and every file had cases.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/crypto.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

typedef struct Counts
{
	int			valid_ok;		/* valid cases giving the expected result */
	int			invalid_ok;		/* invalid cases rejected */
	int			acceptable;		/* "acceptable" cases run (either outcome) */
	int			skipped;		/* sizes outside what the API under test takes */
	int			failed;			/* anything else */
} Counts;

static int	total_failures = 0;

static uint8_t *
hex(json_object *tc, const char *field, size_t *len)
{
	json_object *v;
	const char *s;
	size_t		n;
	uint8_t    *out;

	if (!json_object_object_get_ex(tc, field, &v))
	{
		fprintf(stderr, "missing field %s\n", field);
		exit(2);
	}
	s = json_object_get_string(v);
	n = strlen(s);
	if (n % 2 != 0)
	{
		fprintf(stderr, "odd hex length in %s\n", field);
		exit(2);
	}
	out = malloc(n / 2 + 1);
	for (size_t i = 0; i < n / 2; i++)
	{
		unsigned int b;

		if (sscanf(s + 2 * i, "%2x", &b) != 1)
		{
			fprintf(stderr, "bad hex in %s\n", field);
			exit(2);
		}
		out[i] = (uint8_t) b;
	}
	*len = n / 2;
	return out;
}

static const char *
str(json_object *o, const char *field)
{
	json_object *v;

	if (!json_object_object_get_ex(o, field, &v))
		return "";
	return json_object_get_string(v);
}

static int
num(json_object *o, const char *field)
{
	json_object *v;

	if (!json_object_object_get_ex(o, field, &v))
	{
		fprintf(stderr, "missing field %s\n", field);
		exit(2);
	}
	return json_object_get_int(v);
}

/* Record one case: ok says whether the primitive gave the expected answer. */
static void
record(Counts *c, const char *file, json_object *tc, const char *result,
	   bool accepted, bool output_matches)
{
	if (strcmp(result, "valid") == 0)
	{
		if (accepted && output_matches)
			c->valid_ok++;
		else
		{
			c->failed++;
			fprintf(stderr, "FAIL %s tcId %d (valid): %s\n", file,
					num(tc, "tcId"), accepted ? "wrong output" : "rejected");
		}
	}
	else if (strcmp(result, "invalid") == 0)
	{
		if (!accepted)
			c->invalid_ok++;
		else
		{
			c->failed++;
			fprintf(stderr, "FAIL %s tcId %d (invalid): accepted\n", file,
					num(tc, "tcId"));
		}
	}
	else
		c->acceptable++;
}

static json_object *
load(const char *dir, const char *file)
{
	char		path[4096];
	json_object *root;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	root = json_object_from_file(path);
	if (root == NULL)
	{
		fprintf(stderr, "cannot read %s\n", path);
		exit(2);
	}
	return root;
}

static void
report(const char *what, Counts *c)
{
	int			run = c->valid_ok + c->invalid_ok + c->acceptable + c->failed;

	printf("%-46s %4d run: %4d valid ok, %4d invalid rejected, %2d acceptable, "
		   "%3d skipped, %d FAILED\n",
		   what, run, c->valid_ok, c->invalid_ok, c->acceptable, c->skipped,
		   c->failed);
	if (c->failed > 0 || run == 0)
		total_failures++;
}

#define FOREACH_CASE(root, group, tc) \
	for (size_t gi_ = 0; gi_ < json_object_array_length(json_object_object_get(root, "testGroups")); gi_++) \
		for (json_object *group = json_object_array_get_idx(json_object_object_get(root, "testGroups"), gi_), \
			 *tests_ = json_object_object_get(group, "tests"); tests_ != NULL; tests_ = NULL) \
			for (size_t ti_ = 0; ti_ < json_object_array_length(tests_); ti_++) \
				for (json_object *tc = json_object_array_get_idx(tests_, ti_); tc != NULL; tc = NULL)

/* One AES-GCM case's fields. */
typedef struct GcmCase
{
	size_t		klen, ivlen, aadlen, msglen, ctlen, taglen;
	uint8_t    *key, *iv, *aad, *msg, *ct, *tag;
	const char *result;
} GcmCase;

static void
gcm_case_load(json_object *tc, GcmCase *c)
{
	c->key = hex(tc, "key", &c->klen);
	c->iv = hex(tc, "iv", &c->ivlen);
	c->aad = hex(tc, "aad", &c->aadlen);
	c->msg = hex(tc, "msg", &c->msglen);
	c->ct = hex(tc, "ct", &c->ctlen);
	c->tag = hex(tc, "tag", &c->taglen);
	c->result = str(tc, "result");
}

static void
gcm_case_free(GcmCase *c)
{
	free(c->key);
	free(c->iv);
	free(c->aad);
	free(c->msg);
	free(c->ct);
	free(c->tag);
}

/*
 * AES-GCM through the data path: cc_gcm_key with a 256-bit key, 96-bit
 * nonce and 128-bit tag.  Both directions: decrypting must give msg (or fail
 * for invalid cases); for valid cases sealing msg must give ct and tag.
 */
static void
test_gcm_datapath(const char *dir, bool evp_only)
{
	json_object *root = load(dir, "aes_gcm_test.json");
	Counts		c = {0};

	FOREACH_CASE(root, g, tc)
	{
		GcmCase		v;

		gcm_case_load(tc, &v);
		if (v.klen == CC_AES256_KEY_LEN && v.ivlen == CC_GCM_NONCE_LEN &&
			v.taglen == CC_TAG_LEN)
		{
			cc_gcm_key *k = cc_gcm_key_new(v.key);
			uint8_t    *out = malloc(v.ctlen + 1);
			uint8_t		tagout[CC_TAG_LEN];
			cc_aead_item it = {v.iv, v.aad, v.aadlen, v.ct, v.ctlen, out, v.tag, CC_OK};
			bool		opened;
			bool		matches;

			if (evp_only)
				cc_gcm_key_use_evp_only(k);
			cc_gcm_open_batch(k, &it, 1);
			opened = (it.status == CC_OK);
			matches = opened && v.ctlen == v.msglen && memcmp(out, v.msg, v.msglen) == 0;
			if (opened && strcmp(v.result, "valid") == 0)
			{
				/* The sealing direction must reproduce ct and tag. */
				cc_aead_item s = {v.iv, v.aad, v.aadlen, v.msg, v.msglen, out, tagout, CC_OK};

				cc_gcm_seal_batch(k, &s, 1);
				matches = matches && s.status == CC_OK &&
					memcmp(out, v.ct, v.ctlen) == 0 &&
					memcmp(tagout, v.tag, CC_TAG_LEN) == 0;
			}
			record(&c, "aes_gcm_test.json", tc, v.result, opened, matches);
			cc_gcm_key_free(k);
			free(out);
		}
		else
			c.skipped++;
		gcm_case_free(&v);
	}
	report(evp_only ? "AES-GCM data path, EVP only (256/96/128)" : "AES-GCM data path (256-bit key, 96/128)", &c);
	json_object_put(root);
}

/*
 * The batched GCM core (cc_gcm_batch_*) on every Wycheproof case of the data
 * path's sizes: the same answers as the vectors, both directions.
 */
static void
test_gcm_batch_wycheproof(const char *dir)
{
	json_object *root;
	Counts		c = {0};

	if (!cc_gcm_batch_available())
	{
		printf("%-46s skipped: no PCLMULQDQ on this CPU\n", "AES-GCM batch core (256/96/128)");
		return;
	}
	root = load(dir, "aes_gcm_test.json");
	FOREACH_CASE(root, g, tc)
	{
		GcmCase		v;

		gcm_case_load(tc, &v);
		if (v.klen == CC_AES256_KEY_LEN && v.ivlen == CC_GCM_NONCE_LEN &&
			v.taglen == CC_TAG_LEN)
		{
			cc_gcm_batch_key *k = cc_gcm_batch_key_new(v.key);
			uint8_t    *out = malloc(v.ctlen + 1);
			uint8_t		tagout[CC_TAG_LEN];
			cc_aead_item it = {v.iv, v.aad, v.aadlen, v.ct, v.ctlen, out, v.tag, CC_OK};
			bool		opened;
			bool		matches;

			cc_gcm_batch_open(k, &it, 1);
			opened = (it.status == CC_OK);
			matches = opened && v.ctlen == v.msglen && memcmp(out, v.msg, v.msglen) == 0;
			if (strcmp(v.result, "valid") == 0)
			{
				cc_aead_item s = {v.iv, v.aad, v.aadlen, v.msg, v.msglen, out, tagout, CC_OK};

				cc_gcm_batch_seal(k, &s, 1);
				matches = matches && s.status == CC_OK &&
					memcmp(out, v.ct, v.ctlen) == 0 &&
					memcmp(tagout, v.tag, CC_TAG_LEN) == 0;
			}
			record(&c, "aes_gcm_test.json", tc, v.result, opened, matches);
			cc_gcm_batch_key_free(k);
			free(out);
		}
		else
			c.skipped++;
		gcm_case_free(&v);
	}
	report("AES-GCM batch core (256/96/128)", &c);
	json_object_put(root);
}

/* xorshift64*: reproducible test data. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t
rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static void
rng_fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t) (rng() >> 32);
}

/*
 * The batch core against OpenSSL's EVP AES-256-GCM (the one-shot API, which
 * never dispatches to the batch core) on random values: random
 * lengths (mostly short, up to 1,100 bytes), associated data, nonces, buffer
 * alignments and batch sizes, in place and not.  Sealing must give the same
 * ciphertext and tag as EVP; opening must give the plaintext back; one
 * flipped bit in the ciphertext, tag or associated data must be refused by
 * both, with the output zeroed.
 */
#define RANDOM_VALUES 1000000
#define MAX_BATCH 64
#define MAX_LEN 1100

static void
test_gcm_batch_random(void)
{
	Counts		c = {0};
	size_t		done = 0;
	int			tampered = 0;
	uint8_t		key[CC_AES256_KEY_LEN];
	cc_gcm_batch_key *bk = NULL;
	/* Per item: nonce, aad, plaintext, EVP and batch outputs, with slack for alignment. */
	static uint8_t nonce[MAX_BATCH][CC_GCM_NONCE_LEN + 16];
	static uint8_t aad[MAX_BATCH][64 + 16];
	static uint8_t pt[MAX_BATCH][MAX_LEN + 16];
	static uint8_t ct_evp[MAX_BATCH][MAX_LEN + 16];
	static uint8_t ct_bat[MAX_BATCH][MAX_LEN + 16];
	static uint8_t back[MAX_BATCH][MAX_LEN + 16];
	static uint8_t tag_evp[MAX_BATCH][CC_TAG_LEN];
	static uint8_t tag_bat[MAX_BATCH][CC_TAG_LEN];
	cc_aead_item ie[MAX_BATCH];
	cc_aead_item ib[MAX_BATCH];

	if (!cc_gcm_batch_available())
	{
		printf("%-46s skipped: no PCLMULQDQ on this CPU\n", "AES-GCM batch core = EVP, random values");
		return;
	}
	for (int round = 0; done < RANDOM_VALUES; round++)
	{
		size_t		n = 1 + rng() % MAX_BATCH;

		if (round % 500 == 0)
		{
			cc_gcm_batch_key_free(bk);
			rng_fill(key, sizeof(key));
			bk = cc_gcm_batch_key_new(key);
		}
		for (size_t i = 0; i < n; i++)
		{
			size_t		r = rng() % 100;
			size_t		len = r < 60 ? rng() % 48 : r < 90 ? rng() % 260 : rng() % MAX_LEN;
			size_t		alen = rng() % 3 == 0 ? 0 : rng() % 64;
			size_t		o1 = rng() % 16,
						o2 = rng() % 16,
						o3 = rng() % 16,
						o4 = rng() % 16;
			uint8_t    *np = nonce[i] + o4;

			rng_fill(np, CC_GCM_NONCE_LEN);
			rng_fill(aad[i] + o3, alen);
			rng_fill(pt[i] + o1, len);
			ie[i] = (cc_aead_item) {np, alen ? aad[i] + o3 : NULL, alen, pt[i] + o1, len,
				ct_evp[i] + o2, tag_evp[i], CC_OK};
			ib[i] = ie[i];
			ib[i].out = ct_bat[i] + o2;
			ib[i].tag = tag_bat[i];
		}
		/* The reference: OpenSSL's EVP, one call per value (never the batch core). */
		for (size_t i = 0; i < n; i++)
			ie[i].status = cc_gcm_seal_any(key, sizeof(key), ie[i].nonce, CC_GCM_NONCE_LEN,
										   ie[i].aad, ie[i].aadlen, ie[i].in, ie[i].inlen,
										   ie[i].out, ie[i].tag, CC_TAG_LEN);
		for (size_t i = 0; i < n; i++)
			if (ie[i].status != CC_OK)
				ib[0].status = CC_ERR_INTERNAL;
		if (ib[0].status != CC_OK || cc_gcm_batch_seal(bk, ib, n) != 0)
		{
			c.failed++;
			fprintf(stderr, "FAIL random round %d: a seal failed\n", round);
			continue;
		}
		for (size_t i = 0; i < n; i++)
		{
			if (memcmp(ie[i].out, ib[i].out, ie[i].inlen) != 0 ||
				memcmp(ie[i].tag, ib[i].tag, CC_TAG_LEN) != 0)
			{
				c.failed++;
				fprintf(stderr, "FAIL random round %d item %zu (len %zu, aad %zu): batch seal differs from EVP\n",
						round, i, ie[i].inlen, ie[i].aadlen);
			}
			else
				c.valid_ok++;
		}

		/* Open the EVP output with the batch core, in place for odd rounds. */
		for (size_t i = 0; i < n; i++)
		{
			ib[i].in = ie[i].out;
			ib[i].tag = ie[i].tag;
			if (round % 2)
			{
				memcpy(ib[i].out, ie[i].out, ie[i].inlen);
				ib[i].in = ib[i].out;
			}
			else
				ib[i].out = back[i] + (rng() % 16);
		}
		cc_gcm_batch_open(bk, ib, n);
		for (size_t i = 0; i < n; i++)
		{
			if (ib[i].status != CC_OK || memcmp(ib[i].out, ie[i].in, ie[i].inlen) != 0)
			{
				c.failed++;
				fprintf(stderr, "FAIL random round %d item %zu: batch open of EVP output\n", round, i);
			}
		}

		/* One bit flipped in one item: both refuse it, the others open. */
		{
			size_t		t = rng() % n;
			size_t		where = rng() % 3;
			uint8_t		before[MAX_LEN];
			cc_aead_item e2;

			for (size_t i = 0; i < n; i++)
			{
				ib[i].in = ie[i].out;
				ib[i].tag = ie[i].tag;
				ib[i].out = back[i];
			}
			if (where == 0 && ie[t].inlen > 0)
				ie[t].out[rng() % ie[t].inlen] ^= (uint8_t) (1 << (rng() % 8));
			else if (where == 1 && ie[t].aadlen > 0)
				((uint8_t *) ie[t].aad)[rng() % ie[t].aadlen] ^= (uint8_t) (1 << (rng() % 8));
			else
				ie[t].tag[rng() % CC_TAG_LEN] ^= (uint8_t) (1 << (rng() % 8));
			memset(back[t], 0xA5, sizeof(back[t]));
			memset(before, 0, ie[t].inlen);	/* a failed open zeroes its output */
			cc_gcm_batch_open(bk, ib, n);
			e2 = ie[t];
			e2.in = ie[t].out;
			e2.out = ct_bat[t];
			e2.status = cc_gcm_open_any(key, sizeof(key), e2.nonce, CC_GCM_NONCE_LEN, e2.aad, e2.aadlen,
										e2.in, e2.inlen, e2.tag, CC_TAG_LEN, e2.out);
			for (size_t i = 0; i < n; i++)
			{
				bool		should_fail = (i == t);

				if ((ib[i].status == CC_OK) == should_fail ||
					(should_fail && (ib[i].status != CC_ERR_AUTH || e2.status != CC_ERR_AUTH ||
									 memcmp(back[t], before, ie[t].inlen) != 0)))
				{
					c.failed++;
					fprintf(stderr, "FAIL random round %d item %zu: tamper check (status %d, EVP %d)\n",
							round, i, ib[i].status, e2.status);
				}
			}
			tampered++;
		}
		done += n;
	}
	cc_gcm_batch_key_free(bk);
	printf("%-46s %zu values (%d tampered batches): %d equal to EVP, %d FAILED\n",
		   "AES-GCM batch core = EVP, random values", done, tampered, c.valid_ok, c.failed);
	if (c.failed > 0)
		total_failures++;
}

/* AES-GCM, every case of the file, through the any-size API. */
static void
test_gcm_any(const char *dir)
{
	json_object *root = load(dir, "aes_gcm_test.json");
	Counts		c = {0};

	FOREACH_CASE(root, g, tc)
	{
		GcmCase		v;
		uint8_t    *out;
		uint8_t		tagout[CC_TAG_LEN];
		cc_status	st;
		bool		matches;

		gcm_case_load(tc, &v);
		/* OpenSSL's GCM takes IVs of at most 1024 bits; ours are 96. */
		if (v.ivlen > 128)
		{
			c.skipped++;
			gcm_case_free(&v);
			continue;
		}
		out = malloc(v.ctlen + v.msglen + 1);
		st = cc_gcm_open_any(v.key, v.klen, v.iv, v.ivlen, v.aad, v.aadlen, v.ct, v.ctlen,
							 v.tag, v.taglen, out);
		matches = st == CC_OK && v.ctlen == v.msglen && memcmp(out, v.msg, v.msglen) == 0;
		if (st == CC_OK && strcmp(v.result, "valid") == 0)
		{
			matches = matches &&
				cc_gcm_seal_any(v.key, v.klen, v.iv, v.ivlen, v.aad, v.aadlen, v.msg, v.msglen,
								out, tagout, v.taglen) == CC_OK &&
				memcmp(out, v.ct, v.ctlen) == 0 && memcmp(tagout, v.tag, v.taglen) == 0;
		}
		record(&c, "aes_gcm_test.json", tc, v.result, st == CC_OK, matches);
		gcm_case_free(&v);
		free(out);
	}
	report("AES-GCM all sizes (any-size API)", &c);
	json_object_put(root);
}

/*
 * The SIV batch path against the EVP path (one value at a time) on random
 * values: random lengths (mostly short, some past the batch limit, which go
 * one by one), associated data shared or not, batch sizes and alignments.
 * Same ciphertexts and synthetic IVs; opening gives the plaintext back; one
 * flipped bit in one value is refused by both with its output zeroed, and
 * the other values of the batch open.
 */
static void
test_siv_batch_random(void)
{
	Counts		c = {0};
	size_t		done = 0;
	int			tampered = 0;
	uint8_t		key[64];
	cc_siv_key *kb = NULL;
	cc_siv_key *ke = NULL;
	static uint8_t aad[MAX_BATCH][64 + 16];
	static uint8_t pt[MAX_BATCH][MAX_LEN + 16];
	static uint8_t ct_evp[MAX_BATCH][MAX_LEN + 16];
	static uint8_t ct_bat[MAX_BATCH][MAX_LEN + 16];
	static uint8_t back[MAX_BATCH][MAX_LEN + 16];
	static uint8_t tag_evp[MAX_BATCH][CC_TAG_LEN];
	static uint8_t tag_bat[MAX_BATCH][CC_TAG_LEN];
	cc_aead_item ie[MAX_BATCH];
	cc_aead_item ib[MAX_BATCH];

	for (int round = 0; done < RANDOM_VALUES; round++)
	{
		size_t		n = 1 + rng() % MAX_BATCH;
		bool		shared_aad = rng() % 2 == 0;
		size_t		shared_alen = rng() % 40;

		if (round % 500 == 0)
		{
			size_t		klen = round % 1500 == 0 ? 32 : round % 1500 == 500 ? 48 : 64;

			cc_siv_key_free(kb);
			cc_siv_key_free(ke);
			rng_fill(key, sizeof(key));
			kb = cc_siv_key_new(key, klen);
			ke = cc_siv_key_new(key, klen);
			cc_siv_key_use_evp_only(ke);
		}
		if (shared_aad)
			rng_fill(aad[0], shared_alen);
		for (size_t i = 0; i < n; i++)
		{
			size_t		r = rng() % 100;
			size_t		len = r < 60 ? rng() % 48 : r < 90 ? rng() % 260 : rng() % MAX_LEN;
			size_t		alen = shared_aad ? shared_alen : rng() % 3 == 0 ? 0 : rng() % 64;
			size_t		o1 = rng() % 16,
						o2 = rng() % 16;
			uint8_t    *ap = shared_aad ? aad[0] : aad[i] + rng() % 16;

			if (!shared_aad)
				rng_fill(ap, alen);
			rng_fill(pt[i] + o1, len);
			ie[i] = (cc_aead_item) {NULL, alen ? ap : NULL, alen, pt[i] + o1, len,
				ct_evp[i] + o2, tag_evp[i], CC_OK};
			ib[i] = ie[i];
			ib[i].out = ct_bat[i] + o2;
			ib[i].tag = tag_bat[i];
		}
		if (cc_siv_seal_batch(ke, ie, n) != 0 || cc_siv_seal_batch(kb, ib, n) != 0)
		{
			c.failed++;
			if (c.failed <= 20)
				fprintf(stderr, "FAIL SIV random round %d: a seal failed\n", round);
			continue;
		}
		for (size_t i = 0; i < n; i++)
		{
			if (memcmp(ie[i].out, ib[i].out, ie[i].inlen) != 0 ||
				memcmp(ie[i].tag, ib[i].tag, CC_TAG_LEN) != 0)
			{
				c.failed++;
				if (c.failed <= 20)
				fprintf(stderr, "FAIL SIV random round %d item %zu (len %zu, aad %zu): batch seal differs from EVP\n",
						round, i, ie[i].inlen, ie[i].aadlen);
			}
			else
				c.valid_ok++;
		}

		/* Open the EVP output with the batch path, in place for odd rounds. */
		for (size_t i = 0; i < n; i++)
		{
			ib[i].in = ie[i].out;
			ib[i].tag = ie[i].tag;
			if (round % 2)
			{
				memcpy(ib[i].out, ie[i].out, ie[i].inlen);
				ib[i].in = ib[i].out;
			}
			else
				ib[i].out = back[i] + (rng() % 16);
		}
		cc_siv_open_batch(kb, ib, n);
		for (size_t i = 0; i < n; i++)
			if (ib[i].status != CC_OK || memcmp(ib[i].out, ie[i].in, ie[i].inlen) != 0)
			{
				c.failed++;
				if (c.failed <= 20)
				fprintf(stderr, "FAIL SIV random round %d item %zu: batch open of EVP output\n", round, i);
			}

		/* One bit flipped in one item (unless its aad is shared). */
		{
			size_t		t = rng() % n;
			size_t		where = rng() % 3;
			uint8_t		zero[MAX_LEN] = {0};
			cc_aead_item e2;

			if (where == 1 && (shared_aad || ie[t].aadlen == 0))
				where = 2;
			for (size_t i = 0; i < n; i++)
			{
				ib[i].in = ie[i].out;
				ib[i].tag = ie[i].tag;
				ib[i].out = back[i];
			}
			if (where == 0 && ie[t].inlen > 0)
				ie[t].out[rng() % ie[t].inlen] ^= (uint8_t) (1 << (rng() % 8));
			else if (where == 1)
				((uint8_t *) ie[t].aad)[rng() % ie[t].aadlen] ^= (uint8_t) (1 << (rng() % 8));
			else
				ie[t].tag[rng() % CC_TAG_LEN] ^= (uint8_t) (1 << (rng() % 8));
			memset(back[t], 0xA5, sizeof(back[t]));
			cc_siv_open_batch(kb, ib, n);
			e2 = ie[t];
			e2.in = ie[t].out;
			e2.out = ct_bat[t];
			cc_siv_open_batch(ke, &e2, 1);
			for (size_t i = 0; i < n; i++)
			{
				bool		should_fail = (i == t);

				if ((ib[i].status == CC_OK) == should_fail ||
					(should_fail && (ib[i].status != CC_ERR_AUTH || e2.status != CC_ERR_AUTH ||
									 memcmp(back[t], zero, ie[t].inlen) != 0)))
				{
					c.failed++;
					if (c.failed <= 20)
				fprintf(stderr, "FAIL SIV random round %d item %zu: tamper check (status %d, EVP %d)\n",
							round, i, ib[i].status, e2.status);
				}
			}
			tampered++;
		}
		done += n;
	}
	cc_siv_key_free(kb);
	cc_siv_key_free(ke);
	printf("%-46s %zu values (%d tampered batches): %d equal to EVP, %d FAILED\n",
		   "AES-SIV batch path = EVP, random values", done, tampered, c.valid_ok, c.failed);
	if (c.failed > 0)
		total_failures++;
}

/* AES-SIV: "ct" is the synthetic IV followed by the ciphertext. */
static void
test_siv(const char *dir, int only_keybits, bool evp_only, const char *label)
{
	json_object *root = load(dir, "aes_siv_cmac_test.json");
	Counts		c = {0};

	FOREACH_CASE(root, g, tc)
	{
		size_t		klen, aadlen, msglen, ctlen;
		uint8_t    *key;
		uint8_t    *aad;
		uint8_t    *msg;
		uint8_t    *ct;
		const char *result = str(tc, "result");

		if (only_keybits != 0 && num(g, "keySize") != only_keybits)
		{
			c.skipped++;
			continue;
		}
		key = hex(tc, "key", &klen);
		aad = hex(tc, "aad", &aadlen);
		msg = hex(tc, "msg", &msglen);
		ct = hex(tc, "ct", &ctlen);
		{
			cc_siv_key *k = cc_siv_key_new(key, klen);
			bool		opened = false;
			bool		matches = false;

			if (k != NULL && evp_only)
				cc_siv_key_use_evp_only(k);

			if (k != NULL && ctlen >= CC_TAG_LEN)
			{
				size_t		n = ctlen - CC_TAG_LEN;
				uint8_t    *out = malloc(n + 1);
				cc_aead_item it = {NULL, aad, aadlen, ct + CC_TAG_LEN, n, out,
				ct, CC_OK};

				cc_siv_open_batch(k, &it, 1);
				opened = it.status == CC_OK;
				matches = opened && n == msglen && memcmp(out, msg, n) == 0;
				if (opened && strcmp(result, "valid") == 0)
				{
					uint8_t		tagout[CC_TAG_LEN];
					cc_aead_item s = {NULL, aad, aadlen, msg, msglen, out, tagout,
					CC_OK};

					cc_siv_seal_batch(k, &s, 1);
					matches = matches && s.status == CC_OK &&
						memcmp(tagout, ct, CC_TAG_LEN) == 0 &&
						memcmp(out, ct + CC_TAG_LEN, n) == 0;
				}
				free(out);
			}
			record(&c, "aes_siv_cmac_test.json", tc, result, opened, matches);
			cc_siv_key_free(k);
		}
		free(key);
		free(aad);
		free(msg);
		free(ct);
	}
	report(label, &c);
	json_object_put(root);
}

static void
test_kwp(const char *dir)
{
	json_object *root = load(dir, "aes_kwp_test.json");
	Counts		c = {0};

	FOREACH_CASE(root, g, tc)
	{
		size_t		klen, msglen, ctlen, outlen;
		uint8_t    *key = hex(tc, "key", &klen);
		uint8_t    *msg = hex(tc, "msg", &msglen);
		uint8_t    *ct = hex(tc, "ct", &ctlen);
		const char *result = str(tc, "result");
		uint8_t    *out = malloc(ctlen + cc_kwp_wrapped_len(msglen) + 16);
		cc_status	st;
		bool		matches;

		st = cc_kwp_unwrap(key, klen, ct, ctlen, out, &outlen);
		matches = st == CC_OK && outlen == msglen && memcmp(out, msg, msglen) == 0;
		if (st == CC_OK && strcmp(result, "valid") == 0)
		{
			matches = matches &&
				cc_kwp_wrap(key, klen, msg, msglen, out, &outlen) == CC_OK &&
				outlen == ctlen && memcmp(out, ct, ctlen) == 0;
		}
		record(&c, "aes_kwp_test.json", tc, result, st == CC_OK, matches);
		free(key);
		free(msg);
		free(ct);
		free(out);
	}
	report("AES-KWP (RFC 5649), all key sizes", &c);
	json_object_put(root);
}

static void
test_hkdf(const char *dir)
{
	json_object *root = load(dir, "hkdf_sha256_test.json");
	Counts		c = {0};

	FOREACH_CASE(root, g, tc)
	{
		size_t		ikmlen, saltlen, infolen, okmlen;
		uint8_t    *ikm = hex(tc, "ikm", &ikmlen);
		uint8_t    *salt = hex(tc, "salt", &saltlen);
		uint8_t    *info = hex(tc, "info", &infolen);
		uint8_t    *okm = hex(tc, "okm", &okmlen);
		size_t		size = (size_t) num(tc, "size");
		uint8_t    *out = malloc(size + 1);
		cc_status	st;

		st = cc_hkdf_sha256(ikm, ikmlen, salt, saltlen, info, infolen, out, size);
		record(&c, "hkdf_sha256_test.json", tc, str(tc, "result"), st == CC_OK,
			   st == CC_OK && size == okmlen && memcmp(out, okm, size) == 0);
		free(ikm);
		free(salt);
		free(info);
		free(okm);
		free(out);
	}
	report("HKDF-SHA256", &c);
	json_object_put(root);
}

/*
 * Beyond the vectors: the data path must refuse a flipped bit anywhere and
 * must not leave plaintext behind when it refuses.
 */
static void
test_gcm_tamper(void)
{
	Counts		c = {0};
	uint8_t		key[32], nonce[12], aad[12], pt[64], ct[64], tag[16], out[64];
	cc_gcm_key *k;

	cc_random(key, sizeof(key));
	cc_random(nonce, sizeof(nonce));
	cc_random(aad, sizeof(aad));
	cc_random(pt, sizeof(pt));
	k = cc_gcm_key_new(key);
	{
		cc_aead_item s = {nonce, aad, sizeof(aad), pt, sizeof(pt), ct, tag, CC_OK};

		cc_gcm_seal_batch(k, &s, 1);
	}
	for (size_t bit = 0; bit < 8 * (sizeof(nonce) + sizeof(aad) + sizeof(ct) + sizeof(tag)); bit++)
	{
		uint8_t    *bufs[] = {nonce, aad, ct, tag};
		size_t		lens[] = {sizeof(nonce), sizeof(aad), sizeof(ct), sizeof(tag)};
		size_t		byte = bit / 8;
		int			b = 0;
		cc_aead_item it = {nonce, aad, sizeof(aad), ct, sizeof(ct), out, tag, CC_OK};
		bool		leftover = false;

		while (byte >= lens[b])
			byte -= lens[b++];
		bufs[b][byte] ^= (uint8_t) (1 << (bit % 8));
		memset(out, 0xAA, sizeof(out));
		cc_gcm_open_batch(k, &it, 1);
		for (size_t i = 0; i < sizeof(out); i++)
			leftover |= (out[i] == pt[i] && pt[i] != 0 && out[i] != 0);
		if (it.status == CC_ERR_AUTH && !leftover)
			c.invalid_ok++;
		else
		{
			c.failed++;
			fprintf(stderr, "FAIL tamper bit %zu: status %s leftover %d\n", bit,
					cc_status_string(it.status), leftover);
		}
		bufs[b][byte] ^= (uint8_t) (1 << (bit % 8));
	}
	{
		cc_aead_item it = {nonce, aad, sizeof(aad), ct, sizeof(ct), out, tag, CC_OK};

		cc_gcm_open_batch(k, &it, 1);
		if (it.status == CC_OK && memcmp(out, pt, sizeof(pt)) == 0)
			c.valid_ok++;
		else
			c.failed++;
	}
	cc_gcm_key_free(k);
	report("AES-GCM data path, every single-bit flip", &c);
}

/*
 * SipHash-2-4 against the reference vectors of the SipHash paper (key
 * 00..0f, messages 00, 00 01, ..., 64 outputs); the same key handle is
 * reused for every message, as the server does.
 */
static void
test_siphash(void)
{
	/* First, middle and last of the reference vectors (vectors.h). */
	static const struct
	{
		size_t		len;
		uint64_t	expect;
	}			vec[] = {
		{0, UINT64_C(0x726fdb47dd0e0e31)},
		{1, UINT64_C(0x74f839c593dc67fd)},
		{15, UINT64_C(0xa129ca6149be45e5)},
		{63, UINT64_C(0x958a324ceb064572)},
	};
	Counts		c = {0};
	uint8_t		key[16];
	uint8_t		msg[64];
	cc_siphash_key *k;

	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t) i;
	for (int i = 0; i < 64; i++)
		msg[i] = (uint8_t) i;
	k = cc_siphash_key_new(key);
	for (int round = 0; round < 2; round++)
		for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++)
		{
			uint64_t	h = 0;

			if (k != NULL && cc_siphash(k, msg, vec[i].len, &h) == CC_OK && h == vec[i].expect)
				c.valid_ok++;
			else
			{
				c.failed++;
				fprintf(stderr, "FAIL siphash len %zu: %016llx\n", vec[i].len,
						(unsigned long long) h);
			}
		}
	cc_siphash_key_free(k);
	report("SipHash-2-4 reference vectors (key reused)", &c);
}

int
main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : getenv("COLCRYPT_WYCHEPROOF");

	if (dir == NULL)
	{
		fprintf(stderr, "usage: %s <wycheproof directory>\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	test_gcm_datapath(dir, false);
	test_gcm_datapath(dir, true);
	test_gcm_batch_wycheproof(dir);
	test_gcm_batch_random();
	test_gcm_any(dir);
	test_siv(dir, 512, false, "AES-SIV, 512-bit keys (the column key size)");
	test_siv(dir, 0, false, "AES-SIV batch path, all key sizes");
	test_siv(dir, 0, true, "AES-SIV EVP path, all key sizes");
	test_siv_batch_random();
	test_kwp(dir);
	test_hkdf(dir);
	test_gcm_tamper();
	test_siphash();
	if (total_failures > 0)
	{
		printf("test_crypto: %d group(s) FAILED\n", total_failures);
		return 1;
	}
	printf("test_crypto: all groups passed\n");
	return 0;
}
