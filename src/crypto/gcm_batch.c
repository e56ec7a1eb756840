/*-------------------------------------------------------------------------
 *
 * gcm_batch.c
 *	  AES-256-GCM for a batch of short values: one AES call makes the
 *	  keystream of the whole batch, GHASH runs with carry-less multiply.
 *
 * OpenSSL's EVP GCM costs a few hundred nanoseconds of set-up per value
 * (nonce, AAD, final, tag), which for 32-byte column values is most of the
 * work.  Here the counter blocks of every value in the batch (J0 for the tag
 * mask, then inc32(J0), ... for the data) are laid out in one buffer and
 * encrypted with one AES-256-ECB call through EVP (AES-NI, pipelined), and
 * GHASH (NIST SP 800-38D, section 6.4) is computed per value with
 * PCLMULQDQ.  The result is bit for bit OpenSSL's AES-256-GCM with a 96-bit
 * nonce and a 128-bit tag; test/test_crypto checks that on every Wycheproof
 * case and on a million random values both ways.
 *
 * Only the GHASH multiply is written here (OpenSSL has no API for it); AES
 * itself is OpenSSL's.  Opening checks the tag before it writes any
 * plaintext; a failed open zeroes out, as the EVP path does.  Where the CPU has no PCLMULQDQ (or the compiler
 * cannot target it), cc_gcm_batch_available() is false and callers use the
 * EVP path.  The keystream buffer, which XORed with a ciphertext gives the
 * plaintext, is wiped after every batch.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/crypto.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CC_HAVE_CLMUL 1
#include <immintrin.h>
#endif

#define BLOCK 16
#define STACK_BLOCKS 512		/* 8 kB of counter blocks on the stack */

struct cc_gcm_batch_key
{
	EVP_CIPHER_CTX *ecb;		/* AES-256 keyed once, no padding */
	uint8_t		h[BLOCK];		/* hash subkey AES_K(0^128), byte-reversed */
};

#ifdef CC_HAVE_CLMUL

/*
 * GF(2^128) multiply of two byte-reversed blocks in GCM's bit order, by the
 * method of Gueron and Kounavis, "Intel Carry-Less Multiplication
 * Instruction and its Usage for Computing the GCM Mode" (2010): a 256-bit
 * carry-less product, shifted left one bit for the reflected order, then
 * reduced modulo x^128 + x^7 + x^2 + x + 1.
 */
__attribute__((target("pclmul,sse2,ssse3")))
static inline __m128i
gf_mul(__m128i a, __m128i b)
{
	__m128i		lo = _mm_clmulepi64_si128(a, b, 0x00);
	__m128i		mid1 = _mm_clmulepi64_si128(a, b, 0x10);
	__m128i		mid2 = _mm_clmulepi64_si128(a, b, 0x01);
	__m128i		hi = _mm_clmulepi64_si128(a, b, 0x11);
	__m128i		mid = _mm_xor_si128(mid1, mid2);
	__m128i		t7,
				t8,
				t9,
				t2,
				t4,
				t5;

	lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
	hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));

	/* Shift the 256-bit product <hi:lo> left by one bit. */
	t7 = _mm_srli_epi32(lo, 31);
	t8 = _mm_srli_epi32(hi, 31);
	lo = _mm_slli_epi32(lo, 1);
	hi = _mm_slli_epi32(hi, 1);
	t9 = _mm_srli_si128(t7, 12);
	t8 = _mm_slli_si128(t8, 4);
	t7 = _mm_slli_si128(t7, 4);
	lo = _mm_or_si128(lo, t7);
	hi = _mm_or_si128(hi, t8);
	hi = _mm_or_si128(hi, t9);

	/* Reduce: first phase. */
	t7 = _mm_slli_epi32(lo, 31);
	t8 = _mm_slli_epi32(lo, 30);
	t9 = _mm_slli_epi32(lo, 25);
	t7 = _mm_xor_si128(t7, t8);
	t7 = _mm_xor_si128(t7, t9);
	t8 = _mm_srli_si128(t7, 4);
	t7 = _mm_slli_si128(t7, 12);
	lo = _mm_xor_si128(lo, t7);

	/* Second phase. */
	t2 = _mm_srli_epi32(lo, 1);
	t4 = _mm_srli_epi32(lo, 2);
	t5 = _mm_srli_epi32(lo, 7);
	t2 = _mm_xor_si128(t2, t4);
	t2 = _mm_xor_si128(t2, t5);
	t2 = _mm_xor_si128(t2, t8);
	lo = _mm_xor_si128(lo, t2);
	return _mm_xor_si128(hi, lo);
}

