/*-------------------------------------------------------------------------
 *
 * enctype.c
 *	  The encrypted column types: I/O, type modifiers, casts to and from
 *	  the plain types, and comparisons in plaintext semantics.
 *
 * One generic implementation; every type in typelist.h gets thin fmgr
 * wrappers that pass its type code.  The plaintext inside a ciphertext is
 * the plain type's value as raw bytes: the payload of a varlena (text,
 * bytea, numeric, jsonb) or a fixed-width value in big-endian order.
 *
 * Where the key comes from:
 *	 - input, receive and casts from the plain type get the column's typmod
 *	   when PostgreSQL knows it (COPY, assignment casts) and encrypt under
 *	   that key's active version;
 *	 - with typmod -1 (a literal or untyped parameter, before the column's
 *	   modifier is applied) they encrypt under the transit key, so even
 *	   that intermediate value is ciphertext;
 *	 - the length-coercion cast (encrypted type to itself with a typmod)
 *	   then moves the value to the column's key: unchanged if it is already
 *	   there, re-encrypted otherwise.
 *
 * Input of the ciphertext text form ("colcrypt:" + base64) stores that
 * ciphertext as is, but only where the session is moving ciphertext: with
 * colcrypt.output = 'ciphertext', during a restore (check_function_bodies
 * off), as a logical replication apply worker (each only while the code
 * runs as the session's own role), or for a role that cannot decrypt the
 * key anyway.  Elsewhere it is refused, so that an application
 * that passes user-supplied strings cannot be made to decrypt a ciphertext
 * copied from another row (a confused-deputy attack), and a restore
 * without the setting fails loudly rather than storing ciphertext as a
 * string.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "colcrypt/audit.h"

#include "catalog/pg_type.h"
#include "colcrypt/batch.h"
#include "colcrypt/keys.h"
#include "colcrypt/typelist.h"
#include "colcrypt/types.h"
#include "enctype_int.h"
#ifdef COLCRYPT_HAVE_COPYFROM_STATE
#include "commands/copyfrom_internal.h"
#endif
#include "commands/trigger.h"
#include "parser/parse_coerce.h"
#include "common/base64.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "replication/walsender.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

/* ----------------------------------------------------------------------
 * The plain types' functions
 * ----------------------------------------------------------------------
 */

static PlainInfo plain_infos[CC_TYPE_MAX + 1];

const ColcryptTypeDesc *
desc_of(int code)
{
	const ColcryptTypeDesc *t = ColcryptTypeByCode(code);

	if (t == NULL)
		elog(ERROR, "unknown colcrypt type code %d", code);
	return t;
}

PlainInfo *
plain_info(const ColcryptTypeDesc *t)
{
	PlainInfo  *pi = &plain_infos[t->code];

	if (!pi->valid)
	{
		Oid			func;
		TypeCacheEntry *tce;

		get_typlenbyval(t->plain_type, &pi->typlen, &pi->typbyval);
		getTypeInputInfo(t->plain_type, &func, &pi->ioparam);
		fmgr_info_cxt(func, &pi->input, TopMemoryContext);
		getTypeBinaryInputInfo(t->plain_type, &func, &pi->ioparam);
		fmgr_info_cxt(func, &pi->recv, TopMemoryContext);
		{
			bool		isvarlena;

			getTypeOutputInfo(t->plain_type, &func, &isvarlena);
			fmgr_info_cxt(func, &pi->output, TopMemoryContext);
			getTypeBinaryOutputInfo(t->plain_type, &func, &isvarlena);
			fmgr_info_cxt(func, &pi->send, TopMemoryContext);
		}
		tce = lookup_type_cache(t->plain_type,
								TYPECACHE_CMP_PROC_FINFO | TYPECACHE_HASH_EXTENDED_PROC_FINFO);
		if (!OidIsValid(tce->cmp_proc_finfo.fn_oid) ||
			!OidIsValid(tce->hash_extended_proc_finfo.fn_oid))
			elog(ERROR, "type %s has no btree comparison or extended hash",
				 format_type_be(t->plain_type));
		pi->cmp = &tce->cmp_proc_finfo;
		pi->hash_extended = &tce->hash_extended_proc_finfo;
		pi->valid = true;
	}
	return pi;
}

/* ----------------------------------------------------------------------
 * Plaintext bytes <-> plain datums
 * ----------------------------------------------------------------------
 */

void
plain_to_bytes(const ColcryptTypeDesc *t, Datum d, PlainBytes *pb)
{
	PlainInfo  *pi = plain_info(t);

	if (pi->typlen == -1)
	{
		struct varlena *v = PG_DETOAST_DATUM_PACKED(d);

		pb->data = (const uint8 *) VARDATA_ANY(v);
		pb->len = VARSIZE_ANY_EXHDR(v);
	}
	else
	{
		uint64		u;

		if (pi->typlen == 4)
			u = (uint32) DatumGetInt32(d);
		else if (pi->typlen == 8)
			u = pi->typbyval ? (uint64) DatumGetInt64(d) : *(uint64 *) DatumGetPointer(d);
		else
			elog(ERROR, "unsupported plain type length %d", pi->typlen);
		for (int i = 0; i < pi->typlen; i++)
			pb->fixed[i] = (uint8) (u >> (8 * (pi->typlen - 1 - i)));
		pb->data = pb->fixed;
		pb->len = pi->typlen;
	}
}

