/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTP client of the vault and aws-kms providers, over libcurl.
 *
 * See http.h for the contract.  libcurl's multi interface drives the
 * transfer so that this backend keeps control: it polls in slices of at
 * most 100 ms, checks for interrupts between slices, and gives up at the
 * call's deadline (colcrypt.kms_timeout from the first attempt).  Sleeps
 * between attempts wait on the latch, so they too answer a cancel.
 *
 * Retries: only for requests the caller marks idempotent; after a failure
 * to connect or a connection that closed or broke, and after HTTP 429, 500,
 * 502, 503, 504 or what the caller's classifier accepts (AWS's throttling
 * answers are HTTP 400).  The n-th back-off is uniformly random in
 * [0, min(2 s, 100 ms * 2^n)] ("full jitter"), at least Retry-After when
 * the server sent one, and never past the deadline: when no time is left
 * for another try, the last answer or failure is what the caller gets.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include <curl/curl.h>

#include "colcrypt/http.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#define HTTP_MAX_RESPONSE		(256 * 1024)
#define HTTP_POLL_SLICE_MS		100
#define HTTP_BACKOFF_BASE_MS	100
#define HTTP_BACKOFF_CAP_MS		2000

struct ColcryptHttp
{
	CURL	   *easy;
	CURLM	   *multi;
	char	   *what;			/* "Vault at https://host:8200", for errors */
	char	   *ca_file;
	int			max_retries;
	char		errbuf[CURL_ERROR_SIZE];
};

/* What one attempt collects while libcurl runs. */
typedef struct Transfer
{
	ColcryptHttpResponse *resp;
	bool		too_large;
} Transfer;

static bool curl_ready = false;

static bool
http_global_init(ColcryptProviderError *err)
{
	if (curl_ready)
		return true;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
	{
		ColcryptProviderSetError(err, ERRCODE_SYSTEM_ERROR,
								 "could not initialize libcurl", NULL);
		return false;
	}
	curl_ready = true;
	return true;
}

const char *
ColcryptHttpLibraryVersion(void)
{
	return curl_version();
}

ColcryptHttp *
ColcryptHttpCreate(const char *what, const char *ca_file, int max_retries,
				   ColcryptProviderError *err)
{
	ColcryptHttp *h;

	if (!http_global_init(err))
		return NULL;
	h = MemoryContextAllocZero(TopMemoryContext, sizeof(ColcryptHttp));
	h->easy = curl_easy_init();
	h->multi = curl_multi_init();
	if (h->easy == NULL || h->multi == NULL)
	{
		ColcryptHttpDestroy(h);
		ColcryptProviderSetError(err, ERRCODE_OUT_OF_MEMORY,
								 "could not create an HTTP client", NULL);
		return NULL;
	}
	h->what = MemoryContextStrdup(TopMemoryContext, what);
	h->ca_file = ca_file ? MemoryContextStrdup(TopMemoryContext, ca_file) : NULL;
	h->max_retries = max_retries;
	return h;
}

void
ColcryptHttpDestroy(ColcryptHttp *h)
{
	if (h == NULL)
		return;
	if (h->easy)
		curl_easy_cleanup(h->easy);
	if (h->multi)
		curl_multi_cleanup(h->multi);
	if (h->what)
		pfree(h->what);
	if (h->ca_file)
		pfree(h->ca_file);
	pfree(h);
}

/* Append to the response body; grown buffers are wiped before release. */
static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	Transfer   *t = arg;
	ColcryptHttpResponse *r = t->resp;
	size_t		n = size * nmemb;

	if (r->bodylen + n > HTTP_MAX_RESPONSE)
	{
		t->too_large = true;
		return 0;				/* makes libcurl fail the transfer */
	}
	if (r->bodylen + n + 1 > r->bodycap)
	{
		size_t		cap = Max(r->bodycap * 2, r->bodylen + n + 1);
		char	   *nb;

		cap = Max(cap, 4096);
		nb = MemoryContextAlloc(TopMemoryContext, cap);
		if (r->body)
		{
			memcpy(nb, r->body, r->bodylen);
			ColcryptWipeFree(r->body, r->bodycap);
		}
		r->body = nb;
		r->bodycap = cap;
	}
	memcpy(r->body + r->bodylen, data, n);
	r->bodylen += n;
	r->body[r->bodylen] = '\0';
	return n;
}

/* Only Retry-After is of interest among the headers. */
static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	Transfer   *t = arg;
	size_t		n = size * nmemb;

	if (n > 12 && pg_strncasecmp(data, "retry-after:", 12) == 0)
	{
		char		tmp[32];
		size_t		m = Min(n - 12, sizeof(tmp) - 1);
		char	   *end;
		long		v;

		memcpy(tmp, data + 12, m);
		tmp[m] = '\0';
		v = strtol(tmp, &end, 10);
		if (end != tmp && v >= 0 && v < 3600)
			t->resp->retry_after_s = v;
	}
	return n;
}

