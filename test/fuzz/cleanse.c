/*-------------------------------------------------------------------------
 *
 * cleanse.c
 *	  OPENSSL_cleanse for the fuzz harnesses: colcrypt wipes secrets with
 *	  it (cc_wipe, ttlv_buf_free), and libcrypto's own is not built with
 *	  AddressSanitizer, so a wipe past the end of a buffer would go unseen.
 *	  Defined in the executable, this one is used instead, and its stores
 *	  are checked.
 *
 *-------------------------------------------------------------------------
 */
#include <stddef.h>

void		OPENSSL_cleanse(void *ptr, size_t len);

void
OPENSSL_cleanse(void *ptr, size_t len)
{
	volatile unsigned char *p = ptr;

	while (len--)
		*p++ = 0;
}
