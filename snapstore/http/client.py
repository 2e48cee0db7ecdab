# -*- test-case-name: tests.test_httpclient -*-
"""
An HTTP/1.1 client for kept-alive connections to one origin, and a pool of
its idle connections.

Twisted's L{twisted.web.client.Agent} pays, for every request on a reused
connection, for a generic request object, a header copy re-sanitising
every value, a line-by-line parser feeding L{twisted.web.http_headers}
one header at a time, a connection wrapper per request and a Deferred
chain of several links (issue 20's profile: about a tenth of a relayed
refresh).  The store relay sends the same few kinds of request to the
same origin over and over, with bodies already in memory, so this client
writes each request (head and body) in one transport write built from
the raw header pairs, parses an answer's head in one pass, and hands a
body that arrived with its head to the reader in one piece.

It keeps Twisted's contract, so that whatever sits above an agent (the
upstream client's timeouts and error mapping, the stale-answer agent, the
relay's streaming) works unchanged: responses are L{IResponse}s whose
C{headers} leave out the connection's own fields, bodies reach
L{IResponse.deliverBody}'s protocol with C{ResponseDone},
C{PotentialDataLoss} or a L{ResponseFailed}, the body's transport pauses,
resumes and stops the connection, and failures are Twisted's own
(L{ResponseNeverReceived}, L{ResponseFailed}, L{RequestNotSent}).  A
request on a reused connection that closed before any byte of its answer
is retried once on a new connection by the same rule as Twisted's pool
(an idempotent method, no body, not cancelled).
"""

from __future__ import annotations

