# -*- test-case-name: tests.test_offline -*-
"""
Importing a bundle on an offline node: verify everything, then commit it
all, or nothing.

An import runs in three steps, and only the last one changes anything:

 1. I{Stage}: the bundle streams past once (in a thread, it may be
    gigabytes): each member is checked against the manifest (listed, size,
    sha3-384) and blobs are copied into a private staging directory.
 2. I{Cross-check}: every blob must be described by a C{snap-revision}
    assertion (its C{snap-sha3-384}, base64url, and C{snap-size}, C{snap-id},
    C{snap-revision}); every snap needs its C{snap-declaration}; every
    signing key and account a chain names must be in the bundle or already
    on this node (the compiled-in Canonical root excepted); revisions a
    channel names must have their blob here or in the bundle.  Every
    assertion's signature is verified up to a trusted root key (Canonical's
    built-in one and those of C{--trusted-keys}, see
    L{snapstore.offline.signatures}), so a bundle cannot plant metadata no
    store signed; and a revision this node has already recorded with one
    digest is never given another (the bundle is refused, naming it).
 3. I{Commit}: blobs go into the blob cache through its verifying fill
    (which hashes them once more), then metadata, assertions and blob
    records go into the state store in one transaction with an audit row.
    A failure takes back the blobs this import added.

So a damaged or incomplete bundle is refused whole, naming the first bad
member, and importing the same bundle twice changes nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import IO, Any, Optional

from twisted.internet.defer import DeferredLock
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from snapstore.cache.chunks import fileChunks
from snapstore.interfaces import IServiceReactor
from snapstore.offline.bundle import (
    BLOB_DIR,
    TRUSTED_ACCOUNTS,
    TRUSTED_KEYS,
    Assertion,
    BundleError,
    StagedBundle,
    assertionPath,
    blobName,
    digestBase64,
    parseAssertion,
    stageBundle,
)
from snapstore.offline.roots import trustedRoots
from snapstore.offline.signatures import ChainVerifier, SignatureError
from snapstore.state.imported import (
    ImportConflict,
    ImportedAssertion,
    ImportedChannel,
    ImportedContent,
    ImportedRevision,
    ImportedSnap,
)
from snapstore.state.records import BlobRecord, normaliseChannel

#: Bytes written into a cache fill between two returns to the reactor.
WRITE_SLICE = 4 << 20
#: Header naming the account that signs each kind of assertion's subject.
_ACCOUNT_HEADERS = ("authority-id", "publisher-id", "developer-id", "account-id")


class Importer:
    """
    Imports bundles into a state store and a blob cache.

    @ivar stagingRoot: where bundles are staged (C{<data-dir>/import-staging});
        a staging directory lives only for the import.
    """

    log = Logger()

    def __init__(self, reactor: IServiceReactor, state: Any, cache: Any, stagingRoot: str,
                 evict: bool = True, roots: Optional[dict[str, Any]] = None) -> None:
        """
        @param evict: whether an import may evict cached blobs to make
            room.  An offline node passes C{False}: what it would evict is
            earlier imports, which it cannot fetch again.
        @param roots: the root keys assertions must chain up to
            (L{snapstore.offline.roots.trustedRoots}); default the built-in
            Canonical root only.
        """
        self.roots = trustedRoots() if roots is None else roots
        self.reactor = reactor
        self.state = state
        self.cache = cache
        self.stagingRoot = stagingRoot
        self.evict = evict
        self._lock = DeferredLock()

    async def importBundle(self, stream: IO[bytes], actor: str) -> dict[str, Any]:
        """
        Import the bundle C{stream} reads, one import at a time.

        @return: a summary: what was added (see
            L{snapstore.state.imported.importContent}), the snaps, and
            C{blobsAdded}, the blobs new to the cache.
        @raise BundleError: when the bundle is refused; nothing changed.
        """
        await self._lock.acquire()
        try:
            os.makedirs(self.stagingRoot, exist_ok=True)
            staging = tempfile.mkdtemp(prefix="bundle-", dir=self.stagingRoot)
            try:
                staged = await deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                                 stageBundle, stream, staging)
                content = await self.crossCheck(staged)
                added = await self._commitBlobs(staged)
                try:
                    summary = await self.state.importContent(content, actor)
                except ImportConflict as conflict:
                    for digest in added:
                        self.cache.remove(digest)
                    raise BundleError(BLOB_DIR + conflict.name, str(conflict))
                except BaseException:
                    for digest in added:
                        self.cache.remove(digest)
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            self._lock.release()
        summary = dict(summary, blobsAdded=len(added),
                       snapNames=sorted({s.snapName for s in content.snaps}))
        self.log.info("imported a bundle of {snaps} ({summary})", snaps=summary["snapNames"],
                      summary={k: v for k, v in summary.items() if k != "snapNames"})
        return summary

    # -- cross-checking ------------------------------------------------------

    async def crossCheck(self, staged: StagedBundle) -> ImportedContent:
        """
        Check that the staged bundle, with what this node has already, is
        complete and consistent, and turn it into L{ImportedContent}.

        @raise BundleError: naming the first member (or missing member)
            at fault.
        """
        manifest = staged.manifest
        byKey: dict[tuple[str, tuple[str, ...]], Assertion] = {}
        entries = {entry["path"]: entry for entry in manifest["assertions"]}
        for path in sorted(staged.assertions):
            assertion = staged.assertions[path]
            entry = entries[path]
            if assertion.type != entry["type"] or list(assertion.primaryKey) != entry["primary-key"]:
                raise BundleError(path, f"holds a {assertion.type} assertion for "
                                        f"{'/'.join(assertion.primaryKey)}, not what its path says")
            byKey[(assertion.type, assertion.primaryKey)] = assertion

        async def find(kind: str, key: tuple[str, ...]) -> Optional[Assertion]:
            if (kind, key) in byKey:
                return byKey[(kind, key)]
            known = await self.state.getImportedAssertion(kind, key)
            return None if known is None else parseAssertion(known.body.encode("utf-8"))

        await self._checkSignatures(staged, find)
        blobs = {entry["name"]: entry for entry in manifest["blobs"]}
        for entry in manifest["blobs"]:
            await self._checkBlob(entry, find)
        snaps = []
        records = []
        for described in manifest["snaps"]:
            snap, snapRecords = await self._checkSnap(described, blobs, find)
            snaps.append(snap)
            records += snapRecords
        for path in sorted(staged.assertions):
            await self._checkChain(path, staged.assertions[path], find)
        assertions = tuple(ImportedAssertion(a.type, a.primaryKey, a.text.decode("utf-8"),
                                             a.revision) for a in byKey.values())
        bundle = {"created": manifest.get("created"), "generator": manifest.get("generator"),
                  "blobs": len(manifest["blobs"]), "assertions": len(manifest["assertions"])}
        return ImportedContent(tuple(snaps), assertions, tuple(records), bundle)

    async def _checkSignatures(self, staged: StagedBundle, find: Any) -> None:
        """
        Verify the signature of every assertion in the bundle up to a
        trusted root key, before anything else is believed.
        """
        async def findText(kind: str, key: tuple[str, ...]) -> Optional[bytes]:
            found = await find(kind, key)
            return None if found is None else found.text

        verifier = ChainVerifier(self.roots, findText)
        for path in sorted(staged.assertions):
            try:
                await verifier.verify(staged.assertions[path].text)
            except SignatureError as error:
                raise BundleError(path, f"its signature cannot be trusted: {error}")

    async def _checkRecorded(self, name: str, snapId: str, number: int, digest: str,
                             where: str) -> None:
        """
        Refuse to give a revision this node knows another digest: what it
        recorded (from a device's refresh or an earlier import) is what
        devices were told, and downloads are served under it.
        """
        known = await self.state.getBlob(blobName(snapId, number))
        recorded = None if known is None else known.sha3_384.lower()
        if recorded is None:
            snap = await self.state.getImportedSnap(snapId=snapId)
            revision = None if snap is None else snap.revisions.get(number)
            recorded = None if revision is None else revision.sha3_384.lower()
        if recorded is not None and recorded != digest:
            raise BundleError(where, f"{name} revision {number} is recorded on this node "
                                     f"with sha3-384 {recorded}; the bundle gives it "
                                     f"{digest}, and a recorded revision never changes")

    @staticmethod
    async def _checkBlob(entry: dict[str, Any], find: Any) -> None:
        path = entry["path"]
        digest = digestBase64(entry["sha3-384"])
        revision = await find("snap-revision", (digest,))
        if revision is None:
            raise BundleError(path, f"no snap-revision assertion for it "
                                    f"({assertionPath('snap-revision', [digest])}) in the "
                                    f"bundle or on this node")
        headers = revision.headers
        if headers.get("snap-size") != str(entry["size"]):
            raise BundleError(path, f"is {entry['size']} bytes but its snap-revision assertion "
                                    f"says snap-size {headers.get('snap-size')}")
        if (headers.get("snap-id"), headers.get("snap-revision")) != (
                entry["snap-id"], str(entry["revision"])):
            raise BundleError(path, f"its snap-revision assertion is for "
                                    f"{headers.get('snap-id')} revision "
                                    f"{headers.get('snap-revision')}")

    async def _checkSnap(self, described: dict[str, Any], blobs: dict[str, Any],
                         find: Any) -> tuple[ImportedSnap, list[BlobRecord]]:
        name, snapId = described["name"], described["snap-id"]
        declaration = await find("snap-declaration", ("16", snapId))
        declarationPath = assertionPath("snap-declaration", ["16", snapId])
        if declaration is None:
            raise BundleError(declarationPath, f"missing: the snap-declaration of {name} is "
                                               f"neither in the bundle nor on this node")
        if declaration.headers.get("snap-name") != name:
            raise BundleError(declarationPath, f"names snap "
                                               f"{declaration.headers.get('snap-name')!r}, "
                                               f"not {name!r}")
        revisions: dict[int, ImportedRevision] = {}
        records = []
        for item in described["revisions"]:
            number, digest, size = item["revision"], item["sha3-384"].lower(), item["size"]
            snapObject = item["snap"]
            download = snapObject.get("download") or {}
            fileName = blobName(snapId, number)
            where = BLOB_DIR + fileName
            if (snapObject.get("snap-id"), snapObject.get("revision"), download.get("sha3-384"),
                    download.get("size")) != (snapId, number, digest, size):
                raise BundleError("manifest.json", f"the metadata of {name} revision {number} "
                                                   f"does not match its digest and size")
            await self._checkRecorded(name, snapId, number, digest, where)
            if await find("snap-revision", (digestBase64(digest),)) is None:
                raise BundleError(assertionPath("snap-revision", [digestBase64(digest)]),
                                  f"missing: {name} revision {number} has no snap-revision "
                                  f"assertion in the bundle or on this node")
            entry = blobs.get(fileName)
            if entry is not None:
                if (entry["sha3-384"], entry["size"]) != (digest, size):
                    raise BundleError(where, f"differs from the metadata of {name} "
                                             f"revision {number}")
            else:
                known = await self.state.getBlob(fileName)
                if known is None or known.sha3_384 != digest or not self.cache.contains(digest):
                    raise BundleError(where, f"missing: {name} revision {number} is neither "
                                             f"in the bundle nor on this node (import the "
                                             f"bundle that carried it first)")
            revisions[number] = ImportedRevision(snapId, number, digest, size, snapObject)
            records.append(BlobRecord(
                name=fileName, sha3_384=digest, size=size,
                url=str(download.get("url") or ""), snapId=snapId, snapName=name,
                revision=number,
                architectures=tuple(a for a in snapObject.get("architectures") or ()
                                    if isinstance(a, str))))
        channels = []
        for channel in described["channels"]:
            try:
                key = normaliseChannel(channel["channel"])
            except ValueError:
                raise BundleError("manifest.json", f"{channel['channel']!r} of {name} "
                                                   f"is not a channel")
            if channel["revision"] not in revisions:
                raise BundleError("manifest.json", f"{name} {key} names revision "
                                                   f"{channel['revision']}, which it does "
                                                   f"not describe")
            channels.append(ImportedChannel(snapId, channel["architecture"], key,
                                            channel["revision"],
                                            str(channel.get("released-at") or "")))
        snap = ImportedSnap(snapId, name, described["info"], tuple(channels), revisions)
        return snap, records

    async def _checkChain(self, path: str, assertion: Assertion, find: Any) -> None:
        key = assertion.signKey
        if key not in self.roots and key not in TRUSTED_KEYS \
                and await find("account-key", (key,)) is None:
            raise BundleError(path, f"signed by key {key}, whose account-key assertion "
                                    f"({assertionPath('account-key', [key])}) is neither in "
                                    f"the bundle nor on this node")
        for header in _ACCOUNT_HEADERS:
            account = assertion.headers.get(header)
            if not account or account in TRUSTED_ACCOUNTS:
                continue
            if assertion.type == "account" and header == "account-id":
                continue
            if await find("account", (account,)) is None:
                raise BundleError(path, f"names account {account} ({header}), whose account "
                                        f"assertion is neither in the bundle nor on this node")

    # -- committing ----------------------------------------------------------

    async def _commitBlobs(self, staged: StagedBundle) -> list[str]:
        """
        Put the staged blobs the cache lacks into it, through its verifying
        fill.

        @return: the digests added.
        @raise BundleError: when the cache cannot take them (then none
            stays added).
        """
        wanted = [entry for entry in staged.manifest["blobs"]
                  if not self.cache.contains(entry["sha3-384"])]
        total = sum(entry["size"] for entry in wanted)
        if total > self.cache.maxSize:
            raise BundleError("", f"the bundle's {total} bytes of new blobs do not fit in the "
                                  f"blob cache ({self.cache.maxSize} bytes): raise --cache-size")
        if not self.evict and self.cache.usedSize + total > self.cache.maxSize:
            raise BundleError("", f"the bundle's {total} bytes of new blobs would evict earlier "
                                  f"imports from the blob cache ({self.cache.usedSize} of "
                                  f"{self.cache.maxSize} bytes used): raise --cache-size")
        added: list[str] = []
        try:
            for entry in wanted:
                await self._fill(entry, staged.blobFiles[entry["path"]])
                added.append(entry["sha3-384"])
        except BaseException:
            for digest in added:
                self.cache.remove(digest)
            raise
        return added

    async def _fill(self, entry: dict[str, Any], stagedPath: str) -> None:
        digest, size, path = entry["sha3-384"], entry["size"], entry["path"]
        try:
            fill = self.cache.beginFill(digest, size)
        except ValueError as error:
            raise BundleError(path, f"cannot enter the blob cache now: {error}")
        if fill is None:
            raise BundleError(path, "no room for it in the blob cache: raise --cache-size")
        fill.start()
        written = 0
        with open(stagedPath, "rb") as staged:
            for chunk in fileChunks(staged):
                fill.write(chunk)
                if fill.failure is not None:
                    break
                written += len(chunk)
                if written % WRITE_SLICE < len(chunk):
                    await deferLater(self.reactor, 0, lambda: None)
        if not await fill.finish():
            reason = fill.failure.getErrorMessage() if fill.failure is not None else "?"
            raise BundleError(path, f"refused by the blob cache: {reason}")


def stagingDirectory(settings: Any) -> str:
    """
    Where bundles are received and staged: in the data directory, on disk
    (never C{/tmp}, which may be memory).
    """
    return os.path.join(settings.dataDir or ".", "import-staging")


def importRoots(settings: Any) -> dict[str, Any]:
    """
    The root keys imports trust: the built-in one and C{--trusted-keys}.

    @raise ValueError: naming the option, when the file is unusable.
    """
    try:
        return trustedRoots(settings.trustedKeys)
    except SignatureError as error:
        raise ValueError(f"--trusted-keys: {error}")

