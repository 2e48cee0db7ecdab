# -*- test-case-name: tests.test_admin -*-
"""
Assembling the admin endpoint from the parts of the store endpoint.

The composition root (C{snapstore.tap}) calls L{checkOperationSettings}
while parsing options, so that an unsafe admin endpoint or a broken TLS
file stops start-up with a clear message, and L{makeAdminSite} when it
builds the service tree.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.web.server import Site

from snapstore.httpguard import GuardedSite

from snapstore.admin.api import AdminAPI
from snapstore.admin.auth import AdminConfigError, Authoriser, checkAdminSettings
from snapstore.admin.clientconfig import ClientConfig
from snapstore.admin.crosssite import CrossSiteGuard
from snapstore.admin.metrics import Metrics
from snapstore.tls import TLSConfigError, checkServerEndpoint


def checkOperationSettings(settings: Any) -> list[str]:
    """
    Refuse settings that would start an unsafe or broken service.

    @return: warnings to log (an expired certificate).
    @raise ValueError: (L{AdminConfigError} or L{TLSConfigError}) saying
        which option is wrong and what to do.
    """
    checkAdminSettings(settings.adminEndpoint, settings.adminTokenFile)
    from snapstore.offline.adminapi import importRoots

    importRoots(settings)
    return checkServerEndpoint(settings.storeEndpoint, "--store-endpoint")


def cacheOf(parts: Any) -> Any:
    """
    The blob cache of the store parts: C{parts.cache} when the store
    assembly exposes it, else the download resource's.
    """
    cache = getattr(parts, "cache", None)
    if cache is None:
        download = getattr(getattr(parts, "root", None), "download", None)
        cache = getattr(download, "cache", None)
    return cache


def makeAdminAPI(reactor: Any, settings: Any, state: Any, upstream: Any,
                 metrics: Optional[Metrics] = None, cache: Any = None, rules: Any = None,
                 startedAt: Optional[float] = None) -> AdminAPI:
    """
    Build the admin API resource.

    @raise AdminConfigError: when the token file is unreadable or the
        endpoint is unsafe.
    """
    tokens = checkAdminSettings(settings.adminEndpoint, settings.adminTokenFile)
    return AdminAPI(
        reactor, state, upstream,
        metrics if metrics is not None else Metrics(),
        Authoriser(tokens),
        ClientConfig.fromSettings(settings),
        cache=cache, rules=rules, settings=settings, startedAt=startedAt,
    )


#: The largest admin request body, bundle imports aside: admin calls send
#: small JSON documents.
ADMIN_MAX_BODY = 1 << 20


def makeAdminSite(reactor: Any, settings: Any, parts: Any) -> Site:
    """
    Build the admin endpoint's site around the store parts (a
    L{snapstore.store.service.StoreParts}: its state, upstream, metrics,
    and the cache and rules when it has them).
    """
    api = makeAdminAPI(
        reactor, settings, parts.state, parts.upstream,
        metrics=getattr(parts, "metrics", None),
        cache=cacheOf(parts),
        rules=getattr(parts, "rules", None),
    )
    # Bundle import and the list of imported snaps (snapstore.offline).
    from snapstore.offline.adminapi import mountOffline, stagingDirectory
    from snapstore.offline.importgate import ImportGate

    mountOffline(api, reactor, settings, parts.state, cacheOf(parts))
    # Follows and the uplink's status (snapstore.uplink).
    if getattr(parts, "uplink", None) is not None:
        from snapstore.uplink.adminapi import mountUplink

        mountUplink(api, parts.uplink)
    # The cluster's nodes (snapstore.cluster).
    from snapstore.admin.nodes import mountNodes

    mountNodes(api, getattr(parts, "cluster", None))
    # Devices, inventory, groups, what-would-refresh, deliveries (snapstore.fleet).
    from snapstore.admin.fleet import mountFleet

    fleetRoutes = mountFleet(api)
    # Pins with scope and expiry, holds, approvals (snapstore.policy).
    from snapstore.admin.policy import mountPolicy

    mountPolicy(api, fleetRoutes)
    # Request deadlines, unambiguous heads, and small bounded bodies, except
    # for bundle imports: large, so admitted from their heads, bounded by
    # --import-max-size and spooled to the data directory (see
    # snapstore.httpguard and snapstore.offline.importgate).
    # Web pages on the host must not drive the API (snapstore.admin.crosssite):
    # its checks run on every request, and on an import before the body.
    guarded = CrossSiteGuard.fromSettings(api, settings)
    gate = ImportGate(api.authoriser, getattr(settings, "importMaxSize", 64 << 30),
                      stagingDirectory(settings), precheck=guarded.importRefusal)
    site = GuardedSite(guarded, reactor=reactor, maxBodySize=ADMIN_MAX_BODY, bodyGate=gate)
    site.displayTracebacks = False
    return site


__all__ = ["checkOperationSettings", "makeAdminAPI", "makeAdminSite", "cacheOf",
           "AdminConfigError", "TLSConfigError"]
