/*-------------------------------------------------------------------------
 *
 * pkcs11.c
 *	  The "pkcs11" provider: CMKs that live in a PKCS#11 token (an HSM,
 *	  SoftHSM2, a cloud HSM's library) and never leave it.
 *
 * Options: "module" (absolute path of the PKCS#11 library), "token_label",
 * "pin" or "pin_file", and "mechanism": "aes-gcm" (default: C_Encrypt /
 * C_Decrypt with CKM_AES_GCM, the wrapping bound to the data key's identity
 * as associated data) or "aes-key-wrap-pad" (C_WrapKey / C_UnwrapKey with
 * CKM_AES_KEY_WRAP_PAD, RFC 5649, for tokens without GCM).  The master
 * key's key_ref is the CMK's CKA_LABEL.
 *
 * The module is dlopen'ed and C_Initialize'd in each backend that needs it,
 * after fork: PKCS#11 state must not cross fork().  It is never finalized
 * or unloaded (other handles of the backend may share it).
 *
 * A PKCS#11 call cannot be interrupted, and a network HSM can hang.  So
 * every conversation with the module runs as one job on a short-lived
 * thread that touches nothing but the job's own malloc'ed memory and the
 * module; the backend waits for it on a pipe with WaitLatchOrSocket, so the
 * wait is bounded by colcrypt.kms_timeout and a query cancel still works.
 * A job that does not finish in time is abandoned to its thread, which
 * wipes and frees it when the module returns; until then the module is
 * marked stuck and further calls fail at once instead of piling up threads.
 *
 * Wrapped blob formats (the first byte tells which mechanism made it, so
 * changing "mechanism" later keeps older blobs readable):
 *	 0x01 | IV (12) | AES-256-GCM ciphertext (32) | tag (16)
 *	 0x02 | RFC 5649 wrapped key (40)
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "colcrypt/provider.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#define P11_FORMAT_GCM	0x01
#define P11_FORMAT_KWP	0x02
#define P11_IV_LEN		12
#define P11_TAG_LEN		16
#define P11_MAX_LABEL	255
#define P11_MAX_SLOTS	256

typedef enum P11Mechanism
{
	P11_MECH_GCM,
	P11_MECH_KWP
} P11Mechanism;

/* A loaded module: one per library path per backend, never unloaded. */
typedef struct P11Module
{
	struct P11Module *next;
	char		path[MAXPGPATH];
	void	   *dl;
	CK_FUNCTION_LIST_PTR f;
	bool		initialized;	/* C_Initialize succeeded in this process */
	pid_t		pid;			/* the process that loaded it */
	int			stuck;			/* abandoned jobs still inside the module */

} P11Module;

static P11Module *modules = NULL;

/*
 * Leaving the process while a thread is still inside a module (a job
 * abandoned to a hanging call) must not run the module's own destructors
 * (C++ statics of SoftHSM2, the atexit handlers of its libraries) under
 * that thread: it would crash the backend on its way out, and the
 * postmaster would restart the whole server.  So after PostgreSQL's own
 * exit callbacks have run, an atexit handler registered after the first
 * module was loaded (atexit handlers run in reverse order, so it runs
 * before the module's) ends the process at once with the exit code
 * proc_exit gave, when any job is still stuck.
 */
static int	exit_code = 0;
static bool exit_guard_registered = false;

static bool
any_stuck(void)
{
	for (P11Module *m = modules; m != NULL; m = m->next)
		if (m->pid == getpid() && __atomic_load_n(&m->stuck, __ATOMIC_ACQUIRE) > 0)
			return true;
	return false;
}

static void
remember_exit_code(int code, Datum arg)
{
	exit_code = code;
}

static void
leave_without_module_destructors(void)
{
	if (any_stuck())
		_exit(exit_code);
}

/*
 * PKCS#11 logins belong to the process, not the session: once one handle
 * logged in to a token, C_Login of another says "already logged in"
 * whatever PIN it gives (even through another library path that reaches the
 * same token).  So remember, per token (slot, label and serial number), a
 * salted digest of the PIN that logged in, and hold other handles to it.
 */
typedef struct P11Login
{
	CK_SLOT_ID	slot;
	CK_UTF8CHAR label[32];
	CK_CHAR		serial[16];
	uint8		digest[32];
} P11Login;

static P11Login logins[32];
static int	nlogins = 0;
static uint8 login_salt[16];
static pid_t login_salt_pid = 0;

/* A provider handle: a logged-in session on one token. */
typedef struct P11Handle
{
	char		name[NAMEDATALEN];
	char		module_path[MAXPGPATH];
	char		token_label[33];
	char	   *pin;			/* inline PIN (TopMemoryContext), or NULL */
	char	   *pin_file;		/* or a file holding it */
	P11Mechanism mechanism;
	P11Module  *mod;
	bool		has_session;
	CK_SESSION_HANDLE session;
	CK_SLOT_ID	slot;
} P11Handle;

/* ----------------------------------------------------------------------
 * Jobs: everything a module call needs, in memory the worker thread owns
 * ----------------------------------------------------------------------
 */

typedef enum P11JobKind
{
	JOB_OPEN,					/* (initialize,) find token, open session, log in */
	JOB_CLOSE,
	JOB_INFO,					/* describe library, token and session */
	JOB_FIND,					/* find the CMK by label, read its attributes */
	JOB_GENERATE,				/* create the CMK unless it exists */
	JOB_ENCRYPT,				/* AES-GCM */
	JOB_DECRYPT,
	JOB_WRAP,					/* AES key wrap with padding */
	JOB_UNWRAP
} P11JobKind;

enum
{
	JOB_RUNNING = 0,
	JOB_DONE = 1,
	JOB_ABANDONED = 2
};

typedef struct P11Job
{
	P11JobKind	kind;
	CK_FUNCTION_LIST_PTR f;
	P11Module  *mod;
	int			notify_fd;
	int			state;			/* JOB_*, changed with atomics only */

	/* in */
	bool		initialize;
	CK_UTF8CHAR token_label[32];	/* blank padded */
	CK_UTF8CHAR pin[256];
	CK_ULONG	pinlen;
	CK_UTF8CHAR key_label[P11_MAX_LABEL + 1];
	CK_ULONG	key_labellen;
	CK_SESSION_HANDLE session;
	CK_BYTE		iv[P11_IV_LEN];
	CK_BYTE		aad[P11_MAX_LABEL + 64];
	CK_ULONG	aadlen;
	CK_BYTE		in[128];
	CK_ULONG	inlen;

	/* out */
	CK_RV		rv;
	const char *call;			/* the PKCS#11 function that failed */
	int			nfound;			/* tokens or keys matching the label */
	bool		initialized;	/* JOB_OPEN: C_Initialize succeeded */
	bool		already_logged_in;	/* JOB_OPEN: C_Login said so */
	bool		created;		/* JOB_GENERATE */
	CK_SLOT_ID	slot;
	CK_CHAR		serial[16];		/* JOB_OPEN: the token's serial number */
	CK_SESSION_HANDLE new_session;
	CK_KEY_TYPE key_type;
	CK_ULONG	value_len;
	CK_BBOOL	can_encrypt,
				can_decrypt,
				can_wrap,
				can_unwrap,
				extractable,
				sensitive;
	CK_BYTE		out[128];
	CK_ULONG	outlen;
	char		info[400];
} P11Job;

