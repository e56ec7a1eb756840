/*-------------------------------------------------------------------------
 *
 * file.c
 *	  The "file" key provider: customer master keys in a keyring file.
 *
 * For development and demos only: the CMKs sit in a file on the database
 * server, so whoever can read that file and a dump can read the data.  The
 * file must lie outside the data directory (so base backups and copies of
 * the data directory do not carry it), belong to the server's OS user and
 * be readable by it alone (mode 0600, like an SSH key).
 *
 * Format, one record per line (text, UTF-8):
 *
 *	 colcrypt-keyring 1
 *	 cmk <name> <version> <base64 of 32 key bytes>
 *
 * A CMK can have several versions; wrapping uses the newest, unwrapping the
 * one named in the wrapped blob.  Changes are written to a new file that
 * replaces the old one with rename(), under an exclusive lock on
 * "<path>.lock", so a crash never leaves a half-written keyring.
 *
 * Wrapped data key blob (version 1):
 *	 1 byte format (1) | 4 bytes CMK version | 12 bytes nonce |
 *	 ciphertext (the DEK) | 16 bytes tag
 * AES-256-GCM under the CMK, with associated data binding the blob to the
 * CMK's name and version and to the data key id and version it belongs to.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog/pg_authid.h"
#include "colcrypt/compat.h"
#include "colcrypt/provider.h"
#include "common/base64.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define KEYRING_MAGIC		"colcrypt-keyring 1"
#define KEYRING_MAX_SIZE	(1024 * 1024)
#define BLOB_FORMAT			1
#define BLOB_HEADER_LEN		(1 + 4 + CC_GCM_NONCE_LEN)

typedef struct FileHandle
{
	char	   *path;			/* keyring path (TopMemoryContext) */
} FileHandle;

typedef struct Cmk
{
	char	   *name;			/* CMK name */
	uint32		version;		/* its version */
	uint8		key[CC_AES256_KEY_LEN]; /* key bytes, wiped by keyring_free */
} Cmk;

typedef struct Keyring
{
	int			ncmks;
	Cmk		   *cmks;
} Keyring;

static void
keyring_free(Keyring *kr)
{
	for (int i = 0; i < kr->ncmks; i++)
		cc_wipe(kr->cmks[i].key, sizeof(kr->cmks[i].key));
	if (kr->cmks)
		pfree(kr->cmks);
	kr->cmks = NULL;
	kr->ncmks = 0;
}

static bool
valid_cmk_name(const char *s)
{
	size_t		n = strlen(s);

	if (n == 0 || n > 128)
		return false;
	for (; *s; s++)
		if (!(isalnum((unsigned char) *s) || strchr("_.:/-", *s)))
			return false;
	return true;
}

/*
 * Check that an open keyring is a regular file of ours that nobody else can
 * read or write.
 */
static bool
check_secure(int fd, const char *path, ColcryptProviderError *err)
{
	struct stat st;
	char		detail[256];

	if (fstat(fd, &st) != 0)
	{
		snprintf(detail, sizeof(detail), "fstat(\"%s\"): %s", path, strerror(errno));
		ColcryptProviderSetError(err, ERRCODE_IO_ERROR, "cannot inspect the keyring file", detail);
		return false;
	}
	if (!S_ISREG(st.st_mode))
	{
		snprintf(detail, sizeof(detail), "\"%s\" is not a regular file.", path);
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "keyring is not a regular file", detail);
		return false;
	}
	if (st.st_uid != geteuid())
	{
		snprintf(detail, sizeof(detail), "\"%s\" must be owned by the database server's user.", path);
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "keyring file has the wrong owner", detail);
		return false;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		snprintf(detail, sizeof(detail),
				 "\"%s\" has mode %04o; it must be readable by its owner only (chmod 600).",
				 path, (unsigned) (st.st_mode & 07777));
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "keyring file has group or world access", detail);
		return false;
	}
	if (st.st_size > KEYRING_MAX_SIZE)
	{
		snprintf(detail, sizeof(detail), "\"%s\" is larger than %d bytes.", path, KEYRING_MAX_SIZE);
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "keyring file is too large", detail);
		return false;
	}
	return true;
}

static void
set_errno_error(ColcryptProviderError *err, const char *what, const char *path, int e)
{
	char		detail[256];

	snprintf(detail, sizeof(detail), "%s \"%s\": %s", what, path, strerror(e));
	ColcryptProviderSetError(err,
							 e == ENOENT ? ERRCODE_UNDEFINED_FILE :
							 e == EACCES ? ERRCODE_INSUFFICIENT_PRIVILEGE : ERRCODE_IO_ERROR,
							 e == ENOENT ? "keyring file does not exist" :
							 e == EACCES ? "keyring file is not readable by the server" :
							 "cannot read the keyring file",
							 detail);
}

