# -*- test-case-name: tests.test_fakestore -*-
"""
Assertions in snapd's text format (store-api.md section 7), in two modes.

By default they are signed by nobody.  Stock snapd trusts only Canonical's
root key, so no fake can produce assertions it accepts; what matters for
those tests is that the text decodes (valid headers, a real OpenPGP
public-key packet in the C{account-key} body) so that clients and proxies
get as far as the trust check, and that the bytes are stable so a proxy's
pass-through can be compared.  The signatures are deterministic filler
bytes.

In the signing mode (C{Assertions(catalogue, signed=True)}, C{FakeStore(
signed=True)}) every assertion carries a real RSA/SHA-512 OpenPGP signature
by the store's key, whose C{account-key} is signed by a test root key
(L{TEST_ROOT} gives its self-signed C{account-key}, what a snapstore is
told to trust with C{--trusted-keys}); the store serves that root
C{account-key} too, as the real store serves Canonical's.  Signatures are
deterministic (PKCS#1 v1.5, fixed creation time), so bytes stay stable.
"""

import base64
import hashlib
import struct
import textwrap
from functools import lru_cache

from tests.fakestore.catalogue import ASSERTION_TIMESTAMP, Catalogue

# Primary-key headers per type, in the order snapd's canonical encoding uses
# them (and in the order they appear in /v2/assertions/<type>/... paths).
PRIMARY_KEYS = {
    "account": ("account-id",),
    "account-key": ("public-key-sha3-384",),
    "snap-declaration": ("series", "snap-id"),
    "snap-revision": ("snap-sha3-384",),
    "validation-set": ("series", "account-id", "name", "sequence"),
}

AUTHORITY = "canonical"

# The key id of Canonical's root account-key, which stock snapd has compiled
# in.  The fake store's own account-key claims to be signed by it, as the
# real store's signing keys are; snapd then finds the root key trusted and
# fails only on the (filler) signature, the same place it would fail for any
# assertion not really signed by Canonical.  Signing the account-key with
# itself instead makes snapd stop earlier with "circular assertions".
CANONICAL_ROOT_KEY_ID = "-CvQKAwRQ5h3Ffn10FILJoEZUXOv6km9FwA80-Rcj-f-6jadQ89VRswHNiEB9Lxk"

# 2016-01-01T00:00:00Z: snapd fixes key creation times to this instant so
# key ids are deterministic.
KEY_CREATION_TIME = 1451606400


