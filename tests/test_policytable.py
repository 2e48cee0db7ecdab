"""
Tests of L{snapstore.policy.table}: the cached pins, holds and approvals,
over a real SQLite state store.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from snapstore.policy.table import PolicyTable
from snapstore.state.errors import StateUnavailable
from snapstore.state.records import Override
from snapstore.state.sqlite import SQLiteStateStore
from tests.helpers import deferred


class _Outage:
    """
    A state store whose pins cannot be read once C{down} is set, as if its
    database had gone away.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.down = False

    def observeChanges(self, callback: Any) -> Any:
        return self.store.observeChanges(callback)

    def listOverrides(self, snapName: Optional[str] = None) -> Deferred[Any]:
        if self.down:
            return fail(StateUnavailable("the database is away"))
        return self.store.listOverrides(snapName)


class PolicyTableTests(TestCase):
    async def startStore(self) -> SQLiteStateStore:
        store = SQLiteStateStore(reactor, self.mktemp() + ".sqlite", clock=Clock())
        self.addCleanup(store.close)
        await store.start()
        return store

    @deferred
    async def test_changeKnownWhenAnswered(self) -> None:
        """
        Once a pin set on this node is answered, the table has it: it is
        served even if the database goes away at once, before any refresh
        read the pins again.
        """
        store = await self.startStore()
        state = _Outage(store)
        table = PolicyTable(state)
        self.addCleanup(table.close)
        self.assertEqual(await table.overrides(), [])
        await store.setOverride(Override("hello", "stable", 10, "amd64"), "admin")
        state.down = True
        self.assertEqual([(o.snapName, o.revision) for o in await table.overrides()],
                         [("hello", 10)])

    @deferred
    async def test_lastReadServedWhileAway(self) -> None:
        """
        A change the table cannot read again (the database went away) leaves
        the pins read last in force.
        """
        store = await self.startStore()
        await store.setOverride(Override("hello", "stable", 10, "amd64"), "admin")
        state = _Outage(store)
        table = PolicyTable(state)
        self.addCleanup(table.close)
        self.assertEqual([o.revision for o in await table.overrides()], [10])
        state.down = True
        await store.setOverride(Override("hello", "stable", 12, "amd64"), "admin")
        self.assertEqual([o.revision for o in await table.overrides()], [10])
