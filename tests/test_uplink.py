"""
The uplink (issue 16): stale answers through an upstream outage, followed
channels warmed before devices ask, and the upstream rate cap, through
real C{twistd snapstore} processes in front of the fake store; the
scheduling and the rate arithmetic with a L{Clock}.
"""

from __future__ import annotations

import hashlib
import json
import time
from io import BytesIO

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from snapstore.cli import main as cliMain
from snapstore.config import ConfigError, buildSettings, parseDuration, parseWindow
from snapstore.cli.uplink import statusLines
from snapstore.uplink.answers import FOLLOWER_AGENT, RelayedAnswers
from snapstore.http.bodies import BytesProducer
from snapstore.uplink.stale import RELEARN_AFTER, StaleAgent, UplinkHealth
from snapstore.uplink.follow import Follower, FollowList, secondsUntilOpen
from snapstore.uplink.rate import TokenBucket
from tests.fakestore import FakeStore
from tests.helpers import RecordingOrigin, deferred, listen, originSite, testAgent
from tests.processes import freePort, startTwistd, waitForPort
from tests.test_rules_support import copyShipped

FIELDS = ["architectures", "base", "confinement", "created-at", "download", "epoch", "name",
          "revision", "snap-id", "summary", "title", "type", "version", "publisher"]


class NodeMixin:
    """
    The fake store and one C{twistd snapstore} node in front of it, with
    the shipped rules and an admin endpoint.
    """

    timeout = 240

    async def startStore(self, **options):
        self.store = await FakeStore(reactor, **options).startFor(self)

    async def startNode(self, *options):
        self.adminPort = freePort()
        self.dataDir = self.mktemp()
        argv = ["--upstream", self.store.apiURL, "--proxy-endpoint", "none",
                "--admin-endpoint", f"tcp:{self.adminPort}:interface=127.0.0.1",
                "--rules-dir", copyShipped(self), "--data-dir", self.dataDir, *options]
        self.process, port = await startTwistd(self, *argv)
        await waitForPort(self.adminPort, self.process)
        self.url = f"http://127.0.0.1:{port}/"
        self.adminURL = f"http://127.0.0.1:{self.adminPort}"

    async def call(self, method, path, body=None, architecture=b"amd64", extra=None):
        headers = Headers({b"snap-device-series": [b"16"],
                           b"snap-device-architecture": [architecture],
                           b"accept": [b"application/json"],
                           b"content-type": [b"application/json"], **(extra or {})})
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode())) if body is not None else None
        response = await testAgent(self).request(method, (self.url + path).encode(), headers,
                                                 producer)
        raw = await readBody(response)
        return response, raw

    async def refresh(self, actions, context=(), architecture=b"amd64", extra=None):
        response, raw = await self.call(b"POST", "v2/snaps/refresh", {
            "context": list(context), "actions": actions, "fields": FIELDS}, architecture,
            extra)
        return response, json.loads(raw)

    async def refreshFrom(self, snapId, revision, channel="latest/stable"):
        """
        Refresh C{snapId} from C{revision} as a device accepting xdelta3
        deltas does; the answer's C{download}.
        """
        response, answer = await self.refresh(
            [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}],
            [{"snap-id": snapId, "instance-key": snapId, "revision": revision,
              "tracking-channel": channel, "epoch": {"read": [0], "write": [0]}}],
            extra={b"snap-accept-delta-format": [b"xdelta3"]})
        self.assertEqual(response.code, 200)
        return answer["results"][0]["snap"]["download"]

    async def download(self, url):
        response = await testAgent(self).request(b"GET", url.encode())
        body = await readBody(response)
        return response, body

    async def admin(self, method, path, body=None):
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode())) if body is not None else None
        headers = Headers({b"content-type": [b"application/json"]}) if body is not None else Headers()
        response = await testAgent(self).request(method, (self.adminURL + path).encode(),
                                                 headers, producer)
        return response.code, json.loads(await readBody(response))

    def xcache(self, response):
        return (response.headers.getRawHeaders(b"x-cache") or [None])[0]