__attribute__((target("pclmul,sse2,ssse3")))
static inline __m128i
bswap128(__m128i x)
{
	return _mm_shuffle_epi8(x, _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

/* Fold len bytes (zero-padded to whole blocks) into the GHASH state x. */
__attribute__((target("pclmul,sse2,ssse3")))
static inline __m128i
ghash_update(__m128i x, __m128i h, const uint8_t *p, size_t len)
{
	while (len >= BLOCK)
	{
		x = gf_mul(_mm_xor_si128(x, bswap128(_mm_loadu_si128((const __m128i *) p))), h);
		p += BLOCK;
		len -= BLOCK;
	}
	if (len > 0)
	{
		uint8_t		last[BLOCK] = {0};

		memcpy(last, p, len);
		x = gf_mul(_mm_xor_si128(x, bswap128(_mm_loadu_si128((const __m128i *) last))), h);
		OPENSSL_cleanse(last, sizeof(last));
	}
	return x;
}

/*
 * The tag: GHASH(A, C) with the length block, XOR the J0 keystream block.
 */
__attribute__((target("pclmul,sse2,ssse3")))
static void
gcm_tag(const uint8_t hbytes[BLOCK], const uint8_t *aad, size_t aadlen,
		const uint8_t *ct, size_t ctlen, const uint8_t ekj0[BLOCK], uint8_t tag[BLOCK])
{
	__m128i		h = _mm_loadu_si128((const __m128i *) hbytes);
	__m128i		x = _mm_setzero_si128();
	uint8_t		lens[BLOCK];
	uint64_t	abits = (uint64_t) aadlen * 8;
	uint64_t	cbits = (uint64_t) ctlen * 8;

	x = ghash_update(x, h, aad, aadlen);
	x = ghash_update(x, h, ct, ctlen);
	for (int i = 0; i < 8; i++)
	{
		lens[i] = (uint8_t) (abits >> (56 - 8 * i));
		lens[8 + i] = (uint8_t) (cbits >> (56 - 8 * i));
	}
	x = ghash_update(x, h, lens, BLOCK);
	x = _mm_xor_si128(bswap128(x), _mm_loadu_si128((const __m128i *) ekj0));
	_mm_storeu_si128((__m128i *) tag, x);
}

bool
cc_gcm_batch_available(void)
{
	static int	cached = -1;

	if (cached < 0)
	{
		__builtin_cpu_init();
		cached = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("ssse3") &&
			__builtin_cpu_supports("aes");
	}
	return cached == 1;
}

#else							/* !CC_HAVE_CLMUL */

bool
cc_gcm_batch_available(void)
{
	return false;
}

static void
gcm_tag(const uint8_t hbytes[BLOCK], const uint8_t *aad, size_t aadlen,
		const uint8_t *ct, size_t ctlen, const uint8_t ekj0[BLOCK], uint8_t tag[BLOCK])
{
	(void) hbytes, (void) aad, (void) aadlen, (void) ct, (void) ctlen, (void) ekj0, (void) tag;
	abort();					/* unreachable: cc_gcm_batch_available() is false */
}
#endif

cc_gcm_batch_key *
cc_gcm_batch_key_new(const uint8_t key[CC_AES256_KEY_LEN])
{
	cc_gcm_batch_key *k;
	uint8_t		zero[BLOCK] = {0};
	uint8_t		h[BLOCK];
	int			len = 0;

	if (!cc_gcm_batch_available() || (k = calloc(1, sizeof(*k))) == NULL)
		return NULL;
	k->ecb = EVP_CIPHER_CTX_new();
	if (k->ecb == NULL ||
		EVP_EncryptInit_ex(k->ecb, EVP_aes_256_ecb(), NULL, key, NULL) != 1 ||
		EVP_CIPHER_CTX_set_padding(k->ecb, 0) != 1 ||
		EVP_EncryptUpdate(k->ecb, h, &len, zero, BLOCK) != 1 || len != BLOCK)
	{
		cc_gcm_batch_key_free(k);
		return NULL;
	}
	/* Kept byte-reversed, the form gf_mul works in. */
	for (int i = 0; i < BLOCK; i++)
		k->h[i] = h[BLOCK - 1 - i];
	OPENSSL_cleanse(h, sizeof(h));
	return k;
}

void
cc_gcm_batch_key_free(cc_gcm_batch_key *k)
{
	if (k == NULL)
		return;
	EVP_CIPHER_CTX_free(k->ecb);	/* cleanses the key schedule */
	OPENSSL_cleanse(k->h, sizeof(k->h));
	free(k);
}

static bool
item_ok(const cc_aead_item *it)
{
	/* A 32-bit block counter per value: at most 2^32 - 2 blocks. */
	return it->nonce != NULL && it->tag != NULL && it->inlen <= (size_t) INT_MAX &&
		(it->aadlen == 0 || it->aad != NULL) &&
		(it->inlen == 0 || (it->in != NULL && it->out != NULL));
}

/* Blocks of keystream one value needs: J0, then its data blocks. */
static size_t
blocks_for(const cc_aead_item *it)
{
	return 1 + (it->inlen + BLOCK - 1) / BLOCK;
}

static void
put_counter(uint8_t *b, const uint8_t nonce[CC_GCM_NONCE_LEN], uint32_t ctr)
{
	memcpy(b, nonce, CC_GCM_NONCE_LEN);
	b[12] = (uint8_t) (ctr >> 24);
	b[13] = (uint8_t) (ctr >> 16);
	b[14] = (uint8_t) (ctr >> 8);
	b[15] = (uint8_t) ctr;
}

static void
xor_bytes(uint8_t *out, const uint8_t *in, const uint8_t *ks, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = in[i] ^ ks[i];
}

/*
 * Keystream for items[from..to): counter blocks laid out, one ECB call.
 * Returns false if AES failed.
 */
static bool
keystream(cc_gcm_batch_key *k, cc_aead_item *items, size_t from, size_t to,
		  uint8_t *ks, size_t nblocks)
{
	uint8_t    *b = ks;
	int			len = 0;

	for (size_t i = from; i < to; i++)
	{
		size_t		nb = blocks_for(&items[i]);

		for (size_t j = 0; j < nb; j++, b += BLOCK)
			put_counter(b, items[i].nonce, (uint32_t) (j + 1));
	}
	/* In place: ECB of the counter blocks is the keystream. */
	return EVP_EncryptUpdate(k->ecb, ks, &len, ks, (int) (nblocks * BLOCK)) == 1 &&
		(size_t) len == nblocks * BLOCK;
}

static size_t
run_batch(cc_gcm_batch_key *k, cc_aead_item *items, size_t n, bool seal)
{
	uint8_t		stackbuf[STACK_BLOCKS * BLOCK];
	size_t		failed = 0;
	size_t		i = 0;

	while (i < n)
	{
		size_t		from = i;
		size_t		nblocks = 0;
		uint8_t    *ks = stackbuf;
		uint8_t    *p;

		/* As many items as fit the stack buffer (at least one). */
		while (i < n)
		{
			if (!item_ok(&items[i]))
			{
				if (i == from)
				{
					items[i].status = CC_ERR_PARAM;
					failed++;
					from = ++i;
					continue;
				}
				break;
			}
			if (i > from && nblocks + blocks_for(&items[i]) > STACK_BLOCKS)
				break;
			nblocks += blocks_for(&items[i]);
			i++;
		}
		if (from == i)
			continue;
		if (nblocks > STACK_BLOCKS && (ks = malloc(nblocks * BLOCK)) == NULL)
		{
			for (size_t j = from; j < i; j++)
				items[j].status = CC_ERR_NOMEM;
			failed += i - from;
			continue;
		}
		if (!keystream(k, items, from, i, ks, nblocks))
		{
			for (size_t j = from; j < i; j++)
				items[j].status = CC_ERR_INTERNAL;
			failed += i - from;
		}
		else
		{
			p = ks;
			for (size_t j = from; j < i; j++)
			{
				cc_aead_item *it = &items[j];

				if (seal)
				{
					xor_bytes(it->out, it->in, p + BLOCK, it->inlen);
					gcm_tag(k->h, it->aad, it->aadlen, it->out, it->inlen, p, it->tag);
					it->status = CC_OK;
				}
				else
				{
					uint8_t		tag[BLOCK];

					/* Authenticate first; release plaintext only if it holds. */
					gcm_tag(k->h, it->aad, it->aadlen, it->in, it->inlen, p, tag);
					if (CRYPTO_memcmp(tag, it->tag, BLOCK) == 0)
					{
						xor_bytes(it->out, it->in, p + BLOCK, it->inlen);
						it->status = CC_OK;
					}
					else
					{
						/* As the EVP path: a failed open leaves out zeroed. */
						if (it->inlen > 0)
							OPENSSL_cleanse(it->out, it->inlen);
						it->status = CC_ERR_AUTH;
						failed++;
					}
				}
				p += blocks_for(it) * BLOCK;
			}
		}
		OPENSSL_cleanse(ks, nblocks * BLOCK);
		if (ks != stackbuf)
			free(ks);
	}
	return failed;
}

size_t
cc_gcm_batch_seal(cc_gcm_batch_key *k, cc_aead_item *items, size_t n)
{
	return run_batch(k, items, n, true);
}

size_t
cc_gcm_batch_open(cc_gcm_batch_key *k, cc_aead_item *items, size_t n)
{
	return run_batch(k, items, n, false);
}
