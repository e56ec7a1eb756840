#!/bin/sh
# Builds the install script from src/sql/catalog.sql, one instance of
# src/sql/type.sql.in per X(...) line of include/colcrypt/typelist.h, and
# src/sql/tail.sql.  Usage: gen.sh <source root>
set -eu
root=${1:-.}
cat "$root/src/sql/catalog.sql"
sed -n 's/^[[:space:]]*X(\([a-z0-9_]*\), *[A-Z0-9_]*, *[A-Z0-9_]*, *\([a-z0-9_]*\), *\(true\|false\), *\([A-Z]\)).*/\1 \2 \3 \4/p' \
    "$root/include/colcrypt/typelist.h" |
while read -r name plain collatable category; do
    sed -e "s/@NAME@/$name/g" -e "s/@PLAIN@/$plain/g" -e "s/@COLLATABLE@/$collatable/g" \
        -e "s/@CATEGORY@/$category/g" \
        "$root/src/sql/type.sql.in"
done
cat "$root/src/sql/tail.sql"
