"""
Tests for L{snapstore.outbound}: the outbound agent and dialers, alone and
chained through snapstore's own forward proxy as the parent proxy.
"""

from __future__ import annotations

import json

from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.portforward import ProxyFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from snapstore.forward.auth import hashPassword
from snapstore.outbound import (
    DirectDialer, OriginAgent, ParentDialer, ParentProxy, ParentProxyAgent, TunnelError, makeAgent,
    makeConnections, makeDialer,
)
from tests.forwardhelpers import listen, originRoot, proxySettings, siteFactory, startProxy
from tests.helpers import startStore, testSettings
from tests.test_forward_clients import CURL, CLEAN_ENV, untilTunnelsClosed
from tests.tlshelpers import TestAuthority


class ParentProxyTests(SynchronousTestCase):
    def test_parse(self) -> None:
        parent = ParentProxy("http://u%40x:p%3Aw@proxy.lan:3129/")
        self.assertEqual((parent.host, parent.port), ("proxy.lan", 3129))
        self.assertEqual(parent.authorization, b"Basic dUB4OnA6dw==")
        self.assertEqual(ParentProxy("http://proxy.lan/").port, 80)
        self.assertRaises(ValueError, ParentProxy, "https://proxy.lan/")

    def test_choice(self) -> None:
        plain = testSettings(self)
        chained = testSettings(self, upstream_proxy="http://127.0.0.1:3128")
        self.assertIsInstance(makeDialer(reactor, plain), DirectDialer)
        self.assertIsInstance(makeDialer(reactor, chained), ParentDialer)
        self.assertIsInstance(makeAgent(reactor, plain), OriginAgent)
        self.assertIsInstance(makeAgent(reactor, chained), ParentProxyAgent)


class DirectDialerTests(SynchronousTestCase):
    """
    The direct dialer connects to checked addresses as they are.
    """

    def _dialed(self, address: str) -> tuple[Any, int]:
        from twisted.internet.testing import MemoryReactorClock

        class NoResolver:
            asked: list[str] = []

            def resolveHostName(self, receiver: Any, hostName: str, *args: Any, **kw: Any) -> Any:
                self.asked.append(hostName)
                return receiver

        memory = MemoryReactorClock()
        resolver = NoResolver()
        memory.nameResolver = resolver  # type: ignore[attr-defined]
        DirectDialer(memory).dial("example.org", 443, [address], Factory.forProtocol(Protocol))
        return memory, len(resolver.asked)

    def test_literalNotResolved(self) -> None:
        """
        An IPv4 or IPv6 literal is connected to without a name resolution
        (which would be a thread hop per new upstream connection).
        """
        for address, expected in [("127.0.0.1", "127.0.0.1"), ("::1", "::1")]:
            memory, resolutions = self._dialed(address)
            self.assertEqual(resolutions, 0)
            self.assertEqual([(host, port) for host, port, *_ in memory.tcpClients],
                             [(expected, 443)])


