# -*- test-case-name: tests.test_offline -*-
"""
The store an offline node answers from: imported content, in-process.

An offline node keeps its whole store endpoint (the relay, the URL rewrite,
the rules, the assertion and download resources) and swaps only what sits
behind it: the upstream client's agent becomes a L{LocalStoreAgent} that
answers the store API from the state store's imported content, with the
store's own JSON shapes, status codes and error codes (docs/architecture.md,
"The store API in brief"; the same as C{tests/fakestore}).  So everything the relay does online
happens offline too, the same way: download URLs are pointed at the proxy,
blobs are recorded, admission rules (device limit, deny lists) run before
an answer, and override pins amend it, resolving the pinned revision
against this same local store, that is against imported revisions.

A snap, revision or channel that was not imported gets C{name-not-found},
C{id-not-found} or C{revision-not-found} at once; nothing waits for a
network that is not there.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Optional
from urllib.parse import parse_qs, quote, unquote, urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from snapstore.http.storeerror import storeErrorDocument
from snapstore.offline.validationsets import latest
from snapstore.state.records import RISKS, deviceChannel

#: The API level answered in C{Snap-Store-Version} (that of the fake store,
#: whose shapes these answers follow).
STORE_VERSION = b"60"
JSON = b"application/json"
HAL_JSON = b"application/hal+json"
PROBLEM_JSON = b"application/problem+json"
ASSERTION = b"application/x.ubuntu.assertion"
#: Fields of the snap object that belong to a revision: info puts them in
#: channel-map entries, find in C{revision}.
REVISION_FIELDS = ("architectures", "base", "confinement", "created-at", "download",
                   "epoch", "revision", "type", "version")


def shortName(channel: str) -> str:
    """
    C{latest/stable} -> C{stable}: the store's spelling in answers.
    """
    return channel[len("latest/"):] if channel.startswith("latest/") else channel


def fallbacks(channel: str) -> list[str]:
    """
    The channels that answer for C{channel}, in order: itself, its track
    and risk without the branch, then the more stable risks of its track
    (a closed risk follows the next more stable one, as in the store).
    """
    parts = channel.split("/")
    track, risk = parts[0], parts[1]
    order = [channel]
    if len(parts) == 3:
        order.append(f"{track}/{risk}")
    for more in reversed(RISKS[:RISKS.index(risk)]):
        order.append(f"{track}/{more}")
    return order


def resolve(snap: Any, channel: str, architecture: str) -> Optional[tuple[Any, str]]:
    """
    The imported revision C{channel} gives C{architecture}.

    @return: C{(ImportedRevision, effective channel)} or C{None}.
    """
    held = {c.channel: c for c in snap.channels if c.architecture == architecture}
    for other in snap.channels:
        # An architecture-independent revision exported for one
        # architecture serves them all.
        revision = snap.revisions.get(other.revision)
        if other.channel not in held and revision is not None \
                and "all" in (revision.snap.get("architectures") or ()):
            held[other.channel] = other
    for candidate in fallbacks(channel):
        found = held.get(candidate)
        if found is not None and found.revision in snap.revisions:
            return snap.revisions[found.revision], candidate
    return None


def builtFor(revision: Any, architecture: str) -> bool:
    architectures = revision.snap.get("architectures") or []
    return architecture in architectures or "all" in architectures


def _filtered(fields: dict[str, Any], wanted: Any) -> dict[str, Any]:
    if not isinstance(wanted, list):
        return dict(fields)
    return {k: v for k, v in fields.items() if k in wanted}


@implementer(IResponse)
class LocalResponse:
    """
    A complete in-memory answer, delivered to a body protocol at once.
    """

    version = (b"HTTP", 1, 1)
    request = None
    previousResponse = None

    def __init__(self, code: int, phrase: bytes, headers: Headers, body: bytes,
                 decoded: Optional[bytes] = None) -> None:
        """
        @param decoded: C{body} with its C{Content-Encoding} undone, when
            the agent that built the answer decoded it already (the stale
            agent, to learn from it); the relay then reads that instead of
            decoding the body again.
        """
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.body = body
        self.length = len(body)
        self.decoded = decoded

    def setPreviousResponse(self, response: Any) -> None:
        self.previousResponse = response

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(_NoTransport())
        if self.body:
            protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class _NoTransport:
    """
    The transport of a L{LocalResponse}: nothing to pause or close.
    """

    disconnecting = False

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def loseConnection(self) -> None:
        pass

    def abortConnection(self) -> None:
        pass


class BodyCollector:
    """
    A consumer gathering a request body (also used by
    L{snapstore.uplink.stale}, which reads bodies the same way).
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


