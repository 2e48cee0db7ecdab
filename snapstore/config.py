# -*- test-case-name: tests.test_config -*-
"""
Settings of the service, from command-line options and the config file.

Every option of C{twistd snapstore} is declared once in L{OPTIONS}; the
twistd C{Options} class, the config file reader and the documentation are
generated from that table, so the three cannot drift apart.  The result is
one frozen L{Settings} object that the composition root hands to each part.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from typing import Any, Callable, Optional

import attrs
from hyperlink import DecodedURL

DEFAULT_CONFIG = "/etc/snapstore/snapstore.conf"
CONFIG_SECTION = "snapstore"


class ConfigError(Exception):
    """
    A setting is invalid.  The message names the option or config key, so an
    admin knows which line to fix.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parseSize(text: str) -> int:
    """
    Parse a byte count such as C{500M}, C{20G} or C{1048576} (binary units,
    an optional trailing C{B} or C{iB}).
    """
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 500M or 20G)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


def parseNetworks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """
    Parse a comma-separated list of CIDRs or addresses.
    """
    networks = []
    for item in _splitList(text):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {item!r}")
    return tuple(networks)


def parsePorts(text: str) -> tuple[int, ...]:
    """
    Parse a comma-separated list of TCP ports and C{FIRST-LAST} ranges.
    """
    ports: list[int] = []
    for item in _splitList(text):
        first, _, last = item.partition("-")
        bounds = [first, last or first]
        if not all(b.isdigit() and 0 < int(b) < 65536 for b in bounds) \
                or int(bounds[0]) > int(bounds[1]):
            raise ValueError(f"not a TCP port or range: {item!r}")
        ports.extend(range(int(bounds[0]), int(bounds[1]) + 1))
    return tuple(ports)


def parseURL(text: str) -> str:
    """
    Check that C{text} is an absolute http(s) URL and return it with a
    trailing slash on its path, so that relative joins keep its prefix.
    """
    url = DecodedURL.from_text(text.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"not an http(s) URL: {text!r}")
    if url.query or url.fragment:
        raise ValueError(f"URL must have no query or fragment: {text!r}")
    # Keep credentials (a parent proxy's user:password@): to_text drops them.
    asText = url.to_text(with_password=True)
    return asText if asText.endswith("/") else asText + "/"


def _optionalURL(text: str) -> Optional[str]:
    return None if text.strip().lower() in ("", "none") else parseURL(text)


def _optionalText(text: str) -> Optional[str]:
    return None if text.strip().lower() in ("", "none") else text.strip()


def _splitList(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use yes or no)")


@attrs.frozen
class Option:
    """
    One setting: its option name (also its config-file key), default text,
    help, and the function turning text into a value.
    """

    name: str
    default: Optional[str]
    help: str
    parse: Callable[[str], Any] = str
    flag: bool = False

    @property
    def attribute(self) -> str:
        head, *rest = self.name.split("-")
        return head + "".join(part.capitalize() for part in rest)


def _nonNegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be a whole number >= 0, not {text!r}")
    return value


def _nonNegativeFloat(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"must be a number >= 0, not {text!r}")
    return value


PRIVATE_AND_LOOPBACK = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"

