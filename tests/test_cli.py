# -*- test-case-name: tests.test_cli -*-
"""
Tests for the parts of L{snapstore.cli} that need no service: argument
parsing, formatting, token files and the client's error mapping.  The
verbs themselves are tested against a running service in
L{tests.test_admin}.
"""

from __future__ import annotations

import io
import json
import urllib.error

from twisted.trial.unittest import SynchronousTestCase

from snapstore.cli import (
    EXIT_AUTH,
    EXIT_REFUSED,
    EXIT_USAGE,
    AdminClient,
    CommandError,
    formatDuration,
    formatSize,
    main,
    makeParser,
    parseTime,
    readToken,
)


class _Answer(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class ParsingTests(SynchronousTestCase):
    """
    The command line.
    """

    def test_verbs(self):
        """
        Every vendor verb parses; C{--json} is accepted before or after the
        verb.
        """
        parser = makeParser()
        self.assertEqual(parser.parse_args(["status"]).verb, "status")
        self.assertTrue(parser.parse_args(["--json", "devices"]).json)
        self.assertTrue(parser.parse_args(["list-overrides", "hello", "--json"]).json)
        options = parser.parse_args(["override", "hello", "stable=3", "edge=4"])
        self.assertEqual((options.snap, options.pins), ("hello", ["stable=3", "edge=4"]))
        self.assertEqual(parser.parse_args(["cache"]).action, "stats")
        self.assertEqual(parser.parse_args(["audit", "verify"]).action, "verify")

    def test_usageErrorExitCode(self):
        """
        A missing verb or argument exits 2 with argparse's message.
        """
        err = io.StringIO()
        self.patch(__import__("sys"), "stderr", err)
        self.assertEqual(main([], io.StringIO(), err), EXIT_USAGE)
        self.assertEqual(main(["override", "hello"], io.StringIO(), err), EXIT_USAGE)

    def test_times(self):
        """
        C{--since} takes POSIX seconds, ISO dates (UTC by default) and
        durations back from now.
        """
        self.assertEqual(parseTime("1763700000"), 1763700000.0)
        self.assertEqual(parseTime("2026-01-01"), 1767225600.0)
        self.assertEqual(parseTime("2026-01-01T01:00:00+01:00"), 1767225600.0)
        import time

        self.assertLess(abs(parseTime("2h") - (time.time() - 7200)), 60)
        import argparse

        self.assertRaises(argparse.ArgumentTypeError, parseTime, "yesterday")

    def test_format(self):
        self.assertEqual(formatSize(0), "0 B")
        self.assertEqual(formatSize(1536), "1.5 KiB")
        self.assertEqual(formatSize(20 << 30), "20.0 GiB")
        self.assertEqual(formatDuration(62), "1m 2s")
        self.assertEqual(formatDuration(90061), "1d 1h 1m")


class TokenTests(SynchronousTestCase):
    """
    Token files and the header the client sends.
    """

    def test_readToken(self):
        """
        The first token of a server-format token file is used.
        """
        path = self.mktemp()
        with open(path, "w") as tokenFile:
            tokenFile.write("# comment\n\nalice:secret-token-value\nbob:other\n")
        self.assertEqual(readToken(path), "secret-token-value")

    def test_missingTokenFile(self):
        error = self.assertRaises(CommandError, readToken, "/nonexistent")
        self.assertEqual(error.exitCode, EXIT_USAGE)

    def test_bearer(self):
        """
        The client sends C{Authorization: Bearer} and maps API refusals to
        exit codes with the API's message.
        """
        seen = []

        def opener(request, timeout):
            seen.append(request)
            if request.full_url.endswith("/v1/overrides/x"):
                raise urllib.error.HTTPError(
                    request.full_url, 404, "Not Found", {},
                    _Answer(json.dumps({"error": {"message": "no such thing"}}).encode()))
            if request.full_url.endswith("/v1/status"):
                raise urllib.error.HTTPError(request.full_url, 401, "Unauthorized", {},
                                             _Answer(b"{}"))
            return _Answer(b'{"ok": true}')

        client = AdminClient("http://admin:1/", "tok", opener=opener)
        self.assertEqual(client.call("GET", "/v1/audit", query={"snap": "a b", "since": None}),
                         {"ok": True})
        self.assertEqual(seen[0].full_url, "http://admin:1/v1/audit?snap=a+b")
        self.assertEqual(seen[0].get_header("Authorization"), "Bearer tok")
        error = self.assertRaises(CommandError, client.call, "GET", "/v1/overrides/x")
        self.assertEqual((error.exitCode, error.message), (EXIT_REFUSED, "no such thing"))
        error = self.assertRaises(CommandError, client.call, "GET", "/v1/status")
        self.assertEqual(error.exitCode, EXIT_AUTH)
        self.assertIn("the token was not accepted", error.message)
