/*-------------------------------------------------------------------------
 *
 * crypto.h
 *	  colcrypt's cryptographic primitives: AES-256-GCM (randomized column
 *	  values), AES-SIV (deterministic column values), AES key wrap with
 *	  padding (RFC 5649), HKDF-SHA256 and the CSPRNG.
 *
 * This layer is plain C over OpenSSL's libcrypto.  It includes no PostgreSQL
 * header, allocates nothing the caller has to know about, and reports
 * failure with a cc_status code, never by throwing: the SQL layer turns codes
 * into ereport() with a SQLSTATE.  That keeps it usable from the C unit
 * tests, the fuzz harnesses and the benchmarks unchanged.
 *
 * The data-path API is batch-shaped: callers hand over an array of items and
 * get a status per item.  Today each item goes through EVP one by one; the
 * vectorized path replaces the inside without changing a caller.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_CRYPTO_H
#define COLCRYPT_CRYPTO_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#define CC_AES256_KEY_LEN	32	/* AES-256 key */
#define CC_SIV_KEY_LEN		64	/* AES-SIV-CMAC-512: MAC key || CTR key */
#define CC_GCM_NONCE_LEN	12	/* 96-bit nonce, the only size we produce */
#define CC_TAG_LEN			16	/* GCM tag / SIV synthetic IV */
#define CC_DEK_LEN			32	/* data key material held per DEK version */

typedef enum cc_status
{
	CC_OK = 0,
	CC_ERR_AUTH,				/* authentication failed: tag mismatch */
	CC_ERR_PARAM,				/* argument outside what the primitive accepts */
	CC_ERR_RANDOM,				/* CSPRNG failure */
	CC_ERR_NOMEM,				/* allocation failure inside OpenSSL */
	CC_ERR_INTERNAL				/* any other libcrypto failure */
} cc_status;

extern const char *cc_status_string(cc_status st);

/* Fill buf with n bytes from OpenSSL's CSPRNG. */
extern cc_status cc_random(uint8_t *buf, size_t n);

/* Wipe memory in a way the compiler may not elide (OPENSSL_cleanse). */
extern void cc_wipe(void *p, size_t n);

/* SHA-256 of len bytes. */
extern cc_status cc_sha256(const void *data, size_t len, uint8_t out[32]);

/* Constant-time comparison; 0 when equal. */
extern int	cc_memcmp_ct(const void *a, const void *b, size_t n);

/*
 * HKDF-SHA256 (RFC 5869), extract and expand.  okmlen may be at most
 * 255 * 32 bytes; longer requests fail with CC_ERR_PARAM.
 */
extern cc_status cc_hkdf_sha256(const uint8_t *ikm, size_t ikmlen,
								const uint8_t *salt, size_t saltlen,
								const uint8_t *info, size_t infolen,
								uint8_t *okm, size_t okmlen);

/*
 * SipHash-2-4 (64-bit output) with a key set once; for hashing plaintext
 * inside the server without letting unkeyed hashes of it reach temp files.
 */
typedef struct cc_siphash_key cc_siphash_key;

extern cc_siphash_key *cc_siphash_key_new(const uint8_t key[16]);
extern void cc_siphash_key_free(cc_siphash_key *k);
extern cc_status cc_siphash(cc_siphash_key *k, const void *data, size_t len,
							uint64_t *out);

/*
 * One AEAD operation of a batch.  For sealing, in/inlen is the plaintext and
 * out receives inlen bytes of ciphertext and tag receives the tag; for
 * opening, in is the ciphertext, tag is read, and out receives the plaintext.
 * out may equal in.  status is set for every item.
 */
typedef struct cc_aead_item
{
	const uint8_t *nonce;		/* CC_GCM_NONCE_LEN bytes (GCM only) */
	const uint8_t *aad;			/* associated data, may be NULL if aadlen 0 */
	size_t		aadlen;
	const uint8_t *in;			/* input bytes */
	size_t		inlen;
	uint8_t    *out;			/* inlen output bytes */
	uint8_t    *tag;			/* CC_TAG_LEN bytes */
	cc_status	status;			/* result for this item */
} cc_aead_item;

/*
 * AES-256-GCM with a key schedule kept for the life of the handle: the
 * contexts are set up once per key, and each value only sets its nonce.
 */
typedef struct cc_gcm_key cc_gcm_key;

