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

/* colcrypt.lock_timeout: longest wait for others' table locks (ms). */
extern int	colcrypt_lock_timeout;

/* Create a data key (version 1, active) owned by owner; returns its id.  Audited. */
extern uint32 ColcryptCreateKey(const char *name, const char *master_key, Oid owner);

/*
 * Zero every copy of the wrapped keys of versions destroyed and not yet
 * shredded, in the caller's transaction; returns how many versions.
 */
extern int	ColcryptShredPending(void);

/* Whether a destroyed version's copies still wait to be shredded. */
extern bool ColcryptShredIsPending(void);

/*
 * Run what follows as a table's owner, as PostgreSQL's maintenance
 * commands run user code: SECURITY_RESTRICTED_OPERATION, a GUC nest level
 * with search_path = pg_catalog, pg_temp and row_security off (and, for a
 * superuser's re-encryption, session_replication_role = replica).
 * ColcryptRestoreUser undoes it; an error undoes it too (transaction or
 * subtransaction abort).
 */
typedef struct ColcryptOwnerContext
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} ColcryptOwnerContext;

extern void ColcryptBecomeTableOwner(Oid relid, bool replica, ColcryptOwnerContext *ctx);

/* The owner of a relation. */
extern Oid	ColcryptTableOwner(Oid relid);
extern void ColcryptRestoreUser(ColcryptOwnerContext *ctx);

#endif							/* COLCRYPT_LIFECYCLE_H */
