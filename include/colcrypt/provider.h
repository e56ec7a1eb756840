/*-------------------------------------------------------------------------
 *
 * provider.h
 *	  The one interface every key provider kind implements.
 *
 * A provider holds customer master keys (CMKs) and wraps and unwraps data
 * keys with them; the CMK never leaves it (except with the development-only
 * file kind).  Each kind lives in its own file under src/providers/ and is
 * the only code that talks to its library or protocol.
 *
 * Provider functions never throw for failures of the provider itself: they
 * fill a ColcryptProviderError and return false, so that the dispatcher
 * (provider.c) can count the failure, write the audit row, and raise one
 * error that names the provider and the cause.  Secrets (PINs, tokens, key
 * bytes) never go into an error.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_PROVIDER_H
#define COLCRYPT_PROVIDER_H

#include "colcrypt/crypto.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* The SQLSTATE of a provider that cannot be reached or did not answer in time. */
#define COLCRYPT_ERRCODE_UNREACHABLE ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION

typedef struct ColcryptProviderError
{
	int			sqlerrcode;		/* ERRCODE_*: 08001 unreachable or timed out, 38000 refused, ... */
	char		message[256];	/* what failed, without secrets */
	char		detail[512];	/* the provider's own reason, if any */
} ColcryptProviderError;

/* Which data key version a wrapped key belongs to: bound into the wrapping. */
typedef struct ColcryptWrapContext
{
	const char *key_ref;		/* CMK name at the provider */
	uint32		key_id;			/* data key id */
	uint32		key_version;	/* data key version */
} ColcryptWrapContext;

typedef struct ColcryptProviderOps
{
	const char *kind;			/* the kind's name in add_provider */

	/*
	 * Check options at add_provider / alter_provider time; may throw with
	 * ereport (this runs at the SQL boundary, before anything is stored).
	 * Also does first-use set-up, such as creating an empty keyring file.
	 */
	void		(*validate) (const char *name, Jsonb *options);

	/* Open a per-backend handle; NULL with err filled on failure. */
	void	   *(*open) (const char *name, Jsonb *options, ColcryptProviderError *err);
	void		(*close) (void *handle);

	/*
	 * Wrap dek under the CMK; append the provider's blob to wrapped and set
	 * *wrap_meta to a short note kept beside it (such as the CMK version), or
	 * NULL.
	 */
	bool		(*wrap) (void *handle, const ColcryptWrapContext *ctx,
						 const uint8 *dek, size_t deklen,
						 StringInfo wrapped, char **wrap_meta,
						 ColcryptProviderError *err);

	/* Unwrap a blob made by wrap into dek (deklen bytes). */
	bool		(*unwrap) (void *handle, const ColcryptWrapContext *ctx,
						   const uint8 *wrapped, size_t wrappedlen,
						   const char *wrap_meta,
						   uint8 *dek, size_t deklen,
						   ColcryptProviderError *err);

	/*
	 * Make sure the CMK key_ref exists and can wrap, creating it where the
	 * kind can and create is true.  *created tells whether it was made now.
	 * Where the provider names new keys itself (KMIP identifiers), key_ref
	 * is only a name for the new key and *actual_ref receives the reference
	 * to record; otherwise *actual_ref stays NULL.
	 */
	bool		(*ensure_cmk) (void *handle, const char *key_ref, bool create,
							   bool *created, char **actual_ref,
							   ColcryptProviderError *err);

	/*
	 * Make a new CMK to replace key_ref: a new version of the same key where
	 * the provider versions keys (then *new_key_ref stays NULL), or a new key
	 * whose reference goes to *new_key_ref.  *new_version, if set, describes
	 * the version for the audit trail.  NULL for kinds that cannot.
	 */
	bool		(*rotate_cmk) (void *handle, const char *key_ref,
							   char **new_key_ref, char **new_version,
							   ColcryptProviderError *err);

	/*
	 * Re-wrap a blob from one CMK (from->key_ref) to another of the same
	 * provider, or to the newest version of the same CMK, without the data
	 * key leaving the provider.  NULL where the provider cannot; false with
	 * err->sqlerrcode left 0 where it cannot for this blob (Vault: a key
	 * bound by associated data).  The caller then unwraps and wraps.
	 */
	bool		(*rewrap) (void *handle, const ColcryptWrapContext *from,
						   const uint8 *wrapped, size_t wrappedlen,
						   const char *wrap_meta,
						   const ColcryptWrapContext *to,
						   StringInfo rewrapped, char **new_wrap_meta,
						   ColcryptProviderError *err);

	/*
	 * Make a new data key at the provider (its random generator, such as
	 * an HSM's) and wrap it in the same call: dek receives the key,
	 * wrapped its blob.  NULL where the provider cannot; false with
	 * err->sqlerrcode left 0 where it is not configured to, and the caller
	 * generates the key itself and wraps it.
	 */
	bool		(*generate) (void *handle, const ColcryptWrapContext *ctx,
							 uint8 *dek, size_t deklen,
							 StringInfo wrapped, char **wrap_meta,
							 ColcryptProviderError *err);

	/*
	 * Check that the provider answers and its credentials work; append a
	 * one-line description (library, token, server version) to detail.
	 */
	bool		(*health) (void *handle, StringInfo detail, ColcryptProviderError *err);

	/* Options as shown in views: secrets replaced by "********". */
	Jsonb	   *(*describe) (Jsonb *options);
} ColcryptProviderOps;

