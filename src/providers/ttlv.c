/*-------------------------------------------------------------------------
 *
 * ttlv.c
 *	  KMIP TTLV encoding and strict decoding (see ttlv.h).
 *
 * Every item is an 8-byte header (3-byte tag, 1-byte type, 4-byte length,
 * big-endian) and a value padded with zeros to a multiple of 8 bytes.  The
 * decoder checks each length against what is left of the enclosing item
 * before touching the value, so truncated, oversized or lying messages are
 * refused without a read outside the buffer.
 *
 *-------------------------------------------------------------------------
 */
#include "colcrypt/ttlv.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* ---- Encoding ---- */

void
ttlv_buf_init(ttlv_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->failed = false;
}

void
ttlv_buf_free(ttlv_buf *b)
{
	if (b->data != NULL)
	{
		OPENSSL_cleanse(b->data, b->cap);
		free(b->data);
	}
	ttlv_buf_init(b);
}

/* Room for n more bytes; false (and failed set) if not possible. */
static bool
reserve(ttlv_buf *b, size_t n)
{
	size_t		cap;
	uint8_t    *p;

	if (b->failed)
		return false;
	if (n > TTLV_MAX_MESSAGE || b->len + n > TTLV_MAX_MESSAGE)
	{
		b->failed = true;
		return false;
	}
	if (b->len + n <= b->cap)
		return true;
	cap = b->cap ? b->cap : 512;
	while (cap < b->len + n)
		cap *= 2;
	/* Grow by copying, so that the old bytes can be wiped (they may be keys). */
	p = malloc(cap);
	if (p == NULL)
	{
		b->failed = true;
		return false;
	}
	if (b->data != NULL)
	{
		memcpy(p, b->data, b->len);
		OPENSSL_cleanse(b->data, b->cap);
		free(b->data);
	}
	b->data = p;
	b->cap = cap;
	return true;
}

static void
put_header(uint8_t *p, uint32_t tag, uint8_t type, uint32_t len)
{
	p[0] = (tag >> 16) & 0xff;
	p[1] = (tag >> 8) & 0xff;
	p[2] = tag & 0xff;
	p[3] = type;
	p[4] = (len >> 24) & 0xff;
	p[5] = (len >> 16) & 0xff;
	p[6] = (len >> 8) & 0xff;
	p[7] = len & 0xff;
}

static void
put_item(ttlv_buf *b, uint32_t tag, uint8_t type, const uint8_t *value, size_t len)
{
	size_t		padded = (len + 7) & ~(size_t) 7;

	if (len > TTLV_MAX_MESSAGE || !reserve(b, TTLV_HEADER_LEN + padded))
	{
		b->failed = true;
		return;
	}
	put_header(b->data + b->len, tag, type, (uint32_t) len);
	if (len > 0)
		memcpy(b->data + b->len + TTLV_HEADER_LEN, value, len);
	memset(b->data + b->len + TTLV_HEADER_LEN + len, 0, padded - len);
	b->len += TTLV_HEADER_LEN + padded;
}

static void
be(uint8_t *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--)
	{
		p[i] = v & 0xff;
		v >>= 8;
	}
}

size_t
ttlv_begin(ttlv_buf *b, uint32_t tag)
{
	size_t		mark = b->len;

	if (reserve(b, TTLV_HEADER_LEN))
	{
		put_header(b->data + b->len, tag, TTLV_STRUCTURE, 0);
		b->len += TTLV_HEADER_LEN;
	}
	return mark;
}

void
ttlv_end(ttlv_buf *b, size_t mark)
{
	if (b->failed)
		return;
	be(b->data + mark + 4, b->len - mark - TTLV_HEADER_LEN, 4);
}

void
ttlv_put_int(ttlv_buf *b, uint32_t tag, int32_t v)
{
	uint8_t		p[4];

	be(p, (uint32_t) v, 4);
	put_item(b, tag, TTLV_INTEGER, p, 4);
}

void
ttlv_put_long(ttlv_buf *b, uint32_t tag, int64_t v)
{
	uint8_t		p[8];

	be(p, (uint64_t) v, 8);
	put_item(b, tag, TTLV_LONG, p, 8);
}

void
ttlv_put_enum(ttlv_buf *b, uint32_t tag, uint32_t v)
{
	uint8_t		p[4];

	be(p, v, 4);
	put_item(b, tag, TTLV_ENUM, p, 4);
}

