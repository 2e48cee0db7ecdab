# -*- test-case-name: tests.test_cache,tests.test_offline_units -*-
"""
Reading a file a piece at a time: how blobs are hashed and copied without
holding them in memory (cache verification, bundle staging and import).
"""

from __future__ import annotations

from typing import IO, Iterator

#: The piece size: large enough to keep system calls few, small enough to
#: keep memory flat.
CHUNK = 1 << 20


def fileChunks(source: IO[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """
    The contents of C{source} from where it stands to its end, in pieces
    of at most C{size} bytes.
    """
    while True:
        chunk = source.read(size)
        if not chunk:
            return
        yield chunk
