# -*- test-case-name: tests.test_admin -*-
"""
The admin HTTP API: JSON under C{/v1/}, and C{/metrics}.

Every route is a coroutine returning C{(status, jsonValue)}; the resource
does authentication, error mapping and encoding once, so a route only says
what it does.  The C{snapstore} command is a thin client of these routes;
anything it shows, a script can get from here too.

Routes::

    GET    /v1/status                      version, uptime, health, counts
    GET    /v1/check-connections           probe upstream and the database
    GET    /v1/overrides[/SNAP]            list pins
    POST   /v1/overrides/SNAP              {"channel-map": [{"channel", "revision"}]}
    DELETE /v1/overrides/SNAP?channel=C    remove pins
    GET    /v1/devices[?all=1]             devices (connected: last 24 h; see admin.fleet)
    (fleet: inventory, groups, what-would-refresh, deliveries: see snapstore.admin.fleet)
    GET    /v1/cache                       cache statistics
    POST   /v1/cache/prune                 empty the cache (audited)
    POST   /v1/cache/verify                re-hash blobs, drop bad ones
    GET    /v1/audit?snap=&since=&until=   audit rows
    GET    /v1/audit/verify                check the hash chain
    GET    /v1/client-config               device setup (see clientconfig)
    GET    /metrics                        Prometheus text format
"""

from __future__ import annotations

import json
import time
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from snapstore import __version__
from snapstore.admin.auditcheck import checkRows
from snapstore.admin.auth import Authoriser, Caller
from snapstore.admin.clientconfig import ClientConfig
from snapstore.httpheaders import finishWith
from snapstore.state.errors import StateUnavailable
from snapstore.state.records import Override, normaliseChannel

#: Devices seen within this many seconds are "connected" (design.md 7).
CONNECTED_WINDOW = 24 * 3600

#: Seconds a health probe of upstream may take.
PROBE_TIMEOUT = 5.0

#: The settings key the device limit is kept under when no rule owns it.
DEVICE_LIMIT_KEY = "device-limit"

JSON_TYPE = b"application/json"


