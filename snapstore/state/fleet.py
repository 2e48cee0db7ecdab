# -*- test-case-name: tests.test_state -*-
"""
What the state store keeps about the fleet (docs/architecture.md): each
device's installed snaps and architecture, snap names, device groups, and
the hash-chained record of deliveries.

Written as operations (see L{snapstore.state.operations}) so that SQLite
and PostgreSQL run the same SQL.  A refresh's C{context} is the device's
whole installed set, so L{recordInventory} replaces a device's rows rather
than merging them; and because that is one statement per refresh (not one
per snap), a fleet of ten thousand devices refreshing costs ten thousand
small transactions, not two hundred thousand.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional, Sequence

import attrs

from snapstore.state import audit
from snapstore.state.operations import (
    Notify,
    Operation,
    Query,
    appendAudit,
)


@attrs.frozen
class InstalledSnap:
    """
    One entry of a device's last refresh context.

    @ivar snapId: the snap-id the context names.
    @ivar name: the snap's name, when an upstream answer named it (else
        C{""}).
    @ivar revision: the installed revision.
    @ivar channel: the tracking channel (C{""} when the device sent none).
    """

    snapId: str
    revision: int
    channel: str = ""
    name: str = ""


@attrs.frozen
class FleetDevice:
    """
    A device with its inventory.

    @ivar snaps: its L{InstalledSnap}s, ordered by name then snap-id.
    """

    identity: str
    model: str
    address: str
    architecture: str
    firstSeen: float
    lastSeen: float
    snaps: tuple[InstalledSnap, ...] = ()


@attrs.frozen
class InventoryCount:
    """
    How many devices run one revision of a snap from one channel on one
    architecture.
    """

    snapId: str
    name: str
    revision: int
    channel: str
    architecture: str
    devices: int


@attrs.frozen
class DeviceGroup:
    """
    A named set of devices, defined by selectors (any one matching makes a
    device a member; see L{snapstore.fleet.groups}).

    @ivar selectors: C{{"serial": [...], "model": [...], "network": [...],
        "device": [...]}}.
    """

    name: str
    selectors: dict[str, list[str]]
    createdAt: float = 0.0


@attrs.frozen
class Delivery:
    """
    One row of the delivery log: a download response (200 or 206) to a
    device.

    @ivar complete: whether every byte the response promised was sent.
    @ivar cache: C{HIT} or C{MISS}.
    """

    id: int
    time: float
    device: str
    snapName: str
    snapId: str
    revision: int
    sha3_384: str
    bytes: int
    complete: bool
    cache: str
    previousHash: str = ""
    rowHash: str = ""


SELECTOR_KINDS = ("serial", "model", "network", "device")

DEVICE_COLUMNS = "identity, model, address, architecture, first_seen, last_seen"
DELIVERY_COLUMNS = (
    "id, time, device, snap_name, snap_id, revision, sha3_384, bytes, complete,"
    " cache, previous_hash, row_hash"
)


# ---------------------------------------------------------------------------
# Inventory
# ---------------------------------------------------------------------------


def recordInventory(identity: str, model: str, address: str, architecture: str,
                    snaps: Sequence[InstalledSnap], names: dict[str, str],
                    now: float) -> Operation:
    """
    Replace what is recorded of C{identity}'s installed snaps with
    C{snaps}, note its architecture and last-seen time, and remember the
    snap names an upstream answer gave (C{names}: snap-id to name).
    """
    yield Query(
        f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (identity) DO UPDATE SET"
        " model = CASE WHEN excluded.model = '' THEN devices.model"
        "  ELSE excluded.model END,"
        " address = CASE WHEN excluded.address = '' THEN devices.address"
        "  ELSE excluded.address END,"
        " architecture = CASE WHEN excluded.architecture = ''"
        "  THEN devices.architecture ELSE excluded.architecture END,"
        " last_seen = CASE WHEN excluded.last_seen > devices.last_seen"
        "  THEN excluded.last_seen ELSE devices.last_seen END",
        (identity, model, address, architecture, now, now),
    )
    yield Query("DELETE FROM device_snaps WHERE identity = ?", (identity,))
    unique = {snap.snapId: snap for snap in snaps}
    if unique:
        values = ", ".join(["(?, ?, ?, ?, ?)"] * len(unique))
        params: list[Any] = []
        for snap in unique.values():
            params += [identity, snap.snapId, int(snap.revision), snap.channel, architecture]
        yield Query(
            "INSERT INTO device_snaps (identity, snap_id, revision, channel, architecture)"
            f" VALUES {values}",
            tuple(params),
        )
    yield from recordNames(names, now)


def recordNames(names: dict[str, str], now: float) -> Operation:
    """
    Remember the name of each snap-id in C{names} (upstream's word).
    """
    pairs = sorted((snapId, name) for snapId, name in names.items() if snapId and name)
    if not pairs:
        return None
    values = ", ".join(["(?, ?, ?)"] * len(pairs))
    params: list[Any] = []
    for snapId, name in pairs:
        params += [snapId, name, now]
    yield Query(
        f"INSERT INTO snap_names (snap_id, name, seen_at) VALUES {values}"
        " ON CONFLICT (snap_id) DO UPDATE SET name = excluded.name,"
        " seen_at = excluded.seen_at",
        tuple(params),
    )
    return None


def snapIdsNamed(name: str) -> Operation:
    """
    @return: the snap-ids known by C{name} (from upstream answers, and from
        the blobs relayed).
    """
    rows = yield Query(
        "SELECT snap_id FROM snap_names WHERE name = ?"
        " UNION SELECT snap_id FROM blobs WHERE snap_name = ? AND snap_id <> ''",
        (name, name),
    )
    return sorted({row[0] for row in rows})


def listFleet(seenSince: Optional[float], identity: Optional[str] = None,
              snapName: Optional[str] = None) -> Operation:
    """
    @return: the L{FleetDevice}s (seen at or after C{seenSince}; only
        C{identity}; only those running C{snapName}), by identity.
    """
    conditions, params = [], []  # type: list[str], list[Any]
    if seenSince is not None:
        conditions.append("d.last_seen >= ?")
        params.append(float(seenSince))
    if identity is not None:
        conditions.append("d.identity = ?")
        params.append(identity)
    if snapName is not None:
        conditions.append(
            "d.identity IN (SELECT s.identity FROM device_snaps s"
            " LEFT JOIN snap_names n ON n.snap_id = s.snap_id"
            " WHERE n.name = ? OR s.snap_id = ?)")
        params += [snapName, snapName]
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    rows = yield Query(
        "SELECT d.identity, d.model, d.address, d.architecture, d.first_seen, d.last_seen"
        f" FROM devices d{where} ORDER BY d.identity",
        tuple(params),
    )
    snapRows = yield Query(
        "SELECT s.identity, s.snap_id, s.revision, s.channel, COALESCE(n.name, '')"
        " FROM device_snaps s LEFT JOIN snap_names n ON n.snap_id = s.snap_id"
        + (" WHERE s.identity = ?" if identity is not None else ""),
        (identity,) if identity is not None else (),
    )
    snaps: dict[str, list[InstalledSnap]] = {}
    for row in snapRows:
        snaps.setdefault(row[0], []).append(
            InstalledSnap(snapId=row[1], revision=int(row[2]), channel=row[3], name=row[4]))
    devices = []
    for row in rows:
        installed = sorted(snaps.get(row[0], ()), key=lambda s: (s.name, s.snapId))
        devices.append(FleetDevice(
            identity=row[0], model=row[1], address=row[2], architecture=row[3],
            firstSeen=float(row[4]), lastSeen=float(row[5]), snaps=tuple(installed)))
    return devices


def inventory(snapName: Optional[str] = None) -> Operation:
    """
    @return: L{InventoryCount}s, by name, snap-id, revision, channel and
        architecture.  Counted on C{device_snaps} alone (its covering
        index), names joined afterwards, so that the time stays small on a
        large fleet.
    """
    where, params = "", ()  # type: str, tuple[Any, ...]
    if snapName is not None:
        where = " WHERE snap_id IN (SELECT snap_id FROM snap_names WHERE name = ?) OR snap_id = ?"
        params = (snapName, snapName)
    rows = yield Query(
        "SELECT snap_id, revision, channel, architecture, COUNT(*) FROM device_snaps"
        f"{where} GROUP BY snap_id, revision, channel, architecture",
        params,
    )
    nameRows = yield Query("SELECT snap_id, name FROM snap_names")
    names = {row[0]: row[1] for row in nameRows}
    counts = [InventoryCount(snapId=row[0], name=names.get(row[0], ""), revision=int(row[1]),
                             channel=row[2], architecture=row[3], devices=int(row[4]))
              for row in rows]
    return sorted(counts, key=lambda c: (c.name, c.snapId, c.revision, c.channel,
                                         c.architecture))


# ---------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------


def groupTarget(name: str) -> str:
    """
    The audit C{target} of changes to a group.
    """
    return f"group:{name}"


def _groupJSON(group: Optional[DeviceGroup]) -> Any:
    return None if group is None else {"name": group.name, "selectors": group.selectors}


def _groupFromRow(row: Sequence[Any]) -> DeviceGroup:
    return DeviceGroup(name=row[0], selectors=json.loads(row[1]), createdAt=float(row[2]))


def createGroup(group: DeviceGroup, actor: str, now: float) -> Operation:
    """
    Create C{group}, or replace the selectors of the group of that name.

    @return: the group replaced, or C{None}.
    """
    selectors = {kind: list(group.selectors.get(kind, ())) for kind in SELECTOR_KINDS}
    rows = yield Query(
        "SELECT name, selectors, created_at FROM device_groups WHERE name = ?", (group.name,))
    previous = _groupFromRow(rows[0]) if rows else None
    yield Query(
        "INSERT INTO device_groups (name, selectors, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET selectors = excluded.selectors",
        (group.name, audit.canonicalJSON(selectors), now),
    )
    new = DeviceGroup(group.name, selectors, previous.createdAt if previous else now)
    yield from appendAudit(now, actor, "group.set", groupTarget(group.name),
                           _groupJSON(previous), _groupJSON(new))
    yield Notify({"kind": "group", "name": group.name})
    return previous


def deleteGroup(name: str, actor: str, now: float) -> Operation:
    """
    @return: the removed group, or C{None} (and no audit row) when there
        was none.
    """
    rows = yield Query(
        "SELECT name, selectors, created_at FROM device_groups WHERE name = ?", (name,))
    if not rows:
        return None
    gone = _groupFromRow(rows[0])
    yield Query("DELETE FROM device_groups WHERE name = ?", (name,))
    yield from appendAudit(now, actor, "group.delete", groupTarget(name), _groupJSON(gone), None)
    yield Notify({"kind": "group", "name": name})
    return gone


def listGroups() -> Operation:
    """
    @return: every L{DeviceGroup}, by name.
    """
    rows = yield Query("SELECT name, selectors, created_at FROM device_groups ORDER BY name")
    return [_groupFromRow(row) for row in rows]


# ---------------------------------------------------------------------------
# Deliveries
# ---------------------------------------------------------------------------


def deliveryHash(entry: Delivery) -> str:
    """
    The hash C{entry} must carry: SHA-256 over the previous row's hash and
    the row's canonical JSON (as the audit log, L{snapstore.state.audit}).
    """
    import hashlib

    content = audit.canonicalJSON({
        "id": entry.id, "time": entry.time, "device": entry.device,
        "snap_name": entry.snapName, "snap_id": entry.snapId, "revision": entry.revision,
        "sha3_384": entry.sha3_384, "bytes": entry.bytes, "complete": bool(entry.complete),
        "cache": entry.cache,
    })
    return hashlib.sha256((entry.previousHash + content).encode("ascii")).hexdigest()


def _deliveryFromRow(row: Sequence[Any]) -> Delivery:
    return Delivery(
        id=int(row[0]), time=float(row[1]), device=row[2], snapName=row[3], snapId=row[4],
        revision=int(row[5]), sha3_384=row[6], bytes=int(row[7]), complete=bool(int(row[8])),
        cache=row[9], previousHash=row[10], rowHash=row[11])


def appendDeliveries(deliveries: Iterable[Delivery]) -> Operation:
    """
    Append C{deliveries} (their ids and hashes are assigned here) to the
    chain in one statement.  Must run in C{Mode.SERIAL}, as audit appends.

    @return: the stored L{Delivery}s.
    """
    pending = list(deliveries)
    if not pending:
        return []
    rows = yield Query("SELECT id, row_hash FROM delivery_log ORDER BY id DESC LIMIT 1")
    lastId, previousHash = (int(rows[0][0]), rows[0][1]) if rows else (0, "")
    stored = []
    params: list[Any] = []
    for offset, delivery in enumerate(pending):
        entry = attrs.evolve(delivery, id=lastId + offset + 1, previousHash=previousHash,
                             complete=bool(delivery.complete))
        entry = attrs.evolve(entry, rowHash=deliveryHash(entry))
        previousHash = entry.rowHash
        stored.append(entry)
        params += [entry.id, entry.time, entry.device, entry.snapName, entry.snapId,
                   entry.revision, entry.sha3_384, entry.bytes, int(entry.complete),
                   entry.cache, entry.previousHash, entry.rowHash]
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(stored))
    yield Query(f"INSERT INTO delivery_log ({DELIVERY_COLUMNS}) VALUES {values}", tuple(params))
    return stored


def listDeliveries(device: Optional[str] = None, snapName: Optional[str] = None,
                   since: Optional[float] = None) -> Operation:
    """
    @return: the delivery rows matching every given filter, in id order.
    """
    conditions, params = [], []  # type: list[str], list[Any]
    if device is not None:
        conditions.append("device = ?")
        params.append(device)
    if snapName is not None:
        conditions.append("(snap_name = ? OR snap_id = ?)")
        params += [snapName, snapName]
    if since is not None:
        conditions.append("time >= ?")
        params.append(float(since))
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    rows = yield Query(f"SELECT {DELIVERY_COLUMNS} FROM delivery_log{where} ORDER BY id",
                       tuple(params))
    return [_deliveryFromRow(row) for row in rows]
