/*-------------------------------------------------------------------------
 *
 * fuzz_envelope.c
 *	  libFuzzer harness: the binary envelope parser and the text form of
 *	  ciphertext (src/crypto/envelope.c), as the input functions see them.
 *
 * Each input is tried both ways:
 *	 - as envelope bytes (binary input, a stored datum): cc_envelope_parse,
 *	   every field it returns read byte by byte (so that a pointer outside
 *	   the input shows under ASan), and a re-built header compared;
 *	 - as a cstring up to its first NUL (text input), with the
 *	   "colcrypt:" prefix or without: cc_text_decode, checked against what
 *	   the input function did before it (PostgreSQL's pg_b64_decode, then
 *	   the canonical check, from libpgcommon) for the same status and
 *	   bytes, and the decoded bytes parsed as an envelope, as
 *	   envelope_input does.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "colcrypt/envelope.h"

#define TEXT_PREFIX "colcrypt:"	/* COLCRYPT_TEXT_PREFIX in types.h */

/* libpgcommon (PostgreSQL 15's signatures: char pointers). */
extern int	pg_b64_encode(const char *src, int len, char *dst, int dstlen);
extern int	pg_b64_decode(const char *src, int len, char *dst, int dstlen);
extern int	pg_b64_enc_len(int srclen);
extern int	pg_b64_dec_len(int srclen);

static volatile uint8_t sink;

static void
fail(const char *what, const char *text)
{
	fprintf(stderr, "fuzz_envelope: %s (input \"%.200s\")\n", what, text ? text : "");
	abort();
}

static void
touch(const uint8_t *p, size_t n)
{
	uint8_t		x = 0;

	for (size_t i = 0; i < n; i++)
		x ^= p[i];
	sink ^= x;
}

static void
check_envelope(const uint8_t *buf, size_t len)
{
	cc_envelope env;
	cc_env_status st = cc_envelope_parse(buf, len, &env);
	size_t		nonce_len;
	uint8_t		hdr[CC_ENV_HEADER_LEN + CC_ENV_NONCE_LEN + CC_ENV_TAG_LEN];
	cc_envelope again;

	(void) cc_env_status_string(st);
	if (st != CC_ENV_OK)
		return;
	nonce_len = env.alg == CC_ALG_AES256_GCM ? CC_ENV_NONCE_LEN : 0;
	if (env.header != buf || env.ct != buf + CC_ENV_HEADER_LEN + nonce_len ||
		env.tag != buf + len - CC_ENV_TAG_LEN ||
		env.ctlen + CC_ENV_HEADER_LEN + nonce_len + CC_ENV_TAG_LEN != len ||
		(nonce_len ? env.nonce != buf + CC_ENV_HEADER_LEN : env.nonce != NULL))
		fail("parsed fields do not tile the envelope", NULL);
	touch(env.header, CC_ENV_HEADER_LEN);
	if (env.nonce)
		touch(env.nonce, CC_ENV_NONCE_LEN);
	touch(env.ct, env.ctlen);
	touch(env.tag, CC_ENV_TAG_LEN);
	if (cc_envelope_size((cc_alg) env.alg, env.ctlen) != len ||
		cc_envelope_max_plaintext((cc_alg) env.alg, len) != env.ctlen)
		fail("envelope size arithmetic disagrees with the parser", NULL);

	/* The writer makes the same header for the same fields. */
	cc_envelope_init(hdr, (cc_alg) env.alg, (cc_type_code) env.type, env.key_id,
					 env.key_version, 0, &again);
	if (env.flags & ~CC_ENV_FLAG_PADDED)
		fail("the parser accepted reserved flag bits", NULL);
	cc_envelope_set_flags(hdr, env.flags, &again);
	/* Unpadding never reads outside the ciphertext nor finds more than it. */
	if (env.flags & CC_ENV_FLAG_PADDED)
	{
		size_t		n;

		if (cc_unpad(env.ct, env.ctlen, &n) && n >= env.ctlen)
			fail("unpadding found a longer plaintext than the ciphertext", NULL);
		(void) cc_pad_is_bucket(env.ctlen);
	}
	if (memcmp(hdr, buf, CC_ENV_HEADER_LEN) != 0)
		fail("cc_envelope_init writes another header than the one parsed", NULL);
}

/*
 * The text form's decoding as enctype.c's parse_text_form did it before
 * cc_text_decode: 1 not base64, 2 not canonical, 0 decoded into raw.
 */
static int
legacy_text_decode(const char *b64, char *raw, int *rawlen)
{
	int			b64len = (int) strlen(b64);
	char	   *canon;
	int			n;
	int			res;

	if (b64len == 0 || b64len % 4 != 0 ||
		strspn(b64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != (size_t) b64len)
		return 1;
	*rawlen = pg_b64_decode(b64, b64len, raw, pg_b64_dec_len(b64len));
	if (*rawlen < 0)
		return 1;
	canon = malloc(pg_b64_enc_len(*rawlen) + 1);
	n = pg_b64_encode(raw, *rawlen, canon, pg_b64_enc_len(*rawlen));
	res = (n != b64len || memcmp(canon, b64, b64len) != 0) ? 2 : 0;
	free(canon);
	return res;
}

static void
check_text(const char *text)
{
	const char *b64 = strncmp(text, TEXT_PREFIX, strlen(TEXT_PREFIX)) == 0 ?
		text + strlen(TEXT_PREFIX) : text;
	size_t		b64len = strlen(b64);
	uint8_t    *out = malloc(CC_TEXT_DECODED_MAX(b64len) + 1);
	char	   *raw = malloc(b64len / 4 * 3 + 1);
	size_t		outlen = 12345;
	int			rawlen = -1;
	cc_text_status st = cc_text_decode(b64, b64len, out, &outlen);
	int			legacy = legacy_text_decode(b64, raw, &rawlen);

	if ((st == CC_TEXT_OK && legacy != 0) ||
		(st == CC_TEXT_NOT_BASE64 && legacy != 1) ||
		(st == CC_TEXT_NOT_CANONICAL && legacy != 2))
	{
		fprintf(stderr, "cc_text_decode says %d, pg_b64_decode and the canonical check %d\n",
				st, legacy);
		fail("text form: the decoders disagree", b64);
	}
	if (st != CC_TEXT_OK && outlen != 0)
		fail("text form: a length after a failure", b64);
	if (st == CC_TEXT_OK)
	{
		if (outlen != (size_t) rawlen || memcmp(out, raw, outlen) != 0)
			fail("text form: the decoders give other bytes", b64);
		if (outlen > CC_TEXT_DECODED_MAX(b64len))
			fail("text form: more bytes than CC_TEXT_DECODED_MAX", b64);
		check_envelope(out, outlen);
	}
	free(out);
	free(raw);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text;

	/* libFuzzer's data is a heap copy of exactly size bytes: ASan sees overreads. */
	check_envelope(data, size);

	text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	check_text(text);
	free(text);
	return 0;
}
