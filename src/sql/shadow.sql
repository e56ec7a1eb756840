
------------------------------------------------------------------------
-- Exact signatures in pg_catalog.  An encrypted value reaches PostgreSQL's
-- functions and operators through its implicit cast to the plain type, so
-- a function or operator with the encrypted type itself in its signature
-- would be a better match than the built-in, from whatever schema on the
-- caller's search_path it came: a role that may create objects in such a
-- schema (public, say) could define upper(colcrypt.encrypted_text) and see
-- the plaintext of everyone who calls upper() on an encrypted column.
-- Plain types have no such exposure (their built-ins match exactly), and
-- colcrypt must not add it.  So for the functions and operators
-- applications use on each plain type, the encrypted signatures exist in
-- pg_catalog, which is searched first: one per combination of arguments
-- of the plain type, each an inlinable SQL function that casts and calls
-- the built-in (the plan is the same as through the implicit cast).  What
-- is not covered is listed in the README's threat model.
------------------------------------------------------------------------
DO $shadow$
DECLARE
    -- Functions by plain type: the names applications apply to columns.
    fn_names CONSTANT jsonb := '{
        "text": ["upper", "lower", "initcap", "length", "char_length", "character_length",
                 "octet_length", "bit_length", "substr", "substring", "left", "right",
                 "btrim", "ltrim", "rtrim", "lpad", "rpad", "replace", "strpos", "split_part",
                 "reverse", "repeat", "md5", "sha224", "sha256", "sha384", "sha512",
                 "starts_with", "translate", "regexp_replace", "regexp_match", "regexp_like",
                 "regexp_count", "regexp_instr", "regexp_substr", "ascii", "to_tsvector",
                 "quote_literal", "quote_nullable", "quote_ident", "unistr", "normalize",
                 "is_normalized", "to_number", "to_date", "to_timestamp", "textlen", "textcat",
                 "texticlike", "textlike", "textregexeq", "hashtext", "convert_to", "decode"],
        "bytea": ["length", "octet_length", "bit_length", "substr", "substring", "md5",
                  "sha224", "sha256", "sha384", "sha512", "encode", "get_byte", "get_bit",
                  "position", "btrim", "ltrim", "rtrim", "convert_from", "byteacat", "crc32"],
        "int4": ["abs", "mod", "div", "round", "trunc", "ceil", "ceiling", "floor", "sign",
                 "sqrt", "power", "pow", "to_char", "width_bucket", "int4larger", "int4smaller",
                 "gcd", "lcm", "factorial", "to_hex", "chr", "numeric", "float8", "int8"],
        "int8": ["abs", "mod", "div", "round", "trunc", "ceil", "ceiling", "floor", "sign",
                 "sqrt", "power", "pow", "to_char", "width_bucket", "int8larger", "int8smaller",
                 "gcd", "lcm", "factorial", "to_hex", "numeric", "float8", "int4"],
        "numeric": ["abs", "mod", "div", "round", "trunc", "ceil", "ceiling", "floor", "sign",
                    "sqrt", "power", "pow", "exp", "ln", "log", "log10", "scale", "min_scale",
                    "trim_scale", "to_char", "width_bucket", "numeric_larger", "numeric_smaller",
                    "gcd", "lcm", "float8", "int4", "int8"],
        "float8": ["abs", "round", "trunc", "ceil", "ceiling", "floor", "sign", "sqrt", "cbrt",
                   "power", "pow", "exp", "ln", "log", "log10", "to_char", "width_bucket",
                   "degrees", "radians", "sin", "cos", "tan", "float8larger", "float8smaller",
                   "numeric", "int4", "int8"],
        "date": ["date_part", "extract", "date_trunc", "age", "to_char", "isfinite",
                 "date_larger", "date_smaller", "make_timestamptz", "date_bin", "timestamptz"],
        "timestamptz": ["date_part", "extract", "date_trunc", "age", "to_char", "isfinite",
                        "timestamptz_larger", "timestamptz_smaller", "date_bin", "timezone",
                        "justify_days", "date"],
        "jsonb": ["jsonb_typeof", "jsonb_array_length", "jsonb_pretty", "jsonb_strip_nulls",
                  "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_set", "jsonb_insert",
                  "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query_first",
                  "jsonb_path_query_array", "jsonb_exists", "jsonb_contains", "jsonb_contained",
                  "jsonb_concat", "jsonb_delete", "jsonb_set_lax", "jsonb_object_field",
                  "jsonb_object_field_text", "jsonb_array_element", "jsonb_array_element_text"]
    }';
    t record;
    f record;
    o record;
    enc text;
    args oid[];
    pos int[];
    okpos int[];
    other text;
    argtypes text[];
    callargs text[];
    vol text;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('text'), ('bytea'), ('int4'), ('int8'), ('numeric'),
                                   ('float8'), ('date'), ('timestamptz'), ('jsonb')) v(plain)
    LOOP
        enc := 'colcrypt.encrypted_' || t.plain;
        -- Functions: every overload of the listed names with the plain
        -- type among at most seven fixed, non-internal arguments, at each
        -- arity its defaults allow (normalize(x) as well as normalize(x, f)).
        FOR f IN
            SELECT p.oid, p.proname, ARRAY(SELECT unnest(p.proargtypes::oid[])) AS allargs,
                   p.pronargdefaults, p.prorettype, p.proisstrict, p.provolatile, p.proparallel
              FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
               AND p.proname IN (SELECT jsonb_array_elements_text(fn_names -> t.plain))
               AND NOT p.proretset AND p.provariadic = 0 AND p.pronargs BETWEEN 1 AND 7
               AND t.plain::regtype = ANY (p.proargtypes::oid[])
               AND NOT EXISTS (SELECT FROM unnest(p.proargtypes::oid[]) a
                                JOIN pg_catalog.pg_type ty ON ty.oid = a
                               WHERE ty.typtype = 'p')
             ORDER BY p.proname, p.oid
        LOOP
          FOR na IN greatest(1, cardinality(f.allargs) - f.pronargdefaults) .. cardinality(f.allargs) LOOP
            args := f.allargs[1:na];
            pos := ARRAY(SELECT i FROM generate_subscripts(args, 1) i WHERE args[i] = t.plain::regtype);
            CONTINUE WHEN cardinality(pos) = 0 OR cardinality(pos) > 4;
            -- A call with an untyped literal there must resolve as before:
            -- only where the plain type is its category's preferred type,
            -- or an overload callable with as many arguments takes that
            -- preferred type at the position (it wins over both), is an
            -- encrypted signature added.
            okpos := ARRAY(SELECT i FROM unnest(pos) i
                            WHERE EXISTS (SELECT FROM pg_catalog.pg_proc q
                                            JOIN pg_catalog.pg_type qt ON qt.oid = (q.proargtypes::oid[])[i - 1]
                                            JOIN pg_catalog.pg_type pt ON pt.oid = t.plain::regtype
                                           WHERE q.pronamespace = 'pg_catalog'::regnamespace
                                             AND q.proname = f.proname
                                             AND na BETWEEN q.pronargs - q.pronargdefaults AND q.pronargs
                                             AND qt.typispreferred AND qt.typcategory = pt.typcategory));
            vol := CASE WHEN f.provolatile = 'v' THEN 'VOLATILE' ELSE 'STABLE' END;
            FOR mask IN 1 .. (1 << cardinality(pos)) - 1 LOOP
                CONTINUE WHEN EXISTS (SELECT FROM unnest(pos) i
                                       WHERE (mask >> (array_position(pos, i) - 1)) & 1 = 1
                                         AND NOT i = ANY (okpos));
                argtypes := ARRAY(SELECT CASE WHEN i = ANY (pos) AND (mask >> (array_position(pos, i) - 1)) & 1 = 1
                                              THEN enc ELSE format_type(args[i], NULL) END
                                    FROM generate_subscripts(args, 1) i ORDER BY i);
                callargs := ARRAY(SELECT CASE WHEN argtypes[i] = enc
                                              THEN format('$%s::pg_catalog.%s', i, t.plain) ELSE format('$%s', i) END
                                    FROM generate_subscripts(args, 1) i ORDER BY i);
                CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_proc q
                                       WHERE q.pronamespace = 'pg_catalog'::regnamespace AND q.proname = f.proname
                                         AND ARRAY(SELECT unnest(q.proargtypes::oid[]))
                                             = ARRAY(SELECT a::regtype::oid FROM unnest(argtypes) a));
                EXECUTE format('CREATE FUNCTION pg_catalog.%I(%s) RETURNS %s LANGUAGE sql %s %s PARALLEL %s'
                               ' AS %L',
                               f.proname, array_to_string(argtypes, ', '), format_type(f.prorettype, NULL), vol,
                               CASE WHEN f.proisstrict THEN 'STRICT' ELSE 'CALLED ON NULL INPUT' END,
                               CASE f.proparallel WHEN 's' THEN 'SAFE' WHEN 'r' THEN 'RESTRICTED' ELSE 'UNSAFE' END,
                               format('SELECT pg_catalog.%I(%s)', f.proname, array_to_string(callargs, ', ')));
            END LOOP;
          END LOOP;
        END LOOP;
        -- Operators: every built-in operator on the plain type but the
        -- comparisons (which colcrypt defines itself), with the encrypted
        -- type on the side where the plain type is, and for operators
        -- between two plain types that both have encrypted ones (int4 +
        -- int8, jsonb -> text) with both encrypted: with only one side
        -- shadowed, enc4 + enc8 would find two candidates of one exact
        -- match each, where it found one through the casts before.  For an
        -- operator on two values of one type (text || text, int4 * int4)
        -- only the left side: enc || enc then takes enc || text (one exact
        -- match, as before none), and an untyped literal on the right
        -- (enc LIKE 'a%') stays a plain value.  With an exact enc || enc it
        -- would become an encrypted constant (decrypted row by row, and
        -- refused in views), and with text || enc as well enc || enc would
        -- be ambiguous; so a plain value on the left of an encrypted one of
        -- the same type ('x' || enc, 5 * enc) is left to the casts (README,
        -- threat model).
        FOR o IN
            SELECT op.oprname, op.oprleft, op.oprright, op.oprresult, p.proname AS fname,
                   p.provolatile, p.proparallel
              FROM pg_catalog.pg_operator op JOIN pg_catalog.pg_proc p ON p.oid = op.oprcode
             WHERE op.oprnamespace = 'pg_catalog'::regnamespace
               AND t.plain::regtype IN (op.oprleft, op.oprright)
               AND op.oprname NOT IN ('=', '<>', '<', '<=', '>', '>=')
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_type ty
                                WHERE ty.oid IN (op.oprleft, op.oprright) AND ty.typtype = 'p')
             ORDER BY op.oprname, op.oid
        LOOP
            vol := CASE WHEN o.provolatile = 'v' THEN 'VOLATILE' ELSE 'STABLE' END;
            other := CASE WHEN o.oprleft = t.plain::regtype AND o.oprright <> t.plain::regtype
                           AND format_type(o.oprright, NULL) IN ('text', 'bytea', 'integer', 'bigint', 'numeric',
                                                                 'double precision', 'date',
                                                                 'timestamp with time zone', 'jsonb')
                          THEN (SELECT typname FROM pg_catalog.pg_type WHERE oid = o.oprright) END;
            FOR v IN 1 .. 3 LOOP
                -- 1: the left side encrypted; 2: the right side; 3: both,
                -- of two different types.
                CONTINUE WHEN (v = 1 AND o.oprleft <> t.plain::regtype)
                           OR (v = 2 AND (o.oprright <> t.plain::regtype OR o.oprleft = o.oprright))
                           OR (v = 3 AND other IS NULL);
                argtypes := ARRAY[CASE WHEN o.oprleft = 0 THEN NULL
                                       WHEN v IN (1, 3) THEN enc ELSE format_type(o.oprleft, NULL) END,
                                  CASE WHEN v = 2 THEN enc
                                       WHEN v = 3 THEN 'colcrypt.encrypted_' || other
                                       ELSE format_type(o.oprright, NULL) END];
                CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_operator q
                                       WHERE q.oprnamespace = 'pg_catalog'::regnamespace AND q.oprname = o.oprname
                                         AND q.oprleft = coalesce(argtypes[1]::regtype::oid, 0)
                                         AND q.oprright = argtypes[2]::regtype::oid);
                IF o.oprleft = 0 THEN
                    EXECUTE format('CREATE FUNCTION colcrypt.%I(%s) RETURNS %s LANGUAGE sql %s STRICT PARALLEL %s AS %L',
                                   '_op_' || o.fname, argtypes[2], format_type(o.oprresult, NULL), vol,
                                   CASE o.proparallel WHEN 's' THEN 'SAFE' WHEN 'r' THEN 'RESTRICTED' ELSE 'UNSAFE' END,
                                   format('SELECT OPERATOR(pg_catalog.%s) $1::pg_catalog.%s', o.oprname, t.plain));
                    EXECUTE format('CREATE OPERATOR pg_catalog.%s (RIGHTARG = %s, FUNCTION = colcrypt.%I)',
                                   o.oprname, argtypes[2], '_op_' || o.fname);
                ELSE
                    EXECUTE format('CREATE FUNCTION colcrypt.%I(%s, %s) RETURNS %s LANGUAGE sql %s STRICT PARALLEL %s AS %L',
                                   '_op_' || o.fname, argtypes[1], argtypes[2],
                                   format_type(o.oprresult, NULL), vol,
                                   CASE o.proparallel WHEN 's' THEN 'SAFE' WHEN 'r' THEN 'RESTRICTED' ELSE 'UNSAFE' END,
                                   format('SELECT $1%s OPERATOR(pg_catalog.%s) $2%s',
                                          CASE WHEN v IN (1, 3) THEN '::pg_catalog.' || t.plain ELSE '' END, o.oprname,
                                          CASE WHEN v = 2 THEN '::pg_catalog.' || t.plain
                                               WHEN v = 3 THEN '::pg_catalog.' || other ELSE '' END));
                    EXECUTE format('CREATE OPERATOR pg_catalog.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = colcrypt.%I)',
                                   o.oprname, argtypes[1], argtypes[2], '_op_' || o.fname);
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
END
$shadow$;
