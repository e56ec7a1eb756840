/*-------------------------------------------------------------------------
 *
 * compare.c
 *	  Operators of the encrypted types in plaintext semantics, hashing,
 *	  ciphertext-order operators for indexes on deterministic columns, the
 *	  planner support that makes those indexes serve "col = x", and the
 *	  statistics ANALYZE keeps.
 *
 * Semantics: =, <>, <, <=, >, >= compare the plaintexts, whatever the key,
 * key version or kind (randomized, deterministic) of each side, so ORDER
 * BY, GROUP BY, DISTINCT, joins and UNIQUE give the answers they would give
 * on plaintext, also in the middle of a key rotation.
 *
 * Cost: comparing means decrypting, except where a deterministic ciphertext
 * decides it:
 *	 - identical ciphertext bytes are equal plaintexts;
 *	 - for types whose equal values have equal bytes (typelist.h), two
 *	   deterministic ciphertexts under the same key version are equal iff
 *	   their bytes are, and a value compared with a deterministic ciphertext
 *	   is encrypted deterministically under that version once (cached for
 *	   the call site) and compared as bytes.  So "det_col = 'x'" decrypts
 *	   nothing, and neither does equality between deterministic columns of
 *	   one key version.
 * Each call site also keeps the last plaintext it decrypted at each
 * argument position, so a constant is decrypted once, not once per row.
 * Whatever answers (bytes, a kept plaintext, a batch value), the decrypt
 * privilege of every encrypted argument's key is checked first, for the
 * role calling now (keyaccess.c caches the answer): a call site's cache
 * outlives roles (SECURITY DEFINER functions, SET ROLE, the plans of
 * foreign key checks, which PostgreSQL keeps across statements).
 *
 * Hashing: the hash of a value is SipHash-2-4, under a per-server key, of
 * the plain type's own 64-bit hash of the plaintext.  It agrees with
 * plaintext equality (1.0 = 1.00, -0 = 0, collations) across keys and
 * versions, and no unkeyed function of plaintext reaches a hash-join batch
 * file.  Because the key changes at restart, hash indexes and hash
 * partitioning on encrypted columns are refused (ddl_guard.c).
 *
 * Indexes: an index with the default operator class keeps values in
 * plaintext order (and decrypts as it goes).  For equality lookups on a
 * deterministic column, colcrypt.encrypted_<type>_det_ops orders the
 * ciphertext bytes instead: the support function of "=" turns "col = x"
 * into "col =# ANY (colcrypt._det_candidates(x, typmod))", the encryptions
 * of x under every key version still in use, computed once per scan.  So a
 * lookup decrypts nothing, works with a parameter in a generic plan, and
 * finds values written under older key versions.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/stratnum.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/progress.h"
#include "commands/vacuum.h"
#include "utils/backend_progress.h"
#include "utils/backend_status.h"
#include "miscadmin.h"
#include "common/hashfn.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/supportnodes.h"
#include "optimizer/optimizer.h"
#include "parser/parse_func.h"
#include "parser/parse_oper.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/typcache.h"

#include "colcrypt/batch.h"
#include "colcrypt/catalog.h"
#include "colcrypt/keycache.h"
#include "colcrypt/typelist.h"
#include "enctype_int.h"

/* ----------------------------------------------------------------------
 * Per-call-site cache (fn_extra)
 * ----------------------------------------------------------------------
 */

#define CACHE_MAX_VALUE		(64 * 1024)	/* larger values are not kept */
#define SIV_CACHE_SLOTS		4

typedef struct OpenCache
{
	struct varlena *ct;			/* copy of the last ciphertext decrypted here */
	Datum		plain;			/* its plaintext, as a plain datum (copied) */
} OpenCache;

typedef struct SivCache
{
	uint32		key_id;			/* key and version it was encrypted under */
	uint32		version;
	bool		pad;			/* padded (CC_ENV_FLAG_PADDED) */
	struct varlena *source;		/* the plaintext bytes, as a varlena */
	struct varlena *ct;			/* their deterministic ciphertext */
} SivCache;

typedef struct CmpCache
{
	MemoryContext cxt;			/* fn_mcxt: lives as long as the call site */
	uint64		generation;		/* key metadata generation it is valid for */
	OpenCache	open[2];		/* per argument position */
	SivCache	siv[SIV_CACHE_SLOTS];
	int			siv_next;		/* slot to reuse next */
} CmpCache;

