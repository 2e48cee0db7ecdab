# -*- test-case-name: tests.test_state -*-
"""
Tests for L{snapstore.state}: one contract suite run against a real SQLite
file and a real PostgreSQL database, plus what only PostgreSQL does
(propagation between nodes, reconnection) and the pure helpers.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
from typing import Any, Callable, Coroutine, Sequence

import attrs
import psycopg2.extensions
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    fail,
    gatherResults,
)
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from snapstore.interfaces import IFleetState, IPolicyState, IStateStore, ITrafficHistory
from snapstore.state.policy import Approval, ChannelRevision, Hold
from snapstore.state.fleet import (
    Delivery,
    DeviceGroup,
    FleetDevice,
    InstalledSnap,
    InventoryCount,
)
from snapstore.state import makeStateStore
from snapstore.state.audit import entryHash, makeEntry, verifyChain
from snapstore.state.base import Phase
from snapstore.state.errors import StateUnavailable
from snapstore.state.migrations import LATEST, MIGRATIONS, Migration
from snapstore.state.postgres import PostgresStateStore
from snapstore.state.records import (
    BlobRecord,
    Device,
    DeviceSession,
    Override,
    normaliseChannel,
)
from snapstore.state.service import StateService
from snapstore.state.sqlite import SQLiteStateStore
from snapstore.state.traffic import TrafficBucket
from tests import pgtest

T0 = 1_700_000_000.0


def asyncTest(
    f: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Deferred[Any]]:
    """
    Let trial run an C{async def} test method.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    return wrapper


