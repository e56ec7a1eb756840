/*-------------------------------------------------------------------------
 *
 * lifecycle.h
 *	  Key lifecycle: states, master key rotation, re-encryption progress,
 *	  column conversion.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_LIFECYCLE_H
#define COLCRYPT_LIFECYCLE_H

/* Shared memory for the re-encryption progress rows. */
extern void ColcryptLifecycleShmemRequest(void);
extern void ColcryptLifecycleShmemStartup(void);

/* colcrypt.default_master_key. */
extern void ColcryptLifecycleDefineSettings(void);

/* Create a data key (version 1, active); returns its id.  Audited. */
extern uint32 ColcryptCreateKey(const char *name, const char *master_key);

/*
 * Zero every copy of the wrapped keys of versions destroyed and not yet
 * shredded, in the caller's transaction; returns how many versions.
 */
extern int	ColcryptShredPending(void);

/* Whether a destroyed version's copies still wait to be shredded. */
extern bool ColcryptShredIsPending(void);

#endif							/* COLCRYPT_LIFECYCLE_H */