class StaleTests(NodeMixin, TestCase):
    """
    C{--serve-stale}: an outage in three forms, and recovery.
    """

    @deferred
    async def test_outageServedStaleThenLive(self):
        """
        A device refreshes, installs C{hello} (blob and assertions cached)
        and searches while upstream answers.  Then upstream refuses
        connections, then hangs, then answers 503: in each, the device's
        refresh gets C{X-Cache: STALE} and the same revision, its install
        gets the cached blob (C{HIT}) and the assertions, its search finds
        C{hello}; a snap never seen gets the store error.  When upstream
        returns, answers are live at once (a new revision shows).
        """
        await self.startStore()
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 8192)
        self.store.addRevision("hello", 12, 16384)
        self.store.addSnap("never-seen")
        self.store.addRevision("never-seen", 1, 4096)
        await self.startNode("--upstream-timeout", "2")
        context = [{"snap-id": snapId, "instance-key": snapId, "revision": 10,
                    "tracking-channel": "latest/stable"}]
        refreshAction = [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}]
        installAction = [{"action": "install", "instance-key": "install-1", "name": "hello"}]
        unknownAction = [{"action": "install", "instance-key": "install-1", "name": "never-seen"}]
        digest = self.store.blob("hello", 12).digestBase64
        assertionsAction = [{"action": "fetch-assertions", "key": "g1", "assertions": [
            {"type": "snap-revision", "primary-key": [digest]},
            {"type": "snap-declaration", "primary-key": ["16", snapId]}]}]

        # Live: what the node relays and will answer from later.
        response, answer = await self.refresh(refreshAction, context)
        self.assertEqual((response.code, self.xcache(response)), (200, None))
        self.assertEqual(answer["results"][0]["snap"]["revision"], 12)
        response, answer = await self.refresh(installAction)
        downloadURL = answer["results"][0]["snap"]["download"]["url"]
        response, blob = await self.download(downloadURL)
        self.assertEqual((response.code, self.xcache(response)), (200, b"MISS"))
        self.assertEqual(blob, self.store.blobBytes("hello", 12))
        response, answer = await self.refresh(assertionsAction)
        self.assertEqual(len(answer["results"][0]["assertion-stream-urls"]), 2)
        for url in answer["results"][0]["assertion-stream-urls"]:
            response, _ = await self.download(url)
            self.assertEqual(response.code, 200)
        response, raw = await self.call(b"GET", "v2/snaps/find?q=hello")
        self.assertEqual([r["name"] for r in json.loads(raw)["results"]], ["hello"])
        response, raw = await self.call(b"GET", "v2/snaps/info/hello")
        self.assertEqual(response.code, 200)

        async def duringOutage(unknownStatus):
            response, answer = await self.refresh(refreshAction, context)
            self.assertEqual((response.code, self.xcache(response)), (200, b"STALE"), answer)
            self.assertEqual(answer["results"][0]["snap"]["revision"], 12)
            self.assertTrue(answer["results"][0]["snap"]["download"]["url"].startswith(self.url))
            response, answer = await self.refresh(installAction)
            self.assertEqual((response.code, self.xcache(response)), (200, b"STALE"), answer)
            response, blob = await self.download(answer["results"][0]["snap"]["download"]["url"])
            self.assertEqual((response.code, self.xcache(response)), (200, b"HIT"))
            self.assertEqual(blob, self.store.blobBytes("hello", 12))
            response, answer = await self.refresh(assertionsAction)
            self.assertEqual((response.code, self.xcache(response)), (200, b"STALE"), answer)
            urls = answer["results"][0]["assertion-stream-urls"]
            self.assertEqual(len(urls), 2)
            for url in urls:
                response, body = await self.download(url)
                self.assertEqual(response.code, 200)
                self.assertIn(b"type: snap-", body)
            response, raw = await self.call(b"GET", "v2/snaps/find?q=hello")
            self.assertEqual((response.code, self.xcache(response)), (200, b"STALE"), raw)
            self.assertEqual([r["name"] for r in json.loads(raw)["results"]], ["hello"])
            response, raw = await self.call(b"GET", "v2/snaps/info/hello")
            self.assertEqual((response.code, self.xcache(response)), (200, b"STALE"), raw)
            response, answer = await self.refresh(unknownAction)
            self.assertEqual(response.code, unknownStatus, answer)
            self.assertIsNone(self.xcache(response))
            self.assertIn("error-list", answer)

        # 1. Connections refused.
        await self.store.goDown()
        await duringOutage(502)
        code, status = await self.admin(b"GET", "/v1/status")
        self.assertTrue(status["uplink"]["serving-stale"])
        self.assertIsNotNone(status["uplink"]["failing-since"])
        self.assertGreater(status["uplink"]["stale-answers"], 0)
        out = _Out()
        self.assertEqual(await _cli(["--admin", self.adminURL, "status"], out), 1)
        self.assertIn("serving stale answers", out.text)
        # 2. A hanging upstream (the node answers before --upstream-timeout).
        await self.store.comeBack()
        self.store.faults.failAPI("stall", count=1000, pathPrefix="/v2/", seconds=30.0)
        await duringOutage(504)
        self.store.faults.clear()
        # 3. 503 answers: a never-seen snap gets upstream's answer as before.
        self.store.faults.failAPI("status", count=1000, pathPrefix="/v2/", code=503)
        await duringOutage(503)
        response, raw = await testAgent(self).request(
            b"GET", (self.adminURL + "/metrics").encode()).addCallback(
            lambda r: readBody(r).addCallback(lambda body: (r, body)))
        self.assertIn(b'snapstore_stale_answers_total{kind="refresh"}', raw)
        # Recovery: live at once.
        self.store.faults.clear()
        self.store.addRevision("hello", 13, 4096)
        response, answer = await self.refresh(refreshAction, context)
        self.assertEqual((response.code, self.xcache(response)), (200, None))
        self.assertEqual(answer["results"][0]["snap"]["revision"], 13)
        code, status = await self.admin(b"GET", "/v1/status")
        self.assertFalse(status["uplink"]["serving-stale"])
        self.assertIsNone(status["uplink"]["failing-since"])
        self.assertIsNotNone(status["uplink"]["last-answer"])
        out = _Out()
        await _cli(["--admin", self.adminURL, "status"], out)
        self.assertIn("Uplink: upstream answers (last answer ", out.text)

    @deferred
    async def test_serveStaleOff(self):
        """
        With C{--serve-stale no} an outage gives the store error, as before.
        """
        await self.startStore()
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 4096)
        await self.startNode("--serve-stale", "no")
        action = [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}]
        context = [{"snap-id": snapId, "instance-key": snapId, "revision": 9,
                    "tracking-channel": "latest/stable"}]
        response, _ = await self.refresh(action, context)
        self.assertEqual(response.code, 200)
        await self.store.goDown()
        response, answer = await self.refresh(action, context)
        self.assertEqual(response.code, 502, answer)
        self.assertEqual(answer["error-list"][0]["code"], "upstream-unreachable")


class _Out:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    @property
    def text(self):
        return "".join(self.parts)


def _cli(argv, out):
    """
    Run the C{snapstore} command in a thread (it is synchronous).
    """
    from twisted.internet.threads import deferToThread

    return deferToThread(cliMain, argv, out, out)