async def eventually(
    predicate: Callable[[], bool], what: str, bound: float = 15.0
) -> None:
    """
    Poll C{predicate} on the real reactor until it holds; fail after
    C{bound} seconds.  The bound only turns a hang into a failure: nothing
    is asserted about how long it took.
    """
    waited = 0.0
    while not predicate():
        if waited >= bound:
            raise AssertionError(f"gave up waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


def blob(**kwargs: Any) -> BlobRecord:
    values: dict[str, Any] = dict(
        name="abcdef_12.snap",
        sha3_384="a" * 96,
        size=1234,
        url="https://upstream.example/abcdef_12.snap?token=1",
        snapId="abcdef",
        snapName="hello",
        revision=12,
        architectures=("amd64", "arm64"),
    )
    values.update(kwargs)
    return BlobRecord(**values)


class StateStoreContractMixin:
    """
    What every L{IStateStore} must do.  A subclass provides a fresh database
    per test and these hooks:

        - C{makeDatabase()}: another empty database, returned as a token;
        - C{storeFor(database, clock, migrations)}: an unstarted store;
        - C{rawExecute(database, sql, params)}: run SQL (C{?} placeholders)
          directly, bypassing the store, and return rows.

    @ivar database: the test's main database token.
    @ivar clock: the clock stores record times with.
    """

    database: Any
    clock: Clock

    def makeDatabase(self) -> Any:
        raise NotImplementedError()

    def storeFor(self, database: Any, clock: Any,
                 migrations: Sequence[Migration]) -> Any:
        raise NotImplementedError()

    def rawExecute(self, database: Any, sql: str,
                   params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError()

    def setUpContract(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.database = self.makeDatabase()

    async def started(
        self,
        database: Any = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Any:
        store = self.storeFor(
            self.database if database is None else database,
            self.clock,
            migrations,
        )
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        await store.start()
        return store

    # -- life cycle --------------------------------------------------------

    @asyncTest
    async def test_interface(self) -> None:
        """
        Stores provide L{IStateStore}, including the methods added for
        change observation and audit verification.
        """
        store = await self.started()
        self.assertTrue(verifyObject(IStateStore, store))

    @asyncTest
    async def test_readiness(self) -> None:
        """
        Calls fail with L{StateUnavailable} before C{start} and after
        C{close}; C{whenReady} fires once started and fails once closed.
        """
        store = self.storeFor(self.database, self.clock, MIGRATIONS)
        self.addCleanup(store.close)
        self.failureResultOf(store.getBlob("x"), StateUnavailable)
        await store.start()
        await store.whenReady()
        self.assertIsNone(await store.getBlob("x"))
        await store.close()
        self.failureResultOf(store.getBlob("x"), StateUnavailable)
        self.failureResultOf(store.whenReady(), StateUnavailable)

    @asyncTest
    async def test_callsWaitForStart(self) -> None:
        """
        A call made while the store is starting waits for it rather than
        failing.
        """
        store = self.storeFor(self.database, self.clock, MIGRATIONS)
        self.addCleanup(store.close)
        started = store.start()
        early = store.listOverrides()
        await started
        self.assertEqual(await early, [])

    @asyncTest
    async def test_cancelledCallCompletes(self) -> None:
        """
        Cancelling a call fails it at once with L{CancelledError}, but the
        change is still made and the store keeps working.
        """
        store = await self.started()
        call = store.appendAudit("alice", "note", "t", None, 1)
        call.cancel()
        self.failureResultOf(call, CancelledError)
        for attempt in range(1000):
            if len(await store.listAudit()) == 1:
                break
            await deferLater(reactor, 0.01, lambda: None)
        entry = await store.appendAudit("alice", "note", "t", None, 2)
        self.assertEqual(entry.id, 2)
        self.assertIsNone(await store.verifyAudit())

    # -- blobs -------------------------------------------------------------

    @asyncTest
    async def test_blobRoundTrip(self) -> None:
        """
        A recorded blob reads back equal, with C{seenAt} defaulting to now;
        unknown names give C{None}.
        """
        store = await self.started()
        stored = await store.recordBlob(blob())
        self.assertEqual(stored, blob(seenAt=T0))
        self.assertEqual(await store.getBlob("abcdef_12.snap"), stored)
        self.assertIsNone(await store.getBlob("abcdef_13.snap"))

    @asyncTest
    async def test_blobDigestAndSizeImmutable(self) -> None:
        """
        Recording a name again replaces its URL but never its digest, size
        or first-seen time; unknown descriptive fields get filled in.
        """
        store = await self.started()
        await store.recordBlob(blob(snapName="", revision=0))
        self.clock.advance(60)
        again = await store.recordBlob(
            blob(sha3_384="b" * 96, size=1, url="https://cdn.example/new",
                 snapName="hello", revision=12)
        )
        expected = blob(url="https://cdn.example/new", seenAt=T0)
        self.assertEqual(again, expected)
        self.assertEqual(await store.getBlob("abcdef_12.snap"), expected)

    # -- overrides ---------------------------------------------------------

    @asyncTest
    async def test_overrideSetReplaceList(self) -> None:
        """
        C{setOverride} stores the pin under the normalised channel and
        returns what it replaced; C{stable} and C{latest/stable} are one
        key.  Listing is ordered and can be limited to one snap.
        """
        store = await self.started()
        first = Override("hello", "stable", 10, "amd64", snapId="abcdef")
        self.assertIsNone(await store.setOverride(first, "alice"))
        self.clock.advance(5)
        replaced = await store.setOverride(
            Override("hello", "latest/stable", 11, "amd64", snapId="abcdef"),
            "bob",
        )
        self.assertEqual(
            replaced, attrs.evolve(first, channel="latest/stable",
                                   createdAt=T0)
        )
        await store.setOverride(Override("hello", "edge", 12, "arm64"), "bob")
        await store.setOverride(Override("aaa", "2.0/beta", 3, "amd64"), "bob")
        self.assertEqual(
            await store.listOverrides(),
            [
                Override("aaa", "2.0/beta", 3, "amd64", createdAt=T0 + 5),
                Override("hello", "latest/edge", 12, "arm64",
                         createdAt=T0 + 5),
                Override("hello", "latest/stable", 11, "amd64",
                         snapId="abcdef", createdAt=T0 + 5),
            ],
        )
        self.assertEqual(
            [o.snapName for o in await store.listOverrides("hello")],
            ["hello", "hello"],
        )
        self.assertEqual(await store.listOverrides("nothing"), [])

    @asyncTest
    async def test_scopedExpiringOverrides(self) -> None:
        """
        A pin for a group is kept beside the global pin of the same snap,
        channel and architecture, with its expiry and reason;
        C{deleteOverride} with a group removes only that group's pin; the
        audit rows carry scope, expiry and reason.
        """
        store = await self.started()
        await store.setOverride(Override("hello", "stable", 1, "amd64"), "alice")
        await store.setOverride(Override("hello", "stable", 2, "amd64", group="canary",
                                         until=T0 + 60, reason="audit"), "alice")
        pins = await store.listOverrides("hello")
        self.assertEqual([(p.group, p.revision, p.until, p.reason) for p in pins],
                         [("", 1, None, ""), ("canary", 2, T0 + 60, "audit")])
        self.assertFalse(pins[1].expired(T0 + 59))
        self.assertTrue(pins[1].expired(T0 + 60))
        entries = await store.listAudit()
        self.assertEqual(entries[-1].after["group"], "canary")
        self.assertEqual(entries[-1].after["reason"], "audit")
        self.assertNotIn("group", entries[-2].after)
        removed = await store.deleteOverride("hello", "stable", "bob", group="canary")
        self.assertEqual([p.revision for p in removed], [2])
        self.assertEqual([p.revision for p in await store.listOverrides()], [1])

    @asyncTest
    async def test_holdsApprovalsHistory(self) -> None:
        """
        Holds are keyed by snap, channel and group and replaced in place;
        releasing one returns it (C{None} when there is none); approvals
        are kept per snap, revision and group; the first sighting of a
        revision on a channel is kept, never moved; every change is
        audited and announced.
        """
        store = await self.started()
        events: list[Any] = []
        store.observeChanges(events.append)
        self.assertIsNone(await store.setHold(Hold("hello", "", "", 3600.0, "soak"), "alice"))
        self.clock.advance(10)
        previous = await store.setHold(Hold("hello", "", "", None, "qa"), "alice")
        self.assertEqual(previous.holdFor, 3600.0)
        # Replaced, a hold keeps its start: what was new under it stays new.
        self.assertEqual([h.createdAt for h in await store.listHolds()], [T0])
        await store.setHold(Hold("", "latest/stable", "line", 60.0), "alice")
        holds = await store.listHolds()
        self.assertEqual([(h.snapName, h.channel, h.group, h.holdFor, h.untilApproved)
                          for h in holds],
                         [("", "latest/stable", "line", 60.0, False),
                          ("hello", "", "", None, True)])
        gone = await store.releaseHold("", "latest/stable", "line", "bob")
        self.assertEqual(gone.group, "line")
        self.assertIsNone(await store.releaseHold("", "latest/stable", "line", "bob"))
        await store.approve(Approval("hello", 12, "", "QA ticket 7"), "carol")
        await store.approve(Approval("hello", 12, "line"), "carol")
        self.assertEqual([(a.revision, a.group) for a in await store.listApprovals("hello")],
                         [(12, ""), (12, "line")])
        self.assertEqual(await store.listApprovals("other"), [])
        await store.recordChannelRevisions([ChannelRevision("hello", "latest/stable",
                                                            "amd64", 10)])
        self.clock.advance(30)
        await store.recordChannelRevisions([
            ChannelRevision("hello", "latest/stable", "amd64", 10),
            ChannelRevision("hello", "latest/stable", "amd64", 12)])
        history = await store.channelHistory("hello", "latest/stable", "amd64")
        self.assertEqual([(c.revision, c.firstSeen) for c in history],
                         [(10, T0 + 10), (12, T0 + 40)])
        self.assertEqual(await store.channelHistory("hello", "latest/edge", "amd64"), [])
        actions = [e.action for e in await store.listAudit()]
        self.assertEqual(actions, ["hold.set", "hold.set", "hold.set", "hold.release",
                                   "approve", "approve"])
        self.assertEqual((await store.listAudit())[-2].after["reason"], "QA ticket 7")
        self.assertEqual({e["kind"] for e in events}, {"hold", "approval"})
        self.assertTrue(verifyObject(IPolicyState, store))

    @asyncTest
    async def test_overrideDelete(self) -> None:
        """
        C{deleteOverride} removes the pins of one channel (any spelling),
        for one architecture or all, and returns them; deleting nothing
        returns an empty list and writes no audit row.
        """
        store = await self.started()
        for arch in ("amd64", "arm64", "s390x"):
            await store.setOverride(Override("hello", "latest/stable", 1,
                                             arch), "alice")
        await store.setOverride(Override("hello", "edge", 2, "amd64"), "a")
        removed = await store.deleteOverride("hello", "stable", "bob",
                                             architecture="arm64")
        self.assertEqual([o.architecture for o in removed], ["arm64"])
        removed = await store.deleteOverride("hello", "latest/stable", "bob")
        self.assertEqual([o.architecture for o in removed],
                         ["amd64", "s390x"])
        self.assertEqual(
            [(o.channel, o.architecture) for o in await store.listOverrides()],
            [("latest/edge", "amd64")],
        )
        before = len(await store.listAudit())
        self.assertEqual(await store.deleteOverride("hello", "beta", "bob"),
                         [])
        self.assertEqual(len(await store.listAudit()), before)

    @asyncTest
    async def test_overrideBadChannel(self) -> None:
        """
        A malformed channel is refused with L{ValueError}.
        """
        store = await self.started()
        await self.assertFailure(
            store.setOverride(Override("hello", "latest/nope", 1, "amd64"),
                              "alice"),
            ValueError,
        )
        await self.assertFailure(
            store.deleteOverride("hello", "", "alice"), ValueError
        )

    @asyncTest
    async def test_overrideAudited(self) -> None:
        """
        Setting and deleting overrides append audit rows naming the actor,
        the snap and the values before and after.
        """
        store = await self.started()
        await store.setOverride(Override("hello", "stable", 1, "amd64"),
                                "alice")
        await store.deleteOverride("hello", "stable", "bob")
        rows = await store.listAudit(target="snap:hello")
        pin = {"snapName": "hello", "channel": "latest/stable",
               "architecture": "amd64", "revision": 1, "snapId": ""}
        self.assertEqual(
            [(r.actor, r.action, r.before, r.after) for r in rows],
            [("alice", "override.set", None, pin),
             ("bob", "override.delete", [pin], None)],
        )

    # -- devices -----------------------------------------------------------

    @asyncTest
    async def test_devices(self) -> None:
        """
        C{recordDevice} inserts, then updates: the last-seen time only moves
        forward and empty fields keep known values.  C{seenSince} limits
        the listing.
        """
        store = await self.started()
        one = await store.recordDevice(
            Device("canonical/pc/1", model="pc", address="10.0.0.1"))
        self.assertEqual(
            one, Device("canonical/pc/1", "pc", "10.0.0.1", T0, T0))
        self.clock.advance(100)
        await store.recordDevice(Device("address:10.0.0.9",
                                        address="10.0.0.9"))
        updated = await store.recordDevice(
            Device("canonical/pc/1", address="10.0.0.2"))
        self.assertEqual(
            updated, Device("canonical/pc/1", "pc", "10.0.0.2", T0, T0 + 100))
        late = await store.recordDevice(
            Device("canonical/pc/1", lastSeen=T0 + 50))
        self.assertEqual(late.lastSeen, T0 + 100)
        self.assertEqual(
            [d.identity for d in await store.listDevices()],
            ["address:10.0.0.9", "canonical/pc/1"],
        )
        self.assertEqual(len(await store.listDevices(seenSince=T0 + 100)), 2)
        self.clock.advance(1)
        await store.recordDevice(Device("address:10.0.0.9"))
        self.assertEqual(
            [d.identity for d in await store.listDevices(seenSince=T0 + 101)],
            ["address:10.0.0.9"],
        )

    # -- the fleet (snapstore.state.fleet) ----------------------------------

    @asyncTest
    async def test_fleetInterface(self) -> None:
        """
        Stores provide L{IFleetState}.
        """
        store = await self.started()
        self.assertTrue(verifyObject(IFleetState, store))

    @asyncTest
    async def test_inventory(self) -> None:
        """
        C{recordInventory} replaces a device's installed set and records
        its architecture; names come from the C{names} given (any answer);
        C{inventory} counts devices per snap, revision, channel and
        architecture; C{listFleet} filters by identity and snap.
        """
        store = await self.started()
        await store.recordInventory("b/m/1", "b/m", "10.0.0.1", "amd64", [
            InstalledSnap("id-a", 3, "latest/stable"), InstalledSnap("id-b", 7, "")],
            {"id-a": "alpha"})
        await store.recordInventory("b/m/2", "b/m", "10.0.0.2", "arm64", [
            InstalledSnap("id-a", 4, "latest/stable")], {})
        await store.recordInventory("b/m/3", "", "", "amd64", [
            InstalledSnap("id-a", 3, "latest/stable")], {})
        await store.recordSnapNames({"id-b": "beta"})
        self.assertEqual(await store.inventory(), [
            InventoryCount("id-a", "alpha", 3, "latest/stable", "amd64", 2),
            InventoryCount("id-a", "alpha", 4, "latest/stable", "arm64", 1),
            InventoryCount("id-b", "beta", 7, "", "amd64", 1)])
        self.assertEqual([c.snapId for c in await store.inventory("beta")], ["id-b"])
        self.clock.advance(10)
        await store.recordInventory("b/m/1", "", "", "amd64", [InstalledSnap("id-a", 4, "x")], {})
        [device] = await store.listFleet(identity="b/m/1")
        self.assertEqual(device, FleetDevice("b/m/1", "b/m", "10.0.0.1", "amd64", T0, T0 + 10,
                                             (InstalledSnap("id-a", 4, "x", "alpha"),)))
        self.assertEqual([d.identity for d in await store.listFleet(snapName="beta")], [])
        self.assertEqual([d.identity for d in await store.listFleet(snapName="alpha")],
                         ["b/m/1", "b/m/2", "b/m/3"])
        self.assertEqual([d.identity for d in await store.listFleet(seenSince=T0 + 5)],
                         ["b/m/1"])
        self.assertEqual(await store.snapIdsNamed("alpha"), ["id-a"])

    @asyncTest
    async def test_groups(self) -> None:
        """
        Groups are created, replaced, listed and deleted; each change is
        audited and announced.
        """
        store = await self.started()
        events: list[Any] = []
        store.observeChanges(events.append)
        selectors = {"serial": ["S"], "model": [], "network": ["10.0.0.0/8"], "device": []}
        self.assertIsNone(await store.createGroup(DeviceGroup("g", selectors), "alice"))
        previous = await store.createGroup(DeviceGroup("g", {"serial": ["T"]}), "bob")
        self.assertEqual(previous.selectors, selectors)
        [group] = await store.listGroups()
        self.assertEqual(group.selectors["serial"], ["T"])
        self.assertEqual((await store.deleteGroup("g", "carol")).name, "g")
        self.assertIsNone(await store.deleteGroup("g", "carol"))
        self.assertEqual(await store.listGroups(), [])
        entries = await store.listAudit(target="group:g")
        self.assertEqual([(e.actor, e.action) for e in entries],
                         [("alice", "group.set"), ("bob", "group.set"), ("carol", "group.delete")])
        self.assertEqual([e for e in events if e.get("kind") == "group"],
                         [{"kind": "group", "name": "g"}] * 3)

    async def deliveryChain(self, store: Any, count: int) -> list[Any]:
        rows = [Delivery(0, T0 + n, "b/m/1", "hello", "id", n, "d" * 96, 100 + n, n % 2 == 0,
                         "HIT") for n in range(count)]
        stored = await store.appendDeliveries(rows[:2])
        stored += await store.appendDeliveries(rows[2:])
        return stored

    @asyncTest
    async def test_deliveries(self) -> None:
        """
        Delivery rows are appended in batches to one chain, listed by
        device, snap and time, and verified; an edited, removed or inserted
        row is named.
        """
        store = await self.started()
        stored = await self.deliveryChain(store, 5)
        self.assertEqual([d.id for d in stored], [1, 2, 3, 4, 5])
        self.assertEqual(await store.listDeliveries(), stored)
        self.assertEqual(len(await store.listDeliveries(since=T0 + 3)), 2)
        self.assertEqual(len(await store.listDeliveries(device="other")), 0)
        self.assertEqual(len(await store.listDeliveries(snapName="hello")), 5)
        self.assertIsNone(await store.verifyDeliveries())
        self.rawExecute(self.database, "UPDATE delivery_log SET bytes = 1 WHERE id = 3")
        self.assertEqual(await store.verifyDeliveries(), 3)
        self.rawExecute(self.database, "DELETE FROM delivery_log WHERE id = 3")
        self.assertEqual(await store.verifyDeliveries(), 4)

    @asyncTest
    async def test_racingDeliveryWriters(self) -> None:
        """
        Batches appended at once from two stores on one database form one
        chain.
        """
        first = await self.started()
        second = await self.started()
        rows = [Delivery(0, T0, "d", "s", "i", 1, "x", 1, True, "MISS")] * 3
        await gatherResults([first.appendDeliveries(rows) for _ in range(5)]
                            + [second.appendDeliveries(rows) for _ in range(5)])
        self.assertEqual(len(await first.listDeliveries()), 30)
        self.assertIsNone(await first.verifyDeliveries())

    # -- device sessions ---------------------------------------------------

    @asyncTest
    async def test_sessions(self) -> None:
        """
        C{recordSession} inserts a session under its digest, then only moves
        its last-used time forward and takes a new expiry; the identity of a
        digest never changes.  C{getSession} finds it, C{listSessions}
        filters by last use.
        """
        store = await self.started()
        self.assertIsNone(await store.getSession("d1"))
        one = await store.recordSession(
            DeviceSession("d1", "acme/gizmo/1", model="acme/gizmo"))
        self.assertEqual(
            one, DeviceSession("d1", "acme/gizmo/1", "acme/gizmo", T0, 0.0, T0))
        self.clock.advance(100)
        again = await store.recordSession(
            DeviceSession("d1", "forged/other/9", expiresAt=T0 + 5000))
        self.assertEqual(
            again,
            DeviceSession("d1", "acme/gizmo/1", "acme/gizmo", T0, T0 + 5000,
                          T0 + 100))
        late = await store.recordSession(
            DeviceSession("d1", "acme/gizmo/1", lastUsed=T0 + 1))
        self.assertEqual((late.lastUsed, late.expiresAt), (T0 + 100, T0 + 5000))
        await store.recordSession(DeviceSession("d2", "acme/gizmo/2",
                                                lastUsed=T0 + 10))
        self.assertEqual(await store.getSession("d1"), again)
        self.assertEqual([s.digest for s in await store.listSessions()],
                         ["d1", "d2"])
        self.assertEqual(
            [s.digest for s in await store.listSessions(usedSince=T0 + 50)],
            ["d1"])

    @asyncTest
    async def test_pruneSessions(self) -> None:
        """
        C{pruneSessions} removes the sessions past their expiry and those
        unused for the given time, keeps the rest, and says how many went.
        """
        store = await self.started()
        await store.recordSession(DeviceSession("expired", "a/b/1",
                                                expiresAt=T0 + 10))
        await store.recordSession(DeviceSession("valid", "a/b/2",
                                                expiresAt=T0 + 10_000))
        await store.recordSession(DeviceSession("idle", "a/b/3",
                                                lastUsed=T0 - 1000))
        await store.recordSession(DeviceSession("recent", "a/b/4"))
        self.clock.advance(20)
        self.assertEqual(await store.pruneSessions(500), 2)
        self.assertEqual([s.digest for s in await store.listSessions()],
                         ["recent", "valid"])
        self.assertEqual(await store.pruneSessions(500), 0)

    # -- traffic history -----------------------------------------------------

    @asyncTest
    async def test_trafficHistory(self) -> None:
        """
        Bytes added to a bucket are summed (two nodes adding to one bucket
        chart the site's traffic); buckets are listed oldest first from a
        time on, and pruning removes those before a time and says how many.
        """
        store = await self.started()
        self.assertTrue(verifyObject(ITrafficHistory, store))
        await store.addTraffic(T0, 100, 7)
        await store.addTraffic(T0 + 300, 5, 0)
        await store.addTraffic(T0, 20, 3)
        self.assertEqual(await store.listTraffic(T0),
                         [TrafficBucket(T0, 120, 10), TrafficBucket(T0 + 300, 5, 0)])
        self.assertEqual(await store.listTraffic(T0 + 1), [TrafficBucket(T0 + 300, 5, 0)])
        self.assertEqual(await store.pruneTraffic(T0 + 300), 1)
        self.assertEqual(await store.pruneTraffic(T0 + 300), 0)
        self.assertEqual(await store.listTraffic(0), [TrafficBucket(T0 + 300, 5, 0)])

    # -- settings ----------------------------------------------------------

    @asyncTest
    async def test_settings(self) -> None:
        """
        Settings hold JSON values, return the previous value when changed,
        are audited, and C{None} removes them.
        """
        store = await self.started()
        self.assertIsNone(await store.getSetting("device-limit"))
        self.assertIsNone(await store.setSetting("device-limit", 25, "admin"))
        self.assertEqual(await store.getSetting("device-limit"), 25)
        self.assertEqual(
            await store.setSetting("device-limit", {"max": [1, 2]}, "admin"),
            25)
        self.assertEqual(await store.getSetting("device-limit"),
                         {"max": [1, 2]})
        self.assertEqual(
            await store.setSetting("device-limit", None, "admin"),
            {"max": [1, 2]})
        self.assertIsNone(await store.getSetting("device-limit"))
        rows = await store.listAudit(target="setting:device-limit")
        self.assertEqual([(r.before, r.after) for r in rows],
                         [(None, 25), (25, {"max": [1, 2]}),
                          ({"max": [1, 2]}, None)])
        await self.assertFailure(store.setSetting("x", object(), "a"),
                                 TypeError)

    # -- audit -------------------------------------------------------------

    @asyncTest
    async def test_auditAppendAndList(self) -> None:
        """
        Appended rows are numbered from 1, chained by hash, read back equal
        and can be filtered by target and time.
        """
        store = await self.started()
        first = await store.appendAudit("alice", "cache.prune", "cache",
                                        None, {"freed": 10})
        self.clock.advance(10)
        second = await store.appendAudit("bob", "note", "other", (1, "x"),
                                         None)
        self.assertEqual((first.id, first.previousHash), (1, ""))
        self.assertEqual(second.previousHash, first.rowHash)
        self.assertEqual(second.before, [1, "x"])
        self.assertEqual(entryHash(second), second.rowHash)
        self.assertEqual(await store.listAudit(), [first, second])
        self.assertEqual(await store.listAudit(target="other"), [second])
        self.assertEqual(await store.listAudit(since=T0 + 1), [second])
        self.assertEqual(await store.listAudit(until=T0 + 10), [first])
        self.assertIsNone(await store.verifyAudit())

    @asyncTest
    async def test_auditAppendLogged(self) -> None:
        """
        Every committed audit row is also logged with its id and hash, so
        the newest row is known outside the database.
        """
        store = await self.started()
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        entry = await store.appendAudit("alice", "note", "t", None, 1)
        self.assertIn((entry.id, entry.rowHash),
                      [(e.get("id"), e.get("rowHash")) for e in logged])

    async def chainOfFive(self) -> Any:
        store = await self.started()
        for n in range(5):
            await store.appendAudit("alice", "note", "t", None, {"n": n})
        self.assertIsNone(await store.verifyAudit())
        return store

    @asyncTest
    async def test_auditDetectsEditedRow(self) -> None:
        """
        Changing any field of a stored row makes verification name it.
        """
        store = await self.chainOfFive()
        self.rawExecute(self.database,
                        'UPDATE audit_log SET "after" = ? WHERE id = 3',
                        ('{"n":99}',))
        self.assertEqual(await store.verifyAudit(), 3)

    @asyncTest
    async def test_auditDetectsDeletedRow(self) -> None:
        """
        Removing a row makes verification name the row after the gap, and
        removing the first row names the new first row.
        """
        store = await self.chainOfFive()
        self.rawExecute(self.database, "DELETE FROM audit_log WHERE id = 3")
        self.assertEqual(await store.verifyAudit(), 4)
        self.rawExecute(self.database, "DELETE FROM audit_log WHERE id = 1")
        self.assertEqual(await store.verifyAudit(), 2)

    @asyncTest
    async def test_auditDetectsInsertedRow(self) -> None:
        """
        A row slipped into the middle of the chain (later rows renumbered
        to make room, the forged row correctly linked to its predecessor)
        is caught at the row after it.
        """
        store = await self.chainOfFive()
        rows = await store.listAudit()
        self.rawExecute(self.database,
                        "UPDATE audit_log SET id = id + 100 WHERE id >= 3")
        self.rawExecute(self.database,
                        "UPDATE audit_log SET id = id - 99 WHERE id >= 100")
        forged = makeEntry(3, T0, "mallory", "note", "t", None, {"n": -1},
                           rows[1].rowHash)
        self.rawExecute(
            self.database,
            'INSERT INTO audit_log (id, time, actor, action, target,'
            ' "before", "after", previous_hash, row_hash)'
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (3, T0, "mallory", "note", "t", "null", '{"n":-1}',
             forged.previousHash, forged.rowHash),
        )
        self.assertEqual(await store.verifyAudit(), 4)

    # -- change observers --------------------------------------------------

    @asyncTest
    async def test_localObservers(self) -> None:
        """
        Observers are told about override and setting changes made through
        the store, one failing observer does not stop the others, and an
        observer can stop observing.
        """
        store = await self.started()
        seen: list[dict[str, Any]] = []

        def broken(event: dict[str, Any]) -> None:
            raise RuntimeError("observer bug")

        store.observeChanges(broken)
        stop = store.observeChanges(seen.append)
        await store.setOverride(Override("hello", "stable", 1, "amd64"), "a")
        await store.setSetting("device-limit", 3, "a")
        await store.deleteOverride("hello", "stable", "a")
        await store.recordDevice(Device("d"))
        self.assertEqual(
            seen,
            [{"kind": "override", "snapName": "hello",
              "channel": "latest/stable", "architecture": "amd64"},
             {"kind": "setting", "key": "device-limit"},
             {"kind": "override", "snapName": "hello",
              "channel": "latest/stable", "architecture": "amd64"}],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        stop()
        await store.setSetting("device-limit", 4, "a")
        self.assertEqual(len(seen), 3)
        self.flushLoggedErrors(RuntimeError)

    @asyncTest
    async def test_changeAnsweredOnceObserversTookItIn(self) -> None:
        """
        A change is answered only once the Deferred an observer returned
        fired (so that a node applies every change it answered); one that
        fails is logged, and the change stands.
        """
        store = await self.started()
        told: Deferred[None] = Deferred()
        takenIn: Deferred[None] = Deferred()

        def observer(event: dict[str, Any]) -> Deferred[None]:
            told.callback(None)
            return takenIn

        stop = store.observeChanges(observer)
        setting = store.setOverride(Override("hello", "stable", 1, "amd64"), "a")
        await told
        # Out of the observer's call, and a turn of the reactor later:
        await deferLater(reactor, 0, lambda: None)
        self.assertNoResult(setting)
        takenIn.callback(None)
        self.assertIsNone(await setting)
        stop()

        store.observeChanges(lambda event: fail(RuntimeError("observer bug")))
        await store.setSetting("device-limit", 3, "a")
        self.assertEqual(await store.getSetting("device-limit"), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    # -- concurrency -------------------------------------------------------

    @asyncTest
    async def test_racingOverrideWriters(self) -> None:
        """
        Two stores on one database setting the same pin at once are
        serialised: one replaces the other, both changes are audited and the
        chain stays intact.
        """
        one = await self.started()
        two = await self.started()
        results = await gatherResults([
            one.setOverride(Override("hello", "stable", 1, "amd64"), "one"),
            two.setOverride(Override("hello", "latest/stable", 2, "amd64"),
                            "two"),
        ])
        self.assertEqual(results.count(None), 1)
        replaced = [r for r in results if r is not None]
        self.assertEqual(len(replaced), 1)
        final = await one.listOverrides()
        self.assertEqual(len(final), 1)
        self.assertNotEqual(replaced[0].revision, final[0].revision)
        self.assertEqual(len(await one.listAudit()), 2)
        self.assertIsNone(await two.verifyAudit())

    @asyncTest
    async def test_racingAuditWriters(self) -> None:
        """
        Many appends from two stores at once give one unbroken chain.
        """
        one = await self.started()
        two = await self.started()
        results = await DeferredList(
            [store.appendAudit(store is one and "one" or "two", "note", "t",
                               None, {"n": n})
             for n in range(10) for store in (one, two)],
            fireOnOneErrback=True, consumeErrors=True,
        )
        self.assertEqual(sorted(entry.id for _, entry in results),
                         list(range(1, 21)))
        self.assertIsNone(await one.verifyAudit())

    # -- migrations --------------------------------------------------------

    @asyncTest
    async def test_migrateEmpty(self) -> None:
        """
        An empty database is brought to the latest schema version, and
        starting again applies nothing.
        """
        store = await self.started()
        self.assertEqual(await store.schemaVersion(), LATEST)
        await store.close()
        again = await self.started()
        self.assertEqual(await again._migrate(), [])
        self.assertEqual(await again.schemaVersion(), LATEST)

    @asyncTest
    async def test_migrateFromEveryVersion(self) -> None:
        """
        A database left at any earlier schema version, holding data, is
        migrated to the latest and keeps its data.
        """
        for version in range(len(MIGRATIONS)):
            database = self.makeDatabase()
            old = await self.started(database, MIGRATIONS[:version])
            self.assertEqual(await old.schemaVersion(), version)
            if version >= 1:
                await old.recordBlob(blob())
                await old.appendAudit("alice", "note", "t", None, version)
                # A pin as the schema of that version stores it.
                await old.close()
                self.rawExecute(database, "INSERT INTO overrides (snap_name, channel,"
                                " architecture, revision, snap_id, created_at) VALUES"
                                " ('pinned', 'latest/stable', 'amd64', 3, '', 1)")
            await old.close()
            new = await self.started(database)
            self.assertEqual(await new.schemaVersion(), LATEST)
            if version >= 1:
                self.assertEqual(await new.getBlob(blob().name),
                                 blob(seenAt=T0))
                # Pins made before change control apply to everyone, forever.
                [pin] = await new.listOverrides("pinned")
                self.assertEqual((pin.revision, pin.group, pin.until, pin.reason),
                                 (3, "", None, ""))
            await new.setHold(Hold("n", "", "", 60.0, "soak"), "admin")
            self.assertEqual(len(await new.listHolds()), 1)
            await new.recordSession(DeviceSession("d", "a/b/c"))
            self.assertEqual((await new.getSession("d")).identity, "a/b/c")
            await new.setSetting("device-limit", 5, "admin")
            self.assertEqual(await new.getSetting("device-limit"), 5)
            await new.recordDevice(Device("b/m/old", "b/m"))
            await new.recordInventory("b/m/old", "", "", "arm64",
                                      [InstalledSnap("id", 2, "stable")], {"id": "n"})
            self.assertEqual((await new.listFleet(identity="b/m/old"))[0].model, "b/m")
            await new.appendDeliveries([Delivery(0, T0, "b/m/old", "n", "id", 2, "d", 1, True,
                                                 "HIT")])
            self.assertIsNone(await new.verifyDeliveries())
            self.assertIsNone(await new.verifyAudit())
            await new.addTraffic(T0, 1, 2)
            self.assertEqual(await new.listTraffic(T0), [TrafficBucket(T0, 1, 2)])
            await new.close()

    @asyncTest
    async def test_failedMigrationRollsBack(self) -> None:
        """
        A migration that fails leaves no trace and the schema at the version
        before it; the store refuses to start.
        """
        broken = Migration(LATEST + 1, "broken", (
            "CREATE TABLE half_done (a BIGINT)",
            "THIS IS NOT SQL",
        ))
        store = self.storeFor(self.database, self.clock,
                              MIGRATIONS + (broken,))
        self.addCleanup(store.close)
        await self.assertFailure(store.start(), StateUnavailable)
        await self.assertFailure(store.whenReady(), StateUnavailable)
        self.flushLoggedErrors()
        self.assertRaises(Exception, self.rawExecute, self.database,
                          "SELECT a FROM half_done")
        self.assertEqual(
            self.rawExecute(self.database,
                            "SELECT MAX(version) FROM schema_version")[0][0],
            LATEST)


class SQLiteStateStoreTests(StateStoreContractMixin, TestCase):
    """
    The contract, against SQLite files.
    """

    def setUp(self) -> None:
        self.setUpContract()

    def makeDatabase(self) -> str:
        return self.mktemp() + ".sqlite"

    def storeFor(self, database: str, clock: Any,
                 migrations: Sequence[Migration]) -> SQLiteStateStore:
        if not os.path.isdir(os.path.dirname(database)):
            os.makedirs(os.path.dirname(database))
        return SQLiteStateStore(reactor, database, clock=clock,
                                migrations=migrations)

    def rawExecute(self, database: str, sql: str,
                   params: Sequence[Any] = ()) -> Any:
        connection = sqlite3.connect(database)
        try:
            rows = connection.execute(sql, tuple(params)).fetchall()
            connection.commit()
            return rows
        finally:
            connection.close()

    @asyncTest
    async def test_walMode(self) -> None:
        """
        The database file is in WAL mode, so readers never wait for writers.
        """
        await self.started()
        self.assertEqual(
            self.rawExecute(self.database, "PRAGMA journal_mode"), [("wal",)])

    @asyncTest
    async def test_unopenable(self) -> None:
        """
        A file that cannot be opened fails the start with
        L{StateUnavailable}.
        """
        store = SQLiteStateStore(reactor, self.mktemp() + "/no/such/dir/x",
                                 clock=self.clock)
        await self.assertFailure(store.start(), StateUnavailable)
        self.failureResultOf(store.getBlob("x"), StateUnavailable)
        self.flushLoggedErrors()


class PostgresStateStoreTests(StateStoreContractMixin, TestCase):
    """
    The contract, against a real PostgreSQL database per test.
    """

    skip = pgtest.skipReason()

    def setUp(self) -> None:
        self.databases: list[pgtest.TemporaryDatabase] = []
        self.setUpContract()

    def makeDatabase(self) -> pgtest.TemporaryDatabase:
        database = pgtest.TemporaryDatabase()
        self.databases.append(database)
        self.addCleanup(database.drop)
        return database

    def storeFor(self, database: pgtest.TemporaryDatabase, clock: Any,
                 migrations: Sequence[Migration]) -> PostgresStateStore:
        return PostgresStateStore(reactor, database.dsn, clock=clock,
                                  migrations=migrations)

    def rawExecute(self, database: pgtest.TemporaryDatabase, sql: str,
                   params: Sequence[Any] = ()) -> Any:
        return database.execute(sql.replace("?", "%s"), params)

    async def realClockStore(self) -> PostgresStateStore:
        store = PostgresStateStore(reactor, self.database.dsn)
        self.addCleanup(store.close)
        await store.start()
        return store

    @asyncTest
    async def test_notifyPropagation(self) -> None:
        """
        A change made through one node reaches the observers of another node
        on the same database; a node does not hear its own change twice.
        """
        a = await self.realClockStore()
        b = await self.realClockStore()
        seenByA: list[dict[str, Any]] = []
        seenByB: list[dict[str, Any]] = []
        a.observeChanges(seenByA.append)
        b.observeChanges(seenByB.append)
        await a.setOverride(Override("hello", "stable", 7, "amd64"), "alice")
        await eventually(lambda: seenByB, "B to hear of the override")
        self.assertEqual(
            seenByB,
            [{"kind": "override", "snapName": "hello",
              "channel": "latest/stable", "architecture": "amd64"}])
        self.assertEqual((await b.listOverrides())[0].revision, 7)
        # PostgreSQL delivers notifications in commit order, so once A hears
        # of B's later change, any echo of its own would have arrived.
        await b.setSetting("device-limit", 3, "bob")
        await eventually(lambda: len(seenByA) == 2, "A to hear of B")
        self.assertEqual(seenByA[1], {"kind": "setting",
                                      "key": "device-limit"})
        self.assertEqual(seenByA[0], seenByB[0])
        # An event too large for NOTIFY arrives as a resync.
        await a.setSetting("x" * 9000, 1, "alice")
        await eventually(lambda: len(seenByB) == 3, "B to hear of it")
        self.assertEqual(seenByB[2], {"kind": "resync"})

    @asyncTest
    async def test_reconnect(self) -> None:
        """
        When the server drops every connection, the store reconnects, tells
        observers to resync, answers again, and hears other nodes again.
        """
        store = await self.realClockStore()
        events: list[dict[str, Any]] = []
        store.observeChanges(events.append)
        self.assertTrue(self.database.terminateConnections() >= 2)
        await eventually(lambda: {"kind": "resync"} in events,
                         "the store to reconnect")
        self.assertEqual(await store.listOverrides(), [])
        other = await self.realClockStore()
        await other.setSetting("device-limit", 1, "admin")
        await eventually(lambda: events[-1] == {"kind": "setting",
                                                "key": "device-limit"},
                         "the store to hear changes again")
        self.flushLoggedErrors()

    @asyncTest
    async def test_uriForms(self) -> None:
        """
        The documented URI forms reach the server: host and port, and a
        local socket directory given as C{?host=}.
        """
        server = psycopg2.extensions.parse_dsn(pgtest.serverDSN())
        user = server.get("user", "postgres")
        name = self.database.name
        forms = []
        if not server.get("host", "").startswith("/"):
            forms.append(f"postgresql://{user}@{server.get('host', '127.0.0.1')}"
                         f":{server.get('port', 5432)}/{name}")
        socketDirectory = "/run/postgresql"
        if os.path.exists(os.path.join(socketDirectory, ".s.PGSQL.5432")):
            forms.append(
                f"postgresql:///{name}?host={socketDirectory}&user={user}")
        if not forms:
            raise SkipTest("no TCP server and no local socket to try")
        for dsn in forms:
            store = PostgresStateStore(reactor, dsn, clock=self.clock)
            try:
                await store.start()
            except StateUnavailable as e:
                if "host=" in dsn:
                    raise SkipTest(f"local socket refused us: {e}")
                raise
            finally:
                await store.close()

    @asyncTest
    async def test_outage(self) -> None:
        """
        While the server cannot be reached at all, calls fail at once with
        L{StateUnavailable}; once it is back the store reconnects by itself
        and tells observers to resync.
        """
        server = psycopg2.extensions.parse_dsn(pgtest.serverDSN())
        if server.get("host", "").startswith("/"):
            raise SkipTest("the test server is reached through a socket")
        relay = pgtest.Relay(server.get("host", "127.0.0.1"),
                       int(server.get("port", 5432)))
        self.addCleanup(relay.stop)
        relay.start()
        dsn = psycopg2.extensions.make_dsn(
            self.database.dsn, host="127.0.0.1", port=relay.port)
        store = PostgresStateStore(reactor, dsn,
                                   retryDelays=lambda: iter(
                                       [0.0] + [0.05] * 10_000))
        self.addCleanup(store.close)
        await store.start()
        events: list[dict[str, Any]] = []
        store.observeChanges(events.append)

        relay.stop()
        await eventually(lambda: store.phase is Phase.DOWN,
                         "the store to notice the outage")
        self.failureResultOf(store.listOverrides(), StateUnavailable)
        self.failureResultOf(store.setSetting("k", 1, "a"), StateUnavailable)
        self.assertEqual(events, [])
        ready = store.whenReady()

        relay.start()
        await ready
        await eventually(lambda: events == [{"kind": "resync"}],
                         "observers to be told to resync")
        await store.setSetting("k", 1, "a")
        self.assertEqual(await store.getSetting("k"), 1)


def closedPort() -> int:
    """
    @return: a local TCP port nothing listens on.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresUnreachableTests(TestCase):
    """
    A PostgreSQL store whose server does not answer fails fast.
    """

    @asyncTest
    async def test_failsFastAndRetries(self) -> None:
        """
        Start fails with L{StateUnavailable}, calls fail at once rather than
        hang, C{whenReady} keeps waiting for a later attempt (scheduled on
        the clock), and closing stops the attempts.
        """
        clock = Clock()
        store = PostgresStateStore(
            reactor, f"postgresql://nobody@127.0.0.1:{closedPort()}/none",
            clock=clock)
        ready = store.whenReady()
        await self.assertFailure(store.start(), StateUnavailable)
        self.failureResultOf(store.listOverrides(), StateUnavailable)
        self.assertNoResult(ready)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        await store.close()
        self.failureResultOf(ready, StateUnavailable)
        self.assertEqual(clock.getDelayedCalls(), [])


class FactoryTests(SynchronousTestCase):
    """
    Tests for L{makeStateStore}.
    """

    def test_default(self) -> None:
        """
        No spec means C{state.sqlite} in the data directory, which is
        created.
        """
        dataDir = self.mktemp()
        store = makeStateStore(reactor, None, dataDir)
        self.assertIsInstance(store, SQLiteStateStore)
        self.assertEqual(store.path, os.path.join(dataDir, "state.sqlite"))
        self.assertTrue(os.path.isdir(dataDir))

    def test_sqlitePaths(self) -> None:
        """
        C{sqlite:} paths are used as given, their directory created.
        """
        absolute = os.path.abspath(self.mktemp()) + "/s.db"
        self.assertEqual(
            makeStateStore(reactor, "sqlite:" + absolute, "d").path,
            absolute)
        self.assertTrue(os.path.isdir(os.path.dirname(absolute)))
        relative = self.mktemp() + "/x.db"
        self.assertEqual(
            makeStateStore(reactor, "sqlite:" + relative, "d").path,
            relative)

    def test_postgres(self) -> None:
        """
        Both URI forms give a L{PostgresStateStore}, not yet connected.
        """
        for dsn in ("postgresql://snap:secret@db.example:5433/snapstore",
                    "postgresql:///snapstore?host=/run/postgresql"):
            store = makeStateStore(reactor, dsn, self.mktemp())
            self.assertIsInstance(store, PostgresStateStore)
            self.assertEqual(store.dsn, dsn)
            self.assertNotIn("secret", repr(store))

    def test_unknown(self) -> None:
        """
        Anything else is a L{ValueError} saying what is accepted.
        """
        for spec in ("mysql://x/y", "state.sqlite", "sqlite:",
                     "postgresql://x/y?sslmode"):
            self.assertRaises(ValueError, makeStateStore, reactor, spec,
                              self.mktemp())
        error = self.assertRaises(ValueError, makeStateStore, reactor,
                                  "mysql://x", "d")
        self.assertIn("postgresql://", str(error))


class StateServiceTests(TestCase):
    """
    Tests for L{StateService}.
    """

    @asyncTest
    async def test_startAndStop(self) -> None:
        """
        Starting the service starts the store; stopping it closes the store.
        """
        store = SQLiteStateStore(reactor, self.mktemp())
        service = StateService(store)
        self.assertTrue(verifyObject(IService, service))
        service.startService()
        await service.whenReady()
        self.assertEqual(await store.listDevices(), [])
        await service.stopService()
        self.failureResultOf(store.listDevices(), StateUnavailable)


class ChannelTests(SynchronousTestCase):
    """
    Tests for L{normaliseChannel}.
    """

    def test_normalise(self) -> None:
        for given, expected in [
            ("stable", "latest/stable"),
            ("latest/stable", "latest/stable"),
            ("edge/fix-1", "latest/edge/fix-1"),
            ("2.0/beta", "2.0/beta"),
            ("2.0/beta/x", "2.0/beta/x"),
        ]:
            self.assertEqual(normaliseChannel(given), expected)

    def test_invalid(self) -> None:
        for bad in ("", "latest", "2.0", "latest/nope", "a/stable/b/c",
                    "/stable", "stable/"):
            self.assertRaises(ValueError, normaliseChannel, bad)


class VerifyChainTests(SynchronousTestCase):
    """
    Tests for L{verifyChain}, without a database.
    """

    def chain(self, n: int) -> list[Any]:
        entries: list[Any] = []
        previous = ""
        for i in range(1, n + 1):
            entry = makeEntry(i, T0 + i, "a", "note", "t", None, {"i": i},
                              previous)
            entries.append(entry)
            previous = entry.rowHash
        return entries

    def test_intact(self) -> None:
        self.assertIsNone(verifyChain([]))
        self.assertIsNone(verifyChain(self.chain(4)))

    def test_edited(self) -> None:
        entries = self.chain(4)
        entries[2] = attrs.evolve(entries[2], actor="mallory")
        self.assertEqual(verifyChain(entries), 3)

    def test_rehashedEdit(self) -> None:
        """
        Re-hashing an edited row does not help: the next row's link breaks.
        """
        entries = self.chain(4)
        edited = attrs.evolve(entries[1], actor="mallory")
        entries[1] = attrs.evolve(edited, rowHash=entryHash(edited))
        self.assertEqual(verifyChain(entries), 3)

    def test_removed(self) -> None:
        entries = self.chain(4)
        self.assertEqual(verifyChain(entries[:1] + entries[2:]), 3)
        self.assertEqual(verifyChain(entries[1:]), 2)

    def test_rewrittenChain(self) -> None:
        """
        What the guide says (docs/operating.md, "Audit log") C{verify}
        cannot prove: a database writer who edits a row and recomputes every
        later hash leaves a valid chain; only a head recorded elsewhere
        shows it.
        """
        entries = self.chain(4)
        head = (4, entries[3].rowHash)
        previous = entries[0].rowHash
        for index in range(1, 4):
            row = attrs.evolve(entries[index], previousHash=previous,
                               actor="mallory" if index == 1 else entries[index].actor)
            entries[index] = attrs.evolve(row, rowHash=entryHash(row))
            previous = entries[index].rowHash
        self.assertIsNone(verifyChain(entries))
        self.assertEqual(verifyChain(entries, head), 4)

    def test_head(self) -> None:
        """
        Cutting off the newest rows is caught only against a known head.
        """
        entries = self.chain(4)
        head = (4, entries[3].rowHash)
        self.assertIsNone(verifyChain(entries, head))
        self.assertIsNone(verifyChain(entries[:3]))
        self.assertEqual(verifyChain(entries[:3], head), 4)
