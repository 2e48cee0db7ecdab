# -*- test-case-name: tests.test_tap -*-
"""
Assembling the store endpoint: state, upstream client, relay, downloads.

L{makeStoreParts} is called by the composition root (C{snapstore.tap}); it
returns the web site to listen with and the services whose lifetime the
site depends on (the state store, the upstream connection pool).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.web.resource import IResource
from twisted.web.server import Site

from snapstore.admin.access import observeSite
from snapstore.admin.clientconfig import ClientConfig, LocalV1
from snapstore.admin.metrics import Metrics
from snapstore.config import Settings
from snapstore.httpguard import GuardedSite
from snapstore.outbound import makeAgent, makePool
from snapstore.store.relay import MAX_REQUEST_BODY, RelayResource
from snapstore.store.resource import RemoteResource, StoreRoot
from snapstore.store.rewrite import RemoteURLs
from snapstore.store.upstream import StoreUpstream


class PoolService(Service):
    """
    Closes the upstream connection pool when the service stops, so twistd
    exits without waiting on idle keep-alive connections.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.pool.closeCachedConnections()


@attrs.define
class StoreParts:
    """
    What the store endpoint consists of.

    @ivar site: the L{Site} to listen with.
    @ivar root: its root resource (the forward proxy serves it locally too).
    @ivar services: services to start before listening.
    @ivar rules: the L{snapstore.rules.service.RulesService} or C{None}.
    @ivar metrics: the L{snapstore.admin.metrics.Metrics} the parts count in.
    @ivar cache: the blob cache, for the admin API (stats, prune, verify).
    @ivar uplink: the L{snapstore.uplink.wiring.Uplink} (stale answers,
        follows, rate caps) once installed, else C{None}.
    """

    site: Site
    root: StoreRoot
    state: Any
    upstream: StoreUpstream
    services: list[IService]
    rules: Any = None
    metrics: Any = None
    cache: Any = None
    uplink: Any = None
    cluster: Any = None


def makeStoreParts(reactor: Any, settings: Settings, state: Any,
                   makeRules: Optional[Callable[[StoreUpstream], Any]] = None) -> StoreParts:
    """
    Build the store endpoint for C{settings} around an L{IStateStore}.

    @param makeRules: given the upstream client, returns the
        L{snapstore.rules.service.RulesService} to ask (it is added to the
        services); C{None} applies no rules.
    """
    pool = makePool(reactor)
    agent = makeAgent(reactor, settings, pool)
    upstream = StoreUpstream(agent, settings.upstream, reactor, settings.upstreamTimeout)
    remoteURLs = RemoteURLs()
    rules = makeRules(upstream) if makeRules is not None else None
    metrics = Metrics()
    relay = RelayResource(upstream, remoteURLs, state.recordBlob, reactor, settings.publicUrl,
                          rules=rules, metrics=metrics)
    services: list[IService] = [PoolService(pool)]
    if rules is not None:
        services.append(rules)
        rules.ruleSet.verdictObserver = metrics.ruleVerdict
    # --- download path and blob cache (snapstore/cache, store/download.py) ---
    download = _downloadResource(reactor, settings, state, upstream, services)
    storeDownload = download
    cache = getattr(download, "cache", None)
    if hasattr(download, "metrics"):
        download.metrics = metrics
    assertions = _assertionsResource(reactor, upstream, relay)
    # --- end of download path ---
    if rules is not None:
        from snapstore.rules.gate import DownloadGate

        # Admission rules (snap deny lists, device limit) before any blob.
        download = DownloadGate(download, rules, state.getBlob)
        if hasattr(state, "appendDeliveries"):
            from snapstore.fleet.deliveries import DeliveryLog, DeliveryService

            # The delivery record (snapstore.fleet.deliveries), in batches.
            download.deliveries = DeliveryLog(state, reactor)
            services.append(DeliveryService(download.deliveries))
    root = StoreRoot(relay, download, RemoteResource(upstream, remoteURLs),
                     local={b"v1": LocalV1(ClientConfig.fromSettings(settings))},
                     assertions=assertions)
    if rules is not None and getattr(root, "assertions", None) is not None:
        # How long each assertion type is kept comes from the cache rule.
        root.assertions.policy = rules.assertionPolicy
        # Assertions are admitted like any other call (a device over the
        # limit gets none).
        root.assertions.admit = lambda request: rules.describe(request).addCallback(rules.admit)
    # Several nodes, one cache: peers before the uplink (snapstore.cluster).
    from snapstore.cluster.service import joinCluster

    cluster = joinCluster(reactor, settings, storeDownload, root)
    if cluster is not None:
        services.append(cluster)
    # Bounded bodies and request deadlines (see snapstore.httpguard).
    site = GuardedSite(root, maxBodySize=MAX_REQUEST_BODY, reactor=reactor,
                       clientLimit=_clientLimit(reactor, settings))
    site.displayTracebacks = False
    observeSite(site, metrics, reactor)
    return StoreParts(site, root, state, upstream, services, rules, metrics, cache, cluster=cluster)


def _clientLimit(reactor: Any, settings: Settings) -> Any:
    """
    The bound on each client address's connections
    (C{--store-max-per-client}; 0 turns it off).
    """
    from snapstore.clientlimit import ClientLimit

    maximum = getattr(settings, "storeMaxPerClient", 0)
    return ClientLimit(maximum, reactor) if maximum else None


def _downloadResource(reactor: Any, settings: Settings, state: Any,
                      upstream: StoreUpstream, services: list[IService]) -> IResource:
    """
    The resource answering C{/api/v1/snaps/download/<name>}, around the blob
    cache in C{settings.cacheDir} bounded by C{settings.cacheSize}.
    """
    from snapstore.cache.blobs import BlobCache
    from snapstore.cache.sender import SendfileThreads
    from snapstore.store.download import DownloadResource

    cache = BlobCache(reactor, settings.cacheDir, settings.cacheSize)
    return DownloadResource(reactor, upstream, state, cache, offline=settings.offline,
                            sendfileThreads=SendfileThreads(reactor))


def _assertionsResource(reactor: Any, upstream: StoreUpstream, relay: IResource) -> IResource:
    """
    The resource answering C{GET /v2/assertions/...} from a memory cache;
    other methods go to the relay.
    """
    from snapstore.cache.documents import DocumentCache
    from snapstore.store.assertions import AssertionsResource

    return AssertionsResource(reactor, upstream, DocumentCache(reactor), relay)
