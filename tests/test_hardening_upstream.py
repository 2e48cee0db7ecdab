# -*- test-case-name: tests.test_hardening_upstream -*-
"""
Upstream faults, through a fault-injecting TCP front on the fake store's
API and the fake store's own fault knobs on its CDN: for each, the device
gets a status in the store's error shape or a connection cut before the
full length (which it retries), no wrong blob is ever cached or served,
and the service keeps serving other calls.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.fakestore import FakeStore
from tests.hardeninghelpers import REFRESH, parseAnswer, rawExchange, startFront, storeErrorCode, rawRequest
from tests.helpers import startStore, testSettings

class UpstreamFaultTests(TestCase):
    """
    The store endpoint (L{startStore}) relaying to a L{FaultyFront}
    before a L{FakeStore}.
    """

    timeout = 60
    size = 300_000

    async def setUp(self) -> None:
        self.fake = FakeStore(reactor)
        self.fake.addSnap("hello")
        self.fake.addRevision("hello", 1, self.size)
        await self.fake.startFor(self)
        self.front = await startFront(self, self.fake.apiPort)
        # The relay's own answers to upstream faults, not stale ones
        # (snapstore.uplink has its own tests).
        self.settings = testSettings(self, upstream=self.front.url, upstream_timeout="1",
                                     serve_stale="no")
        store = await startStore(self, self.settings)
        self.parts = store.parts
        self.parts.root.download.headerTimeout = 1.0
        self.pool = self.parts.services[0].pool
        self.port = store.port
        self.cache = self.parts.cache
        self.data = self.fake.blobBytes("hello", 1)
        self.digest = self.fake.blobDigest("hello", 1)

    async def call(self, method: bytes, path: bytes, body: bytes = b"") -> tuple[int, dict, bytes]:
        answer = await rawExchange(self.port, rawRequest(method, path, body))
        return parseAnswer(answer)

    async def fault(self, name: str, match: bytes, **options: Any) -> None:
        """
        Make the front misbehave for new connections, and drop the pooled
        ones so that the next upstream request opens one.
        """
        await self.pool.closeCachedConnections()
        self.front.fail(name, match, **options)

    async def refresh(self) -> tuple[int, dict, bytes]:
        return await self.call(b"POST", b"/v2/snaps/refresh", REFRESH)

    async def downloadPath(self) -> bytes:
        status, _, body = await self.refresh()
        self.assertEqual(status, 200, body)
        url = json.loads(body)["results"][0]["snap"]["download"]["url"]
        return b"/" + url.split("/", 3)[3].encode()

    async def assertServing(self) -> None:
        """
        Other calls are still answered normally.
        """
        status, _, body = await self.call(b"GET", b"/v2/snaps/info/hello")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["name"], "hello")

    async def assertStoreError(self, answer: tuple[int, dict, bytes], statuses: tuple[int, ...],
                               codes: tuple[str, ...]) -> None:
        status, headers, body = answer
        self.assertIn(status, statuses, body)
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertIn(storeErrorCode(body), codes)

    async def fillsDone(self) -> None:
        await self.cache.whenIdle()

    def assertNoWrongBlob(self) -> None:
        """
        Every file in the cache has the sha3-384 and size its name says,
        and no partial fill is left behind.
        """
        blobs = os.path.join(self.settings.cacheDir, "blobs")
        for name in os.listdir(blobs):
            with open(os.path.join(blobs, name), "rb") as blob:
                content = blob.read()
            digest, size = name.rsplit("-", 1)
            self.assertEqual(hashlib.sha3_384(content).hexdigest(), digest)
            self.assertEqual(len(content), int(size))
        self.assertEqual(os.listdir(os.path.join(self.settings.cacheDir, "tmp")), [])

    async def assertCutOrError(self, path: bytes, rightPrefix: bool = True) -> None:
        """
        A download while upstream misbehaves: either a store-format error,
        or a response cut before its announced length (never the full
        length with wrong bytes: the proxy streams while it fills, so the
        last byte is what it holds back until the blob is verified).

        @param rightPrefix: whether the bytes sent before the cut must be
            the blob's (not so when upstream sent wrong ones).
        """
        answer = await rawExchange(self.port, rawRequest(b"GET", path))
        status, headers, body = parseAnswer(answer)
        if status == 200:
            self.assertLess(len(body), int(headers[b"content-length"]))
            if rightPrefix:
                self.assertEqual(body, self.data[:len(body)])
        else:
            self.assertIn(status, (502, 504), body)
            storeErrorCode(body)
        await self.fillsDone()
        self.assertNoWrongBlob()
        self.assertFalse(self.cache.contains(self.digest))

    async def assertDownloadsRight(self, path: bytes) -> None:
        status, headers, body = await self.call(b"GET", path)
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha3_384(body).hexdigest(), self.digest)
        await self.fillsDone()
        self.assertTrue(self.cache.contains(self.digest))
        self.assertNoWrongBlob()

    # -- API faults ----------------------------------------------------------

    async def test_connectionRefused(self) -> None:
        """
        Upstream refusing connections: 502 C{upstream-unreachable} for API
        calls and downloads alike.
        """
        path = await self.downloadPath()
        await self.pool.closeCachedConnections()
        await self.front.port.stopListening()
        await self.assertStoreError(await self.refresh(), (502,), ("upstream-unreachable",))
        await self.assertStoreError(await self.call(b"GET", path), (502,), ("upstream-unreachable",))
        self.assertNoWrongBlob()

    async def test_resetMidHeaders(self) -> None:
        """
        A connection reset in the middle of upstream's headers: 502.
        """
        await self.fault("reset-headers", b"/v2/snaps/refresh", count=1)
        await self.assertStoreError(await self.refresh(), (502,), ("upstream-bad-response",))
        await self.assertServing()
        self.assertEqual((await self.refresh())[0], 200)

    async def test_resetMidBody(self) -> None:
        """
        A reset in the middle of a JSON body that must be rewritten: 502,
        never half an answer.
        """
        await self.fault("reset-body", b"/v2/snaps/refresh", count=1)
        await self.assertStoreError(await self.refresh(), (502,), ("upstream-bad-response",))
        await self.assertServing()

    async def test_truncatedBody(self) -> None:
        """
        A clean close before the announced length: 502.
        """
        await self.fault("short", b"/v2/snaps/refresh", count=1)
        await self.assertStoreError(await self.refresh(), (502,), ("upstream-bad-response",))
        await self.assertServing()

    async def test_wrongContentLength(self) -> None:
        """
        An answer announcing fewer bytes than it sends: the JSON cut at the
        announced length is invalid (502), and the surplus never becomes
        the answer to another call.
        """
        await self.fault("wrong-length", b"/v2/snaps/", count=2)
        await self.assertStoreError(await self.refresh(), (502,), ("upstream-bad-response",))
        status, _, body = await self.call(b"GET", b"/v2/snaps/info/hello")
        self.assertNotEqual(body, b"{}")
        await self.assertServing()

    async def test_stall(self) -> None:
        """
        An upstream that never answers: 504 C{upstream-timeout} once the
        upstream timeout passed; other calls are served meanwhile.
        """
        await self.fault("stall", b"/v2/snaps/refresh", count=1)
        stalled = Deferred.fromCoroutine(self.refresh())
        await self.assertServing()
        self.assertFalse(stalled.called)
        await self.assertStoreError(await stalled, (504,), ("upstream-timeout",))

    async def test_invalidJSON(self) -> None:
        """
        A 200 JSON answer that does not parse: 502, not a rewritten mess.
        """
        self.fake.faults.failAPI("invalid-json", pathPrefix="/v2/snaps/refresh")
        await self.assertStoreError(await self.refresh(), (502,), ("upstream-bad-response",))
        await self.assertServing()

    async def test_serverErrorBurst(self) -> None:
        """
        A burst of 5xx answers reaches the device as 5xx in the store's
        shape (snapd retries those), one upstream call per device call,
        and the first good answer after it comes through.
        """
        self.fake.faults.failAPI("status", count=5, code=503, pathPrefix="/v2/snaps/refresh")
        before = self.fake.count("POST", "/v2/snaps/refresh")
        for _ in range(5):
            await self.assertStoreError(await self.refresh(), (503,), ("internal-error",))
        self.assertEqual(self.fake.count("POST", "/v2/snaps/refresh") - before, 5)
        self.assertEqual((await self.refresh())[0], 200)

    # -- download faults ---------------------------------------------------------

    async def test_cdnResetMidBody(self) -> None:
        """
        The CDN resetting mid-blob: the device is cut short, nothing is
        cached, and the next download is right.
        """
        path = await self.downloadPath()
        self.fake.faults.failDownload("hello", 1, "reset")
        await self.assertCutOrError(path)
        await self.assertServing()
        await self.assertDownloadsRight(path)

    async def test_cdnTruncated(self) -> None:
        """
        The CDN closing cleanly before the announced length.
        """
        path = await self.downloadPath()
        self.fake.faults.failDownload("hello", 1, "short")
        await self.assertCutOrError(path)
        await self.assertDownloadsRight(path)

    async def test_cdnServesWrongBytes(self) -> None:
        """
        A CDN serving bytes of the right length but the wrong content (one
        byte flipped, or something else entirely): the device never gets
        the last byte, nothing is cached.
        """
        path = await self.downloadPath()
        self.fake.faults.failDownload("hello", 1, "corrupt")
        await self.assertCutOrError(path, rightPrefix=False)
        wrong = bytes(reversed(self.data))
        await self.fault("serve", b"/api/v1/snaps/download/", count=1, data=wrong)
        await self.assertCutOrError(path, rightPrefix=False)
        await self.assertDownloadsRight(path)
        self.assertEqual(self.front.faulted[-1][0], "serve")

    async def test_downloadWrongContentLength(self) -> None:
        """
        Upstream offering a blob whose length is not the store's size: 502
        before any byte, nothing cached.
        """
        path = await self.downloadPath()
        await self.fault("serve", b"/api/v1/snaps/download/", count=1, data=self.data + b"extra")
        await self.assertStoreError(await self.call(b"GET", path), (502,), ("upstream-bad-response",))
        await self.fillsDone()
        self.assertNoWrongBlob()
        await self.assertDownloadsRight(path)

    async def test_cdnStall(self) -> None:
        """
        A CDN that does not answer within the header timeout: 504, and the
        next download is right.
        """
        path = await self.downloadPath()
        self.fake.faults.failDownload("hello", 1, "stall", seconds=3)
        await self.assertStoreError(await self.call(b"GET", path), (504,), ("upstream-timeout",))
        await self.fillsDone()
        self.assertNoWrongBlob()
        await self.assertServing()

    async def test_redirectLoop(self) -> None:
        """
        A download URL that redirects to itself for ever: 502 after the
        redirect limit, and the service goes on.
        """
        path = await self.downloadPath()
        await self.fault("redirect-loop", b"/api/v1/snaps/download/")
        await self.assertStoreError(await self.call(b"GET", path), (502,), ("upstream-bad-response",))
        self.assertEqual(sum(1 for name, _ in self.front.faulted if name == "redirect-loop"), 11)
        await self.fillsDone()
        self.assertNoWrongBlob()
        self.front.clear()
        await self.assertServing()
        await self.assertDownloadsRight(path)