/* Parse the text of a keyring; the buffer is wiped by the caller. */
static bool
parse_keyring(char *buf, const char *path, Keyring *kr, ColcryptProviderError *err)
{
	char	   *line = buf;
	int			lineno = 0;
	int			cap = 8;
	char		detail[256];

	kr->ncmks = 0;
	kr->cmks = palloc0(sizeof(Cmk) * cap);
	while (line != NULL && *line != '\0')
	{
		char	   *next = strchr(line, '\n');
		char	   *fields[4];
		int			nf = 0;
		char	   *save = NULL;
		char	   *tok;

		if (next)
			*next++ = '\0';
		lineno++;
		if (lineno == 1)
		{
			if (strcmp(line, KEYRING_MAGIC) != 0)
			{
				snprintf(detail, sizeof(detail), "\"%s\" does not start with \"%s\".", path, KEYRING_MAGIC);
				ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "file is not a colcrypt keyring", detail);
				return false;
			}
			line = next;
			continue;
		}
		if (line[0] == '#' || line[0] == '\0')
		{
			line = next;
			continue;
		}
		for (tok = strtok_r(line, " ", &save); tok && nf < 4; tok = strtok_r(NULL, " ", &save))
			fields[nf++] = tok;
		if (nf != 4 || tok != NULL || strcmp(fields[0], "cmk") != 0 ||
			!valid_cmk_name(fields[1]))
		{
			snprintf(detail, sizeof(detail), "Line %d of \"%s\" is not \"cmk <name> <version> <key>\".", lineno, path);
			ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "malformed keyring file", detail);
			return false;
		}
		{
			char	   *end;
			long		v = strtol(fields[2], &end, 10);
			uint8		raw[CC_AES256_KEY_LEN + 4];
			int			rawlen;
			size_t		b64len = strlen(fields[3]);

			rawlen = (b64len <= 48) ?
				pg_b64_decode(COLCRYPT_B64_SRC(fields[3]), (int) b64len,
							  COLCRYPT_B64_DST(raw), sizeof(raw)) : -1;
			cc_wipe(fields[3], b64len);
			if (*end != '\0' || v < 1 || v > INT_MAX || rawlen != CC_AES256_KEY_LEN)
			{
				cc_wipe(raw, sizeof(raw));
				snprintf(detail, sizeof(detail), "Line %d of \"%s\" has a bad version or key.", lineno, path);
				ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "malformed keyring file", detail);
				return false;
			}
			if (kr->ncmks == cap)
			{
				cap *= 2;
				kr->cmks = repalloc(kr->cmks, sizeof(Cmk) * cap);
			}
			kr->cmks[kr->ncmks].name = pstrdup(fields[1]);
			kr->cmks[kr->ncmks].version = (uint32) v;
			memcpy(kr->cmks[kr->ncmks].key, raw, CC_AES256_KEY_LEN);
			cc_wipe(raw, sizeof(raw));
			kr->ncmks++;
		}
		line = next;
	}
	if (lineno == 0)
	{
		snprintf(detail, sizeof(detail), "\"%s\" is empty.", path);
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "file is not a colcrypt keyring", detail);
		return false;
	}
	return true;
}

