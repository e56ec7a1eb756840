/*-------------------------------------------------------------------------
 *
 * logredact.c
 *	  Keeps plaintext of encrypted columns out of the server log where
 *	  PostgreSQL itself puts values into an error report.
 *
 * PostgreSQL shows values in an error's detail and context lines: a
 * unique, exclusion or foreign key violation shows the key ("Key
 * (email)=(alice@example.com) already exists."), a NOT NULL, CHECK,
 * partition or view check option violation the failing row ("Failing row
 * contains (...)"), COPY the input line; the STATEMENT line repeats a
 * query's literals.  Values of encrypted columns get there as plaintext,
 * through the output functions or as the client sent them.  That is
 * useful to the session, which may read them anyway; but the server log
 * must never hold plaintext.
 *
 * So every statement that handled plaintext of an encrypted value
 * (encrypted or decrypted anything: colcrypt asks for a data key at that
 * moment) is marked, and an emit_log_hook gives an error reported during a
 * marked statement a server-log-only detail without the values
 * (ErrorData.detail_log) and leaves its context and statement lines out of
 * the log (hide_ctx, hide_stmt).  The client receives the report whole.
 * The mark is made before any value description is built, covers arrays
 * and composites of encrypted types, errors raised after the transaction
 * aborted and background workers (a logical replication apply worker's
 * unique violation), and needs no catalog access in the hook, which runs
 * with the failing operation's locks still held.  It errs on the side of
 * hiding: any error of a marked statement loses those lines in the log.
 *
 * What remains is the primary message of a function that fails on a value
 * a query decrypted (s::text::int quoting it, say): that message is the
 * query's own doing and goes to the log as PostgreSQL writes it.
 *
 * The client.  Normally the client gets the report whole: its role may
 * read the values anyway.  Not when the plaintext was decrypted for
 * another role: inside a SECURITY DEFINER function, whose constraint
 * violation would show its caller the failing row the definer could read
 * ("Failing row contains (...)"), or whose failing cast would quote a
 * decrypted value.  So colcrypt counts every decryption done for a role
 * other than the session's current one under a key the session's role may
 * not decrypt, and a function hook (fmgr_hook, which PostgreSQL calls when
 * a SECURITY DEFINER function starts, ends or fails) looks at an error
 * leaving such a function: if the count moved while it ran, the error
 * goes on with its SQLSTATE and the untranslated form of its message (the
 * format, before values were filled in), and without its detail and
 * context, before any handler of the caller's (a PL/pgSQL EXCEPTION
 * block) or the client sees it.  colcrypt's own messages (its message
 * domain) hold no values and pass unchanged.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "colcrypt/audit.h"

#include "access/xact.h"
#include "fmgr.h"
#include "utils/elog.h"
#include "utils/memutils.h"

static emit_log_hook_type prev_emit_log_hook = NULL;
static fmgr_hook_type prev_fmgr_hook = NULL;

/*
 * The start of the statement that last handled plaintext.  Background
 * workers that never set a statement start keep one value throughout:
 * once marked, they stay marked, which fails closed.
 */
static bool plaintext_noted = false;
static TimestampTz plaintext_stmt = 0;

void
ColcryptNotePlaintext(void)
{
	plaintext_stmt = GetCurrentStatementStartTimestamp();
	plaintext_noted = true;
}

/* Decryptions done for a role the session's may not read for (see top). */
static uint64 foreign_decrypts = 0;

void
ColcryptNoteForeignPlaintext(void)
{
	foreign_decrypts++;
}

uint64
ColcryptForeignDecrypts(void)
{
	return foreign_decrypts;
}

static void
redact_emit_log_hook(ErrorData *edata)
{
	if (edata->output_to_server && plaintext_noted &&
		plaintext_stmt == GetCurrentStatementStartTimestamp())
	{
		if (edata->detail != NULL && edata->detail_log == NULL)
			edata->detail_log = pstrdup("Values are not logged: the statement handled encrypted values.");
		edata->hide_ctx = true;
		edata->hide_stmt = true;
	}

	/*
	 * Audit lines are colcrypt's alone: anything else that would read like
	 * one (RAISE LOG 'colcrypt audit: ...' in a user's function, an error
	 * message quoting such text) is marked as what it is.
	 */
	if (edata->output_to_server && edata->message != NULL && !ColcryptAuditLineInProgress())
	{
		const char *m = edata->message;

		while (*m == ' ' || *m == '\t' || *m == '\n' || *m == '\r')
			m++;
		if (pg_strncasecmp(m, COLCRYPT_AUDIT_LOG_PREFIX, strlen(COLCRYPT_AUDIT_LOG_PREFIX)) == 0)
			edata->message = psprintf("(not a colcrypt audit record) %s", edata->message);
	}

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/*
 * SECURITY DEFINER functions: the count of foreign decryptions when each
 * running one started, innermost last.
 */
static uint64 *definer_marks = NULL;
static int	ndefiner = 0;
static int	maxdefiner = 0;

static void
redact_fmgr_hook(FmgrHookEventType event, FmgrInfo *flinfo, Datum *private)
{
	if (prev_fmgr_hook)
		prev_fmgr_hook(event, flinfo, private);

	if (event == FHET_START)
	{
		if (ndefiner == maxdefiner)
		{
			int			n = maxdefiner ? maxdefiner * 2 : 16;

			definer_marks = definer_marks ?
				repalloc(definer_marks, sizeof(uint64) * n) :
				MemoryContextAlloc(TopMemoryContext, sizeof(uint64) * n);
			maxdefiner = n;
		}
		definer_marks[ndefiner++] = foreign_decrypts;
		return;
	}
	if (ndefiner == 0)
		return;
	ndefiner--;
	if (event == FHET_ABORT && definer_marks[ndefiner] != foreign_decrypts)
	{
		MemoryContext old = MemoryContextSwitchTo(CurTransactionContext);
		ErrorData  *e = CopyErrorData();

		if (!(e->domain != NULL && strcmp(e->domain, TEXTDOMAIN) == 0))
		{
			FlushErrorState();
			if (e->message_id != NULL && e->message != NULL &&
				strcmp(e->message, e->message_id) != 0)
				e->message = pstrdup(e->message_id);
			e->detail = pstrdup("Withheld: values in this report were decrypted for another role.");
			e->context = NULL;
			e->internalquery = NULL;
			e->internalpos = 0;
			MemoryContextSwitchTo(old);
			ReThrowError(e);
		}
		FreeErrorData(e);
		MemoryContextSwitchTo(old);
	}
}

/* Starts without ends (an error elsewhere) do not outlive the transaction. */
static void
redact_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		ndefiner = 0;
}

void
ColcryptLogRedactInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = redact_emit_log_hook;
	prev_fmgr_hook = fmgr_hook;
	fmgr_hook = redact_fmgr_hook;
	RegisterXactCallback(redact_xact_callback, NULL);
}
