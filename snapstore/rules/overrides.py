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

Change control (design.md section 9) goes through the same rule: a pin may
be for one device group and may expire, and holds keep new revisions from
devices for a cool-down or until approved.  Which applies to a device is
L{snapstore.policy.decide}'s (pin > hold > upstream, groups first); this
rule only applies the answer to results and channel maps.

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
from snapstore.policy.decide import chooseHold, choosePin, heldRevision, revisionAllowed
from snapstore.policy.table import PolicyTable
from snapstore.rules.values import StoreRequest
from snapstore.state.errors import StateUnavailable
from snapstore.state.policy import ChannelRevision
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


@implementer(IActionRule)
class OverrideRule:
    """
    Serves pinned and held revisions: amends refresh, install and download
    results and C{info} channel-map entries, per device, pin > hold >
    upstream, group scope before global (L{snapstore.policy.decide}).

    Every revision upstream shows on a channel is noted in the state store
    the first time it is seen (the clock holds count from), whether or not
    a hold applies yet, so a hold made later knows the channel's history.

    @ivar table: the cached pins, holds and approvals
        (L{snapstore.policy.table.PolicyTable}).
    @ivar clock: what "now" is when deciding; an expiry or a hold's end
        takes effect at its moment, on every node, with no admin action.
    """

    log = Logger()

    #: Sightings remembered per node, so that each costs one write.
    maxSightings = 100_000

    def __init__(self, state: Any, upstream: Any, name: str = "overrides",
                 clock: Any = None) -> None:
        self.name = name
        self.state = state
        self.upstream = upstream
        self.table: Any = PolicyTable(state)
        if clock is None:
            clock = getattr(state, "clock", None)
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self._sighted: set[tuple[str, str, str, int]] = set()

    def close(self) -> None:
        self.table.close()

    def warm(self) -> Deferred[Any]:
        """
        Read the pins, holds and approvals now (the rules service calls
        this once the state store answers), so that a database lost before
        the first refresh still leaves them known.
        """
        return Deferred.fromCoroutine(self.table.warm())

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

    async def _sight(self, snapName: Any, channel: str, architecture: str,
                        revision: Any) -> None:
        """
        Note that upstream shows C{revision} on C{channel}.
        """
        record = getattr(self.state, "recordChannelRevisions", None)
        if (record is None or not isinstance(snapName, str) or not snapName
                or not isinstance(revision, int) or isinstance(revision, bool)):
            return
        key = (snapName, channel, architecture, revision)
        if key in self._sighted:
            return
        try:
            await record([ChannelRevision(snapName, channel, architecture, revision)])
        except StateUnavailable:
            return
        if len(self._sighted) >= self.maxSightings:
            self._sighted.clear()
        self._sighted.add(key)

    async def _held(self, request: StoreRequest, snapName: Any, channel: str,
                    architecture: str) -> tuple[bool, Optional[int]]:
        """
        @return: whether a hold applies to this device, and if so the
            newest revision it may have (C{None}: nothing).
        """
        if not isinstance(snapName, str) or not snapName:
            return False, None
        groups = request.device.groups
        hold = chooseHold(await self.table.holds(), snapName, channel, groups)
        if hold is None:
            return False, None
        history = await self.state.channelHistory(snapName, channel, architecture)
        target = heldRevision(hold, history, await self.table.approvals(), snapName,
                              groups, self.clock.seconds())
        return True, target

    async def _amendAction(self, request: StoreRequest, action: dict[str, Any],
                           result: dict[str, Any]) -> Any:
        if action.get("revision") is not None:
            # The device asked for a revision by number: not a channel, so
            # no pin; a hold still decides whether it may have it.
            return await self._amendByNumber(request, action, result)
        kind = action["action"]
        context = _contextEntry(request, action) if kind == "refresh" else {}
        if kind == "refresh":
            # snapd names the channel in the action only when switching;
            # otherwise it is the context's tracking channel.
            channel = (action.get("channel") or action.get("tracking-channel")
                       or context.get("tracking-channel") or "stable")
        else:
            channel = action.get("channel") or "stable"
        snapName = result.get("name") or action.get("name")
        snapId = result.get("snap-id") or action.get("snap-id")
        key = deviceChannel(channel)
        if key is None or not (snapName or snapId):
            return result
        snap = result.get("snap") if isinstance(result.get("snap"), dict) else None
        offered = snap.get("revision") if result.get("result") == kind and snap else None
        await self._sight(snapName, key, request.architecture, offered)
        pin = choosePin(await self.table.overrides(), snapName, snapId, key,
                        request.architecture, request.device.groups, self.clock.seconds())
        if pin is not None:
            if offered == pin.revision:
                return result
            self.log.debug("{snap} {channel} pinned to {revision} for {device}",
                           snap=pin.snapName, channel=pin.channel, revision=pin.revision,
                           device=request.device.identity)
            return await self._serve(request, action, result, pin.snapName, pin.revision,
                                     pin.channel)
        if result.get("result") != kind:
            return result
        held, target = await self._held(request, snapName, key, request.architecture)
        if not held or target == offered:
            return result
        if kind == "refresh":
            current = context.get("revision")
            if not isinstance(current, int) or isinstance(current, bool):
                current = None
            if target is None or (current is not None and target <= current):
                # Nothing newer than what it runs qualifies: no update.
                return None
        elif target is None:
            return {"result": "error", "instance-key": action.get("instance-key"),
                    "snap-id": result.get("snap-id") or "", "name": snapName,
                    "error": {"code": "revision-not-found",
                              "message": f"no revision of {snapName} on {key} has been "
                                         f"released to this device yet (held by snapstore)"}}
        self.log.debug("{snap} {channel} held at {revision} for {device}",
                       snap=snapName, channel=key, revision=target,
                       device=request.device.identity)
        return await self._serve(request, action, result, str(snapName), target, key)

    async def _amendByNumber(self, request: StoreRequest, action: dict[str, Any],
                             result: dict[str, Any]) -> Any:
        """
        A revision asked for by number: refused (C{revision-not-found})
        when a hold applies and the revision has not been released to the
        device (L{revisionAllowed}).
        """
        revision = action.get("revision")
        snapName = result.get("name") or action.get("name")
        context = _contextEntry(request, action) if action.get("action") == "refresh" else {}
        key = deviceChannel(action.get("channel") or context.get("tracking-channel")
                            or "stable")
        if (key is None or not isinstance(snapName, str) or not snapName
                or not isinstance(revision, int) or result.get("result") == "error"):
            return result
        groups = request.device.groups
        hold = chooseHold(await self.table.holds(), snapName, key, groups)
        if hold is None:
            return result
        history = await self.state.channelHistory(snapName, key, request.architecture)
        if revisionAllowed(hold, history, await self.table.approvals(), snapName, groups,
                           self.clock.seconds(), revision):
            return result
        return {"result": "error", "instance-key": action.get("instance-key"),
                "snap-id": result.get("snap-id") or "", "name": snapName,
                "error": {"code": "revision-not-found",
                          "message": f"revision {revision} of {snapName} has not been "
                                     f"released to this device yet (held by snapstore)"}}

    async def _serve(self, request: StoreRequest, action: dict[str, Any],
                     result: dict[str, Any], snapName: str, revision: int,
                     channel: str) -> Any:
        """
        C{result} replaced by upstream's answer for C{revision}.
        """
        kind = action["action"]
        pinned = await fetchRevision(self.upstream, request.upstreamHeaders, snapName,
                                     revision, action.get("fields"))
        amended = {
            key: value for key, value in pinned.items()
            if key not in ("instance-key", "effective-channel", "redirect-channel")
        }
        amended["instance-key"] = action.get("instance-key")
        if pinned.get("result") == "error":
            self.log.warn("Pinned revision {revision} of {snap} is not available "
                          "upstream for {arch}", revision=revision, snap=snapName,
                          arch=request.architecture)
            return amended
        amended["result"] = kind
        amended["effective-channel"] = (
            result.get("effective-channel") if result.get("result") != "error"
            and result.get("effective-channel") else _shortName(channel))
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
        key = deviceChannel(name)
        snapName = action.get("name")
        if key is None or not (snapName or action.get("snap-id")):
            return entry
        await self._sight(snapName, key, architecture or "", entry.get("revision"))
        pin = choosePin(await self.table.overrides(), snapName, action.get("snap-id"),
                        key, architecture or "", request.device.groups,
                        self.clock.seconds())
        if pin is not None:
            target: Optional[int] = pin.revision
            snapName = pin.snapName
        else:
            held, target = await self._held(request, snapName, key, architecture or "")
            if not held:
                return entry
            if target is None:
                # Nothing on this channel has been released to the device.
                return None
        if target is None or entry.get("revision") == target:
            return entry
        fields = [key for key in entry if key != "channel"] or ["revision"]
        if "revision" not in fields:
            fields.append("revision")
        headers = request.upstreamHeaders
        pinned = await fetchRevision(self.upstream, headers, str(snapName), target,
                                     fields, architecture)
        snap = pinned.get("snap")
        if pinned.get("result") == "error" or not isinstance(snap, dict):
            return entry
        amended = dict(entry)
        for key in fields:
            if key in snap:
                amended[key] = snap[key]
        return amended


def _contextEntry(request: StoreRequest, action: dict[str, Any]) -> dict[str, Any]:
    """
    The context entry (what the device runs) of the snap of a refresh
    C{action}, or C{{}}.
    """
    body = request.json()
    context = body.get("context") if isinstance(body, dict) else None
    for entry in context if isinstance(context, list) else []:
        if isinstance(entry, dict) and entry.get("instance-key") == action.get("instance-key"):
            return entry
    return {}


def _shortName(channel: str) -> str:
    return channel[len("latest/"):] if channel.startswith("latest/") else channel
