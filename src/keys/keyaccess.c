/*-------------------------------------------------------------------------
 *
 * keyaccess.c
 *	  Data keys for the data path: per-backend cipher contexts, the state
 *	  gate, privileges, unwrapping through the shared cache, and the
 *	  transit key.
 *
 * A backend keeps one context pair per key version it has used (GCM and
 * SIV, each keyed with a subkey derived from the data key by HKDF), so no
 * value pays for a key schedule.  A context is dropped when its TTL ends
 * (colcrypt.key_cache_ttl from when the key was unwrapped), when the
 * catalog says its version may no longer be used, or when the table grows
 * past a bound.  The data key itself is held only for the instant of the
 * derivation and wiped.
 *
 * An idle backend lets go too.  A TTL's end and a catalog epoch change
 * (key_cache_evict(), any key catalog change) are otherwise noticed only at
 * the backend's next key use, which for a connection idle in a pool may be
 * hours away.  So a backend holding contexts arms a timer for the earliest
 * TTL end, and key_cache_evict() signals every backend; either raises
 * PostgreSQL's own catch-up interrupt, which an idle backend serves by
 * starting and committing an empty transaction, and at the end of every
 * transaction the contexts whose TTL has ended, or all of them once the
 * epoch moved, are freed (freeing cleanses each key schedule).  A backend
 * idle inside a transaction block lets go when that transaction ends.
 *
 * Lookup order for a version without a live context: the shared cache
 * (keycache.c), then the provider, which is asked by one backend while the
 * others wait (see keycache.c's protocol).
 *
 * Core dumps.  The shared cache is left out of every core dump
 * (MADV_DONTDUMP), but a backend's own contexts hold AES key schedules,
 * whose first round keys are the derived subkeys themselves, in memory
 * that OpenSSL allocates: they cannot be placed in a region of our own
 * (OpenSSL's allocator can only be replaced before its first allocation,
 * which the postmaster has made long before it loads us).  So a process
 * makes itself non-dumpable (PR_SET_DUMPABLE) before the first key
 * material enters its private memory, unless colcrypt.allow_core_dumps is
 * on: no core file of it is written, and no other process of the same OS
 * user can ptrace it or read /proc/<pid>/mem.  Such a process also holds
 * plaintext of the values it handled, which this keeps out of core files
 * too.  Processes that never touch a key keep their core dumps.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/resource.h>

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "colcrypt/envelope.h"
#include "colcrypt/audit.h"
#include "colcrypt/keycache.h"
#include "colcrypt/keys.h"
#include "colcrypt/provider.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/sinval.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#define MAX_LOCAL_DEKS		1024
/* Re-key the transit key long before GCM's 2^32 random-nonce bound. */
#define TRANSIT_MAX_USES	(UINT64CONST(1) << 28)

typedef struct DekKey
{
	uint32		key_id;
	uint32		version;
} DekKey;

static HTAB *deks = NULL;

/*
 * The entry dek_for() returned last: a scan asks for the same key version
 * value after value, and the hash lookup was 8% of a decrypting scan
 * (perf).  Reset whenever any entry is removed or the table rebuilt.
 */
static ColcryptDek *last_dek = NULL;
static uint32 transit_generation = 0;	/* this backend's current one */
static uint64 deks_generation = 0;	/* metadata generation the contexts belong to */
static uint64 deks_epoch = 0;	/* catalog epoch when the table was last emptied */
static TimestampTz expiry_armed = 0;	/* when the TTL timer fires; 0: not armed */
static TimeoutId expiry_timeout = MAX_TIMEOUTS; /* MAX_TIMEOUTS: not registered */
static bool xact_callback_registered = false;

void
ColcryptKeyAccessInit(void)
{
	/* Nothing to set up at load time; contexts are made on first use. */
}

static void
dek_release(ColcryptDek *d)
{
	cc_gcm_key_free(d->gcm);
	cc_siv_key_free(d->siv);
	d->gcm = NULL;
	d->siv = NULL;
}

/* Release the contexts of matching entries (all of them if all is true). */
static void
forget_matching(bool all, uint32 key_id, int64 version)
{
	HASH_SEQ_STATUS seq;
	ColcryptDek *d;

	last_dek = NULL;
	if (all)
		deks_epoch = ColcryptCatalogEpoch();
	if (deks == NULL)
		return;
	hash_seq_init(&seq, deks);
	while ((d = hash_seq_search(&seq)) != NULL)
	{
		if (all || (d->key_id == key_id && (version < 0 || d->version == (uint32) version)))
		{
			dek_release(d);
			hash_search(deks, d, HASH_REMOVE, NULL);
		}
	}
}

