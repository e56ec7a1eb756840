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
	uint8_t		hpow[4 * BLOCK];	/* H, H^2, H^3, H^4 (H = AES_K(0^128)),
									 * byte-reversed */
};

#ifdef CC_HAVE_CLMUL

/*
 * GF(2^128) arithmetic on byte-reversed blocks in GCM's bit order, by the
 * method of Gueron and Kounavis, "Intel Carry-Less Multiplication
 * Instruction and its Usage for Computing the GCM Mode" (2010): a 256-bit
 * carry-less product, shifted left one bit for the reflected order, then
 * reduced modulo x^128 + x^7 + x^2 + x + 1.  Shift and reduction are
 * linear, so several products are summed first and reduced once
 * (aggregated reduction, section 4 of the paper).
 */
typedef struct wide
{
	__m128i		lo;
	__m128i		hi;
} wide;

/* acc ^= a * b, unreduced. */
__attribute__((target("pclmul,sse2,ssse3")))
static inline void
clmul_acc(wide *acc, __m128i a, __m128i b)
{
	__m128i		lo = _mm_clmulepi64_si128(a, b, 0x00);
	__m128i		hi = _mm_clmulepi64_si128(a, b, 0x11);
	__m128i		mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10),
									_mm_clmulepi64_si128(a, b, 0x01));

	acc->lo = _mm_xor_si128(acc->lo, _mm_xor_si128(lo, _mm_slli_si128(mid, 8)));
	acc->hi = _mm_xor_si128(acc->hi, _mm_xor_si128(hi, _mm_srli_si128(mid, 8)));
}

