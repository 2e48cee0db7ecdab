"""
Tests for L{snapstore.http.client}: the upstream HTTP/1.1 client, its
framing, failures, flow control and pool (on memory transports and a
clock), and through the real direct agent on loopback, plain and TLS.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.portforward import ProxyFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web._newclient import (
    ParseError, RequestNotSent, ResponseDone, ResponseFailed, ResponseNeverReceived,
)
from twisted.web.client import HTTPConnectionPool, readBody
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from snapstore.http.client import (
    IDLE, MAX_HEAD, ClientConnection, ConnectionPool, SentRequest, encodeRequest,
)
from snapstore.store.upstream import describeFailure, isCancellation

KEY = (b"http", b"origin.test", 80)


class _Endpoint:
    """
    Connects every protocol to a new L{StringTransport}, remembered in
    C{transports}.
    """

    def __init__(self) -> None:
        self.transports: list[StringTransport] = []
        self.protocols: list[ClientConnection] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        transport.aborted = False  # type: ignore[attr-defined]

        def abort() -> None:
            transport.aborted = True  # type: ignore[attr-defined]
            transport.loseConnection()

        transport.abortConnection = abort  # type: ignore[method-assign]
        protocol.makeConnection(transport)
        self.transports.append(transport)
        self.protocols.append(protocol)
        return succeed(protocol)


class _Body(Protocol):
    """
    Collects a body and how it ended.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.reason: Optional[Failure] = None

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.reason = reason


class ClientTestsMixin:
    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = ConnectionPool(self.clock)
        self.endpoint = _Endpoint()

    def send(self, method: bytes = b"GET", body: Optional[bytes] = None,
             headers: Optional[Headers] = None) -> Deferred[Any]:
        headers = headers if headers is not None else Headers({b"x-one": [b"1"]})
        data = encodeRequest(method, b"/path?q=1", b"origin.test", headers, body)
        sent = SentRequest(method, b"http://origin.test/path?q=1", headers)
        return self.pool.request(KEY, self.endpoint, method, data, sent,
                                 body is None and method == b"GET")

    def answer(self, data: bytes, index: int = -1) -> None:
        self.endpoint.protocols[index].dataReceived(data)

    def lose(self, index: int = -1, reason: Any = ConnectionDone) -> None:
        self.endpoint.protocols[index].connectionLost(Failure(reason()))

    def response(self, answer: bytes, method: bytes = b"GET") -> Any:
        asked = self.send(method)
        self.answer(answer)
        return self.successResultOf(asked)  # type: ignore[attr-defined]

    def body(self, response: Any) -> _Body:
        body = _Body()
        response.deliverBody(body)
        return body


