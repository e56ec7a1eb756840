/*-------------------------------------------------------------------------
 *
 * aead.c
 *	  AES-256-GCM and AES-SIV for column values, through OpenSSL EVP.
 *
 * This is the only file that drives EVP ciphers for column data.  A key
 * handle holds contexts whose key schedule was computed once; each value
 * then only sets its nonce (GCM) or its counter block (SIV).  GCM batches
 * of short values go through the batch core (gcm_batch.c) where the CPU
 * has PCLMULQDQ: same output, without EVP's per-value set-up.
 *
 * Nothing here allocates through PostgreSQL or throws: every function
 * returns a cc_status, and a failed open wipes whatever it wrote to out.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/crypto.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

struct cc_gcm_key
{
	EVP_CIPHER_CTX *enc;		/* keyed for encryption; nonce set per value */
	EVP_CIPHER_CTX *dec;		/* keyed for decryption; nonce set per value */
	cc_gcm_batch_key *batch;	/* the batch core, where the CPU has it */
};

/*
 * Values up to this size go through the batch core (gcm_batch.c), longer
 * ones through EVP, whose stitched AES-GCM is faster per byte.
 */
#define GCM_BATCH_MAX_LEN 256

const char *
cc_status_string(cc_status st)
{
	switch (st)
	{
		case CC_OK:
			return "success";
		case CC_ERR_AUTH:
			return "authentication failed";
		case CC_ERR_PARAM:
			return "invalid parameter";
		case CC_ERR_RANDOM:
			return "random number generator failure";
		case CC_ERR_NOMEM:
			return "out of memory in libcrypto";
		case CC_ERR_INTERNAL:
			return "libcrypto failure";
	}
	return "unknown status";
}

/* Map a failed libcrypto call to a status, clearing OpenSSL's error queue. */
static cc_status
evp_failure(void)
{
	unsigned long e = ERR_peek_last_error();
	cc_status	st = CC_ERR_INTERNAL;

	if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
		st = CC_ERR_NOMEM;
	ERR_clear_error();
	return st;
}

/* ----------------------------------------------------------------------
 * AES-256-GCM, fixed 96-bit nonce and 128-bit tag
 * ----------------------------------------------------------------------
 */

cc_gcm_key *
cc_gcm_key_new(const uint8_t key[CC_AES256_KEY_LEN])
{
	cc_gcm_key *k = calloc(1, sizeof(cc_gcm_key));

	if (k == NULL)
		return NULL;
	k->enc = EVP_CIPHER_CTX_new();
	k->dec = EVP_CIPHER_CTX_new();
	if (k->enc == NULL || k->dec == NULL ||
		EVP_EncryptInit_ex(k->enc, EVP_aes_256_gcm(), NULL, key, NULL) != 1 ||
		EVP_DecryptInit_ex(k->dec, EVP_aes_256_gcm(), NULL, key, NULL) != 1)
	{
		ERR_clear_error();
		cc_gcm_key_free(k);
		return NULL;
	}
	k->batch = cc_gcm_batch_key_new(key);	/* NULL without PCLMULQDQ */
	return k;
}

void
cc_gcm_key_free(cc_gcm_key *k)
{
	if (k == NULL)
		return;
	/* EVP_CIPHER_CTX_free cleanses the key schedule before freeing it. */
	EVP_CIPHER_CTX_free(k->enc);
	EVP_CIPHER_CTX_free(k->dec);
	cc_gcm_batch_key_free(k->batch);
	free(k);
}

void
cc_gcm_key_use_evp_only(cc_gcm_key *k)
{
	cc_gcm_batch_key_free(k->batch);
	k->batch = NULL;
}

/* Whether every item of a batch is short enough for the batch core. */
static bool
batch_core_fits(const cc_gcm_key *k, const cc_aead_item *items, size_t n)
{
	if (k->batch == NULL)
		return false;
	for (size_t i = 0; i < n; i++)
		if (items[i].inlen > GCM_BATCH_MAX_LEN)
			return false;
	return true;
}

