# -*- test-case-name: tests.test_fakestore -*-
"""
The fake CDN: serves blob bytes behind the store's download redirect.

It streams under flow control (a pull producer writes one block each time
the transport's buffer drains), so a slow client never makes the fake hold
more than a block per connection, and it supports the open and closed byte
ranges snapd and a caching proxy use for resuming.
"""

import re
import socket
import struct

from twisted.internet.interfaces import IPullProducer, IPushProducer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from tests.fakestore.blobs import BLOCK_SIZE

_FILE = re.compile(r"^/download-origin/([A-Za-z0-9]{32})_([0-9]+)\.snap$")
_DELTA = re.compile(r"^/download-origin/([A-Za-z0-9]{32})_([0-9]+)_([0-9]+)_xdelta3\.delta$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parseRange(value: str | bytes | None, size: int):
    """
    Interpret a C{Range} header against a body of C{size} bytes.

    @return: L{None} to send the whole body (no header, or one this server
        ignores such as multiple ranges), C{(start, end)} inclusive for a
        satisfiable range, or C{"unsatisfiable"}.
    """
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    match = _RANGE.match(value.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return (max(0, size - suffix), size - 1)
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = int(last) if last else size - 1
    if end < start:
        return None
    return (start, min(end, size - 1))


@implementer(IPullProducer, IPushProducer)
class BlobProducer:
    """
    Writes C{[start, start+length)} of a blob to a request, one block per
    C{resumeProducing}, applying an optional L{tests.fakestore.faults.CDNFault}.
    """

    def __init__(self, store, request, blob, start, length, fault=None) -> None:
        self._store = store
        self._request = request
        self._chunks = blob.iterChunks(start, length, BLOCK_SIZE)
        self._position = start
        self._sent = 0
        self._length = length
        self._fault = fault
        self._stopped = False
        self._cutAt = None
        if fault is not None and fault.kind in ("reset", "short"):
            self._cutAt = fault.offset if fault.offset is not None else length // 2
            self._cutAt = max(0, min(self._cutAt, length))
        self._corruptAt = None
        if fault is not None and fault.kind == "corrupt":
            self._corruptAt = fault.offset if fault.offset is not None else blob.size // 2
        self._delay = fault.seconds if fault is not None and fault.kind == "slow" else 0.0
        self._waiting = None

    def start(self) -> None:
        # Send the headers now, so a fault cutting at offset 0 still lets
        # the client see a response that then breaks.
        self._request.write(b"")
        if self._delay:
            # Slow: a push producer writing one block per delay (a pull
            # producer would be polled in a busy loop meanwhile).
            self._paused = False
            self._request.registerProducer(self, True)
            self._schedule()
            return
        self._request.registerProducer(self, False)

    def _schedule(self) -> None:
        if self._waiting is None and not self._stopped:
            self._waiting = self._store._reactor.callLater(self._delay, self._tick)

    def _tick(self) -> None:
        self._waiting = None
        if self._stopped or self._paused:
            return
        self._produce()
        self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if self._stopped:
            return
        if self._delay:
            self._paused = False
            self._schedule()
            return
        self._produce()

    def _produce(self) -> None:
        self._waiting = None
        if self._stopped:
            return
        if self._cutAt is not None and self._sent >= self._cutAt:
            self._cut()
            return
        chunk = next(self._chunks, None)
        if chunk is None:
            self._stopped = True
            self._request.unregisterProducer()
            self._request.finish()
            return
        if self._cutAt is not None:
            chunk = chunk[: self._cutAt - self._sent]
        if self._corruptAt is not None:
            inner = self._corruptAt - self._position
            if 0 <= inner < len(chunk):
                chunk = chunk[:inner] + bytes([chunk[inner] ^ 0xFF]) + chunk[inner + 1 :]
        self._position += len(chunk)
        self._sent += len(chunk)
        self._store.cdnBytesSent += len(chunk)
        self._request.fakeStoreRecord.bodyBytesSent += len(chunk)
        self._request.write(chunk)

    def _cut(self) -> None:
        """
        End the transfer early: called once the bytes before the cut have
        left Twisted's buffer, so the client really receives them.
        """
        self._stopped = True
        transport = self._request.channel.transport
        self._request.unregisterProducer()
        if self._fault.kind == "reset":
            handle = transport.getHandle()
            try:
                # Linger 0 makes close() send RST instead of FIN.
                handle.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            except (OSError, AttributeError):
                pass
            transport.abortConnection()
        else:
            transport.loseConnection()

    def stopProducing(self) -> None:
        self._stopped = True
        if self._waiting is not None and self._waiting.active():
            self._waiting.cancel()
        self._waiting = None


class CDNResource(Resource):
    """
    C{GET}/C{HEAD /download-origin/<snap-id>_<rev>.snap?interactive=1&token=...}
    and C{/download-origin/<snap-id>_<from>_<to>_xdelta3.delta?...} (deltas).
    """

    isLeaf = True
    log = Logger()

    def __init__(self, store) -> None:
        super().__init__()
        self._store = store

    def render(self, request):
        path = request.path.decode("latin-1")
        method = request.method.decode("ascii")
        if method not in ("GET", "HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return self._text(request, "method not allowed")
        match, delta = _FILE.match(path), _DELTA.match(path)
        if match is not None:
            snapId, revision = match.group(1), int(match.group(2))
            blob = self._store._blobById(snapId, revision)
        elif delta is not None:
            snapId, source, target = delta.group(1), int(delta.group(2)), int(delta.group(3))
            # Faults of a delta are armed under the pair (Faults.failDelta).
            revision = (source, target)
            blob = self._store._deltaById(snapId, source, target)
        else:
            request.setResponseCode(404)
            return self._text(request, "not found")
        token = (request.args.get(b"token") or [b""])[0].decode("latin-1")
        if not self._store._checkToken(path.rsplit("/", 1)[1], token):
            request.setResponseCode(403)
            return self._text(request, "invalid or expired token")
        if blob is None:
            request.setResponseCode(404)
            return self._text(request, "not found")
        fault = None
        if method == "GET":
            fault = self._store.faults.takeDownloadFault(snapId, revision)
        if fault is not None:
            self.log.info(
                "injecting CDN fault {kind} on {path}", kind=fault.kind, path=path
            )
        if fault is not None and fault.kind == "stall":
            self._store._later(request, fault.seconds, self._respond, request, blob, None)
            return NOT_DONE_YET
        return self._respond(request, blob, fault)

    def _respond(self, request, blob, fault):
        size = blob.size
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"accept-ranges", b"bytes")
        wanted = parseRange(request.getHeader(b"range"), size)
        if wanted == "unsatisfiable":
            request.setResponseCode(416)
            request.setHeader(b"content-range", b"bytes */%d" % (size,))
            request.setHeader(b"content-type", b"text/plain")
            return b""
        if wanted is None:
            start, length = 0, size
        else:
            start, end = wanted
            length = end - start + 1
            request.setResponseCode(206)
            request.setHeader(
                b"content-range", b"bytes %d-%d/%d" % (start, end, size)
            )
        request.setHeader(b"content-length", b"%d" % (length,))
        if request.method == b"HEAD" or length == 0:
            if request.method != b"HEAD":
                request.write(b"")
                request.finish()
                return NOT_DONE_YET
            return b""
        BlobProducer(self._store, request, blob, start, length, fault).start()
        return NOT_DONE_YET

    def _text(self, request, message: str) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return message.encode("utf-8") + b"\n"
