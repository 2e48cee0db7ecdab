"""
Tests for the store relay (L{snapstore.store.relay} and its wiring), over
real loopback sockets, against a recording upstream.
"""

from __future__ import annotations

import json
import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import LogLevel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.trial.unittest import TestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from snapstore.http.storeerror import storeErrorBody
from tests.helpers import (
    MemoryBlobs,
    RecordingOrigin,
    capturedEvents,
    garbageFactory,
    listen,
    originSite,
    startStore,
    testAgent,
    testSettings,
)

SNAPD_HEADERS = [
    (b"User-Agent", b"snapd/2.66.1 (series 16; classic) ubuntu/24.04 (amd64) linux/6.8.0-45-generic"),
    (b"Snap-Device-Series", b"16"),
    (b"Snap-Device-Architecture", b"amd64"),
    (b"Snap-Classic", b"true"),
    (b"Snap-Device-Store", b"brandstore"),
    (b"Snap-Device-Authorization", b'Macaroon root="device-session"'),
    (b"X-Device-Authorization", b'Macaroon root="device-session"'),
    (b"Authorization", b'Macaroon root="user", discharge="d"'),
    (b"X-Ubuntu-Series", b"16"),
    (b"X-Ubuntu-Architecture", b"amd64"),
    (b"X-Ubuntu-Wire-Protocol", b"1"),
    (b"Snap-Refresh-Reason", b"scheduled"),
    (b"Snap-Refresh-Managed", b"true"),
    (b"Snap-Accept-Delta-Format", b"xdelta3"),
    (b"Snap-Device-Capabilities", b"default-tracks"),
]

# Every store call the relay must pass through, with a request body where
# snapd sends one.
STORE_CALLS = [
    (b"POST", b"/v2/snaps/refresh", b'{"context":[],"actions":[]}'),
    (b"GET", b"/v2/snaps/info/hello?fields=revision,download&architecture=amd64", None),
    (b"GET", b"/v2/snaps/find?q=hello&fields=summary", None),
    (b"GET", b"/v2/snaps/categories", None),
    (b"GET", b"/api/v1/snaps/sections", None),
    (b"GET", b"/api/v1/snaps/names?confinement=strict,classic", None),
    (b"GET", b"/v2/assertions/snap-revision/abc?max-format=0", None),
    (b"GET", b"/api/v1/snaps/assertions/account/canonical", None),
    (b"POST", b"/api/v1/snaps/auth/nonces", b""),
    (b"POST", b"/api/v1/snaps/auth/sessions", b'{"device-session-request":"x"}'),
    (b"POST", b"/v2/cohorts", b'{"snaps":["hello"]}'),
    (b"POST", b"/v2/messages", b'{"limit":1}'),
    (b"GET", b"/v2/some/future/call?x=1", None),
]


