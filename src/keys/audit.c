/*-------------------------------------------------------------------------
 *
 * audit.c
 *	  Writing the audit trail.
 *
 * With colcrypt.audit = table (the default) or all, an action becomes a row
 * of colcrypt.audit_log written in the acting transaction; with log or all,
 * a LOG line "colcrypt audit: ..." in the server log (without the statement
 * text, which may hold plaintext).  Where the transaction cannot write (hot
 * standby, read-only transaction, parallel mode) the row is replaced by the
 * log line.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "colcrypt/audit.h"
#include "colcrypt/catalog.h"
#include "miscadmin.h"
#include "utils/builtins.h"

static bool
can_write_row(void)
{
	return IsTransactionState() && !RecoveryInProgress() && !XactReadOnly &&
		!IsInParallelMode() && OidIsValid(ColcryptCatalogRelid("audit_event"));
}

void
ColcryptAudit(const char *action, const char *object_type,
			  const char *object_name, int32 version, bool success,
			  const char *detail)
{
	bool		to_table = (colcrypt_audit == COLCRYPT_AUDIT_TABLE ||
							colcrypt_audit == COLCRYPT_AUDIT_ALL);
	bool		to_log = (colcrypt_audit == COLCRYPT_AUDIT_LOG ||
						  colcrypt_audit == COLCRYPT_AUDIT_ALL);

	if (colcrypt_audit == COLCRYPT_AUDIT_OFF)
		return;
	if (to_table && !can_write_row())
	{
		to_table = false;
		to_log = true;
	}
	if (to_log)
		ereport(LOG,
				(errmsg("colcrypt audit: %s %s \"%s\"%s by \"%s\": %s%s%s",
						action, object_type, object_name ? object_name : "",
						version > 0 ? psprintf(" version %d", version) : "",
						GetUserNameFromId(GetUserId(), true) ? GetUserNameFromId(GetUserId(), true) : "?",
						success ? "ok" : "failed",
						detail ? ": " : "", detail ? detail : ""),
				 errhidestmt(true)));
	if (to_table)
	{
		Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, BOOLOID, TEXTOID};
		Datum		values[7];
		char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
		const char *actor = GetUserNameFromId(GetUserId(), true);

		/* Catalog statements run as the schema owner: name the actor here. */
		values[0] = CStringGetTextDatum(actor ? actor : "?");
		values[1] = CStringGetTextDatum(action);
		values[2] = CStringGetTextDatum(object_type);
		values[3] = object_name ? CStringGetTextDatum(object_name) : (Datum) 0;
		nulls[3] = object_name ? ' ' : 'n';
		values[4] = Int32GetDatum(version);
		nulls[4] = version > 0 ? ' ' : 'n';
		values[5] = BoolGetDatum(success);
		values[6] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
		nulls[6] = detail ? ' ' : 'n';
		ColcryptCatalogExec("INSERT INTO colcrypt.audit_event"
							" (role_name, action, object_type, object_name, key_version, success, detail)"
							" VALUES ($1, $2, $3, $4, $5, $6, $7)",
							7, types, values, nulls, NULL, NULL);
	}
}

void
ColcryptAuditProviderFailure(const char *provider, const char *op,
							 const ColcryptProviderError *err)
{
	char	   *detail = psprintf("%s: %s%s%s", op, err->message,
								  err->detail[0] ? " " : "", err->detail);

	/* The failing statement is about to roll back: the row would go with it. */
	if (colcrypt_audit != COLCRYPT_AUDIT_OFF)
		ereport(LOG,
				(errmsg("colcrypt audit: provider failure on \"%s\" by \"%s\": %s",
						provider,
						GetUserNameFromId(GetUserId(), true) ? GetUserNameFromId(GetUserId(), true) : "?",
						detail),
				 errhidestmt(true)));
	pfree(detail);
}
