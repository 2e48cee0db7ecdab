# -*- test-case-name: tests.test_offline_units,tests.test_offline -*-
"""
The bundle format: one uncompressed tar file carrying snap blobs, their
store metadata and their signed assertions from a connected node to an
air-gapped one.

Layout (member order matters: the manifest comes first so that an import
can check every later member while it streams past)::

    manifest.json                       what follows, with sizes and digests
    blobs/<snap-id>_<revision>.snap     the snap files, byte for byte
    assertions/<type>/<key>/...         one signed assertion each, as served

The manifest (format 1) is JSON::

    {"format": 1, "created": "...", "generator": "snapstore X",
     "snaps": [{"name", "snap-id", "info": {"snap": {...}, "default-track": ...},
                "channels": [{"architecture", "channel", "revision", "released-at"}],
                "revisions": [{"revision", "sha3-384", "size", "snap": {...}}]}],
     "blobs": [{"path", "name", "snap-id", "revision", "sha3-384", "size"}],
     "assertions": [{"path", "type", "primary-key": [...], "sha3-384", "size"}]}

A revision listed under C{snaps} whose blob is not under C{blobs} was
carried by an earlier bundle (C{snapstore export --since}); the importing
node must already have it.

Nothing here touches the network, the reactor or the state store: these are
pure functions over bytes and files, run in a thread by the importer.
Tar uncompressed because snaps are squashfs images, compressed already.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tarfile
from typing import IO, Any, Iterable, Optional

import attrs

MANIFEST = "manifest.json"
FORMAT = 1
BLOB_DIR = "blobs/"
ASSERTION_DIR = "assertions/"
#: A manifest larger than this is not one (a bundle of ~100k revisions).
MAX_MANIFEST = 64 << 20
#: snapd's own limits: headers 128 KiB, body 2 MiB, signature 128 KiB.
MAX_ASSERTION = 4 << 20
#: Deeper JSON than this is not a manifest (a real one nests about 8
#: levels: snap metadata included); checked before Python's recursion
#: limit could be reached anywhere.
MAX_MANIFEST_DEPTH = 64
CHUNK = 1 << 20

#: Primary-key headers by assertion type, in type order (asserts/*.go).
PRIMARY_KEYS = {
    "account": ("account-id",),
    "account-key": ("public-key-sha3-384",),
    "snap-declaration": ("series", "snap-id"),
    "snap-revision": ("snap-sha3-384",),
    "store": ("store",),
    "validation-set": ("series", "account-id", "name", "sequence"),
    "model": ("series", "brand-id", "model"),
}
#: Compiled into stock snapd (docs/architecture.md, "The store API in brief": assertions): a chain ends here, and a
#: bundle need not carry them.
TRUSTED_KEYS = frozenset(["-CvQKAwRQ5h3Ffn10FILJoEZUXOv6km9FwA80-Rcj-f-6jadQ89VRswHNiEB9Lxk"])
TRUSTED_ACCOUNTS = frozenset(["canonical"])

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._=+-][A-Za-z0-9._=+-]{0,255}$")
_BLOB_NAME = re.compile(r"^[A-Za-z0-9]{1,64}_[0-9]{1,12}\.snap$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{96}$")


class BundleError(Exception):
    """
    A bundle is damaged, incomplete or inconsistent.  The message names the
    first bad member and says what is wrong with it; nothing was imported.

    @ivar member: the member's path in the bundle ("" for the bundle).
    """

    def __init__(self, member: str, problem: str) -> None:
        super().__init__(f"{member}: {problem}" if member else problem)
        self.member = member
        self.problem = problem


def digestBase64(hexDigest: str) -> str:
    """
    The C{snap-sha3-384} spelling of a blob digest: base64url, unpadded, of
    the raw sha3-384 (the download metadata spells it in hex).
    """
    return base64.urlsafe_b64encode(bytes.fromhex(hexDigest)).rstrip(b"=").decode("ascii")


def blobName(snapId: str, revision: int) -> str:
    """
    The store's download file name of a revision, also its bundle name.
    """
    return f"{snapId}_{revision}.snap"


def assertionPath(type: str, primaryKey: Iterable[str]) -> str:
    """
    The bundle path of an assertion (its C{/v2/assertions/} path).
    """
    return ASSERTION_DIR + "/".join([type, *primaryKey])


# -- assertions ----------------------------------------------------------------


@attrs.frozen
class Assertion:
    """
    The parts of a signed assertion an import checks; never its signature
    (devices verify that against their trusted roots).

    @ivar headers: the top-level single-line headers.
    @ivar text: the exact bytes.
    """

    type: str
    headers: dict[str, str]
    text: bytes

    @property
    def primaryKey(self) -> tuple[str, ...]:
        names = PRIMARY_KEYS.get(self.type, ())
        key = tuple(self.headers.get(name, "") for name in names)
        if self.type == "snap-revision" and self.headers.get("provenance", "global-upload") \
                != "global-upload":
            key += (self.headers["provenance"],)
        return key

    @property
    def revision(self) -> int:
        try:
            return int(self.headers.get("revision", "0"))
        except ValueError:
            return 0

    @property
    def signKey(self) -> str:
        return self.headers.get("sign-key-sha3-384", "")


def parseAssertion(text: bytes) -> Assertion:
    """
    Read the headers of one assertion (docs/architecture.md, "The store API in brief": assertions).

    @raise ValueError: when C{text} is not an assertion.
    """
    if len(text) > MAX_ASSERTION:
        raise ValueError("larger than an assertion can be")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8")
    head, separator, rest = decoded.partition("\n\n")
    if not separator or not rest.strip():
        raise ValueError("no signature")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        if not line or line[0] == " ":
            continue  # a list item, map entry or text continuation
        name, colon, value = line.partition(":")
        if not colon or not name:
            raise ValueError(f"bad header line {line[:40]!r}")
        headers[name] = value.strip()
    kind = headers.get("type", "")
    if not kind or "sign-key-sha3-384" not in headers:
        raise ValueError("no type or sign-key-sha3-384 header")
    for name in PRIMARY_KEYS.get(kind, ()):
        value = headers.get(name, "")
        if kind == "validation-set" and name == "sequence":
            continue
        if not _SAFE_SEGMENT.match(value):
            raise ValueError(f"bad primary key header {name}")
    return Assertion(kind, headers, text)


# -- manifests -----------------------------------------------------------------


def _check(condition: bool, member: str, problem: str) -> None:
    if not condition:
        raise BundleError(member, problem)


def checkManifest(manifest: Any) -> dict[str, Any]:
    """
    Check a manifest's shape, so that later code can index it freely.

    @return: C{manifest}.
    @raise BundleError: naming C{manifest.json}.
    """
    where = MANIFEST
    _check(isinstance(manifest, dict), where, "not a JSON object")
    _check(manifest.get("format") == FORMAT, where,
           f"format {manifest.get('format')!r} is not {FORMAT} (made by a newer snapstore?)")
    for key in ("snaps", "blobs", "assertions"):
        _check(isinstance(manifest.get(key), list), where, f"{key!r} is not a list")
    paths: set[str] = set()
    for blob in manifest["blobs"]:
        _check(isinstance(blob, dict), where, "a blob entry is not an object")
        path = blob.get("path")
        _check(isinstance(blob.get("name"), str) and _BLOB_NAME.match(blob["name"]) is not None,
               where, f"bad blob name {blob.get('name')!r}")
        _check(path == BLOB_DIR + blob["name"], where, f"bad blob path {path!r}")
        _check(isinstance(blob.get("sha3-384"), str) and _HEX_DIGEST.match(blob["sha3-384"])
               is not None, path, "no sha3-384 in the manifest")
        _check(isinstance(blob.get("size"), int) and blob["size"] >= 0, path,
               "no size in the manifest")
        _check(isinstance(blob.get("revision"), int) and isinstance(blob.get("snap-id"), str),
               path, "no snap-id and revision in the manifest")
        _check(path not in paths, path, "listed twice in the manifest")
        paths.add(path)
    for entry in manifest["assertions"]:
        _check(isinstance(entry, dict), where, "an assertion entry is not an object")
        path = entry.get("path")
        key = entry.get("primary-key")
        _check(isinstance(entry.get("type"), str) and isinstance(key, list)
               and all(isinstance(k, str) and _SAFE_SEGMENT.match(k) for k in key)
               and _SAFE_SEGMENT.match(entry["type"]) is not None,
               where, f"bad assertion entry {path!r}")
        _check(path == assertionPath(entry["type"], key), where, f"bad assertion path {path!r}")
        _check(isinstance(entry.get("sha3-384"), str) and isinstance(entry.get("size"), int),
               path, "no sha3-384 and size in the manifest")
        _check(0 <= entry["size"] <= MAX_ASSERTION, path,
               f"listed as {entry['size']} bytes, larger than an assertion can be "
               f"({MAX_ASSERTION})")
        _check(path not in paths, path, "listed twice in the manifest")
        paths.add(path)
    for snap in manifest["snaps"]:
        _check(isinstance(snap, dict) and isinstance(snap.get("name"), str)
               and isinstance(snap.get("snap-id"), str) and isinstance(snap.get("info"), dict)
               and isinstance(snap.get("channels"), list)
               and isinstance(snap.get("revisions"), list),
               where, f"bad snap entry {str(snap)[:60]}")
        for revision in snap["revisions"]:
            _check(isinstance(revision, dict) and isinstance(revision.get("revision"), int)
                   and isinstance(revision.get("snap"), dict)
                   and isinstance(revision.get("size"), int)
                   and isinstance(revision.get("sha3-384"), str),
                   where, f"bad revision entry of {snap['name']}")
        for channel in snap["channels"]:
            _check(isinstance(channel, dict) and isinstance(channel.get("architecture"), str)
                   and isinstance(channel.get("channel"), str)
                   and isinstance(channel.get("revision"), int),
                   where, f"bad channel entry of {snap['name']}")
    return manifest


def _depth(value: Any) -> int:
    """
    How deeply C{value} nests lists and objects, without recursing.
    """
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in item)
    return deepest


def parseManifest(raw: bytes, where: str) -> dict[str, Any]:
    """
    Decode and check a manifest.  Hostile nesting is refused like any
    other damage, never left to raise C{RecursionError} somewhere later.

    @raise BundleError: naming C{where}.
    """
    try:
        manifest = json.loads(raw)
    except RecursionError:
        raise BundleError(where, f"nested deeper than a manifest can be "
                                 f"({MAX_MANIFEST_DEPTH} levels)")
    except ValueError:
        raise BundleError(where, "not a manifest (not JSON)")
    _check(_depth(manifest) <= MAX_MANIFEST_DEPTH, where,
           f"nested deeper than a manifest can be ({MAX_MANIFEST_DEPTH} levels)")
    return checkManifest(manifest)


def readManifest(path: str) -> dict[str, Any]:
    """
    A manifest from a file: a bundle (its first member) or the
    C{manifest.json} itself, for C{export --since}.

    @raise BundleError: when it holds no usable manifest.
    """
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path, mode="r|") as archive:
                member = archive.next()
                if member is None or member.name != MANIFEST:
                    raise BundleError(path, "the first member is not manifest.json")
                extracted = archive.extractfile(member)
                if extracted is None:
                    raise BundleError(path, "manifest.json is not a file")
                raw = extracted.read(MAX_MANIFEST + 1)
        else:
            with open(path, "rb") as manifestFile:
                raw = manifestFile.read(MAX_MANIFEST + 1)
    except (OSError, tarfile.TarError) as error:
        raise BundleError(path, f"cannot read it: {error}")
    _check(len(raw) <= MAX_MANIFEST, path, "too large to be a manifest")
    return parseManifest(raw, path)


# -- reading a bundle ------------------------------------------------------------


@attrs.define
class StagedBundle:
    """
    A bundle whose members all matched its manifest.

    @ivar blobFiles: C{bundle path -> staged file path}.
    @ivar assertions: C{bundle path -> Assertion}.
    """

    manifest: dict[str, Any]
    blobFiles: dict[str, str]
    assertions: dict[str, Assertion]


def _copyHashed(source: IO[bytes], target: IO[bytes], limit: int) -> tuple[int, str]:
    digest = hashlib.sha3_384()
    count = 0
    while True:
        chunk = source.read(CHUNK)
        if not chunk:
            return count, digest.hexdigest()
        count += len(chunk)
        if count > limit:
            return count, ""
        digest.update(chunk)
        target.write(chunk)


def stageBundle(stream: IO[bytes], stagingDir: str) -> StagedBundle:
    """
    Read a bundle from C{stream} once, front to back, checking each member
    against the manifest as it passes: blobs are copied into C{stagingDir}
    while hashed, assertions kept in memory.  Blocking: run it in a thread.

    @raise BundleError: naming the first member that is missing, extra,
        truncated, or whose size or sha3-384 differs from the manifest.
    """
    try:
        archive = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as error:
        raise BundleError("", f"not a bundle (not a tar file: {error})")
    blobFiles: dict[str, str] = {}
    assertions: dict[str, Assertion] = {}
    try:
        first = archive.next()
        if first is None or first.name != MANIFEST or not first.isfile():
            raise BundleError(MANIFEST, "missing: a bundle starts with manifest.json")
        _check(first.size <= MAX_MANIFEST, MANIFEST, "too large")
        extracted = archive.extractfile(first)
        assert extracted is not None
        manifest = parseManifest(extracted.read(MAX_MANIFEST + 1), MANIFEST)
        expected = {entry["path"]: entry for entry in manifest["blobs"]}
        expected.update({entry["path"]: entry for entry in manifest["assertions"]})
        seen: set[str] = set()
        while True:
            member = archive.next()
            if member is None:
                break
            name = member.name
            _check(name in expected, name, "not listed in the manifest")
            _check(name not in seen, name, "appears twice in the bundle")
            _check(member.isfile(), name, "not a regular file")
            seen.add(name)
            entry = expected[name]
            _check(member.size == entry["size"], name,
                   f"is {member.size} bytes, the manifest says {entry['size']}")
            source = archive.extractfile(member)
            assert source is not None
            if name.startswith(BLOB_DIR):
                target = os.path.join(stagingDir, f"blob-{len(blobFiles)}")
                with open(target, "wb") as staged:
                    size, digest = _copyHashed(source, staged, entry["size"])
                blobFiles[name] = target
            else:
                # checkManifest bounded the size: at most MAX_ASSERTION.
                text = source.read(min(entry["size"], MAX_ASSERTION) + 1)
                size, digest = len(text), hashlib.sha3_384(text).hexdigest()
                try:
                    assertions[name] = parseAssertion(text)
                except ValueError as error:
                    raise BundleError(name, f"not an assertion ({error})")
            _check(size == entry["size"], name,
                   f"is truncated: {size} of {entry['size']} bytes")
            _check(digest == entry["sha3-384"], name,
                   f"sha3-384 {digest or '?'} does not match the manifest's {entry['sha3-384']}")
    except (tarfile.TarError, EOFError) as error:
        raise BundleError("", f"the bundle is damaged or truncated ({error})")
    finally:
        archive.close()
    for path in expected:
        _check(path in seen, path, "missing from the bundle (listed in the manifest)")
    return StagedBundle(manifest, blobFiles, assertions)


# -- writing a bundle ------------------------------------------------------------


def _addBytes(archive: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def writeBundle(target: IO[bytes], manifest: dict[str, Any], blobFiles: dict[str, str],
                assertionTexts: dict[str, bytes], mtime: float,
                progress: Optional[Any] = None) -> None:
    """
    Write a bundle: the manifest first, then every blob and assertion it
    lists, in its order.

    @param blobFiles: C{bundle path -> local file} of every listed blob.
    @param assertionTexts: C{bundle path -> text} of every listed assertion.
    @param progress: called with each count of blob bytes written, or C{None}.
    """
    with tarfile.open(fileobj=target, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        _addBytes(archive, MANIFEST,
                  json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8") + b"\n", mtime)
        for entry in manifest["blobs"]:
            info = tarfile.TarInfo(entry["path"])
            info.size = entry["size"]
            info.mtime = int(mtime)
            info.mode = 0o644
            with open(blobFiles[entry["path"]], "rb") as blob:
                archive.addfile(info, _Counting(blob, progress))
        for entry in manifest["assertions"]:
            _addBytes(archive, entry["path"], assertionTexts[entry["path"]], mtime)


class _Counting:
    """
    A file wrapper telling C{progress} how much was read.
    """

    def __init__(self, wrapped: IO[bytes], progress: Optional[Any]) -> None:
        self.wrapped = wrapped
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self.wrapped.read(size)
        if self.progress is not None and data:
            self.progress(len(data))
        return data