static void
job_free(P11Job *job)
{
	explicit_bzero(job, sizeof(*job));
	free(job);
}

#define P11_CALL(job, name, expr) \
	((job)->call = (name), ((job)->rv = (expr)) == CKR_OK)

static void
pad_label(CK_UTF8CHAR *dst, const char *label)
{
	size_t		len = strlen(label);

	memset(dst, ' ', 32);
	memcpy(dst, label, Min(len, 32));
}

/* Copy a blank-padded PKCS#11 string into a C string. */
static void
unpad(char *dst, const CK_UTF8CHAR *src, size_t len)
{
	while (len > 0 && (src[len - 1] == ' ' || src[len - 1] == '\0'))
		len--;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* Worker side: find the CMK by label; 0 when there is none (or several). */
static CK_OBJECT_HANDLE
job_find_key(P11Job *job)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{CKA_CLASS, &cls, sizeof(cls)},
		{CKA_LABEL, job->key_label, job->key_labellen},
	};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG	n = 0;

	job->nfound = 0;
	if (!P11_CALL(job, "C_FindObjectsInit",
				  job->f->C_FindObjectsInit(job->session, tmpl, lengthof(tmpl))))
		return CK_INVALID_HANDLE;
	if (!P11_CALL(job, "C_FindObjects",
				  job->f->C_FindObjects(job->session, found, lengthof(found), &n)))
	{
		(void) job->f->C_FindObjectsFinal(job->session);
		return CK_INVALID_HANDLE;
	}
	if (!P11_CALL(job, "C_FindObjectsFinal", job->f->C_FindObjectsFinal(job->session)))
		return CK_INVALID_HANDLE;
	job->nfound = (int) n;
	return n == 1 ? found[0] : CK_INVALID_HANDLE;
}

/* C_Initialize for a process's first job with the module. */
static bool
job_initialize(P11Job *job)
{
	CK_C_INITIALIZE_ARGS args;
	CK_RV		rv;

	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	job->call = "C_Initialize";
	rv = job->f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
	{
		job->rv = rv;
		return false;
	}
	job->initialized = true;
	return true;
}

/* The slots whose token has the job's label: count in nfound, first in slot. */
static bool
job_find_token(P11Job *job, CK_SLOT_ID *slots)
{
	CK_ULONG	nslots = P11_MAX_SLOTS;

	if (!P11_CALL(job, "C_GetSlotList", job->f->C_GetSlotList(CK_TRUE, slots, &nslots)))
		return false;
	job->nfound = 0;
	for (CK_ULONG i = 0; i < nslots; i++)
	{
		CK_TOKEN_INFO ti;

		if (job->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (memcmp(ti.label, job->token_label, 32) == 0)
		{
			if (job->nfound++ == 0)
			{
				job->slot = slots[i];
				memcpy(job->serial, ti.serialNumber, sizeof(job->serial));
			}
		}
	}
	return true;
}

/*
 * A pause before looking again after what SoftHSM2 (and perhaps other
 * modules) report while another process rewrites the token's file: 20, 40,
 * 80, 160 ms for attempts 0 to 3.  Job threads only: it blocks.
 */
static void
job_backoff(int attempt)
{
	struct timespec pause = {0, 20000000L << attempt};

	(void) nanosleep(&pause, NULL);
}

static void
job_open(P11Job *job)
{
	CK_SLOT_ID *slots;
	CK_SESSION_HANDLE s;
	CK_RV		rv;

	if (job->initialize && !job_initialize(job))
		return;

	slots = malloc(sizeof(CK_SLOT_ID) * P11_MAX_SLOTS);
	if (slots == NULL)
	{
		job->call = "malloc";
		job->rv = CKR_HOST_MEMORY;
		return;
	}
	if (!job_find_token(job, slots))
	{
		free(slots);
		return;
	}

	/*
	 * A module reads its tokens at C_Initialize, and may leave out one it
	 * could not read just then: SoftHSM2 drops a token whose file another
	 * process is rewriting (a login or a key generation there), for the
	 * life of the process.  So when this job initialized the module (no
	 * other handle of the process has a session to lose), finalize it and
	 * look again, a few times (20 to 160 ms apart), before saying there is
	 * no such token; and leave it finalized then, so that the process's
	 * next attempt reads the tokens anew.
	 */
	for (int attempt = 0; job->nfound == 0 && job->initialize; attempt++)
	{
		(void) job->f->C_Finalize(NULL);
		job->initialized = false;
		if (attempt == 4)
			break;
		job_backoff(attempt);
		if (!job_initialize(job) || !job_find_token(job, slots))
		{
			free(slots);
			return;
		}
	}
	free(slots);
	if (job->nfound != 1)
	{
		job->rv = CKR_OK;
		return;
	}
	if (!P11_CALL(job, "C_OpenSession",
				  job->f->C_OpenSession(job->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
										NULL, NULL, &s)))
		return;
	/*
	 * SoftHSM2's C_Login reads and rewrites the token's file, and says
	 * CKR_GENERAL_ERROR when another process is rewriting it: seen when a
	 * token that had stopped answering came back and the backends waiting
	 * for it all logged in at once (t/018; a stress run of 16 such logins
	 * at a time failed 54 of 240 before this, 0 after).  So that answer is
	 * tried again, up to four times; a wrong PIN is not.
	 */
	job->call = "C_Login";
	for (int attempt = 0;; attempt++)
	{
		rv = job->f->C_Login(s, CKU_USER, job->pin, job->pinlen);
		if (rv != CKR_GENERAL_ERROR || attempt == 4)
			break;
		job_backoff(attempt);
	}
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
	{
		job->rv = rv;
		(void) job->f->C_CloseSession(s);
		return;
	}
	job->already_logged_in = (rv == CKR_USER_ALREADY_LOGGED_IN);
	job->rv = CKR_OK;
	job->new_session = s;
}

static void
job_info(P11Job *job)
{
	CK_INFO		info;
	CK_SESSION_INFO si;
	CK_TOKEN_INFO ti;
	char		lib[33],
				manu[33],
				model[17],
				serial[17];

	if (!P11_CALL(job, "C_GetInfo", job->f->C_GetInfo(&info)))
		return;
	if (!P11_CALL(job, "C_GetSessionInfo", job->f->C_GetSessionInfo(job->session, &si)))
		return;
	if (!P11_CALL(job, "C_GetTokenInfo", job->f->C_GetTokenInfo(si.slotID, &ti)))
		return;
	unpad(lib, info.libraryDescription, 32);
	unpad(manu, info.manufacturerID, 32);
	unpad(model, ti.model, 16);
	unpad(serial, ti.serialNumber, 16);
	snprintf(job->info, sizeof(job->info),
			 "%s %d.%d (%s), Cryptoki %d.%d; token model %s, serial %s, slot %lu; session %s",
			 lib, info.libraryVersion.major, info.libraryVersion.minor, manu,
			 info.cryptokiVersion.major, info.cryptokiVersion.minor,
			 model, serial, (unsigned long) si.slotID,
			 si.state == CKS_RW_USER_FUNCTIONS ? "read-write, logged in" :
			 si.state == CKS_RO_USER_FUNCTIONS ? "read-only, logged in" : "not logged in");
}

static void
job_find(P11Job *job)
{
	CK_OBJECT_HANDLE key = job_find_key(job);
	CK_ATTRIBUTE attrs[] = {
		{CKA_KEY_TYPE, &job->key_type, sizeof(job->key_type)},
		{CKA_VALUE_LEN, &job->value_len, sizeof(job->value_len)},
		{CKA_ENCRYPT, &job->can_encrypt, sizeof(CK_BBOOL)},
		{CKA_DECRYPT, &job->can_decrypt, sizeof(CK_BBOOL)},
		{CKA_WRAP, &job->can_wrap, sizeof(CK_BBOOL)},
		{CKA_UNWRAP, &job->can_unwrap, sizeof(CK_BBOOL)},
		{CKA_EXTRACTABLE, &job->extractable, sizeof(CK_BBOOL)},
		{CKA_SENSITIVE, &job->sensitive, sizeof(CK_BBOOL)},
	};

	if (key == CK_INVALID_HANDLE)
		return;
	(void) P11_CALL(job, "C_GetAttributeValue",
					job->f->C_GetAttributeValue(job->session, key, attrs, lengthof(attrs)));
}

static void
job_generate(P11Job *job)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_ULONG	len = 32;
	CK_BBOOL	yes = CK_TRUE;
	CK_BBOOL	no = CK_FALSE;
	CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
	CK_ATTRIBUTE tmpl[] = {
		{CKA_CLASS, &cls, sizeof(cls)},
		{CKA_KEY_TYPE, &type, sizeof(type)},
		{CKA_VALUE_LEN, &len, sizeof(len)},
		{CKA_LABEL, job->key_label, job->key_labellen},
		{CKA_TOKEN, &yes, sizeof(yes)},
		{CKA_PRIVATE, &yes, sizeof(yes)},
		{CKA_SENSITIVE, &yes, sizeof(yes)},
		{CKA_EXTRACTABLE, &no, sizeof(no)},
		{CKA_ENCRYPT, &yes, sizeof(yes)},
		{CKA_DECRYPT, &yes, sizeof(yes)},
		{CKA_WRAP, &yes, sizeof(yes)},
		{CKA_UNWRAP, &yes, sizeof(yes)},
	};
	CK_OBJECT_HANDLE key;

	(void) job_find_key(job);
	if (job->rv != CKR_OK || job->nfound > 0)
		return;
	if (P11_CALL(job, "C_GenerateKey",
				 job->f->C_GenerateKey(job->session, &mech, tmpl, lengthof(tmpl), &key)))
		job->created = true;
}

