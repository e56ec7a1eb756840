/*-------------------------------------------------------------------------
 *
 * p11shim.c
 *	  A PKCS#11 module for tests that forwards every call to a real module
 *	  (SoftHSM2 by default, or $P11SHIM_MODULE) but hangs, like a network
 *	  HSM that stopped answering, while the file named by $P11SHIM_HANG
 *	  exists: C_Login, C_Encrypt, C_Decrypt, C_WrapKey and C_UnwrapKey then
 *	  wait until the file is removed.  Lets the TAP tests check that
 *	  colcrypt.kms_timeout bounds PKCS#11 calls.
 *
 *-------------------------------------------------------------------------
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST shim;
static CK_FUNCTION_LIST_PTR real;

static void
maybe_hang(void)
{
	const char *f = getenv("P11SHIM_HANG");

	while (f != NULL && access(f, F_OK) == 0)
		usleep(50 * 1000);
}

static CK_RV
shim_login(CK_SESSION_HANDLE s, CK_USER_TYPE u, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
	maybe_hang();
	return real->C_Login(s, u, pin, len);
}

static CK_RV
shim_encrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	maybe_hang();
	return real->C_Encrypt(s, in, inlen, out, outlen);
}

static CK_RV
shim_decrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	maybe_hang();
	return real->C_Decrypt(s, in, inlen, out, outlen);
}

static CK_RV
shim_wrap(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k, CK_OBJECT_HANDLE key,
		  CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	maybe_hang();
	return real->C_WrapKey(s, m, k, key, out, outlen);
}

static CK_RV
shim_unwrap(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k, CK_BYTE_PTR in,
			CK_ULONG inlen, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR key)
{
	maybe_hang();
	return real->C_UnwrapKey(s, m, k, in, inlen, t, n, key);
}

CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	if (real == NULL)
	{
		const char *path = getenv("P11SHIM_MODULE");
		void	   *dl = dlopen(path ? path : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
		CK_C_GetFunctionList get;

		if (dl == NULL || (get = (CK_C_GetFunctionList) dlsym(dl, "C_GetFunctionList")) == NULL ||
			get(&real) != CKR_OK)
			return CKR_GENERAL_ERROR;
		memcpy(&shim, real, sizeof(shim));
		shim.C_Login = shim_login;
		shim.C_Encrypt = shim_encrypt;
		shim.C_Decrypt = shim_decrypt;
		shim.C_WrapKey = shim_wrap;
		shim.C_UnwrapKey = shim_unwrap;
	}
	*list = &shim;
	return CKR_OK;
}
