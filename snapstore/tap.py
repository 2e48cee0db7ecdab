# -*- test-case-name: tests.test_tap -*-
"""
C{twistd snapstore}: the command-line options and the composition root.

This module wires the parts together and holds no protocol logic.  Nothing
imports it except the twistd plugin; each part gets the reactor and the
L{Settings} it needs through its constructor.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, cast

import attrs
from twisted.application.service import IService, MultiService
from twisted.python import usage

from snapstore.interfaces import IServiceReactor
from snapstore import __version__
from snapstore.config import DEFAULT_CONFIG, OPTIONS, ConfigError, Settings, buildSettings
from snapstore.http.listeners import checkEndpoint, listen


def _optionTables() -> tuple[list[list[Any]], list[list[Any]]]:
    parameters = []
    flags = []
    for option in OPTIONS:
        if option.flag:
            flags.append([option.name, None, option.help])
        else:
            default = f" [default: {option.default}]" if option.default else ""
            parameters.append([option.name, None, None, option.help + default])
    return parameters, flags


class Options(usage.Options):
    """
    Options of C{twistd snapstore}.  Every option can also be set in the
    config file (C{[snapstore]} section, same names without the dashes'
    prefix); the command line wins over the file.
    """

    synopsis = "[options]"
    #: twistd's own options when run as its subcommand (C{logfile}).
    parent: Any = None
    #: Set by L{postOptions}: the rules directory to load, or C{None}.
    rulesDir: Optional[str] = None
    longdesc = (
        "Run the snapstore proxy: a store API relay for snapd "
        "(SNAPPY_FORCE_API_URL=http://this-host:8000/), a blob cache, and a "
        "forward proxy for snapd's proxy.http/proxy.https.  Settings come from "
        "the options below, then from the config file, then from defaults."
    )
    optParameters, optFlags = _optionTables()
    optParameters.append(
        ["config", "c", None,
         f"Config file (INI, [snapstore] section) [default: {DEFAULT_CONFIG} when it exists]"]
    )
    optFlags.append(
        ["check-rules", None,
         "Load the rules directory (--rules-dir), report what it holds and exit "
         "without starting the service (status 1 when a file is broken)."]
    )

    def parseOptions(self, options: Any = None) -> None:
        """
        Parse, and under twistd (which sets C{parent} before parsing) report
        a usage error as its reason first: twistd itself prints the whole
        C{--help} and the reason last, where it scrolls out of sight.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            if self.parent is None:
                raise
            sys.stderr.write(f"twistd snapstore: {error}\n"
                             f"(twistd snapstore --help lists the options)\n")
            sys.exit(1)

    def opt_version(self) -> None:
        """
        Print the snapstore version and exit.
        """
        print(f"snapstore {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        configFile = self["config"]
        if configFile is None and os.path.exists(DEFAULT_CONFIG):
            configFile = DEFAULT_CONFIG
        given = {option.name: self[option.name] or None for option in OPTIONS}
        for option in OPTIONS:
            # usage.Options counts flags (1); the settings parser wants text.
            if option.flag and given[option.name] is not None:
                given[option.name] = "yes"
        try:
            self.settings: Settings = buildSettings(given, configFile)
        except ConfigError as error:
            raise usage.UsageError(str(error))
        _checkOperationSettings(self.settings)
        _checkEndpoints(self.settings)
        from snapstore.cluster.service import ClusterTokenError, readToken

        try:
            readToken(self.settings.clusterTokenFile)
        except ClusterTokenError as error:
            raise usage.UsageError(str(error))
        self.rulesDir = self._checkRules(configFile)

    def _checkRules(self, configFile: Optional[str]) -> Optional[str]:
        """
        Load the rules directory once, so that a broken rules file stops
        start-up with its name; with C{--check-rules}, report and exit.

        @return: the directory to load rules from, or C{None} when the
            default directory does not exist (no rules apply).
        """
        from snapstore.config import readConfigFile
        from snapstore.rules.loader import RuleLoadError, checkDirectory, describeRuleSet

        directory = self.settings.rulesDir
        explicit = self["rules-dir"] is not None or (
            configFile is not None and "rules-dir" in readConfigFile(configFile))
        if not explicit and not os.path.isdir(directory) and not self["check-rules"]:
            from twisted.logger import Logger

            Logger().warn("No rules directory ({directory} does not exist and the shipped "
                          "rules are not installed): running WITHOUT rules, so no device "
                          "limit and no pins apply; give --rules-dir", directory=directory)
            return None
        try:
            ruleSet = checkDirectory(directory, settings=self.settings)
        except RuleLoadError as error:
            raise usage.UsageError(f"rules: {error}")
        if self["check-rules"]:
            print(f"{directory}: OK, {describeRuleSet(ruleSet)}")
            sys.exit(0)
        return directory


def makeService(options: Options) -> IService:
    """
    Build the service tree for C{twistd snapstore}.
    """
    from twisted.internet import reactor as installed

    from snapstore.observe.logs import withLogFormat

    # Twisted types the installed reactor by its common interfaces; the
    # reactors twistd installs also run threads and resolve names.
    reactor = cast(IServiceReactor, installed)
    settings = options.settings
    top = MultiService()
    _warnLoopbackPublicURL(settings)
    store = _addStoreService(top, reactor, settings, options.rulesDir)
    _addForwardService(top, reactor, settings, store.parts)
    _addAdminService(top, reactor, settings, store)
    # How late the reactor runs (snapstore/observe/lag.py).
    if settings.reactorLagWarning > 0:
        from snapstore.observe.lag import ReactorLag

        lag = ReactorLag(reactor, warnAfter=settings.reactorLagWarning, watchdog=True)
        lag.sink = store.parts.metrics.watchReactorLag(lag)
        lag.setServiceParent(top)
    # Last, so that it starts once every other part is built: see
    # snapstore/observe/gcpauses.py.
    from snapstore.observe.gcpauses import CollectorPauses

    CollectorPauses().setServiceParent(top)
    twistd = options.parent or {}
    return withLogFormat(top, settings.logFormat, twistd.get("logfile"), twistd, reactor)


def _warnLoopbackPublicURL(settings: Settings) -> None:
    """
    Warn when the store URL devices would be told (C{--public-url}, or
    this host's name) is a loopback address.
    """
    from twisted.logger import Logger

    from snapstore.admin.clientconfig import ClientConfig

    if not settings.storeEndpoint:
        return
    problem = ClientConfig.fromSettings(settings).loopbackProblem(None)
    if problem is not None:
        Logger().warn("{problem}", problem=problem)


def _checkOperationSettings(settings: Settings) -> None:
    """
    Refuse an admin endpoint open to the network without tokens, and TLS
    files that are missing or do not fit, before Twisted trips over them.
    """
    from twisted.logger import Logger

    from snapstore.admin.service import checkOperationSettings

    try:
        warnings = checkOperationSettings(settings)
    except ValueError as error:
        raise usage.UsageError(str(error))
    for warning in warnings:
        Logger().warn("{warning}", warning=warning)


def _checkEndpoints(settings: Settings) -> None:
    """
    Refuse an endpoint string Twisted cannot listen with (C{tcp:notaport})
    as a usage error naming its option, instead of a traceback later.
    """
    from twisted.internet import reactor

    for option, description in (("store-endpoint", settings.storeEndpoint),
                                ("proxy-endpoint", settings.proxyEndpoint),
                                ("admin-endpoint", settings.adminEndpoint)):
        if description:
            try:
                checkEndpoint(reactor, option, description)
            except ValueError as error:
                raise usage.UsageError(str(error))


#: C{(upstream, verdictObserver) -> RulesService}: what makes the rules
#: once the upstream client exists.
MakeRules = Callable[[Any, Callable[[str, Any], None]], Any]

#: Where an offline node's answers come from, for errors that name it.
OFFLINE_ORIGIN = "this offline node's imported content (import a bundle that has it)"


@attrs.frozen
class Store:
    """
    The store endpoint and what runs beside it.

    @ivar parts: the L{snapstore.store.service.StoreParts}.
    @ivar services: every service the store needs, in start order (the
        parts' own, the uplink's, the cluster node).
    @ivar uplink: the L{snapstore.uplink.wiring.Uplink} (stale answers,
        follows, rate caps), or C{None} offline.
    @ivar cluster: the L{snapstore.cluster.service.ClusterNode}, or
        C{None} when this node keeps its cache to itself.
    """

    parts: Any
    services: tuple[IService, ...]
    uplink: Any = None
    cluster: Any = None


def assembleStore(reactor: IServiceReactor, settings: Settings, state: Any,
                  makeRules: Optional[MakeRules] = None) -> Store:
    """
    Build every part of the store endpoint: the connection pool and the
    outbound agent (the network's behind the uplink's stale answers, or for
    C{--offline} the imported content's, refusing everything else), the
    upstream client, the metrics, the rules, the proxy's own local
    resources, the uplink's follower and the cluster node; the store room
    assembles its resources and sites from them.

    @param state: the L{snapstore.interfaces.IStateStore}.
    """
    from snapstore.admin.clientconfig import ClientConfig
    from snapstore.cluster.service import joinCluster
    from snapstore.observe.metrics import Metrics
    from snapstore.outbound import makeAgent, makeConnections, makePool
    from snapstore.store.local import LocalV1
    from snapstore.store.service import PoolService, makeStoreParts
    from snapstore.store.upstream import StoreUpstream
    from snapstore.uplink.wiring import UplinkParts

    pool = makePool(reactor)
    # The direct agent's own idle connections (snapstore.http.client).
    connections = makeConnections(reactor)
    metrics = Metrics()
    services: list[IService] = [PoolService(pool), connections]
    uplinkParts = None
    if settings.offline:
        # Answer the store API from imported content (snapstore.offline);
        # anything else is refused: nothing leaves the machine.
        from snapstore.offline.agent import RefusingAgent
        from snapstore.offline.store import LocalStoreAgent

        upstream = StoreUpstream(LocalStoreAgent(state, settings.upstream, RefusingAgent()),
                                 settings.upstream, reactor, settings.upstreamTimeout,
                                 origin=OFFLINE_ORIGIN)
    else:
        # Stale answers, follows and prefetch, rate caps (snapstore.uplink).
        uplinkParts = UplinkParts.fromSettings(reactor, settings, metrics)
        services.extend(uplinkParts.services)
        upstream = StoreUpstream(uplinkParts.agentFor(makeAgent(reactor, settings, pool, connections)),
                                 settings.upstream, reactor, settings.upstreamTimeout)
    rules = makeRules(upstream, metrics.ruleVerdict) if makeRules is not None else None
    deliveries = None
    if rules is not None:
        services.append(rules)
        if hasattr(state, "appendDeliveries"):  # not the tests' memory states
            from snapstore.fleet.deliveries import DeliveryLog, DeliveryService

            # The delivery record (snapstore.fleet.deliveries), in batches.
            deliveries = DeliveryLog(state, reactor)
            services.append(DeliveryService(deliveries))
    local = {b"v1": LocalV1(ClientConfig.fromSettings(settings))}
    parts = makeStoreParts(reactor, settings, state, upstream, metrics, local,
                           rules=rules, services=tuple(services), deliveries=deliveries,
                           throttle=uplinkParts.throttle if uplinkParts is not None else None)
    extra: list[IService] = []
    uplink = None
    if uplinkParts is not None:
        uplink = uplinkParts.finish(reactor, settings, upstream, parts.download, state,
                                    parts.assertions)
        if uplink.follower is not None:
            extra.append(uplink.follower)
    # Several nodes, one cache (snapstore.cluster).
    cluster = joinCluster(reactor, settings, parts.download, parts.root)
    if cluster is not None:
        extra.append(cluster)
    return Store(parts, parts.services + tuple(extra), uplink, cluster)


def _addStoreService(top: MultiService, reactor: IServiceReactor, settings: Settings,
                     rulesDir: Optional[str]) -> Store:
    """
    The state store and the store endpoint (C{--store-endpoint}).
    """
    from snapstore.state import makeStateStore
    from snapstore.state.resilient import ResilientState
    from snapstore.state.service import StateService

    database = makeStateStore(reactor, settings.state, settings.dataDir)
    StateService(database).setServiceParent(top)
    # The data path keeps serving while the database is away; admin
    # changes still fail loudly (see snapstore.state.resilient).
    state = ResilientState(database, reactor)
    store = assembleStore(reactor, settings, state,
                          _rulesFactory(reactor, settings, state, rulesDir))
    for service in store.services:
        service.setServiceParent(top)
    if settings.storeEndpoint:
        listen(reactor, "store-endpoint", settings.storeEndpoint,
               store.parts.site).setServiceParent(top)
    return store


def _rulesFactory(reactor: IServiceReactor, settings: Settings, state: Any,
                  rulesDir: Optional[str]) -> Optional[MakeRules]:
    """
    What makes the L{RulesService} once the upstream client exists, or
    C{None} to run without rules.
    """
    from snapstore.rules.engine import RuleEnv
    from snapstore.rules.loader import RuleLoadError
    from snapstore.rules.service import RulesService

    if rulesDir is None:
        return None
    directory = rulesDir

    def makeRules(upstream: Any, verdictObserver: Callable[[str, Any], None]) -> Any:
        env = RuleEnv(state=state, clock=reactor, settings=settings, upstream=upstream)
        try:
            return RulesService(directory, env, verdictObserver=verdictObserver)
        except RuleLoadError as error:
            raise usage.UsageError(f"rules: {error}")

    return makeRules


def _addForwardService(top: MultiService, reactor: IServiceReactor, settings: Settings,
                       parts: Any) -> Any:
    """
    The forward proxy (C{--proxy-endpoint}), serving requests for the
    store API itself through the store parts' C{proxySite}.

    @return: the L{snapstore.forward.factory.ForwardProxyFactory}, or
        C{None} when there is no forward proxy.
    """
    from twisted.logger import Logger

    from snapstore.forward.factory import ForwardProxyFactory

    if not settings.proxyEndpoint:
        return None
    if settings.offline:
        Logger().info("offline: the forward proxy ({endpoint}) is not started",
                      endpoint=settings.proxyEndpoint)
        return None
    try:
        factory = ForwardProxyFactory(reactor, settings, localSite=parts.proxySite)
    except ValueError as error:
        raise usage.UsageError(str(error))
    # The active-tunnel gauge reads the proxy's own count at each scrape.
    parts.metrics.watchTunnels(lambda: factory.tunnels)
    # The access-log file is closed once the connections are gone (their
    # last lines are written as they close).
    reactor.addSystemEventTrigger("after", "shutdown", factory.accessLog.close)
    listen(reactor, "proxy-endpoint", settings.proxyEndpoint, factory).setServiceParent(top)
    return factory


def _addAdminService(top: MultiService, reactor: IServiceReactor, settings: Settings,
                     store: Store) -> None:
    """
    The admin API and C{/metrics} (C{--admin-endpoint}): each area's
    routes over the store parts' state, upstream, cache, rules and metrics,
    the uplink and the cluster, registered on one router.
    """
    from snapstore.admin.audit import AuditRoutes
    from snapstore.admin.cache import CacheRoutes
    from snapstore.admin.clientconfig import ClientConfig
    from snapstore.admin.devices import DeviceRoutes
    from snapstore.admin.fleet import FleetRoutes
    from snapstore.admin.imports import ImportRoutes
    from snapstore.admin.nodes import NodeRoutes
    from snapstore.admin.overrides import OverrideRoutes
    from snapstore.admin.policy import PolicyRoutes
    from snapstore.admin.router import Router
    from snapstore.admin.rulesaudit import RulesAuditService
    from snapstore.admin.service import makeAdminSite
    from snapstore.admin.status import StatusRoutes
    from snapstore.admin.traffic import TrafficRoutes
    from snapstore.admin.uplink import UplinkRoutes
    from snapstore.observe.traffic import TrafficSampler
    from snapstore.offline.importer import Importer, importRoots, stagingDirectory

    parts = store.parts
    if parts.rules is not None:
        RulesAuditService(parts.rules, parts.state).setServiceParent(top)
    if not settings.adminEndpoint:
        return
    # The dashboard's chart: the byte counters sampled into the state store.
    sampler = TrafficSampler(reactor, parts.metrics, parts.state)
    sampler.setServiceParent(top)
    router = Router()
    devices = DeviceRoutes(reactor, parts.state, parts.metrics, parts.rules)
    cache = CacheRoutes(parts.state, parts.cache, parts.metrics)
    status = StatusRoutes(reactor, settings, parts.state, parts.upstream, parts.metrics,
                          ClientConfig.fromSettings(settings), devices, cache, parts.rules)
    # Bundle import and the list of imported snaps (snapstore.offline); an
    # offline node keeps what it imports, a connected one may evict it.
    importer = Importer(reactor, parts.state, parts.cache, stagingDirectory(settings),
                        evict=not settings.offline, roots=importRoots(settings))
    overrides = OverrideRoutes(parts.state, parts.upstream)
    fleet = FleetRoutes(reactor, parts.state, parts.upstream, parts.rules, devices)
    areas: list[Any] = [status, overrides, devices, cache, AuditRoutes(parts.state),
                        TrafficRoutes(reactor, sampler, parts.state),
                        ImportRoutes(importer, parts.state, parts.cache),
                        # Devices, inventory, groups, what-would-refresh and
                        # deliveries (snapstore.fleet); after devices, whose
                        # GET /v1/devices it takes over.
                        fleet,
                        # Pins with scope and expiry, holds, approvals
                        # (snapstore.policy); after overrides and fleet, it
                        # takes over the /v1/overrides routes.
                        PolicyRoutes(reactor, parts.state, overrides, fleet.view)]
    # The cluster's nodes (snapstore.cluster), in the status too.
    nodes = NodeRoutes(store.cluster)
    status.addSection("nodes", nodes.section)
    areas.append(nodes)
    if store.uplink is not None:
        # Follows and the uplink's state (snapstore.uplink).
        uplink = UplinkRoutes(store.uplink, parts.state)
        status.addSection("uplink", uplink.section)
        areas.append(uplink)
    for area in areas:
        area.register(router)
    try:
        site = makeAdminSite(reactor, settings, router, status.scrape)
    except ValueError as error:
        raise usage.UsageError(str(error))
    listen(reactor, "admin-endpoint", settings.adminEndpoint, site).setServiceParent(top)
