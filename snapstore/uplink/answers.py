# -*- test-case-name: tests.test_uplink -*-
"""
What upstream answered lately, kept so that the node can answer from it
when upstream fails.

L{RelayedAnswers} learns from the refresh, info, find and assertion
answers upstream gave, and offers them in the shape the offline mode's
L{snapstore.offline.store.LocalStoreAgent} serves from (the C{Imported*}
records of L{snapstore.state.imported}): so stale answers are built by the
same code as offline answers, with the same JSON shapes and error codes.

Only what was seen within C{maxAge} seconds is offered.  L{AnswersFile}
keeps them in C{<data-dir>/stale-answers.json} (every few minutes and at
shutdown), so that a node restarted during an outage still answers.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

import attrs
from twisted.application.service import Service
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from snapstore.state.imported import (
    ImportedAssertion,
    ImportedChannel,
    ImportedRevision,
    ImportedSnap,
)
from snapstore.state.records import deviceChannel

#: The C{User-Agent} of the follower's own refresh calls: what they name
#: in their context is not something a device reported running.
FOLLOWER_AGENT = b"snapstore-follow"
_ASSERTION_REVISION = re.compile(rb"^revision:\s*(\d+)\s*$", re.MULTILINE)


def architectureOf(headers: Headers, query: Optional[dict[str, str]] = None) -> str:
    """
    The architecture a request is about (the query's, then the device's
    headers; C{amd64} as the store assumes).
    """
    if query and query.get("architecture"):
        return query["architecture"]
    for name in (b"snap-device-architecture", b"x-ubuntu-architecture"):
        values = headers.getRawHeaders(name)
        if values:
            return values[0].decode("ascii", "replace")
    return "amd64"


@attrs.define
class _Seen:
    value: Any
    seenAt: float
    releasedAt: str = ""


@attrs.define
class _Snap:
    snapId: str
    name: str
    snapLevel: dict[str, Any] = attrs.field(factory=dict)
    defaultTrack: Any = None
    channels: dict[tuple[str, str], _Seen] = attrs.field(factory=dict)
    revisions: dict[int, _Seen] = attrs.field(factory=dict)


#: Snap-level fields of a refresh result's C{snap} object (the rest
#: describe the revision).
_REVISION_FIELDS = frozenset(["architectures", "base", "confinement", "created-at", "download",
                              "epoch", "revision", "type", "version", "snap-yaml",
                              "resources"])


def _private(fields: Any) -> bool:
    """
    Whether a snap object says the snap is private: what one account may
    see is never offered to other devices.
    """
    return isinstance(fields, dict) and fields.get("private") is True


class RelayedAnswers:
    """
    The newest answers upstream gave, by snap, channel, architecture and
    revision, and the assertions it served.

    @ivar maxAge: seconds an answer stays usable.
    """

    def __init__(self, clock: Any, maxAge: float) -> None:
        self.clock = clock
        self.maxAge = maxAge
        self._snaps: dict[str, _Snap] = {}
        self._names: dict[str, str] = {}
        self._assertions: dict[tuple[str, tuple[str, ...]], _Seen] = {}
        self._reported: dict[tuple[str, str, str], float] = {}
        #: Whether anything was learned since the last L{snapshot}.
        self.changed = False

    # -- learning ------------------------------------------------------------

    def _snap(self, snapId: Any, name: Any) -> Optional[_Snap]:
        if not isinstance(snapId, str) or not snapId:
            snapId = self._names.get(name) if isinstance(name, str) else None
            if snapId is None:
                return None
        known = self._snaps.get(snapId)
        if known is None:
            if not isinstance(name, str) or not name:
                return None
            known = self._snaps[snapId] = _Snap(snapId, name)
        if isinstance(name, str) and name and name != known.name:
            self._names.pop(known.name, None)
            known.name = name
        self._names[known.name] = snapId
        return known

    def _learnRevision(self, snap: _Snap, fields: dict[str, Any], now: float) -> Optional[int]:
        number = fields.get("revision")
        if not isinstance(number, int):
            return None
        revision = {k: v for k, v in fields.items() if k in _REVISION_FIELDS}
        download = revision.get("download")
        if isinstance(download, dict):
            # A delta from a revision the device may not have is no use when
            # upstream is away; the whole blob is what the cache holds.
            revision["download"] = {k: v for k, v in download.items() if k != "deltas"}
        old = snap.revisions.get(number)
        if old is not None:
            merged = dict(old.value)
            oldDownload = merged.get("download")
            merged.update(revision)
            if isinstance(oldDownload, dict) and isinstance(revision.get("download"), dict) \
                    and "url" not in revision["download"]:
                merged["download"] = {**oldDownload, **revision["download"]}
            revision = merged
        snap.revisions[number] = _Seen(revision, now)
        self.changed = True
        snap.snapLevel.update({k: v for k, v in fields.items()
                               if k not in _REVISION_FIELDS and k not in ("snap-id", "name")})
        return number

    def learnRefresh(self, request: Any, headers: Headers, answer: Any) -> None:
        """
        Learn from a C{POST /v2/snaps/refresh} answer: each result names the
        revision a channel gave the device's architecture.
        """
        if not isinstance(request, dict) or not isinstance(answer, dict):
            return
        now = self.clock.seconds()
        architecture = architectureOf(headers)
        # Keys a device may send as anything JSON: only strings name a pair.
        actions = {a.get("instance-key"): a for a in request.get("actions") or []
                   if isinstance(a, dict) and isinstance(a.get("instance-key"), str)}
        context = {c.get("instance-key"): c for c in request.get("context") or []
                   if isinstance(c, dict) and isinstance(c.get("instance-key"), str)}
        fromFollower = FOLLOWER_AGENT in (headers.getRawHeaders(b"user-agent") or ())
        for installed in () if fromFollower else context.values():
            channel = deviceChannel(installed.get("tracking-channel"))
            if isinstance(installed.get("snap-id"), str) and channel is not None:
                self._reported[(installed["snap-id"], channel, architecture)] = now
        for result in answer.get("results") or []:
            if not isinstance(result, dict) or result.get("result") not in (
                    "refresh", "install", "download"):
                continue
            fields = result.get("snap")
            if not isinstance(fields, dict) or _private(fields):
                continue
            snap = self._snap(result.get("snap-id") or fields.get("snap-id"),
                              result.get("name") or fields.get("name"))
            if snap is None:
                continue
            number = self._learnRevision(snap, fields, now)
            if number is None:
                continue
            key = result.get("instance-key")
            if not isinstance(key, str):
                key = None
            action = actions.get(key) or {}
            channel = result.get("effective-channel") or action.get("channel")
            if channel is None and action.get("revision") is None:
                channel = (context.get(key) or {}).get("tracking-channel") or "stable"
            channel = deviceChannel(channel)
            if channel is not None:
                snap.channels[(architecture, channel)] = _Seen(number, now)

    def learnInfo(self, answer: Any) -> None:
        """
        Learn from a C{GET /v2/snaps/info/<name>} answer: its channel map.
        """
        if not isinstance(answer, dict) or _private(answer.get("snap")):
            return
        snap = self._snap(answer.get("snap-id"), answer.get("name"))
        if snap is None:
            return
        now = self.clock.seconds()
        if isinstance(answer.get("snap"), dict):
            snap.snapLevel.update({k: v for k, v in answer["snap"].items()
                                   if k not in _REVISION_FIELDS})
        if "default-track" in answer:
            snap.defaultTrack = answer.get("default-track")
        for entry in answer.get("channel-map") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("channel"), dict):
                continue
            described = entry["channel"]
            channel = deviceChannel(described.get("name"))
            architecture = described.get("architecture")
            number = self._learnRevision(snap, {k: v for k, v in entry.items()
                                                if k in _REVISION_FIELDS}, now)
            if channel and isinstance(architecture, str) and number is not None:
                snap.channels[(architecture, channel)] = _Seen(
                    number, now, str(described.get("released-at") or ""))

    def learnFind(self, headers: Headers, query: dict[str, str], answer: Any) -> None:
        """
        Learn from a C{GET /v2/snaps/find} answer: snap-level fields, and
        the revision each result's channel gives.
        """
        if not isinstance(answer, dict):
            return
        now = self.clock.seconds()
        architecture = architectureOf(headers, query)
        for result in answer.get("results") or []:
            if not isinstance(result, dict) or _private(result.get("snap")):
                continue
            snap = self._snap(result.get("snap-id"), result.get("name"))
            if snap is None:
                continue
            if isinstance(result.get("snap"), dict):
                snap.snapLevel.update({k: v for k, v in result["snap"].items()
                                       if k not in _REVISION_FIELDS})
            revision = result.get("revision")
            if not isinstance(revision, dict):
                continue
            number = self._learnRevision(snap, {k: v for k, v in revision.items()
                                                if k in _REVISION_FIELDS}, now)
            channel = deviceChannel(revision.get("channel"))
            if channel is not None and number is not None \
                    and (architecture, channel) not in snap.channels:
                snap.channels[(architecture, channel)] = _Seen(number, now)

    def learnAssertion(self, kind: str, key: list[str], body: bytes) -> None:
        """
        Keep an assertion upstream served, byte for byte.
        """
        match = _ASSERTION_REVISION.search(body.split(b"\n\n", 1)[0])
        revision = int(match.group(1)) if match else 0
        self._assertions[(kind, tuple(key))] = _Seen((body.decode("utf-8"), revision),
                                                     self.clock.seconds())
        self.changed = True

    # -- the offline store's source interface --------------------------------

    def _fresh(self, seen: _Seen) -> bool:
        return self.clock.seconds() - seen.seenAt <= self.maxAge

    def _imported(self, snap: _Snap) -> Optional[ImportedSnap]:
        revisions = {}
        for number, seen in snap.revisions.items():
            if not self._fresh(seen):
                continue
            fields = {**snap.snapLevel, "name": snap.name, "snap-id": snap.snapId, **seen.value}
            download = fields.get("download") or {}
            revisions[number] = ImportedRevision(snap.snapId, number,
                                                 str(download.get("sha3-384") or ""),
                                                 int(download.get("size") or 0), fields)
        channels = tuple(ImportedChannel(snap.snapId, architecture, channel, seen.value,
                                         seen.releasedAt)
                         for (architecture, channel), seen in sorted(snap.channels.items())
                         if self._fresh(seen) and seen.value in revisions)
        if not revisions:
            return None
        return ImportedSnap(snap.snapId, snap.name,
                            {"snap": dict(snap.snapLevel), "default-track": snap.defaultTrack},
                            channels, revisions)

    async def getImportedSnap(self, snapId: Optional[str] = None,
                              snapName: Optional[str] = None) -> Optional[ImportedSnap]:
        if snapId is None and snapName is not None:
            snapId = self._names.get(snapName)
        known = self._snaps.get(snapId) if snapId else None
        return self._imported(known) if known is not None else None

    async def listImportedSnaps(self) -> list[ImportedSnap]:
        snaps = [self._imported(known) for known in self._snaps.values()]
        return sorted((s for s in snaps if s is not None), key=lambda s: s.snapName)

    async def getImportedAssertion(self, kind: str, primary: list[str]) -> Optional[ImportedAssertion]:
        seen = self._assertions.get((kind, tuple(primary)))
        if seen is None or not self._fresh(seen):
            return None
        body, revision = seen.value
        return ImportedAssertion(kind, tuple(primary), body, revision)

    def reported(self) -> list[tuple[str, str, str]]:
        """
        C{(snap name, channel, architecture)} that devices reported
        tracking in their refreshes within C{maxAge} (for fleet follows).
        """
        now = self.clock.seconds()
        found = set()
        for (snapId, channel, architecture), seenAt in self._reported.items():
            known = self._snaps.get(snapId)
            if known is not None and now - seenAt <= self.maxAge:
                found.add((known.name, channel, architecture))
        return sorted(found)

    def counts(self) -> dict[str, int]:
        """
        How much is known: snaps, revisions, assertions.
        """
        return {"snaps": len(self._snaps),
                "revisions": sum(len(s.revisions) for s in self._snaps.values()),
                "assertions": len(self._assertions)}

    # -- keeping them across restarts ------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """
        Everything still fresh, as JSON-ready data.
        """
        self.changed = False
        snaps = []
        for snap in self._snaps.values():
            revisions = [[n, seen.value, seen.seenAt] for n, seen in snap.revisions.items()
                         if self._fresh(seen)]
            if not revisions:
                continue
            snaps.append({"snap-id": snap.snapId, "name": snap.name, "snap": snap.snapLevel,
                          "default-track": snap.defaultTrack, "revisions": revisions,
                          "channels": [[a, c, seen.value, seen.seenAt, seen.releasedAt]
                                       for (a, c), seen in snap.channels.items()
                                       if self._fresh(seen)]})
        return {"version": 1, "snaps": snaps,
                "assertions": [[k, list(key), seen.value[0], seen.value[1], seen.seenAt]
                               for (k, key), seen in self._assertions.items()
                               if self._fresh(seen)],
                "reported": [[i, c, a, at] for (i, c, a), at in self._reported.items()]}

    def restore(self, data: dict[str, Any]) -> None:
        """
        Take back what L{snapshot} gave (what is already known wins).
        """
        for item in data.get("snaps") or []:
            if item["snap-id"] in self._snaps:
                continue
            snap = self._snap(item["snap-id"], item["name"])
            if snap is None:
                continue
            snap.snapLevel = dict(item.get("snap") or {})
            snap.defaultTrack = item.get("default-track")
            for number, fields, seenAt in item.get("revisions") or []:
                snap.revisions[int(number)] = _Seen(fields, float(seenAt))
            for architecture, channel, number, seenAt, releasedAt in item.get("channels") or []:
                snap.channels[(architecture, channel)] = _Seen(int(number), float(seenAt),
                                                               releasedAt)
        for kind, key, body, revision, seenAt in data.get("assertions") or []:
            self._assertions.setdefault((kind, tuple(key)), _Seen((body, int(revision)),
                                                                   float(seenAt)))
        for snapId, channel, architecture, seenAt in data.get("reported") or []:
            self._reported.setdefault((snapId, channel, architecture), float(seenAt))


class AnswersFile(Service):
    """
    Keeps L{RelayedAnswers} in a JSON file: read at start, written every
    C{interval} seconds when something was learned, and at shutdown.  The
    file is replaced atomically; one that cannot be read is set aside and
    logged, never fatal (stale answers are a fallback).
    """

    log = Logger()

    def __init__(self, clock: Any, answers: RelayedAnswers, path: str,
                 interval: float = 300.0) -> None:
        self.clock = clock
        self.answers = answers
        self.path = path
        self.interval = interval
        self._call: Any = None

    def startService(self) -> None:
        super().startService()
        try:
            with open(self.path) as f:
                self.answers.restore(json.load(f))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as error:
            self.log.warn("cannot read {path} ({error}); stale answers start empty",
                          path=self.path, error=error)
            try:
                os.replace(self.path, self.path + ".unreadable")
            except OSError:
                pass
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self._call = self.clock.callLater(self.interval, self._tick)
        if self.answers.changed:
            self.save()

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.save()

    def save(self) -> None:
        temporary = self.path + ".tmp"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(temporary, "w") as f:
                json.dump(self.answers.snapshot(), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            self.log.warn("cannot write {path}: {error}", path=self.path, error=error)
