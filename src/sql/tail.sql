
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

------------------------------------------------------------------------
-- Who may execute what.  PUBLIC keeps EXECUTE on the user API and on what
-- the queries of every role call: type input/output, casts, operators,
-- operator class support, _det_candidates (planted by the planner into
-- index conditions), the functions behind the views granted to PUBLIC,
-- and the steps of reencrypt and verify, which run with their caller's
-- rights and check table ownership themselves.  Everything else is
-- revoked; sql/acl.sql compares the whole list with what it should be.
------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION colcrypt._require_preload(),
    colcrypt._key_version(anyelement), colcrypt._key_id(anyelement),
    colcrypt._version_usage(integer, integer) FROM PUBLIC;