void
ColcryptDekForget(uint32 key_id, int64 version)
{
	forget_matching(false, key_id, version);
}

static HTAB *
dek_table(void)
{
	/*
	 * When key metadata changed (a state change, a destroyed version), drop
	 * every context: they are rebuilt from the shared cache at their next
	 * use, and a destroyed version's key schedule does not linger here.
	 */
	if (deks != NULL && deks_generation != ColcryptMetaGeneration())
		forget_matching(true, 0, 0);
	deks_generation = ColcryptMetaGeneration();
	if (deks == NULL || hash_get_num_entries(deks) >= MAX_LOCAL_DEKS)
	{
		HASHCTL		ctl;

		forget_matching(true, 0, 0);
		if (deks != NULL)
			hash_destroy(deks);
		ctl.keysize = sizeof(DekKey);
		ctl.entrysize = sizeof(ColcryptDek);
		deks = hash_create("colcrypt data key contexts", 64, &ctl,
						   HASH_ELEM | HASH_BLOBS);
	}
	return deks;
}

/* The TTL timer: raise the catch-up interrupt (signal handler context). */
static void
expiry_timeout_handler(void)
{
	HandleCatchupInterrupt();
}

/* Arm the TTL timer for the earliest end among the contexts, if any. */
static void
arm_expiry(void)
{
	TimestampTz next = 0;

	if (deks != NULL)
	{
		HASH_SEQ_STATUS seq;
		ColcryptDek *d;

		hash_seq_init(&seq, deks);
		while ((d = hash_seq_search(&seq)) != NULL)
			if (d->gcm != NULL && d->expires_at != 0 && (next == 0 || d->expires_at < next))
				next = d->expires_at;
	}
	if (next == expiry_armed)
		return;
	if (expiry_timeout == MAX_TIMEOUTS)
		expiry_timeout = RegisterTimeout(USER_TIMEOUT, expiry_timeout_handler);
	if (next == 0)
		disable_timeout(expiry_timeout, false);
	else
		enable_timeout_at(expiry_timeout, next);
	expiry_armed = next;
}

/*
 * At the end of every transaction (the empty one an idle backend runs for
 * the catch-up interrupt included): free every context once the catalog
 * epoch moved, else those whose TTL has ended.  Freeing is all it does, so
 * it cannot fail.
 */
static void
release_stale_contexts(XactEvent event, void *arg)
{
	HASH_SEQ_STATUS seq;
	ColcryptDek *d;
	TimestampTz now;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	if (deks == NULL || hash_get_num_entries(deks) == 0)
		return;
	if (ColcryptCatalogEpoch() != deks_epoch)
	{
		forget_matching(true, 0, 0);
		arm_expiry();
		return;
	}
	if (expiry_armed == 0 || (now = GetCurrentTimestamp()) < expiry_armed)
		return;
	last_dek = NULL;
	hash_seq_init(&seq, deks);
	while ((d = hash_seq_search(&seq)) != NULL)
	{
		if (d->expires_at != 0 && d->expires_at <= now)
		{
			dek_release(d);
			hash_search(deks, d, HASH_REMOVE, NULL);
		}
	}
	arm_expiry();
}

/* A context was built: make sure it is let go of at its TTL's end. */
static void
watch_context(ColcryptDek *d)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(release_stale_contexts, NULL);
		xact_callback_registered = true;
	}
	if (d->expires_at != 0 && (expiry_armed == 0 || d->expires_at < expiry_armed))
		arm_expiry();
}

