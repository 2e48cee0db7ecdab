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


class HeaderCopyTests(SynchronousTestCase):
    """
    L{snapstore.http.headers.relayHeaders} and the relay's two uses of it:
    hop-by-hop headers and those C{Connection} names dropped, C{Via}
    appended once, repeated headers kept in order.
    """

    def source(self):
        from twisted.web.http_headers import Headers

        headers = Headers()
        for name, value in [
            (b"Connection", b"keep-alive, X-Hop"), (b"Connection", b" Upgrade ,"),
            (b"Keep-Alive", b"timeout=5"), (b"Transfer-Encoding", b"chunked"),
            (b"TE", b"trailers"), (b"Trailer", b"X-T"), (b"Upgrade", b"h2c"),
            (b"Proxy-Authorization", b"Basic x"), (b"Proxy-Connection", b"close"),
            (b"X-Hop", b"named by Connection"),
            (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"Set-Cookie", b"c=3"),
            (b"Via", b"1.0 first"), (b"Via", b"1.1 second"),
            (b"Content-Length", b"12"), (b"Content-Type", b"application/json"),
            (b"Snap-Device-Series", b"16"),
        ]:
            headers.addRawHeader(name, value)
        return headers

    def test_relayHeaders(self):
        """
        Only end-to-end headers not in C{drop} are set, each once with its
        values in order, and C{Via} is upstream's hops and this proxy's.
        """
        from twisted.web.http_headers import Headers

        from snapstore.http.headers import relayHeaders

        target = Headers()
        relayHeaders(self.source(), target, frozenset([b"content-length"]))
        self.assertEqual(dict(target.getAllRawHeaders()), {
            b"Set-Cookie": [b"a=1", b"b=2", b"c=3"],
            b"Content-Type": [b"application/json"],
            b"Snap-Device-Series": [b"16"],
            b"Via": [b"1.0 first, 1.1 second, 1.1 snapstore"],
        })

    def test_asBefore(self):
        """
        The same headers as the former copy into a new L{Headers} followed
        by L{addVia}; L{endToEnd} itself is unchanged.
        """
        from twisted.web.http_headers import Headers

        from snapstore.http.headers import addVia, endToEnd, relayHeaders

        for drop in (frozenset(), frozenset([b"content-length", b"set-cookie"])):
            before = endToEnd(self.source(), drop)
            addVia(before)
            after = Headers()
            relayHeaders(self.source(), after, drop)
            self.assertEqual(sorted(after.getAllRawHeaders()), sorted(before.getAllRawHeaders()))
        plain = Headers({b"a": [b"1"]})
        relayHeaders(plain, plain.copy())  # a source without Via or Connection
        target = Headers()
        relayHeaders(plain, target)
        self.assertEqual(target.getRawHeaders(b"via"), [b"1.1 snapstore"])

    def test_outboundHeaders(self):
        """
        What goes upstream: end to end, without the device's C{Host} and
        C{Content-Length}; gzip asked for but on a C{HEAD}, which keeps the
        device's C{Accept-Encoding}.
        """
        from snapstore.store.relay import outboundHeaders

        headers = {b"host": b"proxy.lan", b"content-length": b"2", b"accept-encoding": b"br",
                   b"connection": b"x-private", b"x-private": b"1", b"user-agent": b"snapd"}
        for method, coding in ((b"POST", [b"gzip"]), (b"HEAD", [b"br"])):
            sent = outboundHeaders(StoreRequest(method, b"/v2/snaps/refresh", headers=headers))
            self.assertEqual({name.lower(): values for name, values in sent.getAllRawHeaders()}, {
                b"accept-encoding": coding, b"user-agent": [b"snapd"],
                b"via": [b"1.1 snapstore"]})

    def test_copyResponseHead(self):
        """
        What the device gets: upstream's status and end-to-end headers,
        C{Content-Length} only when asked to keep it, and C{Via}.
        """
        from snapstore.store.relay import copyResponseHead

        class Response:
            code, phrase, length = 203, b"Partly", 12
            headers = self.source()

        for keep, length in ((True, [b"12"]), (False, None)):
            request = StoreRequest(b"GET", b"/v2/snaps/info/x")
            copyResponseHead(Response(), request, keepLength=keep)
            self.assertEqual((request.responseCode, request.responseMessage), (203, b"Partly"))
            headers = request.responseHeaders
            self.assertEqual(headers.getRawHeaders(b"content-length"), length)
            self.assertEqual(headers.getRawHeaders(b"set-cookie"), [b"a=1", b"b=2", b"c=3"])
            self.assertEqual(headers.getRawHeaders(b"via"),
                             [b"1.0 first, 1.1 second, 1.1 snapstore"])
            for name in (b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer",
                         b"upgrade", b"proxy-authorization", b"proxy-connection", b"x-hop"):
                self.assertIsNone(headers.getRawHeaders(name), name)
