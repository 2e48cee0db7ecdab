# -*- test-case-name: tests.test_offline_units -*-
"""
The parts of L{snapstore.offline} one at a time, in memory: the bundle
reader, the refusing agent, the local store's answers, export helpers.
"""

from __future__ import annotations

import hashlib
import io
import os
import json
import tarfile
from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from snapstore.offline.agent import OfflineRefused, RefusingAgent
from snapstore.offline.bundle import (
    MANIFEST,
    BundleError,
    digestBase64,
    parseAssertion,
    stageBundle,
)
from snapstore.offline.export import ExportError, Progress, dependencies, parseSpec
from snapstore.offline.store import LocalStoreAgent, fallbacks
from snapstore.state.imported import (
    ImportedAssertion,
    ImportedChannel,
    ImportedRevision,
    ImportedSnap,
)
from snapstore.store.upstream import StoreUpstream, UpstreamError
from tests.helpers import testSettings

ASSERTION = (b"type: account\nauthority-id: canonical\naccount-id: dev\n"
             b"display-name: Dev\ntimestamp: 2016-01-01T00:00:00Z\nusername: dev\n"
             b"validation: unproven\nsign-key-sha3-384: KEY\n\nAXNpZw==\n")


def tarOf(members: list[tuple[str, bytes]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def manifestFor(blob: bytes) -> dict[str, Any]:
    return {"format": 1, "snaps": [], "blobs": [{
        "path": "blobs/abc_1.snap", "name": "abc_1.snap", "snap-id": "abc", "revision": 1,
        "sha3-384": hashlib.sha3_384(blob).hexdigest(), "size": len(blob)}],
        "assertions": [{"path": "assertions/account/dev", "type": "account",
                        "primary-key": ["dev"], "size": len(ASSERTION),
                        "sha3-384": hashlib.sha3_384(ASSERTION).hexdigest()}]}


class StageBundleTests(SynchronousTestCase):
    """
    L{stageBundle} checks every member against the manifest.
    """

    def stage(self, members: list[tuple[str, bytes]]) -> Any:
        staging = self.mktemp()
        os.makedirs(staging)
        return stageBundle(tarOf(members), staging)

    def refused(self, members: list[tuple[str, bytes]]) -> BundleError:
        return self.assertRaises(BundleError, self.stage, members)

    def test_good(self) -> None:
        blob = b"x" * 1000
        staged = self.stage([(MANIFEST, json.dumps(manifestFor(blob)).encode()),
                             ("blobs/abc_1.snap", blob), ("assertions/account/dev", ASSERTION)])
        with open(staged.blobFiles["blobs/abc_1.snap"], "rb") as copy:
            self.assertEqual(copy.read(), blob)
        self.assertEqual(staged.assertions["assertions/account/dev"].primaryKey, ("dev",))

    def test_refusals(self) -> None:
        """
        Each kind of damage is named with its member.
        """
        blob = b"x" * 1000
        manifest = json.dumps(manifestFor(blob)).encode()
        good = [(MANIFEST, manifest), ("blobs/abc_1.snap", blob),
                ("assertions/account/dev", ASSERTION)]
        self.assertEqual(self.refused(good[1:] + good[:1]).member, MANIFEST)
        self.assertEqual(self.refused(good + [("extra", b"")]).member, "extra")
        self.assertEqual(self.refused(good + [good[2]]).member, "assertions/account/dev")
        self.assertEqual(self.refused(good[:2]).member, "assertions/account/dev")
        error = self.refused([good[0], ("blobs/abc_1.snap", b"y" * 1000), good[2]])
        self.assertEqual(error.member, "blobs/abc_1.snap")
        self.assertIn("sha3-384", error.problem)
        error = self.refused([good[0], ("blobs/abc_1.snap", blob[:-1]), good[2]])
        self.assertIn("manifest says 1000", error.problem)
        error = self.refused([(MANIFEST, b"{}")])
        self.assertEqual(error.member, MANIFEST)

    def test_notATar(self) -> None:
        staging = self.mktemp()
        os.makedirs(staging)
        error = self.assertRaises(BundleError, stageBundle, io.BytesIO(b"nonsense" * 100),
                                  staging)
        self.assertIn("not a bundle", str(error))

    def test_truncated(self) -> None:
        blob = b"x" * 5000
        data = tarOf([(MANIFEST, json.dumps(manifestFor(blob)).encode()),
                      ("blobs/abc_1.snap", blob)]).getvalue()
        staging = self.mktemp()
        os.makedirs(staging)
        self.assertRaises(BundleError, stageBundle, io.BytesIO(data[:3000]), staging)


class _Lazy(io.RawIOBase):
    """
    A stream of C{head} and then C{size} zero bytes, made as they are read,
    counting what was read.
    """

    def __init__(self, head: bytes, size: int) -> None:
        self.head = head
        self.left = size
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self.head) + self.left
        data, self.head = self.head[:n], self.head[n:]
        extra = min(n - len(data), self.left)
        self.left -= extra
        data += bytes(extra)
        self.consumed += len(data)
        return data


class BundleBoundTests(SynchronousTestCase):
    """
    Bounds are checked before a member is read, and hostile manifests are
    refused like any damage (issue 22 item 10).
    """

    def staging(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        return path

    def test_oversizedAssertionNotRead(self) -> None:
        """
        A manifest listing a 64 MiB "assertion" is refused, naming it,
        having read only the manifest: the member's bytes are never read
        (before, all of them were read into memory and then refused).
        """
        size = 64 << 20
        manifest = manifestFor(b"x")
        manifest["blobs"] = []
        manifest["assertions"][0]["size"] = size
        head = tarOf([(MANIFEST, json.dumps(manifest).encode())]).getvalue()[:-1024]
        info = tarfile.TarInfo("assertions/account/dev")
        info.size = size
        stream = _Lazy(head + info.tobuf(tarfile.DEFAULT_FORMAT), size)
        error = self.assertRaises(BundleError, stageBundle, stream, self.staging())
        self.assertEqual(error.member, "assertions/account/dev")
        self.assertIn("larger than an assertion can be", error.problem)
        self.assertLess(stream.consumed, 1 << 20)

    def test_deeplyNestedManifest(self) -> None:
        """
        A manifest nested past Python's recursion limit, or merely deeper
        than any real manifest, is refused naming C{manifest.json}, not a
        C{RecursionError}.
        """
        for depth in (100_000, 500):
            nested = b'{"format": 1, "snaps": ' + b"[" * depth + b"]" * depth + b"}"
            error = self.assertRaises(BundleError, stageBundle,
                                      tarOf([(MANIFEST, nested)]), self.staging())
            self.assertEqual(error.member, MANIFEST)
            self.assertIn("nested deeper than a manifest can be", error.problem)


class AssertionTests(SynchronousTestCase):
    def test_parse(self) -> None:
        parsed = parseAssertion(ASSERTION)
        self.assertEqual((parsed.type, parsed.primaryKey, parsed.signKey, parsed.revision),
                         ("account", ("dev",), "KEY", 0))

    def test_notAnAssertion(self) -> None:
        self.assertRaises(ValueError, parseAssertion, b"type: account\n")
        self.assertRaises(ValueError, parseAssertion, b"\xff\xfe\n\nx")

    def test_digest(self) -> None:
        self.assertEqual(digestBase64("00" * 48), "A" * 64)


class RefusingAgentTests(TestCase):
    """
    With C{offline}, the outbound agent opens no connection.
    """

    def test_offlineStoreAgent(self) -> None:
        """
        The composition root gives an offline node's upstream client the
        local store, behind which every other URL is refused.
        """
        from snapstore.tap import assembleStore
        from tests.helpers import MemoryBlobs

        from twisted.internet.testing import MemoryReactorClock

        parts = assembleStore(MemoryReactorClock(), testSettings(self, offline="yes"),
                              MemoryBlobs()).parts
        agent = parts.upstream.agent
        self.assertIsInstance(agent, LocalStoreAgent)
        self.assertIsInstance(agent.outside, RefusingAgent)
        self.failureResultOf(agent.request(b"GET", b"http://example.com/"), OfflineRefused)

    def test_upstreamSaysWhy(self) -> None:
        upstream = StoreUpstream(RefusingAgent(), "http://up.invalid/", Clock(), 10)
        failure = self.failureResultOf(upstream.request(b"GET", b"http://up.invalid/x",
                                                        Headers()), UpstreamError)
        self.assertEqual(failure.value.status, 502)
        self.assertIn("--offline", failure.value.message)


class _State:
    """
    The imported-content part of a state store, in memory.
    """

    def __init__(self) -> None:
        revisions = {
            3: ImportedRevision("S" * 32, 3, "a" * 96, 10,
                                {"revision": 3, "architectures": ["amd64"], "version": "3"}),
            4: ImportedRevision("S" * 32, 4, "b" * 96, 20,
                                {"revision": 4, "architectures": ["all"], "version": "4"}),
        }
        self.snap = ImportedSnap("S" * 32, "tool", {"snap": {"summary": "A tool"}}, (
            ImportedChannel("S" * 32, "amd64", "latest/stable", 3),
            ImportedChannel("S" * 32, "amd64", "latest/beta", 4)), revisions)
        self.assertion = ImportedAssertion("snap-declaration", ("16", "S" * 32), "text", 2)

    def getImportedSnap(self, snapName: Any = None, snapId: Any = None) -> Any:
        found = snapName == "tool" or snapId == "S" * 32
        return succeed(self.snap if found else None)

    def listImportedSnaps(self) -> Any:
        return succeed([self.snap])

    def getImportedAssertion(self, type: str, key: Any) -> Any:
        match = (type, tuple(key)) == ("snap-declaration", ("16", "S" * 32))
        return succeed(self.assertion if match else None)


class LocalStoreAgentTests(TestCase):
    """
    L{LocalStoreAgent} answers store calls from imported content.
    """

    def setUp(self) -> None:
        self.outside = RefusingAgent()
        self.agent = LocalStoreAgent(_State(), "http://up.invalid/", self.outside)

    def refresh(self, *actions: Any) -> Any:
        body = json.dumps({"context": [], "actions": list(actions)}).encode()
        response = self.successResultOf(self.agent.request(
            b"POST", b"http://up.invalid/v2/snaps/refresh",
            Headers({b"snap-device-architecture": [b"amd64"]}),
            FileBodyProducer(io.BytesIO(body), cooperator=_Immediate())))
        return json.loads(self.successResultOf(readBody(response)))["results"]

    def test_channels(self) -> None:
        """
        Channels fall back to more stable risks; branches to their risk.
        """
        self.assertEqual(fallbacks("latest/edge/fix"), ["latest/edge/fix", "latest/edge",
                                                        "latest/beta", "latest/candidate",
                                                        "latest/stable"])
        results = self.refresh(
            {"action": "install", "instance-key": "a", "name": "tool", "channel": "edge"},
            {"action": "install", "instance-key": "b", "name": "tool", "channel": "candidate"},
            {"action": "download", "instance-key": "c", "name": "tool", "revision": 4})
        self.assertEqual([(r["snap"]["revision"], r.get("effective-channel")) for r in results],
                         [(4, "beta"), (3, "stable"), (4, None)])

    def test_architectureIndependent(self) -> None:
        """
        A revision built for C{all} serves every architecture; others only
        their own.
        """
        body = json.dumps({"context": [], "actions": [
            {"action": "install", "instance-key": "a", "name": "tool", "channel": "beta"},
            {"action": "install", "instance-key": "b", "name": "tool", "channel": "stable"}]})
        response = self.successResultOf(self.agent.request(
            b"POST", b"http://up.invalid/v2/snaps/refresh",
            Headers({b"snap-device-architecture": [b"arm64"]}),
            FileBodyProducer(io.BytesIO(body.encode()), cooperator=_Immediate())))
        results = json.loads(self.successResultOf(readBody(response)))["results"]
        self.assertEqual(results[0]["snap"]["revision"], 4)
        self.assertEqual(results[1]["error"]["code"], "revision-not-found")

    def test_fetchAssertions(self) -> None:
        """
        fetch-assertions gives stream URLs for imported assertions newer
        than the device's, and not-found errors for the rest.
        """
        [result] = self.refresh({"action": "fetch-assertions", "key": "g1", "assertions": [
            {"type": "snap-declaration", "primary-key": ["16", "S" * 32]},
            {"type": "account", "primary-key": ["nobody"]}]})
        self.assertEqual(result["assertion-stream-urls"],
                         [f"http://up.invalid/v2/assertions/snap-declaration/16/{'S' * 32}"])
        self.assertEqual(result["error-list"][0]["primary-key"], ["nobody"])
        [result] = self.refresh({"action": "fetch-assertions", "key": "g1", "assertions": [
            {"type": "snap-declaration", "primary-key": ["16", "S" * 32], "if-newer-than": 2}]})
        self.assertEqual(result["assertion-stream-urls"], [])

    def test_outsideRefused(self) -> None:
        """
        URLs outside the store's base go to the refusing agent.
        """
        self.failureResultOf(self.agent.request(b"GET", b"http://elsewhere/x"), OfflineRefused)
        self.assertEqual(self.outside.refused, [b"http://elsewhere/x"])


class _Immediate:
    """
    A cooperator running a body producer's work at once.
    """

    def cooperate(self, iterator: Any) -> Any:
        for _ in iterator:
            pass

        class Task:
            def whenDone(self) -> Any:
                return succeed(None)

            def stop(self) -> None:
                pass

        return Task()


class ExportHelperTests(SynchronousTestCase):
    def test_dependencies(self) -> None:
        snap = {"base": "core22", "snap-yaml": (
            "name: app\nplugs:\n  gtk-3-themes:\n    interface: content\n"
            "    default-provider: gtk-common-themes\n  more:\n    interface: content\n"
            "    default-provider: 'gnome-42-2204:gnome-42-2204'\n")}
        self.assertEqual(dependencies(snap), ["core22", "gtk-common-themes", "gnome-42-2204"])
        self.assertEqual(dependencies({"base": None}), [])

    def test_parseSpec(self) -> None:
        self.assertEqual(parseSpec("hello"), [("hello", "stable")])
        self.assertEqual(parseSpec("hello=edge,2.0/beta"),
                         [("hello", "edge"), ("hello", "2.0/beta")])
        self.assertRaises(ExportError, parseSpec, "hello=nonsense/x/y/z")
        self.assertRaises(ExportError, parseSpec, "=edge")

    def test_progressQuietOffTerminal(self) -> None:
        out = io.StringIO()
        progress = Progress(out, 100, "x")
        progress(50)
        progress.finish()
        self.assertEqual(out.getvalue(), "")

    def test_progressOnTerminal(self) -> None:
        """
        On a terminal: bytes done and total, rate, ETA.
        """
        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        now = [0.0]
        out = Terminal()
        progress = Progress(out, 4_000_000, "downloading", clock=lambda: now[0])
        now[0] = 2.0
        progress(1_000_000)
        self.assertIn("1.0MB/4.0MB 500.0kB/s ETA 0:06", out.getvalue())
        self.assertTrue(out.getvalue().startswith("\rdownloading [#####"))