static bool
read_keyring(const char *path, Keyring *kr, ColcryptProviderError *err)
{
	int			fd;
	struct stat st;
	char	   *buf;
	ssize_t		got = 0;
	bool		ok;

	memset(kr, 0, sizeof(*kr));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
	{
		set_errno_error(err, "could not open", path, errno);
		return false;
	}
	if (!check_secure(fd, path, err) || fstat(fd, &st) != 0)
	{
		close(fd);
		return false;
	}
	buf = palloc(st.st_size + 1);
	while (got < st.st_size)
	{
		ssize_t		r = read(fd, buf + got, st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += r;
	}
	close(fd);
	buf[got] = '\0';
	if (got != st.st_size || memchr(buf, '\0', got) != NULL)
	{
		cc_wipe(buf, got);
		pfree(buf);
		ColcryptProviderSetError(err, ERRCODE_CONFIG_FILE_ERROR, "cannot read the keyring file",
								 "The file changed while it was read, or holds NUL bytes.");
		return false;
	}
	ok = parse_keyring(buf, path, kr, err);
	cc_wipe(buf, got);
	pfree(buf);
	if (!ok)
		keyring_free(kr);
	return ok;
}

/* The CMK entry named name, of version (0: the newest). */
static Cmk *
find_cmk(Keyring *kr, const char *name, uint32 version)
{
	Cmk		   *best = NULL;

	for (int i = 0; i < kr->ncmks; i++)
	{
		Cmk		   *c = &kr->cmks[i];

		if (strcmp(c->name, name) != 0)
			continue;
		if (version != 0 ? c->version == version : (best == NULL || c->version > best->version))
			best = c;
	}
	return best;
}

/* Write the whole keyring to a new file and rename it over the old one. */
static bool
write_keyring(const char *path, Keyring *kr, ColcryptProviderError *err)
{
	StringInfoData out;
	char		tmp[MAXPGPATH];
	char		dir[MAXPGPATH];
	int			fd;
	bool		ok = true;

	initStringInfo(&out);
	appendStringInfoString(&out, KEYRING_MAGIC "\n");
	appendStringInfoString(&out, "# colcrypt customer master keys for the 'file' provider (development only).\n");
	appendStringInfoString(&out, "# Keep this file secret, outside the data directory, mode 0600.\n");
	for (int i = 0; i < kr->ncmks; i++)
	{
		char		b64[64];
		int			n = pg_b64_encode(COLCRYPT_B64_SRC(kr->cmks[i].key), CC_AES256_KEY_LEN,
									  COLCRYPT_B64_DST(b64), sizeof(b64) - 1);

		b64[n] = '\0';
		appendStringInfo(&out, "cmk %s %u %s\n", kr->cmks[i].name, kr->cmks[i].version, b64);
		cc_wipe(b64, sizeof(b64));
	}

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, MyProcPid);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, S_IRUSR | S_IWUSR);
	if (fd < 0)
	{
		set_errno_error(err, "could not create", tmp, errno);
		ok = false;
	}
	else
	{
		if (write(fd, out.data, out.len) != out.len || fsync(fd) != 0)
		{
			set_errno_error(err, "could not write", tmp, errno ? errno : ENOSPC);
			ok = false;
		}
		close(fd);
		if (ok && rename(tmp, path) != 0)
		{
			set_errno_error(err, "could not rename to", path, errno);
			ok = false;
		}
		if (!ok)
			unlink(tmp);
	}
	cc_wipe(out.data, out.len);
	pfree(out.data);

	/* Make the rename durable. */
	if (ok)
	{
		char	   *slash;

		strlcpy(dir, path, sizeof(dir));
		slash = strrchr(dir, '/');
		if (slash != NULL)
		{
			*(slash == dir ? slash + 1 : slash) = '\0';
			fd = open(dir, O_RDONLY | O_CLOEXEC);
			if (fd >= 0)
			{
				(void) fsync(fd);
				close(fd);
			}
		}
	}
	return ok;
}

/* Take the keyring's lock file, waiting at most colcrypt.kms_timeout. */
static int
lock_keyring(const char *path, ColcryptProviderError *err)
{
	char		lockpath[MAXPGPATH];
	int			fd;
	TimestampTz start = GetCurrentTimestamp();

	snprintf(lockpath, sizeof(lockpath), "%s.lock", path);
	fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, S_IRUSR | S_IWUSR);
	if (fd < 0)
	{
		set_errno_error(err, "could not open lock file", lockpath, errno);
		return -1;
	}
	while (flock(fd, LOCK_EX | LOCK_NB) != 0)
	{
		if (errno != EWOULDBLOCK && errno != EINTR)
		{
			set_errno_error(err, "could not lock", lockpath, errno);
			close(fd);
			return -1;
		}
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), colcrypt_kms_timeout))
		{
			ColcryptProviderSetError(err, ERRCODE_LOCK_NOT_AVAILABLE,
									 "timed out waiting for the keyring lock",
									 "Another session is changing the keyring file.");
			close(fd);
			return -1;
		}
		pg_usleep(10000L);
		CHECK_FOR_INTERRUPTS();
	}
	return fd;
}

static void
unlock_keyring(int fd)
{
	(void) flock(fd, LOCK_UN);
	close(fd);
}

