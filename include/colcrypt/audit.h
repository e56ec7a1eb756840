/*-------------------------------------------------------------------------
 *
 * audit.h
 *	  The audit trail: key management actions, provider failures and denied
 *	  decryptions, to colcrypt.audit_log and/or the server log as
 *	  colcrypt.audit says.  Never a secret or a plaintext.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_AUDIT_H
#define COLCRYPT_AUDIT_H

#include "colcrypt/provider.h"

/*
 * Record one action.  object_type is "provider", "master_key", "key" or
 * "grant"; version is 0 when not about one key version; detail may be NULL.
 */
extern void ColcryptAudit(const char *action, const char *object_type,
						  const char *object_name, int32 version,
						  bool success, const char *detail);

/* Record a failed provider call (op is what was attempted). */
extern void ColcryptAuditProviderFailure(const char *provider, const char *op,
										 const ColcryptProviderError *err);

#endif							/* COLCRYPT_AUDIT_H */
