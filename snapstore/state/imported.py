# -*- test-case-name: tests.test_offline_state -*-
"""
Imported content: what an offline node learnt from bundles (see
L{snapstore.offline}), as state-store records and operations.

An air-gapped node has no upstream to ask, so the store answers it gives
(refresh results, channel maps, search results, assertions) are rebuilt from
what a connected node exported: each snap's snap-level description, the
snap object of every revision, which revision each channel held for each
architecture, and the signed assertions a device needs to verify them.  The
blobs themselves live in the blob cache, and the C{blobs} table records them
under their store download names, exactly as the relay would.

One import is one transaction (L{importContent}), so a device never sees a
channel pointing at a revision whose metadata or assertions are not there
yet, and several nodes sharing a PostgreSQL database see a bundle all at
once.  The operations follow L{snapstore.state.operations}: generators of
L{Query} instructions, run by either back-end.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import attrs

from snapstore.state.operations import BLOB_COLUMNS, Operation, Query, appendAudit
from snapstore.state.records import BlobRecord

#: The audit target and action of an import.
IMPORT_TARGET = "offline:import"
IMPORT_ACTION = "offline.import"


@attrs.frozen(eq=False)
class ImportedRevision:
    """
    One imported revision of a snap.

    @ivar snap: the snap object of a refresh answer for it (a dict; its
        C{download.url} is the store's original URL, rewritten to the
        serving proxy when answered).
    """

    snapId: str
    revision: int
    sha3_384: str
    size: int
    snap: dict[str, Any]


@attrs.frozen
class ImportedChannel:
    """
    The revision a channel held for an architecture when it was exported.

    @ivar channel: normalised, C{track/risk[/branch]}.
    @ivar releasedAt: the store's C{released-at} text ("" when unknown).
    """

    snapId: str
    architecture: str
    channel: str
    revision: int
    releasedAt: str = ""


@attrs.frozen
class ImportedAssertion:
    """
    One signed assertion, byte for byte as the store served it.

    @ivar primaryKey: its primary-key values, in type order.
    @ivar revision: the assertion's own C{revision} header (0 by default);
        a later import replaces an assertion only with a higher one.
    """

    type: str
    primaryKey: tuple[str, ...]
    body: str
    revision: int = 0

    @property
    def path(self) -> str:
        """
        C{type/key/...}, as in C{/v2/assertions/<type>/<key...>}.
        """
        return "/".join((self.type,) + self.primaryKey)


@attrs.frozen(eq=False)
class ImportedSnap:
    """
    A snap an offline node can serve.

    @ivar info: C{{"snap": <snap-level fields of an info answer>,
        "default-track": ...}}.
    @ivar channels: its L{ImportedChannel}s.
    @ivar revisions: C{revision -> ImportedRevision}, those the channels
        name and any other imported one (installable by number).
    """

    snapId: str
    snapName: str
    info: dict[str, Any]
    channels: tuple[ImportedChannel, ...] = ()
    revisions: dict[int, ImportedRevision] = attrs.field(factory=dict)


@attrs.frozen(eq=False)
class ImportedContent:
    """
    Everything one bundle adds, verified, ready for L{importContent}.

    @ivar blobs: the L{BlobRecord}s of the revisions' files (the blob
        bytes are already in the cache).
    @ivar bundle: a description of the bundle for the audit row.
    """

    snaps: tuple[ImportedSnap, ...]
    assertions: tuple[ImportedAssertion, ...]
    blobs: tuple[BlobRecord, ...]
    bundle: dict[str, Any] = attrs.field(factory=dict)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class ImportConflict(ValueError):
    """
    An import would give a recorded download file another digest; the
    transaction is rolled back.

    @ivar name: the download file name.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def importContent(content: ImportedContent, actor: str, now: float) -> Operation:
    """
    Add or update everything in C{content}, in the caller's transaction
    (run it in C{Mode.SERIAL}), and audit the import when it changed
    anything.

    Revisions, blob records and assertions of the same revision are
    immutable: importing them again changes nothing, and importing them
    with another digest raises L{ImportConflict}.  Channel maps and snap
    descriptions take the bundle's values.

    @return: a summary dict: counts of what was added or changed
        (C{snaps}, C{revisions}, C{channels}, C{assertions}, C{blobs}) and
        C{changed}, whether anything was.
    """
    counts = {"snaps": 0, "revisions": 0, "channels": 0, "assertions": 0, "blobs": 0}
    for snap in content.snaps:
        info = _dumps(snap.info)
        rows = yield Query("SELECT snap_name, info FROM imported_snaps WHERE snap_id = ?",
                           (snap.snapId,))
        if not rows:
            yield Query("INSERT INTO imported_snaps (snap_id, snap_name, info, imported_at)"
                        " VALUES (?, ?, ?, ?)", (snap.snapId, snap.snapName, info, now))
            counts["snaps"] += 1
        elif tuple(rows[0]) != (snap.snapName, info):
            yield Query("UPDATE imported_snaps SET snap_name = ?, info = ?, imported_at = ?"
                        " WHERE snap_id = ?", (snap.snapName, info, now, snap.snapId))
            counts["snaps"] += 1
        for revision in snap.revisions.values():
            rows = yield Query("SELECT sha3_384 FROM imported_revisions WHERE snap_id = ?"
                               " AND revision = ?", (revision.snapId, revision.revision))
            if rows and rows[0][0] != revision.sha3_384.lower():
                raise ImportConflict(f"{revision.snapId}_{revision.revision}.snap",
                                     f"{snap.snapName} revision {revision.revision} is "
                                     f"recorded with sha3-384 {rows[0][0]}, not "
                                     f"{revision.sha3_384.lower()}")
            if rows:
                continue
            yield Query(
                "INSERT INTO imported_revisions (snap_id, revision, sha3_384, size, snap,"
                " imported_at) VALUES (?, ?, ?, ?, ?, ?)",
                (revision.snapId, revision.revision, revision.sha3_384.lower(),
                 revision.size, _dumps(revision.snap), now))
            counts["revisions"] += 1
        for channel in snap.channels:
            rows = yield Query(
                "SELECT revision, released_at FROM imported_channels WHERE snap_id = ?"
                " AND architecture = ? AND channel = ?",
                (channel.snapId, channel.architecture, channel.channel))
            if rows and (int(rows[0][0]), rows[0][1]) == (channel.revision, channel.releasedAt):
                continue
            yield Query(
                "INSERT INTO imported_channels (snap_id, architecture, channel, revision,"
                " released_at, imported_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (snap_id, architecture, channel) DO UPDATE SET"
                " revision = excluded.revision, released_at = excluded.released_at,"
                " imported_at = excluded.imported_at",
                (channel.snapId, channel.architecture, channel.channel, channel.revision,
                 channel.releasedAt, now))
            counts["channels"] += 1
    for assertion in content.assertions:
        key = "/".join(assertion.primaryKey)
        rows = yield Query("SELECT revision FROM imported_assertions WHERE type = ?"
                           " AND primary_key = ?", (assertion.type, key))
        if rows and int(rows[0][0]) >= assertion.revision:
            continue
        yield Query(
            "INSERT INTO imported_assertions (type, primary_key, revision, body, imported_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (type, primary_key) DO UPDATE SET"
            " revision = excluded.revision, body = excluded.body,"
            " imported_at = excluded.imported_at",
            (assertion.type, key, assertion.revision, assertion.body, now))
        counts["assertions"] += 1
    for blob in content.blobs:
        rows = yield Query("SELECT sha3_384, url FROM blobs WHERE name = ?", (blob.name,))
        if rows and rows[0][0] == blob.sha3_384.lower():
            continue
        if rows:
            # What a device's refresh (or an earlier import) recorded is
            # what downloads are served under: never replaced.
            raise ImportConflict(blob.name, f"{blob.snapName} revision {blob.revision} is "
                                            f"recorded with sha3-384 {rows[0][0]}, not "
                                            f"{blob.sha3_384.lower()}")
        yield Query(
            f"INSERT INTO blobs ({BLOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (blob.name, blob.sha3_384.lower(), blob.size, blob.url, blob.snapId,
             blob.snapName, blob.revision, json.dumps(list(blob.architectures)),
             blob.seenAt or now))
        counts["blobs"] += 1
    changed = any(counts.values())
    if changed:
        yield from appendAudit(now, actor, IMPORT_ACTION, IMPORT_TARGET, None,
                               dict(counts, bundle=content.bundle))
    return dict(counts, changed=changed)


