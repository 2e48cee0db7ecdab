# -*- test-case-name: tests.test_rules_devices -*-
"""
Knowing which device made a request, and limiting how many may use the
proxy (docs/architecture.md, "The store API in brief": devices).

A device proves who it is to the store with a device session: it sends a
C{device-session-request} assertion (brand, model, serial) to
C{POST /api/v1/snaps/auth/sessions} and gets a session macaroon, which it
then sends on every call as C{Snap-Device-Authorization} (or
C{X-Device-Authorization}) C{Macaroon root="..."}.  The proxy relays that
exchange, so the proxy records which serial each macaroon was given to
(L{snapstore.rules.sessions}).  A request with no session is counted by its
address; one with a session the proxy does not know is asked to open a new
one, where rules need the device.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from snapstore.interfaces import IAdmissionRule
from snapstore.rules.values import DAY, DeviceIdentity, StoreDeny, StoreRequest
from snapstore.rules.verdicts import Abstain
from snapstore.state.errors import StateUnavailable
from snapstore.state.records import Device

SESSION_PATH = "/api/v1/snaps/auth/sessions"
NONCE_PATH = "/api/v1/snaps/auth/nonces"
_MACAROON = re.compile(rb'root="([^"]+)"')


def assertionHeaders(text: str) -> dict[str, str]:
    """
    The top-level single-line C{name: value} headers of an assertion's
    text (enough for C{brand-id}, C{model} and C{serial}).
    """
    headers = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        if not line or line.startswith(" ") or ":" not in line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return headers


def sessionRequestIdentity(body: bytes, address: str) -> Optional[DeviceIdentity]:
    """
    The device a C{POST /api/v1/snaps/auth/sessions} body speaks for.

    @return: the identity, or C{None} when the body carries no
        device-session-request with a brand, model and serial.
    """
    try:
        document = json.loads(body or b"null")
    except ValueError:
        return None
    text = document.get("device-session-request") if isinstance(document, dict) else None
    if not isinstance(text, str):
        return None
    headers = assertionHeaders(text)
    brand, model, serial = (headers.get(k, "") for k in ("brand-id", "model", "serial"))
    if not (brand and model and serial):
        return None
    return DeviceIdentity(f"{brand}/{model}/{serial}", f"{brand}/{model}", address)


def sessionMacaroon(headers: Any) -> Optional[bytes]:
    """
    The device-session macaroon of a request, from
    C{Snap-Device-Authorization} or C{X-Device-Authorization}.

    @param headers: C{(name, value)} byte pairs.
    """
    for name, value in headers:
        if name.lower() in (b"snap-device-authorization", b"x-device-authorization"):
            match = _MACAROON.search(value)
            if match:
                return match.group(1)
    return None


def grantedSession(request: StoreRequest, code: int,
                   answer: bytes) -> Optional[tuple[bytes, DeviceIdentity]]:
    """
    The macaroon and device of a session upstream granted, from a relayed
    C{POST /api/v1/snaps/auth/sessions} and upstream's answer; C{None} for
    any other call or a refusal.  Only a granted session proves the serial:
    upstream checked the request's signature against the device's key.
    """
    if request.path != SESSION_PATH or request.method != b"POST" or not 200 <= code < 300:
        return None
    identity = sessionRequestIdentity(request.body, request.device.address)
    if identity is None:
        return None
    try:
        document = json.loads(answer)
    except ValueError:
        return None
    macaroon = document.get("macaroon") if isinstance(document, dict) else None
    if isinstance(macaroon, str) and macaroon:
        return macaroon.encode("utf-8"), identity
    return None


@attrs.frozen
class DeviceStatus:
    """
    What C{snapstore status} shows: "connected devices N / limit M".

    @ivar connected: devices seen within C{window}.
    @ivar limit: the configured limit, or C{None} for no limit.
    @ivar window: seconds a device counts as connected after it was seen.
    """

    connected: int
    limit: Optional[int]
    window: float


def connectedDevices(state: Any, clock: IReactorTime, window: float = DAY) -> Deferred[list[Device]]:
    """
    The devices seen within C{window} seconds, from the state store (so,
    with a shared PostgreSQL database, those of every node).
    """
    return state.listDevices(seenSince=clock.seconds() - window)


LIMIT_SETTING = "device-limit"


@implementer(IAdmissionRule)
class DeviceLimitRule:
    """
    Records every device that uses the proxy and, when a limit is set,
    refuses new devices once that many were seen within the window.  Known
    devices always carry on; a device not seen for C{window} seconds no
    longer counts.

    The rule abstains for devices it admits, so later rules still decide.
    Session requests are not counted: the serial a session request claims
    is only proved by the session upstream grants, and the device is
    counted on its next call, which carries that session.

    While the database is away the rule decides on what it last read (the
    devices seen and the limit); a node that never read them refuses with
    503 rather than guess.

    @ivar limit: most devices connected at once, or C{None} for no limit.
    @ivar window: seconds a device counts as connected after its last call.
    @ivar recordEvery: a device's last-seen time is written to the state
        store at most this often, so that busy devices do not make every
        request a database write.
    @ivar reloadEvery: seconds after which the devices other nodes recorded
        are read again.
    """

    log = Logger()

    def __init__(self, state: Any, clock: IReactorTime, limit: Optional[int] = None,
                 window: float = DAY, name: str = "device-limit",
                 recordEvery: float = 60.0, reloadEvery: float = 60.0,
                 settingEvery: float = 0.5) -> None:
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be None or a whole number >= 0, not {limit!r}")
        if not window > 0:
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        self.name = name
        self.state = state
        self.clock = clock
        self.fileLimit = limit
        self.limit = limit
        self.limitSource = "rules.d"
        self.settingEvery = settingEvery
        self._settingAt: Optional[float] = None
        self.window = float(window)
        self.recordEvery = recordEvery
        self.reloadEvery = reloadEvery
        self._seen: dict[str, float] = {}
        self._recorded: dict[str, float] = {}
        self._loadedAt: Optional[float] = None
        self._devicesRead = False
        self._settingRead = False
        self._settingFailed = False

    def needsDevice(self, request: StoreRequest) -> bool:
        """
        Whether this rule must know the device making C{request}: with a
        limit, every call it counts, except downloads (snapd does not open a
        new session on a download's answer, docs/architecture.md, "The store API in brief"; the refresh
        before it identified the device).
        """
        return (self.limit is not None and request.blob is None
                and request.path not in (NONCE_PATH, SESSION_PATH))

    def admit(self, request: StoreRequest) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._admit(request))

    async def _admit(self, request: StoreRequest) -> Any:
        if request.path in (NONCE_PATH, SESSION_PATH):
            # A nonce identifies nobody, and a session request only claims a
            # serial: the device is counted once upstream granted the
            # session, on the call that carries it.
            return Abstain()
        now = self.clock.seconds()
        # Until a first read succeeded, every request reads (one made while
        # another's first read is under way must not decide on nothing).
        if (not self._settingRead or self._settingAt is None
                or now - self._settingAt >= self.settingEvery):
            await self._loadLimitSetting(now)
        if (not self._devicesRead or self._loadedAt is None
                or now - self._loadedAt >= self.reloadEvery):
            await self._load(now)
        if not self._settingRead or (self.limit is not None and not self._devicesRead):
            raise StateUnavailable("the device-limit rule has not read the device limit "
                                   "and the connected devices yet")
        device = request.device
        since = now - self.window
        known = self._seen.get(device.identity, -1.0) >= since
        if not known and self.limit is not None:
            connected = sum(1 for seen in self._seen.values() if seen >= since)
            if connected >= self.limit:
                self.log.warn("Refused new device {identity}: {connected} of {limit} "
                              "devices connected", identity=device.identity,
                              connected=connected, limit=self.limit)
                return StoreDeny(
                    403,
                    f"this snap store proxy serves at most {self.limit} devices and "
                    f"that many used it in the last {_hours(self.window)}; "
                    f"ask its administrator to raise the device limit",
                    errorCode="device-limit-exceeded")
        self._seen[device.identity] = now
        if now - self._recorded.get(device.identity, -self.recordEvery - 1) > self.recordEvery:
            self._recorded[device.identity] = now
            try:
                await self.state.recordDevice(Device(
                    identity=device.identity, model=device.model,
                    address=device.address, firstSeen=now, lastSeen=now))
            except Exception:
                # Counting is best effort while the database is away; the
                # device was admitted on what this node knows.
                self._recorded.pop(device.identity, None)
                self.log.failure("Cannot record device {identity}", identity=device.identity)
        return Abstain()

    async def _loadLimitSetting(self, now: float) -> None:
        """
        Take the limit an admin set with C{snapstore device-limit} (the
        C{device-limit} setting, shared by every node), or the file's when
        none is set.  Read at most every C{settingEvery} seconds, so a
        change through any node applies everywhere within a second.
        """
        self._settingAt = now
        try:
            setting = await self.state.getSetting(LIMIT_SETTING)
        except Exception:
            if not self._settingFailed:
                self._settingFailed = True
                self.log.failure("Cannot read the device-limit setting; keeping limit {limit}",
                                 limit=self.limit)
            return
        self._settingFailed = False
        self._settingRead = True
        if isinstance(setting, dict) and "limit" in setting:
            self.limit, self.limitSource = setting["limit"], "admin"
        else:
            self.limit, self.limitSource = self.fileLimit, "rules.d"

    async def _load(self, now: float) -> None:
        try:
            devices = await self.state.listDevices(seenSince=now - self.window)
        except Exception:
            self.log.failure("Cannot read connected devices; using what this node saw")
            self._loadedAt = now
            return
        self._devicesRead = True
        for device in devices:
            if device.lastSeen > self._seen.get(device.identity, -1.0):
                self._seen[device.identity] = device.lastSeen
        since = now - self.window
        for identity in [i for i, seen in self._seen.items() if seen < since]:
            del self._seen[identity]
            self._recorded.pop(identity, None)
        self._loadedAt = now

    def status(self) -> Deferred[DeviceStatus]:
        """
        @return: a Deferred firing with the L{DeviceStatus} (the count read
            from the state store).
        """
        d = Deferred.fromCoroutine(self._loadLimitSetting(self.clock.seconds()))
        d.addCallback(lambda _: connectedDevices(self.state, self.clock, self.window))
        return d.addCallback(self._status)

    def _status(self, devices: Any) -> DeviceStatus:
        return DeviceStatus(len(devices), self.limit, self.window)


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:g} hours" if hours != 1 else "hour"
