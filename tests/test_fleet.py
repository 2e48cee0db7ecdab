"""
Fleet visibility (design.md section 8) through real C{twistd snapstore}
processes in front of the fake store: devices with sessions and refresh
contexts on two architectures, what each runs, groups seen by rules,
what a refresh would change (and would with a pin), and the hash-chained
delivery record; on SQLite, across a restart, and on two nodes sharing a
PostgreSQL database.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import time
from io import BytesIO

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from snapstore.cli import main as cliMain
from snapstore.fleet.groups import GroupError, checkSelectors, groupsOf
from snapstore.fleet.inventory import (
    LAST_SEEN_RESOLUTION,
    InventoryRecorder,
    installedSnaps,
    namesIn,
)
from snapstore.rules.values import DeviceIdentity, StoreRequest
from snapstore.state.sqlite import SQLiteStateStore
from snapstore.state.fleet import DeviceGroup
from tests import pgtest
from tests.fakestore import FakeStore
from tests.helpers import deferred, testAgent
from tests.processes import freePort, startTwistd, waitForPort
from tests.sessionclient import SnapdDevice
from tests.test_multinode import databaseURL
from tests.test_rules_support import copyShipped

KIOSK_RULE = '''
# Deny refreshes and installs of "hello" to devices in group kiosks.
from zope.interface import implementer
from snapstore.interfaces import IAdmissionRule
from snapstore.rules.values import StoreDeny
from snapstore.rules.verdicts import Abstain


@implementer(IAdmissionRule)
class KioskRule:
    name = "kiosks"

    def admit(self, request):
        if "kiosks" in request.device.groups and request.path == "/v2/snaps/refresh":
            return StoreDeny(403, "not on kiosks", errorCode="kiosk")
        return Abstain()


def rules(env):
    return [KioskRule()]
'''


class FleetMixin:
    """
    The fake store: C{hello} (amd64 10 and 12, stable at 12; arm64 11 and
    13, stable at 13) and C{world} (amd64 and arm64 revision 5, stable).
    """

    timeout = 240

    async def setUpStore(self, kiosks=False):
        self.store = await FakeStore(reactor).startFor(self)
        self.hello = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 4096)
        self.store.addRevision("hello", 12, 4096)
        self.store.addRevision("hello", 11, 4096, architectures=("arm64",))
        self.store.addRevision("hello", 13, 4096, architectures=("arm64",))
        self.world = self.store.addSnap("world")
        self.store.addRevision("world", 5, 2048, architectures=("amd64", "arm64"))
        self.rulesDir = copyShipped(self)
        if kiosks:
            with open(os.path.join(self.rulesDir, "45-kiosks.py"), "w") as f:
                f.write(KIOSK_RULE)

    async def startNode(self, state=None, dataDir=None, storePort=None, extra=()):
        adminPort = freePort()
        self.dataDir = dataDir or self.mktemp()
        argv = ["--upstream", self.store.apiURL, "--proxy-endpoint", "none",
                "--admin-endpoint", f"tcp:{adminPort}:interface=127.0.0.1",
                "--rules-dir", self.rulesDir, "--config", "/dev/null",
                "--data-dir", self.dataDir]
        if state is not None:
            argv += ["--state", state]
        argv += list(extra)
        process, storePort = await startTwistd(self, *argv, storePort=storePort)
        await waitForPort(adminPort, process)
        self.process = process
        return f"http://127.0.0.1:{storePort}/", f"http://127.0.0.1:{adminPort}"

    async def admin(self, adminURL, method, path, body=None):
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode())) if body else None
        response = await testAgent(self).request(
            method, (adminURL + path).encode(),
            Headers({b"Content-Type": [b"application/json"]}), producer)
        return response.code, json.loads(await readBody(response))

    async def cli(self, adminURL, *argv):
        """
        Run the C{snapstore} command against the node (in a thread: it is
        synchronous); C{(exit code, stdout, stderr)}.
        """
        out, err = io.StringIO(), io.StringIO()
        code = await deferToThread(cliMain, ["--admin", adminURL, *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    async def fleet(self, url):
        """
        Three devices: acme/gizmo/A (amd64: hello 10, world 5), B (arm64:
        hello 11 on latest/stable), C (amd64: hello 12).
        """
        a = SnapdDevice(self, url, "A")
        b = SnapdDevice(self, url, "B", architecture="arm64")
        c = SnapdDevice(self, url, "C")
        for device, installed in ((a, [(self.hello, 10, "latest/stable"),
                                       (self.world, 5, "latest/stable")]),
                                  (b, [(self.hello, 11, "latest/stable")]),
                                  (c, [(self.hello, 12, "latest/stable")])):
            code, answer = await device.refreshInstalled(installed)
            self.assertEqual(code, 200, answer)
        return a, b, c


class SingleNodeTests(FleetMixin, TestCase):
    """
    One node with SQLite state.
    """

    @deferred
    async def test_inventoryDevicesAndRestart(self):
        """
        Each refresh records the device's installed set and architecture;
        C{inventory} counts revision x channel x architecture; a later
        refresh replaces the set; identities and inventory survive a
        restart (the device's session is known from the state store).
        """
        await self.setUpStore()
        url, adminURL = await self.startNode()
        a, b, c = await self.fleet(url)
        code, answer = await self.admin(adminURL, b"GET", "/v1/devices")
        self.assertEqual(code, 200, answer)
        byId = {d["identity"]: d for d in answer["devices"]}
        self.assertEqual(sorted(byId), ["acme/gizmo/A", "acme/gizmo/B", "acme/gizmo/C"])
        deviceA = byId["acme/gizmo/A"]
        self.assertEqual(set(deviceA), {"identity", "model", "address", "architecture",
                                        "first-seen", "last-seen", "groups", "snaps"})
        self.assertEqual((deviceA["model"], deviceA["address"], deviceA["architecture"]),
                         ("acme/gizmo", "127.0.0.1", "amd64"))
        self.assertTrue(deviceA["last-seen"].endswith("Z"))
        self.assertEqual(deviceA["snaps"], [
            {"snap-id": self.hello, "name": "hello", "revision": 10, "channel": "latest/stable"},
            {"snap-id": self.world, "name": "world", "revision": 5, "channel": "latest/stable"}])
        self.assertEqual(byId["acme/gizmo/B"]["architecture"], "arm64")
        code, answer = await self.admin(adminURL, b"GET", "/v1/inventory?snap=hello")
        self.assertEqual(answer, {"snaps": [{"name": "hello", "snap-id": self.hello, "revisions": [
            {"revision": 10, "channel": "latest/stable", "architecture": "amd64", "devices": 1},
            {"revision": 11, "channel": "latest/stable", "architecture": "arm64", "devices": 1},
            {"revision": 12, "channel": "latest/stable", "architecture": "amd64", "devices": 1},
        ]}]})
        # The CLI prints exactly the API's document with --json.
        exit, out, err = await self.cli(adminURL, "inventory", "hello", "--json")
        self.assertEqual((exit, json.loads(out)), (0, answer), err)
        exit, out, err = await self.cli(adminURL, "devices", "--snap", "world", "--json")
        self.assertEqual([d["identity"] for d in json.loads(out)["devices"]], ["acme/gizmo/A"])
        exit, out, err = await self.cli(adminURL, "device", "acme/gizmo/B")
        self.assertEqual(exit, 0, err)
        self.assertIn("arm64", out)
        # A refreshes with world removed: its set is replaced.
        code, _ = await a.refreshInstalled([(self.hello, 12, "latest/stable")])
        code, answer = await self.admin(adminURL, b"GET", "/v1/inventory?snap=world")
        self.assertEqual(answer, {"snaps": []})
        # Restart: the same session is the same device; nothing duplicated.
        await self.process.kill(signal.SIGTERM)
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        url, adminURL = await self.startNode(dataDir=self.dataDir, storePort=port)
        code, answer = await b.refreshInstalled([(self.hello, 13, "latest/stable")])
        self.assertEqual((code, b.sessionsOpened, b.refusals), (200, 1, 0))
        code, answer = await self.admin(adminURL, b"GET", "/v1/inventory?snap=hello")
        self.assertEqual(answer["snaps"][0]["revisions"], [
            {"revision": 12, "channel": "latest/stable", "architecture": "amd64", "devices": 2},
            {"revision": 13, "channel": "latest/stable", "architecture": "arm64", "devices": 1}])
        code, answer = await self.admin(adminURL, b"GET", "/v1/devices")
        self.assertEqual(len(answer["devices"]), 3)

    @deferred
    async def test_groupsSeenByRules(self):
        """
        Groups are made of selectors; membership is computed when asked, so
        a group created after a device was seen holds it at once, and a
        rule denying group C{kiosks} applies to the next refresh.  Group
        changes are audited; bad selectors are refused clearly.
        """
        await self.setUpStore(kiosks=True)
        url, adminURL = await self.startNode()
        a, b, c = await self.fleet(url)
        exit, out, err = await self.cli(adminURL, "group", "create", "kiosks", "--serial", "A",
                                        "--device", "acme/gizmo/C")
        self.assertEqual(exit, 0, err)
        exit, out, err = await self.cli(adminURL, "group", "create", "arm", "--model",
                                        "acme/gizmo", "--network", "10.0.0.0/8")
        self.assertEqual(exit, 0, err)
        exit, out, err = await self.cli(adminURL, "group", "create", "lab",
                                        "--network", "127.0.0.0/8")
        exit, out, err = await self.cli(adminURL, "group", "list", "--json")
        groups = {g["name"]: g for g in json.loads(out)["groups"]}
        self.assertEqual(groups["kiosks"], {"name": "kiosks", "devices": 2, "selectors": {
            "serial": ["A"], "model": [], "network": [], "device": ["acme/gizmo/C"]}})
        self.assertEqual((groups["arm"]["devices"], groups["lab"]["devices"]), (3, 3))
        exit, out, err = await self.cli(adminURL, "group", "show", "kiosks", "--json")
        self.assertEqual(json.loads(out)["members"], ["acme/gizmo/A", "acme/gizmo/C"])
        exit, out, err = await self.cli(adminURL, "devices", "--group", "kiosks", "--json")
        self.assertEqual([(d["identity"], d["groups"]) for d in json.loads(out)["devices"]],
                         [("acme/gizmo/A", ["arm", "kiosks", "lab"]),
                          ("acme/gizmo/C", ["arm", "kiosks", "lab"])])
        # The rule sees the groups: A and C are refused, B is not.
        code, answer = await a.refreshInstalled([(self.hello, 10, "latest/stable")])
        self.assertEqual((code, answer["error-list"][0]["code"]), (403, "kiosk"))
        code, answer = await b.refreshInstalled([(self.hello, 11, "latest/stable")])
        self.assertEqual(code, 200, answer)
        exit, out, err = await self.cli(adminURL, "group", "delete", "kiosks")
        self.assertEqual(exit, 0, err)
        code, answer = await a.refreshInstalled([(self.hello, 10, "latest/stable")])
        self.assertEqual(code, 200, answer)
        exit, out, err = await self.cli(adminURL, "group", "create", "bad", "--network", "x")
        self.assertEqual(exit, 5)
        self.assertIn("is not a network", err)
        exit, out, err = await self.cli(adminURL, "group", "show", "kiosks")
        self.assertEqual(exit, 5)
        code, answer = await self.admin(adminURL, b"GET", "/v1/audit")
        actions = [(e["action"], e["target"]) for e in answer["entries"]]
        self.assertIn(("group.set", "group:kiosks"), actions)
        self.assertIn(("group.delete", "group:kiosks"), actions)

    @deferred
    async def test_whatWouldRefreshAndDryRun(self):
        """
        what-would-refresh lists, from each device's last context, the
        snaps a refresh would move (A amd64 10 -> 12, B arm64 11 -> 13; C
        is current); C{override --dry-run} gives the report with the pin
        set and sets nothing; once set for real the report is the same.
        """
        await self.setUpStore()
        url, adminURL = await self.startNode()
        await self.fleet(url)
        exit, out, err = await self.cli(adminURL, "what-would-refresh", "--json")
        self.assertEqual((exit, json.loads(out)), (0, {"changes": [
            {"device": "acme/gizmo/A", "snap": "hello", "channel": "latest/stable",
             "from": 10, "to": 12},
            {"device": "acme/gizmo/B", "snap": "hello", "channel": "latest/stable",
             "from": 11, "to": 13}]}), err)
        await self.cli(adminURL, "group", "create", "arm", "--serial", "B")
        exit, out, err = await self.cli(adminURL, "what-would-refresh", "--group", "arm",
                                        "--json")
        self.assertEqual([c["device"] for c in json.loads(out)["changes"]], ["acme/gizmo/B"])
        # Pin stable to 10 (amd64 only): A stays, C would go back to 10.
        exit, out, err = await self.cli(adminURL, "override", "hello", "stable=10",
                                        "--dry-run", "--json")
        dryRun = json.loads(out)
        self.assertEqual((exit, dryRun), (0, {"changes": [
            {"device": "acme/gizmo/B", "snap": "hello", "channel": "latest/stable",
             "from": 11, "to": 13},
            {"device": "acme/gizmo/C", "snap": "hello", "channel": "latest/stable",
             "from": 12, "to": 10}]}), err)
        code, answer = await self.admin(adminURL, b"GET", "/v1/overrides")
        self.assertEqual(answer["overrides"], [])
        exit, out, err = await self.cli(adminURL, "override", "hello", "stable=10")
        self.assertEqual(exit, 0, err)
        exit, out, err = await self.cli(adminURL, "what-would-refresh", "--json")
        self.assertEqual(json.loads(out), dryRun)
        exit, out, err = await self.cli(adminURL, "what-would-refresh", "--snap", "world")
        self.assertIn("No device would change", out)

    @deferred
    async def test_deliveriesRecordedAndVerified(self):
        """
        Every 200/206 download response to a device is a delivery row
        (device, snap, revision, sha3-384, bytes, complete, cache status),
        written in batches; C{deliveries verify} is intact, then names the
        row an edit of the database changed.
        """
        await self.setUpStore()
        url, adminURL = await self.startNode()
        a, b, c = await self.fleet(url)
        code, answer = await a.refresh(self.hello, 10)
        download = answer["results"][0]["snap"]["download"]["url"]
        size = self.store.blobSize("hello", 12)
        headers = Headers({b"Snap-Device-Authorization":
                           [f'Macaroon root="{a.macaroon}"'.encode()]})
        for extra in ({}, {}, {b"Range": [b"bytes=100-"]}):
            sent = Headers(dict(headers.getAllRawHeaders()))
            for name, value in extra.items():
                sent.setRawHeaders(name, value)
            response = await testAgent(self).request(b"GET", download.encode(), sent)
            await readBody(response)
        started = time.monotonic()
        while True:
            code, answer = await self.admin(adminURL, b"GET", "/v1/deliveries")
            if len(answer["deliveries"]) == 3 or time.monotonic() - started > 20:
                break
            await deferLater(reactor, 0.2, lambda: None)
        rows = answer["deliveries"]
        self.assertEqual([(r["device"], r["snap"], r["revision"], r["bytes"], r["complete"],
                           r["cache"]) for r in rows],
                         [("acme/gizmo/A", "hello", 12, size, True, "MISS"),
                          ("acme/gizmo/A", "hello", 12, size, True, "HIT"),
                          ("acme/gizmo/A", "hello", 12, size - 100, True, "HIT")])
        self.assertEqual({r["sha3-384"] for r in rows}, {self.store.blobDigest("hello", 12)})
        exit, out, err = await self.cli(adminURL, "deliveries", "--csv", "--device",
                                        "acme/gizmo/A")
        self.assertEqual(out.splitlines()[0],
                         "time,device,snap,snap-id,revision,sha3-384,bytes,complete,cache")
        self.assertEqual(len(out.splitlines()), 4)
        exit, out, err = await self.cli(adminURL, "deliveries", "--since", "1h", "--snap",
                                        "hello", "--json")
        self.assertEqual(len(json.loads(out)["deliveries"]), 3)
        future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        exit, out, err = await self.cli(adminURL, "deliveries", "--since", future, "--json")
        self.assertEqual(json.loads(out)["deliveries"], [])
        exit, out, err = await self.cli(adminURL, "deliveries", "verify")
        self.assertEqual(exit, 0, out + err)
        self.assertIn("intact: 3 rows", out)
        database = sqlite3.connect(os.path.join(self.dataDir, "state.sqlite"))
        with database:
            database.execute("UPDATE delivery_log SET bytes = 1 WHERE id = 2")
        database.close()
        exit, out, err = await self.cli(adminURL, "deliveries", "verify")
        self.assertEqual(exit, 1)
        self.assertIn("BROKEN at row 2", out)

    @deferred
    async def test_cleanStopWritesQueuedRows(self):
        """
        Rows still queued for their batch when the service is stopped
        (SIGTERM) are written before it exits.
        """
        await self.setUpStore()
        url, adminURL = await self.startNode()
        a, b, c = await self.fleet(url)
        code, answer = await a.refresh(self.hello, 10)
        download = answer["results"][0]["snap"]["download"]["url"]
        response = await testAgent(self).request(b"GET", download.encode())
        await readBody(response)
        await self.process.kill(signal.SIGTERM)
        url, adminURL = await self.startNode(dataDir=self.dataDir)
        code, answer = await self.admin(adminURL, b"GET", "/v1/deliveries")
        self.assertEqual([(r["device"], r["revision"], r["cache"]) for r in answer["deliveries"]],
                         [("address:127.0.0.1", 12, "MISS")])


class TwoNodeTests(FleetMixin, TestCase):
    """
    Two nodes sharing one PostgreSQL database agree on groups and
    inventory.
    """

    skip = pgtest.skipReason()

    @deferred
    async def test_nodesAgree(self):
        """
        Devices refreshing through node A and node B make one inventory,
        which both nodes report; a group created through A is seen by the
        rules of B at once (its refresh is refused there), and B lists its
        members.
        """
        await self.setUpStore(kiosks=True)
        database = pgtest.TemporaryDatabase()
        self.addCleanup(database.drop)
        urlA, adminA = await self.startNode(state=databaseURL(database))
        urlB, adminB = await self.startNode(state=databaseURL(database))
        a = SnapdDevice(self, urlA, "A")
        b = SnapdDevice(self, urlB, "B", architecture="arm64")
        self.assertEqual((await a.refreshInstalled([(self.hello, 10, "latest/stable")]))[0], 200)
        self.assertEqual((await b.refreshInstalled([(self.hello, 11, "latest/stable")]))[0], 200)
        answers = [await self.admin(admin, b"GET", "/v1/inventory") for admin in (adminA, adminB)]
        self.assertEqual(answers[0], answers[1])
        self.assertEqual([(r["revision"], r["architecture"], r["devices"])
                          for r in answers[0][1]["snaps"][0]["revisions"]],
                         [(10, "amd64", 1), (11, "arm64", 1)])
        code, answer = await self.admin(adminA, b"PUT", "/v1/groups/kiosks",
                                        {"selectors": {"serial": ["B"]}})
        self.assertEqual(code, 200, answer)
        started = time.monotonic()
        while True:
            code, answer = await b.refreshInstalled([(self.hello, 11, "latest/stable")])
            if code == 403 or time.monotonic() - started > 10:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual((code, answer["error-list"][0]["code"]), (403, "kiosk"))
        code, answer = await self.admin(adminB, b"GET", "/v1/groups/kiosks")
        self.assertEqual(answer["members"], ["acme/gizmo/B"])


class CountingState:
    """
    A real state store that counts the inventory writes asked of it.
    """

    def __init__(self, store):
        self.store = store
        self.inventoryWrites = 0

    def recordInventory(self, *args):
        self.inventoryWrites += 1
        return self.store.recordInventory(*args)

    def recordSnapNames(self, names):
        return self.store.recordSnapNames(names)


class InventoryWriteTests(TestCase):
    """
    L{InventoryRecorder} writes a device's refresh only when it reports
    something new, or when its last-seen time is L{LAST_SEEN_RESOLUTION}
    old.
    """

    async def recorder(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        store = SQLiteStateStore(reactor, self.mktemp(), clock=self.clock)
        self.addCleanup(store.close)
        await store.start()
        self.state = CountingState(store)
        return InventoryRecorder(self.state, self.clock)

    def refresh(self, revision, serial="SN-1"):
        body = json.dumps({"context": [{"snap-id": "h" * 32, "revision": revision,
                                        "tracking-channel": "latest/stable"}],
                           "actions": []}).encode()
        return StoreRequest(b"POST", "/v2/snaps/refresh", body=body,
                            query={"architecture": ["amd64"]},
                            device=DeviceIdentity(f"acme/gizmo/{serial}", "acme/gizmo",
                                                  "10.0.0.1"))

    answer = json.dumps({"results": [{"snap-id": "h" * 32, "name": "hello"}]}).encode()

    async def lastSeen(self, serial="SN-1"):
        [device] = await self.state.store.listFleet(identity=f"acme/gizmo/{serial}")
        return device

    @deferred
    async def test_unchangedRefreshNotWritten(self):
        """
        A second identical refresh writes nothing; a changed installed set
        is written at once.
        """
        recorder = await self.recorder()
        await recorder.noteAnswer(self.refresh(10), 200, self.answer)
        self.assertEqual(self.state.inventoryWrites, 1)
        self.clock.advance(30)
        await recorder.noteAnswer(self.refresh(10), 200, self.answer)
        self.assertEqual(self.state.inventoryWrites, 1)
        self.clock.advance(30)
        await recorder.noteAnswer(self.refresh(12), 200, self.answer)
        self.assertEqual(self.state.inventoryWrites, 2)
        device = await self.lastSeen()
        self.assertEqual([(s.snapId, s.revision) for s in device.snaps], [("h" * 32, 12)])
        self.assertEqual(device.lastSeen, self.clock.seconds())
        await recorder.noteAnswer(self.refresh(12, serial="SN-2"), 200, self.answer)
        self.assertEqual(self.state.inventoryWrites, 3)

    @deferred
    async def test_lastSeenAdvancesPerResolution(self):
        """
        Identical refreshes still move the device's last-seen time, once
        it is L{LAST_SEEN_RESOLUTION} seconds old.
        """
        recorder = await self.recorder()
        first = self.clock.seconds()
        await recorder.noteAnswer(self.refresh(10), 200, self.answer)
        self.clock.advance(LAST_SEEN_RESOLUTION - 1)
        await recorder.noteAnswer(self.refresh(10), 200, self.answer)
        self.assertEqual((await self.lastSeen()).lastSeen, first)
        self.clock.advance(1)
        await recorder.noteAnswer(self.refresh(10), 200, self.answer)
        self.assertEqual(self.state.inventoryWrites, 2)
        self.assertEqual((await self.lastSeen()).lastSeen, first + LAST_SEEN_RESOLUTION)

    @deferred
    async def test_failedWriteRetried(self):
        """
        A write that failed is not remembered as written: the next
        identical refresh writes again.
        """
        recorder = await self.recorder()
        self.state.store.close()
        await recorder.noteAnswer(self.refresh(10), 200, self.answer)
        self.assertEqual(self.state.inventoryWrites, 1)
        await recorder.noteAnswer(self.refresh(10), 200, self.answer)
        self.assertEqual(self.state.inventoryWrites, 2)


class UnitTests(SynchronousTestCase):
    """
    The pure parts: contexts, names, selectors, membership.
    """

    def test_context(self):
        body = {"context": [{"snap-id": "x" * 32, "revision": 3, "tracking-channel": "edge"},
                            {"snap-id": "", "revision": 1}, {"snap-id": "y", "revision": True},
                            "junk"]}
        self.assertEqual([(s.snapId, s.revision, s.channel) for s in installedSnaps(body)],
                         [("x" * 32, 3, "edge")])
        self.assertIsNone(installedSnaps({"actions": []}))
        self.assertEqual(installedSnaps({"context": []}), [])

    def test_names(self):
        self.assertEqual(namesIn({"results": [{"snap-id": "i", "name": "n"}, {"name": "m"}]}),
                         {"i": "n"})
        self.assertEqual(namesIn({"snap-id": "i", "name": "n"}), {"i": "n"})

    def test_selectors(self):
        for bad in ({"network": ["nope"]}, {"model": ["nobrand"]}, {"serial": ["a/b"]},
                    {"colour": ["red"]}, {}, {"device": "x"}):
            self.assertRaises(GroupError, checkSelectors, bad)
        group = DeviceGroup("g", checkSelectors({"network": ["10.1.0.0/16"],
                                                 "serial": ["S1"]}))
        self.assertEqual(groupsOf([group], "b/m/S1", "192.168.0.1"), ("g",))
        self.assertEqual(groupsOf([group], "address:10.1.2.3", "10.1.2.3"), ("g",))
        self.assertEqual(groupsOf([group], "b/m/S2", "10.2.0.1"), ())
        self.assertEqual(groupsOf([group], "b/m/S2", "::1"), ())
