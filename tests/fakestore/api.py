# -*- test-case-name: tests.test_fakestore -*-
"""
The fake store's API listener: the routes of store-api.md sections 3, 4.1
(the download redirect), 4.4 (icons) and 6.1 (assertions).

One leaf resource dispatches on method and path, because the store's URL
space (C{/v2/assertions/<type>/<key...>}, C{/api/v1/snaps/download/<file>})
is easier to read as a route table than as a resource tree.
"""

import gzip
import json
import re
import struct
import zlib
from urllib.parse import quote, unquote

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.fakestore.blobs import deltaFileName
from tests.fakestore.catalogue import Channel, UnknownSnap

JSON = b"application/json"
HAL_JSON = b"application/hal+json"
PROBLEM_JSON = b"application/problem+json"
ASSERTION = b"application/x.ubuntu.assertion"
# What the compression switch compresses: what a store front end would
# (text), never blobs or images.
COMPRESSIBLE = (JSON, HAL_JSON, PROBLEM_JSON, ASSERTION)
CODINGS = ("gzip", "deflate")

# Fields of the snap object that belong to a revision rather than to the
# snap as a whole; info and find put them in channel-map entries and in
# "revision" respectively.
REVISION_FIELDS = (
    "architectures",
    "base",
    "confinement",
    "created-at",
    "download",
    "epoch",
    "revision",
    "type",
    "version",
)

_DOWNLOAD = re.compile(r"^/api/v1/snaps/download/([A-Za-z0-9]{32})_([0-9]+)\.snap$")
_DELTA_DOWNLOAD = re.compile(
    r"^/api/v1/snaps/download/([A-Za-z0-9]{32})_([0-9]+)_([0-9]+)_xdelta3\.delta$"
)
#: The one delta format the fake offers (store-api.md 4.3).
DELTA_FORMAT = "xdelta3"
_ICON = re.compile(r"^/media/icon/([A-Za-z0-9]{32})\.png$")


def accepts(request, coding: str) -> bool:
    """
    Whether the request's C{Accept-Encoding} names C{coding} (or C{*})
    with a q-value above 0.
    """
    for value in request.requestHeaders.getRawHeaders(b"accept-encoding", []):
        for item in value.decode("latin-1").split(","):
            name, _, parameters = item.partition(";")
            if name.strip().lower() in (coding, "*"):
                quality = parameters.strip().lower()
                return not (quality.startswith("q=") and float(quality[2:] or 0) == 0)
    return False


def encode(coding: str, body: bytes) -> bytes:
    """
    C{body} coded as C{coding} (deflate is zlib-wrapped, as RFC 9110 says).
    """
    if coding == "gzip":
        return gzip.compress(body)
    return zlib.compress(body)


def gzipBomb(inflated: int) -> bytes:
    """
    A gzip stream of C{inflated} zero bytes (about 1000 times smaller),
    made a megabyte at a time.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = []
    left = inflated
    while left > 0:
        parts.append(packer.compress(block[: min(left, len(block))]))
        left -= len(block)
    parts.append(packer.flush())
    return b"".join(parts)


def _png() -> bytes:
    """
    A valid 1x1 PNG, small enough for snapd's icon limit.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xe9\x54\x20\xff")
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


ICON = _png()


class StoreError(Exception):
    """
    Answer the request with C{code} and a store C{error-list}.
    """

    def __init__(self, code: int, errorCode: str, message: str, contentType=JSON):
        super().__init__(message)
        self.code = code
        self.errorCode = errorCode
        self.message = message
        self.contentType = contentType


