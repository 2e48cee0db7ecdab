"""
Tests for L{snapstore.store.download} and L{snapstore.store.assertions},
over real loopback sockets with the fake store from L{tests.fakestore} as
upstream.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.internet import ssl
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from snapstore.cache.blobs import BlobCache
from snapstore.cache.documents import DocumentCache
from snapstore.cache.sender import SendfileThreads
from snapstore.outbound import makePool
from snapstore.state.records import BlobRecord
from snapstore.store.assertions import AssertionsResource
from snapstore.store.download import DownloadResource, parseRange, UNSATISFIABLE
from snapstore.store.resource import NotFoundResource, StoreRoot
from snapstore.store.upstream import StoreUpstream
from tests.fakestore import FakeStore
from tests.fakestore.blobs import Blob
from tests.fakestore.recording import TrackingFactory
from tests.helpers import MemoryBlobs, garbageFactory, listen, testAgent
from tests.tlshelpers import TestAuthority

AUTH = {
    b"Authorization": b"Macaroon root=user-secret",
    b"X-Device-Authorization": b'Macaroon root="device-secret"',
    b"Snap-Device-Authorization": b'Macaroon root="device-secret-2"',
}


class Body(Protocol):
    """
    Collects a response body; L{firstBytes} fires at the first byte and
    L{done} with the outcome: C{(bytes, None)} when complete or
    C{(bytes, Failure)} when cut.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.firstBytes: Deferred[None] = Deferred()
        self.done: Deferred[tuple[bytes, Any]] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        if not self.firstBytes.called:
            self.firstBytes.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        body = b"".join(self.chunks)
        self.done.callback((body, None if reason.check(ResponseDone) else reason))


class _Collect(Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.closed.callback(b"".join(self.chunks))


class GatedOrigin(Resource):
    """
    An upstream that sends the first C{holdAt} bytes of a blob, then waits
    for L{release} before sending the rest: a transfer the test can hold
    in the middle.
    """

    isLeaf = True

    def __init__(self, data: bytes, holdAt: int) -> None:
        super().__init__()
        self.data = data
        self.holdAt = holdAt
        self.gate: Deferred[None] = Deferred()
        self.requests: list[Any] = []

    def release(self) -> None:
        self.gate.callback(None)

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % len(self.data))
        request.write(self.data[: self.holdAt])

        def rest(_: Any) -> None:
            if not request._disconnected:
                request.write(self.data[self.holdAt:])
                request.finish()

        self.gate.addCallback(rest)
        return NOT_DONE_YET


