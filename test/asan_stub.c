/*
 * Preloaded after libasan by scripts/test.sh --sanitize.
 *
 * The postmaster links libgpg-error (through LDAP and GnuTLS), whose
 * constructor runs before libasan's and calls bindtextdomain(), which
 * mallocs while holding glibc's gettext lock.  That first malloc
 * initialises ASan, which looks up swift_demangle with dlsym(); the lookup
 * fails, and the dlerror() that follows translates its message through
 * gettext, taking the same lock again and leaving it broken: the next
 * bindtextdomain() (postgres's own, in main) waits forever.  With the
 * symbol defined here the lookup succeeds and no message is made.  ASan
 * only calls it for Swift symbol names, which a C program never has.
 */
#include <stddef.h>

char	   *swift_demangle(const char *mangled, size_t len, char *out, size_t *outlen,
						   unsigned flags);

char *
swift_demangle(const char *mangled, size_t len, char *out, size_t *outlen, unsigned flags)
{
	(void) mangled;
	(void) len;
	(void) out;
	(void) outlen;
	(void) flags;
	return NULL;
}
