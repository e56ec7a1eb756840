/*-------------------------------------------------------------------------
 *
 * catalog.h
 *	  Reading colcrypt's catalog tables (providers, master keys, data keys,
 *	  their versions and grants) and the backend-local cache of key
 *	  metadata.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_CATALOG_H
#define COLCRYPT_CATALOG_H

#include "utils/jsonb.h"

/* NIST SP 800-57 key states of a data key version. */
typedef enum ColcryptKeyState
{
	COLCRYPT_KEY_PRE_ACTIVATION,
	COLCRYPT_KEY_ACTIVE,
	COLCRYPT_KEY_DEACTIVATED,
	COLCRYPT_KEY_COMPROMISED,
	COLCRYPT_KEY_DESTROYED,
	COLCRYPT_KEY_DESTROYED_COMPROMISED
} ColcryptKeyState;

extern const char *ColcryptKeyStateName(ColcryptKeyState state);
extern bool ColcryptKeyStateFromName(const char *name, ColcryptKeyState *state);

/* Key privileges, as bits. */
#define COLCRYPT_PRIV_ENCRYPT	0x01
#define COLCRYPT_PRIV_DECRYPT	0x02
#define COLCRYPT_PRIV_ALL		(COLCRYPT_PRIV_ENCRYPT | COLCRYPT_PRIV_DECRYPT)

typedef struct ColcryptKeyVersionMeta
{
	int32		version;		/* 1, 2, ... */
	ColcryptKeyState state;		/* its NIST state */
} ColcryptKeyVersionMeta;

typedef struct ColcryptGrantMeta
{
	Oid			grantee;		/* role granted to */
	int			privs;			/* COLCRYPT_PRIV_* bits */
} ColcryptGrantMeta;

/* What the data path needs to know of a data key; no key material. */
typedef struct ColcryptKeyMeta
{
	uint32		key_id;			/* hash key: id derived from the name */
	char		name[NAMEDATALEN];	/* the key's name */
	Oid			owner;			/* the role that created it */
	int32		active_version; /* version new values use, 0 when none */
	int			nversions;		/* entries in versions */
	ColcryptKeyVersionMeta *versions;	/* ascending by version */
	int			ngrants;		/* entries in grants */
	ColcryptGrantMeta *grants;	/* privileges granted to roles */
} ColcryptKeyMeta;

/* Everything unwrapping one key version needs, read fresh from the catalog. */
typedef struct ColcryptUnwrapInfo
{
	uint32		key_id;			/* the data key */
	int32		version;		/* its version */
	ColcryptKeyState state;		/* state of that version */
	bytea	   *wrapped;		/* wrapped key, NULL once destroyed */
	char	   *wrap_meta;		/* provider's note on the wrapping (CMK version) */
	char	   *master_key;		/* master key name */
	char	   *key_ref;		/* CMK name at the provider */
	char	   *provider;		/* provider name */
	char	   *kind;			/* provider kind */
	Jsonb	   *options;		/* provider options */
} ColcryptUnwrapInfo;

/* The key id a name maps to (1 .. 2^29 - 1), independent of the catalog. */
extern uint32 ColcryptKeyIdFromName(const char *name);

/*
 * Cached metadata of a key, by id or by name.  The result stays valid until
 * the next call into this module.  missing_ok false raises 42704.
 */
extern ColcryptKeyMeta *ColcryptGetKeyMeta(uint32 key_id, bool missing_ok);
extern ColcryptKeyMeta *ColcryptGetKeyMetaByName(const char *name, bool missing_ok);

/* The metadata of one version, or NULL. */
extern ColcryptKeyVersionMeta *ColcryptFindVersion(ColcryptKeyMeta *meta, int32 version);

/*
 * Incremented whenever cached metadata is thrown away, so that callers
 * caching things derived from it know when to look again.
 */
extern uint64 ColcryptMetaGeneration(void);

/*
 * Whether this backend knows its metadata to be out of date (a change in
 * this transaction, an invalidation received) and will reload it at the
 * next ColcryptCatalogCheckFreshness.
 */
extern bool ColcryptMetaIsStale(void);

/* Check for catalog changes by other backends and drop stale metadata. */
extern void ColcryptCatalogCheckFreshness(void);

/* Read what unwrapping (key_id, version) needs; false if no such version. */
extern bool ColcryptFetchUnwrapInfo(uint32 key_id, int32 version,
									ColcryptUnwrapInfo *info);

/*
 * Note that this transaction changed the catalog: other backends (and
 * standbys, through the WAL-logged invalidation) drop their cached metadata
 * at commit, and this backend drops it now.
 */
extern void ColcryptCatalogChanged(void);

/*
 * Run one SQL statement against the catalog as the owner of the colcrypt
 * schema, so that callers need no privileges on the tables themselves.
 * Returns SPI_processed; if result is not NULL, the first column of the
 * first row (or NULL) is copied into the caller's memory context.
 */
extern uint64 ColcryptCatalogExec(const char *sql, int nargs, Oid *argtypes,
								  Datum *values, const char *nulls,
								  Datum *result, bool *result_isnull);

/*
 * Wipe a key version from the shared cache when this transaction commits
 * (after the catalog change is visible), for destroyed versions.
 */
extern void ColcryptForgetAtCommit(uint32 key_id, int32 version);

/* The OID of one of colcrypt's catalog tables by name, InvalidOid if absent. */
extern Oid	ColcryptCatalogRelid(const char *relname);

#endif							/* COLCRYPT_CATALOG_H */