/* Derive the GCM and SIV subkeys of a data key version and key contexts. */
static void
dek_build(ColcryptDek *d, const uint8 *dek)
{
	static const char gcm_label[] = "colcrypt/v1/aes-256-gcm";
	static const char siv_label[] = "colcrypt/v1/aes-256-siv";
	uint8		info[sizeof(siv_label) + 8];
	uint8		gcm_key[CC_AES256_KEY_LEN];
	uint8		siv_key[CC_SIV_KEY_LEN];
	bool		ok;

	StaticAssertStmt(sizeof(gcm_label) == sizeof(siv_label), "labels differ in length");
	info[sizeof(gcm_label) + 0] = (uint8) (d->key_id >> 24);
	info[sizeof(gcm_label) + 1] = (uint8) (d->key_id >> 16);
	info[sizeof(gcm_label) + 2] = (uint8) (d->key_id >> 8);
	info[sizeof(gcm_label) + 3] = (uint8) d->key_id;
	info[sizeof(gcm_label) + 4] = (uint8) (d->version >> 24);
	info[sizeof(gcm_label) + 5] = (uint8) (d->version >> 16);
	info[sizeof(gcm_label) + 6] = (uint8) (d->version >> 8);
	info[sizeof(gcm_label) + 7] = (uint8) d->version;

	memcpy(info, gcm_label, sizeof(gcm_label));
	ok = cc_hkdf_sha256(dek, CC_DEK_LEN, NULL, 0, info, sizeof(info),
						gcm_key, sizeof(gcm_key)) == CC_OK;
	memcpy(info, siv_label, sizeof(siv_label));
	ok = ok && cc_hkdf_sha256(dek, CC_DEK_LEN, NULL, 0, info, sizeof(info),
							  siv_key, sizeof(siv_key)) == CC_OK;
	if (ok)
	{
		d->gcm = cc_gcm_key_new(gcm_key);
		d->siv = cc_siv_key_new(siv_key, sizeof(siv_key));
	}
	cc_wipe(gcm_key, sizeof(gcm_key));
	cc_wipe(siv_key, sizeof(siv_key));
	if (d->gcm == NULL || d->siv == NULL)
	{
		dek_release(d);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not set up the cipher for data key version %u", d->version)));
	}
}

/* ----------------------------------------------------------------------
 * Privileges
 * ----------------------------------------------------------------------
 *
 * Every place that hands out plaintext asks here, at that moment, for the
 * current user: output, casts, comparisons, hashing, batch values opened
 * under another role, plaintexts a call site kept.  So the answer is
 * cached, per role and key, for as long as nothing it depends on changed:
 * the key metadata (a grant, a revoke, a new owner: the metadata
 * generation moves, also when another backend's change commits) and the
 * roles (membership, superuser status: a syscache callback).
 *
 * Referential integrity.  PostgreSQL runs a foreign key's checks and
 * actions as the owner of the table queried (ri_triggers.c), marked
 * SECURITY_NOFORCE_RLS, on behalf of whoever wrote the row.  A comparison
 * there answers the writer ("is this plaintext in the referenced table?"),
 * so the writer must be able to ask it: in that context the decrypt
 * privilege is needed by the current user *and* the role that caused the
 * check.  That role is the user of the innermost executor call outside
 * the check (the exec layer reports each ExecutorRun and ExecutorFinish
 * here: immediate checks fire inside the writing statement's
 * ExecutorFinish), or, for a check fired at COMMIT or by SET CONSTRAINTS,
 * outside any executor, the session's current role.  (Nothing but
 * ri_triggers.c sets SECURITY_NOFORCE_RLS.)
 */

typedef struct PrivEntry
{
	Oid			role;
	uint32		key_id;
	int			held;			/* COLCRYPT_PRIV_* bits */
} PrivEntry;

#define PRIV_CACHE_SIZE		32

static PrivEntry priv_cache[PRIV_CACHE_SIZE];
static int	priv_cache_used = 0;
static int	priv_cache_next = 0;
static int	priv_cache_last = -1;
static uint64 priv_cache_generation = 0;	/* metadata generation */
static uint64 priv_cache_roles = 0; /* roles_generation it was filled at */
static uint64 roles_generation = 1;
static bool roles_callback_registered = false;

static void
roles_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	roles_generation++;
}

/* The privileges role holds on a key (COLCRYPT_PRIV_* bits), uncached. */
static int
privileges_of(Oid role, uint32 key_id)
{
	ColcryptKeyMeta *meta;
	int			held = 0;

	if (superuser_arg(role))
		return COLCRYPT_PRIV_ENCRYPT | COLCRYPT_PRIV_DECRYPT;
	meta = ColcryptGetKeyMeta(key_id, true);
	if (meta == NULL)
		return 0;
	if (OidIsValid(meta->owner) && has_privs_of_role(role, meta->owner))
		return COLCRYPT_PRIV_ENCRYPT | COLCRYPT_PRIV_DECRYPT;
	for (int i = 0; i < meta->ngrants; i++)
		if (has_privs_of_role(role, meta->grants[i].grantee))
			held |= meta->grants[i].privs;
	return held;
}