static cc_status
gcm_seal_one(EVP_CIPHER_CTX *ctx, cc_aead_item *it)
{
	int			len;

	if (it->inlen > INT_MAX || it->aadlen > INT_MAX || it->nonce == NULL ||
		it->tag == NULL || (it->inlen > 0 && (it->in == NULL || it->out == NULL)))
		return CC_ERR_PARAM;
	if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, it->nonce) != 1)
		return evp_failure();
	if (it->aadlen > 0 &&
		EVP_EncryptUpdate(ctx, NULL, &len, it->aad, (int) it->aadlen) != 1)
		return evp_failure();
	if (it->inlen > 0 &&
		EVP_EncryptUpdate(ctx, it->out, &len, it->in, (int) it->inlen) != 1)
		return evp_failure();
	if (EVP_EncryptFinal_ex(ctx, it->out + it->inlen, &len) != 1 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CC_TAG_LEN, it->tag) != 1)
		return evp_failure();
	return CC_OK;
}

static cc_status
gcm_open_one(EVP_CIPHER_CTX *ctx, cc_aead_item *it)
{
	int			len;

	if (it->inlen > INT_MAX || it->aadlen > INT_MAX || it->nonce == NULL ||
		it->tag == NULL || (it->inlen > 0 && (it->in == NULL || it->out == NULL)))
		return CC_ERR_PARAM;
	if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, it->nonce) != 1 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CC_TAG_LEN,
							(void *) it->tag) != 1)
		return evp_failure();
	if (it->aadlen > 0 &&
		EVP_DecryptUpdate(ctx, NULL, &len, it->aad, (int) it->aadlen) != 1)
		return evp_failure();
	if (it->inlen > 0 &&
		EVP_DecryptUpdate(ctx, it->out, &len, it->in, (int) it->inlen) != 1)
	{
		cc_wipe(it->out, it->inlen);
		return evp_failure();
	}
	if (EVP_DecryptFinal_ex(ctx, it->out + it->inlen, &len) != 1)
	{
		/* Never hand back unauthenticated plaintext. */
		if (it->inlen > 0)
			cc_wipe(it->out, it->inlen);
		ERR_clear_error();
		return CC_ERR_AUTH;
	}
	return CC_OK;
}

size_t
cc_gcm_seal_batch(cc_gcm_key *k, cc_aead_item *items, size_t n)
{
	size_t		failed = 0;

	if (batch_core_fits(k, items, n))
		return cc_gcm_batch_seal(k->batch, items, n);

	for (size_t i = 0; i < n; i++)
	{
		items[i].status = gcm_seal_one(k->enc, &items[i]);
		if (items[i].status != CC_OK)
			failed++;
	}
	return failed;
}

size_t
cc_gcm_open_batch(cc_gcm_key *k, cc_aead_item *items, size_t n)
{
	size_t		failed = 0;

	if (batch_core_fits(k, items, n))
		return cc_gcm_batch_open(k->batch, items, n);

	for (size_t i = 0; i < n; i++)
	{
		items[i].status = gcm_open_one(k->dec, &items[i]);
		if (items[i].status != CC_OK)
			failed++;
	}
	return failed;
}

static const EVP_CIPHER *
gcm_cipher_for(size_t keylen)
{
	switch (keylen)
	{
		case 16:
			return EVP_aes_128_gcm();
		case 24:
			return EVP_aes_192_gcm();
		case 32:
			return EVP_aes_256_gcm();
	}
	return NULL;
}

/* Shared body of cc_gcm_seal_any and cc_gcm_open_any. */
static cc_status
gcm_any(int enc, const uint8_t *key, size_t keylen,
		const uint8_t *iv, size_t ivlen,
		const uint8_t *aad, size_t aadlen,
		const uint8_t *in, size_t inlen,
		uint8_t *out, uint8_t *tag, size_t taglen)
{
	const EVP_CIPHER *cipher = gcm_cipher_for(keylen);
	EVP_CIPHER_CTX *ctx;
	cc_status	st = CC_OK;
	int			len;

	if (cipher == NULL || ivlen == 0 || ivlen > INT_MAX || aadlen > INT_MAX ||
		inlen > INT_MAX || taglen == 0 || taglen > CC_TAG_LEN)
		return CC_ERR_PARAM;
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
		return CC_ERR_NOMEM;

	if (EVP_CipherInit_ex(ctx, cipher, NULL, NULL, NULL, enc) != 1 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int) ivlen, NULL) != 1 ||
		EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, enc) != 1 ||
		(!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, (int) taglen,
									 tag) != 1) ||
		(aadlen > 0 && EVP_CipherUpdate(ctx, NULL, &len, aad, (int) aadlen) != 1) ||
		(inlen > 0 && EVP_CipherUpdate(ctx, out, &len, in, (int) inlen) != 1))
		st = evp_failure();
	else if (EVP_CipherFinal_ex(ctx, out + inlen, &len) != 1)
	{
		ERR_clear_error();
		st = enc ? CC_ERR_INTERNAL : CC_ERR_AUTH;
	}
	else if (enc &&
			 EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, (int) taglen, tag) != 1)
		st = evp_failure();

	if (st != CC_OK && inlen > 0)
		cc_wipe(out, inlen);
	EVP_CIPHER_CTX_free(ctx);
	return st;
}

