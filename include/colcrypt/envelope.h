/*-------------------------------------------------------------------------
 *
 * envelope.h
 *	  The binary format of one encrypted value, as stored in every datum of
 *	  colcrypt's encrypted types.
 *
 * Layout, version 1 (all integers big-endian):
 *
 *	 offset  size  field
 *	 0       1     format version (1)
 *	 1       1     algorithm: 1 = AES-256-GCM, 2 = AES-256-SIV
 *	 2       1     plaintext type code (cc_type_code)
 *	 3       1     flags: 0x01 = the plaintext is padded (see cc_pad);
 *	               the other bits are reserved and must be 0
 *	 4       4     key id: the data key (0 = the server's transit key)
 *	 8       4     key version (for the transit key: its generation)
 *	 12      12    nonce (AES-256-GCM only; absent for AES-256-SIV)
 *	 ...     n     ciphertext, as long as the plaintext (padded, if so
 *	               flagged, to its bucket: cc_pad_size)
 *	 last    16    tag (GCM) or synthetic IV (SIV)
 *
 * The 12 header bytes are the associated data of the AEAD, so the key id,
 * key version, algorithm and type are authenticated with the value: a
 * ciphertext cannot be relabelled as another key's, version's or type's.
 *
 * This file is plain C so that the parser can be fuzzed on its own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_ENVELOPE_H
#define COLCRYPT_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#define CC_ENV_VERSION		1
#define CC_ENV_HEADER_LEN	12
#define CC_ENV_NONCE_LEN	12
#define CC_ENV_TAG_LEN		16

/* Header flags. */
#define CC_ENV_FLAG_PADDED	0x01

/* Key id 0 names the per-server transit key, never a data key. */
#define CC_TRANSIT_KEY_ID	0

typedef enum cc_alg
{
	CC_ALG_AES256_GCM = 1,		/* randomized */
	CC_ALG_AES256_SIV = 2		/* deterministic */
} cc_alg;

/* Plaintext type codes: part of the stored format, never renumber. */
typedef enum cc_type_code
{
	CC_TYPE_TEXT = 1,
	CC_TYPE_BYTEA = 2,
	CC_TYPE_INT4 = 3,
	CC_TYPE_INT8 = 4,
	CC_TYPE_NUMERIC = 5,
	CC_TYPE_FLOAT8 = 6,
	CC_TYPE_DATE = 7,
	CC_TYPE_TIMESTAMPTZ = 8,
	CC_TYPE_JSONB = 9
} cc_type_code;

#define CC_TYPE_MAX CC_TYPE_JSONB

typedef enum cc_env_status
{
	CC_ENV_OK = 0,
	CC_ENV_TRUNCATED,			/* shorter than its header, nonce and tag */
	CC_ENV_BAD_VERSION,			/* format version we do not know */
	CC_ENV_BAD_ALG,				/* algorithm we do not know */
	CC_ENV_BAD_TYPE,			/* type code we do not know */
	CC_ENV_BAD_FLAGS			/* reserved bits set */
} cc_env_status;

/* A parsed envelope: pointers into the caller's buffer, nothing copied. */
typedef struct cc_envelope
{
	uint8_t		version;		/* format version */
	uint8_t		alg;			/* cc_alg */
	uint8_t		type;			/* cc_type_code */
	uint8_t		flags;			/* CC_ENV_FLAG_* */
	uint32_t	key_id;			/* data key id, CC_TRANSIT_KEY_ID for transit */
	uint32_t	key_version;	/* key version or transit generation */
	const uint8_t *header;		/* the CC_ENV_HEADER_LEN header bytes (AAD) */
	const uint8_t *nonce;		/* CC_ENV_NONCE_LEN bytes, NULL for SIV */
	const uint8_t *ct;			/* ciphertext */
	size_t		ctlen;			/* its length = plaintext length (padded) */
	const uint8_t *tag;			/* CC_ENV_TAG_LEN bytes */
} cc_envelope;

extern const char *cc_env_status_string(cc_env_status st);

/* Bytes of an envelope holding ptlen bytes of plaintext under alg. */
extern size_t cc_envelope_size(cc_alg alg, size_t ptlen);

/* Longest plaintext an envelope of at most maxlen bytes can hold. */
extern size_t cc_envelope_max_plaintext(cc_alg alg, size_t maxlen);

/*
 * Write the header of a new envelope into buf (which must hold
 * cc_envelope_size(alg, ptlen) bytes) and point env's fields into buf so the
 * caller can fill nonce, ciphertext and tag in place.
 */
extern void cc_envelope_init(uint8_t *buf, cc_alg alg, cc_type_code type,
							 uint32_t key_id, uint32_t key_version,
							 size_t ptlen, cc_envelope *env);

/*
 * Set the header flags of an envelope cc_envelope_init wrote into buf
 * (before sealing: the header is the associated data).
 */
extern void cc_envelope_set_flags(uint8_t *buf, uint8_t flags, cc_envelope *env);

/*
 * Length padding (ISO/IEC 7816-4: a 0x80 byte, then zeros): a plaintext of
 * ptlen bytes is padded to cc_pad_size(ptlen) bytes, the next power of two
 * of at least 16 bytes that leaves room for the marker (above 64 kB, the
 * next multiple of 64 kB), so the ciphertext shows the bucket, not the
 * length.  cc_pad writes the marker and zeros after ptlen bytes of buf;
 * cc_unpad finds the length again (0 if buf holds no valid padding).
 */
extern size_t cc_pad_size(size_t ptlen);
extern int	cc_pad_is_bucket(size_t len);	/* a length cc_pad_size gives */
extern void cc_pad(uint8_t *buf, size_t ptlen, size_t padded);
extern int	cc_unpad(const uint8_t *buf, size_t len, size_t *ptlen);

/* Parse len bytes at buf; never reads outside [buf, buf + len). */
extern cc_env_status cc_envelope_parse(const uint8_t *buf, size_t len,
									   cc_envelope *env);

/*
 * The text form of a ciphertext is "colcrypt:" and the envelope in base64
 * (standard alphabet, padded).  Input takes only the canonical encoding:
 * what encoding the decoded bytes gives back, character for character.
 */
typedef enum cc_text_status
{
	CC_TEXT_OK = 0,
	CC_TEXT_NOT_BASE64,			/* empty, not whole quanta, a character outside
								 * the alphabet, or "=" where no padding can be */
	CC_TEXT_NOT_CANONICAL		/* decodable, but not as the encoder writes it */
} cc_text_status;

/* Bytes cc_text_decode may write for b64len characters. */
#define CC_TEXT_DECODED_MAX(b64len) ((b64len) / 4 * 3)

/*
 * Decode the b64len characters at b64 (the text after the prefix) into out,
 * which has room for CC_TEXT_DECODED_MAX(b64len) bytes; *outlen gets how
 * many it holds.  Never reads outside [b64, b64 + b64len).
 */
extern cc_text_status cc_text_decode(const char *b64, size_t b64len,
									 uint8_t *out, size_t *outlen);

#endif							/* COLCRYPT_ENVELOPE_H */
