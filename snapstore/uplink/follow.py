# -*- test-case-name: tests.test_uplink -*-
"""
Followed channels: warming the blob cache before devices ask.

An operator follows a snap's channels (C{snapstore follow hello=stable,edge
--arch amd64}), or the whole fleet (C{snapstore follow --fleet}: every
snap, channel and architecture devices reported in their refreshes).
Every C{--follow-interval} (jittered, so that nodes and sites do not ask
upstream in step), L{Follower} asks upstream what each followed channel
holds, through the same upstream client as the relay (so the answers are
learned for stale serving too), records the blobs the answer describes
exactly as the relay does, fetches the assertions devices will need, and
fills each new revision's blob into the cache through the download
resource's own fill, verified as always.  The first device to ask then
gets C{X-Cache: HIT}.

When a channel's revision is new to the node, it also asks upstream as a
device would that refreshes from a revision the node knows of (the one
the channel held before, those seen on the channel, those devices report
running), accepting xdelta3, and fills each delta offered beside the
blob: a device refreshing from that revision then gets the delta from the
cache too.

C{--prefetch-window HH:MM-HH:MM} (local time) limits when rounds run;
outside it, the next round waits for the window to open.

The follow list lives in C{<data-dir>/follows.json}: each node warms its
own cache.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import time
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from snapstore.state.records import deviceChannel
from snapstore.store.rewrite import rewriteAnswer
from snapstore.uplink.answers import FOLLOWER_AGENT

FOLLOWS_FILE = "follows.json"
#: The fields asked for in a follow round: what a device's refresh needs
#: the blob and its assertions for.
FIELDS = ["architectures", "base", "confinement", "created-at", "download", "epoch",
          "name", "revision", "snap-id", "summary", "title", "type", "version"]
_SNAP_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
#: The delta format asked for, the one snapd applies (store-api.md 4.3).
DELTA_FORMAT = "xdelta3"
#: At most this many older revisions per new revision get a delta: the
#: one the channel held before, then the ones most devices run.
MAX_DELTA_SOURCES = 3
_DEFAULT_EPOCH = {"read": [0], "write": [0]}


def secondsUntilOpen(window: Optional[tuple[int, int]], now: float) -> float:
    """
    0 when C{now} (POSIX time) is inside C{window} (local time), else the
    seconds until it opens.
    """
    if window is None:
        return 0.0
    local = time.localtime(now)
    minute = local.tm_hour * 60 + local.tm_min + local.tm_sec / 60.0
    start, end = window
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if inside:
        return 0.0
    return ((start - minute) % (24 * 60)) * 60.0


def normaliseFollow(value: Any) -> dict[str, Any]:
    """
    Check a follow as the admin API receives it and give its stored form
    C{{"snap", "channels", "architectures", "fleet", "with-deps"}}.

    @raise ValueError: naming what is wrong.
    """
    if not isinstance(value, dict):
        raise ValueError("a follow is a JSON object")
    fleet = bool(value.get("fleet", False))
    snap = "*" if fleet else value.get("snap")
    if not fleet and (not isinstance(snap, str) or not _SNAP_NAME.match(snap)):
        raise ValueError(f"not a snap name: {snap!r}")
    channels = []
    for channel in value.get("channels") or ([] if fleet else ["stable"]):
        normal = deviceChannel(channel)
        if normal is None:
            raise ValueError(f"not a channel: {channel!r}")
        channels.append(normal)
    architectures = value.get("architectures") or []
    if not isinstance(architectures, list) or not all(
            isinstance(a, str) and re.fullmatch(r"[a-z0-9]+", a) for a in architectures):
        raise ValueError(f"not a list of architectures: {architectures!r}")
    return {"snap": snap, "channels": sorted(set(channels)),
            "architectures": sorted(set(architectures)) or ([] if fleet else ["amd64"]),
            "fleet": fleet, "with-deps": bool(value.get("with-deps", False))}


class FollowList:
    """
    The follows, kept in a JSON file written atomically.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.follows: dict[str, dict[str, Any]] = {}
        if os.path.exists(path):
            with open(path) as f:
                for follow in json.load(f).get("follows", []):
                    self.follows[follow["snap"]] = follow

    def list(self) -> list[dict[str, Any]]:
        return [self.follows[name] for name in sorted(self.follows)]

    def put(self, follow: dict[str, Any]) -> Optional[dict[str, Any]]:
        before = self.follows.get(follow["snap"])
        self.follows[follow["snap"]] = follow
        self._save()
        return before

    def remove(self, snap: str) -> Optional[dict[str, Any]]:
        before = self.follows.pop(snap, None)
        if before is not None:
            self._save()
        return before

    def _save(self) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w") as f:
            json.dump({"follows": self.list()}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)


