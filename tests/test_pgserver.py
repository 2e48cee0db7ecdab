"""
Nodes on a real PostgreSQL server that the test stops, restarts and starts
again (its own cluster, L{tests.pgcluster}; the machine's server is never
touched): what a node decides while its database is away, and that nothing
is lost and every node reconnects when it is back.
"""

from __future__ import annotations

import hashlib
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests import pgcluster
from tests.sessionclient import SnapdDevice
from tests.test_device_sessions import LIMIT_ERROR, NodeTestsMixin, deferred

PIN = {"channel-map": [{"channel": "stable", "revision": 10}]}


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class RealServerMixin(NodeTestsMixin):
    """
    The fake store, the shipped rules with C{limit = 2}, and a PostgreSQL
    cluster of the test's own.
    """

    skip = pgcluster.skipReason()
    timeout = 300

    async def setUpServer(self):
        await self.setUpStore()
        self.cluster = pgcluster.PostgresCluster()
        await self.cluster.start(self)
        self.stateURL = self.cluster.dsn("snapstore")

    async def untilAdminAccepts(self, node, path, body, bound=60.0):
        """
        Repeat an admin change until the node takes it (its database is
        back); fail after C{bound} seconds.
        """
        started = time.monotonic()
        while True:
            code, answer = await self.admin(node, b"POST", path, body)
            if code == 200:
                return time.monotonic() - started
            self.assertLess(time.monotonic() - started, bound, f"never reconnected: {answer}")
            await sleep(0.2)

    async def until(self, predicate, what, bound=60.0):
        started = time.monotonic()
        while not await predicate():
            self.assertLess(time.monotonic() - started, bound, what)
            await sleep(0.2)

    def storedDigests(self):
        return {row[0] for row in self.cluster.execute("SELECT digest FROM device_sessions")}


def digest(macaroon):
    return hashlib.sha256(macaroon.encode()).hexdigest()


class OutageTests(RealServerMixin, TestCase):
    """
    The server stopped under a running node, and a node started while it
    is stopped.
    """

    @deferred
    async def test_outageKeepsPolicy(self):
        """
        With the server stopped just after a pin was set, a running node
        still answers a refresh with the pin (before, 503 state-unavailable), admits the known device and a new one within
        the limit, refuses one beyond it, and refuses admin changes (503).
        A node started meanwhile says so in its log and refuses (503) the
        refresh it cannot decide rather than offer the unpinned revision.
        When the server is back both heal: changes are taken, the device
        and session learnt during the outage are in the database, and the
        late node serves the pin.
        """
        await self.setUpServer()
        node = await self.startNode(state=self.stateURL)
        code, answer = await self.admin(node, b"PUT", "v1/device-limit", {"limit": 2})
        self.assertEqual(code, 200, answer)
        known = SnapdDevice(self, node.url, "serial-1")
        self.assertEqual(await known.refreshedRevision(self.snapId), 12)
        code, answer = await self.admin(node, b"POST", "v1/overrides/hello", PIN)
        self.assertEqual(code, 200, answer)

        # No refresh in between: the pin must be known from the change alone.
        await self.cluster.stop()
        self.assertEqual(await known.refreshedRevision(self.snapId), 10)
        self.assertEqual((known.sessionsOpened, known.refusals), (1, 0))
        second = SnapdDevice(self, node.url, "serial-2")
        self.assertEqual(await second.refreshedRevision(self.snapId), 10)
        third = SnapdDevice(self, node.url, "serial-3")
        code, answer = await third.refresh(self.snapId, 9)
        self.assertEqual((code, answer["error-list"][0]["code"]), (403, LIMIT_ERROR))
        code, answer = await self.admin(node, b"POST", "v1/overrides/hello",
                                        {"channel-map": [{"channel": "stable", "revision": 12}]})
        self.assertEqual(code, 503, answer)

        late = await self.startNode(state=self.stateURL)
        lateDevice = SnapdDevice(self, late.url, "serial-1")
        code, answer = await lateDevice.refresh(self.snapId, 9)
        self.assertEqual((code, answer["error-list"][0]["code"]), (503, "state-unavailable"))
        await late.process.printed("State store not ready")

        await self.cluster.restart()
        await self.untilAdminAccepts(node, "v1/overrides/hello", PIN)

        async def written():
            return digest(second.macaroon) in self.storedDigests()

        await self.until(written, "the session learnt during the outage was never written")

        async def listed():
            return "acme/gizmo/serial-2" in await self.identities(node)

        await self.until(listed, "the device admitted during the outage was never written")

        async def lateServes():
            code, answer = await lateDevice.refresh(self.snapId, 9)
            return code == 200 and answer["results"][0]["snap"]["revision"] == 10

        await self.until(lateServes, "the node started during the outage never healed")


