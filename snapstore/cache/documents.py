# -*- test-case-name: tests.test_cache -*-
"""
A small in-memory cache of documents (store assertions), bounded in bytes.

Assertions are a few kilobytes each and snapd asks for the same ones over
and over (every device validates every revision it installs), so keeping
them costs little and spares upstream most of those calls.  Whether an
entry is still fresh is the caller's decision: this cache only remembers
when each entry was stored.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from twisted.internet.interfaces import IReactorTime

import attrs


@attrs.frozen
class Document:
    """
    A stored document.

    @ivar body: its bytes, exactly as received.
    @ivar mediaType: its media type, exactly as received (bytes).
    @ivar storedAt: the clock's time when it was stored.
    """

    body: bytes
    mediaType: bytes
    storedAt: float


class DocumentCache:
    """
    Key to L{Document}, least recently used dropped first once the bodies
    exceed C{maxBytes}.
    """

    def __init__(self, clock: IReactorTime, maxBytes: int = 64 << 20) -> None:
        self.clock = clock
        self.maxBytes = maxBytes
        self.usedBytes = 0
        self._documents: OrderedDict[str, Document] = OrderedDict()

    def get(self, key: str) -> Optional[Document]:
        document = self._documents.get(key)
        if document is not None:
            self._documents.move_to_end(key)
        return document

    def put(self, key: str, body: bytes, mediaType: bytes) -> Document:
        self.discard(key)
        document = Document(body, mediaType, self.clock.seconds())
        if len(body) > self.maxBytes:
            return document
        self._documents[key] = document
        self.usedBytes += len(body)
        while self.usedBytes > self.maxBytes:
            _, dropped = self._documents.popitem(last=False)
            self.usedBytes -= len(dropped.body)
        return document

    def discard(self, key: str) -> None:
        document = self._documents.pop(key, None)
        if document is not None:
            self.usedBytes -= len(document.body)

    def __len__(self) -> int:
        return len(self._documents)