/* Associated data of a wrapped DEK. */
static size_t
wrap_aad(const ColcryptWrapContext *ctx, uint32 cmk_version, uint8 *aad, size_t cap)
{
	static const char label[] = "colcrypt/v1/file-wrap";
	size_t		reflen = strlen(ctx->key_ref);
	size_t		n = 0;
	uint32		ints[3] = {cmk_version, ctx->key_id, ctx->key_version};

	if (sizeof(label) + reflen + 1 + 12 > cap)
		return 0;
	memcpy(aad, label, sizeof(label));
	n += sizeof(label);
	memcpy(aad + n, ctx->key_ref, reflen + 1);
	n += reflen + 1;
	for (int i = 0; i < 3; i++)
	{
		aad[n++] = (uint8) (ints[i] >> 24);
		aad[n++] = (uint8) (ints[i] >> 16);
		aad[n++] = (uint8) (ints[i] >> 8);
		aad[n++] = (uint8) ints[i];
	}
	return n;
}

/* ----------------------------------------------------------------------
 * The provider interface
 * ----------------------------------------------------------------------
 */

static bool
path_is_inside(const char *path, const char *dir)
{
	size_t		n = strlen(dir);

	return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static void
file_validate(const char *name, Jsonb *options)
{
	char	   *path = ColcryptOptionText(options, "path");
	char		parent[MAXPGPATH];
	char		real_parent[PATH_MAX];
	char		real_data[PATH_MAX];
	char	   *slash;
	char	   *base;
	char		full[MAXPGPATH];
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	/* A file provider reads and writes files as the server's OS user. */
	if (!superuser() &&
		!(has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES) &&
		  has_privs_of_role(GetUserId(), ROLE_PG_WRITE_SERVER_FILES)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create a file key provider"),
				 errdetail("A file provider reads and writes a file on the database server."),
				 errhint("Only superusers and members of pg_read_server_files and pg_write_server_files may use it.")));

	if (options == NULL || !JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options of a file provider must be a JSON object with a \"path\"")));
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY &&
			!(v.val.string.len == 4 && strncmp(v.val.string.val, "path", 4) == 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown option \"%.*s\" for a file provider",
							v.val.string.len, v.val.string.val),
					 errhint("A file provider takes one option: \"path\".")));
	}
	if (path == NULL || path[0] != '/')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a file provider needs an absolute \"path\" to its keyring file")));
	if (strlen(path) >= MAXPGPATH - 32)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("keyring path is too long")));

	/* The keyring must not travel with copies of the data directory. */
	strlcpy(parent, path, sizeof(parent));
	slash = strrchr(parent, '/');
	base = slash + 1;
	if (*base == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("keyring path \"%s\" names a directory", path)));
	*slash = '\0';
	if (realpath(parent[0] ? parent : "/", real_parent) == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("directory of keyring \"%s\" is not accessible: %m", path)));
	if (realpath(DataDir, real_data) == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not resolve the data directory: %m")));
	if (path_is_inside(real_parent, real_data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("keyring file must lie outside the data directory"),
				 errdetail("\"%s\" is inside \"%s\".", path, real_data),
				 errhint("Put the keyring where backups of the data directory do not carry it.")));
	snprintf(full, sizeof(full), "%s/%s", real_parent, base);

	/* Create an empty keyring, or check the one that is there. */
	{
		int			fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, S_IRUSR | S_IWUSR);
		Keyring		kr;
		ColcryptProviderError err = {0};

		if (fd >= 0)
		{
			const char *text = KEYRING_MAGIC "\n";

			if (write(fd, text, strlen(text)) != (ssize_t) strlen(text) || fsync(fd) != 0)
			{
				int			save = errno;

				close(fd);
				unlink(full);
				errno = save;
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not write keyring file \"%s\": %m", full)));
			}
			close(fd);
			ereport(NOTICE,
					(errmsg("created keyring file \"%s\" (mode 0600)", full)));
		}
		else if (errno != EEXIST)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create keyring file \"%s\": %m", full)));
		if (!read_keyring(full, &kr, &err))
			ereport(ERROR,
					(errcode(err.sqlerrcode),
					 errmsg("file provider \"%s\": %s", name, err.message),
					 err.detail[0] ? errdetail("%s", err.detail) : 0));
		keyring_free(&kr);
	}
}

static void *
file_open(const char *name, Jsonb *options, ColcryptProviderError *err)
{
	char	   *path = ColcryptOptionText(options, "path");
	FileHandle *h;

	if (path == NULL)
	{
		ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE,
								 "no keyring path in the provider's options", NULL);
		return NULL;
	}
	h = MemoryContextAlloc(TopMemoryContext, sizeof(FileHandle));
	h->path = MemoryContextStrdup(TopMemoryContext, path);
	return h;
}