def _revisionFromRow(row: Sequence[Any]) -> ImportedRevision:
    return ImportedRevision(snapId=row[0], revision=int(row[1]), sha3_384=row[2],
                            size=int(row[3]), snap=json.loads(row[4]))


def _loadSnap(row: Sequence[Any]) -> Operation:
    snapId = row[0]
    channels = yield Query(
        "SELECT snap_id, architecture, channel, revision, released_at FROM imported_channels"
        " WHERE snap_id = ? ORDER BY architecture, channel", (snapId,))
    revisions = yield Query(
        "SELECT snap_id, revision, sha3_384, size, snap FROM imported_revisions"
        " WHERE snap_id = ? ORDER BY revision", (snapId,))
    return ImportedSnap(
        snapId=snapId, snapName=row[1], info=json.loads(row[2]),
        channels=tuple(ImportedChannel(c[0], c[1], c[2], int(c[3]), c[4]) for c in channels),
        revisions={int(r[1]): _revisionFromRow(r) for r in revisions})


def getImportedSnap(snapName: str | None = None, snapId: str | None = None) -> Operation:
    """
    @return: the L{ImportedSnap} with that name (or snap-id), or C{None}.
    """
    if snapId:
        rows = yield Query("SELECT snap_id, snap_name, info FROM imported_snaps"
                           " WHERE snap_id = ?", (snapId,))
    else:
        rows = yield Query("SELECT snap_id, snap_name, info FROM imported_snaps"
                           " WHERE snap_name = ?", (snapName or "",))
    if not rows:
        return None
    return (yield from _loadSnap(rows[0]))


