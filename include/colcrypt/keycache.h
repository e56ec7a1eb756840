/*-------------------------------------------------------------------------
 *
 * keycache.h
 *	  The cluster-wide cache of unwrapped data keys in shared memory, the
 *	  catalog epoch, and the transit key's secret.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_KEYCACHE_H
#define COLCRYPT_KEYCACHE_H

#include "colcrypt/crypto.h"
#include "datatype/timestamp.h"

typedef enum ColcryptCacheResult
{
	COLCRYPT_CACHE_HIT,			/* dek filled from the cache */
	COLCRYPT_CACHE_LOAD,		/* caller must unwrap, then Fill or Abandon */
	COLCRYPT_CACHE_UNCACHED		/* no slot free: unwrap and do not Fill */
} ColcryptCacheResult;

/*
 * Look up (key_id, version) of the current database.  On a hit, copies the
 * key into dek and sets *loaded_at.  On a miss, the caller becomes the one
 * loader of that entry (others wait for it rather than calling the provider
 * too) and must call ColcryptKeyCacheFill or ColcryptKeyCacheAbandon.
 */
extern ColcryptCacheResult ColcryptKeyCacheAcquire(uint32 key_id, uint32 version, Oid owner,
												   uint8 *dek,
												   TimestampTz *loaded_at);

/*
 * Publish a key this backend loaded.  It is stored only if the catalog epoch
 * is still epoch_seen (else the catalog changed during the provider call and
 * the key may have been destroyed meanwhile) and the load was not forgotten
 * meanwhile.  Sets *loaded_at.
 */
extern void ColcryptKeyCacheFill(uint32 key_id, uint32 version,
								 const uint8 *dek, uint64 epoch_seen,
								 TimestampTz *loaded_at);

/*
 * Give up a load, from PG_CATCH while its error is being thrown: backends
 * that waited for it fail with the same error (unless it is a cancel or
 * the like) rather than each asking the provider in turn.
 */
extern void ColcryptKeyCacheAbandon(uint32 key_id, uint32 version);

/*
 * Wipe and drop this database's cached versions of a key (version < 0:
 * every version), loads in progress included; ForgetVersions takes an array
 * of (key_id << 32 | version) pairs, which it sorts.
 */
extern void ColcryptKeyCacheForget(uint32 key_id, int64 version);
extern void ColcryptKeyCacheForgetVersions(uint64 *kvs, int n);
extern int	ColcryptKeyCacheEvictAll(void);

/* Count one call to a key provider, and whether it failed. */
extern void ColcryptKeyCacheCountProviderCall(bool failed);

/*
 * The catalog epoch: bumped after every committed change to keys, grants or
 * providers, read before every catalog load, so that a backend sees another
 * one's change at its next key use.
 */
extern uint64 ColcryptCatalogEpoch(void);
extern void ColcryptBumpCatalogEpoch(void);

/*
 * A catalog change being committed: announced before its commit becomes
 * visible, ended (committed or not) after.  An epoch read while one is
 * under way is not settled: metadata cached before it cannot be trusted.
 */
extern void ColcryptCatalogCommitBegins(void);
extern void ColcryptCatalogCommitEnds(void);
extern bool ColcryptCatalogEpochSettled(uint64 epoch);

/* The transit key of a generation, derived from the per-server secret. */
extern uint32 ColcryptTransitNextGeneration(void);
extern void ColcryptTransitKey(uint32 generation, uint8 key[CC_AES256_KEY_LEN]);

/*
 * SipHash-2-4 under a key derived from the per-server secret: for hashing
 * plaintext-derived values that may reach temp files.  Changes at restart.
 */
extern uint64 ColcryptServerHash(const void *data, size_t len);

#endif							/* COLCRYPT_KEYCACHE_H */
