"""
Ways around the snap allow/deny lists and the admission rules, tried
through the store endpoint on loopback in front of the fake store: direct
downloads after a restart, refresh results that match no action, the v1
catalogue calls, cohorts and assertion fetches; and the assertion cache's
keys (credentials, C{Accept}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.trial.unittest import TestCase

from tests.fakestore import FakeStore
from tests.helpers import testAgent
from tests.test_rules_support import MemoryState, Proxy, copyShipped


class PolicyTests(TestCase):
    """
    A fake store with C{hello} and C{jq}; proxies with the shipped rules,
    edited per test, sharing one state store (so a second proxy is the
    first one restarted).
    """

    timeout = 60

    async def setUp(self) -> None:
        self.store = await FakeStore(reactor).startFor(self)
        self.store.addSnap("hello", summary="hello world")
        self.store.addSnap("jq", summary="hello json", publisher="shady")
        self.store.addRevision("hello", 1, 1000)
        self.store.addRevision("jq", 2, 1500)
        self.state = MemoryState(reactor)

    async def proxy(self, **settings: str) -> Proxy:
        return await Proxy(self, self.store.apiURL, copyShipped(self, **settings),
                           state=self.state).start()

    async def download(self, proxy: Proxy, name: str, revision: int) -> tuple[int, Any]:
        return await proxy.call(b"GET", f"api/v1/snaps/download/"
                                        f"{self.store.snapId(name)}_{revision}.snap")

    # -- 22.4: downloads whose snap cannot be told ---------------------------

    async def test_downloadAfterRestart(self) -> None:
        """
        With a deny list, or an allow list, a download by snap-id alone (a
        name the proxy never recorded, or recorded before a restart, which
        the rule forgot) is refused; once a refresh showed the snap allowed,
        it is served.
        """
        for settings in ({"deny": '["jq"]'}, {"allow": '["hello"]'}):
            self.state = MemoryState(reactor)
            proxy = await self.proxy(**settings)
            code, answer = await self.download(proxy, "jq", 2)
            self.assertEqual((code, answer["error-list"][0]["code"]), (404, "not-found"),
                             settings)
            code, _ = await self.download(proxy, "hello", 1)
            self.assertEqual(code, 404, settings)
            await proxy.install("hello")
            code, blob = await self.download(proxy, "hello", 1)
            self.assertEqual((code, blob), (200, self.store.blobBytes("hello", 1)), settings)
        self.assertEqual(self.store.cdnDownloads("jq"), [])

    # -- 22.5: refresh results that match no action --------------------------

    async def test_resultsMatchingNoAction(self) -> None:
        """
        An install with an instance-key of 1 or null (which the store
        echoes) gets no result the rules could not judge, and its URL is
        neither handed out nor recorded.
        """
        proxy = await self.proxy(deny='["jq"]')
        for key in (1, None, ["x"]):
            code, answer = await proxy.call(b"POST", "v2/snaps/refresh", {
                "context": [], "fields": ["download", "revision"],
                "actions": [{"action": "install", "instance-key": key, "name": "jq",
                             "channel": "stable", "epoch": None}]})
            self.assertEqual(code, 200, answer)
            self.assertEqual(answer["results"], [], key)
        self.assertIsNone(await self.state.getBlob(f"{self.store.snapId('jq')}_2.snap"))
        code, _ = await self.download(proxy, "jq", 2)
        self.assertEqual(code, 404)
        self.assertEqual(self.store.cdnDownloads("jq"), [])

    # -- 18.9: catalogue calls, cohorts, assertions --------------------------

    async def test_catalogueAndCohortsFiltered(self) -> None:
        """
        A denied snap is absent from the v1 names and search answers, and
        cohort keys are refused for it.
        """
        proxy = await self.proxy(deny='["jq"]')
        code, answer = await proxy.call(b"GET", "api/v1/snaps/names")
        self.assertEqual(code, 200)
        self.assertEqual([p["package_name"] for p in answer["_embedded"]["clickindex:package"]],
                         ["hello"])
        code, answer = await proxy.call(b"GET", "api/v1/snaps/search?q=hello")
        self.assertEqual(code, 200)
        self.assertEqual([p["package_name"] for p in answer["_embedded"]["clickindex:package"]],
                         ["hello"])
        code, answer = await proxy.call(b"POST", "v2/cohorts", {"snaps": ["jq"]})
        self.assertEqual((code, answer["error-list"][0]["code"]), (404, "name-not-found"))
        code, answer = await proxy.call(b"POST", "v2/cohorts", {"snaps": ["hello"]})
        self.assertEqual((code, list(answer["cohort-keys"])), (200, ["hello"]))
        # With a publisher deny list, v1 entries are judged by publisher.
        proxy = await self.proxy(denyPublishers='["shady"]')
        code, answer = await proxy.call(b"GET", "api/v1/snaps/search?q=hello")
        self.assertEqual([p["package_name"] for p in answer["_embedded"]["clickindex:package"]],
                         ["hello"])

    async def test_assertionsAdmitted(self) -> None:
        """
        A device over the limit gets no assertions, cached or not, while
        the admitted device does.
        """
        proxy = await self.proxy(limit="1")
        session = await proxy.openSession("SERIAL-1")
        path = f"v2/assertions/snap-declaration/16/{self.store.snapId('hello')}"
        code, _ = await proxy.call(b"GET", path, session=session)
        self.assertEqual(code, 200)
        code, answer = await proxy.call(b"GET", "v2/snaps/info/hello")
        self.assertEqual(code, 403, answer)
        code, answer = await proxy.call(b"GET", path)
        self.assertEqual((code, answer["error-list"][0]["code"]),
                         (403, "device-limit-exceeded"))

    # -- 22.6: the assertion cache's key -------------------------------------

    async def fetchAssertion(self, proxy: Proxy, path: str, *headers: tuple[bytes, bytes]) -> tuple:
        given = Headers({b"Snap-Device-Series": [b"16"]})
        for name, value in headers:
            given.addRawHeader(name, value)
        response = await testAgent(self).request(b"GET", (proxy.url + path).encode(), given)
        body = await readBody(response)
        return response.code, (response.headers.getRawHeaders(b"x-cache") or [b""])[0], body

    async def test_assertionCacheKeys(self) -> None:
        """
        An answer fetched with user credentials is not served to a client
        without them (nor to other credentials); spellings of the same
        C{Accept} share one cache entry.
        """
        proxy = await self.proxy()
        path = f"v2/assertions/snap-declaration/16/{self.store.snapId('hello')}"
        asked = lambda: self.store.count("GET", "/v2/assertions/")
        code, cache, _ = await self.fetchAssertion(
            proxy, path, (b"Authorization", b'Macaroon root="alice"'),
            (b"Accept", b"application/x.ubuntu.assertion"))
        self.assertEqual((code, cache, asked()), (200, b"MISS", 1))
        for credentials in ((), ((b"Authorization", b'Macaroon root="bob"'),)):
            code, cache, _ = await self.fetchAssertion(
                proxy, path, *credentials, (b"Accept", b"application/x.ubuntu.assertion"))
            self.assertEqual((code, cache), (200, b"MISS"), credentials)
        self.assertEqual(asked(), 3)
        for accept in (b"Application/X.Ubuntu.Assertion", b"application/x.ubuntu.assertion, */*",
                       b"", b"application/json;q=0.1, application/x.ubuntu.assertion"):
            code, cache, body = await self.fetchAssertion(proxy, path, (b"Accept", accept))
            self.assertEqual((code, cache), (200, b"HIT"), accept)
            self.assertIn(b"type: snap-declaration", body)
        self.assertEqual(asked(), 3)
        code, cache, body = await self.fetchAssertion(proxy, path, (b"Accept", b"application/json"))
        self.assertEqual((code, cache), (200, b"MISS"))
        code, cache, again = await self.fetchAssertion(
            proxy, path, (b"Accept", b"application/json; charset=utf-8"))
        self.assertEqual((code, cache, again), (200, b"HIT", body))