class _Answer(Exception):
    """
    Answer the request with a store-format error.
    """

    def __init__(self, code: int, errorCode: str, message: str,
                 contentType: bytes = JSON) -> None:
        super().__init__(message)
        self.code = code
        self.errorCode = errorCode
        self.message = message
        self.contentType = contentType


@implementer(IAgent)
class LocalStoreAgent:
    """
    An L{IAgent} answering the store API under C{base} from imported
    content; any other URL goes to C{outside} (a refusing agent).

    @ivar state: the L{snapstore.interfaces.IStateStore} holding imports.
    @ivar base: the upstream base URL the relay builds its URLs on, so
        that assertion-stream URLs in answers have the shape the rewrite
        points at the proxy.
    """

    log = Logger()

    def __init__(self, state: Any, base: str, outside: IAgent) -> None:
        self.state = state
        self.base = base if base.endswith("/") else base + "/"
        self.outside = outside

    def request(self, method: bytes, uri: bytes, headers: Optional[Headers] = None,
                bodyProducer: Any = None) -> Deferred[IResponse]:
        text = uri.decode("ascii", "replace")
        if not text.startswith(self.base):
            return self.outside.request(method, uri, headers, bodyProducer)
        return Deferred.fromCoroutine(self._answer(method, text[len(self.base) - 1:],
                                           headers or Headers(), bodyProducer))

    async def _answer(self, method: bytes, relative: str, headers: Headers,
                      bodyProducer: Any) -> IResponse:
        parts = urlsplit(relative)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body = b""
        if bodyProducer is not None:
            collected = BodyCollector()
            await bodyProducer.startProducing(collected)
            body = b"".join(collected.parts)
        try:
            return await self._route(method, path, query, headers, body)
        except _Answer as error:
            return self._json(storeErrorDocument(error.errorCode, error.message), error.code, error.contentType)

    async def _route(self, method: bytes, path: str, query: dict[str, str],
                     headers: Headers, body: bytes) -> IResponse:
        segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        if segments == [] and method in (b"GET", b"HEAD"):
            return self._json({})
        if method == b"POST" and segments == ["v2", "snaps", "refresh"]:
            return await self._refresh(headers, body)
        if method == b"GET" and len(segments) == 4 and segments[:3] == ["v2", "snaps", "info"]:
            return await self._info(segments[3], query)
        if method == b"GET" and segments == ["v2", "snaps", "find"]:
            return await self._find(headers, query)
        if method == b"GET" and segments[:2] == ["v2", "assertions"] and len(segments) > 3:
            return await self._assertion(segments[2], segments[3:], query)
        if method == b"GET" and segments == ["v2", "snaps", "categories"]:
            return self._json({"categories": []})
        if method == b"GET" and segments == ["api", "v1", "snaps", "sections"]:
            return self._json({"_embedded": {"clickindex:sections": []}}, contentType=HAL_JSON)
        if method == b"GET" and segments == ["api", "v1", "snaps", "names"]:
            snaps = await self.state.listImportedSnaps()
            names = [{"package_name": s.snapName, "summary": s.info.get("snap", {}).get(
                "summary", ""), "version": "", "aliases": [], "apps": []} for s in snaps]
            return self._json({"_embedded": {"clickindex:package": names}}, contentType=HAL_JSON)
        if method == b"POST" and segments == ["api", "v1", "snaps", "auth", "nonces"]:
            return self._json({"nonce": secrets.token_urlsafe(24)})
        if method == b"POST" and segments == ["api", "v1", "snaps", "auth", "sessions"]:
            return self._json({"macaroon": "offline-" + secrets.token_urlsafe(24)})
        if segments[:4] == ["api", "v1", "snaps", "download"]:
            raise _Answer(404, "not-found", "this offline proxy has no such download")
        raise _Answer(404, "not-found", "not available on this offline proxy")

    # -- answers -------------------------------------------------------------

    @staticmethod
    def _json(value: Any, code: int = 200, contentType: bytes = JSON) -> LocalResponse:
        body = json.dumps(value).encode("utf-8")
        headers = Headers({b"content-type": [contentType],
                           b"snap-store-version": [STORE_VERSION]})
        phrase = b"OK" if code == 200 else b"Not Found" if code == 404 else b"Error"
        return LocalResponse(code, phrase, headers, body)

    @staticmethod
    def _architecture(headers: Headers, query: Optional[dict[str, str]] = None) -> str:
        if query and query.get("architecture"):
            return query["architecture"]
        for name in (b"snap-device-architecture", b"x-ubuntu-architecture"):
            values = headers.getRawHeaders(name)
            if values:
                return values[0].decode("ascii", "replace")
        return "amd64"

    async def _refresh(self, headers: Headers, body: bytes) -> IResponse:
        try:
            document = json.loads(body or b"null")
        except ValueError:
            raise _Answer(400, "bad-request", "request body is not valid JSON")
        if not isinstance(document, dict) or not isinstance(document.get("actions", []), list):
            raise _Answer(400, "bad-request", "expected an object with actions")
        architecture = self._architecture(headers)
        context = {c.get("instance-key"): c for c in document.get("context") or []
                   if isinstance(c, dict)}
        fields = document.get("fields")
        results = []
        for action in document.get("actions") or []:
            if not isinstance(action, dict):
                raise _Answer(400, "bad-request", "actions must be objects")
            kind = action.get("action")
            if kind in ("install", "download", "refresh"):
                results.append(await self._action(kind, action, context, architecture, fields))
            elif kind == "fetch-assertions":
                results.append(await self._fetchAssertions(action))
            else:
                raise _Answer(400, "bad-request", f"unknown action {kind!r}")
        return self._json({"results": results, "error-list": []})

    @staticmethod
    def _error(key: Any, snapId: str, name: str, code: str, message: str,
               snap: Any = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": code, "message": message}
        if snap is not None:
            error["extra"] = {"releases": [
                {"architecture": c.architecture, "channel": c.channel} for c in snap.channels]}
        return {"result": "error", "instance-key": key, "snap-id": snapId, "name": name,
                "error": error}

    async def _action(self, kind: str, action: dict[str, Any], context: dict[Any, Any],
                      architecture: str, fields: Any) -> dict[str, Any]:
        key = action.get("instance-key")
        if kind == "refresh":
            installed = context.get(key) or {}
            snapId = action.get("snap-id") or installed.get("snap-id") or ""
            snap = await self.state.getImportedSnap(snapId=snapId) if snapId else None
            if snap is None:
                return self._error(key, snapId, "", "id-not-found",
                                   f"No snap with id '{snapId}' found.")
            wanted = action.get("channel") or installed.get("tracking-channel") or "stable"
        else:
            name = action.get("name") or ""
            snap = await self.state.getImportedSnap(snapName=name) if name else None
            if snap is None:
                return self._error(key, "", name, "name-not-found",
                                   f"No snap named '{name}' found in series '16'.")
            wanted = action.get("channel") or "stable"
        notFound = self._error(key, snap.snapId, snap.snapName, "revision-not-found",
                               "No revision was found in the Store.", snap)
        effective: Optional[str] = None
        number = action.get("revision")
        if number is not None:
            revision = snap.revisions.get(number) if isinstance(number, int) else None
            if revision is None or not builtFor(revision, architecture):
                return notFound
            if action.get("channel"):
                effective = deviceChannel(action["channel"])
        else:
            channel = deviceChannel(wanted)
            found = resolve(snap, channel, architecture) if channel else None
            if found is None:
                return notFound
            revision, effective = found
        result = {"result": kind, "instance-key": key, "snap-id": snap.snapId,
                  "name": snap.snapName, "snap": _filtered(revision.snap, fields)}
        if effective is not None:
            result["effective-channel"] = shortName(effective)
        return result

    async def _fetchAssertions(self, action: dict[str, Any]) -> dict[str, Any]:
        urls: list[str] = []
        errors: list[Any] = []
        for wanted in action.get("assertions") or []:
            if not isinstance(wanted, dict):
                continue
            kind = str(wanted.get("type", ""))
            if "sequence-key" in wanted:
                await self._fetchSequence(kind, wanted, urls, errors)
                continue
            primary = [str(p) for p in wanted.get("primary-key") or []]
            found = await self.state.getImportedAssertion(kind, primary) if primary else None
            if found is None:
                errors.append({"code": "not-found", "message": "not found", "type": kind,
                               "primary-key": primary})
                continue
            newerThan = wanted.get("if-newer-than")
            if isinstance(newerThan, int) and found.revision <= newerThan:
                continue
            urls.append(self.base + "v2/assertions/"
                        + "/".join([kind] + [quote(p, safe="") for p in primary]))
        result: dict[str, Any] = {"result": "fetch-assertions", "key": action.get("key"),
                                  "assertion-stream-urls": urls}
        if errors:
            result["error-list"] = errors
        return result

    async def _fetchSequence(self, kind: str, wanted: dict[str, Any], urls: list[str],
                             errors: list[Any]) -> None:
        """
        A sequence-forming assertion (C{validation-set}) asked for by
        C{sequence-key}: the pinned C{sequence}, or the latest imported
        when it is at least C{if-sequence-equal-or-newer-than} (and, at
        that very sequence, newer than C{if-newer-than}); store-api.md 3.1.
        """
        key = [str(p) for p in wanted.get("sequence-key") or []]
        candidates = await self.state.listImportedSequence(kind, key) if key else []
        pinned = wanted.get("sequence")
        if isinstance(pinned, int):
            candidates = [c for c in candidates if c.primaryKey[-1] == str(pinned)]
        found = latest(candidates)
        if found is None:
            errors.append({"code": "not-found", "message": "not found", "type": kind,
                           "sequence-key": key})
            return
        sequence = int(found.primaryKey[-1])
        atLeast = wanted.get("if-sequence-equal-or-newer-than")
        newerThan = wanted.get("if-newer-than")
        if isinstance(atLeast, int) and sequence < atLeast:
            return
        if isinstance(atLeast, int) and sequence == atLeast and isinstance(newerThan, int) \
                and found.revision <= newerThan:
            return
        urls.append(self.base + "v2/assertions/"
                    + "/".join([kind] + [quote(p, safe="") for p in key])
                    + f"?sequence={sequence}")

    @staticmethod
    def _channelEntry(channel: Any, revision: Any, wanted: Any) -> dict[str, Any]:
        track, risk = channel.channel.split("/")[:2]
        entry: dict[str, Any] = {"channel": {
            "architecture": channel.architecture, "name": shortName(channel.channel),
            "track": track, "risk": risk, "released-at": channel.releasedAt}}
        for field in REVISION_FIELDS:
            if field in revision.snap and (wanted is None or field in wanted):
                entry[field] = revision.snap[field]
        return entry

    async def _info(self, name: str, query: dict[str, str]) -> IResponse:
        snap = await self.state.getImportedSnap(snapName=name)
        missing = _Answer(404, "resource-not-found", f"No snap named '{name}' found.")
        if snap is None:
            raise missing
        wanted = [f for f in query["fields"].split(",") if f] if "fields" in query else None
        architecture = query.get("architecture")

        def order(channel: Any) -> tuple[Any, ...]:
            track, risk = channel.channel.split("/")[:2]
            return (track != "latest", track, RISKS.index(risk), channel.channel,
                    channel.architecture)

        entries = [self._channelEntry(c, snap.revisions[c.revision], wanted)
                   for c in sorted(snap.channels, key=order)
                   if c.revision in snap.revisions
                   and (architecture is None or c.architecture == architecture)]
        if not entries:
            raise missing
        snapLevel = _filtered(snap.info.get("snap") or {}, wanted)
        return self._json({"name": snap.snapName, "snap-id": snap.snapId,
                           "default-track": snap.info.get("default-track"),
                           "snap": snapLevel, "channel-map": entries})

    async def _find(self, headers: Headers, query: dict[str, str]) -> IResponse:
        architecture = self._architecture(headers, query)
        wanted = [f for f in query["fields"].split(",") if f] if "fields" in query else None
        text = query.get("q", "").lower()
        prefix = query.get("name")
        category = query.get("category")
        channel = None if query.get("scope") == "wide" else deviceChannel(
            query.get("channel", "stable"))
        allowed = set(query["confinement"].split(",")) if "confinement" in query else None
        results = []
        for snap in await self.state.listImportedSnaps():
            described = snap.info.get("snap") or {}
            if prefix is not None and not snap.snapName.startswith(prefix):
                continue
            haystack = (snap.snapName, described.get("title") or "", described.get("summary") or "")
            if text and not any(text in str(h).lower() for h in haystack):
                continue
            categories = [c.get("name") for c in described.get("categories") or []
                          if isinstance(c, dict)]
            if category and category != "featured" and category not in categories:
                continue
            if channel is None:
                ours = [c for c in snap.channels if c.architecture == architecture
                        and c.revision in snap.revisions]
                if not ours:
                    continue
                found: Optional[tuple[Any, str]] = (snap.revisions[ours[0].revision],
                                                    ours[0].channel)
            else:
                found = resolve(snap, channel, architecture)
            if found is None:
                continue
            revision, effective = found
            if allowed is not None and revision.snap.get("confinement") not in allowed:
                continue
            snapLevel = {k: v for k, v in described.items()
                         if k not in REVISION_FIELDS and k != "snap-yaml"
                         and (wanted is None or k in wanted)}
            revisionLevel = {k: revision.snap[k] for k in REVISION_FIELDS
                             if k in revision.snap and (wanted is None or k in wanted)}
            if "download" in revisionLevel:
                revisionLevel["download"] = {"size": revision.size}
            revisionLevel["channel"] = shortName(effective)
            results.append({"name": snap.snapName, "snap-id": snap.snapId,
                            "snap": snapLevel, "revision": revisionLevel})
        return self._json({"results": results})

    async def _assertion(self, kind: str, key: list[str],
                         query: Optional[dict[str, str]] = None) -> IResponse:
        if kind == "validation-set" and len(key) == 3:
            # Sequence-forming: ?sequence=N, or the latest imported.
            sequence = (query or {}).get("sequence") or "latest"
            if sequence == "latest":
                found = latest(await self.state.listImportedSequence(kind, key))
            else:
                found = await self.state.getImportedAssertion(kind, key + [sequence])
        else:
            found = await self.state.getImportedAssertion(kind, key)
        if found is None:
            raise _Answer(404, "not-found", "not found", PROBLEM_JSON)
        body = found.body.encode("utf-8")
        headers = Headers({b"content-type": [ASSERTION]})
        return LocalResponse(200, b"OK", headers, body)


__all__ = ["LocalStoreAgent", "LocalResponse", "resolve", "fallbacks"]
