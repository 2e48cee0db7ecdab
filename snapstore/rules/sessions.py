# -*- test-case-name: tests.test_rules_sessions -*-
"""
Knowing a device by the session upstream granted it, on every node and
after a restart (docs/architecture.md).

snapd sends its device-session macaroon on every call.  When the proxy
relays the session request that got it, upstream's answer proves the
device's serial (upstream checked the request's signature against the
device's key), so the proxy records I{a digest} of the macaroon (never the
macaroon: it is a credential) against C{brand/model/serial} in the state
store: L{SessionDirectory}.  Every node reads the same table, so a device is
the same device through any node and after any restart.

A session the proxy never saw granted (opened before the site pointed its
devices at the proxy, or recorded by nobody) cannot be mapped to a serial.
Where rules need the device, the proxy answers such a call C{401} with
C{WWW-Authenticate: Macaroon refresh_device_session=1}, and snapd opens a
new session (through the proxy, which then learns the serial) and retries.
L{SessionChallenges} bounds this: an address whose devices were asked twice
within C{window} seconds without opening a session through the proxy is
counted by its address instead, so nothing loops; and it bounds how many
session requests one address may make, so that forged session requests
cost upstream little.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from snapstore.rules.values import DAY, DeviceIdentity, StoreDeny
from snapstore.state.records import DeviceSession

#: The header that makes snapd open a new device session and retry
#: (docs/architecture.md, "The store API in brief").
REFRESH_DEVICE_SESSION = (b"WWW-Authenticate", b"Macaroon refresh_device_session=1")


def sessionDigest(macaroon: bytes) -> str:
    """
    The key a session is recorded under: hex sha256 of the macaroon, so
    that the state store holds nothing a device could be impersonated with.
    """
    return hashlib.sha256(macaroon).hexdigest()


@attrs.define
class _Known:
    identity: str
    model: str
    expiresAt: float
    touched: float


class SessionDirectory:
    """
    Which device each session macaroon belongs to: the state store's
    C{device_sessions}, with the sessions this node used recently kept in
    memory (so that a request costs no query, and known devices stay known
    while the database is away).

    @ivar touchEvery: seconds between writes of a session's last use.
    @ivar unusedFor: seconds after which a session no request carried is
        forgotten (L{prune}); snapd opens a new one when asked.
    """

    log = Logger()

    def __init__(self, state: Any, clock: Any, limit: int = 100_000,
                 touchEvery: float = DAY, unusedFor: float = 30 * DAY) -> None:
        self.state = state
        self.clock = clock
        self.touchEvery = touchEvery
        self.unusedFor = unusedFor
        self._limit = limit
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._unavailableLogged = False

    def __len__(self) -> int:
        return len(self._known)

    def _remember(self, digest: str, known: _Known) -> _Known:
        self._known[digest] = known
        self._known.move_to_end(digest)
        while len(self._known) > self._limit:
            self._known.popitem(last=False)
        return known

    def learn(self, macaroon: bytes, identity: DeviceIdentity,
              expiresAt: float = 0.0) -> Deferred[Any]:
        """
        Record that upstream granted C{macaroon} to the device C{identity}.

        @return: a Deferred firing once the state store has it (or has
            queued it while the database is away); failures are logged, the
            node knows the session from memory meanwhile.
        """
        now = self.clock.seconds()
        digest = sessionDigest(macaroon)
        self._remember(digest, _Known(identity.identity, identity.model, expiresAt, now))
        d = self.state.recordSession(DeviceSession(
            digest=digest, identity=identity.identity, model=identity.model,
            createdAt=now, expiresAt=expiresAt, lastUsed=now))

        def failed(failure: Any) -> None:
            self.log.failure("Cannot record the session of {identity}", failure,
                             identity=identity.identity)

        return d.addErrback(failed)

    async def identify(self, macaroon: bytes, address: str) -> DeviceIdentity:
        """
        The device a request carrying C{macaroon} comes from, or its address
        with C{unknownSession} set when the session is not known (or has
        expired, or the database cannot say and this node never saw it).
        """
        now = self.clock.seconds()
        digest = sessionDigest(macaroon)
        known = self._known.get(digest)
        if known is None:
            record = await self._lookup(digest)
            if record is not None:
                known = self._remember(digest, _Known(record.identity, record.model,
                                                      record.expiresAt, record.lastUsed))
        else:
            self._known.move_to_end(digest)
        if known is None or (known.expiresAt and known.expiresAt <= now):
            return DeviceIdentity(f"address:{address}", "", address, unknownSession=True)
        if now - known.touched >= self.touchEvery:
            known.touched = now
            self.state.recordSession(DeviceSession(
                digest=digest, identity=known.identity, model=known.model,
                expiresAt=known.expiresAt, lastUsed=now)).addErrback(lambda _: None)
        return DeviceIdentity(known.identity, known.model, address)

    async def _lookup(self, digest: str) -> Optional[DeviceSession]:
        try:
            record = await self.state.getSession(digest)
        except Exception:
            if not self._unavailableLogged:
                self._unavailableLogged = True
                self.log.warn("Cannot read device sessions from the state store; "
                              "sessions this node has not seen count as unknown")
            return None
        self._unavailableLogged = False
        return record

    def prune(self) -> Deferred[int]:
        """
        Forget expired sessions and those unused for L{unusedFor} seconds,
        here and in the state store.

        @return: a Deferred firing with how many rows the store removed.
        """
        now = self.clock.seconds()
        for digest in [digest for digest, known in self._known.items()
                       if (known.expiresAt and known.expiresAt <= now)
                       or known.touched < now - self.unusedFor]:
            del self._known[digest]
        return self.state.pruneSessions(self.unusedFor)


class SessionChallenges:
    """
    How often one address is asked to open a new device session, and how
    many session requests it may make.

    @ivar window: seconds over which refusals of one address are counted.
    @ivar maxRefusals: refusals within C{window}, with no session opened
        through the proxy in between, after which the address's unknown
        sessions are counted by address instead of refused again.
    @ivar attemptBurst: session requests an address may make at once;
        C{None} for no bound.
    @ivar attemptRate: session requests per second an address may make
        after its burst.
    """

    log = Logger()

    def __init__(self, clock: Any, window: float = 600.0, maxRefusals: int = 2,
                 attemptBurst: Optional[float] = 600.0, attemptRate: float = 10.0,
                 maxAddresses: int = 100_000) -> None:
        self.clock = clock
        self.window = window
        self.maxRefusals = maxRefusals
        self.attemptBurst = attemptBurst
        self.attemptRate = attemptRate
        self._maxAddresses = maxAddresses
        self._refusals: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _bound(self, table: OrderedDict[str, Any]) -> None:
        while len(table) > self._maxAddresses:
            table.popitem(last=False)

    def challenge(self, address: str) -> Optional[StoreDeny]:
        """
        The answer to a call from C{address} with an unknown session where
        the device is needed: a C{401} asking for a new session, or
        C{None} (count it by address) once C{address} was asked
        C{maxRefusals} times within C{window} seconds in vain.
        """
        now = self.clock.seconds()
        count, first = self._refusals.get(address, (0, now))
        if now - first > self.window:
            count, first = 0, now
        if count >= self.maxRefusals:
            if count == self.maxRefusals:
                self._refusals[address] = (count + 1, first)
                self.log.warn("Devices at {address} did not open a device session through "
                              "this proxy when asked; counting them by address for "
                              "{window:g} s", address=address, window=self.window)
            return None
        self._refusals[address] = (count + 1, first)
        self._refusals.move_to_end(address)
        self._bound(self._refusals)
        return StoreDeny(
            401, "the proxy does not know this device session; open a new one",
            headers=(REFRESH_DEVICE_SESSION,), errorCode="device-authorization-needed")

    def identified(self, address: str) -> None:
        """
        A device at C{address} opened a session through the proxy: its
        earlier refusals are answered.
        """
        self._refusals.pop(address, None)

    def attempt(self, address: str) -> Optional[StoreDeny]:
        """
        Count a session request from C{address}.

        @return: C{None} to let it through, or a C{429} refusal when the
            address has made more than its share.
        """
        if self.attemptBurst is None:
            return None
        now = self.clock.seconds()
        tokens, at = self._buckets.get(address, (self.attemptBurst, now))
        tokens = min(self.attemptBurst, tokens + (now - at) * self.attemptRate)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            self.log.warn("Refused a device session request from {address}: more than "
                          "{burst:g} at once (--device-session-rate)", address=address,
                          burst=self.attemptBurst)
            return StoreDeny(429, "too many device session requests from this address; "
                             "try again later", errorCode="too-many-requests")
        self._buckets[address] = (tokens - 1, now)
        self._buckets.move_to_end(address)
        self._bound(self._buckets)
        return None

