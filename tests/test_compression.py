"""
Tests for L{snapstore.store.compression} and for the store relay in front
of an upstream that compresses its answers (the fake store's compression
switch), over real loopback sockets.
"""

from __future__ import annotations

import gzip
import json
import zlib
from io import BytesIO
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
)
from twisted.web.http_headers import Headers

import tests.test_rules as test_rules
import tests.test_rules_devices as test_rules_devices
import tests.test_rules_overrides as test_rules_overrides
from snapstore.store.compression import (
    MAX_INFLATED,
    MIN_COMPRESSED,
    EncodingError,
    Inflater,
    accepts,
    addVary,
    contentCodings,
    encodeFor,
)
from tests.fakestore import FakeStore
from tests.fakestore.api import gzipBomb
from tests.test_rules_support import Proxy, copyShipped

BODY = json.dumps({"results": [{"name": f"snap-{n}", "summary": "a snap " * 20}
                               for n in range(50)]}).encode()


def inflateAll(codings: list[bytes], data: bytes, limit: int = 1 << 20, step: int = 7) -> bytes:
    """
    Decode C{data} fed in pieces of C{step} bytes, as it would arrive.
    """
    inflater = Inflater(codings, limit)
    out = b"".join(inflater.feed(data[i:i + step]) for i in range(0, len(data), step))
    inflater.finish()
    return out


class InflaterTests(SynchronousTestCase):
    """
    L{Inflater} undoes C{Content-Encoding}, bounded.
    """

    def test_gzip(self):
        """
        A gzip body fed in small pieces decodes to the original bytes, as
        does C{x-gzip}.
        """
        self.assertEqual(inflateAll([b"gzip"], gzip.compress(BODY)), BODY)
        self.assertEqual(inflateAll([b"x-gzip"], gzip.compress(BODY)), BODY)

    def test_gzipMembers(self):
        """
        A gzip body of several members (RFC 1952) decodes to all of them.
        """
        data = gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])
        self.assertEqual(inflateAll([b"gzip"], data), BODY)

    def test_deflate(self):
        """
        C{deflate} is zlib-wrapped per RFC 9110, but raw deflate (which some
        servers send) decodes too.
        """
        self.assertEqual(inflateAll([b"deflate"], zlib.compress(BODY)), BODY)
        raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.assertEqual(inflateAll([b"deflate"], raw.compress(BODY) + raw.flush(), step=1), BODY)

    def test_stacked(self):
        """
        Codings applied one after the other are undone in reverse order.
        """
        data = gzip.compress(zlib.compress(BODY))
        self.assertEqual(inflateAll([b"deflate", b"gzip"], data), BODY)

    def test_unknownCoding(self):
        """
        A coding the proxy cannot decode is refused up front, by name.
        """
        error = self.assertRaises(EncodingError, Inflater, [b"gzip", b"br"])
        self.assertIn("'br'", str(error))
        self.assertIn("cannot decode", str(error))

    def test_bomb(self):
        """
        A body that inflates past the limit is refused as soon as it does,
        and no more than the limit (plus one byte) is ever inflated: 64 MiB
        of zeros, in 64 KiB of gzip, against a 1 MiB limit.
        """
        bomb = gzipBomb(64 << 20)
        inflater = Inflater([b"gzip"], 1 << 20)
        produced = 0
        with self.assertRaises(EncodingError) as caught:
            for i in range(0, len(bomb), 4096):
                produced += len(inflater.feed(bomb[i:i + 4096]))
        self.assertIn(f"more than {1 << 20} bytes", str(caught.exception))
        self.assertLessEqual(produced, 1 << 20)
        self.assertLessEqual(inflater.produced, 1 << 20)

    def test_truncated(self):
        """
        A gzip body cut before its end is an error, not a short document.
        """
        inflater = Inflater([b"gzip"])
        inflater.feed(gzip.compress(BODY)[:-10])
        error = self.assertRaises(EncodingError, inflater.finish)
        self.assertIn("ends before its gzip stream does", str(error))

    def test_corrupt(self):
        """
        Bytes that are not gzip at all are an error.
        """
        inflater = Inflater([b"gzip"])
        error = self.assertRaises(EncodingError, inflater.feed, b"<html>maintenance</html>")
        self.assertIn("not valid gzip data", str(error))

    def test_contentCodings(self):
        """
        C{Content-Encoding} lists the codings in the order applied;
        C{identity} and case do not matter.
        """
        headers = Headers({b"content-encoding": [b"Deflate, identity", b"GZIP"]})
        self.assertEqual(contentCodings(headers), [b"deflate", b"gzip"])
        self.assertEqual(contentCodings(Headers()), [])


