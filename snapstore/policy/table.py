# -*- test-case-name: tests.test_policy -*-
"""
The change-control rows of the state store (pins, holds, approvals), read
once and read again when the store announces a change made on this node or
another, so that a refresh costs no database query.

While the database is away the rows read last stay in force (a pinned or
held device must not be offered what upstream has); only a kind that was
never read cannot decide, and fails with L{StateUnavailable}.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from snapstore.state.errors import StateUnavailable

#: Change-event kind -> the state-store method listing that kind.
KINDS = {"override": "listOverrides", "hold": "listHolds", "approval": "listApprovals"}


class _Cached:
    """
    One kind of rows: the last read, whether it is stale, and a generation
    counting changes so that a read racing a change is read again.
    """

    def __init__(self) -> None:
        self.rows: Optional[list[Any]] = None
        self.stale = True
        self.generation = 0
        self.unavailableLogged = False


class PolicyTable:
    """
    Cached pins (C{overrides()}), holds (C{holds()}) and approvals
    (C{approvals()}) of a state store.  A state store without holds (one
    written before change control) has none.
    """

    log = Logger()

    def __init__(self, state: Any) -> None:
        self.state = state
        self._kinds = {kind: _Cached() for kind in KINDS}
        self._stopObserving: Optional[Callable[[], None]] = None

    def _changed(self, event: Any) -> Deferred[Any]:
        """
        Read the kinds C{event} changes again now rather than on the next
        refresh, so that a database lost in between does not leave the old
        ones.

        @return: a Deferred firing once they are read (or could not be): a
            change made on this node is answered only then.
        """
        kind = event.get("kind") if isinstance(event, dict) else None
        reads = []
        for name, cached in self._kinds.items():
            if kind in (name, "resync") or not isinstance(event, dict):
                cached.generation += 1
                cached.stale = True
                reads.append(Deferred.fromCoroutine(self._read(name)).addErrback(lambda _: None))
        return gatherResults(reads)

    async def _read(self, kind: str) -> list[Any]:
        if self._stopObserving is None and hasattr(self.state, "observeChanges"):
            self._stopObserving = self.state.observeChanges(self._changed)
        cached = self._kinds[kind]
        lister = getattr(self.state, KINDS[kind], None)
        if lister is None:
            return []
        while cached.stale:
            generation = cached.generation
            try:
                loaded = await lister()
            except StateUnavailable:
                if cached.rows is None:
                    raise
                if not cached.unavailableLogged:
                    cached.unavailableLogged = True
                    self.log.warn("Cannot read {kind}s from the state store; serving the "
                                  "{count} read last", kind=kind, count=len(cached.rows))
                return cached.rows
            cached.unavailableLogged = False
            if generation == cached.generation:
                cached.rows = list(loaded)
                cached.stale = False
        assert cached.rows is not None
        return cached.rows

    async def overrides(self) -> list[Any]:
        """
        @return: every pin (expired ones too: callers compare with the clock).
        """
        return await self._read("override")

    async def holds(self) -> list[Any]:
        return await self._read("hold")

    async def approvals(self) -> list[Any]:
        return await self._read("approval")

    async def warm(self) -> None:
        """
        Read every kind now.
        """
        for kind in KINDS:
            await self._read(kind)

    def close(self) -> None:
        stop, self._stopObserving = self._stopObserving, None
        if stop is not None:
            stop()


class ProposedPolicy:
    """
    A view of a L{PolicyTable} with proposed pins and holds already made
    (for C{--dry-run}); reads only, writes nothing.

    @ivar proposedPins: L{Override}s replacing any of the same snap,
        channel, architecture and group.
    @ivar proposedHolds: L{Hold}s replacing any of the same snap, channel
        and group.
    @ivar releasedHolds: C{(snap, channel, group)} keys of holds removed.
    """

    def __init__(self, table: Any, proposedPins: Any = (), proposedHolds: Any = (),
                 releasedHolds: Any = (), proposedApprovals: Any = ()) -> None:
        self.table = table
        self.proposedPins = list(proposedPins)
        self.proposedHolds = list(proposedHolds)
        self.releasedHolds = set(releasedHolds)
        self.proposedApprovals = list(proposedApprovals)

    async def overrides(self) -> list[Any]:
        current = await self.table.overrides()
        replaced = {(o.snapName, o.channel, o.architecture, o.group)
                    for o in self.proposedPins}
        return self.proposedPins + [
            o for o in current
            if (o.snapName, o.channel, o.architecture, o.group) not in replaced]

    async def holds(self) -> list[Any]:
        current = await self.table.holds()
        existing = {(h.snapName, h.channel, h.group): h for h in current}
        proposed = []
        for hold in self.proposedHolds:
            # As the state store does: a replaced hold keeps its start.
            before = existing.get((hold.snapName, hold.channel, hold.group))
            proposed.append(attrs.evolve(hold, createdAt=before.createdAt) if before
                            else hold)
        replaced = {(h.snapName, h.channel, h.group) for h in self.proposedHolds}
        replaced |= self.releasedHolds
        return proposed + [h for h in current
                           if (h.snapName, h.channel, h.group) not in replaced]

    async def approvals(self) -> list[Any]:
        return self.proposedApprovals + list(await self.table.approvals())

    async def warm(self) -> None:
        pass

    def close(self) -> None:
        pass