class ShortOrigin(Resource):
    """
    An upstream that answers 200 with a body that is not the blob.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html")
        return b"<html>maintenance</html>"


class DownloadTestsMixin:
    """
    A proxy download resource in front of a started fake store.
    """

    timeout = 30
    size = 300_000
    headerTimeout = 12.0
    tls = False
    sendfileThreads = True

    @inlineCallbacks
    def setUp(self) -> Any:
        self.store = yield FakeStore(reactor).startFor(self)
        self.store.addSnap("hello")
        self.store.addRevision("hello", 1, self.size)
        self.store.addRevision("hello", 2, 50_000)
        self.state = MemoryBlobs()
        self.name = self.recordRevision("hello", 1)
        self.digest = self.store.blobDigest("hello", 1)
        self.data = self.store.blobBytes("hello", 1)
        self.cacheDir = self.mktemp()
        self.cache = BlobCache(reactor, self.cacheDir, 10 << 20)
        pool = makePool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        self.upstream = StoreUpstream(Agent(reactor, pool=pool), self.store.apiURL, reactor, 10)
        threads = None
        if self.sendfileThreads:
            threads = SendfileThreads(reactor, maxThreads=2, minimum=0)
            self.addCleanup(threads.stop)
        self.threads = threads
        self.resource = DownloadResource(reactor, self.upstream, self.state, self.cache,
                                         headerTimeout=self.headerTimeout,
                                         sendfileThreads=threads)
        self.assertionsClock = Clock()
        self.assertions = AssertionsResource(self.assertionsClock, self.upstream,
                                             DocumentCache(self.assertionsClock),
                                             NotFoundResource())
        root = StoreRoot(NotFoundResource(), self.resource, NotFoundResource(),
                         assertions=self.assertions)
        site = Site(root)
        site.displayTracebacks = False
        factory = TrackingFactory(site)
        self.addCleanup(factory.closeAll)
        if self.tls:
            self.authority = TestAuthority(names=("localhost",))
            listening = reactor.listenSSL(0, factory, self.authority.serverOptions(),
                                          interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
            port = listening.getHost().port
            self.base = f"https://localhost:{port}/"
            trust = ssl.Certificate.loadPEM(self.authority.caPEM)
            pool = HTTPConnectionPool(reactor, persistent=False)
            self.agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool)
        else:
            # The Site itself, not wrapped: sendfile needs the TCP transport.
            port = yield listen(self, site)
            self.base = f"http://127.0.0.1:{port}/"
            self.agent = testAgent(self)

    def recordRevision(self, snap: str, revision: int, url: str | None = None) -> str:
        snapId = self.store.snapId(snap)
        name = f"{snapId}_{revision}.snap"
        self.state.recordBlob(BlobRecord(
            name=name,
            sha3_384=self.store.blobDigest(snap, revision),
            size=self.store.blobSize(snap, revision),
            url=url or self.store.downloadURL(snap, revision),
            snapId=snapId, snapName=snap, revision=revision,
            architectures=("amd64",)))
        return name

    def recordOrigin(self, name: str, data: bytes, url: str) -> None:
        import hashlib

        self.state.blobs[name] = BlobRecord(
            name=name, sha3_384=hashlib.sha3_384(data).hexdigest(), size=len(data), url=url)

    @inlineCallbacks
    def request(self, name: str | None = None, headers: dict[bytes, bytes] | None = None,
                method: bytes = b"GET", path: str | None = None) -> Any:
        """
        Send a request to the proxy; fire with C{(response, Body)} once the
        headers arrived (the body keeps coming into the L{Body}).
        """
        if path is None:
            path = "api/v1/snaps/download/" + (name or self.name)
        sent = Headers()
        for key, value in (headers or {}).items():
            sent.setRawHeaders(key, [value])
        response = yield self.agent.request(method, (self.base + path).encode(), sent)
        body = Body()
        response.deliverBody(body)
        return response, body

    @inlineCallbacks
    def fetch(self, name: str | None = None, **kwargs: Any) -> Any:
        """
        Like L{request}, but fire with C{(response, bytes, failure)} once
        the body ended.
        """
        response, body = yield self.request(name, **kwargs)
        data, failure = yield body.done
        return response, data, failure

    @inlineCallbacks
    def fillsDone(self) -> Any:
        """
        Wait until no fill is in progress (a cut client's fill may outlive
        its response by a few reactor turns).
        """
        yield self.cache.whenIdle()

    def header(self, response: Any, name: bytes) -> Any:
        values = response.headers.getRawHeaders(name)
        return values[0] if values else None

    def cdnGets(self) -> int:
        return len(self.store.cdnDownloads("hello", 1))

    def tmpFiles(self) -> list[str]:
        return os.listdir(os.path.join(self.cacheDir, "tmp"))


class DownloadTests(DownloadTestsMixin, TestCase):
    """
    Misses, hits and the upstream request of L{DownloadResource}.
    """

    @inlineCallbacks
    def test_missThenHit(self) -> None:
        """
        The first download is fetched upstream and cached (C{X-Cache:
        MISS}); the second is served from the cache (C{X-Cache: HIT})
        without another upstream request.
        """
        response, data, failure = yield self.fetch()
        self.assertIsNone(failure)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, b"x-cache"), b"MISS")
        self.assertEqual(response.length, self.size)
        self.assertEqual(data, self.data)
        yield self.fillsDone()
        self.assertTrue(self.cache.contains(self.digest))
        threadedBefore = self.threads.sends
        response, data, failure = yield self.fetch()
        self.assertIsNone(failure)
        self.assertEqual(self.header(response, b"x-cache"), b"HIT")
        self.assertEqual(self.header(response, b"content-type"), b"application/octet-stream")
        self.assertIsNone(self.header(response, b"content-encoding"))
        self.assertEqual(data, self.data)
        self.assertEqual(self.cdnGets(), 1)
        # The hit went out through a sending thread.
        self.assertEqual(self.threads.sends, threadedBefore + 1)

    @inlineCallbacks
    def test_credentialsNotSentToCDN(self) -> None:
        """
        The device's credentials reach the store's API host, which
        redirects to the CDN; the CDN gets none of them.
        """
        response, data, failure = yield self.fetch(headers=dict(AUTH))
        self.assertEqual(data, self.data)
        [api] = self.store.requestsTo("GET", "/api/v1/snaps/download/", "api")
        self.assertEqual(api.header("x-device-authorization"), 'Macaroon root="device-secret"')
        [cdn] = self.store.cdnDownloads("hello", 1)
        for name in AUTH:
            self.assertFalse(cdn.hasHeader(name.decode()), name)
        self.assertFalse(cdn.hasHeader("range"))

    @inlineCallbacks
    def test_noContentEncoding(self) -> None:
        """
        A device asking for gzip gets the blob as it is, and upstream is
        not asked for an encoding either.
        """
        response, data, failure = yield self.fetch(headers={b"Accept-Encoding": b"gzip"})
        self.assertIsNone(self.header(response, b"content-encoding"))
        self.assertEqual(data, self.data)
        [cdn] = self.store.cdnDownloads("hello", 1)
        self.assertFalse(cdn.hasHeader("accept-encoding"))

    @inlineCallbacks
    def test_concurrentMissesOneTransfer(self) -> None:
        """
        Five devices asking for the same uncached blob at once cause one
        upstream transfer; all five get the whole blob, as misses.
        """
        # Hold the CDN's answer a little, so that all five requests are
        # surely in before the blob could be cached.
        self.store.faults.failDownload("hello", 1, "stall", seconds=0.3)
        results = yield _gather([self.fetch() for _ in range(5)])
        for response, data, failure in results:
            self.assertIsNone(failure)
            self.assertEqual(self.header(response, b"x-cache"), b"MISS")
            self.assertEqual(data, self.data)
        self.assertEqual(self.cdnGets(), 1)
        self.assertEqual(self.store.count("GET", "/api/v1/snaps/download/", "api"), 1)
        self.assertEqual(self.store.cdnBytesSent, self.size)

    @inlineCallbacks
    def test_unknownNamePassedThrough(self) -> None:
        """
        A download name the state store does not know is fetched from
        upstream's download path and streamed, but not cached.
        """
        name = f"{self.store.snapId('hello')}_2.snap"
        response, data, failure = yield self.fetch(name)
        self.assertIsNone(failure)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, b"x-cache"), b"MISS")
        self.assertEqual(data, self.store.blobBytes("hello", 2))
        self.assertEqual(self.cache.entries(), [])
        self.assertEqual(len(self.store.cdnDownloads("hello", 2)), 1)

    @inlineCallbacks
    def test_head(self) -> None:
        """
        C{HEAD} answers from the metadata on a miss, without fetching, and
        from the cache on a hit.
        """
        answer = yield self.rawHead()
        self.assertTrue(answer.startswith(b"HTTP/1.0 200 "), answer)
        self.assertIn(b"\r\nContent-Length: %d\r\n" % self.size, answer)
        self.assertIn(b"\r\nX-Cache: MISS\r\n", answer)
        self.assertTrue(answer.endswith(b"\r\n\r\n"))
        self.assertEqual(self.cdnGets(), 0)
        yield self.fetch()
        yield self.fillsDone()
        answer = yield self.rawHead()
        self.assertIn(b"\r\nContent-Length: %d\r\n" % self.size, answer)
        self.assertIn(b"\r\nX-Cache: HIT\r\n", answer)
        self.assertTrue(answer.endswith(b"\r\n\r\n"))

    @inlineCallbacks
    def rawHead(self) -> Any:
        """
        The whole answer to a C{HEAD} over a plain socket (an HTTP client
        hides C{Content-Length} of a HEAD answer).
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        collect = _Collect()
        port = int(self.base.rsplit(":", 1)[1].strip("/"))
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), collect)
        collect.transport.write(b"HEAD /api/v1/snaps/download/%s HTTP/1.0\r\n\r\n"
                                % self.name.encode())
        answer = yield collect.closed
        return answer

    @inlineCallbacks
    def test_otherMethodsRefused(self) -> None:
        """
        Only GET and HEAD are downloads.
        """
        response, data, _ = yield self.fetch(method=b"DELETE")
        self.assertEqual(response.code, 405)
        self.assertIn("error-list", json.loads(data))


