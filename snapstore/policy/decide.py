# -*- test-case-name: tests.test_policy -*-
"""
What one device is offered on one channel: pin > hold > upstream, group
scope before global (design.md section 9).

Pure functions of the rows (L{snapstore.state.records.Override},
L{snapstore.state.policy.Hold}, L{Approval}, L{ChannelRevision}), the
device's groups and the time, so that every node decides alike and an
expiry takes effect at its moment, with no admin action: the clock is
read at decision time, never stored as "expired".
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence


def _scoped(items: Sequence[Any], groups: Iterable[str]) -> list[Any]:
    """
    The items of the most specific scope that has any: those of the
    device's groups, else those for everyone.
    """
    member = set(groups)
    grouped = [item for item in items if item.group and item.group in member]
    return grouped or [item for item in items if not item.group]


def choosePin(pins: Iterable[Any], snapName: Any, snapId: Any, channel: str,
              architecture: str, groups: Iterable[str], now: float) -> Optional[Any]:
    """
    The pin that applies, or C{None}.

    @param channel: the state store's spelling (C{deviceChannel}).
    @return: a group's pin before the global one; with pins of several of
        the device's groups, the lowest revision (the most restrictive).
        Expired pins never apply.
    """
    matching = [
        pin for pin in pins
        if pin.channel == channel and pin.architecture in (architecture, "all")
        and not pin.expired(now)
        and ((snapName and pin.snapName == snapName) or (snapId and pin.snapId == snapId))
    ]
    scoped = _scoped(matching, groups)
    if not scoped:
        return None
    return min(scoped, key=lambda pin: (pin.revision, pin.group))


def holdLength(hold: Any) -> float:
    """
    How restrictive a hold is: its duration, infinite until approved.
    """
    return math.inf if hold.holdFor is None else hold.holdFor


def chooseHold(holds: Iterable[Any], snapName: Any, channel: str,
               groups: Iterable[str]) -> Optional[Any]:
    """
    The hold that applies, or C{None}: of the device's groups' holds, else
    the global ones, the longest (an approval hold is the longest).
    """
    matching = [
        hold for hold in holds
        if (not hold.snapName or hold.snapName == snapName)
        and (not hold.channel or hold.channel == channel)
    ]
    scoped = _scoped(matching, groups)
    if not scoped:
        return None
    return max(scoped, key=lambda hold: (holdLength(hold), bool(hold.snapName),
                                         bool(hold.channel)))


def heldRevision(hold: Any, history: Iterable[Any], approvals: Iterable[Any],
                 snapName: str, groups: Iterable[str], now: float) -> Optional[int]:
    """
    The newest revision of the channel held devices may have, or C{None}.

    A revision qualifies once it has been on the channel for the hold's
    duration (counted from its first sighting), when it was approved for
    everyone or one of the device's groups, or, for an approval hold, when
    it was seen before the hold was made (it is not new).

    @param history: the channel's L{ChannelRevision}s.
    @return: of the qualifying revisions, the one seen last (the highest
        revision among equals).
    """
    member = set(groups)
    approved = {approval.revision for approval in approvals
                if approval.snapName == snapName
                and (not approval.group or approval.group in member)}
    qualifying = []
    for seen in history:
        if seen.revision in approved:
            qualifying.append(seen)
        elif hold.holdFor is not None and seen.firstSeen + hold.holdFor <= now:
            qualifying.append(seen)
        elif hold.holdFor is None and seen.firstSeen <= hold.createdAt:
            qualifying.append(seen)
    if not qualifying:
        return None
    return max(qualifying, key=lambda seen: (seen.firstSeen, seen.revision)).revision



def revisionAllowed(hold: Any, history: Sequence[Any], approvals: Iterable[Any],
                    snapName: str, groups: Iterable[str], now: float, revision: int) -> bool:
    """
    Whether a held device may have C{revision} when it asks for it by
    number (C{snap refresh --revision}): when it was approved, is not newer
    than the newest qualifying revision, or is older than anything
    snapstore saw on the channel.  Otherwise asking by number would walk
    around the hold.
    """
    approvals = list(approvals)
    member = set(groups)
    if any(a.snapName == snapName and a.revision == revision
           and (not a.group or a.group in member) for a in approvals):
        return True
    target = heldRevision(hold, history, approvals, snapName, groups, now)
    if target is not None and revision <= target:
        return True
    return bool(history) and revision < min(seen.revision for seen in history)
