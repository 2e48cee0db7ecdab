# -*- test-case-name: tests.test_forward,tests.test_fetchguard -*-
"""
Names and addresses: resolving a host name off the reactor thread, and
this machine's own addresses (which no proxied or outbound connection may
be pointed back at).
"""

from __future__ import annotations

import socket
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool


def systemResolver(reactor: IReactorThreads) -> Callable[[str, int], Deferred[tuple[str, ...]]]:
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
                if family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in seen:
                    seen.append(str(address[0]))
            return tuple(seen)

        return deferToThreadPool(reactor, reactor.getThreadPool(), lookup)

    return resolve


def localAddresses() -> set[str]:
    """
    The addresses this machine answers on: loopback and those its host
    name resolves to.
    """
    found = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]))
    except OSError:
        pass
    return found