class APIError(Exception):
    """
    A request the API refuses; the client gets C{status} and
    C{{"error": {"code", "message"}}}.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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


def auditJSON(entry: Any) -> dict[str, Any]:
    """
    The API's spelling of an audit row.
    """
    return {
        "id": entry.id,
        "time": entry.time,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
        "previous-hash": entry.previousHash,
        "row-hash": entry.rowHash,
    }


def _defaultResolve(upstream: Any, snapName: str, channel: str, revision: int) -> Any:
    """
    Build a pin without asking upstream, for when the rules package (which
    checks that upstream knows the revision) is not installed.
    """
    return Override(snapName=snapName, channel=normaliseChannel(channel),
                    revision=revision, architecture="all")


def _findResolver() -> Callable[..., Any]:
    """
    C{(upstream, snap, channel, revision) -> [Override]}: the rules
    package's, which asks upstream for the revision's architectures.
    """
    try:
        from snapstore.rules.overrides import resolveOverrides
    except ImportError:
        return lambda *args: [_defaultResolve(*args)]
    return resolveOverrides


def _overrideErrorTypes() -> tuple[type, ...]:
    try:
        from snapstore.rules.overrides import OverrideError
    except ImportError:
        return ()
    return (OverrideError,)


class AdminAPI(Resource):
    """
    The admin endpoint's root resource.

    @ivar state: the L{snapstore.interfaces.IStateStore}.
    @ivar upstream: the L{snapstore.store.upstream.StoreUpstream}.
    @ivar cache: the blob cache (C{stats()}, C{entries()}, C{remove()},
        C{verify()}), or C{None}.
    @ivar rules: the L{snapstore.rules.service.RulesService} (its
        C{deviceStatus()} gives the connected devices and the limit), or
        C{None}: devices seen in the last 24 hours count, and the limit is
        the C{device-limit} setting.
    @ivar metrics: the L{snapstore.admin.metrics.Metrics}.
    @ivar clientConfig: the L{ClientConfig} describing device setup.
    @ivar resolveOverride: C{(upstream, snap, channel, revision) ->
        [Override]} (or a Deferred firing with it): one pin per architecture
        the revision exists for upstream.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, clock: Any, state: Any, upstream: Any, metrics: Any,
                 authoriser: Authoriser, clientConfig: ClientConfig,
                 cache: Any = None, rules: Any = None, settings: Any = None,
                 startedAt: Optional[float] = None,
                 resolveOverride: Optional[Callable[..., Any]] = None) -> None:
        super().__init__()
        self.clock = clock
        self.state = state
        self.upstream = upstream
        self.metrics = metrics
        self.authoriser = authoriser
        self.clientConfig = clientConfig
        self.cache = cache
        self.rules = rules
        self.settings = settings
        self.startedAt = clock.seconds() if startedAt is None else startedAt
        self.resolveOverride = resolveOverride or _findResolver()
        self._overrideErrors = _overrideErrorTypes()
        self._routes: list[tuple[bytes, tuple[str, ...], Callable[..., Awaitable[Any]]]] = [
            (b"GET", ("v1", "status"), self.status),
            (b"GET", ("v1", "check-connections"), self.checkConnections),
            (b"GET", ("v1", "overrides"), self.listOverrides),
            (b"GET", ("v1", "overrides", "*"), self.listOverrides),
            (b"POST", ("v1", "overrides", "*"), self.setOverrides),
            (b"DELETE", ("v1", "overrides", "*"), self.deleteOverride),
            (b"GET", ("v1", "devices"), self.devices),
            (b"PUT", ("v1", "device-limit"), self.setDeviceLimit),
            (b"DELETE", ("v1", "device-limit"), self.resetDeviceLimit),
            (b"GET", ("v1", "cache"), self.cacheStats),
            (b"POST", ("v1", "cache", "prune"), self.cachePrune),
            (b"POST", ("v1", "cache", "verify"), self.cacheVerify),
            (b"GET", ("v1", "audit"), self.audit),
            (b"GET", ("v1", "audit", "verify"), self.auditVerify),
            (b"GET", ("v1", "client-config"), self.getClientConfig),
        ]

    # -- dispatch ------------------------------------------------------------

    def render(self, request: Request) -> Any:
        caller = self.authoriser.authorise(request)
        if caller is None:
            request.responseHeaders.setRawHeaders(b"www-authenticate", [b'Bearer realm="snapstore"'])
            self._write(request, 401, _error("unauthorised",
                        "this admin API needs 'Authorization: Bearer <token>' "
                        "with a token from --admin-token-file"))
            return NOT_DONE_YET
        if not caller.authenticated and not self.authoriser.isLocal(request):
            self._write(request, 403, _error("forbidden",
                        "the admin API answers only local clients when it has no token file"))
            return NOT_DONE_YET
        segments = tuple(segment.decode("utf-8", "replace") for segment in request.postpath)
        segments = tuple(s for s in segments if s != "") or ("",)
        if segments == ("metrics",) and request.method in (b"GET", b"HEAD"):
            Deferred.fromCoroutine(self._metrics(request)).addErrback(
                lambda failure: self._failed(failure, request))
            return NOT_DONE_YET
        handler, arguments, allowed = self._route(request.method, segments)
        if handler is None:
            if allowed:
                request.responseHeaders.setRawHeaders(b"allow", [b", ".join(sorted(allowed))])
                self._write(request, 405, _error("method-not-allowed",
                            f"{request.method.decode()} is not allowed here"))
            else:
                self._write(request, 404, _error("not-found",
                            f"no admin API path {request.path.decode('utf-8', 'replace')}"))
            return NOT_DONE_YET
        d = Deferred.fromCoroutine(handler(request, caller, *arguments))
        d.addCallbacks(lambda result: self._write(request, *result),
                       lambda failure: self._failed(failure, request))
        return NOT_DONE_YET

    def handles(self, request: Request) -> bool:
        """
        Whether a route answers C{request}'s method and path (so that
        L{snapstore.admin.crosssite} checks the body type of real calls
        only, and a wrong method still gets its 405).
        """
        segments = tuple(s.decode("utf-8", "replace") for s in request.postpath if s != b"") or ("",)
        return self._route(request.method, segments)[0] is not None

    def _route(self, method: bytes, segments: tuple[str, ...]) -> tuple[Any, list[str], set[bytes]]:
        allowed: set[bytes] = set()
        for routeMethod, pattern, handler in self._routes:
            if len(pattern) != len(segments):
                continue
            arguments = []
            for want, got in zip(pattern, segments):
                if want == "*":
                    arguments.append(got)
                elif want != got:
                    break
            else:
                if routeMethod == method:
                    return handler, arguments, allowed
                allowed.add(routeMethod)
        return None, [], allowed

    async def _metrics(self, request: Request) -> None:
        """
        Answer a scrape.  The gauges that mirror state (devices, cache
        use) are brought up to date first, so a scrape never shows what
        the last C{status} saw hours ago; if that fails the scrape still
        answers with the counters.
        """
        try:
            connected, limit = await self._deviceStatus()
            self.metrics.devicesConnected(connected, limit)
        except Exception:
            pass
        try:
            await self._cacheStats()
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

    def _failed(self, failure: Failure, request: Request) -> None:
        if failure.check(APIError):
            error = failure.value
            self._write(request, error.status, _error(error.code, error.message))
        elif failure.check(StateUnavailable):
            self._write(request, 503, _error("state-unavailable", failure.getErrorMessage()))
        else:
            self.log.failure("admin request {path} failed", failure, path=request.path)
            self._write(request, 500, _error("internal-error",
                        f"the admin API failed: {failure.getErrorMessage()}"))

    @staticmethod
    def _write(request: Request, status: int, value: Any) -> None:
        if request.finished or request._disconnected:
            return
        body = json.dumps(value, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        finishWith(request, status, JSON_TYPE, body)

    # -- helpers -----------------------------------------------------------

    def _now(self) -> float:
        return self.clock.seconds()

    async def _deviceStatus(self) -> tuple[int, Optional[int]]:
        """
        The connected-device count and the limit: from the rules (the
        device-limit rule counts as it admits), else devices seen in the
        last 24 hours and the C{device-limit} setting.
        """
        deviceStatus = getattr(self.rules, "deviceStatus", None)
        if deviceStatus is not None:
            status = await maybeDeferred(deviceStatus)
            return status.connected, status.limit
        devices = await self.state.listDevices(seenSince=self._now() - CONNECTED_WINDOW)
        setting = await self.state.getSetting(DEVICE_LIMIT_KEY)
        return len(devices), setting.get("limit") if isinstance(setting, dict) else None

    async def _cacheStats(self) -> Optional[dict[str, Any]]:
        if self.cache is None:
            return None
        stats = await maybeDeferred(self.cache.stats)
        size = stats.get("usedSize", stats.get("size", 0))
        bound = stats.get("maxSize", getattr(self.cache, "maxSize", None))
        self.metrics.cacheSize(size, bound)
        return {
            "blobs": stats.get("blobs"),
            "size": size,
            "bound": bound,
            "filling": stats.get("filling"),
            "pinned": stats.get("pinned"),
            "hit-ratio": self.metrics.hitRatio(),
            "directory": getattr(getattr(self.cache, "directory", None), "path", None),
        }

    async def _probeUpstream(self) -> dict[str, Any]:
        url = self.upstream.base.decode("ascii")
        if self.settings is not None and getattr(self.settings, "offline", False):
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
        target = getattr(self.settings, "state", None) or "state store"
        if isinstance(target, str) and "@" in target:
            # Keep passwords out of the answer.
            scheme, _, rest = target.partition("://")
            target = f"{scheme}://{rest.rpartition('@')[2]}"
        try:
            await self.state.getSetting(DEVICE_LIMIT_KEY)
        except Exception as error:
            return {"name": "database", "target": target, "ok": False,
                    "detail": str(error) or type(error).__name__}
        return {"name": "database", "target": target, "ok": True, "detail": "answers"}

    async def _audit(self, caller: Caller, action: str, target: str,
                     before: Any, after: Any) -> None:
        await self.state.appendAudit(caller.actor, action, target, before, after)

    # -- routes ------------------------------------------------------------

    async def status(self, request: Request, caller: Caller) -> tuple[int, Any]:
        upstream = await self._probeUpstream()
        database = await self._probeState()
        answer: dict[str, Any] = {
            "version": __version__,
            "uptime": max(self._now() - self.startedAt, 0.0),
            "upstream": upstream,
            "database": database,
            "offline": bool(getattr(self.settings, "offline", False)),
            "store-url": self.clientConfig.storeURL(None),
        }
        if database["ok"]:
            connected, limit = await self._deviceStatus()
            overrides = await self.state.listOverrides()
            self.metrics.devicesConnected(connected, limit)
            answer["devices"] = {"connected": connected, "limit": limit}
            answer["overrides"] = len(overrides)
        else:
            answer["devices"] = None
            answer["overrides"] = None
        answer["cache"] = await self._cacheStats()
        # Which rule files are in force (None: no rules at all).
        describeFiles = getattr(self.rules, "describeFiles", None)
        answer["rules"] = describeFiles() if describeFiles is not None else None
        return 200, answer

    async def checkConnections(self, request: Request, caller: Caller) -> tuple[int, Any]:
        checks = [await self._probeUpstream(), await self._probeState()]
        if self.cache is not None:
            directory = getattr(getattr(self.cache, "directory", None), "path", None)
            checks.append(_checkWritable("cache", directory))
        return 200, {"checks": checks, "ok": all(check["ok"] for check in checks)}

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
        body = _readJSON(request)
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
            except self._overrideErrors as error:
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

    async def setDeviceLimit(self, request: Request, caller: Caller) -> tuple[int, Any]:
        """
        Set the device limit for every node sharing this database; it wins
        over the limit in C{rules.d/20-device-limit.py} until reset.
        """
        body = _readJSON(request)
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

    async def devices(self, request: Request, caller: Caller) -> tuple[int, Any]:
        showAll = request.args.get(b"all", [b"0"])[0] in (b"1", b"yes", b"true")
        since = self._now() - CONNECTED_WINDOW
        devices = await self.state.listDevices(seenSince=None if showAll else since)
        connected, limit = await self._deviceStatus()
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

    def _needCache(self) -> Any:
        if self.cache is None:
            raise APIError(404, "no-cache", "this snapstore runs without a blob cache")
        return self.cache

    async def cacheStats(self, request: Request, caller: Caller) -> tuple[int, Any]:
        self._needCache()
        return 200, await self._cacheStats()

    async def cachePrune(self, request: Request, caller: Caller) -> tuple[int, Any]:
        cache = self._needCache()
        before = await self._cacheStats()
        prune = getattr(cache, "prune", None)
        if prune is not None:
            result = await maybeDeferred(prune)
        else:
            removed = 0
            freed = 0
            for digest, size, _pins in list(cache.entries()):
                if cache.remove(digest):
                    removed += 1
                    freed += size
            result = {"removed": removed, "freed": freed}
        after = await self._cacheStats()
        await self._audit(caller, "cache.prune", "cache",
                          {"blobs": before["blobs"], "size": before["size"]},
                          {"blobs": after["blobs"], "size": after["size"]})
        return 200, {"result": result, "cache": after}

    async def cacheVerify(self, request: Request, caller: Caller) -> tuple[int, Any]:
        cache = self._needCache()
        bad = await maybeDeferred(cache.verify)
        bad = list(bad or [])
        if bad:
            await self._audit(caller, "cache.verify", "cache", None, {"removed": bad})
        return 200, {"removed": bad, "ok": not bad, "cache": await self._cacheStats()}

    async def audit(self, request: Request, caller: Caller) -> tuple[int, Any]:
        snap = _arg(request, b"snap")
        target = _arg(request, b"target") or (f"snap:{snap}" if snap else None)
        since = _timeArg(request, b"since")
        until = _timeArg(request, b"until")
        entries = await self.state.listAudit(target=target, since=since, until=until)
        return 200, {"entries": [auditJSON(e) for e in entries]}

    async def auditVerify(self, request: Request, caller: Caller) -> tuple[int, Any]:
        return 200, checkRows(await self.state.listAudit())

    async def getClientConfig(self, request: Request, caller: Caller) -> tuple[int, Any]:
        problem = self.clientConfig.loopbackProblem(None)
        if problem is not None:
            raise APIError(409, "public-url-loopback", problem)
        return 200, self.clientConfig.describe(None)


def _checkWritable(name: str, directory: Optional[str]) -> dict[str, Any]:
    import os

    if directory is None:
        return {"name": name, "target": None, "ok": True, "detail": "no directory"}
    ok = os.path.isdir(directory) and os.access(directory, os.W_OK)
    return {"name": name, "target": directory, "ok": ok,
            "detail": "writable" if ok else "missing or not writable"}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _arg(request: Request, name: bytes) -> Optional[str]:
    values = request.args.get(name)
    return values[0].decode("utf-8") if values else None


def _timeArg(request: Request, name: bytes) -> Optional[float]:
    value = _arg(request, name)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise APIError(400, "bad-request", f"{name.decode()} must be POSIX seconds, not {value!r}")


def _readJSON(request: Request) -> Any:
    raw = request.content.read(1 << 20) if request.content else b""
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise APIError(400, "bad-request", "the request body is not JSON")


class _Drain(Protocol):
    """
    A body protocol that discards what it gets (a probe's answer).
    """