class StoreRelayTests(TestCase):
    """
    The store endpoint relays snapd's calls and their answers.
    """

    @inlineCallbacks
    def setUp(self):
        self.origin = RecordingOrigin()
        originPort = yield listen(self, originSite(self.origin))
        self.upstreamURL = f"http://127.0.0.1:{originPort}/"
        yield self.startProxy(upstream=self.upstreamURL)

    @inlineCallbacks
    def startProxy(self, **given):
        self.settings = testSettings(self, **given)
        self.state = MemoryBlobs()
        store = yield Deferred.fromCoroutine(startStore(self, self.settings, self.state))
        self.parts = store.parts
        self.proxyURL = store.url

    @inlineCallbacks
    def call(self, method, path, body=None, headers=()):
        agent = testAgent(self)
        from twisted.web.client import FileBodyProducer
        from io import BytesIO

        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        response = yield agent.request(
            method, self.proxyURL.encode() + path, Headers(dict((k, [v]) for k, v in headers)), producer
        )
        content = yield readBody(response)
        return response, content

    @inlineCallbacks
    def test_everyCallRelayed(self):
        """
        Each store call reaches upstream with its method, path, query and
        body unchanged, and upstream's status, body and Content-Type reach
        the client unchanged.
        """
        for method, path, body in STORE_CALLS:
            answer = json.dumps({"path": path.decode()}).encode()
            self.origin.answer = (201, [(b"Content-Type", b"application/hal+json")], answer)
            response, content = yield self.call(method, path, body, SNAPD_HEADERS)
            seen = self.origin.requests[-1]
            self.assertEqual((seen["method"], seen["uri"], seen["body"]), (method, path, body or b""))
            self.assertEqual(response.code, 201)
            self.assertEqual(content, answer)
            self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/hal+json"])
        self.assertEqual(len(self.origin.requests), len(STORE_CALLS))

    @inlineCallbacks
    def test_contentTypeExact(self):
        """
        A bare C{application/json} is not given a charset: snapd rejects
        C{application/json; charset=...} on find and categories.
        """
        self.origin.answer = (200, [(b"Content-Type", b"application/json")], b'{"categories":[]}')
        response, content = yield self.call(b"GET", b"/v2/snaps/categories")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(content, b'{"categories":[]}')

    @inlineCallbacks
    def test_snapdHeadersReachUpstream(self):
        """
        The headers that identify the device and user reach upstream
        unchanged.
        """
        yield self.call(b"POST", b"/v2/snaps/refresh", b"{}", SNAPD_HEADERS)
        for name, value in SNAPD_HEADERS:
            self.assertEqual(self.origin.header(name), [value], name)

    @inlineCallbacks
    def test_hopByHopHeadersDropped(self):
        """
        Hop-by-hop request headers, and headers the client's C{Connection}
        names, do not reach upstream; C{Via} is added.
        """
        yield self.call(b"GET", b"/v2/snaps/categories", None, [
            (b"Connection", b"X-Private-Hop"),
            (b"X-Private-Hop", b"secret"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Authorization", b"Basic dXNlcjpwYXNz"),
            (b"TE", b"trailers"),
            (b"Upgrade", b"h2c"),
            (b"Via", b"1.1 device-side-proxy"),
        ])
        for name in (b"x-private-hop", b"keep-alive", b"proxy-authorization", b"te", b"upgrade"):
            self.assertIsNone(self.origin.header(name), name)
        self.assertEqual(self.origin.header(b"via"), [b"1.1 device-side-proxy, 1.1 snapstore"])
        self.assertEqual(self.origin.header(b"host"), [self.upstreamURL[7:-1].encode()])

    @inlineCallbacks
    def test_responseHeaders(self):
        """
        End-to-end response headers (C{WWW-Authenticate}, C{X-Oops-Id},
        C{Snap-Store-Version}) reach snapd; hop-by-hop ones do not; C{Via}
        names the proxy.
        """
        self.origin.answer = (401, [
            (b"Content-Type", b"application/json"),
            (b"WWW-Authenticate", b'Macaroon needs_refresh=1'),
            (b"X-Oops-Id", b"OOPS-123"),
            (b"Snap-Store-Version", b"58"),
            (b"Proxy-Authenticate", b"Basic realm=upstream-hop"),
            (b"Trailer", b"X-Checksum"),
        ], b'{"error-list":[{"code":"user-authorization-needs-refresh","message":"m"}]}')
        response, content = yield self.call(b"POST", b"/v2/snaps/refresh", b"{}")
        self.assertEqual(response.code, 401)
        for name, value in [(b"www-authenticate", b"Macaroon needs_refresh=1"),
                            (b"x-oops-id", b"OOPS-123"), (b"snap-store-version", b"58")]:
            self.assertEqual(response.headers.getRawHeaders(name), [value])
        self.assertIsNone(response.headers.getRawHeaders(b"proxy-authenticate"))
        self.assertIsNone(response.headers.getRawHeaders(b"trailer"))
        self.assertEqual(response.headers.getRawHeaders(b"via"), [b"1.1 snapstore"])
        self.assertIn(b"user-authorization-needs-refresh", content)

    @inlineCallbacks
    def test_refreshURLsRewrittenToHost(self):
        """
        Without C{--public-url}, download URLs point at the Host the device
        used, and the blob is recorded for the download path.
        """
        answer = {"results": [{"result": "install", "instance-key": "install-1", "name": "hello",
                               "snap": {"snap-id": "S" * 32, "name": "hello", "revision": 3,
                                        "download": {"url": self.upstreamURL + "api/v1/snaps/download/" + "S" * 32 + "_3.snap",
                                                     "size": 10, "sha3-384": "0" * 96}}}]}
        self.origin.answer = (200, [(b"Content-Type", b"application/json")], json.dumps(answer).encode())
        response, content = yield self.call(b"POST", b"/v2/snaps/refresh", b"{}",
                                            [(b"Host", b"snapstore.lan:8000")])
        url = json.loads(content)["results"][0]["snap"]["download"]["url"]
        self.assertEqual(url, "http://snapstore.lan:8000/api/v1/snaps/download/" + "S" * 32 + "_3.snap")
        self.assertEqual(response.length, len(content))
        record = self.state.blobs["S" * 32 + "_3.snap"]
        self.assertEqual((record.size, record.revision, record.url), (10, 3, answer["results"][0]["snap"]["download"]["url"]))

    @inlineCallbacks
    def test_publicURLWins(self):
        """
        With C{--public-url}, rewritten URLs use it whatever Host was sent.
        """
        yield self.startProxy(upstream=self.upstreamURL, public_url="https://snaps.example.com/base")
        answer = {"channel-map": [{"channel": {"architecture": "amd64"}, "revision": 1,
                                   "download": {"url": "https://cdn.example/api/v1/snaps/download/x_1.snap",
                                                "size": 1, "sha3-384": "1" * 96}}]}
        self.origin.answer = (200, [(b"Content-Type", b"application/json")], json.dumps(answer).encode())
        response, content = yield self.call(b"GET", b"/v2/snaps/info/x")
        self.assertEqual(json.loads(content)["channel-map"][0]["download"]["url"],
                         "https://snaps.example.com/base/api/v1/snaps/download/x_1.snap")

    @inlineCallbacks
    def test_upstreamErrorPassesThrough(self):
        """
        Upstream's own errors (a 404 assertion in problem+json) reach snapd
        unchanged, Content-Type included.
        """
        body = b'{"error-list":[{"code":"not-found","message":"not found"}]}'
        self.origin.answer = (404, [(b"Content-Type", b"application/problem+json")], body)
        response, content = yield self.call(b"GET", b"/v2/assertions/account/nobody")
        self.assertEqual((response.code, content), (404, body))
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/problem+json"])

    @inlineCallbacks
    def test_unknownPath(self):
        """
        Paths outside the store API get a store-format 404 and never reach
        upstream.
        """
        response, content = yield self.call(b"GET", b"/etc/passwd")
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(content)["error-list"][0]["code"], "not-found")
        self.assertEqual(self.origin.requests, [])


