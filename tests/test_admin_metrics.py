# -*- test-case-name: tests.test_admin_metrics -*-
"""
Tests for L{snapstore.observe.metrics} and C{/metrics}: the exposition
parses, and the numbers move as requests flow through a running service.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from snapstore.observe.metrics import Metrics, endpointOf
from snapstore.rules.verdicts import Abstain, Deny
from tests.fakestore import FakeStore
from tests.test_admin import RunningService


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of a Prometheus exposition, keyed by name and sorted
    labels.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class MetricsUnitTests(SynchronousTestCase):
    """
    L{Metrics} on its own.
    """

    def test_guideListsVerdictLabels(self):
        """
        The metrics table of the operator's guide (docs/operating.md) lists
        every C{verdict} label a rule's verdict can produce.
        """
        import os

        from snapstore.rules.values import StoreDeny
        from snapstore.rules.verdicts import Allow
        from tests.processes import CHECKOUT

        metrics = Metrics()
        for verdict in (Allow(), Deny(403, "no"), StoreDeny(404, "no"), Abstain(), "error"):
            metrics.ruleVerdict("r", verdict)
        labels = {sample.labels["verdict"]
                  for family in text_string_to_metric_families(metrics.render()[0].decode())
                  for sample in family.samples if family.name == "snapstore_rule_verdicts"}
        with open(os.path.join(CHECKOUT, "docs", "operating.md")) as guide:
            [row] = [line for line in guide if "snapstore_rule_verdicts_total" in line]
        for label in labels:
            self.assertIn(f"`{label}`", row)

    def test_endpointLabels(self):
        """
        Store paths map to a few endpoint labels; snap names never become
        labels.
        """
        self.assertEqual(endpointOf(b"/v2/snaps/refresh"), "refresh")
        self.assertEqual(endpointOf(b"/v2/snaps/info/hello"), "info")
        self.assertEqual(endpointOf("/api/v1/snaps/download/abc_3.snap"), "download")
        self.assertEqual(endpointOf(b"/v2/assertions/snap-revision/x"), "assertions")
        self.assertEqual(endpointOf(b"/v2/future"), "other")
        self.assertEqual(endpointOf(b"/favicon.ico"), "unknown")

    def test_separateRegistries(self):
        """
        Two services' metrics do not share counters.
        """
        first, second = Metrics(), Metrics()
        first.cacheHit(10)
        self.assertEqual(samples(first.render()[0].decode())[("snapstore_cache_hits_total", ())], 1)
        self.assertEqual(samples(second.render()[0].decode())[("snapstore_cache_hits_total", ())], 0)

    def test_calls(self):
        """
        Each one-line call moves its metric.
        """
        metrics = Metrics()
        metrics.tunnelOpened()
        metrics.tunnelOpened()
        metrics.tunnelClosed()
        metrics.ruleVerdict("device-limit", Deny(403, "full"))
        metrics.ruleVerdict("device-limit", Abstain())
        metrics.fetchedUpstream(4096)
        metrics.cacheMiss()
        metrics.cacheHit(100)
        metrics.devicesConnected(3, None)
        found = samples(metrics.render()[0].decode())
        self.assertEqual(found[("snapstore_forward_tunnels_active", ())], 1)
        self.assertEqual(found[("snapstore_rule_verdicts_total",
                                (("rule", "device-limit"), ("verdict", "deny")))], 1)
        self.assertEqual(found[("snapstore_rule_verdicts_total",
                                (("rule", "device-limit"), ("verdict", "abstain")))], 1)
        self.assertEqual(found[("snapstore_upstream_fetched_bytes_total", ())], 4096)
        self.assertEqual(found[("snapstore_connected_devices", ())], 3)
        self.assertEqual(found[("snapstore_device_limit", ())], -1)
        self.assertEqual(metrics.hitRatio(), 0.5)


class MetricsEndpointTests(TestCase):
    """
    C{/metrics} on the admin endpoint of a running service.
    """

    @inlineCallbacks
    def setUp(self):
        self.service = yield RunningService(self).start()

    @inlineCallbacks
    def scrape(self):
        response, body = yield self.service.get(self.service.adminURL + "/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(
            b"text/plain; version=0.0.4"))
        return samples(body.decode("utf-8"))

    @inlineCallbacks
    def test_requestsAndCache(self):
        """
        Requests are counted by endpoint and status, upstream latency is
        observed for relayed calls, and downloads count as cache misses and
        then hits, with the bytes served from the cache.
        """
        before = yield self.scrape()
        self.assertNotIn(("snapstore_requests_total",
                          (("endpoint", "refresh"), ("status", "200"))), before)
        url = yield self.service.refresh()
        first, content = yield self.service.download(url)
        second, _ = yield self.service.download(url)
        self.assertEqual((first, second), ("MISS", "HIT"))
        yield self.service.get(self.service.storeURL + "/nothing/here")
        after = yield self.scrape()
        self.assertEqual(after[("snapstore_requests_total",
                                (("endpoint", "refresh"), ("status", "200")))], 1)
        self.assertEqual(after[("snapstore_requests_total",
                                (("endpoint", "download"), ("status", "200")))], 2)
        self.assertEqual(after[("snapstore_requests_total",
                                (("endpoint", "unknown"), ("status", "404")))], 1)
        self.assertEqual(after[("snapstore_upstream_latency_seconds_count",
                                (("endpoint", "refresh"),))], 1)
        self.assertEqual(after[("snapstore_cache_misses_total", ())], 1)
        self.assertEqual(after[("snapstore_cache_hits_total", ())], 1)
        self.assertEqual(after[("snapstore_cache_served_bytes_total", ())], len(content))

    @inlineCallbacks
    def test_assertionsApartFromBlobs(self):
        """
        Assertion requests are counted apart from blob downloads: after 1
        blob miss and 2 blob hits, with assertions fetched between them,
        the blob counters say 1 and 2 and C{status} says 67%.
        """
        url = yield self.service.refresh()
        digest = self.service.fake.blob("hello", 3).digestBase64
        assertion = f"{self.service.storeURL}/v2/assertions/snap-revision/{digest}?max-format=0"
        for _ in range(2):
            response, _ = yield self.service.get(assertion)
            self.assertEqual(response.code, 200)
        caches = []
        for _ in range(3):
            cache, _ = yield self.service.download(url)
            caches.append(cache)
        self.assertEqual(caches, ["MISS", "HIT", "HIT"])
        after = yield self.scrape()
        self.assertEqual(after[("snapstore_cache_misses_total", ())], 1)
        self.assertEqual(after[("snapstore_cache_hits_total", ())], 2)
        self.assertEqual(after.get(("snapstore_assertion_cache_hits_total", ()), 0)
                         + after.get(("snapstore_assertion_cache_misses_total", ()), 0), 2)
        code, out, err = yield self.service.cli("status")
        self.assertIn("hit ratio 67% since start", out)

    @inlineCallbacks
    def test_upstreamFailure(self):
        """
        A relayed call upstream cannot answer is counted by error code and
        as a 502 request.
        """
        yield self.service.fake.stop()
        response, _ = yield self.service.get(self.service.storeURL + "/v2/snaps/info/hello")
        self.assertEqual(response.code, 502)
        found = yield self.scrape()
        self.assertEqual(found[("snapstore_upstream_errors_total",
                                (("code", "upstream-unreachable"),))], 1)
        self.assertEqual(found[("snapstore_requests_total",
                                (("endpoint", "info"), ("status", "502")))], 1)

    @inlineCallbacks
    def test_reactorLag(self):
        """
        The service runs the reactor lag probe (snapstore.observe.lag):
        its ticks are in the histogram by the time of a scrape, and the
        blocked counter and the recent maximum are there.
        """
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        yield deferLater(reactor, 0.05, lambda: None)
        found = yield self.scrape()
        self.assertGreater(found[("snapstore_reactor_lag_seconds_count", ())], 0)
        self.assertIn(("snapstore_reactor_blocked_total", ()), found)
        self.assertGreaterEqual(found[("snapstore_reactor_lag_max_seconds", ())], 0)

    @inlineCallbacks
    def test_gaugesFresh(self):
        """
        A scrape brings the device and cache gauges up to date.
        """
        from snapstore.state.records import Device

        yield self.service.state().recordDevice(Device("b/m/s1"))
        found = yield self.scrape()
        self.assertEqual(found[("snapstore_connected_devices", ())], 1)
        self.assertEqual(found[("snapstore_cache_bound_bytes", ())], 20 << 30)


class PartsMetricsTests(TestCase):
    """
    The counts other parts feed: rule verdicts, blob bytes fetched
    upstream, open forward-proxy tunnels.
    """

    @inlineCallbacks
    def test_verdictsAndFetchedBytes(self):
        """
        Each verdict of a loaded rule is counted by rule name, and a cache
        fill counts the bytes it fetched upstream.
        """
        from tests.test_admin import DEVICE_LIMIT

        service = yield RunningService(self).start(rules={"20-device-limit.py": DEVICE_LIMIT})
        self.service = service
        url = yield service.refresh()
        yield service.download(url)
        response, body = yield service.get(service.adminURL + "/metrics")
        found = samples(body.decode())
        self.assertGreaterEqual(found[("snapstore_rule_verdicts_total",
                                       (("rule", "device-limit"), ("verdict", "abstain")))], 2)
        self.assertEqual(found[("snapstore_upstream_fetched_bytes_total", ())], 3000)

    @inlineCallbacks
    def test_tunnels(self):
        """
        The active-tunnel gauge shows a CONNECT tunnel while it is open.
        """
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        from tests.ports import freePort

        fake = yield FakeStore(reactor).startFor(self)
        proxyPort = freePort()
        service = yield RunningService(self).start(
            "--proxy-endpoint", f"tcp:{proxyPort}:interface=127.0.0.1",
            "--proxy-connect-ports", str(fake.apiPort),
            "--proxy-allow-internal", "127.0.0.1", fake=fake)

        class Client(Protocol):
            def __init__(self):
                self.answered = Deferred()
                self.received = b""

            def dataReceived(self, data):
                self.received += data
                if b"\r\n\r\n" in self.received and not self.answered.called:
                    self.answered.callback(self.received)

        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", proxyPort),
                                       Client())
        client.transport.write(
            f"CONNECT 127.0.0.1:{fake.apiPort} HTTP/1.1\r\nHost: 127.0.0.1:{fake.apiPort}\r\n\r\n"
            .encode())
        head = yield client.answered
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        response, body = yield service.get(service.adminURL + "/metrics")
        self.assertEqual(samples(body.decode())[("snapstore_forward_tunnels_active", ())], 1)
        client.transport.loseConnection()
