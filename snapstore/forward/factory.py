# -*- test-case-name: tests.test_forward -*-
"""
The forward proxy's factory: settings, limits, counters, rules, name
resolution and the access log, shared by every client connection.
"""

from __future__ import annotations

import os
import socket
from base64 import b64decode
from typing import Any, Iterable, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from snapstore.http.clientlimit import ClientLimit
from snapstore.interfaces import IServiceReactor
from snapstore.observe.accesslog import AccessLog
from snapstore.forward.channel import ForwardProxyProtocol, _isIPLiteral
from snapstore.http.endpoints import tcpPort
from snapstore.http.resolve import localAddresses, systemResolver
from snapstore.http.guard import GuardedSite
from snapstore.http.head import Head
from snapstore.outbound import makeDialer
from snapstore.rules.connect import (
    AllowRemaining,
    ClientNetworkRule,
    ProxyAuthRule,
    builtinConnectRules,
    evaluateConnect,
)
from snapstore.rules.verdicts import ConnectTarget

# RFC 6761 names that must never be sent to real DNS: tests map them with
# --proxy-hosts, and without a mapping they fail here.
_NEVER_RESOLVED = (".test", ".invalid", ".example")


class ForwardProxyFactory(Factory):
    """
    Builds L{ForwardProxyProtocol}s and holds what they share.

    @param reactor: for connecting and threads.
    @param settings: L{snapstore.config.Settings}.
    @param clock: for timeouts (defaults to C{reactor}); tests pass a
        L{twisted.internet.task.Clock}.
    @param localSite: the store's site for requests that name this
        proxy's store endpoint (the store parts' C{proxySite}: guarded and
        observed like the store endpoint); C{None} relays everything.
    @param resolver: C{resolver(host, port)} firing with address texts.
    @param rules: connect rules; default L{builtinConnectRules}.
    @param dialer: default L{snapstore.outbound.makeDialer}.
    @param accessLog: default an L{AccessLog} on C{proxyAccessLog}.
    @param splice: carry tunnels with C{splice(2)} when possible (default:
        when C{os.splice} exists); see L{snapstore.forward.splice}.
    """

    log = Logger()

    def __init__(self, reactor: IServiceReactor, settings: Any, clock: Optional[IReactorTime] = None,
                 localSite: Optional[GuardedSite] = None, resolver: Any = None, rules: Any = None,
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
        self.selfAddresses = localAddresses()
        self.passwords = None
        if rules is None:
            check = None
            if settings.proxyAuthFile:
                from snapstore.forward.auth import PasswordFile

                self.passwords = PasswordFile(settings.proxyAuthFile)
                check = self.passwords.check
            rules = builtinConnectRules(settings, check, lambda: self.selfAddresses)
        self.rules = rules
        # What holds for requests to this proxy's own store: the rules
        # about the client, not about a destination.
        self.clientRules: list[Any] = [ClientNetworkRule(settings.proxyClients)]
        if self.passwords is not None:
            self.clientRules.append(ProxyAuthRule(self.passwords.check))
        self.clientRules.append(AllowRemaining())
        self.accessLog = accessLog if accessLog is not None else AccessLog(settings.proxyAccessLog)
        self.localSite = localSite
        self.localNames = {"localhost", socket.gethostname().lower(),
                           socket.getfqdn().lower()} | set(localNames)
        self.localPorts = {port for port in (tcpPort(settings.storeEndpoint),
                                             tcpPort(settings.proxyEndpoint)) if port}
        publicUrl = settings.publicUrl
        if publicUrl:
            from hyperlink import URL

            url = URL.from_text(publicUrl)
            self.localNames.add(url.host.lower())
            if url.port:
                self.localPorts.add(url.port)
        self.tunnels = 0
        self._tunnelWaiters: list[Deferred[None]] = []
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
        if not self.tunnels:
            waiters, self._tunnelWaiters = self._tunnelWaiters, []
            for waiting in waiters:
                # The next turn: the closing tunnel's access-log line is
                # written right after this call.
                self.clock.callLater(0, waiting.callback, None)

    def whenNoTunnels(self) -> Deferred[None]:
        """
        Fire once no tunnel is open (at once when none is).
        """
        if not self.tunnels:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._tunnelWaiters.append(waiting)
        return waiting

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

    def checkClient(self, target: ConnectTarget) -> Deferred[Any]:
        """
        Ask only the rules about the client (C{--proxy-clients} and, with
        C{--proxy-auth-file}, its credentials), for a request to this
        proxy's own store.

        @return: as L{checkConnect}.
        """
        return evaluateConnect(self.clientRules, target)

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
