# -*- test-case-name: tests.test_fleet -*-
"""
The admin API's fleet routes (docs/architecture.md)::

    GET    /v1/devices[?group=G&snap=NAME&all=1]   devices with their snaps and groups
    GET    /v1/devices/IDENTITY                    one device (identity URL-encoded)
    GET    /v1/inventory[?snap=NAME]               revision x channel x architecture counts
    GET    /v1/groups                              groups, selectors, member counts
    PUT    /v1/groups/NAME                         {"selectors": {...}}: create or replace
    GET    /v1/groups/NAME                         the group and its members
    DELETE /v1/groups/NAME                         delete it (audited)
    GET    /v1/what-would-refresh[?snap=&group=]   what a refresh would change now
    (the change-control dry runs answer the same report: snapstore.admin.policy)
    GET    /v1/deliveries[?device=&snap=&since=]   the delivery record
    GET    /v1/deliveries/verify                   check its hash chain

The composition root registers them on the admin router after the
devices area (whose C{GET /v1/devices} they take over), so
they share its authorisation, error shape and access log.  The fleet logic
is L{snapstore.fleet}'s; this module only speaks HTTP.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime

from snapstore.admin.devices import DeviceRoutes
from snapstore.admin.fleetview import FleetView, membersOf
from snapstore.admin.router import APIError, Router, argument, readJSON
from snapstore.fleet.groups import GroupError, checkName, checkSelectors, groupsOf
from snapstore.state import audit
from snapstore.state.fleet import SELECTOR_KINDS, DeviceGroup

def rfc3339(posix: Optional[float]) -> Optional[str]:
    """
    C{posix} as RFC 3339 UTC (C{2026-12-03T13:42:39Z}), or C{None}.
    """
    if posix is None:
        return None
    moment = datetime.datetime.fromtimestamp(posix, datetime.timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def parseSince(value: Optional[str]) -> Optional[float]:
    """
    A C{since} argument: POSIX seconds or RFC 3339.

    @raise ValueError: for anything else.
    """
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def deviceJSON(device: Any, groups: Any) -> dict[str, Any]:
    """
    The DEVICE document (docs/architecture.md, "The store API in brief": devices).
    """
    return {
        "identity": device.identity, "model": device.model, "address": device.address,
        "architecture": device.architecture,
        "first-seen": rfc3339(device.firstSeen), "last-seen": rfc3339(device.lastSeen),
        "groups": list(groupsOf(groups, device.identity, device.address)),
        "snaps": [{"snap-id": s.snapId, "name": s.name, "revision": s.revision,
                   "channel": s.channel} for s in device.snaps],
    }


def groupJSON(group: DeviceGroup, members: list[str]) -> dict[str, Any]:
    return {"name": group.name,
            "selectors": {kind: list(group.selectors.get(kind, ())) for kind in SELECTOR_KINDS},
            "devices": len(members)}


def deliveryJSON(row: Any) -> dict[str, Any]:
    return {"id": row.id, "time": rfc3339(row.time), "timestamp": row.time, "device": row.device,
            "snap": row.snapName, "snap-id": row.snapId, "revision": row.revision,
            "sha3-384": row.sha3_384, "bytes": row.bytes, "complete": row.complete,
            "cache": row.cache, "previous-hash": row.previousHash, "row-hash": row.rowHash}


class FleetRoutes:
    """
    The handlers, in the admin API's shape: C{(request, caller, *path
    arguments)} to C{(status, JSON value)}.
    """

    def __init__(self, clock: IReactorTime, state: Any, upstream: Any, rules: Any,
                 devices: DeviceRoutes) -> None:
        """
        @param rules: the L{snapstore.rules.service.RulesService} (its
            device groups, and the rule set what-would-refresh asks), or
            C{None}.
        @param devices: the devices area (connected count and limit).
        """
        self.state = state
        self.devicesArea = devices
        #: Devices, groups and the report, shared with the change-control area.
        self.view = FleetView(clock, state, upstream, rules)

    def register(self, router: Router) -> None:
        """
        Add the fleet routes; they take over C{GET /v1/devices} (the DEVICE
        shape of docs/architecture.md) from the devices area.
        """
        router.add(b"GET", ("v1", "devices"), self.devices)
        router.add(b"GET", ("v1", "devices", "*"), self.device)
        router.add(b"GET", ("v1", "inventory"), self.inventory)
        router.add(b"GET", ("v1", "groups"), self.listGroups)
        router.add(b"GET", ("v1", "groups", "*"), self.showGroup)
        router.add(b"PUT", ("v1", "groups", "*"), self.putGroup)
        router.add(b"DELETE", ("v1", "groups", "*"), self.deleteGroup)
        router.add(b"GET", ("v1", "what-would-refresh"), self.whatWouldRefresh)
        router.add(b"GET", ("v1", "deliveries"), self.deliveries)
        router.add(b"GET", ("v1", "deliveries", "verify"), self.verifyDeliveries)

    def _error(self, status: int, code: str, message: str) -> Exception:
        return APIError(status, code, message)

    # -- devices and inventory ---------------------------------------------

    async def devices(self, request: Any, caller: Any) -> tuple[int, Any]:
        devices = await self.view.devices(request)
        groups = await self.state.listGroups()
        answer: dict[str, Any] = {"devices": [deviceJSON(d, groups) for d in devices]}
        connected, limit = await self.devicesArea.deviceStatus()
        answer.update({"connected": connected, "limit": limit})
        return 200, answer

    async def device(self, request: Any, caller: Any, identity: str) -> tuple[int, Any]:
        found = await self.state.listFleet(identity=identity)
        if not found:
            raise self._error(404, "no-device", f"no device {identity!r} is known")
        return 200, deviceJSON(found[0], await self.state.listGroups())

    async def inventory(self, request: Any, caller: Any) -> tuple[int, Any]:
        counts = await self.state.inventory(argument(request, b"snap"))
        snaps: dict[str, dict[str, Any]] = {}
        for count in counts:
            entry = snaps.setdefault(count.snapId, {"name": count.name, "snap-id": count.snapId,
                                                    "revisions": []})
            entry["revisions"].append({"revision": count.revision, "channel": count.channel,
                                       "architecture": count.architecture,
                                       "devices": count.devices})
        return 200, {"snaps": list(snaps.values())}

    # -- groups --------------------------------------------------------------

    async def listGroups(self, request: Any, caller: Any) -> tuple[int, Any]:
        groups = await self.state.listGroups()
        devices = await self.state.listFleet(seenSince=None) if groups else []
        answer = []
        for group in groups:
            answer.append(groupJSON(group, membersOf(devices, group)))
        return 200, {"groups": answer}

    async def showGroup(self, request: Any, caller: Any, name: str) -> tuple[int, Any]:
        group = await self.view.group(name)
        members = [d.identity for d in membersOf(await self.state.listFleet(seenSince=None),
                                                 group)]
        return 200, dict(groupJSON(group, members), members=members)

    async def putGroup(self, request: Any, caller: Any, name: str) -> tuple[int, Any]:
        body = readJSON(request)
        try:
            checkName(name)
            selectors = checkSelectors(body.get("selectors") if isinstance(body, dict) else None)
        except GroupError as error:
            raise self._error(400, "bad-group", str(error))
        previous = await self.state.createGroup(DeviceGroup(name, selectors), caller.actor)
        return 200, {"group": {"name": name, "selectors": selectors},
                     "previous": None if previous is None else
                     {"name": previous.name, "selectors": previous.selectors}}

    async def deleteGroup(self, request: Any, caller: Any, name: str) -> tuple[int, Any]:
        gone = await self.state.deleteGroup(name, caller.actor)
        if gone is None:
            raise self._error(404, "no-group", f"there is no device group {name!r}")
        return 200, {"deleted": {"name": gone.name, "selectors": gone.selectors}}

    # -- what would refresh ----------------------------------------------------

    async def whatWouldRefresh(self, request: Any, caller: Any) -> tuple[int, Any]:
        return 200, await self.view.report(request, self.view.ruleSet(),
                                          argument(request, b"snap"))

    # -- deliveries --------------------------------------------------------------

    async def deliveries(self, request: Any, caller: Any) -> tuple[int, Any]:
        try:
            since = parseSince(argument(request, b"since"))
        except ValueError:
            raise self._error(400, "bad-request", "since must be RFC 3339 or POSIX seconds")
        rows = await self.state.listDeliveries(device=argument(request, b"device"),
                                               snapName=argument(request, b"snap"), since=since)
        return 200, {"deliveries": [deliveryJSON(row) for row in rows]}

    async def verifyDeliveries(self, request: Any, caller: Any) -> tuple[int, Any]:
        from snapstore.state.fleet import deliveryHash

        rows = await self.state.listDeliveries()
        bad = audit.verifyChain(rows, None, deliveryHash)
        head = rows[-1] if rows else None
        return 200, {"ok": bad is None, "rows": len(rows), "first-bad-id": bad,
                     "head": None if head is None else {"id": head.id, "row-hash": head.rowHash}}
