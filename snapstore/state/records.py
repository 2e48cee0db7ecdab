# -*- test-case-name: tests.test_state -*-
"""
The values L{snapstore.interfaces.IStateStore} takes and returns.

Frozen attrs classes, so that callers can neither mutate a record another
part holds nor depend on database row types.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs


@attrs.frozen
class BlobRecord:
    """
    A downloadable file the upstream store described.

    @ivar name: the download file name, e.g. C{<snap-id>_<rev>.snap} or
        C{<snap-id>_<from>_<to>_xdelta3.delta}; the key of the record.
    @ivar sha3_384: lowercase hex digest the store promised.
    @ivar size: size in bytes the store promised.
    @ivar url: the upstream URL to fetch it from.
    @ivar snapId: the snap it belongs to ("" when unknown).
    @ivar snapName: the snap's name ("" when unknown).
    @ivar revision: the snap revision (0 when unknown, e.g. deltas).
    @ivar architectures: architectures the revision was built for.
    @ivar seenAt: POSIX time the proxy first saw it.
    """

    name: str
    sha3_384: str
    size: int
    url: str
    snapId: str = ""
    snapName: str = ""
    revision: int = 0
    architectures: tuple[str, ...] = ()
    seenAt: float = 0.0


@attrs.frozen
class Override:
    """
    A revision pin: devices on C{channel} get C{revision} of C{snapName}.

    @ivar group: the device group it is for; C{""} pins it for every device.
    @ivar until: POSIX time from which it no longer applies, or C{None}.
    @ivar reason: why, as the admin said it (kept for the audit log).
    """

    snapName: str
    channel: str
    revision: int
    architecture: str
    snapId: str = ""
    createdAt: float = 0.0
    group: str = ""
    until: Optional[float] = None
    reason: str = ""

    def expired(self, now: float) -> bool:
        """
        Whether the pin's C{until} has come at C{now}.
        """
        return self.until is not None and now >= self.until


@attrs.frozen
class Device:
    """
    A device that used the proxy.

    @ivar identity: C{brand/model/serial}, or C{address:<ip>} when the
        device sent no serial.
    """

    identity: str
    model: str = ""
    address: str = ""
    firstSeen: float = 0.0
    lastSeen: float = 0.0


@attrs.frozen
class DeviceSession:
    """
    A device session upstream granted through the proxy: which device a
    session macaroon belongs to.

    @ivar digest: hex sha256 of the macaroon; the macaroon itself is a
        credential and is never stored.
    @ivar identity: C{brand/model/serial} of the device it was given to.
    @ivar model: C{brand/model}.
    @ivar createdAt: POSIX time upstream granted it (0: now).
    @ivar expiresAt: POSIX time it expires when upstream said, else 0.
    @ivar lastUsed: POSIX time a request last carried it (0: now); only
        moves forward, and is written at most about once a day.
    """

    digest: str
    identity: str
    model: str = ""
    createdAt: float = 0.0
    expiresAt: float = 0.0
    lastUsed: float = 0.0


@attrs.frozen
class AuditEntry:
    """
    One row of the hash-chained audit log.

    @ivar previousHash: C{rowHash} of the row before (hex; "" for the first).
    @ivar rowHash: sha256 over C{previousHash} and this row's content.
    """

    id: int
    time: float
    actor: str
    action: str
    target: str
    before: Any
    after: Any
    previousHash: str
    rowHash: str


#: The risk levels of a snap channel, in the order the store lists them.
RISKS = ("stable", "candidate", "beta", "edge")


def normaliseChannel(channel: str) -> str:
    """
    Spell a channel the one way the state store keys it.

    snapd and the admin may write C{stable}, C{latest/stable} or
    C{stable/hotfix}; the store treats a missing track as C{latest}, so the
    pin set for one spelling must be found by the others.

    @param channel: C{[track/]risk[/branch]}.
    @return: C{track/risk[/branch]} with the track filled in.
    @raise ValueError: if C{channel} is not a channel name.
    """
    parts = channel.strip().split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"not a channel: {channel!r}")
    if parts[0] in RISKS:
        parts.insert(0, "latest")
    if not 2 <= len(parts) <= 3 or parts[1] not in RISKS:
        raise ValueError(f"not a channel: {channel!r}")
    return "/".join(parts)


def deviceChannel(channel: Any) -> Optional[str]:
    """
    The state store's spelling of a channel a device sent: C{stable},
    C{latest/stable}, or a bare track (C{2.0} meaning C{2.0/stable}, as
    snapd means it); C{None} when it is not a channel.
    """
    if not isinstance(channel, str) or not channel:
        return None
    try:
        return normaliseChannel(channel)
    except ValueError:
        pass
    if "/" in channel:
        return None
    try:
        return normaliseChannel(f"{channel}/stable")
    except ValueError:
        return None
