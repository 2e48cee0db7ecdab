# -*- test-case-name: tests.test_fakestore -*-
"""
What the fake store sells: snaps, their revisions and channel releases.

Kept apart from HTTP so that tests can reason about the catalogue (e.g.
"stable now points at revision 12") without going through the wire, and so
the resources in L{tests.fakestore.resources} only translate this model into
the JSON shapes of store-api.md.
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Iterable

from tests.fakestore.blobs import Blob

RISKS = ("stable", "candidate", "beta", "edge")

# A fixed "now" for every timestamp the fake hands out: deterministic output
# makes captured responses comparable between runs.
EPOCH_TIMESTAMP = "2026-01-01T00:00:00.000000+00:00"
ASSERTION_TIMESTAMP = "2026-01-01T00:00:00Z"

# snapd's rule for snap names (snap/naming): lower-case letters, digits and
# single inner hyphens, at least one letter, at most 40 characters.
_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9](?:-?[a-z0-9])*$")



def validSnapName(name: str) -> bool:
    """
    Whether snapd would accept C{name} as a snap name.
    """
    return bool(_NAME.match(name)) and len(name) <= 40


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def makeId(kind: str, name: str) -> str:
    """
    Derive a 32-character alphanumeric id (the shape of real snap-ids and
    account-ids) from a name, so the same catalogue always has the same ids.
    """
    digest = hashlib.sha256(f"{kind}:{name}".encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:32])


class UnknownSnap(KeyError):
    """
    No snap of that name (or id) is in the catalogue.
    """


class UnknownRevision(KeyError):
    """
    The snap has no such revision.
    """


@dataclass(frozen=True)
class Channel:
    """
    A parsed channel name: C{track/risk[/branch]}, C{latest} being the
    default track that the store's short names leave out.
    """

    track: str
    risk: str
    branch: str | None = None

    @classmethod
    def parse(cls, name: str) -> "Channel":
        """
        Parse the forms snapd sends: C{stable}, C{latest/stable},
        C{2.0/beta}, C{2.0} (track only: its stable risk),
        C{stable/hotfix}, C{2.0/stable/hotfix}.

        @raise ValueError: for a name that has no valid risk.
        """
        parts = [p for p in (name or "stable").split("/")]
        if any(not p for p in parts) or len(parts) > 3:
            raise ValueError(f"invalid channel name {name!r}")
        if len(parts) == 1:
            if parts[0] in RISKS:
                return cls("latest", parts[0])
            return cls(parts[0], "stable")
        if len(parts) == 2:
            if parts[0] in RISKS:
                return cls("latest", parts[0], parts[1])
            if parts[1] not in RISKS:
                raise ValueError(f"invalid channel name {name!r}")
            return cls(parts[0], parts[1])
        if parts[1] not in RISKS:
            raise ValueError(f"invalid channel name {name!r}")
        return cls(parts[0], parts[1], parts[2])

    @property
    def name(self) -> str:
        """
        The store's short form: C{latest/} is left out.
        """
        parts = [self.risk] if self.track == "latest" else [self.track, self.risk]
        if self.branch:
            parts.append(self.branch)
        return "/".join(parts)

    @property
    def fullName(self) -> str:
        """
        The long form, always with a track.
        """
        return "/".join(
            [self.track, self.risk] + ([self.branch] if self.branch else [])
        )

    def fallbacks(self) -> list["Channel"]:
        """
        The channels that serve this one when it has no release: a closed
        risk follows the next more stable risk of the same track, as in the
        real store's channel map.  Branches do not fall back.
        """
        if self.branch:
            return [self]
        index = RISKS.index(self.risk)
        return [Channel(self.track, risk) for risk in reversed(RISKS[: index + 1])]


@dataclass
class Revision:
    """
    One uploaded revision of a snap, for one or more architectures.
    """

    snap: "Snap"
    revision: int
    blob: Blob
    architectures: tuple[str, ...]
    version: str
    confinement: str
    base: str | None
    epoch: dict
    createdAt: str
    snapYaml: str

    @property
    def size(self) -> int:
        return self.blob.size

    @property
    def sha3_384(self) -> str:
        return self.blob.sha3_384


@dataclass
class Snap:
    """
    A snap in the catalogue, with its revisions and its releases.

    @ivar releases: C{{(architecture, Channel): revision number}}.
    """

    name: str
    snapId: str
    publisherId: str
    publisherUsername: str
    publisherDisplayName: str
    publisherValidation: str
    summary: str
    description: str
    title: str
    type: str
    confinement: str
    base: str | None
    license: str
    categories: tuple[str, ...]
    prices: dict
    private: bool
    defaultTrack: str | None
    revisions: dict[int, Revision] = field(default_factory=dict)
    releases: dict[tuple[str, Channel], int] = field(default_factory=dict)
    releasedAt: dict[tuple[str, Channel], str] = field(default_factory=dict)

    def resolve(self, channel: Channel, architecture: str) -> tuple[Revision, Channel] | None:
        """
        Find the revision a device on C{architecture} gets from C{channel},
        following closed risks to more stable ones.

        @return: the revision and the channel actually used (the store's
            C{effective-channel}), or L{None} if nothing serves it.
        """
        for candidate in channel.fallbacks():
            number = self.releases.get((architecture, candidate))
            if number is not None:
                return self.revisions[number], candidate
        return None

    def releasesFor(self, architecture: str | None = None) -> list[tuple[str, Channel, Revision]]:
        """
        Every (architecture, channel, revision) release, in channel-map
        order: default track first, then by track, stable risk first.
        """
        def key(item):
            (arch, chan), _ = item
            return (
                chan.track != (self.defaultTrack or "latest"),
                chan.track,
                RISKS.index(chan.risk),
                chan.branch or "",
                arch != architecture,
                arch,
            )

        return [
            (arch, chan, self.revisions[number])
            for (arch, chan), number in sorted(self.releases.items(), key=key)
            if architecture is None or arch == architecture
        ]


class Catalogue:
    """
    All snaps of the fake store, by name and by snap-id.
    """

    def __init__(self) -> None:
        self._byName: dict[str, Snap] = {}
        self._byId: dict[str, Snap] = {}

    def __iter__(self):
        return iter(sorted(self._byName.values(), key=lambda s: s.name))

    def addSnap(
        self,
        name: str,
        snapId: str | None = None,
        publisher: str = "canonical",
        summary: str | None = None,
        type: str = "app",
        confinement: str = "strict",
        base: str | None = None,
        description: str | None = None,
        title: str | None = None,
        license: str = "MIT",
        categories: Iterable[str] = (),
        prices: dict | None = None,
        private: bool = False,
        publisherId: str | None = None,
        publisherDisplayName: str | None = None,
        publisherValidation: str = "verified",
        defaultTrack: str | None = None,
    ) -> Snap:
        if not validSnapName(name):
            raise ValueError(f"invalid snap name {name!r}")
        if name in self._byName:
            raise ValueError(f"snap {name!r} already exists")
        if snapId is None:
            snapId = makeId("snap", name)
        if len(snapId) != 32:
            raise ValueError("snap-ids are 32 characters")
        if publisherId is None:
            publisherId = (
                "canonical" if publisher == "canonical" else makeId("account", publisher)
            )
        snap = Snap(
            name=name,
            snapId=snapId,
            publisherId=publisherId,
            publisherUsername=publisher,
            publisherDisplayName=publisherDisplayName or publisher.title(),
            publisherValidation=publisherValidation,
            summary=summary if summary is not None else f"The {name} snap",
            description=description if description is not None else f"{name} is a snap served by the fake store.",
            title=title if title is not None else name,
            type=type,
            confinement=confinement,
            base=base,
            license=license,
            categories=tuple(categories),
            prices=dict(prices or {}),
            private=private,
            defaultTrack=defaultTrack,
        )
        self._byName[name] = snap
        self._byId[snapId] = snap
        return snap

    def byName(self, name: str) -> Snap:
        try:
            return self._byName[name]
        except KeyError:
            raise UnknownSnap(name) from None

    def byId(self, snapId: str) -> Snap:
        try:
            return self._byId[snapId]
        except KeyError:
            raise UnknownSnap(snapId) from None

    def revisionByDigest(self, digestBase64: str) -> Revision | None:
        """
        Find a revision by the base64url SHA3-384 of its blob, as
        C{snap-revision} assertions are looked up.
        """
        for snap in self._byName.values():
            for revision in snap.revisions.values():
                if revision.blob.digestBase64 == digestBase64:
                    return revision
        return None

    def addRevision(
        self,
        name: str,
        revision: int,
        size: int,
        architectures: Iterable[str] = ("amd64",),
        version: str | None = None,
        channels: Iterable[str] = ("stable",),
        confinement: str | None = None,
        base: str | None = None,
        epoch: dict | None = None,
    ) -> Revision:
        snap = self.byName(name)
        if revision in snap.revisions:
            raise ValueError(f"{name} already has revision {revision}")
        if revision < 1:
            raise ValueError("revisions start at 1")
        architectures = tuple(architectures)
        version = version if version is not None else f"1.{revision}"
        confinement = confinement or snap.confinement
        base = base if base is not None else snap.base
        rev = Revision(
            snap=snap,
            revision=revision,
            blob=Blob(snap.snapId, revision, size),
            architectures=architectures,
            version=version,
            confinement=confinement,
            base=base,
            epoch=dict(epoch or {"read": [0], "write": [0]}),
            createdAt=EPOCH_TIMESTAMP,
            snapYaml=_snapYaml(snap, version, confinement, base, architectures),
        )
        snap.revisions[revision] = rev
        for channel in channels:
            for arch in architectures:
                self.release(name, channel, revision, arch)
        return rev

    def release(
        self, name: str, channel: str, revision: int, architecture: str = "amd64"
    ) -> None:
        """
        Point C{channel} for C{architecture} at C{revision}, replacing what
        it pointed at before.
        """
        snap = self.byName(name)
        if revision not in snap.revisions:
            raise UnknownRevision(f"{name} has no revision {revision}")
        parsed = Channel.parse(channel)
        snap.releases[(architecture, parsed)] = revision
        snap.releasedAt[(architecture, parsed)] = EPOCH_TIMESTAMP

    def close(self, name: str, channel: str, architecture: str = "amd64") -> None:
        """
        Remove the release of C{channel} so it follows more stable risks.
        """
        snap = self.byName(name)
        snap.releases.pop((architecture, Channel.parse(channel)), None)


def _snapYaml(snap, version, confinement, base, architectures) -> str:
    """
    A minimal but valid C{meta/snap.yaml}, which snapd reads apps from when
    the store sends C{snap-yaml}.
    """
    lines = [
        f"name: {snap.name}",
        # JSON strings are valid YAML scalars and need no escaping rules.
        f"version: {json.dumps(version)}",
        f"summary: {json.dumps(snap.summary)}",
        f"description: {json.dumps(snap.description)}",
    ]
    if snap.type != "app":
        lines.append(f"type: {snap.type}")
    if base:
        lines.append(f"base: {base}")
    lines.append(f"confinement: {confinement}")
    lines.append("architectures:")
    lines.extend(f"  - {arch}" for arch in architectures)
    if snap.type == "app":
        lines += ["apps:", f"  {snap.name}:", f"    command: bin/{snap.name}"]
    return "\n".join(lines) + "\n"