class OfflineDownloadTests(DownloadTestsMixin, TestCase):
    """
    An offline proxy refuses what it cannot serve with a 404 (final), never
    a 5xx that snapd would retry for a minute and a half.
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        yield DownloadTestsMixin.setUp(self)
        self.resource.offline = True

    @inlineCallbacks
    def test_unknownAndUncached(self):
        """
        A name nobody described, and a known blob that is not cached, get a
        store-format 404 and no upstream traffic.
        """
        for name in ("S" * 32 + "_9.snap", self.name):
            response, data, failure = yield self.fetch(name)
            self.assertEqual(response.code, 404, name)
            error = json.loads(data)["error-list"][0]
            self.assertEqual(error["code"], "not-found")
            self.assertIn("import a bundle", error["message"])
        self.assertEqual(self.store.requests, [])


class ReactorSendfileTests(DownloadTestsMixin, TestCase):
    """
    Without sending threads (or with all of them busy), hits are sent by
    the reactor with C{sendfile}.
    """

    sendfileThreads = False

    @inlineCallbacks
    def test_hitsAndRanges(self) -> None:
        yield self.fetch()
        yield self.fillsDone()
        for _ in range(2):
            response, data, failure = yield self.fetch()
            self.assertIsNone(failure)
            self.assertEqual(self.header(response, b"x-cache"), b"HIT")
            self.assertEqual(data, self.data)
        response, data, _ = yield self.fetch(headers={b"Range": b"bytes=77-7777"})
        self.assertEqual(data, self.data[77:7778])


class TLSDownloadTests(DownloadTestsMixin, TestCase):
    """
    Over TLS, where C{sendfile} would write clear text into the encrypted
    stream, hits and fills are sent through ordinary writes.
    """

    tls = True

    @inlineCallbacks
    def test_missHitAndRangeOverTLS(self) -> None:
        response, data, failure = yield self.fetch()
        self.assertIsNone(failure)
        self.assertEqual(self.header(response, b"x-cache"), b"MISS")
        self.assertEqual(data, self.data)
        yield self.fillsDone()
        response, data, failure = yield self.fetch()
        self.assertIsNone(failure)
        self.assertEqual(self.header(response, b"x-cache"), b"HIT")
        self.assertEqual(data, self.data)
        response, data, failure = yield self.fetch(headers={b"Range": b"bytes=1000-"})
        self.assertEqual(response.code, 206)
        self.assertEqual(data, self.data[1000:])


class StreamingTests(DownloadTestsMixin, TestCase):
    """
    Bytes reach devices while the upstream transfer is still going.
    """

    holdAt = 200_000

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        blob = Blob("gated", 1, 400_000)
        self.gatedData = blob.read()
        self.origin = GatedOrigin(self.gatedData, self.holdAt)
        port = yield listen(self, TrackingFactory(Site(self.origin)))
        self.gatedName = "gated_1.snap"
        self.recordOrigin(self.gatedName, self.gatedData, f"http://127.0.0.1:{port}/blob")
        self.addCleanup(self._release)

    def _release(self) -> None:
        if not self.origin.gate.called:
            self.origin.release()

    @inlineCallbacks
    def test_streamsBeforeUpstreamEnds(self) -> None:
        """
        A device gets the first bytes while upstream holds back the second
        half of the blob (if the proxy waited for the whole blob this test
        would time out), and then all of it.
        """
        response, body = yield self.request(self.gatedName)
        self.assertEqual(self.header(response, b"x-cache"), b"MISS")
        yield body.firstBytes
        self.assertFalse(self.origin.gate.called)
        self.origin.release()
        data, failure = yield body.done
        self.assertIsNone(failure)
        self.assertEqual(data, self.gatedData)

    @inlineCallbacks
    def test_concurrentDevicesStreamedTogether(self) -> None:
        """
        Several devices joining one fill all get bytes before the upstream
        transfer ends, from one upstream request.
        """
        started = []
        for _ in range(4):
            started.append((yield self.request(self.gatedName)))
        for response, body in started:
            yield body.firstBytes
        self.assertEqual(len(self.origin.requests), 1)
        self.origin.release()
        for response, body in started:
            data, failure = yield body.done
            self.assertIsNone(failure)
            self.assertEqual(data, self.gatedData)

    @inlineCallbacks
    def test_rangeDuringFill(self) -> None:
        """
        A range request while the fill is in progress gets 206 with the
        right C{Content-Range}, and bytes before the fill ends; a range past
        what has arrived gets its bytes once they arrive.
        """
        response, body = yield self.request(self.gatedName,
                                            headers={b"Range": b"bytes=1000-"})
        self.assertEqual(response.code, 206)
        self.assertEqual(self.header(response, b"content-range"), b"bytes 1000-399999/400000")
        self.assertEqual(response.length, 399000)
        yield body.firstBytes
        later, laterBody = yield self.request(self.gatedName,
                                              headers={b"Range": b"bytes=300000-300099"})
        self.assertEqual(later.code, 206)
        self.assertEqual(self.header(later, b"content-range"), b"bytes 300000-300099/400000")
        self.assertFalse(self.origin.gate.called)
        self.origin.release()
        data, failure = yield body.done
        self.assertIsNone(failure)
        self.assertEqual(data, self.gatedData[1000:])
        data, failure = yield laterBody.done
        self.assertEqual(data, self.gatedData[300000:300100])
        self.assertEqual(len(self.origin.requests), 1)


class RangeTests(DownloadTestsMixin, TestCase):
    """
    Ranges on cache hits.
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        yield self.fetch()
        yield self.fillsDone()

    @inlineCallbacks
    def test_openRange(self) -> None:
        """
        C{bytes=N-} (what snapd sends to resume) gets 206 and the tail.
        """
        response, data, failure = yield self.fetch(headers={b"Range": b"bytes=123456-"})
        self.assertEqual(response.code, 206)
        self.assertEqual(self.header(response, b"x-cache"), b"HIT")
        self.assertEqual(self.header(response, b"content-range"),
                         b"bytes 123456-%d/%d" % (self.size - 1, self.size))
        self.assertEqual(data, self.data[123456:])

    @inlineCallbacks
    def test_closedRange(self) -> None:
        """
        C{bytes=A-B} gets exactly those bytes, B included.
        """
        response, data, _ = yield self.fetch(headers={b"Range": b"bytes=10-19"})
        self.assertEqual(response.code, 206)
        self.assertEqual(self.header(response, b"content-range"), b"bytes 10-19/%d" % self.size)
        self.assertEqual(data, self.data[10:20])

    @inlineCallbacks
    def test_unsatisfiable(self) -> None:
        """
        A range starting at or past the end gets 416 with the size.
        """
        response, data, _ = yield self.fetch(headers={b"Range": b"bytes=%d-" % self.size})
        self.assertEqual(response.code, 416)
        self.assertEqual(self.header(response, b"content-range"), b"bytes */%d" % self.size)
        self.assertEqual(json.loads(data)["error-list"][0]["code"], "range-not-satisfiable")

    @inlineCallbacks
    def test_unsatisfiableOnMiss(self) -> None:
        """
        416 does not need the blob cached (nor fetch it).
        """
        self.cache.remove(self.digest)
        response, _, _ = yield self.fetch(headers={b"Range": b"bytes=%d-" % (self.size + 5)})
        self.assertEqual(response.code, 416)
        self.assertEqual(self.cdnGets(), 1)

    def test_parseRange(self) -> None:
        """
        L{parseRange} reads the forms snapd and curl send.
        """
        self.assertEqual(parseRange(b"bytes=0-", 10), (0, 10))
        self.assertEqual(parseRange(b"bytes=3-5", 10), (3, 6))
        self.assertEqual(parseRange(b"bytes=3-500", 10), (3, 10))
        self.assertEqual(parseRange(b"bytes=-4", 10), (6, 10))
        self.assertEqual(parseRange(b"bytes=10-", 10), UNSATISFIABLE)
        self.assertIsNone(parseRange(b"bytes=5-3", 10))
        self.assertIsNone(parseRange(b"bytes=0-1,5-6", 10))
        self.assertIsNone(parseRange(None, 10))