class UpstreamFailureTests(TestCase):
    """
    When upstream fails, snapd gets a store-format 502 or 504 saying why.
    """

    @inlineCallbacks
    def proxyFor(self, upstream, **given):
        settings = testSettings(self, upstream=upstream, **given)
        store = yield Deferred.fromCoroutine(startStore(self, settings))
        return store.url

    @inlineCallbacks
    def fetch(self, proxyURL, method=b"GET", path=b"/v2/snaps/info/hello"):
        response = yield testAgent(self).request(method, proxyURL.encode() + path)
        content = yield readBody(response)
        return response, json.loads(content)

    def closedPort(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        return port

    @inlineCallbacks
    def test_unreachable(self):
        """
        A refused connection is a 502 C{upstream-unreachable}.
        """
        proxyURL = yield self.proxyFor(f"http://127.0.0.1:{self.closedPort()}/")
        response, error = yield self.fetch(proxyURL)
        self.assertEqual(response.code, 502)
        self.assertEqual(error["error-list"][0]["code"], "upstream-unreachable")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])

    @inlineCallbacks
    def test_timeout(self):
        """
        An upstream that never answers is a 504 C{upstream-timeout} after
        C{--upstream-timeout}, before snapd's own 10 s limit.
        """
        origin = RecordingOrigin()
        origin.answer = "hang"
        port = yield listen(self, originSite(origin))
        proxyURL = yield self.proxyFor(f"http://127.0.0.1:{port}/", upstream_timeout="0.5")
        response, error = yield self.fetch(proxyURL)
        self.assertEqual(response.code, 504)
        self.assertEqual(error["error-list"][0]["code"], "upstream-timeout")
        self.assertIn("0.5s", error["error-list"][0]["message"])

    @inlineCallbacks
    def test_garbage(self):
        """
        An upstream that does not speak HTTP is a 502.
        """
        port = yield listen(self, garbageFactory())
        proxyURL = yield self.proxyFor(f"http://127.0.0.1:{port}/")
        response, error = yield self.fetch(proxyURL)
        self.assertEqual(response.code, 502)
        self.assertEqual(error["error-list"][0]["code"], "upstream-bad-response")

    @inlineCallbacks
    def test_invalidJSON(self):
        """
        A refresh answer that is not JSON cannot be rewritten and is a 502,
        never passed on with store URLs the device cannot use.
        """
        origin = RecordingOrigin()
        origin.answer = (200, [(b"Content-Type", b"application/json")], b"<html>maintenance</html>")
        port = yield listen(self, originSite(origin))
        proxyURL = yield self.proxyFor(f"http://127.0.0.1:{port}/")
        response, error = yield self.fetch(proxyURL, b"POST", b"/v2/snaps/refresh")
        self.assertEqual(response.code, 502)
        self.assertIn("invalid JSON", error["error-list"][0]["message"])


