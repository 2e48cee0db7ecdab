# -*- test-case-name: tests.test_rules_devices -*-
"""
Tests for device identification and the device limit
(L{snapstore.rules.devices}), in isolation and through the store endpoint
in front of the fake store, with an injected clock.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from snapstore.rules.devices import (
    DeviceLimitRule,
    DeviceStatus,
    grantedSession,
    sessionRequestIdentity,
)
from snapstore.rules.values import DAY, DeviceIdentity, StoreDeny, StoreRequest
from snapstore.rules.verdicts import Abstain
from snapstore.state.records import Device
from tests.fakestore import FakeStore
from tests.test_rules_support import MemoryState, Proxy, copyShipped, sessionRequest

LIMIT_ERROR = "device-limit-exceeded"


def deviceRequest(identity: str, path: str = "/v2/snaps/refresh") -> StoreRequest:
    return StoreRequest(b"POST", path, device=DeviceIdentity(identity, "", "10.0.0.1"))


class IdentityTests(SynchronousTestCase):
    """
    What a device-session request claims, and what upstream's answer to it
    proves.
    """

    def test_sessionRequestBody(self):
        """
        The device-session-request names the brand, model and serial.
        """
        body = ('{"device-session-request": %s}' % _json(sessionRequest("S1"))).encode()
        self.assertEqual(sessionRequestIdentity(body, "10.0.0.2"),
                         DeviceIdentity("acme/gizmo/S1", "acme/gizmo", "10.0.0.2"))
        self.assertIsNone(sessionRequestIdentity(b'{"device-session-request": "x: y"}', "a"))
        self.assertIsNone(sessionRequestIdentity(b"not json", "a"))

    def test_grantedSession(self):
        """
        A 2xx answer with a macaroon to a session request grants that
        macaroon to the device the request names; an error answer, an
        answer without a macaroon, or another call grants nothing.
        """
        body = ('{"device-session-request": %s}' % _json(sessionRequest("S1"))).encode()
        asking = StoreRequest(b"POST", "/api/v1/snaps/auth/sessions", body=body,
                              device=DeviceIdentity("address:10.0.0.2", "", "10.0.0.2"))
        self.assertEqual(grantedSession(asking, 200, b'{"macaroon": "M1"}'),
                         (b"M1", DeviceIdentity("acme/gizmo/S1", "acme/gizmo", "10.0.0.2")))
        self.assertIsNone(grantedSession(asking, 400, b'{"macaroon": "M1"}'))
        self.assertIsNone(grantedSession(asking, 200, b'{"nonce": "x"}'))
        self.assertIsNone(grantedSession(asking, 200, b'not json'))
        other = StoreRequest(b"POST", "/v2/snaps/refresh", body=body)
        self.assertIsNone(grantedSession(other, 200, b'{"macaroon": "M1"}'))


def _json(text: str) -> str:
    import json

    return json.dumps(text)


class DeviceLimitRuleTests(SynchronousTestCase):
    """
    L{DeviceLimitRule} with an in-memory state store and a clock.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.state = MemoryState(self.clock)

    def admit(self, rule, identity, path="/v2/snaps/refresh"):
        return self.successResultOf(rule.admit(deviceRequest(identity, path)))

    def test_limit(self):
        """
        Up to C{limit} devices are admitted; a new one then gets a 403
        C{device-limit-exceeded}; known ones carry on.
        """
        rule = DeviceLimitRule(self.state, self.clock, limit=2)
        self.assertEqual(self.admit(rule, "a"), Abstain())
        self.assertEqual(self.admit(rule, "b"), Abstain())
        verdict = self.admit(rule, "c")
        self.assertIsInstance(verdict, StoreDeny)
        self.assertEqual((verdict.code, verdict.errorCode), (403, LIMIT_ERROR))
        self.assertIn("2 devices", verdict.reason)
        self.assertEqual(self.admit(rule, "a"), Abstain())
        self.assertEqual(sorted(self.state.devices), ["a", "b"])

    def test_windowPasses(self):
        """
        A device not seen for the window no longer counts, so a new device
        is admitted after it.
        """
        rule = DeviceLimitRule(self.state, self.clock, limit=1, window=3600)
        self.admit(rule, "a")
        self.clock.advance(3599)
        self.assertIsInstance(self.admit(rule, "b"), StoreDeny)
        self.clock.advance(2)
        self.assertEqual(self.admit(rule, "b"), Abstain())
        self.assertIsInstance(self.admit(rule, "a"), StoreDeny)

    def test_noLimit(self):
        """
        With no limit every device is admitted, and still recorded.
        """
        rule = DeviceLimitRule(self.state, self.clock, limit=None)
        for n in range(30):
            self.assertEqual(self.admit(rule, f"d{n}"), Abstain())
        self.assertEqual(len(self.state.devices), 30)

    def test_zeroLimit(self):
        """
        A limit of 0 refuses every device.
        """
        rule = DeviceLimitRule(self.state, self.clock, limit=0)
        self.assertIsInstance(self.admit(rule, "a"), StoreDeny)

    def test_noncesAndSessionsExempt(self):
        """
        Asking for a nonce identifies nobody, and a session request only
        claims a serial: neither is counted nor refused, so a known device
        can always renew its session.
        """
        rule = DeviceLimitRule(self.state, self.clock, limit=0)
        self.assertEqual(self.admit(rule, "a", "/api/v1/snaps/auth/nonces"), Abstain())
        self.assertEqual(self.admit(rule, "a", "/api/v1/snaps/auth/sessions"), Abstain())
        self.assertEqual(self.state.devices, {})

    def test_neverReadRefuses(self):
        """
        A rule that could never read the limit setting (a node started
        while its database is down) refuses with L{StateUnavailable}
        rather than guess; once it has read it, a later outage leaves it
        deciding on what it read.
        """
        from twisted.internet.defer import fail

        from snapstore.state.errors import StateUnavailable

        getSetting, listDevices = self.state.getSetting, self.state.listDevices
        self.state.getSetting = lambda key: fail(StateUnavailable("down"))
        self.state.listDevices = lambda seenSince=None: fail(StateUnavailable("down"))
        rule = DeviceLimitRule(self.state, self.clock, limit=1, settingEvery=0)
        self.failureResultOf(rule.admit(deviceRequest("a")), StateUnavailable)
        self.state.getSetting, self.state.listDevices = getSetting, listDevices
        self.clock.advance(1)
        self.assertEqual(self.admit(rule, "a"), Abstain())
        self.state.getSetting = lambda key: fail(StateUnavailable("down"))
        self.state.listDevices = lambda seenSince=None: fail(StateUnavailable("down"))
        self.clock.advance(3600)
        self.assertEqual(self.admit(rule, "a"), Abstain())
        self.assertIsInstance(self.admit(rule, "b"), StoreDeny)
        self.flushLoggedErrors(StateUnavailable)

    def test_devicesOfOtherNodes(self):
        """
        Devices recorded in the shared state (by another node) count.
        """
        now = self.clock.seconds()
        for name in ("x", "y"):
            self.state.devices[name] = Device(name, lastSeen=now - 10, firstSeen=now - 10)
        self.state.devices["old"] = Device("old", lastSeen=now - DAY - 1)
        rule = DeviceLimitRule(self.state, self.clock, limit=2)
        self.assertIsInstance(self.admit(rule, "z"), StoreDeny)
        self.assertEqual(self.admit(rule, "x"), Abstain())

    def test_concurrentFirstReads(self):
        """
        A request that comes while the first read of the limit is under way
        waits for a read of its own instead of being refused for want of
        one (two devices refreshing at once on a fresh node are served).
        """
        from twisted.internet.defer import Deferred

        pending = []
        getSetting = self.state.getSetting

        def slowSetting(key):
            d = Deferred()
            pending.append(d)
            return d.addCallback(lambda _: getSetting(key))

        self.state.getSetting = slowSetting
        rule = DeviceLimitRule(self.state, self.clock, limit=5)
        first = rule.admit(deviceRequest("a"))
        second = rule.admit(deviceRequest("b"))
        self.assertEqual(len(pending), 2)
        for d in pending:
            d.callback(None)
        self.assertEqual(self.successResultOf(first), Abstain())
        self.assertEqual(self.successResultOf(second), Abstain())

    def test_writesThrottled(self):
        """
        A busy device's last-seen time is written at most every
        C{recordEvery} seconds.
        """
        writes = []
        record = self.state.recordDevice
        self.state.recordDevice = lambda d: (writes.append(d), record(d))[1]
        rule = DeviceLimitRule(self.state, self.clock, recordEvery=60)
        for _ in range(5):
            self.admit(rule, "a")
            self.clock.advance(10)
        self.assertEqual(len(writes), 1)
        self.clock.advance(20)
        self.admit(rule, "a")
        self.assertEqual(len(writes), 2)

    def test_stateDownAdmits(self):
        """
        When the state store cannot record, a device within the limit is
        still admitted and the failure logged.
        """
        from twisted.internet.defer import fail

        self.state.recordDevice = lambda d: fail(RuntimeError("database away"))
        rule = DeviceLimitRule(self.state, self.clock, limit=5)
        self.assertEqual(self.admit(rule, "a"), Abstain())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_status(self):
        """
        L{DeviceLimitRule.status} gives "connected devices N / limit M".
        """
        rule = DeviceLimitRule(self.state, self.clock, limit=25)
        self.admit(rule, "a")
        self.admit(rule, "b")
        self.assertEqual(self.successResultOf(rule.status()), DeviceStatus(2, 25, DAY))

    def test_badSettings(self):
        """
        A limit that is not a whole number, or a window that is not
        positive, is refused when the rules file loads.
        """
        self.assertRaises(ValueError, DeviceLimitRule, self.state, self.clock, limit="25")
        self.assertRaises(ValueError, DeviceLimitRule, self.state, self.clock, limit=-1)
        self.assertRaises(ValueError, DeviceLimitRule, self.state, self.clock, window=0)


