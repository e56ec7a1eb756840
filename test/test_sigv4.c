/*
 * test_sigv4: colcrypt's AWS Signature Version 4 signer against AWS's
 * published test suite (aws-sig-v4-test-suite: every case's canonical
 * request, string to sign and Authorization header must match byte for
 * byte), plus the properties the suite does not state.
 *
 *   test/test_sigv4 <suite dir>
 *
 * Each case directory holds NAME.req (the request), NAME.creq, NAME.sts and
 * NAME.authz.  A header continuation line (obsolete line folding) is read
 * as another value of the same header, which the signer joins with ','.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "colcrypt/sigv4.h"

#define SUITE_KEY_ID	"AKIDEXAMPLE"
#define SUITE_SECRET	"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

static int	failures = 0;
static int	cases = 0;
static int	errata = 0;

#define CHECK(cond, ...) \
	do { if (!(cond)) { failures++; printf("FAIL: "); printf(__VA_ARGS__); printf("\n"); } } while (0)

static char *
slurp(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf;
	long		n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t) n + 1);
	if (fread(buf, 1, (size_t) n, f) != (size_t) n)
	{
		fclose(f);
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t) n;
	return buf;
}

typedef struct parsed
{
	char	   *method;
	char	   *path;
	char	   *query;
	cc_sigv4_header headers[CC_SIGV4_MAX_HEADERS];
	size_t		nheaders;
	const char *date;
	char	   *body;
	size_t		bodylen;
} parsed;

/* Parse an HTTP request as the suite writes it; modifies text in place. */
static bool
parse_req(char *text, parsed *r)
{
	char	   *line = text;
	char	   *nl = strchr(line, '\n');
	char	   *sp;
	char	   *http;
	const char *last_name = NULL;

	memset(r, 0, sizeof(*r));
	if (nl == NULL)
		nl = line + strlen(line);
	*nl = '\0';
	sp = strchr(line, ' ');
	http = strstr(line, " HTTP/");
	if (sp == NULL || http == NULL || http < sp)
		return false;
	*sp = '\0';
	*http = '\0';
	r->method = line;
	r->path = sp + 1;
	if ((r->query = strchr(r->path, '?')) != NULL)
		*r->query++ = '\0';
	line = nl + 1;
	while (*line && *line != '\n')
	{
		char	   *colon;

		nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (r->nheaders == CC_SIGV4_MAX_HEADERS)
			return false;
		if (line[0] == ' ' || line[0] == '\t')
		{
			if (last_name == NULL)
				return false;
			r->headers[r->nheaders].name = last_name;
			r->headers[r->nheaders].value = line;
		}
		else
		{
			if ((colon = strchr(line, ':')) == NULL)
				return false;
			*colon = '\0';
			r->headers[r->nheaders].name = last_name = line;
			r->headers[r->nheaders].value = colon + 1;
			if (strcasecmp(line, "X-Amz-Date") == 0)
				r->date = colon + 1;
		}
		r->nheaders++;
		if (nl == NULL)
		{
			line = line + strlen(line);
			break;
		}
		line = nl + 1;
	}
	if (*line == '\n')
	{
		r->body = line + 1;
		r->bodylen = strlen(r->body);
	}
	return r->date != NULL;
}

static void
compare(const char *what, const char *casename, const char *got, const char *dir, const char *ext)
{
	char		path[4096];
	char	   *want;

	snprintf(path, sizeof(path), "%s/%s.%s", dir, casename, ext);
	want = slurp(path, NULL);
	CHECK(want != NULL, "%s: cannot read %s", casename, path);
	if (want == NULL)
		return;
	CHECK(strcmp(got, want) == 0, "%s: %s differs\n--- got\n%s\n--- want\n%s", casename, what, got, want);
	free(want);
}

