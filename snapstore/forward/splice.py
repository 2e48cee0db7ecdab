# -*- test-case-name: tests.test_forward -*-
"""
Zero-copy tunnels: bytes move socket -> pipe -> socket inside the kernel
with C{splice(2)}, never entering Python.

A tunnel spends nearly all its time copying; doing that in the kernel
frees the reactor for everything else and keeps memory flat, since the
only buffers are two pipes per tunnel.  Flow control is the same as with
L{snapstore.forward.tunnel.Tunnel}: while a direction's pipe cannot be
drained into its destination, its source is not read.

L{SpliceTunnel} takes the two TCP sockets away from their Twisted
transports (which stop reading and writing), registers its own
descriptors with the reactor, and gives the sockets back for closing, so
the protocols still see C{connectionLost} and every counter and log line
stays correct.  L{canSplice} says when this is possible: Linux
C{os.splice}, plain TCP transports on a reactor that accepts foreign
descriptors; otherwise the copying L{Tunnel} is used.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

PIPE_SIZE = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_MAX_ROUNDS = 16

from snapstore.interfaces import IServiceReactor


def canSplice(reactor: IServiceReactor, client: Any, target: Any) -> bool:
    """
    Whether L{SpliceTunnel} can carry a tunnel between these transports:
    both plain TCP transports of L{twisted.internet.tcp} (not TLS, not
    in-memory), on Linux, on a reactor taking foreign descriptors.
    """
    if not hasattr(os, "splice") or not hasattr(reactor, "addReader"):
        return False
    for transport in (client, target):
        if type(transport).__module__ != "twisted.internet.tcp":
            return False
        if not isinstance(getattr(transport, "socket", None), socket.socket):
            return False
        if getattr(transport, "TLS", False) or not getattr(transport, "connected", False):
            return False
        if not hasattr(transport, "_tempDataBuffer"):
            return False
    return True


def _takeBuffer(transport: Any) -> bytes:
    """
    Remove and return what a transport has not written yet.
    """
    pending = bytes(transport.dataBuffer[transport.offset:]) + b"".join(
        transport._tempDataBuffer)
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    return pending


class _Direction:
    """
    One way through the tunnel: C{src} socket -> pipe -> C{dst} socket.
    """

    def __init__(self, src: int, dst: int, dstSocket: socket.socket, pending: bytes,
                 count: Callable[[int], None]) -> None:
        self.src = src
        self.dst = dst
        self.dstSocket = dstSocket
        self.pending = pending
        self.count = count
        self.readEnd, self.writeEnd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.writeEnd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
        except OSError:
            pass
        try:
            self.capacity = fcntl.fcntl(self.writeEnd, getattr(fcntl, "F_GETPIPE_SZ", 1032))
        except OSError:
            self.capacity = 65536
        self.inPipe = 0
        self.eof = False
        self.finished = False
        self.wantRead = True
        self.wantWrite = False
        # With a limit (a fixed-length body), stop after that many bytes
        # and leave the sockets open; C{truncated} if the source ended first.
        self.limit: Optional[int] = None
        self.truncated = False

    def pump(self) -> None:
        """
        Move what can be moved now: drain the pipe (and any user-space
        prefix) into the destination, refill it from the source while it
        has room.  Reading continues while the destination is slow, up to
        the pipe's capacity, so both sockets stay busy; a full pipe stops
        reading, which is the back-pressure.  Then record whether the
        source should be read and the destination waited on.

        @raise OSError: on connection errors (reset, broken pipe).
        """
        dstBlocked = False
        for _ in range(_MAX_ROUNDS):
            progress = False
            if self.pending:
                try:
                    sent = os.write(self.dst, self.pending)
                except BlockingIOError:
                    sent, dstBlocked = 0, True
                if sent:
                    self.pending = self.pending[sent:]
                    self.count(sent)
                    progress = True
                dstBlocked = dstBlocked or bool(self.pending)
            if self.inPipe and not self.pending:
                try:
                    moved = os.splice(self.readEnd, self.dst, self.inPipe, flags=_FLAGS)
                except BlockingIOError:
                    moved, dstBlocked = 0, True
                if moved:
                    self.inPipe -= moved
                    self.count(moved)
                    progress = True
                dstBlocked = dstBlocked or bool(self.inPipe)
            room = self.capacity - self.inPipe
            if not self.eof and room > 0:
                size = room if self.limit is None else min(room, self.limit)
                try:
                    got = os.splice(self.src, self.writeEnd, size, flags=_FLAGS)
                except BlockingIOError:
                    got = -1
                if got == 0:
                    self.eof = True
                    self.truncated = self.limit is not None
                    progress = True
                elif got > 0:
                    self.inPipe += got
                    progress = True
                    if self.limit is not None:
                        self.limit -= got
                        if self.limit == 0:
                            self.eof = True
            if self.eof and not self.inPipe and not self.pending:
                if not self.finished:
                    self.finished = True
                    if self.limit is None:
                        try:
                            self.dstSocket.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                self.wantRead = self.wantWrite = False
                return
            if not progress or dstBlocked:
                break
        self.wantRead = not self.eof and self.inPipe < self.capacity
        self.wantWrite = bool(self.inPipe or self.pending)

    def close(self) -> None:
        for fd in (self.readEnd, self.writeEnd):
            try:
                os.close(fd)
            except OSError:
                pass


@implementer(IReadDescriptor, IWriteDescriptor)
class _End:
    """
    The reactor's view of one tunnel socket while the tunnel owns it.
    """

    def __init__(self, tunnel: "SpliceTunnel | SpliceBody", fd: int, name: str) -> None:
        self.tunnel = tunnel
        self.fd = fd
        self.name = name
        self.reading = False
        self.writing = False

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return f"SpliceTunnel({self.name})"

    def doRead(self) -> None:
        self.tunnel.ready(self, readable=True)

    def doWrite(self) -> None:
        self.tunnel.ready(self, readable=False)

    def connectionLost(self, reason: Failure) -> None:
        self.tunnel.abort()


class SpliceTunnel:
    """
    A tunnel between two TCP transports, spliced in the kernel.  Same
    interface as L{snapstore.forward.tunnel.Tunnel}.
    """

    log = Logger()

    def __init__(self, reactor: IServiceReactor, client: Any, target: Any,
                 touch: Callable[[], None], onClose: Callable[[], None]) -> None:
        self.reactor = reactor
        self.client = client
        self.target = target
        self.touch = touch
        self.onClose = onClose
        self.up = 0
        self.down = 0
        self.closed = False
        target.tunnel = self
        self._directions: list[_Direction] = []
        self._ends: list[_End] = []

    def _countUp(self, n: int) -> None:
        self.up += n

    def _countDown(self, n: int) -> None:
        self.down += n

    def start(self, early: bytes) -> None:
        client, target = self.client, self.target.transport
        for transport in (client, target):
            transport.stopReading()
            transport.stopWriting()
        # What the transports still had to send: to the client, the
        # proxy's own 200 (not payload); to the target, nothing normally.
        toClient = _takeBuffer(client)
        toTarget = _takeBuffer(target)
        clientFd, targetFd = client.fileno(), target.fileno()
        self.upward = _Direction(clientFd, targetFd, target.socket, toTarget + early,
                                 self._countUp)
        self.downward = _Direction(targetFd, clientFd, client.socket, toClient,
                                   self._greetingCounter(len(toClient)))
        self._directions = [self.upward, self.downward]
        self.clientEnd = _End(self, clientFd, "client")
        self.targetEnd = _End(self, targetFd, "target")
        self._ends = [self.clientEnd, self.targetEnd]
        self._pumpAll()

    def _greetingCounter(self, greeting: int) -> Callable[[int], None]:
        remaining = [greeting]

        def count(n: int) -> None:
            skip = min(n, remaining[0])
            remaining[0] -= skip
            self.down += n - skip

        return count

    def ready(self, end: _End, readable: bool) -> None:
        if self.closed:
            return
        self.touch()
        # Only the direction this event concerns: readable client or
        # writable target moves data upward, the other two downward.
        upward = (end is self.clientEnd) == readable
        self._pumpAll(self.upward if upward else self.downward)

    def _pumpAll(self, only: Optional[_Direction] = None) -> None:
        try:
            for direction in self._directions:
                if only is not None and direction is not only:
                    continue
                if not direction.finished or direction.pending or direction.inPipe:
                    direction.pump()
        except OSError as error:
            if error.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN,
                                   errno.EBADF):
                self.log.warn("tunnel splice failed: {error}", error=error)
            self.abort()
            return
        if self.upward.finished and self.downward.finished:
            self.close()
            return
        self._register()

    def _register(self) -> None:
        up, down = self.upward, self.downward
        # The client socket is read for the upward direction and written
        # for the downward one; the target socket the other way round.
        self._want(self.clientEnd, up.wantRead, down.wantWrite)
        self._want(self.targetEnd, down.wantRead, up.wantWrite)

    def _want(self, end: _End, read: bool, write: bool) -> None:
        if read != end.reading:
            (self.reactor.addReader if read else self.reactor.removeReader)(end)
            end.reading = read
        if write != end.writing:
            (self.reactor.addWriter if write else self.reactor.removeWriter)(end)
            end.writing = write

    def _release(self) -> None:
        for end in self._ends:
            if end.reading:
                self.reactor.removeReader(end)
                end.reading = False
            if end.writing:
                self.reactor.removeWriter(end)
                end.writing = False
        for direction in self._directions:
            direction.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._release()
        self.client.loseConnection()
        self.target.transport.loseConnection()
        self.onClose()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._release()
        self.client.abortConnection()
        self.target.transport.abortConnection()
        self.onClose()

    def clientEndedSending(self) -> None:
        """
        Not used: in splice mode the end of file is read by the splice.
        """

    def fromClient(self, data: bytes) -> None:
        # Cannot happen once started: the client transport no longer reads.
        self.upward.pending += data
        self._pumpAll()

    def fromTarget(self, data: bytes) -> None:
        self.downward.pending += data
        self._pumpAll()

    def targetEnded(self) -> None:
        pass

    def clientLost(self, reason: Failure) -> None:
        self.abort()

    def targetLost(self, reason: Failure) -> None:
        self.abort()


class SpliceBody:
    """
    Moves the rest of a fixed-length response body from the origin socket
    to the client socket in the kernel, then gives both sockets back to
    their transports (keep-alive goes on as usual).

    @ivar moved: body bytes delivered to the client so far.
    """

    log = Logger()

    def __init__(self, reactor: IServiceReactor, source: Any, destination: Any, length: int,
                 touch: Callable[[], None], done: Callable[[Optional[str]], None]) -> None:
        self.reactor = reactor
        self.source = source
        self.destination = destination
        self.length = length
        self.touch = touch
        self.done = done
        self.moved = 0
        self.closed = False

    @staticmethod
    def possible(reactor: IServiceReactor, source: Any, destination: Any) -> bool:
        """
        Whether the body can be spliced: both plain TCP, and the origin has
        nothing left to send (its request went out completely).
        """
        return canSplice(reactor, destination, source) and not source.dataBuffer[
            source.offset:] and not source._tempDataLen

    def _count(self, n: int) -> None:
        self.moved += n

    def start(self) -> None:
        source, destination = self.source, self.destination
        source.stopReading()
        source.stopWriting()
        destination.stopReading()
        destination.stopWriting()
        head = _takeBuffer(destination)
        skip = [len(head)]

        def count(n: int) -> None:
            taken = min(n, skip[0])
            skip[0] -= taken
            self.moved += n - taken

        self.direction = _Direction(source.fileno(), destination.fileno(), destination.socket,
                                    head, count)
        self.direction.limit = self.length
        if self.length == 0:
            self.direction.eof = True
        self.sourceEnd = _End(self, source.fileno(), "origin")
        self.destinationEnd = _End(self, destination.fileno(), "client")
        self._pump()

    def ready(self, end: _End, readable: bool) -> None:
        if not self.closed:
            self.touch()
            self._pump()

    def _pump(self) -> None:
        direction = self.direction
        try:
            direction.pump()
        except OSError as error:
            self._finish(f"splicing the body failed: {error.strerror}")
            return
        if direction.finished:
            self._finish("upstream closed before the whole body" if direction.truncated
                         else None)
            return
        self._set(self.sourceEnd, "reading", direction.wantRead, self.reactor.addReader,
                  self.reactor.removeReader)
        self._set(self.destinationEnd, "writing", direction.wantWrite, self.reactor.addWriter,
                  self.reactor.removeWriter)

    @staticmethod
    def _set(end: _End, attribute: str, wanted: bool, add: Any, remove: Any) -> None:
        if getattr(end, attribute) != wanted:
            (add if wanted else remove)(end)
            setattr(end, attribute, wanted)

    def _finish(self, problem: Optional[str]) -> None:
        if self.closed:
            return
        self.closed = True
        self._set(self.sourceEnd, "reading", False, self.reactor.addReader,
                  self.reactor.removeReader)
        self._set(self.destinationEnd, "writing", False, self.reactor.addWriter,
                  self.reactor.removeWriter)
        self.direction.close()
        self.done(problem)

    def abort(self) -> None:
        self._finish("aborted")