OPTIONS: tuple[Option, ...] = (
    Option("store-endpoint", "tcp:8000",
           "Where snapd talks the store API (endpoint string; ssl: for HTTPS).",
           _optionalText),
    Option("proxy-endpoint", "tcp:3128",
           "Forward (CONNECT) proxy listener; 'none' disables it.", _optionalText),
    Option("admin-endpoint", "tcp:8001:interface=127.0.0.1",
           "Admin API and /metrics listener; 'none' disables it.", _optionalText),
    Option("store-max-per-client", "256",
           "Most store-endpoint connections one client address may hold (more get 503); "
           "raise it behind a load balancer or a large NAT, 0 for no bound.",
           lambda text: _count(text)),
    Option("upstream", "https://api.snapcraft.io/", "The store to relay to.", parseURL),
    Option("upstream-proxy", None,
           "Parent HTTP proxy for all outbound traffic (CONNECT for https).",
           _optionalURL),
    Option("upstream-ca", None, "CA bundle (PEM) for upstream TLS; default system trust.",
           _optionalText),
    Option("upstream-timeout", "8",
           "Seconds to wait for upstream to answer an API call (snapd gives up after 10, so less).",
           float),
    Option("public-url", None,
           "Base URL devices use to reach the store endpoint; default from the request's "
           "Host, else this host's name (refused when it is a loopback address).",
           _optionalURL),
    Option("data-dir", "./snapstore-data",
           "Holds state.sqlite and cache/ unless they are set apart.", str),
    Option("state", None,
           "sqlite:PATH or postgresql://user@host/db; default sqlite:<data-dir>/state.sqlite.",
           lambda text: _stateSpec(text)),
    Option("cache-dir", None, "Blob cache directory; default <data-dir>/cache.", _optionalText),
    Option("cache-size", "20G", "Bound of the blob cache (e.g. 500M, 20G).", parseSize),
    Option("rules-dir", None,
           "Rule files; default /etc/snapstore/rules.d when it exists, else ./rules.d when "
           "it exists, else the rules shipped with snapstore.",
           _optionalText),
    Option("offline", "no", "Never contact upstream; serve imported and cached content.",
           _boolean, flag=True),
    Option("trusted-keys", None,
           "File of account-key assertions trusted as root keys for bundle imports, "
           "besides Canonical's built-in root (brand stores, tests).", _optionalText),
    Option("import-max-size", "64G",
           "Largest bundle POST /v1/import accepts (e.g. 500M, 64G); a larger one gets 413 "
           "before any of it is stored.", parseSize),
    Option("proxy-clients", PRIVATE_AND_LOOPBACK,
           "CIDRs allowed to use the forward proxy.", parseNetworks),
    Option("proxy-connect-ports", "443", "Ports CONNECT may reach.", parsePorts),
    Option("proxy-relay-ports", "80,443",
           "Ports absolute-URI (plain http://) requests may be relayed to (ranges: 8000-8099).",
           parsePorts),
    Option("proxy-allow-internal", "",
           "Hosts or CIDRs in loopback/private/link-local space the forward proxy may reach anyway.",
           lambda text: tuple(_splitList(text))),
    Option("admin-token-file", None,
           "Bearer token file; required when the admin endpoint is not on loopback.",
           _optionalText),
    Option("admin-hosts", "",
           "More names the admin API answers to in Host (besides loopback names, its own "
           "address, this machine's name and --public-url's host).",
           lambda text: tuple(_splitList(text))),
    Option("log-format", "text", "Log output format: text or json.",
           lambda text: _choice(text, ("text", "json"))),
    Option("reactor-lag-warning", "50",
           "Milliseconds the reactor thread may be late for a scheduled call before a "
           "warning is logged with the stack it was busy in (a watchdog thread samples "
           "it); the probe ticks every 5 ms (1-2% of a CPU while idle); 0: no lag probe, no "
           "watchdog, no reactor lag metrics.",
           lambda text: _nonNegativeFloat(text) / 1000),
    # --- forward proxy (snapstore/forward) ---
    Option("proxy-auth-file", None,
           "Password file for Proxy-Authorization: Basic (user:hash lines; "
           "made with 'python -m snapstore.forward.auth NAME' run by snapstore's interpreter); "
           "default no authentication.",
           _optionalText),
    Option("proxy-max-tunnels", "1024",
           "Most CONNECT tunnels open at once; more get 503.", int),
    Option("proxy-max-per-client", "256",
           "Most forward-proxy connections from one client address.", int),
    Option("proxy-idle-timeout", "900",
           "Seconds a tunnel or keep-alive connection may stay silent.", float),
    Option("proxy-header-timeout", "30",
           "Seconds a client has to send a complete request head (slowloris guard).",
           float),
    Option("proxy-connect-timeout", "10",
           "Seconds to wait for a forward-proxy destination to accept (then 504).",
           float),
    Option("proxy-max-header-size", "32K",
           "Largest request head (request line and headers) accepted; more gets 431.",
           parseSize),
    Option("proxy-max-request-line", "8K",
           "Longest request line accepted; more gets 414.", parseSize),
    Option("proxy-access-log", None,
           "File the forward proxy appends one line per request or tunnel to; "
           "default: log events only.", _optionalText),
    Option("proxy-hosts", "",
           "Static NAME=ADDRESS pairs (comma-separated) the forward proxy uses "
           "instead of DNS for those names.", lambda text: _hostMap(text)),
    Option("device-session-rate", "600",
           "Device-session requests one address may make per minute (at most that many "
           "at once); more get 429. 0: no bound.", _nonNegative),
    # --- the uplink (snapstore/uplink) ---
    Option("serve-stale", "yes",
           "When upstream fails (refused, unreachable, timeout, 5xx), answer refresh, info, "
           "find and assertions from what was relayed before, with X-Cache: STALE.",
           _boolean),
    Option("stale-max-age", "7d",
           "How old a relayed answer may be and still be served stale (e.g. 12h, 7d).",
           lambda text: parseDuration(text)),
    Option("follow-interval", "1h",
           "How often followed channels are checked and new revisions prefetched "
           "(jittered by 10%).", lambda text: _positiveDuration(text)),
    Option("prefetch-window", "",
           "Local time window HH:MM-HH:MM in which prefetch runs (e.g. 01:00-05:00); "
           "empty: any time.", lambda text: _window(text)),
    Option("upstream-rate", None,
           "Cap on all upstream blob traffic together (fills and prefetch), bytes per "
           "second with K, M or G (powers of 1024), e.g. 20M; default unlimited.",
           lambda text: _optionalRate(text)),
    Option("prefetch-rate", None,
           "Cap on prefetch blob traffic alone, bytes per second (e.g. 5M); default "
           "unlimited.", lambda text: _optionalRate(text)),
    # --- several nodes, one cache (snapstore/cluster) ---
    Option("node-url", None,
           "URL the other nodes reach this node's store endpoint at (PostgreSQL state "
           "only); default --public-url.", _optionalURL),
    Option("cluster-token-file", None,
           "File holding the secret nodes send each other for cached blobs; without it "
           "this node neither serves nor asks peers.", _optionalText),
)

