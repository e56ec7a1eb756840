"""Manage keys on the test PyKMIP server from outside colcrypt.

    /usr/bin/python3 kmipctl.py <dir> <port> create <name>   prints the new key's id
    /usr/bin/python3 kmipctl.py <dir> <port> revoke <uid>    the key becomes Deactivated
    /usr/bin/python3 kmipctl.py <dir> <port> state <uid>

<dir> is the directory server.sh made (its certs/ are used).
"""
import sys

from kmip import enums
from kmip.pie.client import ProxyKmipClient


def main():
    d, port, cmd, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    with ProxyKmipClient(hostname="127.0.0.1", port=port,
                         cert=d + "/certs/client.crt", key=d + "/certs/client.key",
                         ca=d + "/certs/ca.crt", ssl_version="PROTOCOL_TLSv1_2",
                         kmip_version=enums.KMIPVersion.KMIP_1_4) as c:
        if cmd == "create":
            uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=arg,
                           cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                     enums.CryptographicUsageMask.DECRYPT])
            c.activate(uid)
            print(uid)
        elif cmd == "revoke":
            c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, arg)
        elif cmd == "state":
            print(c.get_attributes(arg, ["State"])[1][0].attribute_value.value.name)
        else:
            sys.exit("unknown command " + cmd)


main()
