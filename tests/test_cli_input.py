# -*- test-case-name: tests.test_cli_input -*-
"""
Careless input to the C{snapstore} command: each is refused with one line
and the exit code the operator's guide gives (docs/operating.md), before any
request is made.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

from cryptography import x509

from twisted.trial.unittest import SynchronousTestCase

from snapstore.cli import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main


def run(*argv):
    """
    Run the command with nothing listening on the default admin URL's
    port; return C{(code, stdout, stderr)}.
    """
    out, err = io.StringIO(), io.StringIO()
    if argv[:1] != ("--admin",):
        argv = ("--admin", "http://127.0.0.1:1") + argv
    # argparse writes its usage errors to sys.stderr itself.
    with contextlib.redirect_stderr(err):
        code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


class AdminURLTests(SynchronousTestCase):
    def test_notAURL(self):
        """
        C{--admin notaurl} is an unusable admin URL: exit 3 and one line
        naming C{--admin}, not urllib's C{ValueError} traceback.
        """
        for bad in ("notaurl", "ftp://host/", "http://[::1", "http://host:port/"):
            code, out, err = run("--admin", bad, "status")
            self.assertEqual(code, EXIT_UNREACHABLE, (bad, err))
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertIn("--admin", err)


class OverrideArgumentTests(SynchronousTestCase):
    def test_doubleEquals(self):
        """
        C{stable=1=2} is not CHANNEL=REVISION: a usage error (2), not a
        request the API refuses (5).
        """
        code, out, err = run("override", "hello", "stable=1=2")
        self.assertEqual(code, EXIT_USAGE, err)
        self.assertIn("'stable=1=2'", err)


class DeviceLimitArgumentTests(SynchronousTestCase):
    def test_zeroRefused(self):
        """
        C{device-limit 0} would lock every new device out; it is refused
        with a usage error that points at C{none}.
        """
        code, out, err = run("device-limit", "0")
        self.assertEqual(code, EXIT_USAGE, err)
        self.assertIn("none", err)

    def test_positiveAccepted(self):
        """
        A limit of 1 or more gets as far as the (absent) admin API.
        """
        code, out, err = run("device-limit", "1")
        self.assertEqual(code, EXIT_UNREACHABLE, err)


class CertificateArgumentTests(SynchronousTestCase):
    def certificate(self, *extra):
        return run("certificate", "--selfsigned", *extra)

    def test_badDomain(self):
        """
        A domain that is not a DNS name or IP address is a usage error and
        writes nothing.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        for bad in ("bad name!", "trailing-.example", "a..b", "x" * 64 + ".example", ""):
            code, out, err = self.certificate("--domain", bad, "--out-dir", directory)
            self.assertEqual(code, EXIT_USAGE, (bad, err))
            self.assertIn("not a DNS name or IP address", err)
        code, out, err = self.certificate("--domain", "ok.example", "--name", "bad name!",
                                          "--out-dir", directory)
        self.assertEqual(code, EXIT_USAGE, err)
        self.assertEqual(os.listdir(directory), [])

    def test_goodNames(self):
        """
        Host names, wildcards and IP addresses are accepted and end up in
        the certificate's subjectAltName.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        code, out, err = self.certificate("--domain", "snapstore.example.lan", "--name", "10.0.0.5",
                                          "--name", "*.example.lan", "--name", "::1",
                                          "--out-dir", directory, "--json")
        self.assertEqual(code, EXIT_OK, err)
        with open(json.loads(out)["certificate"], "rb") as pem:
            certificate = x509.load_pem_x509_certificate(pem.read())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(sorted(str(n.value) for n in names),
                         sorted(["snapstore.example.lan", "10.0.0.5", "*.example.lan", "::1"]))

    def test_missingOutDirSaid(self):
        """
        A missing C{--out-dir} is created, and the output says so.
        """
        directory = os.path.join(self.mktemp(), "tls")
        code, out, err = self.certificate("--domain", "host.example", "--out-dir", directory)
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn(f"Created the directory {os.path.abspath(directory)}", out)
        self.assertEqual(sorted(os.listdir(directory)), ["host.example.crt", "host.example.key"])
        code, out, err = self.certificate("--domain", "other.example", "--out-dir", directory)
        self.assertNotIn("Created the directory", out)


