"""
Tests for L{snapstore.forward}: the forward proxy over real loopback
sockets (tunnels, relaying, refusals, limits, logging), with an injected
clock wherever time matters.
"""

from __future__ import annotations

from base64 import b64encode

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import TimeoutError
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from snapstore.forward.auth import hashPassword
from snapstore.interfaces import IConnectRule
from snapstore.rules.verdicts import Abstain
from tests.forwardhelpers import (
    FloodResource, connectClient, connectHead, echoFactory, floodFactory, headEnded, listen,
    originRoot, proxySettings, siteFactory, startProxy,
)


def statusOf(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


class TunnelTests(TestCase):
    """
    C{CONNECT} opens a tunnel that carries bytes both ways (copying in
    Python; L{SplicedTunnelTests} runs the same tests with splice(2)).
    """

    splice = False

    timeout = 30


    async def setUp(self) -> None:
        self.echo = echoFactory()
        self.echoPort = (await listen(self, self.echo)).getHost().port
        self.settings = proxySettings(self, proxy_connect_ports=str(self.echoPort))
        self.factory, self.port = await startProxy(self, self.settings, splice=self.splice)

    async def tunnel(self, early: bytes = b"") -> tuple:
        client = await connectClient(self, self.port)
        client.transport.write(connectHead(f"fakestore.test:{self.echoPort}") + early)
        answer = await client.waitFor(headEnded)
        return client, answer

    async def test_established(self) -> None:
        """
        The answer is exactly C{200 Connection established} with no
        Content-Length or Transfer-Encoding, then bytes flow both ways.
        """
        client, answer = await self.tunnel()
        self.assertEqual(answer, b"HTTP/1.1 200 Connection established\r\n\r\n")
        client.transport.write(b"ping")
        await client.waitForText(b"ping")
        self.assertEqual(self.factory.tunnels, 1)

    async def test_earlyBytes(self) -> None:
        """
        Bytes the client sent right behind the CONNECT head, in the same
        segment, reach the target.
        """
        client, _ = await self.tunnel(early=b"EARLY-BYTES")
        received = await client.waitForText(b"EARLY-BYTES")
        self.assertTrue(received.endswith(b"\r\n\r\nEARLY-BYTES"))

    async def test_halfClose(self) -> None:
        """
        A client's end of file reaches the target as a half-close, and the
        target can still answer before the tunnel closes.
        """
        client, _ = await self.tunnel()
        client.transport.write(b"abc")
        await client.waitForText(b"abc")
        client.transport.loseWriteConnection()
        await client.waitForText(b"EOF after 3")
        await client.closed
        self.assertEqual(self.echo.eofs, [3])
        self.assertTrue(client.gotEOF)
        await deferLater(reactor, 0, lambda: None)
        self.assertEqual(self.factory.tunnels, 0)
        entry = self.factory.accessLog.entries[-1]
        self.assertEqual((entry.method, entry.status, entry.up, entry.down),
                         ("CONNECT", 200, 3, 3 + len(b"EOF after 3")))

    async def test_tunnelAccessLogLine(self) -> None:
        """
        A finished tunnel is one access-log line with its byte counts.
        """
        path = self.mktemp()
        settings = proxySettings(self, proxy_connect_ports=str(self.echoPort),
                                 proxy_access_log=path)
        factory, port = await startProxy(self, settings, splice=self.splice)
        client = await connectClient(self, port)
        client.transport.write(connectHead(f"fakestore.test:{self.echoPort}") + b"12345")
        await client.waitForText(b"12345")
        client.transport.loseWriteConnection()
        await client.closed
        await deferLater(reactor, 0, lambda: None)
        factory.accessLog.close()
        with open(path) as log:
            fields = log.read().strip().split(" ")
        self.assertEqual(fields[1:8], ["127.0.0.1", "CONNECT", f"fakestore.test:{self.echoPort}",
                                       "200", "5", str(5 + len(b"EOF after 5")),
                                       fields[7]])
        self.assertEqual(fields[8:], ["-", '"-"'])

    async def test_targetClosesFirst(self) -> None:
        """
        When the target closes, the client connection is closed too.
        """
        self.echo.connections.clear()
        client, _ = await self.tunnel()
        client.transport.write(b"x")
        await client.waitForText(b"x")
        self.echo.connections[0].transport.loseConnection()
        await client.closed

    async def test_slowReaderPausesTarget(self) -> None:
        """
        A client that stops reading makes the proxy stop reading the
        target, so the target is paused and the proxy buffers a bounded
        amount instead of everything the target sends.
        """
        total = 256 << 20
        flood = floodFactory(total)
        floodPort = (await listen(self, flood)).getHost().port
        settings = proxySettings(self, proxy_connect_ports=str(floodPort))
        factory, port = await startProxy(self, settings, splice=self.splice)
        client = await connectClient(self, port)
        client.transport.write(connectHead(f"fakestore.test:{floodPort}"))
        await client.waitFor(headEnded)
        client.transport.pauseProducing()
        await untilStalled(flood.producers)
        channel = [p for p in _protocols(factory) if p._tunnel is not None][0]
        clientSide = channel.transport
        buffered = len(clientSide.dataBuffer) - clientSide.offset + clientSide._tempDataLen
        if self.splice:
            buffered += channel._tunnel.downward.inPipe + len(channel._tunnel.downward.pending)
        self.assertLess(buffered, 4 << 20)
        self.assertLess(flood.producers[0].sent, 64 << 20)
        self.assertEqual(type(channel._tunnel).__name__,
                         "SpliceTunnel" if self.splice else "Tunnel")


class SplicedTunnelTests(TunnelTests):
    """
    The tunnel tests with kernel splicing.
    """

    splice = True
    if not hasattr(__import__("os"), "splice"):
        skip = "os.splice is not available here"


async def untilStalled(producers: list) -> None:
    """
    Wait until the origin's flood producer has made no progress over five
    consecutive polls, or has sent everything.  With flow control it
    stalls once the kernel buffers are full; without, it runs to the end
    and the proxy holds the rest in memory, which the caller's assertions
    catch.  Nothing here asserts on time.
    """
    while not producers:
        await deferLater(reactor, 0.01, lambda: None)
    producer = producers[0]
    unchanged, last = 0, -1
    while unchanged < 5 and producer.sent < producer.total:
        await deferLater(reactor, 0.02, lambda: None)
        unchanged = unchanged + 1 if producer.sent == last else 0
        last = producer.sent


def _protocols(factory) -> list:
    import gc

    from snapstore.forward.channel import ForwardProxyProtocol

    return [o for o in gc.get_objects() if isinstance(o, ForwardProxyProtocol)
            and o.factory is factory and o.state != "closed"]


@implementer(IConnectRule)
class RaisingRule:
    name = "raises"

    def checkConnect(self, target):
        raise RuntimeError("rule bug")


@implementer(IConnectRule)
class AbstainingRule:
    name = "abstains"

    def checkConnect(self, target):
        return Abstain()


class NeverDialer:
    viaParent = False

    def __init__(self, failure=None):
        self.failure = failure
        self.dials = []

    def dial(self, host, port, addresses, factory):
        self.dials.append((host, port, addresses))
        return fail(self.failure) if self.failure else Deferred()

    tunnel = dial


class RefusalTests(TestCase):
    """
    Each refusal has its status and a one-line reason, and is logged.
    """

    timeout = 30


    async def refusedWith(self, settings, target: str, *headers: str, **kwargs) -> tuple:
        factory, port = await startProxy(self, settings, **kwargs)
        client = await connectClient(self, port)
        client.transport.write(connectHead(target, *headers))
        answer = await client.waitFor(lambda data: b"\n" in data.split(b"\r\n\r\n", 1)[-1])
        await client.closed
        entry = factory.accessLog.entries[-1]
        return statusOf(answer), answer.split(b"\r\n\r\n", 1)[1].decode(), answer, entry

    async def test_portNotAllowed(self) -> None:
        status, body, _, entry = await self.refusedWith(proxySettings(self), "fakestore.test:22")
        self.assertEqual((status, body), (403, "CONNECT to port 22 is not allowed\n"))
        self.assertEqual((entry.status, entry.note), (403, body.strip()))

    async def test_internalDestination(self) -> None:
        """
        A name that resolves to loopback is refused unless allowed.
        """
        settings = proxySettings(self, proxy_allow_internal="", proxy_connect_ports="443")
        status, body, _, _ = await self.refusedWith(settings, "fakestore.test:443")
        self.assertEqual(status, 403)
        self.assertIn("fakestore.test (127.0.0.1) is internal", body)

    async def test_internalLiteralAndLinkLocal(self) -> None:
        settings = proxySettings(self, proxy_allow_internal="", proxy_connect_ports="443")
        for target in ("[::1]:443", "169.254.169.254:443", "0.0.0.0:443"):
            status, body, _, _ = await self.refusedWith(settings, target)
            self.assertEqual(status, 403, target)
            self.assertIn("is internal", body)

    async def test_clientNotAllowed(self) -> None:
        settings = proxySettings(self, proxy_clients="10.0.0.0/8")
        status, body, _, _ = await self.refusedWith(settings, "fakestore.test:443")
        self.assertEqual((status, body), (403, "client 127.0.0.1 may not use this proxy\n"))

    async def test_unresolvable(self) -> None:
        """
        A reserved name that is not mapped never reaches DNS: 502.
        """
        status, body, _, _ = await self.refusedWith(proxySettings(self), "nowhere.test:443")
        self.assertEqual(status, 502)
        self.assertIn("cannot resolve nowhere.test", body)

    async def test_unresolvableButRefused(self) -> None:
        """
        The rules speak before name resolution does: a forbidden port, or a
        client from another network, is refused with 403 even when the name
        does not resolve, so the proxy answers no DNS question it should not.
        """
        status, body, _, _ = await self.refusedWith(proxySettings(self), "nowhere.test:25")
        self.assertEqual(status, 403)
        self.assertIn("25", body)
        settings = proxySettings(self, proxy_clients="10.0.0.0/8")
        status, body, _, _ = await self.refusedWith(settings, "nowhere.test:443")
        self.assertEqual((status, body), (403, "client 127.0.0.1 may not use this proxy\n"))

    async def test_unreachable(self) -> None:
        from tests.ports import freePort

        closed = freePort()
        settings = proxySettings(self, proxy_connect_ports=str(closed))
        status, body, _, _ = await self.refusedWith(settings, f"fakestore.test:{closed}")
        self.assertEqual(status, 502)
        self.assertIn(f"cannot connect to fakestore.test:{closed}", body)

    async def test_connectTimeout(self) -> None:
        settings = proxySettings(self, proxy_connect_ports="443")
        dialer = NeverDialer(TimeoutError())
        status, body, _, _ = await self.refusedWith(settings, "fakestore.test:443",
                                                    dialer=dialer)
        self.assertEqual(status, 504)
        self.assertEqual(dialer.dials, [("fakestore.test", 443, ("127.0.0.1",))])

    async def test_ruleRaises(self) -> None:
        """
        A rule that raises refuses (fail closed) and is logged.
        """
        status, body, _, _ = await self.refusedWith(proxySettings(self), "fakestore.test:443",
                                                    rules=[RaisingRule()])
        self.assertEqual((status, body), (403, "rule raises failed\n"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_allAbstain(self) -> None:
        status, body, _, _ = await self.refusedWith(proxySettings(self), "fakestore.test:443",
                                                    rules=[AbstainingRule()])
        self.assertEqual((status, body), (403, "no rule allowed this destination\n"))

    async def test_authRequired(self) -> None:
        """
        With a password file, a CONNECT without credentials gets 407 and
        a challenge; wrong ones too; right ones get through.
        """
        passwords = self.mktemp()
        with open(passwords, "w") as passwordFile:
            passwordFile.write("# users\nalice:" + hashPassword("s3cret", iterations=1000) + "\n")
        echoPort = (await listen(self, echoFactory())).getHost().port
        settings = proxySettings(self, proxy_auth_file=passwords,
                                 proxy_connect_ports=str(echoPort))
        target = f"fakestore.test:{echoPort}"
        status, body, answer, _ = await self.refusedWith(settings, target)
        self.assertEqual(status, 407)
        self.assertIn(b'\r\nProxy-Authenticate: Basic realm="snapstore"\r\n', answer)
        wrong = "Proxy-Authorization: Basic " + b64encode(b"alice:nope").decode()
        status, _, _, entry = await self.refusedWith(settings, target, wrong)
        self.assertEqual((status, entry.user), (407, "alice"))
        right = "Proxy-Authorization: Basic " + b64encode(b"alice:s3cret").decode()
        factory, port = await startProxy(self, settings)
        client = await connectClient(self, port)
        client.transport.write(connectHead(target, right))
        answer = await client.waitFor(headEnded)
        self.assertEqual(statusOf(answer), 200)

    async def test_maxTunnels(self) -> None:
        echoPort = (await listen(self, echoFactory())).getHost().port
        settings = proxySettings(self, proxy_connect_ports=str(echoPort), proxy_max_tunnels="1")
        factory, port = await startProxy(self, settings)
        first = await connectClient(self, port)
        first.transport.write(connectHead(f"fakestore.test:{echoPort}"))
        self.assertEqual(statusOf(await first.waitFor(headEnded)), 200)
        second = await connectClient(self, port)
        second.transport.write(connectHead(f"fakestore.test:{echoPort}"))
        answer = await second.waitFor(lambda d: d.endswith(b"\n") and headEnded(d))
        self.assertEqual(statusOf(answer), 503)
        self.assertIn(b"too many tunnels open", answer)

    async def test_maxPerClient(self) -> None:
        settings = proxySettings(self, proxy_max_per_client="1")
        factory, port = await startProxy(self, settings)
        await connectClient(self, port)
        second = await connectClient(self, port)
        answer = await second.waitFor(lambda d: headEnded(d) and d.endswith(b"\n"))
        await second.closed
        self.assertEqual(statusOf(answer), 429)
        self.assertEqual(factory.perClient, {"127.0.0.1": 1})


class HeadLimitTests(TestCase):
    """
    Oversized and slow request heads are refused.
    """

    timeout = 30


    async def setUp(self) -> None:
        self.clock = Clock()
        self.settings = proxySettings(self, proxy_max_header_size="4K",
                                      proxy_max_request_line="1K")
        self.factory, self.port = await startProxy(self, self.settings, clock=self.clock)

    async def answerTo(self, data: bytes) -> bytes:
        client = await connectClient(self, self.port)
        client.transport.write(data)
        await client.closed
        return bytes(client.received)

    async def test_headersTooLarge(self) -> None:
        data = b"GET http://fakestore.test/ HTTP/1.1\r\n" + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n"
        answer = await self.answerTo(data)
        self.assertEqual(statusOf(answer), 431)

    async def test_tooManyHeaders(self) -> None:
        data = b"GET http://fakestore.test/ HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n"
        self.assertEqual(statusOf(await self.answerTo(data)), 431)

    async def test_requestLineTooLong(self) -> None:
        data = b"GET http://fakestore.test/" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n"
        self.assertEqual(statusOf(await self.answerTo(data)), 414)

    async def test_malformed(self) -> None:
        self.assertEqual(statusOf(await self.answerTo(b"HELLO\r\n\r\n")), 400)
        self.assertEqual(statusOf(await self.answerTo(b"GET / HTTP/1.1\r\n\r\n")), 400)
        self.assertEqual(statusOf(await self.answerTo(
            b"POST http://fakestore.test/ HTTP/1.1\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")), 400)

    async def test_slowloris(self) -> None:
        """
        A client that starts a head and never finishes it is dropped once
        the header timeout passes, however it trickles.
        """
        client = await connectClient(self, self.port)
        client.transport.write(b"GET http://fakestore.test/ HTTP/1.1\r\n")
        await deferLater(reactor, 0.05, lambda: None)
        for _ in range(5):
            client.transport.write(b"X: y\r\n")
            self.clock.advance(self.settings.proxyHeaderTimeout / 6)
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(client.closed.called, False)
        self.clock.advance(self.settings.proxyHeaderTimeout / 6 + 0.1)
        await client.closed
        self.assertEqual(self.factory.accessLog.entries[-1].status, 408)
        self.assertEqual(self.factory.perClient, {})

    async def test_idleConnectionDropped(self) -> None:
        client = await connectClient(self, self.port)
        await deferLater(reactor, 0.05, lambda: None)
        self.clock.advance(self.settings.proxyIdleTimeout + 1)
        await client.closed

    async def test_idleTunnelDropped(self) -> None:
        """
        A tunnel nobody uses for the idle timeout is closed; traffic keeps
        it open.
        """
        echoPort = (await listen(self, echoFactory())).getHost().port
        settings = proxySettings(self, proxy_connect_ports=str(echoPort))
        factory, port = await startProxy(self, settings, clock=self.clock)
        client = await connectClient(self, port)
        client.transport.write(connectHead(f"fakestore.test:{echoPort}"))
        await client.waitFor(headEnded)
        self.clock.advance(settings.proxyIdleTimeout * 0.9)
        client.transport.write(b"keep")
        await client.waitForText(b"keep")
        self.clock.advance(settings.proxyIdleTimeout * 0.9)
        self.assertFalse(client.closed.called)
        self.clock.advance(settings.proxyIdleTimeout * 0.2)
        await client.closed
        self.assertEqual(factory.accessLog.entries[-1].note, "idle timeout")
        self.assertEqual(factory.tunnels, 0)


class RelayTests(TestCase):
    """
    Absolute-URI requests are relayed with header hygiene, streaming and
    keep-alive.
    """

    timeout = 30


    async def setUp(self) -> None:
        self.root, self.echo, self.flood = originRoot()
        self.originPort = (await listen(self, siteFactory(self.root))).getHost().port
        self.settings = proxySettings(self)
        self.factory, self.port = await startProxy(self, self.settings)
        self.base = f"http://fakestore.test:{self.originPort}".encode()

    def request(self, method: bytes, path: bytes, *headers: bytes, body: bytes = b"") -> bytes:
        lines = [method + b" " + self.base + path + b" HTTP/1.1",
                 b"Host: fakestore.test", *headers]
        if body:
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def test_get(self) -> None:
        """
        A GET is relayed in origin form; hop-by-hop headers and proxy
        credentials stay behind; both directions get C{Via}.
        """
        client = await connectClient(self, self.port)
        client.transport.write(self.request(
            b"GET", b"/echo?x=1", b"Proxy-Connection: keep-alive", b"Connection: X-Hop",
            b"X-Hop: secret", b"Proxy-Authorization: Basic Zm9vOmJhcg==", b"X-Kept: yes"))
        answer = await client.waitForText(b"echo:GET:")
        head = answer.split(b"\r\n\r\n")[0]
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"\r\nVia: 1.1 snapstore", head)
        self.assertIn(b"\r\nX-Origin: yes", head)
        seen = self.echo.seen[0]
        self.assertEqual(seen["uri"], b"/echo?x=1")
        self.assertEqual(seen["headers"][b"x-kept"], [b"yes"])
        self.assertEqual(seen["headers"][b"via"], [b"1.1 snapstore"])
        for gone in (b"proxy-connection", b"x-hop", b"proxy-authorization"):
            self.assertNotIn(gone, seen["headers"])
        self.assertEqual(seen["headers"][b"host"], [b"fakestore.test:%d" % self.originPort])

    async def test_relayPortNotAllowed(self) -> None:
        """
        Absolute-URI relays reach only C{--proxy-relay-ports} (80 and 443
        by default): a request line to another port is refused before the
        origin hears a byte.
        """
        settings = proxySettings(self, proxy_relay_ports="80,443")
        factory, port = await startProxy(self, settings)
        client = await connectClient(self, port)
        client.transport.write(self.request(b"GET", b"/echo"))
        answer = await client.waitFor(lambda data: b"\n" in data.split(b"\r\n\r\n", 1)[-1])
        self.assertEqual(statusOf(answer), 403)
        self.assertIn(b"relaying to port %d is not allowed" % self.originPort, answer)
        self.assertEqual(self.echo.seen, [])
        settings = proxySettings(self, proxy_relay_ports=f"80,{self.originPort - 1}-{self.originPort}")
        factory, port = await startProxy(self, settings)
        client = await connectClient(self, port)
        client.transport.write(self.request(b"GET", b"/echo"))
        await client.waitForText(b"echo:GET:")

    async def test_keepAliveAndBodies(self) -> None:
        """
        Several requests on one client connection, with bodies both ways
        (Content-Length and chunked), reuse one origin connection.
        """
        client = await connectClient(self, self.port)
        client.transport.write(self.request(b"POST", b"/echo", body=b"first body"))
        await client.waitForText(b"echo:POST:first body")
        client.transport.write(self.request(b"PUT", b"/echo", b"Transfer-Encoding: chunked")
                               + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await client.waitForText(b"echo:PUT:hello world")
        client.transport.write(self.request(b"POST", b"/echo?chunked=1", body=b"x"))
        answer = await client.waitForText(b"0\r\n\r\n")
        self.assertIn(b"part one;", answer)
        self.assertIn(b"Transfer-Encoding: chunked", answer)
        self.assertEqual(len({seen["peer"] for seen in self.echo.seen}), 1)
        self.assertFalse(client.closed.called)
        self.assertEqual([entry.status for entry in self.factory.accessLog.entries], [200] * 3)

    async def test_getKeepsAlive(self) -> None:
        """
        A bodiless GET leaves client and origin connections open for the
        next request.
        """
        client = await connectClient(self, self.port)
        client.transport.write(self.request(b"GET", b"/echo"))
        await client.waitForText(b"echo:GET:")
        client.transport.write(self.request(b"GET", b"/echo?again=1"))
        answer = await client.waitFor(lambda d: d.count(b"echo:GET:") == 2)
        self.assertNotIn(b"Connection: close", answer)
        self.assertEqual(len({seen["peer"] for seen in self.echo.seen}), 1)

    async def test_pipelined(self) -> None:
        client = await connectClient(self, self.port)
        client.transport.write(self.request(b"GET", b"/echo", b"X-N: 1")
                               + self.request(b"HEAD", b"/echo")
                               + self.request(b"DELETE", b"/echo"))
        answer = await client.waitForText(b"echo:DELETE:")
        self.assertEqual(answer.count(b"HTTP/1.1 200 OK"), 3)

    async def test_closeRequested(self) -> None:
        client = await connectClient(self, self.port)
        client.transport.write(self.request(b"GET", b"/echo", b"Connection: close"))
        await client.closed
        self.assertIn(b"Connection: close", bytes(client.received))

    async def test_unreachableOrigin(self) -> None:
        from tests.ports import freePort

        client = await connectClient(self, self.port)
        client.transport.write(b"GET http://fakestore.test:%d/ HTTP/1.1\r\n\r\n" % freePort())
        await client.closed
        self.assertEqual(statusOf(bytes(client.received)), 502)

    async def test_slowReaderPausesOrigin(self) -> None:
        """
        A client that does not read a big response pauses the origin.
        """
        self.flood.total = 256 << 20
        client = await connectClient(self, self.port)
        client.transport.write(self.request(b"GET", b"/flood"))
        await client.waitFor(headEnded)
        client.transport.pauseProducing()
        await untilStalled(self.flood.producers)
        channel = _protocols(self.factory)[0]
        buffered = (len(channel.transport.dataBuffer) - channel.transport.offset
                    + channel.transport._tempDataLen)
        self.assertLess(buffered, 4 << 20)
        self.assertLess(self.flood.producers[0].sent, 64 << 20)

    async def test_localStoreAPI(self) -> None:
        """
        Absolute URIs naming the proxy itself are served by the local
        resource, not relayed.
        """
        from twisted.web.resource import Resource

        from snapstore.http.guard import GuardedSite
        from snapstore.observe.access import AccessObserver
        from snapstore.store.service import ProxiedStoreRequest
        from tests.forwardhelpers import EchoResource

        local = Resource()
        localEcho = EchoResource()
        local.putChild(b"v2", localEcho)
        factory, port = await startProxy(self, proxySettings(self),
                                         localSite=GuardedSite(local, reactor=reactor, observer=AccessObserver(
                                             None, reactor, ProxiedStoreRequest)))
        factory.localPorts.add(port)
        client = await connectClient(self, port)
        client.transport.write(b"GET http://localhost:%d/v2/snaps/info/x HTTP/1.1\r\n"
                               b"Host: localhost:%d\r\n\r\n" % (port, port))
        await client.waitForText(b"echo:GET:")
        self.assertEqual(localEcho.seen[0]["uri"], b"/v2/snaps/info/x")
        self.assertEqual(self.echo.seen, [])


class ShortResource(FloodResource):
    """
    Promises C{total} bytes, sends half, then closes the connection.
    """

    def render_GET(self, request):
        request.setHeader(b"content-length", b"%d" % (self.total,))
        request.write(b"y" * (self.total // 2))
        reactor.callLater(0.05, request.transport.loseConnection)
        from twisted.web.server import NOT_DONE_YET

        return NOT_DONE_YET


class SplicedBodyTests(TestCase):
    """
    Large fixed-length response bodies are spliced in the kernel, and the
    connections go back to ordinary keep-alive afterwards.
    """

    timeout = 30
    if not hasattr(__import__("os"), "splice"):
        skip = "os.splice is not available here"

    async def setUp(self) -> None:
        from snapstore.forward import splice

        self.root, self.echo, self.flood = originRoot(flood=3 << 20)
        self.short = ShortResource(2 << 20)
        self.root.putChild(b"short", self.short)
        self.originPort = (await listen(self, siteFactory(self.root))).getHost().port
        self.factory, self.port = await startProxy(self, proxySettings(self))
        self.spliced = []
        original = splice.SpliceBody.start

        def start(body):
            self.spliced.append(body)
            return original(body)

        self.patch(splice.SpliceBody, "start", start)

    def get(self, path: bytes) -> bytes:
        return (b"GET http://fakestore.test:%d%s HTTP/1.1\r\nHost: fakestore.test\r\n\r\n"
                % (self.originPort, path))

    async def test_keepAliveAfterSplice(self) -> None:
        client = await connectClient(self, self.port)
        client.transport.write(self.get(b"/flood"))
        first = await client.waitFor(lambda d: d.endswith(b"x" * 1000)
                                     and len(d.split(b"\r\n\r\n", 1)[1]) == 3 << 20)
        client.transport.write(self.get(b"/echo"))
        await client.waitForText(b"echo:GET:")
        self.assertEqual(len(self.spliced), 1)
        self.assertEqual(self.spliced[0].moved, self.spliced[0].length)
        self.assertFalse(client.closed.called)
        entries = self.factory.accessLog.entries
        self.assertEqual([e.status for e in entries], [200, 200])
        self.assertEqual(entries[0].down, len(first))
        self.assertEqual(len({seen["peer"] for seen in self.echo.seen}), 1)

    async def test_truncatedBodyCutsClient(self) -> None:
        """
        An origin that drops the connection early makes the proxy cut the
        client off too, so it cannot take the short body for a whole one.
        """
        client = await connectClient(self, self.port)
        client.transport.write(self.get(b"/short"))
        await client.closed
        body = bytes(client.received).split(b"\r\n\r\n", 1)[1]
        self.assertLess(len(body), 2 << 20)
        self.assertEqual(len(self.spliced), 1)
        self.assertEqual(self.factory.accessLog.entries[-1].note,
                         "upstream closed before the whole body")


class WiringTests(TestCase):
    """
    C{snapstore.tap} adds the forward proxy as a named listener.
    """

    def test_addForwardService(self) -> None:
        from twisted.application.service import MultiService

        from snapstore.tap import _addForwardService, assembleStore
        from tests.helpers import MemoryBlobs

        top = MultiService()
        settings = proxySettings(self, proxy_endpoint="tcp:0:interface=127.0.0.1")
        parts = assembleStore(reactor, settings, MemoryBlobs()).parts
        _addForwardService(top, reactor, settings, parts)
        listener = top.getServiceNamed("proxy-endpoint")
        self.assertEqual(listener.endpoint._interface, "127.0.0.1")
        self.assertIsNotNone(listener.factory.localSite)

    def test_accessLogClosedAtShutdown(self) -> None:
        """
        The access-log file is closed after the reactor's shutdown, once
        the last connections have written their lines.
        """
        from twisted.application.service import MultiService
        from twisted.internet.testing import MemoryReactorClock

        from snapstore.tap import _addForwardService, assembleStore
        from tests.helpers import MemoryBlobs

        memory = MemoryReactorClock()
        settings = proxySettings(self, proxy_endpoint="tcp:0:interface=127.0.0.1",
                                 proxy_access_log=self.mktemp())
        parts = assembleStore(memory, settings, MemoryBlobs()).parts
        factory = _addForwardService(MultiService(), memory, settings, parts)
        self.assertFalse(factory.accessLog._file.closed)
        for call, args, kwargs in memory.triggers["after"]["shutdown"]:
            call(*args, **kwargs)
        self.assertIsNone(factory.accessLog._file)

    def test_disabled(self) -> None:
        from twisted.application.service import MultiService

        from snapstore.tap import _addForwardService

        top = MultiService()
        _addForwardService(top, reactor, proxySettings(self), None)
        self.assertEqual(list(top), [])