static void
file_close(void *handle)
{
	FileHandle *h = handle;

	pfree(h->path);
	pfree(h);
}

static bool
file_ensure_cmk(void *handle, const char *key_ref, bool create, bool *created,
				char **actual_ref,
				ColcryptProviderError *err)
{
	FileHandle *h = handle;
	Keyring		kr;
	int			lockfd;
	bool		ok = true;

	*created = false;
	if (!valid_cmk_name(key_ref))
	{
		ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE, "invalid master key name",
								 "Keyring names are 1 to 128 letters, digits and _ . : / -.");
		return false;
	}
	if ((lockfd = lock_keyring(h->path, err)) < 0)
		return false;
	if (!read_keyring(h->path, &kr, err))
	{
		unlock_keyring(lockfd);
		return false;
	}
	if (find_cmk(&kr, key_ref, 0) == NULL)
	{
		if (!create)
		{
			ColcryptProviderSetError(err, ERRCODE_UNDEFINED_OBJECT,
									 "master key not found in the keyring", NULL);
			ok = false;
		}
		else
		{
			Cmk		   *c;

			kr.cmks = kr.ncmks ? repalloc(kr.cmks, sizeof(Cmk) * (kr.ncmks + 1))
				: palloc0(sizeof(Cmk));
			c = &kr.cmks[kr.ncmks];
			c->name = pstrdup(key_ref);
			c->version = 1;
			if (cc_random(c->key, sizeof(c->key)) != CC_OK)
			{
				ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR,
										 "could not generate a master key", NULL);
				ok = false;
			}
			kr.ncmks++;
			if (ok && (ok = write_keyring(h->path, &kr, err)))
				*created = true;
		}
	}
	keyring_free(&kr);
	unlock_keyring(lockfd);
	return ok;
}

static bool
file_wrap(void *handle, const ColcryptWrapContext *ctx,
		  const uint8 *dek, size_t deklen, StringInfo wrapped, char **wrap_meta,
		  ColcryptProviderError *err)
{
	FileHandle *h = handle;
	Keyring		kr;
	Cmk		   *c;
	uint8		aad[256];
	size_t		aadlen;
	uint8	   *blob;
	cc_gcm_key *gk;
	cc_aead_item it;
	bool		ok = false;

	if (!read_keyring(h->path, &kr, err))
		return false;
	c = find_cmk(&kr, ctx->key_ref, 0);
	if (c == NULL)
	{
		ColcryptProviderSetError(err, ERRCODE_UNDEFINED_OBJECT,
								 "master key not found in the keyring", NULL);
		keyring_free(&kr);
		return false;
	}
	aadlen = wrap_aad(ctx, c->version, aad, sizeof(aad));
	blob = palloc(BLOB_HEADER_LEN + deklen + CC_TAG_LEN);
	blob[0] = BLOB_FORMAT;
	blob[1] = (uint8) (c->version >> 24);
	blob[2] = (uint8) (c->version >> 16);
	blob[3] = (uint8) (c->version >> 8);
	blob[4] = (uint8) c->version;
	gk = cc_gcm_key_new(c->key);
	if (gk != NULL && aadlen > 0 && cc_random(blob + 5, CC_GCM_NONCE_LEN) == CC_OK)
	{
		it.nonce = blob + 5;
		it.aad = aad;
		it.aadlen = aadlen;
		it.in = dek;
		it.inlen = deklen;
		it.out = blob + BLOB_HEADER_LEN;
		it.tag = blob + BLOB_HEADER_LEN + deklen;
		ok = cc_gcm_seal_batch(gk, &it, 1) == 0;
	}
	cc_gcm_key_free(gk);
	if (ok)
	{
		appendBinaryStringInfo(wrapped, (char *) blob, BLOB_HEADER_LEN + deklen + CC_TAG_LEN);
		*wrap_meta = psprintf("cmk_version=%u", c->version);
	}
	else
		ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR, "could not encrypt the data key", NULL);
	pfree(blob);
	keyring_free(&kr);
	return ok;
}

