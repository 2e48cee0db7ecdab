"""
Several C{twistd snapstore} nodes sharing one PostgreSQL database, each with
its own cache: what one node is told, every node honours.
"""

from __future__ import annotations

import json
from io import BytesIO
import signal
import time
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.trial.unittest import TestCase
from twisted.web.client import FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from tests import pgtest
from tests.fakestore import FakeStore
from tests.helpers import testAgent
from tests.ports import freePort
from tests.processes import startTwistd, waitForPort
from tests.sessionclient import SnapdDevice
from tests.test_rules_support import Proxy, copyShipped


def wait(coroutine):
    """
    A Deferred for a coroutine, for C{yield} in an C{inlineCallbacks} test.
    """
    return Deferred.fromCoroutine(coroutine)


def databaseURL(database):
    """
    The C{--state} URL of a test database on the test server.
    """
    server = urlsplit(pgtest.serverDSN())
    return urlunsplit(server._replace(path="/" + database.name))


class NodesMixin:
    """
    A test database, a fake store with C{hello} revisions 10 and 12 (stable
    at 12), the shipped rules, and real nodes started on demand.
    """

    timeout = 180
    skip = pgtest.skipReason()

    @inlineCallbacks
    def setUpStoreAndDatabase(self):
        self.database = pgtest.TemporaryDatabase()
        self.addCleanup(self.database.drop)
        self.store = yield FakeStore(reactor).startFor(self)
        self.snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 4096)
        self.store.addRevision("hello", 12, 4096)
        self.rulesDir = copyShipped(self)

    @inlineCallbacks
    def startNode(self, stateURL=None):
        adminPort = freePort()
        process, storePort = yield startTwistd(
            self, "--upstream", self.store.apiURL, "--state", stateURL or databaseURL(self.database),
            "--proxy-endpoint", "none", "--admin-endpoint", f"tcp:{adminPort}:interface=127.0.0.1",
            "--rules-dir", self.rulesDir, "--data-dir", self.mktemp(), "--config", "/dev/null")
        yield waitForPort(adminPort, process)
        client = Proxy(self, self.store.apiURL, self.rulesDir)
        client.url = f"http://127.0.0.1:{storePort}/"
        client.process = process
        client.adminURL = f"http://127.0.0.1:{adminPort}/"
        return client

    @inlineCallbacks
    def admin(self, node, method, path, body=None):
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode())) if body else None
        response = yield testAgent(self).request(
            method, (node.adminURL + path).encode(),
            Headers({b"Content-Type": [b"application/json"]}), producer)
        content = yield readBody(response)
        return response.code, json.loads(content)