static void
job_gcm(P11Job *job, bool encrypt)
{
	CK_OBJECT_HANDLE key = job_find_key(job);
	CK_GCM_PARAMS gcm;
	CK_MECHANISM mech;

	if (key == CK_INVALID_HANDLE)
		return;
	memset(&gcm, 0, sizeof(gcm));
	gcm.pIv = job->iv;
	gcm.ulIvLen = P11_IV_LEN;
	gcm.ulIvBits = P11_IV_LEN * 8;
	gcm.pAAD = job->aad;
	gcm.ulAADLen = job->aadlen;
	gcm.ulTagBits = P11_TAG_LEN * 8;
	mech.mechanism = CKM_AES_GCM;
	mech.pParameter = &gcm;
	mech.ulParameterLen = sizeof(gcm);
	job->outlen = sizeof(job->out);
	if (encrypt)
	{
		if (P11_CALL(job, "C_EncryptInit", job->f->C_EncryptInit(job->session, &mech, key)))
			(void) P11_CALL(job, "C_Encrypt",
							job->f->C_Encrypt(job->session, job->in, job->inlen,
											  job->out, &job->outlen));
	}
	else
	{
		if (P11_CALL(job, "C_DecryptInit", job->f->C_DecryptInit(job->session, &mech, key)))
			(void) P11_CALL(job, "C_Decrypt",
							job->f->C_Decrypt(job->session, job->in, job->inlen,
											  job->out, &job->outlen));
	}
}

static void
job_wrap(P11Job *job)
{
	CK_OBJECT_HANDLE key = job_find_key(job);
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_BBOOL	yes = CK_TRUE;
	CK_BBOOL	no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
		{CKA_CLASS, &cls, sizeof(cls)},
		{CKA_KEY_TYPE, &type, sizeof(type)},
		{CKA_TOKEN, &no, sizeof(no)},
		{CKA_SENSITIVE, &no, sizeof(no)},
		{CKA_EXTRACTABLE, &yes, sizeof(yes)},
		{CKA_VALUE, job->in, job->inlen},
	};
	CK_MECHANISM mech = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_OBJECT_HANDLE dek;

	if (key == CK_INVALID_HANDLE)
		return;
	if (!P11_CALL(job, "C_CreateObject",
				  job->f->C_CreateObject(job->session, tmpl, lengthof(tmpl), &dek)))
		return;
	job->outlen = sizeof(job->out);
	(void) P11_CALL(job, "C_WrapKey",
					job->f->C_WrapKey(job->session, &mech, key, dek, job->out, &job->outlen));
	(void) job->f->C_DestroyObject(job->session, dek);
}

