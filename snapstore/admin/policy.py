# -*- test-case-name: tests.test_policy -*-
"""
The admin API's change-control routes (design.md section 9)::

    GET    /v1/overrides[/SNAP]              pins with scope, until, expired, reason
    POST   /v1/overrides/SNAP[?dry-run=1]    {"channel-map": [...], "group", "until", "reason"}
    DELETE /v1/overrides/SNAP?channel=C[&group=G]
    GET    /v1/holds                         {"holds": [...]}
    POST   /v1/holds[?dry-run=1]             {"snap", "channel", "group", "for" | "until-approved",
                                              "reason"}
    DELETE /v1/holds?[snap=S&channel=C&group=G]   release one hold (no snap: the --all hold)
    GET    /v1/approvals[?snap=S]            {"approvals": [...]}
    POST   /v1/approvals[?dry-run=1]         {"snap", "revision", "group", "reason"}

TIME values (C{until}) and DURATIONs (C{for}) are read here, against this
node's clock (L{snapstore.policy.timespec}).  A C{?dry-run=1} answers the
what-would-refresh document (the fleet area's report) for the state the
change would produce, and writes nothing.  Every change is audited with its
reason by the state store.  The composition root registers this area after
the overrides and fleet areas: it takes over the C{/v1/overrides} routes
(adding scope, expiry and reason), and shares the admin resource's
authorisation, error shape and access log.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import attrs

from snapstore.admin.fleet import rfc3339
from snapstore.admin.fleetview import FleetView
from snapstore.admin.overrides import OverrideRoutes, overrideJSON
from snapstore.admin.router import APIError, Router, argument
from snapstore.fleet.whatwould import withProposedPolicy
from snapstore.policy.timespec import TimeSpecError, parseDuration, parseTime
from snapstore.state.policy import Approval, Hold
from snapstore.state.records import normaliseChannel

#: Longest reason kept (it goes into every audit row).
MAX_REASON = 1000


def pinJSON(override: Any, now: float) -> dict[str, Any]:
    """
    A pin as C{list-overrides --json} shows it: the overrides area's
    spelling, with scope, expiry and reason.
    """
    return {
        **overrideJSON(override),
        "group": override.group or None,
        "until": rfc3339(override.until),
        "expired": override.expired(now),
        "reason": override.reason,
    }


def holdJSON(hold: Hold) -> dict[str, Any]:
    """
    A hold as C{holds --json} shows it.
    """
    return {"snap": hold.snapName or None, "channel": hold.channel or None,
            "group": hold.group or None,
            "for": None if hold.holdFor is None else int(hold.holdFor),
            "until-approved": hold.untilApproved, "reason": hold.reason,
            "created-at": rfc3339(hold.createdAt)}


def approvalJSON(approval: Approval) -> dict[str, Any]:
    return {"snap": approval.snapName, "revision": approval.revision,
            "group": approval.group or None, "reason": approval.reason,
            "created-at": rfc3339(approval.createdAt)}


class PolicyRoutes:
    """
    The handlers, in the admin API's shape.

    @ivar overrides: the overrides area (pins checked upstream).
    @ivar fleet: the fleet area's view: its groups, and its report, which
        answers dry runs.
    """

    def __init__(self, clock: Any, state: Any, overrides: OverrideRoutes,
                 fleet: FleetView) -> None:
        self.clock = clock
        self.state = state
        self.overrides = overrides
        self.fleet = fleet

    def register(self, router: Router) -> None:
        """
        Add the routes; they take over the overrides area's.
        """
        router.add(b"GET", ("v1", "overrides"), self.listOverrides)
        router.add(b"GET", ("v1", "overrides", "*"), self.listOverrides)
        router.add(b"POST", ("v1", "overrides", "*"), self.setOverrides)
        router.add(b"DELETE", ("v1", "overrides", "*"), self.deleteOverride)
        router.add(b"GET", ("v1", "holds"), self.listHolds)
        router.add(b"POST", ("v1", "holds"), self.setHold)
        router.add(b"DELETE", ("v1", "holds"), self.releaseHold)
        router.add(b"GET", ("v1", "approvals"), self.listApprovals)
        router.add(b"POST", ("v1", "approvals"), self.approve)

    def _error(self, status: int, code: str, message: str) -> Exception:
        return APIError(status, code, message)

    def _now(self) -> float:
        return float(self.clock.seconds())

    def _dryRun(self, request: Any) -> bool:
        return argument(request, b"dry-run") in ("1", "yes", "true")

    def _body(self, request: Any) -> dict[str, Any]:
        content = request.content
        if content is not None:
            content.seek(0)
        raw = content.read(1 << 20) if content is not None else b""
        if content is not None:
            content.seek(0)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise self._error(400, "bad-request", "the request body is not JSON")
        if not isinstance(body, dict):
            raise self._error(400, "bad-request", "the request body must be a JSON object")
        return body

    def _text(self, body: dict[str, Any], key: str, limit: int = 200) -> str:
        value = body.get(key)
        if value is None:
            return ""
        if not isinstance(value, str) or len(value) > limit:
            raise self._error(400, "bad-request", f"{key} must be text of at most {limit} "
                                                  "characters")
        return value

    async def _groupName(self, body: dict[str, Any]) -> str:
        """
        The C{group} of a body: C{""} for everyone; a group that does not
        exist is refused (a typo must not make a pin that applies to no one).
        """
        name = self._text(body, "group")
        if name:
            await self.fleet.group(name)
        return name

    def _channel(self, value: Any) -> str:
        if value in (None, ""):
            return ""
        try:
            return normaliseChannel(value) if isinstance(value, str) else normaliseChannel("")
        except ValueError as error:
            raise self._error(400, "bad-channel", str(error))

    async def _report(self, request: Any, ruleSet: Any, snap: Optional[str]) -> tuple[int, Any]:
        return 200, await self.fleet.report(request, ruleSet, snap)

    # -- pins ----------------------------------------------------------------

    async def listOverrides(self, request: Any, caller: Any,
                            snapName: Optional[str] = None) -> tuple[int, Any]:
        now = self._now()
        overrides = await self.state.listOverrides(snapName)
        return 200, {"overrides": [pinJSON(o, now) for o in overrides]}

    async def setOverrides(self, request: Any, caller: Any, snapName: str) -> tuple[int, Any]:
        body = self._body(request)
        group = await self._groupName(body)
        untilText = body.get("until")
        until = None
        if untilText is not None:
            try:
                until = parseTime(untilText, self._now())
            except TimeSpecError as error:
                raise self._error(400, "bad-time", str(error))
            if until <= self._now():
                raise self._error(400, "bad-time", f"until {untilText!r} is already past")
        reason = self._text(body, "reason", MAX_REASON)
        resolved = [attrs.evolve(o, group=group, until=until, reason=reason)
                    for o in await self.overrides.resolveOverrides(request, snapName)]
        if self._dryRun(request):
            return await self._report(request, withProposedPolicy(self.fleet.ruleSet(),
                                                                  pins=resolved), snapName)
        now = self._now()
        results = []
        for override in resolved:
            previous = await self.state.setOverride(override, caller.actor)
            results.append({"override": pinJSON(override, now),
                            "previous": pinJSON(previous, now) if previous else None})
        return 200, {"set": results}

    async def deleteOverride(self, request: Any, caller: Any, snapName: str) -> tuple[int, Any]:
        channels = [c.decode("utf-8") for c in request.args.get(b"channel", [])]
        if not channels:
            raise self._error(400, "bad-request", "say which channel: ?channel=latest/stable")
        group = argument(request, b"group") or ""
        removed = []
        for channel in channels:
            self._channel(channel)
            removed.extend(await self.state.deleteOverride(snapName, channel, caller.actor,
                                                           group=group))
        if not removed:
            scope = f" for group {group}" if group else ""
            raise self._error(404, "no-override",
                              f"{snapName} has no override{scope} on {', '.join(channels)}")
        now = self._now()
        return 200, {"deleted": [pinJSON(o, now) for o in removed]}

    # -- holds ---------------------------------------------------------------

    async def listHolds(self, request: Any, caller: Any) -> tuple[int, Any]:
        return 200, {"holds": [holdJSON(h) for h in await self.state.listHolds()]}

    async def setHold(self, request: Any, caller: Any) -> tuple[int, Any]:
        body = self._body(request)
        snap = self._text(body, "snap")
        channel = self._channel(body.get("channel"))
        group = await self._groupName(body)
        reason = self._text(body, "reason", MAX_REASON)
        untilApproved = body.get("until-approved") is True
        duration = body.get("for")
        if untilApproved == (duration is not None):
            raise self._error(400, "bad-request",
                              'give either "for": DURATION or "until-approved": true')
        holdFor = None
        if duration is not None:
            try:
                holdFor = (float(duration) if isinstance(duration, int)
                           and not isinstance(duration, bool) and duration > 0
                           else parseDuration(duration))
            except TimeSpecError as error:
                raise self._error(400, "bad-duration", str(error))
        hold = Hold(snap, channel, group, holdFor, reason, self._now())
        if self._dryRun(request):
            return await self._report(request, withProposedPolicy(self.fleet.ruleSet(),
                                                                  holds=[hold]), snap or None)
        previous = await self.state.setHold(hold, caller.actor)
        return 200, {"hold": holdJSON(hold),
                     "previous": holdJSON(previous) if previous else None}

    async def releaseHold(self, request: Any, caller: Any) -> tuple[int, Any]:
        snap = argument(request, b"snap") or ""
        channel = self._channel(argument(request, b"channel"))
        group = argument(request, b"group") or ""
        if self._dryRun(request):
            return await self._report(request, withProposedPolicy(
                self.fleet.ruleSet(), released=[(snap, channel, group)]), snap or None)
        gone = await self.state.releaseHold(snap, channel, group, caller.actor)
        if gone is None:
            raise self._error(404, "no-hold", "there is no such hold (see snapstore holds)")
        return 200, {"released": holdJSON(gone)}

    # -- approvals -------------------------------------------------------------

    async def listApprovals(self, request: Any, caller: Any) -> tuple[int, Any]:
        rows = await self.state.listApprovals(argument(request, b"snap"))
        return 200, {"approvals": [approvalJSON(a) for a in rows]}

    async def approve(self, request: Any, caller: Any) -> tuple[int, Any]:
        body = self._body(request)
        snap = self._text(body, "snap")
        revision = body.get("revision")
        if not snap or not isinstance(revision, int) or isinstance(revision, bool) \
                or revision < 1:
            raise self._error(400, "bad-request",
                              'body must be {"snap": NAME, "revision": N >= 1, ...}')
        group = await self._groupName(body)
        approval = Approval(snap, revision, group, self._text(body, "reason", MAX_REASON),
                            self._now())
        if self._dryRun(request):
            return await self._report(request, withProposedPolicy(
                self.fleet.ruleSet(), approvals=[approval]), snap)
        stored = await self.state.approve(approval, caller.actor)
        return 200, {"approved": approvalJSON(stored)}