static bool
file_unwrap(void *handle, const ColcryptWrapContext *ctx,
			const uint8 *wrapped, size_t wrappedlen, const char *wrap_meta,
			uint8 *dek, size_t deklen, ColcryptProviderError *err)
{
	FileHandle *h = handle;
	Keyring		kr;
	Cmk		   *c;
	uint32		cmk_version;
	uint8		aad[256];
	size_t		aadlen;
	cc_gcm_key *gk;
	cc_aead_item it;
	char		detail[128];

	if (wrappedlen != BLOB_HEADER_LEN + deklen + CC_TAG_LEN || wrapped[0] != BLOB_FORMAT)
	{
		ColcryptProviderSetError(err, ERRCODE_DATA_CORRUPTED,
								 "wrapped data key is malformed", NULL);
		return false;
	}
	cmk_version = ((uint32) wrapped[1] << 24) | ((uint32) wrapped[2] << 16) |
		((uint32) wrapped[3] << 8) | (uint32) wrapped[4];
	if (!read_keyring(h->path, &kr, err))
		return false;
	c = find_cmk(&kr, ctx->key_ref, cmk_version);
	if (c == NULL)
	{
		snprintf(detail, sizeof(detail), "Version %u of the master key is not in the keyring.", cmk_version);
		ColcryptProviderSetError(err, ERRCODE_UNDEFINED_OBJECT,
								 "master key not found in the keyring", detail);
		keyring_free(&kr);
		return false;
	}
	aadlen = wrap_aad(ctx, cmk_version, aad, sizeof(aad));
	gk = cc_gcm_key_new(c->key);
	keyring_free(&kr);
	if (gk == NULL || aadlen == 0)
	{
		cc_gcm_key_free(gk);
		ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR, "could not set up the master key", NULL);
		return false;
	}
	it.nonce = wrapped + 5;
	it.aad = aad;
	it.aadlen = aadlen;
	it.in = wrapped + BLOB_HEADER_LEN;
	it.inlen = deklen;
	it.out = dek;
	it.tag = (uint8 *) wrapped + BLOB_HEADER_LEN + deklen;
	cc_gcm_open_batch(gk, &it, 1);
	cc_gcm_key_free(gk);
	if (it.status != CC_OK)
	{
		ColcryptProviderSetError(err, ERRCODE_DATA_CORRUPTED,
								 "wrapped data key failed authentication",
								 "The keyring holds a different master key than the one that wrapped this data key, or the wrapped key was altered.");
		return false;
	}
	return true;
}

static bool
file_rotate_cmk(void *handle, const char *key_ref, char **new_key_ref,
				char **new_version, ColcryptProviderError *err)
{
	FileHandle *h = handle;
	Keyring		kr;
	int			lockfd;
	Cmk		   *newest;
	Cmk		   *c;
	bool		ok;

	if ((lockfd = lock_keyring(h->path, err)) < 0)
		return false;
	if (!read_keyring(h->path, &kr, err))
	{
		unlock_keyring(lockfd);
		return false;
	}
	newest = find_cmk(&kr, key_ref, 0);
	if (newest == NULL)
	{
		ColcryptProviderSetError(err, ERRCODE_UNDEFINED_OBJECT,
								 "master key not found in the keyring", NULL);
		keyring_free(&kr);
		unlock_keyring(lockfd);
		return false;
	}
	kr.cmks = repalloc(kr.cmks, sizeof(Cmk) * (kr.ncmks + 1));
	c = &kr.cmks[kr.ncmks];
	newest = find_cmk(&kr, key_ref, 0);		/* repalloc may have moved it */
	c->name = pstrdup(key_ref);
	c->version = newest->version + 1;
	ok = cc_random(c->key, sizeof(c->key)) == CC_OK;
	kr.ncmks++;
	if (!ok)
		ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR, "could not generate a master key", NULL);
	else if ((ok = write_keyring(h->path, &kr, err)))
		*new_version = psprintf("cmk_version=%u", c->version);
	keyring_free(&kr);
	unlock_keyring(lockfd);
	return ok;
}

static bool
file_health(void *handle, StringInfo detail, ColcryptProviderError *err)
{
	FileHandle *h = handle;
	Keyring		kr;

	if (!read_keyring(h->path, &kr, err))
		return false;
	appendStringInfo(detail, "keyring %s: %d master key versions", h->path, kr.ncmks);
	keyring_free(&kr);
	return true;
}

static Jsonb *
file_describe(Jsonb *options)
{
	/* The path is not a secret. */
	return options;
}

const ColcryptProviderOps colcrypt_file_provider = {
	.kind = "file",
	.validate = file_validate,
	.open = file_open,
	.close = file_close,
	.wrap = file_wrap,
	.unwrap = file_unwrap,
	.ensure_cmk = file_ensure_cmk,
	.rotate_cmk = file_rotate_cmk,
	.rewrap = NULL,				/* the keyring's CMKs are here: unwrap and wrap */
	.health = file_health,
	.describe = file_describe,
};
