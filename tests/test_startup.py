# -*- test-case-name: tests.test_startup -*-
"""
What an operator sees when C{twistd snapstore} starts, or refuses to: one
line naming the option instead of a traceback, and the facts that decide
how devices are served (active rule files, the public URL).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from snapstore.admin.clientconfig import ClientConfig, resolvesToLoopback
from snapstore.rules.shipped import shippedRulesDirectory
from snapstore.tap import Options, makeService
from tests.fakestore import FakeStore
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


class DefaultRulesTests(TestCase):
    """
    Without C{--rules-dir}, and with neither C{/etc/snapstore/rules.d} nor
    C{./rules.d}, the shipped rules apply, and start-up and C{snapstore
    status} name their files.
    """

    timeout = 120

    def setUp(self):
        from snapstore.rules import shipped

        # Neither default directory exists: the system one is pointed
        # away (the machine may have the package installed), and the
        # working directory is an empty temporary one.
        self.patch(shipped, "SYSTEM_RULES", os.path.abspath(self.mktemp()))
        cwd = os.getcwd()
        empty = os.path.abspath(self.mktemp())
        os.mkdir(empty)
        os.chdir(empty)
        self.addCleanup(os.chdir, cwd)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def options(self, *extra):
        options = Options()
        options.parseOptions(["--config", os.devnull, "--data-dir", self.mktemp(),
                              "--proxy-endpoint", "none"] + list(extra))
        return options

    def logged(self):
        return [formatEvent(event) for event in self.events]

    def test_shippedRulesByDefault(self):
        """
        The rules directory is the shipped one, whose files all load.
        """
        options = self.options("--store-endpoint", "tcp:0", "--admin-endpoint", "none")
        self.assertIsNotNone(options.rulesDir)
        self.assertEqual(options.rulesDir, shippedRulesDirectory())
        self.assertEqual(os.path.realpath(options.rulesDir),
                         os.path.realpath(os.path.join(CHECKOUT, "rules.d")))

    def test_noRulesAtAllWarns(self):
        """
        When even the shipped rules are missing, start-up says loudly that
        no rules apply.
        """
        from snapstore.rules import shipped

        self.patch(shipped, "shippedRulesDirectory", lambda: None)
        options = self.options("--store-endpoint", "tcp:0", "--admin-endpoint", "none")
        self.assertIsNone(options.rulesDir)
        [warning] = [line for line in self.logged() if "WITHOUT rules" in line]
        self.assertIn("--rules-dir", warning)

    @inlineCallbacks
    def test_logAndStatusNameFiles(self):
        """
        The start-up log line and C{snapstore status} name the rule files
        in force.
        """
        from tests.test_admin import runCLI

        fake = yield FakeStore(reactor).startFor(self)
        adminPort = freePort()
        options = self.options("--upstream", fake.apiURL,
                               "--store-endpoint", f"tcp:{freePort()}:interface=127.0.0.1",
                               "--admin-endpoint", f"tcp:{adminPort}:interface=127.0.0.1")
        top = makeService(options)
        top.startService()
        self.addCleanup(top.stopService)
        files = sorted(name for name in os.listdir(shippedRulesDirectory())
                       if name.endswith(".py"))
        [loaded] = [line for line in self.logged() if line.startswith("Loaded ")]
        self.assertIn("(the shipped rules)", loaded)
        self.assertIn(", ".join(files), loaded)
        code, out, err = yield runCLI(["--admin", f"http://127.0.0.1:{adminPort}", "status"])
        [line] = [line for line in out.splitlines() if line.startswith("Rules: ")]
        self.assertIn(shippedRulesDirectory(), line)
        self.assertIn("(shipped defaults)", line)
        self.assertTrue(line.endswith(", ".join(files)), line)


class LoopbackPublicURLTests(TestCase):
    """
    Devices must never be told to reach the store at a loopback address.
    """

    timeout = 120

    def test_resolvesToLoopback(self):
        """
        Loopback literals and C{localhost} are loopback; other addresses,
        and names that do not resolve, are not.
        """
        for host in ("127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"):
            self.assertTrue(resolvesToLoopback(host), host)
        for host in ("192.0.2.10", "2001:db8::1", "snapstore.invalid"):
            self.assertFalse(resolvesToLoopback(host), host)

    def test_hostNameFallback(self):
        """
        Without C{--public-url}, a host name that is C{localhost} makes the
        setup a problem naming C{--public-url}; a request's own C{Host}
        does not.
        """
        config = ClientConfig(None, "tcp:8000", None, hostName="localhost")
        problem = config.loopbackProblem(None)
        self.assertIn("http://localhost:8000/", problem)
        self.assertIn("--public-url", problem)
        self.assertIsNone(ClientConfig(None, "tcp:8000", None,
                                       hostName="192.0.2.10").loopbackProblem(None))

    @inlineCallbacks
    def test_clientConfigRefused(self):
        """
        With a loopback C{--public-url}, start-up logs a warning and
        C{snapstore client-config} exits 5 with a message naming
        C{--public-url} instead of printing a drop-in for localhost.
        """
        from tests.test_admin import RunningService

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = yield RunningService(self).start("--public-url", "http://localhost:8000/")
        warnings = [formatEvent(event) for event in events
                    if "loopback" in formatEvent(event)]
        self.assertTrue(warnings, "no start-up warning")
        self.assertIn("--public-url", warnings[0])
        code, out, err = yield service.cli("client-config")
        self.assertEqual(code, 5, out + err)
        self.assertEqual(out, "")
        self.assertIn("--public-url", err)
        self.assertNotIn("SNAPPY_FORCE_API_URL", out + err)
