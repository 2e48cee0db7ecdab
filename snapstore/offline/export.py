# -*- test-case-name: tests.test_offline -*-
"""
Exporting a bundle on a connected node.

The exporter is a client of a snapstore's I{store endpoint}, exactly like a
device: it asks for each snap, channel and architecture with a refresh
call (an C{install} action, as C{snap download} does), for the snap's
channel map with an C{info} call, downloads the blob from the URL it was
given (so the connected node's cache is warmed on the way) and fetches the
assertion chain from C{/v2/assertions/}.  It therefore needs no admin API
and no database, and the connected node's rules (allow/deny lists,
overrides) shape what is exported as they shape what devices get.

Like the rest of the C{snapstore} command it is short-lived and
synchronous: plain C{urllib}, no reactor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any, Callable, Optional, Sequence

from snapstore import __version__
from snapstore.offline.bundle import (
    BLOB_DIR,
    FORMAT,
    TRUSTED_ACCOUNTS,
    TRUSTED_KEYS,
    assertionPath,
    blobName,
    digestBase64,
    parseAssertion,
    writeBundle,
)
from snapstore.state.records import normaliseChannel

#: The snap fields asked for, those snapd asks for (docs/architecture.md, "The store API in brief": calls).
REFRESH_FIELDS = [
    "architectures", "base", "confinement", "links", "contact", "created-at",
    "description", "download", "epoch", "license", "name", "prices", "private",
    "publisher", "revision", "snap-id", "snap-yaml", "summary", "title", "type",
    "version", "website", "store-url", "media", "common-ids", "categories",
]
#: The max-format of each assertion type a current snapd sends.
MAX_FORMATS = {"snap-declaration": 7, "account-key": 1}
_CONTENT_PLUG = re.compile(r"default-provider:\s*['\"]?([a-z0-9][a-z0-9-]*)")


class ExportError(Exception):
    """
    The export cannot be made; the message says why.

    @ivar unreachable: the store endpoint could not be reached at all.
    """

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unreachable = unreachable


class Progress:
    """
    A one-line progress bar (bytes, rate, ETA) on a terminal; silent when
    C{out} is not one, so logs and pipes stay clean.
    """

    def __init__(self, out: IO[str], total: int, label: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.total = total
        self.label = label
        self.clock = clock
        self.done = 0
        self.started = clock()
        self.enabled = total > 0 and bool(getattr(out, "isatty", lambda: False)())
        self._drawn = 0.0

    def __call__(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if self.enabled and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            self.out.write("\r" + self.line(now))
            self.out.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(share * 20)
        return (f"{self.label} [{bar:<20}] {_size(self.done)}/{_size(self.total)} "
                f"{_size(rate)}/s ETA {int(left) // 60}:{int(left) % 60:02d} ")

    def finish(self) -> None:
        if self.enabled:
            self.out.write("\n")
            self.out.flush()


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1000
    return f"{count:.1f}GB"


class StoreClient:
    """
    A synchronous client of a snapstore store endpoint (or any store).
    """

    def __init__(self, base: str, timeout: float = 60.0,
                 opener: Optional[Callable[..., Any]] = None) -> None:
        self.base = base if base.endswith("/") else base + "/"
        self.timeout = timeout
        self._open = opener or urllib.request.build_opener(urllib.request.ProxyHandler({})).open

    def _request(self, method: str, url: str, headers: dict[str, str],
                 body: Optional[bytes] = None) -> Any:
        headers = dict(headers, **{"User-Agent": f"snapstore-export/{__version__}"})
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            return self._open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            return error
        except (urllib.error.URLError, OSError) as error:
            raise ExportError(f"cannot reach the store endpoint at {self.base}: "
                              f"{getattr(error, 'reason', error)}", unreachable=True)

    def _json(self, response: Any, what: str) -> Any:
        with response:
            raw = response.read()
        try:
            return json.loads(raw)
        except ValueError:
            raise ExportError(f"{what}: the store answered HTTP {response.status} "
                              f"without JSON")

    def refresh(self, name: str, channel: str, architecture: str,
                revision: Optional[int] = None) -> dict[str, Any]:
        """
        What an install of C{name} from C{channel} on C{architecture} gets
        (of C{revision} when given, as C{snap download --revision}).
        """
        action: dict[str, Any] = {"action": "install", "instance-key": "install-1",
                                  "name": name, "channel": channel, "epoch": None}
        if revision is not None:
            action = {"action": "download", "instance-key": "download-1", "name": name,
                      "revision": revision, "epoch": None}
        body = json.dumps({
            "context": [],
            "actions": [action],
            "fields": REFRESH_FIELDS,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Snap-Device-Series": "16", "Snap-Device-Architecture": architecture,
                   "Snap-Device-Capabilities": "default-tracks"}
        what = f"{name} {channel} {architecture}"
        answer = self._json(self._request("POST", self.base + "v2/snaps/refresh", headers,
                                          body), what)
        try:
            result = answer["results"][0]
        except (KeyError, IndexError, TypeError):
            message = _errors(answer) or "no result"
            raise ExportError(f"{what}: the store refused: {message}")
        if result.get("result") == "error":
            error = result.get("error") or {}
            raise ExportError(f"{what}: {error.get('code')}: {error.get('message')}")
        return result

    def info(self, name: str) -> dict[str, Any]:
        """
        The store's C{info} answer for C{name} (every architecture).
        """
        url = self.base + "v2/snaps/info/" + urllib.parse.quote(name, safe="")
        response = self._request("GET", url, {"Snap-Device-Series": "16"})
        answer = self._json(response, f"info {name}")
        if response.status != 200:
            raise ExportError(f"info {name}: {_errors(answer) or response.status}")
        return answer

    def assertion(self, type: str, key: Sequence[str],
                  sequence: Optional[str] = None) -> Optional[bytes]:
        """
        One assertion's text, or C{None} when the store has none.

        @param sequence: for sequence-forming types (C{validation-set}),
            C{latest} or a number; C{key} is then the sequence key.
        """
        path = "/".join([type] + [urllib.parse.quote(k, safe="") for k in key])
        url = f"{self.base}v2/assertions/{path}?max-format={MAX_FORMATS.get(type, 0)}"
        if sequence is not None:
            url += "&sequence=" + urllib.parse.quote(sequence, safe="")
        response = self._request("GET", url, {"Accept": "application/x.ubuntu.assertion"})
        with response:
            body = response.read()
        if response.status == 404:
            return None
        if response.status != 200:
            raise ExportError(f"assertion {path}: the store answered HTTP {response.status}")
        return body

    def download(self, url: str, target: str, progress: Callable[[int], None]) -> tuple[int, str]:
        """
        Download C{url} into the file C{target}.

        @return: its size and lowercase hex sha3-384.
        """
        response = self._request("GET", url, {"Accept": ""})
        if response.status != 200:
            with response:
                raise ExportError(f"download {url}: HTTP {response.status} "
                                  f"{_errors(_maybeJSON(response.read())) or ''}")
        digest = hashlib.sha3_384()
        size = 0
        with response, open(target, "wb") as output:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                output.write(chunk)
                size += len(chunk)
                progress(len(chunk))
        return size, digest.hexdigest()


def _maybeJSON(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _errors(answer: Any) -> str:
    try:
        return "; ".join(f"{e['code']}: {e['message']}" for e in answer["error-list"])
    except Exception:
        return ""


def dependencies(snap: dict[str, Any]) -> list[str]:
    """
    The snaps a revision needs: its base and the default providers of its
    content plugs (read from C{snap-yaml}).
    """
    names = []
    base = snap.get("base")
    if isinstance(base, str) and base:
        names.append(base)
    for provider in _CONTENT_PLUG.findall(snap.get("snap-yaml") or ""):
        if provider not in names:
            names.append(provider)
    return names


def parseSpec(spec: str) -> list[tuple[str, str]]:
    """
    C{SNAP[=CHANNEL[,CHANNEL...]]} -> C{[(snap, channel), ...]}.
    """
    name, _, channels = spec.partition("=")
    if not name:
        raise ExportError(f"{spec!r} is not SNAP[=CHANNEL]")
    pairs = []
    for channel in (channels or "stable").split(","):
        try:
            normaliseChannel(channel)
        except ValueError:
            raise ExportError(f"{channel!r} (in {spec!r}) is not a channel")
        pairs.append((name, channel))
    return pairs


def export(client: StoreClient, specs: Sequence[tuple[str, str]],
           architectures: Sequence[str], output: str, since: Optional[dict[str, Any]] = None,
           withDeps: bool = False, progressOut: Optional[IO[str]] = None,
           now: Optional[float] = None,
           validationSets: Sequence[Any] = ()) -> dict[str, Any]:
    """
    Write a bundle of C{specs} for C{architectures} to C{output}.

    @param since: a previous bundle's manifest: blobs and assertions it
        carried (same digest) are left out.
    @param validationSets: L{snapstore.offline.validationsets.ValidationSetSpec}s:
        each one's assertion goes in, with the revisions it requires (its
        required snaps without a revision: their stable channel).
    @return: the manifest written.
    """
    now = time.time() if now is None else now
    progressOut = progressOut if progressOut is not None else sys.stderr
    snaps: dict[str, dict[str, Any]] = {}
    queue = list(specs)
    extraTexts, pinned = _validationSets(client, validationSets)
    queue += [(requirement.name, "stable") for requirement in pinned if
              requirement.revision is None]
    seen: set[tuple[str, str]] = set()
    while queue:
        name, channel = queue.pop(0)
        if (name, channel) in seen:
            continue
        seen.add((name, channel))
        info = None
        for architecture in architectures:
            result = client.refresh(name, channel, architecture)
            snap = dict(result["snap"])
            # Icons and deltas are not carried: an offline node has nowhere
            # to get them (snapd falls back to the full blob).
            snap["media"] = []
            snapId, revision = snap["snap-id"], snap["revision"]
            download = snap["download"] = dict(snap.get("download") or {}, deltas=[])
            entry = snaps.setdefault(snapId, {"name": snap["name"], "snap-id": snapId,
                                              "channels": [], "revisions": {}})
            if info is None:
                info = client.info(name)
                snapLevel = dict(info.get("snap") or {})
                snapLevel["media"] = []
                entry["info"] = {"snap": snapLevel, "default-track": info.get("default-track")}
            key = normaliseChannel(channel)
            releasedAt = ""
            for mapped in info.get("channel-map") or []:
                mappedChannel = mapped.get("channel") or {}
                if mappedChannel.get("architecture") == architecture and \
                        normaliseChannel(mappedChannel.get("name", "x")) == key:
                    releasedAt = mappedChannel.get("released-at") or ""
            entry["channels"].append({"architecture": architecture, "channel": key,
                                      "revision": revision, "released-at": releasedAt})
            entry["revisions"][revision] = {"revision": revision,
                                            "sha3-384": download["sha3-384"].lower(),
                                            "size": download["size"], "snap": snap}
            if withDeps:
                queue += [(dependency, "stable") for dependency in dependencies(snap)]
    for requirement in pinned:
        if requirement.revision is not None:
            _addRevision(client, snaps, requirement.name, requirement.revision, architectures)
    carried = {blob["sha3-384"] for blob in (since or {}).get("blobs", [])}
    carriedAssertions = {(a["path"], a["sha3-384"]) for a in (since or {}).get("assertions", [])}
    work = tempfile.mkdtemp(prefix=".snapstore-export-",
                            dir=os.path.dirname(os.path.abspath(output)))
    try:
        blobs, blobFiles = _downloadBlobs(client, snaps, carried, work, progressOut)
        texts = _fetchChain(client, snaps, extraTexts)
        assertions = []
        for path in sorted(texts):
            digest = hashlib.sha3_384(texts[path]).hexdigest()
            if (path, digest) in carriedAssertions:
                continue
            parsed = parseAssertion(texts[path])
            assertions.append({"path": path, "type": parsed.type,
                               "primary-key": list(parsed.primaryKey),
                               "sha3-384": digest, "size": len(texts[path])})
        manifest = {
            "format": FORMAT,
            "generator": f"snapstore {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "since": (since or {}).get("created"),
            "snaps": [dict(entry, revisions=[entry["revisions"][r]
                                             for r in sorted(entry["revisions"])])
                      for entry in snaps.values()],
            "blobs": blobs,
            "assertions": assertions,
        }
        partial = os.path.join(work, "bundle.tar")
        writing = Progress(progressOut, sum(b["size"] for b in blobs), "writing    ")
        with open(partial, "wb") as target:
            writeBundle(target, manifest, blobFiles, texts, now, writing)
        writing.finish()
        os.replace(partial, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def _downloadBlobs(client: StoreClient, snaps: dict[str, Any], carried: set[str], work: str,
                   progressOut: IO[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    wanted = []
    for entry in snaps.values():
        for revision in sorted(entry["revisions"]):
            described = entry["revisions"][revision]
            if described["sha3-384"] not in carried:
                wanted.append((entry, described))
    progress = Progress(progressOut, sum(d["size"] for _, d in wanted), "downloading")
    blobs, files = [], {}
    for entry, described in wanted:
        name = blobName(entry["snap-id"], described["revision"])
        target = os.path.join(work, name)
        url = described["snap"]["download"]["url"]
        size, digest = client.download(url, target, progress)
        if (size, digest) != (described["size"], described["sha3-384"]):
            raise ExportError(f"{entry['name']} revision {described['revision']}: downloaded "
                              f"{size} bytes with sha3-384 {digest}, the store said "
                              f"{described['size']} bytes, {described['sha3-384']}")
        path = BLOB_DIR + name
        blobs.append({"path": path, "name": name, "snap-id": entry["snap-id"],
                      "revision": described["revision"], "sha3-384": digest, "size": size})
        files[path] = target
    progress.finish()
    return blobs, files


def _validationSets(client: StoreClient, specs: Sequence[Any]) -> tuple[dict[str, bytes],
                                                                        list[Any]]:
    """
    Fetch each validation set asked for.

    @return: the assertions by bundle path, and the snaps they require.
    """
    from snapstore.offline.validationsets import ValidationSetError, requirements

    texts: dict[str, bytes] = {}
    required = []
    for spec in specs:
        wanted = "latest" if spec.sequence is None else str(spec.sequence)
        text = client.assertion("validation-set", spec.key, sequence=wanted)
        where = f"{spec.account}/{spec.name}" + (f"={spec.sequence}" if spec.sequence else "")
        if text is None:
            raise ExportError(f"the store has no validation set {where}")
        parsed = parseAssertion(text)
        texts[assertionPath(parsed.type, parsed.primaryKey)] = text
        try:
            found = requirements(text)
        except ValidationSetError as error:
            raise ExportError(f"validation set {where}: {error}")
        required += [r for r in found if r.presence == "required"]
    return texts, required


def _addRevision(client: StoreClient, snaps: dict[str, Any], name: str, revision: int,
                 architectures: Sequence[str]) -> None:
    """
    Add one revision a validation set requires (for each of
    C{architectures} it was built for) to C{snaps}, with no channel.
    """
    for architecture in architectures:
        try:
            result = client.refresh(name, "stable", architecture, revision=revision)
        except ExportError:
            continue  # not built for this architecture
        snap = dict(result["snap"], media=[])
        download = snap["download"] = dict(snap.get("download") or {}, deltas=[])
        entry = snaps.get(snap["snap-id"])
        if entry is None:
            info = client.info(name)
            entry = snaps[snap["snap-id"]] = {
                "name": snap["name"], "snap-id": snap["snap-id"], "channels": [],
                "revisions": {},
                "info": {"snap": dict(info.get("snap") or {}, media=[]),
                         "default-track": info.get("default-track")}}
        entry["revisions"][revision] = {"revision": revision,
                                        "sha3-384": download["sha3-384"].lower(),
                                        "size": download["size"], "snap": snap}
        return
    raise ExportError(f"{name} revision {revision}, required by a validation set, is not "
                      f"available for {', '.join(architectures)}")


def _fetchChain(client: StoreClient, snaps: dict[str, Any],
                extra: Optional[dict[str, bytes]] = None) -> dict[str, bytes]:
    """
    Every assertion a device needs to verify the snaps: each revision's
    C{snap-revision}, each snap's C{snap-declaration}, and the accounts and
    account keys they name, up to the compiled-in root; and those of the
    C{extra} assertions (validation sets), which are included.
    """
    texts: dict[str, bytes] = {}
    pending: list[tuple[str, tuple[str, ...], bool]] = []
    for path, extraText in (extra or {}).items():
        parsed = parseAssertion(extraText)
        texts[path] = extraText
        if parsed.signKey not in TRUSTED_KEYS:
            pending.append(("account-key", (parsed.signKey,), True))
        for header in ("authority-id", "account-id"):
            account = parsed.headers.get(header)
            if account and account not in TRUSTED_ACCOUNTS:
                pending.append(("account", (account,), True))
    for entry in snaps.values():
        pending.append(("snap-declaration", ("16", entry["snap-id"]), True))
        for described in entry["revisions"].values():
            pending.append(("snap-revision", (digestBase64(described["sha3-384"]),), True))
    while pending:
        kind, key, required = pending.pop(0)
        path = assertionPath(kind, key)
        if path in texts:
            continue
        text = client.assertion(kind, key)
        if text is None:
            if required:
                raise ExportError(f"the store has no {kind} assertion {'/'.join(key)}")
            continue
        texts[path] = text
        parsed = parseAssertion(text)
        if parsed.signKey not in TRUSTED_KEYS:
            pending.append(("account-key", (parsed.signKey,), True))
        for header in ("authority-id", "publisher-id", "developer-id", "account-id"):
            account = parsed.headers.get(header)
            if account and account not in TRUSTED_ACCOUNTS and not (
                    kind == "account" and header == "account-id"):
                pending.append(("account", (account,), True))
    return texts
