"""
Tests of L{snapstore.store.fillbody}: a body written into a real cache
fill, on a L{Clock}, through a L{StringTransport}; no socket.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import TransportProxyProducer
from twisted.web.client import ResponseDone, ResponseFailed

from snapstore.cache.blobs import BlobCache
from snapstore.http.client import BodyTransport
from snapstore.store.fillbody import (READ_SIZE, BodyIntoFill, SourceGone, SourceStalled,
                                      socketTransport)

DATA = b"0123456789" * 100


def startedFill(case: SynchronousTestCase, clock: Clock) -> Any:
    """
    A started fill of L{DATA} in a new cache of C{case}'s, hashed as it is
    written.
    """
    cache = BlobCache(clock, case.mktemp(), 1 << 20, inThread=maybeDeferred, hashInThread=False)
    fill = cache.beginFill(hashlib.sha3_384(DATA).hexdigest(), len(DATA))
    fill.start()
    return fill


class BodyIntoFillTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fill = startedFill(self, self.clock)
        self.counted: list[int] = []
        self.writer = BodyIntoFill(self.fill, self.clock, 5.0, self.counted.append)
        self.transport = StringTransport()
        self.writer.makeConnection(self.transport)

    def test_wholeBody(self) -> None:
        """
        A body that ends cleanly fires C{done} and leaves the fill to its
        owner: written in full, not finished; its idle timer is gone.
        """
        self.writer.dataReceived(DATA[:400])
        self.writer.dataReceived(DATA[400:])
        self.writer.connectionLost(Failure(ResponseDone()))
        self.successResultOf(self.writer.done)
        self.assertEqual((self.fill.written, self.fill.committed), (len(DATA), False))
        self.assertEqual(self.counted, [400, len(DATA) - 400])
        self.clock.advance(10)
        self.assertEqual(self.transport.producerState, "producing")

    def test_cut(self) -> None:
        """
        A body cut short fails C{done} with L{SourceGone} naming why (the
        reasons inside a L{ResponseFailed}); the fill is not aborted, so
        another source may go on from where this one stopped.
        """
        self.writer.dataReceived(DATA[:300])
        self.writer.connectionLost(Failure(ResponseFailed([Failure(ConnectionLost("reset"))])))
        error = self.failureResultOf(self.writer.done, SourceGone).value
        self.assertIn("reset", str(error))
        self.assertNotIsInstance(error, SourceStalled)
        self.assertEqual((self.fill.written, self.fill.failure), (300, None))

    def test_stalled(self) -> None:
        """
        A body silent for the idle timeout (counted from its last bytes)
        fails C{done} with L{SourceStalled} and is stopped; what arrives
        afterwards is dropped.
        """
        self.clock.advance(4)
        self.writer.dataReceived(DATA[:100])
        self.clock.advance(4)
        self.assertNoResult(self.writer.done)
        self.clock.advance(1)
        self.failureResultOf(self.writer.done, SourceStalled)
        self.assertEqual(self.transport.producerState, "stopped")
        self.writer.dataReceived(DATA[100:200])
        self.writer.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.fill.written, 100)

    def test_failedFillStopsBody(self) -> None:
        """
        Bytes beyond the promised size fail the fill; the body is stopped
        rather than read to its end.
        """
        self.writer.dataReceived(DATA + b"more")
        self.assertIsNotNone(self.fill.failure)
        self.assertEqual(self.transport.producerState, "stopped")


class _Socket:
    """
    Stands for a connection's socket: L{socketTransport} only checks that
    there is one.
    """


class _Connection(FileDescriptor):
    """
    A socket connection as far as L{BodyIntoFill} can tell: a
    L{FileDescriptor} with a C{socket}, read C{bufferSize} at a time.
    """

    socket = _Socket()

    def stopProducing(self) -> None:
        pass


class ReadSizeTests(SynchronousTestCase):
    """
    A body read into a fill is read from its socket L{READ_SIZE} at a time
    while it arrives, and the connection gets its own read size back at
    the end (it may go back to a pool).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.fill = startedFill(self, self.clock)
        self.connection = _Connection(reactor=self.clock)
        self.default = self.connection.bufferSize

    def test_widenedWhileBodyArrives(self) -> None:
        """
        Through Twisted's response-body proxy, the socket connection reads
        L{READ_SIZE} bytes at a time until the body ends.
        """
        self.assertLess(self.default, READ_SIZE)
        writer = BodyIntoFill(self.fill, self.clock, 5.0)
        writer.makeConnection(TransportProxyProducer(self.connection))
        self.assertEqual(self.connection.bufferSize, READ_SIZE)
        writer.dataReceived(DATA)
        writer.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.connection.bufferSize, self.default)
        self.successResultOf(writer.done)

    def test_restoredWhenCut(self) -> None:
        """
        A body cut short gives the connection its read size back too.
        """
        writer = BodyIntoFill(self.fill, self.clock, 5.0)
        writer.makeConnection(TransportProxyProducer(self.connection))
        writer.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.connection.bufferSize, self.default)
        self.failureResultOf(writer.done, SourceGone)

    def test_notWidened(self) -> None:
        """
        C{readSize=None} (a throttled fill) leaves the connection's reads
        as they are; so does a transport with no socket under it.
        """
        writer = BodyIntoFill(self.fill, self.clock, 5.0, readSize=None)
        writer.makeConnection(TransportProxyProducer(self.connection))
        self.assertEqual(self.connection.bufferSize, self.default)
        self.assertIsNone(socketTransport(StringTransport()))

    def test_throughTLS(self) -> None:
        """
        Under TLS the socket connection is the TLS protocol's transport.
        """
        class TLS:
            transport = self.connection

        self.assertIs(socketTransport(TransportProxyProducer(TLS())), self.connection)

    def test_throughSnapstoreClient(self) -> None:
        """
        Through the body transport of L{snapstore.http.client}, the socket
        connection is its connection protocol's transport, widened while
        the body arrives and restored at its end.
        """
        class Protocol:
            transport = self.connection

        writer = BodyIntoFill(self.fill, self.clock, 5.0)
        writer.makeConnection(BodyTransport(Protocol()))  # type: ignore[arg-type]
        self.assertEqual(self.connection.bufferSize, READ_SIZE)
        writer.dataReceived(DATA)
        writer.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.connection.bufferSize, self.default)