/* Text must be valid in this database's encoding. */
static inline void
check_encoding(const ColcryptTypeDesc *t, const uint8 *b, size_t len)
{
	if (t->code == CC_TYPE_TEXT &&
		!pg_verifymbstr((const char *) b, (int) len, true))
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("decrypted value is not valid in the database encoding \"%s\"",
						GetDatabaseEncodingName()),
				 errdetail("It was encrypted in a database with another encoding.")));
}

Datum
bytes_to_plain(const ColcryptTypeDesc *t, const uint8 *b, size_t len)
{
	PlainInfo  *pi = plain_info(t);

	if (pi->typlen == -1)
	{
		struct varlena *v;

		check_encoding(t, b, len);
		v = palloc(VARHDRSZ + len);
		SET_VARSIZE(v, VARHDRSZ + len);
		memcpy(VARDATA(v), b, len);
		return PointerGetDatum(v);
	}
	else
	{
		uint64		u = 0;

		if (len != (size_t) pi->typlen)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("decrypted value has the wrong length for type %s",
							format_type_be(t->plain_type))));
		for (size_t i = 0; i < len; i++)
			u = (u << 8) | b[i];
		if (pi->typlen == 4)
			return Int32GetDatum((int32) (uint32) u);
		if (pi->typbyval)
			return Int64GetDatum((int64) u);
		{
			uint64	   *p = palloc(sizeof(uint64));

			*p = u;
			return PointerGetDatum(p);
		}
	}
}

/* ----------------------------------------------------------------------
 * Sealing and opening
 * ----------------------------------------------------------------------
 */

/* Parse the envelope of a stored or computed datum; XX001 if malformed. */
void
parse_datum(struct varlena *v, cc_envelope *env)
{
	cc_env_status st = cc_envelope_parse((const uint8 *) VARDATA_ANY(v),
										 VARSIZE_ANY_EXHDR(v), env);

	if (st != CC_ENV_OK)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("encrypted value is malformed: %s", cc_env_status_string(st))));
}

const char *
key_label(uint32 key_id)
{
	ColcryptKeyMeta *meta;

	if (key_id == CC_TRANSIT_KEY_ID)
		return "transit";
	meta = ColcryptGetKeyMeta(key_id, true);
	return meta ? pstrdup(meta->name) : psprintf("#%u", key_id);
}

/*
 * A fresh random GCM nonce.  The CSPRNG is asked for many nonces at a time:
 * OpenSSL's RAND_bytes costs about half a microsecond per call (provider
 * lookup, locks, a getpid() fork check), more than sealing a short value.
 * Every 12 bytes are handed out once; the buffer belongs to the process that
 * filled it (a forked child starts over), and nonces are not secret.
 */
#define NONCE_BUFFER	(CC_ENV_NONCE_LEN * 256)

static void
next_nonce(uint8 *nonce)
{
	static uint8 buf[NONCE_BUFFER];
	static int	used = NONCE_BUFFER;
	static int	owner = 0;

	if (used == NONCE_BUFFER || owner != MyProcPid)
	{
		if (cc_random(buf, sizeof(buf)) != CC_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a nonce")));
		used = 0;
		owner = MyProcPid;
	}
	memcpy(nonce, buf + used, CC_ENV_NONCE_LEN);
	memset(buf + used, 0, CC_ENV_NONCE_LEN);
	used += CC_ENV_NONCE_LEN;
}

/*
 * Encrypt plaintext bytes with a given key version's context; with pad (for
 * variable-length types: the others are all one length anyway), padded to
 * their length bucket, the envelope flagged so.
 */
struct varlena *
seal_with(const ColcryptTypeDesc *t, ColcryptDek *d, bool det, bool pad,
		  const uint8 *pt, size_t ptlen)
{
	cc_alg		alg = det ? CC_ALG_AES256_SIV : CC_ALG_AES256_GCM;
	size_t		inlen;
	size_t		envlen;
	struct varlena *res;
	cc_envelope env;
	cc_aead_item it;
	size_t		failed;
	uint8	   *padded = NULL;

	pad = pad && plain_info(t)->typlen < 0;
	inlen = pad ? cc_pad_size(ptlen) : ptlen;
	envlen = cc_envelope_size(alg, inlen);
	if (inlen < ptlen || envlen > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value is too large to encrypt")));
	if (pad)
	{
		padded = palloc(inlen);
		memcpy(padded, pt, ptlen);
		cc_pad(padded, ptlen, inlen);
		pt = padded;
	}
	res = palloc(VARHDRSZ + envlen);
	SET_VARSIZE(res, VARHDRSZ + envlen);
	cc_envelope_init((uint8 *) VARDATA(res), alg, t->code, d->key_id, d->version,
					 inlen, &env);
	if (pad)
		cc_envelope_set_flags((uint8 *) VARDATA(res), CC_ENV_FLAG_PADDED, &env);
	it.nonce = env.nonce;
	it.aad = env.header;
	it.aadlen = CC_ENV_HEADER_LEN;
	it.in = pt;
	it.inlen = inlen;
	it.out = (uint8 *) env.ct;
	it.tag = (uint8 *) env.tag;
	if (alg == CC_ALG_AES256_GCM)
	{
		next_nonce((uint8 *) env.nonce);
		failed = cc_gcm_seal_batch(d->gcm, &it, 1);
	}
	else
		failed = cc_siv_seal_batch(d->siv, &it, 1);
	if (padded != NULL)
	{
		cc_wipe(padded, inlen);
		pfree(padded);
	}
	if (failed)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("encryption failed: %s", cc_status_string(it.status))));
	return res;
}

