# -*- test-case-name: tests.test_outbound -*-
"""
The one HTTP client through which the service reaches the outside world
(the upstream store, its CDN, forward-proxied origins).

Keeping every outbound connection behind one factory is what lets
C{--upstream-proxy} and C{--upstream-ca} apply everywhere, and lets
C{--offline} guarantee that nothing leaves the machine.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl
from twisted.python.filepath import FilePath
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IAgent

CONNECT_TIMEOUT = 10


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


def makePool(reactor: Any) -> HTTPConnectionPool:
    """
    A persistent connection pool, so that relayed API calls reuse upstream
    connections instead of paying a TCP and TLS handshake each.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    pool.cachedConnectionTimeout = 60
    return pool


def makeAgent(reactor: Any, settings: Any, pool: HTTPConnectionPool | None = None) -> IAgent:
    """
    Build the outbound agent for C{settings} (C{upstreamCa},
    C{upstreamProxy}).
    """
    if pool is None:
        pool = makePool(reactor)
    return Agent(
        reactor,
        contextFactory=tlsPolicy(settings.upstreamCa),
        connectTimeout=CONNECT_TIMEOUT,
        pool=pool,
    )
