# -*- test-case-name: tests.test_fakestore -*-
"""
Tests for L{tests.fakestore}: the fake upstream store must speak
store-api.md exactly, or every proxy test built on it proves nothing.

Everything goes over real loopback sockets with treq, as the proxy will
talk to it.  Time-dependent behaviour (stalls, token expiry) runs on a
L{Clock} injected as the store's reactor for scheduling, so no test waits
for wall-clock time.
"""

import base64
import hashlib
import json
import os
from argparse import ArgumentTypeError

import treq
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.client import HTTPClient
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from tests.fakestore import FakeStore
from tests.fakestore.__main__ import parseSnap, startFromArguments
from tests.fakestore.assertions import CANONICAL_ROOT_KEY_ID, signingKey
from tests.fakestore.blobs import BLOCK_SIZE, Blob
from tests.fakestore.catalogue import Channel
from tests.fakestore.cdn import BlobProducer, parseRange
from tests.fakestore.recording import RequestRecord

SNAP = "/usr/bin/snap"

V2_HEADERS = {
    "Snap-Device-Series": "16",
    "Snap-Device-Architecture": "amd64",
    "Snap-Classic": "true",
    "Accept": "application/json",
    "Content-Type": "application/json",
}

FIELDS = [
    "architectures", "base", "confinement", "links", "contact", "created-at",
    "description", "download", "epoch", "license", "name", "prices", "private",
    "publisher", "revision", "snap-id", "snap-yaml", "summary", "title", "type",
    "version", "website", "store-url", "integrity", "media", "common-ids",
    "categories",
]


class SplitReactor:
    """
    The real reactor for sockets, a L{Clock} for time: lets tests drive
    stalls and token expiry without waiting.
    """

    def __init__(self, real, clock) -> None:
        self._real = real
        self.clock = clock
        self.scheduled: list[tuple[float, Deferred]] = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def callLater(self, seconds, f, *args, **kwargs):
        call = self.clock.callLater(seconds, f, *args, **kwargs)
        for entry in list(self.scheduled):
            delay, d = entry
            if delay == seconds:
                self.scheduled.remove(entry)
                # Later, so the caller has finished scheduling before the
                # test resumes (and perhaps advances the clock).
                self._real.callLater(0, d.callback, seconds)
        return call

    def seconds(self):
        return self.clock.seconds()

    def whenScheduled(self, seconds: float) -> Deferred:
        """
        @return: a Deferred firing once something calls C{callLater} with
            this delay (the store's HTTP channels schedule their idle
            timeouts on the same clock, with other delays).
        """
        d = Deferred()
        self.scheduled.append((seconds, d))
        return d


class BlobTests(SynchronousTestCase):
    """
    Generated blobs are deterministic, streamable and hash as announced.
    """

    def test_digestMatchesContent(self):
        """
        The announced SHA3-384 (hex and base64url) is that of the bytes.
        """
        blob = Blob("a" * 32, 3, 3 * BLOCK_SIZE + 17)
        data = blob.read()
        self.assertEqual(len(data), blob.size)
        self.assertEqual(hashlib.sha3_384(data).hexdigest(), blob.sha3_384)
        self.assertEqual(
            base64.urlsafe_b64encode(hashlib.sha3_384(data).digest()).rstrip(b"=").decode(),
            blob.digestBase64,
        )

    def test_distinctPerRevisionAndBlock(self):
        """
        Different revisions give different content, and no two blocks of
        one blob are equal (a range served from the wrong offset shows).
        """
        one = Blob("a" * 32, 1, 2 * BLOCK_SIZE)
        two = Blob("a" * 32, 2, 2 * BLOCK_SIZE)
        self.assertNotEqual(one.sha3_384, two.sha3_384)
        self.assertNotEqual(one.read(0, BLOCK_SIZE), one.read(BLOCK_SIZE, BLOCK_SIZE))
        self.assertEqual(one.read(), Blob("a" * 32, 1, 2 * BLOCK_SIZE).read())

    @settings(max_examples=60, deadline=None)
    @given(st.integers(0, 200_000), st.integers(0, 200_000), st.integers(1, 70_000))
    def test_slicesAgree(self, offset, length, chunkSize):
        """
        Any slice, chunked any way, equals the same slice of the whole.
        """
        blob = _smallBlob()
        whole = _smallBlobBytes()
        got = b"".join(blob.iterChunks(offset, length, chunkSize))
        self.assertEqual(got, whole[offset : offset + length])
        self.assertTrue(
            all(len(c) <= chunkSize for c in blob.iterChunks(offset, length, chunkSize))
        )

    def test_bigBlobsAreNotMaterialised(self):
        """
        L{Blob.read} refuses sizes that would need a big buffer.
        """
        blob = Blob.__new__(Blob)
        blob.size = 2**30
        self.assertRaises(ValueError, blob.read)


class FakeChannel:
    def __init__(self):
        self.transport = None


@implementer(IConsumer)
class PullingRequest:
    """
    Just enough of a request for L{BlobProducer}: records writes and the
    registered producer, and never pulls by itself.
    """

    def __init__(self):
        self.written = []
        self.producer = None
        self.finished = False
        self.fakeStoreRecord = RequestRecord("cdn", "GET", "/", "", {}, b"", ("", 0))
        self.channel = FakeChannel()

    def registerProducer(self, producer, streaming):
        self.producer = (producer, streaming)

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.written.append(data)

    def finish(self):
        self.finished = True


class BlobProducerTests(SynchronousTestCase):
    """
    The CDN writes a block only when the transport asks for one, so a slow
    client never makes it buffer a blob.
    """

    def test_pull(self):
        """
        Registering writes no body (only flushes headers); each
        C{resumeProducing} writes at most one block; the end unregisters
        and finishes.
        """
        store = FakeStore(Clock())
        blob = _smallBlob()
        request = PullingRequest()
        BlobProducer(store, request, blob, 10, blob.size - 10).start()
        producer, streaming = request.producer
        self.assertFalse(streaming)
        self.assertEqual(request.written, [b""])
        producer.resumeProducing()
        self.assertEqual(len(request.written), 2)
        self.assertLessEqual(len(request.written[1]), BLOCK_SIZE)
        self.assertEqual(store.cdnBytesSent, len(request.written[1]))
        while request.producer is not None:
            producer.resumeProducing()
        self.assertTrue(request.finished)
        self.assertEqual(b"".join(request.written), _smallBlobBytes()[10:])
        self.assertEqual(request.fakeStoreRecord.bodyBytesSent, blob.size - 10)

    def test_stopProducing(self):
        """
        After C{stopProducing} (client gone) nothing more is written.
        """
        store = FakeStore(Clock())
        request = PullingRequest()
        BlobProducer(store, request, _smallBlob(), 0, 1000).start()
        producer, _ = request.producer
        producer.stopProducing()
        producer.resumeProducing()
        self.assertEqual(request.written, [b""])
        self.assertFalse(request.finished)