static void
job_unwrap(P11Job *job)
{
	CK_OBJECT_HANDLE key = job_find_key(job);
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_BBOOL	yes = CK_TRUE;
	CK_BBOOL	no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
		{CKA_CLASS, &cls, sizeof(cls)},
		{CKA_KEY_TYPE, &type, sizeof(type)},
		{CKA_TOKEN, &no, sizeof(no)},
		{CKA_SENSITIVE, &no, sizeof(no)},
		{CKA_EXTRACTABLE, &yes, sizeof(yes)},
	};
	CK_MECHANISM mech = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
	CK_OBJECT_HANDLE dek;
	CK_ATTRIBUTE value = {CKA_VALUE, job->out, sizeof(job->out)};

	if (key == CK_INVALID_HANDLE)
		return;
	if (!P11_CALL(job, "C_UnwrapKey",
				  job->f->C_UnwrapKey(job->session, &mech, key, job->in, job->inlen,
									  tmpl, lengthof(tmpl), &dek)))
		return;
	if (P11_CALL(job, "C_GetAttributeValue",
				 job->f->C_GetAttributeValue(job->session, dek, &value, 1)))
		job->outlen = value.ulValueLen;
	(void) job->f->C_DestroyObject(job->session, dek);
}

static void *
job_thread(void *arg)
{
	P11Job	   *job = arg;
	int			expected = JOB_RUNNING;

	job->rv = CKR_OK;
	switch (job->kind)
	{
		case JOB_OPEN:
			job_open(job);
			break;
		case JOB_CLOSE:
			(void) P11_CALL(job, "C_CloseSession", job->f->C_CloseSession(job->session));
			break;
		case JOB_INFO:
			job_info(job);
			break;
		case JOB_FIND:
			job_find(job);
			break;
		case JOB_GENERATE:
			job_generate(job);
			break;
		case JOB_ENCRYPT:
			job_gcm(job, true);
			break;
		case JOB_DECRYPT:
			job_gcm(job, false);
			break;
		case JOB_WRAP:
			job_wrap(job);
			break;
		case JOB_UNWRAP:
			job_unwrap(job);
			break;
	}

	if (__atomic_compare_exchange_n(&job->state, &expected, JOB_DONE, false,
									__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
	{
		char		b = 1;

		/* The backend is waiting (the pipe is non-blocking; full is fine). */
		if (write(job->notify_fd, &b, 1) < 0)
		{
			/* nothing to do: the backend also checks the state */
		}
	}
	else
	{
		/* The backend gave up on this job: it is ours to free. */
		__atomic_sub_fetch(&job->mod->stuck, 1, __ATOMIC_ACQ_REL);
		job_free(job);
	}
	return NULL;
}

static int	notify_pipe[2] = {-1, -1};
static pid_t notify_pid = 0;

static void
drain_pipe(void)
{
	char		buf[64];

	while (read(notify_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/* Give the job to its thread if it is still running; true if abandoned. */
static bool
abandon(P11Job *job)
{
	int			expected = JOB_RUNNING;

	if (__atomic_compare_exchange_n(&job->state, &expected, JOB_ABANDONED, false,
									__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
	{
		__atomic_add_fetch(&job->mod->stuck, 1, __ATOMIC_ACQ_REL);
		return true;
	}
	return false;
}

static P11Job *
job_new(P11Handle *h, P11JobKind kind)
{
	P11Job	   *job = calloc(1, sizeof(P11Job));

	if (job == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	job->kind = kind;
	job->mod = h->mod;
	job->f = h->mod->f;
	job->session = h->session;
	return job;
}

/*
 * Run a job on its own thread and wait for it, at most colcrypt.kms_timeout.
 * True when the module returned (job->rv says how it went; the caller frees
 * the job); false with err filled when it did not (the job then belongs to
 * its thread).  A cancel while waiting abandons the job and rethrows.
 */
static bool
run_job(P11Handle *h, P11Job *job, ColcryptProviderError *err)
{
	pthread_t	thread;
	pthread_attr_t attr;
	sigset_t	all,
				saved;
	TimestampTz deadline;
	bool		timed_out = false;
	int			rc;

	if (__atomic_load_n(&h->mod->stuck, __ATOMIC_ACQUIRE) > 0)
	{
		job_free(job);
		ColcryptProviderSetError(err, COLCRYPT_ERRCODE_UNREACHABLE,
								 "the PKCS#11 module has not yet returned from a call that timed out",
								 psprintf("Module \"%s\". Calls fail at once until it returns, instead of waiting colcrypt.kms_timeout each.",
										  h->module_path));
		return false;
	}
	if (notify_pid != MyProcPid)
	{
		if (notify_pipe[0] >= 0 && notify_pid == 0)
		{
			close(notify_pipe[0]);
			close(notify_pipe[1]);
		}
		if (pipe2(notify_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
		{
			job_free(job);
			ColcryptProviderSetError(err, ERRCODE_SYSTEM_ERROR,
									 "could not create a pipe", strerror(errno));
			return false;
		}
		notify_pid = MyProcPid;
	}
	drain_pipe();
	job->notify_fd = notify_pipe[1];
	job->state = JOB_RUNNING;

	/* The thread takes no signals: PostgreSQL's handlers run in the backend. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&thread, &attr, job_thread, job);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (rc != 0)
	{
		job_free(job);
		ColcryptProviderSetError(err, ERRCODE_SYSTEM_ERROR,
								 "could not start a thread for the PKCS#11 call", strerror(rc));
		return false;
	}

	deadline = ColcryptProviderDeadline();
	PG_TRY();
	{
		while (__atomic_load_n(&job->state, __ATOMIC_ACQUIRE) != JOB_DONE)
		{
			if (!ColcryptProviderWaitFd(notify_pipe[0], false, deadline))
			{
				if (abandon(job))
					timed_out = true;
				break;
			}
			drain_pipe();
		}
	}
	PG_CATCH();
	{
		if (abandon(job))
			h->has_session = false;		/* in use by the thread: never reuse */
		else
			job_free(job);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (timed_out)
	{
		h->has_session = false;
		ColcryptProviderSetError(err, COLCRYPT_ERRCODE_UNREACHABLE,
								 "the PKCS#11 module did not answer in time",
								 psprintf("No answer from \"%s\" within colcrypt.kms_timeout (%d ms).",
										  h->module_path, colcrypt_kms_timeout));
		return false;
	}
	return true;
}

/* ----------------------------------------------------------------------
 * Errors
 * ----------------------------------------------------------------------
 */

static const char *
ckr_name(CK_RV rv)
{
	switch (rv)
	{
#define R(x) case x: return #x
			R(CKR_OK);
			R(CKR_HOST_MEMORY);
			R(CKR_SLOT_ID_INVALID);
			R(CKR_GENERAL_ERROR);
			R(CKR_FUNCTION_FAILED);
			R(CKR_ARGUMENTS_BAD);
			R(CKR_ATTRIBUTE_READ_ONLY);
			R(CKR_ATTRIBUTE_SENSITIVE);
			R(CKR_ATTRIBUTE_TYPE_INVALID);
			R(CKR_ATTRIBUTE_VALUE_INVALID);
			R(CKR_DATA_INVALID);
			R(CKR_DATA_LEN_RANGE);
			R(CKR_DEVICE_ERROR);
			R(CKR_DEVICE_MEMORY);
			R(CKR_DEVICE_REMOVED);
			R(CKR_ENCRYPTED_DATA_INVALID);
			R(CKR_ENCRYPTED_DATA_LEN_RANGE);
			R(CKR_FUNCTION_CANCELED);
			R(CKR_FUNCTION_NOT_SUPPORTED);
			R(CKR_KEY_HANDLE_INVALID);
			R(CKR_KEY_SIZE_RANGE);
			R(CKR_KEY_TYPE_INCONSISTENT);
			R(CKR_KEY_FUNCTION_NOT_PERMITTED);
			R(CKR_KEY_NOT_WRAPPABLE);
			R(CKR_KEY_UNEXTRACTABLE);
			R(CKR_MECHANISM_INVALID);
			R(CKR_MECHANISM_PARAM_INVALID);
			R(CKR_OBJECT_HANDLE_INVALID);
			R(CKR_OPERATION_ACTIVE);
			R(CKR_OPERATION_NOT_INITIALIZED);
			R(CKR_PIN_INCORRECT);
			R(CKR_PIN_INVALID);
			R(CKR_PIN_LEN_RANGE);
			R(CKR_PIN_EXPIRED);
			R(CKR_PIN_LOCKED);
			R(CKR_SESSION_CLOSED);
			R(CKR_SESSION_COUNT);
			R(CKR_SESSION_HANDLE_INVALID);
			R(CKR_SESSION_READ_ONLY);
			R(CKR_TEMPLATE_INCOMPLETE);
			R(CKR_TEMPLATE_INCONSISTENT);
			R(CKR_TOKEN_NOT_PRESENT);
			R(CKR_TOKEN_NOT_RECOGNIZED);
			R(CKR_TOKEN_WRITE_PROTECTED);
			R(CKR_UNWRAPPING_KEY_HANDLE_INVALID);
			R(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT);
			R(CKR_USER_NOT_LOGGED_IN);
			R(CKR_USER_PIN_NOT_INITIALIZED);
			R(CKR_WRAPPED_KEY_INVALID);
			R(CKR_WRAPPED_KEY_LEN_RANGE);
			R(CKR_WRAPPING_KEY_HANDLE_INVALID);
			R(CKR_WRAPPING_KEY_TYPE_INCONSISTENT);
			R(CKR_BUFFER_TOO_SMALL);
			R(CKR_CRYPTOKI_NOT_INITIALIZED);
			R(CKR_CRYPTOKI_ALREADY_INITIALIZED);
#undef R
		default:
			return "unknown CKR";
	}
}

/*
 * Turn a failed job into an error.  Session-level failures drop the session
 * so that the next call opens a new one (recovery without a restart).
 */
static void
job_error(P11Handle *h, P11Job *job, const char *what, ColcryptProviderError *err)
{
	char	   *detail = psprintf("%s returned %s (0x%lx).", job->call, ckr_name(job->rv),
								  (unsigned long) job->rv);
	int			code = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	const char *msg = what;

	switch (job->rv)
	{
		case CKR_PIN_INCORRECT:
		case CKR_PIN_INVALID:
		case CKR_PIN_LEN_RANGE:
		case CKR_PIN_EXPIRED:
			code = ERRCODE_INVALID_PASSWORD;
			msg = psprintf("the token \"%s\" refused the PIN", h->token_label);
			break;
		case CKR_PIN_LOCKED:
		case CKR_USER_PIN_NOT_INITIALIZED:
			code = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
			msg = psprintf("the user PIN of token \"%s\" is locked or not set", h->token_label);
			break;
		case CKR_TOKEN_NOT_PRESENT:
		case CKR_DEVICE_REMOVED:
		case CKR_DEVICE_ERROR:
		case CKR_SESSION_CLOSED:
		case CKR_SESSION_HANDLE_INVALID:
		case CKR_CRYPTOKI_NOT_INITIALIZED:
		case CKR_USER_NOT_LOGGED_IN:
			code = COLCRYPT_ERRCODE_UNREACHABLE;
			msg = psprintf("lost the session with token \"%s\"", h->token_label);
			break;
		case CKR_KEY_FUNCTION_NOT_PERMITTED:
		case CKR_KEY_TYPE_INCONSISTENT:
		case CKR_WRAPPING_KEY_TYPE_INCONSISTENT:
		case CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT:
			msg = psprintf("%s: the master key does not allow this use", what);
			break;
		case CKR_MECHANISM_INVALID:
		case CKR_MECHANISM_PARAM_INVALID:
			msg = psprintf("%s: the token does not offer the mechanism", what);
			break;
		default:
			break;
	}
	if (code == COLCRYPT_ERRCODE_UNREACHABLE)
		h->has_session = false;
	ColcryptProviderSetError(err, code, msg, detail);
}

/* ----------------------------------------------------------------------
 * Sessions
 * ----------------------------------------------------------------------
 */

static P11Module *
load_module(const char *path, ColcryptProviderError *err)
{
	P11Module  *m;
	CK_C_GetFunctionList getlist;
	CK_RV		rv;

	for (m = modules; m != NULL; m = m->next)
		if (strcmp(m->path, path) == 0 && m->pid == MyProcPid)
			return m;

	m = MemoryContextAllocZero(TopMemoryContext, sizeof(P11Module));
	strlcpy(m->path, path, sizeof(m->path));

	m->pid = MyProcPid;
	m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (m->dl == NULL)
	{
		const char *why = dlerror();

		pfree(m);
		ColcryptProviderSetError(err, access(path, R_OK) == 0 ? ERRCODE_SYSTEM_ERROR : ERRCODE_UNDEFINED_FILE,
								 "could not load the PKCS#11 module",
								 why ? why : path);
		return NULL;
	}
	getlist = (CK_C_GetFunctionList) dlsym(m->dl, "C_GetFunctionList");
	if (getlist == NULL || (rv = getlist(&m->f)) != CKR_OK || m->f == NULL)
	{
		dlclose(m->dl);
		pfree(m);
		ColcryptProviderSetError(err, ERRCODE_SYSTEM_ERROR,
								 "the library is not a PKCS#11 module",
								 psprintf("\"%s\" has no working C_GetFunctionList.", path));
		return NULL;
	}
	m->next = modules;
	modules = m;
	if (!exit_guard_registered && atexit(leave_without_module_destructors) == 0)
	{
		on_proc_exit(remember_exit_code, (Datum) 0);
		exit_guard_registered = true;
	}
	return m;
}

/* Close the handle's session, if it has one (best effort). */
static void
close_session(P11Handle *h)
{
	P11Job	   *job;
	ColcryptProviderError ignored;

	if (!h->has_session)
		return;
	job = job_new(h, JOB_CLOSE);
	if (run_job(h, job, &ignored))
		job_free(job);
	h->has_session = false;
}

/* Open a logged-in session unless the handle has one. */
static bool
ensure_session(P11Handle *h, ColcryptProviderError *err)
{
	P11Job	   *job;
	char	   *pin;
	size_t		pinlen;
	uint8		salted[16 + 256];
	uint8		digest[32];

	if (h->has_session)
		return true;
	if (h->mod == NULL && (h->mod = load_module(h->module_path, err)) == NULL)
		return false;

	if (h->pin_file != NULL)
	{
		if ((pin = ColcryptReadSecretFile(h->pin_file, "PIN", err)) == NULL)
			return false;
	}
	else
		pin = pstrdup(h->pin);
	pinlen = strlen(pin);
	if (pinlen >= sizeof(((P11Job *) NULL)->pin))
	{
		cc_wipe(pin, pinlen);
		ColcryptProviderSetError(err, ERRCODE_INVALID_PASSWORD, "the PIN is too long", NULL);
		return false;
	}

	if (login_salt_pid != MyProcPid)
	{
		if (cc_random(login_salt, sizeof(login_salt)) != CC_OK)
		{
			cc_wipe(pin, pinlen);
			ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR, "could not generate random bytes", NULL);
			return false;
		}
		nlogins = 0;
		login_salt_pid = MyProcPid;
	}
	memcpy(salted, login_salt, 16);
	memcpy(salted + 16, pin, pinlen);
	(void) cc_sha256(salted, 16 + pinlen, digest);
	cc_wipe(salted, sizeof(salted));

	job = job_new(h, JOB_OPEN);
	job->initialize = !h->mod->initialized;
	pad_label(job->token_label, h->token_label);
	memcpy(job->pin, pin, pinlen);
	job->pinlen = pinlen;
	cc_wipe(pin, pinlen);
	pfree(pin);

	if (!run_job(h, job, err))
		return false;
	if (job->initialized)
		h->mod->initialized = true;
	if (job->rv != CKR_OK)
		job_error(h, job, "could not open a session", err);
	else if (job->nfound == 0)
		ColcryptProviderSetError(err, COLCRYPT_ERRCODE_UNREACHABLE,
								 psprintf("no token labelled \"%s\"", h->token_label),
								 psprintf("Module \"%s\" shows no token with that label in any slot.",
										  h->module_path));
	else if (job->nfound > 1)
		ColcryptProviderSetError(err, ERRCODE_DUPLICATE_OBJECT,
								 psprintf("%d tokens are labelled \"%s\"", job->nfound, h->token_label),
								 "Give each token a unique label.");
	else
	{
		int			i;

		h->session = job->new_session;
		h->slot = job->slot;
		h->has_session = true;
		for (i = 0; i < nlogins; i++)
			if (logins[i].slot == h->slot &&
				memcmp(logins[i].label, job->token_label, 32) == 0 &&
				memcmp(logins[i].serial, job->serial, 16) == 0)
				break;
		if (i < nlogins && job->already_logged_in &&
			cc_memcmp_ct(logins[i].digest, digest, 32) != 0)
		{
			/* Logged in by another handle, and this PIN is not that one. */
			close_session(h);
			ColcryptProviderSetError(err, ERRCODE_INVALID_PASSWORD,
									 psprintf("the token \"%s\" refused the PIN", h->token_label),
									 "The PIN differs from the one this process logged in to the token with.");
		}
		else if (!job->already_logged_in || i == nlogins)
		{
			if (i == nlogins && i < (int) lengthof(logins))
				nlogins++;
			if (i < (int) lengthof(logins))
			{
				logins[i].slot = h->slot;
				memcpy(logins[i].label, job->token_label, 32);
				memcpy(logins[i].serial, job->serial, 16);
				memcpy(logins[i].digest, digest, 32);
			}
		}
	}
	cc_wipe(digest, sizeof(digest));
	job_free(job);
	return h->has_session;
}

/* Run a job that uses the CMK labelled key_ref; errors for a missing key. */
static P11Job *
key_job(P11Handle *h, P11JobKind kind, const char *key_ref, const char *what,
		ColcryptProviderError *err)
{
	P11Job	   *job;
	size_t		len = strlen(key_ref);

	if (len == 0 || len > P11_MAX_LABEL)
	{
		ColcryptProviderSetError(err, ERRCODE_INVALID_PARAMETER_VALUE,
								 "a PKCS#11 key label must have 1 to 255 bytes", NULL);
		return NULL;
	}
	if (!ensure_session(h, err))
		return NULL;
	job = job_new(h, kind);
	memcpy(job->key_label, key_ref, len);
	job->key_labellen = len;
	return job;
}

/* After a key job ran: an error unless it found exactly one key and succeeded. */
static bool
key_job_ok(P11Handle *h, P11Job *job, const char *key_ref, const char *what,
		   ColcryptProviderError *err)
{
	if (job->rv != CKR_OK)
	{
		job_error(h, job, what, err);
		return false;
	}
	if (job->nfound == 0 && !(job->kind == JOB_GENERATE && job->created))
	{
		ColcryptProviderSetError(err, ERRCODE_UNDEFINED_OBJECT,
								 psprintf("no secret key labelled \"%s\" in token \"%s\"",
										  key_ref, h->token_label), NULL);
		return false;
	}
	if (job->nfound > 1)
	{
		ColcryptProviderSetError(err, ERRCODE_DUPLICATE_OBJECT,
								 psprintf("several secret keys are labelled \"%s\" in token \"%s\"",
										  key_ref, h->token_label),
								 "Give the master key a unique label.");
		return false;
	}
	return true;
}

/* The associated data of a GCM wrapping: the data key's identity. */
static void
gcm_aad(P11Job *job, const ColcryptWrapContext *ctx)
{
	/* key_job() limited key_ref to P11_MAX_LABEL bytes: it fits. */
	job->aadlen = ColcryptWrapAad("colcrypt-pkcs11-dek-v1", ctx, job->aad, sizeof(job->aad));
	Assert(job->aadlen > 0);
}

/* ----------------------------------------------------------------------
 * The provider operations
 * ----------------------------------------------------------------------
 */

static const char *const p11_options[] = {"module", "token_label", "pin", "pin_file", "mechanism", NULL};

static bool
parse_mechanism(const char *m, P11Mechanism *out)
{
	if (m == NULL || strcmp(m, "aes-gcm") == 0)
		*out = P11_MECH_GCM;
	else if (strcmp(m, "aes-key-wrap-pad") == 0)
		*out = P11_MECH_KWP;
	else
		return false;
	return true;
}

static void
pkcs11_validate(const char *name, Jsonb *options)
{
	char	   *module;
	char	   *token;
	char	   *pin;
	char	   *pin_file;
	P11Mechanism mech;
	struct stat st;

	/* Loading a library into the server runs its code as the server. */
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create a pkcs11 key provider"),
				 errdetail("A pkcs11 provider loads a library into the database server."),
				 errhint("Only superusers may add or alter one.")));
	ColcryptCheckOptionNames("pkcs11", options, p11_options);
	module = ColcryptOptionText(options, "module");
	token = ColcryptOptionText(options, "token_label");
	pin = ColcryptOptionText(options, "pin");
	pin_file = ColcryptOptionText(options, "pin_file");

	if (module == NULL || module[0] != '/')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a pkcs11 provider needs the absolute path of its PKCS#11 library in \"module\""),
				 errhint("For SoftHSM2 on Debian: /usr/lib/softhsm/libsofthsm2.so.")));
	if (strlen(module) >= MAXPGPATH)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("PKCS#11 module path is too long")));
	if (stat(module, &st) != 0 || !S_ISREG(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("PKCS#11 module \"%s\" is not a readable file", module)));
	if (token == NULL || token[0] == '\0' || strlen(token) > 32)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a pkcs11 provider needs a \"token_label\" of 1 to 32 bytes")));
	if ((pin == NULL) == (pin_file == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a pkcs11 provider needs exactly one of \"pin\" and \"pin_file\""),
				 errhint("\"pin_file\" keeps the PIN out of the catalog and out of dumps.")));
	if (pin_file != NULL && pin_file[0] != '/')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"pin_file\" must be an absolute path")));
	if (pin != NULL && (pin[0] == '\0' || strlen(pin) >= 256))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"pin\" must have 1 to 255 bytes")));
	if (!parse_mechanism(ColcryptOptionText(options, "mechanism"), &mech))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown PKCS#11 wrapping mechanism"),
				 errhint("Use \"aes-gcm\" (C_Encrypt with CKM_AES_GCM, the default) or \"aes-key-wrap-pad\" (C_WrapKey with CKM_AES_KEY_WRAP_PAD).")));
}

