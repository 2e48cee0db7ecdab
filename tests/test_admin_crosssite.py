"""
Tests for L{snapstore.admin.crosssite}: what a web page open in a browser
on the snapstore host could send to the admin API, sent raw at a real
C{twistd snapstore} process with no token file (so every loopback client
is trusted).
"""

from __future__ import annotations

import io
import json
import os

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from snapstore import cli
from tests.hardeninghelpers import parseAnswer, rawExchange
from tests.processes import freePort, spawnFakeStore, startTwistd, waitForPort

PIN = json.dumps({"channel-map": [{"channel": "stable", "revision": 1}]}).encode()


def browserRequest(method: bytes, path: bytes, host: bytes, origin: bytes | None,
                   contentType: bytes | None, body: bytes = b"") -> bytes:
    """
    A request as a browser sends it for a page's form or C{fetch()}.
    """
    lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: " + host,
             b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
             b"Accept: text/html,application/xhtml+xml,*/*;q=0.8",
             b"Connection: close", b"Content-Length: %d" % len(body)]
    if origin is not None:
        lines.append(b"Origin: " + origin)
    if contentType is not None:
        lines.append(b"Content-Type: " + contentType)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class CrossSiteTests(TestCase):
    """
    Cross-site form posts and DNS rebinding against the admin endpoint.
    """

    timeout = 120

    async def setUp(self) -> None:
        upstream = await spawnFakeStore(self, "hello:1:4096")
        self.adminPort = freePort()
        self.process, self.storePort = await startTwistd(
            self, "--upstream", upstream, "--proxy-endpoint", "none",
            "--admin-endpoint", f"tcp:{self.adminPort}:interface=127.0.0.1",
            "--data-dir", os.path.abspath(self.mktemp()))
        await waitForPort(self.adminPort, self.process)
        self.own = b"127.0.0.1:%d" % self.adminPort

    async def send(self, *args: object, **kwargs: object) -> tuple[int, dict]:
        answer = await rawExchange(self.adminPort, browserRequest(*args, **kwargs))
        status, _, body = parseAnswer(answer)
        return status, json.loads(body) if body.strip() else {}

    async def pins(self) -> list:
        status, answer = await self.send(b"GET", b"/v1/overrides", self.own, None, None)
        self.assertEqual(status, 200)
        return answer["overrides"]

    async def test_crossSiteFormPosts(self) -> None:
        """
        The form posts of a hostile page (text/plain and form-encoded
        bodies, its own Origin, rebound Host) change nothing.
        """
        evil = b"http://evil.example"
        cases = [
            (b"POST", b"/v1/overrides/hello", b"evil.example:%d" % self.adminPort, evil,
             b"text/plain", PIN, 403, "forbidden-host"),
            (b"POST", b"/v1/overrides/hello", self.own, evil, b"text/plain", PIN,
             403, "cross-origin"),
            (b"POST", b"/v1/overrides/hello", self.own, b"null", b"text/plain", PIN,
             403, "cross-origin"),
            (b"POST", b"/v1/overrides/hello", self.own, None, b"text/plain", PIN,
             415, "unsupported-media-type"),
            (b"POST", b"/v1/cache/prune", self.own, evil,
             b"application/x-www-form-urlencoded", b"a=b", 403, "cross-origin"),
            (b"POST", b"/v1/cache/prune", self.own, None,
             b"application/x-www-form-urlencoded", b"a=b", 415, "unsupported-media-type"),
            (b"POST", b"/v1/cache/prune", self.own, None, None, b"", 415,
             "unsupported-media-type"),
            (b"POST", b"/v1/import", self.own, None, b"text/plain", b"x" * 100, 415,
             "unsupported-media-type"),
            (b"POST", b"/v1/import", self.own, None, b"application/json", b"{}", 415,
             "unsupported-media-type"),
            # A page on another port of this host is another origin.
            (b"POST", b"/v1/overrides/hello", self.own, b"http://127.0.0.1:%d" % self.storePort,
             b"application/json", PIN, 403, "cross-origin"),
        ]
        for method, path, host, origin, contentType, body, wantStatus, wantCode in cases:
            status, answer = await self.send(method, path, host, origin, contentType, body)
            self.assertEqual((status, answer["error"]["code"]), (wantStatus, wantCode),
                             (path, host, origin, contentType))
        self.assertEqual(await self.pins(), [])

    async def test_dnsRebinding(self) -> None:
        """
        A rebound name (a page's own host name now resolving to 127.0.0.1)
        reads nothing, even with a same-origin C{Origin}.
        """
        for path in (b"/v1/status", b"/v1/audit", b"/metrics"):
            status, answer = await self.send(b"GET", path, b"rebind.example:%d" % self.adminPort,
                                             None, None)
            self.assertEqual((status, answer["error"]["code"]), (403, "forbidden-host"))
        status, _ = await self.send(b"POST", b"/v1/overrides/hello",
                                    b"rebind.example:%d" % self.adminPort,
                                    b"http://rebind.example:%d" % self.adminPort,
                                    b"application/json", PIN)
        self.assertEqual(status, 403)
        self.assertEqual(await self.pins(), [])

    async def test_ownRequestsServed(self) -> None:
        """
        The endpoint's own names and origin, with JSON, are served; the
        C{snapstore} command sends what the API asks for.
        """
        for host in (self.own, b"localhost:%d" % self.adminPort, b"LOCALHOST"):
            status, _ = await self.send(b"GET", b"/v1/status", host, None, None)
            self.assertEqual(status, 200, host)
        status, _ = await self.send(b"POST", b"/v1/overrides/hello", self.own,
                                    b"http://" + self.own, b"application/json; charset=utf-8", PIN)
        self.assertEqual(status, 200)
        self.assertEqual([pin["revision"] for pin in await self.pins()], [1])
        admin = f"http://127.0.0.1:{self.adminPort}"
        for argv in (["cache", "prune"], ["delete-override", "hello", "stable"],
                     ["device-limit", "5"], ["device-limit", "reset"]):
            out, err = io.StringIO(), io.StringIO()
            code = await deferToThread(cli.main, ["--admin", admin] + argv, out, err)
            self.assertEqual(code, 0, (argv, err.getvalue()))