class FollowTests(NodeMixin, TestCase):
    """
    C{snapstore follow}: a followed channel's new revision is in the cache
    before any device asks.
    """

    @deferred
    async def test_followedRevisionCachedBeforeDevicesAsk(self):
        """
        C{snapstore follow hello=stable --now} fetches stable's revision
        (one CDN download, counted by the fake store); the first device to
        install it gets C{X-Cache: HIT} and the CDN is not asked again.  A
        new revision released to stable is fetched by the next round; the
        follow and unfollow are audited, and C{following --json} lists the
        contract's shape.
        """
        await self.startStore()
        self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 65536)
        await self.startNode()
        out = _Out()
        code = await _cli(["--admin", self.adminURL, "follow", "hello=stable", "--arch",
                           "amd64", "--now"], out)
        self.assertEqual(code, 0, out.text)
        self.assertIn("1 fetched", out.text)
        self.assertEqual(len(self.store.cdnDownloads("hello", 10)), 1)
        self.assertEqual(self.store.count("POST", "/v2/snaps/refresh"), 1)
        response, answer = await self.refresh(
            [{"action": "install", "instance-key": "i", "name": "hello"}])
        response, blob = await self.download(answer["results"][0]["snap"]["download"]["url"])
        self.assertEqual((response.code, self.xcache(response)), (200, b"HIT"))
        self.assertEqual(blob, self.store.blobBytes("hello", 10))
        self.assertEqual(len(self.store.cdnDownloads("hello", 10)), 1)

        self.store.addRevision("hello", 11, 32768)
        out = _Out()
        self.assertEqual(await _cli(["--admin", self.adminURL, "follow", "--now"], out), 0,
                         out.text)
        self.assertEqual(len(self.store.cdnDownloads("hello", 11)), 1)
        self.assertEqual(len(self.store.cdnDownloads("hello", 10)), 1)

        out = _Out()
        self.assertEqual(await _cli(["--admin", self.adminURL, "following", "--json"], out), 0)
        self.assertEqual(json.loads(out.text), {"follows": [
            {"snap": "hello", "channels": ["latest/stable"], "architectures": ["amd64"],
             "fleet": False, "with-deps": False}]})
        out = _Out()
        self.assertEqual(await _cli(["--admin", self.adminURL, "unfollow", "hello"], out), 0)
        self.assertIn("Nothing is followed", out.text)
        code, audit = await self.admin(b"GET", "/v1/audit")
        actions = [entry["action"] for entry in audit["entries"]]
        self.assertIn("follow", actions)
        self.assertIn("unfollow", actions)

    @deferred
    async def test_badFollowRefused(self):
        """
        A follow that names no valid snap or channel is refused with the
        admin API's error shape, and nothing is stored.
        """
        await self.startStore()
        await self.startNode()
        code, answer = await self.admin(b"POST", "/v1/follows",
                                        {"snap": "hello", "channels": ["no/such/risk/x"]})
        self.assertEqual((code, answer["error"]["code"]), (400, "bad-request"))
        code, answer = await self.admin(b"GET", "/v1/follows")
        self.assertEqual(answer, {"follows": []})


class PrefetchWindowTests(TestCase):
    """
    C{--prefetch-window}: rounds run only inside it (scheduling on a
    L{Clock}).
    """

    def localTime(self, hour, minute=0):
        return time.mktime((2026, 12, 3, hour, minute, 0, 0, 0, -1))

    def test_parseWindow(self):
        self.assertEqual(parseWindow("01:00-05:00"), (60, 300))
        self.assertEqual(parseWindow("22:30-02:00"), (1350, 120))
        self.assertIsNone(parseWindow(""))
        for bad in ("1-5", "25:00-01:00", "01:00-01:00", "01:60-02:00"):
            self.assertRaises(ValueError, parseWindow, bad)
        self.assertRaises(ConfigError, buildSettings, {"prefetch-window": "soon"})

    def test_secondsUntilOpen(self):
        window = parseWindow("01:00-05:00")
        self.assertEqual(secondsUntilOpen(window, self.localTime(2)), 0)
        self.assertEqual(secondsUntilOpen(window, self.localTime(23)), 2 * 3600)
        self.assertEqual(secondsUntilOpen(window, self.localTime(5)), 20 * 3600)
        wrapping = parseWindow("22:00-02:00")
        self.assertEqual(secondsUntilOpen(wrapping, self.localTime(23)), 0)
        self.assertEqual(secondsUntilOpen(wrapping, self.localTime(1)), 0)
        self.assertEqual(secondsUntilOpen(wrapping, self.localTime(12)), 10 * 3600)

    def test_roundsWaitForWindow(self):
        """
        A round falling due at 23:00 with a 01:00-05:00 window waits until
        01:00; then rounds follow every interval (jittered) inside it.
        """
        clock = Clock()
        clock.advance(self.localTime(22, 30))
        follower = Follower(clock, FollowList(self.mktemp()), None, None, lambda r: None,
                            interval=3600.0, window=parseWindow("01:00-05:00"),
                            random=lambda: 0.5)
        follower.startService()
        self.addCleanup(follower.stopService)
        clock.advance(1800)  # 23:00, the first round is due
        self.assertEqual(follower.rounds, 0)
        clock.advance(2 * 3600 - 1)
        self.assertEqual(follower.rounds, 0)
        clock.advance(1)  # 01:00
        self.assertEqual(follower.rounds, 1)
        clock.advance(3600)  # 02:00 (jitter 0.5 -> exactly the interval)
        self.assertEqual(follower.rounds, 2)
        clock.advance(3 * 3600)  # 05:00: the window closes
        rounds = follower.rounds
        clock.advance(19 * 3600 - 1)
        self.assertEqual(follower.rounds, rounds)


