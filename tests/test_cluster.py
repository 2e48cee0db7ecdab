"""
Several nodes, one cache (issue 17): three real C{twistd snapstore} nodes on
one PostgreSQL database fetch each blob from upstream once, from each other
otherwise, verify what a peer sends, and survive a filling node's
C{kill -9}.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseDone, readBody
from twisted.web.http_headers import Headers

from zope.interface.verify import verifyObject

from snapstore import cli
from snapstore.cache.blobs import BlobCache
from snapstore.cluster.database import ClusterDatabase, lockKey
from snapstore.cluster.filler import ClusterFiller
from snapstore.cluster.service import ClusterNode, ClusterTokenError, readToken
from snapstore.interfaces import IBlobCacheObserver, IBlobFiller
from tests.helpers import testAgent
from tests.processes import freePort, startTwistd, waitForPort
from tests.test_multinode import NodesMixin, databaseURL
from tests.test_rules_support import Proxy

BIG = 2 << 20
TOKEN = "cluster-secret-for-tests-0123456789"


class Collector(Protocol):
    """
    Keeps a download's bytes as they arrive; C{reached(n)} fires once
    C{n} bytes are in, C{done} with why the body ended (an exception instance).
    """

    def __init__(self):
        self.data = bytearray()
        self.done = Deferred()
        self._waiting = []

    def reached(self, count):
        waiter = Deferred()
        self._waiting.append((count, waiter))
        self._check()
        return waiter

    def _check(self):
        for entry in list(self._waiting):
            if len(self.data) >= entry[0]:
                self._waiting.remove(entry)
                entry[1].callback(len(self.data))

    def dataReceived(self, data):
        self.data += data
        self._check()

    def connectionLost(self, reason):
        for count, waiter in self._waiting:
            waiter.errback(AssertionError(f"body ended at {len(self.data)} before {count}"))
        self._waiting = []
        self.done.callback(reason.value)


class ClusterMixin(NodesMixin):
    """
    Nodes with C{--node-url} and the cluster token, and a 2 MiB snap C{big}.
    """

    @inlineCallbacks
    def setUpCluster(self, count=3):
        yield self.setUpStoreAndDatabase()
        self.store.addSnap("big")
        self.store.addRevision("big", 1, BIG)
        self.tokenFile = os.path.abspath(self.mktemp())
        with open(self.tokenFile, "w") as tokenFile:
            tokenFile.write(TOKEN + "\n")
        self.nodes = []
        for _ in range(count):
            self.nodes.append((yield self.startClusterNode()))
        yield self.waitForNodes(self.nodes[0], count)
        result = yield self.nodes[0].install("big")
        self.downloadName = result["snap"]["download"]["url"].rsplit("/", 1)[1]
        self.expected = self.store.blobBytes("big", 1)

    @inlineCallbacks
    def startClusterNode(self, token=True, state=None):
        adminPort, storePort = freePort(), freePort()
        dataDir = os.path.abspath(self.mktemp())
        options = ["--upstream", self.store.apiURL,
                   "--state", state or databaseURL(self.database),
                   "--proxy-endpoint", "none",
                   "--admin-endpoint", f"tcp:{adminPort}:interface=127.0.0.1",
                   "--rules-dir", self.rulesDir, "--data-dir", dataDir, "--config", "/dev/null",
                   "--node-url", f"http://127.0.0.1:{storePort}/"]
        if token:
            options += ["--cluster-token-file", self.tokenFile]
        process, storePort = yield startTwistd(self, *options, storePort=storePort)
        yield waitForPort(adminPort, process)
        node = Proxy(self, self.store.apiURL, self.rulesDir)
        node.url = f"http://127.0.0.1:{storePort}/"
        node.process = process
        node.adminURL = f"http://127.0.0.1:{adminPort}/"
        node.dataDir = dataDir
        return node

    @inlineCallbacks
    def waitForNodes(self, node, count, bound=10.0):
        started = time.monotonic()
        while True:
            code, answer = yield self.admin(node, b"GET", "v1/nodes")
            alive = [n for n in answer.get("nodes", []) if n["alive"]]
            if len(alive) >= count:
                return answer
            self.assertLess(time.monotonic() - started, bound, f"nodes not listed: {answer}")
            yield deferLater(reactor, 0.2, lambda: None)

    def downloadURL(self, node):
        return f"{node.url}api/v1/snaps/download/{self.downloadName}".encode()

    @inlineCallbacks
    def startDownload(self, node, start=0):
        headers = Headers({b"range": [b"bytes=%d-" % start]}) if start else None
        response = yield testAgent(self).request(b"GET", self.downloadURL(node), headers)
        collector = Collector()
        collector.response = response
        response.deliverBody(collector)
        return collector

    @inlineCallbacks
    def download(self, node):
        collector = yield self.startDownload(node)
        reason = yield collector.done
        self.assertIsInstance(reason, ResponseDone)
        return bytes(collector.data)

    @inlineCallbacks
    def fetches(self, node):
        code, answer = yield self.admin(node, b"GET", "v1/nodes")
        return answer["fetches"]

    def upstreamFetches(self):
        return len(self.store.cdnDownloads("big", 1))


class ClusterCacheTests(ClusterMixin, TestCase):
    """
    Three nodes, one database, one cache.
    """

    @inlineCallbacks
    def setUp(self):
        yield self.setUpCluster(3)

    @inlineCallbacks
    def test_nodesListed(self):
        """
        The three nodes are listed (admin API, C{snapstore nodes --json}
        and C{snapstore status}) with their URL, heartbeat and cache use,
        within 10 s of starting.
        """
        answer = yield self.waitForNodes(self.nodes[1], 3)
        self.assertEqual(sorted(n["url"] for n in answer["nodes"]),
                         sorted(node.url for node in self.nodes))
        self.assertEqual(answer["self"], self.nodes[1].url)
        yield self.download(self.nodes[1])
        out = io.StringIO()
        started = time.monotonic()
        while True:
            code = yield deferToThread(cli.main, ["--admin", self.nodes[0].adminURL,
                                                  "nodes", "--json"], out)
            self.assertEqual(code, 0)
            listed = json.loads(out.getvalue())["nodes"]
            out.seek(0)
            out.truncate()
            holder = [n for n in listed if n["url"] == self.nodes[1].url][0]
            if holder["cache-bytes"] == BIG:
                break
            self.assertLess(time.monotonic() - started, 10, listed)
            yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual({"url", "last-heartbeat", "cache-bytes"} - set(holder), set())
        code = yield deferToThread(cli.main, ["--admin", self.nodes[0].adminURL, "status"], out)
        self.assertIn("Nodes: 3 of 3 alive", out.getvalue())
        self.assertIn(self.nodes[2].url, out.getvalue())

    @inlineCallbacks
    def test_fromHolder(self):
        """
        (a) A blob one node holds is fetched from it by the others: one
        upstream fetch for three nodes, and the bytes are right everywhere.
        """
        self.assertEqual((yield self.download(self.nodes[0])), self.expected)
        self.assertEqual((yield self.download(self.nodes[1])), self.expected)
        self.assertEqual((yield self.download(self.nodes[2])), self.expected)
        self.assertEqual(self.upstreamFetches(), 1)
        self.assertEqual((yield self.fetches(self.nodes[1]))["peer"], 1)
        self.assertEqual((yield self.fetches(self.nodes[2]))["peer"], 1)
        self.assertEqual((yield self.fetches(self.nodes[0]))["upstream"], 1)

    @inlineCallbacks
    def test_fromFillingNode(self):
        """
        (b) While node A fills a blob from a slow upstream, nodes B and C
        stream it from A as it arrives (their devices have bytes before A
        has the whole blob): one upstream fetch.
        """
        self.store.faults.failDownload("big", 1, "slow", seconds=0.05)
        first = yield self.startDownload(self.nodes[0])
        yield first.reached(256 << 10)
        second = yield self.startDownload(self.nodes[1])
        third = yield self.startDownload(self.nodes[2])
        yield DeferredList([second.reached(1), third.reached(1)], fireOnOneErrback=True)
        self.assertLess(len(first.data), BIG, "the fill ended before the peers joined")
        for collector in (first, second, third):
            reason = yield collector.done
            self.assertIsInstance(reason, ResponseDone)
            self.assertEqual(bytes(collector.data), self.expected)
        self.assertEqual(self.upstreamFetches(), 1)
        for node in self.nodes[1:]:
            counts = yield self.fetches(node)
            self.assertEqual((counts["peer-filling"], counts["upstream"]), (1, 0), counts)

    @inlineCallbacks
    def test_coldBurst(self):
        """
        (c) A cold burst spread over the three nodes at once: exactly one
        node takes the fill lock and fetches upstream, the others stream
        from it; every device gets the right bytes.
        """
        self.store.faults.failDownload("big", 1, "slow", seconds=0.01)
        downloads = [self.download(self.nodes[n % 3]) for n in range(12)]
        results = yield DeferredList(downloads, fireOnOneErrback=True)
        for ok, data in results:
            self.assertEqual(data, self.expected)
        self.assertEqual(self.upstreamFetches(), 1)
        upstream = 0
        for node in self.nodes:
            upstream += (yield self.fetches(node))["upstream"]
        self.assertEqual(upstream, 1)

    @inlineCallbacks
    def test_fillerKilled(self):
        """
        Node A is killed (SIGKILL) while it fills a blob that B streams from
        it: the database releases A's fill lock, B takes it and resumes from
        upstream with Range where A's bytes stopped, B's device is not cut;
        A's device, cut, resumes with Range against C and has the right
        bytes.
        """
        self.store.faults.failDownload("big", 1, "slow", seconds=0.05)
        nodeA, nodeB, nodeC = self.nodes
        onA = yield self.startDownload(nodeA)
        yield onA.reached(256 << 10)
        onB = yield self.startDownload(nodeB)
        yield onB.reached(256 << 10)
        yield nodeA.process.kill(signal.SIGKILL)
        reason = yield onA.done
        self.assertNotIsInstance(reason, ResponseDone)
        self.assertLess(len(onA.data), BIG)
        reason = yield onB.done
        self.assertIsInstance(reason, ResponseDone)
        self.assertEqual(bytes(onB.data), self.expected)
        resumed = yield self.startDownload(nodeC, start=len(onA.data))
        reason = yield resumed.done
        self.assertIsInstance(reason, ResponseDone)
        self.assertEqual(resumed.response.code, 206)
        self.assertEqual(bytes(onA.data) + bytes(resumed.data), self.expected)
        cdn = self.store.cdnDownloads("big", 1)
        self.assertEqual(len(cdn), 2, [r.header("range") for r in cdn])
        self.assertEqual(cdn[0].header("range"), None)
        self.assertTrue((cdn[1].header("range") or "").startswith("bytes="), cdn[1].header("range"))
        counts = yield self.fetches(nodeB)
        self.assertEqual((counts["peer-filling"], counts["upstream"]), (1, 1), counts)

    @inlineCallbacks
    def test_corruptPeerRefused(self):
        """
        A peer whose cached copy has one flipped byte (same size) is
        refused: the download through B is cut before its last byte, B does
        not commit the bytes, and the device's retry gets the right bytes,
        refetched elsewhere (upstream), never from that peer again.
        """
        nodeA, nodeB, _ = self.nodes
        self.assertEqual((yield self.download(nodeA)), self.expected)
        digest = hashlib.sha3_384(self.expected).hexdigest()
        path = os.path.join(nodeA.dataDir, "cache", "blobs", f"{digest}-{BIG}")
        with open(path, "r+b") as blob:
            blob.seek(BIG // 3)
            byte = blob.read(1)
            blob.seek(BIG // 3)
            blob.write(bytes([byte[0] ^ 0xFF]))
        broken = yield self.startDownload(nodeB)
        reason = yield broken.done
        self.assertNotIsInstance(reason, ResponseDone)
        self.assertLess(len(broken.data), BIG)
        self.assertEqual((yield self.download(nodeB)), self.expected)
        counts = yield self.fetches(nodeB)
        self.assertEqual((counts["peer"], counts["peer-refused"], counts["upstream"]), (1, 1, 1),
                         counts)
        self.assertEqual(self.upstreamFetches(), 2)
        self.assertEqual((yield self.download(nodeB)), self.expected)
        self.assertEqual(self.upstreamFetches(), 2)

    @inlineCallbacks
    def test_peerRequestNeedsToken(self):
        """
        The peer endpoint serves only requests carrying the cluster token.
        """
        nodeA = self.nodes[0]
        yield self.download(nodeA)
        digest = hashlib.sha3_384(self.expected).hexdigest()
        url = f"{nodeA.url}_cluster/v1/blobs/{digest}".encode()
        for headers in (None, Headers({b"authorization": [b"Bearer wrong-token-0123456789"]})):
            response = yield testAgent(self).request(b"GET", url, headers)
            body = json.loads((yield readBody(response)))
            self.assertEqual(response.code, 403)
            self.assertEqual(body["error-list"][0]["code"], "cluster-token-required")
        response = yield testAgent(self).request(
            b"GET", url, Headers({b"authorization": [f"Bearer {TOKEN}".encode()]}))
        self.assertEqual(response.code, 200)
        self.assertEqual((yield readBody(response)), self.expected)


class NoTokenTests(ClusterMixin, TestCase):
    """
    A node without C{--cluster-token-file} is listed but serves no peer.
    """

    @inlineCallbacks
    def setUp(self):
        yield self.setUpCluster(1)
        self.bare = yield self.startClusterNode(token=False)
        yield self.waitForNodes(self.nodes[0], 2)

    @inlineCallbacks
    def test_servesNoPeer(self):
        """
        Even with the right token, the node without a token file refuses
        peer requests; its blobs are not offered to the cluster, so a node
        with the token fetches upstream instead.
        """
        self.assertEqual((yield self.download(self.bare)), self.expected)
        digest = hashlib.sha3_384(self.expected).hexdigest()
        url = f"{self.bare.url}_cluster/v1/blobs/{digest}".encode()
        response = yield testAgent(self).request(
            b"GET", url, Headers({b"authorization": [f"Bearer {TOKEN}".encode()]}))
        body = json.loads((yield readBody(response)))
        self.assertEqual(response.code, 403)
        self.assertIn("no --cluster-token-file", body["error-list"][0]["message"])
        self.assertEqual((yield self.download(self.nodes[0])), self.expected)
        self.assertEqual(self.upstreamFetches(), 2)


class ClusterUnitTests(TestCase):
    """
    The parts that need no running node.
    """

    def test_interfaces(self):
        """
        The node observes the cache, the filler fills misses.
        """
        cache = BlobCache(reactor, self.mktemp(), 1 << 20, inThread=None, hashInThread=False)
        database = ClusterDatabase(reactor, "postgresql://nobody@127.0.0.1:1/none")
        filler = ClusterFiller(reactor, database, object(), "http://a/", b"x" * 16)
        self.assertTrue(verifyObject(IBlobFiller, filler))
        self.assertTrue(verifyObject(IBlobCacheObserver,
                                     ClusterNode(reactor, database, "http://a/", cache, filler)))

    def test_tokenFile(self):
        """
        The token is read without surrounding white space; a missing file or
        a token shorter than 16 characters is refused with the option's name.
        """
        path = self.mktemp()
        with open(path, "w") as tokenFile:
            tokenFile.write("  " + TOKEN + "\n")
        self.assertEqual(readToken(path), TOKEN.encode())
        self.assertIsNone(readToken(None))
        with open(path, "w") as tokenFile:
            tokenFile.write("short\n")
        error = self.assertRaises(ClusterTokenError, readToken, path)
        self.assertIn("--cluster-token-file", str(error))
        error = self.assertRaises(ClusterTokenError, readToken, path + ".missing")
        self.assertIn("No such file", str(error))

    def test_lockKey(self):
        """
        Fill lock keys are signed 64-bit, one per digest prefix.
        """
        high = "f" * 96
        self.assertEqual(lockKey(high), -1)
        self.assertEqual(lockKey("0" * 15 + "1" + "0" * 80), 1)
        self.assertNotEqual(lockKey("a" * 96), lockKey("b" * 96))

    def test_badTokenFileStopsStartUp(self):
        """
        C{twistd snapstore} refuses to start with a token file it cannot
        use, naming the option.
        """
        from twisted.python import usage

        from snapstore.tap import Options

        error = self.assertRaises(usage.UsageError, Options().parseOptions, [
            "--config", os.devnull, "--data-dir", self.mktemp(), "--rules-dir", self.mktemp(),
            "--cluster-token-file", self.mktemp()])
        self.assertIn("--cluster-token-file", str(error))


class ClusterDatabaseOutageTests(ClusterMixin, TestCase):
    """
    A cluster node whose database is cut off still serves downloads.
    """

    @inlineCallbacks
    def setUp(self):
        from urllib.parse import urlsplit, urlunsplit

        from tests import pgtest

        yield self.setUpCluster(1)
        server = urlsplit(pgtest.serverDSN())
        self.relay = pgtest.Relay(server.hostname or "127.0.0.1", server.port or 5432)
        self.relay.start()
        self.addCleanup(self.relay.stop)
        netloc = f"{server.username or 'postgres'}@127.0.0.1:{self.relay.port}"
        self.cutOff = yield self.startClusterNode(
            state=urlunsplit(server._replace(netloc=netloc, path="/" + self.database.name)))
        yield self.waitForNodes(self.nodes[0], 2)

    @inlineCallbacks
    def test_fillsFromUpstreamAlone(self):
        """
        Without the database the node cannot ask who has the blob: it
        fetches it from upstream itself (the bytes verified as always)
        instead of failing the device.
        """
        self.assertEqual((yield self.download(self.nodes[0])), self.expected)
        yield self.cutOff.install("big")  # the blob's record, kept in memory
        self.relay.stop()
        self.assertEqual((yield self.download(self.cutOff)), self.expected)
        self.assertEqual(self.upstreamFetches(), 2)
