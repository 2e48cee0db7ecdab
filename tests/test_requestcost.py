"""
Per-request work the store's requests skip (issue 20), with the behaviour
kept: L{snapstore.observe.access.ObservedRequest}.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from snapstore.http.bodies import BytesProducer
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