cc_status
cc_gcm_open_any(const uint8_t *key, size_t keylen,
				const uint8_t *iv, size_t ivlen,
				const uint8_t *aad, size_t aadlen,
				const uint8_t *ct, size_t ctlen,
				const uint8_t *tag, size_t taglen,
				uint8_t *pt)
{
	return gcm_any(0, key, keylen, iv, ivlen, aad, aadlen, ct, ctlen, pt,
				   (uint8_t *) tag, taglen);
}

cc_status
cc_gcm_seal_any(const uint8_t *key, size_t keylen,
				const uint8_t *iv, size_t ivlen,
				const uint8_t *aad, size_t aadlen,
				const uint8_t *pt, size_t ptlen,
				uint8_t *ct, uint8_t *tag, size_t taglen)
{
	return gcm_any(1, key, keylen, iv, ivlen, aad, aadlen, pt, ptlen, ct,
				   tag, taglen);
}

/* ----------------------------------------------------------------------
 * AES-SIV (RFC 5297) with one associated-data component
 *
 * Built from OpenSSL's AES-CMAC (EVP_MAC) and AES-CTR (EVP) rather than its
 * "AES-SIV" cipher: that one cannot process an empty message (its final
 * step reports the result of an operation that never ran, so empty values
 * fail) and allows a single operation per key initialisation.  Here the CMAC
 * context is re-initialised without a new key schedule for each S2V step
 * and the CTR context only gets a new counter block per value.
 * ----------------------------------------------------------------------
 */

#define SIV_BLOCK 16

/* Values longer than this, or with more associated data, go one by one. */
#define SIV_BATCH_MAX_LEN	256
#define SIV_BATCH_MAX_AAD	64
#define SIV_BATCH_ITEMS		256
#define SIV_AAD_CACHE		4

struct cc_siv_key
{
	EVP_MAC_CTX *cmac;			/* AES-CMAC keyed with K1 (first half) */
	EVP_CIPHER_CTX *ctr;		/* AES-CTR keyed with K2 (second half) */
	uint8_t		d0[SIV_BLOCK];	/* CMAC(K1, 0^128), the S2V start value */

	/* The batch path (see siv_run_batch). */
	EVP_CIPHER_CTX *ecb1;		/* AES-ECB keyed with K1: CMAC's block cipher */
	EVP_CIPHER_CTX *ecb2;		/* AES-ECB keyed with K2: CTR's keystream */
	uint8_t		sub1[SIV_BLOCK];	/* CMAC subkeys K1', K2' (RFC 4493) */
	uint8_t		sub2[SIV_BLOCK];
	bool		evp_only;		/* tests: never use the batch path */
	/*
	 * The S2V state after the associated data, for the last few distinct
	 * associated data (colcrypt's: one envelope header per type and key
	 * version, so a row of several columns needs several).
	 */
	struct
	{
		bool		valid;
		size_t		aadlen;
		uint8_t		aad[SIV_BATCH_MAX_AAD];
		uint8_t		d1[SIV_BLOCK];	/* dbl(d0) xor CMAC(K1, aad) */
	}			aadcache[SIV_AAD_CACHE];
	int			aadnext;		/* entry to replace next */
};

/* Doubling in GF(2^128) as RFC 5297 defines it (big-endian, x^128+x^7+x^2+x+1). */
static void
siv_dbl(uint8_t b[SIV_BLOCK])
{
	uint8_t		carry = b[0] >> 7;

	for (int i = 0; i < SIV_BLOCK - 1; i++)
		b[i] = (uint8_t) ((b[i] << 1) | (b[i + 1] >> 7));
	b[SIV_BLOCK - 1] = (uint8_t) ((b[SIV_BLOCK - 1] << 1) ^ (carry * 0x87));
}

/* CMAC over up to two pieces, restarting the keyed context. */
static int
siv_cmac(EVP_MAC_CTX *cmac, const uint8_t *a, size_t alen,
		 const uint8_t *b, size_t blen, uint8_t out[SIV_BLOCK])
{
	size_t		outl;

	return EVP_MAC_init(cmac, NULL, 0, NULL) == 1 &&
		(alen == 0 || EVP_MAC_update(cmac, a, alen) == 1) &&
		(blen == 0 || EVP_MAC_update(cmac, b, blen) == 1) &&
		EVP_MAC_final(cmac, out, &outl, SIV_BLOCK) == 1 && outl == SIV_BLOCK;
}

