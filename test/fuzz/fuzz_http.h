/*-------------------------------------------------------------------------
 *
 * fuzz_http.h
 *	  Shared by fuzz_http.c and the files that include the providers
 *	  (http_vault.c, http_aws.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_FUZZ_HTTP_H
#define COLCRYPT_FUZZ_HTTP_H

#include <stdint.h>

/* Selector bits that shape the handle or the call. */
#define FZ_FLAG_A	0x08		/* vault: a namespace; aws: data_key_source "kms" */
#define FZ_FLAG_B	0x10		/* vault: AppRole login; aws: a session token */
#define FZ_FLAG_C	0x20		/* the operation's variant (see fuzz_http.c) */

extern void *fz_vault_handle(uint8_t flags);
extern void *fz_aws_handle(uint8_t flags);

#endif							/* COLCRYPT_FUZZ_HTTP_H */
