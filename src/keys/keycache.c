/*-------------------------------------------------------------------------
 *
 * keycache.c
 *	  The shared-memory cache of unwrapped data keys.
 *
 * One region, requested at postmaster start, holds a fixed array of
 * colcrypt.key_cache_entries slots (database, key id, version, 32 key
 * bytes, load time, LRU stamp), the counters the colcrypt.key_cache view
 * shows, the catalog epoch and the transit secret.  The region is
 * page-aligned and marked MADV_DONTDUMP (and mlock'ed where the limit
 * allows), so key bytes are left out of core dumps of every process and are
 * not swapped out.
 *
 * An entry belongs to a database: key catalogs are per database, and a key
 * id is only a hash of the key's name, so two databases of one server may
 * well each have a "customers" key, with different key bytes.
 *
 * Locking protocol:
 *	 - lock (one LWLock) guards every slot's dboid, key_id, version, state,
 *	   loader, loaded_at and key bytes.  Readers take it LW_SHARED to find a
 *	   valid slot and copy its key out; anything that changes a slot takes
 *	   it LW_EXCLUSIVE.
 *	 - last_used, the counters, the catalog epoch and the transit
 *	   generation are atomics, updated without the lock (last_used under
 *	   the shared lock is fine: eviction reads it under the exclusive lock
 *	   and only needs an approximate order).
 *	 - No one holds the lock across a provider call.  A backend that misses
 *	   marks the slot LOADING with its pid, releases the lock, calls the
 *	   provider, then fills the slot under the exclusive lock.  Others that
 *	   want the same key sleep on the condition variable until the slot
 *	   leaves LOADING, for at most colcrypt.kms_timeout plus a second; after
 *	   that (a stuck or dead loader) they take the slot over.  A loader
 *	   that errors out abandons its slot in PG_CATCH; one that exits
 *	   abandons it in a shmem-exit callback.
 *	 - A loader that fails also leaves its error, under the number of its
 *	   load, in a small ring (failed, under the lock), and the backends
 *	   that waited for that load raise the same error instead of asking
 *	   the provider again.  Otherwise, with a provider that stops
 *	   answering, each waiter became the next loader in turn and waited
 *	   for every earlier one's colcrypt.kms_timeout first, with no bound
 *	   while other backends kept taking turns (t/018: statements of a
 *	   four-client workload failed after up to 13 s with a 1.5 s
 *	   kms_timeout).  Only the loads they waited for: the next statement
 *	   asks the provider again, so recovery is not delayed.
 *	 - The transit secret is written once, in the postmaster, before any
 *	   backend exists, and only read afterwards.
 *
 * An entry past its TTL is wiped at its next lookup, at eviction, or by the
 * janitor (a background worker that sweeps the cache once a second), so
 * key bytes stay no longer than colcrypt.key_cache_ttl plus a second.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include <sys/mman.h>
#include <unistd.h>

#include "colcrypt/audit.h"
#include "colcrypt/keycache.h"
#include "colcrypt/lifecycle.h"
#include "colcrypt/provider.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procsignal.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

typedef enum SlotState
{
	SLOT_EMPTY = 0,
	SLOT_LOADING,				/* a backend is asking the provider */
	SLOT_VALID					/* key bytes present */
} SlotState;

typedef struct KeySlot
{
	Oid			dboid;			/* database whose catalog holds the key */
	uint32		key_id;			/* data key id (never 0: transit is not cached) */
	uint32		version;		/* key version */
	Oid			owner;			/* the data key's owner, for the shares below */
	SlotState	state;			/* see SlotState */
	int			loader_pid;		/* LOADING: pid of the loader */
	TimestampTz loading_since;	/* LOADING: when the loader started */
	TimestampTz loaded_at;		/* VALID: when the key was unwrapped */
	uint64		load;			/* LOADING: its number, from KeyCacheShared.loads */
	pg_atomic_uint64 last_used; /* LRU stamp from KeyCacheShared.clock */
	uint8		dek[CC_DEK_LEN];	/* VALID: the unwrapped key */
} KeySlot;

/*
 * A load that failed, for the backends that waited for it.  The message is
 * the loader's error message: a provider failure names the provider, its
 * kind and the cause, never a secret or key material.
 */