bool
ColcryptRoleHasKeyPrivilege(Oid role, uint32 key_id, int priv)
{
	PrivEntry  *e;

	if (key_id == CC_TRANSIT_KEY_ID)
		return true;
	if (!roles_callback_registered)
	{
		CacheRegisterSyscacheCallback(AUTHOID, roles_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, roles_changed, (Datum) 0);
		roles_callback_registered = true;
	}
	/* Sees a grant or revoke committed elsewhere (moves the generation). */
	ColcryptCatalogCheckFreshness();
	if (priv_cache_generation != ColcryptMetaGeneration() ||
		priv_cache_roles != roles_generation)
	{
		priv_cache_used = 0;
		priv_cache_next = 0;
		priv_cache_last = -1;
		priv_cache_generation = ColcryptMetaGeneration();
		priv_cache_roles = roles_generation;
	}
	if (priv_cache_last >= 0)
	{
		e = &priv_cache[priv_cache_last];
		if (e->role == role && e->key_id == key_id)
			return (e->held & priv) == priv;
	}
	for (int i = 0; i < priv_cache_used; i++)
	{
		e = &priv_cache[i];
		if (e->role == role && e->key_id == key_id)
		{
			priv_cache_last = i;
			return (e->held & priv) == priv;
		}
	}

	{
		int			held = privileges_of(role, key_id);

		/* The lookup may have reloaded the metadata: start over if so. */
		if (priv_cache_generation != ColcryptMetaGeneration())
		{
			priv_cache_used = 0;
			priv_cache_next = 0;
			priv_cache_generation = ColcryptMetaGeneration();
		}
		e = &priv_cache[priv_cache_next];
		priv_cache_last = priv_cache_next;
		priv_cache_next = (priv_cache_next + 1) % PRIV_CACHE_SIZE;
		if (priv_cache_used < PRIV_CACHE_SIZE)
			priv_cache_used++;
		e->role = role;
		e->key_id = key_id;
		e->held = held;
		return (held & priv) == priv;
	}
}

/* Executor calls (ExecutorRun, ExecutorFinish) and who made them. */
typedef struct Asker
{
	Oid			user;
	int			sec_context;
} Asker;

static Asker *askers = NULL;
static int	naskers = 0;
static int	maxaskers = 0;

void
ColcryptAskerPush(void)
{
	if (naskers == maxaskers)
	{
		int			n = maxaskers ? maxaskers * 2 : 16;

		askers = askers ?
			repalloc(askers, sizeof(Asker) * n) :
			MemoryContextAlloc(TopMemoryContext, sizeof(Asker) * n);
		maxaskers = n;
	}
	GetUserIdAndSecContext(&askers[naskers].user, &askers[naskers].sec_context);
	naskers++;
}

void
ColcryptAskerPop(void)
{
	if (naskers > 0)
		naskers--;
}

/*
 * The role a referential integrity check runs for (see above), or
 * InvalidOid outside one.
 */
Oid
ColcryptReferentialAsker(void)
{
	if (!InNoForceRLSOperation())
		return InvalidOid;
	for (int i = naskers - 1; i >= 0; i--)
		if ((askers[i].sec_context & SECURITY_NOFORCE_RLS) == 0)
			return askers[i].user;
	return GetOuterUserId();
}

/*
 * Whether the current role may use the key so; for decrypting, inside a
 * referential integrity check, the role it runs for too.
 */
bool
ColcryptHasKeyPrivilege(uint32 key_id, int priv)
{
	Oid			writer;

	if (!ColcryptRoleHasKeyPrivilege(GetUserId(), key_id, priv))
		return false;
	if ((priv & COLCRYPT_PRIV_DECRYPT) && key_id != CC_TRANSIT_KEY_ID &&
		OidIsValid(writer = ColcryptReferentialAsker()))
		return ColcryptRoleHasKeyPrivilege(writer, key_id, priv);
	return true;
}

/*
 * Plaintext of key_id is being handed out: if that is for a role other
 * than the session's, which may not decrypt it, error reports to the
 * client during this statement lose their values (logredact.c).
 */
void
ColcryptNoteDecrypt(uint32 key_id)
{
	Oid			outer = GetOuterUserId();

	if (key_id != CC_TRANSIT_KEY_ID && GetUserId() != outer &&
		!ColcryptRoleHasKeyPrivilege(outer, key_id, COLCRYPT_PRIV_DECRYPT))
		ColcryptNoteForeignPlaintext();
}

/*
 * The last decrypt check that passed, for the check made for every value
 * handed out: valid while the role, the session's role, the metadata
 * generation, the roles and the shared catalog epoch are the same, and the
 * metadata is not known to be stale.  So a grant or revoke, committed here
 * or in any other backend, counts from the next value on, as a full check
 * would.
 */
static struct
{
	bool		valid;
	bool		foreign;		/* decrypting for a role other than the session's */
	uint32		key_id;
	Oid			role;
	Oid			outer;
	uint64		generation;
	uint64		roles;
	uint64		epoch;
}			last_decrypt;

