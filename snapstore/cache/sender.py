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
import select
import socket
from typing import Any, Optional

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from snapstore.interfaces import IServiceReactor
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


#: How long a sending thread waits for the socket before checking whether
#: it was told to stop.
POLL_INTERVAL = 0.2
#: Ranges shorter than this are sent by the reactor: the socket takes most
#: of them at once, and a thread hand-over would only add latency.
THREAD_THRESHOLD = 8 << 20


class SendfileThreads:
    """
    A few threads that send complete blobs with C{sendfile} and C{poll}.

    Through the reactor each refill of the socket costs an epoll round and
    some Python; on a busy machine that left the socket idle often enough
    to cost 10-25% against nginx.  A thread blocked in C{poll} refills it
    as soon as the kernel says so, and holds the GIL only between system
    calls.  When all threads are busy, senders use the reactor path.

    @ivar maxThreads: how many blobs may be sent by threads at once.
    @ivar sends: how many ranges threads were given so far.
    @ivar minimum: ranges shorter than this stay with the reactor.
    """

    def __init__(self, reactor: IServiceReactor, maxThreads: int = 16,
                 minimum: int = THREAD_THRESHOLD) -> None:
        self.reactor = reactor
        self.maxThreads = maxThreads
        self.minimum = minimum
        self.pool = ThreadPool(minthreads=0, maxthreads=maxThreads, name="snapstore-sendfile")
        self.active: set[_ThreadedSend] = set()
        self.sends = 0
        self.stopped = False
        reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    def available(self) -> bool:
        return not self.stopped and len(self.active) < self.maxThreads

    def stop(self) -> None:
        """
        Tell every sending thread to give up, then join them.
        """
        if self.stopped:
            return
        self.stopped = True
        for send in list(self.active):
            send.stopped = True
        if self.pool.started:
            self.pool.stop()

    def send(self, sockfd: int, fd: int, start: int, end: int) -> tuple[Deferred[int], _ThreadedSend]:
        if not self.pool.started:
            self.pool.start()
        send = _ThreadedSend(sockfd, fd, start, end)
        self.active.add(send)
        self.sends += 1
        sending = deferToThreadPool(self.reactor, self.pool, send.run)

        def done(result: Any) -> Any:
            self.active.discard(send)
            return result

        return sending.addBoth(done), send


class _ThreadedSend:
    """
    One blob range sent by a thread.  The socket is duplicated first, so
    that if the reactor closes the connection meanwhile, this thread never
    writes to whatever reuses the descriptor number.
    """

    def __init__(self, sockfd: int, fd: int, start: int, end: int) -> None:
        self.sockfd = os.dup(sockfd)
        self.fd = os.dup(fd)
        self.position = start
        self.end = end
        self.sent = 0
        self.stopped = False

    def run(self) -> int:
        poller = select.poll()
        poller.register(self.sockfd, select.POLLOUT)
        try:
            while self.position < self.end:
                if self.stopped:
                    raise ConnectionLost("sending stopped")
                try:
                    count = os.sendfile(self.sockfd, self.fd, self.position,
                                        min(self.end - self.position, SENDFILE_CHUNK))
                except BlockingIOError:
                    for _, events in poller.poll(POLL_INTERVAL * 1000):
                        if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                            raise ConnectionLost("the client connection closed")
                    continue
                except OSError as error:
                    raise ConnectionLost(f"sendfile: {error.strerror}")
                if count == 0:
                    raise FillFailed("blob file is shorter than its size")
                self.position += count
                self.sent += count
            return self.sent
        finally:
            os.close(self.sockfd)
            os.close(self.fd)


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
                 clock: Optional[IReactorTime] = None, threads: Optional[SendfileThreads] = None) -> None:
        """
        @param consumer: an C{IConsumer} that has already written anything
            that must precede the bytes (the response headers).
        @param transport: the connection's transport, for C{sendfile}.
        @param sendfile: C{False} forces the read/write path.
        @param clock: C{callLater} provider used to yield to other
            connections in the read path (no yielding when C{None}).
        @param threads: L{SendfileThreads} that send complete blobs, if
            one is free; otherwise the reactor sends.
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
        self._threads = threads
        self._threaded: Optional[_ThreadedSend] = None
        self.usedThread = False

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
        if self._threaded is not None:
            self._threaded.stopped = True
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

    def _handOver(self) -> bool:
        """
        Once the headers left, give a complete blob to a sending thread.
        """
        threads = self._threads
        if (threads is None or self._socket is None or self.usedThread
                or not threads.available()
                or self.source.failure is not None
                or self.source.available() < self.end
                or self.end - self.position < threads.minimum):
            return False
        self.usedThread = True
        sending, threaded = threads.send(self._socket, self.source.fd, self.position, self.end)
        self._threaded = threaded

        def sent(count: int) -> None:
            self.position += count
            self.sent += count
            if hasattr(self.consumer, "sentLength"):
                self.consumer.sentLength += count
            if not self._finished:
                self._complete()

        def failed(reason: Failure) -> None:
            # Count what left before the cut, for the access log.
            self.sent += threaded.sent
            if hasattr(self.consumer, "sentLength"):
                self.consumer.sentLength += threaded.sent
            if not self._finished:
                self._fail(reason)

        sending.addCallbacks(sent, failed)
        return True

    def _pump(self) -> None:
        if self.usedSendfile and self._handOver():
            return
        if self.usedThread:
            return
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
            if self.usedSendfile and self._socket is not None:
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