/* The field element of a 256-bit sum of products. */
__attribute__((target("pclmul,sse2,ssse3")))
static inline __m128i
gf_reduce(wide w)
{
	__m128i		lo = w.lo,
				hi = w.hi;
	__m128i		t7,
				t8,
				t9,
				t2,
				t4,
				t5;

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
gf_mul(__m128i a, __m128i b)
{
	wide		w = {_mm_setzero_si128(), _mm_setzero_si128()};

	clmul_acc(&w, a, b);
	return gf_reduce(w);
}

__attribute__((target("pclmul,sse2,ssse3")))
static inline __m128i
bswap128(__m128i x)
{
	return _mm_shuffle_epi8(x, _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

/*
 * GHASH state with up to four blocks pending: they are folded in together,
 * x' = (x ^ B1) H^n ^ B2 H^(n-1) ^ ... ^ Bn H, with one reduction.
 */
typedef struct ghash
{
	__m128i		x;
	__m128i		pend[4];
	int			npend;
} ghash;

__attribute__((target("pclmul,sse2,ssse3")))
static inline void
ghash_flush(ghash *g, const __m128i hpow[4])
{
	wide		w = {_mm_setzero_si128(), _mm_setzero_si128()};
	int			n = g->npend;

	if (n == 0)
		return;
	g->pend[0] = _mm_xor_si128(g->pend[0], g->x);
	for (int i = 0; i < n; i++)
		clmul_acc(&w, g->pend[i], hpow[n - 1 - i]);
	g->x = gf_reduce(w);
	g->npend = 0;
}

__attribute__((target("pclmul,sse2,ssse3")))
static inline void
ghash_block(ghash *g, const __m128i hpow[4], __m128i block)
{
	g->pend[g->npend++] = bswap128(block);
	if (g->npend == 4)
		ghash_flush(g, hpow);
}

/* Fold len bytes (zero-padded to whole blocks) into the GHASH state. */
__attribute__((target("pclmul,sse2,ssse3")))
static inline void
ghash_update(ghash *g, const __m128i hpow[4], const uint8_t *p, size_t len)
{
	while (len >= BLOCK)
	{
		ghash_block(g, hpow, _mm_loadu_si128((const __m128i *) p));
		p += BLOCK;
		len -= BLOCK;
	}
	if (len > 0)
	{
		/* Ciphertext or associated data only: nothing secret to wipe. */
		uint8_t		last[BLOCK] = {0};

		memcpy(last, p, len);
		ghash_block(g, hpow, _mm_loadu_si128((const __m128i *) last));
	}
}

/*
 * The tag: GHASH(A, C) with the length block, XOR the J0 keystream block.
 * GHASH always runs over ciphertext, never plaintext.
 */
__attribute__((target("pclmul,sse2,ssse3")))
static void
gcm_tag(const uint8_t hpowbytes[4 * BLOCK], const uint8_t *aad, size_t aadlen,
		const uint8_t *ct, size_t ctlen, const uint8_t ekj0[BLOCK], uint8_t tag[BLOCK])
{
	__m128i		hpow[4];
	ghash		g;
	uint64_t	abits = (uint64_t) aadlen * 8;
	uint64_t	cbits = (uint64_t) ctlen * 8;
	__m128i		x;

	for (int i = 0; i < 4; i++)
		hpow[i] = _mm_loadu_si128((const __m128i *) (hpowbytes + i * BLOCK));
	g.x = _mm_setzero_si128();
	g.npend = 0;
	ghash_update(&g, hpow, aad, aadlen);
	ghash_update(&g, hpow, ct, ctlen);
	/* The length block, big-endian bit counts, as a byte-reversed load. */
	ghash_block(&g, hpow, bswap128(_mm_set_epi64x((long long) abits, (long long) cbits)));
	ghash_flush(&g, hpow);
	x = _mm_xor_si128(bswap128(g.x), _mm_loadu_si128((const __m128i *) ekj0));
	_mm_storeu_si128((__m128i *) tag, x);
}

/* H^1..H^4, byte-reversed, from H (byte-reversed). */
__attribute__((target("pclmul,sse2,ssse3")))
static void
hash_powers(const uint8_t h[BLOCK], uint8_t out[4 * BLOCK])
{
	__m128i		h1 = _mm_loadu_si128((const __m128i *) h);
	__m128i		p = h1;

	for (int i = 0; i < 4; i++)
	{
		_mm_storeu_si128((__m128i *) (out + i * BLOCK), p);
		p = gf_mul(p, h1);
	}
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
hash_powers(const uint8_t h[BLOCK], uint8_t out[4 * BLOCK])
{
	(void) h, (void) out;
	abort();					/* unreachable: cc_gcm_batch_available() is false */
}

static void
gcm_tag(const uint8_t hbytes[4 * BLOCK], const uint8_t *aad, size_t aadlen,
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
	uint8_t		rev[BLOCK];
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
	/* Kept byte-reversed, the form the multiply works in. */
	for (int i = 0; i < BLOCK; i++)
		rev[i] = h[BLOCK - 1 - i];
	hash_powers(rev, k->hpow);
	OPENSSL_cleanse(h, sizeof(h));
	OPENSSL_cleanse(rev, sizeof(rev));
	return k;
}

void
cc_gcm_batch_key_free(cc_gcm_batch_key *k)
{
	if (k == NULL)
		return;
	EVP_CIPHER_CTX_free(k->ecb);	/* cleanses the key schedule */
	OPENSSL_cleanse(k->hpow, sizeof(k->hpow));
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

static inline void
xor_bytes(uint8_t *out, const uint8_t *in, const uint8_t *ks, size_t n)
{
	size_t		i = 0;

	/* Eight bytes at a time (memcpy: no alignment assumed). */
	for (; i + 8 <= n; i += 8)
	{
		uint64_t	a,
					b;

		memcpy(&a, in + i, 8);
		memcpy(&b, ks + i, 8);
		a ^= b;
		memcpy(out + i, &a, 8);
	}
	for (; i < n; i++)
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
					gcm_tag(k->hpow, it->aad, it->aadlen, it->out, it->inlen, p, it->tag);
					it->status = CC_OK;
				}
				else
				{
					uint8_t		tag[BLOCK];

					/* Authenticate first; release plaintext only if it holds. */
					gcm_tag(k->hpow, it->aad, it->aadlen, it->in, it->inlen, p, tag);
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
