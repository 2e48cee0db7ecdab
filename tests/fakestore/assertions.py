# -*- test-case-name: tests.test_fakestore -*-
"""
Assertions in snapd's text format (store-api.md section 7), signed by
nobody.

Stock snapd trusts only Canonical's root key, so no fake can produce
assertions it accepts; what matters for tests is that the text decodes
(valid headers, a real OpenPGP public-key packet in the C{account-key}
body) so that clients and proxies get as far as the trust check, and that
the bytes are stable so a proxy's pass-through can be compared.  The
signatures are deterministic filler bytes.
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


@lru_cache(maxsize=1)
def signingKey() -> tuple[str, str]:
    """
    The fake store's signing key: a real RSA public key encoded as snapd
    encodes keys (base64 of C{0x01 || OpenPGP v4 public-key packet}), and
    its key id.  Generated once per process.

    @return: C{(encoded public key, key id)}.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    body = (
        b"\x04"
        + struct.pack(">I", KEY_CREATION_TIME)
        + b"\x01"
        + _mpi(numbers.n)
        + _mpi(numbers.e)
    )
    encoded = b"\x01" + _packet(6, body)
    keyId = base64.urlsafe_b64encode(hashlib.sha3_384(encoded).digest()).rstrip(b"=")
    return base64.b64encode(encoded).decode("ascii"), keyId.decode("ascii")


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
    type: str, headers: dict[str, str], body: bytes = b"", signKeyId: str | None = None
) -> bytes:
    """
    Lay out one assertion: headers in canonical order, optional body, and a
    filler signature.

    @param headers: every header except C{type}, C{authority-id},
        C{body-length} and C{sign-key-sha3-384}, values already strings.
    @return: the assertion text, ending in a newline.
    """
    if signKeyId is None:
        signKeyId = signingKey()[1]
    primary = PRIMARY_KEYS[type]
    lines = [f"type: {type}", f"authority-id: {AUTHORITY}"]
    lines += [f"{name}: {headers[name]}" for name in primary]
    lines += [
        f"{name}: {value}"
        for name, value in sorted(headers.items())
        if name not in primary
    ]
    if body:
        lines.append(f"body-length: {len(body)}")
    lines.append(f"sign-key-sha3-384: {signKeyId}")
    content = "\n".join(lines).encode("utf-8")
    if body:
        content += b"\n\n" + body
    encoded = base64.b64encode(_fillerSignature(content))
    signature = "\n".join(textwrap.wrap(encoded.decode("ascii"), 76))
    return content + b"\n\n" + signature.encode("ascii") + b"\n"


class Assertions:
    """
    Answers C{/v2/assertions/<type>/<primary key...>} from the catalogue.
    """

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def lookup(self, type: str, key: list[str]) -> bytes | None:
        """
        @return: the assertion text, or L{None} if the store has no such
            assertion (unknown type, key or wrong number of key parts).
        """
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
        return formatAssertion(
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
        if keyId != ownId:
            return None
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
        return formatAssertion(
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
        return formatAssertion(
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
