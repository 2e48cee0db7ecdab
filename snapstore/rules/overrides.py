# -*- test-case-name: tests.test_rules_overrides -*-
"""
Revision overrides: pinning what a channel serves, with the vendor proxy's
semantics.

An override says "devices on C{channel} of C{snap} get C{revision}" for the
architecture that revision was built for.  Whatever upstream's channel holds
(newer or older), a device tracking or installing from the pinned channel
is offered exactly that revision, and a device already on it is told there
is no update.  The pins live in the state store, so they survive restarts,
are shared by the nodes of one database, and every change is audited.

The rule asks upstream for the pinned revision's metadata with the device's
own headers (a refresh call with a C{download} action carrying the
revision), so the download URL, size and digest are upstream's and the blob
is cached like any other.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import implementer

from snapstore.interfaces import IActionRule
from snapstore.rules.values import StoreRequest
from snapstore.state.errors import StateUnavailable
from snapstore.state.records import Override, deviceChannel, normaliseChannel

#: Architectures tried, in order, when learning which ones a revision was
#: built for (the store answers a revision only for a matching one).
ARCHITECTURES = ("amd64", "arm64", "armhf", "i386", "ppc64el", "s390x", "riscv64")

#: Fields asked for when resolving an override.
RESOLVE_FIELDS = ["architectures", "revision", "snap-id", "name", "version", "download"]

_REFRESH = b"v2/snaps/refresh"


class OverrideError(Exception):
    """
    An override cannot be made: the snap, revision or channel is unknown.
    The message is meant for the admin as it is.
    """


def _headers(base: Any = None) -> Headers:
    headers = Headers()
    if base is not None:
        for name, values in base.getAllRawHeaders():
            headers.setRawHeaders(name, list(values))
    headers.setRawHeaders(b"content-type", [b"application/json"])
    headers.setRawHeaders(b"accept", [b"application/json"])
    # The upstream client decodes what it reads; gzip saves uplink.
    headers.setRawHeaders(b"accept-encoding", [b"gzip"])
    return headers


async def fetchRevision(upstream: Any, headers: Any, snapName: str, revision: int,
                        fields: Any, architecture: Optional[str] = None) -> dict[str, Any]:
    """
    Ask upstream for one revision of a snap, as snapd's C{snap download
    --revision} does.

    @param headers: the headers to send (a device's), or C{None}.
    @param architecture: sent as C{Snap-Device-Architecture} when given.
    @return: upstream's result dict (C{result} is C{error} when upstream
        does not have that revision for the architecture).
    @raise Exception: what the upstream client raises when upstream cannot
        be asked (L{snapstore.store.upstream.UpstreamError}).
    """
    outbound = _headers(headers)
    if architecture is not None:
        outbound.setRawHeaders(b"snap-device-architecture", [architecture.encode("ascii")])
    if not outbound.hasHeader(b"snap-device-series"):
        outbound.setRawHeaders(b"snap-device-series", [b"16"])
    body = json.dumps({
        "context": [],
        "actions": [{"action": "download", "instance-key": "download-1",
                     "name": snapName, "revision": revision, "epoch": None}],
        "fields": list(fields or RESOLVE_FIELDS),
    }).encode("utf-8")
    what = f"refresh for {snapName} revision {revision}"
    response = await upstream.request(b"POST", upstream.url(_REFRESH), outbound, body)
    raw = await upstream.readBody(response, what)
    if response.code != 200:
        raise OverrideError(f"upstream store answered {what} with HTTP {response.code}")
    try:
        document = json.loads(raw)
        result = document["results"][0]
        if not isinstance(result, dict):
            raise TypeError(result)
    except (ValueError, KeyError, IndexError, TypeError):
        raise OverrideError(f"upstream store sent an unusable answer to {what}")
    return result


def _origin(upstream: Any) -> str:
    """
    What answers for upstream, in words: the upstream store, or on an
    offline node its imported content (set by L{snapstore.offline.store}).
    """
    return getattr(upstream, "origin", None) or "the upstream store"


async def _resolve(upstream: Any, snapName: str, channel: str, revision: int,
                   architecture: Optional[str] = None) -> list[Override]:
    try:
        key = normaliseChannel(channel)
    except ValueError:
        raise OverrideError(f"{channel!r} is not a channel (use e.g. stable or latest/edge)")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        raise OverrideError(f"{revision!r} is not a revision (a whole number >= 1)")
    tried = [architecture] if architecture else []
    tried += [arch for arch in ARCHITECTURES if arch not in tried]
    lastError = None
    for arch in tried:
        result = await fetchRevision(upstream, None, snapName, revision, RESOLVE_FIELDS, arch)
        if result.get("result") == "error":
            error = result.get("error") or {}
            if error.get("code") in ("name-not-found", "id-not-found"):
                raise OverrideError(f"snap {snapName!r} is not known to {_origin(upstream)}")
            lastError = error
            continue
        snap = result.get("snap") or {}
        architectures = [a for a in snap.get("architectures") or [arch] if isinstance(a, str)]
        snapId = snap.get("snap-id") or result.get("snap-id") or ""
        return [Override(snapName=snapName, channel=key, revision=revision,
                         architecture=a, snapId=snapId) for a in architectures]
    detail = f" ({lastError.get('message')})" if lastError and lastError.get("message") else ""
    raise OverrideError(
        f"revision {revision} of snap {snapName!r} is not known to {_origin(upstream)}{detail}")


def resolveOverrides(upstream: Any, snapName: str, channel: str, revision: int,
                     architecture: Optional[str] = None) -> Deferred[list[Override]]:
    """
    The overrides that pin C{revision} of C{snapName} on C{channel}: one
    per architecture upstream says the revision was built for (C{all} for
    architecture-independent snaps).  Store each with
    C{IStateStore.setOverride}.

    @param upstream: the upstream store client (C{request}, C{url},
        C{readBody}, as L{snapstore.store.upstream.StoreUpstream}).
    @param architecture: tried first when given (saves round trips).
    @return: a Deferred firing with a non-empty list of L{Override}s, or
        failing with L{OverrideError} when upstream does not know the snap
        or the revision, or the channel is not one; other failures are the
        upstream client's (unreachable, timeout).
    """
    return Deferred.fromCoroutine(_resolve(upstream, snapName, channel, revision, architecture))


def resolveOverride(upstream: Any, snapName: str, channel: str, revision: int,
                    architecture: Optional[str] = None) -> Deferred[Override]:
    """
    Like L{resolveOverrides}, for a revision built for one architecture:
    fires with its L{Override} (the first one when there are several; use
    L{resolveOverrides} to pin them all).
    """
    return resolveOverrides(upstream, snapName, channel, revision,
                            architecture).addCallback(lambda found: found[0])


class OverrideTable:
    """
    The pins of the state store, read once and read again when the store
    announces a change (made on this node or another), so that a refresh
    costs no database query.

    While the database is away the last pins read stay in force (a pinned
    device must not be offered what upstream has); only a table that was
    never read cannot decide, and fails with L{StateUnavailable}.
    """

    log = Logger()

    def __init__(self, state: Any) -> None:
        self.state = state
        self._overrides: Optional[list[Override]] = None
        self._stale = True
        self._generation = 0
        self._stopObserving: Any = None
        self._unavailableLogged = False

    def _changed(self, event: Any) -> None:
        if not isinstance(event, dict) or event.get("kind") in ("override", "resync"):
            self._generation += 1
            self._stale = True
            # Read the new pins now rather than on the next refresh, so that
            # a database lost in between does not leave the old ones.
            Deferred.fromCoroutine(self.overrides()).addErrback(lambda _: None)

    async def overrides(self) -> list[Override]:
        if self._stopObserving is None and hasattr(self.state, "observeChanges"):
            self._stopObserving = self.state.observeChanges(self._changed)
        while self._stale:
            generation = self._generation
            try:
                loaded = await self.state.listOverrides()
            except StateUnavailable:
                if self._overrides is None:
                    raise
                if not self._unavailableLogged:
                    self._unavailableLogged = True
                    self.log.warn("Cannot read pins from the state store; serving the "
                                  "{count} pins read last", count=len(self._overrides))
                return self._overrides
            self._unavailableLogged = False
            if generation == self._generation:
                self._overrides = list(loaded)
                self._stale = False
        assert self._overrides is not None
        return self._overrides

    async def find(self, snapName: Any, snapId: Any, channel: Any,
                   architecture: str) -> Optional[Override]:
        """
        The pin for a snap (by name or snap-id) on a channel for an
        architecture, or C{None}.
        """
        key = deviceChannel(channel)
        if key is None or not (snapName or snapId):
            return None
        for override in await self.overrides():
            if override.channel != key:
                continue
            if override.architecture not in (architecture, "all"):
                continue
            if (snapName and override.snapName == snapName) or (
                    snapId and override.snapId == snapId):
                return override
        return None

    def close(self) -> None:
        stop, self._stopObserving = self._stopObserving, None
        if stop is not None:
            stop()


@implementer(IActionRule)
class OverrideRule:
    """
    Serves pinned revisions: amends refresh, install and download results
    and C{info} channel-map entries for channels with an override.
    """

    log = Logger()

    def __init__(self, state: Any, upstream: Any, name: str = "overrides") -> None:
        self.name = name
        self.upstream = upstream
        self.table = OverrideTable(state)

    def close(self) -> None:
        self.table.close()

    def warm(self) -> Deferred[Any]:
        """
        Read the pins now (the rules service calls this once the state
        store answers), so that a database lost before the first refresh
        still leaves them known.
        """
        return Deferred.fromCoroutine(self.table.overrides())

    def amend(self, request: StoreRequest, action: dict[str, Any],
              result: dict[str, Any]) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._amend(request, action, result))

    async def _amend(self, request: StoreRequest, action: dict[str, Any],
                     result: dict[str, Any]) -> Any:
        kind = action.get("action")
        if kind in ("refresh", "install", "download"):
            return await self._amendAction(request, action, result)
        if kind == "info":
            return await self._amendInfo(request, action, result)
        return result

    async def _amendAction(self, request: StoreRequest, action: dict[str, Any],
                           result: dict[str, Any]) -> Any:
        if action.get("revision") is not None:
            # The device asked for a revision by number: not a channel.
            return result
        kind = action["action"]
        if kind == "refresh":
            channel = action.get("channel") or action.get("tracking-channel") or "stable"
        else:
            channel = action.get("channel") or "stable"
        snapName = result.get("name") or action.get("name")
        snapId = result.get("snap-id") or action.get("snap-id")
        pin = await self.table.find(snapName, snapId, channel, request.architecture)
        if pin is None:
            return result
        snap = result.get("snap") if isinstance(result.get("snap"), dict) else None
        if result.get("result") == kind and snap and snap.get("revision") == pin.revision:
            return result
        pinned = await fetchRevision(self.upstream, request.upstreamHeaders, pin.snapName,
                                     pin.revision, action.get("fields"))
        amended = {
            key: value for key, value in pinned.items()
            if key not in ("instance-key", "effective-channel", "redirect-channel")
        }
        amended["instance-key"] = action.get("instance-key")
        if pinned.get("result") == "error":
            self.log.warn("Pinned revision {revision} of {snap} is not available "
                          "upstream for {arch}", revision=pin.revision, snap=pin.snapName,
                          arch=request.architecture)
            return amended
        amended["result"] = kind
        amended["effective-channel"] = (
            result.get("effective-channel") if result.get("result") != "error"
            and result.get("effective-channel") else _shortName(pin.channel))
        self.log.debug("{snap} {channel} pinned to {revision} for {device}",
                       snap=pin.snapName, channel=pin.channel, revision=pin.revision,
                       device=request.device.identity)
        return amended

    async def _amendInfo(self, request: StoreRequest, action: dict[str, Any],
                         entry: dict[str, Any]) -> Any:
        channel = entry.get("channel")
        if not isinstance(channel, dict):
            return entry
        architecture = channel.get("architecture")
        name = channel.get("name") or channel.get("risk")
        track = channel.get("track")
        if (isinstance(name, str) and isinstance(track, str) and track
                and track != "latest" and not name.startswith(track + "/")):
            name = f"{track}/{name}"
        pin = await self.table.find(action.get("name"), action.get("snap-id"),
                                    name, architecture or "")
        if pin is None or entry.get("revision") == pin.revision:
            return entry
        fields = [key for key in entry if key != "channel"] or ["revision"]
        if "revision" not in fields:
            fields.append("revision")
        headers = request.upstreamHeaders
        pinned = await fetchRevision(self.upstream, headers, pin.snapName, pin.revision,
                                     fields, architecture)
        snap = pinned.get("snap")
        if pinned.get("result") == "error" or not isinstance(snap, dict):
            return entry
        amended = dict(entry)
        for key in fields:
            if key in snap:
                amended[key] = snap[key]
        return amended


def _shortName(channel: str) -> str:
    return channel[len("latest/"):] if channel.startswith("latest/") else channel