/* Encrypt plaintext bytes under a key's active version. */
static struct varlena *
seal_bytes(const ColcryptTypeDesc *t, uint32 key_id, bool det, bool pad,
		   const uint8 *pt, size_t ptlen)
{
	return seal_with(t, ColcryptDekForEncrypt(key_id), det, pad, pt, ptlen);
}

/*
 * Decrypt an envelope's plaintext bytes (palloc'd), or NULL with *status
 * set when the ciphertext does not authenticate; checks privilege and
 * state (those raise).
 */
uint8 *
try_open_envelope(const cc_envelope *env, size_t *len, cc_status *status)
{
	ColcryptDek *d = ColcryptDekForDecrypt(env->key_id, env->key_version);
	uint8	   *out = palloc(env->ctlen + 1);
	cc_aead_item it;

	it.nonce = env->nonce;
	it.aad = env->header;
	it.aadlen = CC_ENV_HEADER_LEN;
	it.in = env->ct;
	it.inlen = env->ctlen;
	it.out = out;
	it.tag = (uint8 *) env->tag;
	if ((env->alg == CC_ALG_AES256_GCM ? cc_gcm_open_batch(d->gcm, &it, 1) :
		 cc_siv_open_batch(d->siv, &it, 1)) != 0)
	{
		cc_wipe(out, env->ctlen);
		pfree(out);
		*status = it.status;
		return NULL;
	}
	*status = CC_OK;
	*len = env->ctlen;
	if ((env->flags & CC_ENV_FLAG_PADDED) && !cc_unpad(out, env->ctlen, len))
	{
		/* Authentic, yet not padded as flagged: not ours; say so. */
		cc_wipe(out, env->ctlen);
		pfree(out);
		*status = CC_ERR_AUTH;
		return NULL;
	}
	return out;
}

/* Decrypt an envelope's plaintext bytes (palloc'd); checks privilege. */
uint8 *
open_envelope(const cc_envelope *env, size_t *len)
{
	cc_status	status;
	uint8	   *out = try_open_envelope(env, len, &status);

	if (out == NULL)
		ereport(ERROR,
				(errcode(status == CC_ERR_AUTH ? ERRCODE_DATA_CORRUPTED : ERRCODE_INTERNAL_ERROR),
				 errmsg("encrypted value failed authentication"),
				 errdetail("The ciphertext under data key \"%s\" version %u was altered or truncated.",
						   key_label(env->key_id), env->key_version)));
	return out;
}

/*
 * Why an envelope that parses cannot be a value of type t, or NULL if it
 * can: another type's code, or for a fixed-width plain type (int4, int8,
 * float8, date, timestamptz) a plaintext of another length.  No valid
 * ciphertext fails this; a relabelled, truncated or extended one can.
 */
const char *
misfit(const ColcryptTypeDesc *t, const cc_envelope *env)
{
	int16		typlen;

	if (env->type != t->code)
		return psprintf("The ciphertext holds a value of type %s.", desc_of(env->type)->name);
	typlen = plain_info(t)->typlen;
	if (typlen > 0 && (env->flags & CC_ENV_FLAG_PADDED))
		return psprintf("A value of type %s is never padded.", t->name);
	if ((env->flags & CC_ENV_FLAG_PADDED) && !cc_pad_is_bucket(env->ctlen))
		return psprintf("A padded value is %zu bytes long, which is no padding bucket.", env->ctlen);
	if (typlen > 0 && env->ctlen != (size_t) typlen)
		return psprintf("A value of type %s has %d bytes of plaintext; this ciphertext has %zu.",
						t->name, typlen, env->ctlen);
	return NULL;
}

/* Raise XX001 if a stored or computed envelope cannot be of type t. */
static void
check_fits(const ColcryptTypeDesc *t, const cc_envelope *env)
{
	const char *why = misfit(t, env);

	if (why != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("encrypted value is not a value of type %s", t->name),
				 errdetail("%s", why)));
}

/* Decrypt a datum of type t into a plain datum. */
Datum
open_datum(const ColcryptTypeDesc *t, struct varlena *v)
{
	cc_envelope env;
	uint8	   *pt;
	size_t		len;
	Datum		d;

	parse_datum(v, &env);
	check_fits(t, &env);
	pt = open_envelope(&env, &len);
	d = bytes_to_plain(t, pt, len);
	pfree(pt);
	return d;
}

/*
 * The envelope datum of an encrypted argument: a batch value's stored bytes
 * as they are, anything else detoasted.  Use this, not PG_GETARG_VARLENA_PP,
 * which would copy a batch value.
 */
struct varlena *
enc_arg(Datum d)
{
	struct varlena *ct = ColcryptBatchCiphertext(d);

	return ct ? ct : PG_DETOAST_DATUM_PACKED(d);
}