def listImportedSnaps() -> Operation:
    """
    @return: every L{ImportedSnap}, by name.
    """
    rows = yield Query("SELECT snap_id, snap_name, info FROM imported_snaps"
                       " ORDER BY snap_name, snap_id")
    snaps = []
    for row in rows:
        snaps.append((yield from _loadSnap(row)))
    return snaps


def getImportedAssertion(type: str, primaryKey: Sequence[str]) -> Operation:
    """
    @return: the L{ImportedAssertion} of that type and primary key, or
        C{None}.
    """
    key = "/".join(primaryKey)
    rows = yield Query("SELECT revision, body FROM imported_assertions WHERE type = ?"
                       " AND primary_key = ?", (type, key))
    if not rows:
        return None
    return ImportedAssertion(type, tuple(primaryKey), rows[0][1], int(rows[0][0]))


def listImportedSequence(type: str, sequenceKey: Sequence[str]) -> Operation:
    """
    @return: the L{ImportedAssertion}s of a sequence-forming C{type} whose
        primary key is C{sequenceKey} plus a sequence number (every
        imported sequence of one validation set).
    """
    prefix = "/".join(sequenceKey) + "/"
    rows = yield Query("SELECT primary_key, revision, body FROM imported_assertions"
                       " WHERE type = ? AND primary_key > ? AND primary_key < ?",
                       (type, prefix, prefix[:-1] + "0"))
    found = []
    for key, revision, body in rows:
        rest = key[len(prefix):]
        if key.startswith(prefix) and rest.isdigit():
            found.append(ImportedAssertion(type, tuple(key.split("/")), body, int(revision)))
    return found
