"""
Store requests that reach the forward proxy (absolute form, naming this
proxy's store endpoint) are served by the store's guarded, observed site:
the same limits, the same refusal of an ambiguous head, the same access
log line and request metrics as on the store endpoint.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from snapstore.observe.access import ACCESS_NAMESPACE
from snapstore.tap import assembleStore
from tests.forwardhelpers import connectClient, proxySettings, startProxy
from tests.hardeninghelpers import parseAnswer
from tests.helpers import MemoryBlobs


class LocalStoreFixture(TestCase):
    """
    A forward proxy whose local store site is the store parts'
    C{proxySite}, as C{twistd snapstore} wires it.
    """

    proxyOptions: dict[str, str] = {}

    async def setUp(self) -> None:
        settings = proxySettings(self, **self.proxyOptions)
        store = assembleStore(reactor, settings, MemoryBlobs())
        self.parts = store.parts
        for service in store.services:
            service.startService()
            self.addCleanup(service.stopService)
        self.factory, self.port = await startProxy(self, settings,
                                                   localSite=self.parts.proxySite)
        self.factory.localPorts.add(self.port)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def exchange(self, head: bytes) -> bytes:
        client = await connectClient(self, self.port)
        client.transport.write(head)
        await client.closed
        return bytes(client.received)

    def accessEvents(self) -> list[dict[str, Any]]:
        return [event for event in self.events
                if event.get("log_namespace") == ACCESS_NAMESPACE]


class LocalStoreThroughProxyTests(LocalStoreFixture):
    async def test_servedObservedAndCounted(self) -> None:
        """
        An absolute-form request for the proxy's own store API is answered
        by the store site, logged by the access observer (one line, its
        status) and counted in the store's request metrics.
        """
        answer = await self.exchange(
            b"GET http://localhost:%d/v1/client-config?format=json HTTP/1.1\r\n"
            b"Host: localhost:%d\r\nConnection: close\r\n\r\n" % (self.port, self.port))
        status, _, body = parseAnswer(answer)
        self.assertEqual(status, 200, answer[:300])
        self.assertIn("store-url", json.loads(body))
        [event] = self.accessEvents()
        self.assertEqual((event["status"], event["path"]),
                         (200, "/v1/client-config?format=json"))
        rendered, _ = self.parts.metrics.render()
        self.assertIn(b'snapstore_requests_total{endpoint="client-config",status="200"} 1.0', rendered)

    async def test_duplicateHostRefused(self) -> None:
        """
        A second C{Host} header is refused with a store-format 400, as on
        the store endpoint, instead of being served.
        """
        answer = await self.exchange(
            b"GET http://localhost:%d/v1/client-config HTTP/1.1\r\n"
            b"Host: localhost:%d\r\nHost: evil.example\r\n\r\n" % (self.port, self.port))
        status, _, body = parseAnswer(answer)
        self.assertEqual(status, 400, answer[:300])
        self.assertEqual(json.loads(body)["error-list"][0]["code"], "bad-request")
        self.assertNotIn(200, [event["status"] for event in self.accessEvents()])

    async def test_bodyBounded(self) -> None:
        """
        The store site's body bound applies: an announced body larger than
        it is refused with 413 before it is read.
        """
        from snapstore.store.relay import MAX_REQUEST_BODY

        answer = await self.exchange(
            b"POST http://localhost:%d/v2/snaps/refresh HTTP/1.1\r\n"
            b"Host: localhost:%d\r\nContent-Length: %d\r\n\r\n"
            % (self.port, self.port, MAX_REQUEST_BODY + 1))
        status, _, body = parseAnswer(answer)
        self.assertEqual(status, 413, answer[:300])
        self.assertEqual(json.loads(body)["error-list"][0]["code"], "request-too-large")


class PerRequestRoutingTests(LocalStoreFixture):
    timeout = 10
    """
    Each request on a forward-proxy connection is routed by its own target:
    one for the local store does not capture the connection.
    """

    async def test_localThenRelayed(self) -> None:
        """
        On one keep-alive connection, a request for the local store, then
        one for another origin: the first is the store's, the second
        reaches the origin; then the local store again.
        """
        from tests.helpers import RecordingOrigin, listen, originSite

        origin = RecordingOrigin()
        originPort = await listen(self, originSite(origin))
        client = await connectClient(self, self.port)
        local = (b"GET http://localhost:%d/v1/client-config?format=json HTTP/1.1\r\n"
                 b"Host: localhost:%d\r\n\r\n" % (self.port, self.port))
        client.transport.write(local)
        first = await client.waitFor(lambda received: b"store-url" in received)
        client.received.clear()
        client.transport.write(b"GET http://other.test:%d/elsewhere HTTP/1.1\r\n"
                               b"Host: other.test:%d\r\n\r\n" % (originPort, originPort))
        await client.waitFor(lambda received: b"\r\n\r\n" in received)
        self.assertEqual([request["uri"] for request in origin.requests], [b"/elsewhere"])
        self.assertNotIn(b"store-url", bytes(client.received))
        self.assertTrue(first.startswith(b"HTTP/1.1 200 "), first[:200])
        client.received.clear()
        client.transport.write(local)
        again = await client.waitFor(lambda received: b"store-url" in received)
        self.assertTrue(again.startswith(b"HTTP/1.1 200 "), again[:200])
        client.transport.loseConnection()


class LocalStoreClientRulesTests(LocalStoreFixture):
    """
    The client ACL and proxy authentication hold for requests to the
    proxy's own store on the proxy port, as for relays and tunnels.
    """

    def setUp(self) -> Any:
        from snapstore.forward.auth import hashPassword

        passwords = self.mktemp()
        with open(passwords, "w") as passwordFile:
            passwordFile.write(f"ann:{hashPassword('s3cret')}\n")
        self.proxyOptions = {"proxy_auth_file": passwords}
        return super().setUp()

    def request(self, *headers: bytes) -> bytes:
        return (b"GET http://localhost:%d/v1/client-config?format=json HTTP/1.1\r\n"
                b"Host: localhost:%d\r\nConnection: close\r\n" % (self.port, self.port)
                + b"".join(header + b"\r\n" for header in headers) + b"\r\n")

    async def test_credentialsRequired(self) -> None:
        """
        Without credentials the local store answers 407 with a challenge,
        and the forward proxy's access log has the refusal.
        """
        answer = await self.exchange(self.request())
        status, headers, _ = parseAnswer(answer)
        self.assertEqual(status, 407, answer[:300])
        self.assertIn(b"proxy-authenticate", headers)
        self.assertEqual(self.factory.accessLog.entries[-1].status, 407)
        self.assertEqual(self.accessEvents(), [])

    async def test_originFormNeedsCredentialsToo(self) -> None:
        answer = await self.exchange(b"GET /v1/client-config HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(parseAnswer(answer)[0], 407, answer[:300])

    async def test_rightCredentials(self) -> None:
        from base64 import b64encode

        answer = await self.exchange(self.request(
            b"Proxy-Authorization: Basic " + b64encode(b"ann:s3cret")))
        status, _, body = parseAnswer(answer)
        self.assertEqual(status, 200, answer[:300])
        self.assertIn("store-url", json.loads(body))


class LocalStoreClientNetworkTests(LocalStoreFixture):
    """
    A client outside C{--proxy-clients} gets no answer from the local store
    through the proxy port either.
    """

    proxyOptions = {"proxy_clients": "10.0.0.0/8"}

    async def test_clientRefused(self) -> None:
        answer = await self.exchange(
            b"GET http://localhost:%d/v1/client-config HTTP/1.1\r\n"
            b"Host: localhost:%d\r\n\r\n" % (self.port, self.port))
        self.assertEqual(parseAnswer(answer)[0], 403, answer[:300])
        self.assertEqual(self.accessEvents(), [])