static void
cache_reset(CmpCache *c)
{
	/* Plaintexts are not freed one by one here: they go with fn_mcxt. */
	for (int i = 0; i < 2; i++)
		c->open[i].ct = NULL;
	for (int i = 0; i < SIV_CACHE_SLOTS; i++)
	{
		if (c->siv[i].ct)
		{
			pfree(c->siv[i].ct);
			pfree(c->siv[i].source);
		}
		c->siv[i].ct = c->siv[i].source = NULL;
	}
}

/*
 * The cache of this call site, emptied when key metadata changed.  A call
 * without flinfo (a direct call) gets a throwaway one.
 */
static CmpCache *
get_cache(FunctionCallInfo fcinfo)
{
	CmpCache   *c;

	ColcryptCatalogCheckFreshness();
	if (fcinfo->flinfo == NULL)
	{
		c = palloc0(sizeof(CmpCache));
		c->cxt = CurrentMemoryContext;
	}
	else if ((c = fcinfo->flinfo->fn_extra) == NULL)
	{
		c = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(CmpCache));
		c->cxt = fcinfo->flinfo->fn_mcxt;
		fcinfo->flinfo->fn_extra = c;
	}
	if (c->generation != ColcryptMetaGeneration())
	{
		cache_reset(c);
		c->generation = ColcryptMetaGeneration();
	}
	return c;
}

/*
 * Parse an encrypted argument's envelope and refuse (42501) unless the
 * role calling now may decrypt its key (inside a foreign key check, the
 * role it runs for too).  Called before anything about the value is
 * answered; v NULL (a plain argument) needs nothing.
 */
static void
check_decrypt(struct varlena *v, cc_envelope *env)
{
	if (v == NULL)
		return;
	parse_datum(v, env);
	ColcryptCheckKeyPrivilege(env->key_id, COLCRYPT_PRIV_DECRYPT);
}