/*
 * One audit event per statement (the client's statement: a DO block or a
 * function is one), role, key and privilege denied: whether the denials
 * alternate between keys or not.  The audit queue then merges identical
 * events of successive statements into one row with a count.
 */
#define DENIALS_REMEMBERED 32

static bool
first_denial_in_statement(uint32 key_id, int priv, Oid role)
{
	static TimestampTz stmt = 0;
	static int	n = 0;
	static struct
	{
		uint32		key_id;
		int			priv;
		Oid			role;
	}			seen[DENIALS_REMEMBERED];

	if (stmt != GetCurrentStatementStartTimestamp())
	{
		stmt = GetCurrentStatementStartTimestamp();
		n = 0;
	}
	for (int i = 0; i < n; i++)
		if (seen[i].key_id == key_id && seen[i].priv == priv && seen[i].role == role)
			return false;
	if (n < DENIALS_REMEMBERED)
	{
		seen[n].key_id = key_id;
		seen[n].priv = priv;
		seen[n].role = role;
		n++;
	}
	return true;
}

/* Whether the last passed decrypt check answers this one too. */
static bool
last_decrypt_holds(uint32 key_id)
{
	uint64		epoch;

	if (!last_decrypt.valid || last_decrypt.key_id != key_id ||
		last_decrypt.role != GetUserId() || last_decrypt.outer != GetOuterUserId() ||
		last_decrypt.generation != ColcryptMetaGeneration() ||
		last_decrypt.roles != roles_generation || ColcryptMetaIsStale() ||
		InNoForceRLSOperation())
		return false;
	/* As ColcryptCatalogCheckFreshness reads it: a change is seen. */
	pg_read_barrier();
	epoch = ColcryptCatalogEpoch();
	return epoch == last_decrypt.epoch && ColcryptCatalogEpochSettled(epoch);
}

void
ColcryptCheckKeyPrivilege(uint32 key_id, int priv)
{
	uint64		epoch;

	/* A transit value holds what the session itself typed. */
	if (key_id == CC_TRANSIT_KEY_ID)
		return;
	if (priv == COLCRYPT_PRIV_DECRYPT && last_decrypt_holds(key_id))
	{
		if (last_decrypt.foreign)
			ColcryptNoteForeignPlaintext();
		return;
	}
	/* Read before the check: a change committed meanwhile moves it. */
	pg_read_barrier();
	epoch = ColcryptCatalogEpoch();
	if (ColcryptHasKeyPrivilege(key_id, priv))
	{
		if (priv & COLCRYPT_PRIV_DECRYPT)
		{
			uint64		before = ColcryptForeignDecrypts();

			ColcryptNoteDecrypt(key_id);
			if (!InNoForceRLSOperation() && ColcryptCatalogEpochSettled(epoch))
			{
				last_decrypt.key_id = key_id;
				last_decrypt.role = GetUserId();
				last_decrypt.outer = GetOuterUserId();
				last_decrypt.generation = ColcryptMetaGeneration();
				last_decrypt.roles = roles_generation;
				last_decrypt.epoch = epoch;
				last_decrypt.foreign = ColcryptForeignDecrypts() != before;
				last_decrypt.valid = true;
			}
		}
	}
	else
	{
		ColcryptKeyMeta *meta = ColcryptGetKeyMeta(key_id, false);
		const char *what = priv == COLCRYPT_PRIV_ENCRYPT ? "encrypt" : "decrypt";
		Oid			role = GetUserId();
		bool		for_writer = false;

		/* The role that lacks it: the writer, in a foreign key check. */
		if (ColcryptRoleHasKeyPrivilege(role, key_id, priv))
		{
			role = ColcryptReferentialAsker();
			for_writer = true;
		}

		if (first_denial_in_statement(key_id, priv, role))
		{
			ColcryptAuditEvent(what, "key", meta->name, 0, "denied",
							   psprintf("role %s lacks the %s privilege%s",
										GetUserNameFromId(role, false), what,
										for_writer ? " (foreign key check on its behalf)" : ""));
			meta = ColcryptGetKeyMeta(key_id, false);
		}

		if (for_writer)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to %s with data key \"%s\"", what, meta->name),
					 errdetail("A foreign key check compares plaintexts on behalf of role \"%s\", which lacks the %s privilege.",
							   GetUserNameFromId(role, false), what),
					 errhint("The key's owner can run: SELECT colcrypt.grant_key('%s', '%s', '%s');",
							 meta->name, GetUserNameFromId(role, false), what)));
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s with data key \"%s\"", what, meta->name),
				 errhint("The key's owner can run: SELECT colcrypt.grant_key('%s', '%s', '%s');",
						 meta->name, GetUserNameFromId(role, false), what)));
	}
}

