# -*- test-case-name: tests.test_clientlimit -*-
"""
Tests for L{snapstore.http.clientlimit}: the store endpoint bounds the
connections of each client address (C{--store-max-per-client}), over real
loopback sockets, and serves other addresses while one holds its maximum.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from snapstore.tap import assembleStore
from tests.hardeninghelpers import RawClient, parseAnswer, statuses
from tests.helpers import MemoryBlobs, startStore, testSettings

REQUEST = b"GET /v1/client-config HTTP/1.1\r\nHost: snapstore.example.lan:8000\r\n\r\n"


async def connect(port: int, source: str) -> RawClient:
    """
    Connect to the store endpoint on 127.0.0.1 from the loopback address
    C{source} (Linux answers the whole of 127.0.0.0/8).
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    return await connectProtocol(endpoint, RawClient())


async def exchange(port: int, source: str) -> bytes:
    client = await connect(port, source)
    client.transport.write(REQUEST)
    return await _firstAnswer(client)


async def _firstAnswer(client: RawClient) -> bytes:
    """
    Wait for a complete response (by Content-Length) or the close.
    """
    while True:
        data = bytes(client.data)
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            status, headers, body = parseAnswer(data)
            if len(body) >= int(headers.get(b"content-length", b"0")):
                client.transport.loseConnection()
                return data
        if client.closed.called:
            return data
        await deferLater(reactor, 0.01, lambda: None)


class StoreClientLimitTests(TestCase):
    timeout = 60

    def setUp(self) -> Deferred[None]:
        return ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        settings = testSettings(self, store_max_per_client="2",
                                upstream="http://127.0.0.1:9/")
        store = await startStore(self, settings)
        self.parts = store.parts
        self.port = store.port
        self.held = []
        self.addCleanup(self._dropHeld)

    def _dropHeld(self) -> None:
        for client in self.held:
            client.transport.abortConnection()

    async def hold(self, count: int, source: str) -> None:
        for _ in range(count):
            self.held.append(await connect(self.port, source))
        # The server has counted them once it saw them: wait until it has.
        limit = self.parts.site.clientLimit
        while limit.open.get(source, 0) < count:
            await deferLater(reactor, 0.01, lambda: None)

    def test_secondClientServed(self) -> Deferred[None]:
        """
        While 127.0.0.1 holds its 2 connections, its third gets 503 in the
        store's error format, and 127.0.0.2 is served; once one of the
        first address's connections closes, it is served again.
        """

        async def test() -> None:
            await self.hold(2, "127.0.0.1")
            refused = await exchange(self.port, "127.0.0.1")
            status, headers, body = parseAnswer(refused)
            self.assertEqual(status, 503)
            self.assertIn(b"retry-after", headers)
            self.assertEqual(json.loads(body)["error-list"][0]["code"], "too-many-connections")

            other = await exchange(self.port, "127.0.0.2")
            self.assertEqual(statuses(other), [200], other[:200])

            first = self.held.pop()
            first.transport.loseConnection()
            await first.closed
            while self.parts.site.clientLimit.open.get("127.0.0.1") != 1:
                await deferLater(reactor, 0.01, lambda: None)
            again = await exchange(self.port, "127.0.0.1")
            self.assertEqual(statuses(again), [200], again[:200])

        return ensureDeferred(test())

    def test_countsReturnToZero(self) -> Deferred[None]:
        """
        Closed connections are forgotten: no address stays counted.
        """

        async def test() -> None:
            for _ in range(5):
                answer = await exchange(self.port, "127.0.0.3")
                self.assertEqual(statuses(answer), [200])
            self._dropHeld()
            while self.parts.site.clientLimit.open:
                await deferLater(reactor, 0.01, lambda: None)

        return ensureDeferred(test())

    def test_zeroTurnsItOff(self) -> None:
        """
        C{--store-max-per-client 0} means no bound.
        """
        settings = testSettings(self, store_max_per_client="0")
        parts = assembleStore(reactor, settings, MemoryBlobs()).parts
        self.assertIsNone(parts.site.clientLimit)
