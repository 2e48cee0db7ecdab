# -*- test-case-name: tests.test_uplink -*-
"""
The admin API's uplink routes:

 - C{GET /v1/follows}: C{{"follows": [{"snap", "channels", "architectures",
   "fleet", "with-deps"}]}}.
 - C{POST /v1/follows}: add or replace a follow (body: one follow; for the
   fleet C{{"fleet": true}}); audited as C{follow}.
 - C{DELETE /v1/follows/<snap>} (C{*} for the fleet follow): audited as
   C{unfollow}.
 - C{POST /v1/follows/run}: run one follow round now (window or not) and
   answer with its summary once every fill has ended.
 - C{GET /v1/status} gains C{"uplink"}: whether upstream answers, since
   when it fails, whether stale answers are served and how many were.

The composition root registers them on the admin router and the
C{uplink} section on the status area, so that they share the admin
resource's authorisation, error shape and access log.
"""

from __future__ import annotations

import json
from typing import Any

from snapstore.admin.router import APIError, Router
from snapstore.uplink.follow import normaliseFollow


class UplinkRoutes:
    """
    The handlers, in the admin API's shape: C{(request, caller, ...)} to
    C{(status, JSON value)}.
    """

    def __init__(self, uplink: Any, state: Any) -> None:
        self.uplink = uplink
        self.state = state

    def register(self, router: Router) -> None:
        router.add(b"GET", ("v1", "follows"), self.listFollows)
        router.add(b"POST", ("v1", "follows"), self.follow)
        router.add(b"POST", ("v1", "follows", "run"), self.runNow)
        router.add(b"DELETE", ("v1", "follows", "*"), self.unfollow)

    async def section(self) -> dict[str, Any]:
        """
        The C{uplink} section of C{GET /v1/status}.
        """
        return self.status()

    async def listFollows(self, request: Any, caller: Any) -> tuple[int, Any]:
        return 200, {"follows": self.uplink.follows.list()}

    async def follow(self, request: Any, caller: Any) -> tuple[int, Any]:
        raw = request.content.read(1 << 20) if request.content else b""
        try:
            follow = normaliseFollow(json.loads(raw or b"null"))
        except ValueError as error:
            raise APIError(400, "bad-request", str(error))
        before = self.uplink.follows.put(follow)
        await self.state.appendAudit(caller.actor, "follow", f"follow:{follow['snap']}",
                                     before, follow)
        return 200, {"follows": self.uplink.follows.list()}

    async def unfollow(self, request: Any, caller: Any, snap: str) -> tuple[int, Any]:
        before = self.uplink.follows.remove(snap)
        if before is None:
            raise APIError(404, "not-found", f"{snap} is not followed")
        await self.state.appendAudit(caller.actor, "unfollow", f"follow:{snap}", before, None)
        return 200, {"follows": self.uplink.follows.list()}

    async def runNow(self, request: Any, caller: Any) -> tuple[int, Any]:
        if self.uplink.follower is None:
            raise APIError(503, "no-cache", "this snapstore has no blob cache to prefetch into")
        summary = await self.uplink.follower.runRound()
        return 200, summary

    def status(self) -> dict[str, Any]:
        answer = self.uplink.health.status(self.uplink.serveStale)
        answer["known"] = self.uplink.answers.counts()
        follower = self.uplink.follower
        answer["follows"] = len(self.uplink.follows.list())
        answer["last-follow-round"] = follower.lastRound.get("at") \
            if follower is not None and follower.lastRound else None
        return answer
