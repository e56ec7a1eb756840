#!/usr/bin/python3
"""Check a running Vault emulator (test/vault/vault_emu.py) feature by feature.

    selftest.py <base URL> [<CA file>]     e.g. https://localhost:8200 certs/ca.crt

Starts nothing: talks to the emulator with urllib (and http.client for the
keep-alive check), using the default test configuration that server.sh
writes.  Prints one line per check and exits non-zero if any failed.  It
creates keys with random names and puts faults, TTLs, tokens and secret_id
back as it found them.
"""

import base64
import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from urllib.parse import urlsplit

ROOT = "root-token"
ROLE_ID = "colcrypt-role-id"
SECRET_ID = "colcrypt-secret-id"
ACL_DENIED = "1 error occurred:\n\t* permission denied\n\n"
MISSING_CONTEXT = ("missing 'context' for key derivation; the key was created using a derived key, "
                   "which means additional, per-request information must be included in order to "
                   "perform operations with the key")

BASE = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "https://localhost:8200"
CA = sys.argv[2] if len(sys.argv) > 2 else None
SSL_CTX = ssl.create_default_context(cafile=CA) if BASE.startswith("https") else None
RUN = os.urandom(4).hex()

failures = []
checks = 0


class Resp:
    def __init__(self, status, body, headers, elapsed):
        self.status = status
        self.raw = body
        self.headers = headers
        self.elapsed = elapsed
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def errors(self):
        return (self.json or {}).get("errors")

    def __repr__(self):
        return "HTTP %d %s" % (self.status, self.raw[:300])


def req(method, path, body=None, token=None, ns=None, headers=None, timeout=10, raw=None):
    h = {"X-Vault-Request": "true"}
    if token is not None:
        h["X-Vault-Token"] = token
    if ns is not None:
        h["X-Vault-Namespace"] = ns
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    r = urllib.request.Request(BASE + path, data=data, method=method, headers=h)
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(r, timeout=timeout, context=SSL_CTX) as f:
            return Resp(f.status, f.read().decode(), dict(f.headers), time.monotonic() - t0)
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.read().decode(), dict(e.headers), time.monotonic() - t0)


def ctl(what, body=None):
    r = req("POST" if body is not None else "GET", "/_emu/" + what, body)
    if r.status != 200:
        raise AssertionError("control %s: %r" % (what, r))
    return r.json


def check(name, cond, detail=""):
    global checks
    checks += 1
    if cond:
        print("ok   %s" % name)
    else:
        print("FAIL %s %s" % (name, detail))
        failures.append(name)


def expect(name, r, status, error=None, contains=None):
    ok = r.status == status
    if ok and error is not None:
        ok = r.errors == [error]
    if ok and contains is not None:
        ok = any(contains in e for e in (r.errors or []))
    check(name, ok, repr(r))
    return r