class NegotiationTests(SynchronousTestCase):
    """
    What a device gets depends on its C{Accept-Encoding}.
    """

    def test_accepts(self):
        """
        q-values count: C{q=0} refuses; C{*} stands for other codings; no
        header accepts no coding.
        """
        def headers(value):
            return Headers({b"accept-encoding": [value]})

        self.assertTrue(accepts(headers(b"gzip"), [b"gzip"]))
        self.assertTrue(accepts(headers(b"deflate, GZIP;q=0.5"), [b"gzip"]))
        self.assertTrue(accepts(headers(b"x-gzip"), [b"gzip"]))
        self.assertFalse(accepts(headers(b"gzip;q=0"), [b"gzip"]))
        self.assertFalse(accepts(headers(b"*, gzip;q=0"), [b"gzip"]))
        self.assertTrue(accepts(headers(b"*"), [b"br"]))
        self.assertFalse(accepts(headers(b"gzip"), [b"gzip", b"br"]))
        self.assertFalse(accepts(Headers(), [b"gzip"]))
        self.assertTrue(accepts(Headers(), []))

    def test_vary(self):
        """
        C{Accept-Encoding} joins C{Vary} once, next to what upstream named.
        """
        headers = Headers({b"vary": [b"Accept"]})
        addVary(headers)
        addVary(headers)
        self.assertEqual(headers.getRawHeaders(b"vary"), [b"Accept", b"Accept-Encoding"])

    def test_encodeFor(self):
        """
        A device that accepts gzip gets gzip, with the length of what is
        sent; one that does not gets the bytes as they are; either way
        C{Vary} says the answer depends on it, and upstream's own coding
        header is gone.
        """
        for accept, coded in ((b"gzip", True), (b"identity", False)):
            response = Headers({b"content-encoding": [b"gzip"]})
            sent = encodeFor(Headers({b"accept-encoding": [accept]}), response, BODY)
            self.assertEqual(gzip.decompress(sent) if coded else sent, BODY)
            self.assertEqual(response.getRawHeaders(b"content-encoding"),
                             [b"gzip"] if coded else None)
            self.assertEqual(response.getRawHeaders(b"content-length"), [b"%d" % len(sent)])
            self.assertEqual(response.getRawHeaders(b"vary"), [b"Accept-Encoding"])

    def test_smallNotCompressed(self):
        """
        A tiny answer is not worth gzip's frame and is sent as it is.
        """
        small = b"x" * (MIN_COMPRESSED - 1)
        response = Headers()
        self.assertEqual(encodeFor(Headers({b"accept-encoding": [b"gzip"]}), response, small), small)
        self.assertIsNone(response.getRawHeaders(b"content-encoding"))