/* The kind's operations, or NULL for an unknown kind. */
extern const ColcryptProviderOps *ColcryptProviderKind(const char *kind);

/*
 * Set just before a provider's failure is raised (its call or opening its
 * handle failed), cleared by whoever wants to know: the key cache passes
 * only such failures on to the backends that waited for the same load.
 */
extern bool colcrypt_provider_failed;

/* Raise 22023 listing the known kinds unless kind is one. */
extern const ColcryptProviderOps *ColcryptProviderKindOrError(const char *kind);

/*
 * Calls through the per-backend handle of a named provider (opened on
 * first use, reopened when its options change).  On failure these raise an
 * error naming the provider, after counting and auditing it.
 */
extern void ColcryptProviderWrap(const char *provider, const char *kind,
								 Jsonb *options, const ColcryptWrapContext *ctx,
								 const uint8 *dek, size_t deklen,
								 StringInfo wrapped, char **wrap_meta);
extern void ColcryptProviderUnwrap(const char *provider, const char *kind,
								   Jsonb *options, const ColcryptWrapContext *ctx,
								   const uint8 *wrapped, size_t wrappedlen,
								   const char *wrap_meta,
								   uint8 *dek, size_t deklen);
extern bool ColcryptProviderEnsureCmk(const char *provider, const char *kind,
									  Jsonb *options, const char *key_ref,
									  bool create, char **actual_ref);
extern char *ColcryptProviderRotateCmk(const char *provider, const char *kind,
									   Jsonb *options, const char *key_ref,
									   char **new_key_ref);
extern bool ColcryptProviderCanRewrap(const char *kind);
/* False if the provider declined (the caller then unwraps and wraps). */
extern bool ColcryptProviderRewrap(const char *provider, const char *kind,
								   Jsonb *options, const ColcryptWrapContext *from,
								   const uint8 *wrapped, size_t wrappedlen,
								   const char *wrap_meta,
								   const ColcryptWrapContext *to,
								   StringInfo rewrapped, char **new_wrap_meta);
/* False if the provider does not generate data keys (the caller does). */
extern bool ColcryptProviderGenerate(const char *provider, const char *kind,
									 Jsonb *options, const ColcryptWrapContext *ctx,
									 uint8 *dek, size_t deklen,
									 StringInfo wrapped, char **wrap_meta);
extern bool ColcryptProviderHealth(const char *provider, const char *kind,
								   Jsonb *options, StringInfo detail,
								   ColcryptProviderError *err);

/* Close every open handle (options changed, or the provider was dropped). */
extern void ColcryptProviderCloseAll(void);

/* Helpers for provider files: options access and error filling. */
extern char *ColcryptOptionText(Jsonb *options, const char *key);
extern void ColcryptCheckOptionNames(const char *kind, Jsonb *options,
									 const char *const *allowed);
extern Jsonb *ColcryptRedactOptions(Jsonb *options, const char *const *secret,
									const char *const *defaults);
extern char *ColcryptReadSecretFile(const char *path, const char *what,
									ColcryptProviderError *err);

/*
 * The associated data that binds a wrapped data key to its identity when a
 * provider wraps with an AEAD: domain and key_ref (each NUL-terminated),
 * then key id and key version (big-endian).  Returns its length, or 0 if it
 * does not fit in cap.
 */
extern size_t ColcryptWrapAad(const char *domain, const ColcryptWrapContext *ctx,
							  uint8 *out, size_t cap);

/* The current UTC time as YYYYMMDDTHHMMSSZ, for naming CMKs a rotation makes. */
extern char *ColcryptUtcStamp(void);

/*
 * Bounded, interruptible waiting for provider I/O: the deadline of a call
 * that starts now (colcrypt.kms_timeout), and a wait for fd to become
 * readable (or writable) that returns false at the deadline.  Throws only
 * for query cancel and termination (CHECK_FOR_INTERRUPTS).
 */
extern TimestampTz ColcryptProviderDeadline(void);
extern bool ColcryptProviderWaitFd(int fd, bool for_write, TimestampTz deadline);
extern void ColcryptProviderSetError(ColcryptProviderError *err, int sqlerrcode,
									 const char *message, const char *detail);

/* The kinds. */
extern const ColcryptProviderOps colcrypt_file_provider;
extern const ColcryptProviderOps colcrypt_pkcs11_provider;
extern const ColcryptProviderOps colcrypt_kmip_provider;
extern const ColcryptProviderOps colcrypt_vault_provider;
extern const ColcryptProviderOps colcrypt_aws_kms_provider;

#endif							/* COLCRYPT_PROVIDER_H */