/* Error context: where a batch value that failed to open is stored. */
static void
batch_value_context(void *arg)
{
	char	   *where = ColcryptBatchDescribe(*(Datum *) arg);

	if (where != NULL)
		errcontext("encrypted value in %s", where);
}

/* Decrypt an encrypted argument; a batch value opens with its batch. */
Datum
open_arg(const ColcryptTypeDesc *t, Datum d)
{
	const uint8 *pt;
	size_t		len;
	ErrorContextCallback ctx;
	Datum		result;

	if (ColcryptBatchPlaintext(d, t->code, &pt, &len))
	{
		/* A varlena plaintext is handed on in place, not copied. */
		if (plain_info(t)->typlen == -1)
		{
			check_encoding(t, pt, len);
			return PointerGetDatum(pt - VARHDRSZ);
		}
		return bytes_to_plain(t, pt, len);
	}
	if (ColcryptBatchCiphertext(d) == NULL)
		return open_datum(t, enc_arg(d));

	/* A batch value that did not open with its batch: say where it is. */
	ctx.callback = batch_value_context;
	ctx.arg = &d;
	ctx.previous = error_context_stack;
	error_context_stack = &ctx;
	result = open_datum(t, enc_arg(d));
	error_context_stack = ctx.previous;
	return result;
}

static struct varlena *
seal_plain(const ColcryptTypeDesc *t, int32 typmod, Datum plain)
{
	PlainBytes	pb;

	plain_to_bytes(t, plain, &pb);
	if (typmod < 0)
		return seal_bytes(t, CC_TRANSIT_KEY_ID, false, false, pb.data, pb.len);
	return seal_bytes(t, ColcryptTypmodKeyId(typmod), ColcryptTypmodIsDeterministic(typmod),
					  ColcryptTypmodIsPadded(typmod), pb.data, pb.len);
}

/*
 * Move a value to the key and kind its typmod asks for: unchanged when it
 * is already there, re-encrypted otherwise.
 */
static struct varlena *
apply_typmod(const ColcryptTypeDesc *t, struct varlena *v, int32 typmod)
{
	cc_envelope env;
	uint32		target;
	bool		det;
	bool		pad;
	uint8	   *pt;
	size_t		len;
	struct varlena *res;

	if (typmod < 0)
		return v;
	v = PG_DETOAST_DATUM_PACKED(v);
	parse_datum(v, &env);
	/* Checked before a value is stored as is, not only when decrypted. */
	check_fits(t, &env);
	target = ColcryptTypmodKeyId(typmod);
	det = ColcryptTypmodIsDeterministic(typmod);
	pad = ColcryptTypmodIsPadded(typmod) && plain_info(t)->typlen < 0;
	if (env.key_id == target &&
		env.alg == (det ? CC_ALG_AES256_SIV : CC_ALG_AES256_GCM) &&
		((env.flags & CC_ENV_FLAG_PADDED) != 0) == pad)
		return v;

	if (env.key_id != CC_TRANSIT_KEY_ID && env.key_id != target &&
		!ColcryptHasKeyPrivilege(env.key_id, COLCRYPT_PRIV_DECRYPT))
	{
		ColcryptAuditEvent("move", "key", key_label(env.key_id), 0, "denied",
						   psprintf("role %s lacks the decrypt privilege; the value cannot be stored under data key %s",
									GetUserNameFromId(GetUserId(), false), key_label(target)));
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("value encrypted with data key \"%s\" cannot be stored under data key \"%s\"",
						key_label(env.key_id), key_label(target)),
				 errdetail("Moving a value to another key re-encrypts it, which needs the decrypt privilege on its key.")));
	}
	pt = open_envelope(&env, &len);
	res = seal_bytes(t, target, det, pad, pt, len);
	cc_wipe(pt, len);
	pfree(pt);
	return res;
}

/* ----------------------------------------------------------------------
 * Text and binary forms of ciphertext
 * ----------------------------------------------------------------------
 */

static char *
text_form(struct varlena *v)
{
	const char *data = VARDATA_ANY(v);
	int			len = VARSIZE_ANY_EXHDR(v);
	int			prefix = strlen(COLCRYPT_TEXT_PREFIX);
	char	   *out = palloc(prefix + pg_b64_enc_len(len) + 1);
	int			n;

	memcpy(out, COLCRYPT_TEXT_PREFIX, prefix);
	n = pg_b64_encode(COLCRYPT_B64_SRC(data), len, COLCRYPT_B64_DST(out + prefix),
					  pg_b64_enc_len(len));
	if (n < 0)
		elog(ERROR, "could not encode ciphertext");
	out[prefix + n] = '\0';
	return out;
}

static bool
is_text_form(const char *str)
{
	return strncmp(str, COLCRYPT_TEXT_PREFIX, strlen(COLCRYPT_TEXT_PREFIX)) == 0;
}