class TwoNodeTests(NodesMixin, TestCase):
    """
    Two nodes, one database.
    """

    @inlineCallbacks
    def setUp(self):
        yield self.setUpStoreAndDatabase()
        self.nodeA = yield self.startNode()
        self.nodeB = yield self.startNode()

    @inlineCallbacks
    def revisionOffered(self, node, installed=9):
        result = yield node.refresh(self.snapId, installed, "latest/stable")
        return result["snap"]["revision"]

    @inlineCallbacks
    def waitForRevision(self, node, expected, bound=10.0):
        """
        Refresh through C{node} until it offers C{expected}; fire with the
        seconds that took (for the log), or fail after C{bound} seconds.
        """
        started = time.monotonic()
        while True:
            offered = yield self.revisionOffered(node)
            if offered == expected:
                elapsed = time.monotonic() - started
                Logger().info("revision {expected} offered after {elapsed:.3f}s",
                              expected=expected, elapsed=elapsed)
                return elapsed
            if time.monotonic() - started > bound:
                self.fail(f"node still offers {offered}, not {expected}, after {bound}s")
            yield deferLater(reactor, 0.05, lambda: None)

    @inlineCallbacks
    def test_overrideThroughOneNodeHonouredByOther(self):
        """
        An override set through node A's admin API is honoured by node B
        (told by NOTIFY), and its deletion too.
        """
        self.assertEqual((yield self.revisionOffered(self.nodeB)), 12)
        code, answer = yield self.admin(self.nodeA, b"POST", "v1/overrides/hello",
                                        {"channel-map": [{"channel": "stable", "revision": 10}]})
        self.assertEqual(code, 200, answer)
        yield self.waitForRevision(self.nodeB, 10)
        self.assertEqual((yield self.revisionOffered(self.nodeA)), 10)
        code, answer = yield self.admin(self.nodeB, b"DELETE", "v1/overrides/hello?channel=stable")
        self.assertEqual(code, 200, answer)
        yield self.waitForRevision(self.nodeA, 12)

    @inlineCallbacks
    def test_deviceLimitThroughOneNodeHonouredByOther(self):
        """
        A device limit set through node A applies on node B: with one device
        connected and the limit at 1, a new device is refused by B.
        """
        known = SnapdDevice(self, self.nodeB.url, "serial-1")
        yield wait(known.refreshedRevision(self.snapId))
        code, answer = yield self.admin(self.nodeA, b"PUT", "v1/device-limit", {"limit": 1})
        self.assertEqual(code, 200, answer)
        started = time.monotonic()
        for attempt in range(1000):
            # A new serial each time: one admitted before the limit applied
            # is a known device from then on.
            device = SnapdDevice(self, self.nodeB.url, f"serial-new-{attempt}")
            code, error = yield wait(device.refresh(self.snapId, 9))
            if code == 403:
                break
            self.assertLess(time.monotonic() - started, 10, "limit never applied on node B")
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(code, 403, error)
        self.assertEqual(error["error-list"][0]["code"], "device-limit-exceeded")
        self.assertEqual((yield wait(known.refreshedRevision(self.snapId))), 12)

    @inlineCallbacks
    def test_knownDevicesServedByEveryNode(self):
        """
        With a limit of two, two devices that opened their sessions and
        refreshed through node A are served by node B too, with the same
        sessions and without being asked to renew them (before, B refused
        both with 403 device-limit-exceeded); a third device is refused by
        either node.
        """
        code, answer = yield self.admin(self.nodeA, b"PUT", "v1/device-limit", {"limit": 2})
        self.assertEqual(code, 200, answer)
        devices = [SnapdDevice(self, self.nodeA.url, f"serial-{n}") for n in (1, 2)]
        for device in devices:
            self.assertEqual((yield wait(device.refreshedRevision(self.snapId))), 12)
        for device in devices:
            device.url = device.sessionURL = self.nodeB.url
            self.assertEqual((yield wait(device.refreshedRevision(self.snapId))), 12)
            self.assertEqual((device.sessionsOpened, device.refusals), (1, 0))
        for node in (self.nodeA, self.nodeB):
            third = SnapdDevice(self, node.url, "serial-3")
            code, error = yield wait(third.refresh(self.snapId, 9))
            self.assertEqual((code, error["error-list"][0]["code"]),
                             (403, "device-limit-exceeded"))

    @inlineCallbacks
    def test_devicesCountedOnce(self):
        """
        A device seen through both nodes is one device.
        """
        one = SnapdDevice(self, self.nodeA.url, "serial-1")
        yield wait(one.refreshedRevision(self.snapId))
        one.url = one.sessionURL = self.nodeB.url
        yield wait(one.refreshedRevision(self.snapId))
        yield wait(SnapdDevice(self, self.nodeB.url, "serial-2").refreshedRevision(self.snapId))
        code, answer = yield self.admin(self.nodeA, b"GET", "v1/devices")
        self.assertEqual(code, 200, answer)
        identities = sorted(device["identity"] for device in answer["devices"])
        self.assertEqual(identities, ["acme/gizmo/serial-1", "acme/gizmo/serial-2"])

    @inlineCallbacks
    def test_killedNodeLosesNothing(self):
        """
        After node A is killed (SIGKILL), node B still has the override and
        the devices set through A, and serves the pinned blob.
        """
        code, answer = yield self.admin(self.nodeA, b"POST", "v1/overrides/hello",
                                        {"channel-map": [{"channel": "stable", "revision": 10}]})
        self.assertEqual(code, 200, answer)
        yield wait(SnapdDevice(self, self.nodeA.url, "serial-9").refreshedRevision(self.snapId))
        yield self.nodeA.process.kill(signal.SIGKILL)
        result = yield self.nodeB.refresh(self.snapId, 9, "latest/stable")
        self.assertEqual(result["snap"]["revision"], 10)
        response = yield testAgent(self).request(b"GET", result["snap"]["download"]["url"].encode())
        blob = yield readBody(response)
        self.assertEqual(blob, self.store.blobBytes("hello", 10))
        code, answer = yield self.admin(self.nodeB, b"GET", "v1/devices")
        self.assertIn("acme/gizmo/serial-9", [device["identity"] for device in answer["devices"]])
        code, answer = yield self.admin(self.nodeB, b"GET", "v1/overrides/hello")
        self.assertEqual([(o["channel"], o["revision"]) for o in answer["overrides"]],
                         [("latest/stable", 10)])


