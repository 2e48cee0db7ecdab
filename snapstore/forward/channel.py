# -*- test-case-name: tests.test_forward -*-
"""
The forward proxy's connection protocol: one instance per client
connection, reading request heads itself and then either opening a
C{CONNECT} tunnel, relaying an absolute-URI request, or handing the
connection to the local store site.  The absolute-URI relay itself is
L{snapstore.forward.relay}; tunnels are L{snapstore.forward.tunnel}.

Why not L{twisted.web.http.HTTPChannel}: after a C{CONNECT} head every
byte belongs to the tunnel, including bytes the client pipelined behind
the head, which C{HTTPChannel} keeps in a private buffer (C{_dataBuffer} in
Twisted 26.10, the line buffer in 22.4); it buffers whole request bodies
before a resource sees them; and it answers oversized heads with a bare
400.  Parsing heads here (L{snapstore.http.head}) keeps all of that in
plain sight and lets bodies pass through unchanged with flow control.

One request is handled at a time: while a response is relayed the client
is not read, so pipelined requests wait in the kernel instead of in
memory.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Optional

from twisted.internet.error import ConnectionDone, TimeoutError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from snapstore.forward.relay import OriginRelay, quietFactory
from snapstore.forward.splice import SpliceTunnel, canSplice
from snapstore.forward.tunnel import TargetProtocol, Tunnel
from snapstore.http.head import BodyFraming, Head, HeadError, bodyFraming, findHeadEnd, parseHead
from snapstore.http.headers import VIA_TOKEN
from snapstore.observe.accesslog import AccessEntry
from snapstore.outbound import TunnelError
from snapstore.rules.verdicts import Allow, ConnectTarget, Deny

REASONS = {
    200: b"OK", 400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found",
    407: b"Proxy Authentication Required", 408: b"Request Timeout",
    414: b"URI Too Long", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}


class _Refusal(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def splitAuthority(authority: bytes, defaultPort: Optional[int]) -> tuple[str, int]:
    """
    Split C{host[:port]} (IPv6 in brackets) into a normalised host and a
    port.

    @raise _Refusal: (400) when it is not a valid authority.
    """
    text = authority.decode("ascii", "replace")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise _Refusal(400, "malformed IPv6 authority")
        portText = rest[1:] if rest.startswith(":") else ("" if not rest else None)
        if portText is None:
            raise _Refusal(400, "malformed authority")
    else:
        host, _, portText = text.partition(":") if text.count(":") == 1 else (text, "", "")
    if portText:
        if not portText.isdigit() or not 0 < int(portText) < 65536:
            raise _Refusal(400, f"bad port in {text!r}")
        port = int(portText)
    elif defaultPort is None:
        raise _Refusal(400, "CONNECT needs host:port")
    else:
        port = defaultPort
    host = host.lower().rstrip(".")
    if not host or any(c in host for c in "/@ \\?#"):
        raise _Refusal(400, f"bad host in {text!r}")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise _Refusal(400, f"bad host in {text!r}")
    return host, port


def _isIPLiteral(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@implementer(IHalfCloseableProtocol)
class ForwardProxyProtocol(Protocol):
    """
    One client connection to the forward proxy.

    @ivar factory: the L{snapstore.forward.factory.ForwardProxyFactory}
        holding settings, rules, counters and the access log.
    """

    #: A TCP transport (or TLS over one) once connected; Twisted types
    #: it as an optional L{ITransport}, which lacks the producer and
    #: abort methods used here.
    transport: Any

    log = Logger()

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.clock = factory.clock
        self.state = "idle"
        self.buffer = b""
        self._timer: Any = None
        self._deadline = 0.0
        self._lastActivity = 0.0
        self._paused = False
        self.clientEOF = False
        self.relay = OriginRelay(self)
        self._tunnel: Optional[Tunnel | SpliceTunnel] = None
        self._tunnelEntry: Optional[AccessEntry] = None
        self._local: Any = None
        self._localFraming: Optional[BodyFraming] = None
        self._pending: Any = None
        self.clientAddress = ""
        self.counted = False

    # -- connection life ------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.clientAddress = getattr(peer, "host", "") or ""
        if not self.factory.clientConnected(self.clientAddress):
            self.counted = False
            self.log.warn("refusing connection from {client}: too many connections",
                          client=self.clientAddress)
            self.writeStatus(429, "too many connections from this address", close=True)
            self._record(AccessEntry(self.clock.seconds(), self.clientAddress, "-", "-",
                                     429, note="too many connections from this address"))
            self.transport.loseConnection()
            self.state = "closed"
            return
        self.counted = True
        self.waitForHead()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.state = "closed"
        self._cancelTimer()
        if self.counted:
            self.counted = False
            self.factory.clientDisconnected(self.clientAddress)
        if self._local is not None:
            self._local.connectionLost(reason)
        if self._tunnel is not None:
            self._tunnel.clientLost(reason)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        self.relay.clientLost()

    def readConnectionLost(self) -> None:
        self.clientEOF = True
        if self.state == "tunnel" and self._tunnel is not None:
            self._tunnel.clientEndedSending()
        elif self.state in ("idle", "head", "local"):
            self.transport.loseConnection()
        elif self.state == "request-body":
            self.relay.clientEnded()
        # While admitting, dialing or relaying, finish first; the exchange
        # closes the connection when it is done because of clientEOF.

    def writeConnectionLost(self) -> None:
        pass

    # -- timers -----------------------------------------------------------

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def waitForHead(self) -> None:
        """
        Between requests: wait up to the idle timeout for a first byte.
        """
        self.state = "idle"
        self._setTimer(self.factory.idleTimeout, self._idleExpired)

    def _setTimer(self, seconds: float, what: Any) -> None:
        self._cancelTimer()
        self._timer = self.clock.callLater(seconds, what)

    def _idleExpired(self) -> None:
        self._timer = None
        self.transport.loseConnection()

    def _headExpired(self) -> None:
        self._timer = None
        self.log.info("dropping {client}: no complete request head within {seconds}s",
                      client=self.clientAddress, seconds=self.factory.headerTimeout)
        self._record(AccessEntry(self.clock.seconds(), self.clientAddress, "-", "-", 408,
                                 up=len(self.buffer), note="request head not completed in time"))
        self.buffer = b""
        self.state = "closed"
        self.transport.abortConnection()

    def touch(self) -> None:
        self._lastActivity = self.clock.seconds()

    def startWatchdog(self) -> None:
        self.touch()
        self._setTimer(self.factory.idleTimeout, self._watchdog)

    def _watchdog(self) -> None:
        self._timer = None
        idle = self.clock.seconds() - self._lastActivity
        if idle < self.factory.idleTimeout:
            self._timer = self.clock.callLater(self.factory.idleTimeout - idle, self._watchdog)
            return
        self.log.info("closing idle {state} of {client}", state=self.state,
                      client=self.clientAddress)
        if self._tunnel is not None:
            if self._tunnelEntry is not None:
                self._tunnelEntry.note = "idle timeout"
            self._tunnel.abort()
        else:
            self.relay.idleTimeout()

    # -- reading ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        state = self.state
        if state == "tunnel" and self._tunnel is not None:
            self._tunnel.fromClient(data)
        elif state == "local":
            self._localBody(data)
        elif state == "request-body":
            self.relay.requestBody(data)
        elif state == "closed":
            return
        else:
            self.buffer += data
            if state == "idle":
                self.state = "head"
                self._setTimer(self.factory.headerTimeout, self._headExpired)
            if self.state == "head":
                self._readHead()
            elif len(self.buffer) > self.factory.maxHeaderSize + 65536:
                # Pipelining far ahead while we are busy: stop reading.
                self.pause()

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()

    def _readHead(self) -> None:
        buffer = self.buffer
        end = findHeadEnd(buffer)
        lineEnd = buffer.find(b"\n")
        maxLine, maxHead = self.factory.maxRequestLine, self.factory.maxHeaderSize
        if (lineEnd == -1 and len(buffer) > maxLine) or lineEnd > maxLine:
            self._refuseHead(414, "request line too long")
            return
        if end == -1:
            if len(buffer) > maxHead:
                self._refuseHead(431, "request header fields too large")
            return
        if end > maxHead:
            self._refuseHead(431, "request header fields too large")
            return
        self._cancelTimer()
        self.buffer = buffer[end:]
        try:
            head = parseHead(buffer[:end], request=True, maxHeaders=self.factory.maxHeaders)
        except HeadError as error:
            self._refuseHead(error.code, error.reason, head=buffer[:lineEnd])
            return
        self._dispatch(head)

    def _refuseHead(self, code: int, reason: str, head: bytes = b"") -> None:
        self._cancelTimer()
        parts = head.rstrip(b"\r").split(b" ")
        method = parts[0].decode("ascii", "replace") if head else "-"
        target = parts[1].decode("ascii", "replace")[:200] if len(parts) > 1 else "-"
        self._record(AccessEntry(self.clock.seconds(), self.clientAddress, method, target,
                                 code, up=len(self.buffer), note=reason))
        self.buffer = b""
        self.state = "closed"
        self.writeStatus(code, reason, close=True)
        self.transport.loseConnection()

    # -- responses written by the proxy itself ------------------------------

    def writeStatus(self, code: int, reason: str, close: bool,
                     headers: tuple[tuple[bytes, bytes], ...] = ()) -> int:
        body = reason.encode("utf-8", "replace") + b"\n"
        lines = [b"HTTP/1.1 %d %s" % (code, REASONS.get(code, b"Error")),
                 b"Content-Type: text/plain; charset=utf-8",
                 b"Content-Length: %d" % (len(body),),
                 b"Via: " + VIA_TOKEN]
        lines.extend(name + b": " + value for name, value in headers)
        if close:
            lines.append(b"Connection: close")
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        self.transport.write(data)
        return len(data)

    def _record(self, entry: AccessEntry) -> None:
        self.factory.accessLog.record(entry)

    def finishEntry(self, entry: AccessEntry, status: Optional[int] = None) -> None:
        if status is not None:
            entry.status = status
        entry.duration = max(0.0, self.clock.seconds() - entry.started)
        self._record(entry)

    # -- dispatch -------------------------------------------------------------

    def _dispatch(self, head: Head) -> None:
        method, target, version = head.first
        entry = AccessEntry(self.clock.seconds(), self.clientAddress,
                            method.decode("ascii", "replace"),
                            target.decode("ascii", "replace")[:2000])
        entry.user = self.factory.userOf(head)
        try:
            if method == b"CONNECT":
                host, port = splitAuthority(target, None)
                self._admit(head, entry, host, port, self._startTunnel)
                return
            lowered = target[:8].lower()
            if target.startswith(b"/") or target == b"*":
                if self.factory.localSite is not None:
                    hostHeader = (head.get(b"host") or [b""])[0]
                    self._admitLocal(head, entry,
                                     hostHeader.decode("latin-1").rpartition(":")[0] or "-",
                                     getattr(self.transport.getHost(), "port", 0))
                    return
                raise _Refusal(400, "this is a proxy: send absolute URIs or CONNECT")
            if lowered.startswith(b"https://"):
                raise _Refusal(400, "use CONNECT for https:// URLs")
            if not lowered.startswith(b"http://"):
                raise _Refusal(400, "unsupported request target")
            rest = target[7:]
            slash = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i != -1),
                        default=len(rest))
            authority = rest[:slash]
            if b"@" in authority:
                raise _Refusal(400, "credentials in the URL are not relayed")
            host, port = splitAuthority(authority, 80)
            if self.factory.localSite is not None and self.factory.isLocal(
                    host, port, getattr(self.transport.getHost(), "host", None)):
                self._admitLocal(head, entry, host, port)
                return
            self._admit(head, entry, host, port, self.relay.start)
        except _Refusal as refusal:
            entry.note = refusal.reason
            entry.down = self.writeStatus(refusal.code, refusal.reason, close=True)
            self.finishEntry(entry, refusal.code)
            self.state = "closed"
            self.transport.loseConnection()

    def _targetOf(self, head: Head, host: str, port: int,
                  addresses: tuple[str, ...]) -> ConnectTarget:
        """
        What the connect rules are asked about for a request with C{head}.
        """
        return ConnectTarget(host, port, addresses, self.clientAddress,
                             tuple((name.lower(), value) for name, value in head.headers),
                             head.first[0])

    def _admitLocal(self, head: Head, entry: AccessEntry, host: str, port: int) -> None:
        """
        Ask the rules about the client (its network, its proxy credentials)
        before handing a request for this proxy's own store to the store
        site: those hold for every request on the proxy port.
        """
        self.state = "admitting"
        self.pause()
        target = self._targetOf(head, host, port, ())
        checking = self.factory.checkClient(target)
        self._pending = checking

        def decided(result: Any) -> None:
            if self.state == "closed":
                return
            self._pending = None
            verdict, ruleName = result
            if isinstance(verdict, Deny):
                self.refuse(entry, verdict.code, verdict.reason, verdict.headers)
                return
            self._goLocal(head)

        def broken(failure: Failure) -> None:
            self.log.failure("admission failed", failure)
            self.refuse(entry, 500, "internal error")

        checking.addCallback(decided).addErrback(broken)

    def _goLocal(self, head: Head) -> None:
        """
        Give this one request (head and body) to the store site: it names
        this proxy's own store API.  Once it is answered the connection
        comes back here, so that the next request on it is routed by its
        own target.
        """
        raw = b"%s %s %s\r\n" % head.first + b"".join(
            name + b": " + value + b"\r\n" for name, value in head.headers) + b"\r\n"
        rest, self.buffer = self.buffer, b""
        framing: Optional[BodyFraming]
        try:
            framing = bodyFraming(head, request=True)
            used = framing.feed(rest)
        except HeadError:
            # Framing the store channel refuses (400) itself: it gets
            # everything, and the connection ends with its refusal.
            framing, used = None, len(rest)
        # What follows the body is the next request: it waits here.
        body, self.buffer = rest[:used], rest[used:]
        self.state = "local"
        self._cancelTimer()
        channel = self.factory.localSite.buildProtocol(self.transport.getPeer())
        self._local = channel
        self._localFraming = framing
        channel.makeConnection(self.transport)
        if framing is not None:
            channel.whenRequestDone().addCallback(self._localAnswered, channel)
        # Admission paused the client; the store channel pauses it again
        # itself while it is busy.
        self.resume()
        channel.dataReceived(raw + body)

    def _localBody(self, data: bytes) -> None:
        """
        Pass the local request's body on; what follows it waits here for
        the next dispatch.
        """
        local, framing = self._local, self._localFraming
        if local is None:
            return
        if framing is None:
            local.dataReceived(data)
            return
        try:
            used = framing.feed(data) if not framing.done else 0
        except HeadError:
            used = len(data)  # the store channel refuses a broken body itself
        if used:
            local.dataReceived(data if used == len(data) else data[:used])
        if used < len(data):
            self.buffer += data[used:]
            if len(self.buffer) > self.factory.maxHeaderSize + 65536:
                self.pause()

    def _localAnswered(self, request: Any, channel: Any) -> None:
        """
        The store site answered the local request: unless the connection
        is closing, take it back and read the next request.
        """
        if self._local is not channel or self.state != "local":
            return
        if self.transport.disconnecting:
            return
        self._local = None
        self._localFraming = None
        # The store channel made itself the transport's producer when it
        # was connected; it gives that up only when it closes.
        self.transport.unregisterProducer()
        channel.connectionLost(Failure(ConnectionDone("the request was answered")))
        self.waitForHead()
        self.resume()
        if self.buffer:
            self.dataReceived(b"")

    def refuse(self, entry: AccessEntry, code: int, reason: str,
                headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.log.info("refused {method} {target} from {client}: {code} {reason}",
                      method=entry.method, target=entry.target, client=entry.client,
                      code=code, reason=reason)
        entry.note = reason
        if self.state != "closed":
            entry.down = self.writeStatus(code, reason, close=True, headers=headers)
            self.state = "closed"
            self.resume()
            self.transport.loseConnection()
        self.finishEntry(entry, code)

    def _admit(self, head: Head, entry: AccessEntry, host: str, port: int, then: Any) -> None:
        """
        Resolve C{host}, ask the connect rules, and call C{then} with the
        checked addresses when allowed.
        """
        self.state = "admitting"
        self.pause()
        resolving = self.factory.resolve(host, port)
        self._pending = resolving

        def resolved(addresses: tuple[str, ...]) -> Any:
            target = self._targetOf(head, host, port, tuple(addresses))
            return self.factory.checkConnect(target).addCallback(lambda result: (result, addresses))

        def notResolved(failure: Failure) -> Any:
            if self.state == "closed":
                return None
            # Policy first: a client the rules refuse (network, port, auth)
            # gets their refusal, not a DNS answer about a name it may not ask.
            target = self._targetOf(head, host, port, ())

            def refuse(result: Any) -> None:
                if self.state == "closed":
                    return
                self._pending = None
                verdict, ruleName = result
                if isinstance(verdict, Deny):
                    self.refuse(entry, verdict.code, verdict.reason, verdict.headers)
                else:
                    self.refuse(entry, 502, f"cannot resolve {host}: {failure.getErrorMessage()}")

            return self.factory.checkConnect(target).addCallback(refuse)

        def decided(outcome: Any) -> None:
            if outcome is None or self.state == "closed":
                return
            self._pending = None
            (verdict, ruleName), addresses = outcome
            if isinstance(verdict, Allow):
                then(head, entry, host, port, tuple(addresses))
            else:
                assert isinstance(verdict, Deny)
                self.refuse(entry, verdict.code, verdict.reason, verdict.headers)

        resolving.addCallbacks(resolved, notResolved).addCallback(decided)

        def broken(failure: Failure) -> None:
            self.log.failure("admission failed", failure)
            self.refuse(entry, 500, "internal error")

        resolving.addErrback(broken)

    def dialFailed(self, entry: AccessEntry, host: str, port: int, failure: Failure) -> None:
        if failure.check(TimeoutError):
            self.refuse(entry, 504, f"{host}:{port} did not accept within "
                                     f"{self.factory.connectTimeout:g}s")
        elif isinstance(failure.value, TunnelError):
            self.refuse(entry, 502, failure.value.reason)
        else:
            self.refuse(entry, 502, f"cannot connect to {host}:{port}: "
                                     f"{failure.getErrorMessage()}")

    # -- CONNECT ----------------------------------------------------------------

    def _startTunnel(self, head: Head, entry: AccessEntry, host: str, port: int,
                     addresses: tuple[str, ...]) -> None:
        if not self.factory.openTunnel():
            self.refuse(entry, 503, "too many tunnels open")
            return
        self.state = "dialing"
        dialing = self.factory.dialer.tunnel(host, port, addresses,
                                             quietFactory(TargetProtocol))
        self._pending = dialing

        def connected(target: TargetProtocol) -> None:
            self._pending = None
            if self.state == "closed":
                self.factory.closeTunnel()
                target.transport.abortConnection()
                return
            entry.status = 200
            self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            early, self.buffer = self.buffer, b""
            self._tunnelEntry = entry
            self.state = "tunnel"
            self.startWatchdog()
            if self.factory.splice and canSplice(self.factory.reactor, self.transport,
                                                 target.transport):
                # The splice reads the sockets itself; the transport must
                # stay paused (it is, since admission).
                splice = SpliceTunnel(self.factory.reactor, self.transport, target,
                                      self.touch, self._tunnelClosed)
                self._tunnel = splice
                self._paused = False
                splice.start(early)
                return
            tunnel = Tunnel(self.transport, target, self.touch, self._tunnelClosed)
            self._tunnel = tunnel
            tunnel.start(early)
            self.resume()
            if self.clientEOF:
                self._tunnel.clientEndedSending()

        def failed(failure: Failure) -> None:
            self._pending = None
            self.factory.closeTunnel()
            if self.state == "closed":
                entry.note = "client went away"
                self.finishEntry(entry, 499)
                return
            self.dialFailed(entry, host, port, failure)

        dialing.addCallbacks(connected, failed)

    def _tunnelClosed(self) -> None:
        self.factory.closeTunnel()
        self._cancelTimer()
        entry, self._tunnelEntry = self._tunnelEntry, None
        if entry is not None and self._tunnel is not None:
            entry.up, entry.down = self._tunnel.up, self._tunnel.down
            self.finishEntry(entry)
