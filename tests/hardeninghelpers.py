# -*- test-case-name: tests.test_hardening_input -*-
"""
Helpers for the hardening tests: raw HTTP exchanges over loopback sockets,
and a fault-injecting TCP front to put between the service and its
upstream.
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")


class RawClient(Protocol):
    """
    Sends bytes, collects whatever comes back until the server closes.

    @ivar closed: fires with everything received.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed: Deferred[bytes] = Deferred()
        self.received: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.received.called:
            self.received.callback(None)

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(bytes(self.data))


async def rawConnect(port: int) -> RawClient:
    """
    Connect a L{RawClient} to C{127.0.0.1:port}.
    """
    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient())


async def rawExchange(port: int, data: bytes) -> bytes:
    """
    Send C{data} on a new connection; fire with all the server sent until
    it closed the connection.
    """
    client = await rawConnect(port)
    client.transport.write(data)
    return await client.closed


async def sendChunks(client: RawClient, mebibytes: float) -> bytes:
    """
    Send a chunked body of C{mebibytes} MiB in 64 KiB chunks on C{client}
    (whose request head said C{Transfer-Encoding: chunked}), stopping early
    when the server closes; fire with all it answered.
    """
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    for _ in range(int(mebibytes * 16)):
        if client.closed.called:
            break
        client.transport.write(chunk)
        await deferLater(reactor, 0, lambda: None)
    return await client.closed


def statuses(answer: bytes) -> list[int]:
    """
    The status codes of every response found at the start of a line in
    C{answer}.
    """
    return [int(match.group(1)) for match in re.finditer(rb"(?m)^HTTP/1\.[01] (\d{3}) ", answer)]


