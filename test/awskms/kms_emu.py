#!/usr/bin/python3
"""An AWS KMS emulator for colcrypt's aws-kms provider tests.

Speaks the KMS JSON 1.1 protocol (POST /, X-Amz-Target: TrentService.<Op>)
over HTTP/1.1 keep-alive, optionally TLS, on 127.0.0.1, and checks the
Signature Version 4 of every request with its own verifier (below; it is
proved against AWS's published test suite by --verify-suite).

    kms_emu.py --port N [--cert F --key F] --config F --state F
    kms_emu.py --verify-suite <aws-sig-v4-test-suite dir>

Operations: CreateKey, CreateAlias, DeleteAlias, DescribeKey, ListKeys,
ListAliases, Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
RotateKeyOnDemand, ListKeyRotations, EnableKey, DisableKey,
ScheduleKeyDeletion, CancelKeyDeletion.  Error answers have AWS's shape:
HTTP status, x-amzn-RequestId, {"__type": ..., "message": ...}.

Control endpoints (no signature; never faulted): any method on /_emu/...
    GET  /_emu/health                  {"ok": true, ...}
    POST /_emu/fault                   {"mode": "none|hang|error|throttle|close|slow",
                                        "count": N, "status": 500, "delay_ms": N}
    GET  /_emu/fault                   the fault in force
    GET  /_emu/stats                   counters; POST /_emu/reset-stats zeroes them
    POST /_emu/credential              {"access_key_id": ..., "expires": t|null,
                                        "session_token": ..., "secret_access_key": ...,
                                        "deny": [...]} (in memory only)
    GET  /_emu/last-request            what the last API request carried (names only)
    GET  /_emu/keys                    keys and aliases, without key material

Config (JSON): "account", "region", "credentials" [{"access_key_id",
"secret_access_key", "session_token" (null for long-term keys), "expires"
(unix time, optional), "deny" (operations refused with AccessDenied),
"user" (the IAM user name in that message; default the key id)}], "keys"
[{"alias", "description", "key_id"}] (made at start if absent from the
state), "on_demand_rotation_limit" (25, KMS's quota per key).

Keys live in the state file (JSON, written atomically after each change);
it holds the AES key material, so it is created mode 0600.  The log (stderr)
has one line per request: never a secret key, session token, plaintext or
ciphertext.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import http.server
import json
import os
import re
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import uuid

# ---------------------------------------------------------------------------
# Signature Version 4: an independent verifier
# ---------------------------------------------------------------------------

ALGORITHM = "AWS4-HMAC-SHA256"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def _pct(data, keep_slash=False):
    """Percent-encode every byte outside RFC 3986's unreserved set (%XX upper case)."""
    out = []
    for b in data:
        if b in _UNRESERVED or (keep_slash and b == 0x2F):
            out.append(chr(b))
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def _normalize_path(raw):
    """RFC 3986 dot-segment removal, with empty segments (repeated slashes) dropped."""
    if not raw:
        return b"/"
    segments = raw.split(b"/")
    out = []
    for seg in segments:
        if seg == b"" or seg == b".":
            continue
        if seg == b"..":
            if out:
                out.pop()
            continue
        out.append(seg)
    path = b"/" + b"/".join(out)
    last = segments[-1]
    if out and (last == b"" or last == b"." or last == b".."):
        path += b"/"
    return path


def canonical_uri(raw_path):
    """Non-S3 rule: normalize, then URI-encode each segment of the path as sent."""
    return _pct(_normalize_path(raw_path), keep_slash=True)


def canonical_query(raw_query):
    pairs = []
    for part in raw_query.split(b"&"):
        if part == b"":
            continue
        name, _, value = part.partition(b"=")
        pairs.append((_pct(urllib.parse.unquote_to_bytes(name)),
                      _pct(urllib.parse.unquote_to_bytes(value))))
    pairs.sort()
    return "&".join("%s=%s" % p for p in pairs)


def canonical_header_value(value):
    """Trim; a folded (multi-line) value becomes its lines joined with ',';
    runs of spaces become one."""
    lines = [ln.strip(" \t") for ln in re.split(r"\r?\n", value)]
    joined = ",".join(ln for ln in lines if ln != "") if len(lines) > 1 else lines[0]
    return re.sub(r"[ \t]+", " ", joined)


class AuthError(Exception):
    def __init__(self, etype, message, detail=None):
        super().__init__(message)
        self.etype = etype
        self.message = message
        self.detail = detail        # for the log: canonical request etc. (no secrets)


def parse_authorization(value):
    """AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=x;y, Signature=hex"""
    value = value.strip()
    alg, _, rest = value.partition(" ")
    if alg != ALGORITHM:
        raise AuthError("IncompleteSignatureException",
                        "Unsupported AWS 'algorithm': '%s'. Authorization=%s" % (alg, value))
    params = {}
    for item in rest.split(","):
        item = item.strip()
        if not item:
            continue
        k, eq, v = item.partition("=")
        if not eq or k in params:
            raise AuthError("IncompleteSignatureException",
                            "Authorization header is not well formed: '%s'. Authorization=%s"
                            % (item, value))
        params[k] = v
    missing = [p for p in ("Credential", "Signature", "SignedHeaders") if not params.get(p)]
    if missing:
        raise AuthError("IncompleteSignatureException",
                        " ".join("Authorization header requires '%s' parameter." % p for p in missing)
                        + " Authorization=" + value)
    cred = params["Credential"].split("/")
    if len(cred) != 5 or any(c == "" for c in cred):
        raise AuthError("IncompleteSignatureException",
                        "Credential must have exactly 5 slash-delimited elements, e.g. "
                        "keyid/date/region/service/term, got '%s'" % params["Credential"])
    return {"akid": cred[0], "date": cred[1], "region": cred[2], "service": cred[3],
            "terminator": cred[4], "signed_headers": params["SignedHeaders"],
            "signature": params["Signature"], "raw": value}


def signing_key(secret, date, region, service):
    k = hmac.new(("AWS4" + secret).encode("utf-8"), date.encode(), hashlib.sha256).digest()
    k = hmac.new(k, region.encode(), hashlib.sha256).digest()
    k = hmac.new(k, service.encode(), hashlib.sha256).digest()
    return hmac.new(k, b"aws4_request", hashlib.sha256).digest()


def header_values(headers, lname):
    return [v for n, v in headers if n.lower() == lname]


def build_canonical_request(method, raw_path, raw_query, headers, signed, payload_hash):
    """headers: [(name, value)] as received (duplicates kept in order);
    signed: lower-case names, already sorted.  Returns (text, absent names)."""
    lines = []
    absent = []
    for name in signed:
        vals = header_values(headers, name)
        if not vals:
            absent.append(name)
        lines.append("%s:%s\n" % (name, ",".join(canonical_header_value(v) for v in vals)))
    text = "%s\n%s\n%s\n%s\n%s\n%s" % (method, canonical_uri(raw_path), canonical_query(raw_query),
                                       "".join(lines), ";".join(signed), payload_hash)
    return text, absent


