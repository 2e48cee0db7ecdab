# -*- test-case-name: tests.test_store -*-
"""
Requests to the upstream store, with the timeouts and failure mapping that
snapd needs.

snapd abandons an API call after 10 s and a download whose headers take
15 s, so the proxy gives up a little earlier and answers with a store-format
error that says why, instead of letting the device time out blind.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import error as netError
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from twisted.internet.interfaces import IReactorTime

from snapstore.http.bodies import BytesProducer, ParsedJSON
from snapstore.store.compression import DecodedBody, EncodingError, Inflater, contentCodings


class UpstreamError(Exception):
    """
    Upstream did not give a usable answer.

    @ivar status: the HTTP status the client gets (502 or 504).
    @ivar code: the store-format error code.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def isCancellation(failure: Failure) -> bool:
    """
    Whether C{failure} is a request its caller cancelled (the client it
    was for went away), bare or in the agent's own wrapper.
    """
    if failure.check(CancelledError):
        return True
    if not isinstance(failure.value, ResponseFailed):
        return False
    reasons = failure.value.reasons
    return bool(reasons) and all(reason.check(CancelledError) for reason in reasons)


def describeFailure(failure: Failure, what: str, timeout: float) -> UpstreamError:
    """
    Turn a failed upstream request into the error the client should see.
    """
    if isinstance(failure.value, UpstreamError):
        return failure.value
    if failure.check(TimeoutError, CancelledError, netError.TimeoutError):
        return UpstreamError(504, "upstream-timeout",
                             f"upstream store did not answer {what} within {timeout:g}s")
    if failure.check(netError.DNSLookupError):
        return UpstreamError(502, "upstream-unreachable",
                             f"cannot resolve the upstream store for {what}: {failure.getErrorMessage()}")
    if failure.check(netError.ConnectError, netError.ConnectionRefusedError):
        return UpstreamError(502, "upstream-unreachable",
                             f"cannot connect to the upstream store for {what}: {failure.getErrorMessage()}")
    if isinstance(failure.value, ResponseFailed):
        reasons = "; ".join(reason.getErrorMessage() or reason.type.__name__
                            for reason in failure.value.reasons)
        return UpstreamError(502, "upstream-bad-response",
                             f"upstream store sent a broken answer to {what}: {reasons}")
    return UpstreamError(502, "upstream-error",
                         f"upstream store request {what} failed: {failure.getErrorMessage()}")


class StoreUpstream:
    """
    The upstream store's API, reached through an injected agent.

    @ivar base: the upstream base URL as bytes, ending in C{/}.
    """

    log = Logger()

    def __init__(self, agent: IAgent, base: str, clock: IReactorTime, timeout: float,
                 origin: str = "the upstream store") -> None:
        """
        @param origin: where answers come from, as errors that name it
            should say (an offline node: its imported content).
        """
        self.origin = origin
        self.agent = agent
        self.base = base.encode("ascii")
        self.clock = clock
        self.timeout = timeout

    def url(self, relative: bytes) -> bytes:
        """
        The upstream URL for a path (and query) relative to the API base.
        """
        return self.base + relative.lstrip(b"/")

    def request(self, method: bytes, url: bytes, headers: Headers,
                body: Optional[bytes] = None, timeout: Optional[float] = None,
                parsedBody: Optional[ParsedJSON] = None) -> Deferred[IResponse]:
        """
        Send one request and fire with the response once its headers
        arrived, or fail with L{UpstreamError}.

        @param parsedBody: C{body}'s shared parse, handed to the agent with
            the body (L{BytesProducer.parsed}).
        """
        timeout = self.timeout if timeout is None else timeout
        producer = BytesProducer(body, parsedBody) if body is not None else None
        what = f"{method.decode('ascii', 'replace')} {url.decode('ascii', 'replace')}"
        return self._bounded(self.agent.request(method, url, headers, producer), what, timeout)

    def _bounded(self, pending: Deferred[Any], what: str, timeout: float) -> Deferred[Any]:
        """
        Give up on C{pending} after C{timeout} seconds, and turn any failure
        into the L{UpstreamError} the client should see (logged once here).
        """

        def timedOut(result: Any, _timeout: float) -> Failure:
            # Whatever cancelling produced (the agent wraps the cancellation
            # in its own errors), the client is told it timed out.
            return Failure(UpstreamError(504, "upstream-timeout",
                                         f"upstream store did not answer {what} within {timeout:g}s"))

        def failed(failure: Failure) -> Failure:
            if isCancellation(failure):
                return failure  # the caller gave up (its client left): nothing to report
            upstreamError = describeFailure(failure, what, timeout)
            self.log.warn("upstream failure ({code}): {message}",
                          code=upstreamError.code, message=upstreamError.message)
            return Failure(upstreamError)

        pending.addTimeout(timeout, self.clock, onTimeoutCancel=timedOut)
        return pending.addErrback(failed)

    def readBody(self, response: IResponse, what: str, limit: int = 64 << 20,
                 timeout: Optional[float] = None) -> Deferred[bytes]:
        """
        Read a whole (JSON) body that must be parsed or rewritten before
        relaying, undoing its C{Content-Encoding} (gzip, deflate) as it
        arrives.  Neither the body as sent nor as decoded may pass C{limit}
        bytes: reading stops there, so a decompression bomb costs no more
        memory than an honest answer of that size.

        @return: a Deferred firing with the decoded bytes, or failing with
            a 502 L{UpstreamError} naming the problem (too large, a coding
            the proxy cannot decode, corrupt or cut data).
        """
        timeout = self.timeout if timeout is None else timeout
        if isinstance(response.length, int) and response.length > limit:
            response.deliverBody(_Discard())
            return fail(UpstreamError(502, "upstream-bad-response",
                                      f"upstream answer to {what} is larger than {limit} bytes"))
        codings = contentCodings(response.headers)
        try:
            inflater = Inflater(codings, limit) if codings else None
        except EncodingError as error:
            response.deliverBody(_Discard())
            return fail(UpstreamError(502, "upstream-bad-response",
                                      f"upstream answered {what} with {error}"))
        reader = DecodedBody(inflater, limit)
        response.deliverBody(reader)

        def unusable(failure: Failure) -> Failure:
            failure.trap(EncodingError)
            return Failure(UpstreamError(502, "upstream-bad-response",
                                         f"upstream answer to {what} {failure.getErrorMessage()}"))

        return self._bounded(reader.done.addErrback(unusable), what, timeout)


def discardBody(response: IResponse) -> None:
    """
    Drop the body of an answer the proxy will not use, closing its
    connection rather than reading it.
    """
    response.deliverBody(_Discard())


class _Discard(Protocol):
    """
    Drops a body the proxy will not use, closing its connection.
    """

    transport: Any

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()