/* Reject a malformed ciphertext: 22P02 for text, 22P03 for binary input. */
static void
reject_malformed(const ColcryptTypeDesc *t, bool binary, const char *why)
{
	ereport(ERROR,
			(errcode(binary ? ERRCODE_INVALID_BINARY_REPRESENTATION : ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid %s ciphertext for type %s", binary ? "binary" : "text-form", t->name),
			 errdetail("%s", why)));
}

/*
 * Whether the session says it is moving ciphertext: colcrypt.output =
 * ciphertext, a restore (check_function_bodies off), a logical replication
 * apply worker (session_replication_role = replica).  Those settings are
 * the session's, so they speak only for code running as the session's own
 * role: inside a SECURITY DEFINER function, or any code PostgreSQL runs as
 * another role (a maintenance command, a foreign key action), the caller's
 * settings would otherwise decide whether the definer's code stores a
 * ciphertext the caller copied from someone else's row, and then decrypts
 * it for him.  There only the role running decides: ciphertext is taken
 * where it could not decrypt the key anyway.
 */
static bool
session_moves_ciphertext(void)
{
	if (GetUserId() != GetOuterUserId() || InSecurityRestrictedOperation() ||
		InNoForceRLSOperation())
		return false;
	return colcrypt_output == COLCRYPT_OUTPUT_CIPHERTEXT ||
		!check_function_bodies ||
		SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA;
}

/* Build a datum from envelope bytes given as input, checking its shape. */
static struct varlena *
envelope_input(const ColcryptTypeDesc *t, const char *bytes, size_t len, bool binary)
{
	cc_envelope env;
	cc_env_status st;
	const char *why;
	struct varlena *v;

	st = cc_envelope_parse((const uint8 *) bytes, len, &env);
	if (st != CC_ENV_OK)
		reject_malformed(t, binary, cc_env_status_string(st));
	why = misfit(t, &env);
	if (why != NULL)
		reject_malformed(t, binary, why);

	/* Moving ciphertext is for sessions that are moving ciphertext. */
	if (!(session_moves_ciphertext() ||
		  !ColcryptHasKeyPrivilege(env.key_id, COLCRYPT_PRIV_DECRYPT)))
		ereport(ERROR,
				(errcode(binary ? ERRCODE_INVALID_BINARY_REPRESENTATION : ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ciphertext input is not accepted for type %s in plaintext mode", t->name),
				 errdetail("This session can decrypt data key \"%s\", so input is taken as plaintext, and a value in colcrypt's ciphertext form is refused rather than stored as a string.",
						   key_label(env.key_id)),
				 errhint("To load ciphertext, for example a dump, SET colcrypt.output = 'ciphertext'. To store such a string as plaintext, cast it from %s.",
						 format_type_be(t->plain_type))));

	v = palloc(VARHDRSZ + len);
	SET_VARSIZE(v, VARHDRSZ + len);
	memcpy(VARDATA(v), bytes, len);
	return v;
}

static struct varlena *
parse_text_form(const ColcryptTypeDesc *t, const char *str)
{
	const char *b64 = str + strlen(COLCRYPT_TEXT_PREFIX);
	size_t		b64len = strlen(b64);
	uint8	   *raw = palloc(CC_TEXT_DECODED_MAX(b64len) + 1);
	size_t		rawlen;

	/* Strict base64 (envelope.c): its alphabet only, whole quanta, canonical padding. */
	switch (cc_text_decode(b64, b64len, raw, &rawlen))
	{
		case CC_TEXT_OK:
			break;
		case CC_TEXT_NOT_BASE64:
			reject_malformed(t, false, "The text after \"" COLCRYPT_TEXT_PREFIX "\" is not base64.");
			break;
		case CC_TEXT_NOT_CANONICAL:
			reject_malformed(t, false, "The base64 text is not in canonical form.");
			break;
	}
	return envelope_input(t, (const char *) raw, rawlen, false);
}

/*
 * Whether output shows this value's plaintext.  Never where the value is
 * being replicated: logical decoding calls output and send functions for
 * the changes it emits, in a walsender or, through the SQL functions
 * (pg_logical_slot_get_changes and the like), in an ordinary backend, and
 * always under a historic snapshot; and a logical replication walsender
 * runs the table sync's COPY ... TO STDOUT.  The subscriber's apply worker
 * takes the ciphertext form back as it is (see envelope_input).  Testing
 * these first also keeps decoding from reading colcrypt's tables, which are
 * not user catalog tables, under a historic snapshot.
 */
static bool
show_plaintext(const cc_envelope *env)
{
	if (colcrypt_output == COLCRYPT_OUTPUT_CIPHERTEXT || am_walsender ||
		HistoricSnapshotActive())
		return false;
	if (!ColcryptHasKeyPrivilege(env->key_id, COLCRYPT_PRIV_DECRYPT))
		return false;
	ColcryptNoteDecrypt(env->key_id);
	return true;
}

static Datum plain_input(const ColcryptTypeDesc *t, char *str);

/*
 * Call the plain type's input function.  Its error messages often quote
 * the input, which here is plaintext meant for an encrypted column: they
 * are re-raised with the same SQLSTATE and without the value.
 */
static Datum
plain_input(const ColcryptTypeDesc *t, char *str)
{
	PlainInfo  *pi = plain_info(t);
	MemoryContext cxt = CurrentMemoryContext;
	Datum		d = (Datum) 0;

	/* The statement carries plaintext from here on (logredact.c). */
	ColcryptNotePlaintext();
	PG_TRY();
	{
		d = InputFunctionCall(&pi->input, str, pi->ioparam, -1);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION)
			PG_RE_THROW();
		FlushErrorState();
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg(edata->sqlerrcode == ERRCODE_INVALID_TEXT_REPRESENTATION ?
						"invalid input syntax for type %s" :
						edata->sqlerrcode == ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE ?
						"value out of range for type %s" :
						edata->sqlerrcode == ERRCODE_DATETIME_VALUE_OUT_OF_RANGE ?
						"date/time value out of range for type %s" :
						edata->sqlerrcode == ERRCODE_INVALID_DATETIME_FORMAT ?
						"invalid datetime format for type %s" :
						"invalid input for type %s", t->name),
				 errdetail("The input function of type %s rejected the value; it is not shown because it was meant for an encrypted column.",
						   format_type_be(t->plain_type))));
	}
	PG_END_TRY();
	return d;
}