AMZ_DATE_RE = re.compile(r"^(\d{8})T(\d{6})Z$")


def _amz(dt):
    return dt.strftime("%Y%m%dT%H%M%SZ")


def verify_sigv4(method, target, headers, body, lookup, region, service, now,
                 required_signed=("host", "x-amz-date"), check_token=True, skew=300):
    """Check a request's SigV4 Authorization header.

    target: the raw request-target (bytes); headers: [(name, value)];
    lookup(akid) -> credential dict ({"secret_access_key", "session_token",
    "expires"}) or None; now: aware datetime.  Returns a dict with the
    credential, canonical request and string to sign; raises AuthError."""
    auths = header_values(headers, "authorization")
    if not auths:
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")
    if len(auths) > 1:
        raise AuthError("IncompleteSignatureException", "More than one Authorization header.")
    a = parse_authorization(auths[0])

    dates = header_values(headers, "x-amz-date")
    if not dates:
        raise AuthError("IncompleteSignatureException",
                        "Authorization header requires existence of either a 'X-Amz-Date' or a "
                        "'Date' header. Authorization=" + a["raw"])
    amz_date = dates[-1].strip()
    m = AMZ_DATE_RE.match(amz_date)
    try:
        req_time = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc) if m else None
    except ValueError:
        req_time = None
    if req_time is None:
        raise AuthError("IncompleteSignatureException",
                        "Date must be in ISO-8601 'basic format'. Got '%s'. See "
                        "http://en.wikipedia.org/wiki/ISO_8601" % amz_date)

    cred = lookup(a["akid"])
    if cred is None:
        raise AuthError("UnrecognizedClientException",
                        "The security token included in the request is invalid.")

    if a["date"] != amz_date[:8]:
        raise AuthError("InvalidSignatureException",
                        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version "
                        "of date from HTTP: '%s' != '%s', from '%s'."
                        % (a["date"], amz_date[:8], amz_date))
    if a["region"] != region:
        raise AuthError("InvalidSignatureException", "Credential should be scoped to a valid region.")
    if a["service"] != service:
        raise AuthError("InvalidSignatureException",
                        "Credential should be scoped to correct service: '%s'." % service)
    if a["terminator"] != "aws4_request":
        raise AuthError("InvalidSignatureException",
                        "Credential should be scoped with a valid terminator: 'aws4_request', "
                        "not '%s'." % a["terminator"])

    delta = (req_time - now).total_seconds()
    if delta < -skew:
        raise AuthError("InvalidSignatureException",
                        "Signature expired: %s is now earlier than %s (%s - 5 min.)"
                        % (amz_date, _amz(now - datetime.timedelta(seconds=skew)), _amz(now)))
    if delta > skew:
        raise AuthError("InvalidSignatureException",
                        "Signature not yet current: %s is still later than %s (%s + 5 min.)"
                        % (amz_date, _amz(now + datetime.timedelta(seconds=skew)), _amz(now)))

    listed = a["signed_headers"].split(";")
    signed = sorted(set(n.lower() for n in listed if n))
    notes = []
    if listed != signed:
        notes.append("SignedHeaders is not a sorted, lower-case, duplicate-free list: %r"
                     % a["signed_headers"])
    for name in required_signed:
        if name not in signed:
            shown = {"host": "Host", "x-amz-date": "X-Amz-Date",
                     "x-amz-target": "X-Amz-Target"}.get(name, name)
            extra = " (real KMS does not insist on X-Amz-Target; this emulator does)" \
                if name == "x-amz-target" else ""
            raise AuthError("IncompleteSignatureException",
                            "'%s' must be a 'SignedHeader' in the AWS Authorization.%s"
                            % (shown, extra))

    if check_token:
        tokens = header_values(headers, "x-amz-security-token")
        want = cred.get("session_token")
        if want:
            if len(tokens) != 1 or not hmac.compare_digest(tokens[0].strip().encode(), want.encode()):
                raise AuthError("UnrecognizedClientException",
                                "The security token included in the request is invalid.")
        elif tokens:
            raise AuthError("UnrecognizedClientException",
                            "The security token included in the request is invalid.")
        exp = cred.get("expires")
        if exp is not None and exp <= now.timestamp():
            raise AuthError("ExpiredTokenException",
                            "The security token included in the request is expired")

    payload_hash = hashlib.sha256(body).hexdigest()
    sha_hdr = header_values(headers, "x-amz-content-sha256")
    if sha_hdr and sha_hdr[-1].strip() != payload_hash:
        raise AuthError("InvalidSignatureException",
                        "The provided 'x-amz-content-sha256' header does not match what was computed.")

    path, _, query = target.partition(b"?")
    creq, absent = build_canonical_request(method, path, query, headers, signed, payload_hash)
    if absent:
        notes.append("signed headers absent from the request: " + ", ".join(absent))
    scope = "%s/%s/%s/aws4_request" % (a["date"], region, service)
    sts = "%s\n%s\n%s\n%s" % (ALGORITHM, amz_date, scope,
                              hashlib.sha256(creq.encode("utf-8")).hexdigest())
    key = signing_key(cred["secret_access_key"], a["date"], region, service)
    expected = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()
    result = {"cred": cred, "akid": a["akid"], "signed": signed, "creq": creq, "sts": sts,
              "authorization": a, "notes": notes}
    if not hmac.compare_digest(expected.encode(), a["signature"].encode("utf-8", "replace")):
        raise AuthError("InvalidSignatureException",
                        "The request signature we calculated does not match the signature you "
                        "provided. Check your AWS Secret Access Key and signing method. Consult "
                        "the service documentation for details.", detail=result)
    return result


# ---------------------------------------------------------------------------
# --verify-suite: the verifier against AWS's published SigV4 test suite
# ---------------------------------------------------------------------------

SUITE_AKID = "AKIDEXAMPLE"
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_NOW = datetime.datetime(2015, 8, 30, 12, 36, 0, tzinfo=datetime.timezone.utc)

# Published inconsistencies of the suite, applied only to a case whose own
# files contradict each other (sha256 of its .creq is not the hash in its
# .sts).  In both post-x-www-form-urlencoded cases the .creq was made from
# the .req, which has Content-Length, while the .sts, .authz and .sreq were
# made without it; the -parameters case's .sts and signature were moreover
# made with Content-Type "...; charset=utf8" although its .req and .sreq
# say "charset=utf-8".
SUITE_ERRATA = {
    "post-x-www-form-urlencoded-parameters":
        ("content-type", "application/x-www-form-urlencoded; charset=utf8"),
}


def parse_raw_request(data):
    """Parse a request as the suite writes it: request line (the path may hold
    spaces and raw UTF-8), headers (a line starting with white space continues
    the previous value), a blank line, the body.  Returns (method, target bytes,
    [(name, value)], body)."""
    data = data.replace(b"\r\n", b"\n")
    head, sep, body = data.partition(b"\n\n")
    lines = head.split(b"\n")
    reqline = lines[0].decode("utf-8")
    method, _, rest = reqline.partition(" ")
    target, _, version = rest.rpartition(" ")
    if not version.startswith("HTTP/"):
        raise ValueError("bad request line %r" % reqline)
    headers = []
    for raw in lines[1:]:
        line = raw.decode("utf-8")
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line)
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError("bad header line %r" % line)
        headers.append((name, value))
    return method, target.encode("utf-8"), headers, body


