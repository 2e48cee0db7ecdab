"""
Per-request work the store's requests skip (issue 20), with the behaviour
kept: L{snapstore.observe.access.ObservedRequest}.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from snapstore.observe.access import ACCESS_NAMESPACE, ObservedRequest
from snapstore.observe.logs import eventAsJSON
from tests.helpers import capturedEvents
from tests.test_admin import RunningService


class ContentTypeParsingTests(SynchronousTestCase):
    """
    JSON bodies do not go through Twisted's C{email}-based Content-Type
    parsing; form bodies still do.
    """

    def setUp(self):
        self.parsed = []
        original = http._parseContentType

        def recording(line):
            self.parsed.append(line)
            return original(line)

        self.patch(http, "_parseContentType", recording)

    def post(self, ctype: bytes, body: bytes) -> ObservedRequest:
        request = ObservedRequest(DummyChannel())
        request.process = lambda: None
        request.requestHeaders.setRawHeaders(b"content-type", [ctype])
        request.requestHeaders.setRawHeaders(b"content-length", [str(len(body)).encode()])
        request.gotLength(len(body))
        request.handleContentChunk(body)
        request.requestReceived(b"POST", b"/v2/snaps/refresh?x=1", b"HTTP/1.1")
        return request

    def test_jsonNotParsed(self):
        """
        C{application/json}, with parameters or in another case, is not
        parsed; the query's arguments are still there.
        """
        for ctype in (b"application/json", b"Application/JSON; charset=utf-8", b" application/json"):
            request = self.post(ctype, b'{"a": "b=c"}')
            self.assertEqual(request.args, {b"x": [b"1"]})
            self.assertEqual(request.content.read(), b'{"a": "b=c"}')
        self.assertEqual(self.parsed, [])

    def test_formStillParsed(self):
        """
        A form body is read into C{args} as Twisted does, and a type that
        merely starts like JSON is parsed as before.
        """
        request = self.post(b"application/x-www-form-urlencoded", b"a=b")
        self.assertEqual(request.args, {b"x": [b"1"], b"a": [b"b"]})
        self.post(b"application/jsonx", b"a=b")
        self.assertEqual(self.parsed, [b"application/x-www-form-urlencoded", b"application/jsonx"])


class SecureOnceTests(SynchronousTestCase):
    """
    L{ObservedRequest.isSecure} asks the connection once, and answers as
    Twisted does.
    """

    def request(self, channel):
        return ObservedRequest(channel)

    def test_plainAndSecure(self):
        """
        A plain connection is not secure, a TLS one is; each connection is
        asked once, however many requests it carries; C{setHost(ssl=True)}
        still makes a request secure.
        """
        asked = []

        class Channel(DummyChannel):
            def isSecure(self):
                asked.append(self)
                return super().isSecure()

        plain, secure = Channel(), Channel()
        secure.transport = DummyChannel.SSL()
        self.assertEqual([self.request(plain).isSecure() for _ in range(3)], [False] * 3)
        self.assertEqual([self.request(secure).isSecure() for _ in range(3)], [True] * 3)
        self.assertEqual(asked, [plain, secure])
        forced = self.request(plain)
        forced.setHost(b"example.com", 443, ssl=True)
        self.assertTrue(forced.isSecure())


class AccessLineTests(TestCase):
    """
    The access line, now written before it reaches the log, reads as it
    did when twisted.logger formatted it from the fields.
    """

    @inlineCallbacks
    def setUp(self):
        self.service = yield RunningService(self).start()
        self.events = capturedEvents(self, ACCESS_NAMESPACE)

    @inlineCallbacks
    def test_lineFromFields(self):
        """
        The text of a download's event is the fields in the documented
        order, and the JSON format carries the same message and fields.
        """
        url = yield self.service.refresh()
        yield self.service.download(url)
        event = self.events[-1]
        self.assertEqual(
            formatEvent(event),
            '127.0.0.1 address:127.0.0.1 "GET {}" 200 3000 {:.3f}s cache=miss snap=hello revision=3'
            .format(event["path"], event["duration"]))
        record = json.loads(eventAsJSON(event))
        self.assertEqual(record["message"], formatEvent(event))
        self.assertEqual((record["snap"], record["bytes"]), ("hello", 3000))
        # The JSON columns keep the order docs/operating.md ("Logs") shows.
        self.assertEqual(list(record)[:15], ["time", "level", "namespace", "message", "method", "path",
                                        "status", "bytes", "duration", "cache", "access", "client",
                                        "device", "snap", "revision"])

    @inlineCallbacks
    def test_noFormattingPerLine(self):
        """
        The access line reaches the text log as it was written: no format
        is run over it on the way (neither Logger.emit's checks nor
        twisted.logger's formatting), and it reads as twistd writes it.
        """
        import io

        from twisted.internet.task import Clock
        from twisted.logger import formatEventAsClassicLogText, globalLogPublisher
        from twisted.logger import _logger

        from snapstore.observe import logs
        from snapstore.observe.logs import TextLineObserver

        output = io.StringIO()
        observer = TextLineObserver(output, Clock())
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        calls = []
        originalFormat, originalEmit = logs.formatEventAsClassicLogText, _logger.Logger.emit

        def formatEventAsClassicLogText(event, *args, **kwargs):
            if event.get("log_namespace") == ACCESS_NAMESPACE:
                calls.append("format")
            return originalFormat(event, *args, **kwargs)

        def emit(logger, *args, **kwargs):
            if logger.namespace == ACCESS_NAMESPACE:
                calls.append("emit")
            return originalEmit(logger, *args, **kwargs)

        self.patch(logs, "formatEventAsClassicLogText", formatEventAsClassicLogText)
        self.patch(_logger.Logger, "emit", emit)
        url = yield self.service.refresh()
        yield self.service.download(url)
        written = [line for line in output.getvalue().splitlines() if ACCESS_NAMESPACE in line]
        self.assertEqual((len(self.events), len(written), calls), (2, 2, []))
        self.assertEqual(written[-1] + "\n", formatEventAsClassicLogText(
            self.events[-1], formatTime=observer.formatTime))

    @inlineCallbacks
    def test_braces(self):
        """
        Braces in a requested path appear in the line as sent, not taken
        for the log's replacement fields.
        """
        agent = Agent(reactor)
        response = yield agent.request(
            b"GET", f"{self.service.storeURL}/v2/snaps/info/a{{snap}}b%7B%7D".encode())
        yield readBody(response)
        line = formatEvent(self.events[-1])
        self.assertIn('"GET /v2/snaps/info/a{snap}b%7B%7D"', line)
        self.assertIn("snap=a{snap}b%7B%7D", line)


class _AnswersEarly(Protocol):
    """
    An upstream that answers as soon as a request's head arrived, before
    reading its body (as a fixed answer or an early error does), and keeps
    the connection alive; it discards whatever else arrives.
    """

    def connectionMade(self):
        self.factory.connections += 1
        self.buffer = b""
        self.skip = 0

    def dataReceived(self, data):
        self.buffer += data
        while True:
            if self.skip:
                # The body of the request answered already, discarded.
                dropped = self.buffer[:self.skip]
                self.buffer = self.buffer[self.skip:]
                self.skip -= len(dropped)
                if self.skip:
                    return
            if b"\r\n\r\n" not in self.buffer:
                return
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.skip = int(value)
            self.factory.bodies.append(self.skip)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 2\r\n\r\n{}")


class BodyInSameTurnTests(TestCase):
    """
    L{snapstore.http.bodies.BytesProducer}: the upstream client writes a
    request's body with its head, so a kept-alive upstream connection is
    reused even when upstream answers before reading the body.
    """

    def test_bodyWrittenWithHead(self):
        """
        The body producer L{StoreUpstream} hands its agent puts the whole
        body on the connection as soon as the request is sent.
        """
        from twisted.internet.defer import Deferred
        from twisted.internet.testing import StringTransport
        from twisted.web._newclient import HTTP11ClientProtocol, Request as ClientRequest
        from twisted.web.http_headers import Headers

        from snapstore.store.upstream import StoreUpstream

        class RecordingAgent:
            def request(self, method, uri, headers=None, bodyProducer=None):
                self.bodyProducer = bodyProducer
                return Deferred()

        agent = RecordingAgent()
        upstream = StoreUpstream(agent, "http://upstream.invalid/", reactor, 10)
        pending = upstream.request(b"POST", upstream.url(b"/v2/snaps/refresh"), Headers(), b'{"a": 1}')
        self.addCleanup(pending.addErrback, lambda _: None)
        self.addCleanup(pending.cancel)
        protocol = HTTP11ClientProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.request(ClientRequest(b"POST", b"/v2/snaps/refresh", Headers({b"host": [b"x"]}),
                                       agent.bodyProducer))
        self.assertTrue(transport.value().endswith(b'\r\n\r\n{"a": 1}'), transport.value())
        self.assertIn(b"Content-Length: 8\r\n", transport.value())

    @inlineCallbacks
    def test_connectionReused(self):
        """
        Three relayed POSTs to an upstream answering before the body use one
        connection.
        """
        from twisted.internet.protocol import Factory
        from twisted.web.client import HTTPConnectionPool
        from twisted.web.http_headers import Headers

        from snapstore.store.upstream import StoreUpstream

        factory = Factory.forProtocol(_AnswersEarly)
        factory.connections = 0
        factory.bodies = []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        upstream = StoreUpstream(Agent(reactor, pool=pool),
                                 f"http://127.0.0.1:{port.getHost().port}/", reactor, 10)
        for _ in range(3):
            response = yield upstream.request(b"POST", upstream.url(b"/v2/snaps/refresh"),
                                              Headers({b"content-type": [b"application/json"]}),
                                              b'{"context": []}')
            self.assertEqual((yield readBody(response)), b"{}")
        self.assertEqual(factory.bodies, [15, 15, 15])
        self.assertEqual(factory.connections, 1)


class ParsedOnceTests(TestCase):
    """
    A relayed refresh parses its body once and upstream's answer twice
    (the stale-answer memory keeps its own copy, which the rules cannot
    change), and decodes a gzipped answer once, however many parts read
    them (the rules, the inventory, the stale-answer memory, the rewrite).
    """

    MARKER = "parsed-once-marker"

    def count(self):
        """
        Count the JSON parses and gzip decodes snapstore's own modules
        make, of the refresh body (C{body}) and of upstream's answer
        (C{answer}, recognised by the fake store's URLs in it).
        """
        import sys

        from snapstore.store import compression

        counts = {"body": 0, "answer": 0, "decode": 0}
        originalLoads = json.loads
        originalFeed = compression.Inflater.feed

        def byProxy():
            return sys._getframe(2).f_globals.get("__name__", "").startswith("snapstore.")

        def loads(text, *args, **kwargs):
            raw = text.encode() if isinstance(text, str) else bytes(text)
            if byProxy():
                if self.MARKER.encode() in raw:
                    counts["body"] += 1
                elif b'"results"' in raw and self.service.fake.apiURL.encode() in raw:
                    counts["answer"] += 1
            return originalLoads(text, *args, **kwargs)

        def feed(inflater, data):
            if byProxy():
                counts["decode"] += 1
            return originalFeed(inflater, data)

        self.patch(json, "loads", loads)
        self.patch(compression.Inflater, "feed", feed)
        return counts

    @inlineCallbacks
    def refreshOnce(self, compress):
        from tests.fakestore import FakeStore

        fake = FakeStore(reactor, compress=compress)
        fake.addSnap("hello")
        fake.addRevision("hello", 3, 3000)
        yield fake.start()
        self.addCleanup(fake.stop)
        self.service = yield RunningService(self).start(fake=fake)
        counts = self.count()
        body = json.dumps({
            "context": [{"snap-id": fake.snapId("hello"), "instance-key": "k1", "revision": 1,
                         "tracking-channel": "stable", "epoch": {"read": [0], "write": [0]}}],
            "actions": [{"action": "refresh", "instance-key": "k1",
                         "snap-id": fake.snapId("hello")}],
            "fields": ["revision", "snap-id", "download", "name", self.MARKER],
        }).encode()
        response, content = yield self.service.get(
            self.service.storeURL + "/v2/snaps/refresh", b"POST",
            {b"content-type": [b"application/json"], b"snap-device-series": [b"16"],
             b"snap-device-architecture": [b"amd64"]}, body)
        self.assertEqual(response.code, 200, content)
        result = json.loads(content)["results"][0]
        self.assertEqual((result["result"], result["snap"]["revision"]), ("refresh", 3))
        self.assertIn(self.service.storeURL, result["snap"]["download"]["url"])
        # The inventory recorded the device's installed set from the body
        # (written after the answer: wait for the state store's queue).
        for _ in range(100):
            fleet = yield self.service.state().listFleet()
            if fleet:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([(snap.snapId, snap.revision) for device in fleet for snap in device.snaps],
                         [(fake.snapId("hello"), 1)])
        return counts

    @inlineCallbacks
    def test_plainAnswer(self):
        """
        A plain answer: the body parsed once, the answer twice.
        """
        counts = yield self.refreshOnce(None)
        self.assertEqual((counts["body"], counts["answer"]), (1, 2))

    @inlineCallbacks
    def test_gzippedAnswer(self):
        """
        A gzipped answer is decoded once, for both its readers.
        """
        counts = yield self.refreshOnce("gzip")
        self.assertEqual(counts, {"body": 1, "answer": 2, "decode": 1})


#: A rules file with an admission rule and an action rule that answer at
#: once (plain values, as most rules do).
PLAIN_RULES = """
from zope.interface import implementer
from snapstore.interfaces import IActionRule, IAdmissionRule
from snapstore.rules.verdicts import Abstain

@implementer(IAdmissionRule, IActionRule)
class Plain:
    name = "plain"
    def admit(self, request):
        return Abstain()
    def amend(self, request, action, result):
        return result

def rules(env):
    return [Plain()]
"""


class RefreshLayersTests(TestCase):
    """
    What a relayed refresh costs in layers (issue 20, fourth round): one
    coroutine driven through a L{Deferred} (the relay's; the rules' are
    awaited directly), two L{Headers} the proxy makes itself (the one sent
    upstream, and upstream's answer's, made by the client of
    L{snapstore.http.client}), no JSON encoding of URLs and no record copies
    (C{attrs.evolve}), with rules that answer at once, a device in no group
    and blobs already recorded.
    """

    @inlineCallbacks
    def test_refreshLayers(self):
        import sys

        import attrs
        from twisted.internet import defer
        from twisted.web import http_headers

        self.service = yield RunningService(self).start(rules={"50-plain.py": PLAIN_RULES})
        yield self.service.refresh()  # blobs recorded, connections open
        counts = {"coroutines": 0, "headers": 0, "json.dumps": 0, "evolve": 0}

        def byProxy():
            return sys._getframe(2).f_globals.get("__name__", "").startswith("snapstore.")

        def counting(owner, name, key):
            original = getattr(owner, name)

            def count(*args, **kwargs):
                if byProxy():
                    counts[key] += 1
                return original(*args, **kwargs)

            self.patch(owner, name, count)

        originalFromCoroutine = defer.Deferred.fromCoroutine

        def fromCoroutine(coroutine):
            if byProxy():
                counts["coroutines"] += 1
            return originalFromCoroutine(coroutine)

        self.patch(defer.Deferred, "fromCoroutine", staticmethod(fromCoroutine))
        counting(json, "dumps", "json.dumps")
        counting(attrs, "evolve", "evolve")
        originalInit = http_headers.Headers.__init__

        def init(headers, *args, **kwargs):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("snapstore."):
                counts["headers"] += 1
            originalInit(headers, *args, **kwargs)

        self.patch(http_headers.Headers, "__init__", init)
        url = yield self.service.refresh()
        self.assertIn(self.service.storeURL, url)
        self.assertEqual(counts, {"coroutines": 1, "headers": 2, "json.dumps": 0, "evolve": 0})