class FailedFillTests(DownloadTestsMixin, TestCase):
    """
    A fill that goes wrong is never served: its devices are cut short, and
    the next request fetches again.
    """

    @inlineCallbacks
    def assertCutAndRefetched(self, kind: str, offset: int) -> Any:
        self.store.faults.failDownload("hello", 1, kind, offset=offset)
        response, data, failure = yield self.fetch()
        self.assertEqual(response.code, 200)
        self.assertIsNotNone(failure)
        self.assertLess(len(data), self.size)
        self.assertEqual(data, self.data[: len(data)] if kind != "corrupt" else data)
        yield self.fillsDone()
        self.assertFalse(self.cache.contains(self.digest))
        self.assertEqual(self.tmpFiles(), [])
        self.assertEqual(self.cache.usedSize, 0)
        response, data, failure = yield self.fetch()
        self.assertIsNone(failure)
        self.assertEqual(self.header(response, b"x-cache"), b"MISS")
        self.assertEqual(data, self.data)
        self.assertEqual(self.cdnGets(), 2)
        yield self.fillsDone()
        self.assertTrue(self.cache.contains(self.digest))

    def test_resetMidFill(self) -> None:
        """
        Upstream resetting the connection mid-body cuts the device short;
        nothing is cached; the next request fetches again.
        """
        return self.assertCutAndRefetched("reset", 100_000)

    def test_shortBody(self) -> None:
        """
        Upstream closing cleanly before its Content-Length is the same.
        """
        return self.assertCutAndRefetched("short", 150_000)

    def test_hashMismatch(self) -> None:
        """
        A body of the right length whose sha3-384 is wrong is not cached,
        and the device never receives its full length.
        """
        return self.assertCutAndRefetched("corrupt", 1000)

    @inlineCallbacks
    def test_rangeResumeAfterCut(self) -> None:
        """
        What snapd does after a cut, resuming with C{Range}, gets the rest.
        """
        self.store.faults.failDownload("hello", 1, "reset", offset=100_000)
        _, first, failure = yield self.fetch()
        self.assertIsNotNone(failure)
        yield self.fillsDone()
        response, rest, failure = yield self.fetch(
            headers={b"Range": b"bytes=%d-" % len(first)})
        self.assertEqual(response.code, 206)
        self.assertEqual(first + rest, self.data)


