# -*- test-case-name: tests.test_admin -*-
"""
The admin API's devices area: who is connected, and the device limit.

    GET    /v1/devices[?all=1]    devices (connected: last 24 h)
    PUT    /v1/device-limit       {"limit": N}: wins over the rules file's
    DELETE /v1/device-limit       back to the rules file's limit
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

from snapstore.admin.auth import Caller
from snapstore.admin.router import APIError, Router, readJSON
from snapstore.interfaces import IStateStore

#: Devices seen within this many seconds are "connected" (docs/architecture.md).
CONNECTED_WINDOW = 24 * 3600

#: The settings key the device limit is kept under when no rule owns it.
DEVICE_LIMIT_KEY = "device-limit"


class DeviceRoutes:
    """
    @ivar rules: the L{snapstore.rules.service.RulesService} (its
        C{deviceStatus()} gives the connected devices and the limit), or
        C{None}: devices seen in the last 24 hours count, and the limit is
        the C{device-limit} setting.
    @ivar metrics: the L{snapstore.observe.metrics.Metrics} whose device
        gauges each answer brings up to date.
    """

    def __init__(self, clock: IReactorTime, state: IStateStore, metrics: Any,
                 rules: Any = None) -> None:
        self.clock = clock
        self.state = state
        self.metrics = metrics
        self.rules = rules

    def register(self, router: Router) -> None:
        router.add(b"GET", ("v1", "devices"), self.devices)
        router.add(b"PUT", ("v1", "device-limit"), self.setDeviceLimit)
        router.add(b"DELETE", ("v1", "device-limit"), self.resetDeviceLimit)

    async def deviceStatus(self) -> tuple[int, Optional[int]]:
        """
        The connected-device count and the limit: from the rules (the
        device-limit rule counts as it admits), else devices seen in the
        last 24 hours and the C{device-limit} setting.
        """
        if self.rules is not None:
            status = await self.rules.deviceStatus()
            return status.connected, status.limit
        devices = await self.state.listDevices(seenSince=self.clock.seconds() - CONNECTED_WINDOW)
        setting = await self.state.getSetting(DEVICE_LIMIT_KEY)
        return len(devices), setting.get("limit") if isinstance(setting, dict) else None

    async def devices(self, request: Request, caller: Caller) -> tuple[int, Any]:
        showAll = request.args.get(b"all", [b"0"])[0] in (b"1", b"yes", b"true")
        since = self.clock.seconds() - CONNECTED_WINDOW
        devices = await self.state.listDevices(seenSince=None if showAll else since)
        connected, limit = await self.deviceStatus()
        self.metrics.devicesConnected(connected, limit)
        return 200, {
            "connected": connected,
            "limit": limit,
            "devices": [
                {"identity": d.identity, "model": d.model, "address": d.address,
                 "first-seen": d.firstSeen, "last-seen": d.lastSeen,
                 "connected": d.lastSeen >= since}
                for d in devices
            ],
        }

    async def setDeviceLimit(self, request: Request, caller: Caller) -> tuple[int, Any]:
        """
        Set the device limit for every node sharing this database; it wins
        over the limit in C{rules.d/20-device-limit.py} until reset.
        """
        body = readJSON(request)
        limit = body.get("limit", "missing") if isinstance(body, dict) else "missing"
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            # 0 would refuse every new device: "no limit" is null.
            raise APIError(400, "bad-request",
                           'body must be {"limit": N} with N a whole number >= 1, or {"limit": null} '
                           'for no limit')
        previous = await self.state.setSetting(DEVICE_LIMIT_KEY, {"limit": limit}, caller.actor)
        return 200, {"limit": limit, "source": "admin", "previous": previous}

    async def resetDeviceLimit(self, request: Request, caller: Caller) -> tuple[int, Any]:
        """
        Forget the admin's limit: the rules file's applies again.
        """
        previous = await self.state.setSetting(DEVICE_LIMIT_KEY, None, caller.actor)
        return 200, {"source": "rules.d", "previous": previous}
