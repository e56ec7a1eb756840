/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  Batch values: encrypted datums whose plaintext is opened a batch at a
 *	  time (see batch.h for the contract).
 *
 * A batch value is a read-only expanded object.  Only R/O pointers to it
 * are ever handed out, so PostgreSQL never deletes or re-parents it; its
 * header lives in an array the batch owns and its "object context" is the
 * batch's per-fill context, which is reset when the scan moves to the next
 * batch.  Flattening it yields the stored envelope, bytes for bytes.
 *
 * Plaintexts are written into one arena per crypto call, allocated in the
 * per-fill context; a reset callback on that context wipes every arena
 * before its memory is released, whether the scan moves on, ends, or the
 * query fails.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "fmgr.h"
#include "utils/expandeddatum.h"

#include "colcrypt/batch.h"
#include "colcrypt/crypto.h"
#include "colcrypt/keys.h"

typedef enum BatchValueState
{
	BV_PENDING,					/* not opened yet */
	BV_OPEN,					/* plaintext at pt */
	BV_ALONE					/* left to the per-value path */
} BatchValueState;

typedef struct BatchColumn BatchColumn;

typedef struct BatchValue
{
	ExpandedObjectHeader hdr;	/* must be first */
	BatchColumn *col;
	struct varlena *ct;			/* the stored envelope datum */
	uint8	   *pt;				/* plaintext when BV_OPEN */
	uint32		ptlen;
	uint32		key_id;			/* its key, when BV_OPEN */
	BatchValueState state;
	bool		asked;			/* its plaintext was asked for */
} BatchValue;

struct BatchColumn
{
	ColcryptBatch *batch;
	BatchValue *values;			/* maxrows of them */
	int			nvalues;		/* highest row added + 1 */
	const char *origin;			/* "column c of relation r", for errors */
};

typedef struct Arena
{
	uint8	   *p;
	size_t		len;
} Arena;

struct ColcryptBatch
{
	MemoryContext fillcxt;		/* reset with the batch: values' memory */
	int			ncols;
	int			maxrows;
	BatchColumn *cols;
	cc_aead_item *items;		/* scratch for one crypto call: maxrows */
	BatchValue **members;		/* the values those items belong to */
	Arena	   *arenas;			/* plaintext arenas of this fill (in fillcxt) */
	int			narenas;
	int			maxarenas;
	MemoryContextCallback wipe_cb;
	bool		wipe_armed;
	Size		bytes;			/* ciphertext bytes of this fill's values */
	ItemPointerData *tids;		/* each row's, for errors (maxrows) */
	ColcryptBatchStats stats;
};

static Size bv_get_flat_size(ExpandedObjectHeader *eohptr);
static void bv_flatten_into(ExpandedObjectHeader *eohptr, void *result, Size allocated_size);

static const ExpandedObjectMethods batch_value_methods = {
	bv_get_flat_size,
	bv_flatten_into
};

/* The flat form is the stored envelope, with a 4-byte header. */
static Size
bv_get_flat_size(ExpandedObjectHeader *eohptr)
{
	BatchValue *v = (BatchValue *) eohptr;

	return VARHDRSZ + VARSIZE_ANY_EXHDR(v->ct);
}

static void
bv_flatten_into(ExpandedObjectHeader *eohptr, void *result, Size allocated_size)
{
	BatchValue *v = (BatchValue *) eohptr;
	Size		len = VARSIZE_ANY_EXHDR(v->ct);

	Assert(allocated_size == VARHDRSZ + len);
	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), VARDATA_ANY(v->ct), len);
}

/* Reset callback of the fill context: wipe every plaintext arena. */
static void
wipe_arenas(void *arg)
{
	ColcryptBatch *b = (ColcryptBatch *) arg;

	for (int i = 0; i < b->narenas; i++)
		cc_wipe(b->arenas[i].p, b->arenas[i].len);
	b->arenas = NULL;
	b->narenas = 0;
	b->maxarenas = 0;
	b->wipe_armed = false;
}

ColcryptBatch *
ColcryptBatchCreate(MemoryContext cxt, int ncols, int maxrows)
{
	ColcryptBatch *b = MemoryContextAllocZero(cxt, sizeof(ColcryptBatch));

	b->fillcxt = AllocSetContextCreate(cxt, "colcrypt batch", ALLOCSET_DEFAULT_SIZES);
	b->ncols = ncols;
	b->maxrows = maxrows;
	b->cols = MemoryContextAllocZero(cxt, sizeof(BatchColumn) * ncols);
	b->tids = MemoryContextAllocZero(cxt, sizeof(ItemPointerData) * maxrows);
	for (int c = 0; c < ncols; c++)
	{
		b->cols[c].batch = b;
		b->cols[c].values = MemoryContextAllocZero(cxt, sizeof(BatchValue) * maxrows);
	}
	b->items = MemoryContextAlloc(cxt, sizeof(cc_aead_item) * maxrows);
	b->members = MemoryContextAlloc(cxt, sizeof(BatchValue *) * maxrows);
	b->wipe_cb.func = wipe_arenas;
	b->wipe_cb.arg = b;
	return b;
}

