# -*- test-case-name: tests.test_admin_rulesaudit -*-
"""
Auditing changes to the rules: rule files and the device limit live in
C{rules.d}, edited by hand and applied by a reload (SIGHUP) or a restart,
not through the admin API, so the API cannot audit them as it acts.

Instead, each rule set the service loads is summarised (a digest of each
file, the device limit) and compared with the summary the audit log last
recorded; when they differ, a C{rules.change} row records the old and new
summary.  An edit made while the service was stopped is caught at the next
start.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

#: The actor of rule changes: they arrive through the file system.
ACTOR = "system:rules.d"


def summarise(ruleSet: Any, directory: str) -> dict[str, Any]:
    """
    What an admin changes in C{rules.d}: each file's SHA-256 (first 16 hex
    digits) and the device limit of the loaded device-limit rule.
    """
    files: dict[str, Optional[str]] = {}
    for name in getattr(ruleSet, "files", ()):
        try:
            with open(os.path.join(directory, name), "rb") as ruleFile:
                files[name] = hashlib.sha256(ruleFile.read()).hexdigest()[:16]
        except OSError:
            files[name] = None
    limit = None
    for rule in getattr(ruleSet, "rules", ()):
        if getattr(rule, "name", None) == "device-limit":
            limit = getattr(rule, "limit", None)
    return {"files": files, "device-limit": limit}


class RulesAuditor:
    """
    Appends a C{rules.change} audit row when the loaded rules differ from
    the last ones recorded.

    @ivar state: the L{snapstore.interfaces.IStateStore}.
    @ivar directory: the rules directory.
    """

    log = Logger()

    def __init__(self, state: Any, directory: str) -> None:
        self.state = state
        self.directory = directory
        self.target = f"rules:{directory}"
        # One comparison at a time: two reloads in a row must not both
        # compare with the same old row and record the change twice.
        self._lock = DeferredLock()

    def noteRuleSet(self, ruleSet: Any) -> Deferred[Optional[Any]]:
        """
        Compare C{ruleSet} with the last recorded summary and audit the
        difference.

        @return: a Deferred firing with the new audit entry, or C{None}
            when nothing changed; failures are logged, not raised (a rule
            reload must not fail because the audit log is unavailable).
        """
        d = self._lock.run(lambda: Deferred.fromCoroutine(self._note(ruleSet)))

        def failed(failure: Any) -> None:
            self.log.failure("cannot audit the rules loaded from {directory}", failure,
                             directory=self.directory)

        return d.addErrback(failed)

    async def _note(self, ruleSet: Any) -> Optional[Any]:
        after = summarise(ruleSet, self.directory)
        rows = await self.state.listAudit(target=self.target)
        before = rows[-1].after if rows else None
        if before == after or (before is None and not after["files"]):
            # Unchanged, or no rules ever: nothing to record.
            return None
        return await self.state.appendAudit(ACTOR, "rules.change", self.target, before, after)

    def reloaded(self, old: Any, new: Any) -> Deferred[Optional[Any]]:
        """
        The rules service's reload observer.
        """
        return self.noteRuleSet(new)


class RulesAuditService(Service):
    """
    Audits the rules loaded at start (once the state store is ready) and
    at each reload of C{rules}, a L{snapstore.rules.service.RulesService}.

    @ivar audited: fires when the rules loaded at start were audited.
    """

    def __init__(self, rules: Any, state: Any) -> None:
        self.rules = rules
        self.state = state
        self.auditor = RulesAuditor(state, rules.directory)

    def startService(self) -> None:
        super().startService()
        self._stopObserving = self.rules.observeReloads(self.auditor.reloaded)
        ready = self.state.whenReady()
        ready.addCallback(lambda _: self.auditor.noteRuleSet(self.rules.ruleSet))
        ready.addErrback(lambda failure: None)  # the state service logs why
        self.audited = ready

    def stopService(self) -> None:
        super().stopService()
        self._stopObserving()
