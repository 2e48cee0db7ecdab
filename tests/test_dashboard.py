# -*- test-case-name: tests.test_dashboard -*-
"""
Tests for the dashboard over plain HTTP against a running service tree
(L{tests.test_admin.RunningService}: the whole tree of C{twistd snapstore}
in front of a fake store), and for its parts: the traffic sampler, the
chart and the HTML helper.  The real-browser tests are
L{tests.test_dashboard_browser}.
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from typing import Any

from twisted.internet.defer import fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from snapstore.admin.dashboard.chart import chartSVG
from snapstore.admin.dashboard.html import Markup, escape, render, sizeText
from snapstore.interfaces import ITrafficHistory
from snapstore.observe.metrics import Metrics
from snapstore.observe.traffic import BUCKET, TrafficSampler, bucketStart
from tests.test_admin import RunningService

T0 = 1_700_000_100.0

#: Attributes that hold URLs.
URL_ATTRIBUTE = re.compile(r'\b(?:href|src|action|formaction)="([^"]*)"')


def csrfOf(page: bytes) -> str:
    """
    The form token of a page.
    """
    found = re.search(rb'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, page
    return found.group(1).decode()


def formBody(**fields: Any) -> bytes:
    return urllib.parse.urlencode({k: v for k, v in fields.items()}).encode()


def valueOf(page: bytes, elementId: str) -> str:
    """
    The C{data-value} of the element with C{id} on a page.
    """
    found = re.search(rf'id="{elementId}"[^>]*>(?:<h2>[^<]*</h2>)?<p class="value" '
                      rf'data-value="([^"]*)"'.encode(), page) or \
        re.search(rf'id="{elementId}" data-value="([^"]*)"'.encode(), page)
    assert found is not None, (elementId, page)
    return html.unescape(found.group(1).decode())


class DashboardService:
    """
    A L{RunningService} with the requests a browser would make.
    """

    def __init__(self, service: RunningService) -> None:
        self.service = service

    def page(self, path: str, cookie: str | None = None) -> Any:
        headers = {b"cookie": [cookie.encode()]} if cookie else {}
        return self.service.get(self.service.adminURL + path, headers=headers)

    def post(self, path: str, body: bytes, cookie: str | None = None,
             origin: str | None = None) -> Any:
        headers = {b"content-type": [b"application/x-www-form-urlencoded"],
                   b"origin": [(origin or self.service.adminURL).encode()]}
        if cookie:
            headers[b"cookie"] = [cookie.encode()]
        return self.service.get(self.service.adminURL + path, b"POST", headers, body)

    @inlineCallbacks
    def api(self, path: str) -> Any:
        response, body = yield self.service.get(self.service.adminURL + path)
        return json.loads(body)


class LoopbackPagesTests(TestCase):
    """
    Without a token file, on loopback: no login, the pages show what the
    API answers, and the policy forms change state through the API's
    code (checked upstream, audited with the local user).
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        self.service = yield RunningService(self).start()
        self.dashboard = DashboardService(self.service)

    @inlineCallbacks
    def test_overviewShowsTheAPIFigures(self) -> Any:
        """
        The overview's devices, cache use and hit ratio are what
        C{/v1/status} reports, and its traffic totals what was downloaded:
        3000 bytes from upstream, then 3000 from the cache.
        """
        url = yield self.service.refresh()
        yield self.service.download(url)
        yield self.service.download(url)
        response, page = yield self.dashboard.page("/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/html; charset=utf-8"])
        status = yield self.dashboard.api("/v1/status")
        self.assertEqual(int(valueOf(page, "devices")), status["devices"]["connected"])
        self.assertEqual(int(valueOf(page, "cache")), status["cache"]["size"])
        self.assertEqual(status["cache"]["size"], 3000)
        self.assertEqual(float(valueOf(page, "hit-ratio")), 0.5)
        self.assertEqual(valueOf(page, "mode"), "online")
        self.assertEqual(valueOf(page, "upstream"), "true")
        self.assertEqual(int(valueOf(page, "from-cache")), 3000)
        self.assertEqual(int(valueOf(page, "from-upstream")), 3000)
        self.assertIn(b'<rect class="cache"', page)
        traffic = yield self.dashboard.api("/v1/traffic")
        self.assertEqual(sum(b["from-upstream"] for b in traffic["buckets"]), 3000)

    @inlineCallbacks
    def test_pagesLinkEachOtherAndNoOtherHost(self) -> Any:
        """
        Every page answers 200, links the others, and names no other host
        in any URL; the style sheet is served from the package; pages
        carry a content security policy allowing this endpoint only.
        """
        storeURL = (yield self.dashboard.api("/v1/status"))["store-url"].encode()
        for path in ("/", "/fleet", "/policy", "/audit"):
            response, page = yield self.dashboard.page(path)
            self.assertEqual(response.code, 200, page)
            urls = URL_ATTRIBUTE.findall(page.decode())
            for wanted in ("/", "/fleet", "/policy", "/audit", "/static/dashboard.css"):
                self.assertIn(wanted, urls)
            for url in urls:
                self.assertTrue(url.startswith("/") and not url.startswith("//"), url)
            # The only absolute URL is the text telling where devices
            # point (this node's store endpoint), never a link.
            self.assertNotIn(b"://", page.replace(b">devices use " + storeURL + b"<", b""))
            policy = response.headers.getRawHeaders(b"content-security-policy")[0]
            self.assertIn(b"default-src 'none'", policy)
        response, css = yield self.dashboard.page("/static/dashboard.css")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/css; charset=utf-8"])
        self.assertNotIn(b"url(", css)
        self.assertNotIn(b"@import", css)
        response, _ = yield self.dashboard.page("/static/nothing.js")
        self.assertEqual(response.code, 404)
        response, _ = yield self.dashboard.page("/nothing")
        self.assertEqual(response.code, 404)
        response, body = yield self.dashboard.page("/v1/nothing")
        self.assertEqual(json.loads(body)["error"]["code"], "not-found")

    @inlineCallbacks
    def test_pinUnpinFromThePolicyPage(self) -> Any:
        """
        The policy page's forms add and delete a pin through the API's
        code: the pin is checked upstream, listed by the API, audited with
        the local user, and shown with its reason escaped.
        """
        response, page = yield self.dashboard.page("/policy")
        csrf = csrfOf(page)
        response, body = yield self.dashboard.post("/policy/pin", formBody(
            csrf=csrf, snap="hello", channel="stable", revision="3", group="",
            until="7d", reason="<script>alert(1)</script>"))
        self.assertEqual(response.code, 303, body)
        self.assertEqual(response.headers.getRawHeaders(b"location"), [b"/policy?done=pinned"])
        pins = (yield self.dashboard.api("/v1/overrides"))["overrides"]
        self.assertEqual([(p["snap"], p["channel"], p["revision"], p["reason"]) for p in pins],
                         [("hello", "latest/stable", 3, "<script>alert(1)</script>")])
        self.assertIsNotNone(pins[0]["until"])
        entries = yield self.service.state().listAudit()
        self.assertEqual(entries[-1].action, "override.set")
        self.assertTrue(entries[-1].actor.startswith("local:"), entries[-1].actor)
        response, page = yield self.dashboard.page("/policy?done=pinned")
        self.assertIn(b"The pin was added.", page)
        self.assertIn(b"&lt;script&gt;alert(1)&lt;/script&gt;", page)
        self.assertNotIn(b"<script>", page)
        response, body = yield self.dashboard.post("/policy/unpin", formBody(
            csrf=csrf, snap="hello", channel="latest/stable", group=""))
        self.assertEqual(response.code, 303, body)
        self.assertEqual((yield self.dashboard.api("/v1/overrides"))["overrides"], [])
        response, page = yield self.dashboard.page("/audit")
        self.assertIn(b'id="audit-chain" data-ok="true"', page)
        self.assertIn(b"override.delete", page)

    @inlineCallbacks
    def test_refusedChangesShowTheAPIError(self) -> Any:
        """
        A pin of a revision upstream does not have is refused with the
        API's message and sets nothing; a form without the page's token,
        or from another origin, changes nothing.
        """
        response, page = yield self.dashboard.page("/policy")
        csrf = csrfOf(page)
        response, page = yield self.dashboard.post("/policy/pin", formBody(
            csrf=csrf, snap="hello", channel="stable", revision="99"))
        self.assertEqual(response.code, 404)
        self.assertIn(b'class="error" id="error"', page)
        self.assertIn(b"99", page)
        response, page = yield self.dashboard.post("/policy/pin", formBody(
            csrf="0" * 64, snap="hello", channel="stable", revision="3"))
        self.assertEqual(response.code, 403)
        response, page = yield self.dashboard.post("/policy/pin", formBody(
            csrf=csrf, snap="hello", channel="stable", revision="3"),
            origin="http://evil.example")
        self.assertEqual(response.code, 403)
        self.assertEqual(json.loads(page)["error"]["code"], "cross-origin")
        response, _ = yield self.dashboard.page("/policy/pin")
        self.assertEqual(response.code, 405)
        self.assertEqual((yield self.dashboard.api("/v1/overrides"))["overrides"], [])

    @inlineCallbacks
    def test_approveAHeldRevision(self) -> Any:
        """
        An approval hold shows on the policy page with a form approving a
        revision; approving records it, audited.
        """
        code, out, err = yield self.service.cli("hold", "hello", "--until-approved")
        self.assertEqual(code, 0, err)
        response, page = yield self.dashboard.page("/policy")
        self.assertIn(b'action="/policy/approve"', page)
        response, body = yield self.dashboard.post("/policy/approve", formBody(
            csrf=csrfOf(page), snap="hello", group="", revision="5"))
        self.assertEqual(response.code, 303, body)
        approvals = (yield self.dashboard.api("/v1/approvals"))["approvals"]
        self.assertEqual([(a["snap"], a["revision"]) for a in approvals], [("hello", 5)])
        entries = yield self.service.state().listAudit()
        self.assertEqual(entries[-1].action, "approve")

    @inlineCallbacks
    def test_fleetPage(self) -> Any:
        """
        The fleet page lists the devices C{/v1/devices?all=1} knows, with
        their groups, and a bar per revision with the inventory's counts.
        """
        state = self.service.state()
        from snapstore.state.fleet import DeviceGroup, InstalledSnap
        from snapstore.state.records import Device

        for index, revision in enumerate((3, 3, 5)):
            identity = f"brand/model/serial-{index}"
            yield state.recordDevice(Device(identity, "brand/model"))
            yield state.recordInventory(identity, "brand/model", "", "amd64",
                                        [InstalledSnap("hello-id", revision, "latest/stable")],
                                        {"hello-id": "hello"})
        yield state.createGroup(DeviceGroup("line", {"model": ["brand/model"]}), "test")
        response, page = yield self.dashboard.page("/fleet")
        self.assertEqual(response.code, 200, page)
        self.assertIn(b'data-revision="3" data-devices="2"', page)
        self.assertIn(b'data-revision="5" data-devices="1"', page)
        # Bars against the most-run revision, drawn without inline style
        # (the content security policy forbids it).
        self.assertIn(b'<rect class="fill" width="100" height="10"/>', page)
        self.assertIn(b'<rect class="fill" width="50" height="10"/>', page)
        self.assertNotIn(b"style=", page)
        self.assertIn(b"brand/model/serial-2", page)
        self.assertIn(b'<td data-label="Groups">line</td>', page)


