"""
Unit tests of the forward proxy's connection (L{snapstore.forward.channel})
and its absolute-URI relay (L{snapstore.forward.relay}): the protocol on a
L{StringTransport}, time on a L{MemoryReactorClock}, names and dialing
answered in memory; no socket, no process.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from snapstore.forward.factory import ForwardProxyFactory
from snapstore.observe.accesslog import AccessLog
from tests.forwardhelpers import proxySettings


class TCPLikeTransport(StringTransport):
    """
    A L{StringTransport} that, like a TCP transport, accepts
    C{unregisterProducer} when no producer is registered.
    """

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class MemoryDialer:
    """
    Records what the channel dials and lets the test connect it.
    """

    viaParent = False

    def __init__(self) -> None:
        self.dialed: list[tuple[str, int, tuple[str, ...], Deferred[Any]]] = []

    def dial(self, host: str, port: int, addresses: Any, factory: Any) -> Deferred[Any]:
        waiting: Deferred[Any] = Deferred()
        self.dialed.append((host, port, tuple(addresses), waiting))
        self.factory = factory
        return waiting

    tunnel = dial

    def connect(self) -> StringTransport:
        """
        Let the last dial succeed: its protocol on a fresh transport.
        """
        protocol = self.factory.buildProtocol(None)
        transport = TCPLikeTransport()
        transport.connected = True
        protocol.makeConnection(transport)
        self.dialed[-1][3].callback(protocol)
        self.target = protocol
        return transport


class ChannelUnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.dialer = MemoryDialer()
        self.settings = proxySettings(self, proxy_header_timeout="5",
                                      proxy_connect_ports="443")
        self.factory = ForwardProxyFactory(
            self.clock, self.settings, clock=self.clock, dialer=self.dialer,
            resolver=lambda host, port: succeed(("93.184.216.34",)),
            accessLog=AccessLog(None), splice=False)

    def connect(self) -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = TCPLikeTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 3128))
        protocol.makeConnection(transport)
        return protocol, transport

    def lastEntry(self) -> Any:
        return self.factory.accessLog.entries[-1]

    def test_headTimeout(self) -> None:
        """
        A client that does not complete its request head within the header
        timeout is dropped, and the access log says so (408).
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"CONNECT example.com:443 HTTP/1.1\r\nHost: exa")
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnected)
        self.assertEqual((self.lastEntry().status, self.lastEntry().note),
                         (408, "request head not completed in time"))

    def test_requestLineTooLong(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET http://example.com/" + b"a" * (9 << 10))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 414 "), transport.value()[:80])
        self.assertTrue(transport.disconnecting)

    def test_httpsInAbsoluteForm(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))
        self.assertIn(b"use CONNECT for https:// URLs", transport.value())

    def test_connectPortRefused(self) -> None:
        """
        A CONNECT to a port the settings do not allow is refused (403) and
        nothing is dialed.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"CONNECT example.com:25 HTTP/1.1\r\nHost: example.com:25\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "), transport.value()[:80])
        self.assertEqual(self.dialer.dialed, [])

    def test_tunnel(self) -> None:
        """
        An admitted CONNECT dials the resolved address; once connected the
        client gets 200 and bytes flow both ways, early bytes included.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
                              b"early")
        [(host, port, addresses, _)] = self.dialer.dialed
        self.assertEqual((host, port, addresses), ("example.com", 443, ("93.184.216.34",)))
        target = self.dialer.connect()
        self.assertEqual(transport.value(), b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.assertEqual(target.value(), b"early")
        protocol.dataReceived(b" more")
        self.dialer.target.dataReceived(b"answer")
        self.assertEqual(target.value(), b"early more")
        self.assertTrue(transport.value().endswith(b"answer"))
        self.assertEqual(self.factory.tunnels, 1)

    def test_relayedRequest(self) -> None:
        """
        An absolute-form request is sent to the origin in origin form with
        this proxy's C{Via}; the origin's answer reaches the client, and
        the access log records it.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET http://example.com/path?q=1 HTTP/1.1\r\n"
                              b"Host: example.com\r\nConnection: close\r\n\r\n")
        [(host, port, _, _)] = self.dialer.dialed
        self.assertEqual((host, port), ("example.com", 80))
        origin = self.dialer.connect()
        head = origin.value().split(b"\r\n")
        self.assertEqual(head[0], b"GET /path?q=1 HTTP/1.1")
        self.assertIn(b"Host: example.com", head)
        self.assertIn(b"Via: 1.1 snapstore", head)
        self.dialer.target.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.value().endswith(b"\r\n\r\nhi"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual((self.lastEntry().status, self.lastEntry().target),
                         (200, "http://example.com/path?q=1"))