def b(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def unb(s):
    return base64.b64decode(s)


def enc(key, pt, token=ROOT, ns=None, **kw):
    body = {"plaintext": b(pt)}
    body.update(kw)
    return req("POST", "/v1/transit/encrypt/" + key, body, token=token, ns=ns)


def dec(key, ct, token=ROOT, ns=None, **kw):
    body = {"ciphertext": ct}
    body.update(kw)
    return req("POST", "/v1/transit/decrypt/" + key, body, token=token, ns=ns)


def login():
    r = req("POST", "/v1/auth/approle/login", {"role_id": ROLE_ID, "secret_id": SECRET_ID})
    assert r.status == 200, r
    return r.json["auth"]


# ---------------------------------------------------------------------------

def t_health():
    r = req("GET", "/v1/sys/health")
    check("sys/health 200", r.status == 200 and r.json["sealed"] is False
          and r.json["initialized"] is True and r.json["version"].endswith("+emu")
          and isinstance(r.json["server_time_utc"], int) and "cluster_id" in r.json, repr(r))
    check("Content-Type json", r.headers.get("Content-Type") == "application/json", r.headers)
    r = req("HEAD", "/v1/sys/health")
    check("HEAD sys/health", r.status == 200 and r.raw == "", repr(r))
    r = req("GET", "/v1/sys/seal-status")
    check("sys/seal-status", r.status == 200 and r.json["sealed"] is False and r.json["type"] == "shamir", repr(r))
    r = req("GET", "/v1/sys/health", ns="team1")
    check("sys/health with a namespace", r.status == 200, repr(r))


def t_keys():
    k = "st-keys-" + RUN
    r = req("POST", "/v1/transit/keys/" + k, {"type": "aes256-gcm96", "derived": False, "exportable": False}, token=ROOT)
    check("create key: 2xx", r.status in (200, 204), repr(r))
    r = req("POST", "/v1/transit/keys/" + k, {}, token=ROOT)
    check("create again: idempotent, warns", r.status in (200, 204) and (r.status == 204 or
          "key %s already existed" % k in (r.json.get("warnings") or [])), repr(r))
    r = req("GET", "/v1/transit/keys/" + k, token=ROOT)
    d = (r.json or {}).get("data") or {}
    check("read key", r.status == 200 and d.get("name") == k and d.get("type") == "aes256-gcm96"
          and d.get("derived") is False and d.get("latest_version") == 1 and d.get("min_decryption_version") == 1
          and d.get("min_encryption_version") == 0 and list(d.get("keys", {})) == ["1"]
          and d.get("supports_encryption") is True and d.get("exportable") is False
          and d.get("deletion_allowed") is False and "kdf" not in d, repr(r))
    expect("read unknown key: 404 []", req("GET", "/v1/transit/keys/nope-" + RUN, token=ROOT), 404, None)
    check("... errors is []", req("GET", "/v1/transit/keys/nope-" + RUN, token=ROOT).errors == [])
    r = req("POST", "/v1/transit/keys/%s/rotate" % k, {}, token=ROOT)
    check("rotate: 200, latest 2", r.status == 200 and r.json["data"]["latest_version"] == 2
          and sorted(r.json["data"]["keys"]) == ["1", "2"], repr(r))
    expect("rotate unknown key", req("POST", "/v1/transit/keys/nope-%s/rotate" % RUN, {}, token=ROOT),
           400, "key not found")
    expect("unknown key type", req("POST", "/v1/transit/keys/x-" + RUN, {"type": "rsa-1"}, token=ROOT),
           400, "unknown key type rsa-1")
    r = req("POST", "/v1/transit/keys/%s/config" % k, {"min_decryption_version": 2}, token=ROOT)
    check("config min_decryption_version", r.status == 200 and r.json["data"]["min_decryption_version"] == 2, repr(r))
    expect("config beyond latest", req("POST", "/v1/transit/keys/%s/config" % k, {"min_decryption_version": 9},
                                       token=ROOT), 400, "cannot set min decryption version of 9, latest key version is 2")
    expect("config unknown key", req("POST", "/v1/transit/keys/nope-%s/config" % RUN, {"min_decryption_version": 1},
                                     token=ROOT), 400, "no existing key named nope-%s could be found" % RUN)
    k128 = "st-128-" + RUN
    r = req("POST", "/v1/transit/keys/" + k128, {"type": "aes128-gcm96"}, token=ROOT)
    r2 = enc(k128, "sixteen")
    r3 = dec(k128, r2.json["data"]["ciphertext"]) if r2.status == 200 else r2
    check("aes128-gcm96 round trip", r.status in (200, 204) and r3.status == 200
          and unb(r3.json["data"]["plaintext"]) == b"sixteen", repr(r3))
    kc = "st-chacha-" + RUN
    req("POST", "/v1/transit/keys/" + kc, {"type": "chacha20-poly1305"}, token=ROOT)
    r2 = enc(kc, "cha")
    r3 = dec(kc, r2.json["data"]["ciphertext"]) if r2.status == 200 else r2
    check("chacha20-poly1305 round trip", r3.status == 200 and unb(r3.json["data"]["plaintext"]) == b"cha", repr(r3))
    r = req("GET", "/v1/transit/keys/preexisting", token=ROOT)
    check("config key 'preexisting' exists", r.status == 200 and r.json["data"]["derived"] is False, repr(r))


def t_encrypt_decrypt():
    k = "st-ed-" + RUN
    req("POST", "/v1/transit/keys/" + k, {}, token=ROOT)
    pt = os.urandom(32)
    r = enc(k, pt)
    ct = r.json["data"]["ciphertext"] if r.status == 200 else ""
    check("encrypt: vault:v1:", r.status == 200 and ct.startswith("vault:v1:") and r.json["data"]["key_version"] == 1, repr(r))
    check("ciphertext is nonce || ct || tag", len(unb(ct.split(":", 2)[2])) == 12 + 32 + 16, ct)
    r = dec(k, ct)
    check("decrypt round trip", r.status == 200 and unb(r.json["data"]["plaintext"]) == pt, repr(r))
    r = dec(k, ct, context=b("ignored"))
    check("non-derived key ignores context", r.status == 200 and unb(r.json["data"]["plaintext"]) == pt, repr(r))
    r = enc(k, "", )
    r2 = dec(k, r.json["data"]["ciphertext"])
    check("empty plaintext", r2.status == 200 and r2.json["data"]["plaintext"] == "", repr(r2))
    # associated data
    r = enc(k, pt, associated_data=b("id=1"))
    ct_ad = r.json["data"]["ciphertext"]
    r = dec(k, ct_ad, associated_data=b("id=1"))
    check("associated_data round trip", r.status == 200 and unb(r.json["data"]["plaintext"]) == pt, repr(r))
    expect("wrong associated_data", dec(k, ct_ad, associated_data=b("id=2")), 400, "cipher: message authentication failed")
    expect("missing associated_data", dec(k, ct_ad), 400, "cipher: message authentication failed")
    expect("associated_data where there was none", dec(k, ct, associated_data=b("x")), 400,
           "cipher: message authentication failed")
    raw = bytearray(unb(ct.split(":", 2)[2]))
    raw[20] ^= 1
    expect("tampered ciphertext", dec(k, "vault:v1:" + b(bytes(raw))), 400, "cipher: message authentication failed")
    expect("no prefix", dec(k, ct[len("vault:v1:"):]), 400, "invalid ciphertext: no prefix")
    expect("wrong number of fields", dec(k, "vault:v1"), 400, "invalid ciphertext: wrong number of fields")
    expect("bad version", dec(k, "vault:vx:AAAA"), 400, "invalid ciphertext: version number could not be decoded")
    expect("version too new", dec(k, ct.replace("vault:v1:", "vault:v7:")), 400, "invalid ciphertext: version is too new")
    expect("bad ciphertext base64", dec(k, "vault:v1:!!!!"), 400, "invalid ciphertext: could not decode base64")
    expect("short ciphertext", dec(k, "vault:v1:AAAA"), 400, "invalid ciphertext length")
    expect("missing ciphertext", req("POST", "/v1/transit/decrypt/" + k, {}, token=ROOT), 400, "missing ciphertext to decrypt")
    expect("decrypt unknown key", dec("nope-" + RUN, ct), 400, "encryption key not found")
    expect("bad plaintext base64", req("POST", "/v1/transit/encrypt/" + k, {"plaintext": "aGVsbG8"}, token=ROOT),
           400, "illegal base64 data at input byte 4")
    expect("missing plaintext", req("POST", "/v1/transit/encrypt/" + k, {}, token=ROOT), 400, "missing plaintext to encrypt")
    expect("key_version too high", enc(k, "x", key_version=5), 400,
           "requested version for encryption is higher than the latest key version")
    expect("batch_input refused", req("POST", "/v1/transit/encrypt/" + k, {"batch_input": []}, token=ROOT), 400,
           "batch_input is not supported by this emulator")
    # key versions, min_decryption_version
    req("POST", "/v1/transit/keys/%s/rotate" % k, {}, token=ROOT)
    r = enc(k, pt)
    check("after rotate: v2", r.status == 200 and r.json["data"]["ciphertext"].startswith("vault:v2:")
          and r.json["data"]["key_version"] == 2, repr(r))
    r = enc(k, pt, key_version=1)
    check("key_version 1 on request", r.status == 200 and r.json["data"]["ciphertext"].startswith("vault:v1:"), repr(r))
    r = dec(k, ct)
    check("v1 still decrypts", r.status == 200 and unb(r.json["data"]["plaintext"]) == pt, repr(r))
    # upsert on encrypt with root
    ku = "st-upsert-" + RUN
    r = enc(ku, "x")
    r2 = req("GET", "/v1/transit/keys/" + ku, token=ROOT)
    check("encrypt creates a missing key (root)", r.status == 200 and r2.status == 200
          and r2.json["data"]["derived"] is False, repr(r2))
    # form-encoded body that is JSON is still JSON (libcurl's default content type)
    r = req("POST", "/v1/transit/encrypt/" + k, raw=json.dumps({"plaintext": b("form")}).encode(), token=ROOT,
            headers={"Content-Type": "application/x-www-form-urlencoded"})
    check("JSON body with form content type", r.status == 200, repr(r))
    return k, ct, ct_ad, pt


def t_rewrap(k, ct, ct_ad, pt):
    r = req("POST", "/v1/transit/rewrap/" + k, {"ciphertext": ct}, token=ROOT)
    new = r.json["data"]["ciphertext"] if r.status == 200 else ""
    check("rewrap v1 -> v2", r.status == 200 and new.startswith("vault:v2:") and r.json["data"]["key_version"] == 2, repr(r))
    r = dec(k, new)
    check("rewrapped decrypts", r.status == 200 and unb(r.json["data"]["plaintext"]) == pt, repr(r))
    r = req("POST", "/v1/transit/rewrap/" + k, {"ciphertext": ct, "key_version": 1}, token=ROOT)
    check("rewrap to key_version 1", r.status == 200 and r.json["data"]["ciphertext"].startswith("vault:v1:"), repr(r))
    r = req("POST", "/v1/transit/rewrap/" + k, {"ciphertext": ct_ad, "associated_data": b("id=1")}, token=ROOT)
    expect("rewrap of associated_data ciphertext fails (Vault takes none)", r, 400, "cipher: message authentication failed")
    req("POST", "/v1/transit/keys/%s/config" % k, {"min_decryption_version": 2}, token=ROOT)
    expect("min_decryption_version 2: v1 too old", dec(k, ct), 400,
           "ciphertext or signature version is disallowed by policy (too old)")
    expect("rewrap of too-old ciphertext", req("POST", "/v1/transit/rewrap/" + k, {"ciphertext": ct}, token=ROOT), 400,
           "ciphertext or signature version is disallowed by policy (too old)")
    expect("rewrap unknown key", req("POST", "/v1/transit/rewrap/nope-" + RUN, {"ciphertext": ct}, token=ROOT), 400,
           "encryption key not found")
    r = req("POST", "/v1/transit/rewrap/" + k, {"ciphertext": new, "associated_data": "eA=="}, token=ROOT)
    check("rewrap warns about associated_data", r.status == 200 and any("associated_data" in w for w in r.json["warnings"] or []),
          repr(r))


def t_derived():
    k = "st-derived-" + RUN
    r = req("POST", "/v1/transit/keys/" + k, {"derived": True}, token=ROOT)
    r = req("GET", "/v1/transit/keys/" + k, token=ROOT)
    check("derived key: kdf hkdf_sha256", r.status == 200 and r.json["data"]["derived"] is True
          and r.json["data"]["kdf"] == "hkdf_sha256", repr(r))
    expect("derived: encrypt without context", enc(k, "x"), 400, MISSING_CONTEXT)
    ctx = b("cmk=a;dek=1")
    r = enc(k, "secret", context=ctx)
    ct = r.json["data"]["ciphertext"]
    r = dec(k, ct, context=ctx)
    check("derived round trip", r.status == 200 and unb(r.json["data"]["plaintext"]) == b"secret", repr(r))
    expect("derived: wrong context", dec(k, ct, context=b("cmk=a;dek=2")), 400, "cipher: message authentication failed")
    expect("derived: decrypt without context", dec(k, ct), 400, MISSING_CONTEXT)
    expect("bad context base64", dec(k, ct, context="abc"), 400, "illegal base64 data at input byte 0")
    r = enc(k, "aad too", context=ctx, associated_data=b("more"))
    r2 = dec(k, r.json["data"]["ciphertext"], context=ctx, associated_data=b("more"))
    check("derived + associated_data", r2.status == 200, repr(r2))
    req("POST", "/v1/transit/keys/%s/rotate" % k, {}, token=ROOT)
    r = req("POST", "/v1/transit/rewrap/" + k, {"ciphertext": ct, "context": ctx}, token=ROOT)
    new = r.json["data"]["ciphertext"] if r.status == 200 else ""
    check("derived rewrap with context", r.status == 200 and new.startswith("vault:v2:"), repr(r))
    r = dec(k, new, context=ctx)
    check("derived rewrapped decrypts", r.status == 200 and unb(r.json["data"]["plaintext"]) == b"secret", repr(r))
    expect("derived rewrap without context", req("POST", "/v1/transit/rewrap/" + k, {"ciphertext": ct}, token=ROOT),
           400, MISSING_CONTEXT)
    ku = "st-upsert-derived-" + RUN
    r = enc(ku, "x", context=ctx)
    r2 = req("GET", "/v1/transit/keys/" + ku, token=ROOT)
    check("encrypt with context creates a derived key", r.status == 200 and r2.json["data"]["derived"] is True, repr(r2))


def t_auth():
    k = "st-auth-" + RUN
    req("POST", "/v1/transit/keys/" + k, {}, token=ROOT)
    expect("no token: 403", req("GET", "/v1/transit/keys/" + k), 403, "permission denied")
    expect("unknown token: 403", req("GET", "/v1/transit/keys/" + k, token="nope"), 403, "permission denied")
    r = req("GET", "/v1/transit/keys/" + k, headers={"Authorization": "Bearer " + ROOT})
    check("Authorization: Bearer", r.status == 200, repr(r))
    r = enc(k, "x", token="transit-user")
    ct = r.json["data"]["ciphertext"] if r.status == 200 else ""
    check("transit-use: encrypt", r.status == 200, repr(r))
    check("transit-use: decrypt", dec(k, ct, token="transit-user").status == 200)
    check("transit-use: rewrap", req("POST", "/v1/transit/rewrap/" + k, {"ciphertext": ct}, token="transit-user").status == 200)
    check("transit-use: read key", req("GET", "/v1/transit/keys/" + k, token="transit-user").status == 200)
    expect("transit-use: create key", req("POST", "/v1/transit/keys/x-" + RUN, {}, token="transit-user"), 403, ACL_DENIED)
    expect("transit-use: rotate", req("POST", "/v1/transit/keys/%s/rotate" % k, {}, token="transit-user"), 403, ACL_DENIED)
    expect("transit-use: config", req("POST", "/v1/transit/keys/%s/config" % k, {}, token="transit-user"), 403, ACL_DENIED)
    expect("transit-use: encrypt to a missing key (would create)", enc("nope-" + RUN, "x", token="transit-user"),
           403, ACL_DENIED)
    r = req("GET", "/v1/transit/keys/nope-" + RUN, token="transit-user")
    check("transit-use: read missing key: 404", r.status == 404, repr(r))
    r = req("GET", "/v1/auth/token/lookup-self", token="no-access")
    check("default policy: lookup-self", r.status == 200 and r.json["data"]["policies"] == ["default"], repr(r))
    expect("default policy: no encrypt", enc(k, "x", token="no-access"), 403, ACL_DENIED)
    r = req("GET", "/v1/auth/token/lookup-self", token=ROOT)
    check("root lookup-self", r.status == 200 and r.json["data"]["policies"] == ["root"]
          and r.json["data"]["expire_time"] is None and r.json["data"]["ttl"] == 0, repr(r))
    expect("root token is not renewable", req("POST", "/v1/auth/token/renew-self", {}, token=ROOT), 400,
           "lease is not renewable")


def t_approle():
    a = login()
    check("login: hvs. token", a["client_token"].startswith("hvs.") and a["lease_duration"] == 3600
          and a["renewable"] is True and a["policies"] == ["default", "transit-use"]
          and a["token_policies"] == ["default", "transit-use"] and a["metadata"]["role_name"]
          and a["token_type"] == "service" and a["orphan"] is True and a["accessor"], a)
    r = req("POST", "/v1/auth/approle/login", {"role_id": ROLE_ID, "secret_id": SECRET_ID})
    check("login envelope", r.json["data"] is None and r.json["lease_id"] == "" and r.json["wrap_info"] is None, repr(r))
    tok = a["client_token"]
    r = req("GET", "/v1/auth/token/lookup-self", token=tok)
    d = r.json["data"] if r.status == 200 else {}
    check("lookup-self", r.status == 200 and d["policies"] == ["default", "transit-use"] and 3590 <= d["ttl"] <= 3600
          and d["creation_ttl"] == 3600 and d["expire_time"] and d["renewable"] is True
          and d["namespace_path"] == "" and d["accessor"] == a["accessor"], repr(r))
    expect("wrong role_id", req("POST", "/v1/auth/approle/login", {"role_id": "x", "secret_id": SECRET_ID}), 400,
           "invalid role or secret ID")
    expect("wrong secret_id", req("POST", "/v1/auth/approle/login", {"role_id": ROLE_ID, "secret_id": "x"}), 400,
           "invalid role or secret ID")
    expect("missing role_id", req("POST", "/v1/auth/approle/login", {"secret_id": SECRET_ID}), 400, "missing role_id")
    expect("missing secret_id", req("POST", "/v1/auth/approle/login", {"role_id": ROLE_ID}), 400, "missing secret_id")
    expect("login in another namespace", req("POST", "/v1/auth/approle/login", {"role_id": ROLE_ID, "secret_id": SECRET_ID},
                                             ns="team1"), 400, "invalid role or secret ID")
    # renewal and max TTL
    ctl("approle", {"token_ttl": 3, "token_max_ttl": 6})
    a = login()
    tok = a["client_token"]
    check("login with ttl 3", a["lease_duration"] == 3, a)
    r = req("POST", "/v1/auth/token/renew-self", {}, token=tok)
    check("renew-self: lease 3, auth block", r.status == 200 and r.json["auth"]["lease_duration"] == 3
          and r.json["auth"]["client_token"] == tok and r.json["auth"]["renewable"] is True, repr(r))
    r = req("POST", "/v1/auth/token/renew-self", {"increment": "2s"}, token=tok)
    check("renew-self increment 2s", r.status == 200 and r.json["auth"]["lease_duration"] == 2, repr(r))
    r = req("POST", "/v1/auth/token/renew-self", {"increment": 3600}, token=tok)
    w = (r.json or {}).get("warnings") or []
    check("renew-self past max_ttl: capped with warning", r.status == 200 and r.json["auth"]["lease_duration"] <= 6
          and len(w) == 1 and w[0].startswith('TTL of "1h0m0s" exceeded the effective max_ttl of "')
          and w[0].endswith('"; TTL value is capped accordingly'), repr(r))
    expect("bad increment", req("POST", "/v1/auth/token/renew-self", {"increment": "soon"}, token=tok), 400,
           contains="invalid duration")
    r = req("POST", "/v1/auth/token/renew-self", {"increment": 1}, token=tok)
    time.sleep(1.3)
    expect("token expired after its TTL", req("GET", "/v1/auth/token/lookup-self", token=tok), 403, "permission denied")
    r = ctl("approle", {"reset": True})
    check("approle TTLs reset", r["roles"][ROLE_ID]["token_ttl"] == 3600, r)
    # expire-tokens / restore-tokens
    a = login()
    tok = a["client_token"]
    ctl("expire-tokens", {})
    expect("expire-tokens: login token refused", req("GET", "/v1/auth/token/lookup-self", token=tok), 403, "permission denied")
    expect("expire-tokens: config token refused", req("GET", "/v1/auth/token/lookup-self", token="transit-user"), 403,
           "permission denied")
    check("expire-tokens: root still works", req("GET", "/v1/auth/token/lookup-self", token=ROOT).status == 200)
    a = login()
    check("new login after expiry works", req("GET", "/v1/auth/token/lookup-self", token=a["client_token"]).status == 200)
    ctl("restore-tokens", {})
    check("restore-tokens: config token back", req("GET", "/v1/auth/token/lookup-self", token="transit-user").status == 200)
    # secret_id revocation
    ctl("revoke-secret-id", {})
    expect("revoked secret_id: login 400", req("POST", "/v1/auth/approle/login", {"role_id": ROLE_ID, "secret_id": SECRET_ID}),
           400, "invalid role or secret ID")
    ctl("restore-secret-id", {})
    check("restored secret_id: login works", req("POST", "/v1/auth/approle/login",
                                                 {"role_id": ROLE_ID, "secret_id": SECRET_ID}).status == 200)
    # revoke-self
    a = login()
    r = req("POST", "/v1/auth/token/revoke-self", {}, token=a["client_token"])
    check("revoke-self: 204, then refused", r.status == 204 and
          req("GET", "/v1/auth/token/lookup-self", token=a["client_token"]).status == 403, repr(r))


def t_namespaces():
    k = "st-ns-" + RUN
    r = req("POST", "/v1/transit/keys/" + k, {}, token="ns-token", ns="team1")
    check("ns-token creates a key in team1", r.status in (200, 204), repr(r))
    r = enc(k, "ns secret", token="ns-token", ns="team1")
    ct = r.json["data"]["ciphertext"] if r.status == 200 else ""
    r = dec(k, ct, token="ns-token", ns="team1")
    check("team1 round trip", r.status == 200 and unb(r.json["data"]["plaintext"]) == b"ns secret", repr(r))
    r = req("POST", "/v1/team1/transit/decrypt/" + k, {"ciphertext": ct}, token="ns-token")
    check("namespace in the path: /v1/team1/transit/...", r.status == 200, repr(r))
    r = dec(k, ct, token=ROOT, ns="team1")
    check("root token works in team1", r.status == 200, repr(r))
    expect("team1's key is not in the root namespace", dec(k, ct, token=ROOT), 400, "encryption key not found")
    expect("ns-token outside its namespace", req("GET", "/v1/transit/keys/" + k, token="ns-token"), 403, "permission denied")
    expect("root-namespace token in team1", req("GET", "/v1/transit/keys/" + k, token="transit-user", ns="team1"), 403,
           "permission denied")
    expect("unknown namespace", req("GET", "/v1/transit/keys/" + k, token=ROOT, ns="nope"), 403, "permission denied")
    r = req("GET", "/v1/auth/token/lookup-self", token="ns-token", ns="team1/")
    check("lookup-self in team1 (trailing slash)", r.status == 200 and r.json["data"]["namespace_path"] == "team1/", repr(r))


def t_routes():
    expect("unmounted path (root token)", req("GET", "/v1/nosuch/keys/x", token=ROOT), 404,
           'no handler for route "nosuch/keys/x". route entry not found.')
    expect("unmounted path (limited token): ACL first", req("GET", "/v1/nosuch/keys/x", token="transit-user"), 403, ACL_DENIED)
    r = req("GET", "/v1/transit/nothing/here", token=ROOT)
    check("unknown transit route: 404 []", r.status == 404 and r.errors == [], repr(r))
    r = req("GET", "/v1/transit/encrypt/x", token=ROOT)
    check("wrong method: 405 []", r.status == 405 and r.errors == [], repr(r))
    r = req("PATCH", "/v1/transit/keys/x", token=ROOT, raw=b"{}")
    check("unsupported HTTP method: 405", r.status == 405, repr(r))
    expect("malformed JSON", req("POST", "/v1/transit/encrypt/x", raw=b'{"plaintext": ', token=ROOT,
                                 headers={"Content-Type": "application/json"}), 400, contains="failed to parse JSON input: ")
    r = req("POST", "/v1/transit/encrypt/x", raw=b"x" * (1024 * 1024 + 10), token=ROOT,
            headers={"Content-Type": "application/json"})
    check("body over 1 MiB: 413", r.status == 413, repr(r))
    r = req("GET", "/nope")
    check("outside /v1: 404", r.status == 404, repr(r))
    r = req("POST", "/v1/transit/encrypt/bad%2Fname", {"plaintext": ""}, token=ROOT)
    check("invalid key name: 404", r.status == 404, repr(r))


def t_keepalive():
    u = urlsplit(BASE)
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=SSL_CTX, timeout=10)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    socks = set()
    ok = True
    for i in range(3):
        body = json.dumps({"plaintext": b("ka%d" % i)})
        conn.request("POST", "/v1/transit/encrypt/preexisting", body=body,
                     headers={"X-Vault-Token": ROOT, "Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        ok = ok and r.status == 200 and r.getheader("Content-Length") == str(len(data)) and r.version == 11
        socks.add(id(conn.sock))
    conn.close()
    check("HTTP/1.1 keep-alive: 3 requests, one connection, Content-Length", ok and len(socks) == 1)


def t_faults():
    k = "preexisting"
    r = ctl("fault", {"mode": "error", "count": 1})
    check("fault set", r["mode"] == "error" and r["count"] == 1, r)
    expect("fault error: 500", enc(k, "x"), 500, "1 error occurred:\n\t* internal error\n\n")
    check("fault count runs out", enc(k, "x").status == 200)
    ctl("fault", {"mode": "error", "status": 502, "count": 1})
    check("fault error status 502", enc(k, "x").status == 502)
    ctl("fault", {"mode": "throttle", "count": 2})
    r1, r2, r3 = enc(k, "x"), req("GET", "/v1/sys/health"), enc(k, "x")
    check("throttle: 429 with Retry-After, health too",
          r1.status == 429 and r1.headers.get("Retry-After") == "1" and r2.status == 429 and r3.status == 200
          and r1.errors == ['request path "transit/encrypt/preexisting": rate limit quota exceeded'], repr(r1))
    ctl("fault", {"mode": "sealed"})
    r1 = req("GET", "/v1/sys/health")
    r2 = enc(k, "x")
    r3 = req("GET", "/v1/sys/seal-status")
    ctl("fault", {"mode": "none"})
    check("sealed: health 503 sealed", r1.status == 503 and r1.json["sealed"] is True, repr(r1))
    check("sealed: API 503 Vault is sealed", r2.status == 503 and r2.errors == ["Vault is sealed"], repr(r2))
    check("sealed: seal-status says sealed", r3.status == 200 and r3.json["sealed"] is True, repr(r3))
    check("control endpoints never faulted", True)
    ctl("fault", {"mode": "slow", "delay_ms": 400, "count": 1})
    r = enc(k, "x")
    check("slow: answered after delay_ms", r.status == 200 and r.elapsed >= 0.39, "%r %.3f" % (r, r.elapsed))
    ctl("fault", {"mode": "close", "count": 1})
    try:
        r = enc(k, "x")
        check("close: connection closed without an answer", False, repr(r))
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError) as e:
        check("close: connection closed without an answer", True)
    check("after close: normal", enc(k, "x").status == 200)
    # hang: the request is read, never answered until cleared
    ctl("fault", {"mode": "hang"})
    t0 = time.monotonic()
    try:
        r = req("POST", "/v1/transit/encrypt/" + k, {"plaintext": "eA=="}, token=ROOT, timeout=1)
        hung = False
    except (socket.timeout, TimeoutError, urllib.error.URLError) as e:
        hung = True
    except Exception:
        hung = False
    check("hang: no answer", hung and time.monotonic() - t0 < 30)
    t0 = time.monotonic()
    s = ctl("stats")
    check("control answers during a hang", time.monotonic() - t0 < 1, s)
    ctl("fault", {"mode": "none"})
    check("after the hang is cleared: normal", enc(k, "x").status == 200)
    # a hanging request is answered once the fault is cleared
    ctl("fault", {"mode": "hang", "count": 1})
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("r", enc(k, "held")))
    th.start()
    time.sleep(0.5)
    alive = th.is_alive()
    ctl("fault", {"mode": "none"})
    th.join(10)
    check("hang released by clearing: answered normally", alive and box.get("r") is not None and box["r"].status == 200,
          box)
    # ops filter
    ctl("fault", {"mode": "error", "ops": ["decrypt"]})
    r1 = enc(k, "x")
    r2 = dec(k, r1.json["data"]["ciphertext"])
    ctl("fault", {"mode": "none"})
    check("fault limited to ops", r1.status == 200 and r2.status == 500, "%r %r" % (r1, r2))


