# -*- test-case-name: tests.test_cache -*-
"""
The content-addressed blob cache: verified files on disk, named by their
sha3-384, with single-flight fills, LRU eviction under a size bound, and
pinning so that a file being read is never deleted under its reader.

The directory is the index.  A blob lives in C{blobs/<digest>-<size>}, so a
file that does not have the size its name promises is known to be broken
without hashing it; fills are written to C{tmp/} and renamed into
C{blobs/} only after their size and digest matched, so a crash (even
C{kill -9}) never leaves a partial file where a reader could find it.
C{tmp/} is wiped at start-up and the LRU order is rebuilt from the files'
modification times, which every hit refreshes.

Nothing here knows HTTP: the download resource decides what to fetch and
feeds the bytes in through a L{Fill}.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from snapstore.cache.chunks import CHUNK, fileChunks
from snapstore.interfaces import IBlobCache, IBlobFill, IBlobSource, IServiceReactor

_DIGEST = re.compile(r"^[0-9a-f]{96}$")
_BLOB_NAME = re.compile(r"^([0-9a-f]{96})-([0-9]+)$")

#: How far a fill must advance before waiting readers are woken; waking 50
#: readers for every 64 KiB socket read costs more than it gives.
NOTIFY_STEP = 1 << 20
#: After the disk refused a fill's bytes (full, over quota, failing), no
#: fill starts for this many seconds: downloads are relayed uncached
#: rather than cut off again and again.
DISK_RETRY = 60.0
#: How long fill progress smaller than L{NOTIFY_STEP} may wait before
#: readers are told about it anyway (a slow upstream must still trickle).
NOTIFY_DELAY = 0.02


class FillFailed(Exception):
    """
    A fill was abandoned: upstream broke off, sent the wrong bytes, or the
    disk refused them.  Readers of the fill must cut their clients short.
    """


class VerificationFailed(FillFailed):
    """
    The filled bytes do not have the size or sha3-384 the metadata promised.
    """


class _Hasher:
    """
    Hashes a growing file in a worker thread, following the writer.

    sha3-384 runs at 150-400 MB/s here, slower than a loopback upstream;
    hashing in the reactor thread made a cold 100 MiB fetch five times
    slower than the transfer itself and held up every reader meanwhile.
    The hasher reads what the writer already put in the page cache (so no
    chunk is held in memory for it) and releases the GIL while hashing.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._condition = threading.Condition()
        self._available = 0
        self._ended = False
        self._cancelled = False

    def advance(self, written: int) -> None:
        with self._condition:
            self._available = written
            self._condition.notify()

    def end(self, cancel: bool = False) -> None:
        with self._condition:
            self._ended = True
            self._cancelled = cancel
            self._condition.notify()

    def run(self) -> Optional[str]:
        """
        In a thread: hash until the writer ended; the hex digest, or
        C{None} when cancelled.
        """
        digest = hashlib.sha3_384()
        position = 0
        try:
            while True:
                with self._condition:
                    while position >= self._available and not self._ended:
                        self._condition.wait()
                    available, ended = self._available, self._ended
                    if self._cancelled:
                        return None
                while position < available:
                    chunk = os.pread(self._fd, min(CHUNK, available - position), position)
                    if not chunk:
                        return None
                    digest.update(chunk)
                    position += len(chunk)
                if ended:
                    with self._condition:
                        if position >= self._available:
                            return digest.hexdigest()
        finally:
            os.close(self._fd)


class _Entry:
    """
    One blob the cache holds or is filling.

    @ivar pins: open handles; an entry with pins is never unlinked by
        eviction.
    @ivar complete: C{True} once the file is verified and in C{blobs/}.
    @ivar removed: C{True} once dropped from the index while still pinned;
        its bytes stay counted until the last handle closes, because the
        unlinked inode still occupies the disk.
    """

    __slots__ = ("digest", "size", "path", "pins", "complete", "removed")

    def __init__(self, digest: str, size: int, path: FilePath, complete: bool) -> None:
        self.digest = digest
        self.size = size
        self.path = path
        self.pins = 0
        self.complete = complete
        self.removed = False