static bool
same_bytes(struct varlena *a, struct varlena *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

static struct varlena *
copy_to(MemoryContext cxt, struct varlena *v)
{
	struct varlena *r = MemoryContextAlloc(cxt, VARHDRSZ + VARSIZE_ANY_EXHDR(v));

	SET_VARSIZE(r, VARHDRSZ + VARSIZE_ANY_EXHDR(v));
	memcpy(VARDATA(r), VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	return r;
}

/*
 * Decrypt argument d (envelope v) at position pos, reusing the last result
 * there.  A batch value opens with its batch and is not cached: it is a
 * column value, different in every row.
 */
static Datum
cached_open(CmpCache *c, int pos, const ColcryptTypeDesc *t, Datum d, struct varlena *v)
{
	OpenCache  *oc = &c->open[pos];
	Datum		plain;
	PlainInfo  *pi;

	if (ColcryptBatchCiphertext(d) != NULL)
		return open_arg(t, d);
	if (oc->ct != NULL && same_bytes(oc->ct, v))
		return oc->plain;
	plain = open_datum(t, v);
	if (VARSIZE_ANY_EXHDR(v) <= CACHE_MAX_VALUE)
	{
		MemoryContext old;

		pi = plain_info(t);
		if (oc->ct != NULL)
		{
			pfree(oc->ct);
			if (!pi->typbyval)
				pfree(DatumGetPointer(oc->plain));
		}
		old = MemoryContextSwitchTo(c->cxt);
		oc->ct = copy_to(c->cxt, v);
		oc->plain = datumCopy(plain, pi->typbyval, pi->typlen);
		MemoryContextSwitchTo(old);
	}
	return plain;
}

/* ----------------------------------------------------------------------
 * Comparison
 * ----------------------------------------------------------------------
 */

typedef enum CmpSides
{
	SIDES_EE,					/* encrypted, encrypted */
	SIDES_EP,					/* encrypted, plain */
	SIDES_PE					/* plain, encrypted */
} CmpSides;

typedef enum CmpOp
{
	OP_EQ,
	OP_NE,
	OP_LT,
	OP_LE,
	OP_GT,
	OP_GE,
	OP_CMP
} CmpOp;

/* Whether equal plain values of t under collation coll have equal bytes. */
static bool
bitwise_equality(const ColcryptTypeDesc *t, Oid coll)
{
	if (!t->bitwise_eq)
		return false;
	return !OidIsValid(coll) || coll == C_COLLATION_OID ||
		coll == DEFAULT_COLLATION_OID ? true : get_collation_isdeterministic(coll);
}

/*
 * The deterministic ciphertext of plaintext pt under (key_id, version),
 * from the call site's cache when it was made before.
 */
static struct varlena *
cached_siv(CmpCache *c, const ColcryptTypeDesc *t, uint32 key_id, uint32 version,
		   bool pad, const PlainBytes *pt)
{
	SivCache   *s;
	MemoryContext old;

	for (int i = 0; i < SIV_CACHE_SLOTS; i++)
	{
		s = &c->siv[i];
		if (s->ct != NULL && s->key_id == key_id && s->version == version && s->pad == pad &&
			VARSIZE_ANY_EXHDR(s->source) == pt->len &&
			memcmp(VARDATA_ANY(s->source), pt->data, pt->len) == 0)
			return s->ct;
	}
	s = &c->siv[c->siv_next];
	c->siv_next = (c->siv_next + 1) % SIV_CACHE_SLOTS;
	if (s->ct != NULL)
	{
		pfree(s->ct);
		pfree(s->source);
	}
	old = MemoryContextSwitchTo(c->cxt);
	s->source = palloc(VARHDRSZ + pt->len);
	SET_VARSIZE(s->source, VARHDRSZ + pt->len);
	memcpy(VARDATA(s->source), pt->data, pt->len);
	s->ct = seal_with(t, ColcryptDekForDecrypt(key_id, version), true, pad, pt->data, pt->len);
	s->pad = pad;
	s->key_id = key_id;
	s->version = version;
	MemoryContextSwitchTo(old);
	return s->ct;
}

/*
 * Decide equality without decrypting where a deterministic ciphertext
 * allows it.  Returns true with *equal set, or false to decrypt.
 */
static bool
fast_equality(CmpCache *c, const ColcryptTypeDesc *t, Oid coll, bool eq_only,
			  Datum da, struct varlena *a, const cc_envelope *pa,
			  Datum db, struct varlena *b, const cc_envelope *pb_env,
			  Datum plain, bool *equal)
{
	cc_envelope ea,
				eb;
	struct varlena *det;
	cc_envelope *edet;
	PlainBytes	pb;

	if (a != NULL)
		ea = *pa;
	if (b != NULL)
		eb = *pb_env;

	/* Identical bytes: identical plaintexts, any kind, any type semantics. */
	if (a != NULL && b != NULL && same_bytes(a, b))
	{
		*equal = true;
		return true;
	}
	if (!eq_only || !bitwise_equality(t, coll))
		return false;

	/* Two deterministic ciphertexts of one key version: bytes decide. */
	if (a != NULL && b != NULL && ea.alg == CC_ALG_AES256_SIV && eb.alg == CC_ALG_AES256_SIV &&
		memcmp(ea.header, eb.header, CC_ENV_HEADER_LEN) == 0)
	{
		*equal = false;
		return true;
	}

	/* One deterministic side: encrypt the other side's plaintext likewise. */
	if (a != NULL && ea.alg == CC_ALG_AES256_SIV && ea.key_id != CC_TRANSIT_KEY_ID)
	{
		det = a;
		edet = &ea;
	}
	else if (b != NULL && eb.alg == CC_ALG_AES256_SIV && eb.key_id != CC_TRANSIT_KEY_ID)
	{
		det = b;
		edet = &eb;
	}
	else
		return false;
	if (a != NULL && b != NULL)
		plain = det == a ? cached_open(c, 1, t, db, b) : cached_open(c, 0, t, da, a);
	plain_to_bytes(t, plain, &pb);
	*equal = same_bytes(det, cached_siv(c, t, edet->key_id, edet->key_version,
										(edet->flags & CC_ENV_FLAG_PADDED) != 0, &pb));
	return true;
}

/*
 * Whether ANALYZE is computing statistics.  Statistics of values that hold
 * encrypted values inside (arrays, composites: PostgreSQL's own typanalyze
 * functions, which sort and count with the element type's operators) and
 * extended statistics would otherwise store, in pg_statistic and
 * pg_statistic_ext_data, values in plaintext order and plaintext
 * frequencies, shown by pg_stats to whoever may read the column.  During
 * ANALYZE, comparisons and hashes of encrypted values work on their
 * ciphertext bytes instead: the order stored is that of the ciphertexts
 * (random), and equal only what deterministic encryption shows equal
 * anyway.  ANALYZE then needs no key either.  Known by the progress report
 * ANALYZE makes (manual or autovacuum) and, with track_activities off, by
 * the memory context it computes statistics in.
 */
static bool
in_analyze(void)
{
	if (MyBEEntry != NULL && pgstat_track_activities)
		return MyBEEntry->st_progress_command == PROGRESS_COMMAND_ANALYZE;
	for (MemoryContext m = CurrentMemoryContext; m != NULL; m = m->parent)
		if (m->name[0] == 'A' && strcmp(m->name, "Analyze") == 0)
			return true;
	return false;
}

/* Byte order of two envelopes (the det_ops order). */
static int
bytes_compare(struct varlena *a, struct varlena *b)
{
	size_t		la = VARSIZE_ANY_EXHDR(a);
	size_t		lb = VARSIZE_ANY_EXHDR(b);
	int			r = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));

	if (r != 0)
		return r < 0 ? -1 : 1;
	return (la > lb) - (la < lb);
}

