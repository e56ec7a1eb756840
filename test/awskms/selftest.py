#!/usr/bin/python3
"""Exercise a running kms_emu.py: every operation, the SigV4 checks, the
error shapes, faults and the control endpoints.  Has its own small SigV4
signer (not the emulator's verifier).

    selftest.py <endpoint URL> <CA file or -> [--save-blob F | --check-blob F]

--save-blob encrypts under alias/colcrypt-test and writes the blob to F;
--check-blob decrypts F's blob (run it after a restart: keys persist).
Exits non-zero if any check fails.  Uses the default config.json of
server.sh (credentials AKIDCOLCRYPTTEST, ASIACOLCRYPTTEMP, AKIDNOACCESS).
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

REGION = "us-east-1"
ACCOUNT = "111122223333"
AKID, SECRET = "AKIDCOLCRYPTTEST", "colcrypt/test/secret/key/0123456789abcdef"
TEMP_AKID, TEMP_SECRET = "ASIACOLCRYPTTEMP", "temp/secret/key/fedcba9876543210"
TEMP_TOKEN = "FwoGZXIvYXdzEXAMPLEsessiontoken//colcrypt=="
DENIED_AKID, DENIED_SECRET = "AKIDNOACCESS", "noaccess/secret"
SIG_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method. Consult the service "
                "documentation for details.")

failures = 0
checks = 0


def check(cond, what):
    global failures, checks
    checks += 1
    if cond:
        print("ok   %s" % what)
    else:
        failures += 1
        print("FAIL %s" % what)
    return cond


# ---------------------------------------------------------------------------
# A small SigV4 signer (POST / only, which is all KMS needs)
# ---------------------------------------------------------------------------

def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_headers(host, body, akid, secret, target, token=None, when=None, region=REGION,
                  service="kms", scope_date=None, unsigned=(), extra=None, content_type=None):
    """The headers of a signed KMS request.  unsigned: header names (lower
    case) sent but left out of SignedHeaders."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = scope_date or amz_date[:8]
    hdrs = {"content-type": content_type or "application/x-amz-json-1.1", "host": host,
            "x-amz-date": amz_date}
    if target is not None:
        hdrs["x-amz-target"] = target
    if token is not None:
        hdrs["x-amz-security-token"] = token
    for k, v in (extra or {}).items():
        hdrs[k.lower()] = v
    signed = sorted(k for k in hdrs if k not in unsigned)
    creq = "\n".join(["POST", "/", ""] + ["%s:%s" % (k, " ".join(hdrs[k].split())) for k in signed]
                     + ["", ";".join(signed), hashlib.sha256(body).hexdigest()])
    scope = "%s/%s/%s/aws4_request" % (date, region, service)
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request")
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        akid, scope, ";".join(signed), sig)
    return hdrs