/* ----------------------------------------------------------------------
 * Unwrapping
 * ----------------------------------------------------------------------
 */

void
ColcryptGuardKeyMaterial(void)
{
	static bool guarded = false;
	int			rc;

	if (guarded || colcrypt_allow_core_dumps)
		return;
#ifdef PR_SET_DUMPABLE
	rc = prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#else
	{
		/* Elsewhere at least no core file: a zero core size limit. */
		struct rlimit rl = {0, 0};

		rc = setrlimit(RLIMIT_CORE, &rl);
	}
#endif
	if (rc != 0)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not keep key material out of core dumps: %m"),
				 errhint("Set colcrypt.allow_core_dumps = on to go on without this protection.")));
	guarded = true;
}

/* Get the key bytes of a version: shared cache, else the provider. */
static void
obtain_dek(const char *keyname, uint32 key_id, uint32 version,
		   uint8 *dek, TimestampTz *loaded_at)
{
	ColcryptCacheResult res;
	uint64		epoch;
	ColcryptUnwrapInfo info;

	ColcryptKeyMeta *meta;

	ColcryptGuardKeyMaterial();
	/* The owner counts against the cache's shares (keycache.c). */
	meta = ColcryptGetKeyMeta(key_id, true);
	res = ColcryptKeyCacheAcquire(key_id, version, meta ? meta->owner : InvalidOid, dek, loaded_at);
	if (res == COLCRYPT_CACHE_HIT)
		return;

	/* Read the epoch before the catalog, so a change meanwhile is seen. */
	epoch = ColcryptCatalogEpoch();
	PG_TRY();
	{
		ColcryptWrapContext ctx;

		if (!ColcryptFetchUnwrapInfo(key_id, (int32) version, &info))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("data key \"%s\" has no version %u", keyname, version)));
		if (info.wrapped == NULL || info.state == COLCRYPT_KEY_DESTROYED ||
			info.state == COLCRYPT_KEY_DESTROYED_COMPROMISED)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("data key \"%s\" version %u has been destroyed", keyname, version),
					 errdetail("Values encrypted under it can no longer be decrypted.")));
		ctx.key_ref = info.key_ref;
		ctx.key_id = key_id;
		ctx.key_version = version;
		colcrypt_provider_failed = false;
		ColcryptProviderUnwrap(info.provider, info.kind, info.options, &ctx,
							   (uint8 *) VARDATA_ANY(info.wrapped),
							   VARSIZE_ANY_EXHDR(info.wrapped),
							   info.wrap_meta, dek, CC_DEK_LEN);
	}
	PG_CATCH();
	{
		cc_wipe(dek, CC_DEK_LEN);
		if (res == COLCRYPT_CACHE_LOAD)
			ColcryptKeyCacheAbandon(key_id, version);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (res == COLCRYPT_CACHE_LOAD)
		ColcryptKeyCacheFill(key_id, version, dek, epoch, loaded_at);
	else
		*loaded_at = GetCurrentTimestamp();
}

void
ColcryptDekBytes(uint32 key_id, uint32 version, uint8 *dek)
{
	TimestampTz loaded_at;
	ColcryptKeyMeta *meta = ColcryptGetKeyMeta(key_id, false);
	char		name[NAMEDATALEN];

	strlcpy(name, meta->name, sizeof(name));
	obtain_dek(name, key_id, version, dek, &loaded_at);
}

/*
 * Decrypting under a compromised version: a WARNING and an audit event,
 * once per statement and version.
 */
static void
warn_compromised(ColcryptKeyMeta *meta, uint32 version)
{
	static TimestampTz last_stmt = 0;
	static uint32 last_key = 0;
	static uint32 last_version = 0;
	char		name[NAMEDATALEN];

	if (last_stmt == GetCurrentStatementStartTimestamp() && last_key == meta->key_id &&
		last_version == version)
		return;
	last_stmt = GetCurrentStatementStartTimestamp();
	last_key = meta->key_id;
	last_version = version;
	strlcpy(name, meta->name, sizeof(name));
	ereport(WARNING,
			(errmsg("decrypting with data key \"%s\" version %u, which is compromised", name, version),
			 errhint("Re-encrypt the values under a new version and destroy this one.")));
	ColcryptAuditEvent("decrypt", "key", name, (int32) version, "warning",
					   "decryption with a compromised key version");
}

