#!/bin/sh
# Builds the install script: src/sql/catalog.sql, then for each X(...) line
# of include/colcrypt/typelist.h the type (type.sql.in), its six comparison
# operators in three signatures each (operator.sql.in, once per line of the
# table below), against the plain type's cross-type partners
# (crossop.sql.in) and its operator classes (opclass.sql.in); then the
# operators between encrypted number types (crossenc.sql.in), and tail.sql.
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

# Types a plain column compares with, through a built-in cross-type
# operator (int4 = int2) or an implicit cast of the column (int4 = numeric),
# which the encrypted type cannot use as they stand: "col = x" would find
# two candidates, or none, and fail with 42725 or 42883.  Each gets the six
# operators as inlinable SQL functions that compare as the plain types do.
# "src:value" casts x to the plain type (a widening cast), so the planner
# sees "col = x::plain" and det_ops indexes serve it; "src:column" compares
# the decrypted value with x as PostgreSQL compares the plain type with src
# (int4 = int8 as int8: x may not fit in an int4).  crossop.sql.in.
cross_sources() {
    case $1 in
        int4) echo int2:value int8:column numeric:column float4:column float8:column ;;
        int8) echo int2:value int4:value numeric:column float4:column float8:column ;;
        numeric) echo int2:value int4:value int8:value float4:column float8:column ;;
        float8) echo float4:value ;;
        timestamptz) echo date:value timestamp:value ;;
        text) echo name:value ;;
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
        for cross in $(cross_sources "$name"); do
            src=${cross%:*}
            if [ "${cross#*:}" = value ]; then
                castc='' castv="::pg_catalog.$plain"
            else
                castc="::pg_catalog.$plain" castv=''
            fi
            sed -e "s/@NAME@/$name/g" -e "s/@PLAIN@/$plain/g" -e "s/@OP@/$op/g" -e "s/@SRC@/$src/g" \
                -e "s/@CASTC@/$castc/g" -e "s/@CASTV@/$castv/g" \
                -e "s/@SYM@/$sym/g" -e "s/@COM@/$com/g" -e "s/@NEG@/$neg/g" \
                -e "s/@RESTRICT@/$restrict/g" -e "s/@JOIN@/$join/g" "$sql/crossop.sql.in"
        done
    done
    sed -e "s/@NAME@/$name/g" -e "s/@PLAIN@/$plain/g" "$sql/opclass.sql.in"
done
# Encrypted numbers of different types against each other, compared as
# their plain types are (which the casts alone cannot reach: an encrypted
# value casts implicitly to its own plain type only).  crossenc.sql.in.
NUMERIC_TYPES='int4 int8 numeric float8'
printf '\n-- Comparison operators between encrypted number types.\n'
for name in $NUMERIC_TYPES; do
    for other in $NUMERIC_TYPES; do
        [ "$name" = "$other" ] && continue
        echo "$OPERATORS" | while read -r op sym com neg restrict join; do
            sed -e "s/@NAME@/$name/g" -e "s/@PLAIN@/$name/g" -e "s/@OTHER@/$other/g" -e "s/@OTHERPLAIN@/$other/g" \
                -e "s/@OP@/$op/g" -e "s/@SYM@/$sym/g" -e "s/@COM@/$com/g" -e "s/@NEG@/$neg/g" \
                -e "s/@RESTRICT@/$restrict/g" -e "s/@JOIN@/$join/g" "$sql/crossenc.sql.in"
        done
    done
done
cat "$sql/shadow.sql"
cat "$sql/tail.sql"
