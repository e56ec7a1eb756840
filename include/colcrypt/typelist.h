/*-------------------------------------------------------------------------
 *
 * typelist.h
 *	  The one description of colcrypt's encrypted types.
 *
 * Each X(...) line gives: the type's short name (colcrypt.encrypted_<name>),
 * its envelope type code, the plain type's OID macro, the plain type's SQL
 * name, whether the type is collatable, and its type category (that of the
 * plain type, so operator resolution prefers the plain type's operators the
 * way it does for varchar and text).  The C functions of every type
 * are instantiated from this list (enctype.c), and src/sql/gen.sh reads
 * the same lines to generate each type's SQL objects: keep one X(...) per
 * line.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COLCRYPT_TYPELIST_H
#define COLCRYPT_TYPELIST_H

#define COLCRYPT_TYPES(X) \
	X(text, CC_TYPE_TEXT, TEXTOID, text, true, S) \
	X(bytea, CC_TYPE_BYTEA, BYTEAOID, bytea, false, U) \

#endif							/* COLCRYPT_TYPELIST_H */
