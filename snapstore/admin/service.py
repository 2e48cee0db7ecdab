# -*- test-case-name: tests.test_admin -*-
"""
The admin endpoint's checks and site.

The composition root (C{snapstore.tap}) calls L{checkOperationSettings}
while parsing options, so that an unsafe admin endpoint or a broken TLS
file stops start-up with a clear message; it builds each area's routes,
registers them on a L{snapstore.admin.router.Router} and calls
L{makeAdminSite} when it builds the service tree.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine

from twisted.web.server import Request
from twisted.internet.interfaces import IReactorTime

from snapstore.admin.auth import AdminConfigError, Authoriser, checkAdminSettings
from snapstore.admin.crosssite import CrossSiteGuard
from snapstore.admin.dashboard.site import Dashboard
from snapstore.admin.importgate import ImportGate
from snapstore.admin.resource import AdminResource
from snapstore.admin.router import Router
from snapstore.config import Settings
from snapstore.http.guard import GuardedSite
from snapstore.http.tls import TLSConfigError, checkServerEndpoint
from snapstore.offline.importer import importRoots, stagingDirectory


def checkOperationSettings(settings: Settings) -> list[str]:
    """
    Refuse settings that would start an unsafe or broken service.

    @return: warnings to log (an expired certificate).
    @raise ValueError: (L{AdminConfigError} or L{TLSConfigError}) saying
        which option is wrong and what to do.
    """
    checkAdminSettings(settings.adminEndpoint, settings.adminTokenFile)
    importRoots(settings)
    return checkServerEndpoint(settings.storeEndpoint, "--store-endpoint")


#: The largest admin request body, bundle imports aside: admin calls send
#: small JSON documents.
ADMIN_MAX_BODY = 1 << 20


def makeAdminSite(reactor: IReactorTime, settings: Settings, router: Router,
                  scrape: Callable[[Request], Coroutine[Any, Any, None]]) -> GuardedSite:
    """
    Build the admin endpoint's site around the routes of every area.

    @param scrape: answers C{GET /metrics}.
    @raise AdminConfigError: when the token file is unreadable or the
        endpoint is unsafe.
    """
    tokens = checkAdminSettings(settings.adminEndpoint, settings.adminTokenFile)
    authoriser = Authoriser(tokens)
    # The dashboard (GET /, a login form elsewhere than loopback) reads and
    # changes state through the same routes.
    resource = AdminResource(authoriser, router, scrape, Dashboard(authoriser, router))
    # Web pages on the host must not drive the API (snapstore.admin.crosssite):
    # its checks run on every request, and on an import before the body.
    guarded = CrossSiteGuard.fromSettings(resource, settings)
    # Request deadlines, unambiguous heads, and small bounded bodies, except
    # for bundle imports: large, so admitted from their heads, bounded by
    # --import-max-size and spooled to the data directory (see
    # snapstore.http.guard and snapstore.admin.importgate).
    gate = ImportGate(authoriser, settings.importMaxSize, stagingDirectory(settings),
                      precheck=guarded.importRefusal)
    return GuardedSite(guarded, reactor=reactor, maxBodySize=ADMIN_MAX_BODY, bodyGate=gate)


__all__ = ["checkOperationSettings", "makeAdminSite", "AdminConfigError", "TLSConfigError"]