static void
run_case(const char *dir, const char *name)
{
	char		path[4096];
	char	   *text;
	parsed		r;
	cc_sigv4_request req;
	cc_sigv4_result *res = malloc(sizeof(cc_sigv4_result));
	const char *why;

	snprintf(path, sizeof(path), "%s/%s.req", dir, name);
	text = slurp(path, NULL);
	CHECK(text != NULL && parse_req(text, &r), "%s: cannot parse %s", name, path);
	if (text == NULL)
	{
		free(res);
		return;
	}
	cases++;
	req = (cc_sigv4_request) {
		.method = r.method, .path = r.path, .query = r.query,
		.headers = r.headers, .nheaders = r.nheaders,
		.body = (const uint8_t *) r.body, .bodylen = r.bodylen,
		.amz_date = r.date, .region = "us-east-1", .service = "service",
		.access_key_id = SUITE_KEY_ID, .secret_access_key = SUITE_SECRET,
	};
	why = cc_sigv4_sign(&req, res);
	CHECK(why == NULL, "%s: signer refused: %s", name, why ? why : "");
	if (why == NULL)
		compare("canonical request", name, res->canonical_request, dir, "creq");

	/*
	 * The string to sign and the signature: sign exactly the headers the
	 * expected Authorization names.  That is every header of the request in
	 * all cases but the two post-x-www-form-urlencoded ones, whose .creq
	 * includes Content-Length while their .sts, .authz and .sreq were made
	 * without it (a known inconsistency of the published suite).  The
	 * second of them has one more erratum: its .sts and the signature in
	 * its .authz were made with Content-Type "...; charset=utf8" (no dash)
	 * and without Content-Length, although its .req, .creq, .sreq and the
	 * SignedHeaders of its .authz say otherwise; the test signs that
	 * request, so the published bytes are still matched exactly.
	 */
	{
		char		apath[4096];
		char	   *authz;
		char	   *sh;
		char	   *want_sig;
		cc_sigv4_header subset[CC_SIGV4_MAX_HEADERS];
		size_t		nsub = 0;

		snprintf(apath, sizeof(apath), "%s/%s.authz", dir, name);
		authz = slurp(apath, NULL);
		sh = authz ? strstr(authz, "SignedHeaders=") : NULL;
		want_sig = authz ? strstr(authz, "Signature=") : NULL;
		CHECK(sh != NULL, "%s: no SignedHeaders in %s", name, apath);
		if (sh != NULL)
		{
			char	   *end;

			sh += strlen("SignedHeaders=");
			end = strchr(sh, ',');
			if (end)
				*end = '\0';
			for (size_t i = 0; i < r.nheaders; i++)
			{
				char		lower[128];
				size_t		len = strlen(r.headers[i].name);
				const char *p = sh;
				bool		found = false;

				for (size_t j = 0; j <= len && j < sizeof(lower); j++)
					lower[j] = (char) ((r.headers[i].name[j] >= 'A' && r.headers[i].name[j] <= 'Z')
									   ? r.headers[i].name[j] + 32 : r.headers[i].name[j]);
				while (p && *p)
				{
					const char *semi = strchr(p, ';');
					size_t		n = semi ? (size_t) (semi - p) : strlen(p);

					if (n == len && strncmp(p, lower, n) == 0)
						found = true;
					p = semi ? semi + 1 : NULL;
				}
				if (strcmp(name, "post-x-www-form-urlencoded-parameters") == 0)
				{
					if (strcmp(lower, "content-length") == 0)
						found = false;
					else if (strcmp(lower, "content-type") == 0)
					{
						subset[nsub].name = r.headers[i].name;
						subset[nsub++].value = "application/x-www-form-urlencoded; charset=utf8";
						errata++;
						continue;
					}
				}
				if (found)
					subset[nsub++] = r.headers[i];
			}
			req.headers = subset;
			req.nheaders = nsub;
			why = cc_sigv4_sign(&req, res);
			CHECK(why == NULL, "%s: signer refused: %s", name, why ? why : "");
			if (why == NULL && strcmp(name, "post-x-www-form-urlencoded-parameters") == 0)
			{
				/* The erratum signs other headers: check the signature only. */
				compare("string to sign", name, res->string_to_sign, dir, "sts");
				CHECK(want_sig && strstr(res->authorization, want_sig) != NULL,
					  "%s: signature differs", name);
			}
			else if (why == NULL)
			{
				compare("string to sign", name, res->string_to_sign, dir, "sts");
				compare("Authorization", name, res->authorization, dir, "authz");
			}
		}
		free(authz);
	}
	free(text);
	free(res);
}

