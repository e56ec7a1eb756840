#!/usr/bin/python3
"""Print the key bytes a core file must not hold, for the tests' scanners.

    key_bytes.py KEYRING CMK_REF CMK_VERSION KEY_ID VERSION WRAPPED_HEX

For a data key version wrapped by the 'file' provider (src/providers/file.c:
format byte, 4-byte CMK version, 12-byte nonce, ciphertext, 16-byte tag),
prints one hex string per line: the data key, its AES-256-GCM subkey and
its AES-256-SIV subkey (HKDF-SHA256 as src/keys/keyaccess.c derives them),
and the master key itself.  The data key is recovered as AES-GCM's CTR
keystream would give it; the tag is not checked (colcrypt checked it when
it wrapped the key, and only the bytes matter here).
"""
import base64
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def main():
    keyring, ref, cmk_version, key_id, version, wrapped = sys.argv[1:7]
    cmk = None
    for line in open(keyring, encoding='utf-8'):
        f = line.split()
        if len(f) == 4 and f[0] == 'cmk' and f[1] == ref and f[2] == cmk_version:
            cmk = base64.b64decode(f[3])
    if cmk is None:
        sys.exit(f'{ref} version {cmk_version} not in {keyring}')
    blob = bytes.fromhex(wrapped)
    nonce, ct = blob[5:17], blob[17:-16]
    dec = Cipher(algorithms.AES(cmk), modes.CTR(nonce + b'\0\0\0\2')).decryptor()
    dek = dec.update(ct) + dec.finalize()
    out = [dek]
    for label, n in ((b'colcrypt/v1/aes-256-gcm\0', 32), (b'colcrypt/v1/aes-256-siv\0', 64)):
        info = label + struct.pack('>II', int(key_id), int(version))
        out.append(HKDF(hashes.SHA256(), n, None, info).derive(dek))
    out.append(cmk)
    for k in out:
        print(k.hex())


if __name__ == '__main__':
    main()
