# -*- test-case-name: tests.test_forward -*-
"""
Splicing a CONNECT client and its destination together.

The model is L{twisted.protocols.portforward}: each transport is
registered as the other's streaming producer, so when one side's send
buffer fills up, the other side stops being read, and memory stays flat
however fast one side is and however slow the other.  End-of-file is
passed on as a half-close (C{shutdown(SHUT_WR)}), because TLS clients and
servers may finish sending before they finish receiving; the tunnel closes
once both directions have ended, or at once when either side aborts.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class TargetProtocol(Protocol):
    """
    The destination side of a tunnel; everything it hears goes to the
    L{Tunnel} it is attached to once the tunnel starts.
    """

    #: A TCP transport (or TLS over one) once connected; Twisted types
    #: it as an optional L{ITransport}, which lacks the producer and
    #: abort methods used here.
    transport: Any

    #: The tunnel (a L{Tunnel} or L{snapstore.forward.splice.SpliceTunnel}),
    #: attached before the target's first byte is read.
    tunnel: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.tunnel.fromTarget(data)

    def readConnectionLost(self) -> None:
        self.tunnel.targetEnded()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self.tunnel is not None:
            self.tunnel.targetLost(reason)


class Tunnel:
    """
    Bytes flowing both ways between a client transport and a target.

    @ivar up: bytes sent from the client to the target.
    @ivar down: bytes sent from the target to the client.
    @ivar touch: called on every chunk, so the owner can track idleness.
    @ivar onClose: called once with no argument when both sides are gone.
    """

    def __init__(self, client: Any, target: TargetProtocol,
                 touch: Callable[[], None], onClose: Callable[[], None]) -> None:
        self.client = client
        self.target = target
        self.touch = touch
        self.onClose = onClose
        self.up = 0
        self.down = 0
        self.clientEnded = False
        self.targetEndedFlag = False
        self.closed = False
        target.tunnel = self

    def start(self, early: bytes) -> None:
        """
        Wire the producers and send what the client sent ahead of the 200.
        """
        self.target.transport.registerProducer(self.client, True)
        self.client.registerProducer(self.target.transport, True)
        if early:
            self.fromClient(early)

    def fromClient(self, data: bytes) -> None:
        self.up += len(data)
        self.touch()
        self.target.transport.write(data)

    def fromTarget(self, data: bytes) -> None:
        self.down += len(data)
        self.touch()
        self.client.write(data)

    def clientEndedSending(self) -> None:
        """
        The client half-closed: pass the end of file on to the target.
        """
        if self.clientEnded or self.closed:
            return
        self.clientEnded = True
        self.target.transport.unregisterProducer()
        if self.targetEndedFlag:
            self.close()
        else:
            self.target.transport.loseWriteConnection()

    def targetEnded(self) -> None:
        """
        The target half-closed: pass the end of file on to the client.
        """
        if self.targetEndedFlag or self.closed:
            return
        self.targetEndedFlag = True
        self.client.unregisterProducer()
        if self.clientEnded:
            self.close()
        else:
            self.client.loseWriteConnection()

    def close(self) -> None:
        """
        Close both sides after flushing what each still has to send.
        """
        if self.closed:
            return
        self.closed = True
        for transport in (self.client, self.target.transport):
            if transport is not None:
                transport.unregisterProducer()
                transport.loseConnection()
        self.onClose()

    def abort(self) -> None:
        """
        Drop both sides now (idle timeout, shutdown).
        """
        if not self.closed:
            self.closed = True
            self.client.abortConnection()
            self.target.transport.abortConnection()
            self.onClose()

    def clientLost(self, reason: Failure) -> None:
        if not self.closed:
            self.closed = True
            self.target.transport.unregisterProducer()
            self.target.transport.loseConnection()
            self.onClose()

    def targetLost(self, reason: Failure) -> None:
        if not self.closed:
            self.closed = True
            self.client.unregisterProducer()
            self.client.loseConnection()
            self.onClose()
