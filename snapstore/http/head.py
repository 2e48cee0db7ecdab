# -*- test-case-name: tests.test_forward_head -*-
"""
Reading HTTP/1.x message heads and tracking message bodies, for a proxy
that passes bytes through instead of re-encoding them.

The forward proxy parses heads itself rather than through
L{twisted.web.http.HTTPChannel}: it has to stop parsing after a CONNECT
head and hand every following byte to a tunnel, answer C{431}/C{414} for
oversized heads, and stream request bodies before they are complete, none
of which C{HTTPChannel} offers.  Bodies are never decoded: L{BodyFraming}
only finds where a message ends, so chunked bodies are relayed verbatim.
"""

from __future__ import annotations

from typing import Optional

import attrs

from snapstore.http.controlchars import requestControls

MAX_CHUNK_LINE = 4096


class HeadError(Exception):
    """
    A head that cannot be accepted.

    @ivar code: the HTTP status to answer with (400, 414, 431, 501).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@attrs.frozen
class Head:
    """
    A parsed message head.

    @ivar first: the three parts of the start line (method, target, version
        for requests; version, code, phrase for responses).
    @ivar headers: C{(name, value)} pairs, names as sent, in order.
    @ivar raw: the head's bytes as received, for counting.
    """

    first: tuple[bytes, bytes, bytes]
    headers: tuple[tuple[bytes, bytes], ...]
    size: int

    def get(self, name: bytes) -> list[bytes]:
        """
        All values of header C{name}, case-insensitively.
        """
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def tokens(self, name: bytes) -> set[bytes]:
        """
        The comma-separated, lower-cased tokens of header C{name}.
        """
        found = set()
        for value in self.get(name):
            for token in value.split(b","):
                if token.strip():
                    found.add(token.strip().lower())
        return found


def findHeadEnd(buffer: bytes | bytearray, start: int = 0) -> int:
    """
    The offset just past the blank line ending a head in C{buffer}, or -1.
    Lines may end in CRLF or bare LF: the first line feed followed by
    another or by CRLF ends the head (found with two searches in C, not a
    walk line by line: the upstream client calls this for every answer).
    """
    bare = buffer.find(b"\n\n", start)
    crlf = buffer.find(b"\n\r\n", start)
    if crlf == -1 or (bare != -1 and bare < crlf):
        return -1 if bare == -1 else bare + 2
    return crlf + 3


def parseHead(data: bytes, request: bool, maxHeaders: int = 100) -> Head:
    """
    Parse a complete head (as delimited by L{findHeadEnd}).

    @raise HeadError: on malformed start lines or header lines.
    """
    lines = data.split(b"\n")
    first = lines[0].rstrip(b"\r")
    parts = first.split(b" ", 2) if request else first.split(b" ", 2)
    if request:
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
            raise HeadError(400, "malformed request line")
        if parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise HeadError(505 if parts[2].startswith(b"HTTP/") else 400,
                            "only HTTP/1.0 and HTTP/1.1 are supported")
    else:
        if len(parts) == 2:
            parts.append(b"")
        if len(parts) != 3 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() \
                or len(parts[1]) != 3:
            raise HeadError(502, "malformed status line from upstream")
    headers = []
    for line in lines[1:]:
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "obsolete header line folding")
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            raise HeadError(400, "malformed header line")
        headers.append((name, value.strip()))
        if len(headers) > maxHeaders:
            raise HeadError(431, "too many header fields")
    controls = requestControls(parts[1] if request else b"", headers)
    if controls is not None:
        raise HeadError(400 if request else 502, controls)
    return Head((parts[0], parts[1], parts[2]), tuple(headers), len(data))


class BodyFraming:
    """
    Tracks where a body ends, without changing its bytes.

    Call L{feed} with received bytes; it returns how many of them belong to
    this body.  L{done} turns true once the body is complete.  A body read
    until the connection closes (C{length is None}, not chunked) never
    completes by itself.

    @raise HeadError: from L{feed} when chunked framing is broken.
    """

    def __init__(self, length: Optional[int] = None, chunked: bool = False) -> None:
        self.chunked = chunked
        #: Bytes left of a sized body or of the current chunk (0 when
        #: neither is known: read until close, or before a chunk size).
        self.remaining = length if length is not None else 0
        self.untilClose = length is None and not chunked
        self.done = not chunked and length == 0
        # chunked state: "size", "data", "crlf", "trailer"
        self._state = "size"
        self._line = b""

    def feed(self, data: bytes) -> int:
        if self.done:
            return 0
        if self.untilClose:
            return len(data)
        if not self.chunked:
            take = min(len(data), self.remaining)
            self.remaining -= take
            self.done = self.remaining == 0
            return take
        return self._feedChunked(data)

    def _feedChunked(self, data: bytes) -> int:
        at, end = 0, len(data)
        while at < end and not self.done:
            if self._state == "data":
                take = min(end - at, self.remaining)
                at += take
                self.remaining -= take
                if self.remaining == 0:
                    self._state = "crlf"
                continue
            newline = data.find(b"\n", at, min(end, at + MAX_CHUNK_LINE + 2))
            if newline == -1:
                self._line += data[at:end]
                if len(self._line) > MAX_CHUNK_LINE:
                    raise HeadError(400, "chunk line too long")
                return end
            line = (self._line + data[at:newline]).rstrip(b"\r")
            self._line = b""
            at = newline + 1
            if self._state == "size":
                sizeText = line.split(b";", 1)[0].strip()
                try:
                    size = int(sizeText, 16)
                except ValueError:
                    raise HeadError(400, "malformed chunk size")
                if size < 0 or sizeText[:1] in (b"-", b"+") or sizeText.lower().startswith(b"0x"):
                    raise HeadError(400, "malformed chunk size")
                if size == 0:
                    self._state = "trailer"
                else:
                    self._state, self.remaining = "data", size
            elif self._state == "crlf":
                if line:
                    raise HeadError(400, "missing CRLF after chunk data")
                self._state = "size"
            else:
                if not line:
                    self.done = True
        return at


def bodyFraming(head: Head, request: bool, requestMethod: bytes = b"GET") -> BodyFraming:
    """
    The framing of the body following C{head} (RFC 9112 section 6.3).

    @raise HeadError: for conflicting or invalid length headers, which a
        proxy must refuse (request smuggling).
    """
    if not request:
        code = int(head.first[1])
        if requestMethod == b"HEAD" or code in (204, 304) or 100 <= code < 200:
            return BodyFraming(0)
        if requestMethod == b"CONNECT" and 200 <= code < 300:
            return BodyFraming(0)
    encodings = head.tokens(b"transfer-encoding")
    lengths = head.get(b"content-length")
    if encodings:
        if lengths:
            raise HeadError(400, "both Transfer-Encoding and Content-Length")
        if encodings != {b"chunked"}:
            if request:
                raise HeadError(501, "unsupported Transfer-Encoding")
            return BodyFraming(None)
        return BodyFraming(chunked=True)
    if lengths:
        values = {value.strip() for joined in lengths for value in joined.split(b",")}
        if len(values) != 1:
            raise HeadError(400 if request else 502, "conflicting Content-Length")
        value = values.pop()
        if not value.isdigit():
            raise HeadError(400 if request else 502, "invalid Content-Length")
        return BodyFraming(int(value))
    return BodyFraming(0) if request else BodyFraming(None)
