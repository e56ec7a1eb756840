/*-------------------------------------------------------------------------
 *
 * audit.h
 *	  The audit trail: key management actions, provider failures, denied
 *	  decryptions and uses of compromised keys, to colcrypt.audit_log and/or
 *	  the server log as colcrypt.audit says.  Never a secret or a plaintext.
 *
 * Events go through a queue in shared memory that a background worker per
 * database drains into colcrypt.audit_event in its own transactions, so an
 * event is recorded even when the transaction that caused it fails, and
 * from read-only transactions.  On a standby (which cannot write) events go
 * to the server log only.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_AUDIT_H
#define COLCRYPT_AUDIT_H

#include "colcrypt/provider.h"
#include "fmgr.h"

/*
 * A key management action of this transaction: recorded as "ok" if the
 * transaction commits and "rolled back" if it aborts.  object_type is
 * "provider", "master_key" or "key"; version 0 means none.
 */
extern void ColcryptAuditAction(const char *action, const char *object_type,
								const char *object_name, int32 version,
								const char *detail);

/* Something that failed or was refused: recorded at once with outcome. */
extern void ColcryptAuditEvent(const char *action, const char *object_type,
							   const char *object_name, int32 version,
							   const char *outcome, const char *detail);

/* A failed provider call (op is what was attempted). */
extern void ColcryptAuditProviderFailure(const char *provider, const char *op,
										 const ColcryptProviderError *err);

/*
 * Run the body of a key management function; if it fails, record the
 * failure (action on the object named by the first argument, or the
 * column named by a regclass and a name argument) and re-throw.
 */
extern Datum ColcryptAudited(FunctionCallInfo fcinfo, const char *action,
							 const char *object_type,
							 Datum (*body) (FunctionCallInfo fcinfo));

/* Defines SQL-callable sqlname as body, audited as above. */
#define COLCRYPT_AUDITED_FN(sqlname, body, action, object_type) \
	PG_FUNCTION_INFO_V1(sqlname); \
	Datum sqlname(PG_FUNCTION_ARGS) \
	{ \
		return ColcryptAudited(fcinfo, action, object_type, body); \
	}

/* Argument n as a C string; an error naming it as what if null. */
extern char *ColcryptTextArg(FunctionCallInfo fcinfo, int n, const char *what);

/*
 * Have the database's background worker run ColcryptShredPending() soon
 * (safe in a commit callback: never errors).
 */
extern void ColcryptRequestShred(Oid dboid);

/* Shared memory and the writer worker. */
extern void ColcryptAuditInit(void);

/* colcrypt.audit_wait_timeout: longest wait for room in the queue (ms). */
extern int	colcrypt_audit_wait_timeout;

/*
 * Server log lines of audit events start with this; while one is being
 * written ColcryptAuditLineInProgress() is true, so that the log hook can
 * mark every other line that starts the same way.
 */
#define COLCRYPT_AUDIT_LOG_PREFIX "colcrypt audit:"
extern bool ColcryptAuditLineInProgress(void);
extern void ColcryptAuditShmemRequest(void);
extern void ColcryptAuditShmemStartup(void);

#endif							/* COLCRYPT_AUDIT_H */