void
ColcryptBatchReset(ColcryptBatch *b)
{
	MemoryContextReset(b->fillcxt);		/* runs wipe_arenas */
	for (int c = 0; c < b->ncols; c++)
		b->cols[c].nvalues = 0;
	b->bytes = 0;
}

Size
ColcryptBatchBytes(ColcryptBatch *b)
{
	return b->bytes;
}

const ColcryptBatchStats *
ColcryptBatchGetStats(ColcryptBatch *b)
{
	return &b->stats;
}

Datum
ColcryptBatchAdd(ColcryptBatch *b, int col, int row, Datum stored)
{
	BatchColumn *c = &b->cols[col];
	BatchValue *v = &c->values[row];
	struct varlena *ct = (struct varlena *) DatumGetPointer(stored);

	Assert(col >= 0 && col < b->ncols && row >= c->nvalues && row < b->maxrows);
	if (VARATT_IS_EXTERNAL(ct) || VARATT_IS_COMPRESSED(ct))
	{
		MemoryContext old = MemoryContextSwitchTo(b->fillcxt);

		ct = pg_detoast_datum_packed(ct);
		MemoryContextSwitchTo(old);
	}
	/* Rows skipped since the last value (NULLs) hold nothing to open. */
	for (int r = c->nvalues; r < row; r++)
	{
		c->values[r].ct = NULL;
		c->values[r].state = BV_ALONE;
	}
	EOH_init_header(&v->hdr, &batch_value_methods, b->fillcxt);
	v->col = c;
	v->ct = ct;
	v->pt = NULL;
	v->ptlen = 0;
	v->state = BV_PENDING;
	v->asked = false;
	c->nvalues = row + 1;
	b->bytes += VARSIZE_ANY(ct);
	return EOHPGetRODatum(&v->hdr);
}

/* The batch value behind d, or NULL. */
static inline BatchValue *
batch_value(Datum d)
{
	ExpandedObjectHeader *eoh;

	if (!VARATT_IS_EXTERNAL_EXPANDED(DatumGetPointer(d)))
		return NULL;
	eoh = DatumGetEOHP(d);
	return eoh->eoh_methods == &batch_value_methods ? (BatchValue *) eoh : NULL;
}

void
ColcryptBatchSetOrigin(ColcryptBatch *b, int col, const char *origin)
{
	b->cols[col].origin = origin;
}

void
ColcryptBatchSetRow(ColcryptBatch *b, int row, ItemPointer tid)
{
	if (tid != NULL && ItemPointerIsValid(tid))
		ItemPointerCopy(tid, &b->tids[row]);
	else
		ItemPointerSetInvalid(&b->tids[row]);
}

char *
ColcryptBatchDescribe(Datum d)
{
	BatchValue *v = batch_value(d);
	BatchColumn *c;
	ItemPointer tid;

	if (v == NULL || v->col->origin == NULL)
		return NULL;
	c = v->col;
	tid = &c->batch->tids[v - c->values];
	if (!ItemPointerIsValid(tid))
		return pstrdup(c->origin);
	return psprintf("%s, row (%u,%u)", c->origin,
					ItemPointerGetBlockNumberNoCheck(tid), ItemPointerGetOffsetNumberNoCheck(tid));
}

struct varlena *
ColcryptBatchCiphertext(Datum d)
{
	BatchValue *v = batch_value(d);

	return v ? v->ct : NULL;
}

static bool
parse_value(BatchValue *v, cc_envelope *env)
{
	return cc_envelope_parse((const uint8 *) VARDATA_ANY(v->ct),
							 VARSIZE_ANY_EXHDR(v->ct), env) == CC_ENV_OK;
}

static uint8 *
new_arena(ColcryptBatch *b, size_t len)
{
	uint8	   *p;

	if (!b->wipe_armed)
	{
		MemoryContextRegisterResetCallback(b->fillcxt, &b->wipe_cb);
		b->wipe_armed = true;
	}
	if (b->narenas == b->maxarenas)
	{
		int			n = b->maxarenas ? b->maxarenas * 2 : 4;
		Arena	   *a = MemoryContextAlloc(b->fillcxt, sizeof(Arena) * n);

		if (b->narenas)
			memcpy(a, b->arenas, sizeof(Arena) * b->narenas);
		b->arenas = a;
		b->maxarenas = n;
	}
	p = MemoryContextAlloc(b->fillcxt, len);
	b->arenas[b->narenas].p = p;
	b->arenas[b->narenas].len = len;
	b->narenas++;
	return p;
}

