/*-------------------------------------------------------------------------
 *
 * json.c
 *	  JSON for the HTTP providers: PostgreSQL's JSON parser into a flat list
 *	  of scalars by path, escape_json to build, and strict base64.
 *
 * pg_parse_json does the parsing (and reports bad input as an error code,
 * never by throwing); semantic actions here only record each scalar with
 * its path.  Before parsing, one pass over the bytes bounds the nesting
 * depth, so that a hostile body cannot drive the recursive parser deep.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/colcrypt.h"

#include "colcrypt/compat.h"
#include "colcrypt/http.h"
#include "common/base64.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"
#include "utils/memutils.h"

/* Semantic actions return an error code from 16 on, nothing before. */
#if PG_VERSION_NUM >= 160000
#define SEM_RETURN_TYPE JsonParseErrorType
#define SEM_RETURN return JSON_SUCCESS
#else
#define SEM_RETURN_TYPE void
#define SEM_RETURN return
#endif

typedef struct ParseState
{
	ColcryptJsonDoc *doc;
	StringInfoData path;
	int			depth;
	int			lens[COLCRYPT_JSON_MAX_DEPTH + 2];	/* path length per level */
	int			index[COLCRYPT_JSON_MAX_DEPTH + 2]; /* next array index per level */
	bool		too_many;
} ParseState;

static SEM_RETURN_TYPE
sem_object_start(void *arg)
{
	ParseState *st = arg;

	if (st->depth == 0)
		st->doc->root_is_object = true;
	st->depth++;
	SEM_RETURN;
}

static SEM_RETURN_TYPE
sem_struct_end(void *arg)
{
	ParseState *st = arg;

	st->depth--;
	SEM_RETURN;
}

static SEM_RETURN_TYPE
sem_array_start(void *arg)
{
	ParseState *st = arg;

	st->depth++;
	st->index[st->depth] = 0;
	SEM_RETURN;
}

static SEM_RETURN_TYPE
sem_field_start(void *arg, char *fname, bool isnull)
{
	ParseState *st = arg;

	st->lens[st->depth] = st->path.len;
	if (st->path.len > 0)
		appendStringInfoChar(&st->path, '.');
	appendStringInfoString(&st->path, fname);
	SEM_RETURN;
}

static SEM_RETURN_TYPE
sem_field_end(void *arg, char *fname, bool isnull)
{
	ParseState *st = arg;

	st->path.len = st->lens[st->depth];
	st->path.data[st->path.len] = '\0';
	SEM_RETURN;
}

static SEM_RETURN_TYPE
sem_element_start(void *arg, bool isnull)
{
	ParseState *st = arg;

	st->lens[st->depth] = st->path.len;
	appendStringInfo(&st->path, "[%d]", st->index[st->depth]++);
	SEM_RETURN;
}

static SEM_RETURN_TYPE
sem_element_end(void *arg, bool isnull)
{
	ParseState *st = arg;

	st->path.len = st->lens[st->depth];
	st->path.data[st->path.len] = '\0';
	SEM_RETURN;
}

static SEM_RETURN_TYPE
sem_scalar(void *arg, char *token, JsonTokenType type)
{
	ParseState *st = arg;
	ColcryptJsonDoc *doc = st->doc;
	ColcryptJsonItem *it;

	if (doc->nitems >= COLCRYPT_JSON_MAX_ITEMS)
	{
		st->too_many = true;
		if (token)
			ColcryptWipeFree(token, strlen(token));
		SEM_RETURN;
	}
	if (doc->nitems == doc->cap)
	{
		int			newcap = doc->cap ? doc->cap * 2 : 16;
		ColcryptJsonItem *n = palloc0(sizeof(ColcryptJsonItem) * newcap);

		if (doc->items)
		{
			memcpy(n, doc->items, sizeof(ColcryptJsonItem) * doc->nitems);
			pfree(doc->items);
		}
		doc->items = n;
		doc->cap = newcap;
	}
	it = &doc->items[doc->nitems++];
	it->path = pstrdup(st->path.data);
	it->value = token ? token : pstrdup("");
	it->valuelen = strlen(it->value);
	switch (type)
	{
		case JSON_TOKEN_STRING:
			it->kind = CJ_STRING;
			break;
		case JSON_TOKEN_NUMBER:
			it->kind = CJ_NUMBER;
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			it->kind = CJ_BOOL;
			break;
		default:
			it->kind = CJ_NULL;
			break;
	}
	SEM_RETURN;
}

/* The deepest nesting of [ and { outside strings; stops counting past limit. */
static int
nesting_depth(const char *s, size_t len, int limit)
{
	int			depth = 0;
	int			max = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"')
			in_string = true;
		else if (c == '[' || c == '{')
		{
			if (++depth > max)
				max = depth;
			if (max > limit)
				return max;
		}
		else if (c == ']' || c == '}')
			depth--;
	}
	return max;
}

