/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  Building and parsing the binary envelope of an encrypted value (see
 *	  envelope.h for the layout).
 *
 * The parser checks lengths before it reads anything, and every field it
 * hands back points inside the buffer it was given.  The text form's
 * strict base64 decoder is here too, so that both can be fuzzed without
 * PostgreSQL (test/fuzz/fuzz_envelope.c).
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/envelope.h"

#include <string.h>

const char *
cc_env_status_string(cc_env_status st)
{
	switch (st)
	{
		case CC_ENV_OK:
			return "well-formed";
		case CC_ENV_TRUNCATED:
			return "ciphertext is truncated";
		case CC_ENV_BAD_VERSION:
			return "unknown ciphertext format version";
		case CC_ENV_BAD_ALG:
			return "unknown encryption algorithm";
		case CC_ENV_BAD_TYPE:
			return "unknown plaintext type";
		case CC_ENV_BAD_FLAGS:
			return "reserved flag bits are set";
	}
	return "unknown envelope status";
}

static size_t
overhead(cc_alg alg)
{
	return CC_ENV_HEADER_LEN + CC_ENV_TAG_LEN +
		(alg == CC_ALG_AES256_GCM ? CC_ENV_NONCE_LEN : 0);
}

size_t
cc_envelope_size(cc_alg alg, size_t ptlen)
{
	return overhead(alg) + ptlen;
}

size_t
cc_envelope_max_plaintext(cc_alg alg, size_t maxlen)
{
	return maxlen > overhead(alg) ? maxlen - overhead(alg) : 0;
}

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t) (v >> 24);
	p[1] = (uint8_t) (v >> 16);
	p[2] = (uint8_t) (v >> 8);
	p[3] = (uint8_t) v;
}

static uint32_t
get32(const uint8_t *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
		((uint32_t) p[2] << 8) | (uint32_t) p[3];
}

/* Point env's fields into a buffer of known-good length. */
static void
locate(const uint8_t *buf, size_t len, cc_envelope *env)
{
	size_t		nonce_len = env->alg == CC_ALG_AES256_GCM ? CC_ENV_NONCE_LEN : 0;

	env->header = buf;
	env->nonce = nonce_len ? buf + CC_ENV_HEADER_LEN : NULL;
	env->ct = buf + CC_ENV_HEADER_LEN + nonce_len;
	env->ctlen = len - overhead((cc_alg) env->alg);
	env->tag = buf + len - CC_ENV_TAG_LEN;
}

void
cc_envelope_init(uint8_t *buf, cc_alg alg, cc_type_code type,
				 uint32_t key_id, uint32_t key_version, size_t ptlen,
				 cc_envelope *env)
{
	buf[0] = CC_ENV_VERSION;
	buf[1] = (uint8_t) alg;
	buf[2] = (uint8_t) type;
	buf[3] = 0;
	put32(buf + 4, key_id);
	put32(buf + 8, key_version);

	env->version = CC_ENV_VERSION;
	env->alg = (uint8_t) alg;
	env->type = (uint8_t) type;
	env->flags = 0;
	env->key_id = key_id;
	env->key_version = key_version;
	locate(buf, cc_envelope_size(alg, ptlen), env);
}

cc_env_status
cc_envelope_parse(const uint8_t *buf, size_t len, cc_envelope *env)
{
	memset(env, 0, sizeof(*env));
	if (buf == NULL || len < CC_ENV_HEADER_LEN)
		return CC_ENV_TRUNCATED;
	if (buf[0] != CC_ENV_VERSION)
		return CC_ENV_BAD_VERSION;
	if (buf[1] != CC_ALG_AES256_GCM && buf[1] != CC_ALG_AES256_SIV)
		return CC_ENV_BAD_ALG;
	if (buf[2] < 1 || buf[2] > CC_TYPE_MAX)
		return CC_ENV_BAD_TYPE;
	if ((buf[3] & ~CC_ENV_FLAG_PADDED) != 0)
		return CC_ENV_BAD_FLAGS;
	if (len < overhead((cc_alg) buf[1]))
		return CC_ENV_TRUNCATED;

	env->version = buf[0];
	env->alg = buf[1];
	env->type = buf[2];
	env->flags = buf[3];
	env->key_id = get32(buf + 4);
	env->key_version = get32(buf + 8);
	locate(buf, len, env);
	return CC_ENV_OK;
}