class RestartUnderLoadTests(RealServerMixin, TestCase):
    """
    Two nodes on one server that restarts while devices refresh.
    """

    @deferred
    async def test_restartUnderLoad(self):
        """
        Six devices refresh continuously through two nodes, renewing their
        sessions now and then, while the server is stopped and started
        again.  Every refresh is answered with the pinned revision; once the
        server is back every device and every session granted (also those
        granted while it was down) is in the database, and both nodes
        reconnected: a pin changed through one is served by the other.
        """
        await self.setUpServer()
        nodes = [await self.startNode(state=self.stateURL) for _ in range(2)]
        code, answer = await self.admin(nodes[0], b"PUT", "v1/device-limit", {"limit": 10})
        self.assertEqual(code, 200, answer)
        code, answer = await self.admin(nodes[0], b"POST", "v1/overrides/hello", PIN)
        self.assertEqual(code, 200, answer)
        devices = [SnapdDevice(self, nodes[n % 2].url, f"serial-{n}") for n in range(6)]
        outcomes = []
        running = [True]

        async def load(device):
            rounds = 0
            while running[0]:
                code, answer = await device.refresh(self.snapId, 9)
                revision = answer["results"][0]["snap"]["revision"] if code == 200 else None
                outcomes.append((device.serial, code, revision))
                rounds += 1
                if rounds % 5 == 0:
                    await device.openSession()
                await sleep(0.05)

        from twisted.internet.defer import Deferred, gatherResults

        loads = gatherResults([Deferred.fromCoroutine(load(d)) for d in devices],
                              consumeErrors=True)
        def refreshed(count):
            """
            Until C{count} more refreshes were answered (every device
            refreshes about twice), however slow the machine is.
            """
            target = len(outcomes) + count

            async def enough():
                return len(outcomes) >= target

            return enough

        await self.until(refreshed(2 * len(devices)), "no refresh was answered")
        before = len(outcomes)
        await self.cluster.stop()
        await self.until(refreshed(2 * len(devices)),
                         "no refresh was answered while the server was down")
        during = len(outcomes) - before
        await self.cluster.restart()
        await self.until(refreshed(2 * len(devices)),
                         "no refresh was answered after the server came back")
        running[0] = False
        await loads

        self.assertGreater(during, 0, "no refresh was made while the server was down")
        self.assertEqual({(code, revision) for _, code, revision in outcomes}, {(200, 10)},
                         [o for o in outcomes if o[1:] != (200, 10)][:5])

        for node in nodes:
            await self.untilAdminAccepts(node, "v1/overrides/hello", PIN)
        granted = {digest(m) for device in devices for m in device.macaroons}

        async def sessionsWritten():
            return granted <= self.storedDigests()

        await self.until(sessionsWritten, "sessions granted around the restart were lost")
        expected = sorted(device.identity for device in devices)

        async def devicesWritten():
            return await self.identities(nodes[1]) == expected

        await self.until(devicesWritten, "devices seen around the restart were lost")

        code, answer = await self.admin(nodes[0], b"POST", "v1/overrides/hello",
                                        {"channel-map": [{"channel": "stable", "revision": 12}]})
        self.assertEqual(code, 200, answer)
        watcher = SnapdDevice(self, nodes[1].url, "serial-0")
        watcher.macaroon = devices[0].macaroon

        async def otherNodeTold():
            return await watcher.refreshedRevision(self.snapId) == 12

        await self.until(otherNodeTold, "node B never heard of the change made through A",
                         bound=10.0)
