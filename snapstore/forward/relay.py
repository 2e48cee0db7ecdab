# -*- test-case-name: tests.test_forward,tests.test_forward_units -*-
"""
The forward proxy's absolute-URI relay: C{GET http://origin/path} read by
the connection (L{snapstore.forward.channel}) is sent to the origin (or to
the parent proxy) with end-to-end headers and this proxy's C{Via}, and the
answer is streamed back with flow control; a kept-alive origin connection
is reused for the same client's next request to the same destination.

One L{OriginRelay} belongs to one client connection and works through the
small L{RelayChannel} surface of it: its transport, its state, what it has
buffered, and the helpers that write the proxy's own answers and log.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol as TypingProtocol

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from snapstore.forward.splice import SpliceBody
from snapstore.http.head import BodyFraming, Head, HeadError, bodyFraming, findHeadEnd, parseHead
from snapstore.http.headers import HOP_BY_HOP, VIA_TOKEN
from snapstore.observe.accesslog import AccessEntry

MAX_RESPONSE_HEAD = 65536

# Bodies at least this long are spliced in the kernel when possible;
# shorter ones are not worth taking the sockets away from the reactor.
SPLICE_BODY_MINIMUM = 256 * 1024


def quietFactory(protocol: type) -> Factory:
    """
    A factory for outgoing connections that does not log each one.
    """
    factory = Factory.forProtocol(protocol)
    factory.noisy = False
    return factory


class RelayChannel(TypingProtocol):
    """
    What an L{OriginRelay} uses of its client connection
    (L{snapstore.forward.channel.ForwardProxyProtocol}).

    @ivar state: the connection's state; the relay moves it through
        C{dialing}, C{request-body}, C{awaiting-response}, C{splicing}
        and C{closed}.
    @ivar buffer: client bytes read beyond the request head.
    @ivar clientEOF: whether the client has stopped sending.
    """

    transport: Any
    factory: Any
    state: str
    buffer: bytes
    clientEOF: bool

    def dataReceived(self, data: bytes) -> None: ...

    def touch(self) -> None: ...

    def startWatchdog(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def waitForHead(self) -> None: ...

    def writeStatus(self, code: int, reason: str, close: bool,
                    headers: tuple[tuple[bytes, bytes], ...] = ()) -> int: ...

    def finishEntry(self, entry: AccessEntry, status: Optional[int] = None) -> None: ...

    def refuse(self, entry: AccessEntry, code: int, reason: str,
               headers: tuple[tuple[bytes, bytes], ...] = ()) -> None: ...

    def dialFailed(self, entry: AccessEntry, host: str, port: int, failure: Failure) -> None: ...


class OriginProtocol(Protocol):
    """
    A connection to an origin server (or the parent proxy) for relayed
    requests.  It belongs to one client connection and may be reused for
    that client's next request to the same destination.
    """

    #: A TCP transport (or TLS over one) once connected; Twisted types
    #: it as an optional L{ITransport}, which lacks the producer and
    #: abort methods used here.
    transport: Any

    relay: Optional["OriginRelay"] = None
    key: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.originData(data)
        else:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.originLost(self, reason)


class _Exchange:
    """
    The state of one relayed request.
    """

    def __init__(self, entry: AccessEntry, method: bytes, key: Any,
                 requestFraming: BodyFraming, clientPersistent: bool, clientVersion: bytes) -> None:
        self.entry = entry
        self.method = method
        self.key = key
        self.requestFraming = requestFraming
        self.clientPersistent = clientPersistent
        self.clientVersion = clientVersion
        self.origin: Optional[OriginProtocol] = None
        self.pendingHead = b""
        self.responseBuffer = b""
        self.responseFraming: Optional[BodyFraming] = None
        self.originPersistent = False
        self.responseStarted = False
        self.dialing: Any = None
        self.splice: Any = None

    def connectedOrigin(self) -> OriginProtocol:
        """
        The origin connection, once the request was sent to it.
        """
        if self.origin is None:
            raise RuntimeError("the exchange has no origin connection yet")
        return self.origin

    def framing(self) -> BodyFraming:
        """
        How the response body ends, once its head was read.
        """
        if self.responseFraming is None:
            raise RuntimeError("the exchange has no response head yet")
        return self.responseFraming


class OriginRelay:
    """
    Relays one client connection's absolute-URI requests, one at a time.

    @ivar channel: the client connection.
    @ivar exchange: the request being relayed, or C{None}.
    @ivar idleOrigin: a kept-alive origin connection from the previous
        request, or C{None}.
    """

    def __init__(self, channel: RelayChannel) -> None:
        self.channel = channel
        self.exchange: Optional[_Exchange] = None
        self.idleOrigin: Optional[OriginProtocol] = None

    def _current(self) -> _Exchange:
        if self.exchange is None:
            raise RuntimeError("no request is being relayed")
        return self.exchange

    def clientLost(self) -> None:
        """
        The client connection is gone: drop the exchange in progress
        (logged as the client going away) and any idle origin.
        """
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            if exchange.splice is not None:
                exchange.splice.abort()
            if exchange.dialing is not None:
                exchange.dialing.cancel()
            if exchange.origin is not None:
                exchange.origin.relay = None
                exchange.origin.transport.abortConnection()
            exchange.entry.note = exchange.entry.note if exchange.entry.note != "-" else "client went away"
            self.channel.finishEntry(exchange.entry, exchange.entry.status or 499)
        origin, self.idleOrigin = self.idleOrigin, None
        if origin is not None:
            origin.relay = None
            origin.transport.loseConnection()

    def clientEnded(self) -> None:
        """
        The client stopped sending in the middle of a request body.
        """
        self._current().connectedOrigin().transport.unregisterProducer()
        self.abort(400, "client closed before sending the whole body")

    def idleTimeout(self) -> None:
        """
        The connection was silent too long while relaying: note why, and
        stop a spliced body (which ends the exchange) or the connection.
        """
        if self.exchange is not None:
            self.exchange.entry.note = "idle timeout"
            if self.exchange.splice is not None:
                self.exchange.splice.abort()
                return
        self.channel.transport.abortConnection()

    def start(self, head: Head, entry: AccessEntry, host: str, port: int,
                    addresses: tuple[str, ...]) -> None:
        method, target, version = head.first
        try:
            framing = bodyFraming(head, request=True)
        except HeadError as error:
            self.channel.refuse(entry, error.code, error.reason)
            return
        connectionTokens = head.tokens(b"connection") | head.tokens(b"proxy-connection")
        persistent = version == b"HTTP/1.1" and b"close" not in connectionTokens
        outVersion = b"HTTP/1.1" if version == b"HTTP/1.1" else b"HTTP/1.0"
        if self.channel.factory.dialer.viaParent:
            requestTarget = target
        else:
            rest = target[7:]
            cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i != -1),
                      default=len(rest))
            requestTarget = rest[cut:] or b"/"
            if requestTarget.startswith(b"?"):
                requestTarget = b"/" + requestTarget
        excluded = HOP_BY_HOP | connectionTokens | {b"host", b"via"}
        authority = target[7:].split(b"/", 1)[0].split(b"?", 1)[0]
        forwarded, vias = endToEndHeaderLines(head.headers, excluded)
        lines = [method + b" " + requestTarget + b" " + outVersion, b"Host: " + authority] + forwarded
        if framing.chunked:
            lines.append(b"Transfer-Encoding: chunked")
        lines.append(b"Via: " + b", ".join(vias + [VIA_TOKEN]))
        parentAuth = getattr(getattr(self.channel.factory.dialer, "parent", None), "authorization", None)
        if parentAuth:
            lines.append(b"Proxy-Authorization: " + parentAuth)
        key = (host, port)
        exchange = _Exchange(entry, method, key, framing, persistent, version)
        exchange.pendingHead = b"\r\n".join(lines) + b"\r\n\r\n"
        self.exchange = exchange
        self.channel.state = "dialing"
        origin, self.idleOrigin = self.idleOrigin, None
        if origin is not None and origin.key == key and origin.transport is not None \
                and origin.transport.connected:
            self._originReady(origin)
            return
        if origin is not None:
            origin.relay = None
            origin.transport.loseConnection()
        dialing = self.channel.factory.dialer.dial(host, port, addresses,
                                           quietFactory(OriginProtocol))
        exchange.dialing = dialing

        def connected(origin: OriginProtocol) -> None:
            exchange.dialing = None
            if self.exchange is not exchange:
                origin.transport.loseConnection()
                return
            origin.key = key
            self._originReady(origin)

        def failed(failure: Failure) -> None:
            exchange.dialing = None
            if self.exchange is not exchange:
                return
            self.exchange = None
            self.channel.dialFailed(entry, host, port, failure)

        dialing.addCallbacks(connected, failed)

    def _originReady(self, origin: OriginProtocol) -> None:
        exchange = self._current()
        exchange.origin = origin
        origin.relay = self
        self.channel.startWatchdog()
        head, exchange.pendingHead = exchange.pendingHead, b""
        exchange.entry.up += len(head)
        origin.transport.write(head)
        self.channel.state = "request-body"
        pending, self.channel.buffer = self.channel.buffer, b""
        # Also for an empty body: that is when a GET's request is complete.
        self.requestBody(pending)
        if self.channel.state == "request-body":
            origin.transport.registerProducer(self.channel.transport, True)
            self.channel.resume()

    def requestBody(self, data: bytes) -> None:
        exchange = self._current()
        framing = exchange.requestFraming
        try:
            used = framing.feed(data)
        except HeadError as error:
            self.abort(error.code, error.reason)
            return
        if used:
            self.channel.touch()
            exchange.entry.up += used
            exchange.connectedOrigin().transport.write(data if used == len(data) else data[:used])
        if framing.done:
            if used < len(data):
                self.channel.buffer += data[used:]
            exchange.connectedOrigin().transport.unregisterProducer()
            self.channel.state = "awaiting-response"
            self.channel.pause()

    def abort(self, code: int, reason: str) -> None:
        exchange, self.exchange = self._current(), None
        if exchange.origin is not None:
            exchange.origin.relay = None
            exchange.origin.transport.abortConnection()
        exchange.entry.note = reason
        if not exchange.responseStarted:
            exchange.entry.down += self.channel.writeStatus(code, reason, close=True)
            self.channel.transport.loseConnection()
        else:
            self.channel.transport.abortConnection()
        self.channel.state = "closed"
        self.channel.finishEntry(exchange.entry, exchange.entry.status or code)

    def originData(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        self.channel.touch()
        if exchange.responseFraming is None:
            exchange.responseBuffer += data
            self._readResponseHead(exchange)
            return
        self._responseBody(exchange, data)

    def _readResponseHead(self, exchange: _Exchange) -> None:
        while exchange.responseFraming is None:
            buffer = exchange.responseBuffer
            end = findHeadEnd(buffer)
            if end == -1:
                if len(buffer) > MAX_RESPONSE_HEAD:
                    self.abort(502, "upstream response head too large")
                return
            try:
                head = parseHead(buffer[:end], request=False, maxHeaders=500)
                framing = bodyFraming(head, request=False, requestMethod=exchange.method)
            except HeadError as error:
                self.abort(502, error.reason)
                return
            exchange.responseBuffer = buffer[end:]
            code = int(head.first[1])
            if 100 <= code < 200:
                if code != 101 and exchange.clientVersion == b"HTTP/1.1":
                    interim = self._responseHead(head, exchange, interim=True)
                    exchange.entry.down += len(interim)
                    self.channel.transport.write(interim)
                continue
            exchange.responseFraming = framing
            exchange.entry.status = code
            tokens = head.tokens(b"connection")
            exchange.originPersistent = (head.first[0] == b"HTTP/1.1" and b"close" not in tokens
                                         and not framing.untilClose)
            if framing.untilClose or self.channel.clientEOF:
                exchange.clientPersistent = False
            data = self._responseHead(head, exchange)
            exchange.responseStarted = True
            exchange.entry.down += len(data)
            self.channel.transport.write(data)
            rest, exchange.responseBuffer = exchange.responseBuffer, b""
            if self._spliceBody(exchange, rest):
                return
            self.channel.transport.registerProducer(exchange.connectedOrigin().transport, True)
            if rest or framing.done:
                self._responseBody(exchange, rest)

    def _spliceBody(self, exchange: _Exchange, rest: bytes) -> bool:
        """
        Hand a large fixed-length body to L{SpliceBody}, when the request is
        complete and both sides are plain TCP.

        @return: whether the body is being spliced.
        """
        framing = exchange.framing()
        origin = exchange.connectedOrigin()
        if (not self.channel.factory.splice or framing.chunked or framing.untilClose
                or framing.remaining - len(rest) < SPLICE_BODY_MINIMUM
                or self.channel.state != "awaiting-response"
                or not SpliceBody.possible(self.channel.factory.reactor, origin.transport,
                                           self.channel.transport)):
            return False
        used = framing.feed(rest)
        exchange.entry.down += used
        if used:
            self.channel.transport.write(rest[:used])
        splice = SpliceBody(self.channel.factory.reactor, origin.transport, self.channel.transport,
                            framing.remaining, self.channel.touch,
                            lambda problem: self._splicedBodyDone(exchange, splice, problem))
        exchange.splice = splice
        self.channel.state = "splicing"
        splice.start()
        return True

    def _splicedBodyDone(self, exchange: _Exchange, splice: SpliceBody,
                         problem: Optional[str]) -> None:
        exchange.splice = None
        exchange.entry.down += splice.moved
        if self.exchange is not exchange:
            return
        self.channel.state = "awaiting-response"
        if problem is None:
            exchange.framing().remaining = 0
            exchange.framing().done = True
            self._exchangeDone(exchange)
        else:
            self.abort(502, problem)

    def _responseHead(self, head: Head, exchange: _Exchange, interim: bool = False) -> bytes:
        version, code, phrase = head.first
        tokens = head.tokens(b"connection")
        excluded = HOP_BY_HOP | tokens | {b"via"}
        forwarded, vias = endToEndHeaderLines(head.headers, excluded)
        lines = [exchange.clientVersion + b" " + code + b" " + phrase] + forwarded
        lines.append(b"Via: " + b", ".join(vias + [VIA_TOKEN]))
        if not interim:
            if exchange.responseFraming is not None and exchange.responseFraming.chunked:
                lines.append(b"Transfer-Encoding: chunked")
            if not exchange.clientPersistent:
                lines.append(b"Connection: close")
            elif exchange.clientVersion == b"HTTP/1.0":
                lines.append(b"Connection: keep-alive")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _responseBody(self, exchange: _Exchange, data: bytes) -> None:
        framing = exchange.framing()
        try:
            used = framing.feed(data) if data else 0
        except HeadError as error:
            self.abort(502, error.reason)
            return
        if used:
            exchange.entry.down += used
            self.channel.transport.write(data if used == len(data) else data[:used])
        if framing.done:
            if used < len(data):
                # An origin sending more than it framed cannot be trusted
                # with another request.
                exchange.originPersistent = False
            self._exchangeDone(exchange)

    def _exchangeDone(self, exchange: _Exchange) -> None:
        self.exchange = None
        self.channel.transport.unregisterProducer()
        origin = exchange.connectedOrigin()
        requestComplete = self.channel.state == "awaiting-response"
        if requestComplete is False and self.channel.state == "request-body":
            origin.transport.unregisterProducer()
            exchange.clientPersistent = False
        origin.relay = None
        if exchange.originPersistent and requestComplete:
            # It may have been paused by a slow client; an idle origin
            # must be read so that its close is noticed.
            origin.transport.resumeProducing()
            self.idleOrigin = origin
        else:
            origin.transport.loseConnection()
        self.channel.finishEntry(exchange.entry)
        if exchange.clientPersistent and not self.channel.clientEOF:
            self.channel.waitForHead()
            self.channel.resume()
            if self.channel.buffer:
                self.channel.dataReceived(b"")
        else:
            self.channel.state = "closed"
            self.channel.resume()
            self.channel.transport.loseConnection()

    def originLost(self, origin: OriginProtocol, reason: Failure) -> None:
        exchange = self.exchange
        if origin is self.idleOrigin:
            self.idleOrigin = None
            return
        if exchange is None or exchange.origin is not origin:
            return
        framing = exchange.responseFraming
        if framing is not None and framing.untilClose:
            self._exchangeDone(exchange)
            return
        if self.channel.state == "request-body":
            origin.transport.unregisterProducer()
        self.abort(502, "upstream closed the connection: "
                                 + (reason.getErrorMessage() or "connection lost"))


def endToEndHeaderLines(headers: Any, excluded: Any) -> tuple[list[bytes], list[bytes]]:
    """
    The C{name: value} lines of C{headers} a proxy passes on (all but the
    C{excluded} lower-case names), and the C{Via} values, kept apart so the
    caller can append this hop to them.
    """
    lines = []
    vias = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"via":
            vias.append(value)
        elif lowered not in excluded:
            lines.append(name + b": " + value)
    return lines, vias
