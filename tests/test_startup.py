# -*- test-case-name: tests.test_startup -*-
"""
What an operator sees when C{twistd snapstore} starts, or refuses to: one
line naming the option instead of a traceback, and the facts that decide
how devices are served (active rule files, the public URL).
"""

from __future__ import annotations

import socket
import subprocess
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.processes import CHECKOUT, freePort, processEnvironment, spawn

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def runTwistd(testCase, *options, cwd=None):
    """
    Run C{twistd -n snapstore OPTIONS} to completion (for start-ups that
    must fail at once); return the finished process.
    """
    argv = TWISTD + ["-n", "--pidfile=", "snapstore", "--config", "/dev/null",
                     "--data-dir", testCase.mktemp()] + list(options)
    return subprocess.run(argv, capture_output=True, text=True, env=processEnvironment(),
                          cwd=cwd or CHECKOUT, timeout=120)


class UsageErrorTests(SynchronousTestCase):
    """
    Options twistd cannot use are one line naming the option, first.
    """

    def test_endpointNotParsable(self):
        """
        C{--store-endpoint tcp:notaport} is a usage error naming the option
        and the string, not a C{ValueError} traceback.
        """
        result = runTwistd(self, "--store-endpoint", "tcp:notaport")
        self.assertEqual(result.returncode, 1)
        output = result.stdout + result.stderr
        self.assertNotIn("Traceback", output)
        firstLine = result.stderr.splitlines()[0]
        self.assertIn("--store-endpoint", firstLine)
        self.assertIn("'tcp:notaport'", firstLine)

    def test_otherEndpointsChecked(self):
        """
        The forward proxy's and admin API's endpoints are checked the same
        way.
        """
        for option in ("--proxy-endpoint", "--admin-endpoint"):
            result = runTwistd(self, option, "nosuchtype:1")
            self.assertEqual(result.returncode, 1, option)
            self.assertNotIn("Traceback", result.stdout + result.stderr)
            self.assertIn(option, result.stderr.splitlines()[0])

    def test_reasonFirst(self):
        """
        A usage error prints its reason on the first line (twistd alone
        prints the whole C{--help} first and the reason last).
        """
        result = runTwistd(self, "--cache-size", "lots")
        self.assertEqual(result.returncode, 1)
        lines = (result.stderr + result.stdout).splitlines()
        self.assertIn("--cache-size", lines[0])
        self.assertIn("lots", lines[0])
        self.assertLess(len(lines), 5, lines)


class PortInUseTests(TestCase):
    """
    A port another program holds stops start-up with one line.
    """

    timeout = 120

    @inlineCallbacks
    def test_portInUse(self):
        """
        When the store endpoint's port is taken, twistd exits with status
        1 after one log line naming C{--store-endpoint} and the port, and
        no traceback.
        """
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        self.addCleanup(holder.close)
        port = holder.getsockname()[1]
        process = spawn(self, TWISTD + [
            "-n", "--pidfile=", "snapstore", "--config", "/dev/null", "--data-dir", self.mktemp(),
            "--store-endpoint", f"tcp:{port}:interface=127.0.0.1",
            "--proxy-endpoint", "none", "--admin-endpoint", f"tcp:{freePort()}:interface=127.0.0.1"])
        ended = yield process.collector.ended
        self.assertEqual(getattr(ended, "exitCode", None), 1, process.output)
        self.assertNotIn("Traceback", process.output)
        [line] = [line for line in process.output.splitlines() if "cannot listen" in line]
        self.assertIn("--store-endpoint", line)
        self.assertIn(str(port), line)
        self.assertIn("in use", line)
