# -*- test-case-name: tests.test_fleet -*-
"""
Learning what each device runs from the refreshes it sends.

snapd's refresh call lists, in C{context}, every snap the device has
installed (snap-id, revision, tracking channel), whether or not it asks to
refresh them; so each refresh through the proxy replaces what is recorded
for the device.  The context names snaps by snap-id only; names come from
upstream's answers (each result names its snap), which are recorded
alongside.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from snapstore.state.fleet import InstalledSnap

REFRESH_PATH = "/v2/snaps/refresh"
#: A device whose refreshes report what this process last wrote for it is
#: written again only this often (seconds): its last-seen time is that
#: accurate (docs/fleet.md), and an unchanged refresh costs no write.
LAST_SEEN_RESOLUTION = 5 * 60
#: Devices whose last write is remembered; past this the memory is
#: dropped and every device is written once more.
MAX_REMEMBERED = 100_000


def _installed(body: Any) -> Optional[list[tuple[str, int, str]]]:
    """
    The installed set a refresh request body reports, as C{(snap-id,
    revision, tracking channel)}: compared with what was written last
    before any L{InstalledSnap} is made (L{installedSnaps}).
    """
    if not isinstance(body, dict) or not isinstance(body.get("context"), list):
        return None
    snaps = []
    for entry in body["context"]:
        if not isinstance(entry, dict):
            continue
        snapId, revision = entry.get("snap-id"), entry.get("revision")
        if not isinstance(snapId, str) or not snapId:
            continue
        if not isinstance(revision, int) or isinstance(revision, bool):
            continue
        channel = entry.get("tracking-channel")
        snaps.append((snapId, revision, channel if isinstance(channel, str) else ""))
    return snaps


def installedSnaps(body: Any) -> Optional[list[InstalledSnap]]:
    """
    The installed set a refresh request body reports.

    @param body: the parsed request body.
    @return: the snaps, or C{None} when the body has no usable C{context}
        list (then nothing is known, and nothing is replaced).
    """
    installed = _installed(body)
    return None if installed is None else _records(installed)


def _records(installed: list[tuple[str, int, str]]) -> list[InstalledSnap]:
    """
    The records of what L{_installed} found.
    """
    return [InstalledSnap(snapId=snapId, revision=revision, channel=channel)
            for snapId, revision, channel in installed]


def namesIn(answer: Any) -> dict[str, str]:
    """
    The snap-id to name pairs an upstream refresh, info or find answer
    gives.
    """
    names: dict[str, str] = {}
    if not isinstance(answer, dict):
        return names
    items = answer.get("results")
    if not isinstance(items, list):
        items = [answer]
    for item in items:
        if not isinstance(item, dict):
            continue
        found = item.get("snap")
        snap: dict[str, Any] = found if isinstance(found, dict) else {}
        snapId = item.get("snap-id") or snap.get("snap-id")
        name = item.get("name") or snap.get("name")
        if isinstance(snapId, str) and snapId and isinstance(name, str) and name:
            names[snapId] = name
    return names


class InventoryRecorder:
    """
    Records each device's installed set from its refreshes.

    @ivar state: provides L{snapstore.interfaces.IFleetState}.
    """

    log = Logger()

    def __init__(self, state: Any, clock: IReactorTime) -> None:
        self.state = state
        self.clock = clock
        self._failing = False
        # identity -> (what was written, when): the write a refresh that
        # reports the same again within LAST_SEEN_RESOLUTION can skip.
        self._written: dict[str, tuple[Any, float]] = {}

    def noteAnswer(self, request: Any, code: int, answer: bytes,
                   document: Any = None) -> Deferred[Any]:
        """
        Learn from a relayed answer: a successful refresh replaces the
        device's installed set; any answer's snap names are remembered.
        Failures are logged, never raised: the device's refresh does not
        depend on the record.

        @param request: the L{snapstore.rules.values.StoreRequest}.
        @param document: C{answer} parsed, when the caller has it (read
            here, never changed), else C{None}.
        """
        if not 200 <= code < 300:
            return succeed(None)
        if document is None:
            try:
                document = json.loads(answer)
            except ValueError:
                return succeed(None)
        names = namesIn(document)
        if request.path == REFRESH_PATH and request.method == b"POST":
            installed = _installed(request.json())
            if installed is not None:
                device = request.device
                architecture = request.architecture
                reported = (device.model, device.address, architecture,
                            frozenset(installed), frozenset(names.items()))
                now = self.clock.seconds()
                last = self._written.get(device.identity)
                if last is not None and last[0] == reported and now - last[1] < LAST_SEEN_RESOLUTION:
                    return succeed(None)
                if len(self._written) >= MAX_REMEMBERED:
                    self._written.clear()
                self._written[device.identity] = (reported, now)
                d = self.state.recordInventory(device.identity, device.model, device.address,
                                               architecture, _records(installed), names)
                return d.addCallbacks(self._recorded, self._failed,
                                      errbackArgs=(device.identity,))
        if names:
            return self.state.recordSnapNames(names).addCallbacks(
                self._recorded, self._failed, errbackArgs=("",))
        return succeed(None)

    def _recorded(self, _: Any) -> None:
        if self._failing:
            self._failing = False
            self.log.info("Recording device inventories again")

    def _failed(self, failure: Any, identity: str) -> None:
        self._written.pop(identity, None)  # not written: the next refresh writes it
        # Once per outage: a refresh a second would otherwise log a line a
        # second.  The next refresh of each device records it again.
        if not self._failing:
            self._failing = True
            self.log.warn("Cannot record the inventory of {identity} (nor, until the "
                          "database answers, of other devices): {why}",
                          identity=identity or "-", why=failure.getErrorMessage())
