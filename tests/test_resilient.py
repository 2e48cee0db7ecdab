"""
Tests for L{snapstore.state.resilient}.
"""

from twisted.internet import reactor
from twisted.internet.defer import fail, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from snapstore.interfaces import IStateStore
from snapstore.state.errors import StateUnavailable
from snapstore.state.records import BlobRecord, Device, DeviceSession
from snapstore.state.resilient import RETRY_DELAY, ResilientState
from tests.fakestore import FakeStore
from tests.test_rules_support import MemoryState, Proxy, writeRules


class FlakyState(MemoryState):
    """
    An in-memory state store whose database can be switched off.
    """

    down = False

    def _guard(self, method, *args):
        if self.down:
            return fail(StateUnavailable("database is down"))
        return method(*args)

    def recordBlob(self, blob):
        return self._guard(super().recordBlob, blob)

    def getBlob(self, name):
        return self._guard(super().getBlob, name)

    def recordDevice(self, device):
        return self._guard(super().recordDevice, device)

    def recordSession(self, session):
        return self._guard(super().recordSession, session)


BLOB = BlobRecord(name="s_1.snap", sha3_384="a" * 96, size=5, url="http://up/s_1.snap")


class ResilientStateTests(SynchronousTestCase):
    """
    The data path's view of the state store keeps working without it.
    """

    def setUp(self):
        self.clock = Clock()
        self.store = FlakyState(self.clock)
        self.state = ResilientState(self.store, self.clock, maxQueuedDevices=2)

    def test_interface(self):
        """
        It is a state store, delegating what it does not change.
        """
        verifyObject(IStateStore, self.state)
        self.assertIs(self.state.listOverrides.__self__, self.store)

    def test_blobsRememberedWhileDown(self):
        """
        A blob recorded while the database is down, or seen before it went
        down, is still found, so cached blobs keep being served.
        """
        self.assertEqual(self.successResultOf(self.state.recordBlob(BLOB)), BLOB)
        self.store.down = True
        self.assertEqual(self.successResultOf(self.state.getBlob("s_1.snap")), BLOB)
        other = BlobRecord(name="t_2.snap", sha3_384="b" * 96, size=6, url="http://up/t_2.snap")
        self.successResultOf(self.state.recordBlob(other))
        self.assertEqual(self.successResultOf(self.state.getBlob("t_2.snap")), other)
        self.assertIsNone(self.successResultOf(self.state.getBlob("unknown.snap")))

    def test_repeatedBlobWrittenOnce(self):
        """
        A record the database already holds is not written again when a
        later answer names the same blob (every refresh does); a changed
        URL, or one remembered only while the database was down, is.
        """
        writes = []
        self.patch(self.store, "recordBlob", lambda blob: (writes.append(blob),
                                                           FlakyState.recordBlob(self.store, blob))[1])
        for _ in range(3):
            self.assertEqual(self.successResultOf(self.state.recordBlob(BLOB)), BLOB)
        self.assertEqual(len(writes), 1)
        moved = BlobRecord(name="s_1.snap", sha3_384="a" * 96, size=5, url="http://cdn2/s_1.snap")
        self.successResultOf(self.state.recordBlob(moved))
        self.assertEqual(len(writes), 2)
        other = BlobRecord(name="t_2.snap", sha3_384="b" * 96, size=6, url="http://up/t_2.snap")
        self.store.down = True
        self.successResultOf(self.state.recordBlob(other))
        self.store.down = False
        self.successResultOf(self.state.recordBlob(other))
        self.assertEqual(len(writes), 4)
        self.assertEqual(self.successResultOf(self.store.getBlob("t_2.snap")).url, other.url)

    def test_blobDigestImmutable(self):
        """
        A later record of the same name keeps the first digest and size.
        """
        self.successResultOf(self.state.recordBlob(BLOB))
        self.store.down = True
        changed = BlobRecord(name="s_1.snap", sha3_384="f" * 96, size=9, url="http://new/s_1.snap")
        self.successResultOf(self.state.recordBlob(changed))
        found = self.successResultOf(self.state.getBlob("s_1.snap"))
        self.assertEqual((found.sha3_384, found.size, found.url), ("a" * 96, 5, "http://new/s_1.snap"))

    def test_devicesQueuedAndWrittenLater(self):
        """
        Device sightings made while the database is down are queued,
        bounded, and written once it answers again.
        """
        self.store.down = True
        for identity, seen in [("acme/g/1", 1.0), ("acme/g/2", 2.0), ("acme/g/1", 3.0), ("acme/g/3", 4.0)]:
            self.successResultOf(self.state.recordDevice(Device(identity=identity, firstSeen=seen, lastSeen=seen)))
        # Bounded at two: the oldest identity (acme/g/2) was dropped.
        self.assertEqual(list(self.state.queuedDevices), ["acme/g/1", "acme/g/3"])
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(len(self.state.queuedDevices), 2)
        self.store.down = False
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.state.queuedDevices, {})
        devices = {d.identity: d for d in self.successResultOf(self.store.listDevices())}
        self.assertEqual(sorted(devices), ["acme/g/1", "acme/g/3"])
        self.assertEqual((devices["acme/g/1"].firstSeen, devices["acme/g/1"].lastSeen), (1.0, 3.0))
        self.assertEqual(self.clock.getDelayedCalls(), [])


    def test_sessionsQueuedAndWrittenLater(self):
        """
        Device sessions granted while the database is down are queued,
        bounded, and written once it answers again (after the queued
        device sightings), or at once when the store announces a resync.
        """
        self.store.down = True
        for digest in ("d1", "d2", "d3"):
            self.successResultOf(self.state.recordSession(DeviceSession(digest, "a/b/" + digest)))
        self.successResultOf(self.state.recordDevice(Device(identity="a/b/d3", lastSeen=1.0)))
        self.assertEqual(list(self.state.queuedSessions), ["d2", "d3"])
        self.store.down = False
        self.store._tell({"kind": "resync"})
        self.assertEqual((self.state.queuedSessions, self.state.queuedDevices), ({}, {}))
        self.assertEqual(sorted(self.store.sessions), ["d2", "d3"])
        self.assertEqual(list(self.store.devices), ["a/b/d3"])