#define FAILED_LOADS 32
#define FAILED_MESSAGE_LEN 512

typedef struct FailedLoad
{
	uint64		load;			/* KeySlot.load of the failed load; 0: unused */
	int			sqlerrcode;		/* the loader's SQLSTATE */
	char		message[FAILED_MESSAGE_LEN];
} FailedLoad;

typedef struct KeyCacheShared
{
	LWLock	   *lock;			/* see the locking protocol above */
	ConditionVariable loaded;	/* broadcast when a slot leaves LOADING */
	pg_atomic_uint64 clock;		/* LRU clock */
	pg_atomic_uint64 epoch;		/* catalog epoch */
	pg_atomic_uint64 hits;		/* lookups served from the cache */
	pg_atomic_uint64 misses;	/* lookups that had to ask the provider */
	pg_atomic_uint64 provider_calls;	/* calls to any key provider */
	pg_atomic_uint64 provider_failures; /* of which failed */
	pg_atomic_uint64 evictions; /* valid slots reused for another key */
	pg_atomic_uint64 expirations;	/* slots dropped at their TTL */
	pg_atomic_uint32 transit_generation;	/* last transit generation handed out */
	uint8		transit_secret[CC_AES256_KEY_LEN];	/* never leaves memory */
	uint64		loads;			/* loads begun (under the lock) */
	int			next_failed;	/* next entry of failed to reuse (under the lock) */
	FailedLoad	failed[FAILED_LOADS];	/* recent failed loads (under the lock) */
	int			nslots;			/* colcrypt.key_cache_entries */
	KeySlot		slots[FLEXIBLE_ARRAY_MEMBER];
} KeyCacheShared;

static KeyCacheShared *cache = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool exit_callback_registered = false;

static void register_janitor(void);

static Size
page_size(void)
{
	long		ps = sysconf(_SC_PAGESIZE);

	return ps > 0 ? (Size) ps : 4096;
}

static Size
cache_struct_size(void)
{
	return add_size(offsetof(KeyCacheShared, slots),
					mul_size(colcrypt_key_cache_entries, sizeof(KeySlot)));
}

/*
 * The catalog epoch counts, above EPOCH_IN_FLIGHT_BITS, the catalog changes
 * committed and, below, those being committed right now: from just before
 * their commit becomes visible (PRE_COMMIT) to just after (COMMIT, where
 * one atomic addition moves a change from the one count to the other), so
 * that a backend whose check falls between the two sees that its metadata
 * may be older than what its snapshot sees (see catalog.c).
 */
#define EPOCH_IN_FLIGHT_BITS 20
#define EPOCH_ONE ((uint64) 1 << EPOCH_IN_FLIGHT_BITS)

/* The request: the struct rounded to whole pages, plus a page to align it. */
static Size
cache_request_size(void)
{
	Size		ps = page_size();

	return add_size(TYPEALIGN(ps, cache_struct_size()), ps);
}

static void
keycache_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(cache_request_size());
	RequestNamedLWLockTranche("colcrypt_keycache", 1);
	ColcryptAuditShmemRequest();
	ColcryptLifecycleShmemRequest();
}