class HalfAnsweringOrigin(Resource):
    """
    An upstream that sends the headers and the first half of a refresh
    answer, then holds the rest until the test releases it.

    @ivar pending: the requests still waiting for their second half.
    @ivar upstreamLost: fires when the proxy drops the connection of a
        held answer.
    """

    isLeaf = True
    answer = json.dumps({"results": [], "error-list": []}).encode()

    def __init__(self) -> None:
        super().__init__()
        self.pending: list = []
        self.upstreamLost: Deferred = Deferred()

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(self.answer))
        request.write(self.answer[:10])
        self.pending.append(request)
        request.notifyFinish().addErrback(lambda _: self.upstreamLost.callback(None))
        return NOT_DONE_YET

    def release(self) -> None:
        for request in self.pending:
            if not request._disconnected:
                request.write(self.answer[10:])
                request.finish()


class ClientLeavesTests(TestCase):
    """
    A client that goes away mid-relay ends the relay quietly: the upstream
    answer it was waiting for is abandoned, and nothing is logged as a
    failure.
    """

    @inlineCallbacks
    def test_clientClosesMidAnswer(self):
        """
        A device that closes its connection while upstream is half way
        through a refresh answer: the proxy drops the upstream connection,
        and logs neither a critical event nor a traceback, even once
        upstream would have sent the rest.
        """
        events = capturedEvents(self)
        origin = HalfAnsweringOrigin()
        port = yield listen(self, originSite(origin))
        settings = testSettings(self, upstream=f"http://127.0.0.1:{port}/")
        store = yield Deferred.fromCoroutine(startStore(self, settings))
        address = store.url.split("//")[1].strip("/").split(":")
        body = b'{"context":[],"actions":[]}'
        client = socket.create_connection((address[0], int(address[1])))
        self.addCleanup(client.close)
        client.sendall(b"POST /v2/snaps/refresh HTTP/1.1\r\nHost: proxy\r\n"
                       b"Content-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        for _ in range(200):
            if origin.pending:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(origin.pending), 1, "upstream never got the refresh")
        client.close()
        for _ in range(200):
            if origin.upstreamLost.called:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        origin.release()
        yield deferLater(reactor, 0.3, lambda: None)
        loud = [event.get("log_format") for event in events
                if event.get("log_failure") is not None
                or event.get("log_level") in (LogLevel.critical, LogLevel.error)]
        self.assertEqual(loud, [])
        self.assertTrue(origin.upstreamLost.called, "the upstream answer was read to the end")
        self.assertEqual([event["status"] for event in events if event.get("access")], [499])


class StoreErrorTests(TestCase):
    """
    Tests for L{storeErrorBody}.
    """

    def test_shape(self):
        """
        Errors use the store's C{error-list} shape.
        """
        self.assertEqual(json.loads(storeErrorBody("c", "m")), {"error-list": [{"code": "c", "message": "m"}]})
