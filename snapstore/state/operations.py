# -*- test-case-name: tests.test_state -*-
"""
What the state store does, written once for both databases.

Every L{IStateStore} method is an I{operation}: a generator that yields
L{Query} (and L{Notify}) instructions and receives each query's rows back.
It never touches a connection, so the SQLite back-end can drive it
synchronously in its database thread and the PostgreSQL back-end
asynchronously over txpostgres, and both run exactly the same SQL and the
same logic.  SQL uses C{?} placeholders; L{postgresParameters} converts them.

Operations run inside one transaction in one of three L{Mode}s, which tell
the driver how much locking the operation needs.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Callable, Generator, Sequence

import attrs

from snapstore.state import audit
from snapstore.state.records import (
    AuditEntry,
    BlobRecord,
    Device,
    DeviceSession,
    Override,
    normaliseChannel,
)


class Mode(enum.Enum):
    """
    How a transaction must be isolated from other writers.

    @cvar READ: reads only.
    @cvar WRITE: writes that are safe to interleave (single-row upserts).
    @cvar SERIAL: read-then-write sequences that must not interleave with
        each other anywhere (audit appends, override changes, migrations):
        SQLite takes its write lock at C{BEGIN IMMEDIATE}, PostgreSQL takes a
        transaction-scoped advisory lock.
    """

    READ = "read"
    WRITE = "write"
    SERIAL = "serial"


@attrs.frozen
class Query:
    """
    An instruction to run one SQL statement.  The operation receives the
    fetched rows (a list of tuples) or C{None} for statements without a
    result set.
    """

    sql: str
    params: tuple[Any, ...] = ()


@attrs.frozen
class Notify:
    """
    An instruction to announce a change once the transaction commits.

    @ivar event: a JSON-serialisable dict with at least a C{kind} key.
    """

    event: dict[str, Any]


@attrs.frozen
class Audited:
    """
    An instruction to log, once the transaction commits, that C{entry} was
    appended to the audit log, so that the newest id and hash are also kept
    outside the database (see L{snapstore.state.audit}).
    """

    entry: AuditEntry


Announcement = Notify | Audited
Operation = Generator["Query | Announcement", Any, Any]


def postgresParameters(sql: str) -> str:
    """
    Turn C{?} placeholders into psycopg2's C{%s} (escaping literal C{%}).
    """
    return sql.replace("%", "%%").replace("?", "%s")


@attrs.frozen
class Finished:
    """
    An operation's end: C{value} is what it returned.
    """

    value: Any


def nextQuery(operation: Operation, value: Any,
              announcements: list[Announcement]) -> "Query | Finished":
    """
    Send C{value} (the previous query's rows, or C{None}) into C{operation}
    and run it to its next query or its end; the L{Notify} and L{Audited}
    instructions it gives on the way are added to C{announcements}.  The
    one step every driver of operations shares (L{runSynchronously}, the
    PostgreSQL store's transactions).
    """
    while True:
        try:
            instruction = operation.send(value)
        except StopIteration as stop:
            return Finished(stop.value)
        if not isinstance(instruction, (Notify, Audited)):
            return instruction
        announcements.append(instruction)
        value = None


def runSynchronously(
    operation: Operation, execute: Callable[[Query], Any]
) -> tuple[Any, list[Announcement]]:
    """
    Drive C{operation} with a blocking C{execute}.

    @return: the operation's result and the L{Notify} and L{Audited}
        instructions it gave, in order, for the caller to act on after
        committing.
    """
    announcements: list[Announcement] = []
    value: Any = None
    while True:
        step = nextQuery(operation, value, announcements)
        if isinstance(step, Finished):
            return step.value, announcements
        value = execute(step)


# ---------------------------------------------------------------------------
# Rows and records
# ---------------------------------------------------------------------------

BLOB_COLUMNS = (
    "name, sha3_384, size, url, snap_id, snap_name, revision,"
    " architectures, seen_at"
)
OVERRIDE_COLUMNS = (
    "snap_name, channel, architecture, revision, snap_id, created_at,"
    " group_name, until_at, reason"
)
DEVICE_COLUMNS = "identity, model, address, first_seen, last_seen"
SESSION_COLUMNS = "digest, identity, model, created_at, expires_at, last_used"
AUDIT_COLUMNS = (
    'id, time, actor, action, target, "before", "after", previous_hash,'
    " row_hash"
)


def blobFromRow(row: Sequence[Any]) -> BlobRecord:
    """
    @return: the L{BlobRecord} of a C{blobs} row selected with
        L{BLOB_COLUMNS}.
    """
    return BlobRecord(
        name=row[0],
        sha3_384=row[1],
        size=int(row[2]),
        url=row[3],
        snapId=row[4],
        snapName=row[5],
        revision=int(row[6]),
        architectures=tuple(json.loads(row[7])),
        seenAt=float(row[8]),
    )


def overrideFromRow(row: Sequence[Any]) -> Override:
    """
    @return: the L{Override} of an C{overrides} row selected with
        L{OVERRIDE_COLUMNS}.
    """
    return Override(
        snapName=row[0],
        channel=row[1],
        architecture=row[2],
        revision=int(row[3]),
        snapId=row[4],
        createdAt=float(row[5]),
        group=row[6] or "",
        until=None if row[7] is None else float(row[7]),
        reason=row[8] or "",
    )


def overrideAsJSON(override: Override | None) -> dict[str, Any] | None:
    """
    The audit-log form of an override.
    """
    if override is None:
        return None
    return {
        "snapName": override.snapName,
        "channel": override.channel,
        "architecture": override.architecture,
        "revision": override.revision,
        "snapId": override.snapId,
        # Scope, expiry and reason only when set, so that the audit form of
        # an everyone-forever pin stays as it was.
        **({"group": override.group} if override.group else {}),
        **({"until": override.until} if override.until is not None else {}),
        **({"reason": override.reason} if override.reason else {}),
    }


def deviceFromRow(row: Sequence[Any]) -> Device:
    """
    @return: the L{Device} of a C{devices} row selected with
        L{DEVICE_COLUMNS}.
    """
    return Device(
        identity=row[0],
        model=row[1],
        address=row[2],
        firstSeen=float(row[3]),
        lastSeen=float(row[4]),
    )


def auditFromRow(row: Sequence[Any]) -> AuditEntry:
    """
    @return: the L{AuditEntry} of an C{audit_log} row selected with
        L{AUDIT_COLUMNS}.
    """
    return AuditEntry(
        id=int(row[0]),
        time=float(row[1]),
        actor=row[2],
        action=row[3],
        target=row[4],
        before=json.loads(row[5]),
        after=json.loads(row[6]),
        previousHash=row[7],
        rowHash=row[8],
    )


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


def recordBlob(blob: BlobRecord, now: float) -> Operation:
    """
    Insert C{blob}, or refresh the URL of the record already there while
    keeping its digest, size and first-seen time.  Descriptive fields that
    were unknown ("" or 0) are filled in.

    @return: the stored L{BlobRecord}.
    """
    yield Query(
        f"INSERT INTO blobs ({BLOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET url = excluded.url,"
        " snap_id = CASE WHEN blobs.snap_id = '' THEN excluded.snap_id"
        "  ELSE blobs.snap_id END,"
        " snap_name = CASE WHEN blobs.snap_name = '' THEN excluded.snap_name"
        "  ELSE blobs.snap_name END,"
        " revision = CASE WHEN blobs.revision = 0 THEN excluded.revision"
        "  ELSE blobs.revision END,"
        " architectures = CASE WHEN blobs.architectures = '[]'"
        "  THEN excluded.architectures ELSE blobs.architectures END",
        (
            blob.name,
            blob.sha3_384.lower(),
            blob.size,
            blob.url,
            blob.snapId,
            blob.snapName,
            blob.revision,
            json.dumps(list(blob.architectures)),
            blob.seenAt or now,
        ),
    )
    rows = yield Query(
        f"SELECT {BLOB_COLUMNS} FROM blobs WHERE name = ?", (blob.name,)
    )
    return blobFromRow(rows[0])


def getBlob(name: str) -> Operation:
    """
    @return: the L{BlobRecord} named C{name}, or C{None}.
    """
    rows = yield Query(
        f"SELECT {BLOB_COLUMNS} FROM blobs WHERE name = ?", (name,)
    )
    return blobFromRow(rows[0]) if rows else None


def appendAudit(
    now: float,
    actor: str,
    action: str,
    target: str,
    before: Any,
    after: Any,
) -> Operation:
    """
    Append one row to the chain.  Must run in L{Mode.SERIAL}: reading the
    last row and inserting the next one is only safe when no other writer
    can do the same in between (the primary key on C{id} turns a missed lock
    into an error rather than a fork of the chain).

    @return: the new L{AuditEntry}.
    """
    rows = yield Query(
        "SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1"
    )
    lastId, previousHash = (int(rows[0][0]), rows[0][1]) if rows else (0, "")
    entry = audit.makeEntry(
        lastId + 1, now, actor, action, target, before, after, previousHash
    )
    yield Query(
        f"INSERT INTO audit_log ({AUDIT_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.id,
            entry.time,
            entry.actor,
            entry.action,
            entry.target,
            audit.canonicalJSON(entry.before),
            audit.canonicalJSON(entry.after),
            entry.previousHash,
            entry.rowHash,
        ),
    )
    yield Audited(entry)
    return entry


def overrideTarget(snapName: str) -> str:
    """
    The audit C{target} of changes to a snap's overrides.
    """
    return f"snap:{snapName}"


def settingTarget(key: str) -> str:
    """
    The audit C{target} of changes to a setting.
    """
    return f"setting:{key}"


def setOverride(override: Override, actor: str, now: float) -> Operation:
    """
    @return: the override replaced, or C{None}.
    """
    channel = normaliseChannel(override.channel)
    new = attrs.evolve(
        override, channel=channel, createdAt=override.createdAt or now
    )
    rows = yield Query(
        f"SELECT {OVERRIDE_COLUMNS} FROM overrides"
        " WHERE snap_name = ? AND channel = ? AND architecture = ?"
        " AND group_name = ?",
        (new.snapName, new.channel, new.architecture, new.group),
    )
    previous = overrideFromRow(rows[0]) if rows else None
    yield Query(
        f"INSERT INTO overrides ({OVERRIDE_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (snap_name, channel, architecture, group_name) DO UPDATE SET"
        " revision = excluded.revision, snap_id = excluded.snap_id,"
        " created_at = excluded.created_at, until_at = excluded.until_at,"
        " reason = excluded.reason",
        (
            new.snapName,
            new.channel,
            new.architecture,
            new.revision,
            new.snapId,
            new.createdAt,
            new.group,
            new.until,
            new.reason,
        ),
    )
    yield from appendAudit(
        now,
        actor,
        "override.set",
        overrideTarget(new.snapName),
        overrideAsJSON(previous),
        overrideAsJSON(new),
    )
    yield Notify(
        {
            "kind": "override",
            "snapName": new.snapName,
            "channel": new.channel,
            "architecture": new.architecture,
        }
    )
    return previous


def deleteOverride(
    snapName: str,
    channel: str,
    actor: str,
    architecture: str | None,
    now: float,
    group: str = "",
) -> Operation:
    """
    @param group: the scope whose pins go (C{""}: the pins for everyone).
    @return: the removed overrides (no audit row when there were none).
    """
    channel = normaliseChannel(channel)
    where = "snap_name = ? AND channel = ? AND group_name = ?"
    params: tuple[Any, ...] = (snapName, channel, group)
    if architecture is not None:
        where += " AND architecture = ?"
        params += (architecture,)
    rows = yield Query(
        f"SELECT {OVERRIDE_COLUMNS} FROM overrides WHERE {where}"
        " ORDER BY architecture",
        params,
    )
    removed = [overrideFromRow(row) for row in rows]
    if not removed:
        return []
    yield Query(f"DELETE FROM overrides WHERE {where}", params)
    yield from appendAudit(
        now,
        actor,
        "override.delete",
        overrideTarget(snapName),
        [overrideAsJSON(o) for o in removed],
        None,
    )
    for gone in removed:
        yield Notify(
            {
                "kind": "override",
                "snapName": gone.snapName,
                "channel": gone.channel,
                "architecture": gone.architecture,
            }
        )
    return removed


def listOverrides(snapName: str | None) -> Operation:
    """
    @return: the overrides (of one snap when C{snapName} is given),
        ordered by snap, channel, architecture.
    """
    if snapName is None:
        rows = yield Query(
            f"SELECT {OVERRIDE_COLUMNS} FROM overrides"
            " ORDER BY snap_name, channel, architecture, group_name"
        )
    else:
        rows = yield Query(
            f"SELECT {OVERRIDE_COLUMNS} FROM overrides WHERE snap_name = ?"
            " ORDER BY snap_name, channel, architecture, group_name",
            (snapName,),
        )
    return [overrideFromRow(row) for row in rows]


def recordDevice(device: Device, now: float) -> Operation:
    """
    Insert C{device} or bring its row up to date: the last-seen time only
    moves forward, and an empty model or address does not erase a known one.

    @return: the stored L{Device}.
    """
    lastSeen = device.lastSeen or now
    firstSeen = device.firstSeen or lastSeen
    yield Query(
        f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (identity) DO UPDATE SET"
        " model = CASE WHEN excluded.model = '' THEN devices.model"
        "  ELSE excluded.model END,"
        " address = CASE WHEN excluded.address = '' THEN devices.address"
        "  ELSE excluded.address END,"
        " last_seen = CASE WHEN excluded.last_seen > devices.last_seen"
        "  THEN excluded.last_seen ELSE devices.last_seen END",
        (device.identity, device.model, device.address, firstSeen, lastSeen),
    )
    rows = yield Query(
        f"SELECT {DEVICE_COLUMNS} FROM devices WHERE identity = ?",
        (device.identity,),
    )
    return deviceFromRow(rows[0])


def listDevices(seenSince: float | None) -> Operation:
    """
    @return: the devices (seen at or after C{seenSince} when given),
        ordered by identity.
    """
    rows = yield _selectSince(
        DEVICE_COLUMNS, "devices", "last_seen", seenSince, "identity"
    )
    return [deviceFromRow(row) for row in rows]


def _selectSince(
    columns: str, table: str, timeColumn: str, since: float | None, orderBy: str
) -> Query:
    """
    @return: the query of C{columns} of the rows of C{table} whose
        C{timeColumn} is at or after C{since} (every row when C{since} is
        C{None}), ordered by C{orderBy}.
    """
    if since is None:
        return Query(f"SELECT {columns} FROM {table} ORDER BY {orderBy}")
    return Query(
        f"SELECT {columns} FROM {table} WHERE {timeColumn} >= ? ORDER BY {orderBy}",
        (float(since),),
    )


def sessionFromRow(row: Sequence[Any]) -> DeviceSession:
    """
    @return: the L{DeviceSession} of a C{device_sessions} row selected with
        L{SESSION_COLUMNS}.
    """
    return DeviceSession(
        digest=row[0],
        identity=row[1],
        model=row[2],
        createdAt=float(row[3]),
        expiresAt=float(row[4]),
        lastUsed=float(row[5]),
    )


def recordSession(session: DeviceSession, now: float) -> Operation:
    """
    Insert C{session}, or bring its row up to date: a digest names one
    macaroon, which upstream gave to one device, so the identity of the
    first record stays; the last-used time only moves forward.

    @return: the stored L{DeviceSession}.
    """
    lastUsed = session.lastUsed or now
    yield Query(
        f"INSERT INTO device_sessions ({SESSION_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (digest) DO UPDATE SET"
        " expires_at = CASE WHEN excluded.expires_at > 0"
        "  THEN excluded.expires_at ELSE device_sessions.expires_at END,"
        " last_used = CASE WHEN excluded.last_used > device_sessions.last_used"
        "  THEN excluded.last_used ELSE device_sessions.last_used END",
        (
            session.digest,
            session.identity,
            session.model,
            session.createdAt or now,
            session.expiresAt,
            lastUsed,
        ),
    )
    rows = yield Query(
        f"SELECT {SESSION_COLUMNS} FROM device_sessions WHERE digest = ?",
        (session.digest,),
    )
    return sessionFromRow(rows[0])


def getSession(digest: str) -> Operation:
    """
    @return: the L{DeviceSession} with C{digest}, or C{None}.
    """
    rows = yield Query(
        f"SELECT {SESSION_COLUMNS} FROM device_sessions WHERE digest = ?",
        (digest,),
    )
    return sessionFromRow(rows[0]) if rows else None


def listSessions(usedSince: float | None) -> Operation:
    """
    @return: the sessions (used at or after C{usedSince} when given),
        ordered by digest.
    """
    rows = yield _selectSince(
        SESSION_COLUMNS, "device_sessions", "last_used", usedSince, "digest"
    )
    return [sessionFromRow(row) for row in rows]


def pruneSessions(now: float, unusedFor: float) -> Operation:
    """
    Remove the sessions that expired, and those no request carried for
    C{unusedFor} seconds.

    @return: how many were removed.
    """
    where = (
        "(expires_at > 0 AND expires_at <= ?) OR last_used < ?"
    )
    params = (float(now), float(now - unusedFor))
    rows = yield Query(
        f"SELECT COUNT(*) FROM device_sessions WHERE {where}", params
    )
    yield Query(f"DELETE FROM device_sessions WHERE {where}", params)
    return int(rows[0][0])


def listAudit(
    target: str | None, since: float | None, until: float | None
) -> Operation:
    """
    @return: the audit rows matching every given filter, in id order;
        C{since} is inclusive, C{until} exclusive.
    """
    conditions = []
    params: list[Any] = []
    if target is not None:
        conditions.append("target = ?")
        params.append(target)
    if since is not None:
        conditions.append("time >= ?")
        params.append(float(since))
    if until is not None:
        conditions.append("time < ?")
        params.append(float(until))
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    rows = yield Query(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log{where} ORDER BY id",
        tuple(params),
    )
    return [auditFromRow(row) for row in rows]


def getSetting(key: str) -> Operation:
    """
    @return: the JSON value stored under C{key}, or C{None}.
    """
    rows = yield Query("SELECT value FROM settings WHERE key = ?", (key,))
    return json.loads(rows[0][0]) if rows else None


def setSetting(key: str, value: Any, actor: str, now: float) -> Operation:
    """
    Store C{value} (C{None} removes the key).

    @return: the previous value or C{None}.
    """
    text = audit.canonicalJSON(value)
    rows = yield Query("SELECT value FROM settings WHERE key = ?", (key,))
    previous = json.loads(rows[0][0]) if rows else None
    if value is None:
        yield Query("DELETE FROM settings WHERE key = ?", (key,))
    else:
        yield Query(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (key, text, now),
        )
    yield from appendAudit(
        now, actor, "setting.set", settingTarget(key), previous,
        json.loads(text),
    )
    yield Notify({"kind": "setting", "key": key})
    return previous