/* Check that a version's state allows the use; raise 55000 if not. */
static void
check_state(ColcryptKeyMeta *meta, uint32 version, bool encrypt)
{
	ColcryptKeyVersionMeta *v = ColcryptFindVersion(meta, (int32) version);

	if (v == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("data key \"%s\" has no version %u", meta->name, version)));
	switch (v->state)
	{
		case COLCRYPT_KEY_ACTIVE:
			return;
		case COLCRYPT_KEY_DEACTIVATED:
			if (!encrypt)
				return;
			break;
		case COLCRYPT_KEY_COMPROMISED:
			if (!encrypt)
			{
				warn_compromised(meta, version);
				return;
			}
			break;
		default:
			break;
	}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("data key \"%s\" version %u is %s and cannot be used to %s",
					meta->name, version, ColcryptKeyStateName(v->state),
					encrypt ? "encrypt" : "decrypt"),
			 (v->state == COLCRYPT_KEY_DESTROYED || v->state == COLCRYPT_KEY_DESTROYED_COMPROMISED) ?
			 errdetail("Values encrypted under it can no longer be decrypted.") : 0));
}

/*
 * The time for key_cache_ttl checks.  Reading the clock for every value was
 * 4% of a decrypting scan (perf), so it is read once per statement and then
 * every 256 values: a key can outlive its TTL by at most that many uses in
 * one backend.  (Revocation does not depend on this: state changes and
 * key_cache_evict() reach backends through the catalog generation.)
 */
static TimestampTz
ttl_clock(void)
{
	static TimestampTz now = 0;
	static TimestampTz stmt = 0;
	static uint32 calls = 0;

	if (stmt != GetCurrentStatementStartTimestamp() || (++calls & 255) == 0 || now == 0)
	{
		stmt = GetCurrentStatementStartTimestamp();
		now = GetCurrentTimestamp();
	}
	return now;
}

