#!/usr/bin/python3
"""A HashiCorp Vault / OpenBao emulator for colcrypt's vault provider tests.

It speaks the parts of Vault's HTTP API that the provider uses: the Transit
engine (keys, encrypt, decrypt, rewrap), AppRole login, token lookup and
renewal, namespaces, sys/health and sys/seal-status; paths, field names,
status codes and error texts follow Vault / OpenBao.  A control API under
/_emu/ (no auth, never faulted) injects faults and reports statistics.

    vault_emu.py --port N [--cert F --key F] --config F [--state F]

Run with /usr/bin/python3 (needs python3-cryptography).  One line per
request goes to stderr: method, path, status, milliseconds (never a token,
secret_id, plaintext or ciphertext).
"""

import argparse
import base64
import binascii
import json
import os
import re
import secrets
import select
import signal
import socket
import ssl
import string
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "1.15.6+emu"
MAX_BODY = 1 << 20              # larger request bodies get 413
DRAIN_LIMIT = 8 << 20           # a too-large body up to this size is read and dropped
SYSTEM_MAX_TTL = 32 * 24 * 3600  # Vault's default max lease TTL (768h)

# Vault's texts (checked against openbao sources where noted in the report).
PERMISSION_DENIED = "permission denied"
ACL_DENIED = "1 error occurred:\n\t* permission denied\n\n"
INTERNAL_ERROR = "1 error occurred:\n\t* internal error\n\n"
MISSING_CONTEXT = ("missing 'context' for key derivation; the key was created using a derived key, "
                   "which means additional, per-request information must be included in order to "
                   "perform operations with the key")
TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
AUTH_FAILED = "cipher: message authentication failed"
BAD_LOGIN = "invalid role or secret ID"

KEY_TYPES = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32}
KEY_NAME_RE = re.compile(r"^\w(?:[\w\-.@]*\w)?$", re.ASCII)

# Transit fields each endpoint knows; others draw Vault's warning.
FIELDS = {
    "encrypt": {"name", "plaintext", "context", "type", "convergent_encryption", "key_version",
                "partial_failure_response_code", "associated_data", "batch_input", "nonce"},
    "decrypt": {"name", "ciphertext", "context", "nonce", "partial_failure_response_code",
                "associated_data", "batch_input"},
    "rewrap": {"name", "ciphertext", "context", "key_version", "batch_input", "nonce"},
    "keys_create": {"name", "type", "derived", "convergent_encryption", "exportable",
                    "allow_plaintext_backup", "context", "auto_rotate_period", "key_size",
                    "managed_key_name", "managed_key_id"},
    "keys_config": {"name", "min_decryption_version", "min_encryption_version", "deletion_allowed",
                    "exportable", "allow_plaintext_backup", "auto_rotate_period"},
    "rotate": {"name", "managed_key_name", "managed_key_id"},
}

BUILTIN_POLICIES = {
    "default": {
        "auth/token/lookup-self": ["read", "update"],
        "auth/token/renew-self": ["update"],
        "auth/token/revoke-self": ["update"],
    },
    "transit-use": {
        "transit/encrypt/*": ["update"],
        "transit/decrypt/*": ["update"],
        "transit/rewrap/*": ["update"],
        "transit/keys/*": ["read"],
    },
}

MAIN_OPS = ("encrypt", "decrypt", "rewrap", "login", "renew", "lookup", "keys_create", "keys_read",
            "rotate", "keys_config", "health")

FAULT_MODES = ("none", "hang", "error", "throttle", "close", "slow", "sealed")


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

_log_lock = threading.Lock()


def log(msg):
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % int(now % 1 * 1000)
    with _log_lock:
        sys.stderr.write("%s %s\n" % (stamp, msg))
        sys.stderr.flush()


class ApiError(Exception):
    """An answer other than success: status, Vault's errors array, headers."""

    def __init__(self, status, errors=None, headers=None, note=None):
        super().__init__(status)
        self.status = status
        self.errors = [] if errors is None else errors
        self.headers = headers or {}
        self.note = note


def user_error(msg):
    return ApiError(400, [msg])


class B64Error(ValueError):
    pass


_B64_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/")


def go_b64decode(s):
    """Decode standard padded base64 as Go's base64.StdEncoding does, with
    its error text ("illegal base64 data at input byte N")."""
    src = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else bytes(s)
    n = len(src)
    si = 0
    clean = bytearray()

    def corrupt(at):
        raise B64Error("illegal base64 data at input byte %d" % at)

    while si < n:
        j = 0
        quantum = bytearray()
        while j < 4:
            if si == n:
                if j == 0:
                    break
                corrupt(si - j)
            c = src[si]
            si += 1
            if c in (0x0A, 0x0D):
                continue
            ch = chr(c)
            if ch in _B64_ALPHABET:
                quantum.append(c)
                j += 1
                continue
            if ch != "=":
                corrupt(si - 1)
            # Padding: only after 2 or 3 symbols, and nothing after it.
            if j in (0, 1):
                corrupt(si - 1)
            if j == 2:
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    corrupt(n)
                if src[si] != ord("="):
                    corrupt(si - 1)
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                corrupt(si)
            quantum.extend(b"=" * (4 - j))
            j = 4
        clean.extend(quantum)
    try:
        return base64.b64decode(bytes(clean), validate=True)
    except (binascii.Error, ValueError):
        raise B64Error("illegal base64 data at input byte 0")


def b64(data):
    return base64.b64encode(data).decode("ascii")


def go_duration(seconds):
    """Format whole seconds as Go's time.Duration String() does."""
    sec = int(seconds)
    if sec == 0:
        return "0s"
    sign = "-" if sec < 0 else ""
    sec = abs(sec)
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    if h:
        return "%s%dh%dm%ds" % (sign, h, m, s)
    if m:
        return "%s%dm%ds" % (sign, m, s)
    return "%s%ds" % (sign, s)