class DatabaseOutageTests(NodesMixin, TestCase):
    """
    A node whose PostgreSQL goes away keeps serving devices, refuses admin
    changes clearly, and catches up when the database is back.
    """

    @inlineCallbacks
    def setUp(self):
        yield self.setUpStoreAndDatabase()
        server = urlsplit(pgtest.serverDSN())
        self.relay = pgtest.Relay(server.hostname or "127.0.0.1", server.port or 5432)
        self.relay.start()
        self.addCleanup(self.relay.stop)
        stateURL = urlunsplit(server._replace(netloc=f"{server.username or 'postgres'}@127.0.0.1:{self.relay.port}",
                                              path="/" + self.database.name))
        self.node = yield self.startNode(stateURL)

    @inlineCallbacks
    def test_outage(self):
        """
        With the database cut off: refreshes still relay, a cached blob is
        still served from the cache, a new device is admitted, and an admin
        change fails with a clear error.  When the database is back the node
        reconnects by itself, writes the queued device, and takes changes.
        """
        result = yield self.node.install("hello")
        url = result["snap"]["download"]["url"].encode()
        response = yield testAgent(self).request(b"GET", url)
        self.assertEqual((yield readBody(response)), self.store.blobBytes("hello", 12))

        self.relay.stop()
        result = yield self.node.refresh(self.snapId, 9, "latest/stable")
        self.assertEqual(result["snap"]["revision"], 12)
        response = yield testAgent(self).request(b"GET", url)
        self.assertEqual((yield readBody(response)), self.store.blobBytes("hello", 12))
        self.assertEqual(response.headers.getRawHeaders(b"x-cache"), [b"HIT"])
        offline = SnapdDevice(self, self.node.url, "serial-offline")
        self.assertEqual((yield wait(offline.refreshedRevision(self.snapId))), 12)
        code, answer = yield self.admin(self.node, b"POST", "v1/overrides/hello",
                                        {"channel-map": [{"channel": "stable", "revision": 10}]})
        self.assertEqual(code, 503, answer)
        self.assertIn("database", json.dumps(answer).lower())

        self.relay.start()
        started = time.monotonic()
        while True:
            code, answer = yield self.admin(self.node, b"POST", "v1/overrides/hello",
                                            {"channel-map": [{"channel": "stable", "revision": 10}]})
            if code == 200:
                break
            self.assertLess(time.monotonic() - started, 60, f"no reconnection: {code} {answer}")
            yield deferLater(reactor, 0.2, lambda: None)
        while True:
            code, answer = yield self.admin(self.node, b"GET", "v1/devices")
            if "acme/gizmo/serial-offline" in [d["identity"] for d in answer.get("devices", [])]:
                break
            self.assertLess(time.monotonic() - started, 60, f"queued device never written: {answer}")
            yield deferLater(reactor, 0.2, lambda: None)
