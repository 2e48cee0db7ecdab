# -*- test-case-name: tests.test_hardening_input -*-
"""
Hostile input on every listener (store, forward proxy, admin): each bad
request gets a 4xx (or a closed connection), reaches nobody it should not,
and the service keeps answering others.  Raw bytes over real loopback
sockets, since an HTTP client library would refuse to send most of these.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from snapstore.http.guard import GuardedSite, REQUEST_TIMEOUT, IDLE_TIMEOUT
from tests.hardeninghelpers import (
    blockingExchange, parseAnswer, rawConnect, rawExchange, sendChunks, statuses,
    storeErrorCode,
)
from tests.ports import freePort
from tests.processes import spawnFakeStore, startTwistd
from tests.test_admin import RunningService

REFRESH = json.dumps({
    "context": [],
    "actions": [{"action": "download", "instance-key": "download-1", "name": "hello", "epoch": None}],
    "fields": ["download", "revision", "snap-id", "name"],
}).encode()


def request(method: bytes, path: bytes, headers: list[bytes] = (), body: bytes = b"") -> bytes:
    """
    One raw HTTP/1.1 request that asks the server to close afterwards.
    """
    lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: 127.0.0.1"] + list(headers)
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class HostileInputTests(TestCase):
    """
    The whole service tree (store, forward proxy, admin) in front of a
    fake store, fed malformed and malicious requests.
    """

    timeout = 60

    async def setUp(self) -> None:
        self.proxyPort = freePort()
        self.service = RunningService(self)
        await self.service.start("--proxy-endpoint", f"tcp:{self.proxyPort}:interface=127.0.0.1")
        self.storePort = self.service.storePort
        self.adminPort = self.service.adminPort
        self.fake = self.service.fake

    def storeSite(self) -> Any:
        return self.service.top.getServiceNamed("store-endpoint").factory

    async def assertStillServing(self) -> None:
        """
        A well-formed call on each listener still gets its normal answer.
        """
        answer = await rawExchange(self.storePort, request(b"GET", b"/v2/snaps/info/hello"))
        status, _, body = parseAnswer(answer)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["name"], "hello")
        answer = await rawExchange(self.adminPort, request(b"GET", b"/v1/status"))
        self.assertEqual(parseAnswer(answer)[0], 200)

    def upstreamSaw(self, fragment: str) -> int:
        return sum(1 for record in self.fake.requests if fragment in record.path)

    async def assertRefused(self, port: int, data: bytes, codes: tuple[int, ...] = (400,)) -> bytes:
        """
        C{data} gets exactly one answer, with one of C{codes}, or the
        connection is closed without one; nothing after it is answered.
        """
        answer = await rawExchange(port, data)
        found = statuses(answer)
        self.assertLessEqual(len(found), 1, answer)
        if found:
            self.assertIn(found[0], codes, answer)
        return answer

    # -- malformed heads, on every listener ----------------------------------

    async def test_malformedRequestLines(self) -> None:
        """
        Request lines that are not HTTP get a 400 on every listener.
        """
        for port in (self.storePort, self.proxyPort, self.adminPort):
            for line in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET  HTTP/1.1\r\n\r\n",
                         b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                         b"GET /v2/snaps/info/he\x00llo HTTP/1.1\r\nHost: x\r\n\r\n"):
                answer = await rawExchange(port, line)
                # 505 is the forward proxy's word for HTTP/9.9.
                self.assertIn(statuses(answer), ([400], [505]), (port, line, answer))
        await self.assertStillServing()

    async def test_oversizedAndTooManyHeaders(self) -> None:
        """
        A 70 KB header or 600 headers: refused (4xx) or cut, on every
        listener, and never relayed.
        """
        big = request(b"GET", b"/v2/snaps/info/hello", [b"X-Big: " + b"a" * 70000])
        many = request(b"GET", b"/v2/snaps/info/hello", [b"X-%d: y" % i for i in range(600)])
        before = self.upstreamSaw("/v2/snaps/info/")
        for port in (self.storePort, self.proxyPort, self.adminPort):
            for data in (big, many):
                await self.assertRefused(port, data, (400, 431))
        self.assertEqual(self.upstreamSaw("/v2/snaps/info/"), before)
        await self.assertStillServing()

    async def test_duplicateHeaders(self) -> None:
        """
        Two different C{Content-Length}s, or two C{Host}s, make the request
        ambiguous: 400 on the store and admin listeners, nothing relayed.
        """
        before = self.upstreamSaw("/v2/snaps/")
        for port in (self.storePort, self.adminPort):
            await self.assertRefused(port, (
                b"POST /v2/snaps/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Content-Length: 5\r\nConnection: close\r\n\r\n{}abc"))
            answer = await self.assertRefused(port, (
                b"GET /v2/snaps/info/hello HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n"
                b"Connection: close\r\n\r\n"))
            self.assertEqual(statuses(answer), [400])
        self.assertEqual(self.upstreamSaw("/v2/snaps/"), before)
        # The forward proxy too refuses conflicting lengths.
        await self.assertRefused(self.proxyPort, (
            b"POST http://127.0.0.1:1/x HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 2\r\n"
            b"Content-Length: 5\r\nConnection: close\r\n\r\n{}abc"), (400, 403))
        await self.assertStillServing()

    async def test_requestSmuggling(self) -> None:
        """
        C{Content-Length} together with C{Transfer-Encoding}, or an unknown
        transfer coding: 400, and the request hidden in the body is never
        answered or relayed, on every listener.
        """
        smuggled = b"GET /v2/snaps/info/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        attacks = [
            b"POST /v2/snaps/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
            b"POST /v2/snaps/refresh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 4\r\n\r\n0\r\n\r\n" + smuggled,
            b"POST /v2/snaps/refresh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"0\r\n\r\n" + smuggled,
            b"POST /v2/snaps/refresh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nab\r\n0\r\n\r\n" + smuggled,
        ]
        for port in (self.storePort, self.proxyPort, self.adminPort):
            for attack in attacks:
                answer = await rawExchange(port, attack)
                self.assertEqual(statuses(answer), [400], (port, attack, answer))
        self.assertEqual(self.upstreamSaw("smuggled"), 0)
        await self.assertStillServing()

    async def test_absoluteURIDisagreesWithHost(self) -> None:
        """
        An absolute-form target naming another host than C{Host}: the store
        and admin listeners refuse it (400); nothing reaches upstream or
        the host named.
        """
        before = len(self.fake.requests)
        for port in (self.storePort, self.adminPort):
            answer = await self.assertRefused(port, (
                b"GET http://evil.example/v2/snaps/info/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Connection: close\r\n\r\n"))
            self.assertEqual(statuses(answer), [400])
        # Agreeing absolute-form on the store endpoint is not a store path:
        # a store-format 404, still not relayed anywhere.
        answer = await rawExchange(self.storePort, (
            b"GET http://127.0.0.1/v2/snaps/info/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Connection: close\r\n\r\n"))
        status, _, body = parseAnswer(answer)
        self.assertEqual(status, 404)
        self.assertEqual(storeErrorCode(body), "not-found")
        self.assertEqual(len(self.fake.requests), before)

    async def test_pathTraversal(self) -> None:
        """
        Download and media names that try to climb out (C{..%2f}, C{../},
        encoded NULs): store-format 404, no file read, nothing relayed.
        """
        before = len(self.fake.requests)
        for path in (b"/api/v1/snaps/download/..%2f..%2f..%2fetc%2fpasswd",
                     b"/api/v1/snaps/download/..%2F..%2Fstate.sqlite",
                     b"/api/v1/snaps/download/../../../etc/passwd",
                     b"/api/v1/snaps/download/%2e%2e/%2e%2e/etc/passwd",
                     b"/api/v1/snaps/download/x%00.snap",
                     b"/api/v1/snaps/download/.snap",
                     b"/snapstore/remote/..%2f..%2fetc%2fpasswd/x",
                     b"/v1/..%2f..%2fetc/passwd"):
            answer = await rawExchange(self.storePort, request(b"GET", path))
            status, _, body = parseAnswer(answer)
            self.assertEqual(status, 404, (path, answer))
            self.assertEqual(storeErrorCode(body), "not-found")
            self.assertNotIn(b"root:", body)
        self.assertEqual(len(self.fake.requests), before)

    async def test_refreshBodies(self) -> None:
        """
        A refresh body that is not JSON gets a store-format 4xx; one larger
        than the cap is refused with 413 as soon as its length is known,
        and a chunked one once it passed the cap, without being relayed.
        """
        answer = await rawExchange(self.storePort, request(
            b"POST", b"/v2/snaps/refresh", [b"Content-Type: application/json"], b"hello, not json"))
        status, headers, body = parseAnswer(answer)
        self.assertTrue(400 <= status < 500, answer)
        self.assertEqual(headers[b"content-type"], b"application/json")
        storeErrorCode(body)

        before = self.upstreamSaw("/v2/snaps/refresh")
        client = await rawConnect(self.storePort)
        client.transport.write(
            b"POST /v2/snaps/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n{")
        answer = await client.closed
        status, _, body = parseAnswer(answer)
        self.assertEqual(status, 413)
        self.assertEqual(storeErrorCode(body), "request-too-large")

        client = await rawConnect(self.storePort)
        client.transport.write(
            b"POST /v2/snaps/refresh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer = await sendChunks(client, 5)  # past the 4 MiB cap
        self.assertEqual(statuses(answer), [413])
        self.assertEqual(self.upstreamSaw("/v2/snaps/refresh"), before)
        await self.assertStillServing()

    async def test_adminBodies(self) -> None:
        """
        Admin calls take small JSON bodies: one announced or sent larger
        than 1 MiB is refused with 413 before it is buffered, except a
        bundle import, whose body is the bundle.
        """
        answer = await rawExchange(self.adminPort, (
            b"POST /v1/overrides/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 10000000000\r\n\r\n{"))
        self.assertEqual(statuses(answer), [413])
        client = await rawConnect(self.adminPort)
        client.transport.write(b"POST /v1/cache/verify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n")
        self.assertEqual(statuses(await sendChunks(client, 2.5)), [413])
        bundle = b"x" * (2 << 20)
        answer = await rawExchange(self.adminPort, request(
            b"POST", b"/v1/import", [b"Content-Type: application/x-tar"], bundle))
        found = statuses(answer)
        self.assertEqual(len(found), 1, answer[:300])
        self.assertNotEqual(found[0], 413)
        self.assertTrue(400 <= found[0] < 500, answer[:300])
        await self.assertStillServing()

    async def test_invalidRanges(self) -> None:
        """
        Every malformed or unsatisfiable C{Range} on a real download gets a
        416 with C{Content-Range: bytes */SIZE}, or the whole blob (200), or
        a correct 206: never a wrong slice.
        """
        answer = await rawExchange(self.storePort, request(
            b"POST", b"/v2/snaps/refresh", [b"Content-Type: application/json"], REFRESH))
        status, _, body = parseAnswer(answer)
        self.assertEqual(status, 200, answer)
        url = json.loads(body)["results"][0]["snap"]["download"]["url"]
        path = url.split("/", 3)[3].encode()
        data = self.fake.blobBytes("hello", 3)
        for value in (b"bytes=zz-", b"bytes=5-2", b"bytes=99999999-", b"bytes=-0", b"bytes=--1",
                      b"bytes=0-0,5-9", b"items=0-1", b"bytes=" + b"9" * 40 + b"-",
                      b"bytes=1-2", b"bytes=-10", b"bytes=2990-"):
            answer = await rawExchange(self.storePort, request(b"GET", b"/" + path,
                                                               [b"Range: " + value]))
            status, headers, payload = parseAnswer(answer)
            if status == 416:
                self.assertEqual(headers[b"content-range"], b"bytes */%d" % len(data))
            elif status == 200:
                self.assertEqual(payload, data, value)
            elif status == 206:
                first, last = headers[b"content-range"].split(b" ")[1].split(b"/")[0].split(b"-")
                self.assertEqual(payload, data[int(first):int(last) + 1], value)
            else:
                self.fail(f"{value!r} got {status}")
        await self.assertStillServing()

    # -- the forward proxy ----------------------------------------------------

    async def test_connectForbiddenPortsAndInternalAddresses(self) -> None:
        """
        CONNECT to ports other than 443 and to loopback, private,
        link-local and metadata addresses (in any spelling) is refused with
        403, as are absolute-URI requests to them.
        """
        targets = [b"127.0.0.1:%d" % self.adminPort, b"127.0.0.1:22", b"localhost:443",
                   b"169.254.169.254:443", b"[::1]:443", b"10.0.0.1:443", b"192.168.1.1:443",
                   b"2130706433:443", b"0x7f.1:443", b"0177.0.0.1:443", b"[::ffff:127.0.0.1]:443",
                   b"0.0.0.0:443"]
        for target in targets:
            answer = await rawExchange(
                self.proxyPort, b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target))
            self.assertEqual(statuses(answer), [403], (target, answer))
        for url in (b"http://169.254.169.254/latest/meta-data/",
                    b"http://127.0.0.1:%d/v1/status" % self.adminPort,
                    b"http://[::1]:%d/v1/status" % self.adminPort):
            host = url.split(b"/")[2]
            answer = await rawExchange(self.proxyPort, b"GET %s HTTP/1.1\r\nHost: %s\r\n"
                                       b"Connection: close\r\n\r\n" % (url, host))
            self.assertEqual(statuses(answer), [403], (url, answer))

    # -- slowloris --------------------------------------------------------------

    def test_finiteTimeouts(self) -> None:
        """
        The store and admin listeners bound how long a request may take to
        arrive and how long an idle connection is kept.
        """
        for name in ("store-endpoint", "admin-endpoint"):
            site = self.service.top.getServiceNamed(name).factory
            self.assertIsInstance(site, GuardedSite)
            self.assertEqual(site.requestTimeout, REQUEST_TIMEOUT)
            self.assertLessEqual(site.timeOut, IDLE_TIMEOUT)
        self.assertLessEqual(REQUEST_TIMEOUT, 60)

    async def test_slowloris(self) -> None:
        """
        Connections that dribble a request head byte by byte do not stop
        others from being served, and each is answered 408 and closed once
        its request deadline passes, even though it kept sending.
        """
        site = self.storeSite()
        self.patch(site, "requestTimeout", 0.5)
        slow = []
        for _ in range(20):
            client = await rawConnect(self.storePort)
            client.transport.write(b"GET /v2/snaps/info/hello HTTP/1.1\r\n")
            slow.append(client)
        await self.assertStillServing()
        drip = b"X-Slow: " + b"a" * 200
        pending: list[Any] = []

        def dribble(offset: int = 0) -> None:
            for client in slow:
                if not client.closed.called and offset < len(drip):
                    client.transport.write(drip[offset:offset + 1])
            if offset < len(drip) and not all(client.closed.called for client in slow):
                pending[:] = [reactor.callLater(0.05, dribble, offset + 1)]

        dribble()
        self.addCleanup(lambda: [call.cancel() for call in pending if call.active()])
        for client in slow:
            answer = await client.closed
            self.assertEqual(statuses(answer), [408])
        await self.assertStillServing()


class GeneratedRequestTests(TestCase):
    """
    Generated requests at a real C{twistd snapstore} process: each gets an
    HTTP answer with a status the service means (valid, or 4xx/5xx), and
    the process is still up and serving after all of them.
    """

    timeout = 120

    async def setUp(self) -> None:
        upstream = await spawnFakeStore(self, "hello:1:4096")
        self.process, self.port = await startTwistd(
            self, "--upstream", upstream, "--proxy-endpoint", "none",
            "--admin-endpoint", "none", "--data-dir", os.path.abspath(self.mktemp()))

    def test_generatedRequests(self) -> None:
        """
        Methods, paths (traversal, encodings, store and non-store roots),
        headers (ranges, lengths, hosts, device headers) and bodies from
        hypothesis, sent raw.
        """
        token = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                               blacklist_characters="/?#%"), max_size=12)
        segment = st.one_of(token, st.sampled_from(["..", "%2e%2e", "..%2f", "%00", "%ff", "v2", "api",
                                                    "snaps", "download", "refresh", "info", "find",
                                                    "assertions", "v1", "snapstore", "remote"]))
        path = st.lists(segment, max_size=6).map(lambda parts: "/" + "/".join(parts))
        query = st.one_of(st.just(""), st.text(alphabet="abc=&%20;x", max_size=10).map(lambda q: "?" + q))
        method = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS",
                                  b"TRACE", b"PATCH", b"FOO"])
        headerName = st.sampled_from([b"Range", b"Content-Type", b"Snap-Device-Series", b"X-Ubuntu-Series",
                                      b"Snap-Device-Authorization", b"Authorization", b"Accept",
                                      b"If-None-Match", b"Expect", b"Accept-Encoding", b"Cookie",
                                      b"Snap-Device-Architecture", b"X-Forwarded-For", b"Via"])
        headerValue = st.binary(max_size=40).map(
            lambda v: bytes(b for b in v if b not in b"\r\n\x00").strip())
        headers = st.lists(st.tuples(headerName, headerValue), max_size=5)
        body = st.one_of(st.just(b""), st.binary(max_size=300),
                         st.just(REFRESH), st.just(b'{"actions": [{"action": 7}]}'))

        @settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(method, path, query, headers, body)
        def check(method: bytes, path: str, query: str, headers: list, body: bytes) -> None:
            target = (path + query).encode("utf-8")
            lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
            lines += [name + b": " + value for name, value in headers]
            lines += [b"Content-Length: %d" % len(body), b"Connection: close"]
            answer = blockingExchange(self.port, b"\r\n".join(lines) + b"\r\n\r\n" + body)
            found = statuses(answer)
            self.assertEqual(len(found), 1, (lines, answer[:300]))
            status = found[0]
            self.assertTrue(200 <= status < 600, answer[:300])
            self.assertNotIn(b"Traceback", answer)
            if status >= 500:
                # The proxy's own failures are store-format, and name an
                # upstream problem, never an internal one.
                _, responseHeaders, content = parseAnswer(answer)
                if status != 501 and content:
                    self.assertNotEqual(storeErrorCode(content), "internal-error", (lines, answer))

        check()
        answer = blockingExchange(self.port, request(b"GET", b"/v2/snaps/info/hello"))
        self.assertEqual(parseAnswer(answer)[0], 200)
        self.assertFalse(self.process.collector.ended.called)
