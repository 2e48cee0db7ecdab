# -*- test-case-name: tests.test_fakestore -*-
"""
Deterministic snap blobs that are never held in memory.

A fake store must be able to serve a 1 GiB snap without a 1 GiB buffer, and
tests must be able to say which bytes a client should have received.  So a
blob is a pure function of C{(snap-id, revision, size)}: a 64 KiB block
derived from the pair, repeated, with each block's first eight bytes replaced
by its big-endian index.  The index makes every block distinct, so a client
or proxy that serves a range from the wrong offset produces a different
digest instead of passing by luck.
"""

import hashlib
from base64 import urlsafe_b64encode
from typing import Iterator

BLOCK_SIZE = 64 * 1024

# Refuse to materialise blobs bigger than this in L{Blob.read}; tests that
# compare bytes only use small blobs, big ones are compared by digest.
MAX_MATERIALISED = 64 * 1024 * 1024


class Blob:
    """
    The content of one snap revision, generated on demand.

    @ivar snapId: the snap-id the content is derived from.
    @ivar revision: the revision the content is derived from.
    @ivar size: the length in bytes.
    @ivar sha3_384: lower-case hex SHA3-384 of the content, as the store's
        C{download.sha3-384} carries it; computed once, by streaming.
    """

    def __init__(self, snapId: str, revision: int, size: int, seed: str | None = None) -> None:
        """
        @param seed: what the content is derived from, when not the pair
            (a delta's content derives from its source and target).
        """
        if size < 0:
            raise ValueError("blob size must not be negative")
        self.snapId = snapId
        self.revision = revision
        self.size = size
        seed = seed if seed is not None else f"{snapId}_{revision}"
        self._block = hashlib.shake_256(seed.encode("ascii")).digest(BLOCK_SIZE)
        digest = hashlib.sha3_384()
        for chunk in self.iterChunks(0, size):
            digest.update(chunk)
        self.digestBytes = digest.digest()
        self.sha3_384 = self.digestBytes.hex()

    @property
    def digestBase64(self) -> str:
        """
        The unpadded base64url SHA3-384, the form C{snap-revision} assertions
        and their URLs use.
        """
        return urlsafe_b64encode(self.digestBytes).rstrip(b"=").decode("ascii")

    def _blockAt(self, index: int) -> bytes:
        return index.to_bytes(8, "big") + self._block[8:]

    def iterChunks(
        self, offset: int, length: int, chunkSize: int = BLOCK_SIZE
    ) -> Iterator[bytes]:
        """
        Yield the bytes C{[offset, offset+length)} in pieces of at most
        C{chunkSize}, generating each piece only when asked for, so callers
        can stream under flow control.
        """
        end = min(self.size, offset + length)
        pos = max(0, offset)
        while pos < end:
            index, inner = divmod(pos, BLOCK_SIZE)
            take = min(BLOCK_SIZE - inner, end - pos, chunkSize)
            yield self._blockAt(index)[inner : inner + take]
            pos += take

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        """
        Return a slice of the content as one L{bytes}; for small blobs only.

        @raise ValueError: if more than L{MAX_MATERIALISED} bytes are asked.
        """
        if length is None:
            length = self.size - offset
        if length > MAX_MATERIALISED:
            raise ValueError("blob too big to hold in memory; compare digests")
        return b"".join(self.iterChunks(offset, length))


def deltaFileName(snapId: str, source: int, target: int) -> str:
    """
    The file name of the xdelta3 delta from C{source} to C{target}, as in
    the store's delta URLs (store-api.md 4.1).
    """
    return f"{snapId}_{source}_{target}_xdelta3.delta"


def deltaBlob(snapId: str, source: int, target: int, targetSize: int) -> Blob:
    """
    The delta from C{source} to C{target}: deterministic bytes a tenth of
    the target's size (snapd checks only the delta's sha3-384 and then the
    result's, so a proxy never needs real xdelta3 content).
    """
    return Blob(snapId, target, max(1024, targetSize // 10),
                seed=deltaFileName(snapId, source, target))
