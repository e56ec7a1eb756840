/*-------------------------------------------------------------------------
 *
 * logredact.c
 *	  Keeps plaintext of encrypted columns out of the server log where
 *	  PostgreSQL itself prints column values in an error's detail.
 *
 * A unique, exclusion, foreign key, NOT NULL, CHECK or partition constraint
 * violation shows the offending key values or the whole failing row in its
 * detail ("Key (email)=(alice@example.com) already exists.", "Failing row
 * contains (...)."), built with the columns' output functions, which print
 * plaintext for a role allowed to decrypt.  That is useful to the session
 * that caused it, which may read those values anyway; but the same detail
 * goes to the server log, which must never hold plaintext.
 *
 * Every such error names its table (errtable(), errtablecol(),
 * errtableconstraint()).  So an emit_log_hook gives any error that names a
 * table with a column of an encrypted type a detail for the server log only
 * (ErrorData.detail_log, which PostgreSQL logs in place of the detail)
 * that says the values are not shown; the client still receives the full
 * detail.  Errors that name no table are left alone: colcrypt's own
 * messages never hold a value, and what other functions print about values
 * a query decrypted is the query's doing (as with log_statement).
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "colcrypt/types.h"
#include "utils/elog.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

/* Does schema.table have a column of an encrypted type (or over one)? */
static bool
table_has_encrypted_column(const char *schema, const char *table)
{
	Oid			nsp = get_namespace_oid(schema, true);
	Oid			relid;
	HeapTuple	tp;
	int			natts;

	if (!OidIsValid(nsp))
		return false;
	relid = get_relname_relid(table, nsp);
	if (!OidIsValid(relid))
		return false;
	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tp))
		return false;
	natts = ((Form_pg_class) GETSTRUCT(tp))->relnatts;
	ReleaseSysCache(tp);
	for (AttrNumber a = 1; a <= natts; a++)
	{
		Oid			typid = get_atttype(relid, a);

		/* A dropped column's type is InvalidOid. */
		if (OidIsValid(typid) && ColcryptIsEncryptedType(typid))
			return true;
	}
	return false;
}

static void
redact_emit_log_hook(ErrorData *edata)
{
	/*
	 * Catalog lookups need a transaction that is still good; an error in
	 * error reporting itself gets no help here.
	 */
	if (edata->output_to_server && edata->detail != NULL && edata->detail_log == NULL &&
		edata->table_name != NULL && edata->schema_name != NULL &&
		!in_error_recursion_trouble() && IsTransactionState() &&
		ColcryptTypesInstalled() &&
		table_has_encrypted_column(edata->schema_name, edata->table_name))
		edata->detail_log = pstrdup("Values are not logged: the table has encrypted columns.");

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
ColcryptLogRedactInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = redact_emit_log_hook;
}
