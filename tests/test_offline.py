# -*- test-case-name: tests.test_offline -*-
"""
Air-gapped sites, end to end, with real processes and sockets: a connected
snapstore in front of the fake store exports a bundle (C{snapstore export},
as a process), an offline snapstore that has no upstream at all imports it
(C{snapstore import}, as a process) and serves devices from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from snapstore.offline.bundle import MANIFEST, digestBase64, readManifest
from tests.fakestore import FakeStore
from tests.fakestore.assertions import _encodedKey as encodedKey, formatAssertion, \
    signingKey, testRootAssertion, testRootKey
from tests.ports import freePort
from tests.processes import CHECKOUT, processEnvironment, startTwistd

SNAP = "/usr/bin/snap"


class _Trap(Protocol):
    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.transport.loseConnection()


def runCLI(*args: str) -> Deferred[tuple[bytes, bytes, int]]:
    """
    Run the C{snapstore} command as a process (it is synchronous: in this
    process it would block the reactor the fake store runs on).
    """
    return getProcessOutputAndValue(
        sys.executable, ["-c", "import sys; from snapstore.cli import main; sys.exit(main())",
                         *args], env=processEnvironment(),
        path=CHECKOUT, reactor=reactor)


def rewriteBundle(source: str, target: str, change: Any) -> None:
    """
    Copy a bundle member by member; C{change(name, data)} returns the new
    data, or C{None} to leave the member out.
    """
    with tarfile.open(source, "r") as original, tarfile.open(target, "w") as copy:
        for member in original.getmembers():
            data = original.extractfile(member).read()
            data = change(member.name, data)
            if data is None:
                continue
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            copy.addfile(info, io.BytesIO(data))


def forgeRevision(source: str, target: str, blobPath: str, blob: bytes,
                  signer: Any) -> str:
    """
    Copy a bundle with the blob at C{blobPath} replaced by C{blob}, and
    everything the manifest and the revision's C{snap-revision} assertion
    say of it changed to match, as someone planting bytes would.

    @param signer: who signs the new C{snap-revision}: C{None} keeps the
        original signature (the edited headers no longer match it); a
        fake-store key role signs for real (C{"store"}: the trusted store
        key; any other: an attacker's own key, whose self-signed
        C{account-key} is added to the bundle).
    @return: the bundle path of the new C{snap-revision} assertion.
    """
    with tarfile.open(source, "r") as original:
        members = {m.name: original.extractfile(m).read() for m in original.getmembers()}
    manifest = json.loads(members.pop(MANIFEST))
    digest = hashlib.sha3_384(blob).hexdigest()
    entry = next(b for b in manifest["blobs"] if b["path"] == blobPath)
    oldPath = f"assertions/snap-revision/{digestBase64(entry['sha3-384'])}"
    old = members.pop(oldPath)
    headers = dict(line.split(": ", 1) for line in old.split(b"\n\n")[0].decode().splitlines())
    newPath = f"assertions/snap-revision/{digestBase64(digest)}"
    if signer is None:
        text = old.replace(digestBase64(entry["sha3-384"]).encode(), digestBase64(digest).encode())
        text = text.replace(b"snap-size: " + headers["snap-size"].encode(),
                            b"snap-size: %d" % len(blob))
    else:
        fields = {k: v for k, v in headers.items()
                  if k not in ("type", "authority-id", "sign-key-sha3-384")}
        fields.update({"snap-sha3-384": digestBase64(digest), "snap-size": str(len(blob))})
        text = formatAssertion("snap-revision", fields, signer=signer)
    members[newPath] = text
    assertions = [a for a in manifest["assertions"] if a["path"] != oldPath]
    assertions.append({"path": newPath, "type": "snap-revision",
                       "primary-key": [digestBase64(digest)]})
    if signer not in (None, "store"):
        key, keyId = encodedKey(signer)
        path = f"assertions/account-key/{keyId}"
        members[path] = formatAssertion("account-key", {
            "public-key-sha3-384": keyId, "account-id": "canonical", "name": "mine",
            "since": "2016-01-01T00:00:00Z"}, body=key.encode(), signer=signer)
        assertions.append({"path": path, "type": "account-key", "primary-key": [keyId]})
    for item in assertions:
        data = members[item["path"]]
        item.update({"size": len(data), "sha3-384": hashlib.sha3_384(data).hexdigest()})
    manifest["assertions"] = assertions
    members[blobPath] = blob
    entry.update({"sha3-384": digest, "size": len(blob)})
    for snap in manifest["snaps"]:
        for revision in snap["revisions"]:
            if revision["snap"]["download"]["sha3-384"] == digest or \
                    f"{snap['snap-id']}_{revision['revision']}.snap" == entry["name"]:
                revision.update({"sha3-384": digest, "size": len(blob)})
                revision["snap"]["download"].update({"sha3-384": digest, "size": len(blob)})
    with tarfile.open(target, "w") as copy:
        for name, data in [(MANIFEST, json.dumps(manifest).encode())] + [
                (b["path"], members[b["path"]]) for b in manifest["blobs"]] + [
                (a["path"], members[a["path"]]) for a in manifest["assertions"]]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            copy.addfile(info, io.BytesIO(data))
    return newPath


class OfflineEndToEndTests(TestCase):
    """
    Export on a connected node, import on an offline one, serve from it.
    """

    timeout = 120
    #: The fake store's compression switch (see L{FakeStore}).
    compress = None

    def setUp(self) -> Deferred[None]:
        return ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)
        # Assertions really signed, up to a test root key the nodes are
        # told to trust (--trusted-keys), as a brand store's would be.
        self.store = FakeStore(reactor, compress=self.compress, signed=True)
        self.helloId = self.store.addSnap("hello", summary="Says hello to the world")
        self.store.addRevision("hello", 10, 40_000)
        self.store.addRevision("hello", 12, 50_000, channels=("edge",))
        self.toolId = self.store.addSnap("tool", summary="A handy utility")
        self.store.addRevision("tool", 3, 30_000)
        self.store.addRevision("tool", 5, 35_000, channels=("edge",))
        self.store.addSnap("other", summary="Never exported")
        self.store.addRevision("other", 1, 10_000)
        await self.store.startFor(self)
        # The offline node's "upstream": a listener counting connections,
        # so that the test sees any attempt to connect out.
        trap = Factory.forProtocol(_Trap)
        trap.connections = 0
        self.trap = trap
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(trap)
        self.addCleanup(port.stopListening)
        self.trapPort = port.getHost().port
        # Never the machine's /etc/snapstore: an empty config file of our own.
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as configFile:
            configFile.write("[snapstore]\n")
        rules = os.path.join(CHECKOUT, "rules.d")
        self.trustedKeys = os.path.abspath(self.mktemp())
        with open(self.trustedKeys, "wb") as keysFile:
            keysFile.write(testRootAssertion())
        isolated = ("--config", config, "--rules-dir", rules, "--trusted-keys", self.trustedKeys)
        self.isolated = isolated
        _, self.onlinePort = await startTwistd(
            self, *isolated, "--upstream", self.store.apiURL, "--data-dir", os.path.abspath(self.mktemp()),
            "--proxy-endpoint", "none", "--admin-endpoint", "none")
        self.adminPort = freePort()
        self.forwardPort = freePort()
        _, self.offlinePort = await startTwistd(
            self, *isolated, "--upstream", f"http://127.0.0.1:{self.trapPort}/", "--offline",
            "--data-dir", os.path.abspath(self.mktemp()), "--proxy-endpoint",
            f"tcp:{self.forwardPort}:interface=127.0.0.1",
            "--admin-endpoint", f"tcp:{self.adminPort}:interface=127.0.0.1")
        self.online = f"http://127.0.0.1:{self.onlinePort}/"
        self.offline = f"http://127.0.0.1:{self.offlinePort}/"
        self.admin = f"http://127.0.0.1:{self.adminPort}"

    async def tearDown(self) -> None:
        await self.pool.closeCachedConnections()

    # -- helpers --------------------------------------------------------------

    async def export(self, bundle: str, *extra: str) -> dict[str, Any]:
        out, err, code = await runCLI("export", "hello=stable,edge", "tool=stable",
                                      "tool=edge", "--store", self.online, "-o", bundle,
                                      "--json", *extra)
        self.assertEqual(code, 0, err)
        self.assertEqual(err, b"", "no progress bar without a terminal")
        return json.loads(out)

    async def importBundle(self, bundle: str) -> tuple[bytes, bytes, int]:
        return await runCLI("--admin", self.admin, "import", bundle)

    async def listImported(self) -> Any:
        out, err, code = await runCLI("--admin", self.admin, "list-imported", "--json")
        self.assertEqual(code, 0, err)
        return json.loads(out)

    async def request(self, method: bytes, url: str, body: Any = None,
                      architecture: str = "amd64") -> tuple[int, Headers, bytes]:
        headers = Headers({b"snap-device-series": [b"16"],
                           b"snap-device-architecture": [architecture.encode()],
                           b"x-ubuntu-architecture": [architecture.encode()]})
        producer = None
        if body is not None:
            from twisted.web.client import FileBodyProducer

            headers.setRawHeaders(b"content-type", [b"application/json"])
            producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode()))
        response = await self.agent.request(method, url.encode(), headers, producer)
        return response.code, response.headers, await readBody(response)

    async def install(self, base: str, name: str, channel: str = "stable",
                      architecture: str = "amd64", **extra: Any) -> dict[str, Any]:
        action = {"action": "install", "instance-key": "install-1", "name": name,
                  "channel": channel, "epoch": None, **extra}
        code, headers, body = await self.request(
            b"POST", base + "v2/snaps/refresh",
            {"context": [], "actions": [action], "fields": ["revision", "download", "snap-id",
                                                            "name", "version"]},
            architecture)
        self.assertEqual(code, 200, body)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        return json.loads(body)["results"][0]

    # -- the test ---------------------------------------------------------------

    async def test_exportImportServe(self) -> None:
        """
        Two snaps on two channels go through a bundle; the offline node
        serves refresh, install, info, find, assertions and downloads with
        exactly the exported bytes, refuses what it does not have with the
        store's errors, and never connects out.
        """
        bundle = os.path.abspath(self.mktemp())
        manifest = await self.export(bundle)
        self.assertEqual(sorted((b["name"], b["size"]) for b in manifest["blobs"]), sorted([
            (f"{self.helloId}_10.snap", 40_000), (f"{self.helloId}_12.snap", 50_000),
            (f"{self.toolId}_3.snap", 30_000), (f"{self.toolId}_5.snap", 35_000)]))
        for blob in manifest["blobs"]:
            name, revision = {self.helloId: "hello", self.toolId: "tool"}[blob["snap-id"]], \
                blob["revision"]
            self.assertEqual(blob["sha3-384"], self.store.blobDigest(name, revision))
        kinds = sorted(a["type"] for a in manifest["assertions"])
        self.assertEqual(kinds.count("snap-revision"), 4)
        self.assertEqual(kinds.count("snap-declaration"), 2)
        self.assertIn("account-key", kinds)
        with tarfile.open(bundle) as archive:
            self.assertEqual(archive.getnames()[0], MANIFEST)

        out, err, code = await self.importBundle(bundle)
        self.assertEqual(code, 0, err)
        self.assertIn(b"Imported hello, tool", out)
        imported = await self.listImported()
        self.assertEqual(
            sorted((s["name"], c["channel"], c["revision"], c["cached"])
                   for s in imported["snaps"] for c in s["channels"]),
            [("hello", "latest/edge", 12, True), ("hello", "latest/stable", 10, True),
             ("tool", "latest/edge", 5, True), ("tool", "latest/stable", 3, True)])

        # Install and download, every snap and channel: the exact bytes.
        for name, channel, revision in (("hello", "stable", 10), ("hello", "edge", 12),
                                        ("tool", "stable", 3), ("tool", "edge", 5)):
            result = await self.install(self.offline, name, channel)
            self.assertEqual((result["result"], result["snap"]["revision"],
                              result["effective-channel"]), ("install", revision, channel))
            url = result["snap"]["download"]["url"]
            self.assertTrue(url.startswith(self.offline), url)
            code, headers, body = await self.request(b"GET", url)
            self.assertEqual(code, 200)
            self.assertEqual(body, self.store.blobBytes(name, revision))
            self.assertEqual(headers.getRawHeaders(b"x-cache"), [b"HIT"])

        # A refresh of an installed snap; a closed risk follows stable.
        code, _, body = await self.request(b"POST", self.offline + "v2/snaps/refresh", {
            "context": [{"snap-id": self.helloId, "instance-key": self.helloId, "revision": 10,
                         "tracking-channel": "latest/edge", "epoch": {"read": [0], "write": [0]}}],
            "actions": [{"action": "refresh", "instance-key": self.helloId,
                         "snap-id": self.helloId}],
            "fields": ["revision"]})
        result = json.loads(body)["results"][0]
        self.assertEqual((result["result"], result["snap"]["revision"]), ("refresh", 12))
        result = await self.install(self.offline, "tool", "beta")
        self.assertEqual((result["snap"]["revision"], result["effective-channel"]),
                         (3, "stable"))

        # What is not there: the store's own errors, at once.
        result = await self.install(self.offline, "other")
        self.assertEqual((result["result"], result["error"]["code"]),
                         ("error", "name-not-found"))
        result = await self.install(self.offline, "hello", "stable", architecture="arm64")
        self.assertEqual(result["error"]["code"], "revision-not-found")
        self.assertIn({"architecture": "amd64", "channel": "latest/edge"},
                      result["error"]["extra"]["releases"])
        result = await self.install(self.offline, "hello", "stable", revision=11)
        self.assertEqual(result["error"]["code"], "revision-not-found")
        code, _, body = await self.request(b"GET", self.offline + "v2/snaps/info/other")
        self.assertEqual(code, 404)

        # info: the channel map, URLs pointing at the offline node.
        code, headers, body = await self.request(b"GET", self.offline + "v2/snaps/info/hello")
        self.assertEqual(code, 200, body)
        info = json.loads(body)
        self.assertEqual((info["name"], info["snap-id"]), ("hello", self.helloId))
        self.assertEqual(info["snap"]["summary"], "Says hello to the world")
        self.assertEqual([(e["channel"]["name"], e["revision"]) for e in info["channel-map"]],
                         [("stable", 10), ("edge", 12)])
        for entry in info["channel-map"]:
            self.assertTrue(entry["download"]["url"].startswith(self.offline))

        # find: by name and by summary, over imported snaps only.
        code, headers, body = await self.request(
            b"GET", self.offline + "v2/snaps/find?q=utility")
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual([(r["name"], r["revision"]["revision"])
                          for r in json.loads(body)["results"]], [("tool", 3)])
        code, _, body = await self.request(b"GET", self.offline + "v2/snaps/find?q=hel")
        self.assertEqual([r["name"] for r in json.loads(body)["results"]], ["hello"])
        code, _, body = await self.request(b"GET", self.offline + "v2/snaps/find?q=never")
        self.assertEqual(json.loads(body)["results"], [])

        # Assertions: byte for byte what the store signed; 404 otherwise.
        digest = self.store.blob("hello", 12).digestBase64
        code, headers, body = await self.request(
            b"GET", self.offline + f"v2/assertions/snap-revision/{digest}?max-format=0")
        self.assertEqual(code, 200)
        self.assertEqual(body, self.store.assertions.lookup("snap-revision", [digest]))
        code, headers, body = await self.request(
            b"GET", self.offline + f"v2/assertions/snap-declaration/16/{'x' * 32}")
        self.assertEqual(code, 404)
        self.assertEqual(json.loads(body)["error-list"][0]["code"], "not-found")

        # Overrides resolve against imported revisions.
        out, err, code = await runCLI("--admin", self.admin, "override", "hello", "stable=12")
        self.assertEqual(code, 0, err + out)
        result = await self.install(self.offline, "hello", "stable")
        self.assertEqual(result["snap"]["revision"], 12)
        out, err, code = await runCLI("--admin", self.admin, "override", "hello", "stable=11")
        self.assertEqual(code, 5, err + out)
        # The error names what an offline node resolves against.
        self.assertIn(b"imported content", err)
        self.assertNotIn(b"upstream store", err)
        await runCLI("--admin", self.admin, "delete-override", "hello", "stable")

        # Importing the same bundle again changes nothing.
        audit = await runCLI("--admin", self.admin, "audit", "--json")
        out, err, code = await self.importBundle(bundle)
        self.assertEqual(code, 0, err)
        self.assertIn(b"nothing changed", out)
        self.assertEqual(await runCLI("--admin", self.admin, "audit", "--json"), audit)

        # Nothing connected out; the forward proxy did not start.
        self.assertEqual(self.trap.connections, 0)
        with self.assertRaises(Exception):
            await self.request(b"GET", f"http://127.0.0.1:{self.forwardPort}/")

    async def test_validationSetOffline(self) -> None:
        """
        C{export --validation-set ACCOUNT/NAME[=SEQUENCE]} carries the
        validation-set assertion (a pinned sequence and the latest) and the
        revisions it requires, which need be on no exported channel; the
        offline node then answers snapd's calls (store-api.md 6.1 and 3.1):
        C{/v2/assertions/validation-set/16/<account>/<name>} with
        C{?sequence=N}, C{latest} or none, byte for byte what the store
        signed, and installs of the required revisions.  (C{snap validate
        --enforce} itself needs snapd's daemon, not available to these
        tests; these are the store calls it makes.)
        """
        self.store.addValidationSet("canonical", "base-set", 1, [
            {"name": "hello", "id": self.helloId, "presence": "required", "revision": "10"},
            {"name": "tool", "id": self.toolId, "presence": "required", "revision": "5"},
            {"name": "other", "id": "x" * 32, "presence": "invalid"}])
        self.store.addValidationSet("canonical", "base-set", 2, [
            {"name": "hello", "id": self.helloId, "presence": "required", "revision": "12"}])
        bundle = os.path.abspath(self.mktemp())
        out, err, code = await runCLI("export", "--validation-set", "canonical/base-set=1",
                                      "--validation-set", "canonical/base-set", "--store",
                                      self.online, "-o", bundle, "--json")
        self.assertEqual(code, 0, err)
        manifest = json.loads(out)
        self.assertEqual(sorted((s["name"], [r["revision"] for r in s["revisions"]], s["channels"])
                                for s in manifest["snaps"]),
                         [("hello", [10, 12], []), ("tool", [5], [])])
        self.assertIn(["16", "canonical", "base-set", "1"],
                      [a["primary-key"] for a in manifest["assertions"]])
        out, err, code = await self.importBundle(bundle)
        self.assertEqual(code, 0, err)
        base = self.offline + "v2/assertions/validation-set/16/canonical/base-set"
        for query, sequence in (("?sequence=1", "1"), ("?sequence=2", "2"),
                                ("?sequence=latest&max-format=0", "2"), ("", "2")):
            code, headers, body = await self.request(b"GET", base + query)
            self.assertEqual(code, 200, body)
            self.assertEqual(body, self.store.assertions.validationSet(
                "16", "canonical", "base-set", sequence))
            self.assertEqual(headers.getRawHeaders(b"content-type"),
                             [b"application/x.ubuntu.assertion"])
        code, headers, body = await self.request(b"GET", base + "?sequence=3")
        self.assertEqual((code, json.loads(body)["error-list"][0]["code"]), (404, "not-found"))
        # The refresh-time check snapd makes for an enforced set: a
        # fetch-assertions action by sequence key, pinned or "newer than".
        key = ["16", "canonical", "base-set"]
        code, _, body = await self.request(b"POST", self.offline + "v2/snaps/refresh", {
            "context": [], "fields": [], "actions": [{
                "action": "fetch-assertions", "key": "g1", "assertions": [
                    {"type": "validation-set", "sequence-key": key, "sequence": 1},
                    {"type": "validation-set", "sequence-key": key,
                     "if-sequence-equal-or-newer-than": 1},
                    {"type": "validation-set", "sequence-key": key,
                     "if-sequence-equal-or-newer-than": 3},
                    {"type": "validation-set", "sequence-key": ["16", "canonical", "none"],
                     "sequence": 1}]}]})
        self.assertEqual(code, 200, body)
        [result] = json.loads(body)["results"]
        self.assertEqual(result["assertion-stream-urls"], [base + "?sequence=1",
                                                           base + "?sequence=2"])
        self.assertEqual([e["code"] for e in result["error-list"]], ["not-found"])
        code, _, body = await self.request(b"GET", result["assertion-stream-urls"][1])
        self.assertEqual(body, self.store.assertions.validationSet(
            "16", "canonical", "base-set", "2"))
        code, headers, body = await self.request(
            b"GET", self.offline + "v2/assertions/validation-set/16/canonical/other-set")
        self.assertEqual(code, 404)
        for name, revision in (("hello", 10), ("hello", 12), ("tool", 5)):
            result = await self.install(self.offline, name, "stable", revision=revision)
            self.assertEqual((result["result"], result["snap"]["revision"]),
                             ("install", revision), result)
            response = await self.agent.request(b"GET",
                                                result["snap"]["download"]["url"].encode())
            blob = await readBody(response)
            self.assertEqual((response.code, len(blob)),
                             (200, result["snap"]["download"]["size"]))
        self.assertEqual(self.trap.connections, 0)
        out, err, code = await runCLI("export", "--validation-set", "canonical/nothing",
                                      "--store", self.online, "-o", bundle + ".2")
        self.assertEqual(code, 5, err)
        self.assertIn(b"no validation set canonical/nothing", err)
        out, err, code = await runCLI("export", "--validation-set", "base-set", "-o", bundle)
        self.assertEqual(code, 2, err)

    async def test_snapDownload(self) -> None:
        """
        Stock C{snap download} against the offline node gets the exact bytes
        and the whole assertion chain, failing only at the trust check: the
        chain ends in the fake store's test root key, which signs itself and
        is not one of snapd's compiled-in roots.
        """
        if not os.access(SNAP, os.X_OK):
            raise self.skipTest(f"{SNAP} is not installed")
        bundle = os.path.abspath(self.mktemp())
        await self.export(bundle)
        _, err, code = await self.importBundle(bundle)
        self.assertEqual(code, 0, err)
        target = os.path.abspath(self.mktemp())
        home = os.path.abspath(self.mktemp())
        os.makedirs(target)
        os.makedirs(home)
        out, err, code = await getProcessOutputAndValue(
            SNAP, ["download", "hello", "--edge", "--target-directory", target],
            env={"PATH": "/usr/bin:/bin", "HOME": home, "SNAPPY_FORCE_API_URL": self.offline},
            reactor=reactor)
        self.assertEqual(code, 1, err)
        self.assertEqual(out, b'Fetching snap "hello"\nFetching assertions for "hello"\n')
        self.assertIn(b"circular assertions are not expected: account-key ("
                      + testRootKey()[1].encode() + b")", err)
        with open(os.path.join(target, "hello_12.snap"), "rb") as downloaded:
            self.assertEqual(downloaded.read(), self.store.blobBytes("hello", 12))
        self.assertEqual(self.trap.connections, 0)

    async def test_tamperedBundlesRefused(self) -> None:
        """
        A bundle with one byte of a blob changed, or with an assertion
        removed (from the tar alone, or from the manifest too), is refused
        whole, naming the member, and the offline node is left as it was.
        """
        bundle = os.path.abspath(self.mktemp())
        manifest = await self.export(bundle)
        blobPath = manifest["blobs"][1]["path"]
        digest = digestBase64(manifest["blobs"][1]["sha3-384"])
        revisionPath = f"assertions/snap-revision/{digest}"

        def flipByte(name: str, data: bytes) -> bytes:
            if name != blobPath:
                return data
            return data[:100] + bytes([data[100] ^ 1]) + data[101:]

        def dropAssertion(name: str, data: bytes) -> Any:
            return None if name == revisionPath else data

        def dropAssertionAndEntry(name: str, data: bytes) -> Any:
            if name == MANIFEST:
                changed = json.loads(data)
                changed["assertions"] = [a for a in changed["assertions"]
                                         if a["path"] != revisionPath]
                return json.dumps(changed).encode()
            return dropAssertion(name, data)

        cases = [(flipByte, blobPath.encode(), b"sha3-384"),
                 (dropAssertion, revisionPath.encode(), b"missing"),
                 (dropAssertionAndEntry, blobPath.encode(), b"snap-revision")]
        for change, member, problem in cases:
            damaged = os.path.abspath(self.mktemp())
            rewriteBundle(bundle, damaged, change)
            out, err, code = await self.importBundle(damaged)
            self.assertEqual(code, 5, (change.__name__, out, err))
            self.assertIn(b"bundle refused", err)
            self.assertIn(member, err, change.__name__)
            self.assertIn(problem, err, change.__name__)
            self.assertEqual(await self.listImported(), {"snaps": []})
        result = await self.install(self.offline, "hello")
        self.assertEqual(result["error"]["code"], "name-not-found")
        out, err, code = await runCLI("--admin", self.admin, "cache", "--json")
        self.assertEqual(json.loads(out)["blobs"], 0, out)

        # After a good import, a damaged one leaves the content unchanged.
        _, err, code = await self.importBundle(bundle)
        self.assertEqual(code, 0, err)
        before = await self.listImported()
        damaged = os.path.abspath(self.mktemp())
        rewriteBundle(bundle, damaged, flipByte)
        _, err, code = await self.importBundle(damaged)
        self.assertEqual(code, 5, err)
        self.assertEqual(await self.listImported(), before)

    async def test_incrementalExport(self) -> None:
        """
        C{export --since} carries only what the previous bundle did not: a
        new revision's blob and assertion; importing it moves the channel.
        """
        first = os.path.abspath(self.mktemp())
        await self.export(first)
        _, err, code = await self.importBundle(first)
        self.assertEqual(code, 0, err)
        # The device limit applies offline too: set before any device
        # came, it admits the first device and refuses a second one (another
        # address); the first carries on.
        code, _, body = await self.request(b"PUT", self.admin + "/v1/device-limit", {"limit": 1})
        self.assertEqual(code, 200, body)
        result = await self.install(self.offline, "hello")
        self.assertEqual(result["snap"]["revision"], 10)
        other = Agent(reactor, pool=self.pool, bindAddress=("127.0.0.2", 0))
        response = await other.request(b"GET", (self.offline + "v2/snaps/info/hello").encode())
        body = await readBody(response)
        self.assertEqual((response.code, json.loads(body)["error-list"][0]["code"]),
                         (403, "device-limit-exceeded"))
        result = await self.install(self.offline, "hello")
        self.assertEqual(result["snap"]["revision"], 10)
        code, _, body = await self.request(b"DELETE", self.admin + "/v1/device-limit")
        self.assertEqual(code, 200, body)

        self.store.addRevision("hello", 13, 45_000, channels=("edge",))
        second = os.path.abspath(self.mktemp())
        manifest = await self.export(second, "--since", first)
        self.assertEqual([b["name"] for b in manifest["blobs"]], [f"{self.helloId}_13.snap"])
        self.assertEqual(
            [a["type"] for a in manifest["assertions"]], ["snap-revision"])
        self.assertEqual(readManifest(second)["blobs"], manifest["blobs"])
        _, err, code = await self.importBundle(second)
        self.assertEqual(code, 0, err)
        result = await self.install(self.offline, "hello", "edge")
        self.assertEqual(result["snap"]["revision"], 13)
        code, _, body = await self.request(b"GET", result["snap"]["download"]["url"])
        self.assertEqual(body, self.store.blobBytes("hello", 13))
        result = await self.install(self.offline, "hello", "stable")
        self.assertEqual(result["snap"]["revision"], 10)
        self.assertEqual(self.trap.connections, 0)

    async def test_incrementalNeedsEarlierBundle(self) -> None:
        """
        An incremental bundle imported on a node that lacks what it builds
        on is refused, naming the blob it lacks.
        """
        first = os.path.abspath(self.mktemp())
        await self.export(first)
        self.store.addRevision("hello", 13, 45_000, channels=("edge",))
        second = os.path.abspath(self.mktemp())
        await self.export(second, "--since", first)
        _, err, code = await self.importBundle(second)
        self.assertEqual(code, 5, err)
        self.assertIn(b"neither in the bundle nor on this node", err)
        self.assertEqual(await self.listImported(), {"snaps": []})

    async def test_withDeps(self) -> None:
        """
        C{export --with-deps} also carries each snap's base, so an offline
        node can install both.
        """
        self.store.addSnap("core22", type="base", summary="The base")
        self.store.addRevision("core22", 7, 20_000)
        self.store.addSnap("app", summary="Needs a base")
        self.store.addRevision("app", 2, 15_000, base="core22")
        bundle = os.path.abspath(self.mktemp())
        out, err, code = await runCLI("export", "app", "--with-deps", "--store", self.online,
                                      "-o", bundle, "--json")
        self.assertEqual(code, 0, err)
        manifest = json.loads(out)
        self.assertEqual(sorted(s["name"] for s in manifest["snaps"]), ["app", "core22"])
        _, err, code = await self.importBundle(bundle)
        self.assertEqual(code, 0, err)
        for name, revision in (("app", 2), ("core22", 7)):
            result = await self.install(self.offline, name)
            self.assertEqual(result["snap"]["revision"], revision)

    async def test_importNeverEvictsOffline(self) -> None:
        """
        An offline node refuses an import that would evict earlier imports
        from its bounded blob cache, and keeps serving them.
        """
        admin = freePort()
        _, port = await startTwistd(
            self, *self.isolated, "--offline", "--upstream", f"http://127.0.0.1:{self.trapPort}/",
            "--data-dir", os.path.abspath(self.mktemp()), "--cache-size", "120000",
            "--proxy-endpoint", "none", "--admin-endpoint", f"tcp:{admin}:interface=127.0.0.1")
        first, second = os.path.abspath(self.mktemp()), os.path.abspath(self.mktemp())
        for bundle, spec in ((first, "hello=stable,edge"), (second, "tool=stable,edge")):
            out, err, code = await runCLI("export", spec, "--store", self.online, "-o", bundle)
            self.assertEqual(code, 0, err)
        _, err, code = await runCLI("--admin", f"http://127.0.0.1:{admin}", "import", first)
        self.assertEqual(code, 0, err)
        _, err, code = await runCLI("--admin", f"http://127.0.0.1:{admin}", "import", second)
        self.assertEqual(code, 5, err)
        self.assertIn(b"would evict earlier imports", err)
        out, err, code = await runCLI("--admin", f"http://127.0.0.1:{admin}", "list-imported",
                                      "--json")
        self.assertEqual([(s["name"], [c["cached"] for c in s["channels"]])
                          for s in json.loads(out)["snaps"]], [("hello", [True, True])])

    async def test_forgedAssertionsRefused(self) -> None:
        """
        A bundle planting other bytes for a revision, with its snap-revision
        edited (old signature), or signed by a key that does not chain to a
        trusted root, is refused before anything is imported, naming the
        assertion (issue 22 item 2b).  So is a genuine bundle on a node that
        does not trust the test root.
        """
        bundle = os.path.abspath(self.mktemp())
        manifest = await self.export(bundle)
        blobPath = next(b["path"] for b in manifest["blobs"] if b["revision"] == 10)
        planted = b"planted " * 612
        attackerKey = f"assertions/account-key/{encodedKey('attacker')[1]}"
        cases = [(None, b"does not verify with key " + signingKey()[1].encode(), None),
                 ("attacker", b"signs itself and is not a trusted root", attackerKey)]
        for signer, problem, named in cases:
            forged = os.path.abspath(self.mktemp())
            path = forgeRevision(bundle, forged, blobPath, planted, signer)
            out, err, code = await self.importBundle(forged)
            self.assertEqual(code, 5, (signer, out, err))
            self.assertIn(b"bundle refused", err)
            self.assertIn((named or path).encode() + b": its signature cannot be trusted", err)
            self.assertIn(problem, err)
            self.assertEqual(await self.listImported(), {"snaps": []})
        out, err, code = await runCLI("--admin", self.admin, "cache", "--json")
        self.assertEqual(json.loads(out)["blobs"], 0, out)

        # A node that trusts only Canonical's root refuses the genuine bundle.
        admin = freePort()
        await startTwistd(
            self, "--config", self.isolated[1], "--rules-dir", self.isolated[3], "--offline",
            "--upstream", f"http://127.0.0.1:{self.trapPort}/",
            "--data-dir", os.path.abspath(self.mktemp()), "--proxy-endpoint", "none",
            "--admin-endpoint", f"tcp:{admin}:interface=127.0.0.1")
        _, err, code = await runCLI("--admin", f"http://127.0.0.1:{admin}", "import", bundle)
        self.assertEqual(code, 5, err)
        self.assertIn(b"signs itself and is not a trusted root", err)

    async def test_recordedDigestNeverChanges(self) -> None:
        """
        Once this node has recorded a revision's digest, a bundle giving it
        other bytes is refused naming the revision, even when the store key
        signed it; downloads keep being served under the recorded digest
        (issue 22 item 2a).
        """
        bundle = os.path.abspath(self.mktemp())
        manifest = await self.export(bundle)
        _, err, code = await self.importBundle(bundle)
        self.assertEqual(code, 0, err)
        before = await self.listImported()
        blobPath = next(b["path"] for b in manifest["blobs"] if b["revision"] == 10)
        forged = os.path.abspath(self.mktemp())
        forgeRevision(bundle, forged, blobPath, b"planted " * 612, "store")
        out, err, code = await self.importBundle(forged)
        self.assertEqual(code, 5, (out, err))
        self.assertIn(b"hello revision 10 is recorded on this node with sha3-384 "
                      + self.store.blobDigest("hello", 10).encode(), err)
        self.assertEqual(await self.listImported(), before)
        code, headers, body = await self.request(
            b"GET", self.offline + f"api/v1/snaps/download/{self.helloId}_10.snap")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"x-cache"), [b"HIT"])
        self.assertEqual(body, self.store.blobBytes("hello", 10))

    async def test_hostileManifestRefused(self) -> None:
        """
        A manifest nested deeper than Python's recursion limit gets
        C{bundle-refused}, not a 500 (issue 22 item 10).
        """
        hostile = os.path.abspath(self.mktemp())
        nested = b'{"format": 1, "snaps": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        with tarfile.open(hostile, "w") as archive:
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(nested)
            archive.addfile(info, io.BytesIO(nested))
        out, err, code = await self.importBundle(hostile)
        self.assertEqual(code, 5, (out, err))
        self.assertIn(b"bundle refused, nothing imported: manifest.json: nested deeper", err)

class CompressedUpstreamOfflineTests(OfflineEndToEndTests):
    """
    The same, with the upstream store gzipping its JSON and assertions for
    clients that accept it (snapstore always asks): the connected node's
    relay, rules and blob cache, and the export through them, read
    compressed answers.
    """

    compress = "gzip"

    async def test_upstreamCompressed(self) -> None:
        """
        The export's refresh and info calls reached upstream asking for
        gzip, and what upstream sent was gzip.
        """
        await self.export(os.path.abspath(self.mktemp()))
        for path in ("/v2/snaps/refresh", "/v2/snaps/info/"):
            records = self.store.requestsTo(None, path)
            self.assertTrue(records, path)
            for record in records:
                self.assertEqual(record.header("accept-encoding"), "gzip", path)
