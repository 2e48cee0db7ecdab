"""
Devices known by the sessions upstream granted them, through real
C{twistd snapstore} processes (SQLite state) in front of the fake store:
known devices survive a restart, unknown sessions are asked to identify
themselves (bounded), renewals keep one identity, and forged session
requests count for nothing.
"""

from __future__ import annotations

import json
import signal
from io import BytesIO

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from tests.fakestore import FakeStore
from tests.helpers import deferred, testAgent
from tests.ports import freePort
from tests.processes import startTwistd, waitForPort
from tests.sessionclient import SnapdDevice
from tests.test_rules_support import copyShipped

LIMIT_ERROR = "device-limit-exceeded"


class Node:
    """
    One C{twistd snapstore} process and its URLs.
    """

    def __init__(self, process, url, adminURL):
        self.process = process
        self.url = url
        self.adminURL = adminURL


class NodeTestsMixin:
    """
    The fake store with C{hello} revisions 10 and 12 (stable at 12), the
    shipped rules with C{limit = 2}, and nodes started on demand.
    """

    timeout = 180

    async def setUpStore(self):
        self.store = await FakeStore(reactor).startFor(self)
        self.snapId = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 4096)
        self.store.addRevision("hello", 12, 4096)
        self.rulesDir = copyShipped(self, limit="2")
        self.dataDir = self.mktemp()

    async def startNode(self, *options, state=None, storePort=None, adminPort=None):
        adminPort = adminPort or freePort()
        argv = ["--upstream", self.store.apiURL, "--proxy-endpoint", "none",
                "--admin-endpoint", f"tcp:{adminPort}:interface=127.0.0.1",
                "--rules-dir", self.rulesDir, "--config", "/dev/null", *options]
        argv += ["--data-dir", self.dataDir] if state is None else [
            "--data-dir", self.mktemp(), "--state", state]
        process, storePort = await startTwistd(self, *argv, storePort=storePort)
        await waitForPort(adminPort, process)
        return Node(process, f"http://127.0.0.1:{storePort}/",
                    f"http://127.0.0.1:{adminPort}/")

    async def admin(self, node, method, path, body=None):
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode())) if body else None
        response = await testAgent(self).request(
            method, (node.adminURL + path).encode(),
            Headers({b"Content-Type": [b"application/json"]}), producer)
        return response.code, json.loads(await readBody(response))

    async def identities(self, node):
        code, answer = await self.admin(node, b"GET", "v1/devices")
        self.assertEqual(code, 200, answer)
        return sorted(device["identity"] for device in answer["devices"])


