# -*- test-case-name: tests.test_download -*-
"""
C{GET /v2/assertions/<type>/<key...>}: assertions, cached.

Every device that installs a revision fetches the same C{snap-revision},
C{account-key} and C{account} assertions; those never change once
published (their primary key includes the content's digest or the key's
fingerprint), so they are kept for good.  Others (C{snap-declaration},
C{validation-set}, ...) can be revised, so they are kept for a short time,
and served stale when upstream cannot be reached: a device that can install
from the cache should not fail on a declaration it fetched ten minutes ago.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, Sequence

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.internet.interfaces import IReactorTime

from snapstore.cache.documents import Document, DocumentCache
from snapstore.store.compression import encodeFor
from snapstore.http.headers import addVia
from snapstore.http.storeerror import writeStoreError
from snapstore.rules.verdicts import Deny
from snapstore.state.errors import StateUnavailable
from snapstore.store.relay import copyResponseHead, outboundHeaders
from snapstore.store.upstream import StoreUpstream, UpstreamError

#: Assertion types whose content never changes for a given primary key.
IMMUTABLE_TYPES = frozenset(["snap-revision", "account-key", "account"])
#: Seconds other assertion types are served from the cache.
MUTABLE_TTL = 600.0
#: The two formats the store answers assertions in.
ASSERTION_TYPE = "application/x.ubuntu.assertion"
JSON_TYPE = "application/json"
#: Largest assertion answer kept (an assertion stream of a big model can be
#: a few hundred kilobytes).
MAX_ASSERTION_SIZE = 4 << 20


def representation(request: Request) -> str:
    """
    The one of the store's two answer formats that the request's C{Accept}
    prefers: C{application/json}, or the assertion format (for anything
    else, empty included).  Used both as the cache key and as the C{Accept}
    sent upstream, so that spellings of the same wish share one entry and
    an entry always holds what its key says.
    """
    best, bestQuality = ASSERTION_TYPE, 0.0
    for value in request.requestHeaders.getRawHeaders(b"accept") or ():
        for item in value.decode("latin-1").split(","):
            mediaType, *parameters = [part.strip().lower() for part in item.split(";")]
            quality = 1.0
            for parameter in parameters:
                name, _, number = parameter.partition("=")
                if name.strip() == "q":
                    try:
                        quality = float(number)
                    except ValueError:
                        quality = 0.0
            if mediaType in (JSON_TYPE, ASSERTION_TYPE) and quality > bestQuality:
                best, bestQuality = mediaType, quality
    return best


def documentKey(uri: str, mediaType: str, credentials: Optional[Sequence[bytes]] = None) -> str:
    """
    The cache key of an assertion answer: see L{AssertionsResource.cacheKey}.
    """
    key = uri + "\n" + mediaType
    if credentials:
        key += "\n" + hashlib.sha256(b"\n".join(credentials)).hexdigest()
    return key


def assertionType(request: Request) -> str:
    """
    The assertion type of a C{/v2/assertions/<type>/...} request.
    """
    segments = request.path.split(b"/")
    if len(segments) > 3 and segments[1:3] == [b"v2", b"assertions"]:
        return segments[3].decode("ascii", "replace")
    return ""


class AssertionsResource(Resource):
    """
    Serves C{/v2/assertions/...} from a L{DocumentCache}, fetching misses
    from upstream.  Anything but C{GET} goes to C{fallback} (the relay).

    The cache key is the full path and query plus the format C{Accept}
    asks for (the store answers JSON or the assertion format depending on
    it), and the user credentials when there are any (L{cacheKey}).

    @ivar policy: C{(assertion type, status) -> CachePolicy} (the cache
        rule of C{rules.d}, L{snapstore.rules.service.RulesService.assertionPolicy}),
        deciding whether and how long a type is kept; C{None} uses
        L{IMMUTABLE_TYPES} and C{ttl}.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, reactor: IReactorTime, upstream: StoreUpstream, documents: DocumentCache,
                 fallback: IResource, ttl: float = MUTABLE_TTL,
                 policy: Optional[Callable[[str, int], Any]] = None,
                 admit: Optional[Callable[[Request], Any]] = None) -> None:
        """
        @param admit: C{request -> Deferred[verdict]}: the admission rules,
            or C{None}.
        """
        super().__init__()
        self.policy = policy
        self.clock = reactor
        self.upstream = upstream
        self.documents = documents
        self.fallback = fallback
        self.ttl = ttl
        self.admit = admit

    def render(self, request: Request) -> Any:
        if request.method != b"GET":
            return self.fallback.render(request)
        Deferred.fromCoroutine(self._answer(request)).addErrback(self._failed, request)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Request) -> None:
        if failure.check(StateUnavailable):
            # The admission rules need the state store.
            writeStoreError(request, 503, "state-unavailable",
                            "the proxy's database is unavailable; try again shortly")
            return
        self.log.failure("serving assertion {uri} failed", failure, uri=request.uri)
        writeStoreError(request, 500, "internal-error", "the proxy failed to serve this assertion")

    @staticmethod
    def cacheKey(request: Request) -> str:
        """
        The path and query, the representation asked for (see
        L{representation}), and, for a request with user credentials
        (C{Authorization}), a digest of them: an answer fetched with
        someone's credentials is never served to anyone else.
        """
        return documentKey(request.uri.decode("latin-1"), representation(request),
                           request.requestHeaders.getRawHeaders(b"authorization"))

    def _fresh(self, kind: str, document: Document) -> bool:
        if self.policy is not None:
            policy = self.policy(kind, 200)
            if not policy.cache:
                return False
            return policy.ttl is None or self.clock.seconds() - document.storedAt < policy.ttl
        if kind in IMMUTABLE_TYPES:
            return True
        return self.clock.seconds() - document.storedAt < self.ttl

    async def _answer(self, request: Request) -> None:
        if self.admit is not None:
            # The admission rules (device limit, ...) hold for assertions
            # as for every other store call.
            verdict = await maybeDeferred(self.admit, request)
            if isinstance(verdict, Deny):
                writeStoreError(request, verdict.code, getattr(verdict, "errorCode", "forbidden"),
                                verdict.reason)
                return
        key = self.cacheKey(request)
        kind = assertionType(request)
        cached = self.documents.get(key)
        if cached is not None and self._fresh(kind, cached):
            self._write(request, cached, b"HIT")
            return
        what = f"GET {request.path.decode('ascii', 'replace')}"
        try:
            headers = outboundHeaders(request)
            headers.setRawHeaders(b"accept", [representation(request).encode("ascii")])
            response = await self.upstream.request(
                b"GET", self.upstream.url(request.uri), headers)
            body = await self.upstream.readBody(response, what, limit=MAX_ASSERTION_SIZE)
        except UpstreamError as error:
            if cached is not None:
                self.log.warn("upstream failed ({message}); serving stale {uri}",
                              message=error.message, uri=request.uri)
                self._write(request, cached, b"STALE")
                return
            writeStoreError(request, error.status, error.code, error.message)
            return
        if response.code == 200 and (self.policy is None
                                     or self.policy(kind, response.code).cache):
            mediaType = self._mediaType(response)
            self.documents.put(key, body, mediaType)
        elif response.code >= 500 and cached is not None:
            self.log.warn("upstream answered {code}; serving stale {uri}",
                          code=response.code, uri=request.uri)
            self._write(request, cached, b"STALE")
            return
        copyResponseHead(response, request, keepLength=False)
        request.responseHeaders.setRawHeaders(b"x-cache", [b"MISS"])
        request.write(encodeFor(request.requestHeaders, request.responseHeaders, body))
        request.finish()

    def prefetch(self, uri: str) -> Deferred[None]:
        """
        Fetch C{uri} (C{/v2/assertions/...?max-format=N}) in the assertion
        format for no device (a followed revision's), into the cache under
        the key a device asking for the same URI without credentials uses,
        unless a fresh copy is there; the cache rule decides as for a
        device's.
        """
        return Deferred.fromCoroutine(self._prefetch(uri))

    async def _prefetch(self, uri: str) -> None:
        key = documentKey(uri, ASSERTION_TYPE)
        kind = uri.split("?")[0].split("/")[3] if uri.count("/") >= 3 else ""
        cached = self.documents.get(key)
        if cached is not None and self._fresh(kind, cached):
            return
        headers = Headers({b"accept": [ASSERTION_TYPE.encode("ascii")]})
        addVia(headers)
        response = await self.upstream.request(b"GET", self.upstream.url(uri.encode("ascii")),
                                               headers)
        body = await self.upstream.readBody(response, f"GET {uri} (prefetch)",
                                            limit=MAX_ASSERTION_SIZE)
        if response.code == 200 and (self.policy is None or self.policy(kind, 200).cache):
            self.documents.put(key, body, self._mediaType(response))

    @staticmethod
    def _mediaType(response: IResponse) -> bytes:
        return (response.headers.getRawHeaders(b"content-type") or [b""])[0]

    @staticmethod
    def _write(request: Request, document: Document, cache: bytes) -> None:
        if request._disconnected:
            return
        headers = request.responseHeaders
        if document.mediaType:
            headers.setRawHeaders(b"content-type", [document.mediaType])
        headers.setRawHeaders(b"x-cache", [cache])
        if cache == b"STALE":
            headers.setRawHeaders(b"warning", [b'110 snapstore "Response is Stale"'])
        request.write(encodeFor(request.requestHeaders, headers, document.body))
        request.finish()
