# -*- test-case-name: tests.test_download -*-
"""
C{GET /api/v1/snaps/download/<name>}: snap blobs, from the cache or from
upstream while the cache fills.

The relay rewrote every download URL of a store answer to this path and
recorded the blob's upstream URL, size and sha3-384 in the state store, so
a download knows what the bytes must be before fetching them.  A miss
starts one upstream transfer (whatever the number of devices asking) into
the cache, and every device is streamed the bytes as they arrive: snapd
gives up when headers take 15 s, so nobody waits for the whole blob.

Upstream answers the API path with a redirect to its CDN; the redirect is
followed here, and the device's credentials are sent to the API host only,
never to the CDN (as snapd itself does, LP#2027993).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional, Union
from urllib.parse import urljoin

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from snapstore.cache.blobs import FillFailed
from snapstore.cache.sender import BlobSender
from snapstore.http.headers import AUTHORIZATION_HEADERS, addVia, endToEnd
from snapstore.interfaces import IBlobCache, IServiceReactor
from snapstore.http.storeerror import writeStoreError
from snapstore.store.fillbody import READ_SIZE, BodyIntoFill, SourceGone, SourceStalled
from snapstore.store.relay import copyResponseHead
from snapstore.store.streaming import abortClient, relayBody
from snapstore.store.upstream import StoreUpstream, UpstreamError, discardBody

DOWNLOAD_PATH = b"api/v1/snaps/download/"
#: snapd abandons a download whose response headers take 15 s; answer
#: with a 504 that says why a little before that.
HEADER_TIMEOUT = 12.0
#: An upstream body that sends nothing for this long is abandoned, so a
#: stalled CDN cannot hold a fill (and every device waiting on it) forever.
IDLE_TIMEOUT = 60.0
MAX_REDIRECTS = 10
BLOB_CONTENT_TYPE = b"application/octet-stream"
UNSATISFIABLE = "unsatisfiable"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_REDIRECT_CODES = frozenset([301, 302, 303, 307, 308])
# Headers of the device's request that must not reach upstream: those the
# outbound connection sets itself, and those that would make a cache fill
# anything but the whole, unencoded blob.
_NOT_FORWARDED = frozenset([b"host", b"content-length", b"range", b"if-range",
                            b"accept-encoding"])
# Never sent past a redirect: the CDN is another party.
_NOT_REDIRECTED = AUTHORIZATION_HEADERS | frozenset([b"cookie", b"cookie2"])
# Upstream refusals that mean something to snapd (402: "please buy").
_PASSED_STATUSES = frozenset([401, 402, 403, 404, 410])

Range = Union[None, str, tuple[int, int]]


def parseRange(value: Optional[bytes | str], size: int) -> Range:
    """
    Interpret a C{Range} header against a blob of C{size} bytes.

    @return: C{None} to send the whole blob (no header, or one this proxy
        does not honour, such as several ranges), L{UNSATISFIABLE}, or
        C{(start, end)} with C{end} exclusive.
    """
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    match = _RANGE.match(value)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return (max(0, size - suffix), size)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    end = min(int(last) + 1, size) if last else size
    return (start, end)


def upstreamHeaders(request: Request, keepRange: bool = False) -> Headers:
    """
    The headers to fetch a blob with on behalf of C{request}: its end to
    end headers (device identity and authorization included, for the API
    host), without what would change the bytes upstream sends.
    """
    drop = _NOT_FORWARDED - {b"range"} if keepRange else _NOT_FORWARDED
    headers = endToEnd(request.requestHeaders, drop=frozenset(drop))
    addVia(headers)
    return headers


def redirectedHeaders(headers: Headers) -> Headers:
    """
    C{headers} without credentials, for a request to a redirect target.
    """
    copy = Headers()
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in _NOT_REDIRECTED:
            copy.setRawHeaders(name, list(values))
    return copy


def checkBlobResponse(response: IResponse, size: int, what: str) -> Optional[UpstreamError]:
    """
    Why upstream's answer to the download of a whole blob of C{size}
    bytes cannot fill the cache, or C{None} when it can.
    """
    if response.code != 200:
        status = response.code if response.code in _PASSED_STATUSES else 502
        return UpstreamError(status, "upstream-bad-response",
                             f"upstream answered {response.code} to the download of {what}")
    if isinstance(response.length, int) and response.length != size:
        return UpstreamError(502, "upstream-bad-response",
                             f"upstream offers {response.length} bytes of {what}, "
                             f"the store said {size}")
    encoding = (response.headers.getRawHeaders(b"content-encoding") or [b"identity"])[0]
    if encoding.strip().lower() != b"identity":
        return UpstreamError(502, "upstream-bad-response",
                             f"upstream sent {what} with content-encoding {encoding!r}")
    return None


class DownloadResource(Resource):
    """
    Serves C{/api/v1/snaps/download/<name>} (C{request.postpath == [name]}).

    @ivar cache: the L{IBlobCache} blobs are kept in.
    @ivar getBlob: C{name -> Deferred[BlobRecord | None]}, what the relay
        recorded about the name.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, reactor: IServiceReactor, upstream: StoreUpstream, state: Any,
                 cache: IBlobCache, headerTimeout: float = HEADER_TIMEOUT,
                 idleTimeout: float = IDLE_TIMEOUT, offline: bool = False,
                 sendfile: bool = True, metrics: Any = None,
                 sendfileThreads: Any = None, throttle: Any = None) -> None:
        """
        @param state: provides C{getBlob(name)} (an L{IStateStore}).
        @param offline: never contact upstream; misses are refused with 404.
        @param sendfile: C{False} disables the kernel copy for hits.
        @param metrics: a L{snapstore.observe.metrics.Metrics} counting the
            blob bytes fetched upstream, or C{None}.
        @param sendfileThreads: L{snapstore.cache.sender.SendfileThreads}
            sending cache hits, or C{None} to send them from the reactor.
        @param throttle: a L{snapstore.uplink.rate.Throttle} every fill's
            upstream body passes (C{--upstream-rate}), or C{None}.
        """
        super().__init__()
        self.metrics = metrics
        self.sendfileThreads = sendfileThreads
        self.clock = reactor
        self.upstream = upstream
        self.getBlob: Callable[[str], Any] = state.getBlob
        self.cache = cache
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.offline = offline
        self.sendfile = sendfile
        self.throttle = throttle
        #: Fills misses instead of L{_startFill} once L{useFiller} gave one.
        self.filler: Any = None

    def useFiller(self, filler: Any) -> None:
        """
        Fill misses with C{filler} instead of L{_startFill}: the cluster's
        L{snapstore.cluster.filler.ClusterFiller} (peers before upstream),
        which is made around this resource and so after it.
        """
        self.filler = filler

    # -- entry ---------------------------------------------------------------

    def render(self, request: Request) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            request.responseHeaders.setRawHeaders(b"allow", [b"GET, HEAD"])
            writeStoreError(request, 405, "method-not-allowed", "downloads take GET and HEAD")
            return NOT_DONE_YET
        postpath = request.postpath or []
        name = postpath[0].decode("ascii", "replace") if len(postpath) == 1 else ""
        if not _NAME.match(name):
            writeStoreError(request, 404, "not-found", "no such download")
            return NOT_DONE_YET
        request.notifyFinish().addErrback(lambda _: None)
        looked = maybeDeferred(self.getBlob, name)
        looked.addCallback(self._serve, request, name)
        looked.addErrback(self._failed, request, name)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Request, name: str) -> None:
        error = failure.value
        if isinstance(error, UpstreamError):
            self.log.warn("download {name} failed: {message}", name=name, message=error.message)
            writeStoreError(request, error.status, error.code, error.message)
            return
        self.log.failure("download {name} failed", failure, name=name)
        writeStoreError(request, 500, "internal-error", f"the proxy failed to serve {name}")

    def _serve(self, record: Any, request: Request, name: str) -> Any:
        if request._disconnected:
            return None
        if record is None:
            if self.offline:
                # Retrying cannot help (snapd would retry a 5xx for 90 s):
                # only importing a bundle that has it can.
                writeStoreError(request, 404, "not-found",
                                f"{name} is unknown to this offline proxy; "
                                f"import a bundle that contains it")
                return None
            # Not a URL the relay handed out: pass it through, unverified.
            url = self.upstream.url(DOWNLOAD_PATH + name.encode("ascii"))
            return self._relayUncached(request, url)
        wanted = parseRange(request.getHeader(b"range"), record.size)
        if wanted == UNSATISFIABLE:
            request.responseHeaders.setRawHeaders(b"content-range", [b"bytes */%d" % record.size])
            writeStoreError(request, 416, "range-not-satisfiable",
                            f"{name} has {record.size} bytes")
            return None
        digest = record.sha3_384
        blob = self.cache.open(digest)
        if blob is not None:
            self.sendBlob(request, blob, wanted, b"HIT")
            return None
        if request.method == b"HEAD":
            self._writeHead(request, record.size, wanted, b"MISS")
            request.finish()
            return None
        fill = self.cache.filling(digest)
        if fill is None:
            if self.offline:
                writeStoreError(request, 404, "not-found",
                                f"{name} is not in the cache of this offline proxy; "
                                f"import a bundle that contains it")
                return None
            fill = self.cache.beginFill(digest, record.size)
            if fill is None:
                self.log.warn("no room in the cache for {name} ({size} bytes); serving it uncached",
                              name=name, size=record.size)
                return self._relayUncached(request, record.url.encode("ascii"))
            if self.filler is not None:
                self.filler.startFill(fill, record, request)
            else:
                self._startFill(fill, record, upstreamHeaders(request))
        started = fill.whenStarted()
        started.addCallback(lambda _: self.joinFill(request, fill, wanted))
        started.addErrback(self._failed, request, name)
        return None

    # -- answers ---------------------------------------------------------------

    def _writeHead(self, request: Request, size: int, wanted: Range, cache: bytes) -> tuple[int, int]:
        start, end = wanted if isinstance(wanted, tuple) else (0, size)
        headers = request.responseHeaders
        if isinstance(wanted, tuple):
            request.setResponseCode(206)
            headers.setRawHeaders(b"content-range", [b"bytes %d-%d/%d" % (start, end - 1, size)])
        headers.setRawHeaders(b"content-type", [BLOB_CONTENT_TYPE])
        headers.setRawHeaders(b"content-length", [b"%d" % (end - start)])
        headers.setRawHeaders(b"accept-ranges", [b"bytes"])
        headers.setRawHeaders(b"x-cache", [cache])
        return start, end

    def joinFill(self, request: Request, fill: Any, wanted: Range) -> None:
        """
        Stream a fill in progress to C{request} (a device's, or another
        node's through L{snapstore.cluster.peer.PeerResource}).
        """
        if request._disconnected:
            return
        try:
            reader = fill.openReader()
        except FillFailed as error:
            writeStoreError(request, 502, "upstream-bad-response", str(error))
            return
        self.sendBlob(request, reader, wanted, b"MISS")

    def sendBlob(self, request: Request, source: Any, wanted: Range, cache: bytes) -> None:
        """
        Answer C{request} with C{source} (a cached blob or a fill's reader,
        closed once sent), the C{wanted} range of it, and C{X-Cache: cache};
        a fill that fails meanwhile cuts the answer short.
        """
        start, end = self._writeHead(request, source.size, wanted, cache)
        if request.method == b"HEAD" or start == end:
            source.close()
            request.write(b"")
            request.finish()
            return
        request.write(b"")
        sender = BlobSender(source, start, end, request, request.transport,
                            sendfile=self.sendfile, clock=self.clock,
                            threads=self.sendfileThreads)
        request.notifyFinish().addErrback(lambda _: sender.stopProducing())

        def sent(_: int) -> None:
            source.close()
            if not request._disconnected:
                request.finish()

        def cut(reason: Failure) -> None:
            source.close()
            if reason.check(FillFailed):
                self.log.warn("cutting off {uri} after {sent} bytes: {why}",
                              uri=request.uri, sent=sender.sent, why=reason.getErrorMessage())
                abortClient(request)

        sender.start().addCallbacks(sent, cut)

    # -- upstream --------------------------------------------------------------

    def fetch(self, method: bytes, url: bytes, headers: Headers) -> Deferred[IResponse]:
        """
        Request C{url}, following redirects (credentials dropped past the
        first hop), within the header timeout overall.

        @return: a Deferred firing with the final L{IResponse}.
        """
        return Deferred.fromCoroutine(self._fetch(method, url, headers))

    async def _fetch(self, method: bytes, url: bytes, headers: Headers) -> IResponse:
        deadline = self.clock.seconds() + self.headerTimeout
        for _ in range(MAX_REDIRECTS + 1):
            remaining = max(0.5, deadline - self.clock.seconds())
            response = await self.upstream.request(method, url, headers, timeout=remaining)
            location = response.headers.getRawHeaders(b"location")
            if response.code not in _REDIRECT_CODES or not location:
                return response
            discardBody(response)
            url = urljoin(url.decode("ascii"), location[0].decode("ascii")).encode("ascii")
            headers = redirectedHeaders(headers)
            if response.code == 303:
                method = b"GET" if method != b"HEAD" else method
        raise UpstreamError(502, "upstream-bad-response",
                            f"upstream redirected more than {MAX_REDIRECTS} times")

    def prefetch(self, record: Any, throttle: Any = None) -> Optional[Any]:
        """
        Start filling C{record}'s blob for no device (a followed channel's
        new revision), unless it is cached or being filled already.

        @param throttle: an extra L{snapstore.uplink.rate.Throttle}
            (C{--prefetch-rate}) on top of L{throttle}.
        @return: the L{Fill} to watch, or C{None} when there is nothing to
            do (cached, or no room).
        """
        if self.offline or self.cache.contains(record.sha3_384):
            return None
        fill = self.cache.filling(record.sha3_384)
        if fill is not None:
            return fill
        fill = self.cache.beginFill(record.sha3_384, record.size)
        if fill is not None:
            headers = Headers()
            addVia(headers)
            self._startFill(fill, record, headers, throttle)
        return fill

    def _startFill(self, fill: Any, record: Any, headers: Headers, throttle: Any = None) -> None:
        """
        Fetch C{record}'s blob into C{fill}; the transfer lives on if the
        device that caused it goes away (others may be waiting, and the
        blob is worth having).
        """
        what = record.name
        fetching = self.fetch(b"GET", record.url.encode("ascii"), headers)

        def answered(response: IResponse) -> None:
            problem = checkBlobResponse(response, fill.size, what)
            if problem is not None:
                discardBody(response)
                raise problem
            self.fillFrom(fill, response, what, throttle)

        def failed(failure: Failure) -> None:
            if not failure.check(UpstreamError):
                self.log.failure("fetching {what} failed", failure, what=what)
                failure = Failure(UpstreamError(502, "upstream-error",
                                                f"fetching {what} failed: {failure.getErrorMessage()}"))
            else:
                self.log.warn("cannot fetch {what}: {message}", what=what,
                              message=getattr(failure.value, "message", ""))
            fill.abort(failure)

        fetching.addCallback(answered).addErrback(failed)

    def fillFrom(self, fill: Any, response: IResponse, what: str,
                 throttle: Any = None) -> Deferred[bool]:
        """
        Write the rest of the blob from upstream C{response} (checked
        already) into C{fill}, and end the fill the way the body ends:
        committed if it verifies, aborted if it is cut, stalls or does not
        verify.  Upstream bytes are counted in the metrics and pass
        C{--upstream-rate} (L{throttle}) like every upstream fill's.

        @param throttle: an extra throttle (C{--prefetch-rate}), or C{None}.
        @return: a Deferred firing with C{True} once the blob is committed,
            C{False} once the fill failed (the reason is in its C{failure}).
        """
        if self.throttle is not None:
            throttle = self.throttle.joined(throttle)
        # A throttled body keeps the connection's reads, so that the
        # throttle meters it in the pieces it was tuned for.
        writer = BodyIntoFill(fill, self.clock, self.idleTimeout,
                              self.metrics.fetchedUpstream if self.metrics is not None else None,
                              readSize=READ_SIZE if not throttle else None)
        fill.start()
        response.deliverBody(writer if throttle is None else throttle.wrap(writer))

        def ended(_: None) -> Deferred[bool] | bool:
            return fill.finish() if fill.failure is None else False

        def cut(reason: Failure) -> bool:
            reason.trap(SourceGone)
            if reason.check(SourceStalled):
                message = f"upstream sent nothing for {self.idleTimeout:g}s while downloading {what}"
            else:
                message = (f"upstream transfer of {what} broke off after {fill.written} of "
                           f"{fill.size} bytes: {reason.getErrorMessage()}")
            fill.abort(Failure(FillFailed(message)))
            return False

        def logged(committed: bool) -> bool:
            if committed:
                self.log.info("cached {what} ({size} bytes, sha3-384 {digest})",
                              what=what, size=fill.size, digest=fill.digest)
            return committed

        return writer.done.addCallbacks(ended, cut).addCallback(logged)

    def _relayUncached(self, request: Request, url: bytes) -> Deferred[Any]:
        """
        Stream an upstream download through without caching or verifying
        it (the Range header goes upstream as the device sent it).
        """
        fetching = self.fetch(request.method, url, upstreamHeaders(request, keepRange=True))

        def relay(response: IResponse) -> Any:
            copyResponseHead(response, request, keepLength=True)
            request.responseHeaders.setRawHeaders(b"x-cache", [b"MISS"])
            if self.throttle is not None:
                response = self.throttle.wrapResponse(response)
            relayed = relayBody(response, request)
            if self.metrics is not None:
                relayed.addCallback(self.metrics.fetchedUpstream)
            relayed.addErrback(lambda failure: self.log.warn(
                "uncached download {url} cut: {why}", url=url, why=failure.getErrorMessage()))
            return None

        return fetching.addCallback(relay)