from typing import Any, Hashable, Optional

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, gatherResults, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, IReactorTime, IStreamClientEndpoint, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web._newclient import (
    ParseError, RequestNotSent, RequestTransmissionFailed, ResponseDone, ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss, _ChunkedTransferDecoder, _DataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IClientRequest, IResponse
from zope.interface import implementer

from snapstore.http.head import findHeadEnd

#: The largest answer head accepted (status line and header fields); a
#: longer one fails the request with L{ResponseFailed} (Twisted's client
#: allows 16 KiB per line).
MAX_HEAD = 65536
#: Methods whose request may be sent again when a reused connection turned
#: out closed (Twisted's pool retries the same ones).
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"))
#: Fields about the connection, not the answer: Twisted's client keeps
#: them out of C{IResponse.headers}, and so does this one.
CONNECTION_FIELDS = frozenset((b"content-length", b"connection", b"keep-alive", b"te",
                               b"trailers", b"transfer-encoding", b"upgrade",
                               b"proxy-connection"))

_DONE = Failure(ResponseDone("Response body fully received"))
_CANONICAL_LIMIT = 1024
_canonical: dict[bytes, bytes] = {}


def _canonicalName(name: bytes) -> bytes:
    """
    C{name} capitalised as L{Headers} stores it.

    @raise ValueError: (L{twisted.web.http_headers.InvalidHeaderName}) for
        a name that is not a token.
    """
    found = _canonical.get(name)
    if found is None:
        found = next(iter(Headers({name: [b""]}).getAllRawHeaders()))[0]
        if len(_canonical) < _CANONICAL_LIMIT:
            _canonical[name] = found
    return found


def encodeRequest(method: bytes, target: bytes, host: bytes, headers: Headers,
                  body: Optional[bytes]) -> bytes:
    """
    A request's bytes, head and body, as Twisted's client frames them:
    C{Content-Length} for a body (and 0 for a C{POST} or C{PUT} without
    one).  C{headers} must hold neither C{Host} nor framing fields; its
    values were sanitised when they were set.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    if body is not None:
        parts.append(b"Content-Length: %d\r\n" % (len(body),))
    elif method == b"POST" or method == b"PUT":
        parts.append(b"Content-Length: 0\r\n")
    for name, values in headers.getAllRawHeaders():
        for value in values:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    if body:
        parts.append(body)
    return b"".join(parts)


@implementer(IClientRequest)
class SentRequest:
    """
    What an answer was for (L{IResponse.request}).
    """

    __slots__ = ("method", "absoluteURI", "headers")

    def __init__(self, method: bytes, absoluteURI: bytes, headers: Headers) -> None:
        self.method = method
        self.absoluteURI = absoluteURI
        self.headers = headers


@implementer(IPushProducer)
class BodyTransport:
    """
    The transport a body's protocol sees: pausing, resuming and stopping
    act on the connection until the body ended, and not afterwards (the
    connection may carry another request by then).

    The connection also holds the transport paused while an answer's
    body waits for a protocol; a pause of the protocol's own is counted
    apart, so that neither undoes the other.
    """

    disconnecting = False

    def __init__(self, connection: "ClientConnection") -> None:
        self._connection: Optional[ClientConnection] = connection
        self._paused = False
        self._held = False

    @property
    def connectionTransport(self) -> Any:
        """
        The connection's own transport while the body lasts (a fill widens
        its reads: L{snapstore.store.fillbody.socketTransport}), else
        C{None}.
        """
        return self._connection.transport if self._connection is not None else None

    def getPeer(self) -> Any:
        return self._connection.transport.getPeer() if self._connection is not None else None

    def getHost(self) -> Any:
        return self._connection.transport.getHost() if self._connection is not None else None

    def pauseProducing(self) -> None:
        if self._connection is not None and not self._paused:
            self._paused = True
            if not self._held:
                self._connection.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._connection is not None and self._paused:
            self._paused = False
            if not self._held:
                self._connection.transport.resumeProducing()

    def stopProducing(self) -> None:
        if self._connection is not None:
            self._connection.stopBody()

    loseConnection = stopProducing

    def hold(self) -> None:
        if not self._held:
            self._held = True
            if not self._paused:
                self._connection.transport.pauseProducing()  # type: ignore[union-attr]

    def release(self) -> None:
        if self._held and self._connection is not None:
            self._held = False
            if not self._paused:
                self._connection.transport.resumeProducing()

    def detach(self) -> None:
        """
        The body ended: let the connection read again, and take no more
        orders from the body's protocol.
        """
        connection = self._connection
        if connection is not None:
            self._connection = None
            if self._paused or self._held:
                connection.transport.resumeProducing()


@implementer(IResponse)
class ClientResponse:
    """
    An answer's status and head, and its body for one protocol: the bytes
    that came before the protocol are kept for it (the connection is held
    paused meanwhile), and a body that ended before is handed over whole.
    """

    length: Any

    def __init__(self, version: tuple[bytes, int, int], code: int, phrase: bytes,
                 headers: Headers, request: SentRequest, transport: BodyTransport) -> None:
        self.version = version
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = UNKNOWN_LENGTH
        self.request = request
        self.previousResponse: Optional[IResponse] = None
        self._transport = transport
        self._protocol: Any = None
        self._buffer: list[bytes] = []
        self._reason: Optional[Failure] = None
        self._delivered = False

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response

    def deliverBody(self, protocol: Any) -> None:
        if self._delivered:
            raise RuntimeError("the body of this response was delivered already")
        self._delivered = True
        protocol.makeConnection(self._transport)
        buffered, self._buffer = self._buffer, []
        for data in buffered:
            protocol.dataReceived(data)
        if self._reason is not None:
            protocol.connectionLost(self._reason)
            return
        self._protocol = protocol
        self._transport.release()

    def bodyData(self, data: bytes) -> None:
        if self._protocol is not None:
            self._protocol.dataReceived(data)
        else:
            self._buffer.append(data)

    def bodyEnded(self, reason: Failure) -> None:
        protocol = self._protocol
        if protocol is not None:
            self._protocol = None
            protocol.connectionLost(reason)
        else:
            self._reason = reason


#: Connection states.
IDLE, WAITING, BODY, CLOSED = "IDLE", "WAITING", "BODY", "CLOSED"


class ClientConnection(Protocol):
    """
    One HTTP/1.1 connection to an origin, carrying one request at a time.

    @ivar state: L{IDLE} (ready for a request), L{WAITING} (sent, no
        complete head yet), L{BODY} (reading an answer's body), L{CLOSED}.
    @ivar reused: how many requests it carried before the current one.
    @ivar idleSince: when it last became idle (the pool's clock).
    """

    transport: Any
    state = IDLE
    idleSince = 0.0

    def __init__(self, pool: "ConnectionPool", key: Hashable) -> None:
        self.pool = pool
        self.key = key
        self.reused = 0
        self._buffer = b""
        self._pending: Optional[Deferred[IResponse]] = None
        self._received = False
        self._method = b""
        self._request: Optional[SentRequest] = None
        self._response: Optional[ClientResponse] = None
        self._remaining: Optional[int] = None
        self._chunked: Any = None
        self._reusable = False

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)

    # -- sending ---------------------------------------------------------------

    def request(self, method: bytes, data: bytes, request: SentRequest) -> Deferred[IResponse]:
        """
        Send C{data} (a whole request, see L{encodeRequest}) and fire with
        the answer once its head arrived (with its body too, when that
        came along).
        """
        if self.state != IDLE:
            return fail(RequestNotSent())
        self.state = WAITING
        self._method = method
        self._request = request
        self._received = False
        pending: Deferred[IResponse] = Deferred(self._cancel)
        self._pending = pending
        self.transport.write(data)
        return pending

    def _cancel(self, pending: Deferred[IResponse]) -> None:
        """
        The caller gave up before the answer's head: drop the connection
        and fail as Twisted's client does.
        """
        if self._pending is not pending:
            return
        self._pending = None
        self.state = CLOSED
        self.transport.abortConnection()
        wrapper = ResponseFailed if self._received else ResponseNeverReceived
        pending.errback(Failure(wrapper([Failure(CancelledError())])))

    # -- receiving -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        state = self.state
        if state == BODY:
            self._bodyReceived(data)
        elif state == WAITING:
            self._received = True
            self._headReceived(self._buffer + data if self._buffer else data)
        elif state == IDLE:
            # Nothing was asked: an origin talking out of turn (a timeout
            # notice before it closes) is not to be trusted with another
            # request.
            self.state = CLOSED
            self.transport.loseConnection()

    def _headReceived(self, buffer: bytes) -> None:
        while True:
            end = findHeadEnd(buffer)
            if end == -1:
                if len(buffer) > MAX_HEAD:
                    self._failHead(ParseError(f"answer head larger than {MAX_HEAD} bytes", b""))
                else:
                    self._buffer = buffer
                return
            if end > MAX_HEAD:
                self._failHead(ParseError(f"answer head larger than {MAX_HEAD} bytes", b""))
                return
            try:
                response = self._parseHead(buffer[:end])
            except (ParseError, ValueError) as error:  # and InvalidHeaderName
                self._failHead(error)
                return
            buffer = buffer[end:]
            if response is not None:
                break
            # An interim (1xx) answer: the real one follows.
        self._buffer = b""
        pending, self._pending = self._pending, None
        if self.state == BODY:
            self._response = response
            if buffer:
                self._bodyReceived(buffer)
        elif buffer:
            # Bytes past an answer without a body: nothing to reuse.
            self._reusable = False
            self._close()
        if pending is not None:
            pending.callback(response)
        if self._response is response and not response._delivered:
            # The rest of the body waits for a protocol (most callers give
            # one before the request's Deferred returns: then no pause).
            response._transport.hold()

    def _parseHead(self, head: bytes) -> Optional[ClientResponse]:
        """
        The answer of C{head}, with the state set for its body; C{None} for
        an interim answer.

        @raise ValueError: for a head the client cannot accept.
        """
        if head.count(b"\n") == head.count(b"\r\n") and head.count(b"\r") == head.count(b"\r\n"):
            lines = head[:-4].split(b"\r\n")
        else:
            lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
            # Obsolete line folding, and stray carriage returns, as
            # Twisted's parser reads them.
            folded: list[bytes] = []
            for line in lines:
                if not line:
                    continue
                if line[:1] in (b" ", b"\t") and len(folded) > 1:
                    folded[-1] += line
                else:
                    folded.append(line)
            lines = [b" ".join(line.splitlines()) for line in folded]
        status = lines[0].split(b" ", 2)
        if len(status) == 2:
            status.append(b"")
        if len(status) != 3 or not status[1].isdigit():
            raise ParseError("malformed status line", lines[0])
        version = _version(status[0])
        code = int(status[1])
        if 100 <= code < 200:
            return None
        fields: dict[bytes, list[bytes]] = {}
        control: dict[bytes, list[bytes]] = {}
        isHead = self._method == b"HEAD"
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ParseError("malformed header line", line)
            lower = name.lower()
            if lower in CONNECTION_FIELDS and not (isHead and lower == b"content-length"):
                control.setdefault(lower, []).append(value.strip())
            else:
                fields.setdefault(_canonicalName(name), []).append(value.strip())
        headers = Headers()
        # The fields as Headers keeps them (canonical names, values free of
        # line breaks), set at once rather than checked again one by one.
        headers._rawHeaders = fields
        assert self._request is not None
        response = ClientResponse(version, code, status[2], headers, self._request,
                                  BodyTransport(self))
        tokens: set[bytes] = set()
        for value in control.get(b"connection", ()):
            tokens.update(token.strip().lower() for token in value.split(b","))
        self._reusable = b"close" not in tokens and (version[2] >= 1 or b"keep-alive" in tokens)
        self._chunked = None
        self._remaining = None
        if code == 204 or code == 304 or isHead:
            response.length = 0
            self._finish(response)
            return response
        encodings = control.get(b"transfer-encoding")
        if encodings:
            if b",".join(encodings).strip().lower() != b"chunked":
                raise ParseError("unsupported transfer coding", b",".join(encodings))
            self._chunked = _ChunkedTransferDecoder(response.bodyData, self._chunkedEnd)
        else:
            lengths = control.get(b"content-length")
            if lengths:
                values = {value.strip() for value in b",".join(lengths).split(b",")}
                if len(values) != 1 or not next(iter(values)).isdigit():
                    raise ParseError("invalid Content-Length", b",".join(lengths))
                self._remaining = response.length = int(values.pop())
                if self._remaining == 0:
                    self._finish(response)
                    return response
            else:
                self._reusable = False
        self.state = BODY
        return response

    def _bodyReceived(self, data: bytes) -> None:
        response = self._response
        assert response is not None
        remaining = self._remaining
        if remaining is not None:
            size = len(data)
            if size < remaining:
                self._remaining = remaining - size
                response.bodyData(data)
                return
            self._remaining = 0
            response.bodyData(data[:remaining] if size > remaining else data)
            if size > remaining:
                self._reusable = False
            self._finish(response)
        elif self._chunked is not None:
            try:
                self._chunked.dataReceived(data)
            except Exception:
                self._reusable = False
                reason = Failure()
                self._response = None
                self._close()
                self._endBody(response, Failure(ResponseFailed([reason], response)))
        else:
            response.bodyData(data)

    def _chunkedEnd(self, rest: bytes) -> None:
        response = self._response
        assert response is not None
        if rest:
            self._reusable = False
        self._finish(response)

    def _finish(self, response: ClientResponse) -> None:
        """
        The whole answer arrived: the connection goes back to the pool (or
        is closed), then the body's protocol learns that it ended.
        """
        self._response = None
        self._request = None
        if self._reusable:
            self.state = IDLE
            self.reused += 1
        else:
            self._close()
        self._endBody(response, _DONE)
        if self.state == IDLE:
            self.pool.idle(self)

    @staticmethod
    def _endBody(response: ClientResponse, reason: Failure) -> None:
        response._transport.detach()
        response.bodyEnded(reason)

    def _failHead(self, error: Exception) -> None:
        pending, self._pending = self._pending, None
        self._buffer = b""
        self._close()
        if pending is not None:
            pending.errback(Failure(ResponseFailed([Failure(error)])))

    def _close(self) -> None:
        if self.state != CLOSED:
            self.state = CLOSED
            self.transport.loseConnection()

    def stopBody(self) -> None:
        """
        The body's protocol wants no more of it: the connection closes,
        and the protocol hears how the body was cut when it has.
        """
        self._reusable = False
        if self.state == BODY:
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.state = CLOSED
        self.pool.lost(self)
        pending, self._pending = self._pending, None
        if pending is not None:
            wrapper = ResponseFailed if self._received else ResponseNeverReceived
            pending.errback(Failure(wrapper([reason])))
            return
        response, self._response = self._response, None
        if response is None:
            return
        if self._remaining is None and self._chunked is None:
            self._endBody(response, Failure(PotentialDataLoss()))
        else:
            self._endBody(response, Failure(ResponseFailed([reason, Failure(_DataLoss())],
                                                           response)))

    def abort(self) -> None:
        """
        Close at once (the pool is closing).
        """
        self.state = CLOSED
        self.transport.abortConnection()


def _version(text: bytes) -> tuple[bytes, int, int]:
    if text == b"HTTP/1.1":
        return (b"HTTP", 1, 1)
    protocol, _, number = text.partition(b"/")
    major, _, minor = number.partition(b".")
    if protocol != b"HTTP" or not major.isdigit() or not minor.isdigit():
        raise ParseError("malformed HTTP version", text)
    return (protocol, int(major), int(minor))


class ConnectionPool(Service):
    """
    Idle connections per origin (C{key}), reused newest first, each closed
    after L{idleTimeout} seconds unused (on C{clock}), the oldest closed
    past L{maxPerKey}.  Stopping the service closes every idle one.
    """

    def __init__(self, clock: IReactorTime, maxPerKey: int = 128,
                 idleTimeout: float = 60.0) -> None:
        self.clock = clock
        self.maxPerKey = maxPerKey
        self.idleTimeout = idleTimeout
        self._idle: dict[Hashable, list[ClientConnection]] = {}
        self._sweep: Any = None
        self._stopped = False
        self._open: dict[ClientConnection, Deferred[None]] = {}
        #: Connections opened so far (for tests and benchmarks).
        self.opened = 0

    def request(self, key: Hashable, endpoint: IStreamClientEndpoint, method: bytes,
                data: bytes, sent: SentRequest, retryable: bool) -> Deferred[IResponse]:
        """
        Send C{data} on an idle connection of C{key}, else on a new one
        through C{endpoint}.

        @param retryable: whether the request may be sent again on a new
            connection when a reused one closed before any answer.
        """
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.state == IDLE:
                asked = connection.request(method, data, sent)
                if retryable:
                    asked.addErrback(self._retry, key, endpoint, method, data, sent)
                return asked
        return self._connect(key, endpoint).addCallback(
            lambda connection: connection.request(method, data, sent))

    def _retry(self, failure: Failure, key: Hashable, endpoint: IStreamClientEndpoint,
               method: bytes, data: bytes, sent: SentRequest) -> Any:
        error = failure.value
        if not isinstance(error, (RequestNotSent, RequestTransmissionFailed,
                                  ResponseNeverReceived)):
            return failure
        if any(reason.check(CancelledError) for reason in getattr(error, "reasons", ())):
            return failure
        return self._connect(key, endpoint).addCallback(
            lambda connection: connection.request(method, data, sent))

    def _connect(self, key: Hashable, endpoint: IStreamClientEndpoint) -> Deferred[Any]:
        self.opened += 1
        factory = Factory.forProtocol(lambda: ClientConnection(self, key))
        factory.noisy = False
        return endpoint.connect(factory)

    def idle(self, connection: ClientConnection) -> None:
        """
        C{connection} is ready for another request.
        """
        if self._stopped:
            connection.abort()
            return
        connection.idleSince = self.clock.seconds()
        idle = self._idle.setdefault(connection.key, [])
        idle.append(connection)
        if len(idle) > self.maxPerKey:
            idle.pop(0).abort()
        if self._sweep is None:
            self._sweep = self.clock.callLater(self.idleTimeout, self._expire)

    def lost(self, connection: ClientConnection) -> None:
        """
        C{connection} closed.
        """
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)
        waiting = self._open.pop(connection, None)
        if waiting is not None:
            waiting.callback(None)

    def _expire(self) -> None:
        """
        Close the connections idle for L{idleTimeout} seconds, and come
        back when the next one will have been.
        """
        self._sweep = None
        now = self.clock.seconds()
        oldest = None
        for idle in list(self._idle.values()):
            while idle and now - idle[0].idleSince >= self.idleTimeout:
                idle.pop(0).abort()
            if idle and (oldest is None or idle[0].idleSince < oldest):
                oldest = idle[0].idleSince
        if oldest is not None:
            self._sweep = self.clock.callLater(oldest + self.idleTimeout - now, self._expire)

    def idleCount(self, key: Hashable) -> int:
        """
        How many idle connections C{key} has.
        """
        return len(self._idle.get(key, ()))

    def closeCachedConnections(self) -> Deferred[None]:
        """
        Close every idle connection; fire once all are closed.
        """
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        waiting = []
        for idle in self._idle.values():
            for connection in idle:
                done: Deferred[None] = Deferred()
                self._open[connection] = done
                waiting.append(done)
                connection.abort()
        self._idle = {}
        if not waiting:
            return succeed(None)
        return gatherResults(waiting).addCallback(lambda _: None)

    def startService(self) -> None:
        super().startService()
        self._stopped = False

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopped = True
        return self.closeCachedConnections()
