# -*- test-case-name: tests.test_tls -*-
"""
TLS for the store endpoint: self-signed certificates and checking the
files an C{ssl:} endpoint names before Twisted tries to load them.

Twisted reports a missing or mismatched key file from deep inside pyOpenSSL
when the listener starts, in words that do not name the option at fault.
L{checkServerEndpoint} runs at option parsing instead, and says which
file is wrong and how to fix it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from typing import Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from snapstore.http.endpoints import splitEndpoint

#: Validity of generated certificates: within the 825 days clients accept.
DEFAULT_DAYS = 825


class TLSConfigError(ValueError):
    """
    A TLS file is missing, unreadable or does not fit; the message says
    which and what to do.
    """


_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def checkSubjectName(name: str) -> str:
    """
    Check that C{name} can go in a certificate's subjectAltName: an IP
    address, or a DNS name (letters, digits and hyphens in dot-separated
    labels of at most 63 characters; a leading C{*.} wildcard allowed).

    @return: the name, without a trailing dot.
    @raise ValueError: saying what is wrong with it.
    """
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    host = name[:-1] if name.endswith(".") else name
    labels = host.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if not host or len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"not a DNS name or IP address: {name!r} (use e.g. "
                         f"snapstore.example.lan or 192.0.2.10)")
    return host


def _subjectAltNames(names: Iterable[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def makeSelfSigned(domain: str, extraNames: Iterable[str] = (), days: int = DEFAULT_DAYS,
                   now: Optional[datetime.datetime] = None) -> tuple[bytes, bytes]:
    """
    Make a key and a self-signed certificate for C{domain}.

    The certificate is its own CA (devices trust it with C{snap set system
    store-certs.NAME=...}), names C{domain} and C{extraNames} (host names
    or IP addresses) in its subjectAltName, which is what clients check,
    and may serve as a TLS server certificate.

    @return: C{(keyPEM, certificatePEM)}.
    """
    if not domain:
        raise ValueError("a certificate needs a --domain")
    domain = checkSubjectName(domain)
    extraNames = [checkSubjectName(name) for name in extraNames if name]
    names = [domain] + [name for name in extraNames if name and name != domain]
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, domain[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "snapstore self-signed"),
    ])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_subjectAltNames(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(serialization.Encoding.PEM,
                               serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    return keyPEM, certificate.public_bytes(serialization.Encoding.PEM)


def writeSelfSigned(directory: str, domain: str, extraNames: Iterable[str] = (),
                    days: int = DEFAULT_DAYS, force: bool = False) -> tuple[str, str]:
    """
    Write C{<domain>.key} (mode 0600) and C{<domain>.crt} into C{directory}.

    @param force: overwrite existing files; without it, existing files are
        an error (a renewal must be deliberate).
    @return: the key and certificate paths.
    @raise TLSConfigError: when a file exists or cannot be written.
    """
    base = domain.replace("/", "_").replace(":", "_")
    keyPath = os.path.join(directory, base + ".key")
    certPath = os.path.join(directory, base + ".crt")
    if not force:
        for path in (keyPath, certPath):
            if os.path.exists(path):
                raise TLSConfigError(f"{path} exists; pass --force to replace it")
    keyPEM, certPEM = makeSelfSigned(domain, extraNames, days)
    try:
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(keyPath):
            os.unlink(keyPath)
        descriptor = os.open(keyPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as keyFile:
            keyFile.write(keyPEM)
        with open(certPath, "wb") as certFile:
            certFile.write(certPEM)
    except OSError as error:
        raise TLSConfigError(f"cannot write {error.filename}: {error.strerror}")
    return keyPath, certPath


def _read(path: str, what: str, option: str) -> bytes:
    try:
        with open(path, "rb") as pemFile:
            return pemFile.read()
    except OSError as error:
        raise TLSConfigError(
            f"{option}: cannot read the {what} file {path}: {error.strerror}"
            + (" (make one with: snapstore certificate --selfsigned --domain NAME)"
               if isinstance(error, FileNotFoundError) else ""))


def loadCertificates(pem: bytes) -> list[x509.Certificate]:
    """
    @return: every certificate in a PEM blob, in order (empty if none).
    """
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def checkServerEndpoint(description: Optional[str], option: str = "--store-endpoint") -> list[str]:
    """
    Check the key and certificate files of an C{ssl:} server endpoint.

    Other endpoint kinds pass unchecked.

    @return: warnings worth logging (an expired certificate).
    @raise TLSConfigError: naming C{option}, the file and the fault.
    """
    if not description:
        return []
    args, kwargs = splitEndpoint(description)
    if not args or args[0].lower() != "ssl":
        return []
    keyPath = kwargs.get("privateKey")
    if not keyPath:
        raise TLSConfigError(
            f"{option}: {description} needs privateKey=FILE (and certKey=FILE), e.g. "
            f"ssl:8443:privateKey=/etc/snapstore/proxy.key:certKey=/etc/snapstore/proxy.crt")
    certPath = kwargs.get("certKey", keyPath)
    keyPEM = _read(keyPath, "private key", option)
    try:
        key = serialization.load_pem_private_key(keyPEM, password=None)
    except (ValueError, TypeError) as error:
        raise TLSConfigError(
            f"{option}: {keyPath} holds no usable unencrypted PEM private key ({error})")
    certificates = loadCertificates(_read(certPath, "certificate", option))
    if not certificates:
        raise TLSConfigError(f"{option}: {certPath} holds no PEM certificate")
    leaf = certificates[0]
    if leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise TLSConfigError(
            f"{option}: the private key {keyPath} does not belong to the certificate "
            f"{certPath} (the first certificate in the file must be the server's)")
    chain = kwargs.get("extraCertChain")
    if chain and not loadCertificates(_read(chain, "certificate chain", option)):
        raise TLSConfigError(f"{option}: {chain} holds no PEM certificate")
    warnings = []
    now = datetime.datetime.now(datetime.timezone.utc)
    if leaf.not_valid_after_utc < now:
        warnings.append(f"{option}: the certificate {certPath} expired on "
                        f"{leaf.not_valid_after_utc:%Y-%m-%d}; devices will refuse it")
    return warnings


def isSelfSigned(certificate: x509.Certificate) -> bool:
    """
    Whether C{certificate} is its own issuer (devices must trust it by
    hand).
    """
    return certificate.issuer == certificate.subject


def endpointCertificate(description: Optional[str]) -> Optional[x509.Certificate]:
    """
    The server certificate an C{ssl:} endpoint serves, or C{None} (not
    TLS, or unreadable).
    """
    if not description:
        return None
    args, kwargs = splitEndpoint(description)
    if not args or args[0].lower() != "ssl":
        return None
    path = kwargs.get("certKey", kwargs.get("privateKey"))
    if not path:
        return None
    try:
        with open(path, "rb") as pemFile:
            certificates = loadCertificates(pemFile.read())
    except OSError:
        return None
    return certificates[0] if certificates else None


def certificatePEM(certificate: x509.Certificate) -> str:
    """
    @return: C{certificate} in PEM, as text.
    """
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