/*
 * Open v and every other pending value of its column under the same
 * envelope header (key, version, algorithm, type), in one crypto call.
 * The key lookup raises what the per-value path would raise for v.
 *
 * When few of the values opened so far were asked for (a selective filter
 * ahead of the decrypting expression: "WHERE id = 5" over a sequential
 * scan), opening whole batches would decrypt mostly for nothing; then only
 * v is opened, until the ratio recovers.
 */
static void
open_group(BatchValue *v, const cc_envelope *venv)
{
	BatchColumn *c = v->col;
	ColcryptBatch *b = c->batch;
	ColcryptDek *d = ColcryptDekForDecrypt(venv->key_id, venv->key_version);
	bool		narrow = b->stats.opened >= (uint64) 4 * b->maxrows &&
		b->stats.asked * 4 < b->stats.opened;
	size_t		n = 0,
				total = 0,
				failed;
	uint8	   *arena;

	for (int r = 0; r < c->nvalues; r++)
	{
		BatchValue *u = &c->values[r];
		cc_envelope e;
		cc_aead_item *it;

		if (u->state != BV_PENDING || (narrow && u != v))
			continue;
		if (u == v)
			e = *venv;
		else if (!parse_value(u, &e) ||
				 memcmp(e.header, venv->header, CC_ENV_HEADER_LEN) != 0)
			continue;
		it = &b->items[n];
		it->nonce = e.nonce;
		it->aad = e.header;
		it->aadlen = CC_ENV_HEADER_LEN;
		it->in = e.ct;
		it->inlen = e.ctlen;
		it->out = NULL;
		it->tag = (uint8 *) e.tag;
		b->members[n++] = u;
		total += e.ctlen;
	}

	/* Each plaintext gets a 4-byte varlena header in front, int-aligned. */
	arena = new_arena(b, total + n * (VARHDRSZ + sizeof(int32)));
	total = 0;
	for (size_t i = 0; i < n; i++)
	{
		total = INTALIGN(total);
		b->items[i].out = arena + total + VARHDRSZ;
		total += VARHDRSZ + b->items[i].inlen;
	}
	if (venv->alg == CC_ALG_AES256_GCM)
		failed = cc_gcm_open_batch(d->gcm, b->items, n);
	else
		failed = cc_siv_open_batch(d->siv, b->items, n);

	b->stats.calls++;
	b->stats.opened += n - failed;
	b->stats.alone += failed;
	for (size_t i = 0; i < n; i++)
	{
		BatchValue *u = b->members[i];

		size_t		plen = b->items[i].inlen;

		/* A padded group (the flag is in the shared header): unpad each. */
		if (b->items[i].status == CC_OK && (venv->flags & CC_ENV_FLAG_PADDED) &&
			!cc_unpad(b->items[i].out, b->items[i].inlen, &plen))
		{
			cc_wipe(b->items[i].out, b->items[i].inlen);
			b->items[i].status = CC_ERR_AUTH;	/* the single path says why */
		}
		if (b->items[i].status == CC_OK)
		{
			u->pt = b->items[i].out;
			u->ptlen = (uint32) plen;
			u->key_id = venv->key_id;
			SET_VARSIZE(u->pt - VARHDRSZ, VARHDRSZ + u->ptlen);
			u->state = BV_OPEN;
		}
		else
			u->state = BV_ALONE;
	}
}

bool
ColcryptBatchPlaintext(Datum d, int type, const uint8 **pt, size_t *len)
{
	BatchValue *v = batch_value(d);

	if (v == NULL)
		return false;
	if (!v->asked)
	{
		v->asked = true;
		v->col->batch->stats.asked++;
	}
	if (v->state == BV_PENDING)
	{
		cc_envelope env;

		if (!parse_value(v, &env) || env.type != type)
		{
			v->state = BV_ALONE;
			v->col->batch->stats.alone++;
		}
		else
			open_group(v, &env);
	}
	if (v->state != BV_OPEN)
		return false;

	/*
	 * The batch was opened by whoever asked first, maybe another role (a
	 * SECURITY DEFINER function called in the same scan), or before a
	 * revoke, a SET ROLE, the end of a definer function: every value handed
	 * out is checked for the role asking now (cached, so this costs a
	 * comparison or two).
	 */
	ColcryptCheckKeyPrivilege(v->key_id, COLCRYPT_PRIV_DECRYPT);
	*pt = v->pt;
	*len = v->ptlen;
	return true;
}