/* ----------------------------------------------------------------------
 * Generic SQL-callable bodies
 * ----------------------------------------------------------------------
 */

static Datum
enc_in_value(FunctionCallInfo fcinfo, int code)
{
	const ColcryptTypeDesc *t = desc_of(code);
	char	   *str = PG_GETARG_CSTRING(0);
	int32		typmod = PG_GETARG_INT32(2);

	if (is_text_form(str))
		PG_RETURN_POINTER(apply_typmod(t, parse_text_form(t, str), typmod));
	PG_RETURN_POINTER(seal_plain(t, typmod, plain_input(t, str)));
}

#ifdef COLCRYPT_HAVE_COPYFROM_STATE
/*
 * COPY FROM in text or csv format adds the column's input to the context
 * of an error its input function raises ("COPY t, line 1, column c:
 * \"...\""): here the plaintext, or a string meant to be stored as one.
 * While an encrypted type's input function runs under COPY, that context
 * names the line and column only, as COPY does for binary input.
 */
static void
copy_error_context(void *arg)
{
	CopyFromState cstate = (CopyFromState) arg;

	if (cstate->cur_attname != NULL)
		errcontext("COPY %s, line %llu, column %s", cstate->cur_relname,
				   (unsigned long long) cstate->cur_lineno, cstate->cur_attname);
	else
		CopyFromErrorCallback(arg);
}

static Datum
enc_in(FunctionCallInfo fcinfo, int code)
{
	ErrorContextCallback *volatile copy = error_context_stack;
	Datum		result;

	if (copy == NULL || copy->callback != CopyFromErrorCallback)
		return enc_in_value(fcinfo, code);
	copy->callback = copy_error_context;
	PG_TRY();
	{
		result = enc_in_value(fcinfo, code);
	}
	PG_FINALLY();
	{
		copy->callback = CopyFromErrorCallback;
	}
	PG_END_TRY();
	return result;
}
#else
/* Before 14 COPY's state is private to copy.c: its context keeps the value. */
static Datum
enc_in(FunctionCallInfo fcinfo, int code)
{
	return enc_in_value(fcinfo, code);
}
#endif

static Datum
enc_out(FunctionCallInfo fcinfo, int code)
{
	const ColcryptTypeDesc *t = desc_of(code);
	struct varlena *v = enc_arg(PG_GETARG_DATUM(0));
	cc_envelope env;

	parse_datum(v, &env);
	if (show_plaintext(&env))
		PG_RETURN_CSTRING(OutputFunctionCall(&plain_info(t)->output, open_arg(t, PG_GETARG_DATUM(0))));
	PG_RETURN_CSTRING(text_form(v));
}

static Datum
enc_recv(FunctionCallInfo fcinfo, int code)
{
	const ColcryptTypeDesc *t = desc_of(code);
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int32		typmod = PG_GETARG_INT32(2);
	int			remaining = buf->len - buf->cursor;
	PlainInfo  *pi;
	Datum		plain;

	if (remaining >= COLCRYPT_BINARY_MAGIC_LEN &&
		memcmp(buf->data + buf->cursor, COLCRYPT_BINARY_MAGIC, COLCRYPT_BINARY_MAGIC_LEN) == 0)
	{
		struct varlena *v;

		v = envelope_input(t, buf->data + buf->cursor + COLCRYPT_BINARY_MAGIC_LEN,
						   remaining - COLCRYPT_BINARY_MAGIC_LEN, true);
		buf->cursor = buf->len;
		PG_RETURN_POINTER(apply_typmod(t, v, typmod));
	}
	pi = plain_info(t);
	plain = ReceiveFunctionCall(&pi->recv, buf, pi->ioparam, -1);
	PG_RETURN_POINTER(seal_plain(t, typmod, plain));
}

