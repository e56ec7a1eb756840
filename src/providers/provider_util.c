/*-------------------------------------------------------------------------
 *
 * provider_util.c
 *	  The provider layer's helpers that need no backend state: filling in a
 *	  provider error and the associated data that binds a wrapped data key
 *	  to its master key, key id and version.  A file of their own so that
 *	  the fuzz harnesses (test/fuzz/) link the very same code as the
 *	  extension rather than copies.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "colcrypt/provider.h"

void
ColcryptProviderSetError(ColcryptProviderError *err, int sqlerrcode,
						 const char *message, const char *detail)
{
	err->sqlerrcode = sqlerrcode;
	strlcpy(err->message, message ? message : "", sizeof(err->message));
	strlcpy(err->detail, detail ? detail : "", sizeof(err->detail));
}

size_t
ColcryptWrapAad(const char *domain, const ColcryptWrapContext *ctx, uint8 *out, size_t cap)
{
	size_t		dl = strlen(domain) + 1;
	size_t		rl = strlen(ctx->key_ref) + 1;
	size_t		n = 0;

	if (dl + rl + 8 > cap)
		return 0;
	memcpy(out, domain, dl);
	n += dl;
	memcpy(out + n, ctx->key_ref, rl);
	n += rl;
	for (int i = 3; i >= 0; i--)
		out[n++] = (ctx->key_id >> (8 * i)) & 0xff;
	for (int i = 3; i >= 0; i--)
		out[n++] = (ctx->key_version >> (8 * i)) & 0xff;
	return n;
}