_DUR_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_seconds(value, field):
    """Vault's TypeDurationSecond: an integer (seconds) or a Go duration."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise user_error('error converting input %s for field "%s": invalid type' % (value, field))
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        v = value.strip()
        if re.fullmatch(r"-?\d+", v):
            return int(v)
        pos, total = 0, 0.0
        while pos < len(v):
            m = _DUR_PART.match(v, pos)
            if not m:
                break
            total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
            pos = m.end()
        if v and pos == len(v):
            return int(total)
    raise user_error('error converting input %s for field "%s": time: invalid duration "%s"'
                     % (value, field, value))


def get_str(d, field):
    v = d.get(field)
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    raise user_error("error converting input for field \"%s\": '' expected type 'string', got "
                     "unconvertible type '%s'" % (field, type(v).__name__))


def get_int(d, field, default=0):
    v = d.get(field)
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
        return int(v)
    raise user_error('error converting input %s for field "%s": cannot parse \'\' as int: '
                     'strconv.ParseInt: parsing "%s": invalid syntax' % (v, field, v))


def get_bool(d, field, default=False):
    v = d.get(field)
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, str) and v.lower() in ("1", "t", "true", "0", "f", "false"):
        return v.lower() in ("1", "t", "true")
    raise user_error('error converting input %s for field "%s": cannot parse \'\' as bool: '
                     'strconv.ParseBool: parsing "%s": invalid syntax' % (v, field, v))


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int(t % 1 * 1e6)


def random_id(n):
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def envelope(data=None, auth=None, warnings=None, mount_type=None):
    out = {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": warnings or None,
        "auth": auth,
    }
    if mount_type is not None:
        out["mount_type"] = mount_type
    return out


def unknown_fields_warning(d, op):
    extra = sorted(k for k in d if k not in FIELDS[op])
    if not extra:
        return []
    return ["Endpoint ignored these unrecognized parameters: [%s]" % " ".join(extra)]


def path_matches(pattern, path):
    """Vault policy path glob: a trailing '*' is a prefix match and '+'
    stands for one path segment."""
    if pattern.endswith("*"):
        pat, prefix = pattern[:-1], True
    else:
        pat, prefix = pattern, False
    psegs = pat.split("/")
    segs = path.split("/")
    if prefix:
        if len(segs) < len(psegs):
            return False
        for i, ps in enumerate(psegs):
            s = segs[i]
            if i == len(psegs) - 1:
                if ps.startswith("+"):
                    continue
                if not s.startswith(ps):
                    return False
            elif ps != "+" and ps != s:
                return False
        return True
    if len(segs) != len(psegs):
        return False
    return all(ps == "+" or ps == s for ps, s in zip(psegs, segs))


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------

class Key:
    def __init__(self, name, ktype="aes256-gcm96", derived=False, exportable=False):
        self.name = name
        self.type = ktype
        self.derived = derived
        self.exportable = exportable
        self.deletion_allowed = False
        self.min_decryption_version = 1
        self.min_encryption_version = 0
        self.auto_rotate_period = 0
        self.versions = {}      # int -> (material bytes, unix time)
        self.latest = 0

    def rotate(self, material=None):
        if material is None:
            material = os.urandom(KEY_TYPES[self.type])
        self.latest += 1
        self.versions[self.latest] = (material, int(time.time()))

    def describe(self):
        d = {
            "name": self.name,
            "type": self.type,
            "derived": self.derived,
            "deletion_allowed": self.deletion_allowed,
            "min_available_version": 0,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "latest_version": self.latest,
            "exportable": self.exportable,
            "allow_plaintext_backup": False,
            "supports_encryption": True,
            "supports_decryption": True,
            "supports_signing": False,
            "supports_derivation": True,
            "auto_rotate_period": self.auto_rotate_period,
            "imported_key": False,
            "keys": {str(v): t for v, (_, t) in sorted(self.versions.items())},
        }
        if self.derived:
            d["kdf"] = "hkdf_sha256"
            d["convergent_encryption"] = False
        return d

    def to_json(self):
        return {
            "name": self.name, "type": self.type, "derived": self.derived,
            "exportable": self.exportable, "deletion_allowed": self.deletion_allowed,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "auto_rotate_period": self.auto_rotate_period, "latest_version": self.latest,
            "versions": {str(v): {"key": b64(m), "time": t} for v, (m, t) in self.versions.items()},
        }

    @classmethod
    def from_json(cls, j):
        k = cls(j["name"], j.get("type", "aes256-gcm96"), bool(j.get("derived")),
                bool(j.get("exportable")))
        k.deletion_allowed = bool(j.get("deletion_allowed"))
        k.min_decryption_version = int(j.get("min_decryption_version", 1))
        k.min_encryption_version = int(j.get("min_encryption_version", 0))
        k.auto_rotate_period = int(j.get("auto_rotate_period", 0))
        k.versions = {int(v): (base64.b64decode(e["key"]), int(e["time"]))
                      for v, e in j["versions"].items()}
        k.latest = int(j.get("latest_version", max(k.versions) if k.versions else 0))
        return k

    def enc_key(self, version, context):
        material = self.versions[version][0]
        if not self.derived:
            return material
        if version <= 0 or version > self.latest:
            raise user_error("invalid key version")
        if not context:
            raise user_error(MISSING_CONTEXT)
        return HKDF(algorithm=hashes.SHA256(), length=KEY_TYPES[self.type], salt=None,
                    info=context).derive(material)

    def aead(self, key):
        return ChaCha20Poly1305(key) if self.type == "chacha20-poly1305" else AESGCM(key)


class Token:
    def __init__(self, tid, kind, policies, namespace, ttl=0, max_ttl=0, role=None, meta=None):
        now = time.time()
        self.id = tid
        self.kind = kind                  # root | config | login
        self.accessor = random_id(24)
        self.policies = policies
        self.namespace = namespace
        self.created = now
        self.creation_ttl = ttl
        self.ttl = ttl                    # default renewal increment
        self.max_ttl = max_ttl or SYSTEM_MAX_TTL
        self.expire = now + ttl if ttl else None
        self.expired = False              # set by /_emu/expire-tokens
        self.role = role
        self.meta = meta
        self.entity_id = str(uuid.uuid4())

    def remaining(self, now):
        if self.expire is None:
            return 0
        return max(0, int(self.expire - now))

    def valid(self, now):
        if self.expired:
            return False
        return self.expire is None or now < self.expire


class Role:
    def __init__(self, role_id, cfg):
        self.role_id = role_id
        self.cfg = dict(cfg)
        self.name = cfg.get("role_name") or (role_id[:-len("-role-id")] if role_id.endswith("-role-id")
                                             else role_id)
        self.secret_ids = list(cfg.get("secret_ids", []))
        self.namespace = (cfg.get("namespace") or "").strip("/")
        self.policies = list(cfg.get("policies", []))
        self.entity_id = str(uuid.uuid4())
        self.reset()

    def reset(self):
        self.token_ttl = int(self.cfg.get("token_ttl", 3600))
        self.token_max_ttl = int(self.cfg.get("token_max_ttl", 86400))
        self.revoked = False


class Fault:
    def __init__(self):
        self.mode = "none"
        self.remaining = None       # None: every request until cleared
        self.status = 500
        self.delay_ms = 1000
        self.ops = None
        self.path_contains = None
        self.generation = 0

    def describe(self):
        return {"mode": self.mode, "count": self.remaining, "status": self.status,
                "delay_ms": self.delay_ms, "ops": self.ops, "path_contains": self.path_contains}


class State:
    def __init__(self, config, state_file):
        self.lock = threading.RLock()
        self.config = config
        self.state_file = state_file
        self.cluster_id = str(uuid.uuid4())
        self.namespaces = {""} | {n.strip("/") for n in config.get("namespaces", [])}
        self.mounts = set(config.get("mounts", ["transit"]))
        self.policies = dict(BUILTIN_POLICIES)
        self.policies.update(config.get("policies", {}))
        self.keys = {}              # (namespace, mount, name) -> Key
        self.tokens = {}
        self.roles = {rid: Role(rid, rc) for rid, rc in config.get("approle", {}).items()}
        self.fault = Fault()
        self.last_request = None
        self.reset_stats()
        self.load_tokens()
        self.load_state()

    # -- tokens ---------------------------------------------------------

    def load_tokens(self):
        root = self.config.get("root_token", "root-token")
        for tid in [t for t, tok in self.tokens.items() if tok.kind != "login"]:
            del self.tokens[tid]
        self.tokens[root] = Token(root, "root", ["root"], "")
        for tid, tc in self.config.get("tokens", {}).items():
            pols = list(tc.get("policies", []))
            if "root" not in pols and "default" not in pols:
                pols.append("default")
            self.tokens[tid] = Token(tid, "config", sorted(pols), (tc.get("namespace") or "").strip("/"),
                                     ttl=int(tc.get("ttl", 0)))

    # -- keys and persistence ---------------------------------------------

    def load_state(self):
        if self.state_file and os.path.exists(self.state_file):
            with open(self.state_file) as f:
                j = json.load(f)
            for e in j.get("keys", []):
                self.keys[(e.get("namespace", ""), e.get("mount", "transit"), e["name"])] = Key.from_json(e)
        changed = False
        for kc in self.config.get("keys", []):
            ident = ((kc.get("namespace") or "").strip("/"), kc.get("mount", "transit"), kc["name"])
            self.mounts.add(ident[1])
            if ident in self.keys:
                continue
            k = Key(kc["name"], kc.get("type", "aes256-gcm96"), bool(kc.get("derived", False)),
                    bool(kc.get("exportable", False)))
            materials = [base64.b64decode(m) for m in kc.get("material", [])]
            for i in range(max(1, int(kc.get("versions", 1)), len(materials))):
                k.rotate(materials[i] if i < len(materials) else None)
            if kc.get("min_decryption_version"):
                k.min_decryption_version = int(kc["min_decryption_version"])
            self.keys[ident] = k
            changed = True
        if changed:
            self.save_state()

    def save_state(self):
        if not self.state_file:
            return
        doc = {"version": 1, "keys": []}
        for (ns, mount, _), k in sorted(self.keys.items()):
            e = k.to_json()
            e["namespace"] = ns
            e["mount"] = mount
            doc["keys"].append(e)
        tmp = "%s.tmp.%d" % (self.state_file, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    # -- statistics ------------------------------------------------------

    def reset_stats(self):
        self.stats = {"total": 0, "by_op": {op: 0 for op in MAIN_OPS}, "faulted": 0,
                      "auth_failures": 0, "login_failures": 0, "status": {}}

    def count_status(self, status):
        with self.lock:
            s = self.stats["status"]
            s[str(status)] = s.get(str(status), 0) + 1

    # -- faults ----------------------------------------------------------

    def take_fault(self, op, path):
        """The fault for this API request, if any (consumes one count)."""
        with self.lock:
            f = self.fault
            if f.mode == "none":
                return None
            if f.ops is not None and op not in f.ops:
                return None
            if f.path_contains is not None and f.path_contains not in path:
                return None
            taken = (f.mode, f.status, f.delay_ms, f.generation)
            if f.remaining is not None:
                f.remaining -= 1
                if f.remaining <= 0:
                    f.mode = "none"
                    f.remaining = None
            self.stats["faulted"] += 1
            return taken


STATE = None        # set in main()


# ---------------------------------------------------------------------------
# Request handling
# ---------------------------------------------------------------------------

class BodyTooLarge(Exception):
    pass


def classify(method, rel, query, mounts):
    """The statistics name of an API request."""
    segs = rel.split("/")
    if rel == "sys/health":
        return "health"
    if rel == "sys/seal-status":
        return "seal_status"
    if len(segs) >= 3 and segs[0] == "auth" and segs[-1] == "login":
        return "login"
    if rel == "auth/token/renew-self":
        return "renew"
    if rel == "auth/token/lookup-self":
        return "lookup"
    if rel == "auth/token/revoke-self":
        return "revoke"
    if segs[0] in mounts and len(segs) >= 2:
        sub = segs[1:]
        if sub[0] in ("encrypt", "decrypt", "rewrap") and len(sub) == 2:
            return sub[0]
        if sub[0] == "keys":
            if len(sub) == 1 or (len(sub) == 2 and sub[1] == ""):
                return "keys_list"
            if len(sub) == 2:
                if method in ("GET", "HEAD"):
                    return "keys_list" if query.get("list") else "keys_read"
                if method in ("POST", "PUT"):
                    return "keys_create"
                if method == "DELETE":
                    return "keys_delete"
                if method == "LIST":
                    return "keys_list"
            if len(sub) == 3 and sub[2] == "rotate":
                return "rotate"
            if len(sub) == 3 and sub[2] == "config":
                return "keys_config"
    return "other"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle holds the
    # body back for the client's delayed ACK (40 ms a request on Linux).
    disable_nagle_algorithm = True
    server_version = "vault-emu"
    sys_version = ""
    timeout = 120           # idle keep-alive connections are closed after this

    def log_message(self, fmt, *args):      # our own log line per request instead
        pass

    def __getattr__(self, name):
        # Every HTTP method goes through dispatch (do_GET, do_LIST, ...).
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    # -- plumbing --------------------------------------------------------

    def handle_expect_100(self):
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = 0
        if n > MAX_BODY:
            self.t0 = time.monotonic()
            self.notes = []
            self.close_connection = True
            self.respond(413, {"errors": ["http: request body too large"]})
            self.finish_log()
            return False
        return super().handle_expect_100()

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            data = bytearray()
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise ApiError(400, ["error reading data"])
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    break
                if len(data) + size > MAX_BODY:
                    self.close_connection = True
                    raise BodyTooLarge()
                data.extend(self.rfile.read(size))
                self.rfile.readline(16)
            return bytes(data)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(400, ["error reading data"])
        if n > MAX_BODY:
            if n <= DRAIN_LIMIT:
                left = n
                while left > 0:
                    chunk = self.rfile.read(min(left, 65536))
                    if not chunk:
                        break
                    left -= len(chunk)
            self.close_connection = True
            raise BodyTooLarge()
        return self.rfile.read(n)

    def respond(self, status, obj=None, headers=None):
        body = b""
        if obj is not None and status != 204:
            body = json.dumps(obj).encode()
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        self.status_sent = status
        if not getattr(self, "is_control", False):
            STATE.count_status(status)

    def finish_log(self):
        ms = (time.monotonic() - self.t0) * 1000
        path = urlsplit(self.path).path
        status = getattr(self, "status_sent", None)
        line = "%s %s %s %.1fms" % (self.command, path, status if status is not None else "-", ms)
        if self.notes:
            line += " (" + "; ".join(self.notes) + ")"
        log(line)

    def client_gone(self):
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(r)

    # -- entry point -----------------------------------------------------

    def dispatch(self):
        self.t0 = time.monotonic()
        self.notes = []
        self.status_sent = None
        self.is_control = False
        try:
            self.dispatch2()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout) as e:
            self.notes.append("connection error: %s" % e.__class__.__name__)
            self.close_connection = True
        except Exception as e:      # a bug here: answer like Vault's internal error
            self.notes.append("emulator error: %r" % e)
            self.close_connection = True
            if self.status_sent is None:
                try:
                    self.respond(500, {"errors": [INTERNAL_ERROR]})
                except OSError:
                    pass
        self.finish_log()

    def dispatch2(self):
        split = urlsplit(self.path)
        path = split.path
        query = parse_qs(split.query)
        try:
            raw = self.read_body()
        except BodyTooLarge:
            self.respond(413, {"errors": ["http: request body too large"]})
            return
        except ApiError as e:
            self.respond(e.status, {"errors": e.errors})
            return
        if path.startswith("/_emu/") or path == "/_emu":
            self.is_control = True
            self.control(path[len("/_emu/"):], raw)
            return
        self.api(path, query, raw)

    # -- the Vault API -----------------------------------------------------

    def parse_data(self, raw):
        """A request body as Vault reads it: JSON, or a form when the
        content type says so and it does not look like JSON."""
        text = raw.decode("utf-8", "replace")
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        stripped = text.lstrip(" \t\r\n")
        if ctype == "application/x-www-form-urlencoded" and stripped and stripped[0] not in "{[":
            return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(text).items()}, True
        if not stripped:
            return {}, True
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ApiError(400, ["failed to parse JSON input: %s" % e])
        if not isinstance(data, dict):
            raise ApiError(400, ["failed to parse JSON input: json: cannot unmarshal %s into Go value "
                                 "of type map[string]interface {}" % type(data).__name__])
        return data, True

    def resolve_namespace(self, rel):
        """(namespace, path within it, known) from X-Vault-Namespace and a
        leading namespace in the path."""
        hdr = (self.headers.get("X-Vault-Namespace") or "").strip().strip("/")
        segs = rel.split("/")
        for k in range(len(segs) - 1, 0, -1):
            cand = "/".join(s for s in (hdr, "/".join(segs[:k])) if s)
            if cand and cand in STATE.namespaces and segs[0] not in STATE.mounts:
                return cand, "/".join(segs[k:]), True
        return hdr, rel, hdr in STATE.namespaces

    def record_last(self, path, raw):
        fields = None
        try:
            j = json.loads(raw.decode("utf-8")) if raw.strip() else None
            if isinstance(j, dict):
                fields = sorted(j.keys())
        except ValueError:
            pass
        if fields is None and raw.strip():
            fields = sorted(parse_qs(raw.decode("utf-8", "replace")).keys()) or None
        return {
            "method": self.command,
            "path": path,
            "query": sorted(parse_qs(urlsplit(self.path).query).keys()),
            "headers": sorted({k for k in self.headers.keys()}),
            "namespace": self.headers.get("X-Vault-Namespace"),
            "token_sent": bool(self.headers.get("X-Vault-Token") or
                               (self.headers.get("Authorization") or "").startswith("Bearer ")),
            "body_fields": fields,
            "body_bytes": len(raw),
            "time": time.time(),
        }

    def api(self, path, query, raw):
        st = STATE
        if not path.startswith("/v1/"):
            rel, ns, known = path.lstrip("/"), "", True
        else:
            rel = path[len("/v1/"):]
            ns, rel, known = self.resolve_namespace(rel)
        op = classify(self.command, rel, query, st.mounts)
        with st.lock:
            st.stats["total"] += 1
            st.stats["by_op"][op] = st.stats["by_op"].get(op, 0) + 1
            st.last_request = self.record_last(path, raw)
        if ns:
            self.notes.append("ns=" + ns)

        fault = st.take_fault(op, path)
        if fault is not None:
            mode, fstatus, delay_ms, gen = fault
            self.notes.append("fault=" + mode)
            if mode == "hang":
                while True:
                    time.sleep(0.05)
                    with st.lock:
                        cleared = st.fault.generation != gen
                    if cleared:
                        self.notes.append("hang released")
                        break
                    if self.client_gone():
                        self.notes.append("client went away")
                        self.close_connection = True
                        return
            elif mode == "error":
                self.respond(fstatus, {"errors": [INTERNAL_ERROR]})
                return
            elif mode == "throttle":
                self.respond(429, {"errors": ['request path "%s": rate limit quota exceeded' % rel]},
                             {"Retry-After": "1"})
                return
            elif mode == "close":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            elif mode == "slow":
                time.sleep(max(0, delay_ms) / 1000.0)
            elif mode == "sealed":
                self.sealed_answer(rel, query)
                return

        if not path.startswith("/v1/"):
            self.respond(404, {"errors": []})
            return
        try:
            status, body, headers = self.route(rel, ns, known, query, raw, op)
        except ApiError as e:
            if e.note:
                self.notes.append(e.note)
            self.respond(e.status, {"errors": e.errors}, e.headers)
            return
        self.respond(status, body, headers)

    def sealed_answer(self, rel, query):
        if rel == "sys/health":
            body = self.health_body(sealed=True)
            code = int(query.get("sealedcode", ["503"])[0])
            self.respond(code, body)
        elif rel == "sys/seal-status":
            self.respond(200, self.seal_status_body(sealed=True))
        else:
            self.respond(503, {"errors": ["Vault is sealed"]})

    def health_body(self, sealed=False):
        body = {
            "initialized": True,
            "sealed": sealed,
            "standby": sealed,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": VERSION,
        }
        if not sealed:
            body["cluster_name"] = "vault-emu"
            body["cluster_id"] = STATE.cluster_id
        return body

    def seal_status_body(self, sealed=False):
        body = {
            "type": "shamir", "initialized": True, "sealed": sealed, "t": 1, "n": 1,
            "progress": 0, "nonce": "", "version": VERSION, "build_date": "2024-01-01T00:00:00Z",
            "migration": False, "recovery_seal": False, "storage_type": "inmem",
        }
        if not sealed:
            body["cluster_name"] = "vault-emu"
            body["cluster_id"] = STATE.cluster_id
        return body

    def authenticate(self, ns):
        st = STATE
        tid = self.headers.get("X-Vault-Token")
        if not tid:
            auth = self.headers.get("Authorization") or ""
            if auth.startswith("Bearer "):
                tid = auth[len("Bearer "):].strip()
        reason = None
        tok = None
        now = time.time()
        with st.lock:
            if not tid:
                reason = "auth: no token"
            else:
                tok = st.tokens.get(tid)
                if tok is None:
                    reason = "auth: unknown token"
                elif not tok.valid(now):
                    reason = "auth: expired token"
                elif tok.kind != "root" and tok.namespace != ns:
                    reason = "auth: token of namespace '%s' used in '%s'" % (tok.namespace, ns)
            if reason:
                st.stats["auth_failures"] += 1
        if reason:
            raise ApiError(403, [PERMISSION_DENIED], note=reason)
        return tok

    def acl(self, tok, rel, cap):
        if "root" in tok.policies:
            return
        for pol in tok.policies:
            for pattern, caps in STATE.policies.get(pol, {}).items():
                if path_matches(pattern, rel) and cap in caps and "deny" not in caps:
                    return
        raise ApiError(403, [ACL_DENIED], note="acl: %s on %s denied" % (cap, rel))

    def route(self, rel, ns, known, query, raw, op):
        method = self.command
        if method == "PUT":
            method = "POST"
        if method not in ("GET", "POST", "DELETE", "HEAD", "LIST"):
            raise ApiError(405, [])
        if method == "GET" and query.get("list", [""])[0] in ("true", "1"):
            method = "LIST"
        cap = {"GET": "read", "HEAD": "read", "POST": "update", "DELETE": "delete", "LIST": "list"}[method]
        data = {}
        if method == "POST":
            data, _ = self.parse_data(raw)

        # Unauthenticated paths.
        if rel == "sys/health":
            if method not in ("GET", "HEAD"):
                raise ApiError(405, [])
            code = int(query.get("activecode", ["200"])[0])
            return code, self.health_body(), None
        if rel == "sys/seal-status":
            if method != "GET":
                raise ApiError(405, [])
            return 200, self.seal_status_body(), None
        if not known:
            with STATE.lock:
                STATE.stats["auth_failures"] += 1
            raise ApiError(403, [PERMISSION_DENIED], note="unknown namespace '%s'" % ns)
        if rel == "auth/approle/login":
            if method != "POST":
                raise ApiError(405, [])
            return self.approle_login(ns, data)

        tok = self.authenticate(ns)
        segs = rel.split("/")

        if segs[0] == "auth" and len(segs) >= 2 and segs[1] in ("token", "approle"):
            if rel == "auth/token/lookup-self":
                self.acl(tok, rel, cap)
                if method not in ("GET", "POST"):
                    raise ApiError(405, [])
                return self.lookup_self(tok)
            if rel == "auth/token/renew-self":
                self.acl(tok, rel, cap)
                if method != "POST":
                    raise ApiError(405, [])
                return self.renew_self(tok, data)
            if rel == "auth/token/revoke-self":
                self.acl(tok, rel, cap)
                if method != "POST":
                    raise ApiError(405, [])
                with STATE.lock:
                    if tok.kind != "root":
                        STATE.tokens.pop(tok.id, None)
                return 204, None, None
            self.acl(tok, rel, cap)
            raise ApiError(404, [])
        if segs[0] == "sys":
            self.acl(tok, rel, cap)
            raise ApiError(404, [])
        if segs[0] in STATE.mounts:
            return self.transit(tok, ns, segs[0], segs[1:], rel, method, cap, data, query)
        self.acl(tok, rel, cap)
        full = "/".join(s for s in (ns, rel) if s)
        raise ApiError(404, ['no handler for route "%s". route entry not found.' % full])

    # -- auth ------------------------------------------------------------

    def auth_block(self, tok, lease):
        return {
            "client_token": tok.id,
            "accessor": tok.accessor,
            "policies": tok.policies,
            "token_policies": tok.policies,
            "metadata": tok.meta,
            "lease_duration": lease,
            "renewable": tok.expire is not None,
            "entity_id": tok.entity_id if tok.kind == "login" else "",
            "token_type": "service",
            "orphan": True,
            "mfa_requirement": None,
            "num_uses": 0,
        }

    def approle_login(self, ns, data):
        st = STATE
        role_id = get_str(data, "role_id").strip()
        secret_id = get_str(data, "secret_id").strip()

        def fail(msg, note):
            with st.lock:
                st.stats["login_failures"] += 1
            raise ApiError(400, [msg], note=note)

        if not role_id:
            fail("missing role_id", "login: no role_id")
        with st.lock:
            role = st.roles.get(role_id)
            if role is None or role.namespace != ns:
                fail(BAD_LOGIN, "login: unknown role_id")
            if not secret_id:
                fail("missing secret_id", "login: no secret_id")
            if role.revoked or secret_id not in role.secret_ids:
                fail(BAD_LOGIN, "login: secret_id refused" + (" (revoked)" if role.revoked else ""))
            ttl = role.token_ttl or SYSTEM_MAX_TTL
            max_ttl = role.token_max_ttl or SYSTEM_MAX_TTL
            warnings = []
            if ttl > max_ttl:
                warnings.append('TTL of "%s" exceeded the effective max_ttl of "%s"; TTL value is '
                                'capped accordingly' % (go_duration(ttl), go_duration(max_ttl)))
                ttl = max_ttl
            pols = sorted(set(["default"] + role.policies))
            tok = Token("hvs." + random_id(24), "login", pols, ns, ttl=ttl, max_ttl=max_ttl,
                        role=role, meta={"role_name": role.name})
            tok.entity_id = role.entity_id
            tok.ttl = role.token_ttl or SYSTEM_MAX_TTL
            st.tokens[tok.id] = tok
            # Forget tokens long gone so the table does not grow forever.
            now = time.time()
            for tid in [t for t, v in st.tokens.items()
                        if v.kind == "login" and v.expire is not None and v.expire < now - 3600]:
                del st.tokens[tid]
        self.notes.append("login: role %s, ttl %ds" % (role.name, ttl))
        return 200, envelope(auth=self.auth_block(tok, ttl), warnings=warnings), None

    def lookup_self(self, tok):
        now = time.time()
        with STATE.lock:
            data = {
                "accessor": tok.accessor,
                "creation_time": int(tok.created),
                "creation_ttl": tok.creation_ttl,
                "display_name": "approle" if tok.kind == "login" else ("root" if tok.kind == "root" else "token"),
                "entity_id": tok.entity_id if tok.kind == "login" else "",
                "expire_time": rfc3339(tok.expire) if tok.expire is not None else None,
                "explicit_max_ttl": 0,
                "id": tok.id,
                "issue_time": rfc3339(tok.created),
                "meta": tok.meta,
                "num_uses": 0,
                "orphan": True,
                "path": "auth/approle/login" if tok.kind == "login" else "auth/token/create",
                "policies": tok.policies,
                "renewable": tok.expire is not None,
                "ttl": tok.remaining(now),
                "type": "service",
                "namespace_path": tok.namespace + "/" if tok.namespace else "",
            }
        return 200, envelope(data=data), None

    def renew_self(self, tok, data):
        inc = parse_duration_seconds(data.get("increment"), "increment")
        now = time.time()
        with STATE.lock:
            if tok.expire is None:
                raise user_error("lease is not renewable")
            proposed = inc if inc > 0 else tok.ttl
            max_left = tok.created + tok.max_ttl - now
            if max_left <= 0:
                raise user_error("past the max TTL, cannot renew")
            warnings = []
            if proposed > max_left:
                ttl = int(max_left)
                warnings.append('TTL of "%s" exceeded the effective max_ttl of "%s"; TTL value is '
                                'capped accordingly' % (go_duration(proposed), go_duration(ttl)))
            else:
                ttl = proposed
            tok.expire = now + ttl
        self.notes.append("renewed for %ds" % ttl)
        return 200, envelope(auth=self.auth_block(tok, ttl), warnings=warnings), None

    # -- transit ---------------------------------------------------------

    def transit(self, tok, ns, mount, sub, rel, method, cap, data, query):
        st = STATE
        name = sub[1] if len(sub) >= 2 else ""
        valid_name = bool(KEY_NAME_RE.match(name))

        if sub and sub[0] == "keys" and (len(sub) == 1 or (len(sub) == 2 and name == "")):
            self.acl(tok, rel, cap)
            if method != "LIST":
                raise ApiError(405, [])
            with st.lock:
                names = sorted(n for (kns, km, n) in st.keys if kns == ns and km == mount)
            if not names:
                raise ApiError(404, [])
            return 200, envelope(data={"keys": names}, mount_type="transit"), None

        if len(sub) == 2 and sub[0] in ("encrypt", "decrypt", "rewrap") and valid_name:
            if method != "POST":
                self.acl(tok, rel, cap)
                raise ApiError(405, [])
            if sub[0] == "encrypt":
                return self.t_encrypt(tok, ns, mount, name, rel, data)
            if sub[0] == "decrypt":
                self.acl(tok, rel, cap)
                return self.t_decrypt(ns, mount, name, data)
            self.acl(tok, rel, cap)
            return self.t_rewrap(ns, mount, name, data)

        if len(sub) == 2 and sub[0] == "keys" and valid_name:
            self.acl(tok, rel, cap)
            ident = (ns, mount, name)
            if method in ("GET", "HEAD"):
                with st.lock:
                    k = st.keys.get(ident)
                    if k is None:
                        raise ApiError(404, [])
                    return 200, envelope(data=k.describe(), mount_type="transit"), None
            if method == "POST":
                return self.t_create(ident, data)
            if method == "DELETE":
                with st.lock:
                    k = st.keys.get(ident)
                    if k is None:
                        return 204, None, None
                    if not k.deletion_allowed:
                        raise user_error("error deleting policy %s: deletion is not allowed for this policy"
                                         % name)
                    del st.keys[ident]
                    st.save_state()
                return 204, None, None
            raise ApiError(405, [])

        if len(sub) == 3 and sub[0] == "keys" and valid_name and sub[2] in ("rotate", "config"):
            self.acl(tok, rel, cap)
            if method != "POST":
                raise ApiError(405, [])
            ident = (ns, mount, name)
            if sub[2] == "rotate":
                with st.lock:
                    k = st.keys.get(ident)
                    if k is None:
                        raise user_error("key not found")
                    k.rotate()
                    st.save_state()
                    desc = k.describe()
                self.notes.append("rotated to v%d" % desc["latest_version"])
                return 200, envelope(data=desc, warnings=unknown_fields_warning(data, "rotate"),
                                     mount_type="transit"), None
            return self.t_config(ident, name, data)

        self.acl(tok, rel, cap)
        raise ApiError(404, [])

    def t_create(self, ident, data):
        st = STATE
        ktype = get_str(data, "type") or "aes256-gcm96"
        derived = get_bool(data, "derived")
        convergent = get_bool(data, "convergent_encryption")
        exportable = get_bool(data, "exportable")
        period = parse_duration_seconds(data.get("auto_rotate_period"), "auto_rotate_period")
        if period != 0 and period < 3600:
            raise user_error("auto rotate period must be 0 to disable or at least an hour")
        if convergent and not derived:
            raise user_error("convergent encryption requires derivation to be enabled")
        if ktype not in KEY_TYPES:
            raise user_error("unknown key type %s" % ktype)
        if convergent:
            raise user_error("convergent encryption is not supported by this emulator")
        warnings = unknown_fields_warning(data, "keys_create")
        with st.lock:
            k = st.keys.get(ident)
            if k is None:
                k = Key(ident[2], ktype, derived, exportable)
                k.auto_rotate_period = period
                k.rotate()
                st.keys[ident] = k
                st.save_state()
                self.notes.append("created %s%s" % (ktype, " derived" if derived else ""))
            else:
                warnings.append("key %s already existed" % ident[2])
            desc = k.describe()
        if st.config.get("keys_create_204"):
            return 204, None, None
        return 200, envelope(data=desc, warnings=warnings, mount_type="transit"), None

    def t_config(self, ident, name, data):
        st = STATE
        with st.lock:
            k = st.keys.get(ident)
            if k is None:
                raise user_error("no existing key named %s could be found" % name)
            orig = (k.min_decryption_version, k.min_encryption_version, k.deletion_allowed,
                    k.exportable, k.auto_rotate_period)
            warnings = unknown_fields_warning(data, "keys_config")
            try:
                if "min_decryption_version" in data:
                    v = get_int(data, "min_decryption_version")
                    if v < 0:
                        raise user_error("min decryption version cannot be negative")
                    if v == 0:
                        v = 1
                        warnings.append("since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1")
                    if v != k.min_decryption_version:
                        if v > k.latest:
                            raise user_error("cannot set min decryption version of %d, latest key version is %d"
                                             % (v, k.latest))
                        k.min_decryption_version = v
                if "min_encryption_version" in data:
                    v = get_int(data, "min_encryption_version")
                    if v < 0:
                        raise user_error("min encryption version cannot be negative")
                    if v != k.min_encryption_version:
                        if v > k.latest:
                            raise user_error("cannot set min encryption version of %d, latest key version is %d"
                                             % (v, k.latest))
                        k.min_encryption_version = v
                if 0 < k.min_encryption_version < k.min_decryption_version:
                    raise user_error("cannot set min encryption/decryption values; min encryption version of %d "
                                     "must be greater than or equal to min decryption version of %d"
                                     % (k.min_encryption_version, k.min_decryption_version))
                if "deletion_allowed" in data:
                    k.deletion_allowed = get_bool(data, "deletion_allowed")
                if "exportable" in data and get_bool(data, "exportable"):
                    k.exportable = True
                if "auto_rotate_period" in data:
                    p = parse_duration_seconds(data.get("auto_rotate_period"), "auto_rotate_period")
                    if p != 0 and p < 3600:
                        raise user_error("auto rotate period must be 0 to disable or at least an hour")
                    k.auto_rotate_period = p
            except ApiError:
                (k.min_decryption_version, k.min_encryption_version, k.deletion_allowed,
                 k.exportable, k.auto_rotate_period) = orig
                raise
            st.save_state()
            desc = k.describe()
        return 200, envelope(data=desc, warnings=warnings, mount_type="transit"), None

    @staticmethod
    def decode_context(ctx_s):
        if not ctx_s:
            return b"", None
        try:
            return go_b64decode(ctx_s), None
        except B64Error as e:
            return b"", str(e)

    @staticmethod
    def decode_ad(ad_s):
        if not ad_s:
            return None
        try:
            return go_b64decode(ad_s)
        except B64Error as e:
            raise ApiError(500, ["unable to get associated_data/additional_data from factory[0]: %s" % e])

    @staticmethod
    def seal(k, version, ctx, pt, ad_s):
        if version == 0:
            version = k.latest
        elif version < 0:
            raise user_error("requested version for encryption is negative")
        elif version > k.latest:
            raise user_error("requested version for encryption is higher than the latest key version")
        elif version < k.min_encryption_version:
            raise user_error("requested version for encryption is less than the minimum encryption key version")
        key = k.enc_key(version, ctx)
        ad = Handler.decode_ad(ad_s)
        nonce = os.urandom(12)
        ct = k.aead(key).encrypt(nonce, pt, ad)
        return "vault:v%d:%s" % (version, b64(nonce + ct)), version

    @staticmethod
    def open_value(k, ctx, value, ad_s):
        if not value.startswith("vault:v"):
            raise user_error("invalid ciphertext: no prefix")
        parts = value[len("vault:v"):].split(":", 1)
        if len(parts) != 2:
            raise user_error("invalid ciphertext: wrong number of fields")
        if not re.fullmatch(r"[+-]?[0-9]+", parts[0]):
            raise user_error("invalid ciphertext: version number could not be decoded")
        ver = int(parts[0])
        if ver == 0:
            ver = 1
        if ver > k.latest:
            raise user_error("invalid ciphertext: version is too new")
        if k.min_decryption_version > 0 and ver < k.min_decryption_version:
            raise user_error(TOO_OLD)
        try:
            raw = go_b64decode(parts[1])
        except B64Error:
            raise user_error("invalid ciphertext: could not decode base64")
        if ver not in k.versions:
            raise user_error("no such key version")
        key = k.enc_key(ver, ctx)
        ad = Handler.decode_ad(ad_s)
        if len(raw) < 12:
            raise user_error("invalid ciphertext length")
        try:
            return k.aead(key).decrypt(raw[:12], raw[12:], ad), ver
        except InvalidTag:
            raise user_error(AUTH_FAILED)

    def t_encrypt(self, tok, ns, mount, name, rel, data):
        st = STATE
        ident = (ns, mount, name)
        # Vault checks the ACL before the handler runs: "create" when the
        # key does not exist (encrypt would create it), else "update".
        with st.lock:
            exists = ident in st.keys
        self.acl(tok, rel, "update" if exists else "create")
        if "batch_input" in data:
            raise user_error("batch_input is not supported by this emulator")
        if "plaintext" not in data:
            raise user_error("missing plaintext to encrypt")
        pt_s = get_str(data, "plaintext")
        ctx_s = get_str(data, "context")
        ad_s = get_str(data, "associated_data")
        version = get_int(data, "key_version")
        item_err = None
        pt = b""
        try:
            pt = go_b64decode(pt_s)
        except B64Error as e:
            item_err = str(e)
        ctx, cerr = self.decode_context(ctx_s)
        item_err = item_err or cerr
        warnings = unknown_fields_warning(data, "encrypt")
        with st.lock:
            k = st.keys.get(ident)
            if k is None:
                if exists:
                    raise user_error("encryption key not found")
                ktype = get_str(data, "type") or "aes256-gcm96"
                convergent = get_bool(data, "convergent_encryption")
                if convergent and not ctx_s:
                    raise user_error("convergent encryption requires derivation to be enabled, so context is required")
                if ktype in ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521"):
                    raise user_error("key type %s not supported for this operation" % ktype)
                if ktype not in KEY_TYPES:
                    raise user_error("unknown key type %s" % ktype)
                if convergent:
                    raise user_error("convergent encryption is not supported by this emulator")
                k = Key(name, ktype, derived=bool(ctx_s))
                k.rotate()
                st.keys[ident] = k
                st.save_state()
                self.notes.append("upserted %s%s" % (ktype, " derived" if k.derived else ""))
            elif not exists:
                warnings.append("Attempted creation of the key during the encrypt operation, but it was created beforehand")
            if item_err:
                raise user_error(item_err)
            ciphertext, ver = self.seal(k, version, ctx, pt, ad_s)
        return 200, envelope(data={"ciphertext": ciphertext, "key_version": ver}, warnings=warnings,
                             mount_type="transit"), None

    def t_decrypt(self, ns, mount, name, data):
        st = STATE
        if "batch_input" in data:
            raise user_error("batch_input is not supported by this emulator")
        ct_s = get_str(data, "ciphertext")
        if not ct_s:
            raise user_error("missing ciphertext to decrypt")
        ctx, cerr = self.decode_context(get_str(data, "context"))
        ad_s = get_str(data, "associated_data")
        warnings = unknown_fields_warning(data, "decrypt")
        with st.lock:
            k = st.keys.get((ns, mount, name))
            if k is None:
                raise user_error("encryption key not found")
            if cerr:
                raise user_error(cerr)
            pt, _ = self.open_value(k, ctx, ct_s, ad_s)
        return 200, envelope(data={"plaintext": b64(pt)}, warnings=warnings, mount_type="transit"), None

    def t_rewrap(self, ns, mount, name, data):
        st = STATE
        if "batch_input" in data:
            raise user_error("batch_input is not supported by this emulator")
        ct_s = get_str(data, "ciphertext")
        if not ct_s:
            raise user_error("missing ciphertext to decrypt")
        ctx, cerr = self.decode_context(get_str(data, "context"))
        version = get_int(data, "key_version")
        # Like Vault: rewrap has no associated_data field; it is ignored
        # (with a warning) and the ciphertext is opened without any.
        warnings = unknown_fields_warning(data, "rewrap")
        with st.lock:
            k = st.keys.get((ns, mount, name))
            if k is None:
                raise user_error("encryption key not found")
            if cerr:
                raise user_error(cerr)
            pt, old = self.open_value(k, ctx, ct_s, "")
            ciphertext, ver = self.seal(k, version, ctx, pt, "")
        self.notes.append("v%d -> v%d" % (old, ver))
        return 200, envelope(data={"ciphertext": ciphertext, "key_version": ver}, warnings=warnings,
                             mount_type="transit"), None

    # -- control API -----------------------------------------------------

    def control(self, what, raw):
        st = STATE
        method = self.command
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as e:
            self.respond(400, {"errors": ["failed to parse JSON input: %s" % e]})
            return
        try:
            out = self.control2(st, method, what.strip("/"), body)
        except ApiError as e:
            self.respond(e.status, {"errors": e.errors})
            return
        self.respond(200, out)

    def control2(self, st, method, what, body):
        post = method in ("POST", "PUT")
        if what == "fault":
            if not post:
                with st.lock:
                    return st.fault.describe()
            mode = body.get("mode", "none")
            if mode not in FAULT_MODES:
                raise user_error("mode must be one of %s" % ", ".join(FAULT_MODES))
            count = body.get("count")
            if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
                raise user_error("count must be an integer")
            with st.lock:
                f = st.fault
                f.generation += 1
                f.mode = mode if (count is None or count > 0) else "none"
                f.remaining = count if f.mode != "none" else None
                f.status = int(body.get("status", 500))
                f.delay_ms = int(body.get("delay_ms", 1000))
                ops = body.get("ops")
                f.ops = list(ops) if ops else None
                f.path_contains = body.get("path_contains")
                self.notes.append("fault %s count %s" % (f.mode, f.remaining))
                return f.describe()
        if what == "stats" and not post:
            with st.lock:
                return json.loads(json.dumps(st.stats))
        if what == "reset-stats" and post:
            with st.lock:
                st.reset_stats()
                return {"ok": True}
        if what == "expire-tokens" and post:
            with st.lock:
                n = 0
                for tok in st.tokens.values():
                    if tok.kind != "root":
                        tok.expired = True
                        n += 1
                return {"expired": n}
        if what == "restore-tokens" and post:
            with st.lock:
                st.load_tokens()
                return {"ok": True}
        if what == "approle":
            with st.lock:
                roles = [st.roles[body["role_id"]]] if body.get("role_id") in st.roles else list(st.roles.values())
                if post:
                    for r in roles:
                        if body.get("reset"):
                            r.token_ttl = int(r.cfg.get("token_ttl", 3600))
                            r.token_max_ttl = int(r.cfg.get("token_max_ttl", 86400))
                        if "token_ttl" in body:
                            r.token_ttl = parse_duration_seconds(body["token_ttl"], "token_ttl")
                        if "token_max_ttl" in body:
                            r.token_max_ttl = parse_duration_seconds(body["token_max_ttl"], "token_max_ttl")
                return {"roles": {r.role_id: {"role_name": r.name, "token_ttl": r.token_ttl,
                                              "token_max_ttl": r.token_max_ttl, "revoked": r.revoked}
                                  for r in roles}}
        if what in ("revoke-secret-id", "restore-secret-id") and post:
            with st.lock:
                roles = [st.roles[body["role_id"]]] if body.get("role_id") in st.roles else list(st.roles.values())
                for r in roles:
                    r.revoked = what == "revoke-secret-id"
                return {"revoked": what == "revoke-secret-id", "roles": [r.role_id for r in roles]}
        if what == "last-request" and not post:
            with st.lock:
                return st.last_request or {}
        if what == "keys" and not post:
            with st.lock:
                return {"keys": [{"namespace": ns, "mount": m, "name": n, "type": k.type,
                                  "derived": k.derived, "latest_version": k.latest,
                                  "min_decryption_version": k.min_decryption_version}
                                 for (ns, m, n), k in sorted(st.keys.items())]}
        raise ApiError(404, ["unknown control endpoint %s %s" % (method, what)])


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, ssl_ctx=None):
        super().__init__(addr, handler)
        self.ssl_ctx = ssl_ctx
        if ssl_ctx is not None:
            # The handshake is done in the connection's own thread (below),
            # so a client that never completes it blocks nobody else.
            self.socket = ssl_ctx.wrap_socket(self.socket, server_side=True,
                                              do_handshake_on_connect=False)

    def finish_request(self, request, client_address):
        if self.ssl_ctx is not None:
            try:
                request.settimeout(10)
                request.do_handshake()
                request.settimeout(None)
            except (ssl.SSLError, OSError) as e:
                log("TLS handshake with %s:%d failed: %s" % (client_address[0], client_address[1], e))
                return
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        log("error on connection from %s:%d: %r" % (client_address[0], client_address[1], exc))


def main():
    global STATE
    ap = argparse.ArgumentParser(description="Vault / OpenBao Transit emulator")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--config", required=True)
    ap.add_argument("--state", help="keep Transit keys in this file across restarts")
    ap.add_argument("--new-session", action="store_true", help="start a new session (setsid)")
    args = ap.parse_args()
    if args.new_session:
        try:
            os.setsid()
        except OSError:
            pass
    if bool(args.cert) != bool(args.key):
        ap.error("--cert and --key go together")

    def bye(signum, frame):
        log("signal %d: exiting" % signum)
        os._exit(0)

    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGINT, bye)

    with open(args.config) as f:
        config = json.load(f)
    STATE = State(config, args.state)

    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
    httpd = Server((args.host, args.port), Handler, ctx)
    log("vault-emu %s listening on %s://%s:%d (pid %d, %d keys)" % (
        VERSION, "https" if ctx else "http", args.host, args.port, os.getpid(), len(STATE.keys)))
    httpd.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