/* S2V(K1, aad, msg) into v. */
static int
siv_s2v(cc_siv_key *k, const uint8_t *aad, size_t aadlen,
		const uint8_t *msg, size_t msglen, uint8_t v[SIV_BLOCK])
{
	uint8_t		d[SIV_BLOCK];
	uint8_t		t[SIV_BLOCK];
	int			ok;

	memcpy(d, k->d0, SIV_BLOCK);
	siv_dbl(d);
	ok = siv_cmac(k->cmac, aad, aadlen, NULL, 0, t);
	for (int i = 0; i < SIV_BLOCK; i++)
		d[i] ^= t[i];

	if (ok && msglen >= SIV_BLOCK)
	{
		/* T = msg xorend D: MAC the head as is and the xored last block. */
		const uint8_t *tail = msg + msglen - SIV_BLOCK;

		for (int i = 0; i < SIV_BLOCK; i++)
			t[i] = tail[i] ^ d[i];
		ok = siv_cmac(k->cmac, msg, msglen - SIV_BLOCK, t, SIV_BLOCK, v);
	}
	else if (ok)
	{
		/* T = dbl(D) xor pad(msg), pad = msg || 0x80 || 0... */
		siv_dbl(d);
		memset(t, 0, SIV_BLOCK);
		if (msglen > 0)
			memcpy(t, msg, msglen);
		t[msglen] = 0x80;
		for (int i = 0; i < SIV_BLOCK; i++)
			t[i] ^= d[i];
		ok = siv_cmac(k->cmac, t, SIV_BLOCK, NULL, 0, v);
	}
	cc_wipe(d, sizeof(d));
	cc_wipe(t, sizeof(t));
	return ok;
}

/* AES-CTR over len bytes with the counter block derived from v. */
static int
siv_ctr(cc_siv_key *k, const uint8_t v[SIV_BLOCK], const uint8_t *in,
		size_t len, uint8_t *out)
{
	uint8_t		q[SIV_BLOCK];
	int			outl;

	if (len == 0)
		return 1;
	/* Q = V with the 31st and 63rd bits (counting from the right) cleared. */
	memcpy(q, v, SIV_BLOCK);
	q[8] &= 0x7f;
	q[12] &= 0x7f;
	return EVP_EncryptInit_ex(k->ctr, NULL, NULL, NULL, q) == 1 &&
		EVP_EncryptUpdate(k->ctr, out, &outl, in, (int) len) == 1;
}

/* The ciphers of AES-SIV with K1, K2 of halflen bytes each; false if none. */
static bool
siv_ciphers(size_t halflen, const char **cmac, const EVP_CIPHER **ctr,
			const EVP_CIPHER **ecb)
{
	switch (halflen)
	{
		case 16:
			*cmac = "AES-128-CBC", *ctr = EVP_aes_128_ctr(), *ecb = EVP_aes_128_ecb();
			return true;
		case 24:
			*cmac = "AES-192-CBC", *ctr = EVP_aes_192_ctr(), *ecb = EVP_aes_192_ecb();
			return true;
		case 32:
			*cmac = "AES-256-CBC", *ctr = EVP_aes_256_ctr(), *ecb = EVP_aes_256_ecb();
			return true;
	}
	return false;
}

/* The batch path's contexts and CMAC subkeys; false on any failure. */
static bool
siv_batch_init(cc_siv_key *k, const uint8_t *key, size_t half,
			   const EVP_CIPHER *ecb)
{
	static const uint8_t zero[SIV_BLOCK] = {0};
	uint8_t		l[SIV_BLOCK];
	int			outl = 0;

	k->ecb1 = EVP_CIPHER_CTX_new();
	k->ecb2 = EVP_CIPHER_CTX_new();
	if (k->ecb1 == NULL || k->ecb2 == NULL ||
		EVP_EncryptInit_ex(k->ecb1, ecb, NULL, key, NULL) != 1 ||
		EVP_CIPHER_CTX_set_padding(k->ecb1, 0) != 1 ||
		EVP_EncryptInit_ex(k->ecb2, ecb, NULL, key + half, NULL) != 1 ||
		EVP_CIPHER_CTX_set_padding(k->ecb2, 0) != 1 ||
		EVP_EncryptUpdate(k->ecb1, l, &outl, zero, SIV_BLOCK) != 1 || outl != SIV_BLOCK)
	{
		EVP_CIPHER_CTX_free(k->ecb1);
		EVP_CIPHER_CTX_free(k->ecb2);
		k->ecb1 = k->ecb2 = NULL;
		ERR_clear_error();
		return false;
	}
	/* K1' = dbl(L), K2' = dbl(K1'), L = AES(K1, 0^128). */
	memcpy(k->sub1, l, SIV_BLOCK);
	siv_dbl(k->sub1);
	memcpy(k->sub2, k->sub1, SIV_BLOCK);
	siv_dbl(k->sub2);
	cc_wipe(l, sizeof(l));
	return true;
}