static void
keycache_shmem_startup(void)
{
	bool		found;
	char	   *raw;
	Size		ps = page_size();
	Size		len = TYPEALIGN(ps, cache_struct_size());

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	raw = ShmemInitStruct("colcrypt key cache", cache_request_size(), &found);
	cache = (KeyCacheShared *) TYPEALIGN(ps, raw);
	if (!found)
	{
		memset(cache, 0, len);
		cache->lock = &(GetNamedLWLockTranche("colcrypt_keycache"))->lock;
		ConditionVariableInit(&cache->loaded);
		pg_atomic_init_u64(&cache->clock, 0);
		pg_atomic_init_u64(&cache->epoch, EPOCH_ONE);
		pg_atomic_init_u64(&cache->hits, 0);
		pg_atomic_init_u64(&cache->misses, 0);
		pg_atomic_init_u64(&cache->provider_calls, 0);
		pg_atomic_init_u64(&cache->provider_failures, 0);
		pg_atomic_init_u64(&cache->evictions, 0);
		pg_atomic_init_u64(&cache->expirations, 0);
		pg_atomic_init_u32(&cache->transit_generation, 0);
		cache->nslots = colcrypt_key_cache_entries;
		for (int i = 0; i < cache->nslots; i++)
			pg_atomic_init_u64(&cache->slots[i].last_used, 0);

		/*
		 * Keep key bytes out of core dumps and swap.  Forked backends inherit
		 * both properties of the mapping.
		 */
		if (madvise(cache, len, MADV_DONTDUMP) != 0)
			ereport(WARNING,
					(errmsg("colcrypt: could not exclude the key cache from core dumps: %m"),
					 errhint("With huge_pages = on the cache cannot be marked; set huge_pages = off or try.")));
		if (mlock(cache, len) != 0)
			ereport(LOG,
					(errmsg("colcrypt: could not lock the key cache in memory: %m"),
					 errdetail("Unwrapped keys may be written to swap.")));

		if (!pg_strong_random(cache->transit_secret, sizeof(cache->transit_secret)))
			ereport(FATAL,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("colcrypt: could not generate the transit key")));
	}
	ColcryptAuditShmemStartup();
	ColcryptLifecycleShmemStartup();
	LWLockRelease(AddinShmemInitLock);
}

void
ColcryptKeyCacheInit(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = keycache_shmem_request;
#else
	keycache_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = keycache_shmem_startup;
	register_janitor();
}

static KeyCacheShared *
get_cache(void)
{
	ColcryptRequirePreload();
	if (cache == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("colcrypt key cache is not initialized")));
	return cache;
}

static void
wipe_slot(KeySlot *s)
{
	cc_wipe(s->dek, sizeof(s->dek));
	s->state = SLOT_EMPTY;
	s->dboid = InvalidOid;
	s->key_id = 0;
	s->version = 0;
	s->loader_pid = 0;
}

/*
 * Find this database's (key_id, version) among non-empty slots; caller
 * holds the lock.
 */
static KeySlot *
find_slot(uint32 key_id, uint32 version)
{
	for (int i = 0; i < cache->nslots; i++)
	{
		KeySlot    *s = &cache->slots[i];

		if (s->state != SLOT_EMPTY && s->dboid == MyDatabaseId &&
			s->key_id == key_id && s->version == version)
			return s;
	}
	return NULL;
}

static bool
slot_expired(KeySlot *s, TimestampTz now)
{
	return s->state == SLOT_VALID &&
		now - s->loaded_at >= (int64) colcrypt_key_cache_ttl * USECS_PER_SEC;
}

/*
 * What one key and one key owner may hold, so that nobody's keys push the
 * others' out: a key at most KEY_SHARE of the slots (its versions), always;
 * an owner's keys together at most OWNER_SHARE once the cache is full.  At
 * its share, a new entry takes the place of the least recently used entry
 * of the same key (or owner), never another's.  Below them, an empty slot,
 * else the least recently used entry.
 */
#define KEY_SHARE(n)	Max(4, (n) / 8)
#define OWNER_SHARE(n)	Max(8, (n) * 3 / 4)

/*
 * A slot for a new entry of (key_id, owner) in this database: within the
 * shares above, an empty one, else the least recently used valid one
 * (wiped); over a share, the least recently used valid one of the key or
 * owner.  NULL when no slot may be taken (all loading).  Caller holds the
 * lock exclusively.
 */