class RateTests(NodeMixin, TestCase):
    """
    C{--upstream-rate}: fills are held to the cap, hits are not.
    """

    def test_tokenBucket(self):
        clock = Clock()
        bucket = TokenBucket(clock, 1000, burst=100)
        self.assertEqual(bucket.take(100), 0)
        self.assertEqual(bucket.take(500), 0.5)
        clock.advance(0.5)
        self.assertEqual(bucket.owed(), 0)
        clock.advance(10)
        self.assertEqual(bucket.take(0), 0)
        self.assertEqual(bucket.tokens, 100)

    def test_rates(self):
        settings = buildSettings({"upstream-rate": "20M", "prefetch-rate": "512K"})
        self.assertEqual((settings.upstreamRate, settings.prefetchRate), (20 << 20, 512 << 10))
        self.assertIsNone(buildSettings({}).upstreamRate)
        self.assertRaises(ConfigError, buildSettings, {"upstream-rate": "fast"})
        self.assertEqual(parseDuration("7d"), 7 * 86400)
        self.assertEqual(buildSettings({}).staleMaxAge, 7 * 86400)

    @deferred
    async def test_fillHeldToCapWhileHitRunsFullSpeed(self):
        """
        With C{--upstream-rate 128K}, a 512 KiB miss reaches the device at
        the cap (within 10 %), while a cached blob downloaded meanwhile
        comes at full speed (more than ten times the cap).
        """
        cap = 128 << 10
        await self.startStore()
        self.store.addSnap("hello")
        self.store.addRevision("hello", 1, 64 << 10)
        self.store.addRevision("hello", 2, 512 << 10, channels=("edge",))
        await self.startNode("--upstream-rate", "128K")
        response, answer = await self.refresh([
            {"action": "install", "instance-key": "a", "name": "hello"},
            {"action": "install", "instance-key": "b", "name": "hello", "channel": "edge"}])
        cachedURL, fillURL = (r["snap"]["download"]["url"] for r in answer["results"])
        response, _ = await self.download(cachedURL)
        self.assertEqual(self.xcache(response), b"MISS")

        async def timed(url):
            started = time.monotonic()
            response, body = await self.download(url)
            return response, len(body), time.monotonic() - started

        fill = Deferred.fromCoroutine(timed(fillURL))
        response, size, seconds = await timed(cachedURL)
        self.assertEqual((self.xcache(response), size), (b"HIT", 64 << 10))
        self.assertGreater(size / seconds, 10 * cap)
        response, size, seconds = await fill
        self.assertEqual((self.xcache(response), size), (b"MISS", 512 << 10))
        rate = size / seconds
        self.assertTrue(0.9 * cap <= rate <= 1.1 * cap, f"fill at {rate:.0f} B/s, cap {cap}")


class StaleDetailTests(NodeMixin, TestCase):
    """
    Stale answers per device: its override pins, and upstream answers that
    came gzipped.
    """

    @deferred
    async def test_overridePinHoldsInStaleAnswers(self):
        """
        An override pinning C{hello} stable to 10 (12 is upstream's stable)
        still gives the device 10 when the answer is stale.
        """
        await self.startStore()
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 4096)
        self.store.addRevision("hello", 12, 4096)
        await self.startNode()
        code, answer = await self.admin(b"POST", "/v1/overrides/hello",
                                        {"channel-map": [{"channel": "stable", "revision": 10}]})
        self.assertEqual(code, 200, answer)
        context = [{"snap-id": snapId, "instance-key": snapId, "revision": 9,
                    "tracking-channel": "latest/stable"}]
        action = [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}]
        response, answer = await self.refresh(action, context)
        self.assertEqual((self.xcache(response), answer["results"][0]["snap"]["revision"]),
                         (None, 10))
        await self.store.goDown()
        response, answer = await self.refresh(action, context)
        self.assertEqual((self.xcache(response), answer["results"][0]["snap"]["revision"]),
                         (b"STALE", 10), answer)

    @deferred
    async def test_gzippedAnswersLearned(self):
        """
        Answers upstream sent gzipped are learned (decoded) all the same.
        """
        self.store = await FakeStore(reactor, compress="gzip").startFor(self)
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 4096)
        await self.startNode()
        context = [{"snap-id": snapId, "instance-key": snapId, "revision": 9,
                    "tracking-channel": "latest/stable"}]
        action = [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}]
        response, answer = await self.refresh(action, context)
        self.assertEqual(answer["results"][0]["snap"]["revision"], 10)
        self.assertEqual(self.store.requestsTo("POST", "/v2/snaps/refresh")[-1].header(
            "accept-encoding"), "gzip")
        await self.store.goDown()
        response, answer = await self.refresh(action, context)
        self.assertEqual((self.xcache(response), answer["results"][0]["snap"]["revision"]),
                         (b"STALE", 10), answer)


class ThrottleTests(TestCase):
    """
    L{ThrottledProtocol} on a L{Clock}: it pauses upstream while a bucket
    is in debt, resumes when it is paid, and never resumes what the inner
    protocol paused itself.
    """

    def setUp(self):
        from twisted.internet.protocol import Protocol
        from twisted.test.proto_helpers import StringTransport

        self.clock = Clock()
        self.received = []
        inner = Protocol()
        inner.dataReceived = self.received.append
        self.inner = inner
        self.transport = StringTransport()
        self.overall = TokenBucket(self.clock, 1000, burst=100)
        self.prefetch = TokenBucket(self.clock, 500, burst=100)
        from snapstore.uplink.rate import Throttle

        throttle = Throttle(self.clock, [self.overall]).joined(
            Throttle(self.clock, [self.prefetch]))
        self.protocol = throttle.wrap(inner)
        self.protocol.makeConnection(self.transport)

    def test_pausesUntilPaid(self):
        """
        Bytes are handed on at once; 600 bytes over a burst of 100 owe 1 s
        to the 500 B/s bucket (the slower one), so upstream is paused that
        long.
        """
        self.protocol.dataReceived(b"x" * 600)
        self.assertEqual(self.received, [b"x" * 600])
        self.assertEqual(self.transport.producerState, "paused")
        self.clock.advance(0.99)
        self.assertEqual(self.transport.producerState, "paused")
        self.clock.advance(0.01)
        self.assertEqual(self.transport.producerState, "producing")

    def test_innerPauseKept(self):
        """
        A pause of the inner protocol's own (a slow device) outlasts the
        throttle's; the throttle's outlasts an inner resume.
        """
        self.protocol.dataReceived(b"x" * 600)
        self.inner.transport.pauseProducing()
        self.clock.advance(1)
        self.assertEqual(self.transport.producerState, "paused")
        self.inner.transport.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.protocol.dataReceived(b"x" * 600)
        self.inner.transport.pauseProducing()
        self.inner.transport.resumeProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.clock.advance(1.2)
        self.assertEqual(self.transport.producerState, "producing")