extern cc_gcm_key *cc_gcm_key_new(const uint8_t key[CC_AES256_KEY_LEN]);
extern void cc_gcm_key_free(cc_gcm_key *k);

/* Never use the batch core with this key (tests of the EVP path). */
extern void cc_gcm_key_use_evp_only(cc_gcm_key *k);

/* Both return the number of items that failed (0 when all succeeded). */
extern size_t cc_gcm_seal_batch(cc_gcm_key *k, cc_aead_item *items, size_t n);
extern size_t cc_gcm_open_batch(cc_gcm_key *k, cc_aead_item *items, size_t n);

/*
 * AES-256-GCM (96-bit nonce, 128-bit tag) for a batch of values at once:
 * one AES call makes the keystream of the whole batch and GHASH runs with
 * carry-less multiply.  Bit for bit the same as the EVP path above.  Only
 * where the CPU has PCLMULQDQ: cc_gcm_batch_available() says so, and
 * cc_gcm_batch_key_new() returns NULL otherwise (use the EVP path).  It pays
 * for short values (measured ~4x the EVP path at 8-32 bytes, 1.6x at 128);
 * GHASH here reduces after every block, so EVP's stitched AES-GCM is faster
 * from a few hundred bytes on (`make bench-gcm`).
 */
typedef struct cc_gcm_batch_key cc_gcm_batch_key;

extern bool cc_gcm_batch_available(void);
extern cc_gcm_batch_key *cc_gcm_batch_key_new(const uint8_t key[CC_AES256_KEY_LEN]);
extern void cc_gcm_batch_key_free(cc_gcm_batch_key *k);

/* Both return the number of items that failed; status is set per item. */
extern size_t cc_gcm_batch_seal(cc_gcm_batch_key *k, cc_aead_item *items, size_t n);
extern size_t cc_gcm_batch_open(cc_gcm_batch_key *k, cc_aead_item *items, size_t n);

/*
 * AES-GCM with any key, nonce and tag size OpenSSL accepts, one call each:
 * for tests that cover the whole Wycheproof file and for wrapping data keys
 * (rare), not for the data path.
 */
extern cc_status cc_gcm_open_any(const uint8_t *key, size_t keylen,
								 const uint8_t *iv, size_t ivlen,
								 const uint8_t *aad, size_t aadlen,
								 const uint8_t *ct, size_t ctlen,
								 const uint8_t *tag, size_t taglen,
								 uint8_t *pt);
extern cc_status cc_gcm_seal_any(const uint8_t *key, size_t keylen,
								 const uint8_t *iv, size_t ivlen,
								 const uint8_t *aad, size_t aadlen,
								 const uint8_t *pt, size_t ptlen,
								 uint8_t *ct, uint8_t *tag, size_t taglen);

/*
 * AES-SIV (RFC 5297) with a single associated-data component.  keylen is 32,
 * 48 or 64 (AES-128/192/256-SIV); colcrypt uses 64.  The synthetic IV is
 * returned in / read from the item's tag; nonce is ignored.
 */
typedef struct cc_siv_key cc_siv_key;

extern cc_siv_key *cc_siv_key_new(const uint8_t *key, size_t keylen);
extern void cc_siv_key_free(cc_siv_key *k);

/* Never use the batch path with this key (tests of the EVP path). */
extern void cc_siv_key_use_evp_only(cc_siv_key *k);
extern size_t cc_siv_seal_batch(cc_siv_key *k, cc_aead_item *items, size_t n);
extern size_t cc_siv_open_batch(cc_siv_key *k, cc_aead_item *items, size_t n);

/*
 * AES key wrap with padding (RFC 5649, "KWP") with a 16, 24 or 32-byte KEK.
 * Wrapping writes inlen rounded up to 8, plus 8, bytes (at most
 * cc_kwp_wrapped_len(inlen)); unwrapping writes at most inlen - 8 bytes and
 * sets *outlen.
 */
extern size_t cc_kwp_wrapped_len(size_t inlen);
extern cc_status cc_kwp_wrap(const uint8_t *kek, size_t keklen,
							 const uint8_t *in, size_t inlen,
							 uint8_t *out, size_t *outlen);
extern cc_status cc_kwp_unwrap(const uint8_t *kek, size_t keklen,
							   const uint8_t *in, size_t inlen,
							   uint8_t *out, size_t *outlen);

#endif							/* COLCRYPT_CRYPTO_H */
