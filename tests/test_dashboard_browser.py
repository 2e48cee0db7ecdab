"""
The dashboard in a real browser: headless Chromium (Debian's C{chromium}
and C{chromium-driver}, driven by selenium) against a real C{twistd
snapstore} process in front of the fake store, with devices that opened
sessions and refreshed, and blobs downloaded from upstream and the cache.

The pages show the figures the API reports; a pin added on the policy page
is listed by the real C{snapstore list-overrides} command; the login form
refuses a wrong token; no page scrolls sideways at 1280x800 or 390x844;
the browser's own network log shows no request to another host.

With C{SNAPSTORE_SCREENSHOTS=DIRECTORY} set, the tests save a picture of
each page there (the documentation's are made with
C{SNAPSTORE_SCREENSHOTS=docs/screenshots ./run-tests tests.test_dashboard_browser}).

One browser per test class; selenium's calls block, so they run in a
thread while the reactor serves the fake store.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import sys
import urllib.parse
from typing import Any, Callable, Optional

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import readBody

from tests.helpers import testAgent
from tests.processes import spawn
from tests.test_fleet import FleetMixin, deferred
from tests.test_rules_support import copyShipped

#: The viewports every page must fit without scrolling sideways.
VIEWPORTS = {"desktop": (1280, 800, False), "phone": (390, 844, True)}

#: Where screenshots go, when wanted.
SCREENSHOTS = os.environ.get("SNAPSTORE_SCREENSHOTS")

TOKEN = "dashboard-test-token-0123"


def browserProblem() -> Optional[str]:
    """
    Why no browser can be driven here (C{None}: one can).
    """
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (scripts/setup-test-env installs it)"
    for program, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if shutil.which(program) is None:
            return f"{program} is missing (apt-get install {package})"
    return None


class Browser:
    """
    A headless Chromium that records its network log.
    """

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-default-apps", "--hide-scrollbars",
                     "--window-size=1280,800"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(
            service=Service(executable_path=shutil.which("chromedriver")), options=options)
        self.driver.set_page_load_timeout(30)
        self.requested: list[str] = []
        self.console: list[str] = []

    def quit(self) -> None:
        self.driver.quit()

    def viewport(self, name: str) -> None:
        width, height, mobile = VIEWPORTS[name]
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.collectRequests()

    def collectRequests(self) -> None:
        """
        Add the URL of every request the browser sent since the last call
        (C{Network.requestWillBeSent} in the performance log).
        """
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
        self.console.extend(entry["message"] for entry in self.driver.get_log("browser"))

    def submit(self, form: Any) -> None:
        """
        Submit C{form} and wait for the page that answers.
        """
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.wait import WebDriverWait

        def replaced(driver: Any) -> bool:
            # Selenium's staleness_of counts only StaleElementReferenceException;
            # Chrome sometimes answers for the element of the page just left
            # with a generic "Node with given id does not belong to the
            # document" error instead (one full run in several): that is
            # stale too.
            try:
                form.is_enabled()
            except WebDriverException:
                return True
            return False

        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(self.driver, 20).until(replaced)
        self.waitFor(By.TAG_NAME, "footer")

    def waitFor(self, by: str, value: str) -> Any:
        """
        The element found by C{by} and C{value} once the page shows it.
        """
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        return WebDriverWait(self.driver, 20).until(
            expected_conditions.presence_of_element_located((by, value)))

    def value(self, selector: str) -> str:
        return self.driver.execute_script(
            "return document.querySelector(arguments[0]).dataset.value", selector)

    def scrollsSideways(self) -> tuple[int, int]:
        """
        C{(scrollWidth, clientWidth)} of the document.
        """
        return tuple(self.driver.execute_script(
            "const e = document.documentElement; return [e.scrollWidth, e.clientWidth]"))

    def screenshot(self, name: str) -> None:
        """
        The whole page as C{SCREENSHOTS/NAME.png}, when screenshots are
        wanted.
        """
        if not SCREENSHOTS:
            return
        os.makedirs(SCREENSHOTS, exist_ok=True)
        size = self.driver.execute_script(
            "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]")
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
        with open(os.path.join(SCREENSHOTS, name + ".png"), "wb") as picture:
            picture.write(base64.b64decode(shot["data"]))


class BrowserTestCase(FleetMixin, TestCase):
    """
    A node with shipped rules (device limit 50) in front of the fake store,
    three devices, a download from upstream and two from the cache; one
    browser for the class.
    """

    skip = browserProblem()
    nodeOptions: tuple[str, ...] = ()

    #: Each class's browser and how many of its tests are still to run
    #: (trial has no class fixtures: the first test starts the browser,
    #: the last quits it, and an exit quits any left).
    _browsers: dict[type, list[Any]] = {}

    @property
    def browser(self) -> Browser:
        return self._browsers[type(self)][0]

    def setUp(self) -> None:
        kind = type(self)
        if kind not in self._browsers:
            remaining = len([name for name in dir(kind) if name.startswith("test_")])
            browser = Browser()
            atexit.register(browser.quit)
            self._browsers[kind] = [browser, remaining]
        self.addCleanup(self._testDone)

    def _testDone(self) -> None:
        entry = self._browsers[type(self)]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].quit()
            atexit.unregister(entry[0].quit)

    def inBrowser(self, action: Callable[..., Any], *arguments: Any) -> Any:
        return deferToThread(action, *arguments)

    async def startSite(self) -> None:
        await self.setUpStore()
        self.rulesDir = copyShipped(self, limit="50")
        argv: list[str] = []
        for option in self.nodeOptions:
            argv.append(option.replace("TOKEN_FILE", self.tokenFile()))
        url, self.adminURL = await self.startNode(extra=argv)
        self.browser.requested.clear()
        self.browser.console.clear()
        a, b, c = await self.fleet(url)
        code, answer = await a.refresh(self.hello, 10)
        self.assertEqual(code, 200, answer)
        download = answer["results"][0]["snap"]["download"]["url"]
        for _ in range(3):
            response = await testAgent(self).request(b"GET", download.encode())
            self.assertEqual(response.code, 200)
            await readBody(response)

    def tokenFile(self) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as tokens:
            tokens.write(f"ops:{TOKEN}\n")
        return path

    def assertStayedLocal(self) -> None:
        """
        Every request the browser sent went to the admin endpoint, and it
        reported no breach of the pages' content security policy (an
        inline style, say).
        """
        self.browser.collectRequests()
        self.assertEqual([m for m in self.browser.console if "Content Security Policy" in m], [])
        own = urllib.parse.urlsplit(self.adminURL).netloc
        self.assertTrue(self.browser.requested)
        for url in self.browser.requested:
            self.assertEqual(urllib.parse.urlsplit(url).netloc, own, url)


class DashboardBrowserTests(BrowserTestCase):
    """
    On loopback without a token file: no login.
    """

    @deferred
    async def test_overviewShowsTheAPICounts(self) -> None:
        """
        The overview shows the devices, cache use and hit ratio that
        C{/v1/status} reports, and the traffic that C{/v1/traffic} does.
        """
        await self.startSite()
        await self.inBrowser(self.browser.viewport, "desktop")
        await self.inBrowser(self.browser.open, self.adminURL + "/")
        code, status = await self.admin(self.adminURL, b"GET", "/v1/status")
        self.assertEqual(code, 200)
        # The three devices, and the address the downloads came from.
        self.assertEqual(status["devices"]["limit"], 50)
        self.assertGreaterEqual(status["devices"]["connected"], 3)
        self.assertEqual(await self.inBrowser(self.browser.value, "#devices .value"),
                         str(status["devices"]["connected"]))
        self.assertEqual(int(await self.inBrowser(self.browser.value, "#cache .value")),
                         status["cache"]["size"])
        self.assertEqual(float(await self.inBrowser(self.browser.value, "#hit-ratio .value")),
                         round(status["cache"]["hit-ratio"], 4))
        self.assertAlmostEqual(status["cache"]["hit-ratio"], 2 / 3)
        code, traffic = await self.admin(self.adminURL, b"GET", "/v1/traffic")
        self.assertEqual(int(await self.inBrowser(self.browser.value, "#from-cache")),
                         sum(b["from-cache"] for b in traffic["buckets"]))
        self.assertEqual(int(await self.inBrowser(self.browser.value, "#from-upstream")),
                         4096)
        self.assertStayedLocal()

    @deferred
    async def test_pinOnThePolicyPage(self) -> None:
        """
        A pin added with the policy page's form is listed by the real
        C{snapstore list-overrides} command, audited as the local user.
        """
        await self.startSite()
        await self.inBrowser(self.browser.viewport, "desktop")
        await self.inBrowser(self.browser.open, self.adminURL + "/policy")

        def addPin() -> str:
            from selenium.webdriver.common.by import By

            form = self.browser.driver.find_element(By.ID, "pin-form")
            form.find_element(By.NAME, "snap").send_keys("hello")
            form.find_element(By.NAME, "revision").send_keys("10")
            form.find_element(By.NAME, "reason").send_keys("hold the line at 10")
            self.browser.submit(form)
            notice = self.browser.waitFor(By.CLASS_NAME, "notice")
            self.browser.collectRequests()
            return notice.text

        self.assertEqual(await self.inBrowser(addPin), "The pin was added.")
        command = spawn(self, [sys.executable, "-m", "snapstore.cli", "--admin", self.adminURL,
                               "list-overrides"])
        await command.collector.ended
        self.assertIn("hello", command.output)
        self.assertIn("latest/stable", command.output)
        self.assertIn("10", command.output)
        code, answer = await self.admin(self.adminURL, b"GET", "/v1/audit")
        self.assertEqual(answer["entries"][-1]["action"], "override.set")
        self.assertTrue(answer["entries"][-1]["actor"].startswith("local:"))
        self.assertStayedLocal()

    @deferred
    async def test_pagesFitAndStayLocal(self) -> None:
        """
        Every page fits 1280x800 and 390x844 without scrolling sideways
        (with a pin, a hold and a group to show), and the browser sent no
        request to another host.
        """
        await self.startSite()
        for method, path, body in (
                (b"PUT", "/v1/groups/line-2", {"selectors": {"serial": ["B"]}}),
                (b"POST", "/v1/overrides/world", {
                    "channel-map": [{"channel": "stable", "revision": 5}], "group": "line-2",
                    "until": "30d", "reason": "line 2 validated on world 5"}),
                (b"POST", "/v1/holds", {"snap": "hello", "until-approved": True,
                                        "reason": "QA signs off each revision"})):
            code, answer = await self.admin(self.adminURL, method, path, body)
            self.assertEqual(code, 200, answer)
        for viewport in VIEWPORTS:
            await self.inBrowser(self.browser.viewport, viewport)
            for name, path in (("overview", "/"), ("fleet", "/fleet"), ("policy", "/policy"),
                               ("audit", "/audit")):
                await self.inBrowser(self.browser.open, self.adminURL + path)
                scrollWidth, clientWidth = await self.inBrowser(self.browser.scrollsSideways)
                self.assertLessEqual(scrollWidth, clientWidth, (viewport, path))
                await self.inBrowser(self.browser.screenshot, f"{name}-{viewport}")
        self.assertStayedLocal()


class LoginBrowserTests(BrowserTestCase):
    """
    With a token file: the login form.
    """

    nodeOptions = ("--admin-token-file", "TOKEN_FILE")

    @deferred
    async def test_loginRefusesAWrongToken(self) -> None:
        """
        A wrong token gets the form again with an error and no cookie; the
        right one opens the overview and sets an C{HttpOnly},
        C{SameSite=Strict} cookie.
        """
        await self.startSite()
        await self.inBrowser(self.browser.viewport, "desktop")
        await self.inBrowser(self.browser.open, self.adminURL + "/")

        def logIn(token: str) -> tuple[str, list[Any]]:
            from selenium.webdriver.common.by import By

            form = self.browser.driver.find_element(By.ID, "login-form")
            form.find_element(By.NAME, "token").send_keys(token)
            self.browser.submit(form)
            self.browser.collectRequests()
            return (self.browser.driver.find_element(By.TAG_NAME, "h1").text,
                    self.browser.driver.get_cookies())

        title, cookies = await self.inBrowser(logIn, "not-the-token-at-all")
        self.assertEqual((title, cookies), ("Log in", []))
        error = await self.inBrowser(
            lambda: self.browser.driver.execute_script(
                "return document.getElementById('error').textContent"))
        self.assertEqual(error, "That is not a token of this admin endpoint.")
        await self.inBrowser(self.browser.screenshot, "login-desktop")
        title, cookies = await self.inBrowser(logIn, TOKEN)
        self.assertEqual(title, "Overview")
        self.assertEqual([(c["name"], c["httpOnly"], c["sameSite"], c["path"]) for c in cookies],
                         [("snapstore-admin", True, "Strict", "/")])
        self.assertGreaterEqual(int(await self.inBrowser(self.browser.value, "#devices .value")),
                                3)
        self.assertStayedLocal()
