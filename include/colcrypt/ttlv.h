/*-------------------------------------------------------------------------
 *
 * ttlv.h
 *	  KMIP's Tag-Type-Length-Value encoding: an encoder into a growable
 *	  buffer and a strict, bounds-checked decoder into a flat item table.
 *
 * Plain C without PostgreSQL headers, so that the unit tests and fuzz
 * harnesses in test/ build it alone.  Only src/providers/kmip.c uses it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_TTLV_H
#define COLCRYPT_TTLV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Item types (KMIP 1.x section 9.1.1.2). */
enum
{
	TTLV_STRUCTURE = 0x01,
	TTLV_INTEGER = 0x02,
	TTLV_LONG = 0x03,
	TTLV_BIGINT = 0x04,
	TTLV_ENUM = 0x05,
	TTLV_BOOL = 0x06,
	TTLV_TEXT = 0x07,
	TTLV_BYTES = 0x08,
	TTLV_DATETIME = 0x09,
	TTLV_INTERVAL = 0x0A
};

/* The largest message either side may send: KMIP keys and wrapped keys are small. */
#define TTLV_MAX_MESSAGE	(64 * 1024)
#define TTLV_MAX_DEPTH		16
#define TTLV_MAX_ITEMS		1024
#define TTLV_HEADER_LEN		8

/* ---- Encoding ---- */

typedef struct ttlv_buf
{
	uint8_t    *data;
	size_t		len;
	size_t		cap;
	bool		failed;			/* out of memory or over TTLV_MAX_MESSAGE */
} ttlv_buf;

extern void ttlv_buf_init(ttlv_buf *b);
extern void ttlv_buf_free(ttlv_buf *b);	/* wipes before freeing */

/* Open a structure; returns a mark to pass to ttlv_end. */
extern size_t ttlv_begin(ttlv_buf *b, uint32_t tag);
extern void ttlv_end(ttlv_buf *b, size_t mark);

extern void ttlv_put_int(ttlv_buf *b, uint32_t tag, int32_t v);
extern void ttlv_put_long(ttlv_buf *b, uint32_t tag, int64_t v);
extern void ttlv_put_enum(ttlv_buf *b, uint32_t tag, uint32_t v);
extern void ttlv_put_bool(ttlv_buf *b, uint32_t tag, bool v);
extern void ttlv_put_text(ttlv_buf *b, uint32_t tag, const char *s, size_t len);
extern void ttlv_put_bytes(ttlv_buf *b, uint32_t tag, const uint8_t *p, size_t len);
extern void ttlv_put_datetime(ttlv_buf *b, uint32_t tag, int64_t unix_seconds);
/* Append the items encoded in other (such as a prepared payload). */
extern void ttlv_put_raw(ttlv_buf *b, const ttlv_buf *other);

/* ---- Decoding ---- */

typedef struct ttlv_item
{
	uint32_t	tag;
	uint8_t		type;
	uint32_t	len;			/* value length without padding */
	const uint8_t *value;		/* into the message */
	int			parent;			/* index, -1 for the root */
	int			first_child;	/* index, -1 if none */
	int			next;			/* next sibling, -1 if none */
} ttlv_item;

typedef struct ttlv_doc
{
	ttlv_item  *items;
	int			nitems;
	int			cap;
} ttlv_doc;

/*
 * The total length of a message whose first TTLV_HEADER_LEN bytes are hdr,
 * or 0 when the header cannot start a valid message (not a structure, or
 * longer than max).
 */
extern size_t ttlv_message_length(const uint8_t hdr[TTLV_HEADER_LEN], size_t max);

/*
 * Parse exactly one item (normally the message structure) filling all of
 * msg[0..len).  Strict: every length must match its type, padding bytes
 * must be zero, structures must exactly contain their items, nesting stops
 * at TTLV_MAX_DEPTH and the table at doc->cap items.  Returns false with a
 * static reason in *why.  Never reads outside msg.
 */
extern bool ttlv_parse(const uint8_t *msg, size_t len, ttlv_doc *doc, const char **why);

/* The first child of parent (an index; -1 for the root item list) with tag, or -1. */
extern int	ttlv_child(const ttlv_doc *doc, int parent, uint32_t tag);
/* The next sibling after item with the same tag, or -1. */
extern int	ttlv_next_same(const ttlv_doc *doc, int item);

/* Typed getters: false when the item is missing (-1) or of another type. */
extern bool ttlv_get_int(const ttlv_doc *doc, int item, int32_t *v);
extern bool ttlv_get_enum(const ttlv_doc *doc, int item, uint32_t *v);
extern bool ttlv_get_long(const ttlv_doc *doc, int item, int64_t *v);
extern bool ttlv_get_bool(const ttlv_doc *doc, int item, bool *v);
extern bool ttlv_get_bytes(const ttlv_doc *doc, int item, const uint8_t **p, size_t *len);
extern bool ttlv_get_text(const ttlv_doc *doc, int item, const char **p, size_t *len);

#endif							/* COLCRYPT_TTLV_H */