static Datum
enc_op(FunctionCallInfo fcinfo, int code, CmpSides sides, CmpOp op)
{
	const ColcryptTypeDesc *t = desc_of(code);
	Oid			coll = PG_GET_COLLATION();
	CmpCache   *c = get_cache(fcinfo);
	struct varlena *a = sides != SIDES_PE ? enc_arg(PG_GETARG_DATUM(0)) : NULL;
	struct varlena *b = sides != SIDES_EP ? enc_arg(PG_GETARG_DATUM(1)) : NULL;
	Datum		pa = sides == SIDES_PE ? PG_GETARG_DATUM(0) : (Datum) 0;
	Datum		pb = sides == SIDES_EP ? PG_GETARG_DATUM(1) : (Datum) 0;
	bool		equal;
	int			cmp;
	cc_envelope ea,
				eb;

	if (sides == SIDES_EE && in_analyze())
		cmp = bytes_compare(a, b);
	else
	{
		check_decrypt(a, &ea);
		check_decrypt(b, &eb);
		if (fast_equality(c, t, coll, op == OP_EQ || op == OP_NE,
						  PG_GETARG_DATUM(0), a, &ea, PG_GETARG_DATUM(1), b, &eb,
						  sides == SIDES_PE ? pa : pb, &equal))
			cmp = equal ? 0 : 1;
		else
		{
			if (a != NULL)
				pa = cached_open(c, 0, t, PG_GETARG_DATUM(0), a);
			if (b != NULL)
				pb = cached_open(c, 1, t, PG_GETARG_DATUM(1), b);
			cmp = DatumGetInt32(FunctionCall2Coll(plain_info(t)->cmp, coll, pa, pb));
		}
	}

	switch (op)
	{
		case OP_EQ:
			PG_RETURN_BOOL(cmp == 0);
		case OP_NE:
			PG_RETURN_BOOL(cmp != 0);
		case OP_LT:
			PG_RETURN_BOOL(cmp < 0);
		case OP_LE:
			PG_RETURN_BOOL(cmp <= 0);
		case OP_GT:
			PG_RETURN_BOOL(cmp > 0);
		case OP_GE:
			PG_RETURN_BOOL(cmp >= 0);
		case OP_CMP:
			PG_RETURN_INT32(cmp < 0 ? -1 : cmp > 0 ? 1 : 0);
	}
	PG_RETURN_NULL();			/* keep compiler quiet */
}

/* ----------------------------------------------------------------------
 * Hashing
 * ----------------------------------------------------------------------
 */

