# -*- test-case-name: tests.test_outbound -*-
"""
The one place through which the service reaches the outside world (the
upstream store, its CDN, forward-proxied origins).

Keeping every outbound connection behind this module is what lets
C{--upstream-proxy} and C{--upstream-ca} apply everywhere, and lets
C{--offline} guarantee that nothing leaves the machine.

  - L{makeAgent} builds the HTTP client the store relay and the download
    path use.  With a parent proxy, C{http://} URLs are sent to it in
    absolute form and C{https://} URLs go through a C{CONNECT} tunnel,
    inside which TLS is verified against the real origin's name.
  - L{makeDialer} builds what the forward proxy dials with: directly, to
    the addresses its rules checked, or through the parent proxy.
"""

from __future__ import annotations

import re
from base64 import b64encode
from typing import Any, Optional, Sequence
from urllib.parse import unquote

from hyperlink import URL
from twisted.internet import ssl
from twisted.internet.defer import Deferred, fail
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectionDone, TimeoutError
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ProxyAgent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from snapstore.fetchguard import checkedEndpoints
from snapstore.http.bodies import BytesProducer
from snapstore.http.client import IDEMPOTENT, ConnectionPool, SentRequest, encodeRequest
from snapstore.interfaces import IServiceReactor

CONNECT_TIMEOUT = 10
MAX_CONNECT_RESPONSE = 16384


def tlsPolicy(caFile: str | None) -> BrowserLikePolicyForHTTPS:
    """
    TLS verification for upstream: the system trust store, or only the
    certificates of C{caFile} when given.

    @raise ValueError: when C{caFile} cannot be read or holds no certificate.
    """
    if caFile is None:
        return BrowserLikePolicyForHTTPS()
    try:
        pem = FilePath(caFile).getContent()
    except OSError as error:
        raise ValueError(f"cannot read CA bundle {caFile}: {error.strerror}")
    certificates = []
    marker = b"-----END CERTIFICATE-----"
    for chunk in pem.split(marker):
        if b"-----BEGIN CERTIFICATE-----" in chunk:
            certificates.append(ssl.Certificate.loadPEM(chunk + marker))
    if not certificates:
        raise ValueError(f"no PEM certificate in CA bundle {caFile}")
    return BrowserLikePolicyForHTTPS(trustRoot=ssl.trustRootFromCertificates(certificates))