/* A live context for a data key version, after its state was checked. */
static ColcryptDek *
dek_for(ColcryptKeyMeta *meta, uint32 version)
{
	DekKey		k = {meta->key_id, version};
	ColcryptDek *d;
	bool		found;
	TimestampTz now = ttl_clock();
	HTAB	   *table = dek_table();	/* drops every entry if metadata changed */

	if (last_dek != NULL && last_dek->key_id == meta->key_id && last_dek->version == version &&
		last_dek->gcm != NULL && last_dek->expires_at > now)
	{
		last_dek->meta_generation = ColcryptMetaGeneration();
		return last_dek;
	}
	d = hash_search(table, &k, HASH_ENTER, &found);
	if (found && d->gcm != NULL && d->expires_at > now)
	{
		d->meta_generation = ColcryptMetaGeneration();
		last_dek = d;
		return d;
	}
	if (found)
		dek_release(d);
	d->gcm = NULL;
	d->siv = NULL;
	d->uses = 0;

	PG_TRY();
	{
		uint8		dek[CC_DEK_LEN];
		TimestampTz loaded_at;

		obtain_dek(meta->name, meta->key_id, version, dek, &loaded_at);
		PG_TRY();
		{
			dek_build(d, dek);
		}
		PG_FINALLY();
		{
			cc_wipe(dek, sizeof(dek));
		}
		PG_END_TRY();
		d->expires_at = loaded_at + (int64) colcrypt_key_cache_ttl * USECS_PER_SEC;
	}
	PG_CATCH();
	{
		last_dek = NULL;
		hash_search(deks, &k, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	d->meta_generation = ColcryptMetaGeneration();
	watch_context(d);
	last_dek = d;
	return d;
}

/* ----------------------------------------------------------------------
 * Transit key
 * ----------------------------------------------------------------------
 */

static ColcryptDek *
transit_dek(uint32 generation)
{
	DekKey		k = {CC_TRANSIT_KEY_ID, generation};
	ColcryptDek *d;
	bool		found;

	d = hash_search(dek_table(), &k, HASH_ENTER, &found);
	if (!found || d->gcm == NULL)
	{
		uint8		key[CC_AES256_KEY_LEN];

		d->gcm = NULL;
		d->siv = NULL;
		d->uses = 0;
		d->expires_at = 0;
		ColcryptGuardKeyMaterial();
		PG_TRY();
		{
			ColcryptTransitKey(generation, key);
			dek_build(d, key);
			watch_context(d);
		}
		PG_FINALLY();
		{
			cc_wipe(key, sizeof(key));
		}
		PG_END_TRY();
	}
	return d;
}

/* ----------------------------------------------------------------------
 * Entry points
 * ----------------------------------------------------------------------
 */

ColcryptDek *
ColcryptDekForEncrypt(uint32 key_id)
{
	ColcryptKeyMeta *meta;

	ColcryptRequirePreload();
	ColcryptNotePlaintext();
	if (key_id == CC_TRANSIT_KEY_ID)
	{
		ColcryptDek *d;

		if (transit_generation == 0)
			transit_generation = ColcryptTransitNextGeneration();
		d = transit_dek(transit_generation);
		if (d->uses >= TRANSIT_MAX_USES)
		{
			transit_generation = ColcryptTransitNextGeneration();
			d = transit_dek(transit_generation);
		}
		d->uses++;
		return d;
	}

	/* Privilege first: a metadata pointer lasts until the next lookup. */
	ColcryptCheckKeyPrivilege(key_id, COLCRYPT_PRIV_ENCRYPT);
	meta = ColcryptGetKeyMeta(key_id, false);
	if (meta->active_version == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("data key \"%s\" has no active version", meta->name),
				 errhint("Activate a version with colcrypt.set_key_state() or make one with colcrypt.rotate_key().")));
	return dek_for(meta, (uint32) meta->active_version);
}

ColcryptDek *
ColcryptDekForDecrypt(uint32 key_id, uint32 version)
{
	ColcryptKeyMeta *meta;

	ColcryptRequirePreload();
	ColcryptNotePlaintext();
	if (key_id == CC_TRANSIT_KEY_ID)
		return transit_dek(version);

	ColcryptCheckKeyPrivilege(key_id, COLCRYPT_PRIV_DECRYPT);
	meta = ColcryptGetKeyMeta(key_id, false);
	check_state(meta, version, false);
	return dek_for(meta, version);
}

char *
ColcryptGenerateWrappedDek(const char *master_key, uint32 key_id,
						   uint32 version, StringInfo wrapped)
{
	uint8		dek[CC_DEK_LEN];
	char	   *wrap_meta = NULL;
	ColcryptUnwrapInfo info;
	ColcryptWrapContext ctx;
	Datum		result;
	bool		isnull;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	ColcryptGuardKeyMaterial();

	/* The master key's provider. */
	values[0] = CStringGetTextDatum(master_key);
	ColcryptCatalogExec("SELECT jsonb_build_array(m.key_ref, p.name, p.kind, p.options)"
						" FROM colcrypt.master_key m JOIN colcrypt.provider p ON p.name = m.provider"
						" WHERE m.name = $1",
						1, types, values, NULL, &result, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("master key \"%s\" does not exist", master_key),
				 errhint("Add it with colcrypt.add_master_key(name, provider, key_ref).")));
	memset(&info, 0, sizeof(info));
	{
		Jsonb	   *arr = DatumGetJsonbP(result);
		JsonbValue *v;

		v = getIthJsonbValueFromContainer(&arr->root, 0);
		info.key_ref = pnstrdup(v->val.string.val, v->val.string.len);
		v = getIthJsonbValueFromContainer(&arr->root, 1);
		info.provider = pnstrdup(v->val.string.val, v->val.string.len);
		v = getIthJsonbValueFromContainer(&arr->root, 2);
		info.kind = pnstrdup(v->val.string.val, v->val.string.len);
		v = getIthJsonbValueFromContainer(&arr->root, 3);
		info.options = JsonbValueToJsonb(v);
	}

	ctx.key_ref = info.key_ref;
	ctx.key_id = key_id;
	ctx.key_version = version;
	PG_TRY();
	{
		uint8		check[CC_DEK_LEN];

		/* From the provider's generator where it is set up to, else ours. */
		if (!ColcryptProviderGenerate(info.provider, info.kind, info.options, &ctx,
									  dek, sizeof(dek), wrapped, &wrap_meta))
		{
			if (cc_random(dek, sizeof(dek)) != CC_OK)
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("could not generate a data key")));
			ColcryptProviderWrap(info.provider, info.kind, info.options, &ctx,
								 dek, sizeof(dek), wrapped, &wrap_meta);
		}
		/* Prove the round trip before anything is recorded. */
		ColcryptProviderUnwrap(info.provider, info.kind, info.options, &ctx,
							   (uint8 *) wrapped->data, wrapped->len, wrap_meta,
							   check, sizeof(check));
		if (cc_memcmp_ct(check, dek, sizeof(dek)) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("key provider \"%s\" returned a different key than it wrapped",
							info.provider)));
		cc_wipe(check, sizeof(check));
	}
	PG_FINALLY();
	{
		cc_wipe(dek, sizeof(dek));
	}
	PG_END_TRY();
	return wrap_meta;
}
