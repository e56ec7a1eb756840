/*-------------------------------------------------------------------------
 *
 * enctype_int.h
 *	  Internals shared by the files of the encrypted types (enctype.c for
 *	  I/O and casts, compare.c for operators, hashing and indexing).
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_ENCTYPE_INT_H
#define COLCRYPT_ENCTYPE_INT_H

#include "colcrypt/keys.h"
#include "colcrypt/types.h"

/* The plain type's functions, looked up once per backend. */
typedef struct PlainInfo
{
	bool		valid;
	int16		typlen;			/* -1 for varlena */
	bool		typbyval;
	Oid			ioparam;		/* for input and receive */
	FmgrInfo	input;
	FmgrInfo	output;
	FmgrInfo	recv;
	FmgrInfo	send;
	FmgrInfo   *cmp;			/* btree comparison (typcache-owned) */
	FmgrInfo   *hash_extended;	/* extended hash (typcache-owned) */
} PlainInfo;

/* A plain value as the bytes that get encrypted. */
typedef struct PlainBytes
{
	const uint8 *data;
	size_t		len;
	uint8		fixed[8];		/* storage for fixed-width values */
} PlainBytes;

/* Wrap a body in a V1 SQL-callable function. */
#define DEFINE_FN(sqlname, body) \
	PG_FUNCTION_INFO_V1(sqlname); \
	Datum sqlname(PG_FUNCTION_ARGS) { return body; }

extern const ColcryptTypeDesc *desc_of(int code);
extern PlainInfo *plain_info(const ColcryptTypeDesc *t);
extern void plain_to_bytes(const ColcryptTypeDesc *t, Datum d, PlainBytes *pb);
extern Datum bytes_to_plain(const ColcryptTypeDesc *t, const uint8 *b, size_t len);
extern void parse_datum(struct varlena *v, cc_envelope *env);
extern const char *key_label(uint32 key_id);
extern struct varlena *seal_with(const ColcryptTypeDesc *t, ColcryptDek *d, bool det,
								 bool pad, const uint8 *pt, size_t ptlen);
extern uint8 *open_envelope(const cc_envelope *env, size_t *len);
extern uint8 *try_open_envelope(const cc_envelope *env, size_t *len, cc_status *status);
extern const char *misfit(const ColcryptTypeDesc *t, const cc_envelope *env);
extern Datum open_datum(const ColcryptTypeDesc *t, struct varlena *v);
extern struct varlena *enc_arg(Datum d);
extern Datum open_arg(const ColcryptTypeDesc *t, Datum d);

#endif							/* COLCRYPT_ENCTYPE_INT_H */