class FramingTests(ClientTestsMixin, SynchronousTestCase):
    """
    Requests go out in one write; answers are framed by length, chunks or
    the connection's end; some have no body.
    """

    def test_requestInOneWrite(self) -> None:
        """
        The head (C{Host} first, C{Content-Length} of the body, the given
        fields) and the body leave in one write.
        """
        self.send(b"POST", b'{"a": 1}')
        transport = self.endpoint.transports[0]
        self.assertEqual(transport.value(),
                         b"POST /path?q=1 HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 8\r\n"
                         b"X-One: 1\r\n\r\n{\"a\": 1}")
        self.assertIn(b"\r\nContent-Length: 0\r\n",
                      encodeRequest(b"POST", b"/", b"h", Headers(), None))

    def test_length(self) -> None:
        """
        A body of C{Content-Length} bytes arriving in pieces; the
        connection's own fields are left out of the answer's headers, the
        others keep Twisted's capitalisation.
        """
        response = self.response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n"
                                 b"x-cache: hit\r\nConnection: keep-alive\r\n\r\n01234")
        self.assertEqual((response.code, response.phrase, response.length), (200, b"OK", 10))
        self.assertEqual(list(response.headers.getAllRawHeaders()), [(b"X-Cache", [b"hit"])])
        body = self.body(response)
        self.answer(b"56789")
        self.assertEqual(b"".join(body.data), b"0123456789")
        assert body.reason is not None
        body.reason.trap(ResponseDone)
        self.assertEqual(self.endpoint.protocols[0].state, IDLE)
        self.assertEqual(self.pool.idleCount(KEY), 1)

    def test_wholeBodyWithHead(self) -> None:
        """
        An answer that arrives whole is handed over whole: the connection
        is back in the pool when the request fires, and the body is given
        at once.
        """
        asked = self.send()
        seen = []
        asked.addCallback(lambda response: seen.append(self.pool.idleCount(KEY)) or response)
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        body = self.body(self.successResultOf(asked))
        self.assertEqual((seen, body.data), ([1], [b"ok"]))
        assert body.reason is not None
        body.reason.trap(ResponseDone)

    def test_chunked(self) -> None:
        """
        Chunked bodies are decoded, extensions and trailers dropped.
        """
        response = self.response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"3;x=y\r\nabc\r\n")
        body = self.body(response)
        self.answer(b"2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n")
        self.assertEqual(b"".join(body.data), b"abcde")
        assert body.reason is not None
        body.reason.trap(ResponseDone)
        self.assertEqual(self.pool.idleCount(KEY), 1)

    def test_brokenChunks(self) -> None:
        """
        A malformed chunk size fails the body and closes the connection.
        """
        response = self.response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        body = self.body(response)
        self.answer(b"zz\r\n")
        assert body.reason is not None
        body.reason.trap(ResponseFailed)
        self.assertTrue(self.endpoint.transports[0].disconnecting)

    def test_untilClose(self) -> None:
        """
        Without a length, the body runs until the connection closes, which
        the body's protocol hears as C{PotentialDataLoss}; the connection
        is not reused.
        """
        response = self.response(b"HTTP/1.1 200 OK\r\n\r\nsome")
        body = self.body(response)
        self.answer(b" more")
        self.lose()
        self.assertEqual(b"".join(body.data), b"some more")
        assert body.reason is not None
        body.reason.trap(PotentialDataLoss)
        self.assertEqual(self.pool.idleCount(KEY), 0)

    def test_noBody(self) -> None:
        """
        Answers to C{HEAD} (whose C{Content-Length} is the answer's own
        field), C{204} and C{304} have no body, and the connection is
        reused after each.
        """
        response = self.response(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", b"HEAD")
        self.assertEqual((response.length, response.headers.getRawHeaders(b"content-length")),
                         (0, [b"50"]))
        for code in (b"204", b"304"):
            response = self.response(b"HTTP/1.1 " + code + b" Nothing\r\n\r\n")
            body = self.body(response)
            self.assertEqual(body.data, [])
            assert body.reason is not None
            body.reason.trap(ResponseDone)
        self.assertEqual((len(self.endpoint.protocols), self.pool.idleCount(KEY)), (1, 1))

    def test_interim(self) -> None:
        """
        A C{1xx} answer is skipped: the request fires with the final one.
        """
        response = self.response(b"HTTP/1.1 100 Continue\r\n\r\n"
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
        self.assertEqual(response.code, 200)

    def test_bareLineFeeds(self) -> None:
        """
        Heads whose lines end in bare LF, with a folded line, are read as
        Twisted's client reads them.
        """
        response = self.response(b"HTTP/1.1 200 OK\nX-A: 1\n  2\nContent-Length: 0\n\n")
        self.assertEqual(response.headers.getRawHeaders(b"x-a"), [b"1  2"])
        # The first empty line ends the head, even if CRLFCRLF comes later.
        response = self.response(b"HTTP/1.1 200 OK\nContent-Length: 6\n\nab\r\n\r\n")
        body = self.body(response)
        self.assertEqual((response.headers.getRawHeaders(b"content-length"), body.data),
                         (None, [b"ab\r\n\r\n"]))

    def test_closeEndsReuse(self) -> None:
        """
        C{Connection: close}, and an HTTP/1.0 answer without keep-alive,
        end the connection after the answer.
        """
        for head in (b"HTTP/1.1 200 OK\r\nConnection: Close\r\n",
                     b"HTTP/1.0 200 OK\r\n"):
            response = self.response(head + b"Content-Length: 1\r\n\r\nx")
            self.body(response)
            self.assertTrue(self.endpoint.transports[-1].disconnecting)
        self.assertEqual(len(self.endpoint.protocols), 2)
        response = self.response(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                                 b"Content-Length: 1\r\n\r\nx")
        self.assertFalse(self.endpoint.transports[-1].disconnecting)


class FailureTests(ClientTestsMixin, SynchronousTestCase):
    """
    What fails, fails with Twisted's client's errors, which the upstream
    client maps to the store errors.
    """

    def failure(self, answer: bytes) -> Failure:
        asked = self.send()
        self.answer(answer)
        return self.failureResultOf(asked, ResponseFailed)

    def test_malformedStatus(self) -> None:
        """
        A status line that is not HTTP fails the request with a
        L{ParseError} inside L{ResponseFailed} (upstream-bad-response),
        and closes the connection.
        """
        for line in (b"SSH-2.0-x", b"HTTP/1.1 abc OK", b"HTTPS/1.1 200 OK"):
            failure = self.failure(line + b"\r\n\r\n")
            self.assertTrue(failure.value.reasons[0].check(ParseError))
            self.assertEqual(describeFailure(failure, "GET /", 10).code, "upstream-bad-response")
            self.assertTrue(self.endpoint.transports[-1].disconnecting)

    def test_badFields(self) -> None:
        """
        A header line without a colon, an invalid name, conflicting
        lengths and unknown transfer codings fail the request.
        """
        for fields in (b"nocolon", b"Bad Name: 1", b"Content-Length: 1, 2",
                       b"Content-Length: -1", b"Transfer-Encoding: gzip"):
            self.failure(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n\r\n")

    def test_oversizedHead(self) -> None:
        """
        A head longer than L{MAX_HEAD}, whole or still arriving, fails the
        request.
        """
        field = b"X-Big: " + b"a" * MAX_HEAD + b"\r\n"
        self.failure(b"HTTP/1.1 200 OK\r\n" + field + b"\r\n")
        asked = self.send()
        self.answer(b"HTTP/1.1 200 OK\r\n" + field)
        self.failureResultOf(asked, ResponseFailed)

    def test_lostBeforeAnswer(self) -> None:
        """
        A connection lost before any byte of the answer fails the request
        with L{ResponseNeverReceived}; after part of the head, with
        L{ResponseFailed}.
        """
        asked = self.send(b"POST", b"{}")
        self.lose(reason=ConnectionLost)
        failure = self.failureResultOf(asked, ResponseNeverReceived)
        self.assertTrue(failure.value.reasons[0].check(ConnectionLost))
        asked = self.send()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-")
        self.lose()
        failure = self.failureResultOf(asked, ResponseFailed)
        self.assertNotIsInstance(failure.value, ResponseNeverReceived)

    def test_lostMidBody(self) -> None:
        """
        A connection lost before the whole length arrived fails the body
        with L{ResponseFailed}.
        """
        response = self.response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01")
        body = self.body(response)
        self.lose()
        assert body.reason is not None
        body.reason.trap(ResponseFailed)
        self.assertEqual(body.data, [b"01"])

    def test_cancelled(self) -> None:
        """
        Cancelling the request aborts the connection; the failure is a
        cancellation as the upstream client recognises it.
        """
        asked = self.send()
        asked.cancel()
        failure = self.failureResultOf(asked, ResponseNeverReceived)
        self.assertTrue(isCancellation(failure))
        self.assertTrue(self.endpoint.transports[0].aborted)  # type: ignore[attr-defined]
        self.lose()
        self.assertEqual(self.pool.idleCount(KEY), 0)

    def test_stopBody(self) -> None:
        """
        A body's protocol that stops producing closes the connection,
        which is never reused; once the body ended, stopping does
        nothing to the connection (it may carry another request).
        """
        response = self.response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01")
        body = self.body(response)
        body.transport.stopProducing()
        self.assertEqual(self.endpoint.transports[0].producerState, "stopped")
        self.lose()
        assert body.reason is not None
        body.reason.trap(ResponseFailed)
        response = self.response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        body = self.body(response)
        body.transport.stopProducing()
        self.assertEqual(self.endpoint.transports[1].producerState, "producing")
        self.assertEqual(self.pool.idleCount(KEY), 1)

    def test_busy(self) -> None:
        """
        A connection carrying a request refuses another.
        """
        self.send()
        refused = self.endpoint.protocols[0].request(b"GET", b"", SentRequest(b"GET", b"", Headers()))
        self.failureResultOf(refused, RequestNotSent)

    def test_talkingOutOfTurn(self) -> None:
        """
        An idle connection that receives bytes is closed, not reused.
        """
        self.response(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.answer(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        self.assertTrue(self.endpoint.transports[0].disconnecting)
        self.lose()
        self.assertEqual(self.pool.idleCount(KEY), 0)


class FlowTests(ClientTestsMixin, SynchronousTestCase):
    """
    The body's transport pauses and resumes the connection.
    """

    def test_heldUntilDelivered(self) -> None:
        """
        The connection is paused between the head and the body's protocol,
        then resumed; the protocol's own pause is not undone by that.
        """
        response = self.response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n0")
        transport = self.endpoint.transports[0]
        self.assertEqual(transport.producerState, "paused")

        class Pausing(_Body):
            def connectionMade(self) -> None:
                self.transport.pauseProducing()

        body = Pausing()
        response.deliverBody(body)
        self.assertEqual((transport.producerState, body.data), ("paused", [b"0"]))
        body.transport.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        body.transport.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        self.answer(b"123")
        # The body ended: the connection reads again, for the pool.
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(b"".join(body.data), b"0123")


    def test_notHeldWhenDeliveredAtOnce(self) -> None:
        """
        A body's protocol given as the request fires (as the upstream
        client's callers do) costs no pause and resume of the connection.
        """
        asked = self.send()
        transport = self.endpoint.transports[0]
        pauses = []
        transport.pauseProducing = lambda: pauses.append(1)  # type: ignore[method-assign]
        body = _Body()
        asked.addCallback(lambda response: response.deliverBody(body))
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n01")
        self.answer(b"23")
        self.assertEqual((pauses, b"".join(body.data)), ([], b"0123"))


class PoolTests(ClientTestsMixin, SynchronousTestCase):
    """
    Idle connections are reused, time out, and are retried once when a
    reused one turned out closed.
    """

    def test_reuse(self) -> None:
        """
        Requests one after another share one connection.
        """
        for _ in range(3):
            self.body(self.response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        self.assertEqual((self.pool.opened, self.endpoint.protocols[0].reused), (1, 3))

    def test_idleTimeout(self) -> None:
        """
        A connection idle for the timeout is closed; one used meanwhile is
        kept until it has been idle that long.
        """
        self.response(b"HTTP/1.1 204 No Content\r\n\r\n")
        first = self.endpoint.transports[0]
        self.clock.advance(59)
        self.assertFalse(first.disconnecting)
        self.response(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.clock.advance(59)
        self.assertFalse(first.disconnecting)
        self.clock.advance(1)
        self.assertTrue(first.disconnecting)
        self.lose()
        self.assertEqual(self.pool.idleCount(KEY), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_maximum(self) -> None:
        """
        Past C{maxPerKey} idle connections, the oldest is closed.
        """
        self.pool.maxPerKey = 1
        asked = [self.send(), self.send()]
        for index in (0, 1):
            self.answer(b"HTTP/1.1 204 No Content\r\n\r\n", index)
            self.successResultOf(asked[index])
        self.assertTrue(self.endpoint.transports[0].disconnecting)
        self.assertEqual(self.pool.idleCount(KEY), 1)

    def test_retryOnce(self) -> None:
        """
        A C{GET} on a reused connection that closed before any byte of the
        answer is sent once more on a new connection.
        """
        self.response(b"HTTP/1.1 204 No Content\r\n\r\n")
        asked = self.send()
        self.lose(0)
        self.assertEqual(len(self.endpoint.protocols), 2)
        again = self.endpoint.transports[1].value()
        self.assertTrue(again.startswith(b"GET /path?q=1 HTTP/1.1\r\n"))
        self.assertTrue(self.endpoint.transports[0].value().endswith(again))
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(self.successResultOf(asked).code, 204)

    def test_noRetry(self) -> None:
        """
        A request with a body, one on a new connection, one whose answer
        had begun, and a cancelled one are not sent again.
        """
        self.response(b"HTTP/1.1 204 No Content\r\n\r\n")
        asked = self.send(b"POST", b"{}")
        self.lose(0)
        self.failureResultOf(asked, ResponseNeverReceived)
        asked = self.send()
        self.lose()
        self.failureResultOf(asked, ResponseNeverReceived)
        self.response(b"HTTP/1.1 204 No Content\r\n\r\n")
        asked = self.send()
        self.answer(b"HTTP/1.1")
        self.lose()
        self.failureResultOf(asked, ResponseFailed)
        self.response(b"HTTP/1.1 204 No Content\r\n\r\n")
        asked = self.send()
        asked.cancel()
        self.failureResultOf(asked, ResponseNeverReceived)
        self.assertEqual(len(self.endpoint.protocols), 4)

    def test_stopService(self) -> None:
        """
        Stopping the pool closes its idle connections, fires once they
        closed, and closes those that finish later.
        """
        self.pool.startService()
        first, asked = self.send(), self.send()
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n", 0)
        self.successResultOf(first)
        stopped = self.pool.stopService()
        self.assertNoResult(stopped)
        self.assertTrue(self.endpoint.transports[0].disconnecting)
        self.lose(0)
        self.successResultOf(stopped)
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n", 1)
        self.successResultOf(asked)
        self.assertTrue(self.endpoint.transports[1].disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LoopbackTests(TestCase):
    """
    The direct agent (L{snapstore.outbound.OriginAgent}) on this client,
    against the fake store, plain and over verified TLS.
    """

    timeout = 30

    async def setUp(self) -> None:
        from tests.fakestore import FakeStore

        self.store = FakeStore(reactor)
        self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 50_000)
        await self.store.startFor(self)

    def agent(self, upstream: str, **settings: Any) -> Any:
        from snapstore.outbound import makeAgent, makeConnections
        from tests.helpers import testSettings

        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        self.connections = makeConnections(reactor)
        self.addCleanup(self.connections.closeCachedConnections)
        return makeAgent(reactor, testSettings(self, upstream=upstream, **settings), pool,
                         self.connections)

    async def info(self, agent: Any, base: str) -> Any:
        response = await agent.request(b"GET", (base + "v2/snaps/info/hello").encode(),
                                       Headers({b"snap-device-series": [b"16"]}))
        return response.code, json.loads(await readBody(response))

    async def test_plain(self) -> None:
        """
        Calls and a blob download go through one kept-alive connection per
        origin, answered as the fake store answers.
        """
        from snapstore.outbound import OriginAgent

        base = self.store.apiURL
        agent = self.agent(base)
        self.assertIsInstance(agent, OriginAgent)
        for _ in range(3):
            code, document = await self.info(agent, base)
            self.assertEqual((code, document["name"]), (200, "hello"))
        self.assertEqual(self.connections.opened, 1)
        url = document["channel-map"][0]["download"]["url"]
        response = await agent.request(b"GET", url.encode(), Headers())
        self.assertEqual((response.code, await readBody(response)), (302, b""))
        location = response.headers.getRawHeaders(b"location")[0]
        response = await agent.request(b"GET", location, Headers())
        self.assertEqual(await readBody(response), self.store.blobBytes("hello", 10))
        self.assertEqual(self.connections.opened, 2)

    async def test_tls(self) -> None:
        """
        Over TLS the origin is verified with C{--upstream-ca}, and its
        connection kept alive; another authority's certificate is refused.
        """
        from tests.tlshelpers import TestAuthority

        authority = TestAuthority()
        tls = SSL4ServerEndpoint(reactor, 0, authority.serverOptions(), interface="127.0.0.1")
        listener = await tls.listen(ProxyFactory("127.0.0.1", self.store.apiPort))
        self.addCleanup(listener.stopListening)
        base = f"https://localhost:{listener.getHost().port}/"
        agent = self.agent(base, upstream_ca=authority.writeCA(self.mktemp()))
        for _ in range(2):
            code, document = await self.info(agent, base)
            self.assertEqual((code, document["name"]), (200, "hello"))
        self.assertEqual(self.connections.opened, 1)
        other = TestAuthority()
        agent = self.agent(base, upstream_ca=other.writeCA(self.mktemp()))
        with self.assertRaises(ResponseNeverReceived):
            await self.info(agent, base)

    async def test_cancelledCall(self) -> None:
        """
        A call cancelled while upstream stalls fails as a cancellation, and
        its connection is not reused.
        """
        base = self.store.apiURL
        agent = self.agent(base)
        await self.info(agent, base)
        asked = agent.request(b"GET", (base + "v2/snaps/info/hello").encode(), Headers())
        asked.cancel()
        with self.assertRaises(CancelledError):
            try:
                await asked
            except ResponseFailed as failed:
                self.assertTrue(isCancellation(Failure(failed)))
                raise CancelledError()
        self.assertEqual(self.connections.idleCount((b"http", b"127.0.0.1", self.store.apiPort)), 0)


class _Streaming(Protocol):
    """
    An origin that answers any request with C{size} bytes, written as its
    transport asks (a push producer), and counts what it wrote.
    """

    size = 64 << 20
    chunk = b"x" * 65536

    def connectionMade(self) -> None:
        self.written = 0
        self.paused = False
        self.factory.origins.append(self)

    def dataReceived(self, data: bytes) -> None:
        if self.written == 0 and b"\r\n\r\n" in data:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size)
            self.transport.registerProducer(self, True)
            self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.written < self.size:
            self.transport.write(self.chunk)
            self.written += len(self.chunk)
        if self.written >= self.size:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.paused = True


class FlowLoopbackTests(TestCase):
    """
    A body's reader that pauses holds the origin back, end to end on
    loopback: what a slow device does to a streamed download.
    """

    timeout = 60

    async def test_pausedReaderHoldsOriginBack(self) -> None:
        from twisted.internet.protocol import Factory
        from twisted.internet.task import deferLater

        from snapstore.outbound import makeAgent, makeConnections
        from tests.helpers import listen, testSettings

        factory = Factory.forProtocol(_Streaming)
        factory.origins = []
        port = await listen(self, factory)
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        connections = makeConnections(reactor)
        self.addCleanup(connections.closeCachedConnections)
        agent = makeAgent(reactor, testSettings(self, upstream=f"http://127.0.0.1:{port}/"),
                          pool, connections)
        response = await agent.request(b"GET", f"http://127.0.0.1:{port}/blob".encode(),
                                       Headers())

        class Counting(_Body):
            received = 0

            def dataReceived(self, data: bytes) -> None:
                self.received += len(data)

        body = Counting()
        response.deliverBody(body)
        body.transport.pauseProducing()
        for _ in range(50):
            await deferLater(reactor, 0.01, lambda: None)
        origin = factory.origins[0]
        # Socket buffers hold a few MiB at most: the rest waits for the reader.
        self.assertTrue(origin.paused)
        self.assertLess(origin.written, _Streaming.size // 2)
        held = body.received
        body.transport.resumeProducing()
        while body.reason is None:
            await deferLater(reactor, 0.01, lambda: None)
        body.reason.trap(ResponseDone)
        self.assertEqual(body.received, _Streaming.size)
        self.assertLess(held, _Streaming.size // 2)
        self.assertEqual(connections.idleCount((b"http", b"127.0.0.1", port)), 1)
