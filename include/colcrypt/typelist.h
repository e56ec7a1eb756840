/*-------------------------------------------------------------------------
 *
 * typelist.h
 *	  The one description of colcrypt's encrypted types.
 *
 * Each X(...) line gives: the type's short name (colcrypt.encrypted_<name>),
 * its envelope type code, the plain type's OID macro, the plain type's SQL
 * name, whether the type is collatable, its type category (that of the
 * plain type, so operator resolution prefers the plain type's operators the
 * way it does for varchar and text), and whether equal values of the plain
 * type always have equal bytes (true for text under a deterministic
 * collation, bytea, integers, dates, timestamps; false for numeric, where
 * 1.0 = 1.00, float8, where -0 = 0, and jsonb): only then may equality of
 * deterministic ciphertexts be decided on their bytes alone.
 *
 * The C functions of every type are instantiated from this list
 * (enctype.c, compare.c), and src/sql/gen.sh reads the same lines to
 * generate each type's SQL objects: keep one X(...) per line.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_TYPELIST_H
#define COLCRYPT_TYPELIST_H

#define COLCRYPT_TYPES(X) \
	X(text, CC_TYPE_TEXT, TEXTOID, text, true, S, true) \
	X(bytea, CC_TYPE_BYTEA, BYTEAOID, bytea, false, U, true) \
	X(int4, CC_TYPE_INT4, INT4OID, int4, false, N, true) \
	X(int8, CC_TYPE_INT8, INT8OID, int8, false, N, true) \
	X(numeric, CC_TYPE_NUMERIC, NUMERICOID, numeric, false, N, false) \
	X(float8, CC_TYPE_FLOAT8, FLOAT8OID, float8, false, N, false) \
	X(date, CC_TYPE_DATE, DATEOID, date, false, D, true) \
	X(timestamptz, CC_TYPE_TIMESTAMPTZ, TIMESTAMPTZOID, timestamptz, false, D, true) \
	X(jsonb, CC_TYPE_JSONB, JSONBOID, jsonb, false, U, false) \

#endif							/* COLCRYPT_TYPELIST_H */
