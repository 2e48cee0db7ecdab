"""
Tests for L{snapstore.http.controlchars}: control characters in requests are
refused on every listener (raw bytes over real loopback sockets), and text
from devices or upstream is escaped in logs and the command's output.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from snapstore import cli
from snapstore.observe.access import AccessObserver
from snapstore.http.controlchars import escapeControls, requestControls
from snapstore.observe.accesslog import AccessEntry
from tests.hardeninghelpers import rawExchange, statuses
from tests.processes import freePort
from tests.test_admin import RunningService
from tests.unithelpers import EndedRequest

#: Request targets and header lines that smuggle control characters.
BAD_TARGETS = [b"/v2/snaps/info/hello\rX-Injected:%201", b"/v2/snaps/info/hel\x1b[2Jlo",
               b"/v2/snaps/info/hello\x7f", b"/v2/snaps/info/hello\x01"]
BAD_HEADERS = [b"Snap-Device-Series: 16\rX-Injected: 1", b"User-Agent: snapd\x00evil",
               b"User-Agent: snapd\x1b]0;pwned\x07", b"X-Note: a\x0bb", b"X-Bad\x01Name: 1"]


class ListenerTests(TestCase):
    """
    The store, admin and forward-proxy listeners of a service tree in
    front of a fake store.
    """

    timeout = 60

    async def setUp(self) -> None:
        self.proxyPort = freePort()
        self.service = RunningService(self)
        await self.service.start("--proxy-endpoint", f"tcp:{self.proxyPort}:interface=127.0.0.1")

    def upstreamSaw(self, fragment: str) -> int:
        return sum(1 for record in self.service.fake.requests if fragment in record.path)

    async def test_refusedOnEveryListener(self) -> None:
        """
        A control character in the target or in a header gets a 400 and
        reaches nobody.
        """
        store = f"127.0.0.1:{self.service.storePort}".encode()
        cases = []
        for target in BAD_TARGETS:
            cases.append((self.service.storePort, b"GET %s HTTP/1.1\r\nHost: %s\r\n" % (target, store)))
            cases.append((self.service.adminPort, b"GET /v1/status?x=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          % target[len(b"/v2/snaps/info/"):]))
            cases.append((self.proxyPort, b"GET http://%s%s HTTP/1.1\r\nHost: %s\r\n"
                          % (store, target, store)))
        for header in BAD_HEADERS:
            cases.append((self.service.storePort,
                          b"GET /v2/snaps/info/hello HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (store, header)))
            cases.append((self.service.adminPort,
                          b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % header))
            cases.append((self.proxyPort, b"GET http://%s/v2/snaps/info/hello HTTP/1.1\r\n"
                          b"Host: %s\r\n%s\r\n" % (store, store, header)))
            cases.append((self.proxyPort, b"CONNECT example.com:443 HTTP/1.1\r\n"
                          b"Host: example.com:443\r\n%s\r\n" % header))
        before = self.upstreamSaw("/v2/snaps/info/")
        for port, head in cases:
            answer = await rawExchange(port, head + b"Connection: close\r\n\r\n")
            self.assertEqual(statuses(answer), [400], (port, head, answer))
        self.assertEqual(self.upstreamSaw("/v2/snaps/info/"), before)
        # Tabs inside header values are allowed (RFC 9110 field values).
        answer = await rawExchange(self.service.storePort,
                                   b"GET /v2/snaps/info/hello HTTP/1.1\r\nHost: %s\r\n"
                                   b"User-Agent: snapd\tx\r\nConnection: close\r\n\r\n" % store)
        self.assertEqual(statuses(answer), [200])


class EscapingTests(SynchronousTestCase):
    """
    Values that did not come in a request head are escaped for logs and
    terminals.
    """

    def test_escape(self) -> None:
        self.assertEqual(escapeControls("a\r\nb\x1b[2J\x00\x9b\tc"),
                         "a\\x0d\\x0ab\\x1b[2J\\x00\\x9b\\x09c")
        self.assertEqual(escapeControls("a\nb\tc\x1b", keepLines=True), "a\nb\tc\\x1b")
        self.assertEqual(escapeControls("snap ünïcode"), "snap ünïcode")
        self.assertIsNone(requestControls(b"/a?b=%0d", [(b"User-Agent", b"x\ty")]))

    def test_upstreamResponseHead(self) -> None:
        """
        The forward proxy refuses an origin's response head with control
        characters (C{502}) rather than relay it.
        """
        from snapstore.http.head import HeadError, parseHead

        error = self.assertRaises(HeadError, parseHead,
                                  b"HTTP/1.1 200 OK\r\nX-Note: a\x1bb\r\n\r\n", False)
        self.assertEqual(error.code, 502)
        self.assertEqual(parseHead(b"HTTP/1.1 200 OK\r\nX-Note: a\tb\r\n\r\n", False).get(b"x-note"),
                         [b"a\tb"])

    def test_forwardAccessLine(self) -> None:
        entry = AccessEntry(0.0, "10.0.0.1", "GET", "http://x/\r\n2026 forged line", )
        entry.note = "bad\nnote"
        line = entry.line()
        self.assertNotIn("\n", line)
        self.assertNotIn("\r", line)
        self.assertIn("\\x0d\\x0a2026 forged line", line)

    def test_storeAccessEvent(self) -> None:
        """
        A device identity with a newline (from a session body) stays on
        the access event's one line.
        """
        events: list[dict[str, Any]] = []
        observer = AccessObserver(None, reactor)
        observer.log.observer = events.append

        observer.ended(EndedRequest(b"POST", b"/v2/snaps/refresh",
                                    {"device": "serial\n2026-12-03 forged \x1b[31m"}), 200)
        self.assertEqual(events[0]["device"], "serial\\x0a2026-12-03 forged \\x1b[31m")


class CommandOutputTests(TestCase):
    """
    The C{snapstore} command shows what the admin API returns without
    letting it drive the terminal.
    """

    async def test_devicesTable(self) -> None:
        devices = Resource()
        answer = json.dumps({"connected": 1, "limit": None, "devices": [{
            "identity": "serial\r\x1b[2Kowned", "model": "m\nNext line", "address": "10.0.0.3",
            "architecture": "amd64\x1b[0m", "groups": ["g\x07"], "snaps": [],
            "first-seen": "2026-12-03T00:00:00Z", "last-seen": "2026-12-03T00:00:00Z"}]}).encode()

        class Answer(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                request.setHeader(b"content-type", b"application/json")
                return answer

        v1 = Resource()
        devices.putChild(b"v1", v1)
        v1.putChild(b"devices", Answer())
        port = reactor.listenTCP(0, Site(devices), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        out, err = io.StringIO(), io.StringIO()
        code = await deferToThread(cli.main, ["--admin", f"http://127.0.0.1:{port.getHost().port}",
                                              "devices"], out, err)
        self.assertEqual(code, 0, err.getvalue())
        text = out.getvalue()
        self.assertNotIn("\x1b", text)
        self.assertNotIn("\r", text)
        self.assertEqual(len(text.splitlines()), 3, text)
        self.assertIn("serial\\x0d\\x1b[2Kowned", text)