class SingleNodeTests(NodeTestsMixin, TestCase):
    """
    One node with SQLite state.
    """

    @deferred
    async def test_restartKeepsKnownDevices(self):
        """
        Two devices at the limit of two refresh, the node restarts, and the
        same devices refresh again with the same sessions: both are served
        (before, both got 403 device-limit-exceeded), without opening a new
        session, and a third device is still refused.
        """
        await self.setUpStore()
        node = await self.startNode()
        devices = [SnapdDevice(self, node.url, f"SERIAL-{n}") for n in (1, 2)]
        for device in devices:
            self.assertEqual(await device.refreshedRevision(self.snapId), 12)
        await node.process.kill(signal.SIGTERM)
        port = int(node.url.rsplit(":", 1)[1].rstrip("/"))
        node = await self.startNode(storePort=port)
        for device in devices:
            self.assertEqual(await device.refreshedRevision(self.snapId), 12)
            self.assertEqual((device.sessionsOpened, device.refusals), (1, 0))
        third = SnapdDevice(self, node.url, "SERIAL-3")
        code, answer = await third.refresh(self.snapId, 9)
        self.assertEqual((code, answer["error-list"][0]["code"]), (403, LIMIT_ERROR))
        self.assertEqual(await self.identities(node),
                         ["acme/gizmo/SERIAL-1", "acme/gizmo/SERIAL-2"])

    @deferred
    async def test_sessionOpenedElsewhereIdentified(self):
        """
        A device whose session was opened straight against the store (before
        the site pointed it at snapstore) gets C{401} with
        C{WWW-Authenticate: Macaroon refresh_device_session=1} and the
        store's error shape on its refresh; it opens a new session through
        snapstore, retries, is served, and is known by its serial, never by
        its address.
        """
        await self.setUpStore()
        node = await self.startNode()
        device = SnapdDevice(self, node.url, "SERIAL-1", sessionURL=self.store.apiURL)
        code, _ = await device.openSession()
        self.assertEqual(code, 200)
        # A raw refresh first, to see the answer snapd gets.
        code, answer, headers = await device._request(
            node.url, b"POST", "v2/snaps/refresh",
            {"context": [], "actions": [], "fields": ["revision"]})
        self.assertEqual(code, 401)
        self.assertEqual(headers.getRawHeaders(b"www-authenticate"),
                         [b"Macaroon refresh_device_session=1"])
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(answer["error-list"][0]["code"], "device-authorization-needed")
        device.sessionURL = node.url
        self.assertEqual(await device.refreshedRevision(self.snapId), 12)
        self.assertEqual((device.sessionsOpened, device.refusals), (2, 1))
        self.assertEqual(await self.identities(node), ["acme/gizmo/SERIAL-1"])
        # The renewal went upstream with the old session, as snapd sends it.
        self.assertEqual([s.serial for s in self.store.sessions], ["SERIAL-1", "SERIAL-1"])

    @deferred
    async def test_renewalCountedOnce(self):
        """
        A device that renews its session (a new macaroon) stays one device:
        one row, one of the two places, and a second device still fits.
        """
        await self.setUpStore()
        node = await self.startNode()
        device = SnapdDevice(self, node.url, "SERIAL-1")
        await device.refreshedRevision(self.snapId)
        first = device.macaroon
        for _ in range(3):
            await device.openSession()
            await device.refreshedRevision(self.snapId)
        self.assertNotEqual(device.macaroon, first)
        other = SnapdDevice(self, node.url, "SERIAL-2")
        self.assertEqual(await other.refreshedRevision(self.snapId), 12)
        self.assertEqual(await self.identities(node),
                         ["acme/gizmo/SERIAL-1", "acme/gizmo/SERIAL-2"])
        code, status = await self.admin(node, b"GET", "v1/status")
        self.assertEqual(code, 200, status)
        self.assertEqual(status["devices"]["connected"], 2, status)

    @deferred
    async def test_loopBounded(self):
        """
        A device whose sessions never go through snapstore (so renewing
        never makes it known) is asked twice, then counted by its address:
        its refresh is served after two refusals, not looped.
        """
        await self.setUpStore()
        node = await self.startNode()
        device = SnapdDevice(self, node.url, "SERIAL-1", sessionURL=self.store.apiURL)
        self.assertEqual(await device.refreshedRevision(self.snapId), 12)
        self.assertEqual(device.refusals, 2)
        self.assertEqual(await device.refreshedRevision(self.snapId), 12)
        self.assertEqual(device.refusals, 2)
        self.assertEqual(await self.identities(node), ["address:127.0.0.1"])

    @deferred
    async def test_forgedSessionsDoNotCount(self):
        """
        Session requests upstream refuses (forged serials: the store knows
        no key for them) are relayed with upstream's refusal and leave the
        device count unchanged, so the two real devices still fit under the
        limit of two.  Before, each forged request counted as a device.
        """
        await self.setUpStore()
        self.store.registerDevice("REAL-1")
        self.store.registerDevice("REAL-2")
        node = await self.startNode()
        for n in range(20):
            forged = SnapdDevice(self, node.url, f"FORGED-{n}")
            code, answer = await forged.openSession()
            self.assertEqual(code, 400, answer)
        self.assertEqual(await self.identities(node), [])
        for serial in ("REAL-1", "REAL-2"):
            device = SnapdDevice(self, node.url, serial)
            self.assertEqual(await device.refreshedRevision(self.snapId), 12)
        self.assertEqual(await self.identities(node),
                         ["acme/gizmo/REAL-1", "acme/gizmo/REAL-2"])

    @deferred
    async def test_sessionRequestsBounded(self):
        """
        With C{--device-session-rate 3}, a fourth session request from one
        address within the minute gets C{429 too-many-requests} and never
        reaches upstream.
        """
        await self.setUpStore()
        node = await self.startNode("--device-session-rate", "3")
        codes = []
        for n in range(4):
            code, answer = await SnapdDevice(self, node.url, f"S{n}").openSession()
            codes.append(code)
        self.assertEqual(codes, [200, 200, 200, 429])
        self.assertEqual(answer["error-list"][0]["code"], "too-many-requests")
        self.assertEqual(len(self.store.sessions), 3)