static void *
pkcs11_open(const char *name, Jsonb *options, ColcryptProviderError *err)
{
	P11Handle  *h = MemoryContextAllocZero(TopMemoryContext, sizeof(P11Handle));
	char	   *s;

	strlcpy(h->name, name, sizeof(h->name));
	if ((s = ColcryptOptionText(options, "module")) != NULL)
		strlcpy(h->module_path, s, sizeof(h->module_path));
	if ((s = ColcryptOptionText(options, "token_label")) != NULL)
		strlcpy(h->token_label, s, sizeof(h->token_label));
	if ((s = ColcryptOptionText(options, "pin")) != NULL)
	{
		h->pin = MemoryContextStrdup(TopMemoryContext, s);
		cc_wipe(s, strlen(s));
	}
	if ((s = ColcryptOptionText(options, "pin_file")) != NULL)
		h->pin_file = MemoryContextStrdup(TopMemoryContext, s);
	(void) parse_mechanism(ColcryptOptionText(options, "mechanism"), &h->mechanism);
	if (h->pin == NULL && h->pin_file == NULL)
		h->pin = MemoryContextStrdup(TopMemoryContext, "");

	if (!ensure_session(h, err))
	{
		if (h->pin)
		{
			cc_wipe(h->pin, strlen(h->pin));
			pfree(h->pin);
		}
		if (h->pin_file)
			pfree(h->pin_file);
		pfree(h);
		return NULL;
	}
	return h;
}