void
cc_siv_key_use_evp_only(cc_siv_key *k)
{
	k->evp_only = true;
}

cc_siv_key *
cc_siv_key_new(const uint8_t *key, size_t keylen)
{
	size_t		half = keylen / 2;
	const char *cmac_cipher;
	const EVP_CIPHER *ctr_cipher;
	const EVP_CIPHER *ecb_cipher;
	static const uint8_t zero[SIV_BLOCK] = {0};
	EVP_MAC    *mac;
	OSSL_PARAM	params[2];
	cc_siv_key *k;

	if (keylen % 2 != 0 || !siv_ciphers(half, &cmac_cipher, &ctr_cipher, &ecb_cipher))
		return NULL;
	if ((mac = EVP_MAC_fetch(NULL, "CMAC", NULL)) == NULL)
	{
		ERR_clear_error();
		return NULL;
	}
	k = calloc(1, sizeof(cc_siv_key));
	if (k != NULL)
	{
		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER,
													 (char *) cmac_cipher, 0);
		params[1] = OSSL_PARAM_construct_end();
		k->cmac = EVP_MAC_CTX_new(mac);
		k->ctr = EVP_CIPHER_CTX_new();
		if (k->cmac == NULL || k->ctr == NULL ||
			EVP_MAC_init(k->cmac, key, half, params) != 1 ||
			EVP_EncryptInit_ex(k->ctr, ctr_cipher, NULL, key + half, NULL) != 1 ||
			!siv_cmac(k->cmac, zero, SIV_BLOCK, NULL, 0, k->d0))
		{
			ERR_clear_error();
			cc_siv_key_free(k);
			k = NULL;
		}
		else
			(void) siv_batch_init(k, key, half, ecb_cipher);	/* else: one by one */
	}
	EVP_MAC_free(mac);
	return k;
}

void
cc_siv_key_free(cc_siv_key *k)
{
	if (k == NULL)
		return;
	EVP_MAC_CTX_free(k->cmac);
	EVP_CIPHER_CTX_free(k->ctr);
	EVP_CIPHER_CTX_free(k->ecb1);	/* these cleanse their key schedules */
	EVP_CIPHER_CTX_free(k->ecb2);
	cc_wipe(k, sizeof(*k));
	free(k);
}

static cc_status
siv_seal_one(cc_siv_key *k, cc_aead_item *it)
{
	if (it->inlen > INT_MAX || it->tag == NULL ||
		(it->inlen > 0 && (it->in == NULL || it->out == NULL)) ||
		(it->aadlen > 0 && it->aad == NULL))
		return CC_ERR_PARAM;
	/* S2V reads the plaintext before CTR may overwrite it in place. */
	if (!siv_s2v(k, it->aad, it->aadlen, it->in, it->inlen, it->tag) ||
		!siv_ctr(k, it->tag, it->in, it->inlen, it->out))
		return evp_failure();
	return CC_OK;
}

static cc_status
siv_open_one(cc_siv_key *k, cc_aead_item *it)
{
	uint8_t		v[SIV_BLOCK];
	uint8_t		iv[SIV_BLOCK];

	if (it->inlen > INT_MAX || it->tag == NULL ||
		(it->inlen > 0 && (it->in == NULL || it->out == NULL)) ||
		(it->aadlen > 0 && it->aad == NULL))
		return CC_ERR_PARAM;
	/* The tag may live in the buffer being decrypted in place: copy it. */
	memcpy(iv, it->tag, SIV_BLOCK);
	if (!siv_ctr(k, iv, it->in, it->inlen, it->out) ||
		!siv_s2v(k, it->aad, it->aadlen, it->out, it->inlen, v))
	{
		if (it->inlen > 0)
			cc_wipe(it->out, it->inlen);
		return evp_failure();
	}
	if (cc_memcmp_ct(v, iv, SIV_BLOCK) != 0)
	{
		if (it->inlen > 0)
			cc_wipe(it->out, it->inlen);
		return CC_ERR_AUTH;
	}
	return CC_OK;
}

