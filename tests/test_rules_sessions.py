"""
Tests for L{snapstore.rules.sessions}: the directory of device sessions
(with an in-memory state store and a clock) and the bounds on asking
devices to identify themselves and on session requests.
"""

from __future__ import annotations

import hashlib

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from snapstore.rules.sessions import (
    REFRESH_DEVICE_SESSION,
    SessionChallenges,
    SessionDirectory,
    sessionDigest,
)
from snapstore.rules.values import DAY, DeviceIdentity, StoreDeny
from snapstore.state.errors import StateUnavailable
from tests.fakestore import FakeStore
from tests.test_rules_support import MemoryState, Proxy, copyShipped

DEVICE = DeviceIdentity("acme/gizmo/S1", "acme/gizmo", "10.0.0.2")


class SessionDirectoryTests(SynchronousTestCase):
    """
    L{SessionDirectory} maps a session macaroon to its device through the
    state store.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.state = MemoryState(self.clock)

    def identify(self, directory, macaroon, address="10.0.0.3"):
        return self.successResultOf(Deferred.fromCoroutine(
            directory.identify(macaroon, address)))

    def test_learntSessionKnownEverywhere(self):
        """
        A session learnt by one directory is known by another on the same
        state store (another node, or this one after a restart), with the
        address of the request that carries it; the store holds the
        macaroon's sha256, never the macaroon.
        """
        self.successResultOf(SessionDirectory(self.state, self.clock).learn(b"M1", DEVICE))
        self.assertEqual(list(self.state.sessions), [hashlib.sha256(b"M1").hexdigest()])
        self.assertEqual(list(self.state.sessions), [sessionDigest(b"M1")])
        other = SessionDirectory(self.state, self.clock)
        self.assertEqual(self.identify(other, b"M1"),
                         DeviceIdentity("acme/gizmo/S1", "acme/gizmo", "10.0.0.3"))

    def test_unknownSession(self):
        """
        A session nobody learnt is its address, marked unknown.
        """
        directory = SessionDirectory(self.state, self.clock)
        self.assertEqual(self.identify(directory, b"M2"),
                         DeviceIdentity("address:10.0.0.3", "", "10.0.0.3", unknownSession=True))

    def test_expired(self):
        """
        A session past the expiry upstream gave counts as unknown.
        """
        directory = SessionDirectory(self.state, self.clock)
        directory.learn(b"M1", DEVICE, expiresAt=self.clock.seconds() + 60)
        self.assertFalse(self.identify(directory, b"M1").unknownSession)
        self.clock.advance(61)
        self.assertTrue(self.identify(directory, b"M1").unknownSession)
        self.assertTrue(self.identify(SessionDirectory(self.state, self.clock),
                                      b"M1").unknownSession)

    def test_knownWhileDatabaseAway(self):
        """
        With the state store failing, sessions this node has seen are still
        known and others count as unknown (logged once).
        """
        directory = SessionDirectory(self.state, self.clock)
        directory.learn(b"M1", DEVICE)
        self.state.getSession = lambda digest: fail(StateUnavailable("down"))
        self.assertEqual(self.identify(directory, b"M1").identity, "acme/gizmo/S1")
        self.assertTrue(self.identify(directory, b"M2").unknownSession)
        self.assertTrue(self.identify(directory, b"M3").unknownSession)

    def test_lastUseWrittenDaily(self):
        """
        A session's last use is written at most once per C{touchEvery}.
        """
        directory = SessionDirectory(self.state, self.clock, touchEvery=DAY)
        directory.learn(b"M1", DEVICE)
        learnt = self.clock.seconds()
        for _ in range(5):
            self.clock.advance(3600)
            self.identify(directory, b"M1")
        self.assertEqual(self.state.sessions[sessionDigest(b"M1")].lastUsed, learnt)
        self.clock.advance(DAY)
        self.identify(directory, b"M1")
        self.assertEqual(self.state.sessions[sessionDigest(b"M1")].lastUsed,
                         self.clock.seconds())

    def test_prune(self):
        """
        Pruning forgets sessions unused for C{unusedFor}, in memory and in
        the state store; used ones stay.
        """
        directory = SessionDirectory(self.state, self.clock, touchEvery=3600,
                                     unusedFor=10 * DAY)
        directory.learn(b"OLD", DEVICE)
        directory.learn(b"NEW", DEVICE)
        for _ in range(11):
            self.clock.advance(DAY)
            self.identify(directory, b"NEW")
        self.assertEqual(self.successResultOf(directory.prune()), 1)
        self.assertEqual(len(directory), 1)
        self.assertEqual(list(self.state.sessions), [sessionDigest(b"NEW")])
        self.assertTrue(self.identify(directory, b"OLD").unknownSession)

    def test_bounded(self):
        """
        Memory holds at most C{limit} sessions; the state store still
        knows the dropped ones.
        """
        directory = SessionDirectory(self.state, self.clock, limit=2)
        for n in range(3):
            directory.learn(b"M%d" % n, DeviceIdentity(f"b/m/{n}"))
        self.assertEqual(len(directory), 2)
        self.assertEqual(self.identify(directory, b"M0").identity, "b/m/0")


class SessionChallengesTests(SynchronousTestCase):
    """
    L{SessionChallenges} bounds the 401s and the session requests of one
    address.
    """

    def setUp(self):
        self.clock = Clock()
        self.challenges = SessionChallenges(self.clock, window=600, maxRefusals=2,
                                            attemptBurst=3, attemptRate=0.5)

    def test_challenge(self):
        """
        The answer is a 401 carrying C{WWW-Authenticate: Macaroon
        refresh_device_session=1} in the store's error shape.
        """
        verdict = self.challenges.challenge("10.0.0.1")
        self.assertIsInstance(verdict, StoreDeny)
        self.assertEqual((verdict.code, verdict.errorCode, verdict.headers),
                         (401, "device-authorization-needed", (REFRESH_DEVICE_SESSION,)))

    def test_twiceThenAddress(self):
        """
        An address is asked twice within the window, then its unknown
        sessions count by address until the window has passed.
        """
        self.assertIsNotNone(self.challenges.challenge("10.0.0.1"))
        self.assertIsNotNone(self.challenges.challenge("10.0.0.1"))
        self.assertIsNone(self.challenges.challenge("10.0.0.1"))
        self.assertIsNone(self.challenges.challenge("10.0.0.1"))
        self.assertIsNotNone(self.challenges.challenge("10.0.0.2"))
        self.clock.advance(601)
        self.assertIsNotNone(self.challenges.challenge("10.0.0.1"))

    def test_identifiedResets(self):
        """
        A session opened through the proxy from the address answers its
        refusals: the next unknown session there is asked again.
        """
        self.challenges.challenge("10.0.0.1")
        self.challenges.challenge("10.0.0.1")
        self.challenges.identified("10.0.0.1")
        self.assertIsNotNone(self.challenges.challenge("10.0.0.1"))

    def test_attempts(self):
        """
        An address may make C{attemptBurst} session requests at once, then
        C{attemptRate} a second; more get a 429.
        """
        self.assertEqual([self.challenges.attempt("a") for _ in range(3)], [None] * 3)
        refused = self.challenges.attempt("a")
        self.assertEqual((refused.code, refused.errorCode), (429, "too-many-requests"))
        self.assertIsNone(self.challenges.attempt("b"))
        self.clock.advance(2)
        self.assertIsNone(self.challenges.attempt("a"))
        self.assertIsNotNone(self.challenges.attempt("a"))

    def test_unbounded(self):
        """
        Without a burst (C{--device-session-rate 0}) nothing is refused.
        """
        challenges = SessionChallenges(self.clock, attemptBurst=None)
        self.assertEqual({challenges.attempt("a") for _ in range(1000)}, {None})


class PruningThroughProxyTests(TestCase):
    """
    The running rules service prunes the device sessions every hour.
    """

    timeout = 60

    def test_hourlyPruning(self):
        """
        A session opened through the proxy and not used for 30 days is gone
        from the state store after the next hourly pruning; a session used
        meanwhile stays.
        """

        async def check():
            store = await FakeStore(reactor).startFor(self)
            clock = Clock()
            clock.advance(1_000_000)
            proxy = await Proxy(self, store.apiURL, copyShipped(self), clock=clock).start()
            idle = await proxy.openSession("IDLE")
            busy = await proxy.openSession("BUSY")
            self.assertEqual(len(proxy.state.sessions), 2)
            for _ in range(31):
                clock.advance(DAY)
                code, answer = await proxy.call(b"GET", "v2/snaps/info/nothing", session=busy)
                self.assertEqual(code, 404, answer)
            self.assertEqual(list(proxy.state.sessions), [sessionDigest(busy.encode())])
            self.assertNotEqual(idle, busy)

        return Deferred.fromCoroutine(check())