class UpstreamFailureTests(DownloadTestsMixin, TestCase):
    """
    Upstream that cannot be reached, is too slow or talks nonsense: 502 or
    504 with the store's error shape.
    """

    headerTimeout = 0.5

    @inlineCallbacks
    def assertStoreError(self, status: int, code: str) -> Any:
        response, data, _ = yield self.fetch()
        self.assertEqual(response.code, status)
        self.assertEqual(self.header(response, b"content-type"), b"application/json")
        error = json.loads(data)["error-list"][0]
        self.assertEqual(error["code"], code)
        yield self.fillsDone()
        self.assertEqual(self.cache.entries(), [])
        self.assertEqual(self.tmpFiles(), [])
        return error

    @inlineCallbacks
    def test_unreachable(self) -> None:
        """
        Upstream refusing connections gives 502, and the message says so.
        """
        self.state.blobs[self.name] = BlobRecord(
            name=self.name, sha3_384=self.digest, size=self.size,
            url="http://127.0.0.1:1/api/v1/snaps/download/x")
        error = yield self.assertStoreError(502, "upstream-unreachable")
        self.assertIn("connect", error["message"])

    @inlineCallbacks
    def test_headerTimeout(self) -> None:
        """
        A CDN that does not answer before the header timeout gives 504.
        """
        self.store.faults.failDownload("hello", 1, "stall", seconds=5)
        error = yield self.assertStoreError(504, "upstream-timeout")
        self.assertIn("did not answer", error["message"])

    @inlineCallbacks
    def test_garbage(self) -> None:
        """
        Bytes that are not HTTP give 502.
        """
        port = yield listen(self, garbageFactory())
        self.state.blobs[self.name] = BlobRecord(
            name=self.name, sha3_384=self.digest, size=self.size,
            url=f"http://127.0.0.1:{port}/x")
        yield self.assertStoreError(502, "upstream-bad-response")

    @inlineCallbacks
    def test_wrongLength(self) -> None:
        """
        A 200 whose length is not the blob's (a maintenance page) gives 502
        and nothing is cached.
        """
        port = yield listen(self, Site(ShortOrigin()))
        self.state.blobs[self.name] = BlobRecord(
            name=self.name, sha3_384=self.digest, size=self.size,
            url=f"http://127.0.0.1:{port}/x")
        error = yield self.assertStoreError(502, "upstream-bad-response")
        self.assertIn("bytes", error["message"])