bool
ColcryptJsonParse(const char *text, size_t len, ColcryptJsonDoc *doc, const char **why)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	ParseState	st;
	JsonParseErrorType rc;
	char	   *copy;

	memset(doc, 0, sizeof(*doc));
	*why = NULL;
	if (len > (size_t) MaxAllocSize / 2 || memchr(text, '\0', len) != NULL)
	{
		*why = "the body is not JSON text";
		return false;
	}
	if (nesting_depth(text, len, COLCRYPT_JSON_MAX_DEPTH) > COLCRYPT_JSON_MAX_DEPTH)
	{
		*why = "JSON nested too deeply";
		return false;
	}
	copy = pnstrdup(text, len);
	memset(&st, 0, sizeof(st));
	st.doc = doc;
	initStringInfo(&st.path);
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = sem_object_start;
	sem.object_end = sem_struct_end;
	sem.array_start = sem_array_start;
	sem.array_end = sem_struct_end;
	sem.object_field_start = sem_field_start;
	sem.object_field_end = sem_field_end;
	sem.array_element_start = sem_element_start;
	sem.array_element_end = sem_element_end;
	sem.scalar = sem_scalar;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, copy, (int) len, PG_UTF8, true);
#else
	lex = makeJsonLexContextCstringLen(copy, (int) len, PG_UTF8, true);
#endif
	rc = pg_parse_json(lex, &sem);
	ColcryptWipeFree(copy, len);
	/* The lexer's de-escaping buffer held the last string: a data key, maybe. */
	if (lex->strval != NULL && lex->strval->data != NULL)
		cc_wipe(lex->strval->data, lex->strval->maxlen);
	pfree(st.path.data);
	if (rc != JSON_SUCCESS)
	{
		ColcryptJsonFree(doc);
		*why = "the body is not valid JSON";
		return false;
	}
	if (st.too_many)
	{
		ColcryptJsonFree(doc);
		*why = "the JSON body has too many values";
		return false;
	}
	return true;
}

const ColcryptJsonItem *
ColcryptJsonGet(const ColcryptJsonDoc *doc, const char *path)
{
	for (int i = 0; i < doc->nitems; i++)
		if (strcmp(doc->items[i].path, path) == 0)
			return &doc->items[i];
	return NULL;
}

const char *
ColcryptJsonString(const ColcryptJsonDoc *doc, const char *path)
{
	const ColcryptJsonItem *it = ColcryptJsonGet(doc, path);

	return it != NULL && it->kind == CJ_STRING ? it->value : NULL;
}

void
ColcryptJsonFree(ColcryptJsonDoc *doc)
{
	for (int i = 0; i < doc->nitems; i++)
	{
		ColcryptWipeFree(doc->items[i].value, doc->items[i].valuelen);
		pfree(doc->items[i].path);
	}
	if (doc->items)
		pfree(doc->items);
	memset(doc, 0, sizeof(*doc));
}

void
ColcryptJsonAppendKey(StringInfo buf, bool first, const char *key)
{
	if (!first)
		appendStringInfoChar(buf, ',');
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
}

void
ColcryptJsonAppendField(StringInfo buf, bool first, const char *key, const char *value)
{
	ColcryptJsonAppendKey(buf, first, key);
	escape_json(buf, value);
}

char *
ColcryptBase64Encode(const uint8 *data, size_t len)
{
	int			cap = pg_b64_enc_len((int) len) + 1;
	char	   *out = palloc(cap);
	int			n = pg_b64_encode(COLCRYPT_B64_SRC(data), (int) len, COLCRYPT_B64_DST(out), cap);

	if (n < 0)
		elog(ERROR, "base64 encoding failed");
	out[n] = '\0';
	return out;
}

int
ColcryptBase64Decode(const char *s, size_t slen, uint8 *out, size_t cap)
{
	char	   *tmp;
	int			n;
	bool		canonical;

	if (slen == 0 || slen % 4 != 0 || slen > (size_t) 1024 * 1024 ||
		(size_t) pg_b64_dec_len((int) slen) > cap + 2)
		return -1;
	tmp = palloc(pg_b64_dec_len((int) slen) + 1);
	n = pg_b64_decode(COLCRYPT_B64_SRC(s), (int) slen, COLCRYPT_B64_DST(tmp),
					  pg_b64_dec_len((int) slen));
	if (n < 0 || (size_t) n > cap)
	{
		ColcryptWipeFree(tmp, pg_b64_dec_len((int) slen));
		return -1;
	}

	/* Canonical only: the decoded bytes must encode back to the same text. */
	{
		char	   *again = ColcryptBase64Encode((uint8 *) tmp, n);
		size_t		againlen = strlen(again);

		canonical = againlen == slen && memcmp(again, s, slen) == 0;
		/* Its own length: shorter than s when s had surplus "=" or data after it. */
		ColcryptWipeFree(again, againlen);
	}
	if (canonical)
		memcpy(out, tmp, n);
	ColcryptWipeFree(tmp, pg_b64_dec_len((int) slen));
	return canonical ? n : -1;
}

void
ColcryptWipeFree(char *s, size_t len)
{
	if (s == NULL)
		return;
	cc_wipe(s, len);
	pfree(s);
}
