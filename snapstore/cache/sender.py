# -*- test-case-name: tests.test_cache -*-
"""
Sending a byte range of a blob to a connection, with C{sendfile(2)} where
the connection is a plain TCP socket.

C{twisted.web.static.File} reads 64 KiB at a time into Python and writes it
to the transport, which reached 0.46x nginx's throughput here; letting the
kernel copy from the page cache to the socket reaches nginx.  Two things
make that safe inside Twisted:

  - bytes Twisted already buffered for the socket (the response headers)
    must leave before the kernel writes the body, so C{sendfile} is only
    ever called after the transport reported its buffer empty;
  - the socket is non-blocking: when C{sendfile} would block, the sender
    waits for the transport to say it is writable again.

Both come from one mechanism: the transport (a L{FileDescriptor}) calls its
producer's C{resumeProducing} when its buffer has drained, if it believes
that producer paused.  The sender marks the transport's producer (the HTTP
channel) paused and asks the transport to watch for writability; the
channel then resumes the request's producer, which is this sender.

TLS connections (and anything that is not a plain socket) get the same
range through ordinary C{pread} and C{write} calls under push flow control.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Optional

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from snapstore.cache.blobs import FillFailed

#: Most bytes one C{sendfile} call may move; the loop goes on until the
#: socket is full or L{TURN_LIMIT} is reached.
SENDFILE_CHUNK = 2 << 20
#: Most bytes sent before yielding to the reactor, so one fast client on
#: loopback cannot starve the others.
TURN_LIMIT = 32 << 20
#: Bytes per read in the fallback path.
READ_CHUNK = 256 * 1024


def sendfileSocket(transport: Any) -> Optional[int]:
    """
    The socket descriptor C{sendfile} may write to for C{transport}, or
    C{None} when it must not be used (TLS, HTTP/2 streams, wrappers, test
    transports, non-Linux C{sendfile}-less systems).
    """
    if not hasattr(os, "sendfile"):
        return None
    if not isinstance(transport, FileDescriptor):
        return None
    if ISSLTransport.providedBy(transport) or getattr(transport, "TLS", False):
        return None
    sock = getattr(transport, "socket", None)
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        return None
    if not hasattr(transport, "producerPaused"):
        return None
    try:
        return sock.fileno()
    except OSError:
        return None


@implementer(IPushProducer)
class BlobSender:
    """
    Sends bytes C{[start, end)} of an L{IBlobSource} to a consumer (a web
    request) and fires L{done}.

    The source may be a fill in progress: when the sender has caught up
    with it, it waits for progress instead of reading past the end of what
    was verified-so-far.

    @ivar done: fires with the byte count once everything was sent (the
        producer is then unregistered; the caller finishes the request), or
        fails with L{FillFailed} (the source failed) or L{ConnectionLost}.
    @ivar usedSendfile: whether the kernel path is in use.
    """

    log = Logger()

    def __init__(self, source: Any, start: int, end: int, consumer: Any,
                 transport: Any = None, sendfile: bool = True,
                 clock: Any = None) -> None:
        """
        @param consumer: an C{IConsumer} that has already written anything
            that must precede the bytes (the response headers).
        @param transport: the connection's transport, for C{sendfile}.
        @param sendfile: C{False} forces the read/write path.
        @param clock: C{callLater} provider used to yield to other
            connections in the read path (no yielding when C{None}).
        """
        self.source = source
        self.position = start
        self.end = end
        self.consumer = consumer
        self.transport = transport
        self.sent = 0
        self.clock = clock
        self.done: Deferred[int] = Deferred()
        self._socket = sendfileSocket(transport) if sendfile else None
        self.usedSendfile = self._socket is not None
        self._paused = False
        self._waitingWritable = False
        self._waitingData = False
        self._finished = False

    def start(self) -> Deferred[int]:
        """
        Register with the consumer and begin.
        """
        self.consumer.registerProducer(self, True)
        if self.usedSendfile:
            self._awaitWritable()
        else:
            self._pump()
        return self.done

    # -- IPushProducer -----------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self.usedSendfile:
            if not self._waitingWritable:
                return
            self._waitingWritable = False
        self._pump()

    def stopProducing(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.done.errback(Failure(ConnectionLost("the client went away")))

    # -- the work ----------------------------------------------------------

    def _awaitWritable(self) -> None:
        """
        Have the transport resume us once its own buffer is empty and the
        socket takes more.
        """
        transport = self.transport
        if not getattr(transport, "connected", False) or getattr(transport, "disconnecting", False):
            self._fail(Failure(ConnectionLost("the client connection closed")))
            return
        self._waitingWritable = True
        transport.producerPaused = True
        transport.startWriting()

    def _pump(self) -> None:
        turn = 0
        source = self.source
        while not self._finished:
            if source.failure is not None:
                self._fail(Failure(FillFailed(source.failure.getErrorMessage())))
                return
            if self.position >= self.end:
                self._complete()
                return
            limit = min(self.end, source.available())
            if self.position >= limit:
                if not self._waitingData:
                    self._waitingData = True
                    source.notifyProgress(self._progress)
                return
            if turn >= TURN_LIMIT:
                if self.usedSendfile:
                    self._awaitWritable()
                    return
                if self.clock is not None:
                    self.clock.callLater(0, self._pump)
                    return
            if self.usedSendfile:
                try:
                    count = os.sendfile(self._socket, source.fd, self.position,
                                        min(limit - self.position, SENDFILE_CHUNK))
                except BlockingIOError:
                    self._awaitWritable()
                    return
                except OSError as error:
                    self._fail(Failure(ConnectionLost(f"sendfile: {error.strerror}")))
                    return
                if count == 0:
                    self._fail(Failure(FillFailed("blob file is shorter than its size")))
                    return
            else:
                if self._paused:
                    return
                data = os.pread(source.fd, min(limit - self.position, READ_CHUNK), self.position)
                if not data:
                    self._fail(Failure(FillFailed("blob file is shorter than its size")))
                    return
                count = len(data)
            self.position += count
            self.sent += count
            turn += count
            if hasattr(self.consumer, "sentLength"):
                self.consumer.sentLength += count
            if not self.usedSendfile:
                self.consumer.write(data)

    def _progress(self) -> None:
        self._waitingData = False
        if self._finished or self._waitingWritable:
            return
        self._pump()

    def _complete(self) -> None:
        self._finished = True
        self.consumer.unregisterProducer()
        self.done.callback(self.sent)

    def _fail(self, reason: Failure) -> None:
        if self._finished:
            return
        self._finished = True
        self.consumer.unregisterProducer()
        self.done.errback(reason)
