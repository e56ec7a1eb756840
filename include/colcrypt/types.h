/*-------------------------------------------------------------------------
 *
 * types.h
 *	  colcrypt's encrypted column types: one generic implementation,
 *	  described per type by a ColcryptTypeDesc.
 *
 * A datum of an encrypted type is a varlena holding one envelope
 * (envelope.h), in every context.  Its type modifier names the data key:
 *
 *	 typmod = key_id << 2 | flags	(bit 0: deterministic; bit 1: reserved)
 *
 * so it fits the non-negative int32 PostgreSQL requires and resolves from
 * the key's name alone.  typmod -1 (a literal or parameter before the
 * column's modifier is applied) means the transit key.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_TYPES_H
#define COLCRYPT_TYPES_H

#include "colcrypt/envelope.h"
#include "fmgr.h"

#define COLCRYPT_TYPMOD_DETERMINISTIC	0x01
#define COLCRYPT_TYPMOD_PADDED			0x02	/* lengths padded to buckets */
#define COLCRYPT_TYPMOD_FLAG_BITS		2
#define ColcryptTypmodKeyId(typmod)		((uint32) (typmod) >> COLCRYPT_TYPMOD_FLAG_BITS)
#define ColcryptTypmodIsDeterministic(typmod) (((typmod) & COLCRYPT_TYPMOD_DETERMINISTIC) != 0)
#define ColcryptTypmodIsPadded(typmod) ((typmod) >= 0 && ((typmod) & COLCRYPT_TYPMOD_PADDED) != 0)
#define ColcryptMakeTypmod(key_id, det) \
	((int32) (((key_id) << COLCRYPT_TYPMOD_FLAG_BITS) | ((det) ? COLCRYPT_TYPMOD_DETERMINISTIC : 0)))

/* Text form of a ciphertext: this prefix, then base64 of the envelope. */
#define COLCRYPT_TEXT_PREFIX		"colcrypt:"
/* Binary form: these bytes (never valid UTF-8 text), then the envelope. */
#define COLCRYPT_BINARY_MAGIC		"\xff" "ccx\x01"
#define COLCRYPT_BINARY_MAGIC_LEN	5

typedef struct ColcryptTypeDesc
{
	cc_type_code code;			/* envelope type code, stable forever */
	const char *name;			/* SQL name in schema colcrypt */
	Oid			plain_type;		/* the type whose values it encrypts */
	bool		bitwise_eq;		/* equal plain values have equal bytes */
} ColcryptTypeDesc;

/* The descriptor of a type code, or NULL. */
extern const ColcryptTypeDesc *ColcryptTypeByCode(int code);

/* The descriptor of one of our type OIDs; raises if it is not ours. */
extern const ColcryptTypeDesc *ColcryptTypeByOid(Oid typid);

/* Whether the extension's types exist in this database. */
extern bool ColcryptTypesInstalled(void);

/* Whether typid is one of colcrypt's encrypted types (or a domain over one). */
extern bool ColcryptIsEncryptedType(Oid typid);

/*
 * Whether values of typid can hold encrypted values anywhere inside: an
 * encrypted type, or an array, domain, composite, range or multirange of
 * one, at any depth.
 */
extern bool ColcryptTypeHoldsEncrypted(Oid typid);

#endif							/* COLCRYPT_TYPES_H */