class TokenPagesTests(TestCase):
    """
    With a token file: a login form, a cookie, and logging out.
    """

    TOKEN = "t" * 24

    @inlineCallbacks
    def setUp(self) -> Any:
        path = self.mktemp()
        with open(path, "w") as tokens:
            tokens.write(f"ops:{self.TOKEN}\n")
        self.service = yield RunningService(self).start("--admin-token-file", path)
        self.dashboard = DashboardService(self.service)

    @inlineCallbacks
    def test_login(self) -> Any:
        """
        Without the cookie a page is the login form (401); a wrong token
        gets it again with an error and no cookie; the right one sets an
        C{HttpOnly}, C{SameSite=Strict} cookie for C{/}, with which the
        pages answer and changes are audited with the token's name;
        logging out forgets it.
        """
        response, page = yield self.dashboard.page("/")
        self.assertEqual(response.code, 401)
        self.assertIn(b'<form method="post" action="/login"', page)
        response, page = yield self.dashboard.post("/login", formBody(token="x" * 24))
        self.assertEqual(response.code, 401)
        self.assertIn(b"That is not a token of this admin endpoint.", page)
        self.assertIsNone(response.headers.getRawHeaders(b"set-cookie"))
        response, page = yield self.dashboard.post("/login", formBody(token=self.TOKEN))
        self.assertEqual(response.code, 303)
        [cookie] = response.headers.getRawHeaders(b"set-cookie")
        self.assertEqual(cookie.decode().split("; "),
                         [f"snapstore-admin={self.TOKEN}", "Path=/", "HttpOnly",
                          "SameSite=Strict"])
        jar = cookie.decode().split(";")[0]
        response, page = yield self.dashboard.page("/policy", cookie=jar)
        self.assertEqual(response.code, 200)
        self.assertIn(b"token:ops", page)
        response, body = yield self.dashboard.post("/policy/pin", formBody(
            csrf=csrfOf(page), snap="hello", channel="stable", revision="3"), cookie=jar)
        self.assertEqual(response.code, 303, body)
        entries = yield self.service.state().listAudit()
        self.assertEqual((entries[-1].action, entries[-1].actor), ("override.set", "token:ops"))
        # A form token is bound to its credential: without the cookie the
        # change is a login form.
        response, body = yield self.dashboard.post("/policy/unpin", formBody(
            csrf=csrfOf(page), snap="hello", channel="latest/stable"))
        self.assertEqual(response.code, 401)
        response, body = yield self.dashboard.post("/logout", formBody(csrf=csrfOf(page)),
                                                   cookie=jar)
        self.assertEqual(response.code, 303)
        [cookie] = response.headers.getRawHeaders(b"set-cookie")
        self.assertIn("Max-Age=0", cookie.decode())
        # The API still wants its token, cookie or not.
        response, body = yield self.dashboard.page("/v1/status", cookie=jar)
        self.assertEqual(response.code, 401)


