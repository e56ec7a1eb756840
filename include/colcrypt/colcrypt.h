/*-------------------------------------------------------------------------
 *
 * colcrypt.h
 *	  Module-wide declarations: settings, start-up of each part, and the
 *	  vocabulary every other file uses.
 *
 * Vocabulary:
 *	 CMK	 customer master key; lives in a provider (KMS, HSM, keyring file)
 *			 and never enters the database (except with the file kind).
 *	 master key  colcrypt's named reference to a CMK (provider + key_ref).
 *	 DEK	 data key: 32 random bytes per key version, generated here,
 *			 stored only wrapped by a CMK; unwrapped copies live in the
 *			 shared key cache.
 *	 key id  a data key's 29-bit identifier, derived from its name so that
 *			 type modifiers resolve before the catalog is restored.
 *	 transit key  a per-server key that never leaves memory; it encrypts
 *			 values that have no column key yet (literals before their
 *			 type modifier is applied), so even those are never plaintext.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_H
#define COLCRYPT_H

#include "colcrypt/compat.h"

/*
 * colcrypt's own message domain: an error report knows it is colcrypt's,
 * whose messages never hold values (logredact.c relies on it).  There are
 * no translations, so messages read as written.
 */
#undef TEXTDOMAIN
#define TEXTDOMAIN "colcrypt"

/* colcrypt.output */
typedef enum ColcryptOutputMode
{
	COLCRYPT_OUTPUT_PLAINTEXT,
	COLCRYPT_OUTPUT_CIPHERTEXT
} ColcryptOutputMode;

/* colcrypt.audit */
typedef enum ColcryptAuditMode
{
	COLCRYPT_AUDIT_OFF,			/* nothing recorded */
	COLCRYPT_AUDIT_TABLE,		/* rows in colcrypt.audit_log */
	COLCRYPT_AUDIT_LOG,			/* lines in the server log */
	COLCRYPT_AUDIT_ALL			/* both */
} ColcryptAuditMode;

extern int	colcrypt_key_cache_entries;
extern int	colcrypt_key_cache_ttl;
extern int	colcrypt_kms_timeout;
extern int	colcrypt_output;
extern int	colcrypt_audit;
extern bool colcrypt_allow_core_dumps;

/* True when the library was loaded through shared_preload_libraries. */
extern bool colcrypt_preloaded;

/* Raise 55000 with a hint unless colcrypt was preloaded. */
extern void ColcryptRequirePreload(void);

/*
 * Call before the first key material (a data key, a derived subkey, a
 * master key, a provider secret) enters this process's private memory.
 */
extern void ColcryptGuardKeyMaterial(void);

/* Start-up of each part, called from _PG_init. */
extern void ColcryptKeyCacheInit(void);
extern void ColcryptKeyAccessInit(void);
extern void ColcryptDdlGuardInit(void);
extern void ColcryptLogRedactInit(void);

/*
 * The current statement handles plaintext of an encrypted value: its error
 * reports keep values, context and statement text out of the server log.
 */
extern void ColcryptNotePlaintext(void);

/*
 * The current statement decrypted for a role other than the session's,
 * under a key the session's role may not decrypt: error reports to the
 * client lose their values.
 */
extern void ColcryptNoteForeignPlaintext(void);
extern uint64 ColcryptForeignDecrypts(void);

/* Name of the extension's schema. */
#define COLCRYPT_SCHEMA "colcrypt"

/* Key names are identifiers in type modifiers: at most NAMEDATALEN - 1 bytes. */
#define COLCRYPT_MAX_NAME_LEN (NAMEDATALEN - 1)

#endif							/* COLCRYPT_H */