class StateOutageAnswerTests(TestCase):
    """
    A call whose rules need the unavailable database gets a store-format
    503 (which snapd retries), not a policy refusal or a hang.
    """

    RULES = {
        "10-needs-state.py": """
            from zope.interface import implementer
            from twisted.internet.defer import fail
            from snapstore.interfaces import IAdmissionRule, IActionRule
            from snapstore.rules.verdicts import Abstain
            from snapstore.state.errors import StateUnavailable

            @implementer(IAdmissionRule, IActionRule)
            class NeedsState:
                name = "needs-state"

                def admit(self, request):
                    if request.path.startswith("/v2/snaps/info"):
                        return fail(StateUnavailable("database is down"))
                    return Abstain()

                def amend(self, request, action, result):
                    raise StateUnavailable("database is down")

            def rules(env):
                return [NeedsState()]
        """,
    }

    @inlineCallbacks
    def setUp(self):
        self.store = yield FakeStore(reactor).startFor(self)
        self.store.addSnap("hello")
        self.store.addRevision("hello", 1, 100)
        self.proxy = yield Proxy(self, self.store.apiURL, writeRules(self, self.RULES)).start()

    @inlineCallbacks
    def test_admission(self):
        """
        An admission rule failing with L{StateUnavailable}: 503.
        """
        code, answer = yield self.proxy.call(b"GET", "v2/snaps/info/hello")
        self.assertEqual(code, 503)
        self.assertEqual(answer["error-list"][0]["code"], "state-unavailable")
        self.assertEqual(self.store.count("GET", "/v2/snaps/info"), 0)

    @inlineCallbacks
    def test_amendment(self):
        """
        An action rule failing with L{StateUnavailable}: 503.
        """
        code, answer = yield self.proxy.call(b"POST", "v2/snaps/refresh", {
            "context": [], "actions": [{"action": "install", "instance-key": "install-1",
                                        "name": "hello", "channel": "stable", "epoch": None}]})
        self.assertEqual(code, 503, answer)
        self.assertEqual(answer["error-list"][0]["code"], "state-unavailable")