static Datum
enc_send(FunctionCallInfo fcinfo, int code)
{
	const ColcryptTypeDesc *t = desc_of(code);
	struct varlena *v = enc_arg(PG_GETARG_DATUM(0));
	cc_envelope env;
	StringInfoData buf;

	parse_datum(v, &env);
	if (show_plaintext(&env))
		PG_RETURN_BYTEA_P(SendFunctionCall(&plain_info(t)->send, open_arg(t, PG_GETARG_DATUM(0))));
	pq_begintypsend(&buf);
	pq_sendbytes(&buf, COLCRYPT_BINARY_MAGIC, COLCRYPT_BINARY_MAGIC_LEN);
	pq_sendbytes(&buf, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

static Datum
enc_coerce(FunctionCallInfo fcinfo, int code)
{
	PG_RETURN_POINTER(apply_typmod(desc_of(code), enc_arg(PG_GETARG_DATUM(0)),
								   PG_GETARG_INT32(1)));
}

static Datum
enc_from_plain(FunctionCallInfo fcinfo, int code)
{
	int32		typmod = PG_NARGS() > 1 ? PG_GETARG_INT32(1) : -1;

	PG_RETURN_POINTER(seal_plain(desc_of(code), typmod, PG_GETARG_DATUM(0)));
}

/*
 * A value of another type that PostgreSQL casts to the plain type on
 * assignment (an integer into an encrypted_numeric column, a varchar into
 * an encrypted_text one): PostgreSQL's own cast, then encryption.
 */
typedef struct OtherCast
{
	Oid			source;			/* the argument type it was set up for */
	CoercionPathType path;		/* FUNC, RELABELTYPE or COERCEVIAIO */
	FmgrInfo	fn;				/* FUNC: the cast function */
	int			nargs;			/* FUNC: 1, or 3 when it takes a typmod */
	FmgrInfo	out;			/* COERCEVIAIO: the source's output function */
} OtherCast;

static Datum
enc_from_other(FunctionCallInfo fcinfo, int code)
{
	const ColcryptTypeDesc *t = desc_of(code);
	Oid			source = get_fn_expr_argtype(fcinfo->flinfo, 0);
	int32		typmod = PG_NARGS() > 1 ? PG_GETARG_INT32(1) : -1;
	OtherCast  *oc = fcinfo->flinfo->fn_extra;
	Datum		value = PG_GETARG_DATUM(0);
	Datum		plain;

	if (oc == NULL || oc->source != source)
	{
		Oid			funcid = InvalidOid;

		oc = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(OtherCast));
		oc->source = source;
		oc->path = find_coercion_pathway(t->plain_type, source, COERCION_ASSIGNMENT, &funcid);
		if (oc->path == COERCION_PATH_FUNC)
		{
			fmgr_info_cxt(funcid, &oc->fn, fcinfo->flinfo->fn_mcxt);
			oc->nargs = get_func_nargs(funcid);
		}
		else if (oc->path == COERCION_PATH_COERCEVIAIO)
		{
			Oid			outfn;
			bool		isvarlena;

			getTypeOutputInfo(source, &outfn, &isvarlena);
			fmgr_info_cxt(outfn, &oc->out, fcinfo->flinfo->fn_mcxt);
		}
		else if (oc->path != COERCION_PATH_RELABELTYPE)
			ereport(ERROR,
					(errcode(ERRCODE_CANNOT_COERCE),
					 errmsg("cannot cast type %s to %s", format_type_be(source), t->name)));
		fcinfo->flinfo->fn_extra = oc;
	}
	switch (oc->path)
	{
		case COERCION_PATH_FUNC:
			plain = oc->nargs >= 3 ?
				FunctionCall3(&oc->fn, value, Int32GetDatum(-1), BoolGetDatum(false)) :
				FunctionCall1(&oc->fn, value);
			break;
		case COERCION_PATH_COERCEVIAIO:
			plain = plain_input(t, OutputFunctionCall(&oc->out, value));
			break;
		default:
			plain = value;
			break;
	}
	PG_RETURN_POINTER(seal_plain(t, typmod, plain));
}

static Datum
enc_to_plain(FunctionCallInfo fcinfo, int code)
{
	return open_arg(desc_of(code), PG_GETARG_DATUM(0));
}

/* ----------------------------------------------------------------------
 * Per-type fmgr wrappers, from typelist.h
 * ----------------------------------------------------------------------
 */

#define TYPE_FUNCTIONS(name, code, plainoid, plainsql, collatable, category, bitwise) \
	DEFINE_FN(colcrypt_##name##_in, enc_in(fcinfo, code)) \
	DEFINE_FN(colcrypt_##name##_out, enc_out(fcinfo, code)) \
	DEFINE_FN(colcrypt_##name##_recv, enc_recv(fcinfo, code)) \
	DEFINE_FN(colcrypt_##name##_send, enc_send(fcinfo, code)) \
	DEFINE_FN(colcrypt_##name##_coerce, enc_coerce(fcinfo, code)) \
	DEFINE_FN(colcrypt_##name##_from_plain, enc_from_plain(fcinfo, code)) \
	DEFINE_FN(colcrypt_##name##_from_other, enc_from_other(fcinfo, code)) \
	DEFINE_FN(colcrypt_##name##_to_plain, enc_to_plain(fcinfo, code))

COLCRYPT_TYPES(TYPE_FUNCTIONS)

/* ----------------------------------------------------------------------
 * Type modifiers
 * ----------------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(colcrypt_typmod_in);

/*
 * (key) or (key, deterministic).  The typmod is computed from the key's
 * name alone, so a restore can create tables before the key catalog has
 * its rows; outside a restore (check_function_bodies on) the key must exist.
 */
Datum
colcrypt_typmod_in(PG_FUNCTION_ARGS)
{
	ArrayType  *ta = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	int			n;
	char	   *name;
	bool		det = false;
	bool		pad = false;
	bool		kind_given = false;
	uint32		key_id;
	int32		typmod;

	deconstruct_array(ta, CSTRINGOID, -2, false, TYPALIGN_CHAR, &elems, NULL, &n);
	if (n < 1 || n > 3)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an encrypted type takes a data key name and optionally \"deterministic\" and \"padded\""),
				 errhint("For example: colcrypt.encrypted_text(customers) or colcrypt.encrypted_text(customers, deterministic, padded).")));
	name = DatumGetCString(elems[0]);
	for (int i = 1; i < n; i++)
	{
		char	   *opt = DatumGetCString(elems[i]);

		if (pg_strcasecmp(opt, "padded") == 0 && !pad)
			pad = true;
		else if ((pg_strcasecmp(opt, "deterministic") == 0 || pg_strcasecmp(opt, "randomized") == 0) &&
				 !kind_given)
		{
			det = pg_strcasecmp(opt, "deterministic") == 0;
			kind_given = true;
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown or repeated encryption option \"%s\"", opt),
					 errhint("Use \"deterministic\" (or leave it out for randomized encryption) and \"padded\" (to hide lengths within buckets).")));
	}
	if (name[0] == '#')
	{
		/* The form typmod output uses for a key missing from the catalog. */
		char	   *end;
		unsigned long v = strtoul(name + 1, &end, 10);

		if (*end != '\0' || v == 0 || v > 0x1FFFFFFF)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid data key reference \"%s\"", name)));
		key_id = (uint32) v;
	}
	else
	{
		if (strlen(name) == 0 || strlen(name) > COLCRYPT_MAX_NAME_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("data key names are 1 to %d bytes long", COLCRYPT_MAX_NAME_LEN)));
		key_id = ColcryptKeyIdFromName(name);
		if (check_function_bodies)
			(void) ColcryptGetKeyMetaByName(name, false);
	}
	typmod = ColcryptMakeTypmod(key_id, det);
	if (pad)
		typmod |= COLCRYPT_TYPMOD_PADDED;
	PG_RETURN_INT32(typmod);
}

