"""
Helpers for the forward-proxy tests: raw TCP clients, origin servers with
observable flow control, and a proxy under test on loopback.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from snapstore.observe.accesslog import AccessLog
from snapstore.forward.factory import ForwardProxyFactory
from tests.helpers import testSettings


@implementer(IHalfCloseableProtocol)
class RawClient(Protocol):
    """
    A byte-level client: collects what arrives and lets a test wait for a
    condition on it.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.waiters: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []
        self.closed: Deferred[None] = Deferred()
        self.gotEOF = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def _check(self) -> None:
        for waiter in list(self.waiters):
            predicate, waiting = waiter
            if predicate(bytes(self.received)):
                self.waiters.remove(waiter)
                waiting.callback(bytes(self.received))

    def waitFor(self, predicate: Callable[[bytes], bool]) -> Deferred[bytes]:
        waiting: Deferred[bytes] = Deferred()
        self.waiters.append((predicate, waiting))
        self._check()
        return waiting

    def waitForText(self, text: bytes) -> Deferred[bytes]:
        return self.waitFor(lambda received: text in received)

    def readConnectionLost(self) -> None:
        self.gotEOF = True
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        for _, waiting in self.waiters:
            waiting.errback(AssertionError(
                f"connection closed; received {bytes(self.received[:300])!r}"))
        self.waiters = []
        self.closed.callback(None)


async def connectClient(testCase: Any, port: int) -> RawClient:
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient())
    testCase.addCleanup(lambda: client.transport.abortConnection())
    return client


async def listen(testCase: Any, factory: Any) -> Any:
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    testCase.addCleanup(port.stopListening)
    return port


@implementer(IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """
    Echoes; on end of file it says how many bytes it got, then closes.
    """

    def connectionMade(self) -> None:
        self.count = 0
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.factory.eofs.append(self.count)
        self.transport.write(b"EOF after %d" % (self.count,))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


def echoFactory() -> Factory:
    factory = Factory.forProtocol(EchoProtocol)
    factory.connections = []
    factory.eofs = []
    factory.noisy = False
    return factory


@implementer(IPushProducer)
class FloodProducer:
    """
    Writes C{total} bytes to a consumer as fast as it is allowed to, and
    tells when the consumer first made it pause.

    @ivar firstPause: fires when the consumer pauses it.
    """

    chunk = b"x" * 65536

    def __init__(self, consumer: Any, total: int, finish: Callable[[], None]) -> None:
        self.consumer = consumer
        self.total = total
        self.sent = 0
        self.paused = False
        self.stopped = False
        self.finish = finish
        self.firstPause: Deferred[int] = Deferred()

    def start(self) -> None:
        self.consumer.registerProducer(self, True)
        self._pump()

    def _pump(self) -> None:
        while not self.paused and not self.stopped and self.sent < self.total:
            piece = self.chunk[:self.total - self.sent]
            self.sent += len(piece)
            self.consumer.write(piece)
        if self.sent >= self.total and not self.stopped:
            self.stopped = True
            self.consumer.unregisterProducer()
            self.finish()

    def pauseProducing(self) -> None:
        self.paused = True
        if not self.firstPause.called:
            self.firstPause.callback(self.sent)

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            reactor.callLater(0, self._pump)

    def stopProducing(self) -> None:
        self.stopped = True


class FloodProtocol(Protocol):
    """
    On connection, floods the peer with C{factory.total} bytes.
    """

    def connectionMade(self) -> None:
        self.producer = FloodProducer(self.transport, self.factory.total,
                                      self.transport.loseConnection)
        self.factory.producers.append(self.producer)
        self.producer.start()


def floodFactory(total: int) -> Factory:
    factory = Factory.forProtocol(FloodProtocol)
    factory.total = total
    factory.producers = []
    factory.noisy = False
    return factory


class FloodResource(Resource):
    """
    C{GET} answers with C{total} bytes and a Content-Length, under flow
    control; C{producers} lets a test watch the pauses.
    """

    isLeaf = True

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.producers: list[FloodProducer] = []

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"content-length", b"%d" % (self.total,))
        producer = FloodProducer(request, self.total, request.finish)
        self.producers.append(producer)
        producer.start()
        return NOT_DONE_YET


class EchoResource(Resource):
    """
    Answers with what it was sent and records the request's headers.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        self.seen.append({"method": request.method, "uri": request.uri, "body": body,
                          "headers": {k.lower(): v for k, v in
                                      request.requestHeaders.getAllRawHeaders()},
                          "peer": request.transport.getPeer().port})
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"x-origin", b"yes")
        if request.args.get(b"chunked"):
            request.write(b"part one;")
            request.write(b"part two:" + body)
            request.finish()
            return NOT_DONE_YET
        return b"echo:" + request.method + b":" + body


def originRoot(flood: int = 1 << 20) -> tuple[Resource, EchoResource, FloodResource]:
    root = Resource()
    echo = EchoResource()
    floodResource = FloodResource(flood)
    root.putChild(b"echo", echo)
    root.putChild(b"flood", floodResource)
    return root, echo, floodResource


def proxySettings(testCase: Any, **given: Any) -> Any:
    options = {"proxy_hosts": "fakestore.test=127.0.0.1,other.test=127.0.0.1",
               "proxy_allow_internal": "127.0.0.1",
               # The fake origins listen on free ports, not on 80.
               "proxy_relay_ports": "1-65535"}
    options.update(given)
    return testSettings(testCase, **options)


async def startProxy(testCase: Any, settings: Any, **kwargs: Any) -> tuple[ForwardProxyFactory, int]:
    kwargs.setdefault("accessLog", AccessLog(settings.proxyAccessLog))
    factory = ForwardProxyFactory(reactor, settings, **kwargs)
    factory.noisy = False
    port = await listen(testCase, factory)
    testCase.addCleanup(factory.accessLog.close)
    return factory, port.getHost().port


def connectHead(target: str, *headers: str) -> bytes:
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def headEnded(data: bytes) -> bool:
    return b"\r\n\r\n" in data


def siteFactory(resource: Resource) -> Site:
    site = Site(resource)
    site.noisy = False
    site.displayTracebacks = False
    return site