class APIResource(Resource):
    """
    Every API route of the fake store.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, store) -> None:
        super().__init__()
        self._store = store
        self._catalogue = store.catalogue

    # -- plumbing ----------------------------------------------------------

    def render(self, request):
        request.setHeader(b"snap-store-version", b"%d" % (self._store.storeVersion,))
        method = request.method.decode("ascii")
        path = request.path.decode("latin-1")
        fault = self._store.faults.takeAPIFault(method, path)
        if fault is not None:
            self.log.info(
                "injecting API fault {kind} on {method} {path}",
                kind=fault.kind, method=method, path=path,
            )
            if fault.kind == "stall":
                self._store._later(request, fault.seconds, self._answer, request, method, path)
                return NOT_DONE_YET
            if fault.kind == "status":
                for name, value in (fault.headers or {}).items():
                    request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
                return self._encoded(request, self._error(
                    request,
                    StoreError(fault.code, fault.errorCode, "injected fault"),
                ))
            if fault.kind == "invalid-json":
                request.setHeader(b"content-type", JSON)
                return b'{"results": [{"result": "ref'
            if fault.kind == "gzip-bomb":
                request.setHeader(b"content-type", JSON)
                request.setHeader(b"content-encoding", b"gzip")
                return gzipBomb(fault.size)
            if fault.kind == "encoding":
                # The normal answer, labelled with a coding it does not have.
                body = self._dispatch(request, method, path)
                request.setHeader(b"content-encoding", fault.encoding.encode("latin-1"))
                return body
        return self._answer(request, method, path)

    def _answer(self, request, method: str, path: str):
        return self._encoded(request, self._dispatch(request, method, path))

    def _encoded(self, request, body):
        """
        With the store's compression switch on, a text answer coded for a
        client that accepts the coding (or for any client, with
        C{compressUnasked}), as a store front end does.
        """
        if not isinstance(body, bytes):
            return body
        coding = self._store.compress
        contentType = (request.responseHeaders.getRawHeaders(b"content-type") or [b""])[0]
        if (coding is not None and body
                and contentType.split(b";")[0].strip().lower() in COMPRESSIBLE):
            request.setHeader(b"vary", b"Accept-Encoding")
            if self._store.compressUnasked or accepts(request, coding):
                request.setHeader(b"content-encoding", coding.encode("ascii"))
                body = encode(coding, body)
        record = getattr(request, "fakeStoreRecord", None)
        if record is not None:
            record.bodyBytesSent = len(body)
        return body

    def _dispatch(self, request, method: str, path: str):
        try:
            route = self._route(method, path)
            if route is None:
                raise StoreError(404, "not-found", f"no route for {method} {path}")
            handler, args = route
            return handler(request, *args)
        except StoreError as e:
            return self._error(request, e)

    def _route(self, method, path):
        get = method in ("GET", "HEAD")
        post = method == "POST"
        if path == "/" and get:
            return self._root, ()
        if path == "/v2/snaps/refresh" and post:
            return self._refresh, ()
        if path.startswith("/v2/snaps/info/") and get:
            return self._info, (path[len("/v2/snaps/info/") :],)
        if path == "/v2/snaps/find" and get:
            return self._find, ()
        if path == "/v2/snaps/categories" and get:
            return self._categories, ()
        if path == "/api/v1/snaps/sections" and get:
            return self._sections, ()
        if path == "/api/v1/snaps/names" and get:
            return self._names, ()
        if path == "/api/v1/snaps/search" and get:
            return self._searchV1, ()
        if path.startswith("/v2/assertions/") and get:
            return self._assertion, (path[len("/v2/assertions/") :],)
        if path == "/api/v1/snaps/auth/nonces" and post:
            return self._nonce, ()
        if path == "/api/v1/snaps/auth/sessions" and post:
            return self._session, ()
        if path == "/v2/cohorts" and post:
            return self._cohorts, ()
        match = _DOWNLOAD.match(path)
        if match and get:
            return self._download, (match.group(1), int(match.group(2)))
        match = _DELTA_DOWNLOAD.match(path)
        if match and get:
            return self._deltaDownload, (match.group(1), int(match.group(2)),
                                         int(match.group(3)))
        match = _ICON.match(path)
        if match and get:
            return self._icon, (match.group(1),)
        return None

    def _json(self, request, value, contentType=JSON, code=200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", contentType)
        return json.dumps(value).encode("utf-8")

    def _error(self, request, error: StoreError) -> bytes:
        return self._json(
            request,
            {"error-list": [{"code": error.errorCode, "message": error.message}]},
            contentType=error.contentType,
            code=error.code,
        )

    def _body(self, request):
        try:
            return json.loads(request.content.read() or b"null")
        except ValueError:
            raise StoreError(400, "bad-request", "request body is not valid JSON")

    def _arg(self, request, name: str, default=None):
        values = request.args.get(name.encode("ascii"))
        return values[0].decode("utf-8") if values else default

    def _architecture(self, request) -> str:
        return (
            self._arg(request, "architecture")
            or (request.getHeader(b"snap-device-architecture") or b"").decode()
            or (request.getHeader(b"x-ubuntu-architecture") or b"").decode()
            or "amd64"
        )

    # -- snap objects --------------------------------------------------------

    def _snapFields(self, request, snap, revision) -> dict:
        """
        Every field of store-api.md section 5 for C{revision} of C{snap}
        (or only the snap-level ones when C{revision} is L{None}).
        """
        url = self._store._apiBase(request)
        fields = {
            "contact": f"mailto:{snap.publisherUsername}@example.invalid",
            "description": snap.description,
            "license": snap.license,
            "links": {},
            "name": snap.name,
            "prices": dict(snap.prices),
            "private": snap.private,
            "publisher": {
                "id": snap.publisherId,
                "username": snap.publisherUsername,
                "display-name": snap.publisherDisplayName,
                "validation": snap.publisherValidation,
            },
            "snap-id": snap.snapId,
            "summary": snap.summary,
            "title": snap.title,
            "type": snap.type,
            "website": "",
            "store-url": f"{url}store/{snap.name}",
            "media": [
                {
                    "type": "icon",
                    "url": f"{url}media/icon/{snap.snapId}.png",
                    "width": 1,
                    "height": 1,
                }
            ],
            "common-ids": [],
            "categories": [{"featured": False, "name": c} for c in snap.categories],
        }
        if revision is not None:
            fields.update(
                {
                    "architectures": list(revision.architectures),
                    "base": revision.base,
                    "confinement": revision.confinement,
                    "created-at": revision.createdAt,
                    "download": {
                        "url": f"{url}api/v1/snaps/download/{snap.snapId}_{revision.revision}.snap",
                        "size": revision.size,
                        "sha3-384": revision.sha3_384,
                        "deltas": [],
                    },
                    "epoch": revision.epoch,
                    "revision": revision.revision,
                    "snap-yaml": revision.snapYaml,
                    "version": revision.version,
                }
            )
        return fields

    def _filter(self, fields: dict, wanted) -> dict:
        if wanted is None:
            return fields
        return {k: v for k, v in fields.items() if k in wanted}

    def _fieldsArg(self, request):
        value = self._arg(request, "fields")
        return None if value is None else [f for f in value.split(",") if f]

    # -- routes --------------------------------------------------------------

    def _root(self, request):
        request.setHeader(b"content-type", JSON)
        return b"{}"

    def _refresh(self, request):
        body = self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("actions", []), list):
            raise StoreError(400, "bad-request", "expected an object with actions")
        architecture = self._architecture(request)
        context = {
            c.get("instance-key"): c for c in body.get("context") or [] if isinstance(c, dict)
        }
        wanted = body.get("fields")
        results = []
        for action in body.get("actions") or []:
            if not isinstance(action, dict):
                raise StoreError(400, "bad-request", "actions must be objects")
            kind = action.get("action")
            if kind in ("install", "download"):
                results.append(self._installAction(request, action, architecture, wanted))
            elif kind == "refresh":
                results.append(
                    self._refreshAction(request, action, context, architecture, wanted)
                )
            elif kind == "fetch-assertions":
                results.append(self._assertionsAction(request, action))
            else:
                raise StoreError(400, "bad-request", f"unknown action {kind!r}")
        return self._json(request, {"results": results, "error-list": []})

    def _notFoundReleases(self, snap) -> list:
        """
        C{extra.releases} of a C{revision-not-found} error: every channel
        the snap is released to, for every architecture.
        """
        return [
            {"architecture": arch, "channel": chan.fullName}
            for arch, chan, _ in snap.releasesFor()
        ]

    def _pick(self, snap, action, channelName, architecture):
        """
        Choose the revision an action gets.

        @return: C{(revision, effective channel or None)}, or C{(None,
            None)} when nothing fits (the caller answers
            C{revision-not-found}).
        """
        number = action.get("revision")
        if number is not None:
            revision = snap.revisions.get(number)
            if revision is None or (
                architecture not in revision.architectures
                and "all" not in revision.architectures
            ):
                return None, None
            try:
                effective = Channel.parse(channelName).name if channelName else None
            except ValueError:
                effective = None
            return revision, effective
        try:
            channel = Channel.parse(channelName or "stable")
        except ValueError:
            return None, None
        found = snap.resolve(channel, architecture)
        if found is None:
            return None, None
        revision, effective = found
        return revision, effective.name

    def _result(self, request, kind, key, snap, revision, effective, wanted):
        result = {
            "result": kind,
            "instance-key": key,
            "snap-id": snap.snapId,
            "name": snap.name,
            "snap": self._filter(self._snapFields(request, snap, revision), wanted),
        }
        if effective is not None:
            result["effective-channel"] = effective
        return result

    def _actionError(self, key, snapId, name, code, message, releases=None):
        error = {"code": code, "message": message}
        if releases is not None:
            error["extra"] = {"releases": releases}
        return {
            "result": "error",
            "instance-key": key,
            "snap-id": snapId,
            "name": name,
            "error": error,
        }

    def _installAction(self, request, action, architecture, wanted):
        key = action.get("instance-key")
        name = action.get("name") or ""
        try:
            snap = self._catalogue.byName(name)
        except UnknownSnap:
            return self._actionError(
                key, "", name, "name-not-found", f"No snap named '{name}' found in series '16'."
            )
        revision, effective = self._pick(snap, action, action.get("channel"), architecture)
        if revision is None:
            return self._actionError(
                key,
                snap.snapId,
                name,
                "revision-not-found",
                "No revision was found in the Store.",
                self._notFoundReleases(snap),
            )
        return self._result(
            request, action["action"], key, snap, revision, effective, wanted
        )

    def _refreshAction(self, request, action, context, architecture, wanted):
        key = action.get("instance-key")
        installed = context.get(key, {})
        snapId = action.get("snap-id") or installed.get("snap-id") or ""
        try:
            snap = self._catalogue.byId(snapId)
        except UnknownSnap:
            return self._actionError(
                key, snapId, "", "id-not-found", f"No snap with id '{snapId}' found."
            )
        channelName = action.get("channel") or installed.get("tracking-channel") or "stable"
        revision, effective = self._pick(snap, action, channelName, architecture)
        if revision is None:
            return self._actionError(
                key,
                snap.snapId,
                snap.name,
                "revision-not-found",
                "No revision was found in the Store.",
                self._notFoundReleases(snap),
            )
        result = self._result(request, "refresh", key, snap, revision, effective, wanted)
        self._offerDelta(request, result, snap, installed.get("revision"), revision)
        return result

    def _offerDelta(self, request, result, snap, installed, revision) -> None:
        """
        Add the delta from the installed revision to C{download.deltas}, as
        the store does when the device accepts xdelta3 and the target is
        newer (store-api.md 4.3), if the store offers deltas at all.
        """
        accepted = (request.getHeader(b"snap-accept-delta-format") or b"").decode("latin-1")
        download = result["snap"].get("download")
        if (not self._store.deltas or download is None or not isinstance(installed, int)
                or DELTA_FORMAT not in [f.strip() for f in accepted.split(",")]):
            return
        delta = self._store._deltaById(snap.snapId, installed, revision.revision)
        if delta is None:
            return
        name = deltaFileName(snap.snapId, installed, revision.revision)
        download["deltas"] = [{
            "format": DELTA_FORMAT, "source": installed, "target": revision.revision,
            "url": f"{self._store._apiBase(request)}api/v1/snaps/download/{name}",
            "size": delta.size, "sha3-384": delta.sha3_384}]

    def _assertionsAction(self, request, action):
        base = self._store._apiBase(request)
        urls, errors = [], []
        for wanted in action.get("assertions") or []:
            type_ = wanted.get("type", "")
            primary = [str(p) for p in wanted.get("primary-key") or []]
            if self._store.assertions.lookup(type_, primary) is None:
                errors.append(
                    {
                        "code": "not-found",
                        "message": "not found",
                        "type": type_,
                        "primary-key": primary,
                    }
                )
                continue
            # Every assertion the fake serves is at revision 0, so one the
            # client already has at any revision is never newer.
            if wanted.get("if-newer-than") is not None:
                continue
            urls.append(
                base + "v2/assertions/" + "/".join([type_] + [quote(p, safe="") for p in primary])
            )
        result = {
            "result": "fetch-assertions",
            "key": action.get("key"),
            "assertion-stream-urls": urls,
        }
        if errors:
            result["error-list"] = errors
        return result

    def _info(self, request, name):
        try:
            snap = self._catalogue.byName(name)
        except UnknownSnap:
            raise StoreError(404, "resource-not-found", f"No snap named '{name}' found.")
        wanted = self._fieldsArg(request)
        architecture = self._arg(request, "architecture")
        entries = []
        for arch, chan, revision in snap.releasesFor(architecture):
            fields = self._snapFields(request, snap, revision)
            entry = {
                "channel": {
                    "architecture": arch,
                    "name": chan.name,
                    "track": chan.track,
                    "risk": chan.risk,
                    "released-at": snap.releasedAt[(arch, chan)],
                }
            }
            entry.update(
                {
                    k: fields[k]
                    for k in REVISION_FIELDS
                    if wanted is None or k in wanted
                }
            )
            entries.append(entry)
        if not entries:
            raise StoreError(404, "resource-not-found", f"No snap named '{name}' found.")
        snapLevel = {
            k: v
            for k, v in self._snapFields(request, snap, None).items()
            if wanted is None or k in wanted
        }
        return self._json(
            request,
            {
                "name": snap.name,
                "snap-id": snap.snapId,
                "default-track": snap.defaultTrack,
                "snap": snapLevel,
                "channel-map": entries,
            },
        )

    def _find(self, request):
        architecture = self._architecture(request)
        wanted = self._fieldsArg(request)
        q = (self._arg(request, "q") or "").lower()
        prefix = self._arg(request, "name")
        category = self._arg(request, "category")
        scope = self._arg(request, "scope")
        channelName = None if scope == "wide" else self._arg(request, "channel", "stable")
        confinement = self._arg(request, "confinement")
        allowed = None if confinement is None else set(confinement.split(","))
        results = []
        for snap in self._catalogue:
            if prefix is not None and not snap.name.startswith(prefix):
                continue
            if q and not any(
                q in text.lower()
                for text in (snap.name, snap.title, snap.summary, snap.description)
            ):
                continue
            if category and category not in snap.categories and category != "featured":
                continue
            if channelName is None:
                releases = snap.releasesFor(architecture)
                if not releases:
                    continue
                _, chan, revision = releases[0]
            else:
                found = snap.resolve(Channel.parse(channelName), architecture)
                if found is None:
                    continue
                revision, chan = found
            if allowed is not None and revision.confinement not in allowed:
                continue
            fields = self._snapFields(request, snap, revision)
            snapLevel = {
                k: v
                for k, v in fields.items()
                if k not in REVISION_FIELDS and k != "snap-yaml"
                and (wanted is None or k in wanted)
            }
            revLevel = {
                k: fields[k] for k in REVISION_FIELDS if wanted is None or k in wanted
            }
            if "download" in revLevel:
                revLevel["download"] = {"size": revision.size}
            revLevel["channel"] = chan.name
            results.append(
                {
                    "name": snap.name,
                    "snap-id": snap.snapId,
                    "snap": snapLevel,
                    "revision": revLevel,
                }
            )
        return self._json(request, {"results": results})

    def _categoryNames(self) -> list[str]:
        names = {"featured"}
        for snap in self._catalogue:
            names.update(snap.categories)
        return ["featured"] + sorted(names - {"featured"})

    def _categories(self, request):
        return self._json(
            request, {"categories": [{"name": n} for n in self._categoryNames()]}
        )

    def _sections(self, request):
        return self._json(
            request,
            {"_embedded": {"clickindex:sections": [{"name": n} for n in self._categoryNames()]}},
            contentType=HAL_JSON,
        )

    def _names(self, request):
        architecture = self._architecture(request)
        confinement = self._arg(request, "confinement")
        allowed = None if confinement is None else set(confinement.split(","))
        packages = []
        for snap in self._catalogue:
            found = snap.resolve(Channel("latest", "stable"), architecture)
            if found is None:
                continue
            revision, _ = found
            if allowed is not None and revision.confinement not in allowed:
                continue
            packages.append(
                {
                    "package_name": snap.name,
                    "version": revision.version,
                    "summary": snap.summary,
                    "aliases": [],
                    "apps": [snap.name] if snap.type == "app" else [],
                }
            )
        return self._json(
            request, {"_embedded": {"clickindex:package": packages}}, contentType=HAL_JSON
        )

    def _searchV1(self, request):
        """
        The v1 search snapd falls back to (store-api.md 3.3): HAL, v1 field
        names, stable revisions matching C{q} or the C{name} prefix.
        """
        architecture = self._architecture(request)
        q = (self._arg(request, "q") or "").lower()
        prefix = self._arg(request, "name")
        packages = []
        for snap in self._catalogue:
            if prefix is not None and not snap.name.startswith(prefix):
                continue
            if q and not any(q in text.lower() for text in (snap.name, snap.summary)):
                continue
            found = snap.resolve(Channel("latest", "stable"), architecture)
            if found is None:
                continue
            revision, _ = found
            packages.append({
                "package_name": snap.name, "snap_id": snap.snapId,
                "developer_name": snap.publisherUsername, "developer_id": snap.publisherId,
                "summary": snap.summary, "version": revision.version,
                "revision": revision.revision, "binary_filesize": revision.size,
            })
        return self._json(
            request, {"_embedded": {"clickindex:package": packages}}, contentType=HAL_JSON
        )

    def _assertion(self, request, rest):
        parts = [unquote(p) for p in rest.split("/")]
        if len(parts) < 2 or not all(parts):
            raise StoreError(404, "not-found", "not found", PROBLEM_JSON)
        if parts[0] == "validation-set" and len(parts) == 4:
            # GET v2/assertions/validation-set/16/<account>/<name>?sequence=
            sequence = (request.args.get(b"sequence") or [b"latest"])[0].decode()
            text = self._store.assertions.validationSet(*parts[1:], sequence)
        else:
            text = self._store.assertions.lookup(parts[0], parts[1:])
        if text is None:
            raise StoreError(404, "not-found", "not found", PROBLEM_JSON)
        request.setHeader(b"content-type", ASSERTION)
        return text

    def _nonce(self, request):
        nonce = self._store._newNonce()
        return self._json(request, {"nonce": nonce})

    def _session(self, request):
        body = self._body(request)
        text = body.get("device-session-request") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            raise StoreError(400, "bad-request", "device-session-request missing")
        refusal = self._store.sessionRefusal(text)
        if refusal is not None:
            raise StoreError(400, "invalid-credentials", refusal)
        macaroon = self._store._newSession(text, body)
        return self._json(request, {"macaroon": macaroon})

    def _cohorts(self, request):
        body = self._body(request)
        names = body.get("snaps") if isinstance(body, dict) else None
        if not isinstance(names, list):
            raise StoreError(400, "bad-request", "expected {\"snaps\": [...]}")
        keys = {}
        for name in names:
            try:
                snap = self._catalogue.byName(name)
            except UnknownSnap:
                raise StoreError(404, "name-not-found", f"No snap named '{name}' found.")
            keys[name] = f"cohort-{snap.snapId}"
        return self._json(request, {"cohort-keys": keys})

    def _download(self, request, snapId, revision):
        if self._store._blobById(snapId, revision) is None:
            raise StoreError(404, "not-found", "not found")
        return self._redirect(request, snapId, f"{snapId}_{revision}.snap")

    def _redirect(self, request, snapId, fileName):
        """
        The 302 to the CDN with a fresh token; a paid snap without the
        user's credentials gets 402 instead.
        """
        if self._catalogue.byId(snapId).prices and not request.getHeader(b"authorization"):
            # Paid snaps need the user's macaroon on the first hop, which is
            # why a proxy must forward Authorization upstream (store-api.md
            # section 9.6); snapd maps 402 to "please buy".
            raise StoreError(402, "payment-required", "please buy this snap")
        target = self._store._cdnURLFor(request, fileName)
        request.setResponseCode(302)
        request.setHeader(b"location", target.encode("ascii"))
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return b""

    def _deltaDownload(self, request, snapId, source, target):
        if self._store._deltaById(snapId, source, target) is None:
            raise StoreError(404, "not-found", "not found")
        return self._redirect(request, snapId, deltaFileName(snapId, source, target))

    def _icon(self, request, snapId):
        try:
            self._catalogue.byId(snapId)
        except UnknownSnap:
            raise StoreError(404, "not-found", "not found")
        etag = f'"{snapId}-1"'.encode("ascii")
        request.setHeader(b"etag", etag)
        if request.getHeader(b"if-none-match") == etag:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", b"image/png")
        return ICON