static void
reset_response(ColcryptHttpResponse *r)
{
	if (r->json_ok)
		ColcryptJsonFree(&r->doc);
	r->json_ok = false;
	r->status = 0;
	r->bodylen = 0;
	if (r->body)
		r->body[0] = '\0';
	r->retry_after_s = -1;
}

void
ColcryptHttpResponseFree(ColcryptHttpResponse *r)
{
	reset_response(r);
	if (r->body)
		ColcryptWipeFree(r->body, r->bodycap);
	r->body = NULL;
	r->bodycap = 0;
}

static long
remaining_ms(TimestampTz deadline)
{
	long		ms = (long) ((deadline - GetCurrentTimestamp()) / 1000);

	return ms > 0 ? ms : 0;
}

/* Transport failures that another attempt may cure. */
static bool
transient_curl_error(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_GOT_NOTHING:
		case CURLE_SEND_ERROR:
		case CURLE_RECV_ERROR:
		case CURLE_PARTIAL_FILE:
			return true;
		default:
			return false;
	}
}

static bool
tls_error(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		case CURLE_SSL_INVALIDCERTSTATUS:
			return true;
		default:
			return false;
	}
}

/*
 * One attempt.  Returns the libcurl result; CURLE_OPERATION_TIMEDOUT when
 * the deadline passed.  Throws only for a cancel (after detaching the
 * transfer, so the handle stays usable).
 */
static CURLcode
attempt(ColcryptHttp *h, const ColcryptHttpRequest *req, struct curl_slist *headers,
		Transfer *t, TimestampTz deadline)
{
	CURL	   *e = h->easy;
	CURLcode	result = CURLE_OK;
	long		left = remaining_ms(deadline);

	if (left <= 0)
		return CURLE_OPERATION_TIMEDOUT;
	curl_easy_reset(e);
	h->errbuf[0] = '\0';
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (h->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, left);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "colcrypt");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) HTTP_MAX_RESPONSE);
	if (strcmp(req->method, "POST") == 0)
	{
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		/* Not copied: the caller's buffer, which it wipes. */
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? req->body : "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) (req->body ? req->bodylen : 0));
	}
	else
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);

	if (curl_multi_add_handle(h->multi, e) != CURLM_OK)
		return CURLE_FAILED_INIT;
	PG_TRY();
	{
		for (;;)
		{
			int			running = 0;
			CURLMcode	mc = curl_multi_perform(h->multi, &running);
			CURLMsg    *msg;
			int			queued;

			if (mc != CURLM_OK)
			{
				result = CURLE_FAILED_INIT;
				break;
			}
			if (running == 0)
			{
				result = CURLE_GOT_NOTHING;
				while ((msg = curl_multi_info_read(h->multi, &queued)) != NULL)
					if (msg->msg == CURLMSG_DONE && msg->easy_handle == e)
						result = msg->data.result;
				break;
			}
			left = remaining_ms(deadline);
			if (left <= 0)
			{
				result = CURLE_OPERATION_TIMEDOUT;
				break;
			}
			pgstat_report_wait_start(PG_WAIT_EXTENSION);
			mc = curl_multi_poll(h->multi, NULL, 0, (int) Min(left, HTTP_POLL_SLICE_MS), NULL);
			pgstat_report_wait_end();
			if (mc != CURLM_OK)
			{
				result = CURLE_FAILED_INIT;
				break;
			}
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_FINALLY();
	{
		curl_multi_remove_handle(h->multi, e);
	}
	PG_END_TRY();
	if (result == CURLE_OK)
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &t->resp->status);
	return result;
}

