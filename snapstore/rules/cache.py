# -*- test-case-name: tests.test_rules -*-
"""
The cache policy rule: what the proxy keeps and for how long.

Blobs are addressed by their sha3-384, which the store's signed
C{snap-revision} assertion fixes, so a cached blob never goes stale and is
kept until evicted for space.  Assertions can be revised (a
C{snap-declaration} changes when store permissions do), so each type gets a
time to live.  Refresh, info and find answers are per device and change
whenever a channel moves: they are never cached.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from zope.interface import implementer

from snapstore.interfaces import ICacheRule
from snapstore.rules.values import NO_CACHE, CachePolicy, ResponseHead, StoreRequest

#: Answers that describe what a device should install: never cached.
PER_DEVICE = ("refresh", "info", "find")


@implementer(ICacheRule)
class CacheRule:
    """
    Decides cache policies from a few settings.

    @ivar cacheBlobs: whether snap, delta and resource blobs are cached.
    @ivar assertionTTLs: seconds per assertion type; C{None} means until
        evicted.
    @ivar defaultAssertionTTL: seconds for types not listed; C{0} means
        assertions of unlisted types are not cached.
    """

    def __init__(self, cacheBlobs: bool = True,
                 assertionTTLs: Optional[Mapping[str, Optional[float]]] = None,
                 defaultAssertionTTL: Optional[float] = 3600.0,
                 name: str = "cache") -> None:
        self.name = name
        self.cacheBlobs = cacheBlobs
        self.assertionTTLs = dict(assertionTTLs or {})
        self.defaultAssertionTTL = defaultAssertionTTL
        for kind, ttl in [*self.assertionTTLs.items(), ("default", defaultAssertionTTL)]:
            if ttl is not None and (not isinstance(ttl, (int, float)) or ttl < 0):
                raise ValueError(f"TTL for {kind} must be None or seconds >= 0, not {ttl!r}")

    def policy(self, request: StoreRequest, response: ResponseHead) -> Any:
        if response.kind in ("blob", "assertion") and response.code != 200:
            # Errors (a missing assertion) may be fixed upstream any time.
            return NO_CACHE
        if response.kind == "blob":
            return CachePolicy(cache=True, ttl=None) if self.cacheBlobs else NO_CACHE
        if response.kind == "assertion":
            ttl = self.assertionTTLs.get(response.assertionType, self.defaultAssertionTTL)
            if ttl == 0:
                return NO_CACHE
            return CachePolicy(cache=True, ttl=ttl)
        if response.kind in PER_DEVICE:
            return NO_CACHE
        return None
