# -*- test-case-name: tests.test_policy -*-
"""
State-store operations for change control (design.md section 9): holds,
approvals, and when snapstore first saw each revision on each channel.

Pins are the C{overrides} table (L{snapstore.state.operations}), which
carries their scope, expiry and reason since migration 6.  The decisions
made from these rows are L{snapstore.policy}'s; this module only stores.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import attrs

from snapstore.state.operations import Notify, Operation, Query, appendAudit


@attrs.frozen
class Hold:
    """
    Keep new revisions from devices for a while, or until approved.

    @ivar snapName: the snap, or C{""} for every snap (C{hold --all}).
    @ivar channel: the normalised channel, or C{""} for every channel.
    @ivar group: the device group, or C{""} for every device.
    @ivar holdFor: seconds a revision must have been on the channel, or
        C{None} for an approval hold.
    """

    snapName: str
    channel: str
    group: str
    holdFor: Optional[float]
    reason: str = ""
    createdAt: float = 0.0

    @property
    def untilApproved(self) -> bool:
        return self.holdFor is None


@attrs.frozen
class Approval:
    """
    C{revision} of C{snapName} may reach devices under an approval hold
    (of C{group}; C{""}: every group).
    """

    snapName: str
    revision: int
    group: str = ""
    reason: str = ""
    createdAt: float = 0.0


@attrs.frozen
class ChannelRevision:
    """
    C{revision} of C{snapName} was first seen on C{channel} for
    C{architecture} at C{firstSeen} (POSIX time).
    """

    snapName: str
    channel: str
    architecture: str
    revision: int
    firstSeen: float = 0.0


HOLD_COLUMNS = "snap_name, channel, group_name, hold_for, reason, created_at"
APPROVAL_COLUMNS = "snap_name, revision, group_name, reason, created_at"


def _hold(row: Sequence[Any]) -> Hold:
    return Hold(row[0], row[1], row[2], None if row[3] is None else float(row[3]),
                row[4] or "", float(row[5]))


def _approval(row: Sequence[Any]) -> Approval:
    return Approval(row[0], int(row[1]), row[2], row[3] or "", float(row[4]))


def holdJSON(hold: Optional[Hold]) -> Any:
    """
    The audit-log form of a hold.
    """
    if hold is None:
        return None
    return {"snap": hold.snapName or None, "channel": hold.channel or None,
            "group": hold.group or None, "for": hold.holdFor,
            "until-approved": hold.untilApproved, "reason": hold.reason}


def holdTarget(snapName: str) -> str:
    """
    The audit target of a hold: the snap's, like its pins, or C{snap:*}.
    """
    return f"snap:{snapName or '*'}"


def setHold(hold: Hold, actor: str, now: float) -> Operation:
    """
    @return: the hold replaced, or C{None}.
    """
    key = (hold.snapName, hold.channel, hold.group)
    rows = yield Query(f"SELECT {HOLD_COLUMNS} FROM holds WHERE snap_name = ?"
                       " AND channel = ? AND group_name = ?", key)
    previous = _hold(rows[0]) if rows else None
    # A hold replaced (a cool-down made an approval hold) has held its
    # devices all along: what was new under it stays new.
    new = attrs.evolve(hold, createdAt=previous.createdAt if previous
                       else hold.createdAt or now)
    yield Query(f"INSERT INTO holds ({HOLD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (snap_name, channel, group_name) DO UPDATE SET"
                " hold_for = excluded.hold_for, reason = excluded.reason,"
                " created_at = excluded.created_at",
                key + (new.holdFor, new.reason, new.createdAt))
    yield from appendAudit(now, actor, "hold.set", holdTarget(new.snapName),
                           holdJSON(previous), holdJSON(new))
    yield Notify({"kind": "hold", "snapName": new.snapName})
    return previous


def releaseHold(snapName: str, channel: str, group: str, actor: str,
                now: float) -> Operation:
    """
    @return: the hold removed, or C{None} (and no audit row).
    """
    key = (snapName, channel, group)
    rows = yield Query(f"SELECT {HOLD_COLUMNS} FROM holds WHERE snap_name = ?"
                       " AND channel = ? AND group_name = ?", key)
    if not rows:
        return None
    gone = _hold(rows[0])
    yield Query("DELETE FROM holds WHERE snap_name = ? AND channel = ? AND group_name = ?",
                key)
    yield from appendAudit(now, actor, "hold.release", holdTarget(snapName),
                           holdJSON(gone), None)
    yield Notify({"kind": "hold", "snapName": snapName})
    return gone


def listHolds() -> Operation:
    rows = yield Query(f"SELECT {HOLD_COLUMNS} FROM holds"
                       " ORDER BY snap_name, channel, group_name")
    return [_hold(row) for row in rows]


def approve(approval: Approval, actor: str, now: float) -> Operation:
    """
    @return: the stored approval (a repeated one keeps its first time).
    """
    new = attrs.evolve(approval, createdAt=approval.createdAt or now)
    yield Query(f"INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (snap_name, revision, group_name) DO UPDATE SET"
                " reason = excluded.reason",
                (new.snapName, new.revision, new.group, new.reason, new.createdAt))
    yield from appendAudit(now, actor, "approve", holdTarget(new.snapName), None,
                           {"snap": new.snapName, "revision": new.revision,
                            "group": new.group or None, "reason": new.reason})
    yield Notify({"kind": "approval", "snapName": new.snapName})
    return new


def listApprovals(snapName: Optional[str] = None) -> Operation:
    if snapName is None:
        rows = yield Query(f"SELECT {APPROVAL_COLUMNS} FROM approvals"
                           " ORDER BY snap_name, revision, group_name")
    else:
        rows = yield Query(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE snap_name = ?"
                           " ORDER BY snap_name, revision, group_name", (snapName,))
    return [_approval(row) for row in rows]


def recordChannelRevisions(seen: Iterable[ChannelRevision], now: float) -> Operation:
    """
    Insert what is new; a revision already seen keeps its first time.
    """
    for item in seen:
        yield Query("INSERT INTO channel_revisions (snap_name, channel, architecture,"
                    " revision, first_seen) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (snap_name, channel, architecture, revision) DO NOTHING",
                    (item.snapName, item.channel, item.architecture, item.revision,
                     item.firstSeen or now))
    return None


def channelHistory(snapName: str, channel: str, architecture: str) -> Operation:
    rows = yield Query("SELECT snap_name, channel, architecture, revision, first_seen"
                       " FROM channel_revisions WHERE snap_name = ? AND channel = ?"
                       " AND architecture = ? ORDER BY first_seen, revision",
                       (snapName, channel, architecture))
    return [ChannelRevision(r[0], r[1], r[2], int(r[3]), float(r[4])) for r in rows]
