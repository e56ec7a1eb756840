/*-------------------------------------------------------------------------
 *
 * http_aws.c
 *	  For fuzz_http: src/providers/awskms.c included whole, and a handle
 *	  made as aws_open would make it with credentials in the options.
 *
 *-------------------------------------------------------------------------
 */
#include "../../src/providers/awskms.c"

#include "fuzz_http.h"

void *
fz_aws_handle(uint8_t flags)
{
	AwsHandle  *h = palloc0(sizeof(AwsHandle));
	ColcryptProviderError err = {0};

	strlcpy(h->name, "fz", sizeof(h->name));
	h->region = pstrdup("us-east-1");
	h->endpoint = pstrdup("https://kms.test");
	h->host = pstrdup("kms.test");
	h->kms_data_keys = (flags & FZ_FLAG_A) != 0;
	h->source = CRED_OPTIONS;
	set_credentials(h, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
					(flags & FZ_FLAG_B) ? "session-token" : NULL);
	h->http = ColcryptHttpCreate("AWS KMS at https://kms.test", NULL, 2, &err);
	if (h->http == NULL)
		abort();
	return h;
}
