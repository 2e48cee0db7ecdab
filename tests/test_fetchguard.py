"""
Tests for L{snapstore.fetchguard}: a hostile upstream cannot make the
proxy fetch from internal addresses (icon tokens, download redirects),
over real loopback sockets.  The hostile upstream listens on 127.0.0.1;
the "internal service" on 127.0.0.2, which is loopback but not the
upstream's host.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from snapstore.fetchguard import DestinationPolicy
from tests.test_rules_support import MemoryState, Proxy, copyShipped

SNAP_ID = "A" * 32
BLOB = b"snap bytes" * 100


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[bytes] = []

    def render(self, request: Any) -> bytes:
        self.hits.append(request.uri)
        return b"internal secret"


class HostileUpstream(Resource):
    """
    A store whose answers point at an internal service: an icon URL, and a
    download URL that redirects there.
    """

    isLeaf = True

    def __init__(self, internal: str) -> None:
        super().__init__()
        self.internal = internal
        self.base = ""

    def render(self, request: Any) -> bytes:
        if request.path == b"/v2/snaps/refresh":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"results": [{
                "result": "install", "instance-key": "install-1", "snap-id": SNAP_ID,
                "name": "hello", "revision": 1,
                "snap": {"name": "hello", "snap-id": SNAP_ID, "revision": 1,
                         "download": {"url": f"{self.base}/api/v1/snaps/download/{SNAP_ID}_1.snap",
                                      "size": len(BLOB),
                                      "sha3-384": hashlib.sha3_384(BLOB).hexdigest()},
                         "media": [{"type": "icon", "url": f"{self.internal}/icon.png"}]}}],
                "error-list": []}).encode()
        if request.path.startswith(b"/api/v1/snaps/download/"):
            request.redirect(f"{self.internal}/v1/cache/prune".encode())
            return b""
        request.setResponseCode(404)
        return b"{}"


class HostileUpstreamTests(TestCase):

    timeout = 30

    async def setUp(self) -> None:
        self.internal = Recorder()
        port = reactor.listenTCP(0, Site(self.internal), interface="127.0.0.2")
        self.addCleanup(port.stopListening)
        upstream = HostileUpstream(f"http://127.0.0.2:{port.getHost().port}")
        upstreamPort = reactor.listenTCP(0, Site(upstream), interface="127.0.0.1")
        self.addCleanup(upstreamPort.stopListening)
        upstream.base = f"http://127.0.0.1:{upstreamPort.getHost().port}"
        self.proxy = await Proxy(self, upstream.base + "/", copyShipped(self),
                                 state=MemoryState(reactor)).start()

    async def test_iconAndRedirectRefused(self) -> None:
        """
        Neither the icon token nor the download (whose redirect leads
        there) reaches the internal service.
        """
        result = await self.proxy.install("hello")
        icon = result["snap"]["media"][0]["url"]
        self.assertIn("/snapstore/remote/", icon)
        code, _ = await self.proxy.call(b"GET", icon[len(self.proxy.url):])
        self.assertEqual(code, 502)
        code, answer = await self.proxy.call(b"GET", result["snap"]["download"]["url"]
                                             [len(self.proxy.url):])
        self.assertEqual(code, 502, answer)
        self.assertEqual(self.internal.hits, [])


class PolicyTests(SynchronousTestCase):

    def test_decisions(self) -> None:
        policy = DestinationPolicy("store.lan", ownPorts=[8001, 8000],
                                   allowInternal=["10.9.0.0/16", "mirror.lan"],
                                   selfAddresses=["203.0.113.5"])
        self.assertIsNone(policy.refusal("api.snapcraft.io", 443, ["185.125.188.55"]))
        self.assertIsNone(policy.refusal("store.lan", 443, ["192.168.1.4"]))
        self.assertIn("internal", policy.refusal("store.lan", 8001, ["127.0.0.1"]))
        self.assertIn("internal", policy.refusal("cdn.evil", 80, ["169.254.169.254"]))
        self.assertIn("internal", policy.refusal("cdn.evil", 443, ["203.0.113.5"]))
        self.assertIn("internal", policy.refusal("cdn.evil", 443, ["100.64.0.1"]))
        self.assertIsNone(policy.refusal("cdn.evil", 443, ["10.9.1.1"]))
        self.assertIsNone(policy.refusal("mirror.lan", 80, ["127.0.0.1"]))