/* ----------------------------------------------------------------------
 * AES-SIV for a batch of short values
 *
 * Per value, SIV costs two CMAC initialisations, two finals and a CTR
 * re-initialisation through EVP: most of the time for a short value.  Here
 * the AES block operations of a whole batch go through two ECB contexts in
 * few calls: one call makes the CTR keystream of every value, and CMAC's
 * CBC chain advances one block of every value per call (as many calls as
 * the longest value has blocks).  CMAC's subkeys are computed once per
 * key, and so is the S2V state after the associated data, which for
 * colcrypt is the same envelope header for all values of a key version.
 * Bit for bit the EVP path above: test/test_crypto compares them on the
 * Wycheproof file and on random values.
 * ----------------------------------------------------------------------
 */

static bool
siv_batch_item_ok(const cc_aead_item *it)
{
	return it->tag != NULL && it->inlen <= SIV_BATCH_MAX_LEN &&
		it->aadlen <= SIV_BATCH_MAX_AAD &&
		(it->inlen == 0 || (it->in != NULL && it->out != NULL)) &&
		(it->aadlen == 0 || it->aad != NULL);
}

/* dbl(d0) xor CMAC(K1, aad): the S2V state before the message. */
static bool
siv_after_aad(cc_siv_key *k, const uint8_t *aad, size_t aadlen, uint8_t d1[SIV_BLOCK])
{
	uint8_t		t[SIV_BLOCK];
	int			e;

	for (e = 0; e < SIV_AAD_CACHE; e++)
		if (k->aadcache[e].valid && k->aadcache[e].aadlen == aadlen &&
			(aadlen == 0 || memcmp(k->aadcache[e].aad, aad, aadlen) == 0))
		{
			memcpy(d1, k->aadcache[e].d1, SIV_BLOCK);
			return true;
		}
	e = k->aadnext;
	k->aadnext = (k->aadnext + 1) % SIV_AAD_CACHE;
	k->aadcache[e].valid = false;
	memcpy(k->aadcache[e].d1, k->d0, SIV_BLOCK);
	siv_dbl(k->aadcache[e].d1);
	if (!siv_cmac(k->cmac, aad, aadlen, NULL, 0, t))
		return false;
	for (int i = 0; i < SIV_BLOCK; i++)
		k->aadcache[e].d1[i] ^= t[i];
	if (aadlen > 0)
		memcpy(k->aadcache[e].aad, aad, aadlen);
	k->aadcache[e].aadlen = aadlen;
	k->aadcache[e].valid = true;
	memcpy(d1, k->aadcache[e].d1, SIV_BLOCK);
	return true;
}

static bool
ecb_blocks(EVP_CIPHER_CTX *ctx, uint8_t *buf, size_t nblocks)
{
	int			outl = 0;

	return nblocks == 0 ||
		(EVP_EncryptUpdate(ctx, buf, &outl, buf, (int) (nblocks * SIV_BLOCK)) == 1 &&
		 (size_t) outl == nblocks * SIV_BLOCK);
}

/*
 * CTR of every item: out = in xor keystream from Q = iv with bits 63 and 31
 * cleared.  With those bits clear a value of at most 2^31 blocks never
 * carries out of the last 32-bit word, so incrementing that word is the
 * 128-bit increment RFC 5297 specifies.
 */
static bool
siv_ctr_all(cc_siv_key *k, cc_aead_item *items, size_t n, uint8_t (*iv)[SIV_BLOCK],
			uint8_t *ks)
{
	size_t		nb = 0;
	uint8_t    *b = ks;

	for (size_t i = 0; i < n; i++)
	{
		size_t		blocks = (items[i].inlen + SIV_BLOCK - 1) / SIV_BLOCK;
		uint8_t		q[SIV_BLOCK];
		uint32_t	c;

		memcpy(q, iv[i], SIV_BLOCK);
		q[8] &= 0x7f;
		q[12] &= 0x7f;
		c = ((uint32_t) q[12] << 24) | ((uint32_t) q[13] << 16) | ((uint32_t) q[14] << 8) | q[15];
		for (size_t j = 0; j < blocks; j++, b += SIV_BLOCK, c++)
		{
			memcpy(b, q, 12);
			b[12] = (uint8_t) (c >> 24);
			b[13] = (uint8_t) (c >> 16);
			b[14] = (uint8_t) (c >> 8);
			b[15] = (uint8_t) c;
		}
		nb += blocks;
	}
	if (!ecb_blocks(k->ecb2, ks, nb))
		return false;
	b = ks;
	for (size_t i = 0; i < n; i++)
	{
		for (size_t j = 0; j < items[i].inlen; j++)
			items[i].out[j] = items[i].in[j] ^ b[j];
		b += (items[i].inlen + SIV_BLOCK - 1) / SIV_BLOCK * SIV_BLOCK;
	}
	return true;
}

