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

They are mounted on L{snapstore.admin.api.AdminAPI} by L{mountUplink}, so
that they share its authorisation, error shape and access log.
"""

from __future__ import annotations

import json
from typing import Any

from snapstore.uplink.follow import normaliseFollow


class UplinkRoutes:
    """
    The handlers, in the admin API's shape: C{(request, caller, ...)} to
    C{(status, JSON value)}.
    """

    def __init__(self, uplink: Any, state: Any) -> None:
        self.uplink = uplink
        self.state = state

    async def listFollows(self, request: Any, caller: Any) -> tuple[int, Any]:
        return 200, {"follows": self.uplink.follows.list()}

    async def follow(self, request: Any, caller: Any) -> tuple[int, Any]:
        from snapstore.admin.api import APIError

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
        from snapstore.admin.api import APIError

        before = self.uplink.follows.remove(snap)
        if before is None:
            raise APIError(404, "not-found", f"{snap} is not followed")
        await self.state.appendAudit(caller.actor, "unfollow", f"follow:{snap}", before, None)
        return 200, {"follows": self.uplink.follows.list()}

    async def runNow(self, request: Any, caller: Any) -> tuple[int, Any]:
        from snapstore.admin.api import APIError

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


def mountUplink(api: Any, uplink: Any) -> UplinkRoutes:
    """
    Add the follow routes to an admin API resource, and the uplink's state
    to its status answer.
    """
    routes = UplinkRoutes(uplink, api.state)
    api._routes.extend([
        (b"GET", ("v1", "follows"), routes.listFollows),
        (b"POST", ("v1", "follows"), routes.follow),
        (b"POST", ("v1", "follows", "run"), routes.runNow),
        (b"DELETE", ("v1", "follows", "*"), routes.unfollow),
    ])
    for index, (method, pattern, handler) in enumerate(api._routes):
        if (method, pattern) == (b"GET", ("v1", "status")):
            api._routes[index] = (method, pattern, _withUplink(handler, routes))
    return routes


def _withUplink(status: Any, routes: UplinkRoutes) -> Any:
    async def statusWithUplink(request: Any, caller: Any) -> tuple[int, Any]:
        code, answer = await status(request, caller)
        if isinstance(answer, dict):
            answer["uplink"] = routes.status()
        return code, answer

    return statusWithUplink