_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parseDuration(text: str) -> float:
    """
    Parse a duration such as C{90}, C{30s}, C{15m}, C{1h}, C{7d} or C{2w}
    to seconds.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 1h or 7d)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]


def _positiveDuration(text: str) -> float:
    value = parseDuration(text)
    if value <= 0:
        raise ValueError(f"must be longer than 0, not {text!r}")
    return value


def _optionalRate(text: str) -> Optional[int]:
    if text.strip().lower() in ("", "none", "0"):
        return None
    try:
        return parseSize(text)
    except ValueError:
        raise ValueError(f"not a rate: {text!r} (bytes per second, e.g. 500K or 20M)")


_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parseWindow(text: str) -> Optional[tuple[int, int]]:
    """
    C{HH:MM-HH:MM} to minutes after local midnight C{(start, end)}; an end
    before the start wraps past midnight.  Empty: C{None} (any time).
    """
    if not text.strip():
        return None
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"not a window: {text!r} (use HH:MM-HH:MM, e.g. 01:00-05:00)")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"not a window: {text!r} (hours 00-24, minutes 00-59)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"empty window: {text!r}")
    return start, end


def _window(text: str) -> str:
    parseWindow(text)
    return text.strip()


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"not a whole number >= 0: {text!r}")
    return int(text)


def _hostMap(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _splitList(text):
        name, sep, address = item.partition("=")
        try:
            ipaddress.ip_address(address.strip())
        except ValueError:
            raise ValueError(f"not NAME=ADDRESS: {item!r}")
        if not sep or not name.strip():
            raise ValueError(f"not NAME=ADDRESS: {item!r}")
        pairs.append((name.strip().lower().rstrip("."), address.strip()))
    return tuple(pairs)


def _stateSpec(text: str) -> Optional[str]:
    spec = _optionalText(text)
    if spec is not None and not spec.startswith(("sqlite:", "postgresql://", "postgres://")):
        raise ValueError(f"must be sqlite:PATH or postgresql://user@host/db, not {spec!r}")
    return spec


def _choice(text: str, choices: tuple[str, ...]) -> str:
    if text.strip() not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, not {text!r}")
    return text.strip()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen(kw_only=True)
class Settings:
    """
    The service's settings after defaults, config file and command line
    were merged and parsed.  One attribute per L{OPTIONS} entry, in
    camelCase (C{store-endpoint} is C{storeEndpoint}); a test keeps the
    two lists equal.  Settings that default from others (C{state},
    C{cache-dir}, C{rules-dir}) are always filled in.
    """

    storeEndpoint: Optional[str]
    proxyEndpoint: Optional[str]
    adminEndpoint: Optional[str]
    storeMaxPerClient: int
    upstream: str
    upstreamProxy: Optional[str]
    upstreamCa: Optional[str]
    upstreamTimeout: float
    publicUrl: Optional[str]
    dataDir: str
    state: str
    cacheDir: str
    cacheSize: int
    rulesDir: str
    offline: bool
    trustedKeys: Optional[str]
    importMaxSize: int
    proxyClients: tuple[Network, ...]
    proxyConnectPorts: tuple[int, ...]
    proxyRelayPorts: tuple[int, ...]
    proxyAllowInternal: tuple[str, ...]
    adminTokenFile: Optional[str]
    adminHosts: tuple[str, ...]
    logFormat: str
    #: Seconds (the option is in milliseconds); 0: no probe.
    reactorLagWarning: float
    proxyAuthFile: Optional[str]
    proxyMaxTunnels: int
    proxyMaxPerClient: int
    proxyIdleTimeout: float
    proxyHeaderTimeout: float
    proxyConnectTimeout: float
    proxyMaxHeaderSize: int
    proxyMaxRequestLine: int
    proxyAccessLog: Optional[str]
    proxyHosts: tuple[tuple[str, str], ...]
    deviceSessionRate: int
    serveStale: bool
    staleMaxAge: float
    followInterval: float
    prefetchWindow: str
    upstreamRate: Optional[int]
    prefetchRate: Optional[int]
    nodeUrl: Optional[str]
    clusterTokenFile: Optional[str]
    #: The config file the settings were read from, if any.
    configFile: Optional[str] = None


def readConfigFile(path: str) -> dict[str, str]:
    """
    Read an INI config file's C{[snapstore]} section, rejecting unknown keys
    so that a typo is an error instead of a silently ignored line.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as configFile:
            parser.read_file(configFile)
    except OSError as error:
        raise ConfigError(path, f"cannot read config file: {error.strerror}")
    except configparser.Error as error:
        raise ConfigError(path, f"not a valid config file: {error}")
    known = {option.name for option in OPTIONS}
    for section in parser.sections():
        if section != CONFIG_SECTION:
            raise ConfigError(f"{path} [{section}]",
                              f"unknown section (only [{CONFIG_SECTION}] is read)")
    values = dict(parser.items(CONFIG_SECTION)) if parser.has_section(CONFIG_SECTION) else {}
    for key in values:
        if key not in known:
            raise ConfigError(f"{path} [{CONFIG_SECTION}] {key}", "unknown setting")
    return values