class ChainTests(TestCase):
    """
    The service's outbound traffic through a parent proxy, which here is
    snapstore's own forward proxy in front of the fake store.
    """

    timeout = 60

    async def setUp(self) -> None:
        from tests.fakestore import FakeStore

        self.store = FakeStore(reactor, hostname="fakestore.test")
        self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 50_000)
        await self.store.startFor(self)
        self.authority = TestAuthority()
        self.caFile = self.authority.writeCA(self.mktemp())
        tls = SSL4ServerEndpoint(reactor, 0, self.authority.serverOptions(),
                                 interface="127.0.0.1")
        tlsListener = await tls.listen(ProxyFactory("127.0.0.1", self.store.apiPort))
        self.addCleanup(tlsListener.stopListening)
        self.tlsPort = tlsListener.getHost().port
        self.passwords = self.mktemp()
        with open(self.passwords, "w") as passwordFile:
            passwordFile.write("svc:" + hashPassword("pw", iterations=1000) + "\n")
        self.parentSettings = proxySettings(self, proxy_connect_ports=str(self.tlsPort))
        self.parent, self.parentPort = await startProxy(self, self.parentSettings)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def agent(self, proxyURL: str | None = None):
        settings = testSettings(self, upstream_proxy=proxyURL or
                                f"http://127.0.0.1:{self.parentPort}", upstream_ca=self.caFile)
        return makeAgent(reactor, settings, self.pool)

    async def get(self, agent, url: str):
        response = await agent.request(b"GET", url.encode(), Headers({b"user-agent": [b"t"]}))
        return response, await readBody(response)

    async def test_httpInAbsoluteForm(self) -> None:
        response, body = await self.get(
            self.agent(), f"http://fakestore.test:{self.store.apiPort}/v2/snaps/info/hello")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["name"], "hello")
        entry = self.parent.accessLog.entries[-1]
        self.assertEqual((entry.method, entry.status), ("GET", 200))
        self.assertTrue(entry.target.startswith("http://fakestore.test:"))

    async def test_httpsThroughConnect(self) -> None:
        """
        C{https://} goes through CONNECT and TLS is verified against the
        origin's name with C{--upstream-ca}.
        """
        response, body = await self.get(
            self.agent(), f"https://fakestore.test:{self.tlsPort}/v2/snaps/info/hello")
        self.assertEqual((response.code, json.loads(body)["name"]), (200, "hello"))
        await self.pool.closeCachedConnections()
        await untilTunnelsClosed(self.parent)
        entry = self.parent.accessLog.entries[-1]
        self.assertEqual((entry.method, entry.target, entry.status),
                         ("CONNECT", f"fakestore.test:{self.tlsPort}", 200))

    async def test_parentRefusal(self) -> None:
        """
        A CONNECT the parent refuses fails with L{TunnelError} naming its
        status.
        """
        settings = attrs.evolve(self.parentSettings, proxyConnectPorts=(1,))
        parent, port = await startProxy(self, settings)
        failure = None
        try:
            await self.get(self.agent(f"http://127.0.0.1:{port}"),
                           f"https://fakestore.test:{self.tlsPort}/")
        except Exception as error:
            failure = error
        self.assertIsNotNone(failure)
        reasons = getattr(failure, "reasons", [None])
        value = reasons[0].value if reasons[0] is not None else failure
        self.assertIsInstance(value, TunnelError)
        self.assertEqual(value.code, 403)

    async def test_parentCredentials(self) -> None:
        settings = attrs.evolve(self.parentSettings, proxyAuthFile=self.passwords)
        parent, port = await startProxy(self, settings)
        # Built directly: config.parseURL drops the password of a URL.
        agentSettings = attrs.evolve(testSettings(self, upstream_ca=self.caFile),
                                     upstreamProxy=f"http://svc:pw@127.0.0.1:{port}/")
        agent = makeAgent(reactor, agentSettings, self.pool)
        for scheme, port_ in (("http", self.store.apiPort), ("https", self.tlsPort)):
            response, body = await self.get(
                agent, f"{scheme}://fakestore.test:{port_}/v2/snaps/info/hello")
            self.assertEqual(response.code, 200, scheme)
        await self.pool.closeCachedConnections()
        await untilTunnelsClosed(parent)
        self.assertEqual({entry.user for entry in parent.accessLog.entries}, {"svc"})

    async def test_storeRelayChained(self) -> None:
        """
        snapstore's store endpoint, with C{--upstream-proxy} pointing at
        snapstore's own forward proxy, relays to the fake store through it.
        """
        settings = testSettings(
            self, upstream=f"https://fakestore.test:{self.tlsPort}/", upstream_ca=self.caFile,
            upstream_proxy=f"http://127.0.0.1:{self.parentPort}")
        store = await startStore(self, settings)
        parts, storePort = store.parts, store.port
        client = Agent(reactor, pool=self.pool)
        response, body = await self.get(client,
                                        f"http://127.0.0.1:{storePort}/v2/snaps/info/hello")
        self.assertEqual(response.code, 200, body)
        self.assertEqual(json.loads(body)["name"], "hello")
        self.assertEqual(self.store.count("GET", "/v2/snaps/info/hello"), 1)
        for service in parts.services:
            await maybeDeferred(service.stopService)
        await untilTunnelsClosed(self.parent)
        self.assertIn(("CONNECT", f"fakestore.test:{self.tlsPort}", 200),
                      [(e.method, e.target, e.status) for e in self.parent.accessLog.entries])

    async def test_forwardProxyChained(self) -> None:
        """
        A forward proxy with a parent sends tunnels and relayed requests
        through it.
        """
        if CURL is None:
            raise self.skipTest("curl is not installed")
        # curl's TLS handshake fails against portforward behind TLS (with or
        # without proxies), so the TLS origin here is a plain web site.
        root, echo, flood = originRoot()
        tls = SSL4ServerEndpoint(reactor, 0, self.authority.serverOptions(),
                                 interface="127.0.0.1")
        tlsListener = await tls.listen(siteFactory(root))
        self.addCleanup(tlsListener.stopListening)
        tlsPort = tlsListener.getHost().port
        parent, parentPort = await startProxy(
            self, proxySettings(self, proxy_connect_ports=str(tlsPort)))
        settings = proxySettings(self, proxy_connect_ports=str(tlsPort),
                                 upstream_proxy=f"http://127.0.0.1:{parentPort}")
        child, childPort = await startProxy(self, settings)
        for url, expected in ((f"https://fakestore.test:{tlsPort}/echo", b"echo:GET:"),
                              (f"http://fakestore.test:{self.store.apiPort}/v2/snaps/info/hello",
                               b'"name": "hello"')):
            out, err, code = await getProcessOutputAndValue(
                CURL, ["-sS", "--cacert", self.caFile, "-x", f"http://127.0.0.1:{childPort}", url],
                env=CLEAN_ENV, reactor=reactor)
            self.assertEqual(code, 0, err)
            self.assertIn(expected, out)
        self.parent = parent
        await untilTunnelsClosed(child)
        await untilTunnelsClosed(self.parent)
        seen = {(e.method, e.status) for e in self.parent.accessLog.entries}
        self.assertEqual(seen, {("CONNECT", 200), ("GET", 200)})
        get = [e for e in self.parent.accessLog.entries if e.method == "GET"][0]
        self.assertTrue(get.target.startswith("http://fakestore.test:"))