static void
pkcs11_close(void *handle)
{
	P11Handle  *h = handle;

	close_session(h);
	if (h->pin)
	{
		cc_wipe(h->pin, strlen(h->pin));
		pfree(h->pin);
	}
	if (h->pin_file)
		pfree(h->pin_file);
	pfree(h);
}

static bool
pkcs11_wrap(void *handle, const ColcryptWrapContext *ctx,
			const uint8 *dek, size_t deklen,
			StringInfo wrapped, char **wrap_meta, ColcryptProviderError *err)
{
	P11Handle  *h = handle;
	bool		gcm = h->mechanism == P11_MECH_GCM;
	P11Job	   *job = key_job(h, gcm ? JOB_ENCRYPT : JOB_WRAP, ctx->key_ref, "wrap", err);
	bool		ok;

	if (job == NULL)
		return false;
	Assert(deklen <= sizeof(job->in));
	memcpy(job->in, dek, deklen);
	job->inlen = deklen;
	if (gcm)
	{
		gcm_aad(job, ctx);
		if (cc_random(job->iv, P11_IV_LEN) != CC_OK)
		{
			job_free(job);
			ColcryptProviderSetError(err, ERRCODE_INTERNAL_ERROR, "could not generate an IV", NULL);
			return false;
		}
	}
	if (!run_job(h, job, err))
		return false;
	ok = key_job_ok(h, job, ctx->key_ref, "the token could not wrap the data key", err);
	if (ok && job->outlen != (gcm ? deklen + P11_TAG_LEN : deklen + 8))
	{
		ColcryptProviderSetError(err, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
								 "the token returned a wrapped key of unexpected length",
								 psprintf("%lu bytes", (unsigned long) job->outlen));
		ok = false;
	}
	if (ok)
	{
		appendStringInfoChar(wrapped, gcm ? P11_FORMAT_GCM : P11_FORMAT_KWP);
		if (gcm)
			appendBinaryStringInfo(wrapped, (char *) job->iv, P11_IV_LEN);
		appendBinaryStringInfo(wrapped, (char *) job->out, job->outlen);
		*wrap_meta = NULL;
	}
	job_free(job);
	return ok;
}

