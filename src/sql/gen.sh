#!/bin/sh
# Builds the install script: src/sql/catalog.sql, then for each X(...) line
# of include/colcrypt/typelist.h the type (type.sql.in), its six comparison
# operators in three signatures each (operator.sql.in, once per line of the
# table below), against the plain type's cross-type partners
# (crossop.sql.in) and its operator classes (opclass.sql.in), then tail.sql.
# Usage: gen.sh <source root>
set -eu
root=${1:-.}
sql=$root/src/sql

# op  symbol  commutator  negator  restrict     join
OPERATORS='eq = = <> eqsel eqjoinsel
ne <> <> = neqsel neqjoinsel
lt < > >= scalarltsel scalarltjoinsel
le <= >= > scalarlesel scalarlejoinsel
gt > < <= scalargtsel scalargtjoinsel
ge >= <= < scalargesel scalargejoinsel'

# Types PostgreSQL casts to each plain type on assignment: values of those
# types go into an encrypted column of it the same way (an integer literal
# into encrypted_numeric, a varchar into encrypted_text).
assignment_sources() {
    case $1 in
        text) echo varchar bpchar name ;;
        int4) echo int2 int8 numeric float4 float8 ;;
        int8) echo int2 int4 numeric float4 float8 ;;
        numeric) echo int2 int4 int8 float4 float8 ;;
        float8) echo int2 int4 int8 numeric float4 ;;
        date) echo timestamp timestamptz ;;
        timestamptz) echo date timestamp ;;
        jsonb) echo json ;;
    esac
}

# Types the plain type has built-in comparison operators with, to which it
# is not cast implicitly (int4 = int2, timestamptz = date): without an
# operator of its own, "col = x" for x of such a type would find two
# candidates, ours with x cast to the plain type and the built-in one with
# the column cast, and fail as "operator is not unique" (42725).  Each is an
# inlinable SQL function that casts x to the plain type, so the planner sees
# "col = x::plain" (and det_ops indexes serve it).
cross_sources() {
    case $1 in
        int4) echo int2 int8 ;;
        int8) echo int2 int4 ;;
        float8) echo float4 ;;
        timestamptz) echo date timestamp ;;
    esac
}

cat "$sql/catalog.sql"
sed -n 's/^[[:space:]]*X(\([a-z0-9_]*\), *[A-Z0-9_]*, *[A-Z0-9_]*, *\([a-z0-9_]*\), *\(true\|false\), *\([A-Z]\), *\(true\|false\)).*/\1 \2 \3 \4/p' \
    "$root/include/colcrypt/typelist.h" |
while read -r name plain collatable category; do
    sed -e "s/@NAME@/$name/g" -e "s/@PLAIN@/$plain/g" -e "s/@COLLATABLE@/$collatable/g" \
        -e "s/@CATEGORY@/$category/g" "$sql/type.sql.in"
    for src in $(assignment_sources "$name"); do
        sed -e "s/@NAME@/$name/g" -e "s/@SRC@/$src/g" "$sql/cast.sql.in"
    done
    printf '\n-- Comparison operators of colcrypt.encrypted_%s, in plaintext semantics.\n' "$name"
    echo "$OPERATORS" | while read -r op sym com neg restrict join; do
        support='' same='' cross=''
        if [ "$op" = eq ]; then
            # "=" is hashable and mergeable; its support function makes
            # det_ops indexes serve it.  Cross-type "=" is hashable only.
            support=' SUPPORT colcrypt._eq_support' same=', HASHES, MERGES' cross=', HASHES'
        fi
        sed -e "s/@NAME@/$name/g" -e "s/@PLAIN@/$plain/g" -e "s/@OP@/$op/g" \
            -e "s/@SYM@/$sym/g" -e "s/@COM@/$com/g" -e "s/@NEG@/$neg/g" \
            -e "s/@RESTRICT@/$restrict/g" -e "s/@JOIN@/$join/g" \
            -e "s/@SUPPORT@/$support/g" -e "s/@SAMEFLAGS@/$same/g" -e "s/@CROSSFLAGS@/$cross/g" \
            "$sql/operator.sql.in"
        for src in $(cross_sources "$name"); do
            sed -e "s/@NAME@/$name/g" -e "s/@PLAIN@/$plain/g" -e "s/@OP@/$op/g" -e "s/@SRC@/$src/g" \
                -e "s/@SYM@/$sym/g" -e "s/@COM@/$com/g" -e "s/@NEG@/$neg/g" \
                -e "s/@RESTRICT@/$restrict/g" -e "s/@JOIN@/$join/g" "$sql/crossop.sql.in"
        done
    done
    sed -e "s/@NAME@/$name/g" -e "s/@PLAIN@/$plain/g" "$sql/opclass.sql.in"
done
cat "$sql/tail.sql"