/* Every directory holding <dirname>.req is a case; others are walked. */
static void
walk(const char *dir)
{
	DIR		   *d = opendir(dir);
	struct dirent *e;
	char	  **names = NULL;
	int			n = 0;
	const char *base = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
	char		path[4096];
	struct stat st;

	if (d == NULL)
	{
		CHECK(false, "cannot open %s", dir);
		return;
	}
	snprintf(path, sizeof(path), "%s/%s.req", dir, base);
	if (stat(path, &st) == 0)
		run_case(dir, base);
	while ((e = readdir(d)) != NULL)
	{
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		{
			names = realloc(names, sizeof(char *) * (size_t) (n + 1));
			names[n++] = strdup(path);
		}
	}
	closedir(d);
	for (int i = 0; i < n; i++)
	{
		walk(names[i]);
		free(names[i]);
	}
	free(names);
}

/* Properties: what the signature must and must not depend on. */
static void
properties(void)
{
	cc_sigv4_header h1[] = {
		{"Host", "kms.us-east-1.amazonaws.com"},
		{"X-Amz-Date", "20261123T101500Z"},
		{"X-Amz-Target", "TrentService.Encrypt"},
		{"Content-Type", "application/x-amz-json-1.1"},
	};
	cc_sigv4_header h2[] = {h1[3], h1[1], h1[0], h1[2]};
	const char *body = "{\"KeyId\":\"alias/x\",\"Plaintext\":\"AAAA\"}";
	cc_sigv4_request req = {
		.method = "POST", .path = "/", .query = NULL, .headers = h1, .nheaders = 4,
		.body = (const uint8_t *) body, .bodylen = strlen(body),
		.amz_date = "20261123T101500Z", .region = "eu-west-1", .service = "kms",
		.access_key_id = "AKIDCOLCRYPT", .secret_access_key = "secret",
	};
	cc_sigv4_result *a = malloc(sizeof(*a));
	cc_sigv4_result *b = malloc(sizeof(*b));

	CHECK(cc_sigv4_sign(&req, a) == NULL, "properties: sign");
	req.headers = h2;
	CHECK(cc_sigv4_sign(&req, b) == NULL && strcmp(a->authorization, b->authorization) == 0,
		  "header order must not change the signature");
	CHECK(strstr(a->authorization, "SignedHeaders=content-type;host;x-amz-date;x-amz-target,") != NULL,
		  "every header is signed, sorted: %s", a->authorization);
	req.bodylen--;
	CHECK(cc_sigv4_sign(&req, b) == NULL && strcmp(a->authorization, b->authorization) != 0,
		  "the body must change the signature");
	req.bodylen++;
	req.secret_access_key = "secreT";
	CHECK(cc_sigv4_sign(&req, b) == NULL && strcmp(a->authorization, b->authorization) != 0,
		  "the secret must change the signature");
	req.secret_access_key = "secret";
	req.region = "eu-west-2";
	CHECK(cc_sigv4_sign(&req, b) == NULL && strcmp(a->authorization, b->authorization) != 0,
		  "the region must change the signature");
	req.region = "eu-west-1";
	CHECK(strstr(a->authorization, "secret") == NULL && strstr(a->canonical_request, "secret") == NULL,
		  "the secret appears in no output");
	req.amz_date = "2026-11-23T10:15:00Z";
	CHECK(cc_sigv4_sign(&req, b) != NULL, "a malformed date is refused");
	req.amz_date = "20261123T101500Z";
	h1[2].value = "TrentService.Encrypt\nX-Evil: 1";
	req.headers = h1;
	CHECK(cc_sigv4_sign(&req, b) != NULL, "a header value with a newline is refused");
	free(a);
	free(b);
}

int
main(int argc, char **argv)
{
	if (argc != 2)
	{
		fprintf(stderr, "usage: %s <aws-sigv4 suite dir>\n", argv[0]);
		return 2;
	}
	walk(argv[1]);
	properties();
	printf("SigV4 suite: %d cases (canonical request, string to sign, Authorization), "
		   "%d with the published erratum, %d failures\n", cases, errata, failures);
	if (cases < 31)
	{
		printf("FAIL: expected the 31 cases of aws-sig-v4-test-suite, found %d\n", cases);
		return 1;
	}
	return failures == 0 ? 0 : 1;
}
