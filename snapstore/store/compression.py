# -*- test-case-name: tests.test_compression -*-
"""
Content codings between the store relay, upstream and devices.

snapd's HTTP client (Go's) asks for C{Accept-Encoding: gzip} on every call
without a C{Range} and inflates the answer itself, and store front ends
compress JSON for clients that ask.  The relay must read what it rewrites
(refresh, info, find, assertions, sessions), so it decodes upstream's
C{Content-Encoding} first; it asks upstream for gzip on every API call to
save the uplink, and compresses its own answers for devices that accept
gzip.  Blobs never pass through here: a compressed blob would make
C{Range} offsets and the sha3-384 check meaningless.

Inflating is bounded: a few kilobytes of gzip can inflate to gigabytes (a
decompression bomb), so decoding stops, and the answer is refused, as soon
as the output would pass a limit; the inflated body is never held beyond
that limit.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

#: Most bytes an upstream answer the proxy reads may inflate to (the
#: largest refresh answers seen, for hundreds of snaps, are a few MB).
MAX_INFLATED = 64 << 20
#: What the relay asks upstream for on API calls.
UPSTREAM_ACCEPT = b"gzip"
#: Codings the proxy can decode.
DECODABLE = frozenset([b"gzip", b"x-gzip", b"deflate"])
#: gzip level of answers to devices: JSON shrinks about as well at 6 as
#: at 9, at a third of the cost.
LEVEL = 6
#: Answers smaller than this are sent as they are: gzip's own 18-byte
#: frame and the CPU are not worth it.
MIN_COMPRESSED = 256


class EncodingError(Exception):
    """
    An upstream body cannot be decoded: an unknown coding, corrupt or
    truncated data, or more than the limit once inflated.
    """


def contentCodings(headers: Headers) -> list[bytes]:
    """
    The codings applied to a message body, in the order they were applied,
    from its C{Content-Encoding} (lower case, C{identity} left out).
    """
    codings = []
    for value in headers.getRawHeaders(b"content-encoding", []):
        for token in value.split(b","):
            token = token.strip().lower()
            if token and token != b"identity":
                codings.append(token)
    return codings


def acceptedCodings(headers: Headers) -> dict[bytes, float]:
    """
    The codings a client's C{Accept-Encoding} names, with their q-values
    (RFC 9110 section 12.5.3); C{*} stands for any other.
    """
    accepted: dict[bytes, float] = {}
    for value in headers.getRawHeaders(b"accept-encoding", []):
        for item in value.split(b","):
            name, _, parameters = item.partition(b";")
            name = name.strip().lower()
            if not name:
                continue
            quality = 1.0
            for parameter in parameters.split(b";"):
                key, _, number = parameter.partition(b"=")
                if key.strip().lower() == b"q":
                    try:
                        quality = float(number.strip())
                    except ValueError:
                        quality = 0.0
            accepted[name] = quality
    return accepted


def accepts(headers: Headers, codings: list[bytes]) -> bool:
    """
    Whether a client whose request carried C{headers} accepts a body coded
    with every one of C{codings} (C{identity}, no coding, always).
    """
    accepted = acceptedCodings(headers)
    for coding in codings:
        names = (b"gzip", b"x-gzip") if coding in (b"gzip", b"x-gzip") else (coding,)
        quality = next((accepted[name] for name in names if name in accepted),
                       accepted.get(b"*", 0.0))
        if quality <= 0:
            return False
    return True


def addVary(headers: Headers, name: bytes = b"Accept-Encoding") -> None:
    """
    Add C{name} to C{Vary}, once: the answer depends on that request header,
    so a cache between proxy and device must not give it to another client.
    """
    present = [token.strip().lower() for value in headers.getRawHeaders(b"vary", [])
               for token in value.split(b",")]
    if name.lower() in present or b"*" in present:
        return
    headers.addRawHeader(b"vary", name)


class _Overflow(EncodingError):
    """
    A stage's output passed the room it was given.
    """


class _Stage:
    """
    One coding being undone: a zlib stream, bounded.
    """

    def __init__(self, coding: bytes) -> None:
        self.coding = coding
        self._pending = b""
        self._inflater: Any = None
        if coding in (b"gzip", b"x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _start(self, data: bytes) -> bytes:
        # "deflate" is meant to be zlib-wrapped (RFC 9110 8.4.1.2), but some
        # servers send raw deflate; the first two bytes tell them apart.
        self._pending += data
        if len(self._pending) < 2:
            return b""
        header = self._pending[0] << 8 | self._pending[1]
        wrapped = self._pending[0] & 0x0F == 8 and header % 31 == 0
        self._inflater = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        data, self._pending = self._pending, b""
        return data

    def feed(self, data: bytes, room: int) -> bytes:
        """
        Decode C{data}; raise L{EncodingError} if that gives more than
        C{room} bytes (nothing past C{room + 1} is ever inflated).
        """
        if self._inflater is None:
            data = self._start(data)
            if self._inflater is None:
                return b""
        output = []
        produced = 0
        while data:
            if self._inflater.eof:
                if self.coding == b"deflate":
                    raise EncodingError("has data after the end of its deflate stream")
                # Another gzip member (RFC 1952 allows several).
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                chunk = self._inflater.decompress(data, room - produced + 1)
            except zlib.error as error:
                raise EncodingError(f"is not valid {self.coding.decode()} data ({error})")
            produced += len(chunk)
            if produced > room:
                raise _Overflow()
            output.append(chunk)
            data = self._inflater.unconsumed_tail or self._inflater.unused_data
        return b"".join(output)

    def finish(self) -> None:
        if self._inflater is None or not self._inflater.eof:
            raise EncodingError(f"ends before its {self.coding.decode()} stream does")


class Inflater:
    """
    Undoes the C{Content-Encoding} of one body as it arrives, giving up
    once the decoded output would pass C{limit} bytes.

    @ivar produced: decoded bytes so far.
    """

    def __init__(self, codings: list[bytes], limit: int = MAX_INFLATED) -> None:
        for coding in codings:
            if coding not in DECODABLE:
                raise EncodingError(
                    f"content-encoding {coding.decode('ascii', 'replace')!r}, which the proxy "
                    f"cannot decode (it decodes gzip and deflate)")
        # Applied first is undone last.
        self._stages = [_Stage(coding) for coding in reversed(codings)]
        self.limit = limit
        self.produced = 0

    def feed(self, data: bytes) -> bytes:
        """
        Decode the next piece of the body.

        @raise EncodingError: the data is corrupt, or the decoded body
            would pass C{limit} (nothing past it is inflated).
        """
        try:
            for stage in self._stages:
                data = stage.feed(data, self.limit - self.produced)
        except _Overflow:
            raise EncodingError(f"inflates to more than {self.limit} bytes "
                                f"(a decompression bomb?)")
        self.produced += len(data)
        return data

    def finish(self) -> None:
        """
        Raise L{EncodingError} unless every coded stream ended properly
        (a cut gzip body is not a short JSON document).
        """
        for stage in self._stages:
            stage.finish()


class DecodedBody(Protocol):
    """
    Reads a whole upstream body, decoding it, into memory; stops reading
    (and fails) as soon as the coded or the decoded size would pass the
    limit.

    @ivar done: fires with the decoded bytes, or fails with
        L{EncodingError} or the reason the body was cut; cancelling it
        stops the transfer.
    """

    transport: Any

    def __init__(self, inflater: Optional[Inflater], limit: int) -> None:
        self.inflater = inflater
        self.limit = limit
        self.chunks: list[bytes] = []
        self.received = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self._stop())

    def _stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def _refuse(self, error: EncodingError) -> None:
        self.done.errback(Failure(error))
        self._stop()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.received += len(data)
        if self.received > self.limit:
            self._refuse(EncodingError(f"is larger than {self.limit} bytes"))
            return
        if self.inflater is not None:
            try:
                data = self.inflater.feed(data)
            except EncodingError as error:
                self._refuse(error)
                return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self.done.called:
            return
        if not reason.check(ResponseDone, PotentialDataLoss):
            self.done.errback(reason)
            return
        if self.inflater is not None:
            try:
                self.inflater.finish()
            except EncodingError as error:
                self.done.errback(Failure(error))
                return
        self.done.callback(b"".join(self.chunks))


def gzipped(body: bytes) -> bytes:
    """
    C{body} as a gzip stream, with a fixed header (no time stamp), so the
    same answer compresses to the same bytes.
    """
    return gzip.compress(body, compresslevel=LEVEL, mtime=0)


def encodeFor(requestHeaders: Headers, responseHeaders: Headers, body: bytes) -> bytes:
    """
    The bytes to send a client for a whole answer the proxy decoded: gzip
    when the client accepts it (and it is worth it), as-is otherwise.  Sets
    C{Content-Encoding}, C{Content-Length} and C{Vary} in C{responseHeaders}.
    """
    addVary(responseHeaders)
    responseHeaders.removeHeader(b"content-encoding")
    if len(body) >= MIN_COMPRESSED and accepts(requestHeaders, [b"gzip"]):
        body = gzipped(body)
        responseHeaders.setRawHeaders(b"content-encoding", [b"gzip"])
    responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    return body
