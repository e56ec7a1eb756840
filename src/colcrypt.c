/*-------------------------------------------------------------------------
 *
 * colcrypt.c
 *	  Module entry point: the settings and the start-up of each part.
 *
 * colcrypt must be loaded through shared_preload_libraries: the key cache
 * lives in shared memory requested at postmaster start.  Loaded any other
 * way (a plain LOAD, or CREATE EXTENSION on a server started without it)
 * the library defines its settings and nothing else, and every SQL entry
 * point refuses with a hint (see ColcryptRequirePreload).
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "colcrypt/audit.h"
#include "colcrypt/batch.h"
#include "colcrypt/keys.h"
#include "colcrypt/lifecycle.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

int			colcrypt_key_cache_entries = 1024;
int			colcrypt_key_cache_ttl = 3600;
int			colcrypt_kms_timeout = 5000;
int			colcrypt_output = COLCRYPT_OUTPUT_PLAINTEXT;
int			colcrypt_audit = COLCRYPT_AUDIT_TABLE;
bool		colcrypt_preloaded = false;
bool		colcrypt_allow_core_dumps = false;

static const struct config_enum_entry output_options[] = {
	{"plaintext", COLCRYPT_OUTPUT_PLAINTEXT, false},
	{"ciphertext", COLCRYPT_OUTPUT_CIPHERTEXT, false},
	{NULL, 0, false}
};

static const struct config_enum_entry audit_options[] = {
	{"off", COLCRYPT_AUDIT_OFF, false},
	{"table", COLCRYPT_AUDIT_TABLE, false},
	{"log", COLCRYPT_AUDIT_LOG, false},
	{"all", COLCRYPT_AUDIT_ALL, false},
	{NULL, 0, false}
};

void		_PG_init(void);

static void
define_settings(bool preloading)
{
	/*
	 * A postmaster-level setting can only be defined while preloading;
	 * defining it later (the library loaded on demand by a server that did
	 * not preload it) is a FATAL error.  Leave it out then: every entry point
	 * refuses anyway.
	 */
	if (preloading)
		DefineCustomIntVariable("colcrypt.key_cache_entries",
							gettext_noop("Number of unwrapped data key versions the shared key cache holds."),
							gettext_noop("The least recently used entry is wiped and evicted when the cache is full."),
							&colcrypt_key_cache_entries,
							1024, 16, 1000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("colcrypt.key_cache_ttl",
							gettext_noop("Seconds an unwrapped data key may be used before the key provider is asked again."),
							NULL,
							&colcrypt_key_cache_ttl,
							3600, 1, 7 * 24 * 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("colcrypt.kms_timeout",
							gettext_noop("Longest time one call to a key provider may take."),
							NULL,
							&colcrypt_kms_timeout,
							5000, 100, 600000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("colcrypt.output",
							 gettext_noop("Whether encrypted columns are shown as plaintext or as their ciphertext text form."),
							 gettext_noop("With \"ciphertext\", output shows the ciphertext text form and input accepts it back, so pg_dump and restore move ciphertext only."),
							 &colcrypt_output,
							 COLCRYPT_OUTPUT_PLAINTEXT,
							 output_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("colcrypt.audit",
							 gettext_noop("Where key management actions, provider failures and denied decryptions are recorded."),
							 NULL,
							 &colcrypt_audit,
							 COLCRYPT_AUDIT_TABLE,
							 audit_options,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("colcrypt.audit_wait_timeout",
							gettext_noop("Longest time a session waits for room in the audit queue."),
							gettext_noop("A session whose events fill its share of the queue waits for the writer this long (back-pressure); after that, or where it cannot wait, an event is lost, counted, and written to the audit log as lost. 0: never wait."),
							&colcrypt_audit_wait_timeout,
							10000, 0, 3600 * 1000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("colcrypt.allow_core_dumps",
							 gettext_noop("Whether a process that has handled key material may still write a core dump."),
							 gettext_noop("When off, a process makes itself non-dumpable before the first data key, derived subkey, master key or provider secret enters its private memory: no core file of it is written, and other processes of the same operating system user cannot trace it or read its memory."),
							 &colcrypt_allow_core_dumps,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	ColcryptLifecycleDefineSettings();
	ColcryptBatchScanDefineSettings();
	MarkGUCPrefixReserved("colcrypt");
}

void
_PG_init(void)
{
	define_settings(process_shared_preload_libraries_in_progress);

	if (!process_shared_preload_libraries_in_progress)
		return;
	colcrypt_preloaded = true;

	ColcryptKeyCacheInit();
	ColcryptKeyAccessInit();
	ColcryptRolesInit();
	ColcryptAuditInit();
	ColcryptDdlGuardInit();
	ColcryptLogRedactInit();
	ColcryptBatchScanInit();
	ColcryptExecGuardInit();
}

void
ColcryptRequirePreload(void)
{
	if (!colcrypt_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("colcrypt must be loaded via shared_preload_libraries"),
				 errhint("Add colcrypt to shared_preload_libraries in postgresql.conf and restart the server.")));
}

PG_FUNCTION_INFO_V1(colcrypt_require_preload);

/*
 * Called first by the install script, so that CREATE EXTENSION fails early
 * and clearly on a server that did not preload the library.
 */
Datum
colcrypt_require_preload(PG_FUNCTION_ARGS)
{
	ColcryptRequirePreload();
	PG_RETURN_VOID();
}
