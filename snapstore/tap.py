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
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from snapstore import __version__
from snapstore.config import DEFAULT_CONFIG, OPTIONS, ConfigError, Settings, buildSettings
from snapstore.listeners import checkEndpoint, listen


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
            if getattr(self, "parent", None) is None:
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
            self.settings = buildSettings(given, configFile)
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

    def _checkRules(self, configFile: Any) -> Any:
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


def makeService(options: Options) -> MultiService:
    """
    Build the service tree for C{twistd snapstore}.
    """
    from twisted.internet import reactor

    settings: Settings = options.settings
    top = MultiService()
    _warnLoopbackPublicURL(settings)
    parts = _addStoreService(top, reactor, settings, getattr(options, "rulesDir", None))
    _addForwardService(top, reactor, settings, parts.root)
    _addAdminService(top, reactor, settings, parts)
    from snapstore.admin.logs import withLogFormat

    return withLogFormat(top, settings.logFormat, (getattr(options, "parent", None) or {}).get("logfile"))


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


def _addAdminService(top: MultiService, reactor: Any, settings: Settings, parts: Any) -> None:
    """
    The admin API and C{/metrics} (C{--admin-endpoint}), over the store
    parts' state, upstream, cache and metrics.
    """
    from snapstore.admin.rulesaudit import RulesAuditService
    from snapstore.admin.service import makeAdminSite

    if getattr(parts, "rules", None) is not None:
        RulesAuditService(parts.rules, parts.state).setServiceParent(top)
    if not settings.adminEndpoint:
        return
    metrics = getattr(parts, "metrics", None)
    if metrics is not None and settings.proxyEndpoint and not settings.offline:
        # The forward proxy counts its tunnels; the gauge reads the count.
        proxy = top.getServiceNamed("proxy-endpoint")
        metrics.watchTunnels(lambda: getattr(proxy.factory, "tunnels", 0))
    try:
        site = makeAdminSite(reactor, settings, parts)
    except ValueError as error:
        raise usage.UsageError(str(error))
    listen(reactor, "admin-endpoint", settings.adminEndpoint, site).setServiceParent(top)


def _addForwardService(top: MultiService, reactor: Any, settings: Settings,
                       localResource: Any) -> None:
    """
    The forward proxy (C{--proxy-endpoint}), serving requests for the
    store API itself from C{localResource}.
    """
    from snapstore.forward.factory import ForwardProxyFactory

    if not settings.proxyEndpoint:
        return
    if settings.offline:
        from twisted.logger import Logger

        Logger().info("offline: the forward proxy ({endpoint}) is not started",
                      endpoint=settings.proxyEndpoint)
        return
    try:
        factory = ForwardProxyFactory(reactor, settings, localResource=localResource)
    except ValueError as error:
        raise usage.UsageError(str(error))
    listen(reactor, "proxy-endpoint", settings.proxyEndpoint, factory).setServiceParent(top)


def _rulesFactory(reactor: Any, settings: Settings, state: Any, rulesDir: Any) -> Any:
    """
    What makes the L{RulesService} once the upstream client exists, or
    C{None} to run without rules.
    """
    from snapstore.rules.engine import RuleEnv
    from snapstore.rules.loader import RuleLoadError
    from snapstore.rules.service import RulesService

    if rulesDir is None:
        return None

    def makeRules(upstream: Any) -> Any:
        env = RuleEnv(state=state, clock=reactor, settings=settings, upstream=upstream)
        try:
            return RulesService(rulesDir, env)
        except RuleLoadError as error:
            raise usage.UsageError(f"rules: {error}")

    return makeRules


def _addStoreService(top: MultiService, reactor: Any, settings: Settings,
                     rulesDir: Any = None) -> Any:
    from snapstore.state import makeStateStore
    from snapstore.state.service import StateService
    from snapstore.store.service import makeStoreParts

    from snapstore.state.resilient import ResilientState

    database = makeStateStore(reactor, settings.state, settings.dataDir)
    StateService(database).setServiceParent(top)
    # The data path keeps serving while the database is away; admin
    # changes still fail loudly (see snapstore.state.resilient).
    state = ResilientState(database, reactor)
    parts = makeStoreParts(reactor, settings, state,
                           _rulesFactory(reactor, settings, state, rulesDir))
    if settings.offline:
        # Answer the store API from imported content (snapstore.offline).
        from snapstore.offline.store import goOffline

        goOffline(settings, parts)
    else:
        # Stale answers, follows and prefetch, rate caps (snapstore.uplink).
        from snapstore.uplink.wiring import installUplink

        installUplink(reactor, settings, parts)
    for service in parts.services:
        service.setServiceParent(top)
    if settings.storeEndpoint:
        listen(reactor, "store-endpoint", settings.storeEndpoint, parts.site).setServiceParent(top)
    return parts