@implementer(IBlobSource)
class CachedBlob:
    """
    A pinned, open handle on a blob: a complete one (a cache hit), or one
    still being filled (then L{available} grows as the fill advances).

    Closing it unpins the blob; it is closed at most once.
    """

    def __init__(self, cache: BlobCache, entry: _Entry, fd: int,
                 fill: Optional[Fill] = None) -> None:
        self._cache = cache
        self._entry = entry
        self._fill = fill
        self.fd = fd
        self.size = entry.size
        self.digest = entry.digest
        self.closed = False

    def available(self) -> int:
        if self._fill is None:
            return self.size
        return self._fill.releasable()

    @property
    def failure(self) -> Optional[Failure]:
        return None if self._fill is None else self._fill.failure

    def notifyProgress(self, callback: Callable[[], None]) -> None:
        if self._fill is None:
            callback()
        else:
            self._fill.notifyProgress(callback)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        os.close(self.fd)
        self._cache._unpin(self._entry)


@implementer(IBlobFill)
class Fill:
    """
    One upstream transfer of a blob into the cache, shared by every reader
    that asked for the blob meanwhile.

    The producer of the bytes calls L{start}, L{write} for each piece, then
    L{finish} or L{abort}.  Readers open handles with L{openReader} and read
    from the temporary file as it grows; the last byte is held back until
    the whole blob is verified, so a reader of a bad fill is always cut off
    before the full length.

    @ivar written: bytes written so far.
    @ivar failure: why the fill failed, once it has.
    @ivar committed: C{True} once the blob is verified and in the cache.
    """

    log = Logger()

    def __init__(self, cache: BlobCache, entry: _Entry, tmpPath: FilePath) -> None:
        self._cache = cache
        self._entry = entry
        self.digest = entry.digest
        self.size = entry.size
        self.tmpPath = tmpPath
        self.written = 0
        self.failure: Optional[Failure] = None
        self.committed = False
        self.started = False
        self._fd: Optional[int] = os.open(
            tmpPath.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._hash = hashlib.sha3_384()
        self._hasher: Optional[_Hasher] = None
        self._hashed: Optional[Deferred[Optional[str]]] = None
        if cache.hashInThread:
            self._hasher = _Hasher(os.open(tmpPath.path, os.O_RDONLY))
            self._hashed = cache._inThread(self._hasher.run)
            self._hashed.addErrback(self._hashFailed)
        self._startWaiters: list[Deferred[None]] = []
        self._progressWaiters: list[Callable[[], None]] = []
        self._notified = 0
        self._notifyCall: Any = None
        self._finishing = False

    # -- the producer side -------------------------------------------------

    def start(self) -> None:
        """
        Upstream answered and bytes will follow: readers may start.
        """
        if self.started or self.failure is not None:
            return
        self.started = True
        waiters, self._startWaiters = self._startWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def write(self, data: bytes) -> None:
        """
        Append C{data}.  A full disk aborts the fill and raises.
        """
        if self.failure is not None or self._finishing:
            return
        if self.written + len(data) > self.size:
            self.abort(Failure(VerificationFailed(
                f"blob {self.digest[:16]}... is longer than the {self.size} bytes promised")))
            return
        fd = self._fd
        assert fd is not None, "written after the fill was committed"
        try:
            view = memoryview(data)
            while view:
                count = os.write(fd, view)
                view = view[count:]
        except OSError as error:
            self._cache.diskFailed(error)
            self.abort(Failure(FillFailed(f"cannot write to the cache: {error.strerror}")))
            raise
        self.written += len(data)
        if self._hasher is not None:
            self._hasher.advance(self.written)
        else:
            self._hash.update(data)
        if self.written - self._notified >= NOTIFY_STEP:
            self._notify()
        elif self._notifyCall is None:
            self._notifyCall = self._cache.clock.callLater(NOTIFY_DELAY, self._notify)

    def finish(self) -> Deferred[bool]:
        """
        The producer has no more bytes: verify them and, if they are right,
        move the file into the cache.

        @return: a Deferred firing with C{True} when committed, C{False}
            when the fill failed (the reason is in L{failure}).
        """
        if self.failure is not None:
            return succeed(False)
        self._finishing = True
        if self.written != self.size:
            self.abort(Failure(VerificationFailed(
                f"blob {self.digest[:16]}... ended after {self.written} of {self.size} bytes")))
            return succeed(False)
        if self._hasher is not None and self._hashed is not None:
            self._hasher.end()
            self._startWriteback()
            hashed = self._hashed
        else:
            hashed = succeed(self._hash.hexdigest())
        return hashed.addCallback(self._verify)

    def _startWriteback(self) -> None:
        """
        Start writing the blob to the disk while the hasher, which lags
        the writer, catches up: the commit's C{fdatasync} then finds the
        bytes written instead of flushing the whole blob after the hash
        (half a second of a 1 GiB first download here, bench/cache.py
        row (d)).  The thread syncs its own duplicate of the descriptor,
        so an abort meanwhile closes nothing under it; the commit's own
        C{fdatasync} still decides, and reports a failing disk.
        """
        assert self._fd is not None, "written back after the fill was committed"
        fd = os.dup(self._fd)

        def writeBack() -> None:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

        self._cache._inThread(writeBack).addErrback(lambda _: None)

    def _hashFailed(self, reason: Failure) -> None:
        self.log.failure("hashing fill {digest} failed", reason, digest=self.digest)
        return None

    def _verify(self, actual: Optional[str]) -> Deferred[bool]:
        if self.failure is not None:
            return succeed(False)
        if actual != self.digest:
            self.abort(Failure(VerificationFailed(
                f"sha3-384 mismatch: got {actual} but expected {self.digest}")))
            return succeed(False)
        fd, self._fd = self._fd, None
        assert fd is not None, "committed twice"
        target = self._cache._blobPath(self.digest, self.size)

        def commit() -> None:
            # Data first, then the name: after a power cut the name never
            # points at bytes that did not reach the disk.
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.rename(self.tmpPath.path, target.path)

        def committed(_: Any) -> bool:
            self.committed = True
            self._entry.path = target
            self._cache._committed(self)
            self._notify()
            return True

        def failed(reason: Failure) -> bool:
            if isinstance(reason.value, OSError):
                self._cache.diskFailed(reason.value)
            self.abort(Failure(FillFailed(f"cannot commit blob to the cache: {reason.getErrorMessage()}")))
            return False

        return self._cache._inThread(commit).addCallbacks(committed, failed)

    def abort(self, reason: Failure) -> None:
        """
        Give up: the file is deleted and every reader is told to cut its
        client short.
        """
        if self.failure is not None or self.committed:
            return
        self.failure = reason
        self.log.warn("blob fill {digest} failed after {written} of {size} bytes: {why}",
                      digest=self.digest, written=self.written, size=self.size,
                      why=reason.getErrorMessage())
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._hasher is not None:
            self._hasher.end(cancel=True)
        try:
            self.tmpPath.remove()
        except OSError:
            pass
        self._cache._abandoned(self)
        waiters, self._startWaiters = self._startWaiters, []
        for waiter in waiters:
            waiter.errback(reason)
        self._notify()

    # -- the reader side ---------------------------------------------------

    def whenStarted(self) -> Deferred[None]:
        """
        @return: a Deferred firing when bytes start to flow, or failing with
            the reason the fill failed before that.
        """
        if self.failure is not None:
            return _failed(self.failure)
        if self.started:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._startWaiters.append(waiter)
        return waiter

    def openReader(self) -> CachedBlob:
        """
        A pinned handle reading the blob as it is filled.

        @raise FillFailed: if the fill already failed.
        """
        if self.failure is not None:
            raise FillFailed(self.failure.getErrorMessage())
        try:
            fd = os.open(self._entry.path.path if self.committed else self.tmpPath.path, os.O_RDONLY)
        except FileNotFoundError:
            # The commit thread renamed the verified file into blobs/ and
            # its callback has not run in the reactor yet: the blob is
            # complete under its final name.
            try:
                fd = os.open(self._cache._blobPath(self.digest, self.size).path, os.O_RDONLY)
            except OSError as error:
                raise FillFailed(f"cannot open blob {self.digest[:16]}...: {error.strerror}")
        self._cache._pin(self._entry)
        return CachedBlob(self._cache, self._entry, fd, self)

    def releasable(self) -> int:
        """
        How many bytes readers may send now: all of them once committed,
        otherwise all but the last byte (held until verification).
        """
        if self.committed:
            return self.size
        return min(self.written, self.size - 1)

    def notifyProgress(self, callback: Callable[[], None]) -> None:
        """
        Call C{callback} once, when more bytes are releasable or the fill
        ended either way.
        """
        if self.committed or self.failure is not None:
            callback()
            return
        self._progressWaiters.append(callback)

    def _notify(self) -> None:
        if self._notifyCall is not None:
            if self._notifyCall.active():
                self._notifyCall.cancel()
            self._notifyCall = None
        self._notified = self.written
        waiters, self._progressWaiters = self._progressWaiters, []
        for waiter in waiters:
            try:
                waiter()
            except Exception:
                self.log.failure("blob reader failed on fill progress")


def _failed(failure: Failure) -> Deferred[None]:
    waiter: Deferred[None] = Deferred()
    waiter.errback(failure)
    return waiter


@implementer(IBlobCache)
class BlobCache:
    """
    The blob cache in one directory, bounded to C{maxSize} bytes.

    @ivar directory: the cache directory (holding C{blobs/} and C{tmp/}).
    @ivar maxSize: the bound in bytes.
    @ivar usedSize: bytes the cache occupies or has reserved: complete
        blobs, fills in progress (at their full size), and removed blobs a
        reader still holds open.
    """

    log = Logger()

    def __init__(self, reactor: IServiceReactor, directory: str | FilePath, maxSize: int,
                 inThread: Optional[Callable[..., Deferred[Any]]] = None,
                 hashInThread: Optional[bool] = None) -> None:
        """
        Open (or create) the cache in C{directory}: wipe C{tmp/}, drop files
        whose size is not the one in their name, and rebuild the LRU order.

        @param reactor: provides C{callLater}, and the thread pool that
            commits and verification run in unless C{inThread} is given.
        @param inThread: C{f -> Deferred} running blocking work (fsync,
            hashing) away from the reactor thread.
        @param hashInThread: hash fills in a thread alongside the writes
            (the default with real threads); C{False} hashes each piece in
            L{Fill.write}, which deterministic tests with a synchronous
            C{inThread} need.
        """
        self.clock = reactor
        self.directory = directory if isinstance(directory, FilePath) else FilePath(directory)
        self.maxSize = maxSize
        self.usedSize = 0
        #: No fill starts before this time (see L{diskFailed}).
        self.diskFullUntil = 0.0
        self.hashInThread = (inThread is None) if hashInThread is None else hashInThread
        if inThread is None:
            def inThread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
                return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
        self._inThread = inThread
        self._blobs = self.directory.child("blobs")
        self._tmp = self.directory.child("tmp")
        self._lru: OrderedDict[str, _Entry] = OrderedDict()
        self._fills: dict[str, Fill] = {}
        self._idleWaiters: list[Deferred[None]] = []
        self._tmpCounter = 0
        #: Told C{blobAdded(digest, size)} and C{blobRemoved(digest)} as
        #: blobs are committed and dropped (the cluster's blob locations).
        self.observers: list[Any] = []
        self._open()
        if self.hashInThread and hasattr(reactor, "addSystemEventTrigger"):
            # A hashing thread waits for its fill's bytes; the reactor's
            # thread pool joins its threads at shutdown, so end the fills
            # first or twistd would never exit.
            reactor.addSystemEventTrigger("before", "shutdown", self.close)

    # -- start-up ----------------------------------------------------------

    def _open(self) -> None:
        self._blobs.makedirs(ignoreExistingDirectory=True)
        if self._tmp.exists():
            for child in self._tmp.children():
                self.log.info("removing unfinished fill {path}", path=child.path)
                if child.isdir():
                    child.remove()
                else:
                    os.unlink(child.path)
        self._tmp.makedirs(ignoreExistingDirectory=True)
        found = []
        for child in self._blobs.children():
            match = _BLOB_NAME.match(child.basename())
            if match is None:
                self.log.warn("ignoring stray file {path} in the blob cache", path=child.path)
                continue
            stat = os.stat(child.path)
            size = int(match.group(2))
            if stat.st_size != size:
                self.log.warn("removing broken cached blob {path}: {actual} bytes, not {size}",
                              path=child.path, actual=stat.st_size, size=size)
                os.unlink(child.path)
                continue
            found.append((max(stat.st_mtime, stat.st_atime), match.group(1), size, child))
        for _, digest, size, child in sorted(found):
            self._lru[digest] = _Entry(digest, size, child, complete=True)
            self.usedSize += size
        self._evict(0)

    # -- lookups -----------------------------------------------------------

    def open(self, digest: str) -> Optional[CachedBlob]:
        """
        @return: a pinned handle on the complete blob, or C{None} when it is
            not cached (or its file vanished).
        """
        entry = self._lru.get(digest)
        if entry is None:
            return None
        try:
            fd = os.open(entry.path.path, os.O_RDONLY)
        except FileNotFoundError:
            self.log.warn("cached blob {path} vanished", path=entry.path.path)
            self._drop(entry)
            return None
        actual = os.fstat(fd).st_size
        if actual != entry.size:
            # Truncated or appended to behind the cache's back: never serve
            # it (a short file would end a download early, a long one with
            # bytes the digest does not cover).
            os.close(fd)
            self.log.warn("cached blob {path} is {actual} bytes, not {size}; dropping it",
                          path=entry.path.path, actual=actual, size=entry.size)
            self._drop(entry)
            return None
        self._lru.move_to_end(digest)
        try:
            os.utime(fd)
        except OSError:
            pass
        self._pin(entry)
        return CachedBlob(self, entry, fd)

    def contains(self, digest: str) -> bool:
        return digest in self._lru

    def filling(self, digest: str) -> Optional[Fill]:
        """
        @return: the fill of C{digest} in progress, or C{None}.
        """
        return self._fills.get(digest)

    def beginFill(self, digest: str, size: int) -> Optional[Fill]:
        """
        Reserve room for a blob and start filling it.  The caller must feed
        the returned L{Fill} and end it with C{finish} or C{abort}.

        @return: the fill, or C{None} when the blob cannot be cached now
            (larger than the cache, or the cache is over its bound with
            every blob pinned); the caller then serves it uncached.
        @raise ValueError: if the digest is not lowercase hex sha3-384, or
            the blob is cached or being filled already.
        """
        if not _DIGEST.match(digest) or size < 0:
            raise ValueError(f"not a sha3-384 hex digest and size: {digest!r} {size!r}")
        if digest in self._lru or digest in self._fills:
            raise ValueError(f"blob {digest} is cached or being filled already")
        if size > self.maxSize:
            return None
        if self.clock.seconds() < self.diskFullUntil:
            return None
        self._evict(size)
        if self.usedSize > self.maxSize:
            # Admitting a blob only while the cache is within its bound
            # keeps it from ever exceeding the bound by more than one blob.
            return None
        self._tmpCounter += 1
        tmpPath = self._tmp.child(f"{digest}.{os.getpid()}.{self._tmpCounter}")
        entry = _Entry(digest, size, tmpPath, complete=False)
        try:
            fill = Fill(self, entry, tmpPath)
        except OSError as error:
            self.diskFailed(error)
            return None
        self.usedSize += size
        self._fills[digest] = fill
        return fill

    def entries(self) -> list[tuple[str, int, int]]:
        """
        @return: C{(digest, size, pins)} of every complete blob, least
            recently used first.
        """
        return [(entry.digest, entry.size, entry.pins) for entry in self._lru.values()]

    def stats(self) -> dict[str, int]:
        """
        Counters for the admin API and metrics.
        """
        return {
            "blobs": len(self._lru),
            "usedSize": self.usedSize,
            "maxSize": self.maxSize,
            "filling": len(self._fills),
            "pinned": sum(1 for entry in self._lru.values() if entry.pins),
        }

    def close(self) -> None:
        """
        Abandon the fills in progress (their temporary files go; the next
        start wipes C{tmp/} anyway).  Complete blobs stay.
        """
        for fill in list(self._fills.values()):
            fill.abort(Failure(FillFailed("the cache is closing")))

    def diskFailed(self, error: OSError) -> None:
        """
        The disk refused a fill: start no fill for L{DISK_RETRY} seconds,
        so that downloads are relayed uncached meanwhile.
        """
        self.diskFullUntil = self.clock.seconds() + DISK_RETRY
        self.log.warn("the cache's disk refused a write ({why}); serving downloads uncached "
                      "for {seconds:g}s", why=error.strerror or error, seconds=DISK_RETRY)

    # -- removal -----------------------------------------------------------

    def remove(self, digest: str) -> bool:
        """
        Delete a blob from the cache.  A reader that has it open keeps
        reading it (the inode lives until closed), and its bytes stay
        counted until then.

        @return: whether the blob was cached.
        """
        entry = self._lru.get(digest)
        if entry is None:
            return False
        self._drop(entry)
        return True

    def verify(self) -> Deferred[list[str]]:
        """
        Hash every cached blob (in a thread) and remove those whose content
        does not match their name.

        @return: a Deferred firing with the digests of the removed blobs.
        """
        entries = list(self._lru.values())

        def hashAll() -> list[tuple[_Entry, Optional[str]]]:
            results = []
            for entry in entries:
                results.append((entry, _hashFile(entry.path.path)))
            return results

        def judge(results: list[tuple[_Entry, Optional[str]]]) -> list[str]:
            bad = []
            for entry, actual in results:
                if actual is None or actual == entry.digest:
                    continue
                if self._lru.get(entry.digest) is not entry:
                    continue
                self.log.warn("cache verify: removing {path}: sha3-384 is {actual}",
                              path=entry.path.path, actual=actual)
                self._drop(entry)
                bad.append(entry.digest)
            return bad

        return self._inThread(hashAll).addCallback(judge)

    # -- internals ---------------------------------------------------------

    def _blobPath(self, digest: str, size: int) -> FilePath:
        return self._blobs.child(f"{digest}-{size}")

    def _pin(self, entry: _Entry) -> None:
        entry.pins += 1

    def _unpin(self, entry: _Entry) -> None:
        entry.pins -= 1
        if entry.pins == 0:
            if entry.removed:
                self.usedSize -= entry.size
            if self.usedSize > self.maxSize:
                self._evict(0)

    def _drop(self, entry: _Entry) -> None:
        """
        Remove a complete entry from the index and the disk.
        """
        self._lru.pop(entry.digest, None)
        try:
            os.unlink(entry.path.path)
        except FileNotFoundError:
            pass
        for observer in self.observers:
            observer.blobRemoved(entry.digest)
        if entry.pins:
            entry.removed = True
        else:
            self.usedSize -= entry.size

    def _evict(self, room: int) -> None:
        """
        Remove least recently used, unpinned blobs until C{room} more bytes
        fit under the bound, or nothing more can go.
        """
        if self.usedSize + room <= self.maxSize:
            return
        for entry in list(self._lru.values()):
            if self.usedSize + room <= self.maxSize:
                break
            if entry.pins:
                continue
            self.log.info("evicting {digest} ({size} bytes)", digest=entry.digest, size=entry.size)
            self._drop(entry)

    def whenIdle(self) -> Deferred[None]:
        """
        Fire once no fill is in progress: at once when none is, else on the
        reactor turn after the last one was committed or abandoned (a fill
        may outlive the response of the client that started it).
        """
        if not self._fills:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._idleWaiters.append(waiting)
        return waiting

    def _fillEnded(self) -> None:
        if self._fills:
            return
        waiters, self._idleWaiters = self._idleWaiters, []
        for waiting in waiters:
            self.clock.callLater(0, waiting.callback, None)

    def _committed(self, fill: Fill) -> None:
        self._fills.pop(fill.digest, None)
        entry = fill._entry
        entry.complete = True
        self._lru[entry.digest] = entry
        self._lru.move_to_end(entry.digest)
        for observer in self.observers:
            observer.blobAdded(entry.digest, entry.size)
        self._fillEnded()

    def _abandoned(self, fill: Fill) -> None:
        if self._fills.get(fill.digest) is fill:
            del self._fills[fill.digest]
        entry = fill._entry
        if entry.pins:
            entry.removed = True
        else:
            self.usedSize -= entry.size
        self._fillEnded()


def _hashFile(path: str) -> Optional[str]:
    """
    The hex sha3-384 of a file, or C{None} if it vanished meanwhile.
    """
    digest = hashlib.sha3_384()
    try:
        with open(path, "rb") as blob:
            for chunk in fileChunks(blob):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()