class FleetFollowTests(NodeMixin, TestCase):
    """
    C{snapstore follow --fleet}: what devices report is followed.
    """

    @deferred
    async def test_fleetFollowsWhatDevicesTrack(self):
        """
        A device reports tracking C{hello} on candidate for arm64; after
        C{follow --fleet}, a round fetches the revision candidate holds for
        arm64 (and nothing for channels no device tracks).
        """
        await self.startStore()
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 5, 8192, architectures=("arm64",), channels=("stable",))
        self.store.addRevision("hello", 6, 8192, architectures=("arm64",),
                               channels=("candidate",))
        await self.startNode()
        context = [{"snap-id": snapId, "instance-key": snapId, "revision": 5,
                    "tracking-channel": "latest/candidate"}]
        response, answer = await self.refresh(
            [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}], context,
            architecture=b"arm64")
        self.assertEqual(answer["results"][0]["snap"]["revision"], 6)
        out = _Out()
        self.assertEqual(await _cli(["--admin", self.adminURL, "follow", "--fleet", "--now"],
                                    out), 0, out.text)
        self.assertIn("fetched: hello latest/candidate arm64 r6", out.text)
        self.assertEqual(len(self.store.cdnDownloads("hello", 6)), 1)
        self.assertEqual(len(self.store.cdnDownloads("hello", 5)), 0)


class StaleRestartTests(NodeMixin, TestCase):
    """
    Relayed answers survive a restart (C{<data-dir>/stale-answers.json}).
    """

    @deferred
    async def test_restartDuringOutage(self):
        """
        A node that relayed a refresh is restarted while upstream refuses
        connections: the device's refresh is still answered stale, with the
        same revision.  Answers seen with a user's C{Authorization} are not
        kept for others.
        """
        import signal

        await self.startStore()
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 4096)
        otherId = self.store.addSnap("mine")
        self.store.addRevision("mine", 3, 4096)
        await self.startNode()
        context = [{"snap-id": snapId, "instance-key": snapId, "revision": 9,
                    "tracking-channel": "latest/stable"}]
        action = [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}]
        response, answer = await self.refresh(action, context)
        self.assertEqual(answer["results"][0]["snap"]["revision"], 10)
        headers = Headers({b"authorization": [b'Macaroon root="x"'],
                           b"snap-device-series": [b"16"],
                           b"content-type": [b"application/json"]})
        body = {"context": [], "actions": [{"action": "install", "instance-key": "m",
                                            "name": "mine"}], "fields": FIELDS}
        response = await testAgent(self).request(
            b"POST", (self.url + "v2/snaps/refresh").encode(), headers,
            FileBodyProducer(BytesIO(json.dumps(body).encode())))
        self.assertEqual(json.loads(await readBody(response))["results"][0]["snap-id"], otherId)
        await self.process.kill(signal.SIGTERM)
        await self.store.goDown()
        storePort = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        argv = ["--upstream", self.store.apiURL, "--proxy-endpoint", "none",
                "--admin-endpoint", "none", "--data-dir", self.dataDir]
        self.process, _ = await startTwistd(self, *argv, storePort=storePort)
        response, answer = await self.refresh(action, context)
        self.assertEqual((self.xcache(response), answer["results"][0]["snap"]["revision"]),
                         (b"STALE", 10), answer)
        response, answer = await self.refresh(
            [{"action": "install", "instance-key": "m", "name": "mine"}])
        self.assertEqual(response.code, 502, answer)


class GatherTests(TestCase):
    """
    Covered answers are read whole before relaying, but never past the
    relay's own bound.
    """

    def test_boundedBody(self):
        from twisted.test.proto_helpers import StringTransport

        from snapstore.store.upstream import UpstreamError
        from snapstore.uplink.stale import _Gather

        results = []
        gather = _Gather(10, "GET /v2/snaps/find", results.append)
        transport = StringTransport()
        gather.makeConnection(transport)
        gather.dataReceived(b"x" * 6)
        gather.dataReceived(b"x" * 5)
        [failure] = results
        self.assertIsInstance(failure.value, UpstreamError)
        self.assertEqual((failure.value.status, failure.value.code),
                         (502, "upstream-bad-response"))
        self.assertEqual(transport.producerState, "stopped")
        # What arrives after is not handed on again.
        gather.dataReceived(b"x")
        gather.connectionLost(None)
        self.assertEqual(len(results), 1)


class _PendingAgent:
    """
    An L{IAgent} whose requests wait for the test: each is recorded with
    its L{Deferred}, which records being cancelled.
    """

    def __init__(self):
        self.requests = []
        self.cancelled = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        d = Deferred(lambda d: self.cancelled.append(uri))
        self.requests.append((method, uri, headers, bodyProducer, d))
        return d


class _Response:
    """
    An answer whose body the test writes into the protocol it is given.
    """

    phrase = b"OK"

    def __init__(self, code, headers=None):
        from twisted.test.proto_helpers import StringTransport

        self.code = code
        self.headers = headers or Headers({b"content-type": [b"application/json"]})
        self.length = None
        self.transport = StringTransport()
        self.protocol = None

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def finish(self, body):
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseDone

        self.protocol.dataReceived(body)
        self.protocol.connectionLost(Failure(ResponseDone()))


