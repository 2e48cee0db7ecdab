# -*- test-case-name: tests.test_state -*-
"""
What both state-store back-ends share: the L{IStateStore} methods, the
readiness gate and change observers.

A back-end subclasses L{StateStoreBase} and supplies only how to run one
operation (see L{snapstore.state.operations}) in a transaction, how to start
and how to close.
"""

from __future__ import annotations

import enum
from typing import Any, Awaitable, Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from snapstore.interfaces import IFleetState, IImportedContent, IPolicyState, ITrafficHistory
from snapstore.state import audit, fleet, operations, policy, traffic
from snapstore.state.errors import StateUnavailable
from snapstore.state.migrations import (
    Migration,
    applyMigration,
    checkSequence,
    currentVersion,
)
from snapstore.state.operations import Announcement, Audited, Mode, Operation
from snapstore.state.records import (
    AuditEntry,
    BlobRecord,
    Device,
    DeviceSession,
    Override,
)

ChangeObserver = Callable[[dict[str, Any]], object]


class Phase(enum.Enum):
    """
    Where a store is in its life.

    @cvar NEW: constructed, C{start} not called yet.
    @cvar STARTING: connecting and migrating for the first time; calls wait.
    @cvar READY: answering.
    @cvar DOWN: the database is unreachable; calls fail at once while the
        back-end reconnects.
    @cvar FAILED: starting failed for good (a migration error); calls fail.
    @cvar CLOSED: closed; calls fail.
    """

    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    DOWN = "down"
    FAILED = "failed"
    CLOSED = "closed"