def parseAnswer(answer: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """
    Split one raw HTTP response into status, lower-cased headers and body.
    """
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    match = _STATUS.match(lines[0] + b" ")
    if match is None:
        raise AssertionError(f"not an HTTP response: {answer[:200]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers, body


def storeErrorCode(body: bytes) -> str:
    """
    The code of a store-format error body; fails the test if C{body} is not
    one.
    """
    document = json.loads(body)
    return document["error-list"][0]["code"]


def blockingExchange(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """
    L{rawExchange} with a blocking socket, for servers in other processes
    (hypothesis drives tests synchronously).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        received = bytearray()
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return bytes(received)
            received += chunk


# -- the fault-injecting front ---------------------------------------------------


class FrontConnection(Protocol):
    """
    One connection to the front: reads the request head, then either
    relays the connection to the real upstream or misbehaves as the
    front's current fault says.
    """

    def __init__(self, front: FaultyFront) -> None:
        self.front = front
        self.head = bytearray()
        self.peer: Any = None
        self.pending = b""
        self.decided = False
        # The connection to the upstream while it is being made.
        self.attempt: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.decided:
            if self.peer is not None:
                self.peer.transport.write(data)
            else:
                self.pending += data
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        self.decided = True
        requestLine = bytes(self.head.split(b"\r\n", 1)[0])
        self.front.requestLines.append(requestLine)
        fault = self.front.faultFor(requestLine)
        if fault is None:
            self._relay()
        else:
            self.front.faulted.append((fault[0], requestLine))
            fault[1](self)

    def _relay(self) -> None:
        # One request per relayed connection, so that every request is
        # seen (and may be failed) by the front: upstream closes after it.
        requestLine, rest = bytes(self.head).split(b"\r\n", 1)
        self.pending = requestLine + b"\r\nConnection: close\r\n" + rest
        self.transport.pauseProducing()
        self.attempt = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.front.targetPort),
                                       _Peer(self))
        self.attempt.addBoth(self._attempted)

    def _attempted(self, result: Any) -> None:
        """
        The upstream connection was made, failed or was given up: a client
        whose upstream cannot be reached is cut off, as by a reset.
        """
        self.attempt = None
        if isinstance(result, Failure) and self.transport is not None:
            self.transport.abortConnection()

    def giveUp(self) -> None:
        """
        Stop making the upstream connection, if it is still being made (the
        client left, or the front stops): an attempt must not outlive the
        test that caused it.
        """
        if self.attempt is not None:
            self.attempt.cancel()

    def connectionLost(self, reason: Any) -> None:
        self.giveUp()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()
        self.front.connections.discard(self)


class _Peer(Protocol):
    """
    The front's connection to the real upstream for a relayed client
    connection.
    """

    def __init__(self, client: FrontConnection) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client.peer = self
        self.transport.write(self.client.pending)
        self.client.pending = b""
        self.client.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connectionLost(self, reason: Any) -> None:
        self.client.transport.loseConnection()


class FaultyFront(Factory):
    """
    A TCP front for an upstream on C{127.0.0.1:targetPort} that relays
    connections faithfully until told to misbehave.

    Faults apply to new connections whose request line contains C{match};
    a fault is a C{(name, action)} where C{action(connection)} misbehaves.

    @ivar requestLines: every request line seen, in order.
    @ivar faulted: C{(fault name, request line)} of each misbehaviour.
    """

    def __init__(self, targetPort: int) -> None:
        self.targetPort = targetPort
        self.faults: list[tuple[bytes, str, Any, Optional[int]]] = []
        self.requestLines: list[bytes] = []
        self.faulted: list[tuple[str, bytes]] = []
        self.connections: set[FrontConnection] = set()
        self.port: Any = None

    def buildProtocol(self, addr: Any) -> FrontConnection:
        connection = FrontConnection(self)
        self.connections.add(connection)
        return connection

    def fail(self, name: str, match: bytes = b"", count: Optional[int] = None, **options: Any) -> None:
        """
        Misbehave as C{name} on the next C{count} matching connections (all
        of them when C{None}).
        """
        action = getattr(self, "_" + name.replace("-", "_"))
        self.faults.append((match, name, lambda c: action(c, **options), count))

    def clear(self) -> None:
        self.faults = []

    def faultFor(self, requestLine: bytes) -> Any:
        for index, (match, name, action, count) in enumerate(self.faults):
            if match in requestLine:
                if count is not None:
                    if count <= 1:
                        del self.faults[index]
                    else:
                        self.faults[index] = (match, name, action, count - 1)
                return (name, action)
        return None

    def stop(self) -> None:
        for connection in list(self.connections):
            connection.giveUp()
            if connection.transport is not None:
                connection.transport.abortConnection()

    # -- the faults --------------------------------------------------------

    @staticmethod
    def _reset_headers(connection: FrontConnection) -> None:
        connection.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: appl")
        connection.transport.abortConnection()

    @staticmethod
    def _reset_body(connection: FrontConnection, contentType: bytes = b"application/json") -> None:
        connection.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: 5000\r\n\r\n" % contentType
            + b'{"results": [' + b" " * 500)
        connection.transport.abortConnection()

    @staticmethod
    def _short(connection: FrontConnection, contentType: bytes = b"application/json") -> None:
        connection.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: 5000\r\n\r\n" % contentType
            + b'{"results": []}')
        connection.transport.loseConnection()

    @staticmethod
    def _wrong_length(connection: FrontConnection) -> None:
        # Announces less than it sends: the surplus must not be read as a
        # second response on a kept-alive connection.
        body = b'{"results": [], "error-list": []}'
        connection.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
            + body + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        connection.transport.loseConnection()

    @staticmethod
    def _stall(connection: FrontConnection) -> None:
        pass  # never answers; the test's cleanup aborts it

    @staticmethod
    def _redirect_loop(connection: FrontConnection) -> None:
        path = bytes(connection.head.split(b" ")[1])
        connection.transport.write(
            b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % path)
        connection.transport.loseConnection()

    @staticmethod
    def _status(connection: FrontConnection, code: int = 503) -> None:
        body = b'{"error-list": [{"code": "internal-error", "message": "busy"}]}'
        connection.transport.write(
            b"HTTP/1.1 %d Busy\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (code, len(body), body))
        connection.transport.loseConnection()

    @staticmethod
    def _serve(connection: FrontConnection, data: bytes = b"", holdAt: Optional[int] = None,
               length: Optional[int] = None, held: Optional[list] = None) -> None:
        """
        Answer 200 with C{data} (announcing C{length}); with C{holdAt},
        send only that many bytes and keep the connection open.
        """
        length = len(data) if length is None else length
        connection.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % length)
        if holdAt is None:
            connection.transport.write(data)
            connection.transport.loseConnection()
        else:
            connection.transport.write(data[:holdAt])
            if held is not None:
                held.append(connection)


async def startFront(testCase: Any, targetPort: int) -> FaultyFront:
    """
    Listen with a L{FaultyFront} for C{targetPort} on a free loopback port
    for the duration of the test.
    """
    front = FaultyFront(targetPort)
    front.port = reactor.listenTCP(0, front, interface="127.0.0.1")
    testCase.addCleanup(front.port.stopListening)
    testCase.addCleanup(front.stop)
    front.url = f"http://127.0.0.1:{front.port.getHost().port}/"
    return front


# A download action for C{hello}, as snapd's refresh body carries it.
REFRESH = json.dumps({
    "context": [],
    "actions": [{"action": "download", "instance-key": "download-1", "name": "hello", "epoch": None}],
    "fields": ["download", "revision", "snap-id", "name"],
}).encode()


def rawRequest(method: bytes, path: bytes, body: bytes = b"") -> bytes:
    """
    The bytes of one HTTP/1.1 request that closes its connection.
    """
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, path)
    if body:
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body
