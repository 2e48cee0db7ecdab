# -*- test-case-name: tests.test_forward -*-
"""
The forward proxy's factory: settings, limits, counters, rules, name
resolution and the access log, shared by every client connection.
"""

from __future__ import annotations

import os
import socket
from base64 import b64decode
from typing import Any, Callable, Iterable, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from snapstore.clientlimit import ClientLimit
from snapstore.forward.accesslog import AccessLog
from snapstore.forward.channel import ForwardProxyProtocol, _isIPLiteral
from snapstore.forward.head import Head
from snapstore.forward.request import localSite
from snapstore.outbound import makeDialer
from snapstore.rules.connect import builtinConnectRules, evaluateConnect
from snapstore.rules.verdicts import ConnectTarget

# RFC 6761 names that must never be sent to real DNS: tests map them with
# --proxy-hosts, and without a mapping they fail here.
_NEVER_RESOLVED = (".test", ".invalid", ".example")


def systemResolver(reactor: Any) -> Callable[[str, int], Deferred[tuple[str, ...]]]:
    """
    Resolve with C{getaddrinfo} in the reactor's thread pool (the system
    resolver, honouring C{/etc/hosts} and nsswitch like other programs).
    """

    def resolve(host: str, port: int) -> Deferred[tuple[str, ...]]:
        def lookup() -> tuple[str, ...]:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as error:
                raise DNSLookupError(f"{host}: {error.strerror}")
            seen: list[str] = []
            for family, _, _, _, address in infos:
                if family in (socket.AF_INET, socket.AF_INET6) and address[0] not in seen:
                    seen.append(address[0])
            return tuple(seen)

        return deferToThreadPool(reactor, reactor.getThreadPool(), lookup)

    return resolve


def _storePort(endpoint: Optional[str]) -> Optional[int]:
    if not endpoint:
        return None
    parts = endpoint.split(":")
    if parts[0] in ("tcp", "ssl", "tcp6") and len(parts) > 1:
        for part in parts[1:]:
            if part.isdigit():
                return int(part)
            if part.startswith("port=") and part[5:].isdigit():
                return int(part[5:])
    return None


def _localAddresses() -> set[str]:
    found = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(info[4][0])
    except OSError:
        pass
    return found