static KeySlot *
claim_slot(uint32 key_id, Oid owner)
{
	KeySlot    *empty = NULL;
	KeySlot    *lru_all = NULL;
	KeySlot    *lru_key = NULL;
	KeySlot    *lru_own = NULL;
	int			key_n = 0;
	int			own_n = 0;
	KeySlot    *victim;

	for (int i = 0; i < cache->nslots; i++)
	{
		KeySlot    *s = &cache->slots[i];
		uint64		used;
		bool		same_key;
		bool		same_owner;

		if (s->state == SLOT_EMPTY)
		{
			if (empty == NULL)
				empty = s;
			continue;
		}
		same_key = s->dboid == MyDatabaseId && s->key_id == key_id;
		same_owner = OidIsValid(owner) && s->owner == owner;
		key_n += same_key;
		own_n += same_owner;
		if (s->state != SLOT_VALID)
			continue;
		used = pg_atomic_read_u64(&s->last_used);
		if (lru_all == NULL || used < pg_atomic_read_u64(&lru_all->last_used))
			lru_all = s;
		if (same_key && (lru_key == NULL || used < pg_atomic_read_u64(&lru_key->last_used)))
			lru_key = s;
		if (same_owner && (lru_own == NULL || used < pg_atomic_read_u64(&lru_own->last_used)))
			lru_own = s;
	}
	if (key_n >= KEY_SHARE(cache->nslots))
		victim = lru_key;
	else if (empty != NULL)
		return empty;
	else if (own_n >= OWNER_SHARE(cache->nslots))
		victim = lru_own;
	else
		victim = lru_all;
	if (victim != NULL)
	{
		pg_atomic_fetch_add_u64(&cache->evictions, 1);
		wipe_slot(victim);
	}
	return victim;
}

static void
touch(KeySlot *s)
{
	pg_atomic_write_u64(&s->last_used, pg_atomic_add_fetch_u64(&cache->clock, 1));
}

/* Give up the slots this process is loading; runs at process exit. */
static void
abandon_own_slots(int code, Datum arg)
{
	bool		any = false;

	if (cache == NULL)
		return;
	LWLockAcquire(cache->lock, LW_EXCLUSIVE);
	for (int i = 0; i < cache->nslots; i++)
	{
		KeySlot    *s = &cache->slots[i];

		if (s->state == SLOT_LOADING && s->loader_pid == MyProcPid)
		{
			wipe_slot(s);
			any = true;
		}
	}
	LWLockRelease(cache->lock);
	if (any)
		ConditionVariableBroadcast(&cache->loaded);
}

/* The failure of load number load, if it is still in the ring. */
static FailedLoad *
find_failed(uint64 load)
{
	for (int i = 0; i < FAILED_LOADS; i++)
		if (cache->failed[i].load == load)
			return &cache->failed[i];
	return NULL;
}

ColcryptCacheResult
ColcryptKeyCacheAcquire(uint32 key_id, uint32 version, Oid owner, uint8 *dek,
						TimestampTz *loaded_at)
{
	KeyCacheShared *c = get_cache();
	long		wait_ms = (long) colcrypt_kms_timeout + 1000;
	uint64		waited_for = 0; /* the load this backend last waited for */

	for (;;)
	{
		KeySlot    *s;
		TimestampTz now = GetCurrentTimestamp();

		/* Fast path: a valid entry under the shared lock. */
		LWLockAcquire(c->lock, LW_SHARED);
		s = find_slot(key_id, version);
		if (s != NULL && s->state == SLOT_VALID && !slot_expired(s, now))
		{
			memcpy(dek, s->dek, CC_DEK_LEN);
			*loaded_at = s->loaded_at;
			touch(s);
			LWLockRelease(c->lock);
			pg_atomic_fetch_add_u64(&c->hits, 1);
			return COLCRYPT_CACHE_HIT;
		}
		LWLockRelease(c->lock);

		LWLockAcquire(c->lock, LW_EXCLUSIVE);
		s = find_slot(key_id, version);
		if (s != NULL && s->state == SLOT_VALID && slot_expired(s, now))
		{
			pg_atomic_fetch_add_u64(&c->expirations, 1);
			wipe_slot(s);
			s = NULL;
		}
		if (s != NULL && s->state == SLOT_VALID)
		{
			memcpy(dek, s->dek, CC_DEK_LEN);
			*loaded_at = s->loaded_at;
			touch(s);
			LWLockRelease(c->lock);
			pg_atomic_fetch_add_u64(&c->hits, 1);
			return COLCRYPT_CACHE_HIT;
		}

		/*
		 * The load this backend waited for is over and did not fill the
		 * slot: if it failed, fail with its error (see the locking protocol
		 * above) rather than asking the provider in turn.  (If it was
		 * dropped instead, or its failure has left the ring, load.)
		 */
		if (waited_for != 0 &&
			!(s != NULL && s->state == SLOT_LOADING && s->load == waited_for))
		{
			FailedLoad *f = find_failed(waited_for);

			if (f != NULL)
			{
				int			code = f->sqlerrcode;
				char		msg[FAILED_MESSAGE_LEN];

				strlcpy(msg, f->message, sizeof(msg));
				LWLockRelease(c->lock);
				ereport(ERROR,
						(errcode(code),
						 errmsg("%s", msg),
						 errdetail("This session waited for another one's call to the key provider for the same key, which failed.")));
			}
		}
		if (s != NULL && s->state == SLOT_LOADING && s->loader_pid != MyProcPid &&
			!TimestampDifferenceExceeds(s->loading_since, now, wait_ms))
		{
			/* Someone else is asking the provider: wait for them. */
			waited_for = s->load;
			ConditionVariablePrepareToSleep(&c->loaded);
			LWLockRelease(c->lock);
			(void) ConditionVariableTimedSleep(&c->loaded, wait_ms,
											   PG_WAIT_EXTENSION);
			ConditionVariableCancelSleep();
			CHECK_FOR_INTERRUPTS();
			continue;
		}

		/* Become the loader: of this stale slot, or of a new one. */
		if (s == NULL)
			s = claim_slot(key_id, owner);
		if (s == NULL)
		{
			LWLockRelease(c->lock);
			pg_atomic_fetch_add_u64(&c->misses, 1);
			return COLCRYPT_CACHE_UNCACHED;
		}
		s->dboid = MyDatabaseId;
		s->key_id = key_id;
		s->version = version;
		s->owner = owner;
		s->state = SLOT_LOADING;
		s->loader_pid = MyProcPid;
		s->loading_since = now;
		s->load = ++c->loads;
		touch(s);
		LWLockRelease(c->lock);
		pg_atomic_fetch_add_u64(&c->misses, 1);

		if (!exit_callback_registered)
		{
			on_shmem_exit(abandon_own_slots, (Datum) 0);
			exit_callback_registered = true;
		}
		return COLCRYPT_CACHE_LOAD;
	}
}