@implementer(ITrafficHistory)
class FakeHistory:
    """
    An L{ITrafficHistory} in memory that can be made to fail.
    """

    def __init__(self) -> None:
        self.buckets: dict[float, list[int]] = {}
        self.pruned: list[float] = []
        self.failing = False

    def addTraffic(self, start: float, fromCache: int, fromUpstream: int) -> Any:
        if self.failing:
            return fail(RuntimeError("database away"))
        bucket = self.buckets.setdefault(start, [0, 0])
        bucket[0] += fromCache
        bucket[1] += fromUpstream
        return succeed(None)

    def listTraffic(self, since: float) -> Any:
        return succeed([])

    def pruneTraffic(self, before: float) -> Any:
        self.pruned.append(before)
        return succeed(0)


class TrafficSamplerTests(SynchronousTestCase):
    """
    The sampler adds what the counters moved to the current bucket.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.metrics = Metrics()
        self.history = FakeHistory()
        self.sampler = TrafficSampler(self.clock, self.metrics, self.history)

    def test_samplesDeltasIntoBuckets(self) -> None:
        """
        Each sample adds what was served since the previous one to the
        bucket of its time; bytes served before the start are not counted;
        a sample with nothing new writes nothing.
        """
        self.assertTrue(verifyObject(ITrafficHistory, self.history))
        self.metrics.cacheHit(1000)
        self.sampler.startService()
        self.metrics.cacheHit(10)
        self.metrics.fetchedUpstream(7)
        self.clock.advance(60)
        self.metrics.servedFromCache(5)
        self.clock.advance(BUCKET)
        self.assertEqual(self.history.buckets,
                         {bucketStart(T0 + 60): [10, 7], bucketStart(T0 + 60 + BUCKET): [5, 0]})
        self.clock.advance(60)
        self.assertEqual(len(self.history.buckets), 2)
        self.assertEqual(self.history.pruned, [bucketStart(T0 + 60 - 48 * 3600)])
        self.sampler.stopService()

    def test_failedWriteIsRetried(self) -> None:
        """
        What a failed write did not store is added by the next sample,
        once; stopping the service writes what is left.
        """
        self.sampler.startService()
        self.history.failing = True
        self.metrics.fetchedUpstream(100)
        self.clock.advance(60)
        self.assertEqual(self.history.buckets, {})
        self.history.failing = False
        self.metrics.fetchedUpstream(1)
        self.clock.advance(60)
        self.assertEqual(self.history.buckets, {bucketStart(T0 + 120): [0, 101]})
        self.metrics.cacheHit(9)
        self.successResultOf(self.sampler.stopService())
        self.assertEqual(self.history.buckets, {bucketStart(T0 + 120): [9, 101]})


class PartsTests(SynchronousTestCase):
    """
    The HTML helper and the chart.
    """

    def test_escapeByDefault(self) -> None:
        """
        Values are escaped (quotes too); L{Markup} is kept; lists are
        joined.
        """
        self.assertEqual(render('<a title="{t}">{b}</a>', t='"x"', b=["<i>", Markup("<b>")]),
                         '<a title="&quot;x&quot;">&lt;i&gt;<b></a>')
        self.assertEqual(escape(None), "")
        self.assertEqual(sizeText(1536), "1.5 KiB")
        self.assertEqual(sizeText(None), "—")

    def test_secureCookie(self) -> None:
        """
        Over TLS the login cookie is C{Secure} too.
        """
        from twisted.web.test.requesthelper import DummyRequest

        from snapstore.admin.auth import Authoriser
        from snapstore.admin.dashboard.site import Dashboard
        from snapstore.admin.router import Router

        request = DummyRequest([b"login"])
        request.isSecure = lambda: True  # type: ignore[method-assign]
        Dashboard(Authoriser({"t" * 20: "ops"}), Router())._setCookie(request, "t" * 20)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"set-cookie"),
                         [b"snapstore-admin=" + b"t" * 20
                          + b"; Path=/; HttpOnly; SameSite=Strict; Secure"])

    def test_chart(self) -> None:
        """
        One stacked bar per bucket in the last 24 hours, the tallest the
        full height; older buckets are left out.
        """
        now = 100 * 86400.0
        svg = chartSVG([{"start": now - 86400 - 300, "from-cache": 1, "from-upstream": 1},
                        {"start": now - 600, "from-cache": 300, "from-upstream": 100},
                        {"start": now - 300, "from-cache": 0, "from-upstream": 200}],
                       now, 300.0)
        self.assertEqual(svg.count('<rect class="cache"'), 2)
        self.assertIn('class="cache" x="953.3" y="40.5" width="2.8" height="121.5"', svg)
        self.assertIn('class="upstream" x="953.3" y="0.0" width="2.8" height="40.5"', svg)
        self.assertIn('class="upstream" x="956.7" y="81.0" width="2.8" height="81.0"', svg)
        self.assertIn("peak 400 B per 5 min", svg)