def _mpi(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return struct.pack(">H", value.bit_length()) + raw


def _packet(tag: int, body: bytes) -> bytes:
    # New-format OpenPGP packet header, as Go's openpgp package writes it.
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        n -= 192
        length = bytes([(n >> 8) + 192, n & 0xFF])
    else:
        length = b"\xff" + struct.pack(">I", n)
    return bytes([0xC0 | tag]) + length + body


@lru_cache(maxsize=None)
def _privateKey(role: str):
    """
    An RSA key generated once per process for C{role} (C{"store"} or
    C{"root"}).
    """
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _publicKeyPacket(role: str) -> bytes:
    numbers = _privateKey(role).public_key().public_numbers()
    return (
        b"\x04"
        + struct.pack(">I", KEY_CREATION_TIME)
        + b"\x01"
        + _mpi(numbers.n)
        + _mpi(numbers.e)
    )


def _encodedKey(role: str) -> tuple[str, str]:
    encoded = b"\x01" + _packet(6, _publicKeyPacket(role))
    keyId = base64.urlsafe_b64encode(hashlib.sha3_384(encoded).digest()).rstrip(b"=")
    return base64.b64encode(encoded).decode("ascii"), keyId.decode("ascii")


def signingKey() -> tuple[str, str]:
    """
    The fake store's signing key: a real RSA public key encoded as snapd
    encodes keys (base64 of C{0x01 || OpenPGP v4 public-key packet}), and
    its key id.  Generated once per process.

    @return: C{(encoded public key, key id)}.
    """
    return _encodedKey("store")


def testRootKey() -> tuple[str, str]:
    """
    The test root key of the signing mode, encoded like L{signingKey}.
    """
    return _encodedKey("root")


def _realSignature(content: bytes, role: str) -> bytes:
    """
    C{0x01 || OpenPGP v4 RSA/SHA-512 signature packet} of C{content} by
    the key of C{role} (RFC 4880 5.2.3, 5.2.4).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    body = _publicKeyPacket(role)
    fingerprint = hashlib.sha1(b"\x99" + struct.pack(">H", len(body)) + body).digest()
    hashedSubpackets = b"\x05\x02" + struct.pack(">I", KEY_CREATION_TIME)
    hashedPart = (b"\x04\x00\x01\x0a" + struct.pack(">H", len(hashedSubpackets))
                  + hashedSubpackets)
    signed = content + hashedPart + b"\x04\xff" + struct.pack(">I", len(hashedPart))
    value = _privateKey(role).sign(signed, padding.PKCS1v15(), hashes.SHA512())
    unhashed = b"\x09\x10" + fingerprint[-8:]
    packet = (hashedPart + struct.pack(">H", len(unhashed)) + unhashed
              + hashlib.sha512(signed).digest()[:2]
              + _mpi(int.from_bytes(value, "big")))
    return b"\x01" + _packet(2, packet)


def _fillerSignature(content: bytes) -> bytes:
    """
    A structurally valid signature (C{0x01 || OpenPGP v4 RSA/SHA-512
    signature packet}) whose RSA value is deterministic filler, so decoders
    accept it and only the cryptographic check fails.
    """
    digest = hashlib.sha512(content).digest()
    hashed = b"\x05\x02" + struct.pack(">I", KEY_CREATION_TIME)  # creation time
    unhashed = b"\x09\x10" + digest[:8]  # issuer key id
    body = (
        b"\x04\x00\x01\x0a"  # v4, binary document, RSA, SHA-512
        + struct.pack(">H", len(hashed))
        + hashed
        + struct.pack(">H", len(unhashed))
        + unhashed
        + digest[:2]
        + _mpi(int.from_bytes(b"\x7f" + (digest * 4)[:255], "big"))
    )
    return b"\x01" + _packet(2, body)


def formatAssertion(
    type: str, headers: dict[str, str], body: bytes = b"", signKeyId: str | None = None,
    signer: str | None = None,
) -> bytes:
    """
    Lay out one assertion: headers in canonical order, optional body, and a
    filler signature, or a real one.

    @param headers: every header except C{type}, C{authority-id},
        C{body-length} and C{sign-key-sha3-384}, values already strings.
    @param signer: C{"store"} or C{"root"} to sign for real with that key
        (C{signKeyId} is then its id); L{None} for a filler signature.
    @return: the assertion text, ending in a newline.
    """
    if signer is not None:
        signKeyId = _encodedKey(signer)[1]
    if signKeyId is None:
        signKeyId = signingKey()[1]
    primary = PRIMARY_KEYS[type]
    lines = [f"type: {type}", f"authority-id: {AUTHORITY}"]
    lines += [f"{name}: {headers[name]}" for name in primary]
    # A list header (validation-set "snaps") is given already laid out, its
    # value starting with a newline: "snaps:\n  -\n    name: x".
    lines += [
        f"{name}:{value}" if value.startswith("\n") else f"{name}: {value}"
        for name, value in sorted(headers.items())
        if name not in primary
    ]
    if body:
        lines.append(f"body-length: {len(body)}")
    lines.append(f"sign-key-sha3-384: {signKeyId}")
    content = "\n".join(lines).encode("utf-8")
    if body:
        content += b"\n\n" + body
    raw = _realSignature(content, signer) if signer else _fillerSignature(content)
    encoded = base64.b64encode(raw)
    signature = "\n".join(textwrap.wrap(encoded.decode("ascii"), 76))
    return content + b"\n\n" + signature.encode("ascii") + b"\n"


class Assertions:
    """
    Answers C{/v2/assertions/<type>/<primary key...>} from the catalogue.
    """

    def __init__(self, catalogue: Catalogue, signed: bool = False) -> None:
        """
        @param signed: sign for real (the store key, certified by the test
            root key) instead of with filler bytes.
        """
        self._catalogue = catalogue
        self._signer = "store" if signed else None
        #: (account-id, name) -> sequence -> the "snaps" list of maps.
        self.validationSets: dict[tuple[str, str], dict[int, list[dict[str, str]]]] = {}

    def addValidationSet(self, account: str, name: str, sequence: int,
                         snaps: list[dict[str, str]]) -> None:
        """
        Publish a validation set (store-api.md 6.1): C{snaps} is a list of
        C{{"name", "id", "presence"?, "revision"?}} maps, values strings.
        The fake store signs for one account only, its own
        (C{AUTHORITY}), so C{account} must be it for signatures to check.
        """
        self.validationSets.setdefault((account, name), {})[sequence] = snaps

    def validationSet(self, series: str, account: str, name: str,
                      sequence: str) -> bytes | None:
        """
        The validation-set assertion of that C{sequence} (a number, or
        C{latest}/empty for the highest), or L{None}.
        """
        sequences = self.validationSets.get((account, name))
        if series != "16" or not sequences:
            return None
        if sequence in ("", "latest"):
            number = max(sequences)
        elif sequence.isdigit() and int(sequence) in sequences:
            number = int(sequence)
        else:
            return None
        listed = ""
        for snap in sequences[number]:
            listed += "\n  -"
            for key in ("name", "id", "presence", "revision"):
                if key in snap:
                    listed += f"\n    {key}: {snap[key]}"
        return self._format("validation-set", {
            "series": "16", "account-id": account, "name": name,
            "sequence": str(number), "snaps": listed, "timestamp": ASSERTION_TIMESTAMP,
        })

    def _format(self, type: str, headers: dict[str, str]) -> bytes:
        return formatAssertion(type, headers, signer=self._signer)

    def lookup(self, type: str, key: list[str]) -> bytes | None:
        """
        @return: the assertion text, or L{None} if the store has no such
            assertion (unknown type, key or wrong number of key parts).
        """
        if type == "validation-set":
            # Sequence-forming: the sequence comes as ?sequence= (see
            # validationSet), never in the path.
            return None
        finder = getattr(self, "_" + type.replace("-", "_"), None)
        if finder is None or type not in PRIMARY_KEYS:
            return None
        if len(key) != len(PRIMARY_KEYS[type]):
            # snap-revision may carry an optional provenance; only the
            # default one exists here.
            return None
        return finder(*key)

    def _accounts(self) -> dict[str, tuple[str, str, str]]:
        accounts = {"canonical": ("canonical", "Canonical", "verified")}
        for snap in self._catalogue:
            accounts.setdefault(
                snap.publisherId,
                (snap.publisherUsername, snap.publisherDisplayName, snap.publisherValidation),
            )
        return accounts

    def _account(self, accountId: str) -> bytes | None:
        found = self._accounts().get(accountId)
        if found is None:
            return None
        username, displayName, validation = found
        return self._format(
            "account",
            {
                "account-id": accountId,
                "display-name": displayName,
                "timestamp": ASSERTION_TIMESTAMP,
                "username": username,
                "validation": validation,
            },
        )

    def _account_key(self, keyId: str) -> bytes | None:
        publicKey, ownId = signingKey()
        if self._signer is not None and keyId == testRootKey()[1]:
            return testRootAssertion()
        if keyId != ownId:
            return None
        if self._signer is not None:
            return formatAssertion(
                "account-key",
                {
                    "public-key-sha3-384": ownId,
                    "account-id": AUTHORITY,
                    "name": "fakestore",
                    "since": "2016-01-01T00:00:00Z",
                },
                body=publicKey.encode("ascii"),
                signer="root",
            )
        return formatAssertion(
            "account-key",
            {
                "public-key-sha3-384": ownId,
                "account-id": AUTHORITY,
                "name": "fakestore",
                "since": "2016-01-01T00:00:00Z",
            },
            body=publicKey.encode("ascii"),
            signKeyId=CANONICAL_ROOT_KEY_ID,
        )

    def _snap_declaration(self, series: str, snapId: str) -> bytes | None:
        if series != "16":
            return None
        try:
            snap = self._catalogue.byId(snapId)
        except KeyError:
            return None
        return self._format(
            "snap-declaration",
            {
                "series": "16",
                "snap-id": snap.snapId,
                "publisher-id": snap.publisherId,
                "snap-name": snap.name,
                "timestamp": ASSERTION_TIMESTAMP,
            },
        )

    def _snap_revision(self, digest: str) -> bytes | None:
        revision = self._catalogue.revisionByDigest(digest)
        if revision is None:
            return None
        return self._format(
            "snap-revision",
            {
                "snap-sha3-384": digest,
                "developer-id": revision.snap.publisherId,
                "snap-id": revision.snap.snapId,
                "snap-revision": str(revision.revision),
                "snap-size": str(revision.size),
                "timestamp": ASSERTION_TIMESTAMP,
            },
        )


def testRootAssertion() -> bytes:
    """
    The self-signed C{account-key} of the signing mode's root key: the
    content of a C{--trusted-keys} file that makes a snapstore trust what
    a signing fake store signs.
    """
    publicKey, rootId = testRootKey()
    return formatAssertion(
        "account-key",
        {
            "public-key-sha3-384": rootId,
            "account-id": AUTHORITY,
            "name": "test-root",
            "since": "2016-01-01T00:00:00Z",
        },
        body=publicKey.encode("ascii"),
        signer="root",
    )