void
ColcryptKeyCacheFill(uint32 key_id, uint32 version, const uint8 *dek,
					 uint64 epoch_seen, TimestampTz *loaded_at)
{
	KeyCacheShared *c = get_cache();
	KeySlot    *s;

	*loaded_at = GetCurrentTimestamp();
	LWLockAcquire(c->lock, LW_EXCLUSIVE);
	s = find_slot(key_id, version);
	if (s != NULL && s->state == SLOT_LOADING && s->loader_pid == MyProcPid)
	{
		if (pg_atomic_read_u64(&c->epoch) == epoch_seen)
		{
			memcpy(s->dek, dek, CC_DEK_LEN);
			s->loaded_at = *loaded_at;
			s->state = SLOT_VALID;
			s->loader_pid = 0;
			touch(s);
		}
		else
			wipe_slot(s);
	}
	LWLockRelease(c->lock);
	ConditionVariableBroadcast(&c->loaded);
}

/*
 * Called in PG_CATCH, while the loader's error is being thrown: the slot is
 * given up and, if the error is the provider's (its call or opening its
 * handle failed) and not about this session (a cancel, a termination,
 * resources, a rollback), left for the backends that waited for this
 * load.  Anything else (a lock timeout, this backend's catalog state or
 * provider session) is this backend's own: the waiters ask again.
 */
