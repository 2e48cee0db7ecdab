"""
Unit tests of the store relay (L{snapstore.store.relay.RelayResource}): a
L{DummyRequest} in, an in-memory agent for upstream, a L{Clock} for time;
no socket, no process.
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from snapstore.store.relay import MAX_REQUEST_BODY, RelayResource
from snapstore.store.rewrite import RemoteURLs
from snapstore.store.upstream import StoreUpstream
from tests.unithelpers import StoreRequest, TableAgent

UPSTREAM = "https://api.store.test/"

INFO = {
    "name": "hello",
    "snap-id": "a" * 32,
    "channel-map": [{
        "channel": {"name": "stable", "architecture": "amd64", "track": "latest",
                    "risk": "stable"},
        "revision": 7,
        "download": {"url": "https://cdn.store.test/blobs/aaaa_7.snap?token=x",
                     "sha3-384": "b" * 96, "size": 1234},
    }],
}


class RelayUnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.recorded: list = []
        self.agent = TableAgent({
            UPSTREAM.encode() + b"v2/snaps/info/hello": (
                200, {b"content-type": b"application/json"}, json.dumps(INFO).encode()),
            UPSTREAM.encode() + b"v2/snaps/info/gone": (
                404, {b"content-type": b"application/json"},
                b'{"error-list": [{"code": "resource-not-found", "message": "gone"}]}'),
        })
        self.relay = RelayResource(StoreUpstream(self.agent, UPSTREAM, self.clock, 8.0),
                                   RemoteURLs(), self.recorded.append, self.clock)

    def render(self, request: StoreRequest) -> StoreRequest:
        self.assertIs(self.relay.render(request), NOT_DONE_YET)
        return request

    def test_infoRewrittenAndRecorded(self) -> None:
        """
        An info answer reaches the client with its download URL pointed at
        this proxy (from the client's C{Host}), the blob is recorded, and
        upstream got the call with this proxy's C{Via}.
        """
        request = self.render(StoreRequest(b"GET", b"/v2/snaps/info/hello",
                                           headers={b"host": b"proxy.lan:8000"}))
        self.assertTrue(request.finished)
        self.assertEqual(request.responseCode, 200)
        url = request.json()["channel-map"][0]["download"]["url"]
        self.assertTrue(url.startswith("http://proxy.lan:8000/api/v1/snaps/download/"), url)
        [blob] = self.recorded
        self.assertEqual((blob.sha3_384, blob.size, blob.revision), ("b" * 96, 1234, 7))
        [(method, uri, headers)] = self.agent.requests
        self.assertEqual((method, uri), (b"GET", UPSTREAM.encode() + b"v2/snaps/info/hello"))
        self.assertIn(b"snapstore", headers.getRawHeaders(b"via")[0])

    def test_errorRelayedUnchanged(self) -> None:
        """
        An upstream error answer is relayed as it came, not rewritten.
        """
        request = self.render(StoreRequest(b"GET", b"/v2/snaps/info/gone"))
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(request.json()["error-list"][0]["code"], "resource-not-found")
        self.assertEqual(self.recorded, [])

    def test_upstreamUnreachable(self) -> None:
        """
        When upstream cannot be reached, the client gets a store-format
        502 naming the reason.
        """
        request = self.render(StoreRequest(b"GET", b"/v2/snaps/find?q=x"))
        self.assertEqual(request.responseCode, 502)
        self.assertEqual(request.json()["error-list"][0]["code"], "upstream-unreachable")

    def test_bodyTooLarge(self) -> None:
        """
        A body over the bound is refused with 413 before anything goes
        upstream.
        """
        request = self.render(StoreRequest(b"POST", b"/v2/snaps/refresh",
                                           body=b"x" * (MAX_REQUEST_BODY + 1)))
        self.assertEqual(request.responseCode, 413)
        self.assertEqual(self.agent.requests, [])
