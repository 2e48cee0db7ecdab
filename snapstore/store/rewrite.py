# -*- test-case-name: tests.test_rewrite -*-
"""
Rewriting the absolute URLs in store answers so that snapd fetches them
from the proxy.

snapd downloads C{download.url} (and deltas, resources, assertion streams
and icons) verbatim from whatever host it names, so pointing snapd's API
base at the proxy is not enough: every such URL must name the proxy.  The
rewrite replaces only those JSON string tokens in the original bytes, so
that the rest of the answer reaches snapd byte for byte as upstream sent
it.  While walking the answer it also collects what the download path
needs later: the upstream URL, size and sha3-384 of every blob.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import re
from collections import OrderedDict
from typing import Any, Iterator, Optional
from urllib.parse import quote, urlsplit

import attrs

from snapstore.state.records import BlobRecord

DOWNLOAD_PREFIX = "api/v1/snaps/download/"
REMOTE_PREFIX = "snapstore/remote/"
_API_PATH = re.compile(r"/(v2/|api/v1/)")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")


@attrs.frozen
class Rewritten:
    """
    The outcome of rewriting one answer.

    @ivar body: the answer's bytes with URLs replaced.
    @ivar blobs: the blobs it described, to record in the state store.
    @ivar remotes: C{token -> upstream URL} for non-API URLs (icons).
    """

    body: bytes
    blobs: tuple[BlobRecord, ...]
    remotes: dict[str, str]


@functools.lru_cache(maxsize=4096)
def remoteToken(url: str) -> str:
    """
    An opaque, stable name for an upstream URL that is not a store API path.
    Only URLs the store itself handed out get a token, so the proxy never
    fetches a URL a client made up.
    """
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


# What a URL becomes depends on the URL alone: remembered per URL (the
# few hundred a fleet's answers name again and again), since splitting and
# quoting a URL cost more than the rest of its rewrite (issue 20).
@functools.lru_cache(maxsize=4096)
def _fileName(url: str) -> str:
    """
    The last segment of C{url}'s path.
    """
    return posixpath.basename(urlsplit(url).path)


@functools.lru_cache(maxsize=4096)
def _apiTail(url: str) -> Optional[str]:
    """
    The part of a store API URL from its API path on (query included),
    or C{None} when C{url} is not one.
    """
    parts = urlsplit(url)
    match = _API_PATH.search(parts.path)
    if parts.scheme not in ("http", "https") or match is None:
        return None
    tail = parts.path[match.start() + 1 :]
    if parts.query:
        tail += "?" + parts.query
    return tail


@functools.lru_cache(maxsize=4096)
def _downloadTail(url: str, digest: str) -> tuple[str, str]:
    """
    The file name of the blob at C{url}, whose digest is C{digest}, and
    the path under the proxy's base that serves it.
    """
    name = _fileName(url)
    if not _SAFE_NAME.match(name):
        name = f"{digest[:32]}.blob"
    return name, DOWNLOAD_PREFIX + quote(name)


@functools.lru_cache(maxsize=4096)
def _remoteTail(url: str) -> str:
    """
    The path under the proxy's base that serves the non-API URL C{url}.
    """
    name = _fileName(url)
    if not _SAFE_NAME.match(name):
        name = "file"
    return f"{REMOTE_PREFIX}{remoteToken(url)}/{quote(name)}"


class URLRewriter:
    """
    Maps upstream URLs to URLs under the proxy's public base.

    @ivar publicBase: the proxy's base URL, ending in C{/}.
    """

    def __init__(self, publicBase: str, seenAt: float = 0.0) -> None:
        self.publicBase = publicBase
        self.seenAt = seenAt
        self.replacements: dict[str, str] = {}
        self.blobs: dict[str, BlobRecord] = {}
        self.remotes: dict[str, str] = {}

    def apiURL(self, url: str) -> str:
        """
        Rewrite a store API URL (assertions, downloads) to the same path
        under the proxy, or to a remote token for any other URL.
        """
        tail = _apiTail(url)
        local = self.remoteURL(url) if tail is None else self.publicBase + tail
        self.replacements[url] = local
        return local

    def remoteURL(self, url: str) -> str:
        self.remotes[remoteToken(url)] = url
        return self.publicBase + _remoteTail(url)

    def downloadURL(self, url: str, download: dict[str, Any], context: dict[str, Any]) -> str:
        """
        Rewrite a blob URL to C{/api/v1/snaps/download/<name>} and remember
        the blob, so that the download path can fetch and verify it.
        """
        digest = download.get("sha3-384")
        size = download.get("size")
        if not isinstance(digest, str) or not isinstance(size, int):
            return self.apiURL(url)
        name, local = _downloadTail(url, digest)
        local = self.publicBase + local
        self.replacements[url] = local
        self.blobs[name] = BlobRecord(
            name=name,
            sha3_384=digest.lower(),
            size=size,
            url=url,
            snapId=_text(context.get("snap-id")),
            snapName=_text(context.get("name")),
            revision=_int(context.get("revision")),
            architectures=tuple(
                [arch for arch in context.get("architectures") or () if isinstance(arch, str)]
            ),
            seenAt=self.seenAt,
        )
        return local


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


#: Values that hold nothing to visit: skipped without asking isinstance.
_LEAVES = frozenset([str, int, float, bool, type(None)])


def _holders(node: Any, ancestors: list[Any], found: list[tuple[Any, tuple[Any, ...]]]) -> None:
    """
    Append to C{found} every object under C{node} (itself included) that
    holds URLs to rewrite (a C{download}, C{media} or
    C{assertion-stream-urls} key), with the objects above it, in the order
    of the answer.  Nothing below a C{download} or C{media} key is
    visited: what those hold is rewritten by its holder.

    Only containers are looked into, and the snap identity a download
    inherits is worked out only for the downloads found (L{_context}):
    walking every object of a refresh answer and copying the identity at
    each was most of the rewrite's cost (issue 20).
    """
    kind = type(node)
    if kind is list or (kind is not dict and isinstance(node, list)):
        for item in node:
            if type(item) not in _LEAVES:
                _holders(item, ancestors, found)
        return
    if kind is not dict and not isinstance(node, dict):
        return
    if "download" in node or "media" in node or "assertion-stream-urls" in node:
        found.append((node, tuple(ancestors)))
    ancestors.append(node)
    for key, value in node.items():
        if type(value) not in _LEAVES and key != "download" and key != "media":
            _holders(value, ancestors, found)
    ancestors.pop()


def _context(path: tuple[Any, ...]) -> dict[str, Any]:
    """
    The nearest snap identity (snap-id, name, revision, architectures)
    along C{path}, the objects from the top of the answer down to a
    download's holder: each object's own fields override those above, and
    a channel's architecture counts where no object above listed them.
    """
    context: dict[str, Any] = {}
    for node in path:
        for key in ("snap-id", "name", "revision"):
            value = node.get(key)
            if value is not None and isinstance(value, (str, int)) and not isinstance(value, bool):
                context[key] = value
        if isinstance(node.get("architectures"), list):
            context["architectures"] = node["architectures"]
        channel = node.get("channel")
        if isinstance(channel, dict) and isinstance(channel.get("architecture"), str):
            context.setdefault("architectures", [channel["architecture"]])
    return context


def _rewriteHolder(node: dict[str, Any], ancestors: tuple[Any, ...], rewriter: URLRewriter) -> None:
    download = node.get("download")
    if isinstance(download, dict):
        _rewriteDownload(download, _context(ancestors + (node,)), rewriter)
    for item in node.get("media") or ():
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            rewriter.replacements[item["url"]] = rewriter.remoteURL(item["url"])
    for url in node.get("assertion-stream-urls") or ():
        if isinstance(url, str):
            rewriter.apiURL(url)


def _rewriteDownload(download: dict[str, Any], context: dict[str, Any], rewriter: URLRewriter) -> None:
    if isinstance(download.get("url"), str) and download["url"]:
        rewriter.downloadURL(download["url"], download, context)
    for delta in download.get("deltas") or ():
        if isinstance(delta, dict) and isinstance(delta.get("url"), str):
            deltaContext = dict(context, revision=0)
            rewriter.downloadURL(delta["url"], delta, deltaContext)


@functools.lru_cache(maxsize=4096)
def _token(text: str) -> bytes:
    """
    C{text} as Python's JSON encoder writes a string (C{ensure_ascii}):
    quoted as it is when it is printable ASCII without quotes or
    backslashes, as a URL nearly always is.
    """
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return b'"' + text.encode("ascii") + b'"'
    return json.dumps(text).encode("utf-8")


def _encodings(url: str, escapedSlashes: bool) -> Iterator[bytes]:
    """
    The ways a JSON encoder may have written C{url} as a string token: as
    Python's does, with escaped slashes (only looked for when the answer
    has some, C{escapedSlashes}), and with non-ASCII characters as they
    are.
    """
    plain = _token(url)
    yield plain
    if escapedSlashes:
        escaped = plain.replace(b"/", b"\\/")
        if escaped != plain:
            yield escaped
    if not url.isascii():
        raw = json.dumps(url, ensure_ascii=False).encode("utf-8")
        if raw != plain:
            yield raw


def rewriteAnswer(body: bytes, publicBase: str, seenAt: float = 0.0,
                  document: Any = None) -> Rewritten:
    """
    Rewrite the URLs snapd will fetch in a store JSON answer.

    @param document: C{body} already decoded, when the caller has it, so
        that the answer is not parsed twice on the refresh path.
    @raise ValueError: when C{body} is not JSON.
    """
    if document is None:
        document = json.loads(body)
    found: list[tuple[Any, tuple[Any, ...]]] = []
    _holders(document, [], found)
    rewriter = URLRewriter(publicBase, seenAt)
    for node, ancestors in found:
        _rewriteHolder(node, ancestors, rewriter)
    rewritten = body
    # Longest first, so a URL that is a prefix of another is not replaced
    # inside it (tokens are whole JSON strings, quotes included, anyway).
    originals = rewriter.replacements
    # (A backslash is looked for first: that is a far faster search.)
    escapedSlashes = b"\\" in body and b"\\/" in body
    for original in sorted(originals, key=len, reverse=True) if len(originals) > 1 else originals:
        replacement = _token(originals[original])
        for encoded in _encodings(original, escapedSlashes):
            rewritten = rewritten.replace(encoded, replacement)
        # (A replacement escapes a backslash only if the public base has
        # one: then the next URLs are looked for as before, everywhere.)
        escapedSlashes = escapedSlashes or b"\\/" in replacement
    return Rewritten(rewritten, tuple(rewriter.blobs.values()), dict(rewriter.remotes))


class RemoteURLs:
    """
    A bounded memory of the non-API URLs (icons) the store handed out, by
    token, so the proxy can fetch them for a device later.
    """

    def __init__(self, limit: int = 10000) -> None:
        self._urls: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def update(self, remotes: dict[str, str]) -> None:
        for token, url in remotes.items():
            self._urls[token] = url
            self._urls.move_to_end(token)
        while len(self._urls) > self._limit:
            self._urls.popitem(last=False)

    def get(self, token: str) -> Optional[str]:
        return self._urls.get(token)
