/*-------------------------------------------------------------------------
 *
 * primitives.c
 *	  The CSPRNG, wiping, HKDF-SHA256 and AES key wrap with padding, all
 *	  through OpenSSL's libcrypto.
 *
 * HKDF derives the per-purpose keys from a data key's material; KWP wraps
 * data keys where a provider wraps them locally.  Like aead.c this file is
 * plain C: status codes out, no PostgreSQL.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/crypto.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

cc_status
cc_random(uint8_t *buf, size_t n)
{
	if (n > INT_MAX)
		return CC_ERR_PARAM;
	if (n == 0)
		return CC_OK;
	if (RAND_bytes(buf, (int) n) != 1)
	{
		ERR_clear_error();
		return CC_ERR_RANDOM;
	}
	return CC_OK;
}

void
cc_wipe(void *p, size_t n)
{
	if (p != NULL && n > 0)
		OPENSSL_cleanse(p, n);
}

cc_status
cc_sha256(const void *data, size_t len, uint8_t out[32])
{
	unsigned int outl = 0;

	if (EVP_Digest(data, len, out, &outl, EVP_sha256(), NULL) != 1 || outl != 32)
	{
		ERR_clear_error();
		return CC_ERR_INTERNAL;
	}
	return CC_OK;
}

int
cc_memcmp_ct(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n);
}

cc_status
cc_hkdf_sha256(const uint8_t *ikm, size_t ikmlen,
			   const uint8_t *salt, size_t saltlen,
			   const uint8_t *info, size_t infolen,
			   uint8_t *okm, size_t okmlen)
{
	static const uint8_t empty[1] = {0};
	EVP_KDF    *kdf;
	EVP_KDF_CTX *kctx;
	OSSL_PARAM	params[5];
	OSSL_PARAM *p = params;
	cc_status	st = CC_OK;

	/* RFC 5869: L <= 255 * HashLen. */
	if (okmlen == 0 || okmlen > 255 * 32)
		return CC_ERR_PARAM;

	if ((kdf = EVP_KDF_fetch(NULL, "HKDF", NULL)) == NULL)
	{
		ERR_clear_error();
		return CC_ERR_INTERNAL;
	}
	kctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	if (kctx == NULL)
	{
		ERR_clear_error();
		return CC_ERR_NOMEM;
	}

	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
											 (void *) (ikmlen ? ikm : empty), ikmlen);
	/* An absent salt is HashLen zero bytes, which HMAC gets from "" too. */
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
											 (void *) (saltlen ? salt : empty), saltlen);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
											 (void *) (infolen ? info : empty), infolen);
	*p = OSSL_PARAM_construct_end();

	if (EVP_KDF_derive(kctx, okm, okmlen, params) != 1)
	{
		ERR_clear_error();
		cc_wipe(okm, okmlen);
		st = CC_ERR_INTERNAL;
	}
	EVP_KDF_CTX_free(kctx);
	return st;
}

struct cc_siphash_key
{
	EVP_MAC_CTX *keyed;			/* keyed SipHash-2-4 template */
	EVP_MAC_CTX *work;			/* copy used for one message */
};

cc_siphash_key *
cc_siphash_key_new(const uint8_t key[16])
{
	EVP_MAC    *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
	cc_siphash_key *k;
	size_t		size = 8;
	OSSL_PARAM	params[2];

	if (mac == NULL)
	{
		ERR_clear_error();
		return NULL;
	}
	k = calloc(1, sizeof(cc_siphash_key));
	if (k != NULL)
	{
		params[0] = OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size);
		params[1] = OSSL_PARAM_construct_end();
		k->keyed = EVP_MAC_CTX_new(mac);
		if (k->keyed == NULL ||
			EVP_MAC_init(k->keyed, key, 16, params) != 1)
		{
			ERR_clear_error();
			cc_siphash_key_free(k);
			k = NULL;
		}
	}
	EVP_MAC_free(mac);
	return k;
}

void
cc_siphash_key_free(cc_siphash_key *k)
{
	if (k == NULL)
		return;
	EVP_MAC_CTX_free(k->keyed);
	EVP_MAC_CTX_free(k->work);
	free(k);
}

cc_status
cc_siphash(cc_siphash_key *k, const void *data, size_t len, uint64_t *out)
{
	uint8_t		buf[8];
	size_t		outl = 0;

	/* Each message starts from a copy of the keyed state. */
	EVP_MAC_CTX_free(k->work);
	k->work = EVP_MAC_CTX_dup(k->keyed);
	if (k->work == NULL ||
		(len > 0 && EVP_MAC_update(k->work, data, len) != 1) ||
		EVP_MAC_final(k->work, buf, &outl, sizeof(buf)) != 1 || outl != 8)
	{
		ERR_clear_error();
		return CC_ERR_INTERNAL;
	}
	/* SipHash's output is little-endian. */
	*out = 0;
	for (int i = 7; i >= 0; i--)
		*out = (*out << 8) | buf[i];
	return CC_OK;
}

static const EVP_CIPHER *
kwp_cipher_for(size_t keklen)
{
	switch (keklen)
	{
		case 16:
			return EVP_aes_128_wrap_pad();
		case 24:
			return EVP_aes_192_wrap_pad();
		case 32:
			return EVP_aes_256_wrap_pad();
	}
	return NULL;
}

size_t
cc_kwp_wrapped_len(size_t inlen)
{
	return ((inlen + 7) / 8) * 8 + 8;
}

/* Shared body of wrap and unwrap. */
static cc_status
kwp(int enc, const uint8_t *kek, size_t keklen,
	const uint8_t *in, size_t inlen, uint8_t *out, size_t *outlen)
{
	const EVP_CIPHER *cipher = kwp_cipher_for(keklen);
	EVP_CIPHER_CTX *ctx;
	cc_status	st = CC_OK;
	int			len = 0;
	int			fin = 0;

	*outlen = 0;
	if (cipher == NULL || inlen > INT_MAX / 2)
		return CC_ERR_PARAM;
	/* RFC 5649: a wrapped key is at least two 64-bit blocks, in whole blocks. */
	if (enc ? inlen == 0 : (inlen < 16 || inlen % 8 != 0))
		return enc ? CC_ERR_PARAM : CC_ERR_AUTH;
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
		return CC_ERR_NOMEM;
	EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);

	if (EVP_CipherInit_ex(ctx, cipher, NULL, kek, NULL, enc) != 1)
		st = CC_ERR_INTERNAL;
	else if (EVP_CipherUpdate(ctx, out, &len, in, (int) inlen) != 1 ||
			 EVP_CipherFinal_ex(ctx, out + len, &fin) != 1)
		st = enc ? CC_ERR_INTERNAL : CC_ERR_AUTH;
	ERR_clear_error();

	if (st == CC_OK)
		*outlen = (size_t) len + (size_t) fin;
	else
		cc_wipe(out, enc ? cc_kwp_wrapped_len(inlen) : inlen - 8);
	EVP_CIPHER_CTX_free(ctx);
	return st;
}

cc_status
cc_kwp_wrap(const uint8_t *kek, size_t keklen,
			const uint8_t *in, size_t inlen,
			uint8_t *out, size_t *outlen)
{
	return kwp(1, kek, keklen, in, inlen, out, outlen);
}

cc_status
cc_kwp_unwrap(const uint8_t *kek, size_t keklen,
			  const uint8_t *in, size_t inlen,
			  uint8_t *out, size_t *outlen)
{
	return kwp(0, kek, keklen, in, inlen, out, outlen);
}
