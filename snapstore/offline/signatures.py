# -*- test-case-name: tests.test_offline_signatures -*-
"""
Checking the signatures of snap assertions up to trusted root keys, so
that an imported bundle cannot plant metadata (and so blobs) no store
signed.

The format is snapd's (docs/architecture.md, "The store API in brief"): an assertion is its I{content}
(the headers, and the body when C{body-length} is not 0), a blank line,
and its I{signature}: base64 of a format byte C{0x01} followed by one
OpenPGP v4 signature packet (RFC 4880 5.2.3), RSA over SHA-512, of the
content.  The header C{sign-key-sha3-384} names the key that signed it:
the unpadded base64url sha3-384 of C{0x01} and the key's OpenPGP v4
public-key packet, which is the body of that key's C{account-key}
assertion.  An C{account-key} is itself signed, by another key, and so
on, until a key this node trusts as a root: Canonical's root, which
snapd has compiled in (L{snapstore.offline.roots}), and those an
operator adds with C{--trusted-keys}.  A key signs only for its own
account: the C{account-id} of the key must be the C{authority-id} of
what it signed.

Verification uses the C{cryptography} package; this module only decodes
the OpenPGP packets around the RSA numbers.  Nothing here touches the
reactor or the state store: the chain walk asks a C{find} callable for
the account-keys it needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import Awaitable, Callable, Iterable, Optional

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

#: The format byte snapd puts before every encoded key and signature.
FORMAT_V1 = 1
_TAG_SIGNATURE = 2
_TAG_PUBLIC_KEY = 6
_RSA_ALGORITHMS = (1, 3)  # RSA, RSA sign-only
_SHA512 = 10
_BINARY_DOCUMENT = 0x00
#: An account-key chain longer than this is not one a store builds
#: (snapd's: root -> store key -> assertion).
MAX_CHAIN = 8


class SignatureError(ValueError):
    """
    An assertion's signature, or a key, cannot be decoded or does not
    verify.
    """


# -- OpenPGP packets -----------------------------------------------------------


def _decodeV1(text: bytes, kind: str) -> tuple[int, bytes]:
    """
    Decode snapd's encoding of one OpenPGP packet: base64 (line breaks
    allowed) of C{0x01} and the packet.

    @return: C{(packet tag, packet body)}.
    @raise SignatureError: when it is not exactly one packet.
    """
    try:
        raw = base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"the {kind} is not base64")
    if not raw or raw[0] != FORMAT_V1:
        raise SignatureError(f"the {kind} is not in format 1")
    tag, body, rest = _readPacket(raw[1:], kind)
    if rest:
        raise SignatureError(f"the {kind} has trailing data")
    return tag, body


def _readPacket(data: bytes, kind: str) -> tuple[int, bytes, bytes]:
    """
    Split one OpenPGP packet (old or new format header, definite length)
    off C{data}.

    @return: C{(tag, body, what follows)}.
    """
    if len(data) < 2 or not data[0] & 0x80:
        raise SignatureError(f"the {kind} is not an OpenPGP packet")
    first = data[0]
    if first & 0x40:  # new format
        tag = first & 0x3F
        octet = data[1]
        if octet < 192:
            length, offset = octet, 2
        elif octet < 224:
            if len(data) < 3:
                raise SignatureError(f"the {kind} is truncated")
            length, offset = ((octet - 192) << 8) + data[2] + 192, 3
        elif octet == 255:
            if len(data) < 6:
                raise SignatureError(f"the {kind} is truncated")
            length, offset = struct.unpack(">I", data[2:6])[0], 6
        else:
            raise SignatureError(f"the {kind} uses partial body lengths")
    else:  # old format
        tag = (first >> 2) & 0x0F
        lengthType = first & 0x03
        if lengthType == 3:
            raise SignatureError(f"the {kind} has an indeterminate length")
        size = 1 << lengthType
        if len(data) < 1 + size:
            raise SignatureError(f"the {kind} is truncated")
        length, offset = int.from_bytes(data[1:1 + size], "big"), 1 + size
    if len(data) < offset + length:
        raise SignatureError(f"the {kind} is truncated")
    return tag, data[offset:offset + length], data[offset + length:]


def _readMPI(data: bytes, offset: int, kind: str) -> tuple[int, int]:
    if len(data) < offset + 2:
        raise SignatureError(f"the {kind} is truncated")
    bits = struct.unpack(">H", data[offset:offset + 2])[0]
    end = offset + 2 + (bits + 7) // 8
    if len(data) < end:
        raise SignatureError(f"the {kind} is truncated")
    return int.from_bytes(data[offset + 2:end], "big"), end


# -- keys ------------------------------------------------------------------------


@attrs.frozen
class PublicKey:
    """
    An RSA public key as snapd names it.

    @ivar keyID: its C{sha3-384} name (what C{sign-key-sha3-384} says).
    """

    keyID: str
    key: rsa.RSAPublicKey = attrs.field(eq=False, repr=False)


def decodePublicKey(text: bytes) -> PublicKey:
    """
    Decode the body of an C{account-key} assertion.

    @raise SignatureError: when it is not an RSA OpenPGP v4 public key.
    """
    tag, body = _decodeV1(text, "public key")
    if tag != _TAG_PUBLIC_KEY:
        raise SignatureError("the public key is not an OpenPGP public-key packet")
    if len(body) < 6 or body[0] != 4:
        raise SignatureError("the public key is not an OpenPGP v4 key")
    if body[5] not in _RSA_ALGORITHMS:
        raise SignatureError(f"the public key is not RSA (algorithm {body[5]})")
    modulus, offset = _readMPI(body, 6, "public key")
    exponent, offset = _readMPI(body, offset, "public key")
    if offset != len(body):
        raise SignatureError("the public key has trailing data")
    try:
        key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError as error:
        raise SignatureError(f"the public key is not a usable RSA key ({error})")
    packet = bytes([0xC0 | _TAG_PUBLIC_KEY]) + _newLength(len(body)) + body
    keyID = base64.urlsafe_b64encode(
        hashlib.sha3_384(bytes([FORMAT_V1]) + packet).digest()).rstrip(b"=").decode("ascii")
    return PublicKey(keyID, key)


def _newLength(length: int) -> bytes:
    # The new-format length snapd (Go's openpgp) writes; the key id is a
    # hash of the packet as written.
    if length < 192:
        return bytes([length])
    if length < 8384:
        length -= 192
        return bytes([(length >> 8) + 192, length & 0xFF])
    return b"\xff" + struct.pack(">I", length)


# -- assertions ------------------------------------------------------------------


def splitSigned(text: bytes) -> tuple[bytes, bytes]:
    """
    Split an assertion into the content that was signed and its encoded
    signature (after the last blank line).

    @raise SignatureError: when there is no signature.
    """
    content, separator, signature = text.rstrip(b"\n").rpartition(b"\n\n")
    if not separator or not content or not signature.strip():
        raise SignatureError("the assertion has no signature")
    return content, signature


def verifySignature(text: bytes, key: PublicKey) -> None:
    """
    Check that C{key} signed the assertion C{text}.

    @raise SignatureError: saying why not.
    """
    content, encoded = splitSigned(text)
    tag, body = _decodeV1(encoded, "signature")
    if tag != _TAG_SIGNATURE:
        raise SignatureError("the signature is not an OpenPGP signature packet")
    if len(body) < 6 or body[0] != 4:
        raise SignatureError("the signature is not an OpenPGP v4 signature")
    sigType, algorithm, hashAlgorithm = body[1], body[2], body[3]
    if sigType != _BINARY_DOCUMENT or algorithm not in _RSA_ALGORITHMS \
            or hashAlgorithm != _SHA512:
        raise SignatureError("the signature is not an RSA/SHA-512 signature of a document")
    hashedLength = struct.unpack(">H", body[4:6])[0]
    hashedEnd = 6 + hashedLength
    if len(body) < hashedEnd + 2:
        raise SignatureError("the signature is truncated")
    unhashedLength = struct.unpack(">H", body[hashedEnd:hashedEnd + 2])[0]
    unhashedEnd = hashedEnd + 2 + unhashedLength
    if len(body) < unhashedEnd + 2:
        raise SignatureError("the signature is truncated")
    # The issuer subpacket is not checked: it names the key as it was
    # generated (with its own creation time), while snapd re-encodes keys
    # with a fixed one, so the two fingerprints differ (Canonical's root
    # shows this); the key is the one sign-key-sha3-384 names.
    value, end = _readMPI(body, unhashedEnd + 2, "signature")
    if end != len(body):
        raise SignatureError("the signature has trailing data")
    # RFC 4880 5.2.4: the document, the hashed part of the packet, and a
    # trailer giving that part's length.
    hashedPart = body[:hashedEnd]
    signed = content + hashedPart + b"\x04\xff" + struct.pack(">I", len(hashedPart))
    size = (key.key.key_size + 7) // 8
    if value.bit_length() > size * 8:
        raise SignatureError("the signature does not verify")
    try:
        key.key.verify(value.to_bytes(size, "big"), signed, padding.PKCS1v15(), hashes.SHA512())
    except InvalidSignature:
        raise SignatureError("the signature does not verify")


# -- trust -----------------------------------------------------------------------


@attrs.frozen
class TrustedKey:
    """
    A root key: trusted as given, not because something signed it.
    """

    accountID: str
    key: PublicKey


def _headers(text: bytes) -> dict[str, str]:
    head = text.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    headers = {}
    for line in head.split("\n"):
        name, colon, value = line.partition(":")
        if colon and line[:1] != " ":
            headers[name] = value.strip()
    return headers


def _body(text: bytes, headers: dict[str, str]) -> bytes:
    try:
        length = int(headers.get("body-length", "0"))
    except ValueError:
        raise SignatureError("its body-length is not a number")
    head, separator, rest = text.partition(b"\n\n")
    if length <= 0 or not separator or len(rest) < length:
        raise SignatureError("it has no body")
    return rest[:length]


def accountKeyOf(text: bytes) -> tuple[str, PublicKey]:
    """
    The account and public key an C{account-key} assertion holds, checked
    against the name it gives the key.

    @raise SignatureError: when it is not one, or the key is not what its
        C{public-key-sha3-384} says.
    """
    headers = _headers(text)
    if headers.get("type") != "account-key":
        raise SignatureError("it is not an account-key assertion")
    key = decodePublicKey(_body(text, headers))
    if key.keyID != headers.get("public-key-sha3-384"):
        raise SignatureError(f"its key is {key.keyID}, not the "
                             f"{headers.get('public-key-sha3-384')} it claims")
    return headers.get("account-id", ""), key


def splitAssertions(data: bytes) -> list[bytes]:
    """
    Split a stream of assertions (as C{snap known} prints them: each
    ends with its signature, and a blank line separates them) into single
    ones.

    @raise SignatureError: when the stream is malformed.
    """
    found: list[bytes] = []
    position = 0
    while True:
        while data[position:position + 1] == b"\n":
            position += 1
        if position >= len(data):
            return found
        headEnd = data.find(b"\n\n", position)
        if headEnd < 0:
            raise SignatureError("an assertion has no signature")
        try:
            length = int(_headers(data[position:headEnd]).get("body-length", "0"))
        except ValueError:
            raise SignatureError("an assertion's body-length is not a number")
        cursor = headEnd + 2
        if length > 0:
            if data[cursor + length:cursor + length + 2] != b"\n\n":
                raise SignatureError("an assertion's body is not body-length bytes long")
            cursor += length + 2
        end = data.find(b"\n\n", cursor)
        end = len(data) if end < 0 else end
        found.append(data[position:end].rstrip(b"\n") + b"\n")
        position = end


def loadTrustedKeys(texts: Iterable[bytes], where: str) -> dict[str, TrustedKey]:
    """
    Root keys from C{account-key} assertions.  One that names itself as
    its signer must carry a valid self-signature (so a damaged file is
    noticed); any other is trusted as given: listing it is the trust.

    @param where: what to name in errors (a file name).
    @raise SignatureError: naming C{where} and the key.
    """
    keys = {}
    for text in texts:
        try:
            accountID, key = accountKeyOf(text)
            if _headers(text).get("sign-key-sha3-384") == key.keyID:
                verifySignature(text, key)
        except SignatureError as error:
            raise SignatureError(f"{where}: an account-key cannot be trusted: {error}")
        keys[key.keyID] = TrustedKey(accountID, key)
    return keys


#: C{find(type, primary key)} -> a Deferred/awaitable of the assertion's
#: text, or C{None}.
Finder = Callable[[str, tuple[str, ...]], Awaitable[Optional[bytes]]]


class ChainVerifier:
    """
    Verifies assertions up to root keys, remembering the account-keys it
    has verified (for one import).
    """

    def __init__(self, roots: dict[str, TrustedKey], find: Finder) -> None:
        self.roots = roots
        self.find = find
        self._verified: dict[str, tuple[str, PublicKey]] = {}

    async def verify(self, text: bytes, _chain: tuple[str, ...] = ()) -> None:
        """
        Check the signature of assertion C{text}, and of every account-key
        between it and a root.

        @raise SignatureError: saying which key is missing, untrusted, or
            does not verify.
        """
        headers = _headers(text)
        keyID = headers.get("sign-key-sha3-384", "")
        if not keyID:
            raise SignatureError("it has no sign-key-sha3-384")
        accountID, key = await self._key(keyID, _chain)
        authority = headers.get("authority-id", "")
        if accountID != authority:
            raise SignatureError(f"it is signed by key {keyID} of account {accountID!r}, "
                                 f"which cannot sign for authority {authority!r}")
        try:
            verifySignature(text, key)
        except SignatureError as error:
            raise SignatureError(f"{error} with key {keyID}")

    async def _key(self, keyID: str, chain: tuple[str, ...]) -> tuple[str, PublicKey]:
        root = self.roots.get(keyID)
        if root is not None:
            return root.accountID, root.key
        if keyID in self._verified:
            return self._verified[keyID]
        if keyID in chain:
            raise SignatureError(f"key {keyID} signs itself and is not a trusted root "
                                 f"(see --trusted-keys)")
        if len(chain) >= MAX_CHAIN:
            raise SignatureError("its chain of account-keys is too long")
        text = await self.find("account-key", (keyID,))
        if text is None:
            raise SignatureError(f"it is signed by key {keyID}, whose account-key is neither "
                                 f"in the bundle nor on this node")
        try:
            accountID, key = accountKeyOf(text)
            await self.verify(text, chain + (keyID,))
        except SignatureError as error:
            raise SignatureError(f"its signing key's account-key {keyID} is not trusted: "
                                 f"{error}")
        self._verified[keyID] = (accountID, key)
        return accountID, key


__all__ = ["SignatureError", "PublicKey", "TrustedKey", "ChainVerifier", "decodePublicKey",
           "verifySignature", "accountKeyOf", "splitAssertions", "loadTrustedKeys"]
