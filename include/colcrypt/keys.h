/*-------------------------------------------------------------------------
 *
 * keys.h
 *	  Access to data keys for the data path: a ready cipher context per key
 *	  version, the state gate (NIST states) and the privilege checks.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_KEYS_H
#define COLCRYPT_KEYS_H

#include "colcrypt/catalog.h"
#include "colcrypt/crypto.h"
#include "datatype/timestamp.h"

/*
 * A key version ready for use in this backend.  Owned by keyaccess.c; valid
 * until the next call into it.  Holds derived subkeys only (one for GCM, one
 * for SIV), never the data key itself.
 */
typedef struct ColcryptDek
{
	uint32		key_id;			/* hash key: data key id (0: transit) */
	uint32		version;		/* hash key: version (transit: generation) */
	cc_gcm_key *gcm;			/* AES-256-GCM context for randomized values */
	cc_siv_key *siv;			/* AES-256-SIV context for deterministic values */
	TimestampTz expires_at;		/* end of colcrypt.key_cache_ttl; 0: never */
	uint64		meta_generation;	/* metadata generation its state was checked at */
	uint64		uses;			/* values encrypted (transit: bounded per key) */
} ColcryptDek;

/*
 * The active version of a key, for encrypting.  Checks the encrypt
 * privilege and that an active version exists.  key_id 0 gives this
 * backend's current transit key.
 */
extern ColcryptDek *ColcryptDekForEncrypt(uint32 key_id);

/*
 * A given version of a key, for decrypting.  Checks the decrypt privilege
 * and that the version's state allows decryption.  key_id 0 gives the
 * transit key of that generation (no privilege needed: a transit value
 * holds what the session itself typed).
 */
extern ColcryptDek *ColcryptDekForDecrypt(uint32 key_id, uint32 version);

/*
 * Whether the current role holds priv (COLCRYPT_PRIV_*) on the key; for
 * decrypting inside a foreign key check, also the role it runs for.
 * Cached per role and key until grants, keys or roles change.
 */
extern bool ColcryptHasKeyPrivilege(uint32 key_id, int priv);

/* Whether a given role holds priv on the key (cached likewise). */
extern bool ColcryptRoleHasKeyPrivilege(Oid role, uint32 key_id, int priv);

/* Raise 42501 with a hint naming the grant unless it does. */
extern void ColcryptCheckKeyPrivilege(uint32 key_id, int priv);

/* Plaintext of the key is handed out now (ColcryptCheckKeyPrivilege does it). */
extern void ColcryptNoteDecrypt(uint32 key_id);

/*
 * The exec layer reports each executor call (ExecutorRun, ExecutorFinish)
 * on entry and exit, so that a foreign key check can be attributed to the
 * role whose statement caused it.
 */
extern void ColcryptAskerPush(void);
extern void ColcryptAskerPop(void);
extern Oid	ColcryptReferentialAsker(void);

/*
 * The bytes of a data key version, from the shared cache or the provider;
 * for re-wrapping only.  Caller wipes them.  Checks nothing but existence.
 */
extern void ColcryptDekBytes(uint32 key_id, uint32 version, uint8 *dek);

/* Drop this backend's contexts of a key (version < 0: all versions). */
extern void ColcryptDekForget(uint32 key_id, int64 version);

/*
 * Make a new data key version: 32 random bytes wrapped by the master key.
 * Appends the wrapped blob to wrapped and returns the provider's note.
 */
extern char *ColcryptGenerateWrappedDek(const char *master_key, uint32 key_id,
										uint32 version, StringInfo wrapped);

/*
 * Privileges on providers and master keys (objacl.c).  Each Check raises
 * 42501 (42704 for a missing master key).
 */
extern void ColcryptCheckProviderAdmin(const char *action);
extern bool ColcryptProviderUsable(Oid role, const char *provider);
extern void ColcryptCheckProviderUsage(const char *provider);
extern void ColcryptCheckMasterKeyOwner(const char *name, const char *action);
extern void ColcryptCheckMasterKeyUsage(const char *name);

/* Roles named in the catalog: DROP ROLE, DROP OWNED, REASSIGN OWNED (roles.c). */
extern void ColcryptRolesInit(void);

#endif							/* COLCRYPT_KEYS_H */