void
cc_envelope_set_flags(uint8_t *buf, uint8_t flags, cc_envelope *env)
{
	buf[3] = flags;
	env->flags = flags;
}

/* ---- Length padding ---- */

size_t
cc_pad_size(size_t ptlen)
{
	size_t		n = ptlen + 1;	/* room for the 0x80 marker */
	size_t		b = 16;

	if (n > 65536)
		return (n + 65535) / 65536 * 65536;
	while (b < n)
		b <<= 1;
	return b;
}

int
cc_pad_is_bucket(size_t len)
{
	if (len < 16)
		return 0;
	if (len <= 65536)
		return (len & (len - 1)) == 0;
	return len % 65536 == 0;
}

void
cc_pad(uint8_t *buf, size_t ptlen, size_t padded)
{
	buf[ptlen] = 0x80;
	memset(buf + ptlen + 1, 0, padded - ptlen - 1);
}

int
cc_unpad(const uint8_t *buf, size_t len, size_t *ptlen)
{
	size_t		i = len;

	while (i > 0 && buf[i - 1] == 0)
		i--;
	if (i == 0 || buf[i - 1] != 0x80)
		return 0;
	*ptlen = i - 1;
	return 1;
}

/* ---- The text form's base64 ---- */

/* The value of a base64 character, -1 for '=' and anything else. */
static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Which inputs are "not base64" and which "not canonical" is what the text
 * form's input function always said, when it decoded with PostgreSQL's
 * pg_b64_decode and compared the encoding of the result with the input:
 * that decoder refuses a character outside the alphabet and a first "="
 * in the first two places of a quantum, and takes anything else (later
 * "=" and characters after it included).  fuzz_envelope checks the two
 * against each other.
 */
cc_text_status
cc_text_decode(const char *b64, size_t b64len, uint8_t *out, size_t *outlen)
{
	const unsigned char *s = (const unsigned char *) b64;
	size_t		first_pad = b64len;
	size_t		pad;
	size_t		n = 0;

	*outlen = 0;
	if (b64len == 0 || b64len % 4 != 0)
		return CC_TEXT_NOT_BASE64;
	for (size_t i = 0; i < b64len; i++)
	{
		if (s[i] == '=')
		{
			if (first_pad == b64len)
				first_pad = i;
		}
		else if (b64_value(s[i]) < 0)
			return CC_TEXT_NOT_BASE64;
	}
	if (first_pad < b64len && first_pad % 4 < 2)
		return CC_TEXT_NOT_BASE64;

	/* Canonical: "=" only as the last one or two characters, unused bits zero. */
	pad = b64len - first_pad;
	if (pad > 2)
		return CC_TEXT_NOT_CANONICAL;
	for (size_t i = first_pad; i < b64len; i++)
		if (s[i] != '=')
			return CC_TEXT_NOT_CANONICAL;
	if ((pad == 1 && (b64_value(s[b64len - 2]) & 0x03) != 0) ||
		(pad == 2 && (b64_value(s[b64len - 3]) & 0x0F) != 0))
		return CC_TEXT_NOT_CANONICAL;

	for (size_t i = 0; i < b64len; i += 4)
	{
		uint32_t	q = 0;
		int			chars = 4;

		for (int j = 0; j < 4; j++)
		{
			int			v = b64_value(s[i + j]);

			if (v < 0)
			{
				v = 0;
				chars--;
			}
			q = (q << 6) | (uint32_t) v;
		}
		out[n++] = (uint8_t) (q >> 16);
		if (chars > 2)
			out[n++] = (uint8_t) (q >> 8);
		if (chars > 3)
			out[n++] = (uint8_t) q;
	}
	*outlen = n;
	return CC_TEXT_OK;
}