def assertionPaths(snapId: str, sha3_384: str) -> list[str]:
    """
    The assertions a device installing a revision fetches first: its
    C{snap-revision} and its snap's C{snap-declaration}, with the
    C{max-format} current snapd asks with (store-api.md 6.1), so that a
    device's request finds the cached answer under the same key.
    """
    digest = base64.urlsafe_b64encode(bytes.fromhex(sha3_384)).decode("ascii").rstrip("=")
    return [f"/v2/assertions/snap-revision/{digest}?max-format=0",
            f"/v2/assertions/snap-declaration/16/{snapId}?max-format=7"]


def revisionsKnownTo(state: Any) -> Callable[[str, str, str], Deferred[list[int]]]:
    """
    C{(snap, channel, architecture) -> Deferred[[revision, ...]]}: what
    C{state} knows of the channel's older revisions: those devices
    report running from it (the fleet inventory), most devices first, then
    those seen on the channel (the channel history cool-downs count
    from), newest first.  Either part is skipped when the state store lacks it, and
    what was found so far is used when it fails (e.g. the database is
    away): deltas are an optimisation, never a reason to fail a round.
    """

    async def known(snap: str, channel: str, architecture: str) -> list[int]:
        found: list[int] = []
        history = getattr(state, "channelHistory", None)
        inventory = getattr(state, "inventory", None)
        try:
            if inventory is not None:
                counts = await inventory(snap)
                found.extend(count.revision for count in sorted(
                    counts, key=lambda count: -count.devices)
                    if count.architecture == architecture
                    and deviceChannel(count.channel) == channel)
            if history is not None:
                seen = await history(snap, channel, architecture)
                found.extend(sighting.revision for sighting in reversed(seen))
        except Exception as error:
            Follower.log.warn("follow: cannot read the revisions known on {snap} {channel}:"
                              " {error}", snap=snap, channel=channel, error=error)
        return found

    return lambda snap, channel, architecture: Deferred.fromCoroutine(
        known(snap, channel, architecture))


