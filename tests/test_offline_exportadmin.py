# -*- test-case-name: tests.test_offline_exportadmin -*-
"""
C{snapstore export} without C{--store}: the store endpoint comes from the
node the admin API (C{--admin}) belongs to.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from snapstore.offline.bundle import readManifest
from snapstore.cli.offline import STORE_ENV
from snapstore.tap import Options, makeService
from tests.fakestore import FakeStore
from tests.processes import freePort
from tests.test_admin import runCLI


class ExportStoreFromAdminTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != STORE_ENV})
        fake = FakeStore(reactor)
        fake.addSnap("hello")
        fake.addRevision("hello", 3, 3000)
        yield fake.startFor(self)
        storePort, adminPort = freePort(), freePort()
        self.adminURL = f"http://127.0.0.1:{adminPort}"
        options = Options()
        options.parseOptions([
            "--config", os.devnull, "--upstream", fake.apiURL, "--data-dir", self.mktemp(),
            "--rules-dir", os.path.abspath(self._rules()),
            "--store-endpoint", f"tcp:{storePort}:interface=127.0.0.1",
            "--public-url", f"http://127.0.0.1:{storePort}/",
            "--admin-endpoint", f"tcp:{adminPort}:interface=127.0.0.1",
            "--proxy-endpoint", "none"])
        top = makeService(options)
        top.startService()
        self.addCleanup(top.stopService)

    def _rules(self):
        directory = self.mktemp()
        os.makedirs(directory)
        return directory

    @inlineCallbacks
    def test_storeFromAdmin(self):
        """
        With only C{--admin}, export asks the node's status for its store
        URL and exports from there.
        """
        bundle = os.path.abspath(self.mktemp())
        code, out, err = yield runCLI(["--admin", self.adminURL, "export", "hello", "-o", bundle])
        self.assertEqual(code, 0, err + out)
        manifest = readManifest(bundle)
        self.assertEqual([snap["name"] for snap in manifest["snaps"]], ["hello"])

    @inlineCallbacks
    def test_adminUnreachable(self):
        """
        When the named admin API does not answer, export says that it
        needs C{--store} or a reachable C{--admin} (exit 3), instead of
        trying a default store URL.
        """
        code, out, err = yield runCLI(["--admin", f"http://127.0.0.1:{freePort()}", "export",
                                       "hello", "-o", os.path.abspath(self.mktemp())])
        self.assertEqual(code, 3, err)
        self.assertIn("no --store given", err)