class LiveCallTests(TestCase):
    """
    L{StaleAgent}'s live path with an agent the test drives and a
    L{Clock}: answers handed on and learnt, the deadline while waiting
    for the head and while reading the body, a caller that gives up, 5xx.
    """

    BASE = "http://upstream.invalid/"
    INFO = b"http://upstream.invalid/v2/snaps/info/hello"

    def setUp(self):
        self.clock = Clock()
        self.live = _PendingAgent()
        self.health = UplinkHealth(self.clock)
        self.answers = RelayedAnswers(self.clock, 3600.0)
        self.agent = StaleAgent(self.live, self.BASE, self.answers, self.clock, 5.0, self.health)

    def ask(self):
        return self.agent.request(b"GET", self.INFO, Headers())

    def test_answerHandedOn(self):
        """
        A 200 answer is read whole and handed on with its decoded body;
        upstream counts as answering.
        """
        result = self.ask()
        response = _Response(200)
        self.live.requests[0][-1].callback(response)
        self.assertNoResult(result)
        response.finish(b'{"name": "hello"}')
        answer = self.successResultOf(result)
        self.assertEqual((answer.code, answer.body, answer.decoded),
                         (200, b'{"name": "hello"}', b'{"name": "hello"}'))
        self.assertIsNone(self.health.failingSince)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deadlineWaitingForHead(self):
        """
        No head within the deadline: the request is cancelled and, with
        nothing stale known, the caller gets a 504.
        """
        from snapstore.store.upstream import UpstreamError

        result = self.ask()
        self.clock.advance(5.0)
        self.assertEqual(self.live.cancelled, [self.INFO])
        failure = self.failureResultOf(result, UpstreamError)
        self.assertEqual((failure.value.status, failure.value.code), (504, "upstream-timeout"))
        self.assertIsNotNone(self.health.failingSince)

    def test_deadlineReadingBody(self):
        """
        A body not read in full within the deadline: reading stops and the
        caller gets a 504 at once; the end of the body changes nothing.
        """
        from snapstore.store.upstream import UpstreamError

        result = self.ask()
        response = _Response(200)
        self.live.requests[0][-1].callback(response)
        response.protocol.dataReceived(b'{"na')
        self.clock.advance(5.0)
        self.assertEqual(response.transport.producerState, "stopped")
        self.failureResultOf(result, UpstreamError)
        response.finish(b'me": "hello"}')

    def test_callerGivesUpWaiting(self):
        """
        A caller that gives up while upstream has not answered cancels the
        upstream request; upstream is not counted as failing.
        """
        from twisted.internet.defer import CancelledError

        result = self.ask()
        result.cancel()
        self.failureResultOf(result, CancelledError)
        self.assertEqual(self.live.cancelled, [self.INFO])
        self.assertIsNone(self.health.failingSince)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_callerGivesUpReading(self):
        """
        A caller that gives up while the body arrives stops the reading.
        """
        from twisted.internet.defer import CancelledError

        result = self.ask()
        response = _Response(200)
        self.live.requests[0][-1].callback(response)
        result.cancel()
        self.failureResultOf(result, CancelledError)
        self.assertEqual(response.transport.producerState, "stopped")
        response.finish(b"{}")
        self.assertIsNone(self.health.failingSince)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_serverErrorWithoutStale(self):
        """
        A 5xx with nothing stale known is handed on as upstream sent it,
        and upstream counts as failing.
        """
        result = self.ask()
        response = _Response(503)
        self.live.requests[0][-1].callback(response)
        response.finish(b"down")
        answer = self.successResultOf(result)
        self.assertEqual((answer.code, answer.body), (503, b"down"))
        self.assertIsNotNone(self.health.failingSince)

    def test_agentRaises(self):
        """
        An agent that raises instead of failing its Deferred is an upstream
        failure like any other, and leaves no timer behind.
        """
        def raising(method, uri, headers=None, bodyProducer=None):
            raise RuntimeError("no route")

        self.live.request = raising
        self.failureResultOf(self.ask(), RuntimeError)
        self.assertIsNotNone(self.health.failingSince)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_otherCallsUntouched(self):
        """
        A call stale answers do not cover is the live agent's own.
        """
        result = self.agent.request(b"GET", b"http://upstream.invalid/v2/snaps/categories")
        self.assertIs(result, self.live.requests[0][-1])


class StaleAfterFailureTests(TestCase):
    """
    Over real sockets: an info answer learnt live is given stale when the
    fake store goes down, and what was never seen gets the failure.
    """

    @deferred
    async def test_infoStaleWhenDown(self):
        from twisted.internet.error import ConnectionRefusedError

        store = await FakeStore(reactor).startFor(self)
        store.addSnap("hello")
        store.addRevision("hello", 3, 3000)
        clock = Clock()
        health = UplinkHealth(clock)
        agent = StaleAgent(testAgent(self), store.apiURL, RelayedAnswers(clock, 3600.0), clock,
                           5.0, health)
        headers = Headers({b"snap-device-series": [b"16"]})
        info = (store.apiURL + "v2/snaps/info/hello").encode()
        response = await agent.request(b"GET", info, headers)
        self.assertEqual((response.code, response.headers.getRawHeaders(b"x-cache")), (200, None))
        live = json.loads(response.body)
        await store.goDown()
        response = await agent.request(b"GET", info, headers)
        self.assertEqual((response.code, response.headers.getRawHeaders(b"x-cache")),
                         (200, [b"STALE"]))
        stale = json.loads(response.body)
        self.assertEqual([entry["revision"] for entry in stale["channel-map"]],
                         [entry["revision"] for entry in live["channel-map"]])
        self.assertEqual(health.staleAnswers, 1)
        with self.assertRaises(ConnectionRefusedError):
            await agent.request(b"GET", (store.apiURL + "v2/snaps/info/other").encode(), headers)