void
ColcryptKeyCacheAbandon(uint32 key_id, uint32 version)
{
	KeyCacheShared *c = get_cache();
	KeySlot    *s;
	int			code = geterrcode();
	int			category = ERRCODE_TO_CATEGORY(code);
	char		msg[FAILED_MESSAGE_LEN] = "";
	bool		share;

	share = colcrypt_provider_failed &&
		category != ERRCODE_OPERATOR_INTERVENTION &&
		category != ERRCODE_INSUFFICIENT_RESOURCES &&
		category != ERRCODE_PROGRAM_LIMIT_EXCEEDED &&
		category != ERRCODE_TRANSACTION_ROLLBACK;
	if (share)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		ErrorData  *ed = CopyErrorData();

		MemoryContextSwitchTo(old);
		if (ed->message != NULL)
		{
			/* Cut at a character boundary: waiters are in this database. */
			int			len = pg_mbcliplen(ed->message, strlen(ed->message), sizeof(msg) - 1);

			memcpy(msg, ed->message, len);
			msg[len] = '\0';
		}
		FreeErrorData(ed);
	}

	LWLockAcquire(c->lock, LW_EXCLUSIVE);
	s = find_slot(key_id, version);
	if (s != NULL && s->state == SLOT_LOADING && s->loader_pid == MyProcPid)
	{
		if (share)
		{
			FailedLoad *f = &c->failed[c->next_failed];

			c->next_failed = (c->next_failed + 1) % FAILED_LOADS;
			f->load = s->load;
			f->sqlerrcode = code;
			strlcpy(f->message, msg, sizeof(f->message));
		}
		wipe_slot(s);
	}
	LWLockRelease(c->lock);
	ConditionVariableBroadcast(&c->loaded);
}

static int
kv_cmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return (x > y) - (x < y);
}

/*
 * Whether slot s is one of this database's entries listed in kvs: sorted
 * (key_id << 32 | version) pairs, where version PG_UINT32_MAX (never a real
 * one) stands for every version of its key.
 */
static bool
slot_listed(const KeySlot *s, const uint64 *kvs, int n)
{
	uint64		kv = ((uint64) s->key_id << 32) | s->version;
	uint64		every = ((uint64) s->key_id << 32) | PG_UINT32_MAX;

	if (s->state == SLOT_EMPTY || s->dboid != MyDatabaseId)
		return false;
	return bsearch(&kv, kvs, n, sizeof(uint64), kv_cmp) != NULL ||
		bsearch(&every, kvs, n, sizeof(uint64), kv_cmp) != NULL;
}

/*
 * Wipe and drop this database's cached (key_id << 32 | version) pairs
 * (kvs is sorted in place).
 */
void
ColcryptKeyCacheForgetVersions(uint64 *kvs, int n)
{
	KeyCacheShared *c = get_cache();
	bool		any = false;
	bool		loading = false;

	if (n <= 0)
		return;
	qsort(kvs, n, sizeof(uint64), kv_cmp);

	/* Usually none is cached: look under the shared lock first. */
	LWLockAcquire(c->lock, LW_SHARED);
	for (int i = 0; i < c->nslots && !any; i++)
		any = slot_listed(&c->slots[i], kvs, n);
	LWLockRelease(c->lock);
	if (!any)
		return;

	LWLockAcquire(c->lock, LW_EXCLUSIVE);
	for (int i = 0; i < c->nslots; i++)
	{
		KeySlot    *s = &c->slots[i];

		if (slot_listed(s, kvs, n))
		{
			/*
			 * A load in progress is dropped too: it may have read the
			 * catalog before the change that makes us forget, and its
			 * loader, finding no slot, keeps the key to itself.
			 */
			loading |= s->state == SLOT_LOADING;
			wipe_slot(s);
		}
	}
	LWLockRelease(c->lock);
	/* Whoever waits for a dropped load loads for itself, and sees why not. */
	if (loading)
		ConditionVariableBroadcast(&c->loaded);
}

void
ColcryptKeyCacheForget(uint32 key_id, int64 version)
{
	uint64		kv = ((uint64) key_id << 32) | (version < 0 ? PG_UINT32_MAX : (uint32) version);

	ColcryptKeyCacheForgetVersions(&kv, 1);
}

/*
 * Wipe every entry whose TTL has passed; returns how many.  A first look
 * under the shared lock, so that a cache with nothing expired costs readers
 * nothing.
 */
static int
sweep_expired(KeyCacheShared *c)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		any = false;
	int			n = 0;

	LWLockAcquire(c->lock, LW_SHARED);
	for (int i = 0; i < c->nslots && !any; i++)
		any = slot_expired(&c->slots[i], now);
	LWLockRelease(c->lock);
	if (!any)
		return 0;

	LWLockAcquire(c->lock, LW_EXCLUSIVE);
	for (int i = 0; i < c->nslots; i++)
	{
		KeySlot    *s = &c->slots[i];

		if (slot_expired(s, now))
		{
			wipe_slot(s);
			n++;
		}
	}
	LWLockRelease(c->lock);
	pg_atomic_fetch_add_u64(&c->expirations, n);
	return n;
}

