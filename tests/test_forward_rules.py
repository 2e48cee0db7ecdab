"""
Tests for L{snapstore.rules.connect}, L{snapstore.rules.verdicts} and
L{snapstore.forward.auth}.
"""

from __future__ import annotations

import ipaddress
import os
from base64 import b64encode

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from snapstore.forward.auth import PasswordFile, hashPassword, main, verifyPassword
from snapstore.interfaces import IConnectRule
from snapstore.rules.connect import (
    AllowRemaining, ClientNetworkRule, ConnectPortRule, InternalDestinationRule, ProxyAuthRule,
    builtinConnectRules, evaluateConnect, isInternal,
)
from snapstore.rules.verdicts import Abstain, Allow, ConnectTarget, Deny
from tests.helpers import testSettings


def target(**given) -> ConnectTarget:
    values = dict(host="example.com", port=443, addresses=("93.184.216.34",),
                  clientAddress="192.168.1.5")
    values.update(given)
    return ConnectTarget(**values)


class VerdictTests(SynchronousTestCase):
    def test_frozenValues(self) -> None:
        self.assertEqual(Deny(403, "no"), Deny(403, "no"))
        self.assertEqual(Allow(), Allow())
        with self.assertRaises(Exception):
            Deny(403, "no").code = 200

    def test_header(self) -> None:
        t = target(headers=((b"user-agent", b"snapd"),))
        self.assertEqual(t.header(b"User-Agent"), b"snapd")
        self.assertIsNone(t.header(b"x"))


class BuiltinRuleTests(SynchronousTestCase):
    def test_allProvideIConnectRule(self) -> None:
        rules = builtinConnectRules(testSettings(self), lambda u, p: True)
        self.assertEqual([rule.name for rule in rules],
                         ["client-networks", "proxy-auth", "connect-ports",
                          "internal-destinations", "allow-remaining"])
        for rule in rules:
            self.assertTrue(verifyObject(IConnectRule, rule))

    def test_clientNetworks(self) -> None:
        rule = ClientNetworkRule([ipaddress.ip_network("192.168.0.0/16")])
        self.assertEqual(rule.checkConnect(target()), Abstain())
        self.assertEqual(rule.checkConnect(target(clientAddress="8.8.8.8")).code, 403)
        self.assertEqual(rule.checkConnect(target(clientAddress="::ffff:192.168.1.1")),
                         Abstain())

    def test_ports(self) -> None:
        rule = ConnectPortRule([443])
        self.assertEqual(rule.checkConnect(target()), Abstain())
        self.assertEqual(rule.checkConnect(target(port=22)),
                         Deny(403, "CONNECT to port 22 is not allowed"))
        self.assertEqual(rule.checkConnect(target(port=8080, method=b"GET")), Abstain())

    def test_internal(self) -> None:
        for address in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "fe80::1",
                        "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1", "fc00::1", "garbage"):
            self.assertTrue(isInternal(address), address)
        for address in ("93.184.216.34", "2001:4860:4860::8888"):
            self.assertFalse(isInternal(address), address)

    def test_internalSpecialPurpose(self) -> None:
        """
        Shared (CGNAT), IETF-protocol and 6to4-relay space is internal, and
        so is any IPv6 form that carries an internal IPv4 address (6to4,
        Teredo, NAT64); their public counterparts are not.
        """
        for address in ("100.64.0.1", "100.127.255.254", "192.0.0.9", "192.0.0.170",
                        "192.88.99.1", "2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::",
                        "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
                        "2001:0:4136:e378:8000:63bf:80ff:fffe"):
            self.assertTrue(isInternal(address), address)
        for address in ("100.128.0.1", "2002:5db8:d822::"):
            self.assertFalse(isInternal(address), address)

    def test_relayPorts(self) -> None:
        rule = ConnectPortRule([443], [80, 443])
        self.assertEqual(rule.checkConnect(target(port=80, method=b"GET")), Abstain())
        self.assertEqual(rule.checkConnect(target(port=25, method=b"POST")),
                         Deny(403, "relaying to port 25 is not allowed"))
        self.assertEqual(rule.checkConnect(target(port=80)),
                         Deny(403, "CONNECT to port 80 is not allowed"))

    def test_internalDestination(self) -> None:
        rule = InternalDestinationRule(["10.0.0.0/8", "cache.lan"], lambda: ["93.184.216.99"])
        self.assertEqual(rule.checkConnect(target()), Abstain())
        self.assertEqual(rule.checkConnect(target(addresses=("10.9.9.9",))), Abstain())
        self.assertEqual(rule.checkConnect(target(host="cache.lan", addresses=("127.0.0.1",))),
                         Abstain())
        self.assertEqual(
            rule.checkConnect(target(addresses=("93.184.216.34", "127.0.0.1"))).reason,
            "destination example.com (127.0.0.1) is internal")
        # The proxy's own public address is refused too.
        self.assertEqual(rule.checkConnect(target(addresses=("93.184.216.99",))).code, 403)
        # IP literals without resolution are checked themselves.
        self.assertEqual(rule.checkConnect(target(host="127.0.0.1", addresses=())).code, 403)

    def test_auth(self) -> None:
        rule = ProxyAuthRule(lambda user, password: (user, password) == ("bob", "pw:x"))

        def withAuth(value: bytes) -> ConnectTarget:
            return target(headers=((b"proxy-authorization", value),))

        self.assertEqual(rule.checkConnect(target()).code, 407)
        self.assertEqual(rule.checkConnect(target()).headers,
                         ((b"Proxy-Authenticate", b'Basic realm="snapstore"'),))
        self.assertEqual(rule.checkConnect(withAuth(b"Basic " + b64encode(b"bob:pw:x"))),
                         Abstain())
        self.assertEqual(rule.checkConnect(withAuth(b"Basic " + b64encode(b"bob:no"))).code, 407)
        self.assertEqual(rule.checkConnect(withAuth(b"Basic !!!")).code, 407)
        self.assertEqual(rule.checkConnect(withAuth(b"Bearer x")).code, 407)


