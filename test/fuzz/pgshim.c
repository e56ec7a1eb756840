/*-------------------------------------------------------------------------
 *
 * pgshim.c
 *	  The backend services the provider files call, for the fuzz harnesses
 *	  (see pgshim.h).  Compiled against the server headers like the
 *	  extension; linked with libpgcommon/libpgport (frontend builds) for
 *	  StringInfo, psprintf, base64 and pg_parse_json.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>
#include <time.h>

#include "colcrypt/provider.h"
#include "miscadmin.h"
#include "pgshim.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/memutils.h"

int64_t		fz_now = 700000000000000;	/* 2022-03-08, in PostgreSQL microseconds */
int			fz_waits_left = 0;

/* ---------------------------------------------------------------------
 * Memory: every chunk on one list, freed by fz_reset
 * ---------------------------------------------------------------------
 */

typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	size_t		size;
	size_t		magic;
} Chunk;

#define CHUNK_MAGIC ((size_t) 0x636f6c6372797074)

static Chunk chunks = {&chunks, &chunks, 0, 0};

/* Any non-NULL context will do: there is only one pool. */
static char dummy_context;
MemoryContext CurrentMemoryContext = (MemoryContext) &dummy_context;
MemoryContext TopMemoryContext = (MemoryContext) &dummy_context;
MemoryContext ErrorContext = (MemoryContext) &dummy_context;

static void *
chunk_alloc(size_t size, bool zero)
{
	Chunk	   *c;

	if (size > MaxAllocHugeSize)
	{
		fprintf(stderr, "pgshim: allocation of %zu bytes\n", size);
		abort();
	}
	c = zero ? calloc(1, sizeof(Chunk) + size) : malloc(sizeof(Chunk) + size);
	if (c == NULL)
		abort();
	c->size = size;
	c->magic = CHUNK_MAGIC;
	c->next = chunks.next;
	c->prev = &chunks;
	chunks.next->prev = c;
	chunks.next = c;
	return c + 1;
}

static Chunk *
chunk_of(void *p)
{
	Chunk	   *c = (Chunk *) p - 1;

	if (c->magic != CHUNK_MAGIC)
	{
		fprintf(stderr, "pgshim: pfree/repalloc of a pointer palloc did not return\n");
		abort();
	}
	return c;
}

void *
palloc(Size size)
{
	return chunk_alloc(size, false);
}

void *
palloc0(Size size)
{
	return chunk_alloc(size, true);
}

void *
palloc_extended(Size size, int flags)
{
	return chunk_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0);
}

void
pfree(void *p)
{
	Chunk	   *c = chunk_of(p);

	c->prev->next = c->next;
	c->next->prev = c->prev;
	c->magic = 0;
	free(c);
}

void *
repalloc(void *p, Size size)
{
	Chunk	   *c = chunk_of(p);
	void	   *n = chunk_alloc(size, false);

	memcpy(n, p, Min(size, c->size));
	pfree(p);
	return n;
}

void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	return chunk_alloc(size, false);
}

void *
MemoryContextAllocZero(MemoryContext context, Size size)
{
	return chunk_alloc(size, true);
}

void *
MemoryContextAllocZeroAligned(MemoryContext context, Size size)
{
	return chunk_alloc(size, true);
}

void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	return chunk_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0);
}

char *
MemoryContextStrdup(MemoryContext context, const char *string)
{
	return pstrdup(string);
}

char *
pstrdup(const char *in)
{
	size_t		n = strlen(in) + 1;
	char	   *out = chunk_alloc(n, false);

	memcpy(out, in, n);
	return out;
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = chunk_alloc(len + 1, false);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

/* libpgcommon's frontend files call these too. */
void *
pg_malloc(size_t size)
{
	return chunk_alloc(size, false);
}

void *
pg_malloc0(size_t size)
{
	return chunk_alloc(size, true);
}

void *
pg_malloc_extended(size_t size, int flags)
{
	return chunk_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0);
}

void *
pg_realloc(void *p, size_t size)
{
	return p ? repalloc(p, size) : chunk_alloc(size, false);
}

char *
pg_strdup(const char *in)
{
	return pstrdup(in);
}

void
pg_free(void *p)
{
	if (p)
		pfree(p);
}

void
fz_reset(void)
{
	while (chunks.next != &chunks)
		pfree(chunks.next + 1);
}

/* ---------------------------------------------------------------------
 * Errors: ERROR and above jump to the innermost handler
 * ---------------------------------------------------------------------
 */

sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;
volatile sig_atomic_t InterruptPending = false;

