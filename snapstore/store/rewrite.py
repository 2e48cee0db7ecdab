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


def remoteToken(url: str) -> str:
    """
    An opaque, stable name for an upstream URL that is not a store API path.
    Only URLs the store itself handed out get a token, so the proxy never
    fetches a URL a client made up.
    """
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


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
        parts = urlsplit(url)
        match = _API_PATH.search(parts.path)
        if parts.scheme in ("http", "https") and match is not None:
            local = self.publicBase + parts.path[match.start() + 1 :]
            if parts.query:
                local += "?" + parts.query
        else:
            local = self.remoteURL(url)
        self.replacements[url] = local
        return local

    def remoteURL(self, url: str) -> str:
        token = remoteToken(url)
        self.remotes[token] = url
        name = posixpath.basename(urlsplit(url).path)
        if not _SAFE_NAME.match(name):
            name = "file"
        return f"{self.publicBase}{REMOTE_PREFIX}{token}/{quote(name)}"

    def downloadURL(self, url: str, download: dict[str, Any], context: dict[str, Any]) -> str:
        """
        Rewrite a blob URL to C{/api/v1/snaps/download/<name>} and remember
        the blob, so that the download path can fetch and verify it.
        """
        name = posixpath.basename(urlsplit(url).path)
        digest = download.get("sha3-384")
        size = download.get("size")
        if not isinstance(digest, str) or not isinstance(size, int):
            return self.apiURL(url)
        if not _SAFE_NAME.match(name):
            name = f"{digest[:32]}.blob"
        local = self.publicBase + DOWNLOAD_PREFIX + quote(name)
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
                arch for arch in context.get("architectures") or () if isinstance(arch, str)
            ),
            seenAt=self.seenAt,
        )
        return local


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _walk(node: Any, context: dict[str, Any], rewriter: URLRewriter) -> None:
    """
    Visit every object of the answer, carrying the nearest snap identity
    (snap-id, name, revision, architectures) down to its downloads.
    """
    if isinstance(node, list):
        for item in node:
            _walk(item, context, rewriter)
        return
    if not isinstance(node, dict):
        return
    context = dict(context)
    for key in ("snap-id", "name", "revision"):
        value = node.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            context[key] = value
    if isinstance(node.get("architectures"), list):
        context["architectures"] = node["architectures"]
    channel = node.get("channel")
    if isinstance(channel, dict) and isinstance(channel.get("architecture"), str):
        context.setdefault("architectures", [channel["architecture"]])
    download = node.get("download")
    if isinstance(download, dict):
        _rewriteDownload(download, context, rewriter)
    for item in node.get("media") or ():
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            rewriter.replacements[item["url"]] = rewriter.remoteURL(item["url"])
    for url in node.get("assertion-stream-urls") or ():
        if isinstance(url, str):
            rewriter.apiURL(url)
    for key, value in node.items():
        if key not in ("download", "media") and isinstance(value, (dict, list)):
            _walk(value, context, rewriter)


def _rewriteDownload(download: dict[str, Any], context: dict[str, Any], rewriter: URLRewriter) -> None:
    if isinstance(download.get("url"), str) and download["url"]:
        rewriter.downloadURL(download["url"], download, context)
    for delta in download.get("deltas") or ():
        if isinstance(delta, dict) and isinstance(delta.get("url"), str):
            deltaContext = dict(context, revision=0)
            rewriter.downloadURL(delta["url"], delta, deltaContext)


def _encodings(url: str) -> Iterator[bytes]:
    """
    The ways a JSON encoder may have written C{url} as a string token.
    """
    plain = json.dumps(url).encode("utf-8")
    yield plain
    escapedSlashes = plain.replace(b"/", b"\\/")
    if escapedSlashes != plain:
        yield escapedSlashes
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
    rewriter = URLRewriter(publicBase, seenAt)
    _walk(document, {}, rewriter)
    rewritten = body
    # Longest first, so a URL that is a prefix of another is not replaced
    # inside it (tokens are whole JSON strings, quotes included, anyway).
    for original in sorted(rewriter.replacements, key=len, reverse=True):
        replacement = json.dumps(rewriter.replacements[original]).encode("utf-8")
        for encoded in _encodings(original):
            rewritten = rewritten.replace(encoded, replacement)
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