void
ttlv_put_bool(ttlv_buf *b, uint32_t tag, bool v)
{
	uint8_t		p[8];

	be(p, v ? 1 : 0, 8);
	put_item(b, tag, TTLV_BOOL, p, 8);
}

void
ttlv_put_text(ttlv_buf *b, uint32_t tag, const char *s, size_t len)
{
	put_item(b, tag, TTLV_TEXT, (const uint8_t *) s, len);
}

void
ttlv_put_bytes(ttlv_buf *b, uint32_t tag, const uint8_t *p, size_t len)
{
	put_item(b, tag, TTLV_BYTES, p, len);
}

void
ttlv_put_datetime(ttlv_buf *b, uint32_t tag, int64_t unix_seconds)
{
	uint8_t		p[8];

	be(p, (uint64_t) unix_seconds, 8);
	put_item(b, tag, TTLV_DATETIME, p, 8);
}

void
ttlv_put_raw(ttlv_buf *b, const ttlv_buf *other)
{
	if (other->failed)
	{
		b->failed = true;
		return;
	}
	if (other->len == 0 || !reserve(b, other->len))
		return;
	memcpy(b->data + b->len, other->data, other->len);
	b->len += other->len;
}

/* ---- Decoding ---- */

static uint64_t
get_be(const uint8_t *p, int n)
{
	uint64_t	v = 0;

	for (int i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

static bool
valid_tag(uint32_t tag)
{
	/* KMIP tags are 0x42xxxx; 0x54xxxx are for extensions. */
	return (tag >> 16) == 0x42 || (tag >> 16) == 0x54;
}

size_t
ttlv_message_length(const uint8_t hdr[TTLV_HEADER_LEN], size_t max)
{
	uint64_t	len = get_be(hdr + 4, 4);

	if (!valid_tag((uint32_t) get_be(hdr, 3)) || hdr[3] != TTLV_STRUCTURE ||
		len % 8 != 0 || len + TTLV_HEADER_LEN > max)
		return 0;
	return (size_t) len + TTLV_HEADER_LEN;
}

static bool
zeros(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/*
 * Parse the items in msg[off, end) as children of parent.  Each item's
 * header is read only after checking 8 bytes remain, its value only after
 * checking its padded length fits what remains.
 */
static bool
parse_items(const uint8_t *msg, size_t off, size_t end, int parent, int depth,
			ttlv_doc *doc, const char **why)
{
	int			prev = -1;

	if (depth > TTLV_MAX_DEPTH)
	{
		*why = "structures nested too deeply";
		return false;
	}
	while (off < end)
	{
		uint32_t	tag;
		uint8_t		type;
		uint64_t	len;
		uint64_t	padded;
		ttlv_item  *it;
		int			idx;
		const uint8_t *v;

		if (end - off < TTLV_HEADER_LEN)
		{
			*why = "truncated item header";
			return false;
		}
		tag = (uint32_t) get_be(msg + off, 3);
		type = msg[off + 3];
		len = get_be(msg + off + 4, 4);
		padded = (len + 7) & ~(uint64_t) 7;
		if (!valid_tag(tag))
		{
			*why = "tag outside the KMIP ranges";
			return false;
		}
		if (padded > end - off - TTLV_HEADER_LEN)
		{
			*why = "item longer than what contains it";
			return false;
		}
		v = msg + off + TTLV_HEADER_LEN;
		switch (type)
		{
			case TTLV_INTEGER:
			case TTLV_ENUM:
			case TTLV_INTERVAL:
				if (len != 4 || !zeros(v + 4, 4))
				{
					*why = "bad length or padding of a 4-byte item";
					return false;
				}
				break;
			case TTLV_LONG:
			case TTLV_DATETIME:
				if (len != 8)
				{
					*why = "bad length of an 8-byte item";
					return false;
				}
				break;
			case TTLV_BOOL:
				if (len != 8 || get_be(v, 8) > 1)
				{
					*why = "bad boolean";
					return false;
				}
				break;
			case TTLV_BIGINT:
				if (len == 0 || len % 8 != 0)
				{
					*why = "bad length of a big integer";
					return false;
				}
				break;
			case TTLV_TEXT:
			case TTLV_BYTES:
				if (!zeros(v + len, padded - len))
				{
					*why = "non-zero padding";
					return false;
				}
				break;
			case TTLV_STRUCTURE:
				if (len % 8 != 0)
				{
					*why = "structure length not a multiple of 8";
					return false;
				}
				break;
			default:
				*why = "unknown item type";
				return false;
		}
		if (doc->nitems >= doc->cap)
		{
			*why = "too many items";
			return false;
		}
		idx = doc->nitems++;
		it = &doc->items[idx];
		it->tag = tag;
		it->type = type;
		it->len = (uint32_t) len;
		it->value = v;
		it->parent = parent;
		it->first_child = -1;
		it->next = -1;
		if (prev >= 0)
			doc->items[prev].next = idx;
		else if (parent >= 0)
			doc->items[parent].first_child = idx;
		prev = idx;
		if (type == TTLV_STRUCTURE &&
			!parse_items(msg, off + TTLV_HEADER_LEN, off + TTLV_HEADER_LEN + (size_t) len,
						 idx, depth + 1, doc, why))
			return false;
		off += TTLV_HEADER_LEN + (size_t) padded;
	}
	return true;
}

bool
ttlv_parse(const uint8_t *msg, size_t len, ttlv_doc *doc, const char **why)
{
	*why = NULL;
	doc->nitems = 0;
	if (len < TTLV_HEADER_LEN || len > TTLV_MAX_MESSAGE || len % 8 != 0)
	{
		*why = len < TTLV_HEADER_LEN ? "message too short" :
			len > TTLV_MAX_MESSAGE ? "message too long" : "message length not a multiple of 8";
		return false;
	}
	if (!parse_items(msg, 0, len, -1, 0, doc, why))
		return false;
	if (doc->nitems == 0 || doc->items[0].next != -1)
	{
		*why = "not exactly one top-level item";
		return false;
	}
	return true;
}

int
ttlv_child(const ttlv_doc *doc, int parent, uint32_t tag)
{
	int			i;

	if (parent < 0)
		i = doc->nitems > 0 ? 0 : -1;
	else if (parent >= doc->nitems || doc->items[parent].type != TTLV_STRUCTURE)
		return -1;
	else
		i = doc->items[parent].first_child;
	for (; i >= 0; i = doc->items[i].next)
		if (doc->items[i].tag == tag)
			return i;
	return -1;
}

int
ttlv_next_same(const ttlv_doc *doc, int item)
{
	uint32_t	tag;

	if (item < 0 || item >= doc->nitems)
		return -1;
	tag = doc->items[item].tag;
	for (int i = doc->items[item].next; i >= 0; i = doc->items[i].next)
		if (doc->items[i].tag == tag)
			return i;
	return -1;
}

static const ttlv_item *
typed(const ttlv_doc *doc, int item, uint8_t type)
{
	if (item < 0 || item >= doc->nitems || doc->items[item].type != type)
		return NULL;
	return &doc->items[item];
}

bool
ttlv_get_int(const ttlv_doc *doc, int item, int32_t *v)
{
	const ttlv_item *it = typed(doc, item, TTLV_INTEGER);

	if (it == NULL)
		return false;
	*v = (int32_t) (uint32_t) get_be(it->value, 4);
	return true;
}

bool
ttlv_get_enum(const ttlv_doc *doc, int item, uint32_t *v)
{
	const ttlv_item *it = typed(doc, item, TTLV_ENUM);

	if (it == NULL)
		return false;
	*v = (uint32_t) get_be(it->value, 4);
	return true;
}

bool
ttlv_get_long(const ttlv_doc *doc, int item, int64_t *v)
{
	const ttlv_item *it = typed(doc, item, TTLV_LONG);

	if (it == NULL)
		return false;
	*v = (int64_t) get_be(it->value, 8);
	return true;
}

bool
ttlv_get_bool(const ttlv_doc *doc, int item, bool *v)
{
	const ttlv_item *it = typed(doc, item, TTLV_BOOL);

	if (it == NULL)
		return false;
	*v = get_be(it->value, 8) != 0;
	return true;
}

bool
ttlv_get_bytes(const ttlv_doc *doc, int item, const uint8_t **p, size_t *len)
{
	const ttlv_item *it = typed(doc, item, TTLV_BYTES);

	if (it == NULL)
		return false;
	*p = it->value;
	*len = it->len;
	return true;
}

bool
ttlv_get_text(const ttlv_doc *doc, int item, const char **p, size_t *len)
{
	const ttlv_item *it = typed(doc, item, TTLV_TEXT);

	if (it == NULL)
		return false;
	*p = (const char *) it->value;
	*len = it->len;
	return true;
}
