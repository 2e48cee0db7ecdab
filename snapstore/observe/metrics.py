# -*- test-case-name: tests.test_admin_metrics -*-
"""
The service's Prometheus metrics, served at C{/metrics} on the admin
endpoint.

One L{Metrics} object is built by the composition root and handed to each
part that counts something (the store site, the relay, the download path,
the forward proxy, the rules engine).  It owns its own L{CollectorRegistry}
rather than using the process-global one, so that tests can build several
services in one process without their counters colliding.

Parts take it as an optional constructor argument (C{metrics=None}) and
count with one line, for example::

    if self.metrics is not None:
        self.metrics.cacheHit(bytesServed)

The methods, not the metric objects, are the interface: names and labels
can then change in one place.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

try:
    # generate_latest writes the 0.0.4 text format; say so, since newer
    # prometheus_client releases call a later version "latest".
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:  # older prometheus_client
    from prometheus_client.exposition import CONTENT_TYPE_LATEST as CONTENT_TYPE

#: Upstream answers in seconds: snapd gives up at 10 s, so finer steps below.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Reactor lag in seconds (snapstore.observe.lag): a few ms is scheduling
#: noise, tens of ms is a stall every waiting request pays.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Store paths, grouped so that label values stay few (snap names, revisions
# and ids never become labels: that would grow the registry without bound).
_ENDPOINTS = (
    ("refresh", re.compile(rb"^/v2/snaps/refresh")),
    ("info", re.compile(rb"^/v2/snaps/info/")),
    ("find", re.compile(rb"^/(v2/snaps/find|api/v1/snaps/search)")),
    ("download", re.compile(rb"^/api/v1/snaps/download/")),
    ("assertions", re.compile(rb"^/(v2/assertions/|api/v1/snaps/assertions/)")),
    ("device-auth", re.compile(rb"^/api/v1/snaps/auth/")),
    ("media", re.compile(rb"^/snapstore/remote/")),
    ("client-config", re.compile(rb"^/v1/client-config")),
    ("catalog", re.compile(rb"^/(v2/snaps/categories|api/v1/snaps/(sections|names))")),
)


def endpointOf(path: bytes | str) -> str:
    """
    The endpoint label for a store request path.

    @param path: the request path (without query).
    @return: a short name such as C{refresh} or C{download}, C{other} for
        store calls not listed, C{unknown} for paths outside the store API.
    """
    if isinstance(path, str):
        path = path.encode("utf-8", "replace")
    for name, pattern in _ENDPOINTS:
        if pattern.match(path):
            return name
    if path.startswith((b"/v2/", b"/api/v1/")):
        return "other"
    return "unknown"


def _verdictName(verdict: Any) -> str:
    """
    C{allow}, C{deny} or C{abstain} for a verdict object (any of the
    L{snapstore.rules.verdicts} classes) or a string.
    """
    if isinstance(verdict, str):
        return verdict.lower()
    return type(verdict).__name__.lower()


class Metrics:
    """
    Every metric snapstore exports, in one registry.

    @ivar registry: the L{CollectorRegistry} rendered at C{/metrics}.
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "snapstore_requests", "Store endpoint requests, by endpoint and HTTP status.",
            ["endpoint", "status"], registry=r)
        self.upstreamLatency = Histogram(
            "snapstore_upstream_latency_seconds",
            "Time until the upstream store answered (response head), by endpoint.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstreamErrors = Counter(
            "snapstore_upstream_errors", "Upstream calls that failed, by error code.",
            ["code"], registry=r)
        self.cacheHits = Counter(
            "snapstore_cache_hits", "Downloads served from the blob cache.", registry=r)
        self.cacheMisses = Counter(
            "snapstore_cache_misses", "Downloads that had to be fetched upstream.", registry=r)
        self.assertionHits = Counter(
            "snapstore_assertion_cache_hits", "Assertion requests answered from the cache.",
            registry=r)
        self.assertionMisses = Counter(
            "snapstore_assertion_cache_misses", "Assertion requests relayed upstream.",
            registry=r)
        self.cacheServedBytes = Counter(
            "snapstore_cache_served_bytes",
            "Blob bytes sent to clients from the cache (bandwidth saved).", registry=r)
        self.upstreamFetchedBytes = Counter(
            "snapstore_upstream_fetched_bytes",
            "Blob bytes fetched from the upstream store or its CDN.", registry=r)
        self.activeTunnels = Gauge(
            "snapstore_forward_tunnels_active", "Open forward-proxy CONNECT tunnels.",
            registry=r)
        self.connectedDevices = Gauge(
            "snapstore_connected_devices", "Devices seen in the last 24 hours.", registry=r)
        self.deviceLimit = Gauge(
            "snapstore_device_limit", "The device limit (-1 when there is none).", registry=r)
        self.ruleVerdicts = Counter(
            "snapstore_rule_verdicts", "Verdicts given by rules, by rule name and verdict.",
            ["rule", "verdict"], registry=r)
        self.cacheSizeBytes = Gauge(
            "snapstore_cache_size_bytes", "Bytes held in the blob cache.", registry=r)
        self.cacheBoundBytes = Gauge(
            "snapstore_cache_bound_bytes", "The bound the blob cache is kept under.",
            registry=r)
        self.reactorLag = Histogram(
            "snapstore_reactor_lag_seconds",
            "How much later than scheduled the reactor ran the lag probe's ticks.",
            buckets=LAG_BUCKETS, registry=r)
        self.reactorLagMax = Gauge(
            "snapstore_reactor_lag_max_seconds",
            "The longest reactor lag of the last 10 to 20 seconds.", registry=r)
        self.reactorBlocked = Counter(
            "snapstore_reactor_blocked",
            "Lag probe ticks later than the warning threshold (--reactor-lag-warning).",
            registry=r)
        self.deviceLimit.set(-1)
        self._hits = 0
        self._misses = 0
        self._servedBytes = 0
        self._fetchedBytes = 0

    # -- what the parts call ---------------------------------------------

    def requestFinished(self, path: bytes | str, status: int) -> None:
        """
        Count one finished (or abandoned: status 499) store request.
        """
        self.requests.labels(endpointOf(path), str(status)).inc()

    def upstreamAnswered(self, path: bytes | str, seconds: float) -> None:
        """
        Record how long upstream took to answer a call relayed for C{path}.
        """
        self.upstreamLatency.labels(endpointOf(path)).observe(max(seconds, 0.0))

    def upstreamFailed(self, code: str) -> None:
        """
        Count an upstream call that gave no usable answer (the
        L{snapstore.store.upstream.UpstreamError} code).
        """
        self.upstreamErrors.labels(code).inc()

    def cacheHit(self, bytesServed: int = 0) -> None:
        """
        A download was answered from the cache with C{bytesServed} bytes.
        """
        self._hits += 1
        self.cacheHits.inc()
        self.servedFromCache(bytesServed)

    def cacheMiss(self) -> None:
        """
        A download was not in the cache.
        """
        self._misses += 1
        self.cacheMisses.inc()

    def assertionCached(self, hit: bool) -> None:
        """
        An assertion request was answered from the cache (C{hit}) or not;
        kept apart from blob downloads and their hit ratio.
        """
        (self.assertionHits if hit else self.assertionMisses).inc()

    def servedFromCache(self, count: int) -> None:
        """
        Add bytes sent from the cache (for fills counted piece by piece).
        """
        self._servedBytes += max(count, 0)
        self.cacheServedBytes.inc(max(count, 0))

    def fetchedUpstream(self, count: int) -> None:
        """
        Add blob bytes received from upstream.
        """
        self._fetchedBytes += max(count, 0)
        self.upstreamFetchedBytes.inc(max(count, 0))

    def tunnelOpened(self) -> None:
        """
        A forward-proxy tunnel opened.
        """
        self.activeTunnels.inc()

    def tunnelClosed(self) -> None:
        """
        A forward-proxy tunnel closed.
        """
        self.activeTunnels.dec()

    def watchTunnels(self, count: Any) -> None:
        """
        Read the active-tunnel gauge from C{count()} at each scrape, for a
        forward proxy that keeps its own count (instead of calling
        L{tunnelOpened} and L{tunnelClosed}).
        """
        self.activeTunnels.set_function(count)

    def watchReactorLag(self, probe: Any) -> Callable[[float], None]:
        """
        Read the lag gauge from C{probe.recentMax()} at each scrape.

        @return: what the probe calls with each tick's lag (its sink).
        """
        self.reactorLagMax.set_function(probe.recentMax)
        histogram, blocked, threshold = self.reactorLag, self.reactorBlocked, probe.warnAfter

        def observe(seconds: float) -> None:
            histogram.observe(seconds)
            if seconds > threshold:
                blocked.inc()

        return observe

    def ruleVerdict(self, ruleName: str, verdict: Any) -> None:
        """
        Count a verdict (an C{Allow}/C{Deny}/C{Abstain} object or a name)
        given by the rule called C{ruleName}.
        """
        self.ruleVerdicts.labels(ruleName, _verdictName(verdict)).inc()

    def devicesConnected(self, count: int, limit: Optional[int] = None) -> None:
        """
        Publish the connected-device count and the limit (C{None}: none).
        """
        self.connectedDevices.set(count)
        self.deviceLimit.set(-1 if limit is None else limit)

    def cacheSize(self, size: int, bound: Optional[int] = None) -> None:
        """
        Publish the bytes held in the cache and its bound.
        """
        self.cacheSizeBytes.set(size)
        if bound is not None:
            self.cacheBoundBytes.set(bound)

    # -- reading ----------------------------------------------------------

    def hitRatio(self) -> Optional[float]:
        """
        @return: blob download hits / (hits + misses) since start, or
            C{None} before the first download (assertions do not count).
        """
        if self._hits + self._misses == 0:
            return None
        return self._hits / (self._hits + self._misses)

    def byteTotals(self) -> tuple[int, int]:
        """
        @return: blob bytes served from the cache and fetched from
            upstream since start (what L{snapstore.observe.traffic}
            samples into the traffic history).
        """
        return self._servedBytes, self._fetchedBytes

    def render(self) -> tuple[bytes, bytes]:
        """
        @return: the Prometheus text exposition and its content type.
        """
        return generate_latest(self.registry), CONTENT_TYPE.encode("ascii")