static bool
pkcs11_unwrap(void *handle, const ColcryptWrapContext *ctx,
			  const uint8 *wrapped, size_t wrappedlen, const char *wrap_meta,
			  uint8 *dek, size_t deklen, ColcryptProviderError *err)
{
	P11Handle  *h = handle;
	P11Job	   *job;
	bool		gcm;
	bool		ok;

	if (wrappedlen == 1 + P11_IV_LEN + deklen + P11_TAG_LEN && wrapped[0] == P11_FORMAT_GCM)
		gcm = true;
	else if (wrappedlen == 1 + deklen + 8 && wrapped[0] == P11_FORMAT_KWP)
		gcm = false;
	else
	{
		ColcryptProviderSetError(err, ERRCODE_DATA_CORRUPTED,
								 "the wrapped data key is not in a format of this provider",
								 psprintf("%lu bytes, format byte %u.", (unsigned long) wrappedlen,
										  wrappedlen ? wrapped[0] : 0));
		return false;
	}
	job = key_job(h, gcm ? JOB_DECRYPT : JOB_UNWRAP, ctx->key_ref, "unwrap", err);
	if (job == NULL)
		return false;
	if (gcm)
	{
		memcpy(job->iv, wrapped + 1, P11_IV_LEN);
		memcpy(job->in, wrapped + 1 + P11_IV_LEN, wrappedlen - 1 - P11_IV_LEN);
		job->inlen = wrappedlen - 1 - P11_IV_LEN;
		gcm_aad(job, ctx);
	}
	else
	{
		memcpy(job->in, wrapped + 1, wrappedlen - 1);
		job->inlen = wrappedlen - 1;
	}
	if (!run_job(h, job, err))
		return false;
	ok = key_job_ok(h, job, ctx->key_ref,
					"the token refused to unwrap the data key (another master key, or the wrapped key was altered)",
					err);
	if (ok && job->outlen != deklen)
	{
		ColcryptProviderSetError(err, ERRCODE_DATA_CORRUPTED,
								 "the token unwrapped a key of the wrong length", NULL);
		ok = false;
	}
	if (ok)
		memcpy(dek, job->out, deklen);
	job_free(job);
	return ok;
}