PG_FUNCTION_INFO_V1(colcrypt_typmod_out);

Datum
colcrypt_typmod_out(PG_FUNCTION_ARGS)
{
	int32		typmod = PG_GETARG_INT32(0);
	uint32		key_id = ColcryptTypmodKeyId(typmod);
	ColcryptKeyMeta *meta = colcrypt_preloaded ? ColcryptGetKeyMeta(key_id, true) : NULL;
	const char *name = meta ? quote_identifier(meta->name) : psprintf("\"#%u\"", key_id);

	PG_RETURN_CSTRING(psprintf("(%s%s%s)", name,
							   ColcryptTypmodIsDeterministic(typmod) ? ",deterministic" : "",
							   ColcryptTypmodIsPadded(typmod) ? ",padded" : ""));
}

/* ----------------------------------------------------------------------
 * Inspection
 * ----------------------------------------------------------------------
 */

/* The argument of an inspection function: a value of an encrypted type. */
static struct varlena *
encrypted_arg(FunctionCallInfo fcinfo, const char *fname, cc_envelope *env)
{
	Oid			argtype = get_fn_expr_argtype(fcinfo->flinfo, 0);
	struct varlena *v;

	if (!OidIsValid(argtype) || !ColcryptIsEncryptedType(argtype))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s() takes a value of an encrypted type", fname)));
	v = enc_arg(PG_GETARG_DATUM(0));
	parse_datum(v, env);
	return v;
}

PG_FUNCTION_INFO_V1(colcrypt_ciphertext);

/* The text form of any encrypted value, whatever colcrypt.output says. */
Datum
colcrypt_ciphertext(PG_FUNCTION_ARGS)
{
	cc_envelope env;
	struct varlena *v = encrypted_arg(fcinfo, "colcrypt.ciphertext", &env);

	PG_RETURN_TEXT_P(cstring_to_text(text_form(v)));
}

PG_FUNCTION_INFO_V1(colcrypt_inspect);

/* What an encrypted value's envelope says, without decrypting it. */
Datum
colcrypt_inspect(PG_FUNCTION_ARGS)
{
	cc_envelope env;
	struct varlena *v = encrypted_arg(fcinfo, "colcrypt.inspect", &env);
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfo(&s, "{\"format\": %u, \"algorithm\": \"%s\", \"type\": \"%s\", "
					 "\"key\": ",
					 env.version,
					 env.alg == CC_ALG_AES256_GCM ? "AES-256-GCM" : "AES-256-SIV",
					 desc_of(env.type)->name);
	escape_json(&s, key_label(env.key_id));
	if (env.flags & CC_ENV_FLAG_PADDED)
		appendStringInfo(&s, ", \"key_id\": %u, \"key_version\": %u, \"padded\": true, "
						 "\"padded_bytes\": %zu, \"stored_bytes\": %zu}",
						 env.key_id, env.key_version, env.ctlen,
						 (size_t) VARSIZE_ANY_EXHDR(v));
	else
		appendStringInfo(&s, ", \"key_id\": %u, \"key_version\": %u, "
						 "\"plaintext_bytes\": %zu, \"stored_bytes\": %zu}",
						 env.key_id, env.key_version, env.ctlen,
						 (size_t) VARSIZE_ANY_EXHDR(v));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data)));
}
