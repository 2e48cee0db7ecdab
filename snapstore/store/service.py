# -*- test-case-name: tests.test_store,tests.test_tap -*-
"""
Assembling the store endpoint from parts the composition root made.

L{makeStoreParts} is called by C{snapstore.tap} with the upstream client
(around the agent tap chose: the network, or an offline node's local
store), the rules, the metrics and the proxy's own local resources; it
builds the relay, the blob cache and download path, the assertion cache
and the two guarded, observed sites: the store endpoint's, and the one the
forward proxy hands requests for this store to (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import IResource

from snapstore.cache.blobs import BlobCache
from snapstore.cache.documents import DocumentCache
from snapstore.cache.sender import SendfileThreads
from snapstore.config import Settings
from snapstore.http.absolute import AbsoluteFormRequest
from snapstore.http.clientlimit import ClientLimit
from snapstore.http.guard import GuardedSite
from snapstore.interfaces import IBlobCache, IServiceReactor, IStateStore
from snapstore.observe.access import AccessObserver, ObservedRequest
from snapstore.observe.metrics import Metrics
from snapstore.store.assertions import AssertionsResource
from snapstore.store.download import DownloadResource
from snapstore.store.gate import DownloadGate
from snapstore.store.relay import MAX_REQUEST_BODY, RelayResource
from snapstore.store.resource import RemoteResource, StoreRoot
from snapstore.store.rewrite import RemoteURLs
from snapstore.store.upstream import StoreUpstream


class PoolService(Service):
    """
    Closes the upstream connection pool when the service stops, so twistd
    exits without waiting on idle keep-alive connections.
    """

    def __init__(self, pool: HTTPConnectionPool) -> None:
        self.pool = pool

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.pool.closeCachedConnections()


class ProxiedStoreRequest(AbsoluteFormRequest, ObservedRequest):
    """
    A store request that came through the forward proxy: absolute form
    accepted, and counted and logged like any other store request.
    """


@attrs.frozen
class StoreParts:
    """
    What the store endpoint consists of.

    @ivar site: the L{GuardedSite} to listen with.
    @ivar proxySite: the same root behind the same limits and observation,
        for requests the forward proxy receives for this store.
    @ivar root: the site's root resource.
    @ivar state: the L{IStateStore}.
    @ivar upstream: the upstream client.
    @ivar services: services to start before listening.
    @ivar metrics: the L{Metrics} the parts count in.
    @ivar cache: the blob cache, for the admin API (stats, prune, verify).
    @ivar rules: the L{snapstore.rules.service.RulesService} or C{None}.
    @ivar download: the download resource (under the rules' gate in
        C{root} when there are rules): the uplink's follower and the
        cluster fill through it.
    @ivar assertions: the assertion resource, whose memory cache the
        uplink's follower fills.
    """

    site: GuardedSite
    proxySite: GuardedSite
    root: StoreRoot
    state: IStateStore
    upstream: StoreUpstream
    services: tuple[IService, ...]
    metrics: Metrics
    cache: IBlobCache
    download: DownloadResource
    assertions: AssertionsResource
    rules: Any = None


def makeStoreParts(reactor: IServiceReactor, settings: Settings, state: IStateStore,
                   upstream: StoreUpstream, metrics: Metrics,
                   local: Mapping[bytes, IResource], rules: Any = None,
                   services: tuple[IService, ...] = (), throttle: Any = None,
                   deliveries: Any = None) -> StoreParts:
    """
    Build the store endpoint for C{settings} around an L{IStateStore}.

    @param upstream: the upstream client (its agent is the network's, or
        an offline node's local store).
    @param local: the proxy's own resources under the store root
        (C{{b"v1": LocalV1(...)}}).
    @param rules: the L{snapstore.rules.service.RulesService} asked by the
        relay, the download gate and the assertion cache, or C{None}.
    @param services: services the parts depend on (the connection pool,
        the rules); kept in L{StoreParts.services}.
    @param deliveries: the L{snapstore.fleet.deliveries.DeliveryLog} the
        download gate tells of every download it lets through, or C{None}.
    @param throttle: the uplink's C{--upstream-rate}
        (L{snapstore.uplink.rate.Throttle}) on blob fills, or C{None}.
    """
    remoteURLs = RemoteURLs()
    relay = RelayResource(upstream, remoteURLs, state.recordBlob, reactor, settings.publicUrl,
                          rules=rules, metrics=metrics)
    cache = BlobCache(reactor, settings.cacheDir, settings.cacheSize)
    storeDownload = DownloadResource(
        reactor, upstream, state, cache, offline=settings.offline, metrics=metrics,
        sendfileThreads=SendfileThreads(reactor), throttle=throttle)
    download: IResource = storeDownload
    if rules is not None:
        # Admission rules (snap deny lists, device limit) before any blob.
        download = DownloadGate(download, rules, state.getBlob, deliveries)
    # GET /v2/assertions/... from a memory cache; how long each assertion
    # type is kept comes from the cache rule.
    # Assertions are admitted like any other call (a device over the limit
    # gets none).
    assertions = AssertionsResource(
        reactor, upstream, DocumentCache(reactor), relay,
        policy=rules.assertionPolicy if rules is not None else None,
        admit=(lambda request: rules.describe(request).addCallback(rules.admit))
        if rules is not None else None)
    root = StoreRoot(relay, download, RemoteResource(upstream, remoteURLs),
                     local=dict(local), assertions=assertions)
    return StoreParts(
        site=_site(root, reactor, AccessObserver(metrics, reactor),
                   clientLimit=_clientLimit(reactor, settings)),
        proxySite=_site(root, reactor, AccessObserver(metrics, reactor, ProxiedStoreRequest)),
        root=root, state=state, upstream=upstream, services=tuple(services),
        metrics=metrics, cache=cache, download=storeDownload, assertions=assertions,
        rules=rules)


def _clientLimit(reactor: IReactorTime, settings: Settings) -> Optional[ClientLimit]:
    """
    The bound on each client address's connections to the store endpoint
    (C{--store-max-per-client}; 0 turns it off).  The forward proxy has its
    own (C{--proxy-max-per-client}).
    """
    maximum = settings.storeMaxPerClient
    return ClientLimit(maximum, reactor) if maximum else None


def _site(root: IResource, reactor: IReactorTime, observer: AccessObserver,
          clientLimit: Optional[ClientLimit] = None) -> GuardedSite:
    """
    A site with bounded bodies and request deadlines (see
    L{snapstore.http.guard}) whose requests C{observer} counts and logs.
    """
    return GuardedSite(root, maxBodySize=MAX_REQUEST_BODY, reactor=reactor, observer=observer,
                       clientLimit=clientLimit)


__all__ = ["StoreParts", "PoolService", "makeStoreParts"]
