# -*- test-case-name: tests.test_store -*-
"""
Streaming an upstream response body to a client with flow control.

Without back-pressure a relay buffers whatever the fast side sends until
the slow side takes it: feeding one slow client, that grew to 1.5 GB here.
The upstream transport is registered as the client request's producer, so
a client that stops reading pauses the upstream connection.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http import PotentialDataLoss as HTTPPotentialDataLoss
from twisted.web.iweb import IResponse
from twisted.web.server import Request

from snapstore.store.compression import EncodingError, Inflater
from snapstore.http.storeerror import writeStoreError


class BodyRelay(Protocol):
    """
    Receives an upstream body and writes it to a client request.

    @ivar done: fires with the byte count when the whole body was relayed
        and the request finished, or errbacks with the reason it was cut.
    @ivar inflater: undoes the body's C{Content-Encoding} on the way, for a
        client that does not accept it; C{None} relays the bytes as sent.
    """

    #: A TCP transport (or TLS over one) once connected; Twisted types
    #: it as an optional L{ITransport}, which lacks the producer and
    #: abort methods used here.
    transport: Any

    log = Logger()

    def __init__(self, request: Request, expectedLength: int | None = None,
                 inflater: Inflater | None = None) -> None:
        self.request = request
        self.inflater = inflater
        self.expectedLength = expectedLength
        self.relayed = 0
        self.done: Deferred[int] = Deferred()
        self._clientGone = False

    def connectionMade(self) -> None:
        self.request.registerProducer(self.transport, True)
        self.request.notifyFinish().addErrback(self._clientLost)

    def _clientLost(self, reason: Failure) -> None:
        self._clientGone = True
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._clientGone:
            return
        self.relayed += len(data)
        if self.inflater is not None:
            try:
                data = self.inflater.feed(data)
            except EncodingError as error:
                self._undecodable(error)
                return
        self.request.write(data)

    def _undecodable(self, error: EncodingError) -> None:
        """
        The body cannot be decoded (corrupt, or a bomb): stop reading
        upstream, and answer 502 if nothing was sent yet, else cut the
        client off as for a cut transfer.
        """
        self.log.warn("upstream body {error}; not relayed further", error=str(error))
        request = self.request
        self.inflater = None
        self._clientGone = True
        request.unregisterProducer()
        writeStoreError(request, 502, "upstream-bad-response", f"upstream answer {error}")
        if not request.finished:
            abortClient(request)
        if self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        request = self.request
        if not self._clientGone:
            request.unregisterProducer()
        complete = reason.check(ResponseDone) is not None or (
            reason.check(PotentialDataLoss, HTTPPotentialDataLoss) is not None
            and self.expectedLength is None
        )
        if self.expectedLength is not None and self.relayed != self.expectedLength:
            complete = False
        if complete and self.inflater is not None and not self._clientGone:
            try:
                self.inflater.finish()
            except EncodingError as error:
                complete = False
                reason = Failure(error)
        if self._clientGone:
            self.done.errback(Failure(ConnectionDone("client went away")))
        elif complete:
            request.finish()
            self.done.callback(self.relayed)
        else:
            # Cut the client off before the full length, so that it sees a
            # truncated transfer and retries, rather than a short success.
            self.log.warn(
                "upstream body cut after {relayed} bytes: {reason}",
                relayed=self.relayed,
                reason=reason.getErrorMessage(),
            )
            abortClient(request)
            self.done.errback(reason)


def abortClient(request: Request) -> None:
    """
    Cut C{request}'s client off at once (no orderly close): the answer it
    was getting is incomplete, and only an abort tells the client so.
    """
    transport: Any = request.transport
    if transport is not None:
        transport.abortConnection()


def relayBody(response: IResponse, request: Request,
              inflater: Inflater | None = None) -> Deferred[int]:
    """
    Stream C{response}'s body into C{request} and finish it, decoding it
    with C{inflater} when given.
    """
    length = response.length if isinstance(response.length, int) else None
    relay = BodyRelay(request, length, inflater)
    response.deliverBody(relay)
    return relay.done
