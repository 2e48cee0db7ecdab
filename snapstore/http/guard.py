# -*- test-case-name: tests.test_hardening_input -*-
"""
Limits on what a client may make a listener hold: how long a request may
take to arrive, how large its body may be, and which request heads are too
ambiguous to act on.

Twisted's L{HTTPChannel} already refuses malformed request lines, oversized
header sections, too many headers, and conflicting C{Content-Length} /
C{Transfer-Encoding}.  It does not bound the body (a client announcing
10 GB is buffered to a temporary file), and its only timer is an idle one
that every dribbled byte resets, so a client sending one header byte every
few seconds (slowloris) holds a connection for ever.  L{GuardedChannel}
adds those bounds; L{GuardedSite} is a L{Site} that uses it.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.server import Site
from twisted.internet.interfaces import IReactorTime

from snapstore.http.clientlimit import ClientLimit
from snapstore.http.storeerror import storeErrorBody
from snapstore.interfaces import IBodyGate, ISiteObserver

from snapstore.http.controlchars import requestControls


#: A request's head and body must arrive within this many seconds of its
#: first byte.  snapd sends a whole refresh in milliseconds.
REQUEST_TIMEOUT = 30.0
#: A keep-alive connection with no request in progress is closed after
#: this long (Twisted's default is twelve hours).
IDLE_TIMEOUT = 120.0


# Reason phrases of the refusals written before a request exists; the rest
# come from Twisted's table.
_PHRASES = {413: b"Content Too Large"}


class GuardedChannel(HTTPChannel):
    """
    An HTTP channel that refuses ambiguous request heads, bounds request
    bodies and gives each request a deadline to arrive.

    @ivar maxBodySize: the largest request body accepted, or C{None}.
    @ivar unboundedPaths: request paths (and paths under them) whose
        bodies are not bounded.
    @ivar requestTimeout: seconds from a request's first byte to its last.
    @ivar bodyGate: an L{snapstore.interfaces.IBodyGate} deciding on the
        requests it governs from their heads (authorisation, their own
        body bound, where the body goes), or C{None}.
    """

    log = Logger()
    maxBodySize: Optional[int] = None
    unboundedPaths: tuple[bytes, ...] = ()
    requestTimeout: float = REQUEST_TIMEOUT
    bodyGate: Optional[IBodyGate] = None

    #: The TCP transport once connected (Twisted types it optional).
    transport: Any

    def __init__(self) -> None:
        super().__init__()
        self._deadline: Any = None
        self._refused = False
        self._bodyReceived = 0
        self._doneWaiters: list[Deferred[Any]] = []

    def whenRequestDone(self) -> Deferred[Any]:
        """
        @return: a Deferred firing with the next request this channel is
            done with (its answer written), before the channel reads
            another; the forward proxy takes its connection back then.
        """
        waiting: Deferred[Any] = Deferred()
        self._doneWaiters.append(waiting)
        return waiting

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        waiters, self._doneWaiters = self._doneWaiters, []
        for waiting in waiters:
            waiting.callback(request)

    # -- the request deadline ----------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._deadline is None and self.line_mode and not self._handlingRequest:
            self._deadline = self.callLater(self.requestTimeout, self._tooSlow)
        super().dataReceived(data)

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _tooSlow(self) -> None:
        self._deadline = None
        self.log.info("closing {peer}: request not received within {seconds:g}s",
                      peer=str(self.transport.getPeer()), seconds=self.requestTimeout)
        self._refuse(408, "request-timeout",
                     f"the request did not arrive within {self.requestTimeout:g}s")

    def connectionLost(self, reason: Any = None) -> None:
        self._cancelDeadline()
        admitted, self._admitted = getattr(self, "_admitted", None), None
        if admitted is not None:  # counted by the site's ClientLimit
            limit, host = admitted
            limit.release(host)
        super().connectionLost(reason)

    # -- refusals ----------------------------------------------------------

    def _refuse(self, status: int, code: str, message: str) -> None:
        """
        Answer with a store-format error and close, ignoring whatever else
        the client sends.
        """
        # The store's error shape, which snapd shows to its user.
        self._refuseWith(status, storeErrorBody(code, message))

    def _refuseWith(self, status: int, body: bytes) -> None:
        if self._refused:
            return
        self._refused = True
        self._cancelDeadline()
        phrase = _PHRASES.get(status) or RESPONSES.get(status, b"Refused")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, phrase, len(body), body))
        self.loseConnection()

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        problem = self._ambiguous(request)
        if problem is not None:
            self._refuse(400, "bad-request", problem)
            return
        self._bodyReceived = 0
        self._limit: Optional[int] = None if self._unbounded() else self.maxBodySize
        gate = self.bodyGate
        gated = gate is not None and gate.governs(
            getattr(self, "_command", b""), getattr(self, "_path", b"").split(b"?", 1)[0])
        if gate is not None and gated:
            refusal = gate.admit(request, self.length)
            if refusal is not None:
                self._refuseWith(*refusal)
                return
            self._limit = gate.maxBodySize
            # An admitted caller's large upload may take longer than the
            # request deadline; the idle timeout still closes a stalled one.
            self._cancelDeadline()
        self._bounded = self._limit is not None
        if self._limit is not None and self.length is not None and self.length > self._limit:
            self._refuse(413, "request-too-large",
                         f"request body is larger than {self._limit} bytes")
            return
        super().allHeadersReceived()
        if gate is not None and gated:
            gate.spool(request)

    def _unbounded(self) -> bool:
        """
        Whether the request's path is one whose bodies are not bounded
        (a bundle import on the admin endpoint).
        """
        path = getattr(self, "_path", b"").split(b"?", 1)[0]
        return any(path == prefix or path.startswith(prefix + b"/")
                   for prefix in self.unboundedPaths)

    def _ambiguous(self, request: Any) -> Optional[str]:
        """
        Why a request head cannot be acted on safely, or C{None}: more than
        one C{Host}, an absolute-form target naming another host than
        C{Host} (a front proxy and this service would disagree about what
        was asked), or control characters in the target or a header.
        """
        hosts = request.requestHeaders.getRawHeaders(b"host") or []
        if len(hosts) > 1:
            return "more than one Host header"
        target = getattr(self, "_path", b"")
        controls = requestControls(target, [
            (name, value) for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values])
        if controls is not None:
            return controls
        if b"://" in target[:16] and hosts:
            try:
                authority = urlsplit(target.decode("latin-1")).netloc
            except ValueError:
                return "malformed request target"
            if authority.lower() != hosts[0].decode("latin-1").lower():
                return "the request target and the Host header disagree"
        return None

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if (getattr(self, "_bounded", False) and not self._handlingRequest
                and self.length is None):
            # A chunked body: count what arrives (framing included, which
            # the small slack allows for).
            self._bodyReceived += len(data)
            if self._bodyReceived > (self._limit or 0) + 65536:
                self._refuse(413, "request-too-large",
                             f"request body is larger than {self._limit} bytes")
                return
        super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._cancelDeadline()
        super().allContentReceived()


class GuardedSite(Site):
    """
    A L{Site} whose connections are L{GuardedChannel}s.

    @ivar maxBodySize: the largest request body accepted, or C{None}.
    @ivar requestTimeout: seconds a request may take to arrive.
    """

    # Twisted types HTTPFactory.protocol as its generic-channel factory.
    protocol = GuardedChannel  # type: ignore[assignment]
    #: A failing resource's traceback is logged, never sent to the client.
    displayTracebacks = False

    def __init__(self, resource: Any, *, maxBodySize: Optional[int] = None,
                 unboundedPaths: tuple[bytes, ...] = (),
                 requestTimeout: float = REQUEST_TIMEOUT,
                 idleTimeout: float = IDLE_TIMEOUT, reactor: Optional[IReactorTime] = None,
                 observer: Optional[ISiteObserver] = None,
                 bodyGate: Optional[IBodyGate] = None,
                 clientLimit: Optional[ClientLimit] = None) -> None:
        """
        @param unboundedPaths: paths (and what is under them) whose bodies
            C{maxBodySize} does not bound.
        @param observer: builds the site's requests and logs them (the
            access log and request metrics of L{snapstore.observe.access});
            C{None}: plain requests and the site's own log line.
        @param bodyGate: see L{GuardedChannel.bodyGate}.
        @param clientLimit: a L{snapstore.http.clientlimit.ClientLimit} bounding
            the connections of each client address, or C{None}.
        """
        if observer is None:
            super().__init__(resource, timeout=idleTimeout, reactor=reactor)
        else:
            super().__init__(resource, requestFactory=observer.requestFactory,
                             timeout=idleTimeout, reactor=reactor)
        self.observer = observer
        self.clientLimit = clientLimit
        self.maxBodySize = maxBodySize
        self.unboundedPaths = unboundedPaths
        self.requestTimeout = requestTimeout
        self.bodyGate = bodyGate

    def log(self, request: Any) -> None:
        if self.observer is not None:
            self.observer.logRequest(request)
        else:
            super().log(request)

    def buildProtocol(self, addr: Any) -> Any:
        host = getattr(addr, "host", None)
        if self.clientLimit is not None and host is not None:
            if not self.clientLimit.admit(host):
                return self.clientLimit.refusal(host)
        channel = super().buildProtocol(addr)
        if self.clientLimit is not None and host is not None:
            channel._admitted = (self.clientLimit, host)
        channel.maxBodySize = self.maxBodySize
        channel.unboundedPaths = self.unboundedPaths
        channel.requestTimeout = self.requestTimeout
        channel.bodyGate = self.bodyGate
        return channel