_SMALL = []


def _smallBlob():
    if not _SMALL:
        blob = Blob("b" * 32, 7, 150_001)
        _SMALL.extend([blob, blob.read()])
    return _SMALL[0]


def _smallBlobBytes():
    _smallBlob()
    return _SMALL[1]


class SteadyCollectorTests(SynchronousTestCase):
    """
    Run by hand or for the benchmarks, the fake store freezes its start-up
    heap so that it runs no full collection while measured
    (bench/relay.py's added latency).
    """

    def test_freezesUntilShutdown(self):
        """
        L{steadyCollector} freezes the heap and keeps Python's young
        threshold; the reactor's shutdown unfreezes it.
        """
        import gc

        from twisted.internet.testing import MemoryReactorClock

        from tests.fakestore.__main__ import steadyCollector

        gc.unfreeze()
        self.addCleanup(gc.unfreeze)
        threshold = gc.get_threshold()
        reactor = MemoryReactorClock()
        steadyCollector(reactor)
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertEqual(gc.get_threshold(), threshold)
        [(callable, args, kwargs)] = reactor.triggers["before"]["shutdown"]
        callable(*args, **kwargs)
        self.assertEqual(gc.get_freeze_count(), 0)


class ParsingTests(SynchronousTestCase):
    """
    Channel names, Range headers and runner arguments.
    """

    def test_channels(self):
        """
        Short and long channel names mean the same channel.
        """
        self.assertEqual(Channel.parse("stable"), Channel.parse("latest/stable"))
        self.assertEqual(Channel.parse("2.0"), Channel("2.0", "stable"))
        self.assertEqual(Channel.parse("2.0/beta").name, "2.0/beta")
        self.assertEqual(Channel.parse("latest/edge").name, "edge")
        self.assertEqual(Channel.parse("stable/fix").fullName, "latest/stable/fix")
        self.assertRaises(ValueError, Channel.parse, "a/b/c/d")
        self.assertRaises(ValueError, Channel.parse, "2.0/nonsense")

    def test_ranges(self):
        """
        Open, closed and suffix ranges; unsatisfiable ones are reported.
        """
        self.assertIsNone(parseRange(None, 100))
        self.assertEqual(parseRange("bytes=10-", 100), (10, 99))
        self.assertEqual(parseRange("bytes=10-19", 100), (10, 19))
        self.assertEqual(parseRange("bytes=10-1000", 100), (10, 99))
        self.assertEqual(parseRange("bytes=-5", 100), (95, 99))
        self.assertEqual(parseRange("bytes=100-", 100), "unsatisfiable")
        self.assertIsNone(parseRange("bytes=1-2,5-6", 100))

    def test_snapNames(self):
        """
        Snap names follow snapd's rules, so a mistyped C{--snap} fails
        loudly instead of serving a snap no client can ask for.
        """
        store = FakeStore(Clock())
        for bad in ("hello=stable", "Hello", "-a", "a--b", "123", "a" * 41, ""):
            self.assertRaises(ValueError, store.addSnap, bad)
        for good in ("a", "hello-world", "go2", "a" * 40):
            store.addSnap(good)

    def test_snapArgument(self):
        """
        C{--snap NAME:REV:SIZE[:CHANNEL]}.
        """
        self.assertEqual(parseSnap("hello:29:20480"), ("hello", 29, 20480, "stable"))
        self.assertEqual(parseSnap("hi:1:5:edge"), ("hi", 1, 5, "edge"))
        self.assertRaises(ArgumentTypeError, parseSnap, "hello=stable:3:2000")
        self.assertRaises(ArgumentTypeError, parseSnap, "hello:x:2000")
        self.assertRaises(ArgumentTypeError, parseSnap, "hello:1")


