# -*- test-case-name: tests.test_admin -*-
"""
The admin API's cache area.

    GET    /v1/cache              cache statistics
    POST   /v1/cache/prune        empty the cache (audited)
    POST   /v1/cache/verify       re-hash blobs, drop bad ones
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import maybeDeferred
from twisted.web.server import Request

from snapstore.admin.auth import Caller
from snapstore.admin.router import APIError, Router
from snapstore.interfaces import IBlobCache, IStateStore


class CacheRoutes:
    """
    @ivar cache: the blob cache, or C{None} (no cache: 404 C{no-cache}).
    @ivar metrics: the L{snapstore.observe.metrics.Metrics} whose cache
        gauges each answer brings up to date.
    """

    def __init__(self, state: IStateStore, cache: Optional[IBlobCache], metrics: Any) -> None:
        self.state = state
        self.cache = cache
        self.metrics = metrics

    def register(self, router: Router) -> None:
        router.add(b"GET", ("v1", "cache"), self.cacheStats)
        router.add(b"POST", ("v1", "cache", "prune"), self.cachePrune)
        router.add(b"POST", ("v1", "cache", "verify"), self.cacheVerify)

    async def stats(self) -> Optional[dict[str, Any]]:
        """
        The cache's statistics in the API's spelling (C{None} without a
        cache); updates the cache gauges.
        """
        if self.cache is None:
            return None
        stats = await maybeDeferred(self.cache.stats)
        size = stats.get("usedSize", stats.get("size", 0))
        bound = stats.get("maxSize", self.cache.maxSize)
        self.metrics.cacheSize(size, bound)
        return {
            "blobs": stats.get("blobs"),
            "size": size,
            "bound": bound,
            "filling": stats.get("filling"),
            "pinned": stats.get("pinned"),
            "hit-ratio": self.metrics.hitRatio(),
            "directory": self.directory(),
        }

    def directory(self) -> Optional[str]:
        """
        The cache directory's path, or C{None} without a cache.
        """
        return self.cache.directory.path if self.cache is not None else None

    def _needCache(self) -> IBlobCache:
        if self.cache is None:
            raise APIError(404, "no-cache", "this snapstore runs without a blob cache")
        return self.cache

    async def cacheStats(self, request: Request, caller: Caller) -> tuple[int, Any]:
        self._needCache()
        return 200, await self.stats()

    async def cachePrune(self, request: Request, caller: Caller) -> tuple[int, Any]:
        cache = self._needCache()
        before = await self.stats()
        removed = 0
        freed = 0
        for digest, size, _pins in list(cache.entries()):
            if cache.remove(digest):
                removed += 1
                freed += size
        result = {"removed": removed, "freed": freed}
        after = await self.stats()
        assert before is not None and after is not None
        await self.state.appendAudit(caller.actor, "cache.prune", "cache",
                                     {"blobs": before["blobs"], "size": before["size"]},
                                     {"blobs": after["blobs"], "size": after["size"]})
        return 200, {"result": result, "cache": after}

    async def cacheVerify(self, request: Request, caller: Caller) -> tuple[int, Any]:
        cache = self._needCache()
        bad = list(await maybeDeferred(cache.verify) or [])
        if bad:
            await self.state.appendAudit(caller.actor, "cache.verify", "cache", None,
                                         {"removed": bad})
        return 200, {"removed": bad, "ok": not bad, "cache": await self.stats()}