class ForwardProxyFactory(Factory):
    """
    Builds L{ForwardProxyProtocol}s and holds what they share.

    @param reactor: for connecting and threads.
    @param settings: L{snapstore.config.Settings}.
    @param clock: for timeouts (defaults to C{reactor}); tests pass a
        L{twisted.internet.task.Clock}.
    @param localResource: the store's root resource, served for requests
        that name this proxy's store endpoint; C{None} relays everything.
    @param resolver: C{resolver(host, port)} firing with address texts.
    @param rules: connect rules; default L{builtinConnectRules}.
    @param dialer: default L{snapstore.outbound.makeDialer}.
    @param accessLog: default an L{AccessLog} on C{proxyAccessLog}.
    @param splice: carry tunnels with C{splice(2)} when possible (default:
        when C{os.splice} exists); see L{snapstore.forward.splice}.
    """

    log = Logger()

    def __init__(self, reactor: Any, settings: Any, clock: Any = None,
                 localResource: Any = None, resolver: Any = None, rules: Any = None,
                 dialer: Any = None, accessLog: Optional[AccessLog] = None,
                 localNames: Iterable[str] = (), splice: Optional[bool] = None) -> None:
        self.reactor = reactor
        self.splice = hasattr(os, "splice") if splice is None else splice
        self.settings = settings
        self.clock = clock if clock is not None else reactor
        self.idleTimeout = settings.proxyIdleTimeout
        self.headerTimeout = settings.proxyHeaderTimeout
        self.connectTimeout = settings.proxyConnectTimeout
        self.maxHeaderSize = settings.proxyMaxHeaderSize
        self.maxRequestLine = settings.proxyMaxRequestLine
        self.maxHeaders = 100
        self.maxTunnels = settings.proxyMaxTunnels
        self.maxPerClient = settings.proxyMaxPerClient
        self.hostMap = dict(settings.proxyHosts)
        self.dialer = dialer if dialer is not None else makeDialer(
            reactor, settings, settings.proxyConnectTimeout)
        self._resolver = resolver if resolver is not None else systemResolver(reactor)
        self.selfAddresses = _localAddresses()
        self.passwords = None
        if rules is None:
            check = None
            if settings.proxyAuthFile:
                from snapstore.forward.auth import PasswordFile

                self.passwords = PasswordFile(settings.proxyAuthFile)
                check = self.passwords.check
            rules = builtinConnectRules(settings, check, lambda: self.selfAddresses)
        self.rules = rules
        self.accessLog = accessLog if accessLog is not None else AccessLog(settings.proxyAccessLog)
        self.localSite = localSite(localResource, reactor) if localResource is not None else None
        self.localNames = {"localhost", socket.gethostname().lower(),
                           socket.getfqdn().lower()} | set(localNames)
        self.localPorts = {port for port in (_storePort(settings.storeEndpoint),
                                             _storePort(settings.proxyEndpoint)) if port}
        publicUrl = getattr(settings, "publicUrl", None)
        if publicUrl:
            from hyperlink import URL

            url = URL.from_text(publicUrl)
            self.localNames.add(url.host.lower())
            if url.port:
                self.localPorts.add(url.port)
        self.tunnels = 0
        # The same per-address count as the store endpoint's.
        self.clients = ClientLimit(self.maxPerClient, self.clock)
        self.perClient = self.clients.open

    def buildProtocol(self, addr: Any) -> ForwardProxyProtocol:
        return ForwardProxyProtocol(self)

    # -- limits ---------------------------------------------------------------

    def clientConnected(self, address: str) -> bool:
        """
        Count a new connection from C{address}; C{False} when it is one too
        many (the caller refuses it and does not call L{clientDisconnected}).
        """
        return self.clients.admit(address)

    def clientDisconnected(self, address: str) -> None:
        self.clients.release(address)

    def openTunnel(self) -> bool:
        if self.tunnels >= self.maxTunnels:
            return False
        self.tunnels += 1
        return True

    def closeTunnel(self) -> None:
        self.tunnels -= 1

    # -- admission --------------------------------------------------------------

    def isLocal(self, host: str, port: int, connectedTo: Optional[str]) -> bool:
        """
        Whether C{host:port} names this service's store endpoint (or this
        proxy), so that the request is served locally.
        """
        if port not in self.localPorts:
            return False
        return host in self.localNames or host == connectedTo or (
            _isIPLiteral(host) and host in self.selfAddresses)

    def resolve(self, host: str, port: int) -> Deferred[tuple[str, ...]]:
        """
        The addresses C{host} stands for: the host map first, IP literals
        as they are, nothing when a parent proxy resolves names, else the
        resolver.
        """
        if host in self.hostMap:
            return succeed((self.hostMap[host],))
        if _isIPLiteral(host):
            return succeed((host,))
        if self.dialer.viaParent:
            return succeed(())
        if host.endswith(_NEVER_RESOLVED) or host in ("test", "invalid", "example"):
            return fail(DNSLookupError(f"{host} is a reserved name and not in --proxy-hosts"))
        return self._resolver(host, port)

    def checkConnect(self, target: ConnectTarget) -> Deferred[Any]:
        return evaluateConnect(self.rules, target)

    @staticmethod
    def userOf(head: Head) -> str:
        """
        The user name a request claims in C{Proxy-Authorization}, for the
        access log only (never trusted for decisions).
        """
        for value in head.get(b"proxy-authorization"):
            scheme, _, encoded = value.partition(b" ")
            if scheme.lower() == b"basic":
                try:
                    user = b64decode(encoded.strip()).split(b":", 1)[0].decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    return "-"
                return "".join(c if c.isprintable() and c != " " else "?" for c in user)[:64] or "-"
        return "-"