/*
 * S2V of every item's message msg[i] (the plaintext) into v[i]: T per RFC
 * 5297 with CMAC's last-block treatment applied, then the CBC chains of all
 * items advanced together.
 */
static bool
siv_s2v_all(cc_siv_key *k, cc_aead_item *items, size_t n, const uint8_t *const *msg,
			uint8_t *tbuf, uint8_t (*v)[SIV_BLOCK], uint8_t (*chain)[SIV_BLOCK],
			size_t *nblocks, size_t *idx)
{
	uint8_t    *t = tbuf;
	size_t		maxb = 0;

	for (size_t i = 0; i < n; i++)
	{
		size_t		len = items[i].inlen;
		size_t		tlen = len < SIV_BLOCK ? SIV_BLOCK : len;
		size_t		nb = (tlen + SIV_BLOCK - 1) / SIV_BLOCK;
		uint8_t		d[SIV_BLOCK];
		uint8_t    *last = t + (nb - 1) * SIV_BLOCK;

		if (!siv_after_aad(k, items[i].aad, items[i].aadlen, d))
			return false;
		memset(t, 0, nb * SIV_BLOCK);
		if (len >= SIV_BLOCK)
		{
			/* T = M xorend D */
			memcpy(t, msg[i], len);
			for (int j = 0; j < SIV_BLOCK; j++)
				t[len - SIV_BLOCK + j] ^= d[j];
		}
		else
		{
			/* T = dbl(D) xor pad(M), one whole block */
			siv_dbl(d);
			if (len > 0)
				memcpy(t, msg[i], len);
			t[len] = 0x80;
			for (int j = 0; j < SIV_BLOCK; j++)
				t[j] ^= d[j];
		}
		cc_wipe(d, sizeof(d));
		/* CMAC's last block: whole, xor K1'; partial, padded and xor K2'. */
		if (tlen % SIV_BLOCK == 0)
			for (int j = 0; j < SIV_BLOCK; j++)
				last[j] ^= k->sub1[j];
		else
		{
			last[tlen % SIV_BLOCK] = 0x80;
			for (int j = 0; j < SIV_BLOCK; j++)
				last[j] ^= k->sub2[j];
		}
		nblocks[i] = nb;
		memset(v[i], 0, SIV_BLOCK);
		if (nb > maxb)
			maxb = nb;
		t += nb * SIV_BLOCK;
	}

	/* Step s: block s of every item that has one, in one AES call. */
	for (size_t s = 0; s < maxb; s++)
	{
		size_t		m = 0;

		t = tbuf;
		for (size_t i = 0; i < n; i++)
		{
			if (nblocks[i] > s)
			{
				const uint8_t *blk = t + s * SIV_BLOCK;

				for (int j = 0; j < SIV_BLOCK; j++)
					chain[m][j] = v[i][j] ^ blk[j];
				idx[m++] = i;
			}
			t += nblocks[i] * SIV_BLOCK;
		}
		if (!ecb_blocks(k->ecb1, chain[0], m))
			return false;
		for (size_t j = 0; j < m; j++)
			memcpy(v[idx[j]], chain[j], SIV_BLOCK);
	}
	return true;
}