@implementer(IImportedContent, IFleetState, IPolicyState, ITrafficHistory)
class StateStoreBase:
    """
    The back-end independent part of an L{IStateStore}.

    @ivar phase: the current L{Phase}.
    @ivar clock: the L{IReactorTime} giving the times recorded in rows (and,
        for PostgreSQL, scheduling reconnection).
    @ivar migrations: the schema history this store brings its database to.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, migrations: Sequence[Migration]) -> None:
        """
        @param clock: see L{clock}.
        @param migrations: see L{migrations}.
        @raise MigrationError: if C{migrations} are not numbered 1, 2, 3...
        """
        checkSequence(migrations)
        self.clock = clock
        self.migrations = tuple(migrations)
        self.phase = Phase.NEW
        self._failure: Failure | None = None
        self._readyWaiters: list[Deferred[None]] = []
        self._startWaiters: list[Deferred[None]] = []
        self._observers: list[ChangeObserver] = []

    # -- back-end hooks ----------------------------------------------------

    def _runTransaction(
        self, operation: Operation, mode: Mode
    ) -> Awaitable[tuple[Any, list[Announcement]]]:
        """
        Run C{operation} in one transaction.

        @return: the operation's result and its announcements: change
            events (already sent to other nodes, not yet to local
            observers) and audit appends (not yet logged).
        """
        raise NotImplementedError()

    # -- readiness ---------------------------------------------------------

    def whenReady(self) -> Deferred[None]:
        """
        @see: L{snapstore.interfaces.IStateStore.whenReady}
        """
        if self.phase is Phase.READY:
            return succeed(None)
        if self.phase in (Phase.FAILED, Phase.CLOSED):
            return fail(self._unavailable())
        d: Deferred[None] = Deferred()
        self._readyWaiters.append(d)
        return d

    def _becameReady(self) -> None:
        """
        Record that the store answers, releasing everything waiting for it.
        """
        self.phase = Phase.READY
        self._failure = None
        self._release(lambda d: d.callback(None))

    def _becameUnavailable(self, phase: Phase, reason: Failure | None) -> None:
        """
        Record that the store cannot answer.  Callers waiting for the first
        start are failed; C{whenReady} waiters keep waiting unless the store
        will never be ready again.
        """
        self.phase = phase
        self._failure = reason
        startWaiters, self._startWaiters = self._startWaiters, []
        for d in startWaiters:
            d.errback(self._unavailable())
        if phase in (Phase.FAILED, Phase.CLOSED):
            readyWaiters, self._readyWaiters = self._readyWaiters, []
            for d in readyWaiters:
                d.errback(self._unavailable())

    def _release(self, fire: Callable[[Deferred[None]], None]) -> None:
        """
        Fire every waiter, of C{whenReady} and of the first start, with
        C{fire}.
        """
        waiters = self._readyWaiters + self._startWaiters
        self._readyWaiters, self._startWaiters = [], []
        for d in waiters:
            fire(d)

    def _unavailable(self) -> StateUnavailable:
        """
        @return: the exception describing why calls fail now.
        """
        reasons = {
            Phase.NEW: "the state store has not been started",
            Phase.STARTING: "the state store is starting",
            Phase.DOWN: "the state database is unreachable",
            Phase.FAILED: "the state store failed to start",
            Phase.CLOSED: "the state store is closed",
            Phase.READY: "the state store is ready",
        }
        message = reasons[self.phase]
        if self._failure is not None:
            message += f": {self._failure.getErrorMessage()}"
        error = StateUnavailable(message)
        if self._failure is not None:
            error.__cause__ = self._failure.value
        return error

    async def _gate(self) -> None:
        """
        Let a call through when the store is ready, make it wait while the
        first start is under way, and fail it at once otherwise.
        """
        if self.phase is Phase.STARTING:
            d: Deferred[None] = Deferred()
            self._startWaiters.append(d)
            await d
        if self.phase is not Phase.READY:
            raise self._unavailable()

    async def _call(self, operation: Operation, mode: Mode) -> Any:
        """
        Run one L{IStateStore} operation behind the gate and tell local
        observers about the changes it made; a change is answered once the
        observers took it in (see L{_dispatch}).
        """
        try:
            await self._gate()
        except BaseException:
            operation.close()
            raise
        result, announcements = await self._runTransaction(operation, mode)
        takenIn: list[Deferred[Any]] = []
        for announcement in announcements:
            if isinstance(announcement, Audited):
                entry = announcement.entry
                self.log.info(
                    "Audit {id} {action} {target} by {actor}: hash {rowHash}",
                    id=entry.id, action=entry.action, target=entry.target,
                    actor=entry.actor, rowHash=entry.rowHash,
                )
            else:
                takenIn += self._dispatch(announcement.event)
        for observed in takenIn:
            await observed
        return result

    def _do(self, operation: Operation, mode: Mode = Mode.READ) -> Deferred[Any]:
        """
        Run C{operation} in C{mode} behind the gate.

        @return: a Deferred firing with its result.  Cancelling it (say,
            because the HTTP client went away) fails it with
            L{CancelledError} at once but lets the transaction finish:
            aborting a query half-way through its protocol exchange would
            leave a database connection unusable, and a change the admin
            asked for should not depend on whether they waited.
        """
        inner = Deferred.fromCoroutine(self._call(operation, mode))
        outer: Deferred[Any] = Deferred(lambda d: None)

        def finished(result: Any) -> None:
            if not outer.called:
                if isinstance(result, Failure):
                    outer.errback(result)
                else:
                    outer.callback(result)
            elif isinstance(result, Failure) and not result.check(
                StateUnavailable
            ):
                self.log.failure(
                    "State store call failed after its caller gave up",
                    result,
                )

        inner.addBoth(finished)
        return outer

    # -- migrations --------------------------------------------------------

    async def _migrate(self) -> list[int]:
        """
        Bring the schema to the newest of L{migrations}.

        @return: the versions applied now.
        @raise MigrationError: when one fails; the database stays at the
            version before it.
        """
        applied = []
        for migration in self.migrations:
            ran, _ = await self._runTransaction(
                applyMigration(migration, self.clock.seconds()), Mode.SERIAL
            )
            if ran:
                self.log.info(
                    "Applied state schema migration {version} ({name})",
                    version=migration.version,
                    name=migration.name,
                )
                applied.append(migration.version)
        version, _ = await self._runTransaction(currentVersion(), Mode.READ)
        if version > len(self.migrations):
            self.log.warn(
                "State database schema is at version {version}, newer than "
                "the {known} this snapstore knows; carrying on.",
                version=version,
                known=len(self.migrations),
            )
        return applied

    def schemaVersion(self) -> Deferred[int]:
        """
        @return: a Deferred firing with the schema version of the database.
        """
        return self._do(currentVersion(), Mode.SERIAL)

    # -- change observers --------------------------------------------------

    def observeChanges(self, callback: ChangeObserver) -> Callable[[], None]:
        """
        @see: L{snapstore.interfaces.IStateStore.observeChanges}
        """
        self._observers.append(callback)

        def stop() -> None:
            """
            Stop calling C{callback}.
            """
            if callback in self._observers:
                self._observers.remove(callback)

        return stop

    def _dispatch(self, event: dict[str, Any]) -> list[Deferred[Any]]:
        """
        Call every observer with C{event}; one failing observer is logged
        and does not stop the others.

        @return: the Deferreds observers returned (an observer that reads
            the changed rows again says when it has them), each failure
            logged and dropped.
        """
        takenIn: list[Deferred[Any]] = []
        for observer in list(self._observers):
            try:
                outcome = observer(dict(event))
            except Exception:
                self._observerFailed(Failure(), observer, event)
                continue
            if isinstance(outcome, Deferred):
                takenIn.append(outcome.addErrback(self._observerFailed, observer, event))
        return takenIn

    def _observerFailed(self, reason: Failure, observer: ChangeObserver,
                        event: dict[str, Any]) -> None:
        self.log.failure(
            "State change observer {observer!r} failed on {event!r}",
            reason,
            observer=observer,
            event=event,
        )

    # -- IStateStore -------------------------------------------------------

    def recordBlob(self, blob: BlobRecord) -> Deferred[BlobRecord]:
        """
        @see: L{snapstore.interfaces.IStateStore.recordBlob}
        """
        return self._do(
            operations.recordBlob(blob, self.clock.seconds()), Mode.WRITE
        )

    def getBlob(self, name: str) -> Deferred[BlobRecord | None]:
        """
        @see: L{snapstore.interfaces.IStateStore.getBlob}
        """
        return self._do(operations.getBlob(name))

    def setOverride(
        self, override: Override, actor: str
    ) -> Deferred[Override | None]:
        """
        @see: L{snapstore.interfaces.IStateStore.setOverride}
        """
        try:
            # Refuse a bad channel before taking any lock.
            operations.normaliseChannel(override.channel)
        except ValueError:
            return fail()
        return self._do(
            operations.setOverride(override, actor, self.clock.seconds()),
            Mode.SERIAL,
        )

    def deleteOverride(
        self,
        snapName: str,
        channel: str,
        actor: str,
        architecture: str | None = None,
        group: str = "",
    ) -> Deferred[list[Override]]:
        """
        @see: L{snapstore.interfaces.IStateStore.deleteOverride}
        """
        try:
            operations.normaliseChannel(channel)
        except ValueError:
            return fail()
        return self._do(
            operations.deleteOverride(
                snapName, channel, actor, architecture, self.clock.seconds(), group
            ),
            Mode.SERIAL,
        )

    def listOverrides(self, snapName: str | None = None) -> Deferred[list[Override]]:
        """
        @see: L{snapstore.interfaces.IStateStore.listOverrides}
        """
        return self._do(operations.listOverrides(snapName))

    def recordDevice(self, device: Device) -> Deferred[Device]:
        """
        @see: L{snapstore.interfaces.IStateStore.recordDevice}
        """
        return self._do(
            operations.recordDevice(device, self.clock.seconds()), Mode.WRITE
        )

    def listDevices(self, seenSince: float | None = None) -> Deferred[list[Device]]:
        """
        @see: L{snapstore.interfaces.IStateStore.listDevices}
        """
        return self._do(operations.listDevices(seenSince))

    def recordSession(self, session: DeviceSession) -> Deferred[DeviceSession]:
        """
        @see: L{snapstore.interfaces.IStateStore.recordSession}
        """
        return self._do(
            operations.recordSession(session, self.clock.seconds()), Mode.WRITE
        )

    def getSession(self, digest: str) -> Deferred[DeviceSession | None]:
        """
        @see: L{snapstore.interfaces.IStateStore.getSession}
        """
        return self._do(operations.getSession(digest))

    def listSessions(
        self, usedSince: float | None = None
    ) -> Deferred[list[DeviceSession]]:
        """
        @see: L{snapstore.interfaces.IStateStore.listSessions}
        """
        return self._do(operations.listSessions(usedSince))

    def pruneSessions(self, unusedFor: float) -> Deferred[int]:
        """
        @see: L{snapstore.interfaces.IStateStore.pruneSessions}
        """
        return self._do(
            operations.pruneSessions(self.clock.seconds(), unusedFor), Mode.WRITE
        )

    def appendAudit(
        self, actor: str, action: str, target: str, before: Any, after: Any
    ) -> Deferred[AuditEntry]:
        """
        @see: L{snapstore.interfaces.IStateStore.appendAudit}
        """
        try:
            audit.canonicalJSON([before, after])
        except (TypeError, ValueError):
            return fail()
        return self._do(
            operations.appendAudit(
                self.clock.seconds(), actor, action, target, before, after
            ),
            Mode.SERIAL,
        )

    def listAudit(
        self,
        target: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Deferred[list[AuditEntry]]:
        """
        @see: L{snapstore.interfaces.IStateStore.listAudit}
        """
        return self._do(operations.listAudit(target, since, until))

    def verifyAudit(self) -> Deferred[int | None]:
        """
        @see: L{snapstore.interfaces.IStateStore.verifyAudit}
        """
        return self.listAudit().addCallback(audit.verifyChain)

    def getSetting(self, key: str) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IStateStore.getSetting}
        """
        return self._do(operations.getSetting(key))

    def setSetting(self, key: str, value: Any, actor: str) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IStateStore.setSetting}
        """
        try:
            audit.canonicalJSON(value)
        except (TypeError, ValueError):
            return fail()
        return self._do(
            operations.setSetting(key, value, actor, self.clock.seconds()),
            Mode.SERIAL,
        )


    # -- imported content (snapstore.offline) ------------------------------

    def importContent(self, content: Any, actor: str) -> Deferred[dict[str, Any]]:
        """
        @see: L{snapstore.interfaces.IStateStore.importContent}
        """
        from snapstore.state import imported

        return self._do(imported.importContent(content, actor, self.clock.seconds()),
                        Mode.SERIAL)

    def getImportedSnap(self, snapName: str | None = None,
                        snapId: str | None = None) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IStateStore.getImportedSnap}
        """
        from snapstore.state import imported

        return self._do(imported.getImportedSnap(snapName, snapId))

    def listImportedSnaps(self) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.IStateStore.listImportedSnaps}
        """
        from snapstore.state import imported

        return self._do(imported.listImportedSnaps())

    def getImportedAssertion(self, type: str, primaryKey: Sequence[str]) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IStateStore.getImportedAssertion}
        """
        from snapstore.state import imported

        return self._do(imported.getImportedAssertion(type, tuple(primaryKey)))

    def listImportedSequence(self, type: str, sequenceKey: Sequence[str]) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IImportedContent.listImportedSequence}
        """
        from snapstore.state import imported

        return self._do(imported.listImportedSequence(type, tuple(sequenceKey)))

    # -- the fleet (snapstore.state.fleet) ---------------------------------

    def recordInventory(self, identity: str, model: str, address: str, architecture: str,
                        snaps: Sequence[Any], names: Any = None) -> Deferred[None]:
        """
        @see: L{snapstore.interfaces.IFleetState.recordInventory}
        """
        return self._do(fleet.recordInventory(identity, model, address, architecture,
                                              snaps, dict(names or {}), self.clock.seconds()),
                        Mode.WRITE)

    def recordSnapNames(self, names: Any) -> Deferred[None]:
        """
        @see: L{snapstore.interfaces.IFleetState.recordSnapNames}
        """
        return self._do(fleet.recordNames(dict(names), self.clock.seconds()), Mode.WRITE)

    def listFleet(self, seenSince: float | None = None, identity: str | None = None,
                  snapName: str | None = None) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.IFleetState.listFleet}
        """
        return self._do(fleet.listFleet(seenSince, identity, snapName))

    def inventory(self, snapName: str | None = None) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.IFleetState.inventory}
        """
        return self._do(fleet.inventory(snapName))

    def snapIdsNamed(self, name: str) -> Deferred[list[str]]:
        """
        @see: L{snapstore.interfaces.IFleetState.snapIdsNamed}
        """
        return self._do(fleet.snapIdsNamed(name))

    def createGroup(self, group: Any, actor: str) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IFleetState.createGroup}
        """
        try:
            audit.canonicalJSON(group.selectors)
        except (TypeError, ValueError):
            return fail()
        return self._do(fleet.createGroup(group, actor, self.clock.seconds()), Mode.SERIAL)

    def deleteGroup(self, name: str, actor: str) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IFleetState.deleteGroup}
        """
        return self._do(fleet.deleteGroup(name, actor, self.clock.seconds()), Mode.SERIAL)

    def listGroups(self) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.IFleetState.listGroups}
        """
        return self._do(fleet.listGroups())

    def appendDeliveries(self, deliveries: Sequence[Any]) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.IFleetState.appendDeliveries}
        """
        return self._do(fleet.appendDeliveries(list(deliveries)), Mode.SERIAL)

    def listDeliveries(self, device: str | None = None, snapName: str | None = None,
                       since: float | None = None) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.IFleetState.listDeliveries}
        """
        return self._do(fleet.listDeliveries(device, snapName, since))

    def verifyDeliveries(self) -> Deferred[int | None]:
        """
        @see: L{snapstore.interfaces.IFleetState.verifyDeliveries}
        """
        return self.listDeliveries().addCallback(audit.verifyChain, None, fleet.deliveryHash)

    # -- change control (snapstore.state.policy) ---------------------------

    def setHold(self, hold: Any, actor: str) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IPolicyState.setHold}
        """
        return self._do(policy.setHold(hold, actor, self.clock.seconds()), Mode.SERIAL)

    def releaseHold(self, snapName: str, channel: str, group: str,
                    actor: str) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IPolicyState.releaseHold}
        """
        return self._do(policy.releaseHold(snapName, channel, group, actor,
                                           self.clock.seconds()), Mode.SERIAL)

    def listHolds(self) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.IPolicyState.listHolds}
        """
        return self._do(policy.listHolds())

    def approve(self, approval: Any, actor: str) -> Deferred[Any]:
        """
        @see: L{snapstore.interfaces.IPolicyState.approve}
        """
        return self._do(policy.approve(approval, actor, self.clock.seconds()), Mode.SERIAL)

    def listApprovals(self, snapName: str | None = None) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.IPolicyState.listApprovals}
        """
        return self._do(policy.listApprovals(snapName))

    def recordChannelRevisions(self, seen: Sequence[Any]) -> Deferred[None]:
        """
        @see: L{snapstore.interfaces.IPolicyState.recordChannelRevisions}
        """
        return self._do(policy.recordChannelRevisions(list(seen), self.clock.seconds()),
                        Mode.WRITE)

    def channelHistory(self, snapName: str, channel: str,
                       architecture: str) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.IPolicyState.channelHistory}
        """
        return self._do(policy.channelHistory(snapName, channel, architecture))

    # -- traffic history (snapstore.state.traffic) -------------------------

    def addTraffic(self, start: float, fromCache: int, fromUpstream: int) -> Deferred[None]:
        """
        @see: L{snapstore.interfaces.ITrafficHistory.addTraffic}
        """
        return self._do(traffic.addTraffic(start, fromCache, fromUpstream), Mode.WRITE)

    def listTraffic(self, since: float) -> Deferred[list[Any]]:
        """
        @see: L{snapstore.interfaces.ITrafficHistory.listTraffic}
        """
        return self._do(traffic.listTraffic(since))

    def pruneTraffic(self, before: float) -> Deferred[int]:
        """
        @see: L{snapstore.interfaces.ITrafficHistory.pruneTraffic}
        """
        return self._do(traffic.pruneTraffic(before), Mode.WRITE)
