
------------------------------------------------------------------------
-- Inspection
------------------------------------------------------------------------

CREATE FUNCTION colcrypt.ciphertext(anyelement) RETURNS text
    AS 'MODULE_PATHNAME', 'colcrypt_ciphertext' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION colcrypt.ciphertext(anyelement) IS 'The ciphertext text form of an encrypted value, whatever colcrypt.output says';

CREATE FUNCTION colcrypt.inspect(anyelement) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'colcrypt_inspect' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION colcrypt.inspect(anyelement) IS 'What the envelope of an encrypted value says (format, algorithm, key, version, sizes), without decrypting it';

GRANT SELECT ON colcrypt.reencrypt_progress, colcrypt.audit_queue TO PUBLIC;