/* Seal or open n eligible items (n <= SIV_BATCH_ITEMS); returns failures. */
static size_t
siv_chunk(cc_siv_key *k, cc_aead_item *items, size_t n, bool seal)
{
	uint8_t		iv[SIV_BATCH_ITEMS][SIV_BLOCK];
	uint8_t		v[SIV_BATCH_ITEMS][SIV_BLOCK];
	uint8_t		chain[SIV_BATCH_ITEMS][SIV_BLOCK];
	size_t		nblocks[SIV_BATCH_ITEMS];
	size_t		idx[SIV_BATCH_ITEMS];
	const uint8_t *msg[SIV_BATCH_ITEMS];
	size_t		total = 0;
	size_t		failed = 0;
	uint8_t		stackbuf[4096];
	uint8_t    *scratch = stackbuf;
	uint8_t    *tbuf;
	uint8_t    *ks;
	bool		ok;

	/* T (at least a block per item) and keystream, both whole blocks. */
	for (size_t i = 0; i < n; i++)
		total += (items[i].inlen + SIV_BLOCK - 1) / SIV_BLOCK + 1;
	if (2 * total * SIV_BLOCK > sizeof(stackbuf))
		scratch = malloc(2 * total * SIV_BLOCK);
	if (scratch == NULL)
	{
		for (size_t i = 0; i < n; i++)
			items[i].status = CC_ERR_NOMEM;
		return n;
	}
	tbuf = scratch;
	ks = scratch + total * SIV_BLOCK;

	if (seal)
	{
		/* S2V reads the plaintext before CTR may overwrite it in place. */
		for (size_t i = 0; i < n; i++)
			msg[i] = items[i].in;
		ok = siv_s2v_all(k, items, n, msg, tbuf, v, chain, nblocks, idx);
		if (ok)
		{
			for (size_t i = 0; i < n; i++)
				memcpy(iv[i], v[i], SIV_BLOCK);
			ok = siv_ctr_all(k, items, n, iv, ks);
		}
		for (size_t i = 0; i < n; i++)
		{
			if (ok)
				memcpy(items[i].tag, iv[i], SIV_BLOCK);
			items[i].status = ok ? CC_OK : evp_failure();
		}
		failed = ok ? 0 : n;
	}
	else
	{
		/* The tag may live in the buffer being decrypted in place: copy it. */
		for (size_t i = 0; i < n; i++)
		{
			memcpy(iv[i], items[i].tag, SIV_BLOCK);
			msg[i] = items[i].out;
		}
		ok = siv_ctr_all(k, items, n, iv, ks) &&
			siv_s2v_all(k, items, n, msg, tbuf, v, chain, nblocks, idx);
		for (size_t i = 0; i < n; i++)
		{
			cc_status	st = !ok ? CC_ERR_INTERNAL :
				cc_memcmp_ct(v[i], iv[i], SIV_BLOCK) != 0 ? CC_ERR_AUTH : CC_OK;

			if (st != CC_OK)
			{
				if (items[i].inlen > 0)
					cc_wipe(items[i].out, items[i].inlen);
				failed++;
			}
			items[i].status = st;
		}
		if (!ok)
			ERR_clear_error();
	}
	cc_wipe(scratch, 2 * total * SIV_BLOCK);
	cc_wipe(chain, n * SIV_BLOCK);	/* rows past n were never written */
	if (scratch != stackbuf)
		free(scratch);
	return failed;
}

/* The batch path for runs of eligible items, one by one for the rest. */
static size_t
siv_run_batch(cc_siv_key *k, cc_aead_item *items, size_t n, bool seal)
{
	size_t		failed = 0;
	size_t		i = 0;

	while (i < n)
	{
		size_t		from = i;

		while (i < n && i - from < SIV_BATCH_ITEMS && siv_batch_item_ok(&items[i]))
			i++;
		if (i > from)
			failed += siv_chunk(k, items + from, i - from, seal);
		else
		{
			items[i].status = seal ? siv_seal_one(k, &items[i]) : siv_open_one(k, &items[i]);
			if (items[i].status != CC_OK)
				failed++;
			i++;
		}
	}
	return failed;
}

size_t
cc_siv_seal_batch(cc_siv_key *k, cc_aead_item *items, size_t n)
{
	size_t		failed = 0;

	if (k->ecb1 != NULL && !k->evp_only)
		return siv_run_batch(k, items, n, true);

	for (size_t i = 0; i < n; i++)
	{
		items[i].status = siv_seal_one(k, &items[i]);
		if (items[i].status != CC_OK)
			failed++;
	}
	return failed;
}

size_t
cc_siv_open_batch(cc_siv_key *k, cc_aead_item *items, size_t n)
{
	size_t		failed = 0;

	if (k->ecb1 != NULL && !k->evp_only)
		return siv_run_batch(k, items, n, false);

	for (size_t i = 0; i < n; i++)
	{
		items[i].status = siv_open_one(k, &items[i]);
		if (items[i].status != CC_OK)
			failed++;
	}
	return failed;
}
