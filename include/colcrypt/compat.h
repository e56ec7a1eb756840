/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PG_VERSION_NUM difference colcrypt cares about, in one place.
 *	  PostgreSQL 15 is the target; 13 to 17 should compile.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_COMPAT_H
#define COLCRYPT_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 130000
#error "colcrypt needs PostgreSQL 13 or later"
#endif

/* PostgreSQL 15 moved shared memory requests into shmem_request_hook. */
#if PG_VERSION_NUM >= 150000
#define COLCRYPT_HAVE_SHMEM_REQUEST_HOOK 1
#endif

/* MarkGUCPrefixReserved replaced EmitWarningsOnPlaceholders in 15. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/* COPY FROM's state (for the context of its errors) is visible from 14 on. */
#if PG_VERSION_NUM >= 140000
#define COLCRYPT_HAVE_COPYFROM_STATE 1
#endif

/* pg_b64_* took uint8 pointers from 18 on; colcrypt passes char. */
#if PG_VERSION_NUM >= 180000
#define COLCRYPT_B64_SRC(p) ((const uint8 *) (p))
#define COLCRYPT_B64_DST(p) ((uint8 *) (p))
#else
#define COLCRYPT_B64_SRC(p) ((const char *) (p))
#define COLCRYPT_B64_DST(p) ((char *) (p))
#endif

/* SendProcSignal's "look the pid up" argument was renamed in 17. */
#if PG_VERSION_NUM >= 170000
#define COLCRYPT_INVALID_BACKEND INVALID_PROC_NUMBER
#else
#define COLCRYPT_INVALID_BACKEND InvalidBackendId
#endif

#endif							/* COLCRYPT_COMPAT_H */
