"""
Per-request work the store's requests skip (issue 20), with the behaviour
kept: L{snapstore.observe.access.ObservedRequest}.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from snapstore.observe.access import ACCESS_NAMESPACE, ObservedRequest
from snapstore.observe.logs import eventAsJSON
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
        self.events = []

        def observe(event):
            if event.get("log_namespace") == ACCESS_NAMESPACE:
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

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
