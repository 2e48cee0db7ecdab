# -*- test-case-name: tests.test_rules -*-
"""
The running rule set: loaded at start-up, reloaded on C{SIGHUP}, and the one
object the store endpoint asks.

A reload builds the new set completely before swapping it in; when any file
is broken the error is logged and the old set stays, so a typo in a rules
file never leaves the proxy without its policy.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Optional

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from snapstore.rules.devices import (
    SESSION_PATH,
    DeviceLimitRule,
    DeviceStatus,
    connectedDevices,
    grantedSession,
    sessionMacaroon,
)
from snapstore.rules.engine import RuleEnv, RuleFailed, RuleSet
from snapstore.rules.loader import RuleLoadError, loadRules
from snapstore.rules.shipped import isShipped
from snapstore.rules.sessions import SessionChallenges, SessionDirectory
from snapstore.rules.values import DAY, DeviceIdentity, ResponseHead, StoreRequest

#: The call on which the proxy always needs to know the device.
REFRESH_PATH = "/v2/snaps/refresh"
#: Seconds between prunings of the device sessions.
PRUNE_EVERY = 3600.0


class RulesService(Service):
    """
    Holds the current L{RuleSet} of a rules directory.

    The store endpoint calls L{describe} to turn a request into a
    L{StoreRequest}, then L{admit}, L{amendRefresh}, L{amendInfo},
    L{amendFind}, L{noteAnswer}; the download path calls L{admitDownload};
    caches call L{cachePolicy}; the admin API calls L{deviceStatus}.

    @ivar directory: the rules directory.
    @ivar env: the L{RuleEnv} every load gets.
    @ivar ruleSet: the current L{RuleSet}.
    @ivar sessions: the L{SessionDirectory} (kept across reloads).
    @ivar challenges: the L{SessionChallenges} (kept across reloads).
    """

    log = Logger()

    def __init__(self, directory: str, env: RuleEnv, ruleSet: Optional[RuleSet] = None,
                 installSignal: Callable[..., Any] = signal.signal,
                 verdictObserver: Optional[Callable[[str, Any], None]] = None) -> None:
        """
        @param ruleSet: an already loaded set (tap loads it while parsing
            options, so that a broken file stops start-up); loaded from
            C{directory} now when C{None}.
        @param installSignal: L{signal.signal}, or a fake in tests.
        @param verdictObserver: called with C{(ruleName, verdict)} for each
            verdict of every rule set this service loads (metrics).
        @raise RuleLoadError: when C{ruleSet} is C{None} and the directory
            is broken.
        """
        self.setName("rules")
        self.directory = directory
        self.env = env
        self.verdictObserver = verdictObserver
        self.ruleSet = ruleSet if ruleSet is not None else loadRules(
            directory, env, verdictObserver=verdictObserver)
        self._reloadObservers: list[Callable[[Any, Any], None]] = []
        self.sessions = SessionDirectory(env.state, env.clock)
        perMinute = getattr(env.settings, "deviceSessionRate", 600)
        self.challenges = SessionChallenges(
            env.clock, attemptBurst=perMinute or None, attemptRate=perMinute / 60.0)
        self._pruning: Optional[LoopingCall] = None
        # The fleet (snapstore.fleet): device groups rules see, and the
        # installed sets refreshes report.
        self.groups: Any = None
        self.inventory: Any = None
        if hasattr(env.state, "listGroups"):
            from snapstore.fleet.groups import GroupDirectory
            from snapstore.fleet.inventory import InventoryRecorder

            self.groups = GroupDirectory(env.state)
            self.inventory = InventoryRecorder(env.state, env.clock)
        self._installSignal = installSignal
        self._previousHandler: Any = None

    def observeReloads(self, observer: Callable[[Any, Any], None]) -> Callable[[], None]:
        """
        Call C{observer(old, new)} after each successful reload.

        @return: a function that stops the calls.
        """
        self._reloadObservers.append(observer)
        return lambda: self._reloadObservers.remove(observer)

    # -- lifetime ----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.log.info("Loaded {count} rules from {directory}{shipped}, files {files}: {names}",
                      count=len(self.ruleSet.rules), directory=self.directory,
                      shipped=" (the shipped rules)" if isShipped(self.directory) else "",
                      files=", ".join(self.ruleSet.files) or "none",
                      names=", ".join(rule.name for rule in self.ruleSet.rules))
        try:
            self._previousHandler = self._installSignal(signal.SIGHUP, self._sighup)
        except ValueError:
            # Not the main thread (some test runners): no reload by signal.
            self.log.warn("Cannot handle SIGHUP here; rules reload only on request")
        whenReady = getattr(self.env.state, "whenReady", None)
        if whenReady is not None:
            whenReady().addCallback(lambda _: self._warm(self.ruleSet)).addErrback(lambda _: None)
        if hasattr(self.env.state, "pruneSessions"):
            self._pruning = LoopingCall(self._prune)
            self._pruning.clock = self.env.clock
            self._pruning.start(PRUNE_EVERY, now=False)

    def _warm(self, ruleSet: RuleSet) -> None:
        """
        Let the rules that keep state in memory (C{warm()}) read it now,
        rather than on the first request: what they read is what they
        decide on while the database is away.
        """
        if self.groups is not None:
            self.groups.warm()
        for rule in ruleSet.rules:
            warm = getattr(rule, "warm", None)
            if warm is not None:
                warm().addErrback(lambda failure: self.log.warn(
                    "Rule could not read its state yet: {why}", why=failure.getErrorMessage()))

    def _prune(self) -> Deferred[Any]:
        def pruned(count: int) -> None:
            if count:
                self.log.info("Forgot {count} expired or unused device sessions", count=count)

        def failed(failure: Any) -> None:
            self.log.warn("Cannot prune device sessions: {why}", why=failure.getErrorMessage())

        return self.sessions.prune().addCallbacks(pruned, failed)

    def stopService(self) -> Any:
        super().stopService()
        if self._pruning is not None and self._pruning.running:
            self._pruning.stop()
        self._pruning = None
        if self._previousHandler is not None:
            self._installSignal(signal.SIGHUP, self._previousHandler)
            self._previousHandler = None
        self.ruleSet.close()
        if self.groups is not None:
            self.groups.close()

    def _sighup(self, signum: int, frame: Any) -> None:
        # Signal handlers run between bytecodes; do the work in the reactor,
        # waking it (callFromThread does) in case it sleeps.
        schedule = getattr(self.env.clock, "callFromThread", None)
        if schedule is not None:
            schedule(self.reload)
        else:
            self.env.clock.callLater(0, self.reload)

    def describeFiles(self) -> dict[str, Any]:
        """
        What C{snapstore status} shows: the directory, whether it is the
        shipped one, and the files of the rules in force.
        """
        return {"directory": os.path.abspath(self.directory),
                "shipped": isShipped(self.directory),
                "files": list(self.ruleSet.files)}

    def reload(self) -> bool:
        """
        Load the directory again and use the new set if it loads.

        @return: whether the new set is in use.
        """
        try:
            new = loadRules(self.directory, self.env, verdictObserver=self.verdictObserver)
        except RuleLoadError as error:
            self.log.error("Rules reload failed, keeping the {count} rules loaded "
                           "before: {error}", count=len(self.ruleSet.rules), error=str(error))
            return False
        old, self.ruleSet = self.ruleSet, new
        self._warm(new)
        old.close()
        for observer in list(self._reloadObservers):  # auditing (admin.rulesaudit)
            observer(old, new)
        self.log.info("Reloaded {count} rules from {directory}: {names}",
                      count=len(new.rules), directory=self.directory,
                      names=", ".join(rule.name for rule in new.rules))
        return True

    # -- what the store endpoint calls -------------------------------------

    def describe(self, request: Any, body: bytes = b"", upstreamHeaders: Any = None,
                 blob: Any = None, parsedBody: Any = None) -> Deferred[StoreRequest]:
        """
        The L{StoreRequest} for a L{twisted.web.server.Request}.

        @param parsedBody: the store endpoint's shared parse of C{body}
            (see L{StoreRequest.parsedBody}), or C{None}.

        @return: a Deferred firing with it once the device is identified
            (which may ask the state store about its session).
        """
        return Deferred.fromCoroutine(self.storeRequest(request, body, upstreamHeaders, blob,
                                                        parsedBody))

    async def _identify(self, method: bytes, path: str, headers: Any,
                        address: str) -> DeviceIdentity:
        """
        Who made a request: the device whose session it carries, else its
        address.  A session request counts as its address: the serial it
        claims is proved only by upstream's answer.
        """
        macaroon = sessionMacaroon(headers)
        if macaroon is not None and not (method == b"POST" and path == SESSION_PATH):
            return await self.sessions.identify(macaroon, address)
        return DeviceIdentity(f"address:{address}", "", address)

    async def storeRequest(self, request: Any, body: bytes = b"", upstreamHeaders: Any = None,
                           blob: Any = None, parsedBody: Any = None) -> StoreRequest:
        """
        L{describe} as a coroutine, for a caller that is one itself (the
        relay): awaited directly, it costs no L{Deferred} of its own.
        """
        address = request.getClientAddress()
        host = getattr(address, "host", None) or "unknown"
        headers = tuple((name.lower(), value)
                        for name, values in request.requestHeaders.getAllRawHeaders()
                        for value in values)
        path = request.path.decode("utf-8", "replace")
        query = {key.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in values]
                 for key, values in (request.args or {}).items()}
        device = await self._identify(request.method, path, headers, host)
        if self.groups is not None:
            groups = await self.groups.groupsFor(device.identity, device.address)
            if groups != device.groups:  # most devices are in none: nothing to change
                device = attrs.evolve(device, groups=groups)
        notes = getattr(request, "snapstoreAccess", None)
        if isinstance(notes, dict):  # the access log's columns
            notes["device"] = device.identity
            if blob is not None and getattr(blob, "snapName", None):
                notes["snap"] = blob.snapName
        return StoreRequest(method=request.method, path=path, query=query, headers=headers,
                            body=body, device=device, upstreamHeaders=upstreamHeaders,
                            blob=blob, parsedBody=parsedBody)

    def admit(self, request: StoreRequest) -> Deferred[Any]:
        """
        Bound session requests per address, ask a device with an unknown
        session to open a new one where the device is needed (see
        L{snapstore.rules.sessions}), then L{RuleSet.admit}.
        """
        return Deferred.fromCoroutine(self.verdict(request))

    async def verdict(self, request: StoreRequest) -> Any:
        """
        L{admit} as a coroutine, for a caller that is one itself (the
        relay).
        """
        address = request.device.address
        refusal = None
        if request.path == SESSION_PATH and request.method == b"POST":
            refusal = self.challenges.attempt(address)
        elif request.device.unknownSession and self.needsDevice(request):
            refusal = self.challenges.challenge(address)
        if refusal is not None:
            return refusal
        return await self.ruleSet.verdict(request)

    def needsDevice(self, request: StoreRequest) -> bool:
        """
        Whether deciding on C{request} needs to know the device: always for
        a refresh, else when a loaded rule says so (the device limit, for
        the calls it counts).
        """
        if request.path == REFRESH_PATH:
            return True
        for rule in self.ruleSet.rules:
            asks = getattr(rule, "needsDevice", None)
            if asks is not None and asks(request):
                return True
        return False

    def admitDownload(self, blob: Any, request: Any) -> Deferred[Any]:
        """
        The one call the download path makes before serving a blob (from
        the cache or upstream).

        @param blob: the L{snapstore.state.records.BlobRecord} asked for.
        @param request: the L{twisted.web.server.Request}.
        @return: a Deferred firing with a verdict; on a
            L{snapstore.rules.verdicts.Deny} answer C{verdict.code} with a
            store error (C{verdict.errorCode} when it has one, else
            C{forbidden}) and C{verdict.reason}.
        """
        return self.describe(request, blob=blob).addCallback(self.admit)

    async def amended(self, kind: str, request: StoreRequest, answer: Any) -> Any:
        """
        @see: L{RuleSet.amended}
        """
        return await self.ruleSet.amended(kind, request, answer)

    def amendRefresh(self, request: StoreRequest, answer: Any) -> Deferred[Any]:
        """
        @see: L{RuleSet.amendRefresh}
        """
        return self.ruleSet.amendRefresh(request, answer)

    def amendInfo(self, request: StoreRequest, answer: Any) -> Deferred[Any]:
        """
        @see: L{RuleSet.amendInfo}
        """
        return self.ruleSet.amendInfo(request, answer)

    def amendFind(self, request: StoreRequest, answer: Any) -> Deferred[Any]:
        """
        @see: L{RuleSet.amendFind}
        """
        return self.ruleSet.amendFind(request, answer)

    def amendCatalogue(self, request: StoreRequest, answer: Any) -> Deferred[Any]:
        """
        @see: L{RuleSet.amendCatalogue}
        """
        return self.ruleSet.amendCatalogue(request, answer)

    def noteAnswer(self, request: StoreRequest, code: int, answer: bytes,
                   document: Any = None) -> None:
        """
        Learn from an answer the device got: the session upstream granted
        to a device-session request (recorded in the state store; on this
        node at once), and what the fleet inventory records.

        @param document: C{answer} already parsed, when the relay has it
            (then it is not parsed again; read, not changed), else C{None}.
        """
        granted = grantedSession(request, code, answer)
        if granted is not None:
            macaroon, identity = granted
            self.challenges.identified(request.device.address)
            self.sessions.learn(macaroon, identity)
        if self.inventory is not None:
            self.inventory.noteAnswer(request, code, answer, document)

    def cachePolicy(self, request: Optional[StoreRequest], response: ResponseHead) -> Any:
        """
        @see: L{RuleSet.cachePolicy}
        """
        return self.ruleSet.cachePolicy(request, response)

    def assertionPolicy(self, assertionType: str, code: int = 200) -> Any:
        """
        The cache policy for an assertion of C{assertionType} that upstream
        answered with C{code}: what the assertion cache asks (see
        C{60-cache.py}).

        @return: a L{snapstore.rules.values.CachePolicy}.
        """
        return self.ruleSet.cachePolicy(
            None, ResponseHead("assertion", code, (), assertionType))

    def deviceStatus(self) -> Deferred[DeviceStatus]:
        """
        "connected devices N / limit M" for C{snapstore status}: from the
        loaded device-limit rule, or (none loaded) devices seen in the last
        24 hours and no limit.
        """
        for rule in self.ruleSet.rules:
            if isinstance(rule, DeviceLimitRule):
                return rule.status()
        d = connectedDevices(self.env.state, self.env.clock, DAY)
        return d.addCallback(lambda devices: DeviceStatus(len(devices), None, DAY))


__all__ = ["RulesService", "RuleFailed", "RuleLoadError"]
