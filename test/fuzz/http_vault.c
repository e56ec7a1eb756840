/*-------------------------------------------------------------------------
 *
 * http_vault.c
 *	  For fuzz_http: src/providers/vault.c included whole, and a handle
 *	  made as vault_open would make it (without the catalog's options).
 *
 *-------------------------------------------------------------------------
 */
#include "../../src/providers/vault.c"

#include "fuzz_http.h"

void *
fz_vault_handle(uint8_t flags)
{
	VaultHandle *h = palloc0(sizeof(VaultHandle));
	ColcryptProviderError err = {0};

	strlcpy(h->name, "fz", sizeof(h->name));
	h->url = pstrdup("https://vault.test:8200");
	h->mount = pstrdup("transit");
	h->namespace = (flags & FZ_FLAG_A) ? pstrdup("team/a") : NULL;
	h->approle_mount = pstrdup("approle");
	if (flags & FZ_FLAG_B)
	{
		h->auth = AUTH_APPROLE;
		h->role_id = pstrdup("role-1");
		h->secret_id = pstrdup("secret-1");
	}
	else
	{
		h->auth = AUTH_TOKEN;
		set_token(h, "hvs.fuzz");
	}
	h->http = ColcryptHttpCreate("Vault at https://vault.test:8200", NULL, 2, &err);
	if (h->http == NULL)
		abort();
	return h;
}