class _Raw(Protocol):
    """
    Collects a body as sent (the agent does not decode it).
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done: Deferred[tuple[bytes, Any]] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback((b"".join(self.chunks), None if reason.check(ResponseDone) else reason))


class CompressedUpstreamTests(TestCase):
    """
    The proxy (shipped rules, blob cache) in front of a fake store that
    gzips its JSON and assertions for clients that accept it.
    """

    timeout = 60

    def setUp(self):
        async def setUp():
            self.store = FakeStore(reactor, compress="gzip")
            self.snapId = self.store.addSnap("hello", summary="hello world")
            self.store.addRevision("hello", 1, 100_000)
            await self.store.startFor(self)
            self.proxy = await Proxy(self, self.store.apiURL, copyShipped(self)).start()
            self.pool = HTTPConnectionPool(reactor, persistent=False)

        return ensureDeferred(setUp())

    @inlineCallbacks
    def fetch(self, method: bytes, path: str, body: Any = None, accept: Any = None,
              headers: Any = ()) -> Any:
        """
        One call to the proxy with snapd's headers, C{Accept-Encoding:
        <accept>} when given; fire with C{(response, raw body, failure)}.
        """
        sent = Headers({b"Snap-Device-Series": [b"16"], b"Snap-Device-Architecture": [b"amd64"]})
        if accept is not None:
            sent.setRawHeaders(b"Accept-Encoding", [accept])
        for name, value in headers:
            sent.setRawHeaders(name, [value])
        producer = None
        if body is not None:
            sent.setRawHeaders(b"Content-Type", [b"application/json"])
            producer = FileBodyProducer(BytesIO(json.dumps(body).encode()))
        response = yield Agent(reactor, pool=self.pool).request(
            method, (self.proxy.url + path.lstrip("/")).encode(), sent, producer)
        collector = _Raw()
        response.deliverBody(collector)
        raw, failure = yield collector.done
        return response, raw, failure

    def installBody(self) -> dict:
        return {"context": [], "fields": ["download", "revision", "summary", "description"],
                "actions": [{"action": "install", "instance-key": "install-1", "name": "hello",
                             "channel": "stable", "epoch": None}]}

    @staticmethod
    def header(response: Any, name: bytes) -> Any:
        return response.headers.getRawHeaders(name)

    @inlineCallbacks
    def test_refreshForPlainDevice(self):
        """
        Upstream is asked for gzip although the device did not ask, and
        its gzip answer is decoded, rewritten and sent to the device as
        plain JSON (with C{Vary: Accept-Encoding}).  Before the fix this
        was a 502 "invalid JSON".
        """
        response, raw, failure = yield self.fetch(b"POST", "v2/snaps/refresh", self.installBody())
        self.assertIsNone(failure)
        self.assertEqual(response.code, 200, raw)
        self.assertIsNone(self.header(response, b"content-encoding"))
        self.assertIn(b"Accept-Encoding", self.header(response, b"vary"))
        self.assertEqual(response.length, len(raw))
        [result] = json.loads(raw)["results"]
        self.assertEqual(result["snap"]["download"]["url"],
                         f"{self.proxy.url}api/v1/snaps/download/{self.snapId}_1.snap")
        [upstream] = self.store.requestsTo("POST", "/v2/snaps/refresh")
        self.assertEqual(upstream.header("accept-encoding"), "gzip")

    @inlineCallbacks
    def test_refreshForGzipDevice(self):
        """
        A device that accepts gzip (snapd always does) gets the rewritten
        answer gzipped, with the compressed length.
        """
        response, raw, failure = yield self.fetch(b"POST", "v2/snaps/refresh",
                                                  self.installBody(), accept=b"gzip")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, b"content-encoding"), [b"gzip"])
        self.assertEqual(response.length, len(raw))
        [result] = json.loads(gzip.decompress(raw))["results"]
        self.assertTrue(result["snap"]["download"]["url"].startswith(self.proxy.url))
        response, raw, failure = yield self.fetch(b"POST", "v2/snaps/refresh",
                                                  self.installBody(), accept=b"gzip;q=0")
        self.assertIsNone(self.header(response, b"content-encoding"))
        self.assertEqual(json.loads(raw)["results"][0]["name"], "hello")

    @inlineCallbacks
    def test_uplinkSaved(self):
        """
        The same refresh costs fewer upstream bytes with the store
        compressing than without.
        """
        yield self.fetch(b"POST", "v2/snaps/refresh", self.installBody())
        self.store.compress = None
        yield self.fetch(b"POST", "v2/snaps/refresh", self.installBody())
        compressed, plain = self.store.requestsTo("POST", "/v2/snaps/refresh")
        self.assertLess(compressed.bodyBytesSent, plain.bodyBytesSent)

    @inlineCallbacks
    def test_infoAndFind(self):
        """
        info and find answers are decoded and their URLs rewritten.
        """
        response, raw, _ = yield self.fetch(b"GET", "v2/snaps/info/hello")
        self.assertEqual(response.code, 200, raw)
        [entry] = json.loads(raw)["channel-map"]
        self.assertTrue(entry["download"]["url"].startswith(self.proxy.url))
        response, raw, _ = yield self.fetch(b"GET", "v2/snaps/find?q=hello&fields=media")
        self.assertEqual(response.code, 200, raw)
        self.assertEqual([r["name"] for r in json.loads(raw)["results"]], ["hello"])

    @inlineCallbacks
    def test_assertions(self):
        """
        Assertions come from upstream gzipped, are kept decoded, and are
        served (on a miss and on a hit) gzipped or plain as each device
        accepts.
        """
        text = self.store.assertions.lookup("snap-declaration", ["16", self.snapId])
        path = f"v2/assertions/snap-declaration/16/{self.snapId}"
        accept = (b"Accept", b"application/x.ubuntu.assertion")
        response, raw, _ = yield self.fetch(b"GET", path, headers=[accept])
        self.assertEqual((response.code, self.header(response, b"x-cache")), (200, [b"MISS"]))
        self.assertEqual(raw, text)
        response, raw, _ = yield self.fetch(b"GET", path, accept=b"gzip", headers=[accept])
        self.assertEqual(self.header(response, b"x-cache"), [b"HIT"])
        self.assertEqual(self.header(response, b"content-encoding"), [b"gzip"])
        self.assertEqual(gzip.decompress(raw), text)
        [upstream] = self.store.requestsTo("GET", "/v2/assertions/")
        self.assertEqual(upstream.header("accept-encoding"), "gzip")

    @inlineCallbacks
    def test_relayedErrorKeepsOrLosesCoding(self):
        """
        An answer the proxy only relays (a 404) reaches a device that
        accepts gzip byte for byte, coded; one that does not gets it
        decoded.
        """
        response, raw, _ = yield self.fetch(b"GET", "v2/snaps/info/nothing", accept=b"gzip")
        self.assertEqual(response.code, 404)
        self.assertEqual(self.header(response, b"content-encoding"), [b"gzip"])
        coded = raw
        response, raw, _ = yield self.fetch(b"GET", "v2/snaps/info/nothing")
        self.assertEqual(response.code, 404)
        self.assertIsNone(self.header(response, b"content-encoding"))
        self.assertEqual(gzip.decompress(coded), raw)
        self.assertEqual(json.loads(raw)["error-list"][0]["code"], "resource-not-found")

    @inlineCallbacks
    def test_deviceSessionDecoded(self):
        """
        Nonce and session answers (which the rules read) come back decoded.
        """
        macaroon = yield self.proxy.openSession("SERIAL-1")
        self.assertEqual(macaroon, self.store.sessions[0].macaroon)

    @inlineCallbacks
    def test_deflate(self):
        """
        An upstream that answers with deflate works too.
        """
        self.store.compress = "deflate"
        response, raw, _ = yield self.fetch(b"POST", "v2/snaps/refresh", self.installBody(),
                                            accept=b"gzip, deflate")
        self.assertEqual(response.code, 200, raw)
        self.assertEqual(json.loads(gzip.decompress(raw))["results"][0]["name"], "hello")
        [upstream] = self.store.requestsTo("POST", "/v2/snaps/refresh")
        self.assertEqual(upstream.header("accept-encoding"), "gzip")

    @inlineCallbacks
    def test_compressedUnasked(self):
        """
        An upstream that gzips although not asked (a HEAD keeps the
        device's C{Accept-Encoding}, here none) does not break the relay.
        """
        self.store.compressUnasked = True
        response, raw, _ = yield self.fetch(b"POST", "v2/snaps/refresh", self.installBody())
        self.assertEqual(json.loads(raw)["results"][0]["name"], "hello")
        response, raw, _ = yield self.fetch(b"GET", "api/v1/snaps/sections")
        self.assertEqual(response.code, 200)
        self.assertIsNone(self.header(response, b"content-encoding"))
        self.assertIn("_embedded", json.loads(raw))

    @inlineCallbacks
    def test_blobNeverCompressed(self):
        """
        Downloads ask upstream for no coding and are never compressed, so
        that C{Range} offsets stay true.
        """
        response, raw, _ = yield self.fetch(b"POST", "v2/snaps/refresh", self.installBody())
        url = json.loads(raw)["results"][0]["snap"]["download"]["url"]
        path = url[len(self.proxy.url):]
        blob = self.store.blobBytes("hello", 1)
        response, raw, _ = yield self.fetch(b"GET", path, accept=b"gzip")
        self.assertEqual((response.code, raw), (200, blob))
        self.assertIsNone(self.header(response, b"content-encoding"))
        response, raw, _ = yield self.fetch(b"GET", path, accept=b"gzip",
                                            headers=[(b"Range", b"bytes=1000-")])
        self.assertEqual((response.code, raw), (206, blob[1000:]))
        self.assertIsNone(self.header(response, b"content-encoding"))
        for record in self.store.cdnDownloads("hello", 1):
            self.assertFalse(record.hasHeader("accept-encoding"))

    @inlineCallbacks
    def test_headKeepsDeviceAcceptEncoding(self):
        """
        A C{HEAD} goes upstream with the device's own C{Accept-Encoding}
        (here none), so the headers it gets back describe what it would
        get: no coding.
        """
        response, raw, _ = yield self.fetch(b"HEAD", "v2/snaps/info/hello")
        self.assertEqual((response.code, raw), (200, b""))
        self.assertIsNone(self.header(response, b"content-encoding"))
        [upstream] = self.store.requestsTo("HEAD", "/v2/snaps/info/hello")
        self.assertFalse(upstream.hasHeader("accept-encoding"))

    @inlineCallbacks
    def test_bombRefused(self):
        """
        A refresh answer that inflates beyond the limit is a 502 saying so;
        the next refresh works.
        """
        self.store.faults.failAPI("gzip-bomb", pathPrefix="/v2/snaps/refresh",
                                  size=MAX_INFLATED + (16 << 20))
        response, raw, _ = yield self.fetch(b"POST", "v2/snaps/refresh", self.installBody())
        self.assertEqual(response.code, 502)
        [error] = json.loads(raw)["error-list"]
        self.assertEqual(error["code"], "upstream-bad-response")
        self.assertIn(f"inflates to more than {MAX_INFLATED} bytes", error["message"])
        response, raw, _ = yield self.fetch(b"POST", "v2/snaps/refresh", self.installBody())
        self.assertEqual(response.code, 200, raw)

    @inlineCallbacks
    def test_relayedBombCut(self):
        """
        A bomb in an answer the proxy only relays, to a device that does not
        accept gzip, is decoded up to the limit and no further: the device
        gets a 502 when nothing was sent yet (the usual case: the first
        packet of zeros already inflates past the limit), else a cut
        transfer; never a complete answer.
        """
        self.store.faults.failAPI("gzip-bomb", pathPrefix="/v2/cohorts",
                                  size=MAX_INFLATED + (16 << 20))
        response, raw, failure = yield self.fetch(b"POST", "v2/cohorts", {"snaps": ["hello"]})
        if response.code == 502:
            self.assertIn(f"inflates to more than {MAX_INFLATED} bytes",
                          json.loads(raw)["error-list"][0]["message"])
        else:
            self.assertEqual(response.code, 200)
            self.assertIsNotNone(failure)
            self.assertLessEqual(len(raw), MAX_INFLATED)
        response, raw, _ = yield self.fetch(b"POST", "v2/cohorts", {"snaps": ["hello"]})
        self.assertEqual(response.code, 200, raw)

    @inlineCallbacks
    def test_unknownCoding(self):
        """
        An answer in a coding the proxy cannot decode is a 502 naming it
        where the proxy must read it, and where the device does not accept
        it; a device that accepts it gets it relayed as it is.
        """
        self.store.faults.failAPI("encoding", pathPrefix="/v2/snaps/refresh", encoding="br")
        response, raw, _ = yield self.fetch(b"POST", "v2/snaps/refresh", self.installBody(),
                                            accept=b"br")
        self.assertEqual(response.code, 502)
        [error] = json.loads(raw)["error-list"]
        self.assertEqual(error["code"], "upstream-bad-response")
        self.assertIn("content-encoding 'br'", error["message"])
        self.store.faults.failAPI("encoding", pathPrefix="/v2/cohorts", encoding="br")
        response, raw, _ = yield self.fetch(b"POST", "v2/cohorts", {"snaps": ["hello"]})
        self.assertEqual(response.code, 502)
        self.assertIn("content-encoding 'br'", json.loads(raw)["error-list"][0]["message"])
        self.store.faults.failAPI("encoding", pathPrefix="/v2/cohorts", encoding="br")
        response, raw, _ = yield self.fetch(b"POST", "v2/cohorts", {"snaps": ["hello"]},
                                            accept=b"gzip, br")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, b"content-encoding"), [b"br"])


class FakeStoreCompressionTests(TestCase):
    """
    The fake store's compression switch behaves as a store front end: text
    answers coded for clients that accept the coding, nothing else.
    """

    timeout = 30

    def setUp(self):
        async def setUp():
            self.store = FakeStore(reactor, compress="gzip")
            self.snapId = self.store.addSnap("hello")
            self.store.addRevision("hello", 1, 10_000)
            await self.store.startFor(self)
            self.pool = HTTPConnectionPool(reactor, persistent=False)

        return ensureDeferred(setUp())

    @inlineCallbacks
    def get(self, url: str, accept: Any = None) -> Any:
        headers = Headers({b"accept-encoding": [accept]} if accept else {})
        response = yield Agent(reactor, pool=self.pool).request(b"GET", url.encode(), headers)
        collector = _Raw()
        response.deliverBody(collector)
        raw, _ = yield collector.done
        return response, raw

    @inlineCallbacks
    def test_jsonAndAssertions(self):
        """
        JSON and assertions are gzipped for a client that accepts gzip, and
        sent plain to others (C{q=0} included), with C{Vary} either way.
        """
        info = self.store.apiURL + "v2/snaps/info/hello"
        response, raw = yield self.get(info, b"gzip")
        self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertEqual(response.headers.getRawHeaders(b"vary"), [b"Accept-Encoding"])
        self.assertEqual(json.loads(gzip.decompress(raw))["name"], "hello")
        self.assertEqual(self.store.requests[-1].bodyBytesSent, len(raw))
        for accept in (None, b"gzip;q=0", b"deflate"):
            response, raw = yield self.get(info, accept)
            self.assertIsNone(response.headers.getRawHeaders(b"content-encoding"))
            self.assertEqual(json.loads(raw)["name"], "hello")
        text = self.store.assertions.lookup("account", ["canonical"])
        response, raw = yield self.get(self.store.apiURL + "v2/assertions/account/canonical",
                                       b"gzip")
        self.assertEqual(gzip.decompress(raw), text)

    @inlineCallbacks
    def test_unaskedAndDeflate(self):
        """
        C{compressUnasked} codes for every client; C{deflate} is zlib.
        """
        self.store.compress = "deflate"
        self.store.compressUnasked = True
        response, raw = yield self.get(self.store.apiURL + "v2/snaps/info/hello")
        self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"deflate"])
        self.assertEqual(json.loads(zlib.decompress(raw))["name"], "hello")

    @inlineCallbacks
    def test_blobsAndIconsNot(self):
        """
        Blobs (from the CDN) and icons are never compressed.
        """
        self.store.compressUnasked = True
        response, raw = yield self.get(self.store.apiURL + f"media/icon/{self.snapId}.png", b"gzip")
        self.assertIsNone(response.headers.getRawHeaders(b"content-encoding"))
        self.assertTrue(raw.startswith(b"\x89PNG"))
        response, _ = yield self.get(self.store.downloadURL("hello", 1), b"gzip")
        [location] = response.headers.getRawHeaders(b"location")
        response, raw = yield self.get(location.decode(), b"gzip")
        self.assertIsNone(response.headers.getRawHeaders(b"content-encoding"))
        self.assertEqual(raw, self.store.blobBytes("hello", 1))
        self.assertRaises(ValueError, FakeStore, reactor, compress="br")


def compressEverything(store: FakeStore) -> None:
    """
    Make C{store} gzip every text answer, whoever asks: the paths under
    test then see compressed answers whatever the proxy sends upstream.
    """
    store.compress = "gzip"
    store.compressUnasked = True


class CompressedAccessThroughProxyTests(test_rules.AccessThroughProxyTests):
    """
    The snap-access rule's checks (find, install, info, download) with the
    fake store compressing its answers.
    """

    def setUp(self):
        return super().setUp().addCallback(lambda _: compressEverything(self.store))


class CompressedDeviceLimitTests(test_rules_devices.DeviceLimitThroughProxyTests):
    """
    The device limit (which learns devices from the session answers it
    reads) with the fake store compressing its answers.
    """

    def setUp(self):
        return super().setUp().addCallback(lambda _: compressEverything(self.store))


class CompressedOverrideTests(test_rules_overrides.OverrideTests):
    """
    Revision pins (whose lookups read upstream refresh answers) with the
    fake store compressing its answers.
    """

    def setUp(self):
        return super().setUp().addCallback(lambda _: compressEverything(self.store))


class CompressedResolveOverrideTests(test_rules_overrides.ResolveOverrideTests):
    """
    Resolving an override (the admin's C{override} verb) with the fake
    store compressing its answers.
    """

    def setUp(self):
        return super().setUp().addCallback(lambda _: compressEverything(self.store))
