# -*- test-case-name: tests.test_offline -*-
"""
The admin API's offline routes:

 - C{POST /v1/import}: the body is a bundle (C{application/x-tar}); it is
   verified and imported whole, or refused (400 C{bundle-refused}, naming
   the first bad member) with nothing changed.
 - C{GET /v1/imported}: what this node can serve from imported content.

They are mounted on the admin developer's L{snapstore.admin.api.AdminAPI}
by L{mountOffline}, so that they share its authorisation, error shape and
access log.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger

from snapstore.offline.bundle import BundleError
from snapstore.offline.importer import Importer
from snapstore.offline.roots import trustedRoots
from snapstore.offline.signatures import SignatureError

log = Logger()


class OfflineRoutes:
    """
    The handlers, in the admin API's handler shape: C{(request, caller)}
    to C{(status, JSON value)}.
    """

    def __init__(self, importer: Importer, state: Any, cache: Any) -> None:
        self.importer = importer
        self.state = state
        self.cache = cache

    async def importBundle(self, request: Any, caller: Any) -> tuple[int, Any]:
        from snapstore.admin.api import APIError

        if self.cache is None:
            raise APIError(503, "no-cache", "this snapstore has no blob cache to import into")
        if request.content is None:
            raise APIError(400, "bundle-refused", "the request has no bundle in its body")
        request.content.seek(0)
        actor = getattr(caller, "actor", None) or "admin"
        try:
            summary = await self.importer.importBundle(request.content, actor)
        except BundleError as error:
            log.warn("bundle refused: {error}", error=str(error))
            raise APIError(400, "bundle-refused", f"bundle refused, nothing imported: {error}")
        return 200, {"imported": summary}

    async def listImported(self, request: Any, caller: Any) -> tuple[int, Any]:
        snaps = await self.state.listImportedSnaps()
        return 200, {"snaps": [describeSnap(snap, self.cache) for snap in snaps]}


def describeSnap(snap: Any, cache: Any) -> dict[str, Any]:
    """
    The C{list-imported} form of an L{ImportedSnap}: its channels, and
    whether each revision's blob is in the cache (an evicted one cannot be
    served).
    """
    channels = []
    for channel in snap.channels:
        revision = snap.revisions.get(channel.revision)
        channels.append({
            "architecture": channel.architecture,
            "channel": channel.channel,
            "revision": channel.revision,
            "version": (revision.snap.get("version") if revision else None),
            "size": revision.size if revision else None,
            "cached": bool(revision and cache is not None and cache.contains(revision.sha3_384)),
        })
    return {"name": snap.snapName, "snap-id": snap.snapId,
            "summary": (snap.info.get("snap") or {}).get("summary", ""),
            "revisions": sorted(snap.revisions), "channels": channels}


def stagingDirectory(settings: Any) -> str:
    """
    Where bundles are received and staged: in the data directory, on disk
    (never C{/tmp}, which may be memory).
    """
    return os.path.join(getattr(settings, "dataDir", None) or ".", "import-staging")


def importRoots(settings: Any) -> dict[str, Any]:
    """
    The root keys imports trust: the built-in one and C{--trusted-keys}.

    @raise ValueError: naming the option, when the file is unusable.
    """
    try:
        return trustedRoots(getattr(settings, "trustedKeys", None))
    except SignatureError as error:
        raise ValueError(f"--trusted-keys: {error}")


def mountOffline(api: Any, reactor: Any, settings: Any, state: Any, cache: Any) -> OfflineRoutes:
    """
    Add the offline routes to an admin API resource.

    @param cache: the blob cache imports fill; without one (a store
        assembly without a cache) imports are refused.
    """
    staging = stagingDirectory(settings)
    importer = Importer(reactor, state, cache, staging,
                        evict=not getattr(settings, "offline", False),
                        roots=importRoots(settings))
    routes = OfflineRoutes(importer, state, cache)
    api._routes.extend([
        (b"POST", ("v1", "import"), routes.importBundle),
        (b"GET", ("v1", "imported"), routes.listImported),
    ])
    return routes
