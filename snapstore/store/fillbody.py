# -*- test-case-name: tests.test_download,tests.test_cluster -*-
"""
Writing an HTTP body into a cache fill.

Both ways a miss is filled pour a response body into a
L{snapstore.cache.blobs.Fill}: the download path from upstream
(L{snapstore.store.download.DownloadResource.fillFrom}), and the
cluster's filler from a peer, then perhaps from another peer or upstream
where the first one stopped.  So the writer only says how its body ended;
whoever started it decides whether the fill ends or goes on from another
source.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http import PotentialDataLoss as HTTPPotentialDataLoss


#: How many bytes one read from a fill's source connection may take.
#: Twisted reads 64 KiB per C{doRead}; a fill's body goes whole to the
#: disk, so reading it in bigger pieces cuts the Python work (the HTTP
#: parser, the fill's bookkeeping) and the system calls per GiB, which
#: on two cores compete with the hashing thread (bench/cache.py row (d)).
READ_SIZE = 1 << 20


def socketTransport(transport: Any) -> Optional[FileDescriptor]:
    """
    The socket connection under the transport a body protocol was given:
    through the body transport of L{snapstore.http.client}
    (C{connectionTransport}) or of Twisted's client
    (C{_producer}), a throttle's pause (which forwards attributes) and TLS
    (C{transport}); C{None} when there is none (a test transport).
    """
    for _ in range(5):
        if isinstance(transport, FileDescriptor):
            return transport if hasattr(transport, "socket") else None
        transport = (getattr(transport, "connectionTransport", None)
                     or getattr(transport, "_producer", None)
                     or getattr(transport, "transport", None))
    return None


class SourceGone(Exception):
    """
    A body stopped before its end: the connection broke, or the fill
    failed and the body was dropped.  The fill is left as it is.
    """


class SourceStalled(SourceGone):
    """
    A body sent nothing for the idle timeout and was dropped, so that a
    stalled source cannot hold a fill (and every device waiting on it)
    forever.
    """


class BodyIntoFill(Protocol):
    """
    Writes one body into a fill, from the fill's current end, without
    ending the fill.

    @ivar done: fires with C{None} when the body ended whole (as far as
        HTTP can tell: the fill checks size and digest), or fails with
        L{SourceGone} (L{SourceStalled} after the idle timeout).  It fires
        once; bytes arriving after it are dropped.
    """

    #: A TCP transport (or TLS over one) once connected; Twisted types
    #: it as an optional L{ITransport}, which lacks the producer methods
    #: used here.
    transport: Any

    def __init__(self, fill: Any, clock: IReactorTime, idleTimeout: float,
                 counted: Optional[Callable[[int], object]] = None,
                 readSize: Optional[int] = READ_SIZE) -> None:
        """
        @param counted: called with the length of each piece received (the
            upstream byte counter of the metrics), or C{None}.
        @param readSize: how much one read from the source's socket may
            take while this body arrives (L{READ_SIZE}); C{None} leaves
            the connection's own.
        """
        self.fill = fill
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.counted = counted
        self.readSize = readSize
        self.done: Deferred[None] = Deferred()
        self._idle: Any = None
        self._widened: Optional[tuple[FileDescriptor, int]] = None

    def connectionMade(self) -> None:
        self._idle = self.clock.callLater(self.idleTimeout, self._stalled)
        connection = socketTransport(self.transport) if self.readSize else None
        if connection is not None and self.readSize and connection.bufferSize < self.readSize:
            # Only for this body: the connection may go back to a pool.
            self._widened = (connection, connection.bufferSize)
            connection.bufferSize = self.readSize

    def dataReceived(self, data: bytes) -> None:
        if self.done.called or self.fill.failure is not None:
            self._stop()
            return
        self._idle.reset(self.idleTimeout)
        if self.counted is not None:
            self.counted(len(data))
        try:
            self.fill.write(data)
        except OSError:
            # The fill has failed (a full disk) and says why.
            pass
        if self.fill.failure is not None:
            self._stop()

    def _stalled(self) -> None:
        self._idle = None
        self._settle(Failure(SourceStalled(f"sent nothing for {self.idleTimeout:g}s")))
        self._stop()

    def _stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def _settle(self, outcome: Optional[Failure]) -> None:
        if self.done.called:
            return
        if outcome is None:
            self.done.callback(None)
        else:
            self.done.errback(outcome)

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self._widened is not None:
            (connection, size), self._widened = self._widened, None
            connection.bufferSize = size
        if reason is not None and reason.check(ResponseDone, PotentialDataLoss,
                                               HTTPPotentialDataLoss):
            self._settle(None)
            return
        message = reason.getErrorMessage() if reason is not None else "connection lost"
        reasons = getattr(reason.value, "reasons", None) if reason is not None else None
        if reasons is not None:
            # A ResponseFailed: its own message is only a repr of these.
            message = "; ".join(r.getErrorMessage() or r.type.__name__ for r in reasons)
        self._settle(Failure(SourceGone(message)))


__all__ = ["BodyIntoFill", "SourceGone", "SourceStalled"]