class _Recording(Protocol):
    """
    An HTTP/1.1 origin that records each request's head and body and
    answers C{200 ok} on the same connection.
    """

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            fields = dict(line.split(b": ", 1) for line in lines[1:])
            length = int(fields.get(b"Content-Length", b"0"))
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.factory.requests.append((lines[0], fields, rest[:length]))
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class OriginAgentTests(TestCase):
    """
    L{snapstore.outbound.OriginAgent}, the direct agent: once an origin is
    known its requests skip the generic agent's parsing, and are still
    sent as the generic agent sends them, on the pool's kept-alive
    connections, through the checked endpoints.
    """

    async def origin(self) -> int:
        from twisted.internet.protocol import Factory

        self.factory = Factory.forProtocol(_Recording)
        self.factory.connections = 0
        self.factory.requests = []
        return (await listen(self, self.factory)).getHost().port

    def agents(self, port: int) -> tuple[Any, Any]:
        settings = testSettings(self, upstream=f"http://127.0.0.1:{port}/")
        pools = [HTTPConnectionPool(reactor, persistent=True) for _ in range(2)]
        for pool in pools:
            self.addCleanup(pool.closeCachedConnections)
        connections = makeConnections(reactor)
        self.addCleanup(connections.closeCachedConnections)
        fast = makeAgent(reactor, settings, pools[0], connections)
        # The generic agent over the same checked endpoints, for reference.
        generic = Agent.usingEndpointFactory(reactor, fast.endpoints, pools[1])
        return fast, generic

    async def test_sentAsGeneric(self) -> None:
        """
        Requests to a known origin go out byte for byte as the generic
        agent sends them (request line, C{Host}, headers, body), on one
        kept-alive connection.
        """
        from snapstore.http.bodies import BytesProducer

        port = await self.origin()
        fast, generic = self.agents(port)
        self.assertIsInstance(fast, OriginAgent)
        url = f"http://127.0.0.1:{port}/v2/snaps/refresh?a=1&b=%2F".encode()
        for agent in (generic, fast, fast, fast):
            response = await agent.request(b"POST", url, Headers({b"x-one": [b"1"]}),
                                           BytesProducer(b'{"k": 1}'))
            self.assertEqual((response.code, await readBody(response)), (200, b"ok"))
        first, *others = self.factory.requests
        self.assertEqual(first[0], b"POST /v2/snaps/refresh?a=1&b=%2F HTTP/1.1")
        self.assertEqual(first[1][b"Host"], f"127.0.0.1:{port}".encode())
        for request in others:
            self.assertEqual(request, first)
        # One connection for the generic agent, one for the three others.
        self.assertEqual(self.factory.connections, 2)
        # The fast way was taken: the origin is known.
        self.assertEqual(list(fast._origins), [f"http://127.0.0.1:{port}".encode()])

    async def test_checkedEvenWhenKnown(self) -> None:
        """
        An internal destination other than the upstream host is refused
        the first time and every time after, when the origin is known.
        """
        from snapstore.fetchguard import InternalDestination

        port = await self.origin()
        fast, _ = self.agents(port)
        for _ in range(2):
            with self.assertRaises(InternalDestination):
                await fast.request(b"GET", f"http://127.0.0.2:{port}/icon.png".encode())
        self.assertEqual(self.factory.connections, 0)

    async def test_unrecognisedGenericWay(self) -> None:
        """
        A URI this agent does not take apart (a space, a fragment, an
        origin without a path) is the generic agent's to judge: refused
        or sent as it would.
        """
        port = await self.origin()
        fast, _ = self.agents(port)
        with self.assertRaises(ValueError):
            fast.request(b"GET", f"http://127.0.0.1:{port}/a b".encode())
        response = await fast.request(b"GET", f"http://127.0.0.1:{port}".encode())
        await readBody(response)
        response = await fast.request(b"GET", f"http://127.0.0.1:{port}/x#frag".encode())
        await readBody(response)
        self.assertEqual([request[0] for request in self.factory.requests],
                         [b"GET / HTTP/1.1", b"GET /x HTTP/1.1"])

    def test_hostValue(self) -> None:
        """
        The C{Host} value of an origin is the generic agent's: the port
        only when not the scheme's, IPv6 literals in brackets.
        """
        fast, generic = self.agents(1)
        for origin in (b"http://[::1]:8080", b"https://store.example", b"http://store.example:80",
                       b"https://10.0.0.1:8443"):
            (scheme, name, port), host, _ = fast._learn(origin)
            self.assertEqual(host, generic._computeHostValue(scheme, name, port))