static bool
pkcs11_ensure_cmk(void *handle, const char *key_ref, bool create, bool *created,
				  char **actual_ref, ColcryptProviderError *err)
{
	P11Handle  *h = handle;
	P11Job	   *job = key_job(h, create ? JOB_GENERATE : JOB_FIND, key_ref, "find", err);
	bool		ok;

	if (job == NULL)
		return false;
	if (!run_job(h, job, err))
		return false;
	ok = key_job_ok(h, job, key_ref, create ? "could not create the master key" : "could not find the master key", err);
	if (!ok && err->sqlerrcode == ERRCODE_UNDEFINED_OBJECT)
		snprintf(err->detail, sizeof(err->detail),
				 "Create it in the token (pkcs11-tool --keygen --key-type AES:32 --sensitive --label %s), or call add_master_key with create_cmk => true.",
				 key_ref);
	*created = ok && job->created;
	job_free(job);
	if (!ok || *created)
		return ok;

	/* An existing key: check that it is a usable AES-256 key. */
	job = key_job(h, JOB_FIND, key_ref, "find", err);
	if (job == NULL || !run_job(h, job, err))
		return false;
	ok = key_job_ok(h, job, key_ref, "could not read the master key's attributes", err);
	if (ok && (job->key_type != CKK_AES || job->value_len != 32))
	{
		ColcryptProviderSetError(err, ERRCODE_WRONG_OBJECT_TYPE,
								 psprintf("key \"%s\" is not an AES-256 key", key_ref), NULL);
		ok = false;
	}
	else if (ok && (h->mechanism == P11_MECH_GCM ? !(job->can_encrypt && job->can_decrypt)
					: !(job->can_wrap && job->can_unwrap)))
	{
		ColcryptProviderSetError(err, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
								 psprintf("key \"%s\" does not allow %s", key_ref,
										  h->mechanism == P11_MECH_GCM ? "encrypt and decrypt" : "wrap and unwrap"),
								 "Its CKA_ENCRYPT/CKA_DECRYPT or CKA_WRAP/CKA_UNWRAP attributes are false.");
		ok = false;
	}
	else if (ok && (job->extractable || !job->sensitive))
		ereport(WARNING,
				(errmsg("master key \"%s\" in token \"%s\" can leave the token", key_ref, h->token_label),
				 errdetail("It is %s.", job->extractable ? "extractable (CKA_EXTRACTABLE)" : "not sensitive (CKA_SENSITIVE false)"),
				 errhint("Use a key created non-extractable and sensitive, such as one add_master_key makes with create_cmk => true.")));
	job_free(job);
	return ok;
}

/*
 * A new CMK beside the old one, labelled with the time it was made.  A label
 * already in the token (a rotation earlier in the same second, or one whose
 * transaction rolled back) gets a suffix, "-2", "-3", ..., so rotations need
 * no pause between them.
 */
static bool
pkcs11_rotate_cmk(void *handle, const char *key_ref, char **new_key_ref,
				  char **new_version, ColcryptProviderError *err)
{
	P11Handle  *h = handle;
	const char *at = strrchr(key_ref, '@');
	char	   *base = at ? pnstrdup(key_ref, at - key_ref) : pstrdup(key_ref);
	char	   *stamp = ColcryptUtcStamp();

	for (int n = 1; n <= 100; n++)
	{
		char	   *label = n == 1 ? psprintf("%s@%s", base, stamp)
			: psprintf("%s@%s-%d", base, stamp, n);
		P11Job	   *job;
		bool		created;

		job = key_job(h, JOB_GENERATE, label, "create", err);
		if (job == NULL || !run_job(h, job, err))
			return false;
		if (job->rv != CKR_OK)
		{
			job_error(h, job, "could not create the new master key", err);
			job_free(job);
			return false;
		}
		/* Not created: one key or more has that label; try the next. */
		created = job->created;
		job_free(job);
		if (created)
		{
			*new_key_ref = label;
			return true;
		}
		pfree(label);
	}
	ColcryptProviderSetError(err, ERRCODE_DUPLICATE_OBJECT,
							 psprintf("keys labelled \"%s@%s\" to \"%s@%s-100\" already exist in token \"%s\"",
									  base, stamp, base, stamp, h->token_label),
							 "Try again in a second.");
	return false;
}

static bool
pkcs11_health(void *handle, StringInfo detail, ColcryptProviderError *err)
{
	P11Handle  *h = handle;
	P11Job	   *job;

	if (!ensure_session(h, err))
		return false;
	job = job_new(h, JOB_INFO);
	if (!run_job(h, job, err))
		return false;
	if (job->rv != CKR_OK)
	{
		job_error(h, job, "could not describe the token", err);
		job_free(job);
		return false;
	}
	appendStringInfo(detail, "%s; mechanism %s", job->info,
					 h->mechanism == P11_MECH_GCM ? "CKM_AES_GCM" : "CKM_AES_KEY_WRAP_PAD");
	job_free(job);
	return true;
}

static Jsonb *
pkcs11_describe(Jsonb *options)
{
	static const char *const secret[] = {"pin", NULL};
	static const char *const defaults[] = {"mechanism", "aes-gcm", NULL};

	return ColcryptRedactOptions(options, secret, defaults);
}

const ColcryptProviderOps colcrypt_pkcs11_provider = {
	.kind = "pkcs11",
	.validate = pkcs11_validate,
	.open = pkcs11_open,
	.close = pkcs11_close,
	.wrap = pkcs11_wrap,
	.unwrap = pkcs11_unwrap,
	.ensure_cmk = pkcs11_ensure_cmk,
	.rotate_cmk = pkcs11_rotate_cmk,
	.rewrap = NULL,				/* PKCS#11 has no re-encrypt: unwrap and wrap */
	.health = pkcs11_health,
	.describe = pkcs11_describe,
};