def verify_suite(suite):
    def lookup(akid):
        return {"secret_access_key": SUITE_SECRET} if akid == SUITE_AKID else None

    cases = []
    for root, _dirs, files in os.walk(suite):
        for f in files:
            if f.endswith(".sreq"):
                cases.append(os.path.join(root, f[:-5]))
    cases.sort()
    passed = errata = 0
    for base in cases:
        name = os.path.basename(base)
        rel = os.path.relpath(base, suite)
        problems = []
        note = ""

        def read(ext):
            with open(base + "." + ext, "rb") as fh:
                return fh.read()
        try:
            want_creq = read("creq").decode("utf-8")
            want_sts = read("sts").decode("utf-8")
            method, target, headers, body = parse_raw_request(read("sreq"))
            consistent = want_sts.split("\n")[-1] == hashlib.sha256(want_creq.encode()).hexdigest()
            if not consistent and name in SUITE_ERRATA:
                hname, hvalue = SUITE_ERRATA[name]
                headers = [(n, hvalue if n.lower() == hname else v) for n, v in headers]
                note = "erratum: %s signed as %r" % (hname, hvalue)
            try:
                res = verify_sigv4(method, target, headers, body, lookup, "us-east-1", "service",
                                   SUITE_NOW, check_token=False)
            except AuthError as e:
                problems.append("%s: %s" % (e.etype, e.message))
                res = e.detail
            # The same request with its signature altered must be refused.
            bad = [(n, re.sub(r"Signature=([0-9a-f])", lambda m: "Signature=" + "0123456789abcdef"[
                (int(m.group(1), 16) + 1) % 16], v) if n.lower() == "authorization" else v)
                   for n, v in headers]
            try:
                verify_sigv4(method, target, bad, body, lookup, "us-east-1", "service", SUITE_NOW,
                             check_token=False)
                problems.append("a tampered signature was accepted")
            except AuthError as e:
                if e.etype != "InvalidSignatureException":
                    problems.append("a tampered signature gave %s" % e.etype)
            if res is not None:
                if res["sts"] != want_sts:
                    problems.append("string to sign differs from .sts")
                if consistent and res["creq"] != want_creq:
                    problems.append("canonical request differs from .creq")
            if not consistent:
                # The .creq of these cases is the canonical request of the .req
                # with every one of its headers signed: check that instead.
                m2, t2, h2, b2 = parse_raw_request(read("req"))
                names = sorted(set(n.lower() for n, _ in h2))
                path, _, query = t2.partition(b"?")
                creq2, _ = build_canonical_request(m2, path, query, h2, names,
                                                   hashlib.sha256(b2).hexdigest())
                if creq2 != want_creq:
                    problems.append("canonical request of the .req differs from .creq")
                note = ("published files disagree (sha256(.creq) is not the .sts hash); .creq checked "
                        "against the .req with all headers signed" + ("; " + note if note else ""))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            problems.append("unreadable case: %s" % e)
        if problems:
            print("FAIL %s: %s" % (rel, "; ".join(problems)))
        else:
            passed += 1
            if note:
                errata += 1
            print("pass %s%s" % (rel, " (" + note + ")" if note else ""))
    print("SigV4 verifier vs aws-sig-v4-test-suite: %d/%d cases pass (%d with the suite's "
          "published errata)" % (passed, len(cases), errata))
    return 0 if passed == len(cases) and len(cases) == 31 else 1


# ---------------------------------------------------------------------------
# The KMS model
# ---------------------------------------------------------------------------

class KmsError(Exception):
    def __init__(self, etype, message="", status=400):
        super().__init__(message)
        self.etype = etype
        self.message = message
        self.status = status


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ALIAS_RE = re.compile(r"^[a-zA-Z0-9:/_-]+$")
BLOB_VERSION = 1
BLOB_HEADER = 1 + 36 + 4
MAX_ON_DEMAND_ROTATIONS = 25    # the KMS developer guide's current quota


def _validation(field, constraint, value="null"):
    shown = "null" if value is None else "'%s'" % value
    return KmsError("ValidationException",
                    "1 validation error detected: Value %s at '%s' failed to satisfy constraint: %s"
                    % (shown, field[0].lower() + field[1:], constraint))


class Params:
    """Typed access to a request body, with KMS-like validation errors."""

    def __init__(self, body):
        self.body = body

    def _get(self, name, kinds, kind_name):
        v = self.body.get(name)
        if v is None:
            return None
        if not isinstance(v, kinds) or isinstance(v, bool) and bool not in kinds:
            raise KmsError("SerializationException",
                           "Expected %s for '%s', got %s" % (kind_name, name, type(v).__name__))
        return v

    def string(self, name, required=False, lo=1, hi=2048):
        v = self._get(name, (str,), "a string")
        if v is None:
            if required:
                raise _validation(name, "Member must not be null", None)
            return None
        if len(v) < lo:
            raise _validation(name, "Member must have length greater than or equal to %d" % lo, v)
        if len(v) > hi:
            raise _validation(name, "Member must have length less than or equal to %d" % hi, v[:64])
        return v

    def enum(self, name, allowed, required=False):
        v = self.string(name, required)
        if v is not None and v not in allowed:
            raise _validation(name, "Member must satisfy enum value set: [%s]" % ", ".join(allowed), v)
        return v

    def integer(self, name, lo, hi):
        v = self._get(name, (int,), "an integer")
        if v is None:
            return None
        if v < lo:
            raise _validation(name, "Member must have value greater than or equal to %d" % lo, v)
        if v > hi:
            raise _validation(name, "Member must have value less than or equal to %d" % hi, v)
        return v

    def blob(self, name, required=False, lo=1, hi=6144):
        v = self._get(name, (str,), "a base64 string")
        if v is None:
            if required:
                raise _validation(name, "Member must not be null", None)
            return None
        try:
            data = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise KmsError("SerializationException", "'%s' is not valid base64" % name)
        if len(data) < lo:
            raise _validation(name, "Member must have length greater than or equal to %d" % lo, "")
        if len(data) > hi:
            raise _validation(name, "Member must have length less than or equal to %d" % hi, "")
        return data

    def context(self, name):
        v = self.body.get(name)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise KmsError("SerializationException", "'%s' must be a map of strings" % name)
        for k, val in v.items():
            if not isinstance(val, str):
                raise KmsError("SerializationException",
                               "'%s' values must be strings; '%s' is %s" % (name, k, type(val).__name__))
        return v


ENC_ALGS = ["SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"]
KEY_SPECS = ["RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521",
             "ECC_SECG_P256K1", "SYMMETRIC_DEFAULT", "HMAC_224", "HMAC_256", "HMAC_384", "HMAC_512",
             "SM2", "ML_DSA_44", "ML_DSA_65", "ML_DSA_87", "ECC_NIST_EDWARDS25519"]
