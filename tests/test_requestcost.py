"""
Per-request work the store's requests skip (issue 20), with the behaviour
kept: L{snapstore.observe.access.ObservedRequest}.
"""

from __future__ import annotations

from io import BytesIO

from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from snapstore.observe.access import ObservedRequest


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
