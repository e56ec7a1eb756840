/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  Batched decryption in the executor.
 *
 * The batch scan (batchscan.c) reads a batch of rows and hands each
 * encrypted attribute on as a *batch value*: a read-only expanded object
 * (utils/expandeddatum.h) of the same encrypted type.  Its flat form, what
 * heap_form_tuple, datumCopy, a sort or hash spill, a tuplestore or a tuple
 * queue make of it, is the stored ciphertext, so nothing decrypted can leave
 * the backend's memory through it.  The first function that wants the
 * plaintext of one value (a cast, output, a comparison) opens every pending
 * value of that column in the batch that shares its key version, in one
 * call into the crypto layer; the others are then served from memory.
 *
 * Errors keep the per-value semantics: the key's privilege and state are
 * checked when a value of it is first asked for, exactly as the per-value
 * path would, and the privilege again for every value handed out, for the
 * role asking at that moment (a batch opened inside a SECURITY DEFINER
 * function serves no plaintext to its caller); a value that does not open
 * in the batch (malformed, altered, another type) is opened again alone
 * when it is asked for, which raises the error the per-value path raises.
 * A value nobody asks for raises nothing, though it may be decrypted along
 * with its batch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_BATCH_H
#define COLCRYPT_BATCH_H

#include "colcrypt/envelope.h"
#include "storage/itemptr.h"
#include "utils/memutils.h"

typedef struct ColcryptBatch ColcryptBatch;

/*
 * A batch of up to maxrows rows times ncols encrypted columns, allocated in
 * cxt.  Plaintexts it opens are wiped when it is reset or its memory goes
 * (also on error).
 */
extern ColcryptBatch *ColcryptBatchCreate(MemoryContext cxt, int ncols, int maxrows);

/* Wipe and forget every value; the batch can be filled again. */
extern void ColcryptBatchReset(ColcryptBatch *b);

/*
 * The batch value for a stored datum of column col, row row.  The datum is
 * detoasted into the batch's memory when it is compressed or external;
 * otherwise it must stay valid until the batch is reset.
 */
extern Datum ColcryptBatchAdd(ColcryptBatch *b, int col, int row, Datum stored);

/*
 * Ciphertext bytes of the values added since the last reset (their
 * plaintexts take as much again once opened): the batch scan ends a batch
 * at COLCRYPT_BATCH_MAX_BYTES.
 */
extern Size ColcryptBatchBytes(ColcryptBatch *b);

#define COLCRYPT_BATCH_MAX_BYTES	(1024 * 1024)

/*
 * Where the values come from, for error messages: a column's description
 * ("column ssn of relation public.customers", kept by the caller) and each
 * row's ctid.  ColcryptBatchDescribe gives "<origin>, row (b,o)" for a
 * batch value, or NULL.
 */
extern void ColcryptBatchSetOrigin(ColcryptBatch *b, int col, const char *origin);
extern void ColcryptBatchSetRow(ColcryptBatch *b, int row, ItemPointer tid);
extern char *ColcryptBatchDescribe(Datum d);

/* The stored envelope datum of a batch value, or NULL if d is not one. */
extern struct varlena *ColcryptBatchCiphertext(Datum d);

/*
 * The plaintext bytes of batch value d of type code type, opening its batch
 * first if needed.  False when d is not a batch value or did not open in
 * the batch: the caller then opens the ciphertext itself.  The plaintext
 * is preceded by a 4-byte varlena header, so pt - VARHDRSZ is a varlena of
 * it (a text, bytea, numeric or jsonb datum, for those types); both last
 * until the batch is reset, which is after the scan has moved past the row.
 */
extern bool ColcryptBatchPlaintext(Datum d, int type, const uint8 **pt, size_t *len);

/* What a batch did, summed over its resets (EXPLAIN ANALYZE shows it). */
typedef struct ColcryptBatchStats
{
	uint64		asked;			/* values whose plaintext was asked for */
	uint64		calls;			/* calls into the crypto layer */
	uint64		opened;			/* values they opened */
	uint64		alone;			/* values left to the per-value path */
} ColcryptBatchStats;

extern const ColcryptBatchStats *ColcryptBatchGetStats(ColcryptBatch *b);

/* The batch scan: settings and planner hook (batchscan.c). */
extern bool colcrypt_batch_scan;
extern int	colcrypt_batch_size;
extern void ColcryptBatchScanDefineSettings(void);
extern void ColcryptBatchScanInit(void);

/* Checks the executor makes (execguard.c). */
extern void ColcryptExecGuardInit(void);
extern bool ColcryptOpfamilyOrdersPlaintext(Oid opfamily);

#endif							/* COLCRYPT_BATCH_H */