class Emu:
    def __init__(self, endpoint, cafile):
        self.endpoint = endpoint.rstrip("/")
        u = urllib.parse.urlsplit(self.endpoint)
        self.host = u.netloc
        self.https = u.scheme == "https"
        self.ctx = ssl.create_default_context(cafile=cafile) if self.https else None
        handlers = [urllib.request.HTTPSHandler(context=self.ctx)] if self.https else []
        self.opener = urllib.request.build_opener(*handlers)

    def http(self, method, path, headers=None, body=b"", timeout=10):
        req = urllib.request.Request(self.endpoint + path, data=body if method != "GET" else None,
                                     headers=headers or {}, method=method)
        try:
            with self.opener.open(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def ctl(self, what, body=None):
        if body is None:
            st, _, data = self.http("GET", "/_emu/" + what)
        else:
            st, _, data = self.http("POST", "/_emu/" + what, {"Content-Type": "application/json"},
                                    json.dumps(body).encode())
        if st != 200:
            raise RuntimeError("control %s: %d %s" % (what, st, data))
        return json.loads(data)

    def call(self, op, params, akid=AKID, secret=SECRET, timeout=10, raw_body=None, tamper=None,
             headers=None, **sign):
        body = raw_body if raw_body is not None else json.dumps(params).encode()
        target = sign.pop("target", "TrentService." + op)
        h = headers if headers is not None else sigv4_headers(self.host, body, akid, secret, target, **sign)
        if tamper:
            h = tamper(h)
        st, rh, data = self.http("POST", "/", h, body, timeout=timeout)
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            obj = None
        return st, obj, rh


def expect_error(res, status, etype, what, message=None, contains=None):
    st, obj, rh = res
    ok = (st == status and isinstance(obj, dict) and obj.get("__type") == etype
          and "message" in obj and rh.get("x-amzn-RequestId")
          and rh.get("Content-Type") == "application/x-amz-json-1.1")
    if ok and message is not None:
        ok = obj["message"] == message
    if ok and contains is not None:
        ok = contains in obj["message"]
    check(ok, "%s -> %d %s%s" % (what, status, etype,
                                 "" if ok else "  (got %s %s)" % (st, json.dumps(obj)[:300])))
    return obj


def expect_ok(res, what):
    st, obj, rh = res
    check(st == 200 and isinstance(obj, dict) and rh.get("x-amzn-RequestId"),
          "%s -> 200%s" % (what, "" if st == 200 else "  (got %s %s)" % (st, json.dumps(obj)[:300])))
    return obj if isinstance(obj, dict) else {}


def b64(b):
    return base64.b64encode(b).decode()


# ---------------------------------------------------------------------------

def test_keys_and_crypto(e):
    print("-- keys, aliases, KeyId forms")
    md = expect_ok(e.call("DescribeKey", {"KeyId": "alias/colcrypt-test"}), "DescribeKey alias/colcrypt-test")
    km = md.get("KeyMetadata", {})
    kid, arn = km.get("KeyId", ""), km.get("Arn", "")
    check(arn == "arn:aws:kms:%s:%s:key/%s" % (REGION, ACCOUNT, kid), "key ARN form")
    want = {"AWSAccountId": ACCOUNT, "KeyUsage": "ENCRYPT_DECRYPT", "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER", "KeySpec": "SYMMETRIC_DEFAULT", "MultiRegion": False,
            "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT", "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"]}
    check(all(km.get(k) == v for k, v in want.items()) and isinstance(km.get("CreationDate"), (int, float)),
          "KeyMetadata fields")
    for ref in (kid, arn, "arn:aws:kms:%s:%s:alias/colcrypt-test" % (REGION, ACCOUNT)):
        md2 = expect_ok(e.call("DescribeKey", {"KeyId": ref}), "DescribeKey %s" % ref[:60])
        check(md2.get("KeyMetadata", {}).get("KeyId") == kid, "  resolves to the same key")
    expect_error(e.call("DescribeKey", {"KeyId": "alias/no-such"}), 400, "NotFoundException",
                 "unknown alias", "Alias 'arn:aws:kms:us-east-1:111122223333:alias/no-such' is not found.")
    missing = "0b2e1c9a-1111-4222-8333-444455556666"
    expect_error(e.call("DescribeKey", {"KeyId": missing}), 400, "NotFoundException", "unknown key id",
                 "Key 'arn:aws:kms:us-east-1:111122223333:key/%s' does not exist" % missing)
    other = "arn:aws:kms:eu-west-1:%s:key/%s" % (ACCOUNT, kid)
    expect_error(e.call("DescribeKey", {"KeyId": other}), 400, "NotFoundException",
                 "key ARN of another region", "Key '%s' does not exist" % other)
    expect_error(e.call("DescribeKey", {}), 400, "ValidationException", "DescribeKey without KeyId")

    new = expect_ok(e.call("CreateKey", {"Description": "selftest key"}), "CreateKey").get("KeyMetadata", {})
    kid2, arn2 = new.get("KeyId", ""), new.get("Arn", "")
    check(new.get("KeyState") == "Enabled" and new.get("Description") == "selftest key", "  new key Enabled")
    expect_error(e.call("CreateKey", {"KeySpec": "RSA_2048"}), 400, "UnsupportedOperationException",
                 "CreateKey RSA_2048 (symmetric only)")
    expect_error(e.call("CreateKey", {"KeySpec": "AES"}), 400, "ValidationException", "CreateKey bad KeySpec")
    alias2 = "alias/selftest-%d" % int(time.time() * 1000)
    expect_ok(e.call("CreateAlias", {"AliasName": alias2, "TargetKeyId": kid2}), "CreateAlias " + alias2)
    expect_error(e.call("CreateAlias", {"AliasName": alias2, "TargetKeyId": kid2}), 400,
                 "AlreadyExistsException", "CreateAlias again")
    expect_error(e.call("CreateAlias", {"AliasName": "selftest", "TargetKeyId": kid2}), 400,
                 "ValidationException", "alias without alias/ prefix")
    expect_error(e.call("CreateAlias", {"AliasName": "alias/aws/selftest", "TargetKeyId": kid2}), 400,
                 "NotAuthorizedException", "alias/aws/ prefix is reserved")
    expect_error(e.call("CreateAlias", {"AliasName": "alias/x y", "TargetKeyId": kid2}), 400,
                 "ValidationException", "alias with a space")
    expect_error(e.call("CreateAlias", {"AliasName": "alias/sel2", "TargetKeyId": alias2}), 400,
                 "ValidationException", "alias targeting an alias")
    la = expect_ok(e.call("ListAliases", {}), "ListAliases")
    names = {a.get("AliasName"): a for a in la.get("Aliases", [])}
    check(alias2 in names and names[alias2].get("TargetKeyId") == kid2
          and names[alias2].get("AliasArn") == "arn:aws:kms:%s:%s:%s" % (REGION, ACCOUNT, alias2)
          and la.get("Truncated") is False, "  lists the new alias with ARN and target")
    la1 = expect_ok(e.call("ListAliases", {"Limit": 1}), "ListAliases Limit 1 (the health check)")
    check(len(la1.get("Aliases", [])) == 1 and la1.get("Truncated") is True and la1.get("NextMarker"),
          "  one alias, Truncated, NextMarker")

    print("-- Encrypt / Decrypt")
    ctx = {"colcrypt:cmk": "alias/colcrypt-test", "colcrypt:key_id": "17", "colcrypt:key_version": "1"}
    dek = os.urandom(32)
    enc = expect_ok(e.call("Encrypt", {"KeyId": "alias/colcrypt-test", "Plaintext": b64(dek),
                                       "EncryptionContext": ctx}), "Encrypt 32 bytes with context")
    blob = base64.b64decode(enc.get("CiphertextBlob", ""))
    check(enc.get("KeyId") == arn and enc.get("EncryptionAlgorithm") == "SYMMETRIC_DEFAULT"
          and dek not in blob, "  KeyId is the key ARN; blob opaque")
    lr = e.ctl("last-request")
    check(lr.get("target") == "TrentService.Encrypt"
          and lr.get("signed_headers") == ["content-type", "host", "x-amz-date", "x-amz-target"]
          and lr.get("fields") == ["EncryptionContext", "KeyId", "Plaintext"]
          and lr.get("encryption_context") == ctx and b64(dek) not in json.dumps(lr)
          and "Signature" not in json.dumps(lr), "last-request: names, target, context; no plaintext")
    rev = dict(reversed(list(ctx.items())))
    dec = expect_ok(e.call("Decrypt", {"CiphertextBlob": enc.get("CiphertextBlob"), "EncryptionContext": rev,
                                       "KeyId": "alias/colcrypt-test"}), "Decrypt (context keys reordered)")
    check(base64.b64decode(dec.get("Plaintext", "")) == dek and dec.get("KeyId") == arn
          and dec.get("EncryptionAlgorithm") == "SYMMETRIC_DEFAULT", "  plaintext back, KeyId ARN")
    dec = expect_ok(e.call("Decrypt", {"CiphertextBlob": enc.get("CiphertextBlob"), "EncryptionContext": ctx}),
                    "Decrypt without KeyId")
    check(base64.b64decode(dec.get("Plaintext", "")) == dek, "  plaintext back")
    bad = dict(ctx, **{"colcrypt:key_id": "18"})
    expect_error(e.call("Decrypt", {"CiphertextBlob": enc.get("CiphertextBlob"), "EncryptionContext": bad}),
                 400, "InvalidCiphertextException", "Decrypt with another context")
    expect_error(e.call("Decrypt", {"CiphertextBlob": enc.get("CiphertextBlob")}), 400,
                 "InvalidCiphertextException", "Decrypt without the context")
    expect_error(e.call("Decrypt", {"CiphertextBlob": enc.get("CiphertextBlob"), "EncryptionContext": dict(
        ctx, extra="x")}), 400, "InvalidCiphertextException", "Decrypt with an extra context pair")
    t = bytearray(blob)
    t[-5] ^= 1
    expect_error(e.call("Decrypt", {"CiphertextBlob": b64(bytes(t)), "EncryptionContext": ctx}), 400,
                 "InvalidCiphertextException", "Decrypt a tampered blob")
    expect_error(e.call("Decrypt", {"CiphertextBlob": b64(os.urandom(120))}), 400,
                 "InvalidCiphertextException", "Decrypt garbage")
    expect_error(e.call("Decrypt", {"CiphertextBlob": enc.get("CiphertextBlob"), "EncryptionContext": ctx,
                                    "KeyId": kid2}), 400, "IncorrectKeyException", "Decrypt naming another key",
                 "The key ID in the request does not identify a CMK that can perform this operation.")
    expect_error(e.call("Decrypt", {"CiphertextBlob": "!!notbase64!!"}), 400, "SerializationException",
                 "Decrypt blob not base64")
    expect_error(e.call("Encrypt", {"KeyId": kid, "Plaintext": ""}), 400, "ValidationException",
                 "Encrypt 0 bytes")
    expect_error(e.call("Encrypt", {"KeyId": kid, "Plaintext": b64(b"x" * 4097)}), 400, "ValidationException",
                 "Encrypt 4097 bytes")
    expect_ok(e.call("Encrypt", {"KeyId": kid, "Plaintext": b64(b"x" * 4096)}), "Encrypt 4096 bytes")
    expect_error(e.call("Encrypt", {"KeyId": kid, "Plaintext": b64(dek), "EncryptionContext": {"a": 1}}), 400,
                 "SerializationException", "context value not a string")
    expect_error(e.call("Encrypt", {"KeyId": kid, "Plaintext": b64(dek), "EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}),
                 400, "InvalidKeyUsageException", "Encrypt with an RSA algorithm")
    expect_error(e.call("Encrypt", {"Plaintext": b64(dek)}), 400, "ValidationException", "Encrypt without KeyId")
    expect_error(e.call("Encrypt", {"KeyId": "alias/nope", "Plaintext": b64(dek)}), 400, "NotFoundException",
                 "Encrypt under an unknown alias")

    print("-- GenerateDataKey")
    for spec, n in (({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16), ({"NumberOfBytes": 64}, 64)):
        g = expect_ok(e.call("GenerateDataKey", dict(spec, KeyId=kid, EncryptionContext=ctx)),
                      "GenerateDataKey %s" % spec)
        pt = base64.b64decode(g.get("Plaintext", ""))
        d = e.call("Decrypt", {"CiphertextBlob": g.get("CiphertextBlob"), "EncryptionContext": ctx})[1] or {}
        check(len(pt) == n and g.get("KeyId") == arn and base64.b64decode(d.get("Plaintext", "")) == pt,
              "  %d bytes, blob decrypts to them" % n)
    expect_error(e.call("GenerateDataKey", {"KeyId": kid}), 400, "ValidationException", "neither KeySpec nor NumberOfBytes")
    expect_error(e.call("GenerateDataKey", {"KeyId": kid, "KeySpec": "AES_256", "NumberOfBytes": 32}), 400,
                 "ValidationException", "both KeySpec and NumberOfBytes")
    expect_error(e.call("GenerateDataKey", {"KeyId": kid, "NumberOfBytes": 1025}), 400, "ValidationException",
                 "NumberOfBytes 1025")

    print("-- ReEncrypt")
    ctx2 = dict(ctx, **{"colcrypt:cmk": alias2})
    r = expect_ok(e.call("ReEncrypt", {"CiphertextBlob": enc.get("CiphertextBlob"), "SourceEncryptionContext": ctx,
                                       "SourceKeyId": "alias/colcrypt-test", "DestinationKeyId": alias2,
                                       "DestinationEncryptionContext": ctx2}), "ReEncrypt to another key")
    check(r.get("SourceKeyId") == arn and r.get("KeyId") == arn2 and "Plaintext" not in r
          and r.get("SourceEncryptionAlgorithm") == "SYMMETRIC_DEFAULT"
          and r.get("DestinationEncryptionAlgorithm") == "SYMMETRIC_DEFAULT", "  shape, no plaintext")
    d = expect_ok(e.call("Decrypt", {"CiphertextBlob": r.get("CiphertextBlob"), "EncryptionContext": ctx2,
                                     "KeyId": arn2}), "Decrypt the re-encrypted blob under the new key")
    check(base64.b64decode(d.get("Plaintext", "")) == dek, "  same plaintext")
    expect_error(e.call("ReEncrypt", {"CiphertextBlob": enc.get("CiphertextBlob"), "SourceEncryptionContext": ctx,
                                      "SourceKeyId": kid2, "DestinationKeyId": kid}), 400,
                 "IncorrectKeyException", "ReEncrypt naming the wrong source key")
    expect_error(e.call("ReEncrypt", {"CiphertextBlob": enc.get("CiphertextBlob"), "SourceEncryptionContext": ctx2,
                                      "DestinationKeyId": kid}), 400, "InvalidCiphertextException",
                 "ReEncrypt with the wrong source context")

    print("-- rotation (of the key made above: the shared test key keeps its rotation quota)")
    old_blob = r.get("CiphertextBlob")
    check(((e.call("ListKeyRotations", {"KeyId": kid2})[1] or {}).get("Rotations")) == [],
          "ListKeyRotations of a new key: none")
    rk = expect_ok(e.call("RotateKeyOnDemand", {"KeyId": alias2}), "RotateKeyOnDemand")
    check(rk.get("KeyId") == kid2, "  answers the key id")
    lr = expect_ok(e.call("ListKeyRotations", {"KeyId": arn2}), "ListKeyRotations")
    rots = lr.get("Rotations", [])
    check(len(rots) == 1 and rots[0].get("RotationType") == "ON_DEMAND" and rots[0].get("KeyId") == kid2
          and isinstance(rots[0].get("RotationDate"), (int, float)) and lr.get("Truncated") is False,
          "  lists the ON_DEMAND rotation")
    enc2 = expect_ok(e.call("Encrypt", {"KeyId": kid2, "Plaintext": b64(dek), "EncryptionContext": ctx2}),
                     "Encrypt after rotation")
    check(base64.b64decode(enc2.get("CiphertextBlob", "")) != base64.b64decode(old_blob or ""),
          "  a new blob")
    for label, bl in (("old", old_blob), ("new", enc2.get("CiphertextBlob"))):
        d = e.call("Decrypt", {"CiphertextBlob": bl, "EncryptionContext": ctx2, "KeyId": kid2})[1] or {}
        check(base64.b64decode(d.get("Plaintext", "")) == dek, "  %s blob still decrypts" % label)
    lim = expect_ok(e.call("CreateKey", {"Description": "selftest rotation quota"}), "CreateKey for the quota")
    kid3 = lim.get("KeyMetadata", {}).get("KeyId", "")
    oks = sum(e.call("RotateKeyOnDemand", {"KeyId": kid3})[0] == 200 for _ in range(25))
    check(oks == 25, "25 on-demand rotations of one key")
    expect_error(e.call("RotateKeyOnDemand", {"KeyId": kid3}), 400, "LimitExceededException", "the 26th")
    check(len((e.call("ListKeyRotations", {"KeyId": kid2})[1] or {}).get("Rotations", [])) == 1,
          "  rotations are per key")
    p1 = e.call("ListKeyRotations", {"KeyId": kid3, "Limit": 20})[1] or {}
    p2 = e.call("ListKeyRotations", {"KeyId": kid3, "Limit": 20, "Marker": p1.get("NextMarker", "")})[1] or {}
    check(len(p1.get("Rotations", [])) == 20 and p1.get("Truncated") is True
          and len(p2.get("Rotations", [])) == 5 and p2.get("Truncated") is False, "  ListKeyRotations pages")

    print("-- key states")
    expect_ok(e.call("DisableKey", {"KeyId": kid2}), "DisableKey")
    expect_error(e.call("Encrypt", {"KeyId": kid2, "Plaintext": b64(dek)}), 400, "DisabledException",
                 "Encrypt under a disabled key", "%s is disabled." % arn2)
    expect_error(e.call("Decrypt", {"CiphertextBlob": r.get("CiphertextBlob"), "EncryptionContext": ctx2}), 400,
                 "DisabledException", "Decrypt under a disabled key")
    check((e.call("DescribeKey", {"KeyId": kid2})[1] or {}).get("KeyMetadata", {}).get("KeyState") == "Disabled",
          "  DescribeKey says Disabled")
    expect_ok(e.call("EnableKey", {"KeyId": kid2}), "EnableKey")
    expect_ok(e.call("Decrypt", {"CiphertextBlob": r.get("CiphertextBlob"), "EncryptionContext": ctx2}),
              "Decrypt after EnableKey")
    expect_error(e.call("ScheduleKeyDeletion", {"KeyId": kid2, "PendingWindowInDays": 3}), 400,
                 "ValidationException", "PendingWindowInDays 3")
    s = expect_ok(e.call("ScheduleKeyDeletion", {"KeyId": kid2, "PendingWindowInDays": 7}), "ScheduleKeyDeletion 7 days")
    check(s.get("KeyId") == arn2 and s.get("KeyState") == "PendingDeletion" and s.get("PendingWindowInDays") == 7
          and abs(s.get("DeletionDate", 0) - (time.time() + 7 * 86400)) < 60, "  shape and date")
    expect_error(e.call("Decrypt", {"CiphertextBlob": r.get("CiphertextBlob"), "EncryptionContext": ctx2}), 400,
                 "KMSInvalidStateException", "Decrypt under a key pending deletion")
    expect_error(e.call("EnableKey", {"KeyId": kid2}), 400, "KMSInvalidStateException", "EnableKey pending deletion")
    km2 = (e.call("DescribeKey", {"KeyId": kid2})[1] or {}).get("KeyMetadata", {})
    check(km2.get("KeyState") == "PendingDeletion" and km2.get("Enabled") is False and "DeletionDate" in km2,
          "  DescribeKey says PendingDeletion")
    c = expect_ok(e.call("CancelKeyDeletion", {"KeyId": kid2}), "CancelKeyDeletion")
    check(c.get("KeyId") == arn2 and (e.call("DescribeKey", {"KeyId": kid2})[1] or {}).get(
        "KeyMetadata", {}).get("KeyState") == "Disabled", "  key stays Disabled")
    expect_error(e.call("CancelKeyDeletion", {"KeyId": kid2}), 400, "KMSInvalidStateException",
                 "CancelKeyDeletion when not pending")
    expect_ok(e.call("EnableKey", {"KeyId": kid2}), "EnableKey again")
    return kid, arn


def test_auth(e, kid):
    print("-- signature checks")
    body = {"KeyId": kid}
    now = datetime.datetime.now(datetime.timezone.utc)
    expect_error(e.call("DescribeKey", body, headers={"Content-Type": "application/x-amz-json-1.1",
                                                      "X-Amz-Target": "TrentService.DescribeKey"}),
                 400, "MissingAuthenticationTokenException", "no Authorization", "Missing Authentication Token")

    def set_auth(v):
        return lambda h: dict(h, authorization=v)
    expect_error(e.call("DescribeKey", body, tamper=set_auth("AWS4-HMAC-SHA256 Credential=%s/x" % AKID)), 400,
                 "IncompleteSignatureException", "Authorization without SignedHeaders/Signature")
    expect_error(e.call("DescribeKey", body, tamper=set_auth("Bearer abc")), 400,
                 "IncompleteSignatureException", "another scheme")
    expect_error(e.call("DescribeKey", body, tamper=lambda h: dict(h, authorization=h["authorization"].replace(
        "/%s/kms/aws4_request" % REGION, "/kms/aws4_request"))), 400, "IncompleteSignatureException",
        "Credential with 4 parts")
    expect_error(e.call("DescribeKey", body, akid="AKIDUNKNOWN", secret="x"), 400, "UnrecognizedClientException",
                 "unknown access key", "The security token included in the request is invalid.")
    expect_error(e.call("DescribeKey", body, region="eu-west-1"), 400, "InvalidSignatureException",
                 "wrong region", "Credential should be scoped to a valid region.")
    expect_error(e.call("DescribeKey", body, service="s3"), 400, "InvalidSignatureException", "wrong service",
                 contains="correct service")
    expect_error(e.call("DescribeKey", body, scope_date=(now - datetime.timedelta(days=1)).strftime("%Y%m%d")),
                 400, "InvalidSignatureException", "credential scope date != X-Amz-Date", contains="Date in Credential scope")
    expect_error(e.call("DescribeKey", body, when=now - datetime.timedelta(minutes=6)), 400,
                 "InvalidSignatureException", "X-Amz-Date 6 min old", contains="Signature expired: ")
    expect_ok(e.call("DescribeKey", body, when=now - datetime.timedelta(minutes=4)), "X-Amz-Date 4 min old")
    expect_error(e.call("DescribeKey", body, when=now + datetime.timedelta(minutes=6)), 400,
                 "InvalidSignatureException", "X-Amz-Date 6 min ahead", contains="Signature not yet current")
    expect_error(e.call("DescribeKey", body, unsigned=("host",)), 400, "IncompleteSignatureException",
                 "Host not signed")
    expect_error(e.call("DescribeKey", body, unsigned=("x-amz-date",)), 400, "IncompleteSignatureException",
                 "X-Amz-Date not signed")
    expect_error(e.call("DescribeKey", body, unsigned=("x-amz-target",)), 400, "IncompleteSignatureException",
                 "X-Amz-Target not signed")
    expect_ok(e.call("DescribeKey", body, unsigned=("content-type",)), "Content-Type not signed (allowed)")

    def flip(h):
        a = h["authorization"]
        return dict(h, authorization=a[:-1] + ("0" if a[-1] != "0" else "1"))
    expect_error(e.call("DescribeKey", body, tamper=flip), 400, "InvalidSignatureException", "tampered signature",
                 SIG_MISMATCH)
    expect_error(e.call("DescribeKey", body, secret="wrong"), 400, "InvalidSignatureException", "wrong secret",
                 SIG_MISMATCH)
    signed_body = json.dumps(body).encode()
    h = sigv4_headers(e.host, signed_body, AKID, SECRET, "TrentService.DescribeKey")
    expect_error(e.call("DescribeKey", None, raw_body=json.dumps({"KeyId": "alias/colcrypt-test"}).encode(),
                        headers=h), 400, "InvalidSignatureException", "body changed after signing")
    expect_error(e.call("DescribeKey", body, tamper=lambda h: dict(h, **{"x-amz-target": "TrentService.ListKeys"})),
                 400, "InvalidSignatureException", "X-Amz-Target changed after signing")
    expect_ok(e.call("DescribeKey", body, extra={"X-Amz-Content-Sha256": hashlib.sha256(
        json.dumps(body).encode()).hexdigest()}), "signed X-Amz-Content-Sha256 (right hash)")
    expect_error(e.call("DescribeKey", body, extra={"X-Amz-Content-Sha256": "0" * 64}), 400,
                 "InvalidSignatureException", "X-Amz-Content-Sha256 wrong hash")
    expect_ok(e.call("DescribeKey", body, extra={"My-Header": "  a   b  "}), "an extra signed header with spaces")

    print("-- session credentials")
    expect_ok(e.call("DescribeKey", body, akid=TEMP_AKID, secret=TEMP_SECRET, token=TEMP_TOKEN),
              "session credentials with their token (signed)")
    expect_ok(e.call("DescribeKey", body, akid=TEMP_AKID, secret=TEMP_SECRET, token=TEMP_TOKEN,
                     unsigned=("x-amz-security-token",)), "token sent but not signed (accepted)")
    expect_error(e.call("DescribeKey", body, akid=TEMP_AKID, secret=TEMP_SECRET), 400,
                 "UnrecognizedClientException", "session credentials without the token",
                 "The security token included in the request is invalid.")
    expect_error(e.call("DescribeKey", body, akid=TEMP_AKID, secret=TEMP_SECRET, token=TEMP_TOKEN + "x"), 400,
                 "UnrecognizedClientException", "wrong session token")
    expect_error(e.call("DescribeKey", body, token=TEMP_TOKEN), 400, "UnrecognizedClientException",
                 "a token with long-term credentials")
    e.ctl("credential", {"access_key_id": TEMP_AKID, "expires": int(time.time()) - 5})
    expect_error(e.call("DescribeKey", body, akid=TEMP_AKID, secret=TEMP_SECRET, token=TEMP_TOKEN), 400,
                 "ExpiredTokenException", "expired session token",
                 "The security token included in the request is expired")
    e.ctl("credential", {"access_key_id": TEMP_AKID, "expires": int(time.time()) + 3600})
    expect_ok(e.call("DescribeKey", body, akid=TEMP_AKID, secret=TEMP_SECRET, token=TEMP_TOKEN),
              "token valid again (expires in an hour)")
    e.ctl("credential", {"access_key_id": TEMP_AKID, "expires": None})

    print("-- access denied")
    arn = "arn:aws:kms:%s:%s:key/%s" % (REGION, ACCOUNT, kid)
    expect_error(e.call("Encrypt", {"KeyId": kid, "Plaintext": b64(b"k" * 32)}, akid=DENIED_AKID,
                        secret=DENIED_SECRET), 400, "AccessDeniedException", "Encrypt without kms:Encrypt",
                 "User: arn:aws:iam::%s:user/%s is not authorized to perform: kms:Encrypt on resource: %s "
                 "because no identity-based policy allows the kms:Encrypt action" % (ACCOUNT, DENIED_AKID, arn))
    expect_ok(e.call("DescribeKey", body, akid=DENIED_AKID, secret=DENIED_SECRET), "DescribeKey is allowed")
    expect_ok(e.call("ListAliases", {"Limit": 1}, akid=DENIED_AKID, secret=DENIED_SECRET), "ListAliases is allowed")

    print("-- protocol")
    expect_error(e.call("DescribeKey", body, content_type="application/json"), 400, "UnknownOperationException",
                 "Content-Type application/json")
    expect_error(e.call("Frobnicate", body), 400, "UnknownOperationException", "unknown operation")
    expect_error(e.call("Sign", body), 400, "UnknownOperationException", "KMS operation not emulated")
    expect_error(e.call("DescribeKey", body, target="KMS.DescribeKey"), 400, "UnknownOperationException",
                 "X-Amz-Target with another service prefix")
    expect_error(e.call("DescribeKey", body, target=None), 400, "IncompleteSignatureException",
                 "no X-Amz-Target (so not signed)")
    expect_error(e.call("DescribeKey", None, raw_body=b"KeyId=x"), 400, "SerializationException", "body not JSON")
    expect_error(e.call("DescribeKey", None, raw_body=b"[1]"), 400, "SerializationException", "body a JSON array")
    expect_error(e.call("DescribeKey", {"KeyId": 5}), 400, "SerializationException", "KeyId a number")


def test_keepalive(e, kid):
    print("-- HTTP/1.1 keep-alive")
    u = urllib.parse.urlsplit(e.endpoint)
    if e.https:
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=e.ctx, timeout=10)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    socks = set()
    ok = True
    for i in range(3):
        body = json.dumps({"KeyId": kid}).encode()
        conn.request("POST", "/", body, sigv4_headers(e.host, body, AKID, SECRET, "TrentService.DescribeKey"))
        r = conn.getresponse()
        r.read()
        socks.add(id(conn.sock))
        ok = ok and r.status == 200 and r.getheader("Content-Length") is not None and not r.will_close
    body = b"{}"
    conn.request("POST", "/", body, sigv4_headers(e.host, body, AKID, SECRET + "x", "TrentService.ListAliases"))
    r = conn.getresponse()
    r.read()
    ok = ok and r.status == 400 and not r.will_close
    socks.add(id(conn.sock))
    conn.close()
    check(ok and len(socks) == 1, "4 requests (one refused) on one connection, Content-Length on each")


def test_faults(e, kid):
    print("-- faults")
    body = {"KeyId": kid}
    e.ctl("fault", {"mode": "error", "count": 1})
    expect_error(e.call("DescribeKey", body), 500, "KMSInternalException", "error fault (500)",
                 "The request was rejected because an internal exception occurred.")
    expect_ok(e.call("DescribeKey", body), "count ran out: normal again")
    e.ctl("fault", {"mode": "error", "count": 1, "status": 503})
    expect_error(e.call("DescribeKey", body), 503, "ServiceUnavailableException", "error fault 503")
    e.ctl("fault", {"mode": "throttle", "count": 2})
    expect_error(e.call("DescribeKey", body), 400, "ThrottlingException", "throttle 1/2", "Rate exceeded")
    expect_error(e.call("DescribeKey", body), 400, "ThrottlingException", "throttle 2/2")
    expect_ok(e.call("DescribeKey", body), "after two throttles")
    check(e.ctl("fault").get("mode") == "none", "fault reset to none")

    e.ctl("fault", {"mode": "close", "count": 1})
    try:
        st = e.call("DescribeKey", body)[0]
        check(False, "close fault drops the connection (got %s)" % st)
    except (ConnectionError, http.client.HTTPException, urllib.error.URLError, OSError) as ex:
        check(True, "close fault drops the connection (%s)" % type(ex).__name__)

    e.ctl("fault", {"mode": "slow", "count": 1, "delay_ms": 700})
    t = time.monotonic()
    expect_ok(e.call("DescribeKey", body), "slow fault answers")
    check(time.monotonic() - t >= 0.7, "  after >= 700 ms (%.2f s)" % (time.monotonic() - t))

    e.ctl("fault", {"mode": "hang", "count": 1})
    t = time.monotonic()
    try:
        e.call("DescribeKey", body, timeout=1.0)
        check(False, "hang fault: no answer")
    except (TimeoutError, socket.timeout, urllib.error.URLError, OSError):
        check(time.monotonic() - t >= 0.9, "hang fault: no answer within the client's 1 s timeout")
    time.sleep(0.3)                       # let the emulator see the client go
    check(e.ctl("health").get("ok") is True, "control endpoint answers while a request hangs")
    e.ctl("fault", {"mode": "none"})

    e.ctl("fault", {"mode": "hang"})
    box = {}

    def hung():
        try:
            box["res"] = e.call("DescribeKey", body, timeout=20)
        except Exception as ex:  # noqa: BLE001
            box["err"] = ex
    th = threading.Thread(target=hung)
    th.start()
    time.sleep(0.5)
    check(th.is_alive() and e.ctl("stats").get("total", 0) > 0, "a second request hangs; stats answers")
    e.ctl("fault", {"mode": "none"})
    th.join(10)
    check(not th.is_alive() and box.get("res", (0,))[0] == 200, "clearing the fault releases it with an answer")


def test_stats(e, kid):
    print("-- stats")
    e.ctl("reset-stats", {})
    body = {"KeyId": kid, "Plaintext": b64(b"s" * 32)}
    e.call("Encrypt", body)
    e.call("Encrypt", body)
    e.call("Encrypt", body, secret="bad")
    e.ctl("fault", {"mode": "throttle", "count": 1})
    e.call("Decrypt", {"CiphertextBlob": b64(b"x" * 80)})
    e.call("Decrypt", {"CiphertextBlob": b64(b"x" * 80)})
    s = e.ctl("stats")
    check(s.get("total") == 5 and s.get("by_op") == {"Encrypt": 3, "Decrypt": 2} and s.get("faulted") == 1
          and s.get("signature_failures") == 1
          and s.get("by_error") == {"InvalidSignatureException": 1, "ThrottlingException": 1,
                                    "InvalidCiphertextException": 1},
          "counts: %s" % json.dumps(s, sort_keys=True))


def main():
    args = sys.argv[1:]
    if len(args) not in (2, 4):
        print(__doc__)
        return 2
    e = Emu(args[0], None if args[1] == "-" else args[1])
    if len(args) == 4:
        path = args[3]
        ctx = {"selftest": "persist"}
        if args[2] == "--save-blob":
            r = expect_ok(e.call("Encrypt", {"KeyId": "alias/colcrypt-test", "Plaintext": b64(b"persist" * 4),
                                             "EncryptionContext": ctx}), "Encrypt for --save-blob")
            with open(path, "w") as f:
                f.write(r.get("CiphertextBlob", ""))
        elif args[2] == "--check-blob":
            with open(path) as f:
                blob = f.read().strip()
            r = expect_ok(e.call("Decrypt", {"CiphertextBlob": blob, "EncryptionContext": ctx}),
                          "Decrypt a blob saved before the restart")
            check(base64.b64decode(r.get("Plaintext", "")) == b"persist" * 4, "  same plaintext")
        else:
            print(__doc__)
            return 2
    else:
        e.ctl("fault", {"mode": "none"})
        e.ctl("reset-stats", {})
        kid, _ = test_keys_and_crypto(e)
        test_auth(e, kid)
        test_keepalive(e, kid)
        test_faults(e, kid)
        test_stats(e, kid)
    print("%d checks, %d failed" % (checks, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
