# -*- test-case-name: tests.test_admin -*-
"""
The admin API's overrides area: pins that hold a snap's channel at a
revision for every device of this store.

    GET    /v1/overrides[/SNAP]            list pins
    POST   /v1/overrides/SNAP              {"channel-map": [{"channel", "revision"}]}
    DELETE /v1/overrides/SNAP?channel=C    remove pins
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import maybeDeferred
from twisted.web.server import Request

from snapstore.admin.auth import Caller
from snapstore.admin.router import APIError, Router, readJSON
from snapstore.interfaces import IStateStore
from snapstore.rules.overrides import OverrideError, resolveOverrides
from snapstore.state.records import Override, normaliseChannel


def overrideJSON(override: Override) -> dict[str, Any]:
    """
    The API's spelling of a pin.
    """
    return {
        "snap": override.snapName,
        "snap-id": override.snapId,
        "channel": override.channel,
        "revision": override.revision,
        "architecture": override.architecture,
        "created-at": override.createdAt,
    }


class OverrideRoutes:
    """
    @ivar upstream: the upstream client pins are checked against.
    @ivar resolveOverride: C{(upstream, snap, channel, revision) ->
        [Override]} (or a Deferred firing with it): one pin per architecture
        the revision exists for upstream.
    """

    def __init__(self, state: IStateStore, upstream: Any,
                 resolveOverride: Callable[..., Any] = resolveOverrides) -> None:
        self.state = state
        self.upstream = upstream
        self.resolveOverride = resolveOverride

    def register(self, router: Router) -> None:
        router.add(b"GET", ("v1", "overrides"), self.listOverrides)
        router.add(b"GET", ("v1", "overrides", "*"), self.listOverrides)
        router.add(b"POST", ("v1", "overrides", "*"), self.setOverrides)
        router.add(b"DELETE", ("v1", "overrides", "*"), self.deleteOverride)

    async def listOverrides(self, request: Request, caller: Caller,
                            snapName: Optional[str] = None) -> tuple[int, Any]:
        overrides = await self.state.listOverrides(snapName)
        return 200, {"overrides": [overrideJSON(o) for o in overrides]}

    async def setOverrides(self, request: Request, caller: Caller,
                           snapName: str) -> tuple[int, Any]:
        resolved = await self.resolveOverrides(request, snapName)
        results = []
        for override in resolved:
            previous = await self.state.setOverride(override, caller.actor)
            results.append({"override": overrideJSON(override),
                            "previous": overrideJSON(previous) if previous else None})
        return 200, {"set": results}

    async def resolveOverrides(self, request: Request, snapName: str) -> list[Override]:
        """
        The pins a C{POST /v1/overrides/SNAP} body asks for, checked
        against upstream (one per architecture); nothing is set.
        """
        body = readJSON(request)
        channelMap = body.get("channel-map") if isinstance(body, dict) else None
        if not isinstance(channelMap, list) or not channelMap:
            raise APIError(400, "bad-request",
                           'body must be {"channel-map": [{"channel": C, "revision": N}, ...]}')
        wanted = []
        for item in channelMap:
            channel = item.get("channel") if isinstance(item, dict) else None
            revision = item.get("revision") if isinstance(item, dict) else None
            if not isinstance(channel, str) or not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
                raise APIError(400, "bad-request",
                               f"each channel-map entry needs a channel and a positive "
                               f"integer revision, not {item!r}")
            try:
                normaliseChannel(channel)
            except ValueError as error:
                raise APIError(400, "bad-channel", str(error))
            wanted.append((channel, revision))
        resolved = []
        for channel, revision in wanted:
            try:
                overrides = await maybeDeferred(self.resolveOverride, self.upstream,
                                                snapName, channel, revision)
            except OverrideError as error:
                raise APIError(404, "override-unknown-revision", str(error))
            except Exception as error:
                if getattr(error, "status", None) in (502, 504):
                    raise APIError(502, "upstream-unavailable",
                                   f"cannot check {snapName} revision {revision} upstream: "
                                   f"{getattr(error, 'message', error)}")
                raise
            resolved.extend(overrides)
        return resolved

    async def deleteOverride(self, request: Request, caller: Caller,
                             snapName: str) -> tuple[int, Any]:
        channels = [c.decode("utf-8") for c in request.args.get(b"channel", [])]
        if not channels:
            raise APIError(400, "bad-request", "say which channel: ?channel=latest/stable")
        removed = []
        for channel in channels:
            try:
                normaliseChannel(channel)
            except ValueError as error:
                raise APIError(400, "bad-channel", str(error))
            removed.extend(await self.state.deleteOverride(snapName, channel, caller.actor))
        if not removed:
            raise APIError(404, "no-override",
                           f"{snapName} has no override on {', '.join(channels)}")
        return 200, {"deleted": [overrideJSON(o) for o in removed]}
