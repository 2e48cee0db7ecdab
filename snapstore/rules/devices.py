# -*- test-case-name: tests.test_rules_devices -*-
"""
Knowing which device made a request, and limiting how many may use the
proxy (docs/architecture.md, "The store API in brief": devices).

A device proves who it is to the store with a device session: it sends a
C{device-session-request} assertion (brand, model, serial) to
C{POST /api/v1/snaps/auth/sessions} and gets a session macaroon, which it
then sends on every call as C{Snap-Device-Authorization} (or
C{X-Device-Authorization}) C{Macaroon root="..."}.  The proxy relays that
exchange, so L{DeviceSessions} remembers which serial each macaroon was
given to.  A request with no session we know of is counted by its address.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from snapstore.interfaces import IAdmissionRule
from snapstore.rules.values import DAY, DeviceIdentity, StoreDeny, StoreRequest
from snapstore.rules.verdicts import Abstain
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


class DeviceSessions:
    """
    Which device each session macaroon was handed to, for the sessions the
    proxy relayed.  Kept in memory (bounded, least recently used dropped):
    after a restart a device is known again from its next session request,
    and counted by address until then.
    """

    def __init__(self, limit: int = 100000) -> None:
        self._sessions: OrderedDict[bytes, DeviceIdentity] = OrderedDict()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._sessions)

    def remember(self, macaroon: bytes, identity: DeviceIdentity) -> None:
        self._sessions[macaroon] = identity
        self._sessions.move_to_end(macaroon)
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)

    def identify(self, method: bytes, path: str, headers: Any, body: bytes,
                 address: str) -> DeviceIdentity:
        """
        Who made a request: the device whose session macaroon it carries,
        the device asking for a session, or its address.
        """
        if path == SESSION_PATH and method == b"POST":
            asking = sessionRequestIdentity(body, address)
            if asking is not None:
                return asking
        macaroon = sessionMacaroon(headers)
        if macaroon is not None:
            known = self._sessions.get(macaroon)
            if known is not None:
                self._sessions.move_to_end(macaroon)
                return attrs.evolve(known, address=address)
        return DeviceIdentity(f"address:{address}", "", address)

    def noteAnswer(self, request: StoreRequest, code: int, answer: bytes) -> None:
        """
        Remember the macaroon upstream gave in answer to a relayed session
        request.
        """
        if request.path != SESSION_PATH or not 200 <= code < 300:
            return
        identity = sessionRequestIdentity(request.body, request.device.address)
        if identity is None:
            return
        try:
            document = json.loads(answer)
        except ValueError:
            return
        macaroon = document.get("macaroon") if isinstance(document, dict) else None
        if isinstance(macaroon, str) and macaroon:
            self.remember(macaroon.encode("utf-8"), identity)


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

    def admit(self, request: StoreRequest) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._admit(request))

    async def _admit(self, request: StoreRequest) -> Any:
        if request.path == NONCE_PATH:
            # A nonce identifies nobody; the session request that follows does.
            return Abstain()
        now = self.clock.seconds()
        if self._settingAt is None or now - self._settingAt >= self.settingEvery:
            await self._loadLimitSetting(now)
        if self._loadedAt is None or now - self._loadedAt >= self.reloadEvery:
            await self._load(now)
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
            self.log.failure("Cannot read the device-limit setting; keeping limit {limit}",
                             limit=self.limit)
            return
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