static Datum
enc_hash(FunctionCallInfo fcinfo, int code, bool plain_arg, bool extended)
{
	const ColcryptTypeDesc *t = desc_of(code);
	Oid			coll = PG_GET_COLLATION();
	uint64		seed = extended ? (uint64) PG_GETARG_INT64(1) : 0;
	Datum		plain;
	uint64		inner;
	uint8		buf[17];
	uint64		h;

	if (!plain_arg && in_analyze())
	{
		/* Ciphertext bytes (see in_analyze). */
		struct varlena *v = enc_arg(PG_GETARG_DATUM(0));

		h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(v),
								VARSIZE_ANY_EXHDR(v), seed);
		if (extended)
			PG_RETURN_INT64((int64) h);
		PG_RETURN_INT32((int32) (uint32) h);
	}
	if (plain_arg)
		plain = PG_GETARG_DATUM(0);
	else
		plain = open_arg(t, PG_GETARG_DATUM(0));
	inner = DatumGetUInt64(FunctionCall2Coll(plain_info(t)->hash_extended, coll,
											 plain, Int64GetDatum(0)));
	buf[0] = (uint8) t->code;
	for (int i = 0; i < 8; i++)
	{
		buf[1 + i] = (uint8) (inner >> (8 * i));
		buf[9 + i] = (uint8) (seed >> (8 * i));
	}
	h = ColcryptServerHash(buf, sizeof(buf));
	if (extended)
		PG_RETURN_INT64((int64) h);
	PG_RETURN_INT32((int32) (uint32) h);
}

/* ----------------------------------------------------------------------
 * Per-type fmgr wrappers, from typelist.h
 * ----------------------------------------------------------------------
 */

