#!/usr/bin/env python3
"""Seed inputs for the fuzz harnesses, written to OUTDIR/<harness>/.

The kept corpus (test/fuzz/corpus/) was made from these with libFuzzer's
-merge=1, which keeps only the seeds that add coverage:

    python3 test/fuzz/make_seeds.py /tmp/seeds
    for h in fuzz_envelope fuzz_ttlv fuzz_json fuzz_http; do
        test/fuzz/$h -merge=1 test/fuzz/corpus/$h /tmp/seeds/$h
    done

The values are what the real peers send: envelopes as envelope.c writes
them (every type, both algorithms), KMIP 1.x responses shaped like
PyKMIP's (Discover Versions, Create, Activate, Get, Get Attributes,
Encrypt, Decrypt, failures), and the bodies test/vault/vault_emu.py and
test/awskms/kms_emu.py answer with (built with their own code where it can
run here, by their shapes where it needs a running server).
"""
import base64
import hashlib
import json
import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def rnd(label, n):
    """Deterministic bytes, so that the seeds do not change between runs."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(("%s/%d" % (label, i)).encode()).digest()
        i += 1
    return out[:n]


class Seeds:
    def __init__(self, outdir, harness):
        self.dir = os.path.join(outdir, harness)
        os.makedirs(self.dir, exist_ok=True)
        self.n = 0

    def add(self, data, name=None):
        if isinstance(data, str):
            data = data.encode()
        self.n += 1
        with open(os.path.join(self.dir, name or "seed-%03d" % self.n), "wb") as f:
            f.write(data)


# ---- envelopes (envelope.h) -------------------------------------------------

def envelope(alg, typ, key_id, key_version, ptlen, label):
    hdr = bytes([1, alg, typ, 0]) + struct.pack(">II", key_id, key_version)
    nonce = rnd(label + "n", 12) if alg == 1 else b""
    return hdr + nonce + rnd(label + "c", ptlen) + rnd(label + "t", 16)


def envelope_seeds(outdir):
    s = Seeds(outdir, "fuzz_envelope")
    # plaintext lengths: text/bytea/numeric/jsonb vary, int4/date 4, int8/float8/timestamptz 8
    fixed = {3: 4, 4: 8, 6: 8, 7: 4, 8: 8}
    for typ in range(1, 10):
        for alg in (1, 2):
            for ptlen in ([fixed[typ]] if typ in fixed else [0, 1, 17, 64]):
                key_id = 0 if (typ + alg) % 4 == 0 else 0x1234567 + typ
                env = envelope(alg, typ, key_id, 1 + typ % 3, ptlen, "e%d%d%d" % (typ, alg, ptlen))
                s.add(env)
                s.add("colcrypt:" + base64.b64encode(env).decode())
    # near misses: bad version, algorithm, type, flags, truncated
    good = envelope(1, 1, 42, 1, 5, "near")
    s.add(bytes([2]) + good[1:])
    s.add(good[:1] + bytes([3]) + good[2:])
    s.add(good[:2] + bytes([10]) + good[3:])
    s.add(good[:3] + bytes([1]) + good[4:])
    s.add(good[:39])
    s.add("colcrypt:" + base64.b64encode(good).decode().rstrip("=") + "==")
    s.add("colcrypt:QQ======")
    s.add("colcrypt:")


# ---- KMIP TTLV ---------------------------------------------------------------

T = dict(ATTRIBUTE=0x420008, ATTRIBUTE_NAME=0x42000A, ATTRIBUTE_VALUE=0x42000B,
         BATCH_COUNT=0x42000D, BATCH_ITEM=0x42000F, CRYPTO_ALGORITHM=0x420028,
         CRYPTO_LENGTH=0x42002A, IV_COUNTER_NONCE=0x42003D, KEY_BLOCK=0x420040,
         KEY_FORMAT_TYPE=0x420042, KEY_MATERIAL=0x420043, KEY_VALUE=0x420045,
         OBJECT_TYPE=0x420057, OPERATION=0x42005C, PROTOCOL_VERSION=0x420069,
         PROTOCOL_MAJOR=0x42006A, PROTOCOL_MINOR=0x42006B, RESPONSE_HEADER=0x42007A,
         RESPONSE_MESSAGE=0x42007B, RESPONSE_PAYLOAD=0x42007C, RESULT_MESSAGE=0x42007D,
         RESULT_REASON=0x42007E, RESULT_STATUS=0x42007F, SYMMETRIC_KEY=0x42008F,
         TIME_STAMP=0x420092, UNIQUE_IDENTIFIER=0x420094, DATA=0x4200C2,
         AE_TAG=0x4200FF)


def item(tag, typ, value):
    pad = (8 - len(value) % 8) % 8
    return struct.pack(">I", tag)[1:] + bytes([typ]) + struct.pack(">I", len(value)) + value + b"\0" * pad


def struct_(tag, *children):
    return item(tag, 1, b"".join(children))


def int_(tag, v):
    return item(tag, 2, struct.pack(">i", v))


def enum(tag, v):
    return item(tag, 5, struct.pack(">I", v))


def text(tag, s):
    return item(tag, 7, s.encode())


def bytes_(tag, b):
    return item(tag, 8, b)


def datetime(tag, t):
    return item(tag, 9, struct.pack(">q", t))


def response(op, payload=None, status=0, reason=None, message=None, minor=4, count=1):
    bi = [enum(T["OPERATION"], op), enum(T["RESULT_STATUS"], status)]
    if reason is not None:
        bi.append(enum(T["RESULT_REASON"], reason))
    if message is not None:
        bi.append(text(T["RESULT_MESSAGE"], message))
    if payload is not None:
        bi.append(struct_(T["RESPONSE_PAYLOAD"], *payload))
    return struct_(T["RESPONSE_MESSAGE"],
                   struct_(T["RESPONSE_HEADER"],
                           struct_(T["PROTOCOL_VERSION"], int_(T["PROTOCOL_MAJOR"], 1),
                                   int_(T["PROTOCOL_MINOR"], minor)),
                           datetime(T["TIME_STAMP"], 1646697600),
                           int_(T["BATCH_COUNT"], count)),
                   struct_(T["BATCH_ITEM"], *bi))


def discover(minor=4):
    versions = [struct_(T["PROTOCOL_VERSION"], int_(T["PROTOCOL_MAJOR"], 1),
                        int_(T["PROTOCOL_MINOR"], m)) for m in range(minor, 0, -1)]
    return response(0x1E, versions, minor=1)


def uid(u="1"):
    return text(T["UNIQUE_IDENTIFIER"], u)


def ttlv_seeds(outdir):
    s = Seeds(outdir, "fuzz_ttlv")
    key = rnd("cmk", 32)
    get = response(0x0A, [enum(T["OBJECT_TYPE"], 2), uid("7"),
                          struct_(T["SYMMETRIC_KEY"], struct_(
                              T["KEY_BLOCK"], enum(T["KEY_FORMAT_TYPE"], 1),
                              struct_(T["KEY_VALUE"], bytes_(T["KEY_MATERIAL"], key)),
                              enum(T["CRYPTO_ALGORITHM"], 3), int_(T["CRYPTO_LENGTH"], 256)))])
    encrypt = response(0x1F, [uid("7"), bytes_(T["DATA"], rnd("ct", 32)),
                              bytes_(T["AE_TAG"], rnd("tag", 16))])
    decrypt = response(0x20, [uid("7"), bytes_(T["DATA"], rnd("pt", 32))])
    create = response(0x01, [enum(T["OBJECT_TYPE"], 2), uid("42")])
    activate = response(0x12, [uid("42")])

    def attr(name, value):
        return struct_(T["ATTRIBUTE"], text(T["ATTRIBUTE_NAME"], name), value)
    attrs = response(0x0B, [uid("7"),
                            attr("State", enum(T["ATTRIBUTE_VALUE"], 2)),
                            attr("Cryptographic Algorithm", enum(T["ATTRIBUTE_VALUE"], 3)),
                            attr("Cryptographic Length", int_(T["ATTRIBUTE_VALUE"], 256)),
                            attr("Cryptographic Usage Mask", int_(T["ATTRIBUTE_VALUE"], 12))])
    refused = response(0x1F, status=1, reason=1, message="Could not locate object: 7")
    wrong_op = response(0x0A, [uid("7")])

    # Raw messages (selector 0), including the KMIP 1.4 specification's
    # encoding examples that test_ttlv.c checks.
    for msg in (discover(), get, encrypt, decrypt, create, activate, attrs, refused):
        s.add(b"\x00" + msg)
    for hx in ("42002002000000040000000800000000", "420020030000000801B69B4BA5749200",
               "4200200500000004000000FF00000000", "42002006000000080000000000000001",
               "420020070000000B48656C6C6F20576F726C640000000000",
               "42002008000000030102030000000000", "42002009000000080000000047DA67F8",
               "42002001000000204200040500000004000000FE000000004200050200000004000000FF00000000"):
        s.add(b"\x00" + bytes.fromhex(hx))

    # Provider operations (fuzz_ttlv.c): 1 wrap, 2 wrap (get), 3 unwrap,
    # 4 unwrap (get), 5 create, 6/7 check, 8 rotate, 9 health; +0x10 connects first.
    ops = {1: [encrypt], 2: [get], 3: [decrypt], 4: [get], 5: [create, activate],
           6: [attrs], 7: [attrs], 8: [create, activate], 9: []}
    for sel, answers in ops.items():
        s.add(bytes([sel]) + b"".join(answers))
        s.add(bytes([sel | 0x10]) + discover() + b"".join(answers))
    s.add(bytes([0x11]) + discover(2))
    s.add(bytes([0x21]) + encrypt)
    s.add(bytes([0x01]) + refused)
    s.add(bytes([0x01]) + wrong_op)
    s.add(bytes([0x03]) + response(0x20, [uid("7")], count=2))
    s.add(bytes([0x09]) + discover()[:40])


# ---- Vault and AWS KMS -------------------------------------------------------

def vault_bodies():
    sys.path.insert(0, os.path.join(ROOT, "test", "vault"))
    import vault_emu as v    # noqa: E402  (its envelope() and key descriptions)

    key = v.Key("colcrypt-cmk", "aes256-gcm96", derived=True)
    key.rotate(rnd("v1", 32))
    plain_key = v.Key("plain", "aes256-gcm96")
    plain_key.rotate(rnd("v2", 32))
    ct = "vault:v1:" + base64.b64encode(rnd("vct", 60)).decode()
    auth = {"client_token": "hvs.CAESIfuzz", "accessor": "acc", "policies": ["colcrypt"],
            "token_policies": ["colcrypt"], "metadata": {"role_name": "colcrypt"},
            "lease_duration": 3600, "renewable": True, "entity_id": "e", "token_type": "service",
            "orphan": True, "mfa_requirement": None, "num_uses": 0}
    ok = lambda **kw: json.dumps(v.envelope(**kw))  # noqa: E731
    return {
        "encrypt": ok(data={"ciphertext": ct, "key_version": 1}, mount_type="transit"),
        "decrypt": ok(data={"plaintext": base64.b64encode(rnd("dek", 32)).decode()}),
        "keys_read": ok(data=key.describe(), mount_type="transit"),
        "keys_read_plain": ok(data=plain_key.describe(), mount_type="transit"),
        "login": ok(auth=auth),
        "lookup": ok(data={"ttl": 2764799, "policies": ["colcrypt"], "renewable": True}),
        "health": json.dumps({"initialized": True, "sealed": False, "standby": False,
                              "version": "1.15.2", "cluster_name": "vault-cluster-fuzz"}),
        "empty": "",
        "errors": json.dumps({"errors": ["permission denied"]}),
        "errors2": json.dumps({"errors": ["1 error occurred:\n\t* invalid ciphertext: no prefix\n\n"]}),
        "no_errors": json.dumps({"errors": []}),
        "sealed": json.dumps({"errors": ["Vault is sealed"]}),
    }


def aws_bodies():
    sys.path.insert(0, os.path.join(ROOT, "test", "awskms"))
    out = {}
    try:
        import kms_emu as k  # noqa: E402
        with tempfile.TemporaryDirectory() as d:
            kms = k.Kms({"credentials": [{"access_key_id": "AKIDEXAMPLE",
                                          "secret_access_key": "secret"}],
                         "keys": [{"alias": "alias/colcrypt"}]}, os.path.join(d, "state.json"))
            cred = {"access_key_id": "AKIDEXAMPLE"}
            ctx = {"colcrypt:cmk": "alias/colcrypt", "colcrypt:key_id": "7",
                   "colcrypt:key_version": "3"}

            def call(op, body):
                try:
                    return json.dumps(kms.call(op, body, cred))
                except k.KmsError as e:
                    return json.dumps({"__type": e.etype, "message": e.message})
            enc = kms.call("Encrypt", {"KeyId": "alias/colcrypt", "Plaintext": base64.b64encode(rnd("dek", 32)).decode(),
                                                  "EncryptionContext": ctx}, cred)
            out["encrypt"] = json.dumps(enc)
            out["decrypt"] = call("Decrypt", {"CiphertextBlob": enc["CiphertextBlob"], "EncryptionContext": ctx})
            out["generate"] = call("GenerateDataKey", {"KeyId": "alias/colcrypt", "NumberOfBytes": 32,
                                                       "EncryptionContext": ctx})
            out["describe"] = call("DescribeKey", {"KeyId": "alias/colcrypt"})
            out["create"] = call("CreateKey", {"Description": "colcrypt customer master key x",
                                               "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT"})
            out["reencrypt"] = call("ReEncrypt", {"CiphertextBlob": enc["CiphertextBlob"],
                                                  "SourceEncryptionContext": ctx,
                                                  "DestinationKeyId": "alias/colcrypt",
                                                  "DestinationEncryptionContext": ctx})
            out["aliases"] = call("ListAliases", {"Limit": 1})
            out["notfound"] = call("DescribeKey", {"KeyId": "alias/missing"})
            out["badblob"] = call("Decrypt", {"CiphertextBlob": base64.b64encode(b"x" * 60).decode(),
                                              "EncryptionContext": ctx})
    except Exception as e:     # the emulator needs python3-cryptography
        print("make_seeds.py: kms_emu not usable (%s); AWS bodies by shape" % e, file=sys.stderr)
        blob = base64.b64encode(rnd("blob", 110)).decode()
        out["encrypt"] = json.dumps({"CiphertextBlob": blob, "KeyId": "arn:aws:kms:us-east-1:111122223333:key/k",
                                     "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
        out["decrypt"] = json.dumps({"Plaintext": base64.b64encode(rnd("dek", 32)).decode(), "KeyId": "k"})
    out["throttled"] = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
    out["expired"] = json.dumps({"__type": "com.amazon.coral.service#ExpiredTokenException",
                                 "message": "The security token included in the request is expired"})
    out["denied"] = json.dumps({"__type": "AccessDeniedException", "Message": "not authorized"})
    out["disabled"] = json.dumps({"__type": "DisabledException", "message": "key is disabled"})
    return out


def answer(status, body, headers=()):
    return ("%d\n" % status + "".join(h + "\n" for h in headers) + "\n" + body).encode()


def http_seeds(outdir):
    s = Seeds(outdir, "fuzz_http")
    j = Seeds(outdir, "fuzz_json")
    vb = vault_bodies()
    ab = aws_bodies()
    for body in list(vb.values()) + list(ab.values()):
        if body:
            j.add(body)
    j.add('{"a":[1,2.5e3,true,false,null,"\\u00e9\\n"],"b":{"c":{"d":[[[]]]}}}')
    j.add('{"data":{"plaintext":"QUFB"},"data":{"plaintext":"QQ=="}}')

    SEP = b"\x1e"

    def add(sel, *answers):
        s.add(bytes([sel]) + SEP.join(answers))

    # Vault (fuzz_http.c): 0 wrap, 1 unwrap, 2 ensure_cmk, 3 rotate, 4 rewrap,
    # 5 health, 6 unwrap (associated data), 7 ensure_cmk (no create);
    # 0x10 AppRole (a login answer comes first), 0x20 variant.
    login = answer(200, vb["login"])
    add(0x00, answer(200, vb["keys_read"]), answer(200, vb["encrypt"]))
    add(0x00, answer(200, vb["keys_read_plain"]), answer(200, vb["encrypt"]))
    add(0x00, answer(403, vb["errors"]))
    add(0x10, login, answer(200, vb["keys_read"]), answer(200, vb["encrypt"]))
    add(0x10, login, answer(403, vb["errors"]), login, answer(200, vb["keys_read"]), answer(200, vb["encrypt"]))
    add(0x01, answer(200, vb["decrypt"]))
    add(0x01, answer(400, vb["errors2"]))
    add(0x01, answer(503, vb["sealed"], ["Retry-After: 1"]), answer(200, vb["decrypt"]))
    add(0x01, answer(429, vb["no_errors"], ["Retry-After: 2"]), b"x", answer(200, vb["decrypt"]))
    add(0x02, answer(404, vb["no_errors"]))
    add(0x22, answer(404, vb["no_errors"]), answer(200, vb["keys_read"]))
    add(0x03, answer(200, vb["keys_read"]), answer(200, vb["keys_read"]))
    add(0x04, answer(200, vb["encrypt"]))
    add(0x05, answer(200, vb["health"]), answer(200, vb["lookup"]))
    add(0x15, answer(200, vb["health"]), login, answer(200, vb["lookup"]))
    add(0x06, answer(200, vb["decrypt"]))
    add(0x07, answer(200, vb["keys_read"]))
    add(0x08, answer(200, vb["keys_read"]), answer(200, vb["encrypt"]))
    add(0x00, answer(200, vb["empty"]))

    # AWS KMS: 0 wrap, 1 unwrap, 2 generate, 3 rotate, 4 rewrap, 5 health,
    # 6 ensure_cmk (create), 7 ensure_cmk (check); 0x08 data keys from KMS,
    # 0x10 session token, 0x20 variant.
    add(0x80, answer(200, ab["encrypt"]))
    add(0x80, answer(400, ab["throttled"]), answer(200, ab["encrypt"]))
    add(0x81, answer(200, ab["decrypt"]))
    add(0x81, answer(400, ab["expired"]))
    add(0x81, answer(400, ab.get("badblob", ab["denied"])))
    add(0x88, answer(200, ab.get("generate", ab["decrypt"])))
    add(0x82, b"")
    add(0x83, answer(200, "{}"))
    add(0x84, answer(200, ab.get("reencrypt", ab["encrypt"])))
    add(0x85, answer(200, ab.get("aliases", "{}")))
    add(0x85, answer(400, ab["denied"]))
    add(0x86, answer(400, ab.get("notfound", ab["denied"])), answer(200, ab.get("create", "{}")), answer(200, "{}"))
    add(0xA6, answer(200, ab.get("create", "{}")))
    add(0x87, answer(200, ab.get("describe", "{}")))
    add(0x87, answer(400, ab["disabled"]))
    add(0x97, answer(500, ""), b"\x01", answer(200, ab.get("describe", "{}")))


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    outdir = sys.argv[1]
    envelope_seeds(outdir)
    ttlv_seeds(outdir)
    http_seeds(outdir)
    for h in sorted(os.listdir(outdir)):
        print("%s: %d seeds" % (h, len(os.listdir(os.path.join(outdir, h)))))


if __name__ == "__main__":
    main()