class Follower(Service):
    """
    Runs follow rounds every C{interval} seconds (jittered by 10 %),
    inside the prefetch window.

    @ivar upstream: the L{snapstore.store.upstream.StoreUpstream}.
    @ivar download: the L{snapstore.store.download.DownloadResource} whose
        fills warm the cache (C{prefetch(record, throttle)}).
    @ivar recordBlob: records a L{BlobRecord} (the state store's).
    @ivar reported: C{() -> [(snap name, channel, architecture)]} that
        devices reported, for fleet follows.
    @ivar knownRevisions: C{(snap, channel, architecture) ->
        Deferred[[revision, ...]]}, older revisions worth a delta to the
        channel's new one (L{revisionsKnownTo}).
    @ivar assertions: the L{snapstore.store.assertions.AssertionsResource}
        whose memory cache prefetched assertions go into, or C{None}.
    """

    log = Logger()

    def __init__(self, clock: Any, follows: FollowList, upstream: Any, download: Any,
                 recordBlob: Callable[[Any], Any], interval: float,
                 window: Optional[tuple[int, int]] = None, throttle: Any = None,
                 reported: Callable[[], list[tuple[str, str, str]]] = lambda: [],
                 random: Callable[[], float] = random.random,
                 knownRevisions: Optional[Callable[[str, str, str], Any]] = None,
                 assertions: Any = None) -> None:
        self.clock = clock
        self.follows = follows
        self.upstream = upstream
        self.download = download
        self.recordBlob = recordBlob
        self.interval = interval
        self.window = window
        self.throttle = throttle
        self.reported = reported
        self.random = random
        self.knownRevisions = knownRevisions
        self.assertions = assertions
        #: C{(snap, channel, architecture)} -> the newest revision a round
        #: found there, and the one before it (a delta source).
        self._newest: dict[tuple[str, str, str], int] = {}
        self._previous: dict[tuple[str, str, str], int] = {}
        #: C{(snap, source, target)} deltas dealt with: filled, being
        #: filled, or not offered; a failed one is asked for again.
        self._deltasDone: set[tuple[str, int, int]] = set()
        self.rounds = 0
        self.lastRound: Optional[dict[str, Any]] = None
        self._call: Any = None
        self._running: Optional[Deferred[Any]] = None

    # -- scheduling ----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._schedule(self.interval * self.random())

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        self._call = self.clock.callLater(delay, self._due)

    def _due(self) -> None:
        self._call = None
        wait = secondsUntilOpen(self.window, self.clock.seconds())
        if wait > 0:
            self.log.info("prefetch waits {minutes:.0f} minutes for its window", minutes=wait / 60)
            self._schedule(wait)
            return

        def again(_: Any) -> None:
            self._schedule(self.interval * (0.9 + 0.2 * self.random()))

        self.runRound().addBoth(again)

    # -- one round -----------------------------------------------------------

    def runRound(self) -> Deferred[dict[str, Any]]:
        """
        Ask upstream for every followed channel and fill what is new; fire
        with a summary once every fill has ended.  A round already running
        is joined rather than doubled.
        """
        if self._running is not None:
            waiter: Deferred[dict[str, Any]] = Deferred()
            def relay(result: Any) -> Any:
                waiter.callback(result)
                return result

            self._running.addBoth(relay)
            return waiter
        self._running = Deferred.fromCoroutine(self._round())

        def done(result: Any) -> Any:
            self._running = None
            return result

        return self._running.addBoth(done)

    def wanted(self) -> list[tuple[str, str, str, bool]]:
        """
        C{(snap, channel, architecture, with-deps)} for every follow.
        """
        wanted = set()
        for follow in self.follows.list():
            if follow.get("fleet"):
                for snap, channel, architecture in self.reported():
                    if (not follow["architectures"] or architecture in follow["architectures"]) \
                            and (not follow["channels"] or channel in follow["channels"]):
                        wanted.add((snap, channel, architecture, follow.get("with-deps", False)))
                continue
            for channel in follow["channels"]:
                for architecture in follow["architectures"]:
                    wanted.add((follow["snap"], channel, architecture,
                                follow.get("with-deps", False)))
        return sorted(wanted)

    async def _round(self) -> dict[str, Any]:
        self.rounds += 1
        summary: dict[str, Any] = {"fetched": [], "cached": [], "failed": []}
        byArchitecture: dict[str, list[tuple[str, str, bool]]] = {}
        for snap, channel, architecture, withDependencies in self.wanted():
            byArchitecture.setdefault(architecture, []).append((snap, channel, withDependencies))
        fills: list[tuple[dict[str, Any], Any]] = []
        for architecture, items in sorted(byArchitecture.items()):
            deltas: list[dict[str, Any]] = []
            seen: set[tuple[str, str]] = set()
            while items:
                try:
                    results = await self._ask(architecture, items)
                except Exception as error:
                    for snap, channel, _ in items:
                        summary["failed"].append({"snap": snap, "channel": channel,
                                                  "architecture": architecture,
                                                  "error": str(error)})
                    break
                seen.update((snap, channel) for snap, channel, _ in items)
                deps: list[tuple[str, str, bool]] = []
                for (snap, channel, withDeps), result in zip(items, results):
                    entry = {"snap": snap, "channel": channel, "architecture": architecture}
                    if result.get("result") == "error" or "record" not in result:
                        entry["error"] = (result.get("error") or {}).get("message", "no revision")
                        summary["failed"].append(entry)
                        continue
                    record = result["record"]
                    entry["revision"] = record.revision
                    self._prefetch(record, entry, summary, fills)
                    deltas.extend(await self._deltasWanted(
                        entry, record.snapId, result.get("epoch")))
                    base = result.get("base")
                    if withDeps and isinstance(base, str) and (base, "latest/stable") not in seen:
                        deps.append((base, "latest/stable", False))
                items = deps
            for batch in _batches(deltas):
                await self._fetchDeltas(architecture, batch, summary, fills)
        outcomes = await DeferredList([_ended(fill) for _, fill in fills], consumeErrors=True)
        for (entry, fill), (_, committed) in zip(fills, outcomes):
            if committed:
                summary["fetched"].append(entry)
            else:
                if "delta-from" in entry:
                    # Asked again next round.
                    self._deltasDone.discard((entry["snap"], entry["delta-from"],
                                              entry["revision"]))
                entry["error"] = fill.failure.getErrorMessage() if fill.failure else "fill failed"
                summary["failed"].append(entry)
        summary["at"] = self.clock.seconds()
        self.lastRound = summary
        self.log.info("follow round: {fetched} fetched, {cached} already cached, {failed} failed",
                      fetched=len(summary["fetched"]), cached=len(summary["cached"]),
                      failed=len(summary["failed"]))
        return summary

    def _prefetch(self, record: Any, entry: dict[str, Any], summary: dict[str, Any],
                  fills: list[tuple[dict[str, Any], Any]]) -> None:
        """
        Start filling C{record} (a blob or a delta) for the round.
        """
        fill = self.download.prefetch(record, self.throttle)
        if fill is None:
            summary["cached"].append(entry)
        else:
            fills.append((entry, fill))

    async def _deltasWanted(self, entry: dict[str, Any], snapId: str,
                            epoch: Any) -> list[dict[str, Any]]:
        """
        The deltas worth asking for to C{entry}'s revision: one from each
        older revision the node knows of on the channel, not yet dealt
        with.
        """
        key = (entry["snap"], entry["channel"], entry["architecture"])
        target = entry["revision"]
        newest = self._newest.get(key)
        if newest is not None and newest != target:
            self._previous[key] = newest
        self._newest[key] = target
        sources = [self._previous[key]] if key in self._previous else []
        if self.knownRevisions is not None:
            sources.extend(await self.knownRevisions(*key))
        wanted: list[dict[str, Any]] = []
        for source in dict.fromkeys(sources):
            if len(wanted) == MAX_DELTA_SOURCES:
                break
            if source < target and (entry["snap"], source, target) not in self._deltasDone:
                wanted.append({"entry": entry, "snap-id": snapId, "source": source,
                               "epoch": epoch if isinstance(epoch, dict) else _DEFAULT_EPOCH})
        return wanted

    async def _fetchDeltas(self, architecture: str, batch: list[dict[str, Any]],
                           summary: dict[str, Any],
                           fills: list[tuple[dict[str, Any], Any]]) -> None:
        """
        Ask upstream, as devices running each source revision would, for
        the deltas of one batch (one snap-id at most once), and start
        filling those offered.  A store offering none is no failure; a
        failed call is asked again next round.
        """
        context = [{"snap-id": want["snap-id"], "instance-key": want["snap-id"],
                    "revision": want["source"], "tracking-channel": want["entry"]["channel"],
                    "epoch": want["epoch"]} for want in batch]
        actions = [{"action": "refresh", "instance-key": want["snap-id"],
                    "snap-id": want["snap-id"], "channel": want["entry"]["channel"]}
                   for want in batch]
        try:
            document, rewritten = await self._refresh(architecture, context, actions,
                                                      {b"snap-accept-delta-format": [b"xdelta3"]})
        except Exception as error:
            self.log.warn("follow: cannot ask upstream for deltas: {error}", error=error)
            return
        records = {blob.sha3_384: blob for blob in rewritten.blobs}
        byKey = {r.get("instance-key"): r for r in document.get("results") or []
                 if isinstance(r, dict)}
        for want in batch:
            snapId, source, snap = want["snap-id"], want["source"], want["entry"]["snap"]
            download = ((byKey.get(snapId) or {}).get("snap") or {}).get("download") or {}
            self._deltasDone.add((snap, source, want["entry"]["revision"]))
            for delta in download.get("deltas") or ():
                record = records.get(str(delta.get("sha3-384", "")).lower()) \
                    if isinstance(delta, dict) else None
                if record is None or delta.get("source") != source \
                        or delta.get("format") != DELTA_FORMAT \
                        or not isinstance(delta.get("target"), int):
                    continue
                await self.recordBlob(record)
                entry = dict(want["entry"], revision=delta.get("target"))
                entry["delta-from"] = source
                self._deltasDone.add((snap, source, entry["revision"]))
                self._prefetch(record, entry, summary, fills)

    async def _refresh(self, architecture: str, context: list[dict[str, Any]],
                       actions: list[dict[str, Any]],
                       extraHeaders: Optional[dict[bytes, list[bytes]]] = None) -> Any:
        """
        One refresh call upstream for C{architecture}, through the upstream
        client (so that the answer is learned for stale answers).

        @return: the decoded answer and its L{snapstore.store.rewrite.Rewritten}
            form (the blobs it describes).
        """
        body = json.dumps({"context": context, "actions": actions, "fields": FIELDS}).encode()
        headers = Headers({b"content-type": [b"application/json"],
                           b"accept": [b"application/json"],
                           b"snap-device-series": [b"16"],
                           b"snap-device-architecture": [architecture.encode("ascii")],
                           b"user-agent": [FOLLOWER_AGENT], **(extraHeaders or {})})
        url = self.upstream.url(b"v2/snaps/refresh")
        response = await self.upstream.request(b"POST", url, headers, body)
        raw = await self.upstream.readBody(response, "POST v2/snaps/refresh (follow)")
        if response.code != 200:
            raise ValueError(f"upstream answered {response.code}")
        document = json.loads(raw)
        return document, rewriteAnswer(raw, "http://follow.invalid/", self.clock.seconds(),
                                       document)

    async def _ask(self, architecture: str,
                   items: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
        """
        One refresh call installing every item's channel for
        C{architecture}; each result gets the L{BlobRecord} its download
        was recorded as (C{"record"}).
        """
        actions = [{"action": "install", "instance-key": f"follow-{i}", "name": snap,
                    "channel": channel} for i, (snap, channel, _) in enumerate(items)]
        document, rewritten = await self._refresh(architecture, [], actions)
        records = {blob.name: blob for blob in rewritten.blobs}
        byKey = {r.get("instance-key"): r for r in document.get("results") or []
                 if isinstance(r, dict)}
        answers = []
        for i in range(len(items)):
            result = dict(byKey.get(f"follow-{i}") or {"result": "error"})
            fields = result.get("snap") or {}
            download = fields.get("download") or {}
            for record in records.values():
                if record.sha3_384 == download.get("sha3-384") and record.revision:
                    await self.recordBlob(record)
                    result["record"] = record
                    break
            result["base"] = fields.get("base")
            result["epoch"] = fields.get("epoch")
            if "record" in result:
                await self._assertions(result["record"])
            answers.append(result)
        return answers

    async def _assertions(self, record: Any) -> None:
        """
        Fetch the assertions a device will ask for with the revision
        (through the upstream client, so that they are learned for stale
        answers; into the assertion cache, when there is one, as a
        device's would be); a failure here does not stop the blob.
        """
        for path in assertionPaths(record.snapId, record.sha3_384):
            try:
                if self.assertions is not None:
                    await self.assertions.prefetch(path)
                    continue
                response = await self.upstream.request(
                    b"GET", self.upstream.url(path.encode("ascii")),
                    Headers({b"accept": [b"application/x.ubuntu.assertion"]}))
                await self.upstream.readBody(response, f"GET {path} (follow)")
            except Exception as error:
                self.log.warn("follow: cannot fetch {path}: {error}", path=path, error=error)


def _batches(wants: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """
    Split delta asks so that no refresh call names a snap-id twice (its
    context is keyed by it, as a device's is).
    """
    batches: list[list[dict[str, Any]]] = []
    for want in wants:
        for batch in batches:
            if all(other["snap-id"] != want["snap-id"] for other in batch):
                batch.append(want)
                break
        else:
            batches.append([want])
    return batches


def _ended(fill: Any) -> Deferred[bool]:
    """
    Fire with C{True} once C{fill} is committed, C{False} once it failed.
    """
    ended: Deferred[bool] = Deferred()

    def check() -> None:
        if fill.committed:
            ended.callback(True)
        elif fill.failure is not None:
            ended.callback(False)
        else:
            fill.notifyProgress(check)

    check()
    return ended
