# -*- test-case-name: tests.test_offline -*-
"""
The admin API's offline routes:

 - C{POST /v1/import}: the body is a bundle (C{application/x-tar}); it is
   verified and imported whole, or refused (400 C{bundle-refused}, naming
   the first bad member) with nothing changed.
 - C{GET /v1/imported}: what this node can serve from imported content.

The composition root registers them on the admin router, so that they
share the admin resource's authorisation, error shape and access log.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger

from snapstore.admin.auth import Caller
from snapstore.admin.router import APIError, Router
from snapstore.interfaces import IBlobCache, IImportedContent
from snapstore.offline.bundle import BundleError
from snapstore.offline.importer import Importer

log = Logger()


class ImportRoutes:
    """
    The handlers, in the admin API's handler shape: C{(request, caller)}
    to C{(status, JSON value)}.

    @ivar cache: the blob cache imports fill; without one imports are
        refused.
    """

    def __init__(self, importer: Importer, state: IImportedContent,
                 cache: Optional[IBlobCache]) -> None:
        self.importer = importer
        self.state = state
        self.cache = cache

    def register(self, router: Router) -> None:
        router.add(b"POST", ("v1", "import"), self.importBundle)
        router.add(b"GET", ("v1", "imported"), self.listImported)

    async def importBundle(self, request: Any, caller: Caller) -> tuple[int, Any]:
        if self.cache is None:
            raise APIError(503, "no-cache", "this snapstore has no blob cache to import into")
        if request.content is None:
            raise APIError(400, "bundle-refused", "the request has no bundle in its body")
        request.content.seek(0)
        actor = caller.actor or "admin"
        try:
            summary = await self.importer.importBundle(request.content, actor)
        except BundleError as error:
            log.warn("bundle refused: {error}", error=str(error))
            raise APIError(400, "bundle-refused", f"bundle refused, nothing imported: {error}")
        return 200, {"imported": summary}

    async def listImported(self, request: Any, caller: Caller) -> tuple[int, Any]:
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