static int	pending_level;

bool
errstart(int elevel, const char *domain)
{
	pending_level = elevel;
	return elevel >= ERROR;		/* nothing below ERROR is of interest */
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (pending_level >= ERROR)
		pg_re_throw();
}

void
pg_re_throw(void)
{
	if (PG_exception_stack == NULL)
	{
		fprintf(stderr, "pgshim: ERROR outside fz_run\n");
		abort();
	}
	siglongjmp(*PG_exception_stack, 1);
}

int
errcode(int sqlerrcode)
{
	return 0;
}

int
errcode_for_file_access(void)
{
	return 0;
}

/* The format is still run, so a bad argument shows up under the sanitizers. */
#define FORMAT_AND_DROP(fmt) \
	do { \
		va_list		ap; \
		char		buf[1024]; \
		va_start(ap, fmt); \
		vsnprintf(buf, sizeof(buf), fmt, ap); \
		va_end(ap); \
	} while (0)

int
errmsg(const char *fmt,...)
{
	FORMAT_AND_DROP(fmt);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	FORMAT_AND_DROP(fmt);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	FORMAT_AND_DROP(fmt);
	return 0;
}

int
errhint(const char *fmt,...)
{
	FORMAT_AND_DROP(fmt);
	return 0;
}

bool
fz_run(void (*fn) (void *arg), void *arg)
{
	sigjmp_buf	jb;
	sigjmp_buf *volatile save = PG_exception_stack;
	volatile bool ok = true;

	if (sigsetjmp(jb, 0) == 0)
	{
		PG_exception_stack = &jb;
		fn(arg);
	}
	else
		ok = false;
	PG_exception_stack = save;
	return ok;
}

void
ProcessInterrupts(void)
{
	InterruptPending = false;
}

/* ---------------------------------------------------------------------
 * Time, latches, wait events, roles
 * ---------------------------------------------------------------------
 */

static uint32 wait_event_local;
uint32	   *my_wait_event_info = &wait_event_local;
static Latch dummy_latch;
struct Latch *MyLatch = &dummy_latch;

TimestampTz
GetCurrentTimestamp(void)
{
	return (TimestampTz) fz_now;
}

int
WaitLatch(Latch *latch, int wakeEvents, long timeout, uint32 wait_event_info)
{
	fz_now += timeout * 1000;	/* the wait "took" its timeout */
	return WL_TIMEOUT;
}

void
ResetLatch(Latch *latch)
{
}

Oid
GetUserId(void)
{
	return 10;
}

bool
superuser(void)
{
	return true;
}

bool
has_privs_of_role(Oid member, Oid role)
{
	return true;
}

/* ---------------------------------------------------------------------
 * provider.c's helpers that read the clock or settings, as stand-ins
 * (provider_util.c's are linked as they are)
 * ---------------------------------------------------------------------
 */

int			colcrypt_kms_timeout = 5000;

char *
ColcryptUtcStamp(void)
{
	return pstrdup("20220308T000000Z");
}

TimestampTz
ColcryptProviderDeadline(void)
{
	return (TimestampTz) fz_now + (TimestampTz) colcrypt_kms_timeout * 1000;
}

/* The peer is "ready" a few times, then the deadline passes. */
bool
ColcryptProviderWaitFd(int fd, bool for_write, TimestampTz deadline)
{
	if (fz_waits_left <= 0)
	{
		fz_now = deadline;
		return false;
	}
	fz_waits_left--;
	return true;
}

/* Options and files are not what the harnesses feed: never reached. */
char *
ColcryptOptionText(Jsonb *options, const char *key)
{
	return NULL;
}

void
ColcryptCheckOptionNames(const char *kind, Jsonb *options, const char *const *allowed)
{
	abort();
}

Jsonb *
ColcryptRedactOptions(Jsonb *options, const char *const *secret, const char *const *defaults)
{
	abort();
}

char *
ColcryptReadSecretFile(const char *path, const char *what, ColcryptProviderError *err)
{
	ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "no files in the fuzz harness", path);
	return NULL;
}

/* escape_json (utils/adt/json.c), which builds request bodies. */
void
escape_json(StringInfo buf, const char *str)
{
	appendStringInfoCharMacro(buf, '"');
	for (const char *p = str; *p; p++)
	{
		switch (*p)
		{
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			default:
				if ((unsigned char) *p < ' ')
					appendStringInfo(buf, "\\u%04x", (int) *p);
				else
					appendStringInfoCharMacro(buf, *p);
				break;
		}
	}
	appendStringInfoCharMacro(buf, '"');
}
