/*-------------------------------------------------------------------------
 *
 * pgshim.h
 *	  A stand-in for the few backend services colcrypt's provider files use,
 *	  so that the fuzz harnesses run their response parsing outside a
 *	  PostgreSQL backend (pgshim.c).
 *
 * What it provides: palloc and friends (every allocation is tracked and
 * fz_reset() frees what a run left, as a memory context reset would: the
 * leak check then sees only malloc() memory that the code under test lost);
 * ereport/elog (an ERROR jumps back to the harness, like a backend's
 * longjmp to its error handler); stand-ins for provider.c's helpers that
 * read the clock or settings (src/providers/provider_util.c is linked
 * itself); time, latch and interrupt stubs.  StringInfo,
 * psprintf, base64 and the JSON parser come from PostgreSQL's own
 * libpgcommon.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_FUZZ_PGSHIM_H
#define COLCRYPT_FUZZ_PGSHIM_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Call fn(arg) under an error handler: true if it returned, false if it
 * raised an ERROR (a provider that throws, as it would in a backend, is
 * not a bug; a crash, a leak or undefined behaviour on the way is).
 */
extern bool fz_run(void (*fn) (void *arg), void *arg);

/* Free everything palloc'd since the last reset (a context reset). */
extern void fz_reset(void);

/* The clock the stubs report, in PostgreSQL microseconds; tests may move it. */
extern int64_t fz_now;

/* How many ColcryptProviderWaitFd calls may still say "ready". */
extern int	fz_waits_left;

#endif							/* COLCRYPT_FUZZ_PGSHIM_H */