KEY_USAGES = ["SIGN_VERIFY", "ENCRYPT_DECRYPT", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"]


def canon_context(ctx):
    """Canonical bytes of an EncryptionContext: sorted pairs, so key order does
    not matter but every key and value does.  Empty and absent are the same."""
    if not ctx:
        return b""
    return json.dumps(sorted(ctx.items()), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Kms:
    def __init__(self, config, state_path):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self.AESGCM = AESGCM
        self.region = config.get("region", "us-east-1")
        self.account = str(config.get("account", "111122223333"))
        self.rotation_limit = int(config.get("on_demand_rotation_limit", MAX_ON_DEMAND_ROTATIONS))
        self.state_path = state_path
        self.lock = threading.RLock()
        self.creds = {}
        for c in config.get("credentials", []):
            self.creds[c["access_key_id"]] = dict(c)
        self.state = {"keys": {}, "aliases": {}}
        if os.path.exists(state_path):
            with open(state_path, encoding="utf-8") as f:
                self.state = json.load(f)
            self.state.setdefault("keys", {})
            self.state.setdefault("aliases", {})
        changed = False
        for spec in config.get("keys", []):
            alias = spec.get("alias")
            kid = spec.get("key_id")
            if alias and alias in self.state["aliases"]:
                continue
            if kid and kid in self.state["keys"]:
                key = self.state["keys"][kid]
            else:
                key = self._new_key(spec.get("description", "colcrypt test key"), kid)
            if alias:
                self.state["aliases"][alias] = {"target": key["id"], "created": time.time()}
            changed = True
        if changed or not os.path.exists(state_path):
            self.save()

    # -- persistence --------------------------------------------------------
    def save(self):
        tmp = self.state_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    # -- names --------------------------------------------------------------
    def key_arn(self, kid):
        return "arn:aws:kms:%s:%s:key/%s" % (self.region, self.account, kid)

    def alias_arn(self, alias):
        return "arn:aws:kms:%s:%s:%s" % (self.region, self.account, alias)

    def _new_key(self, description, kid=None):
        kid = kid or str(uuid.uuid4())
        if not UUID_RE.match(kid):
            raise ValueError("key_id %r is not a lower-case UUID" % kid)
        key = {"id": kid, "description": description, "created": time.time(), "state": "Enabled",
               "versions": [{"material": base64.b64encode(os.urandom(32)).decode(),
                             "created": time.time(), "rotation": None}]}
        self.state["keys"][kid] = key
        return key

    def resolve(self, ref, allow_alias=True):
        """A key id, key ARN, alias name or alias ARN -> the key (NotFoundException)."""
        if ref.startswith("arn:"):
            m = re.match(r"^arn:aws:kms:([^:]*):([^:]*):(key/(.*)|alias/.*)$", ref)
            if not m:
                raise KmsError("NotFoundException", "Invalid arn %s" % ref)
            region, account, res, kid = m.groups()
            if res.startswith("alias/"):
                if not allow_alias:
                    raise KmsError("ValidationException", "Aliases must refer to keys. Not aliases")
                if region != self.region or account != self.account or res not in self.state["aliases"]:
                    raise KmsError("NotFoundException", "Alias '%s' is not found." % ref)
                return self.state["keys"][self.state["aliases"][res]["target"]]
            if region != self.region or account != self.account or kid not in self.state["keys"]:
                raise KmsError("NotFoundException", "Key '%s' does not exist" % ref)
            return self.state["keys"][kid]
        if ref.startswith("alias/"):
            if not allow_alias:
                raise KmsError("ValidationException", "Aliases must refer to keys. Not aliases")
            if ref not in self.state["aliases"]:
                raise KmsError("NotFoundException", "Alias '%s' is not found." % self.alias_arn(ref))
            return self.state["keys"][self.state["aliases"][ref]["target"]]
        if not UUID_RE.match(ref):
            raise KmsError("NotFoundException", "Invalid keyId '%s'" % ref)
        if ref not in self.state["keys"]:
            raise KmsError("NotFoundException", "Key '%s' does not exist" % self.key_arn(ref))
        return self.state["keys"][ref]

    def metadata(self, key):
        md = {"AWSAccountId": self.account, "KeyId": key["id"], "Arn": self.key_arn(key["id"]),
              "CreationDate": round(key["created"], 3), "Enabled": key["state"] == "Enabled",
              "Description": key["description"], "KeyUsage": "ENCRYPT_DECRYPT",
              "KeyState": key["state"], "Origin": "AWS_KMS", "KeyManager": "CUSTOMER",
              "KeySpec": "SYMMETRIC_DEFAULT", "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
              "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"], "MultiRegion": False}
        if key["state"] == "PendingDeletion":
            md["DeletionDate"] = round(key["deletion_date"], 3)
            md["PendingDeletionWindowInDays"] = key["pending_window"]
        return md

    # -- authorization and state -------------------------------------------
    def authorize(self, cred, action, resource):
        deny = cred.get("deny") or []
        names = {action, "kms:" + action, "*", "kms:*"}
        if action.startswith("ReEncrypt"):
            names |= {"ReEncrypt", "kms:ReEncrypt*"}
        if names & set(deny):
            principal = cred.get("arn") or "arn:aws:iam::%s:user/%s" % (
                self.account, cred.get("user") or cred["access_key_id"])
            raise KmsError("AccessDeniedException",
                           "User: %s is not authorized to perform: kms:%s on resource: %s because no "
                           "identity-based policy allows the kms:%s action"
                           % (principal, action, resource, action))

    def usable(self, key):
        arn = self.key_arn(key["id"])
        if key["state"] == "Disabled":
            raise KmsError("DisabledException", "%s is disabled." % arn)
        if key["state"] == "PendingDeletion":
            raise KmsError("KMSInvalidStateException", "%s is pending deletion." % arn)

    # -- ciphertext blobs ---------------------------------------------------
    def seal(self, key, plaintext, ctx):
        ver = len(key["versions"]) - 1
        header = bytes([BLOB_VERSION]) + key["id"].encode("ascii") + struct.pack(">I", ver)
        nonce = os.urandom(12)
        material = base64.b64decode(key["versions"][ver]["material"])
        return header + nonce + self.AESGCM(material).encrypt(nonce, plaintext,
                                                              header + canon_context(ctx))

    def blob_key(self, blob):
        """The key a blob names (InvalidCiphertextException if it names none)."""
        if len(blob) < BLOB_HEADER + 12 + 16 or blob[0] != BLOB_VERSION:
            raise KmsError("InvalidCiphertextException", "")
        kid = blob[1:37].decode("ascii", "replace")
        if kid not in self.state["keys"]:
            raise KmsError("InvalidCiphertextException", "")
        return self.state["keys"][kid]

    def open_blob(self, key, blob, ctx):
        from cryptography.exceptions import InvalidTag
        (ver,) = struct.unpack(">I", blob[37:41])
        if ver >= len(key["versions"]):
            raise KmsError("InvalidCiphertextException", "")
        material = base64.b64decode(key["versions"][ver]["material"])
        try:
            return self.AESGCM(material).decrypt(blob[41:53], blob[53:],
                                                 blob[:BLOB_HEADER] + canon_context(ctx))
        except InvalidTag:
            raise KmsError("InvalidCiphertextException", "")

    # -- operations ---------------------------------------------------------
    def call(self, op, body, cred):
        fn = getattr(self, "op_" + op, None)
        if fn is None:
            raise KmsError("UnknownOperationException",
                           "" if op not in KNOWN_KMS_OPS else
                           "TrentService.%s is a KMS operation this emulator does not implement" % op)
        with self.lock:
            return fn(Params(body), cred)

    def _sym_alg(self, p, name):
        alg = p.enum(name, ENC_ALGS)
        if alg not in (None, "SYMMETRIC_DEFAULT"):
            raise KmsError("InvalidKeyUsageException",
                           "%s is not a supported encryption algorithm for a symmetric key" % alg)
        return "SYMMETRIC_DEFAULT"

    def op_CreateKey(self, p, cred):
        desc = p.string("Description", lo=0, hi=8192) or ""
        usage = p.enum("KeyUsage", KEY_USAGES)
        spec = p.enum("KeySpec", KEY_SPECS)
        cmk_spec = p.enum("CustomerMasterKeySpec", KEY_SPECS[:13])
        origin = p.enum("Origin", ["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"])
        if spec and cmk_spec:
            raise KmsError("ValidationException",
                           "You cannot specify KeySpec and CustomerMasterKeySpec in the same request.")
        if (spec or cmk_spec or "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT" or \
                (usage or "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT":
            raise KmsError("UnsupportedOperationException",
                           "This emulator creates only SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys.")
        if (origin or "AWS_KMS") != "AWS_KMS" or self.body_flag(p, "MultiRegion"):
            raise KmsError("UnsupportedOperationException",
                           "This emulator creates only single-Region AWS_KMS keys.")
        self.authorize(cred, "CreateKey", "*")
        key = self._new_key(desc)
        self.save()
        return {"KeyMetadata": self.metadata(key)}

    @staticmethod
    def body_flag(p, name):
        v = p.body.get(name)
        if v is not None and not isinstance(v, bool):
            raise KmsError("SerializationException", "Expected a boolean for '%s'" % name)
        return bool(v)

    def op_CreateAlias(self, p, cred):
        name = p.string("AliasName", required=True, hi=256)
        target = p.string("TargetKeyId", required=True)
        if not name.startswith("alias/"):
            raise KmsError("ValidationException", "Alias must start with the prefix \"alias/\".")
        if name.startswith("alias/aws/"):
            raise KmsError("NotAuthorizedException", "Cannot create alias with prefix 'alias/aws/'")
        if not ALIAS_RE.match(name):
            raise _validation("AliasName", "Member must satisfy regular expression pattern: "
                              "^[a-zA-Z0-9:/_-]+$", name)
        if ":" in name:
            raise KmsError("ValidationException", "%s contains invalid characters for an alias" % name)
        key = self.resolve(target, allow_alias=False)
        self.authorize(cred, "CreateAlias", self.alias_arn(name))
        if key["state"] == "PendingDeletion":
            raise KmsError("KMSInvalidStateException",
                           "%s is pending deletion." % self.key_arn(key["id"]))
        if name in self.state["aliases"]:
            raise KmsError("AlreadyExistsException",
                           "An alias with the name %s already exists" % self.alias_arn(name))
        self.state["aliases"][name] = {"target": key["id"], "created": time.time()}
        self.save()
        return {}

    def op_DeleteAlias(self, p, cred):
        name = p.string("AliasName", required=True, hi=256)
        if name not in self.state["aliases"]:
            raise KmsError("NotFoundException", "Alias '%s' is not found." % self.alias_arn(name))
        self.authorize(cred, "DeleteAlias", self.alias_arn(name))
        del self.state["aliases"][name]
        self.save()
        return {}

    def op_DescribeKey(self, p, cred):
        key = self.resolve(p.string("KeyId", required=True))
        self.authorize(cred, "DescribeKey", self.key_arn(key["id"]))
        return {"KeyMetadata": self.metadata(key)}

    def _page(self, p, items, field):
        limit = p.integer("Limit", 1, 1000) or 100
        marker = p.string("Marker", hi=1024)
        start = 0
        if marker is not None:
            if not marker.isdigit() or int(marker) > len(items):
                raise KmsError("InvalidMarkerException", "Invalid marker")
            start = int(marker)
        page = items[start:start + limit]
        out = {field: page, "Truncated": start + limit < len(items)}
        if out["Truncated"]:
            out["NextMarker"] = str(start + limit)
        return out

    def op_ListKeys(self, p, cred):
        self.authorize(cred, "ListKeys", "*")
        keys = sorted(self.state["keys"].values(), key=lambda k: (k["created"], k["id"]))
        return self._page(p, [{"KeyId": k["id"], "KeyArn": self.key_arn(k["id"])} for k in keys], "Keys")

    def op_ListAliases(self, p, cred):
        ref = p.string("KeyId")
        only = self.resolve(ref, allow_alias=False)["id"] if ref else None
        self.authorize(cred, "ListAliases", "*")
        items = []
        for name in sorted(self.state["aliases"]):
            a = self.state["aliases"][name]
            if only and a["target"] != only:
                continue
            items.append({"AliasName": name, "AliasArn": self.alias_arn(name), "TargetKeyId": a["target"],
                          "CreationDate": round(a["created"], 3),
                          "LastUpdatedDate": round(a["created"], 3)})
        return self._page(p, items, "Aliases")

    def op_Encrypt(self, p, cred):
        ref = p.string("KeyId", required=True)
        plaintext = p.blob("Plaintext", required=True, hi=4096)
        ctx = p.context("EncryptionContext")
        alg = self._sym_alg(p, "EncryptionAlgorithm")
        key = self.resolve(ref)
        self.authorize(cred, "Encrypt", self.key_arn(key["id"]))
        self.usable(key)
        blob = self.seal(key, plaintext, ctx)
        return {"CiphertextBlob": base64.b64encode(blob).decode(), "KeyId": self.key_arn(key["id"]),
                "EncryptionAlgorithm": alg}

    def _open(self, p, cred, blob_field, ctx_field, keyid_field, alg_field, action):
        blob = p.blob(blob_field, required=True)
        ctx = p.context(ctx_field)
        ref = p.string(keyid_field)
        alg = self._sym_alg(p, alg_field)
        named = self.resolve(ref) if ref else None
        key = self.blob_key(blob)
        if named is not None and named["id"] != key["id"]:
            raise KmsError("IncorrectKeyException",
                           "The key ID in the request does not identify a CMK that can perform this "
                           "operation.")
        self.authorize(cred, action, self.key_arn(key["id"]))
        self.usable(key)
        return key, self.open_blob(key, blob, ctx), alg

    def op_Decrypt(self, p, cred):
        key, plaintext, alg = self._open(p, cred, "CiphertextBlob", "EncryptionContext", "KeyId",
                                         "EncryptionAlgorithm", "Decrypt")
        return {"KeyId": self.key_arn(key["id"]), "Plaintext": base64.b64encode(plaintext).decode(),
                "EncryptionAlgorithm": alg}

    def op_ReEncrypt(self, p, cred):
        dest_ref = p.string("DestinationKeyId", required=True)
        dest_ctx = p.context("DestinationEncryptionContext")
        dest_alg = self._sym_alg(p, "DestinationEncryptionAlgorithm")
        src, plaintext, src_alg = self._open(p, cred, "CiphertextBlob", "SourceEncryptionContext",
                                             "SourceKeyId", "SourceEncryptionAlgorithm", "ReEncryptFrom")
        dest = self.resolve(dest_ref)
        self.authorize(cred, "ReEncryptTo", self.key_arn(dest["id"]))
        self.usable(dest)
        blob = self.seal(dest, plaintext, dest_ctx)
        return {"CiphertextBlob": base64.b64encode(blob).decode(), "SourceKeyId": self.key_arn(src["id"]),
                "KeyId": self.key_arn(dest["id"]), "SourceEncryptionAlgorithm": src_alg,
                "DestinationEncryptionAlgorithm": dest_alg}

    def op_GenerateDataKey(self, p, cred):
        ref = p.string("KeyId", required=True)
        ctx = p.context("EncryptionContext")
        spec = p.enum("KeySpec", ["AES_256", "AES_128"])
        nbytes = p.integer("NumberOfBytes", 1, 1024)
        if (spec is None) == (nbytes is None):
            raise KmsError("ValidationException", "Please specify either number of bytes or key spec.")
        key = self.resolve(ref)
        self.authorize(cred, "GenerateDataKey", self.key_arn(key["id"]))
        self.usable(key)
        plaintext = os.urandom(nbytes or (32 if spec == "AES_256" else 16))
        blob = self.seal(key, plaintext, ctx)
        return {"CiphertextBlob": base64.b64encode(blob).decode(),
                "Plaintext": base64.b64encode(plaintext).decode(), "KeyId": self.key_arn(key["id"])}

    def op_RotateKeyOnDemand(self, p, cred):
        key = self.resolve(p.string("KeyId", required=True))
        self.authorize(cred, "RotateKeyOnDemand", self.key_arn(key["id"]))
        self.usable(key)
        if len(key["versions"]) - 1 >= self.rotation_limit:
            raise KmsError("LimitExceededException",
                           "The key %s has reached the limit of %d on-demand rotations."
                           % (self.key_arn(key["id"]), self.rotation_limit))
        key["versions"].append({"material": base64.b64encode(os.urandom(32)).decode(),
                                "created": time.time(), "rotation": "ON_DEMAND"})
        self.save()
        return {"KeyId": key["id"]}

    def op_ListKeyRotations(self, p, cred):
        key = self.resolve(p.string("KeyId", required=True), allow_alias=False)
        self.authorize(cred, "ListKeyRotations", self.key_arn(key["id"]))
        items = [{"KeyId": key["id"], "RotationDate": round(v["created"], 3), "RotationType": v["rotation"]}
                 for v in key["versions"][1:]]
        return self._page(p, items, "Rotations")

    def _set_state(self, p, cred, action, new):
        key = self.resolve(p.string("KeyId", required=True), allow_alias=False)
        self.authorize(cred, action, self.key_arn(key["id"]))
        if key["state"] == "PendingDeletion":
            raise KmsError("KMSInvalidStateException", "%s is pending deletion." % self.key_arn(key["id"]))
        key["state"] = new
        self.save()
        return {}

    def op_EnableKey(self, p, cred):
        return self._set_state(p, cred, "EnableKey", "Enabled")

    def op_DisableKey(self, p, cred):
        return self._set_state(p, cred, "DisableKey", "Disabled")

    def op_ScheduleKeyDeletion(self, p, cred):
        ref = p.string("KeyId", required=True)
        days = p.integer("PendingWindowInDays", 7, 30)
        days = 30 if days is None else days
        key = self.resolve(ref, allow_alias=False)
        arn = self.key_arn(key["id"])
        self.authorize(cred, "ScheduleKeyDeletion", arn)
        if key["state"] == "PendingDeletion":
            raise KmsError("KMSInvalidStateException", "%s is pending deletion." % arn)
        key["state"] = "PendingDeletion"
        key["pending_window"] = days
        key["deletion_date"] = time.time() + days * 86400
        self.save()
        return {"KeyId": arn, "DeletionDate": round(key["deletion_date"], 3),
                "KeyState": "PendingDeletion", "PendingWindowInDays": days}

    def op_CancelKeyDeletion(self, p, cred):
        key = self.resolve(p.string("KeyId", required=True), allow_alias=False)
        arn = self.key_arn(key["id"])
        self.authorize(cred, "CancelKeyDeletion", arn)
        if key["state"] != "PendingDeletion":
            raise KmsError("KMSInvalidStateException", "%s is not pending deletion." % arn)
        key["state"] = "Disabled"           # as in AWS: cancelled keys stay disabled
        key.pop("deletion_date", None)
        key.pop("pending_window", None)
        self.save()
        return {"KeyId": arn}

    def summary(self):
        keys = []
        for k in sorted(self.state["keys"].values(), key=lambda k: (k["created"], k["id"])):
            keys.append({"KeyId": k["id"], "Arn": self.key_arn(k["id"]), "KeyState": k["state"],
                         "Description": k["description"], "Versions": len(k["versions"]),
                         "Aliases": sorted(n for n, a in self.state["aliases"].items()
                                           if a["target"] == k["id"])})
        return {"region": self.region, "account": self.account, "keys": keys}


KNOWN_KMS_OPS = {
    "CancelKeyDeletion", "ConnectCustomKeyStore", "CreateAlias", "CreateCustomKeyStore", "CreateGrant",
    "CreateKey", "Decrypt", "DeleteAlias", "DeleteCustomKeyStore", "DeleteImportedKeyMaterial",
    "DeriveSharedSecret", "DescribeCustomKeyStores", "DescribeKey", "DisableKey", "DisableKeyRotation",
    "DisconnectCustomKeyStore", "EnableKey", "EnableKeyRotation", "Encrypt", "GenerateDataKey",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateDataKeyWithoutPlaintext",
    "GenerateMac", "GenerateRandom", "GetKeyPolicy", "GetKeyRotationStatus", "GetParametersForImport",
    "GetPublicKey", "ImportKeyMaterial", "ListAliases", "ListGrants", "ListKeyPolicies",
    "ListKeyRotations", "ListKeys", "ListResourceTags", "ListRetirableGrants", "PutKeyPolicy",
    "ReEncrypt", "ReplicateKey", "RetireGrant", "RevokeGrant", "RotateKeyOnDemand",
    "ScheduleKeyDeletion", "Sign", "TagResource", "UntagResource", "UpdateAlias",
    "UpdateCustomKeyStore", "UpdateKeyDescription", "UpdatePrimaryRegion", "Verify", "VerifyMac",
}


# ---------------------------------------------------------------------------
# Faults and statistics
# ---------------------------------------------------------------------------

FAULT_MODES = ("none", "hang", "error", "throttle", "close", "slow")


class Control:
    def __init__(self):
        self.lock = threading.Lock()
        self.fault = {"mode": "none"}
        self.generation = 0           # bumped by every POST /_emu/fault: releases hangs
        self.last_request = None
        self.reset_stats()

    def reset_stats(self):
        with self.lock:
            self.stats = {"total": 0, "by_op": {}, "faulted": 0, "signature_failures": 0, "by_error": {}}

    def set_fault(self, spec):
        mode = spec.get("mode", "none")
        if mode not in FAULT_MODES:
            raise ValueError("mode must be one of " + ", ".join(FAULT_MODES))
        fault = {"mode": mode}
        for k in ("count", "status", "delay_ms"):
            v = spec.get(k)
            if v is not None:
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ValueError("%s must be a non-negative integer" % k)
                fault[k] = v
        if mode == "error" and not 400 <= fault.get("status", 500) <= 599:
            raise ValueError("status must be 400..599")
        if mode == "none" or fault.get("count") == 0:
            fault = {"mode": "none"}
        with self.lock:
            self.fault = fault
            self.generation += 1
            return dict(fault)

    def take_fault(self):
        """The fault for the next API request, if any, and the generation it saw."""
        with self.lock:
            f = self.fault
            if f["mode"] == "none":
                return None, self.generation
            taken = dict(f)
            if "count" in f:
                f["count"] -= 1
                if f["count"] <= 0:
                    self.fault = {"mode": "none"}
            self.stats["faulted"] += 1
            return taken, self.generation

    def count(self, op=None, error=None, auth_failure=False, new_request=False):
        with self.lock:
            s = self.stats
            if new_request:
                s["total"] += 1
            if op:
                s["by_op"][op] = s["by_op"].get(op, 0) + 1
            if error:
                s["by_error"][error] = s["by_error"].get(error, 0) + 1
            if auth_failure:
                s["signature_failures"] += 1


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

MAX_BODY = 1 << 20


def log(msg):
    sys.stderr.write("%s %s\n" % (datetime.datetime.now(datetime.timezone.utc)
                                  .strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z", msg))
    sys.stderr.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle holds the
    # body back for the client's delayed ACK (40 ms a request on Linux).
    disable_nagle_algorithm = True
    server_version = "colcrypt-kms-emu"
    sys_version = ""
    timeout = 300                     # idle keep-alive connections

    def log_message(self, fmt, *args):   # http.server's own messages (bad requests)
        log("http: " + (fmt % args))

    def log_request(self, code="-", size="-"):
        pass                              # dispatch logs every request itself

    def version_string(self):
        return self.server_version

    def do_POST(self):
        self.dispatch()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_POST

    # -- plumbing -----------------------------------------------------------
    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if te.lower() == "chunked":
            data = b""
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline(16)
                if len(data) > MAX_BODY:
                    raise ValueError("body too large")
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        n = int(length)
        if n < 0 or n > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(n)

    def send_body(self, status, body, ctype, extra=()):
        self.send_response(status)
        self.send_header("x-amzn-RequestId", self.request_id)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj):
        self.send_body(status, json.dumps(obj, separators=(",", ":")).encode(),
                       "application/x-amz-json-1.1")

    def send_error_json(self, status, etype, message):
        self.send_json(status, {"__type": etype, "message": message})

    def client_gone(self):
        """True once the client has closed (or reset) its connection."""
        try:
            fd = self.connection.fileno()
            if fd < 0:
                return True
            r, _, _ = select.select([fd], [], [], 0)
            if not r:
                return False
            raw = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
            try:
                data = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            finally:
                raw.close()
            # Plain HTTP: EOF.  TLS: a client awaiting its answer sends
            # nothing but close_notify.
            return data == b"" or isinstance(self.connection, ssl.SSLSocket)
        except OSError:
            return True

    # -- requests -----------------------------------------------------------
    def dispatch(self):
        self.request_id = str(uuid.uuid4())
        t0 = time.monotonic()
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self.send_body(400, b'{"message":"bad request body"}', "application/json")
            return
        raw_target = self.path.encode("latin-1")
        if raw_target.startswith(b"/_emu/") or raw_target == b"/_emu":
            self.control(raw_target.decode("latin-1"), body, t0)
        else:
            self.api(raw_target, body, t0)

    def control(self, path, body, t0):
        srv = self.server
        ctl = srv.control
        path = path.split("?")[0].rstrip("/")
        what = path[len("/_emu/"):] if path.startswith("/_emu/") else ""
        status, out = 200, None
        try:
            spec = json.loads(body) if body.strip() else {}
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            if what == "health":
                out = {"ok": True, "pid": os.getpid(), "region": srv.kms.region, "account": srv.kms.account}
            elif what == "fault":
                out = ctl.set_fault(spec) if self.command == "POST" else dict(ctl.fault)
            elif what == "stats":
                with ctl.lock:
                    out = json.loads(json.dumps(ctl.stats))
            elif what == "reset-stats":
                ctl.reset_stats()
                out = {"ok": True}
            elif what == "credential":
                out = self.change_credential(spec)
            elif what == "last-request":
                out = ctl.last_request or {}
            elif what == "keys":
                with srv.kms.lock:
                    out = srv.kms.summary()
            else:
                status, out = 404, {"error": "unknown control endpoint %s" % path}
        except (ValueError, KeyError, TypeError) as e:
            status, out = 400, {"error": str(e)}
        self.send_body(status, json.dumps(out).encode(), "application/json")
        log("control %s %s %d %dms" % (self.command, path, status, (time.monotonic() - t0) * 1000))

    def change_credential(self, spec):
        kms = self.server.kms
        akid = spec.get("access_key_id")
        if not isinstance(akid, str) or not akid:
            raise ValueError("access_key_id is required")
        with kms.lock:
            cred = kms.creds.get(akid)
            if cred is None:
                if not isinstance(spec.get("secret_access_key"), str):
                    raise ValueError("unknown access_key_id %s (give secret_access_key to add it)" % akid)
                cred = kms.creds[akid] = {"access_key_id": akid}
            for k in ("secret_access_key", "session_token", "expires", "deny", "user", "arn"):
                if k in spec:
                    cred[k] = spec[k]
            return {"access_key_id": akid, "expires": cred.get("expires"),
                    "session_token": bool(cred.get("session_token")), "deny": cred.get("deny") or []}

    def note_request(self, target, signed, body_obj):
        fields = sorted(body_obj) if isinstance(body_obj, dict) else None
        contexts = {}
        if isinstance(body_obj, dict):
            for k in ("EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext"):
                if k in body_obj:
                    contexts[k] = body_obj[k]
        info = {"method": self.command, "path": self.path, "target": target,
                "operation": target.split(".", 1)[1] if target and "." in target else None,
                "header_names": [n.lower() for n in self.headers.keys()],
                "signed_headers": signed, "fields": fields,
                "encryption_context": contexts.get("EncryptionContext"), "contexts": contexts,
                "key_id": body_obj.get("KeyId") if isinstance(body_obj, dict) else None,
                "content_type": self.headers.get("Content-Type"),
                "security_token_sent": "X-Amz-Security-Token" in self.headers}
        self.server.control.last_request = info
        return info

    def api(self, raw_target, body, t0):
        srv = self.server
        ctl = srv.control
        kms = srv.kms
        target = self.headers.get("X-Amz-Target")
        op = target.split(".", 1)[1] if target and target.startswith("TrentService.") else None
        try:
            body_obj = json.loads(body) if body else None
        except ValueError:
            body_obj = None
        signed_names = None
        m = re.search(r"SignedHeaders=([^,\s]*)", self.headers.get("Authorization", ""))
        if m:
            signed_names = m.group(1).split(";")
        info = self.note_request(target, signed_names, body_obj)
        ctl.count(op=op or (target or "(none)"), new_request=True)
        akid = "-"
        m = re.search(r"Credential=([^/,\s]*)", self.headers.get("Authorization", ""))
        if m:
            akid = m.group(1)

        def done(status, etype=None, extra="", message=""):
            """Count, note and log the outcome (before the answer is sent, so
            that a client that asks /_emu/stats right after sees it)."""
            info["status"] = status
            info["error"] = etype
            if etype:
                ctl.count(error=etype)
            if message and not extra:
                extra = ": " + message[:300]
            log("%s %d %dms akid=%s%s%s" % (op or target or "-", status, (time.monotonic() - t0) * 1000,
                                            akid, " " + etype if etype else "", extra))

        fault, gen = ctl.take_fault()
        if fault:
            mode = fault["mode"]
            delay = fault.get("delay_ms", 1000 if mode == "slow" else 0) / 1000.0
            end = time.monotonic() + delay
            while time.monotonic() < end:
                time.sleep(min(0.05, max(0.0, end - time.monotonic())))
            if mode == "hang":
                while ctl.generation == gen:
                    if self.client_gone():
                        self.close_connection = True
                        done(0, None, " fault=hang, client went away")
                        return
                    time.sleep(0.05)
                if self.client_gone():
                    self.close_connection = True
                    done(0, None, " fault=hang released, but the client had gone")
                    return
                log("%s fault=hang released" % (op or target or "-"))
            elif mode == "close":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                done(0, None, " fault=close")
                return
            elif mode == "error":
                status = fault.get("status", 500)
                if status == 503:
                    etype, msg = "ServiceUnavailableException", "Service Unavailable"
                else:
                    etype, msg = ("KMSInternalException",
                                  "The request was rejected because an internal exception occurred.")
                done(status, etype, " fault=error")
                self.send_error_json(status, etype, msg)
                return
            elif mode == "throttle":
                done(400, "ThrottlingException", " fault=throttle")
                self.send_error_json(400, "ThrottlingException", "Rate exceeded")
                return

        try:
            required = ("host", "x-amz-date", "x-amz-target")
            now = datetime.datetime.now(datetime.timezone.utc)
            with kms.lock:
                creds_snapshot = {k: dict(v) for k, v in kms.creds.items()}
            headers = list(self.headers.items())
            auth = verify_sigv4(self.command, raw_target, headers, body, creds_snapshot.get,
                                kms.region, "kms", now, required_signed=required)
            akid = auth["akid"]
            info["signed_headers"] = auth["signed"]
        except AuthError as e:
            ctl.count(auth_failure=True)
            extra = ""
            if e.detail is not None:
                extra = "\n" + self.describe_mismatch(e.detail)
            done(400, e.etype, extra, e.message)
            self.send_error_json(400, e.etype, e.message)
            return

        try:
            if self.command != "POST" or raw_target.split(b"?")[0] != b"/":
                raise KmsError("UnknownOperationException", "")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/x-amz-json-1.1":
                raise KmsError("UnknownOperationException", "")
            if op is None:
                raise KmsError("UnknownOperationException", "")
            if not isinstance(body_obj, dict):
                raise KmsError("SerializationException",
                               "The request body is not a JSON object" if body else
                               "The request body is empty; send {} at least")
            result = kms.call(op, body_obj, auth["cred"])
        except KmsError as e:
            done(e.status, e.etype, message=e.message)
            self.send_error_json(e.status, e.etype, e.message)
            return
        except Exception as e:                      # a bug of the emulator
            log("internal error: %r" % (e,))
            done(500, "KMSInternalException")
            self.send_error_json(500, "KMSInternalException",
                                 "The request was rejected because an internal exception occurred.")
            return
        done(200)
        self.send_json(200, result)

    @staticmethod
    def describe_mismatch(detail):
        """The canonical request and string to sign we computed, for the log.
        A session token is a signed header value: it is masked."""
        creq = re.sub(r"(?m)^(x-amz-security-token:).*$", r"\1<masked>", detail["creq"])
        lines = ["  canonical request computed by the emulator:"]
        lines += ["    | " + ln for ln in creq.split("\n")]
        lines += ["  string to sign:"] + ["    | " + ln for ln in detail["sts"].split("\n")]
        lines += ["  note: " + n for n in detail["notes"]]
        return "\n".join(lines)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, kms, control, tls_ctx):
        self.kms = kms
        self.control = control
        self.tls_ctx = tls_ctx
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        if self.tls_ctx is None:
            return super().finish_request(request, client_address)
        try:
            request.settimeout(10)
            conn = self.tls_ctx.wrap_socket(request, server_side=True)
            conn.settimeout(None)
        except (OSError, ssl.SSLError) as e:
            log("tls handshake with %s:%d failed: %s" % (client_address[0], client_address[1], e))
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        log("connection error from %s: %r" % (client_address, exc))


def serve(args):
    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    kms = Kms(config, args.state)
    control = Control()
    tls_ctx = None
    if args.cert:
        tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        tls_ctx.load_cert_chain(args.cert, args.key)
    srv = Server((args.host, args.port), kms, control, tls_ctx)

    def stop(signum, _frame):
        log("signal %d: exiting" % signum)
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log("kms-emu listening on %s://%s:%d region %s account %s, %d keys, %d credentials" % (
        "https" if tls_ctx else "http", args.host, args.port, kms.region, kms.account,
        len(kms.state["keys"]), len(kms.creds)))
    srv.serve_forever(poll_interval=0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--config")
    ap.add_argument("--state")
    ap.add_argument("--verify-suite", metavar="DIR")
    args = ap.parse_args()
    if args.verify_suite:
        return verify_suite(args.verify_suite)
    if not (args.port and args.config and args.state) or bool(args.cert) != bool(args.key):
        ap.error("--port, --config and --state are required (and --cert with --key)")
    serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
