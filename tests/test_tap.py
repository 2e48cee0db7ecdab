"""
Tests for C{twistd snapstore}: the plugin, its options, and the real
process relaying to a fake store.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from twisted.application.service import IServiceCollection, IServiceMaker
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import readBody

from snapstore.config import OPTIONS
from snapstore.tap import Options, makeService
from tests.fakestore import FakeStore
from tests.helpers import testAgent
from tests.processes import CHECKOUT, processEnvironment, startTwistd


class PluginTests(SynchronousTestCase):
    """
    The twistd plugin and its options.
    """

    def test_pluginFound(self):
        """
        twistd finds a service maker named C{snapstore}.
        """
        names = [maker.tapname for maker in getPlugins(IServiceMaker)]
        self.assertIn("snapstore", names)

    def test_helpDocumentsEveryOption(self):
        """
        C{twistd snapstore --help} documents every option of design.md 3.
        """
        result = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "snapstore", "--help"],
            capture_output=True, text=True, env=processEnvironment(), cwd=CHECKOUT, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in OPTIONS:
            self.assertIn(f"--{option.name}", result.stdout)
        self.assertIn("--config", result.stdout)

    def test_badOption(self):
        """
        An invalid value is a usage error naming the option.
        """
        error = self.assertRaises(usage.UsageError, Options().parseOptions,
                                  ["--cache-size", "lots", "--config", "/dev/null"])
        self.assertIn("--cache-size", str(error))

    def test_serviceTree(self):
        """
        C{makeService} builds the state store and the store listener.
        """
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--store-endpoint", "tcp:0",
                              "--proxy-endpoint", "none", "--admin-endpoint", "none",
                              "--config", "/dev/null"])
        top = makeService(options)
        self.assertTrue(IServiceCollection.providedBy(top))
        self.assertIsNotNone(top.getServiceNamed("store-endpoint"))


class TwistdProcessTests(TestCase):
    """
    The real C{twistd -n snapstore} process, in front of the fake store.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.store = yield FakeStore(reactor).startFor(self)
        self.store.addSnap("hello", summary="Hello world")
        self.store.addRevision("hello", 3, 300000)
        self.process, port = yield startTwistd(
            self, "--upstream", self.store.apiURL, "--proxy-endpoint", "none",
            "--admin-endpoint", "none", "--data-dir", self.mktemp(), "--config", "/dev/null")
        self.proxyURL = f"http://127.0.0.1:{port}/"

    @inlineCallbacks
    def get(self, url, method=b"GET", body=None):
        from io import BytesIO

        from twisted.web.client import FileBodyProducer
        from twisted.web.http_headers import Headers

        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        headers = Headers({b"Content-Type": [b"application/json"], b"Snap-Device-Architecture": [b"amd64"],
                           b"Snap-Device-Series": [b"16"]})
        response = yield testAgent(self).request(method, url.encode(), headers, producer)
        content = yield readBody(response)
        return response, content

    @inlineCallbacks
    def test_installAndDownload(self):
        """
        An install through the process is answered with a download URL on
        the proxy, and that URL gives the blob's exact bytes, fetched from
        the fake store's CDN.
        """
        request = {"context": [], "fields": ["download", "revision"],
                   "actions": [{"action": "install", "instance-key": "install-1", "name": "hello",
                                "channel": "stable", "epoch": None}]}
        response, content = yield self.get(self.proxyURL + "v2/snaps/refresh", b"POST",
                                           json.dumps(request).encode())
        self.assertEqual(response.code, 200, content)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        [result] = json.loads(content)["results"]
        download = result["snap"]["download"]
        self.assertTrue(download["url"].startswith(self.proxyURL + "api/v1/snaps/download/"), download)
        response, blob = yield self.get(download["url"])
        self.assertEqual(response.code, 200)
        self.assertEqual(blob, self.store.blobBytes("hello", 3))
        self.assertEqual(hashlib.sha3_384(blob).hexdigest(), download["sha3-384"])
        self.assertEqual(self.store.count("POST", "/v2/snaps/refresh"), 1)
        self.assertEqual(len(self.store.cdnDownloads("hello", 3)), 1)

    @inlineCallbacks
    def test_infoAndFind(self):
        """
        info and find are relayed with their exact Content-Type.
        """
        response, content = yield self.get(self.proxyURL + "v2/snaps/info/hello?fields=download")
        self.assertEqual(response.code, 200)
        channelMap = json.loads(content)["channel-map"]
        self.assertTrue(channelMap[0]["download"]["url"].startswith(self.proxyURL))
        response, content = yield self.get(self.proxyURL + "v2/snaps/find?q=hello")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual([r["name"] for r in json.loads(content)["results"]], ["hello"])
