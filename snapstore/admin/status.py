# -*- test-case-name: tests.test_admin -*-
"""
The admin API's status area: is this node healthy, and how is a device
set up to use it.

    GET    /v1/status                version, uptime, health, counts
    GET    /v1/check-connections     probe upstream, the database, the cache
    GET    /v1/client-config         device setup (see clientconfig)
    GET    /metrics                  Prometheus text format (L{StatusRoutes.scrape})
"""

from __future__ import annotations

import os
import time
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from snapstore import __version__
from snapstore.admin.auth import Caller
from snapstore.admin.cache import CacheRoutes
from snapstore.admin.devices import DEVICE_LIMIT_KEY, DeviceRoutes
from snapstore.admin.router import APIError, Router
from snapstore.config import Settings
from snapstore.interfaces import IClientConfig, IStateStore

#: Seconds a health probe of upstream may take.
PROBE_TIMEOUT = 5.0


class StatusRoutes:
    """
    @ivar upstream: the upstream client (probed with C{HEAD} on its base).
    @ivar devices: the devices area (its counts appear in the status).
    @ivar cache: the cache area (its statistics appear in the status).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, settings: Settings, state: IStateStore,
                 upstream: Any, metrics: Any, clientConfig: IClientConfig,
                 devices: DeviceRoutes, cache: CacheRoutes, rules: Any = None,
                 startedAt: Optional[float] = None) -> None:
        """
        @param rules: the L{snapstore.rules.service.RulesService} (the rule
            files in force appear in the status), or C{None}.
        """
        self.clock = clock
        self.settings = settings
        self.state = state
        self.upstream = upstream
        self.metrics = metrics
        self.clientConfig = clientConfig
        self.devices = devices
        self.cache = cache
        self.rules = rules
        self.startedAt = clock.seconds() if startedAt is None else startedAt
        self._sections: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    def addSection(self, name: str, section: Callable[[], Awaitable[Any]]) -> None:
        """
        Add C{name} to the status answer, its value what C{section()}
        fires with (another area's state: the uplink, the cluster's nodes).
        """
        self._sections.append((name, section))

    def register(self, router: Router) -> None:
        router.add(b"GET", ("v1", "status"), self.status)
        router.add(b"GET", ("v1", "check-connections"), self.checkConnections)
        router.add(b"GET", ("v1", "client-config"), self.getClientConfig)

    async def scrape(self, request: Request) -> None:
        """
        Answer a scrape of C{/metrics}.  The gauges that mirror state
        (devices, cache use) are brought up to date first, so a scrape
        never shows what the last C{status} saw hours ago; if that fails
        the scrape still answers with the counters.
        """
        try:
            connected, limit = await self.devices.deviceStatus()
            self.metrics.devicesConnected(connected, limit)
        except Exception:
            pass
        try:
            await self.cache.stats()
        except Exception:
            self.log.failure("cannot read cache statistics for /metrics")
        body, contentType = self.metrics.render()
        if request.finished or request._disconnected:
            return
        request.responseHeaders.setRawHeaders(b"content-type", [contentType])
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
        if request.method == b"GET":
            request.write(body)
        request.finish()

    async def _probeUpstream(self) -> dict[str, Any]:
        url = self.upstream.base.decode("ascii")
        if self.settings.offline:
            return {"name": "upstream", "target": url, "ok": True,
                    "detail": "offline mode: upstream is not contacted"}
        started = time.monotonic()
        try:
            response = await self.upstream.request(b"HEAD", self.upstream.base, Headers(),
                                                   timeout=PROBE_TIMEOUT)
        except Exception as error:
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            return {"name": "upstream", "target": url, "ok": False, "detail": message}
        try:
            response.deliverBody(_Drain())
        except Exception:
            pass
        elapsed = time.monotonic() - started
        return {"name": "upstream", "target": url, "ok": True,
                "detail": f"HTTP {response.code} in {elapsed * 1000:.0f} ms"}

    async def _probeState(self) -> dict[str, Any]:
        target = self.settings.state or "state store"
        if "@" in target:
            # Keep passwords out of the answer.
            scheme, _, rest = target.partition("://")
            target = f"{scheme}://{rest.rpartition('@')[2]}"
        try:
            await self.state.getSetting(DEVICE_LIMIT_KEY)
        except Exception as error:
            return {"name": "database", "target": target, "ok": False,
                    "detail": str(error) or type(error).__name__}
        return {"name": "database", "target": target, "ok": True, "detail": "answers"}

    async def status(self, request: Request, caller: Caller) -> tuple[int, Any]:
        upstream = await self._probeUpstream()
        database = await self._probeState()
        answer: dict[str, Any] = {
            "version": __version__,
            "uptime": max(self.clock.seconds() - self.startedAt, 0.0),
            "upstream": upstream,
            "database": database,
            "offline": bool(self.settings.offline),
            "store-url": self.clientConfig.storeURL(None),
        }
        if database["ok"]:
            connected, limit = await self.devices.deviceStatus()
            overrides = await self.state.listOverrides()
            self.metrics.devicesConnected(connected, limit)
            answer["devices"] = {"connected": connected, "limit": limit}
            answer["overrides"] = len(overrides)
        else:
            answer["devices"] = None
            answer["overrides"] = None
        answer["cache"] = await self.cache.stats()
        # Which rule files are in force (None: no rules at all).
        answer["rules"] = self.rules.describeFiles() if self.rules is not None else None
        for name, section in self._sections:
            answer[name] = await section()
        return 200, answer

    async def checkConnections(self, request: Request, caller: Caller) -> tuple[int, Any]:
        checks = [await self._probeUpstream(), await self._probeState()]
        if self.cache.cache is not None:
            checks.append(_checkWritable("cache", self.cache.directory()))
        return 200, {"checks": checks, "ok": all(check["ok"] for check in checks)}

    async def getClientConfig(self, request: Request, caller: Caller) -> tuple[int, Any]:
        problem = self.clientConfig.loopbackProblem(None)
        if problem is not None:
            raise APIError(409, "public-url-loopback", problem)
        return 200, self.clientConfig.describe(None)


def _checkWritable(name: str, directory: Optional[str]) -> dict[str, Any]:
    if directory is None:
        return {"name": name, "target": None, "ok": True, "detail": "no directory"}
    ok = os.path.isdir(directory) and os.access(directory, os.W_OK)
    return {"name": name, "target": directory, "ok": ok,
            "detail": "writable" if ok else "missing or not writable"}


class _Drain(Protocol):
    """
    A body protocol that discards what it gets (a probe's answer).
    """