class FakeStoreTestsMixin:
    """
    Start a fake store with a small catalogue, and a non-persistent treq
    client, for each test.
    """

    hostname = None

    @inlineCallbacks
    def setUp(self):
        self.clock = Clock()
        self.reactor = SplitReactor(globalReactor, self.clock)
        self.store = FakeStore(self.reactor, hostname=self.hostname)
        self.helloId = self.store.addSnap(
            "hello", summary="Says hello", categories=("utilities",)
        )
        self.store.addRevision("hello", 10, 100_000, version="2.10")
        self.store.addRevision("hello", 12, 150_000, version="2.12", channels=("edge",))
        self.store.addSnap("hello-world", publisher="someone", confinement="classic")
        self.store.addRevision("hello-world", 3, 4096, channels=("2.0/beta",))
        yield self.store.startFor(self)
        pool = HTTPConnectionPool(globalReactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(globalReactor, pool=pool))

    async def raw(self, port, request: bytes) -> bytes:
        """
        Send C{request} verbatim on a new connection and return everything
        the store sends until it closes: for checking the exact header
        bytes, which treq's parsed view hides (it drops C{Content-Length}).
        """
        received = []
        done = Deferred()

        class Collect(Protocol):
            def connectionMade(self):
                self.transport.write(request)

            def dataReceived(self, data):
                received.append(data)

            def connectionLost(self, reason):
                done.callback(b"".join(received))

        await connectProtocol(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", port), Collect()
        )
        return await done

    def api(self, path):
        return self.store.apiURL + path.lstrip("/")

    async def refresh(self, actions, context=(), fields=FIELDS, headers=V2_HEADERS):
        response = await self.http.post(
            self.api("v2/snaps/refresh"),
            data=json.dumps(
                {"context": list(context), "actions": actions, "fields": fields}
            ).encode(),
            headers=headers,
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        return json.loads(await response.content())

    async def get(self, path, headers=None, **kwargs):
        return await self.http.get(self.api(path), headers=headers, **kwargs)


class RefreshTests(FakeStoreTestsMixin, TestCase):
    """
    C{POST /v2/snaps/refresh} (store-api.md 3.1).
    """

    async def test_install(self):
        """
        An install action gets the stable revision with every field snapd
        asks for, its instance-key echoed and its effective channel.
        """
        body = await self.refresh(
            [{"action": "install", "instance-key": "install-1", "name": "hello",
              "channel": "stable", "epoch": None}]
        )
        self.assertEqual(body["error-list"], [])
        [result] = body["results"]
        self.assertEqual(result["result"], "install")
        self.assertEqual(result["instance-key"], "install-1")
        self.assertEqual(result["snap-id"], self.helloId)
        self.assertEqual(result["name"], "hello")
        self.assertEqual(result["effective-channel"], "stable")
        snap = result["snap"]
        self.assertEqual(snap["revision"], 10)
        self.assertEqual(snap["version"], "2.10")
        self.assertEqual(snap["snap-id"], self.helloId)
        self.assertEqual(len(snap["snap-id"]), 32)
        self.assertEqual(snap["type"], "app")
        self.assertEqual(snap["confinement"], "strict")
        self.assertEqual(snap["epoch"], {"read": [0], "write": [0]})
        self.assertEqual(snap["publisher"]["id"], "canonical")
        self.assertEqual(snap["publisher"]["username"], "canonical")
        self.assertEqual(
            snap["download"],
            {
                "url": self.store.apiURL + f"api/v1/snaps/download/{self.helloId}_10.snap",
                "size": 100_000,
                "sha3-384": self.store.blobDigest("hello", 10),
                "deltas": [],
            },
        )
        self.assertEqual(len(snap["download"]["sha3-384"]), 96)
        [icon] = snap["media"]
        self.assertEqual(icon["type"], "icon")
        self.assertTrue(icon["url"].startswith(self.store.apiURL))
        self.assertIn("name: hello\n", snap["snap-yaml"])
        self.assertEqual(snap["categories"], [{"featured": False, "name": "utilities"}])

    async def test_exactHeaders(self):
        """
        On the wire, JSON answers say exactly C{Content-Type:
        application/json} and carry C{Snap-Store-Version}.
        """
        answer = await self.raw(
            self.store.apiPort,
            b"GET /v2/snaps/info/hello HTTP/1.0\r\nHost: x\r\n\r\n",
        )
        headers = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
        self.assertEqual(headers[0], b"HTTP/1.0 200 OK")
        self.assertIn(b"Content-Type: application/json", headers)
        self.assertIn(b"Snap-Store-Version: 60", headers)
        self.assertIn(b'"channel-map"', answer)

    async def test_storeVersionHeader(self):
        """
        API answers carry C{Snap-Store-Version}.
        """
        response = await self.http.post(
            self.api("v2/snaps/refresh"), data=b'{"actions": []}', headers=V2_HEADERS
        )
        self.assertEqual(response.headers.getRawHeaders("snap-store-version"), ["60"])
        self.assertEqual(json.loads(await response.content()), {"results": [], "error-list": []})

    async def test_fieldsFilter(self):
        """
        Only the requested fields are sent.
        """
        body = await self.refresh(
            [{"action": "download", "instance-key": "download-1", "name": "hello"}],
            fields=["revision", "download"],
        )
        self.assertEqual(set(body["results"][0]["snap"]), {"revision", "download"})

    async def test_closedRiskFollowsMoreStable(self):
        """
        A risk with no release is served by the next more stable one, and
        the effective channel says so; edge has its own release.
        """
        body = await self.refresh(
            [{"action": "install", "instance-key": "install-1", "name": "hello",
              "channel": "candidate", "epoch": None},
             {"action": "install", "instance-key": "install-2", "name": "hello",
              "channel": "latest/edge", "epoch": None}]
        )
        first, second = body["results"]
        self.assertEqual((first["snap"]["revision"], first["effective-channel"]), (10, "stable"))
        self.assertEqual((second["snap"]["revision"], second["effective-channel"]), (12, "edge"))

    async def test_revisionNotFound(self):
        """
        A channel nothing serves gives C{revision-not-found} listing the
        existing releases in C{extra.releases}.
        """
        body = await self.refresh(
            [{"action": "install", "instance-key": "install-1", "name": "hello-world",
              "channel": "stable", "epoch": None},
             {"action": "download", "instance-key": "download-1", "name": "hello",
              "revision": 99, "epoch": None}]
        )
        first, second = body["results"]
        self.assertEqual(first["result"], "error")
        self.assertEqual(first["instance-key"], "install-1")
        self.assertEqual(first["name"], "hello-world")
        self.assertEqual(first["error"]["code"], "revision-not-found")
        self.assertEqual(
            first["error"]["extra"]["releases"],
            [{"architecture": "amd64", "channel": "2.0/beta"}],
        )
        self.assertEqual(second["error"]["code"], "revision-not-found")
        self.assertEqual(second["name"], "hello")

    async def test_otherArchitecture(self):
        """
        A device of another architecture gets nothing for amd64-only snaps.
        """
        headers = dict(V2_HEADERS, **{"Snap-Device-Architecture": "arm64"})
        body = await self.refresh(
            [{"action": "install", "instance-key": "install-1", "name": "hello"}],
            headers=headers,
        )
        self.assertEqual(body["results"][0]["error"]["code"], "revision-not-found")

    async def test_nameAndIdNotFound(self):
        """
        Unknown names and ids give C{name-not-found} and C{id-not-found}.
        """
        body = await self.refresh(
            [{"action": "install", "instance-key": "install-1", "name": "nope"},
             {"action": "refresh", "instance-key": "X" * 32, "snap-id": "X" * 32}],
            context=[{"snap-id": "X" * 32, "instance-key": "X" * 32, "revision": 1,
                      "tracking-channel": "stable", "epoch": {"read": [0], "write": [0]}}],
        )
        first, second = body["results"]
        self.assertEqual((first["result"], first["error"]["code"]), ("error", "name-not-found"))
        self.assertEqual(first["name"], "nope")
        self.assertEqual(second["error"]["code"], "id-not-found")
        self.assertEqual(second["instance-key"], "X" * 32)

    def _context(self, revision, channel="latest/stable"):
        return [{"snap-id": self.helloId, "instance-key": self.helloId, "revision": revision,
                 "tracking-channel": channel, "epoch": {"read": [0], "write": [0]}}]

    async def test_refreshNoUpdate(self):
        """
        Refreshing to what is installed answers the same revision.
        """
        body = await self.refresh(
            [{"action": "refresh", "instance-key": self.helloId, "snap-id": self.helloId}],
            context=self._context(10),
        )
        [result] = body["results"]
        self.assertEqual(result["result"], "refresh")
        self.assertEqual(result["instance-key"], self.helloId)
        self.assertEqual(result["snap"]["revision"], 10)

    async def test_refreshAfterRelease(self):
        """
        Moving stable from 10 to 12 makes a refresh from 10 return 12; a
        context tracking edge gets edge.
        """
        self.store.release("hello", "stable", 12)
        body = await self.refresh(
            [{"action": "refresh", "instance-key": self.helloId, "snap-id": self.helloId}],
            context=self._context(10),
        )
        self.assertEqual(body["results"][0]["snap"]["revision"], 12)
        self.assertEqual(body["results"][0]["effective-channel"], "stable")

    async def test_downloadPinnedRevision(self):
        """
        A download action with a revision gets that revision.
        """
        body = await self.refresh(
            [{"action": "download", "instance-key": "download-1", "name": "hello",
              "revision": 12, "epoch": None}]
        )
        [result] = body["results"]
        self.assertEqual(result["result"], "download")
        self.assertEqual(result["snap"]["revision"], 12)
        self.assertEqual(result["snap"]["download"]["size"], 150_000)

    async def test_fetchAssertions(self):
        """
        fetch-assertions answers stream URLs for known assertions and an
        error-list entry for unknown ones.
        """
        body = await self.refresh(
            [{"action": "fetch-assertions", "key": "g1", "assertions": [
                {"type": "snap-declaration", "primary-key": ["16", self.helloId]},
                {"type": "snap-declaration", "primary-key": ["16", "Y" * 32]}]}],
        )
        [result] = body["results"]
        self.assertEqual(result["result"], "fetch-assertions")
        self.assertEqual(result["key"], "g1")
        [url] = result["assertion-stream-urls"]
        self.assertEqual(url, self.api(f"v2/assertions/snap-declaration/16/{self.helloId}"))
        self.assertEqual(result["error-list"][0]["code"], "not-found")
        self.assertEqual(result["error-list"][0]["primary-key"], ["16", "Y" * 32])
        response = await self.http.get(url)
        self.assertEqual(response.code, 200)
        self.assertIn(b"type: snap-declaration\n", await response.content())

    async def test_badBody(self):
        """
        A body that is not JSON is a 400 with an error-list.
        """
        response = await self.http.post(
            self.api("v2/snaps/refresh"), data=b"{", headers=V2_HEADERS
        )
        self.assertEqual(response.code, 400)
        body = json.loads(await response.content())
        self.assertEqual(body["error-list"][0]["code"], "bad-request")


class CatalogueEndpointTests(FakeStoreTestsMixin, TestCase):
    """
    info, find, categories, sections, names, cohorts (store-api.md 3.2-3.4).
    """

    async def test_info(self):
        """
        The channel map lists every release, current (latest/stable) first.
        """
        response = await self.get("v2/snaps/info/hello?architecture=amd64")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        body = json.loads(await response.content())
        self.assertEqual(body["name"], "hello")
        self.assertEqual(body["snap-id"], self.helloId)
        self.assertIsNone(body["default-track"])
        self.assertEqual(body["snap"]["summary"], "Says hello")
        channels = [(e["channel"]["name"], e["revision"]) for e in body["channel-map"]]
        self.assertEqual(channels, [("stable", 10), ("edge", 12)])
        first = body["channel-map"][0]
        self.assertEqual(
            {k: first["channel"][k] for k in ("architecture", "track", "risk")},
            {"architecture": "amd64", "track": "latest", "risk": "stable"},
        )
        self.assertEqual(first["download"]["sha3-384"], self.store.blobDigest("hello", 10))

    async def test_infoChannelMapOnly(self):
        """
        C{fields=channel-map} still lists the channels.
        """
        body = json.loads(await (await self.get("v2/snaps/info/hello?fields=channel-map")).content())
        self.assertEqual(len(body["channel-map"]), 2)
        self.assertNotIn("download", body["channel-map"][0])

    async def test_infoNotFound(self):
        """
        Unknown snaps are a 404 with an error-list.
        """
        response = await self.get("v2/snaps/info/nope")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        body = json.loads(await response.content())
        self.assertEqual(len(body["error-list"]), 1)
        self.assertIn("code", body["error-list"][0])

    async def test_find(self):
        """
        C{q} searches text, C{name} is a name prefix, C{scope=wide} drops the
        stable-channel filter.
        """
        async def names(query):
            response = await self.get("v2/snaps/find?" + query)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
            body = json.loads(await response.content())
            return [r["name"] for r in body["results"]], body

        found, body = await names("q=says")
        self.assertEqual(found, ["hello"])
        result = body["results"][0]
        self.assertEqual(result["snap-id"], self.helloId)
        self.assertEqual(result["revision"]["revision"], 10)
        self.assertEqual(result["revision"]["channel"], "stable")
        self.assertEqual(result["revision"]["download"], {"size": 100_000})
        self.assertEqual(result["snap"]["publisher"]["username"], "canonical")
        self.assertEqual((await names("name=hello"))[0], ["hello"])
        self.assertEqual((await names("name=hello&scope=wide"))[0], ["hello", "hello-world"])
        self.assertEqual((await names("name=zzz"))[0], [])
        self.assertEqual((await names("q=hello&scope=wide&confinement=strict"))[0], ["hello"])

    async def test_categories(self):
        """
        Categories (v2) and sections (v1, HAL) list the catalogue's.
        """
        response = await self.get("v2/snaps/categories")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(
            json.loads(await response.content()),
            {"categories": [{"name": "featured"}, {"name": "utilities"}]},
        )
        response = await self.get("api/v1/snaps/sections")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/hal+json"])
        self.assertEqual(
            json.loads(await response.content()),
            {"_embedded": {"clickindex:sections": [{"name": "featured"}, {"name": "utilities"}]}},
        )

    async def test_names(self):
        """
        The names catalogue (HAL) lists snaps with a stable release.
        """
        response = await self.get(
            "api/v1/snaps/names?confinement=strict,classic",
            headers={"X-Ubuntu-Architecture": "amd64"},
        )
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/hal+json"])
        body = json.loads(await response.content())
        [package] = body["_embedded"]["clickindex:package"]
        self.assertEqual(package["package_name"], "hello")
        self.assertEqual(package["version"], "2.10")
        self.assertEqual(package["apps"], ["hello"])

    async def test_cohorts(self):
        """
        C{POST /v2/cohorts} hands out a key per snap; unknown snaps are 404.
        """
        response = await self.http.post(
            self.api("v2/cohorts"), data=b'{"snaps": ["hello"]}', headers=V2_HEADERS
        )
        body = json.loads(await response.content())
        self.assertEqual(list(body["cohort-keys"]), ["hello"])
        response = await self.http.post(
            self.api("v2/cohorts"), data=b'{"snaps": ["nope"]}', headers=V2_HEADERS
        )
        self.assertEqual(response.code, 404)
        await response.content()

    async def test_icon(self):
        """
        The icon URL from the snap's media serves a PNG with an ETag and
        honours If-None-Match.
        """
        info = json.loads(await (await self.get("v2/snaps/info/hello")).content())
        url = info["snap"]["media"][0]["url"]
        response = await self.http.get(url)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["image/png"])
        self.assertTrue((await response.content()).startswith(b"\x89PNG"))
        etag = response.headers.getRawHeaders("etag")[0]
        response = await self.http.get(url, headers={"If-None-Match": etag})
        self.assertEqual(response.code, 304)
        await response.content()

    async def test_unknownRoute(self):
        """
        Unknown paths are 404 JSON error-lists with the store version.
        """
        response = await self.get("v2/nothing")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.headers.getRawHeaders("snap-store-version"), ["60"])
        self.assertIn("error-list", json.loads(await response.content()))