class DeviceLimitThroughProxyTests(TestCase):
    """
    The shipped device-limit file with C{limit = 2}, through the proxy in
    front of the fake store; devices identify by the sessions they open.
    """

    timeout = 60

    def setUp(self):
        async def setUp():
            self.store = FakeStore(reactor)
            self.store.addSnap("hello")
            self.store.addRevision("hello", 1, 1000)
            await self.store.startFor(self)
            self.clock = Clock()
            self.clock.advance(1_000_000)
            self.proxy = await Proxy(self, self.store.apiURL, copyShipped(self, limit="2"),
                                     clock=self.clock).start()

        return ensureDeferred(setUp())

    def test_thirdDeviceRefused(self):
        """
        Two devices are served; a third, whose session upstream grants, is
        refused on its calls with a store-format C{device-limit-exceeded}
        403 while the first two carry on; after the window passes the third
        is admitted.  C{status} counts two connected devices of two.
        """

        async def check():
            first = await self.proxy.openSession("SERIAL-1")
            second = await self.proxy.openSession("SERIAL-2")
            for macaroon in (first, second):
                code, answer = await self.proxy.call(b"GET", "v2/snaps/info/hello",
                                                     session=macaroon)
                self.assertEqual(code, 200, answer)
            third = await self.proxy.openSession("SERIAL-3")
            self.assertIsInstance(third, str)
            code, answer = await self.proxy.call(b"GET", "v2/snaps/info/hello", session=third)
            self.assertEqual(code, 403)
            [error] = answer["error-list"]
            self.assertEqual(error["code"], LIMIT_ERROR)
            self.assertIn("at most 2 devices", error["message"])
            self.assertEqual(list(answer), ["error-list"])

            for macaroon in (first, second):
                code, answer = await self.proxy.call(b"GET", "v2/snaps/info/hello",
                                                     session=macaroon)
                self.assertEqual(code, 200, answer)
            # Without a session a device is counted by address: new.
            code, answer = await self.proxy.call(b"GET", "v2/snaps/info/hello")
            self.assertEqual((code, answer["error-list"][0]["code"]), (403, LIMIT_ERROR))

            self.assertEqual(sorted(self.proxy.state.devices),
                             ["acme/gizmo/SERIAL-1", "acme/gizmo/SERIAL-2"])
            device = self.proxy.state.devices["acme/gizmo/SERIAL-1"]
            self.assertEqual((device.model, device.address), ("acme/gizmo", "127.0.0.1"))
            status = await self.proxy.rules.deviceStatus()
            self.assertEqual((status.connected, status.limit), (2, 2))

            self.clock.advance(DAY + 1)
            code, answer = await self.proxy.call(b"GET", "v2/snaps/info/hello", session=third)
            self.assertEqual(code, 200, answer)

        return ensureDeferred(check())

    def test_refusedBeforeUpstream(self):
        """
        A refused call never reaches upstream.
        """

        async def check():
            for serial in ("SERIAL-1", "SERIAL-2"):
                macaroon = await self.proxy.openSession(serial)
                await self.proxy.call(b"GET", "v2/snaps/info/hello", session=macaroon)
            self.store.resetTraffic()
            code, _ = await self.proxy.call(b"POST", "v2/snaps/refresh",
                                            self.proxy.refreshBody(self.store.snapId("hello"), 1))
            self.assertEqual(code, 403)
            self.assertEqual(self.store.count(), 0)

        return ensureDeferred(check())