class DeltaTests(NodeMixin, TestCase):
    """
    Deltas (store-api.md 4.3) through snapstore: relayed to devices with
    their URLs rewritten, cached verified like blobs, and prefetched by
    follow rounds beside the new revision's blob.
    """

    async def followNow(self, *arguments: str, exitCode: int = 0) -> "_Out":
        """
        Run C{snapstore follow ARGUMENTS} against the node, check its exit
        status, and return what it printed (in C{.text}).
        """
        out = _Out()
        self.assertEqual(await _cli(["--admin", self.adminURL, "follow", *arguments], out),
                         exitCode, out.text)
        return out

    async def fetch(self, url):
        """
        Download C{url}: the response and its body, or the response and
        the exception that cut it.
        """
        response = await testAgent(self).request(b"GET", url.encode())
        try:
            return response, await readBody(response)
        except Exception as error:
            return response, error

    @deferred
    async def test_deltaCachedVerifiedLive(self):
        """
        A device refreshing from r10 with C{Snap-Accept-Delta-Format} gets
        the store's delta with its URL on snapstore; the first download
        fills the cache (one CDN fetch), the second is C{X-Cache: HIT} with
        the same bytes.  A delta whose bytes do not match its sha3-384
        (corrupted on the CDN) is cut off for the device and not cached:
        the next download fetches it again.
        """
        await self.startStore(deltas=True)
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 65536)
        self.store.addRevision("hello", 11, 200_000)
        await self.startNode()
        download = await self.refreshFrom(snapId, 10)
        [delta] = download["deltas"]
        expected = self.store.delta("hello", 10, 11)
        self.assertEqual(delta["url"], self.url + f"api/v1/snaps/download/{snapId}_10_11_xdelta3.delta")
        self.assertEqual((delta["size"], delta["sha3-384"]), (expected.size, expected.sha3_384))
        [asked] = self.store.requestsTo("POST", "/v2/snaps/refresh")
        self.assertEqual(asked.header("snap-accept-delta-format"), "xdelta3")
        for cache in (b"MISS", b"HIT"):
            response, body = await self.fetch(delta["url"])
            self.assertEqual((response.code, self.xcache(response)), (200, cache))
            self.assertEqual(body, expected.read())
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello", 10, 11)), 1)
        self.assertEqual(len(self.store.cdnDownloads("hello", 11)), 0)

        self.store.addRevision("hello", 12, 100_000)
        self.store.faults.failDelta("hello", 11, 12, "corrupt")
        [delta] = (await self.refreshFrom(snapId, 11))["deltas"]
        response, cut = await self.fetch(delta["url"])
        self.assertIsInstance(cut, Exception)
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello", 11, 12)), 1)
        response, body = await self.fetch(delta["url"])
        self.assertEqual((response.code, self.xcache(response)), (200, b"MISS"))
        self.assertEqual(hashlib.sha3_384(body).hexdigest(), delta["sha3-384"])
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello", 11, 12)), 2)

    @deferred
    async def test_followRoundPrefetchesDelta(self):
        """
        Following hello's stable: the first round fetches r10 (no delta:
        nothing older is known).  r11 released, the next round fetches
        r11's blob and the delta from r10, each once, asking upstream as a
        device on r10 accepting xdelta3 would; then a device on r10
        refreshing through snapstore gets the delta with C{X-Cache: HIT}
        and the CDN is not asked again.  The revision's assertions went
        into the assertion cache: the device's fetch of them is a hit too.
        """
        await self.startStore(deltas=True)
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 65536)
        await self.startNode()
        out = _Out()
        code = await _cli(["--admin", self.adminURL, "follow", "hello=stable", "--now"], out)
        self.assertEqual(code, 0, out.text)
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello")), 0)

        self.store.addRevision("hello", 11, 200_000)
        out = await self.followNow("--now")
        self.assertIn("fetched: hello latest/stable amd64 r11\n", out.text)
        self.assertIn("fetched: hello latest/stable amd64 r11 (delta from r10)\n", out.text)
        self.assertIn("2 fetched, 0 already cached, 0 failed", out.text)
        self.assertEqual(len(self.store.cdnDownloads("hello", 11)), 1)
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello", 10, 11)), 1)
        deltaAsk = [r for r in self.store.requestsTo("POST", "/v2/snaps/refresh")
                    if r.hasHeader("snap-accept-delta-format")]
        self.assertEqual(len(deltaAsk), 1)
        self.assertEqual(json.loads(deltaAsk[0].body)["context"][0]["revision"], 10)

        [delta] = (await self.refreshFrom(snapId, 10))["deltas"]
        response, body = await self.fetch(delta["url"])
        self.assertEqual((response.code, self.xcache(response)), (200, b"HIT"))
        self.assertEqual(body, self.store.delta("hello", 10, 11).read())
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello", 10, 11)), 1)

        digest = self.store.blob("hello", 11).digestBase64
        path = f"/v2/assertions/snap-revision/{digest}"
        before = self.store.count("GET", path)
        self.assertEqual(before, 1)
        response = await testAgent(self).request(
            b"GET", (self.url + path[1:] + "?max-format=0").encode(),
            Headers({b"accept": [b"application/x.ubuntu.assertion"]}))
        await readBody(response)
        self.assertEqual((response.code, self.xcache(response)), (200, b"HIT"))
        self.assertEqual(self.store.count("GET", path), before)

        out = _Out()
        self.assertEqual(await _cli(["--admin", self.adminURL, "follow", "--now"], out), 0)
        self.assertIn("0 fetched, 1 already cached, 0 failed", out.text)
        self.assertEqual(len([r for r in self.store.requestsTo("POST", "/v2/snaps/refresh")
                              if r.hasHeader("snap-accept-delta-format")]), 2)

    @deferred
    async def test_corruptDeltaFailsThenRetried(self):
        """
        A delta whose bytes do not match its sha3-384 fails the round (exit
        1, listed as failed) and is not cached; the next round asks for it
        again and fetches it.
        """
        await self.startStore(deltas=True)
        self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 65536)
        await self.startNode()
        out = await self.followNow("hello=stable", "--now")
        self.store.addRevision("hello", 11, 100_000)
        self.store.faults.failDelta("hello", 10, 11, "corrupt")
        out = await self.followNow("--now", exitCode=1)
        self.assertIn("fetched: hello latest/stable amd64 r11\n", out.text)
        self.assertIn("failed: hello latest/stable amd64 r11 (delta from r10): ", out.text)
        out = await self.followNow("--now")
        self.assertIn("fetched: hello latest/stable amd64 r11 (delta from r10)\n", out.text)
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello", 10, 11)), 2)

    @deferred
    async def test_firstRoundDeltaFromFleetInventory(self):
        """
        Revisions devices report running count as delta sources: a device
        on r10 refreshed through this node (recorded in the fleet
        inventory) before hello was followed, so the very first round
        fetches the delta from r10 to stable's r11 beside r11's blob.
        """
        await self.startStore(deltas=True)
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 65536)
        self.store.addRevision("hello", 11, 100_000)
        await self.startNode()
        response, answer = await self.refresh(
            [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}],
            [{"snap-id": snapId, "instance-key": snapId, "revision": 10,
              "tracking-channel": "stable", "epoch": {"read": [0], "write": [0]}}])
        self.assertEqual(answer["results"][0]["snap"]["revision"], 11)
        for _ in range(50):
            code, inventory = await self.admin(b"GET", "/v1/inventory")
            if inventory.get("snaps"):
                break
            await deferLater(reactor, 0.1)
        out = await self.followNow("hello=stable", "--now")
        self.assertIn("fetched: hello latest/stable amd64 r11 (delta from r10)\n", out.text)
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello", 10, 11)), 1)

    @deferred
    async def test_noDeltaOffered(self):
        """
        A store that offers no deltas: the round still fetches the new
        revision's blob and does not fail.
        """
        await self.startStore()
        self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 65536)
        await self.startNode()
        out = await self.followNow("hello=stable", "--now")
        self.store.addRevision("hello", 11, 100_000)
        out = await self.followNow("--now")
        self.assertIn("1 fetched, 0 already cached, 0 failed", out.text)
        self.assertEqual(len(self.store.cdnDownloads("hello", 11)), 1)
        self.assertEqual(len(self.store.cdnDeltaDownloads("hello")), 0)
        self.assertEqual(len([r for r in self.store.requestsTo("POST", "/v2/snaps/refresh")
                              if r.hasHeader("snap-accept-delta-format")]), 1)

    @deferred
    async def test_deltaPrefetchUnderPrefetchRate(self):
        """
        With C{--prefetch-rate 64K}, a round whose blob is already cached
        (a device fetched it) still takes the delta at the cap: at least
        half the time the delta's size at that rate, where uncapped it
        takes milliseconds.
        """
        rate = 64 << 10
        await self.startStore(deltas=True)
        snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 65536)
        await self.startNode("--prefetch-rate", "64K")
        out = await self.followNow("hello=stable", "--now")
        self.store.addRevision("hello", 11, 3_000_000)
        download = await self.refreshFrom(snapId, 10)
        response, body = await self.fetch(download["url"])
        self.assertEqual((response.code, len(body)), (200, 3_000_000))
        size = self.store.delta("hello", 10, 11).size
        started = time.monotonic()
        out = await self.followNow("--now")
        seconds = time.monotonic() - started
        self.assertIn("fetched: hello latest/stable amd64 r11 (delta from r10)", out.text)
        self.assertIn("already cached", out.text)
        self.assertGreater(seconds, 0.5 * size / rate)


