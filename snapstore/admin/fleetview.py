# -*- test-case-name: tests.test_fleet,tests.test_policy -*-
"""
What two admin areas ask of the fleet: the devices a request selects, the
device groups, and the what-would-refresh report.

The fleet area (L{snapstore.admin.fleet}) answers that report for the rule
set in force; the change-control area (L{snapstore.admin.policy}) answers
it for the rule set a change would produce (its dry runs), and refuses a
change scoped to a group that does not exist.  Both hold the one
L{FleetView} the composition root builds for the fleet area.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime

from snapstore.admin.devices import CONNECTED_WINDOW
from snapstore.admin.router import APIError, argument
from snapstore.fleet.groups import GroupDirectory, groupsOf
from snapstore.fleet.whatwould import WhatWouldRefresh
from snapstore.rules.engine import RuleSet
from snapstore.state.fleet import DeviceGroup


def membersOf(devices: list[Any], group: DeviceGroup) -> list[Any]:
    """
    The C{devices} that C{group}'s selectors match.
    """
    return [d for d in devices if group.name in groupsOf([group], d.identity, d.address)]


class FleetView:
    """
    @ivar directory: the device groups (the rules service's, so that rules
        and the API agree on who is in which group).
    @ivar planner: what a refresh would offer each device.
    """

    def __init__(self, clock: IReactorTime, state: Any, upstream: Any, rules: Any) -> None:
        """
        @param rules: the L{snapstore.rules.service.RulesService} (its
            device groups, and the rule set in force), or C{None}.
        """
        self.clock = clock
        self.state = state
        self.rules = rules
        groups = rules.groups if rules is not None else None
        self.directory = groups if groups is not None else GroupDirectory(state)
        self.planner = WhatWouldRefresh(upstream, self.directory.groupsFor)

    async def group(self, name: str) -> DeviceGroup:
        """
        The device group C{name}, or a 404 C{no-group} error.
        """
        for group in await self.state.listGroups():
            if group.name == name:
                return group
        raise APIError(404, "no-group", f"there is no device group {name!r}")

    async def devices(self, request: Any, everyone: bool = False) -> list[Any]:
        """
        The devices C{request} selects: connected ones unless C{?all=1}
        (or C{everyone}), running C{?snap=}, members of C{?group=}.
        """
        showAll = everyone or argument(request, b"all") in ("1", "yes", "true")
        since = None if showAll else self.clock.seconds() - CONNECTED_WINDOW
        devices = await self.state.listFleet(seenSince=since, snapName=argument(request, b"snap"))
        groupName = argument(request, b"group")
        if groupName is not None:
            devices = membersOf(devices, await self.group(groupName))
        return devices

    def ruleSet(self) -> RuleSet:
        """
        The rule set in force (none without rules).
        """
        rules = self.rules
        return rules.ruleSet if rules is not None else RuleSet()

    async def report(self, request: Any, ruleSet: RuleSet, snap: Optional[str] = None) -> Any:
        """
        The what-would-refresh document: what a refresh under C{ruleSet}
        would change for every device C{request} selects (of C{snap}, or
        every snap).
        """
        devices = await self.devices(request, everyone=True)
        try:
            return {"changes": await self.planner.changes(devices, ruleSet, snap)}
        except Exception as error:
            # The report needs upstream's channel maps: say so when it
            # cannot be had, rather than "internal error".
            if getattr(error, "status", None) in (502, 504) or isinstance(error, RuntimeError):
                raise APIError(502, "upstream-unavailable",
                               f"cannot ask upstream what a refresh would offer: "
                               f"{getattr(error, 'message', error)}")
            raise


__all__ = ["FleetView", "membersOf"]