def makePool(reactor: IServiceReactor) -> HTTPConnectionPool:
    """
    A persistent connection pool, so that relayed API calls reuse upstream
    connections instead of paying a TCP and TLS handshake each.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    # Enough to keep one connection per concurrent relayed call: with 16,
    # 100 concurrent refreshes opened and closed 84 upstream connections
    # per round (bench/relay.py: 701 -> 957 requests/s with 128).
    pool.maxPersistentPerHost = 128
    pool.cachedConnectionTimeout = 60
    return pool


class ParentProxy:
    """
    A parent HTTP proxy, parsed from C{--upstream-proxy}.

    @ivar host: its host name or address.
    @ivar port: its port (80 when the URL names none).
    @ivar authorization: the C{Proxy-Authorization} value when the URL
        carried C{user:password@}, else C{None}.
    """

    def __init__(self, url: str) -> None:
        parsed = URL.from_text(url)
        if parsed.scheme != "http" or not parsed.host:
            raise ValueError(f"parent proxy must be an http:// URL, not {url!r}")
        self.host = parsed.host
        self.port = parsed.port or 80
        self.authorization: Optional[bytes] = None
        if parsed.userinfo:
            credentials = unquote(parsed.userinfo).encode("utf-8")
            self.authorization = b"Basic " + b64encode(credentials)

    def endpoint(self, reactor: IServiceReactor, timeout: float) -> HostnameEndpoint:
        """
        An endpoint reaching the parent itself.
        """
        return HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)


class TunnelError(ConnectError):
    """
    The parent proxy refused or failed a C{CONNECT}.

    @ivar code: its status code (0 when it sent no valid answer).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(string=reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


@implementer(IHalfCloseableProtocol)
class _ConnectClient(Protocol):
    """
    Sends C{CONNECT} to a parent proxy, waits for its 2xx, then hands the
    connection to the real protocol and passes every later event on.
    """

    #: A TCP transport (or TLS over one) once connected; Twisted types
    #: it as an optional L{ITransport}, which lacks the producer and
    #: abort methods used here.
    transport: Any

    def __init__(self, clock: IReactorTime, target: bytes, authorization: Optional[bytes],
                 factory: IProtocolFactory, established: Deferred[Any], timeout: float) -> None:
        self.clock = clock
        self.target = target
        self.authorization = authorization
        # Not 'factory': Factory.buildProtocol overwrites that attribute.
        self.innerFactory = factory
        self.established = established
        self.timeout = timeout
        self.inner: Optional[Any] = None
        self._buffer = b""
        self._timer: Any = None

    def connectionMade(self) -> None:
        lines = [b"CONNECT " + self.target + b" HTTP/1.1", b"Host: " + self.target]
        if self.authorization:
            lines.append(b"Proxy-Authorization: " + self.authorization)
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
        self._timer = self.clock.callLater(self.timeout, self._timedOut)

    def _timedOut(self) -> None:
        self._timer = None
        self._fail(TimeoutError(string="parent proxy did not answer CONNECT"))

    def _fail(self, reason: Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.established.called:
            self.established.errback(Failure(reason))
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        from snapstore.http.head import HeadError, findHeadEnd, parseHead

        self._buffer += data
        end = findHeadEnd(self._buffer)
        if end == -1:
            if len(self._buffer) > MAX_CONNECT_RESPONSE:
                self._fail(TunnelError(0, "parent proxy sent an oversized answer to CONNECT"))
            return
        try:
            head = parseHead(self._buffer[:end], request=False)
        except HeadError as error:
            self._fail(TunnelError(0, f"parent proxy: {error.reason}"))
            return
        code = int(head.first[1])
        if not 200 <= code < 300:
            phrase = head.first[2].decode("latin-1")
            self._fail(TunnelError(code, f"parent proxy refused CONNECT: {code} {phrase}"))
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rest, self._buffer = self._buffer[end:], b""
        inner = self.innerFactory.buildProtocol(self.transport.getPeer())
        if inner is None:
            self._fail(TunnelError(0, "connection refused by the local factory"))
            return
        self.inner = inner
        inner.makeConnection(self.transport)
        self.established.callback(inner)
        if rest:
            inner.dataReceived(rest)

    def readConnectionLost(self) -> None:
        if self.inner is not None and IHalfCloseableProtocol.providedBy(self.inner):
            self.inner.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self.inner is not None and IHalfCloseableProtocol.providedBy(self.inner):
            self.inner.writeConnectionLost()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.inner is not None:
            self.inner.connectionLost(reason)
        elif not self.established.called:
            self.established.errback(
                Failure(TunnelError(0, "parent proxy closed the connection during CONNECT")))


@implementer(IStreamClientEndpoint)
class ConnectTunnelEndpoint:
    """
    An endpoint that reaches C{host:port} through a parent proxy's
    C{CONNECT} (twisted ticket 5324 is still open).  Wrap it with
    L{wrapClientTLS} for HTTPS origins, so TLS runs end to end.
    """

    def __init__(self, reactor: IServiceReactor, parent: ParentProxy, host: str, port: int,
                 timeout: float = CONNECT_TIMEOUT) -> None:
        self.reactor = reactor
        self.parent = parent
        self.host = host
        self.port = port
        self.timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        established: Deferred[Any] = Deferred()
        host = self.host.encode("idna")
        if b":" in host:
            host = b"[" + host + b"]"
        target = host + b":%d" % (self.port,)
        factory = Factory.forProtocol(lambda: _ConnectClient(
            self.reactor, target, self.parent.authorization, protocolFactory, established,
            self.timeout))
        factory.noisy = False
        connecting = self.parent.endpoint(self.reactor, self.timeout).connect(factory)

        def connected(protocol: Any) -> Deferred[Any]:
            return protocol.established

        return connecting.addCallback(connected)


@implementer(IAgentEndpointFactory)
class _TunnelEndpointFactory:
    """
    Endpoints for C{https://} URLs through the parent: TLS inside CONNECT.
    """

    def __init__(self, reactor: IServiceReactor, parent: ParentProxy, policy: Any, timeout: float) -> None:
        self.reactor = reactor
        self.parent = parent
        self.policy = policy
        self.timeout = timeout

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        tunnel = ConnectTunnelEndpoint(self.reactor, self.parent, host, uri.port, self.timeout)
        if uri.scheme == b"https":
            return wrapClientTLS(self.policy.creatorForNetloc(uri.host, uri.port), tunnel)
        return tunnel


@implementer(IAgent)
class ParentProxyAgent:
    """
    An agent that sends everything through a parent HTTP proxy: C{http://}
    in absolute form (L{ProxyAgent}), C{https://} through C{CONNECT}.
    """

    def __init__(self, reactor: IServiceReactor, parent: ParentProxy, policy: Any,
                 pool: HTTPConnectionPool, timeout: float = CONNECT_TIMEOUT) -> None:
        self.parent = parent
        self._plain = ProxyAgent(parent.endpoint(reactor, timeout), reactor, pool)
        self._tunnelled = Agent.usingEndpointFactory(
            reactor, _TunnelEndpointFactory(reactor, parent, policy, timeout), pool)

    def request(self, method: bytes, uri: bytes, headers: Any = None,
                bodyProducer: Any = None) -> Deferred[Any]:
        if uri.lower().startswith(b"https://"):
            return self._tunnelled.request(method, uri, headers, bodyProducer)
        if self.parent.authorization is not None:
            from twisted.web.http_headers import Headers

            headers = headers.copy() if headers is not None else Headers()
            headers.setRawHeaders(b"proxy-authorization", [self.parent.authorization])
        return self._plain.request(method, uri, headers, bodyProducer)


def makeAgent(reactor: IServiceReactor, settings: Any, pool: HTTPConnectionPool | None = None,
              connections: ConnectionPool | None = None) -> IAgent:
    """
    Build the outbound agent for C{settings} (C{upstreamCa},
    C{upstreamProxy}).  An offline node is given no such agent: the
    composition root gives it L{snapstore.offline.agent.RefusingAgent}.

    @param connections: the direct agent's connection pool (a service to
        stop with the store); a new one when not given.
    """
    if pool is None:
        pool = makePool(reactor)
    policy = tlsPolicy(settings.upstreamCa)
    upstreamProxy = settings.upstreamProxy
    if upstreamProxy:
        return ParentProxyAgent(reactor, ParentProxy(upstreamProxy), policy, pool)
    # Redirects and remote URLs come from upstream: checked like forward
    # proxy destinations (snapstore.fetchguard).
    endpoints = checkedEndpoints(reactor, settings, policy, DirectDialer(reactor, CONNECT_TIMEOUT))
    return OriginAgent(reactor, endpoints, pool, connections)


#: An absolute http(s) URI: its origin (scheme and authority) and what
#: follows in origin form, without a fragment, spaces or control bytes.
_ORIGIN_FORM = re.compile(rb"^(https?://[^/?#\x00-\x20\x7f]+)(/[^#\x00-\x20\x7f]*)$")
#: Origins remembered by an L{OriginAgent} (others take the generic path).
MAX_ORIGINS = 64
#: Methods the direct agent sends itself (others take the generic path).
_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"))


@implementer(IAgent)
class OriginAgent:
    """
    The direct agent: requests to an origin it knows go out on this
    service's own HTTP/1.1 client (L{snapstore.http.client}), not through
    the generic L{Agent}.

    The generic agent parses every URI, copies the headers to add C{Host},
    builds a request object and a connection wrapper, and parses the answer
    header by header: about a tenth of a relayed refresh's cost (issue 20).
    This agent learns an origin once (upstream's API host, its CDN: its
    pool key, C{Host} value and endpoint), then writes each request in one
    write from the raw header pairs on an idle kept-alive connection of
    that origin, or on a new one through the same checked endpoint
    (destination checks, TLS verification), and gets Twisted's response
    contract and errors back (see L{snapstore.http.client}).  A URI, a
    method or a body it does not recognise goes the generic way, which
    validates it as before.
    """

    def __init__(self, reactor: IServiceReactor, endpoints: IAgentEndpointFactory,
                 pool: HTTPConnectionPool, connections: Optional[ConnectionPool] = None) -> None:
        self.pool = pool
        self.endpoints = endpoints
        self.connections = connections if connections is not None else makeConnections(reactor)
        self._generic = Agent.usingEndpointFactory(reactor, endpoints, pool)
        # origin bytes -> (pool key, Host value, endpoint)
        self._origins: dict[bytes, tuple[tuple[bytes, bytes, int], bytes, IStreamClientEndpoint]] = {}

    def request(self, method: bytes, uri: bytes, headers: Optional[Headers] = None,
                bodyProducer: Any = None) -> Deferred[Any]:
        match = _ORIGIN_FORM.match(uri)
        if (match is None or method not in _METHODS or not uri.isascii()
                or (headers is not None and headers.hasHeader(b"host"))):
            return self._generic.request(method, uri, headers, bodyProducer)
        body = None
        if bodyProducer is not None:
            if not isinstance(bodyProducer, BytesProducer):
                return self._generic.request(method, uri, headers, bodyProducer)
            body = bodyProducer.body
        origin, target = match.groups()
        known = self._origins.get(origin)
        if known is None:
            known = self._learn(origin)
            if known is None:
                return self._generic.request(method, uri, headers, bodyProducer)
        key, host, endpoint = known
        if headers is None:
            headers = Headers()
        return self.connections.request(
            key, endpoint, method, encodeRequest(method, target, host, headers, body),
            SentRequest(method, uri, headers), body is None and method in IDEMPOTENT)

    def _learn(self, origin: bytes) -> Optional[tuple[tuple[bytes, bytes, int], bytes,
                                                      IStreamClientEndpoint]]:
        if len(self._origins) >= MAX_ORIGINS:
            return None
        parsed = URI.fromBytes(origin + b"/")
        key = (parsed.scheme, parsed.host, parsed.port)
        default = 443 if parsed.scheme == b"https" else 80
        # As the generic agent computes it.
        host = parsed.host
        if isIPv6Address(host.decode("ascii", "replace")):
            host = b"[" + host + b"]"
        if parsed.port != default:
            host += b":%d" % (parsed.port,)
        known = (key, host, self.endpoints.endpointForURI(parsed))
        self._origins[origin] = known
        return known


def makeConnections(reactor: IServiceReactor) -> ConnectionPool:
    """
    The direct agent's idle upstream connections: one per concurrent
    relayed call (see L{makePool}), closed after a minute unused.
    """
    return ConnectionPool(reactor, maxPerKey=128, idleTimeout=60)


class DirectDialer:
    """
    Dials forward-proxy destinations directly, by the addresses the connect
    rules checked (never by re-resolving the name).

    @ivar viaParent: false: relayed requests go out in origin form.
    """

    viaParent = False

    def __init__(self, reactor: IServiceReactor, timeout: float = CONNECT_TIMEOUT) -> None:
        self.reactor = reactor
        self.timeout = timeout

    def dial(self, host: str, port: int, addresses: Sequence[str],
             factory: IProtocolFactory) -> Deferred[Any]:
        """
        Connect to the first of C{addresses} that accepts.

        @return: a Deferred firing with the protocol; it fails with
            L{TimeoutError} when every attempt timed out, else with the
            last connection error.
        """
        remaining = list(addresses)
        if not remaining:
            return fail(ConnectError(string=f"no address to connect to for {host}"))
        errors: list[Failure] = []

        def attempt(_: object = None) -> Deferred[Any]:
            address = remaining.pop(0)
            return self._endpoint(address, port).connect(factory).addErrback(failed)

        def failed(failure: Failure) -> Any:
            errors.append(failure)
            if remaining:
                return attempt()
            timedOut = [f for f in errors if f.check(TimeoutError)]
            return timedOut[0] if timedOut else failure

        return attempt()

    tunnel = dial

    def _endpoint(self, address: str, port: int) -> IStreamClientEndpoint:
        """
        An endpoint for one checked address.  A literal is connected to as
        it is: L{HostnameEndpoint} would send even C{127.0.0.1} through
        C{getaddrinfo} in the reactor's thread pool, a thread hop per new
        upstream connection (2-9 ms median, up to 36 ms under load, when
        several open at once).
        """
        if isIPAddress(address):
            return TCP4ClientEndpoint(self.reactor, address, port, timeout=self.timeout)
        if isIPv6Address(address):
            return TCP6ClientEndpoint(self.reactor, address, port, timeout=self.timeout)
        return HostnameEndpoint(self.reactor, address, port, timeout=self.timeout)


class ParentDialer:
    """
    Dials forward-proxy destinations through the parent proxy: tunnels with
    C{CONNECT}, relayed requests by connecting to the parent, which then
    gets them in absolute form (L{viaParent}).
    """

    viaParent = True

    def __init__(self, reactor: IServiceReactor, parent: ParentProxy, timeout: float = CONNECT_TIMEOUT) -> None:
        self.reactor = reactor
        self.parent = parent
        self.timeout = timeout

    def dial(self, host: str, port: int, addresses: Sequence[str],
             factory: IProtocolFactory) -> Deferred[Any]:
        return self.parent.endpoint(self.reactor, self.timeout).connect(factory)

    def tunnel(self, host: str, port: int, addresses: Sequence[str],
               factory: IProtocolFactory) -> Deferred[Any]:
        return ConnectTunnelEndpoint(self.reactor, self.parent, host, port,
                                     self.timeout).connect(factory)


def makeDialer(reactor: IServiceReactor, settings: Any, timeout: float = CONNECT_TIMEOUT) -> Any:
    """
    What the forward proxy dials with, for C{settings.upstreamProxy}.
    """
    upstreamProxy = settings.upstreamProxy
    if upstreamProxy:
        return ParentDialer(reactor, ParentProxy(upstreamProxy), timeout)
    return DirectDialer(reactor, timeout)