def buildSettings(given: dict[str, Any], configFile: Optional[str] = None) -> Settings:
    """
    Merge defaults, the config file and options given on the command line
    (in rising priority) into L{Settings}.

    @param given: option name to text, for options given on the command
        line (C{None} values are ignored).
    """
    fromFile = readConfigFile(configFile) if configFile else {}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if given.get(option.name) is not None:
            text, source = given[option.name], f"--{option.name}"
        elif option.name in fromFile:
            text, source = fromFile[option.name], f"{configFile}: {option.name}"
        else:
            text, source = option.default, f"--{option.name}"
        if text is None:
            values[option.attribute] = None
            continue
        if isinstance(text, bool):
            text = "yes" if text else "no"
        try:
            values[option.attribute] = option.parse(text)
        except ValueError as error:
            raise ConfigError(source, str(error))
    _deriveDefaults(values)
    return Settings(configFile=configFile, **values)


def _deriveDefaults(values: dict[str, Any]) -> None:
    """
    Fill the defaults that depend on other settings.
    """
    dataDir = values["dataDir"]
    values["state"] = values["state"] or "sqlite:" + os.path.abspath(
        os.path.join(dataDir, "state.sqlite"))
    values["cacheDir"] = os.path.abspath(values["cacheDir"] or os.path.join(dataDir, "cache"))
    if values["rulesDir"] is None:
        from snapstore.rules.shipped import defaultRulesDirectory

        values["rulesDir"] = defaultRulesDirectory()
