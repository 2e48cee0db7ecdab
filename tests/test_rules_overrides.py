# -*- test-case-name: tests.test_rules_overrides -*-
"""
Tests for revision overrides (L{snapstore.rules.overrides}) through the
store endpoint, over loopback, with the fake store as upstream whose
C{stable} channel moves from revision 10 to 12.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from snapstore.rules.overrides import (
    OverrideError,
    resolveOverride,
    resolveOverrides,
)
from snapstore.state.records import deviceChannel, Override
from tests.fakestore import FakeStore
from tests.helpers import deferred, testAgent
from tests.test_rules_support import Proxy, copyShipped


class ChannelKeyTests(TestCase):
    """
    L{deviceChannel} spells channels the way the state store keys them.
    """

    def test_forms(self):
        """
        C{stable} and C{latest/stable} are one channel; a bare track means
        its stable risk; nonsense is C{None}.
        """
        self.assertEqual(deviceChannel("stable"), "latest/stable")
        self.assertEqual(deviceChannel("latest/stable"), "latest/stable")
        self.assertEqual(deviceChannel("2.0"), "2.0/stable")
        self.assertEqual(deviceChannel("2.0/beta"), "2.0/beta")
        self.assertEqual(deviceChannel("stable/hotfix"), "latest/stable/hotfix")
        self.assertIsNone(deviceChannel(""))
        self.assertIsNone(deviceChannel(None))
        self.assertIsNone(deviceChannel("a/b/c/d"))


class OverrideTestsMixin:
    """
    A fake store with C{hello} at 10 on stable (amd64), 11 on beta, 12
    uploaded but unreleased, and 13 on stable for arm64; a proxy with the
    shipped rules in front of it.
    """

    timeout = 60

    async def startStore(self):
        self.store = FakeStore(reactor)
        self.store.addSnap("hello", publisher="canonical")
        self.store.addRevision("hello", 10, 20000)
        self.store.addRevision("hello", 11, 21000, channels=("beta",))
        self.store.addRevision("hello", 12, 22000, channels=())
        self.store.addRevision("hello", 13, 23000, architectures=("arm64",))
        self.store.addSnap("other")
        self.store.addRevision("other", 5, 1000)
        await self.store.startFor(self)
        self.snapId = self.store.snapId("hello")

    async def startProxy(self, state=None):
        self.proxy = await Proxy(self, self.store.apiURL, copyShipped(self), state=state).start()
        return self.proxy

    async def pin(self, channel, revision, snap="hello"):
        """
        What the admin's C{override} verb does: resolve, then store.
        """
        overrides = await resolveOverrides(self.proxy.parts.upstream, snap, channel, revision)
        for override in overrides:
            await self.proxy.state.setOverride(override, "admin@test")
        return overrides


class OverrideTests(OverrideTestsMixin, TestCase):
    """
    Devices on a pinned channel get exactly the pinned revision.
    """

    def setUp(self):
        async def setUp():
            await self.startStore()
            await self.startProxy()

        return ensureDeferred(setUp())

    @deferred
    async def test_pinHoldsWhileUpstreamMoves(self):
        """
        With C{override hello stable=10} and upstream's stable moved to 12,
        a device on stable with an older or newer revision is offered 10, a
        device on 10 is told there is no update (its own revision), a
        device on beta still gets beta's 11, and after the override is
        deleted the device gets 12.
        """
        await self.pin("stable", 10)
        self.store.release("hello", "stable", 12)
        for installed in (9, 11, 12):
            result = await self.proxy.refresh(self.snapId, installed, "latest/stable")
            self.assertEqual((result["result"], result["snap"]["revision"]), ("refresh", 10),
                             installed)
            self.assertEqual(result["instance-key"], self.snapId)
            self.assertEqual(result["snap"]["download"]["url"],
                             f"{self.proxy.url}api/v1/snaps/download/{self.snapId}_10.snap")
            self.assertEqual(result["snap"]["download"]["sha3-384"],
                             self.store.blobDigest("hello", 10))
        result = await self.proxy.refresh(self.snapId, 10, "stable")
        self.assertEqual(result["snap"]["revision"], 10)
        result = await self.proxy.refresh(self.snapId, 10, "latest/beta")
        self.assertEqual(result["snap"]["revision"], 11)
        removed = await self.proxy.state.deleteOverride("hello", "latest/stable", "admin@test")
        self.assertEqual([o.revision for o in removed], [10])
        result = await self.proxy.refresh(self.snapId, 10, "latest/stable")
        self.assertEqual(result["snap"]["revision"], 12)

    @deferred
    async def test_pinUpgrades(self):
        """
        A pin above what upstream's channel holds is offered too (the
        channel is upgraded for devices of this proxy).
        """
        await self.pin("stable", 12)
        result = await self.proxy.refresh(self.snapId, 10, "stable")
        self.assertEqual(result["snap"]["revision"], 12)

    @deferred
    async def test_installAndDownloadActions(self):
        """
        Installs and downloads from the pinned channel (either spelling)
        get the pinned revision with their own instance keys and result
        types; an install of an explicit revision is left alone; other
        snaps are untouched.
        """
        await self.pin("latest/stable", 10)
        self.store.release("hello", "stable", 12)
        for channel in ("stable", "latest/stable"):
            result = await self.proxy.install("hello", channel)
            self.assertEqual((result["result"], result["instance-key"]), ("install", "install-1"))
            self.assertEqual(result["snap"]["revision"], 10)
        result = await self.proxy.install("hello", "stable", action="download")
        self.assertEqual((result["result"], result["instance-key"]), ("download", "download-1"))
        self.assertEqual(result["snap"]["revision"], 10)
        code, answer = await self.proxy.call(b"POST", "v2/snaps/refresh", {
            "context": [], "fields": ["revision"],
            "actions": [{"action": "install", "instance-key": "install-1", "name": "hello",
                         "revision": 12, "epoch": None}]})
        self.assertEqual(answer["results"][0]["snap"]["revision"], 12)
        result = await self.proxy.install("other", "stable")
        self.assertEqual(result["snap"]["revision"], 5)

    @deferred
    async def test_pinIsPerArchitecture(self):
        """
        A pin applies to the architecture its revision was built for: an
        arm64 device on stable still gets arm64's revision.
        """
        [override] = await self.pin("stable", 10)
        self.assertEqual(override.architecture, "amd64")
        result = await self.proxy.refresh(self.snapId, 1, "stable", architecture="arm64")
        self.assertEqual(result["snap"]["revision"], 13)

    @deferred
    async def test_infoChannelMap(self):
        """
        C{info} shows the pinned revision, with its own download details, on
        the pinned channel and architecture only.
        """
        await self.pin("stable", 10)
        self.store.release("hello", "stable", 12)
        code, answer = await self.proxy.call(
            b"GET", "v2/snaps/info/hello?fields=revision,download,version")
        self.assertEqual(code, 200)
        entries = {(e["channel"]["architecture"], e["channel"]["name"]): e
                   for e in answer["channel-map"]}
        stable = entries[("amd64", "stable")]
        self.assertEqual(stable["revision"], 10)
        self.assertEqual(stable["download"]["sha3-384"], self.store.blobDigest("hello", 10))
        self.assertTrue(stable["download"]["url"].startswith(self.proxy.url))
        self.assertEqual(entries[("amd64", "beta")]["revision"], 11)
        self.assertEqual(entries[("arm64", "stable")]["revision"], 13)
        self.assertEqual(set(stable), {"channel", "revision", "download", "version"})

    @deferred
    async def test_pinnedBlobDownloads(self):
        """
        The pinned revision's download URL serves its exact bytes through
        the proxy, fetched from upstream once.
        """
        await self.pin("stable", 10)
        self.store.release("hello", "stable", 12)
        result = await self.proxy.install("hello", "stable")
        response = await testAgent(self).request(
            b"GET", result["snap"]["download"]["url"].encode(),
            Headers({b"X-Ubuntu-Architecture": [b"amd64"]}))
        body = await readBody(response)
        self.assertEqual(response.code, 200)
        self.assertEqual(hashlib.sha3_384(body).hexdigest(), self.store.blobDigest("hello", 10))
        self.assertEqual(len(self.store.cdnDownloads("hello", 10)), 1)
        self.assertEqual(self.store.cdnDownloads("hello", 12), [])

    @deferred
    async def test_deviceHeadersSentUpstream(self):
        """
        The proxy asks upstream for the pinned revision with the device's
        own headers (its architecture and session), as the device would.
        """
        await self.pin("stable", 10)
        self.store.release("hello", "stable", 12)
        macaroon = await self.proxy.openSession("S1")
        self.store.resetTraffic()
        await self.proxy.refresh(self.snapId, 11, "stable", session=macaroon)
        asks = self.store.requestsTo("POST", "/v2/snaps/refresh")
        self.assertEqual(len(asks), 2)
        pinned = json.loads(asks[1].body)
        self.assertEqual(pinned["actions"][0]["revision"], 10)
        self.assertEqual(asks[1].header("snap-device-authorization"),
                         f'Macaroon root="{macaroon}"')
        self.assertEqual(asks[1].header("snap-device-architecture"), "amd64")

    @deferred
    async def test_unavailablePinnedRevision(self):
        """
        When upstream no longer has the pinned revision for the device, the
        device gets upstream's error for it, never the unpinned revision.
        """
        await self.proxy.state.setOverride(
            Override("hello", "stable", 77, "amd64", self.snapId), "admin@test")
        result = await self.proxy.refresh(self.snapId, 10, "stable")
        self.assertEqual(result["result"], "error")
        self.assertEqual(result["instance-key"], self.snapId)

    @deferred
    async def test_overrideChangesSeenAtOnce(self):
        """
        A pin set after the rule read the table is used on the next call
        (the state store's change notification drops the cached table).
        """
        result = await self.proxy.refresh(self.snapId, 9, "stable")
        self.assertEqual(result["snap"]["revision"], 10)
        await self.pin("stable", 12)
        result = await self.proxy.refresh(self.snapId, 9, "stable")
        self.assertEqual(result["snap"]["revision"], 12)


class ResolveOverrideTests(OverrideTestsMixin, TestCase):
    """
    L{resolveOverride}: what the admin's C{override} verb calls to check a
    revision with upstream before storing it.
    """

    def setUp(self):
        async def setUp():
            await self.startStore()
            self.store.addRevision("hello", 20, 1000, architectures=("amd64", "arm64"),
                                   channels=())
            await self.startProxy()

        return ensureDeferred(setUp())

    @deferred
    async def test_resolve(self):
        """
        The override names the snap-id, the normalised channel and the
        revision's architecture, learnt from upstream.
        """
        override = await resolveOverride(self.proxy.parts.upstream, "hello", "stable", 13)
        self.assertEqual(override, Override(snapName="hello", channel="latest/stable",
                                            revision=13, architecture="arm64",
                                            snapId=self.snapId))

    @deferred
    async def test_severalArchitectures(self):
        """
        A revision built for several architectures gives one override each.
        """
        overrides = await resolveOverrides(self.proxy.parts.upstream, "hello", "beta", 20)
        self.assertEqual(sorted(o.architecture for o in overrides), ["amd64", "arm64"])
        self.assertEqual({o.channel for o in overrides}, {"latest/beta"})

    @deferred
    async def test_unknownRevision(self):
        """
        A revision upstream does not know is refused with a clear message.
        """
        error = await self.assertFailure(
            resolveOverride(self.proxy.parts.upstream, "hello", "stable", 99), OverrideError)
        self.assertIn("revision 99 of snap 'hello' is not known", str(error))

    @deferred
    async def test_unknownSnap(self):
        """
        A snap upstream does not know is refused.
        """
        error = await self.assertFailure(
            resolveOverride(self.proxy.parts.upstream, "nope", "stable", 1), OverrideError)
        self.assertIn("snap 'nope' is not known", str(error))

    @deferred
    async def test_badChannelOrRevision(self):
        """
        Channels and revisions that cannot exist are refused before asking
        upstream.
        """
        self.store.resetTraffic()
        for channel, revision in (("sideways", 10), ("stable", 0), ("stable", "10")):
            await self.assertFailure(
                resolveOverride(self.proxy.parts.upstream, "hello", channel, revision),
                OverrideError)
        self.assertEqual(self.store.count(), 0)


class PersistentOverrideTests(OverrideTestsMixin, TestCase):
    """
    Overrides in the real SQLite state store survive a restart and are
    audited.
    """

    def setUp(self):
        return ensureDeferred(self.startStore())

    async def openState(self, path):
        from snapstore.state.sqlite import SQLiteStateStore

        state = SQLiteStateStore(reactor, path)
        await state.start()
        return state

    @deferred
    async def test_survivesRestart(self):
        """
        A pin stored before a restart still holds after it, and its setting
        and deletion are in the audit log with who made them.
        """
        path = os.path.abspath(self.mktemp())
        state = await self.openState(path)
        await self.startProxy(state)
        await self.pin("stable", 10)
        await state.close()
        self.store.release("hello", "stable", 12)

        state = await self.openState(path)
        self.addCleanup(state.close)
        await self.startProxy(state)
        result = await self.proxy.refresh(self.snapId, 11, "stable")
        self.assertEqual(result["snap"]["revision"], 10)
        await state.deleteOverride("hello", "stable", "admin@test")
        result = await self.proxy.refresh(self.snapId, 11, "stable")
        self.assertEqual(result["snap"]["revision"], 12)
        audit = await state.listAudit(target="snap:hello")
        self.assertEqual([(e.actor, e.action) for e in audit],
                         [("admin@test", "override.set"), ("admin@test", "override.delete")])


class SnapDownloadTests(OverrideTestsMixin, TestCase):
    """
    The real C{snap download} through the proxy gets the pinned revision.
    """

    timeout = 120

    def setUp(self):
        if shutil.which("snap") is None:
            raise self.skipTest("/usr/bin/snap is not installed")

        async def setUp():
            await self.startStore()
            await self.startProxy()

        return ensureDeferred(setUp())

    @deferred
    async def test_snapDownloadPinned(self):
        """
        C{snap download --channel=stable hello} with
        C{SNAPPY_FORCE_API_URL} at the proxy writes revision 10's exact
        bytes while C{stable=10} is pinned and upstream's stable holds 12.
        (Stock snap then fails on the fake store's assertions, after the
        blob is written.)
        """
        await self.pin("stable", 10)
        self.store.release("hello", "stable", 12)
        home = os.path.abspath(self.mktemp())
        target = os.path.abspath(self.mktemp())
        os.makedirs(home)
        os.makedirs(target)
        out, err, code = await getProcessOutputAndValue(
            shutil.which("snap"),
            ["download", "--channel=stable", "--target-directory", target, "hello"],
            env={"PATH": "/usr/bin:/bin", "HOME": home,
                 "SNAPPY_FORCE_API_URL": self.proxy.url},
            path=target, reactor=reactor)
        written = sorted(os.listdir(target))
        self.assertIn("hello_10.snap", written, (out, err))
        with open(os.path.join(target, "hello_10.snap"), "rb") as f:
            self.assertEqual(f.read(), self.store.blobBytes("hello", 10))
        self.assertNotIn("hello_12.snap", written)
        self.assertEqual(len(self.store.cdnDownloads("hello", 10)), 1)
        self.assertEqual(self.store.cdnDownloads("hello", 12), [])