/*
 * The janitor: a background worker of its own, without a database, started
 * with the postmaster on a primary and a standby alike.  Once a second it
 * wipes the entries whose colcrypt.key_cache_ttl has passed, so an
 * unwrapped data key stays in shared memory no longer than the TTL (and a
 * second) even when no one asks for it again: a key whose master key was
 * revoked in the key manager, or one of a database dropped since.  (Before
 * it, an expired entry was only wiped at its next lookup or eviction.)
 */
static void
register_janitor(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
	bgw.bgw_start_time = BgWorkerStart_PostmasterStart;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "colcrypt", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "colcrypt_key_cache_janitor_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "colcrypt key cache janitor", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "colcrypt key cache janitor", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

PGDLLEXPORT void colcrypt_key_cache_janitor_main(Datum arg);

void
colcrypt_key_cache_janitor_main(Datum arg)
{
	KeyCacheShared *c;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	c = get_cache();

	for (;;)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (ShutdownRequestPending)
			proc_exit(0);
		if (ConfigReloadPending)
		{
			/* colcrypt.key_cache_ttl may have changed */
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		(void) sweep_expired(c);
	}
}

/*
 * Send every other backend PostgreSQL's catch-up interrupt, which an idle
 * one serves by running an empty transaction.  (A stale pid is harmless:
 * SendProcSignal finds no such backend.)
 */
static void
wake_backends(void)
{
	for (uint32 i = 0; i < ProcGlobal->allProcCount; i++)
	{
		int			pid = ProcGlobal->allProcs[i].pid;

		if (pid != 0 && pid != MyProcPid)
			(void) SendProcSignal(pid, PROCSIG_CATCHUP_INTERRUPT, COLCRYPT_INVALID_BACKEND);
	}
}

/* Wipe every unwrapped key; returns how many there were. */
int
ColcryptKeyCacheEvictAll(void)
{
	KeyCacheShared *c = get_cache();
	int			n = 0;

	LWLockAcquire(c->lock, LW_EXCLUSIVE);
	for (int i = 0; i < c->nslots; i++)
	{
		KeySlot    *s = &c->slots[i];

		if (s->state == SLOT_VALID)
		{
			wipe_slot(s);
			n++;
		}
	}
	LWLockRelease(c->lock);
	/*
	 * Every backend drops its key schedules when it sees the new epoch: at
	 * its next key use, or at the end of its next transaction, which the
	 * catch-up interrupt makes an idle backend run (see keyaccess.c).
	 */
	ColcryptBumpCatalogEpoch();
	wake_backends();
	return n;
}

PG_FUNCTION_INFO_V1(colcrypt_key_cache_evict);

Datum
colcrypt_key_cache_evict(PG_FUNCTION_ARGS)
{
	ColcryptRequirePreload();
	PG_RETURN_INT32(ColcryptKeyCacheEvictAll());
}

void
ColcryptKeyCacheCountProviderCall(bool failed)
{
	KeyCacheShared *c = get_cache();

	pg_atomic_fetch_add_u64(&c->provider_calls, 1);
	if (failed)
		pg_atomic_fetch_add_u64(&c->provider_failures, 1);
}

uint64
ColcryptCatalogEpoch(void)
{
	return pg_atomic_read_u64(&get_cache()->epoch);
}

bool
ColcryptCatalogEpochSettled(uint64 epoch)
{
	return (epoch & (EPOCH_ONE - 1)) == 0;
}

void
ColcryptBumpCatalogEpoch(void)
{
	pg_atomic_fetch_add_u64(&get_cache()->epoch, EPOCH_ONE);
}

void
ColcryptCatalogCommitBegins(void)
{
	pg_atomic_fetch_add_u64(&get_cache()->epoch, 1);
}

/*
 * Committed or not, the change leaves the in-flight count and moves the
 * epoch forward: the epoch never goes back, so no backend can mistake a
 * later state for one it loaded at (an aborted change costs one needless
 * reload).
 */
void
ColcryptCatalogCommitEnds(void)
{
	pg_atomic_fetch_add_u64(&get_cache()->epoch, EPOCH_ONE - 1);
}

uint32
ColcryptTransitNextGeneration(void)
{
	uint32		gen = pg_atomic_add_fetch_u32(&get_cache()->transit_generation, 1);

	/* Generation 0 would read as "none"; skip it on wrap-around. */
	if (gen == 0)
		gen = pg_atomic_add_fetch_u32(&cache->transit_generation, 1);
	return gen;
}

void
ColcryptTransitKey(uint32 generation, uint8 key[CC_AES256_KEY_LEN])
{
	static const char label[] = "colcrypt/v1/transit";
	uint8		info[sizeof(label) + 4];
	KeyCacheShared *c = get_cache();

	memcpy(info, label, sizeof(label));
	info[sizeof(label)] = (uint8) (generation >> 24);
	info[sizeof(label) + 1] = (uint8) (generation >> 16);
	info[sizeof(label) + 2] = (uint8) (generation >> 8);
	info[sizeof(label) + 3] = (uint8) generation;
	if (cc_hkdf_sha256(c->transit_secret, sizeof(c->transit_secret), NULL, 0,
					   info, sizeof(info), key, CC_AES256_KEY_LEN) != CC_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not derive the transit key")));
}

uint64
ColcryptServerHash(const void *data, size_t len)
{
	static cc_siphash_key *hkey = NULL;
	uint64		h;

	if (hkey == NULL)
	{
		static const char label[] = "colcrypt/v1/server-hash";
		KeyCacheShared *c = get_cache();
		uint8		key[16];

		if (cc_hkdf_sha256(c->transit_secret, sizeof(c->transit_secret), NULL, 0,
						   (const uint8 *) label, sizeof(label), key, sizeof(key)) != CC_OK ||
			(hkey = cc_siphash_key_new(key)) == NULL)
		{
			cc_wipe(key, sizeof(key));
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not set up the server hash key")));
		}
		cc_wipe(key, sizeof(key));
	}
	if (cc_siphash(hkey, data, len, &h) != CC_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not hash a value")));
	return h;
}

PG_FUNCTION_INFO_V1(colcrypt_key_cache_stats);

/* The one row behind the colcrypt.key_cache view. */
Datum
colcrypt_key_cache_stats(PG_FUNCTION_ARGS)
{
	KeyCacheShared *c = get_cache();
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9] = {0};
	int			entries = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	LWLockAcquire(c->lock, LW_SHARED);
	for (int i = 0; i < c->nslots; i++)
		if (c->slots[i].state == SLOT_VALID)
			entries++;
	LWLockRelease(c->lock);

	values[0] = Int32GetDatum(entries);
	values[1] = Int32GetDatum(c->nslots);
	values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&c->hits));
	values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&c->misses));
	values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&c->provider_calls));
	values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&c->provider_failures));
	values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&c->evictions));
	values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&c->expirations));
	values[8] = Int32GetDatum(colcrypt_key_cache_ttl);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(colcrypt_key_cache_contents);

/* One row per cached key version: identity and age, never key bytes. */
Datum
colcrypt_key_cache_contents(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	KeyCacheShared *c = get_cache();

	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(c->lock, LW_SHARED);
	for (int i = 0; i < c->nslots; i++)
	{
		KeySlot    *s = &c->slots[i];
		Datum		values[5];
		bool		nulls[5] = {0};

		/* Another database's key ids name its own keys. */
		if (s->state == SLOT_EMPTY || s->dboid != MyDatabaseId)
			continue;
		values[0] = Int64GetDatum((int64) s->key_id);
		values[1] = Int32GetDatum((int32) s->version);
		values[2] = CStringGetTextDatum(s->state == SLOT_VALID ? "valid" : "loading");
		if (s->state == SLOT_VALID)
		{
			values[3] = TimestampTzGetDatum(s->loaded_at);
			values[4] = TimestampTzGetDatum(s->loaded_at +
											(int64) colcrypt_key_cache_ttl * USECS_PER_SEC);
		}
		else
			nulls[3] = nulls[4] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(c->lock);
	return (Datum) 0;
}
