# -*- test-case-name: tests.test_dashboard -*-
"""
The admin API's traffic area: the history the dashboard charts, for
scripts too.

    GET    /v1/traffic[?since=POSIX]   {"bucket": SECONDS, "buckets": [{"start",
                                        "from-cache", "from-upstream"}]}

The history is sampled first, so it reaches the present.  C{since}
defaults to 24 hours ago.
"""

from __future__ import annotations

from typing import Any

from snapstore.admin.router import Router, timeArgument
from snapstore.observe.traffic import BUCKET

#: The default span of an answer.
DAY = 24 * 3600.0


class TrafficRoutes:
    """
    @ivar sampler: the L{snapstore.observe.traffic.TrafficSampler}.
    @ivar history: the state store's L{snapstore.interfaces.ITrafficHistory}.
    """

    def __init__(self, clock: Any, sampler: Any, history: Any) -> None:
        self.clock = clock
        self.sampler = sampler
        self.history = history

    def register(self, router: Router) -> None:
        router.add(b"GET", ("v1", "traffic"), self.traffic)

    async def traffic(self, request: Any, caller: Any) -> tuple[int, Any]:
        since = timeArgument(request, b"since")
        if since is None:
            since = float(self.clock.seconds()) - DAY
        await self.sampler.sample()
        buckets = await self.history.listTraffic(since)
        return 200, {"bucket": BUCKET, "now": float(self.clock.seconds()),
                     "buckets": [{"start": b.start, "from-cache": b.fromCache,
                                  "from-upstream": b.fromUpstream} for b in buckets]}
