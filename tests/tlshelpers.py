"""
A throwaway certificate authority and server certificate, made at test
time with C{cryptography} (no keys checked in), and TLS listeners for
loopback tests.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl


class TestAuthority:
    """
    A CA and one server certificate for C{names}.

    @ivar caPEM: the CA certificate (PEM bytes), for C{--cacert} or a trust
        root.
    @ivar serverPEM: server certificate and key (PEM bytes).
    """

    def __init__(self, names: Sequence[str] = ("fakestore.test", "localhost"),
                 addresses: Sequence[str] = ()) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        caKey = ec.generate_private_key(ec.SECP256R1())
        caName = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "snapstore test CA")])
        caCert = (x509.CertificateBuilder().subject_name(caName).issuer_name(caName)
                  .public_key(caKey.public_key()).serial_number(x509.random_serial_number())
                  .not_valid_before(now - datetime.timedelta(hours=1))
                  .not_valid_after(now + datetime.timedelta(days=1))
                  .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                  .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                               False, False), critical=True)
                  .sign(caKey, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(caName).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName(n) for n in names]
                    + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]),
                    critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(caKey, hashes.SHA256()))
        self.caPEM = caCert.public_bytes(serialization.Encoding.PEM)
        self.serverPEM = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())

    def serverOptions(self) -> Any:
        """
        Twisted server TLS options for the server certificate.
        """
        return ssl.PrivateCertificate.loadPEM(self.serverPEM).options()

    def writeCA(self, path: str) -> str:
        with open(path, "wb") as caFile:
            caFile.write(self.caPEM)
        return path

    def writeServer(self, path: str) -> str:
        with open(path, "wb") as serverFile:
            serverFile.write(self.serverPEM)
        return path
