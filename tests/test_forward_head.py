"""
Tests for L{snapstore.http.head} and, with L{StringTransport}s, the
CONNECT path of L{snapstore.forward.channel} without sockets.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from snapstore.observe.accesslog import AccessLog
from snapstore.forward.factory import ForwardProxyFactory
from snapstore.http.head import BodyFraming, HeadError, bodyFraming, findHeadEnd, parseHead
from tests.helpers import testSettings


class HeadTests(SynchronousTestCase):
    def test_findEnd(self) -> None:
        self.assertEqual(findHeadEnd(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), 24)
        self.assertEqual(findHeadEnd(b"GET / HTTP/1.1\nA: b\n\nrest"), 21)
        self.assertEqual(findHeadEnd(b"GET / HTTP/1.1\r\nA: b\r\n"), -1)

    def test_parse(self) -> None:
        head = parseHead(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nX:  y \r\n\r\n", True)
        self.assertEqual(head.first, (b"CONNECT", b"a:443", b"HTTP/1.1"))
        self.assertEqual(head.get(b"x"), [b"y"])

    def test_rejects(self) -> None:
        for data, code in [(b"GET /\r\n\r\n", 400), (b"GET / HTTP/2.0\r\n\r\n", 505),
                           (b"GET / HTTP/1.1\r\n folded\r\n\r\n", 400),
                           (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
                           (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400)]:
            with self.assertRaises(HeadError) as caught:
                parseHead(data, True)
            self.assertEqual(caught.exception.code, code, data)

    def test_framing(self) -> None:
        def request(*headers: bytes) -> BodyFraming:
            data = b"POST / HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
            return bodyFraming(parseHead(data, True), request=True)

        self.assertTrue(request().done)
        self.assertEqual(request(b"Content-Length: 5").remaining, 5)
        self.assertTrue(request(b"Transfer-Encoding: chunked").chunked)
        for bad in [(b"Content-Length: 5", b"Transfer-Encoding: chunked"),
                    (b"Content-Length: 5", b"Content-Length: 6"), (b"Content-Length: -1",),
                    (b"Transfer-Encoding: gzip",)]:
            self.assertRaises(HeadError, request, *bad)
        response = parseHead(b"HTTP/1.1 200 OK\r\n\r\n", False)
        self.assertTrue(bodyFraming(response, False).untilClose)
        self.assertTrue(bodyFraming(response, False, b"HEAD").done)
        self.assertTrue(bodyFraming(parseHead(b"HTTP/1.1 304 NM\r\n\r\n", False), False).done)

    def test_chunkedEndFound(self) -> None:
        body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\n"
        for size in (1, 3, len(body)):
            framing = BodyFraming(chunked=True)
            used = 0
            for start in range(0, len(body) + 4, size):
                used += framing.feed((body + b"NEXT")[start:start + size])
                if framing.done:
                    break
            self.assertTrue(framing.done)
            self.assertEqual(used, len(body))

    def test_badChunk(self) -> None:
        self.assertRaises(HeadError, BodyFraming(chunked=True).feed, b"zz\r\n")
        self.assertRaises(HeadError, BodyFraming(chunked=True).feed, b"1\r\naXX\r\n")


class FakeDialer:
    """
    Hands out target protocols connected to L{StringTransport}s.
    """

    viaParent = False

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred, object]] = []

    def tunnel(self, host, port, addresses, factory):
        dialing: Deferred = Deferred()
        self.pending.append((dialing, factory))
        return dialing

    dial = tunnel

    def connect(self):
        dialing, factory = self.pending.pop(0)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        dialing.callback(protocol)
        return protocol, transport


class ChannelMemoryTests(SynchronousTestCase):
    """
    The CONNECT path with in-memory transports.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        settings = testSettings(self, proxy_hosts="fakestore.test=127.0.0.1",
                                proxy_allow_internal="127.0.0.1")
        self.dialer = FakeDialer()
        self.factory = ForwardProxyFactory(None, settings, clock=self.clock, dialer=self.dialer,
                                           accessLog=AccessLog())
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=_Address("127.0.0.1"))
        self.protocol.makeConnection(self.transport)

    def test_connectWithEarlyBytes(self) -> None:
        """
        The CONNECT head and early bytes arrive together; the client is
        paused while dialling; 200 has no framing headers; the early bytes
        reach the target; both transports become each other's producer.
        """
        self.protocol.dataReceived(b"CONNECT fakestore.test:443 HTTP/1.1\r\n\r\n\x16\x03\x01hello")
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(self.transport.value(), b"")
        target, targetTransport = self.dialer.connect()
        self.assertEqual(self.transport.value(), b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.assertEqual(targetTransport.value(), b"\x16\x03\x01hello")
        self.assertIs(self.transport.producer, targetTransport)
        self.assertIs(targetTransport.producer, self.transport)
        self.assertEqual(self.transport.producerState, "producing")
        target.dataReceived(b"answer")
        self.assertTrue(self.transport.value().endswith(b"answer"))

    def test_noTimeoutWhileBusy(self) -> None:
        """
        A tunnel that carries traffic is never dropped, however long it
        lives (the HTTPChannel timeout trap).
        """
        self.protocol.dataReceived(b"CONNECT fakestore.test:443 HTTP/1.1\r\n\r\n")
        target, targetTransport = self.dialer.connect()
        for tick in range(13 * 6):
            self.clock.advance(600)
            target.dataReceived(b"tick")
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(self.factory.idleTimeout + 1)
        self.assertTrue(self.transport.disconnecting or self.transport.disconnected)


class _Address:
    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 12345
