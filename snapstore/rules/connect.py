# -*- test-case-name: tests.test_forward_rules -*-
"""
The built-in forward-proxy admission rules and their evaluation.

Each rule answers one question (may this client use the proxy, may it
reach this port, is this destination internal, did it authenticate) and
abstains otherwise, so the chain reads like a checklist and an admin's
rule from C{rules.d} can be slotted in between.  The chain built by
L{builtinConnectRules} ends in L{AllowRemaining}: a request that no check
refused is allowed.  L{evaluateConnect} applies docs/architecture.md "Rules in brief": the
first non-abstaining verdict wins, a rule that raises refuses (fail
closed), and a chain in which every rule abstains refuses too.
"""

from __future__ import annotations

import ipaddress
from base64 import b64decode
from typing import Any, Callable, Iterable, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from snapstore.interfaces import IConnectRule
from snapstore.rules.verdicts import Abstain, Allow, ConnectTarget, Deny, Verdict

log = Logger(namespace="snapstore.rules.connect")

_Network = Any


def _address(text: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: Special-purpose space that the C{ipaddress} properties do not call
#: private but that is no public destination: carrier-grade NAT (RFC
#: 6598), IETF protocol assignments (RFC 6890) and the retired 6to4 relay
#: anycast (RFC 7526).
_ALSO_INTERNAL = tuple(ipaddress.ip_network(net) for net in (
    "100.64.0.0/10", "192.0.0.0/24", "192.88.99.0/24"))

#: IPv6 prefixes that embed an IPv4 address in their last 32 bits (the
#: well-known NAT64 prefix, RFC 6052): judged by the embedded address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded(address: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    """
    The IPv4 address an IPv6 address carries (6to4, Teredo client, NAT64),
    which is where a packet to it may end up.
    """
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def isInternal(text: str) -> bool:
    """
    Whether an address is one a proxy on the open network must not be
    talked into reaching: loopback, link-local, private, unspecified,
    multicast, reserved or shared (CGNAT) space.  IPv6 forms that carry an
    IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by that address.
    Unparseable text counts as internal, failing closed.
    """
    address = _address(text)
    if address is None:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded(address)
        if inner is not None and isInternal(str(inner)):
            return True
    return (address.is_loopback or address.is_link_local or address.is_private
            or address.is_unspecified or address.is_multicast or address.is_reserved
            or any(address in network for network in _ALSO_INTERNAL
                   if network.version == address.version)
            or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local))


@implementer(IConnectRule)
class ClientNetworkRule:
    """
    Refuse clients outside the configured networks (C{--proxy-clients}),
    so that the proxy is not an open relay for the internet.
    """

    name = "client-networks"

    def __init__(self, networks: Iterable[_Network]) -> None:
        self.networks = tuple(networks)

    def checkConnect(self, target: ConnectTarget) -> Verdict:
        address = _address(target.clientAddress)
        if address is not None and any(address.version == network.version
                                       and address in network
                                       for network in self.networks):
            return Abstain()
        return Deny(403, f"client {target.clientAddress} may not use this proxy")


@implementer(IConnectRule)
class ConnectPortRule:
    """
    Let CONNECT reach only the configured ports (C{--proxy-connect-ports},
    443 by default): a tunnel to port 25 or 22 is how proxies get abused.
    Absolute-URI (plain HTTP) relays are held to C{--proxy-relay-ports}
    (80 and 443 by default) for the same reason: a request line is enough
    to talk to many text protocols.
    """

    name = "connect-ports"

    def __init__(self, ports: Iterable[int], relayPorts: Optional[Iterable[int]] = None) -> None:
        self.ports = frozenset(ports)
        self.relayPorts = None if relayPorts is None else frozenset(relayPorts)

    def checkConnect(self, target: ConnectTarget) -> Verdict:
        if target.method == b"CONNECT":
            if target.port not in self.ports:
                return Deny(403, f"CONNECT to port {target.port} is not allowed")
        elif self.relayPorts is not None and target.port not in self.relayPorts:
            return Deny(403, f"relaying to port {target.port} is not allowed")
        return Abstain()


@implementer(IConnectRule)
class InternalDestinationRule:
    """
    Refuse destinations whose I{resolved} addresses are internal (see
    L{isInternal}) or belong to this machine, unless named in
    C{--proxy-allow-internal} by host name or network.

    Checking resolved addresses, not names, is what stops a client from
    reaching C{127.0.0.1} through a DNS name that points there; the proxy
    then dials exactly the addresses checked here, so a second, different
    DNS answer cannot slip in between (no DNS rebinding).
    """

    name = "internal-destinations"

    def __init__(self, allowInternal: Iterable[str] = (),
                 selfAddresses: Callable[[], Iterable[str]] = lambda: ()) -> None:
        self.allowedHosts = set()
        self.allowedNetworks = []
        for item in allowInternal:
            try:
                self.allowedNetworks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.allowedHosts.add(item.lower().rstrip("."))
        self.selfAddresses = selfAddresses

    def _allowed(self, text: str) -> bool:
        address = _address(text)
        return address is not None and any(
            address.version == network.version and address in network
            for network in self.allowedNetworks)

    def checkConnect(self, target: ConnectTarget) -> Verdict:
        if target.host in self.allowedHosts:
            return Abstain()
        own = {str(_address(a)) for a in self.selfAddresses()}
        checked = target.addresses or ((target.host,) if _address(target.host) else ())
        for text in checked:
            if (isInternal(text) or str(_address(text)) in own) and not self._allowed(text):
                return Deny(403, f"destination {target.host} ({text}) is internal")
        return Abstain()


@implementer(IConnectRule)
class ProxyAuthRule:
    """
    Require C{Proxy-Authorization: Basic} credentials that the injected
    password check accepts; anything else gets C{407} with a
    C{Proxy-Authenticate} challenge, as clients expect before they send
    credentials.

    @ivar check: C{check(user, password) -> bool}, for example
        L{snapstore.forward.auth.PasswordFile.check}.
    """

    name = "proxy-auth"

    def __init__(self, check: Callable[[str, str], bool], realm: str = "snapstore") -> None:
        self.check = check
        self.challenge = ((b"Proxy-Authenticate", b'Basic realm="%s"' % realm.encode("ascii")),)

    def _refuse(self, why: str) -> Deny:
        return Deny(407, why, self.challenge)

    def checkConnect(self, target: ConnectTarget) -> Verdict:
        value = target.header(b"proxy-authorization")
        if value is None:
            return self._refuse("proxy authentication required")
        scheme, _, encoded = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return self._refuse("only Basic proxy authentication is supported")
        try:
            user, sep, password = b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return self._refuse("malformed proxy credentials")
        if not sep or not self.check(user, password):
            return self._refuse("wrong proxy user name or password")
        return Abstain()


@implementer(IConnectRule)
class AllowRemaining:
    """
    The last built-in rule: whatever no earlier rule refused is allowed.
    """

    name = "allow-remaining"

    def checkConnect(self, target: ConnectTarget) -> Verdict:
        return Allow()


def builtinConnectRules(settings: Any, passwordCheck: Optional[Callable[[str, str], bool]] = None,
                        selfAddresses: Callable[[], Iterable[str]] = lambda: ()) -> list[Any]:
    """
    The built-in chain for C{settings}: client networks, authentication
    (when a password check is given), CONNECT ports, internal destinations,
    then allow.  Every rule is checked against L{IConnectRule}.
    """
    rules: list[Any] = [ClientNetworkRule(settings.proxyClients)]
    if passwordCheck is not None:
        rules.append(ProxyAuthRule(passwordCheck))
    rules.append(ConnectPortRule(settings.proxyConnectPorts, settings.proxyRelayPorts))
    rules.append(InternalDestinationRule(settings.proxyAllowInternal, selfAddresses))
    rules.append(AllowRemaining())
    for rule in rules:
        verifyObject(IConnectRule, rule)
    return rules


def evaluateConnect(rules: Sequence[Any], target: ConnectTarget) -> Deferred[tuple[Verdict, str]]:
    """
    Ask C{rules} in order about C{target}.

    @return: a Deferred firing with C{(verdict, ruleName)}: the first
        L{Allow} or L{Deny}; a L{Deny} naming the rule when one raises or
        returns something that is not a verdict; a L{Deny} when all
        abstain.  It never errbacks.
    """
    remaining = list(rules)
    result: Deferred[tuple[Verdict, str]] = Deferred()

    def step(_: object = None) -> None:
        while remaining:
            rule = remaining.pop(0)
            name = getattr(rule, "name", repr(rule))
            try:
                answer = rule.checkConnect(target)
            except Exception:
                failed(Failure(), name)
                return
            if isinstance(answer, Deferred):
                answer.addCallbacks(decidedLater, failed, callbackArgs=(name,),
                                    errbackArgs=(name,))
                return
            if decided(answer, name):
                return
        result.callback((Deny(403, "no rule allowed this destination"), "default"))

    def decidedLater(answer: object, name: str) -> None:
        if not decided(answer, name):
            step()

    def decided(answer: object, name: str) -> bool:
        if isinstance(answer, Abstain):
            return False
        if isinstance(answer, (Allow, Deny)):
            result.callback((answer, name))
            return True
        log.error("connect rule {rule} returned {answer!r}, not a verdict: refusing",
                  rule=name, answer=answer)
        result.callback((Deny(403, f"rule {name} failed"), name))
        return True

    def failed(failure: Failure, name: str) -> None:
        log.failure("connect rule {rule} raised: refusing", failure, rule=name)
        result.callback((Deny(403, f"rule {name} failed"), name))

    step()
    return result