class FollowerReportTests(TestCase):
    """
    The follower's own refresh calls are not devices reporting.
    """

    def test_followerContextNotReported(self):
        """
        A refresh whose context names an installed revision reports its
        channel for fleet follows, unless the follower sent it.
        """
        answers = RelayedAnswers(Clock(), 3600.0)
        request = {"context": [{"snap-id": "S" * 32, "instance-key": "S" * 32, "revision": 1,
                                "tracking-channel": "latest/stable"}],
                   "actions": [{"action": "refresh", "instance-key": "S" * 32}]}
        answer = {"results": [{"result": "refresh", "instance-key": "S" * 32,
                               "snap-id": "S" * 32, "name": "hello",
                               "snap": {"revision": 2, "name": "hello", "snap-id": "S" * 32}}]}
        answers.learnRefresh(request, Headers({b"user-agent": [FOLLOWER_AGENT]}), answer)
        self.assertEqual(answers.reported(), [])
        answers.learnRefresh(request, Headers({b"user-agent": [b"snapd/2.66"]}), answer)
        self.assertEqual(answers.reported(), [("hello", "latest/stable", "amd64")])


class CountingAnswers(RelayedAnswers):
    """
    The real memory, counting the refresh answers it is given to learn.
    """

    learnt = 0

    def learnRefresh(self, request, headers, answer):
        self.learnt += 1
        return super().learnRefresh(request, headers, answer)


class RelearnTests(TestCase):
    """
    L{StaleAgent} does not parse and learn again an answer identical to one
    it learnt within L{RELEARN_AFTER} seconds.
    """

    @deferred
    async def test_identicalAnswerLearntOnce(self):
        """
        Over a real socket: the same refresh answered the same is learnt
        once, still handed on decoded; a different answer, or the same
        one after L{RELEARN_AFTER}, is learnt.
        """
        origin = RecordingOrigin()
        port = await listen(self, originSite(origin))
        base = f"http://127.0.0.1:{port}/"
        clock = Clock()
        answers = CountingAnswers(clock, 3600.0)
        agent = StaleAgent(testAgent(self), base, answers, clock, 5.0, UplinkHealth(clock))
        body = json.dumps({"context": [], "actions": []}).encode()

        async def refresh(answer):
            origin.answer = (200, [(b"Content-Type", b"application/json")], answer)
            response = await agent.request(b"POST", base.encode() + b"v2/snaps/refresh",
                                           Headers({b"snap-device-architecture": [b"amd64"]}),
                                           BytesProducer(body))
            self.assertEqual(response.decoded, answer)
            return answers.learnt

        first = json.dumps({"results": []}).encode()
        self.assertEqual(await refresh(first), 1)
        self.assertEqual(await refresh(first), 1)
        self.assertEqual(await refresh(json.dumps({"results": [], "x": 1}).encode()), 2)
        clock.advance(RELEARN_AFTER)
        self.assertEqual(await refresh(first), 3)
        self.assertEqual(len(origin.requests), 4)


class UplinkStatusLineTests(TestCase):
    """
    The uplink line of C{snapstore status} claims only what was seen.
    """

    def test_nothingRelayedYet(self):
        """
        Before any upstream answer the line says so instead of claiming
        upstream answers; after one it names when.
        """
        clock = Clock()
        clock.advance(1_800_000_000)
        health = UplinkHealth(clock)
        self.assertEqual(statusLines({"uplink": health.status(True)})[0],
                         "Uplink: no upstream answer relayed yet")
        health.answered()
        self.assertEqual(statusLines({"uplink": health.status(True)})[0],
                         "Uplink: upstream answers (last answer 2027-01-15 08:00:00Z)")
        health.failed("refused")
        self.assertIn("failing since", statusLines({"uplink": health.status(True)})[0])