class AssertionAndSessionTests(FakeStoreTestsMixin, TestCase):
    """
    C{/v2/assertions/...} (store-api.md 6.1, 7) and device sessions (3.5).
    """

    async def assertion(self, path):
        response = await self.get(
            "v2/assertions/" + path, headers={"Accept": "application/x.ubuntu.assertion"}
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/x.ubuntu.assertion"]
        )
        text = (await response.content()).decode()
        head, _, _ = text.partition("\n\n")
        headers = dict(line.split(": ", 1) for line in head.splitlines())
        return text, headers

    async def test_snapRevision(self):
        """
        The snap-revision by base64url digest names the snap, revision and
        size, in snapd's canonical header order.
        """
        blob = self.store.blob("hello", 12)
        text, headers = await self.assertion(f"snap-revision/{blob.digestBase64}?max-format=0")
        self.assertTrue(text.startswith(
            f"type: snap-revision\nauthority-id: canonical\nsnap-sha3-384: {blob.digestBase64}\n"
        ))
        self.assertEqual(headers["snap-id"], self.helloId)
        self.assertEqual(headers["snap-revision"], "12")
        self.assertEqual(headers["snap-size"], "150000")
        self.assertEqual(headers["developer-id"], "canonical")
        self.assertEqual(headers["sign-key-sha3-384"], signingKey()[1])
        self.assertTrue(text.endswith("\n"))
        self.assertNotIn("body-length", headers)

    async def test_declarationAccountAndKey(self):
        """
        The snap-declaration names the publisher, whose account exists; the
        signing key's account-key carries its public key as body and is
        signed by Canonical's root key id.
        """
        _, declaration = await self.assertion(f"snap-declaration/16/{self.helloId}?max-format=5")
        self.assertEqual(declaration["snap-name"], "hello")
        self.assertEqual(declaration["series"], "16")
        _, account = await self.assertion(f"account/{declaration['publisher-id']}")
        self.assertEqual(account["username"], "canonical")
        other = self.store.catalogue.byName("hello-world").publisherId
        _, account = await self.assertion(f"account/{other}")
        self.assertEqual(account["username"], "someone")
        keyId = declaration["sign-key-sha3-384"]
        text, key = await self.assertion(f"account-key/{keyId}")
        self.assertEqual(key["public-key-sha3-384"], keyId)
        self.assertEqual(key["sign-key-sha3-384"], CANONICAL_ROOT_KEY_ID)
        body = text.split("\n\n")[1]
        self.assertEqual(len(body), int(key["body-length"]))
        decoded = base64.b64decode(body)
        self.assertEqual(
            base64.urlsafe_b64encode(hashlib.sha3_384(decoded).digest()).rstrip(b"=").decode(),
            keyId,
        )

    async def test_notFound(self):
        """
        Unknown assertions are 404 problem+json not-found error-lists.
        """
        for path in ("snap-revision/nope", "snap-declaration/16/" + "Z" * 32,
                     "account/nobody", "store/x", "account-key/nope", "model"):
            response = await self.get("v2/assertions/" + path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(
                response.headers.getRawHeaders("content-type"), ["application/problem+json"]
            )
            self.assertEqual(
                json.loads(await response.content()),
                {"error-list": [{"code": "not-found", "message": "not found"}]},
            )

    async def test_deviceSession(self):
        """
        Nonce then session: the device-session-request's brand, model,
        serial and nonce are recorded and a macaroon is handed back.
        """
        response = await self.http.post(self.api("api/v1/snaps/auth/nonces"))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        nonce = json.loads(await response.content())["nonce"]
        self.assertTrue(nonce)
        request = (
            "type: device-session-request\nbrand-id: acme\nmodel: box\n"
            f"serial: 42\nnonce: {nonce}\ntimestamp: 2026-01-01T00:00:00Z\n"
            "sign-key-sha3-384: abc\n\nSIG\n"
        )
        response = await self.http.post(
            self.api("api/v1/snaps/auth/sessions"),
            data=json.dumps({"device-session-request": request,
                             "serial-assertion": "s", "model-assertion": "m"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(response.code, 200)
        macaroon = json.loads(await response.content())["macaroon"]
        [session] = self.store.sessions
        self.assertEqual(
            (session.brandId, session.model, session.serial, session.nonce, session.macaroon),
            ("acme", "box", "42", nonce, macaroon),
        )
        self.assertEqual(self.store.nonces, [nonce])


class DownloadTests(FakeStoreTestsMixin, TestCase):
    """
    The API's download redirect and the CDN (store-api.md 4.1).
    """

    async def redirect(self, name="hello", revision=10, **headers):
        response = await self.http.get(
            self.store.downloadURL(name, revision), allow_redirects=False,
            headers=headers or None,
        )
        self.assertEqual(response.code, 302)
        await response.content()
        return response.headers.getRawHeaders("location")[0]

    async def test_redirectToCDN(self):
        """
        The API answers 302 to the CDN listener with a token; the CDN serves
        exactly the announced bytes; both hops are recorded and counted.
        """
        location = await self.redirect(**{"X-Device-Authorization": 'Macaroon root="d"'})
        prefix = self.store.cdnURL + f"download-origin/{self.helloId}_10.snap?interactive=1&token="
        self.assertTrue(location.startswith(prefix), location)
        response = await self.http.get(location)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.length, 100_000)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/octet-stream"]
        )
        data = await response.content()
        self.assertEqual(data, self.store.blobBytes("hello", 10))
        self.assertEqual(hashlib.sha3_384(data).hexdigest(), self.store.blobDigest("hello", 10))
        self.assertEqual(self.store.cdnBytesSent, 100_000)
        self.assertEqual(self.store.count("GET", "/api/v1/snaps/download/", "api"), 1)
        self.assertEqual(self.store.count("GET", "/download-origin/", "cdn"), 1)
        self.assertEqual(len(self.store.cdnDownloads("hello", 10)), 1)
        [api] = self.store.requestsTo("GET", "/api/v1/snaps/download/")
        self.assertEqual(api.header("x-device-authorization"), 'Macaroon root="d"')
        self.assertEqual(api.status, 302)
        [cdn] = self.store.cdnDownloads()
        self.assertFalse(cdn.hasHeader("x-device-authorization"))
        self.assertFalse(cdn.hasHeader("authorization"))
        self.assertEqual(cdn.bodyBytesSent, 100_000)
        self.assertEqual(cdn.status, 200)
        self.assertEqual(cdn.query.split("&")[0], "interactive=1")

    async def test_recordsHeadersReachingCDN(self):
        """
        Headers a client wrongly sends to the CDN are visible to tests.
        """
        location = await self.redirect()
        response = await self.http.get(location, headers={"Authorization": "Macaroon x"})
        await response.content()
        [cdn] = self.store.cdnDownloads()
        self.assertEqual(cdn.header("Authorization"), "Macaroon x")

    async def test_followRedirect(self):
        """
        A client following the redirect gets the bytes.
        """
        response = await self.http.get(self.store.downloadURL("hello", 12))
        self.assertEqual(await response.content(), self.store.blobBytes("hello", 12))

    async def test_ranges(self):
        """
        Open and closed ranges are 206 with Content-Range, past-the-end is
        416, HEAD sends only headers.
        """
        location = await self.redirect()
        whole = self.store.blobBytes("hello", 10)
        response = await self.http.get(location, headers={"Range": "bytes=70000-"})
        self.assertEqual(response.code, 206)
        self.assertEqual(
            response.headers.getRawHeaders("content-range"), ["bytes 70000-99999/100000"]
        )
        self.assertEqual(await response.content(), whole[70000:])
        response = await self.http.get(location, headers={"Range": "bytes=5-65540"})
        self.assertEqual(response.code, 206)
        self.assertEqual(await response.content(), whole[5:65541])
        response = await self.http.get(location, headers={"Range": "bytes=100000-"})
        self.assertEqual(response.code, 416)
        self.assertEqual(response.headers.getRawHeaders("content-range"), ["bytes */100000"])
        await response.content()
        path = location.split("/", 3)[3]
        head = await self.raw(
            self.store.cdnPort,
            f"HEAD /{path} HTTP/1.0\r\nHost: x\r\n\r\n".encode(),
        )
        status, _, rest = head.partition(b"\r\n")
        self.assertEqual(status, b"HTTP/1.0 200 OK")
        headers, _, body = rest.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 100000", headers.split(b"\r\n"))
        self.assertIn(b"Accept-Ranges: bytes", headers.split(b"\r\n"))
        self.assertEqual(body, b"")
        self.assertEqual(self.store.cdnBytesSent, 30000 + 65536)

    async def test_badToken(self):
        """
        The CDN refuses missing, forged and expired tokens.
        """
        location = await self.redirect()
        bare = location.split("?")[0]
        response = await self.http.get(bare)
        self.assertEqual(response.code, 403)
        await response.content()
        response = await self.http.get(location[:-4] + "0000")
        self.assertEqual(response.code, 403)
        await response.content()
        self.clock.advance(self.store.tokenLifetime + 1)
        response = await self.http.get(location)
        self.assertEqual(response.code, 403)
        await response.content()
        self.assertEqual(self.store.cdnBytesSent, 0)

    async def test_paidSnapNeedsAuthorization(self):
        """
        Downloads of a priced snap are 402 unless the first hop carries
        C{Authorization}.
        """
        self.store.addSnap("paid", prices={"USD": "9.99"})
        self.store.addRevision("paid", 1, 10)
        response = await self.http.get(self.store.downloadURL("paid", 1), allow_redirects=False)
        self.assertEqual(response.code, 402)
        self.assertEqual(
            json.loads(await response.content())["error-list"][0]["code"], "payment-required"
        )
        location = await self.redirect("paid", 1, Authorization='Macaroon root="u"')
        self.assertIn("/download-origin/", location)

    async def test_unknownBlob(self):
        """
        Unknown revisions are 404 on the API download path.
        """
        response = await self.http.get(
            self.api(f"api/v1/snaps/download/{self.helloId}_99.snap"), allow_redirects=False
        )
        self.assertEqual(response.code, 404)
        await response.content()


class HostnameTests(FakeStoreTestsMixin, TestCase):
    """
    With C{hostname}, absolute URLs use it instead of the Host header.
    """

    hostname = "fakestore.test"

    async def test_urls(self):
        """
        Download, icon and redirect URLs name C{fakestore.test}.
        """
        body = await self.refresh(
            [{"action": "download", "instance-key": "download-1", "name": "hello"}]
        )
        snap = body["results"][0]["snap"]
        self.assertEqual(
            snap["download"]["url"],
            f"http://fakestore.test:{self.store.apiPort}/api/v1/snaps/download/{self.helloId}_10.snap",
        )
        self.assertTrue(snap["media"][0]["url"].startswith(f"http://fakestore.test:{self.store.apiPort}/"))
        response = await self.http.get(
            self.api(f"api/v1/snaps/download/{self.helloId}_10.snap"), allow_redirects=False
        )
        await response.content()
        self.assertTrue(
            response.headers.getRawHeaders("location")[0].startswith(
                f"http://fakestore.test:{self.store.cdnPort}/download-origin/"
            )
        )


class DeltaTests(FakeStoreTestsMixin, TestCase):
    """
    Deltas (store-api.md 4.3): offered to a refresh that accepts xdelta3
    from the installed revision to a newer one, when the store offers
    deltas at all; served from the CDN like blobs.
    """

    async def refreshFrom(self, installed, accept="xdelta3"):
        headers = dict(V2_HEADERS)
        if accept is not None:
            headers["Snap-Accept-Delta-Format"] = accept
        body = await self.refresh(
            [{"action": "refresh", "instance-key": self.helloId, "snap-id": self.helloId,
              "channel": "edge"}],
            context=[{"snap-id": self.helloId, "instance-key": self.helloId,
                      "revision": installed, "tracking-channel": "latest/edge",
                      "epoch": {"read": [0], "write": [0]}}],
            headers=headers)
        return body["results"][0]["snap"]["download"]

    async def test_offeredOnlyWhenAskedAndOn(self):
        """
        Off by default; on, only for a refresh that accepts xdelta3 (among
        other formats) from an older revision the store holds.
        """
        self.assertEqual((await self.refreshFrom(10))["deltas"], [])
        self.store.deltas = True
        self.assertEqual((await self.refreshFrom(10, accept=None))["deltas"], [])
        self.assertEqual((await self.refreshFrom(10, accept="bsdiff"))["deltas"], [])
        self.assertEqual((await self.refreshFrom(12))["deltas"], [])
        self.assertEqual((await self.refreshFrom(11))["deltas"], [])
        [delta] = (await self.refreshFrom(10, accept="snap-1-1-xdelta3,xdelta3"))["deltas"]
        blob = self.store.delta("hello", 10, 12)
        self.assertEqual(delta, {
            "format": "xdelta3", "source": 10, "target": 12,
            "url": self.api(f"api/v1/snaps/download/{self.helloId}_10_12_xdelta3.delta"),
            "size": blob.size, "sha3-384": blob.sha3_384})
        self.assertEqual(blob.size, 15_000)

    async def test_servedFromCDN(self):
        """
        The delta URL redirects to the CDN, which serves bytes matching the
        announced sha3-384 and counts the download; a corrupt fault armed
        for the delta spoils it once.
        """
        self.store.deltas = True
        delta = (await self.refreshFrom(10))["deltas"][0]
        response = await self.http.get(delta["url"])
        data = await response.content()
        self.assertEqual((response.code, len(data)), (200, delta["size"]))
        self.assertEqual(hashlib.sha3_384(data).hexdigest(), delta["sha3-384"])
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello", 10, 12)), 1)
        self.assertEqual(len(self.store.cdnDownloads("hello", 12)), 0)
        self.store.faults.failDelta("hello", 10, 12, "corrupt")
        response = await self.http.get(delta["url"])
        self.assertNotEqual(hashlib.sha3_384(await response.content()).hexdigest(),
                            delta["sha3-384"])
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello")), 2)
        response = await self.http.get(
            self.api(f"api/v1/snaps/download/{self.helloId}_12_10_xdelta3.delta"))
        self.assertEqual(response.code, 404)
        await response.content()


class FaultTests(FakeStoreTestsMixin, TestCase):
    """
    Armed faults break exactly the requests they are armed for.
    """

    async def download(self, name="hello", revision=10):
        """
        Fetch a blob through the redirect, collecting what arrives.

        @return: C{(bytes received, failure or None)}.
        """
        chunks = []
        try:
            response = await self.http.get(self.store.downloadURL(name, revision))
            await treq.collect(response, chunks.append)
        except Exception as e:
            return b"".join(chunks), e
        return b"".join(chunks), None

    async def test_short(self):
        """
        C{short} sends the given number of body bytes then closes; the next
        download is whole again.
        """
        self.store.faults.failDownload("hello", 10, "short", offset=70_000)
        data, failure = await self.download()
        self.assertIsNotNone(failure)
        self.assertEqual(data, self.store.blobBytes("hello", 10)[:70_000])
        self.assertEqual(self.store.faults.pendingDownloadFaults("hello", 10), 0)
        data, failure = await self.download()
        self.assertIsNone(failure)
        self.assertEqual(data, self.store.blobBytes("hello", 10))
        self.assertEqual(self.store.cdnBytesSent, 170_000)

    async def test_shortAtZero(self):
        """
        A cut at offset 0 still sends the response headers first.
        """
        self.store.faults.failDownload("hello", 10, "short", offset=0)
        response = await self.http.get(self.store.downloadURL("hello", 10))
        self.assertEqual(response.code, 200)
        with self.assertRaises(Exception):
            await response.content()
        self.assertEqual(self.store.cdnBytesSent, 0)

    async def test_reset(self):
        """
        C{reset} breaks the connection mid-body: the client gets an error
        and at most the bytes before the cut, all of them correct.
        """
        self.store.faults.failDownload("hello", 10, "reset", count=2, offset=1000)
        for _ in range(2):
            data, failure = await self.download()
            self.assertIsNotNone(failure)
            self.assertLessEqual(len(data), 1000)
            self.assertEqual(data, self.store.blobBytes("hello", 10)[: len(data)])
        data, failure = await self.download()
        self.assertIsNone(failure)

    async def test_corrupt(self):
        """
        C{corrupt} sends the right length with one wrong byte.
        """
        self.store.faults.failDownload("hello", 12, "corrupt", offset=5)
        data, failure = await self.download("hello", 12)
        self.assertIsNone(failure)
        good = self.store.blobBytes("hello", 12)
        self.assertEqual(len(data), len(good))
        self.assertNotEqual(hashlib.sha3_384(data).hexdigest(), self.store.blobDigest("hello", 12))
        self.assertEqual([i for i in range(len(data)) if data[i] != good[i]], [5])

    async def test_cdnStall(self):
        """
        C{stall} holds the response headers until the injected clock has
        advanced by the stall, then answers normally.
        """
        self.store.faults.failDownload("hello", 10, "stall", seconds=30)
        scheduled = self.reactor.whenScheduled(30)
        pending = Deferred.fromCoroutine(self.download())
        await scheduled
        self.assertNoResult(pending)
        self.clock.advance(30)
        data, failure = await pending
        self.assertIsNone(failure)
        self.assertEqual(data, self.store.blobBytes("hello", 10))

    async def test_cdnSlow(self):
        """
        C{slow} sends each block only after the delay, on the injected
        clock, and the whole blob in the end.
        """
        self.store.faults.failDownload("hello", 10, "slow", seconds=7)
        scheduled = self.reactor.whenScheduled(7)
        pending = Deferred.fromCoroutine(self.download())
        await scheduled
        self.assertNoResult(pending)
        for _ in range(100):
            if pending.called:
                break
            scheduled = self.reactor.whenScheduled(7)
            self.clock.advance(7)
            await DeferredList([scheduled, pending], fireOnOneCallback=True)
        data, failure = await pending
        self.assertIsNone(failure)
        self.assertEqual(data, self.store.blobBytes("hello", 10))

    async def test_apiStatus(self):
        """
        C{status} answers the given code with a JSON error-list, only for
        the matching path and count.
        """
        self.store.faults.failAPI("status", code=500, pathPrefix="/v2/snaps/info/", count=1)
        response = await self.get("v2/snaps/find?q=hello")
        self.assertEqual(response.code, 200)
        await response.content()
        response = await self.get("v2/snaps/info/hello")
        self.assertEqual(response.code, 500)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertIn("error-list", json.loads(await response.content()))
        response = await self.get("v2/snaps/info/hello")
        self.assertEqual(response.code, 200)
        await response.content()

    async def test_apiStatusHeaders(self):
        """
        A C{status} fault can carry headers and an error code, e.g. the
        C{WWW-Authenticate} that makes snapd refresh its device session.
        """
        self.store.faults.failAPI(
            "status", code=401, pathPrefix="/v2/snaps/refresh",
            headers={"WWW-Authenticate": "Macaroon refresh_device_session=1",
                     "X-Oops-Id": "OOPS-1"},
            errorCode="device-authorization-needs-refresh",
        )
        response = await self.http.post(
            self.api("v2/snaps/refresh"), data=b'{"actions": []}', headers=V2_HEADERS
        )
        self.assertEqual(response.code, 401)
        self.assertEqual(
            response.headers.getRawHeaders("www-authenticate"),
            ["Macaroon refresh_device_session=1"],
        )
        self.assertEqual(response.headers.getRawHeaders("x-oops-id"), ["OOPS-1"])
        body = json.loads(await response.content())
        self.assertEqual(body["error-list"][0]["code"], "device-authorization-needs-refresh")

    async def test_apiInvalidJSON(self):
        """
        C{invalid-json} answers 200 application/json that does not parse.
        """
        self.store.faults.failAPI("invalid-json", pathPrefix="/v2/snaps/refresh")
        response = await self.http.post(
            self.api("v2/snaps/refresh"), data=b'{"actions": []}', headers=V2_HEADERS
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertRaises(ValueError, json.loads, await response.content())

    async def test_apiStall(self):
        """
        C{stall} delays an API answer on the injected clock.
        """
        self.store.faults.failAPI("stall", seconds=20, method="GET")
        scheduled = self.reactor.whenScheduled(20)
        pending = Deferred.fromCoroutine(self.get("v2/snaps/categories"))
        await scheduled
        self.assertNoResult(pending)
        self.clock.advance(20)
        response = await pending
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertIn("categories", json.loads(await response.content()))

    async def test_stopWhileStalled(self):
        """
        Stopping the store cancels stalls and drops their connections.
        """
        self.store.faults.failDownload("hello", 10, "stall", seconds=30)
        scheduled = self.reactor.whenScheduled(30)
        pending = Deferred.fromCoroutine(self.download())
        await scheduled
        await self.store.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        try:
            data, failure = await pending
        except Exception:
            return
        self.assertIsNotNone(failure)

    def test_unknownKinds(self):
        """
        Misspelt fault kinds are refused at once.
        """
        self.assertRaises(ValueError, self.store.faults.failDownload, "hello", 10, "bogus")
        self.assertRaises(ValueError, self.store.faults.failAPI, "bogus")


class LifecycleTests(TestCase):
    """
    Starting and stopping.
    """

    async def test_stopClosesListeners(self):
        """
        After C{stop}, both ports refuse connections; open connections are
        gone too.
        """
        store = FakeStore()
        await store.start()
        self.assertNotEqual(store.apiPort, store.cdnPort)
        self.assertEqual(store.apiURL, f"http://127.0.0.1:{store.apiPort}/")
        self.assertEqual(store.cdnURL, f"http://127.0.0.1:{store.cdnPort}/")
        idle = Protocol()
        await connectProtocol(TCP4ClientEndpoint(globalReactor, "127.0.0.1", store.apiPort), idle)
        lost = Deferred()
        idle.connectionLost = lambda reason: lost.callback(None)
        await store.stop()
        await lost
        for port in (store.apiPort, store.cdnPort):
            with self.assertRaises(ConnectionRefusedError):
                await connectProtocol(
                    TCP4ClientEndpoint(globalReactor, "127.0.0.1", port), Protocol()
                )


class RunnerTests(TestCase):
    """
    C{python -m tests.fakestore}.
    """

    async def test_start(self):
        """
        The runner fills the catalogue from C{--snap} and listens.
        """
        store = await startFromArguments(
            globalReactor, ["--snap", "hello:29:2048", "--snap", "hello:30:10:edge"]
        )
        self.addCleanup(store.stop)
        self.assertEqual(store.catalogue.byName("hello").releases[("amd64", Channel.parse("edge"))], 30)
        pool = HTTPConnectionPool(globalReactor, persistent=False)
        response = await HTTPClient(Agent(globalReactor, pool=pool)).get(store.downloadURL("hello", 29))
        self.assertEqual(await response.content(), store.blobBytes("hello", 29))


class SnapDownloadTests(FakeStoreTestsMixin, TestCase):
    """
    Debian's stock C{snap download} against the fake store (see
    C{tests/fakestore/README.md}).
    """

    if not os.access(SNAP, os.X_OK):
        skip = f"{SNAP} is not installed; this checks the fake against the real client"

    async def snapDownload(self, *args):
        """
        Run C{snap download hello ARGS} against the fake store.

        @return: C{(stdout, stderr, exit status, target directory)}.
        """
        target = os.path.abspath(self.mktemp())
        home = os.path.abspath(self.mktemp())
        os.makedirs(target)
        os.makedirs(home)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": home,
            "SNAPPY_FORCE_API_URL": self.store.apiURL,
        }
        out, err, code = await getProcessOutputAndValue(
            SNAP, ["download", "hello", *args, "--target-directory", target], env=env,
            reactor=globalReactor,
        )
        return out, err, code, target

    async def test_snapDownload(self):
        """
        C{snap download} resolves the snap, follows the redirect, writes the
        exact bytes and fetches the assertion chain, then fails only on the
        signature check because stock snap trusts only Canonical's keys.
        """
        out, err, code, target = await self.snapDownload()
        self.assertEqual(code, 1, err)
        self.assertEqual(out, b'Fetching snap "hello"\nFetching assertions for "hello"\n')
        self.assertIn(
            b"error: cannot fetch snap signatures/assertions: cannot add assertion account-key",
            err,
        )
        self.assertIn(b"failed signature verification", err)
        self.assertEqual(sorted(os.listdir(target)), ["hello_10.assert", "hello_10.snap"])
        with open(os.path.join(target, "hello_10.snap"), "rb") as f:
            self.assertEqual(f.read(), self.store.blobBytes("hello", 10))
        self.assertEqual(os.path.getsize(os.path.join(target, "hello_10.assert")), 0)

        digest = self.store.blob("hello", 10).digestBase64
        self.assertEqual(
            [(r.listener, r.method, r.path) for r in self.store.requests],
            [
                ("api", "POST", "/v2/snaps/refresh"),
                ("api", "GET", f"/api/v1/snaps/download/{self.helloId}_10.snap"),
                ("cdn", "GET", f"/download-origin/{self.helloId}_10.snap"),
                ("api", "GET", f"/v2/assertions/snap-revision/{digest}"),
                ("api", "GET", f"/v2/assertions/snap-declaration/16/{self.helloId}"),
                ("api", "GET", f"/v2/assertions/account-key/{signingKey()[1]}"),
            ],
        )
        refresh, download, cdn = self.store.requests[:3]
        body = json.loads(refresh.body)
        self.assertEqual(body["context"], [])
        self.assertEqual(
            body["actions"],
            [{"action": "download", "instance-key": "download-1", "name": "hello", "epoch": None}],
        )
        self.assertEqual(refresh.header("snap-device-architecture"), "amd64")
        self.assertEqual(download.header("x-ubuntu-series"), "16")
        self.assertEqual(download.header("accept"), "")
        self.assertIsNone(download.header("range"))
        self.assertEqual(cdn.header("referer"), self.store.downloadURL("hello", 10))
        self.assertFalse(cdn.hasHeader("authorization"))
        self.assertFalse(cdn.hasHeader("x-device-authorization"))
        self.assertEqual(self.store.requests[3].query, "max-format=0")
        self.assertEqual(self.store.requests[4].query, "max-format=5")

    async def test_snapDownloadResumes(self):
        """
        After a cut transfer, snap asks the API download URL again with
        C{Range: bytes=<received>-}, the range survives the redirect, and
        the CDN's 206 completes the exact file.
        """
        self.store.faults.failDownload("hello", 12, "short", offset=70_000)
        out, err, code, target = await self.snapDownload("--edge")
        self.assertEqual(code, 1, err)
        self.assertIn(b"failed signature verification", err)
        with open(os.path.join(target, "hello_12.snap"), "rb") as f:
            self.assertEqual(f.read(), self.store.blobBytes("hello", 12))
        downloads = self.store.requestsTo("GET", f"/api/v1/snaps/download/{self.helloId}_12")
        self.assertEqual([r.header("range") for r in downloads], [None, "bytes=70000-"])
        first, second = self.store.cdnDownloads("hello", 12)
        self.assertEqual((first.status, first.bodyBytesSent), (None, 70_000))
        self.assertEqual(second.header("range"), "bytes=70000-")
        self.assertEqual((second.status, second.bodyBytesSent), (206, 80_000))
        self.assertEqual(self.store.cdnBytesSent, 150_000)
