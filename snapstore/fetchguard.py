# -*- test-case-name: tests.test_fetchguard -*-
"""
Where the service's own outbound fetches may go.

The store relay, the download path and C{/snapstore/remote/<token>} fetch
URLs that upstream chose: download redirects, icon URLs.  A hostile or
compromised upstream could point them at this machine's admin API
(C{http://127.0.0.1:8001/v1/cache/prune} answers a loopback client without
a token) or at metadata and private services behind the proxy.  So those
fetches get the forward proxy's internal-destination check
(L{snapstore.rules.connect.isInternal}): a destination that resolves to
loopback, private, link-local or other internal space, or to this
machine's own addresses, is refused unless

 - it is on the configured C{--upstream}'s own host (a store on the LAN or
   on this machine is what the operator asked for), but never one of this
   service's own listening ports there; or
 - it is listed in C{--proxy-allow-internal} (host names or networks).

The check is made on the resolved addresses and the connection then goes
to exactly those addresses, so a second DNS answer cannot slip in
another (no DNS rebinding).  With C{--upstream-proxy} the parent proxy
resolves names and this check does not apply.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Any, Callable, Iterable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from snapstore.config import Settings
from snapstore.http.endpoints import tcpPort
from snapstore.http.resolve import localAddresses, systemResolver
from snapstore.rules.connect import isInternal

Resolver = Callable[[str, int], Deferred]


class InternalDestination(ConnectError):
    """
    An outbound fetch was refused: its destination is internal.
    """


class DestinationPolicy:
    """
    Decides whether an outbound fetch may reach a host and its addresses.

    @ivar upstreamHost: the host of C{--upstream} (lower case).
    @ivar ownPorts: this service's listening ports, refused on internal
        addresses even on the upstream's host.
    @ivar allowedHosts: host names from C{--proxy-allow-internal}.
    @ivar allowedNetworks: networks from C{--proxy-allow-internal}.
    @ivar selfAddresses: this machine's addresses (counted as internal).
    """

    def __init__(self, upstreamHost: str, ownPorts: Iterable[int] = (),
                 allowInternal: Iterable[str] = (), selfAddresses: Iterable[str] = ()) -> None:
        self.upstreamHost = upstreamHost.lower().strip("[]")
        self.ownPorts = frozenset(ownPorts)
        self.allowedHosts: set[str] = set()
        self.allowedNetworks: list[Any] = []
        for item in allowInternal:
            try:
                self.allowedNetworks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.allowedHosts.add(item.lower().rstrip("."))
        self.selfAddresses = frozenset(selfAddresses)

    @classmethod
    def fromSettings(cls, settings: Settings) -> "DestinationPolicy":
        upstream = urllib.parse.urlsplit(settings.upstream)
        ports = {tcpPort(description) for description in
                 (settings.storeEndpoint, settings.adminEndpoint, settings.proxyEndpoint)}
        return cls(upstream.hostname or "", {port for port in ports if port},
                   settings.proxyAllowInternal, localAddresses())

    def refusal(self, host: str, port: int, addresses: Iterable[str]) -> Optional[str]:
        """
        Why a fetch to C{host}:C{port}, resolved to C{addresses}, is
        refused, or C{None}.
        """
        host = host.lower().strip("[]").rstrip(".")
        if host in self.allowedHosts:
            return None
        for address in addresses:
            internal = isInternal(address) or address in self.selfAddresses
            if not internal or self._allowed(address):
                continue
            if host == self.upstreamHost and port not in self.ownPorts:
                continue
            return f"destination {host}:{port} ({address}) is internal"
        return None

    def _allowed(self, address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(parsed.version == network.version and parsed in network
                   for network in self.allowedNetworks)


@implementer(IStreamClientEndpoint)
class _CheckedEndpoint:
    """
    Resolves, checks, then dials exactly the checked addresses (TLS on top
    for C{https}, verified against the host name).
    """

    def __init__(self, factory: "CheckedEndpointFactory", host: str, port: int,
                 secure: bool) -> None:
        self.factory = factory
        self.host = host
        self.port = port
        self.secure = secure

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        factory = self.factory

        def check(addresses: tuple[str, ...]) -> Any:
            why = factory.policy.refusal(self.host, self.port, addresses)
            if why is not None:
                raise InternalDestination(string=why)
            dialled = _Dialled(factory.dialer, self.host, self.port, addresses)
            if not self.secure:
                return dialled.connect(protocolFactory)
            creator = factory.tlsPolicy.creatorForNetloc(self.host.encode("idna"), self.port)
            return wrapClientTLS(creator, dialled).connect(protocolFactory)

        return factory.resolve(self.host, self.port).addCallback(check)


@implementer(IStreamClientEndpoint)
class _Dialled:
    def __init__(self, dialer: Any, host: str, port: int, addresses: tuple[str, ...]) -> None:
        self.dialer = dialer
        self.host = host
        self.port = port
        self.addresses = addresses

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        return self.dialer.dial(self.host, self.port, self.addresses, protocolFactory)


@implementer(IAgentEndpointFactory)
class CheckedEndpointFactory:
    """
    The endpoints of an L{Agent} whose every connection is checked by a
    L{DestinationPolicy}.
    """

    def __init__(self, policy: DestinationPolicy, resolve: Resolver, dialer: Any,
                 tlsPolicy: Any) -> None:
        self.policy = policy
        self.resolve = resolve
        self.dialer = dialer
        self.tlsPolicy = tlsPolicy

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii") if isinstance(uri.host, bytes) else uri.host
        return _CheckedEndpoint(self, host, uri.port, uri.scheme == b"https")


def checkedEndpoints(reactor: Any, settings: Any, tlsPolicy: Any,
                     dialer: Any) -> CheckedEndpointFactory:
    """
    The endpoints of the direct outbound agent: each connection checked
    by the L{DestinationPolicy} of C{settings}, dialled by C{dialer}
    (L{snapstore.outbound.DirectDialer}: the checked addresses only), TLS
    verified by C{tlsPolicy}.
    """
    return CheckedEndpointFactory(DestinationPolicy.fromSettings(settings),
                                  _literalsFirst(systemResolver(reactor)),
                                  dialer, tlsPolicy)


def _literalsFirst(resolve: Resolver) -> Resolver:
    """
    C{resolve}, except that IP literals stand for themselves.
    """
    from twisted.internet.defer import succeed

    def resolveLiteral(host: str, port: int) -> Deferred:
        try:
            ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return resolve(host, port)
        return succeed((host.strip("[]"),))

    return resolveLiteral
