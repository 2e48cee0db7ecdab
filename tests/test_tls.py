# -*- test-case-name: tests.test_tls -*-
"""
Tests for L{snapstore.http.tls}: self-signed certificates, the checks of
C{ssl:} endpoint files, and a store endpoint really serving HTTPS with a
certificate made by C{snapstore certificate}.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import stat

from cryptography import x509
from twisted.internet import reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, readBody

from snapstore.cli import main
from snapstore.tap import Options
from snapstore.http.tls import (
    TLSConfigError,
    checkServerEndpoint,
    endpointCertificate,
    isSelfSigned,
    makeSelfSigned,
    writeSelfSigned,
)
from tests.test_admin import RunningService


class SelfSignedTests(SynchronousTestCase):
    """
    L{makeSelfSigned} and L{writeSelfSigned}.
    """

    def test_subjectAltName(self):
        """
        The certificate names the domain and every extra name or address
        in its subjectAltName, and is its own CA.
        """
        _, certPEM = makeSelfSigned("snaps.example", ["10.0.0.7", "alias.example"])
        certificate = x509.load_pem_x509_certificate(certPEM)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName),
                         ["snaps.example", "alias.example"])
        self.assertEqual(names.get_values_for_type(x509.IPAddress),
                         [ipaddress.ip_address("10.0.0.7")])
        self.assertTrue(certificate.extensions.get_extension_for_class(
            x509.BasicConstraints).value.ca)
        self.assertTrue(isSelfSigned(certificate))

    def test_writeKeyPrivate(self):
        """
        The key file is readable by its owner only; existing files are kept
        unless forced.
        """
        directory = self.mktemp()
        keyPath, certPath = writeSelfSigned(directory, "snaps.example")
        self.assertEqual(stat.S_IMODE(os.stat(keyPath).st_mode), 0o600)
        self.assertEqual(os.path.basename(certPath), "snaps.example.crt")
        error = self.assertRaises(TLSConfigError, writeSelfSigned, directory, "snaps.example")
        self.assertIn("pass --force", str(error))
        writeSelfSigned(directory, "snaps.example", force=True)

    def test_command(self):
        """
        C{snapstore certificate --selfsigned --domain NAME} writes the files
        and prints the endpoint string to use.
        """
        directory = self.mktemp()
        out, err = io.StringIO(), io.StringIO()
        code = main(["certificate", "--selfsigned", "--domain", "127.0.0.1",
                     "--out-dir", directory, "--json"], out, err)
        self.assertEqual(code, 0, err.getvalue())
        answer = json.loads(out.getvalue())
        self.assertTrue(os.path.exists(answer["private-key"]))
        self.assertEqual(checkServerEndpoint(answer["store-endpoint"]), [])


class CheckEndpointTests(SynchronousTestCase):
    """
    L{checkServerEndpoint} explains what is wrong with TLS files, and
    start-up stops with that explanation.
    """

    def setUp(self):
        self.directory = self.mktemp()
        self.key, self.cert = writeSelfSigned(self.directory, "snaps.example")

    def test_good(self):
        """
        Matching files pass; non-TLS endpoints are not checked.
        """
        self.assertEqual(checkServerEndpoint(f"ssl:8443:privateKey={self.key}:certKey={self.cert}"), [])
        self.assertEqual(checkServerEndpoint("tcp:8000"), [])
        self.assertEqual(checkServerEndpoint(None), [])

    def test_missingFile(self):
        """
        A missing key file is named, with how to make one.
        """
        error = self.assertRaises(TLSConfigError, checkServerEndpoint,
                                  f"ssl:8443:privateKey=/nonexistent.key:certKey={self.cert}")
        self.assertIn("--store-endpoint: cannot read the private key file /nonexistent.key: "
                      "No such file or directory", str(error))
        self.assertIn("snapstore certificate --selfsigned", str(error))

    def test_noPrivateKeyOption(self):
        """
        An C{ssl:} endpoint without C{privateKey=} says what it needs.
        """
        error = self.assertRaises(TLSConfigError, checkServerEndpoint, "ssl:8443")
        self.assertIn("needs privateKey=FILE", str(error))

    def test_mismatch(self):
        """
        A key that does not belong to the certificate is refused.
        """
        otherKey, _ = writeSelfSigned(self.mktemp(), "other.example")
        error = self.assertRaises(TLSConfigError, checkServerEndpoint,
                                  f"ssl:8443:privateKey={otherKey}:certKey={self.cert}")
        self.assertIn(f"the private key {otherKey} does not belong to the certificate "
                      f"{self.cert}", str(error))

    def test_notPEM(self):
        """
        A certificate file holding no certificate is named.
        """
        with open(self.cert, "w") as broken:
            broken.write("hello\n")
        error = self.assertRaises(TLSConfigError, checkServerEndpoint,
                                  f"ssl:8443:privateKey={self.key}:certKey={self.cert}")
        self.assertIn(f"{self.cert} holds no PEM certificate", str(error))

    def test_startUpRefused(self):
        """
        C{twistd snapstore} option parsing turns the fault into a usage
        error, before Twisted tries to load the files.
        """
        options = Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, [
            "--store-endpoint", "ssl:8443:privateKey=/nonexistent.key",
            "--config", os.devnull, "--data-dir", self.mktemp()])
        self.assertIn("cannot read the private key file /nonexistent.key", str(error))


class HTTPSStoreTests(TestCase):
    """
    A store endpoint on C{ssl:} with a self-signed certificate.
    """

    @inlineCallbacks
    def test_serveAndDescribe(self):
        """
        A client trusting the certificate reaches the store endpoint over
        HTTPS under the certificate's name, and the device setup carries
        the certificate for snapd's store-certs.
        """
        directory = os.path.abspath(self.mktemp())
        key, cert = writeSelfSigned(directory, "localhost", ["127.0.0.1"])
        service = RunningService(self)
        from tests.ports import freePort

        port = freePort()
        yield service.start("--store-endpoint",
                            f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        with open(cert, "rb") as certFile:
            authority = ssl.Certificate.loadPEM(certFile.read())
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=authority),
                      pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(
            b"GET", f"https://localhost:{port}/v1/client-config?format=json".encode())
        answer = json.loads((yield readBody(response)))
        self.assertEqual(response.code, 200)
        self.assertEqual(answer["store-url"], f"https://localhost:{port}/")
        self.assertEqual(x509.load_pem_x509_certificate(answer["ca-certificate"].encode()),
                         endpointCertificate(f"ssl:1:privateKey={key}:certKey={cert}"))
        self.assertIn("/var/lib/snapd/ssl/store-certs/snapstore.pem", answer["script"])
        self.assertIn("-----BEGIN CERTIFICATE-----", answer["cloud-init"])
