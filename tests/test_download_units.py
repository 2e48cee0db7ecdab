"""
Unit tests of the download path (L{snapstore.store.download}): a
L{DummyRequest}, an in-memory agent, a blob cache whose blocking work runs
inline, and a L{MemoryReactorClock}; no socket, no thread, no process.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import TransportProxyProducer
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from snapstore.cache.blobs import BlobCache
from snapstore.state.records import BlobRecord
from snapstore.store.download import IDLE_TIMEOUT, MAX_REDIRECTS, DownloadResource
from snapstore.store.fillbody import READ_SIZE
from snapstore.store.upstream import StoreUpstream, UpstreamError
from snapstore.uplink.rate import Throttle, TokenBucket
from tests.helpers import MemoryBlobs
from tests.test_fillbody import _Connection
from tests.unithelpers import StoreRequest, TableAgent

UPSTREAM = "https://api.store.test/"
CDN = b"https://cdn.store.test/blobs/hello_1.snap"
DATA = bytes(range(256)) * 400


class DownloadUnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.agent = TableAgent({CDN: (200, {b"content-type": b"application/octet-stream"}, DATA)})
        self.state = MemoryBlobs()
        self.digest = hashlib.sha3_384(DATA).hexdigest()
        self.state.recordBlob(BlobRecord(name="hello_1.snap", sha3_384=self.digest,
                                         size=len(DATA), url=CDN.decode()))
        self.cache = BlobCache(self.reactor, self.mktemp(), 10 << 20,
                               inThread=maybeDeferred, hashInThread=False)
        self.download = DownloadResource(
            self.reactor, StoreUpstream(self.agent, UPSTREAM, self.reactor, 8.0), self.state,
            self.cache, sendfile=False)

    def get(self, name: bytes, method: bytes = b"GET") -> StoreRequest:
        request = StoreRequest(method, b"/api/v1/snaps/download/" + name)
        request.postpath = [name]
        self.assertIs(self.download.render(request), NOT_DONE_YET)
        for _ in range(100):
            if request.finished:
                break
            self.reactor.advance(0)
        return request

    def test_missFillsThenHits(self) -> None:
        """
        The first download is fetched from upstream (one request) and
        stored under its digest; the second is served from the cache
        without asking upstream again.
        """
        first = self.get(b"hello_1.snap")
        self.assertTrue(first.finished)
        self.assertEqual((first.responseCode, first.body()), (200, DATA))
        self.assertEqual(first.responseHeaders.getRawHeaders(b"x-cache"), [b"MISS"])
        self.assertTrue(self.cache.contains(self.digest))
        second = self.get(b"hello_1.snap")
        self.assertEqual((second.responseCode, second.body()), (200, DATA))
        self.assertEqual(second.responseHeaders.getRawHeaders(b"x-cache"), [b"HIT"])
        self.assertEqual([uri for _, uri, _ in self.agent.requests], [CDN])

    def test_methodNotAllowed(self) -> None:
        request = self.get(b"hello_1.snap", method=b"POST")
        self.assertEqual(request.responseCode, 405)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"allow"), [b"GET, HEAD"])
        self.assertEqual(request.json()["error-list"][0]["code"], "method-not-allowed")

    def test_badName(self) -> None:
        request = self.get(b"..%2Fetc")
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(self.agent.requests, [])

    def test_redirectDropsCredentials(self) -> None:
        """
        L{DownloadResource.fetch} follows a redirect to another host without
        the device's credentials.
        """
        self.agent.answers[b"https://api.store.test/x"] = (302, {b"location": CDN}, b"")
        headers = Headers({b"authorization": [b"Macaroon secret"], b"user-agent": [b"snapd"]})
        response = self.successResultOf(self.download.fetch(b"GET", b"https://api.store.test/x",
                                                            headers))
        self.assertEqual(response.code, 200)
        [(_, first, firstHeaders), (_, second, secondHeaders)] = self.agent.requests
        self.assertEqual(second, CDN)
        self.assertTrue(firstHeaders.hasHeader(b"authorization"))
        self.assertFalse(secondHeaders.hasHeader(b"authorization"))
        self.assertEqual(secondHeaders.getRawHeaders(b"user-agent"), [b"snapd"])

    def test_redirectLoop(self) -> None:
        """
        More than L{MAX_REDIRECTS} redirects fail with a 502.
        """
        self.agent.answers[b"https://api.store.test/loop"] = (
            302, {b"location": b"https://api.store.test/loop"}, b"")
        failure = self.failureResultOf(
            self.download.fetch(b"GET", b"https://api.store.test/loop", Headers()), UpstreamError)
        self.assertEqual(failure.value.status, 502)
        self.assertEqual(len(self.agent.requests), MAX_REDIRECTS + 1)

    def test_stalledUpstreamAbortsFill(self) -> None:
        """
        An upstream body that sends nothing for the idle timeout is dropped
        and its fill aborted with a reason saying so, so that the devices
        waiting on it are cut short instead of waiting forever.
        """
        fill = self.cache.beginFill(self.digest, len(DATA))
        transport = StringTransport()
        filled = self.download.fillFrom(fill, _SilentResponse(transport), "hello_1.snap")
        self.reactor.advance(IDLE_TIMEOUT - 1)
        self.assertNoResult(filled)
        self.reactor.advance(1)
        self.assertFalse(self.successResultOf(filled))
        self.assertEqual(transport.producerState, "stopped")
        self.assertEqual(fill.failure.getErrorMessage(),
                         f"upstream sent nothing for {IDLE_TIMEOUT:g}s while downloading hello_1.snap")
        self.assertFalse(self.cache.contains(self.digest))


class _SilentResponse:
    """
    An upstream answer whose body never sends a byte.
    """

    def __init__(self, transport: StringTransport) -> None:
        self.transport = transport

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)


class FillReadSizeTests(SynchronousTestCase):
    """
    L{DownloadResource.fillFrom} reads an unthrottled body from its socket
    in L{READ_SIZE} pieces, and a throttled one in the connection's own.
    """

    def fillFrom(self, throttle: Any) -> int:
        reactor = MemoryReactorClock()
        cache = BlobCache(reactor, self.mktemp(), 1 << 20, inThread=maybeDeferred,
                          hashInThread=False)
        download = DownloadResource(reactor, StoreUpstream(TableAgent({}), UPSTREAM, reactor, 8.0),
                                    MemoryBlobs(), cache, throttle=throttle)
        connection = _Connection(reactor=reactor)
        fill = cache.beginFill(hashlib.sha3_384(DATA).hexdigest(), len(DATA))
        download.fillFrom(fill, _SilentResponse(TransportProxyProducer(connection)), "hello")
        return connection.bufferSize

    def test_unthrottled(self) -> None:
        self.assertEqual(self.fillFrom(None), READ_SIZE)

    def test_throttled(self) -> None:
        clock = MemoryReactorClock()
        throttle = Throttle(clock, [TokenBucket(clock, 1 << 20)])
        self.assertEqual(self.fillFrom(throttle), _Connection.bufferSize)
