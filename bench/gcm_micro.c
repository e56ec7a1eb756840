/*
 * gcm_micro: nanoseconds per value of AES-256-GCM over short values, the
 * EVP path (one EVP call sequence per value, key schedule kept) against the
 * batch core (one AES call per batch, PCLMULQDQ GHASH).  Plain C over the
 * crypto layer; run by `make bench-gcm`.
 *
 *   bench/gcm_micro [values, default 2000000] [batch size, default 1024]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "colcrypt/crypto.h"

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

typedef size_t (*batch_fn) (void *k, cc_aead_item *items, size_t n);

static double
run(batch_fn fn, void *k, cc_aead_item *items, size_t batch, size_t values)
{
	double		best = 1e30;

	/* Best of five passes over all values. */
	for (int pass = 0; pass < 5; pass++)
	{
		double		t0 = now_ns();

		for (size_t done = 0; done < values; done += batch)
			if (fn(k, items, batch) != 0)
			{
				fprintf(stderr, "a batch failed\n");
				exit(1);
			}
		if ((now_ns() - t0) / values < best)
			best = (now_ns() - t0) / values;
	}
	return best;
}

int
main(int argc, char **argv)
{
	size_t		values = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;
	size_t		batch = argc > 2 ? strtoul(argv[2], NULL, 10) : 1024;
	static const size_t lens[] = {8, 32, 128, 1024};
	uint8_t		key[CC_AES256_KEY_LEN];
	cc_gcm_key *ek;
	cc_gcm_batch_key *bk;

	cc_random(key, sizeof(key));
	ek = cc_gcm_key_new(key);
	cc_gcm_key_use_evp_only(ek);	/* the EVP column is the EVP path */
	bk = cc_gcm_batch_key_new(key);
	if (bk == NULL)
	{
		printf("the batch core is not available on this CPU (no PCLMULQDQ)\n");
		return 0;
	}
	printf("AES-256-GCM, ns per value (best of 5 passes over %zu values, batches of %zu, 12-byte AAD)\n",
		   values, batch);
	printf("%8s %12s %12s %12s %12s %8s\n", "bytes", "EVP seal", "batch seal", "EVP open", "batch open", "speedup");
	for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++)
	{
		size_t		len = lens[l];
		cc_aead_item *items = calloc(batch, sizeof(cc_aead_item));
		cc_aead_item *opens = calloc(batch, sizeof(cc_aead_item));
		size_t		stride = 40 + 2 * len;
		uint8_t    *buf = malloc(batch * stride);
		double		es,
					bs,
					eo,
					bo;

		/* Per value: nonce (12), AAD (12), tag (16), plaintext, ciphertext. */
		for (size_t i = 0; i < batch; i++)
		{
			uint8_t    *p = buf + i * stride;

			cc_random(p, stride);
			items[i] = (cc_aead_item) {p, p + 12, 12, p + 40, len, p + 40 + len, p + 24, CC_OK};
			opens[i] = (cc_aead_item) {p, p + 12, 12, p + 40 + len, len, p + 40, p + 24, CC_OK};
		}
		es = run((batch_fn) cc_gcm_seal_batch, ek, items, batch, values);
		bs = run((batch_fn) cc_gcm_batch_seal, bk, items, batch, values);
		eo = run((batch_fn) cc_gcm_open_batch, ek, opens, batch, values);
		bo = run((batch_fn) cc_gcm_batch_open, bk, opens, batch, values);
		printf("%8zu %12.1f %12.1f %12.1f %12.1f %7.1fx\n", len, es, bs, eo, bo, (es + eo) / (bs + bo));
		free(items);
		free(opens);
		free(buf);
	}
	cc_gcm_key_free(ek);
	cc_gcm_batch_key_free(bk);
	return 0;
}
