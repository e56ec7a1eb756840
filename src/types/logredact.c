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
 * another role: inside a SECURITY DEFINER function, say, whose constraint
 * violation would show its caller the failing row the definer could read.
 * So a statement in which anything was decrypted for a role other than
 * the session's current one, under a key the session's role may not
 * decrypt, is marked too, and an error reported to the client during it
 * keeps its SQLSTATE and the untranslated form of its message (the format,
 * before values were filled in) and loses its detail and context.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/xact.h"
#include "utils/elog.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

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

/* The start of the statement that decrypted for another role (see top). */
static bool foreign_noted = false;
static TimestampTz foreign_stmt = 0;

void
ColcryptNoteForeignPlaintext(void)
{
	foreign_stmt = GetCurrentStatementStartTimestamp();
	foreign_noted = true;
}

static void
redact_emit_log_hook(ErrorData *edata)
{
	if (edata->output_to_client && edata->elevel >= ERROR && foreign_noted &&
		foreign_stmt == GetCurrentStatementStartTimestamp())
	{
		if (edata->message_id != NULL && edata->message != NULL &&
			strcmp(edata->message, edata->message_id) != 0)
			edata->message = pstrdup(edata->message_id);
		edata->detail = pstrdup("Withheld: values in this report were decrypted for another role.");
		edata->context = NULL;
		edata->internalquery = NULL;
	}

	if (edata->output_to_server && plaintext_noted &&
		plaintext_stmt == GetCurrentStatementStartTimestamp())
	{
		if (edata->detail != NULL && edata->detail_log == NULL)
			edata->detail_log = pstrdup("Values are not logged: the statement handled encrypted values.");
		edata->hide_ctx = true;
		edata->hide_stmt = true;
	}

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
ColcryptLogRedactInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = redact_emit_log_hook;
}