class AssertionsTests(DownloadTestsMixin, TestCase):
    """
    L{AssertionsResource}: immutable assertions kept, others for a while,
    stale ones served when upstream fails, 404 not kept.
    """

    def revisionPath(self) -> str:
        digest = self.store.blob("hello", 1).digestBase64
        return f"v2/assertions/snap-revision/{digest}?max-format=1"

    def declarationPath(self) -> str:
        return f"v2/assertions/snap-declaration/16/{self.store.snapId('hello')}?max-format=5"

    @inlineCallbacks
    def test_immutableCached(self) -> None:
        """
        A C{snap-revision} is fetched once, then served from the cache with
        the same bytes and Content-Type, however old.
        """
        first, data, _ = yield self.fetch(path=self.revisionPath())
        self.assertEqual(first.code, 200)
        self.assertEqual(self.header(first, b"x-cache"), b"MISS")
        self.assertIn(b"type: snap-revision", data)
        self.assertionsClock.advance(10 ** 6)
        second, again, _ = yield self.fetch(path=self.revisionPath())
        self.assertEqual(self.header(second, b"x-cache"), b"HIT")
        self.assertEqual(again, data)
        self.assertEqual(self.header(second, b"content-type"), self.header(first, b"content-type"))
        self.assertEqual(self.store.count("GET", "/v2/assertions/", "api"), 1)

    @inlineCallbacks
    def test_mutableExpiresAndServedStale(self) -> None:
        """
        A C{snap-declaration} is kept for the TTL, fetched again after it,
        and served stale when upstream then fails.
        """
        _, data, _ = yield self.fetch(path=self.declarationPath())
        response, _, _ = yield self.fetch(path=self.declarationPath())
        self.assertEqual(self.header(response, b"x-cache"), b"HIT")
        self.assertionsClock.advance(601)
        response, _, _ = yield self.fetch(path=self.declarationPath())
        self.assertEqual(self.header(response, b"x-cache"), b"MISS")
        self.assertEqual(self.store.count("GET", "/v2/assertions/", "api"), 2)
        self.assertionsClock.advance(601)
        self.store.faults.failAPI("status", pathPrefix="/v2/assertions/", code=503)
        response, stale, _ = yield self.fetch(path=self.declarationPath())
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, b"x-cache"), b"STALE")
        self.assertEqual(stale, data)

    @inlineCallbacks
    def test_notFoundNotCached(self) -> None:
        """
        A 404 passes through with its body, and is asked again next time.
        """
        path = "v2/assertions/snap-revision/" + "A" * 64
        response, data, _ = yield self.fetch(path=path)
        self.assertEqual(response.code, 404)
        self.assertIn(b"not-found", data)
        yield self.fetch(path=path)
        self.assertEqual(self.store.count("GET", "/v2/assertions/", "api"), 2)


@inlineCallbacks
def _gather(deferreds: list[Deferred[Any]]) -> Any:
    results = []
    for d in deferreds:
        results.append((yield d))
    return results
