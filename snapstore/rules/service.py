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

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from snapstore.rules.devices import (
    DeviceLimitRule,
    DeviceSessions,
    DeviceStatus,
    connectedDevices,
)
from snapstore.rules.engine import RuleEnv, RuleFailed, RuleSet
from snapstore.rules.loader import RuleLoadError, loadRules
from snapstore.rules.shipped import isShipped
from snapstore.rules.values import DAY, ResponseHead, StoreRequest


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
    @ivar sessions: the L{DeviceSessions} (kept across reloads).
    """

    log = Logger()

    #: Called with C{(old, new)} rule sets after each successful reload.
    reloadObserver: Optional[Callable[[Any, Any], None]] = None

    def __init__(self, directory: str, env: RuleEnv, ruleSet: Optional[RuleSet] = None,
                 installSignal: Callable[..., Any] = signal.signal) -> None:
        """
        @param ruleSet: an already loaded set (tap loads it while parsing
            options, so that a broken file stops start-up); loaded from
            C{directory} now when C{None}.
        @param installSignal: L{signal.signal}, or a fake in tests.
        @raise RuleLoadError: when C{ruleSet} is C{None} and the directory
            is broken.
        """
        self.setName("rules")
        self.directory = directory
        self.env = env
        self.ruleSet = ruleSet if ruleSet is not None else loadRules(directory, env)
        self.sessions = DeviceSessions()
        self._installSignal = installSignal
        self._previousHandler: Any = None

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

    def stopService(self) -> Any:
        super().stopService()
        if self._previousHandler is not None:
            self._installSignal(signal.SIGHUP, self._previousHandler)
            self._previousHandler = None
        self.ruleSet.close()

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
            new = loadRules(self.directory, self.env)
        except RuleLoadError as error:
            self.log.error("Rules reload failed, keeping the {count} rules loaded "
                           "before: {error}", count=len(self.ruleSet.rules), error=str(error))
            return False
        new.verdictObserver = self.ruleSet.verdictObserver
        old, self.ruleSet = self.ruleSet, new
        old.close()
        if self.reloadObserver is not None:  # auditing (snapstore.admin.rulesaudit)
            self.reloadObserver(old, new)
        self.log.info("Reloaded {count} rules from {directory}: {names}",
                      count=len(new.rules), directory=self.directory,
                      names=", ".join(rule.name for rule in new.rules))
        return True

    # -- what the store endpoint calls -------------------------------------

    def describe(self, request: Any, body: bytes = b"", upstreamHeaders: Any = None,
                 blob: Any = None) -> StoreRequest:
        """
        The L{StoreRequest} for a L{twisted.web.server.Request}.
        """
        address = request.getClientAddress()
        host = getattr(address, "host", None) or "unknown"
        headers = tuple((name.lower(), value)
                        for name, values in request.requestHeaders.getAllRawHeaders()
                        for value in values)
        path = request.path.decode("utf-8", "replace")
        query = {key.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in values]
                 for key, values in (request.args or {}).items()}
        device = self.sessions.identify(request.method, path, headers, body, host)
        notes = getattr(request, "snapstoreAccess", None)
        if isinstance(notes, dict):  # the access log's columns
            notes["device"] = device.identity
            if blob is not None and getattr(blob, "snapName", ""):
                notes["snap"] = blob.snapName
        return StoreRequest(method=request.method, path=path, query=query, headers=headers,
                            body=body, device=device, upstreamHeaders=upstreamHeaders,
                            blob=blob)

    def admit(self, request: StoreRequest) -> Deferred[Any]:
        """
        @see: L{RuleSet.admit}
        """
        return self.ruleSet.admit(request)

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
        return self.ruleSet.admit(self.describe(request, blob=blob))

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

    def noteAnswer(self, request: StoreRequest, code: int, answer: bytes) -> None:
        """
        Learn from an answer the device got (the session macaroon of a
        device-session request).
        """
        self.sessions.noteAnswer(request, code, answer)

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