#define COMPARE_FUNCTIONS(name, code, plainoid, plainsql, collatable, category, bitwise) \
	DEFINE_FN(colcrypt_##name##_eq, enc_op(fcinfo, code, SIDES_EE, OP_EQ)) \
	DEFINE_FN(colcrypt_##name##_ne, enc_op(fcinfo, code, SIDES_EE, OP_NE)) \
	DEFINE_FN(colcrypt_##name##_lt, enc_op(fcinfo, code, SIDES_EE, OP_LT)) \
	DEFINE_FN(colcrypt_##name##_le, enc_op(fcinfo, code, SIDES_EE, OP_LE)) \
	DEFINE_FN(colcrypt_##name##_gt, enc_op(fcinfo, code, SIDES_EE, OP_GT)) \
	DEFINE_FN(colcrypt_##name##_ge, enc_op(fcinfo, code, SIDES_EE, OP_GE)) \
	DEFINE_FN(colcrypt_##name##_cmp, enc_op(fcinfo, code, SIDES_EE, OP_CMP)) \
	DEFINE_FN(colcrypt_##name##_eq_plain, enc_op(fcinfo, code, SIDES_EP, OP_EQ)) \
	DEFINE_FN(colcrypt_##name##_ne_plain, enc_op(fcinfo, code, SIDES_EP, OP_NE)) \
	DEFINE_FN(colcrypt_##name##_lt_plain, enc_op(fcinfo, code, SIDES_EP, OP_LT)) \
	DEFINE_FN(colcrypt_##name##_le_plain, enc_op(fcinfo, code, SIDES_EP, OP_LE)) \
	DEFINE_FN(colcrypt_##name##_gt_plain, enc_op(fcinfo, code, SIDES_EP, OP_GT)) \
	DEFINE_FN(colcrypt_##name##_ge_plain, enc_op(fcinfo, code, SIDES_EP, OP_GE)) \
	DEFINE_FN(colcrypt_##name##_cmp_plain, enc_op(fcinfo, code, SIDES_EP, OP_CMP)) \
	DEFINE_FN(colcrypt_##name##_plain_eq, enc_op(fcinfo, code, SIDES_PE, OP_EQ)) \
	DEFINE_FN(colcrypt_##name##_plain_ne, enc_op(fcinfo, code, SIDES_PE, OP_NE)) \
	DEFINE_FN(colcrypt_##name##_plain_lt, enc_op(fcinfo, code, SIDES_PE, OP_LT)) \
	DEFINE_FN(colcrypt_##name##_plain_le, enc_op(fcinfo, code, SIDES_PE, OP_LE)) \
	DEFINE_FN(colcrypt_##name##_plain_gt, enc_op(fcinfo, code, SIDES_PE, OP_GT)) \
	DEFINE_FN(colcrypt_##name##_plain_ge, enc_op(fcinfo, code, SIDES_PE, OP_GE)) \
	DEFINE_FN(colcrypt_##name##_plain_cmp, enc_op(fcinfo, code, SIDES_PE, OP_CMP)) \
	DEFINE_FN(colcrypt_##name##_hash, enc_hash(fcinfo, code, false, false)) \
	DEFINE_FN(colcrypt_##name##_hash_extended, enc_hash(fcinfo, code, false, true)) \
	DEFINE_FN(colcrypt_##name##_hash_plain, enc_hash(fcinfo, code, true, false)) \
	DEFINE_FN(colcrypt_##name##_hash_plain_extended, enc_hash(fcinfo, code, true, true))

COLCRYPT_TYPES(COMPARE_FUNCTIONS)

/* ----------------------------------------------------------------------
 * Ciphertext order (operator classes encrypted_<type>_det_ops)
 * ----------------------------------------------------------------------
 */

/* Order of the envelope bytes: meaningful only as equality of det values. */
static int
ct_compare(FunctionCallInfo fcinfo)
{
	struct varlena *a = enc_arg(PG_GETARG_DATUM(0));
	struct varlena *b = enc_arg(PG_GETARG_DATUM(1));
	size_t		la = VARSIZE_ANY_EXHDR(a);
	size_t		lb = VARSIZE_ANY_EXHDR(b);
	int			r = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));

	if (r != 0)
		return r < 0 ? -1 : 1;
	return (la > lb) - (la < lb);
}

DEFINE_FN(colcrypt_ct_eq, BoolGetDatum(ct_compare(fcinfo) == 0))
DEFINE_FN(colcrypt_ct_ne, BoolGetDatum(ct_compare(fcinfo) != 0))
DEFINE_FN(colcrypt_ct_lt, BoolGetDatum(ct_compare(fcinfo) < 0))
DEFINE_FN(colcrypt_ct_le, BoolGetDatum(ct_compare(fcinfo) <= 0))
DEFINE_FN(colcrypt_ct_gt, BoolGetDatum(ct_compare(fcinfo) > 0))
DEFINE_FN(colcrypt_ct_ge, BoolGetDatum(ct_compare(fcinfo) >= 0))
DEFINE_FN(colcrypt_ct_cmp, Int32GetDatum(ct_compare(fcinfo)))

/* ----------------------------------------------------------------------
 * Deterministic lookups: candidates and the support function of "="
 * ----------------------------------------------------------------------
 */

typedef struct CandidatesCache
{
	uint64		generation;		/* key metadata generation */
	int32		typmod;
	struct varlena *source;		/* plaintext bytes it was computed for */
	ArrayType  *result;
} CandidatesCache;

PG_FUNCTION_INFO_V1(colcrypt_det_candidates);

/*
 * _det_candidates(value, typmod): the deterministic ciphertexts of value's
 * plaintext under every version of the typmod's key that may still hold
 * values (active, deactivated, compromised).  value is of the encrypted
 * type (a literal: transit key) or of the plain type (a parameter or
 * expression).  Cached for the call site: an index scan computes it once.
 */
Datum
colcrypt_det_candidates(PG_FUNCTION_ARGS)
{
	Oid			argtype = get_fn_expr_argtype(fcinfo->flinfo, 0);
	Oid			elemtype = get_element_type(get_fn_expr_rettype(fcinfo->flinfo));
	int32		typmod = PG_GETARG_INT32(1);
	const ColcryptTypeDesc *t;
	uint32		key_id;
	uint8	   *pt_owned = NULL;
	PlainBytes	pb;
	CandidatesCache *cc = fcinfo->flinfo->fn_extra;
	ColcryptKeyMeta *meta;
	int32	   *versions;
	int			nversions = 0;
	Datum	   *elems;
	MemoryContext old;

	if (!OidIsValid(elemtype))
		elog(ERROR, "colcrypt._det_candidates called without a known result type");
	t = ColcryptTypeByOid(elemtype);
	if (typmod < 0 || !ColcryptTypmodIsDeterministic(typmod))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("colcrypt._det_candidates needs the modifier of a deterministic column")));
	key_id = ColcryptTypmodKeyId(typmod);

	/* The plaintext. */
	if (ColcryptIsEncryptedType(argtype))
	{
		struct varlena *v = enc_arg(PG_GETARG_DATUM(0));
		cc_envelope env;
		size_t		len;

		parse_datum(v, &env);
		if (env.type != t->code)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("cannot compare a %s with a %s", desc_of(env.type)->name, t->name)));
		pt_owned = open_envelope(&env, &len);
		pb.data = pt_owned;
		pb.len = len;
	}
	else
		plain_to_bytes(t, PG_GETARG_DATUM(0), &pb);

	ColcryptCheckKeyPrivilege(key_id, COLCRYPT_PRIV_DECRYPT);
	if (cc != NULL && cc->generation == ColcryptMetaGeneration() &&
		cc->typmod == typmod && VARSIZE_ANY_EXHDR(cc->source) == pb.len &&
		memcmp(VARDATA_ANY(cc->source), pb.data, pb.len) == 0)
		PG_RETURN_ARRAYTYPE_P(cc->result);

	meta = ColcryptGetKeyMeta(key_id, false);
	versions = palloc(sizeof(int32) * Max(meta->nversions, 1));
	for (int i = 0; i < meta->nversions; i++)
	{
		ColcryptKeyState st = meta->versions[i].state;

		if (st == COLCRYPT_KEY_ACTIVE || st == COLCRYPT_KEY_DEACTIVATED ||
			st == COLCRYPT_KEY_COMPROMISED)
			versions[nversions++] = meta->versions[i].version;
	}
	/* meta may not outlive the next lookup: only versions[] is used below. */
	elems = palloc(sizeof(Datum) * Max(nversions, 1));
	for (int i = 0; i < nversions; i++)
		elems[i] = PointerGetDatum(seal_with(t, ColcryptDekForDecrypt(key_id, (uint32) versions[i]),
											 true, ColcryptTypmodIsPadded(typmod), pb.data, pb.len));

	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	if (cc == NULL)
		cc = fcinfo->flinfo->fn_extra = palloc0(sizeof(CandidatesCache));
	else
	{
		pfree(cc->source);
		pfree(cc->result);
	}
	cc->generation = ColcryptMetaGeneration();
	cc->typmod = typmod;
	cc->source = palloc(VARHDRSZ + pb.len);
	SET_VARSIZE(cc->source, VARHDRSZ + pb.len);
	memcpy(VARDATA(cc->source), pb.data, pb.len);
	cc->result = construct_array(elems, nversions, elemtype, -1, false, TYPALIGN_INT);
	MemoryContextSwitchTo(old);
	if (pt_owned)
		pfree(pt_owned);
	PG_RETURN_ARRAYTYPE_P(cc->result);
}

/* colcrypt.=# for type enctype, or InvalidOid. */
static Oid
ct_eq_operator(Oid enctype)
{
	return OpernameGetOprid(list_make2(makeString(COLCRYPT_SCHEMA), makeString("=#")),
							enctype, enctype);
}

/* An index condition on a det_ops index for "col = x", or NULL. */
static List *
det_index_condition(SupportRequestIndexCondition *req)
{
	OpExpr	   *clause;
	Node	   *indexexpr;
	Node	   *other;
	Oid			enctype;
	int32		typmod;
	Oid			ct_eq;
	Oid			argtypes[2];
	Oid			candfn;
	Oid			arraytype;
	FuncExpr   *cand;
	ScalarArrayOpExpr *saop;

	if (!is_opclause(req->node))
		return NIL;
	clause = (OpExpr *) req->node;
	if (list_length(clause->args) != 2)
		return NIL;
	indexexpr = (Node *) list_nth(clause->args, req->indexarg);
	other = (Node *) list_nth(clause->args, 1 - req->indexarg);
	enctype = exprType(indexexpr);
	typmod = exprTypmod(indexexpr);
	if (!ColcryptIsEncryptedType(enctype) || typmod < 0 ||
		!ColcryptTypmodIsDeterministic(typmod))
		return NIL;
	ct_eq = ct_eq_operator(enctype);
	if (!OidIsValid(ct_eq) ||
		get_opfamily_member(req->opfamily, enctype, enctype, BTEqualStrategyNumber) != ct_eq)
		return NIL;
	if (!is_pseudo_constant_for_index(req->root, other, req->index))
		return NIL;

	argtypes[0] = exprType(other);
	argtypes[1] = INT4OID;
	candfn = LookupFuncName(list_make2(makeString(COLCRYPT_SCHEMA), makeString("_det_candidates")),
							2, argtypes, true);
	arraytype = get_array_type(enctype);
	if (!OidIsValid(candfn) || !OidIsValid(arraytype))
		return NIL;
	cand = makeFuncExpr(candfn, arraytype,
						list_make2(copyObject(other),
								   makeConst(INT4OID, -1, InvalidOid, sizeof(int32),
											 Int32GetDatum(typmod), false, true)),
						InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);

	saop = makeNode(ScalarArrayOpExpr);
	saop->opno = ct_eq;
	saop->opfuncid = get_opcode(ct_eq);
	saop->useOr = true;
	saop->inputcollid = InvalidOid;
	saop->args = list_make2(copyObject(indexexpr), cand);
	saop->location = -1;
	req->lossy = false;
	return list_make1(saop);
}

PG_FUNCTION_INFO_V1(colcrypt_eq_support);

/* Planner support of the "=" operators of the encrypted types. */
Datum
colcrypt_eq_support(PG_FUNCTION_ARGS)
{
	Node	   *rawreq = (Node *) PG_GETARG_POINTER(0);

	if (IsA(rawreq, SupportRequestIndexCondition))
	{
		List	   *conds = det_index_condition((SupportRequestIndexCondition *) rawreq);

		if (conds != NIL)
			PG_RETURN_POINTER(conds);
	}
	PG_RETURN_POINTER(NULL);
}

/* ----------------------------------------------------------------------
 * ANALYZE
 * ----------------------------------------------------------------------
 */

/*
 * Statistics of an encrypted column: null fraction, width, and for a
 * deterministic column the number of distinct values (from equality of
 * ciphertexts).  No most-common values and no histogram: those would store
 * sample ciphertexts sorted in plaintext order in pg_statistic, need the
 * decrypt privilege, and decrypt the whole sample.
 */
static void
compute_encrypted_stats(VacAttrStatsP stats, AnalyzeAttrFetchFunc fetchfunc,
						int samplerows, double totalrows)
{
	bool		det = stats->attrtypmod >= 0 && ColcryptTypmodIsDeterministic(stats->attrtypmod);
	int			nulls = 0;
	int			nonnull = 0;
	double		width = 0;
	HTAB	   *seen = NULL;
	int			f1 = 0;

	if (det)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(uint64) + sizeof(int);
		ctl.hcxt = CurrentMemoryContext;
		seen = hash_create("colcrypt analyze", samplerows, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	for (int i = 0; i < samplerows; i++)
	{
		bool		isnull;
		Datum		value = fetchfunc(stats, i, &isnull);
		struct varlena *v;

		vacuum_delay_point();
		if (isnull)
		{
			nulls++;
			continue;
		}
		nonnull++;
		width += VARSIZE_ANY(DatumGetPointer(value));
		if (det)
		{
			uint64		h;
			bool		found;
			char	   *entry;

			v = PG_DETOAST_DATUM_PACKED(value);
			h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), 0);
			entry = hash_search(seen, &h, HASH_ENTER, &found);
			if (!found)
				*(int *) (entry + sizeof(uint64)) = 0;
			(*(int *) (entry + sizeof(uint64)))++;
		}
	}

	stats->stats_valid = true;
	stats->stanullfrac = samplerows > 0 ? (double) nulls / samplerows : 0;
	stats->stawidth = nonnull > 0 ? (int) (width / nonnull) : 0;
	stats->stadistinct = 0.0;	/* unknown, for randomized columns */
	if (det && nonnull > 0)
	{
		HASH_SEQ_STATUS seq;
		char	   *entry;
		long		d = hash_get_num_entries(seen);
		double		n = nonnull;
		double		N = totalrows * (1.0 - stats->stanullfrac);

		hash_seq_init(&seq, seen);
		while ((entry = hash_seq_search(&seq)) != NULL)
			if (*(int *) (entry + sizeof(uint64)) == 1)
				f1++;
		if (f1 == d)
			stats->stadistinct = -1.0 * (1.0 - stats->stanullfrac);	/* all distinct */
		else
		{
			/* Haas and Stokes' estimator, as compute_distinct_stats uses it. */
			double		est = (n * d) / ((n - f1) + f1 * n / Max(N, n));

			est = Max(est, d);
			est = Min(est, N);
			stats->stadistinct = est > 0.1 * N ? -(est / N) : floor(est + 0.5);
		}
	}
}

PG_FUNCTION_INFO_V1(colcrypt_typanalyze);

Datum
colcrypt_typanalyze(PG_FUNCTION_ARGS)
{
	VacAttrStats *stats = (VacAttrStats *) PG_GETARG_POINTER(0);

	if (stats->attr->attstattarget < 0)
		stats->attr->attstattarget = default_statistics_target;
	stats->compute_stats = compute_encrypted_stats;
	stats->minrows = 300 * stats->attr->attstattarget;
	PG_RETURN_BOOL(true);
}
