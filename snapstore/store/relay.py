# -*- test-case-name: tests.test_store -*-
"""
The transparent relay of store API calls to upstream.

Every call under C{/v2/} and C{/api/v1/} that is not a download goes
through here: headers that describe the device reach upstream unchanged,
hop-by-hop headers do not, and the answer comes back with its status,
headers and body intact, except that JSON answers about snaps get their
download, assertion and icon URLs pointed at the proxy.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime

from snapstore.http.bodies import ParsedJSON
from snapstore.http.headers import relayHeaders
from snapstore.rules.values import RuleFailed, settled
from snapstore.rules.verdicts import Deny
from snapstore.state.errors import StateUnavailable
from snapstore.store.compression import (
    UPSTREAM_ACCEPT,
    EncodingError,
    Inflater,
    accepts,
    addVary,
    contentCodings,
    encodeFor,
)
from snapstore.http.storeerror import writeStoreError
from snapstore.store.rewrite import RemoteURLs, rewriteAnswer
from snapstore.store.streaming import relayBody
from snapstore.store.upstream import StoreUpstream, UpstreamError, discardBody, isCancellation

# Answers that describe snaps, and so carry URLs snapd fetches later.
_REWRITTEN_PATHS = re.compile(rb"^/(v2/snaps/|api/v1/snaps/(?!download/))")
_JSON_TYPES = (b"application/json", b"application/hal+json", b"application/problem+json")
# Answers the rules may amend, by path: refresh results, info channel maps,
# find results, the v1 catalogue (see RuleSet.amended).
_AMENDED = (
    (re.compile(r"^/v2/snaps/refresh$"), "refresh"),
    (re.compile(r"^/v2/snaps/info/[^/]+$"), "info"),
    (re.compile(r"^/v2/snaps/find$"), "find"),
    (re.compile(r"^/api/v1/snaps/(names|search)$"), "catalogue"),
)
_HOST = re.compile(rb"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
MAX_REQUEST_BODY = 4 << 20


def publicBaseFor(request: Request, configured: Optional[str]) -> str:
    """
    The base URL devices use to reach this proxy: the configured one, or
    the scheme and Host the device itself used.
    """
    if configured:
        return configured
    raw = request.getHeader(b"host") or b""
    if _HOST.match(raw.encode() if isinstance(raw, str) else raw):
        host = raw.decode("ascii") if isinstance(raw, bytes) else raw
    else:
        address = request.getHost()
        host = f"{address.host}:{address.port}"
    scheme = "https" if request.isSecure() else "http"
    return f"{scheme}://{host}/"


#: What the outbound connection sets itself, and (but for a C{HEAD}) the
#: codings upstream is asked for.
_NOT_SENT_ON = frozenset([b"host", b"content-length"])
_NOT_SENT_ON_GET = _NOT_SENT_ON | {b"accept-encoding"}
_LENGTH = frozenset([b"content-length"])


def outboundHeaders(request: Request) -> Headers:
    """
    The headers to send upstream for a client request: everything end to
    end, minus what the outbound connection sets itself, plus C{Via}.

    Upstream is asked for gzip whatever the device accepts (the proxy
    decodes what it reads, and what a device cannot take): JSON shrinks
    several times on the uplink.  A C{HEAD} keeps the device's own
    C{Accept-Encoding}, so that the headers it gets describe what a C{GET}
    would give it.
    """
    headers = Headers()
    if request.method == b"HEAD":
        relayHeaders(request.requestHeaders, headers, _NOT_SENT_ON)
    else:
        headers.setRawHeaders(b"accept-encoding", [UPSTREAM_ACCEPT])
        relayHeaders(request.requestHeaders, headers, _NOT_SENT_ON_GET)
    return headers


def copyResponseHead(response: IResponse, request: Request, keepLength: bool) -> None:
    """
    Give the client upstream's status and end-to-end headers.
    """
    request.setResponseCode(response.code, response.phrase)
    relayHeaders(response.headers, request.responseHeaders, _LENGTH)
    # The client parser keeps the length out of the headers; send it on so
    # that the client sees the same framing rather than chunks.
    if keepLength and isinstance(response.length, int) and request.method != b"HEAD":
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % response.length])


def _untilClientLeaves(request: Request, pending: Deferred[Any]) -> Deferred[Any]:
    """
    Cancel C{pending} (an upstream request or body read) if C{request}'s
    client goes away first, so that upstream stops sending an answer
    nobody will read.
    """
    def left(reason: Failure) -> None:
        if not pending.called:
            pending.cancel()

    if request._disconnected:
        left(Failure(ConnectionDone()))
    else:
        request.notifyFinish().addErrback(left)
    return pending


class RelayResource(Resource):
    """
    Relays any store API call upstream and its answer back.

    @ivar recordBlob: called with each L{BlobRecord} an answer described;
        may return a Deferred, which the answer waits for, so that the
        download of a URL the device just got is never unknown.
    @ivar rules: the L{snapstore.rules.service.RulesService} asked before
        relaying (admission) and after (amending answers, learning device
        sessions); C{None} relays everything unchanged.
    @ivar metrics: a L{snapstore.observe.metrics.Metrics} told how long
        upstream took and how it failed, or C{None}.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, upstream: StoreUpstream, remoteURLs: RemoteURLs,
                 recordBlob: Callable[[Any], Any], clock: IReactorTime,
                 publicURL: Optional[str] = None, rules: Any = None,
                 metrics: Any = None) -> None:
        super().__init__()
        self.metrics = metrics
        self.rules = rules
        self.upstream = upstream
        self.remoteURLs = remoteURLs
        self.recordBlob = recordBlob
        self.clock = clock
        self.publicURL = publicURL

    def render(self, request: Request) -> Any:
        Deferred.fromCoroutine(self._relay(request)).addErrback(self._failed, request)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Request) -> None:
        if request._disconnected and (isCancellation(failure) or failure.check(UpstreamError)):
            # The client left mid-relay and what it waited for was given up
            # (or failed): the answer has nowhere to go, and the access log
            # already counts the request as a client abort (499).
            self.log.debug("client left before {uri} was answered ({why})",
                           uri=request.uri, why=failure.getErrorMessage())
            return
        error = failure.value
        if isinstance(error, UpstreamError):
            if self.metrics is not None:
                self.metrics.upstreamFailed(error.code)
            writeStoreError(request, error.status, error.code, error.message)
            return
        if failure.check(StateUnavailable):
            self.log.warn("{uri} needs the state store, which is unavailable: {why}",
                          uri=request.uri, why=failure.getErrorMessage())
            writeStoreError(request, 503, "state-unavailable",
                            "the proxy's database is unavailable; try again shortly")
            return
        self.log.failure("relaying {uri} failed", failure, uri=request.uri)
        writeStoreError(request, 500, "internal-error", "the proxy failed to relay this call")

    async def _relay(self, request: Request) -> None:
        body = request.content.read(MAX_REQUEST_BODY + 1) if request.content else b""
        if len(body) > MAX_REQUEST_BODY:
            writeStoreError(request, 413, "request-too-large",
                            f"request body is larger than {MAX_REQUEST_BODY} bytes")
            return
        hasBody = bool(body) or request.requestHeaders.hasHeader(b"content-length")
        # Parsed at most once, by whichever reader first needs it (rules,
        # inventory, stale-answer memory).
        parsedBody = ParsedJSON(body) if body else None
        url = self.upstream.url(request.uri)
        headers = outboundHeaders(request)
        described = None
        if self.rules is not None:
            # The rules' own coroutines, awaited here: no Deferred between
            # them and the relay unless a rule or the state store waits.
            described = await self.rules.storeRequest(request, body, headers,
                                                      parsedBody=parsedBody)
            verdict = await self.rules.verdict(described)
            if isinstance(verdict, Deny):
                for name, value in verdict.headers:
                    request.responseHeaders.setRawHeaders(name, [value])
                writeStoreError(request, verdict.code,
                                getattr(verdict, "errorCode", "forbidden"), verdict.reason)
                return
        asked = self.clock.seconds()
        response = await _untilClientLeaves(request, self.upstream.request(
            request.method, url, headers, body if hasBody else None, parsedBody=parsedBody
        ))
        if self.metrics is not None:
            self.metrics.upstreamAnswered(request.path, self.clock.seconds() - asked)
        if self._needsRewrite(request, response):
            what = f"{request.method.decode()} {request.path.decode('ascii', 'replace')}"
            # The stale agent may have decoded the answer already.
            raw = getattr(response, "decoded", None)
            if raw is None:
                raw = await _untilClientLeaves(request, self.upstream.readBody(response, what))
            document = None
            if described is not None:
                try:
                    raw, document = await self._amend(described, raw)
                except RuleFailed as failed:
                    verdict = failed.verdict()
                    writeStoreError(request, verdict.code, verdict.errorCode, verdict.reason)
                    return
                self.rules.noteAnswer(described, response.code, raw, document)
            try:
                rewritten = rewriteAnswer(raw, publicBaseFor(request, self.publicURL),
                                          self.clock.seconds(), document)
            except ValueError:
                raise UpstreamError(502, "upstream-bad-response",
                                    f"upstream store answered {what} with invalid JSON")
            self.remoteURLs.update(rewritten.remotes)
            for blob in rewritten.blobs:
                try:
                    await settled(self.recordBlob(blob))
                except Exception:
                    self.log.failure("cannot record blob {name}", name=blob.name)
            if request._disconnected:
                return  # counted as a client abort; nothing to write to
            copyResponseHead(response, request, keepLength=False)
            body = encodeFor(request.requestHeaders, request.responseHeaders, rewritten.body)
            if request.method != b"HEAD":
                request.write(body)
            request.finish()
            return
        inflater = self._inflaterFor(request, response)
        copyResponseHead(response, request, keepLength=inflater is None)
        if request.method != b"HEAD":
            addVary(request.responseHeaders)
        if inflater is not None:
            request.responseHeaders.removeHeader(b"content-encoding")
        try:
            await relayBody(response, request, inflater)
        except Exception:
            pass  # BodyRelay logged why and cut the client off; nothing to answer.

    async def _amend(self, described: Any, raw: bytes) -> tuple[bytes, Any]:
        """
        Let the rules amend a refresh, info or find answer; fire with the
        bytes to relay (upstream's own when nothing changed) and their
        decoded form (C{None} when not decoded here), which the rewrite
        then need not parse again.
        """
        for pattern, kind in _AMENDED:
            if pattern.match(described.path):
                break
        else:
            return raw, None
        try:
            answer = json.loads(raw)
        except ValueError:
            return raw, None  # the rewrite reports it
        amended = await self.rules.amended(kind, described, answer)
        if amended is None:
            return raw, answer
        return json.dumps(amended).encode("utf-8"), amended

    @staticmethod
    def _inflaterFor(request: Request, response: IResponse) -> Optional[Inflater]:
        """
        An answer the proxy only relays keeps its coding when the device
        accepts it; otherwise it is decoded on the way.

        @raise UpstreamError: the device does not accept the coding and the
            proxy cannot decode it.
        """
        codings = contentCodings(response.headers)
        if request.method == b"HEAD" or not codings or accepts(request.requestHeaders, codings):
            return None
        try:
            return Inflater(codings)
        except EncodingError as error:
            discardBody(response)
            what = f"{request.method.decode()} {request.path.decode('ascii', 'replace')}"
            raise UpstreamError(502, "upstream-bad-response", f"upstream answered {what} with {error}")

    @staticmethod
    def _needsRewrite(request: Request, response: IResponse) -> bool:
        if request.method == b"HEAD" or not 200 <= response.code < 300:
            return False
        contentType = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        mediaType = contentType.split(b";")[0].strip().lower()
        return mediaType in _JSON_TYPES and _REWRITTEN_PATHS.match(request.path) is not None