def t_stats_last_request():
    ctl("reset-stats", {})
    s = ctl("stats")
    check("reset-stats", s["total"] == 0 and s["faulted"] == 0 and s["status"] == {} and s["by_op"]["encrypt"] == 0, s)
    k = "st-stats-" + RUN
    req("POST", "/v1/transit/keys/" + k, {}, token=ROOT)
    r = enc(k, "x", associated_data=b("ad"))
    dec(k, r.json["data"]["ciphertext"], associated_data=b("ad"))
    req("GET", "/v1/transit/keys/" + k, token=ROOT)
    req("GET", "/v1/transit/keys/" + k, token="bad-token")
    login()
    req("GET", "/v1/sys/health")
    ctl("fault", {"mode": "error", "count": 1})
    req("GET", "/v1/sys/health")
    s = ctl("stats")
    bo = s["by_op"]
    check("stats by_op", bo["encrypt"] == 1 and bo["decrypt"] == 1 and bo["keys_create"] == 1 and bo["keys_read"] == 2
          and bo["login"] == 1 and bo["health"] == 2, s)
    check("stats total, faulted, auth_failures, status", s["total"] == 8 and s["faulted"] == 1 and s["auth_failures"] == 1
          and s["status"].get("403") == 1 and s["status"].get("500") == 1 and s["status"].get("200") == 6, s)
    enc(k, "y", token=ROOT, ns=None, context=b("c"), associated_data=b("ad"))
    lr = ctl("last-request")
    check("last-request: body field names", lr["body_fields"] == ["associated_data", "context", "plaintext"], lr)
    check("last-request: header names, no token value", "X-Vault-Token" in lr["headers"]
          and ROOT not in json.dumps(lr) and lr["method"] == "POST" and lr["path"] == "/v1/transit/encrypt/" + k, lr)
    req("GET", "/v1/transit/keys/" + k, token=ROOT, ns="team1")
    lr = ctl("last-request")
    check("last-request: namespace value", lr["namespace"] == "team1" and lr["body_fields"] is None, lr)
    r = ctl("keys")
    check("control keys list", any(e["name"] == k for e in r["keys"]), r)


def main():
    print("selftest against %s (run %s)" % (BASE, RUN))
    ctl("fault", {"mode": "none"})
    for t in (t_health, t_keys, t_encrypt_decrypt, t_derived, t_auth, t_approle, t_namespaces, t_routes,
              t_keepalive, t_faults, t_stats_last_request):
        try:
            if t is t_encrypt_decrypt:
                t_rewrap(*t())
            else:
                t()
        except Exception:
            failures.append(t.__name__ + " raised")
            print("FAIL %s raised:\n%s" % (t.__name__, traceback.format_exc()))
    # Leave the emulator as found.
    for what, body in (("fault", {"mode": "none"}), ("approle", {"reset": True}), ("restore-secret-id", {}),
                       ("restore-tokens", {})):
        try:
            ctl(what, body)
        except Exception as e:
            failures.append("cleanup " + what)
            print("FAIL cleanup %s: %s" % (what, e))
    print("%d checks, %d failed" % (checks, len(failures)))
    if failures:
        print("failed: " + ", ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