/* Sleep ms on the latch (a cancel interrupts it). */
static void
backoff_sleep(long ms)
{
	if (ms <= 0)
		return;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

static bool
retryable_status(const ColcryptHttpRequest *req, ColcryptHttpResponse *r)
{
	if (r->status == 429 || r->status == 500 || r->status == 502 ||
		r->status == 503 || r->status == 504)
		return true;
	return req->retryable != NULL && req->retryable(r->status, r->json_ok ? &r->doc : NULL);
}

bool
ColcryptHttpPerform(ColcryptHttp *h, const ColcryptHttpRequest *req,
					ColcryptHttpResponse *resp, ColcryptProviderError *err)
{
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz deadline = ColcryptProviderDeadline();
	struct curl_slist *headers = NULL;
	int			tries = req->idempotent ? 1 + h->max_retries : 1;
	CURLcode	rc = CURLE_OK;
	Transfer	t;
	bool		answered = false;

	memset(resp, 0, sizeof(*resp));
	resp->retry_after_s = -1;
	/* libcurl would add "Expect: 100-continue" to larger POSTs: a needless round trip. */
	headers = curl_slist_append(headers, "Expect:");
	for (const char *const *hd = req->headers; hd && *hd; hd++)
		headers = curl_slist_append(headers, *hd);

	for (int i = 0; i < tries; i++)
	{
		long		left;
		long		sleep_ms;
		long		cap;

		reset_response(resp);
		t.resp = resp;
		t.too_large = false;
		resp->attempts = i + 1;
		rc = attempt(h, req, headers, &t, deadline);
		answered = (rc == CURLE_OK);
		if (answered)
		{
			const char *why;

			resp->json_ok = resp->bodylen > 0 &&
				ColcryptJsonParse(resp->body, resp->bodylen, &resp->doc, &why);
			if (!retryable_status(req, resp))
				break;
		}
		else if (t.too_large || !transient_curl_error(rc))
			break;
		if (i + 1 == tries)
			break;

		/* Full jitter, at least Retry-After, never past the deadline. */
		cap = Min((long) HTTP_BACKOFF_CAP_MS, (long) HTTP_BACKOFF_BASE_MS << Min(i, 10));
		sleep_ms = (long) (random() % (cap + 1));
		if (answered && resp->retry_after_s >= 0)
			sleep_ms = Max(sleep_ms, resp->retry_after_s * 1000);
		left = remaining_ms(deadline);
		if (sleep_ms + 10 >= left)
			break;
		backoff_sleep(sleep_ms);
	}
	curl_slist_free_all(headers);
	resp->elapsed_ms = (double) (GetCurrentTimestamp() - start) / 1000.0;
	if (answered)
		return true;

	if (t.too_large)
		ColcryptProviderSetError(err, COLCRYPT_ERRCODE_UNREACHABLE,
								 psprintf("%s sent a response over %d kB", h->what, HTTP_MAX_RESPONSE / 1024),
								 NULL);
	else if (rc == CURLE_OPERATION_TIMEDOUT)
		ColcryptProviderSetError(err, COLCRYPT_ERRCODE_UNREACHABLE,
								 psprintf("%s did not answer in time", h->what),
								 psprintf("No answer within colcrypt.kms_timeout (%d ms); %d attempt%s.",
										  colcrypt_kms_timeout, resp->attempts,
										  resp->attempts == 1 ? "" : "s"));
	else if (tls_error(rc))
		ColcryptProviderSetError(err, COLCRYPT_ERRCODE_UNREACHABLE,
								 psprintf("TLS failure talking to %s", h->what),
								 psprintf("%s%s%s", curl_easy_strerror(rc),
										  h->errbuf[0] ? ": " : "", h->errbuf));
	else
		ColcryptProviderSetError(err, COLCRYPT_ERRCODE_UNREACHABLE,
								 psprintf("could not reach %s", h->what),
								 psprintf("%s%s%s (%d attempt%s)", curl_easy_strerror(rc),
										  h->errbuf[0] ? ": " : "", h->errbuf,
										  resp->attempts, resp->attempts == 1 ? "" : "s"));
	return false;
}

/*
 * URL options: parsed with libcurl's URL API, so that what is checked is
 * what will be used.
 */
void
ColcryptHttpCheckUrl(const char *kind, const char *option, const char *url)
{
	CURLU	   *u;
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *user = NULL;
	char	   *query = NULL;
	char	   *fragment = NULL;
	const char *problem = NULL;

	if (url == NULL || url[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s provider needs \"%s\"",
						strchr("aeiou", kind[0]) ? "an" : "a", kind, option)));
	u = curl_url();
	if (u == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		problem = "it is not an absolute http or https URL";
	else if (pg_strcasecmp(scheme, "https") != 0 && pg_strcasecmp(scheme, "http") != 0)
		problem = "only http and https are supported";
	else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK)
		problem = "credentials do not belong in the URL; use the provider's options";
	else if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
			 curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK)
		problem = "the URL must not have a query or a fragment";
	else if (pg_strcasecmp(scheme, "http") == 0 &&
			 strcmp(host, "127.0.0.1") != 0 && strcmp(host, "[::1]") != 0 &&
			 pg_strcasecmp(host, "localhost") != 0)
		problem = "plain http is allowed only to a loopback address (a local agent); use https";
	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_free(query);
	curl_free(fragment);
	curl_url_cleanup(u);
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid \"%s\" for %s %s provider: %s", option,
						strchr("aeiou", kind[0]) ? "an" : "a", kind, problem)));
}

/* The Host header libcurl would send for url: host, and :port if the URL has one. */
char *
ColcryptHttpHostHeader(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	char	   *port = NULL;
	char	   *result = NULL;

	if (u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
	{
		if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK && port != NULL)
			result = psprintf("%s:%s", host, port);
		else
			result = pstrdup(host);
	}
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return result;
}

/*
 * The "retries" option of an HTTP provider: 0 to 10, default 2.  With
 * validate, a bad value is an error; otherwise it counts as the default.
 */
int
ColcryptHttpRetries(Jsonb *options, bool validate)
{
	char	   *r = ColcryptOptionText(options, "retries");
	char	   *end;
	long		v;

	if (r == NULL)
		return 2;
	v = strtol(r, &end, 10);
	if (*end == '\0' && end != r && v >= 0 && v <= 10)
		return (int) v;
	if (validate)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"retries\" must be an integer from 0 to 10")));
	return 2;
}