@implementer(IConnectRule)
class Fixed:
    def __init__(self, name, answer):
        self.name = name
        self.answer = answer
        self.asked = 0

    def checkConnect(self, target):
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class EvaluationTests(SynchronousTestCase):
    def test_firstDecisiveWins(self) -> None:
        later = Fixed("later", Deny(403, "later"))
        result = self.successResultOf(evaluateConnect(
            [Fixed("a", Abstain()), Fixed("b", Allow()), later], target()))
        self.assertEqual(result, (Allow(), "b"))
        self.assertEqual(later.asked, 0)

    def test_deferredVerdicts(self) -> None:
        waiting: Deferred = Deferred()
        result = evaluateConnect([Fixed("a", waiting), Fixed("b", Deny(403, "x"))], target())
        self.assertNoResult(result)
        waiting.callback(Abstain())
        self.assertEqual(self.successResultOf(result), (Deny(403, "x"), "b"))

    def test_raisingRuleRefuses(self) -> None:
        result = self.successResultOf(evaluateConnect(
            [Fixed("bad", ValueError("boom")), AllowRemaining()], target()))
        self.assertEqual(result, (Deny(403, "rule bad failed"), "bad"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_nonVerdictRefuses(self) -> None:
        result = self.successResultOf(evaluateConnect(
            [Fixed("bad", succeed(None)), AllowRemaining()], target()))
        self.assertEqual(result, (Deny(403, "rule bad failed"), "bad"))

    def test_failedDeferredRefuses(self) -> None:
        from twisted.internet.defer import fail

        result = self.successResultOf(evaluateConnect(
            [Fixed("bad", fail(KeyError("k"))), AllowRemaining()], target()))
        self.assertEqual(result, (Deny(403, "rule bad failed"), "bad"))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_allAbstainRefuses(self) -> None:
        result = self.successResultOf(evaluateConnect([Fixed("a", Abstain())], target()))
        self.assertEqual(result, (Deny(403, "no rule allowed this destination"), "default"))


class PasswordTests(SynchronousTestCase):
    def test_pbkdf2(self) -> None:
        stored = hashPassword("pw", iterations=1000)
        self.assertTrue(stored.startswith("$pbkdf2-sha256$1000$"))
        self.assertTrue(verifyPassword("pw", stored))
        self.assertFalse(verifyPassword("pW", stored))
        self.assertNotEqual(stored, hashPassword("pw", iterations=1000))

    def test_htpasswdSHA(self) -> None:
        # htpasswd -nbs alice secret
        self.assertTrue(verifyPassword("secret", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="))
        self.assertFalse(verifyPassword("Secret", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="))

    def test_unknownFormatNeverMatches(self) -> None:
        self.assertFalse(verifyPassword("x", "x"))
        self.assertFalse(verifyPassword("x", "$apr1$abc$def"))

    def test_fileReloads(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice:" + hashPassword("a", iterations=1000) + "\nbroken line\n")
        passwords = PasswordFile(path)
        self.assertTrue(passwords.check("alice", "a"))
        self.assertFalse(passwords.check("bob", "b"))
        with open(path, "w") as f:
            f.write("bob:{SHA}6dcd4ce23d88e2ee9568ba546c007c63d9131c1b\n"
                    "bob2:" + hashPassword("b", iterations=1000) + "\n")
        os.utime(path, (1, 1))
        self.assertFalse(passwords.check("alice", "a"))
        self.assertTrue(passwords.check("bob2", "b"))

    def test_missingFile(self) -> None:
        self.assertRaises(ValueError, PasswordFile, self.mktemp())

    def test_helper(self) -> None:
        import getpass
        import io
        import sys

        self.patch(getpass, "getpass", lambda prompt: "pw")
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(main(["carol"]), 0)
        user, stored = out.getvalue().strip().split(":", 1)
        self.assertEqual(user, "carol")
        self.assertTrue(verifyPassword("pw", stored))
