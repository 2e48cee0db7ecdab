# -*- test-case-name: tests.test_offline_state -*-
"""
Imported content in the state store (L{snapstore.state.imported}), on both
back-ends: SQLite always, PostgreSQL when the test database is available.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from snapstore.interfaces import IImportedContent
from snapstore.state.imported import (
    IMPORT_ACTION,
    ImportedAssertion,
    ImportedChannel,
    ImportedContent,
    ImportedRevision,
    ImportedSnap,
)
from snapstore.state.migrations import MIGRATIONS
from snapstore.state.postgres import PostgresStateStore
from snapstore.state.records import BlobRecord
from snapstore.state.sqlite import SQLiteStateStore
from tests import pgtest

SNAP_ID = "a" * 32
DIGEST10 = "1" * 96
DIGEST12 = "2" * 96


def content(stableRevision: int = 10, declarationRevision: int = 0,
            summary: str = "Says hello") -> ImportedContent:
    revisions = {
        10: ImportedRevision(SNAP_ID, 10, DIGEST10, 100, {"revision": 10, "version": "1.0"}),
        12: ImportedRevision(SNAP_ID, 12, DIGEST12, 120, {"revision": 12, "version": "1.2"}),
    }
    snap = ImportedSnap(
        SNAP_ID, "hello", {"snap": {"summary": summary}, "default-track": None},
        (ImportedChannel(SNAP_ID, "amd64", "latest/stable", stableRevision, "2026-01-01"),
         ImportedChannel(SNAP_ID, "amd64", "latest/edge", 12, "")),
        revisions)
    assertions = (
        ImportedAssertion("snap-declaration", ("16", SNAP_ID), f"decl {declarationRevision}",
                          declarationRevision),
        ImportedAssertion("snap-revision", ("abc",), "rev 10"),
    )
    blobs = (BlobRecord(f"{SNAP_ID}_10.snap", DIGEST10, 100, "http://x/", SNAP_ID, "hello", 10),
             BlobRecord(f"{SNAP_ID}_12.snap", DIGEST12, 120, "http://x/", SNAP_ID, "hello", 12))
    return ImportedContent((snap,), assertions, blobs, {"created": "now"})


class ImportedContentMixin:
    """
    The imported-content operations, whatever the back-end.
    """

    def storeFor(self, clock: Any) -> Any:
        raise NotImplementedError()

    async def started(self) -> Any:
        clock = Clock()
        clock.advance(1_700_000_000)
        store = self.storeFor(clock)
        self.addCleanup(store.close)
        await store.start()
        return store

    def test_importAndRead(self) -> Deferred[None]:
        """
        An import stores snaps, revisions, channels, assertions and blob
        records in one audited step, and reads them back.
        """
        async def check() -> None:
            store = await self.started()
            self.assertTrue(verifyObject(IImportedContent, store))
            summary = await store.importContent(content(), "alice")
            self.assertEqual(summary, {"snaps": 1, "revisions": 2, "channels": 2,
                                       "assertions": 2, "blobs": 2, "changed": True})
            snap = await store.getImportedSnap(snapName="hello")
            self.assertEqual(snap.snapId, SNAP_ID)
            self.assertEqual(snap.info["snap"]["summary"], "Says hello")
            self.assertEqual(sorted(snap.revisions), [10, 12])
            self.assertEqual(snap.revisions[12].snap, {"revision": 12, "version": "1.2"})
            self.assertEqual({(c.channel, c.revision) for c in snap.channels},
                             {("latest/stable", 10), ("latest/edge", 12)})
            self.assertEqual((await store.getImportedSnap(snapId=SNAP_ID)).snapName, "hello")
            self.assertIsNone(await store.getImportedSnap(snapName="nope"))
            found = await store.getImportedAssertion("snap-declaration", ["16", SNAP_ID])
            self.assertEqual(found.body, "decl 0")
            self.assertIsNone(await store.getImportedAssertion("account", ["x"]))
            self.assertEqual((await store.getBlob(f"{SNAP_ID}_12.snap")).sha3_384, DIGEST12)
            self.assertEqual([s.snapName for s in await store.listImportedSnaps()], ["hello"])
            audit = await store.listAudit()
            self.assertEqual([(e.actor, e.action) for e in audit], [("alice", IMPORT_ACTION)])
            self.assertIsNone(await store.verifyAudit())
        return Deferred.fromCoroutine(check())

    def test_idempotent(self) -> Deferred[None]:
        """
        Importing the same content again changes nothing, audit included.
        """
        async def check() -> None:
            store = await self.started()
            await store.importContent(content(), "alice")
            summary = await store.importContent(content(), "alice")
            self.assertFalse(summary["changed"])
            self.assertEqual(len(await store.listAudit()), 1)
        return Deferred.fromCoroutine(check())

    def test_updates(self) -> Deferred[None]:
        """
        A later import moves channels and updates descriptions; an assertion
        is replaced only by a higher revision of it.
        """
        async def check() -> None:
            store = await self.started()
            await store.importContent(content(declarationRevision=2), "alice")
            summary = await store.importContent(
                content(stableRevision=12, declarationRevision=1, summary="New"), "bob")
            self.assertEqual((summary["channels"], summary["snaps"], summary["assertions"]),
                             (1, 1, 0))
            snap = await store.getImportedSnap(snapName="hello")
            self.assertIn(("latest/stable", 12), {(c.channel, c.revision) for c in snap.channels})
            self.assertEqual(snap.info["snap"]["summary"], "New")
            found = await store.getImportedAssertion("snap-declaration", ["16", SNAP_ID])
            self.assertEqual(found.body, "decl 2")
            await store.importContent(content(declarationRevision=3), "carol")
            found = await store.getImportedAssertion("snap-declaration", ["16", SNAP_ID])
            self.assertEqual((found.body, found.revision), ("decl 3", 3))
        return Deferred.fromCoroutine(check())


class SQLiteImportedContentTests(ImportedContentMixin, TestCase):
    def storeFor(self, clock: Any) -> Any:
        directory = self.mktemp()
        os.makedirs(directory)
        return SQLiteStateStore(reactor, os.path.join(directory, "state.sqlite"), clock=clock,
                                migrations=MIGRATIONS)


class PostgresImportedContentTests(ImportedContentMixin, TestCase):
    skip = pgtest.skipReason()

    def storeFor(self, clock: Any) -> Any:
        database = pgtest.TemporaryDatabase()
        self.addCleanup(database.drop)
        return PostgresStateStore(reactor, database.dsn, clock=clock, migrations=MIGRATIONS)


__all__: Sequence[str] = ()
