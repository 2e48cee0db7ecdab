"""
Tests for L{snapstore.cache}: the blob cache (fills, verification, LRU
eviction, pinning, restart, verify), the blob sender and the document
cache.
"""

from __future__ import annotations

import hashlib
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from snapstore.cache.blobs import BlobCache, FillFailed, VerificationFailed
from snapstore.cache.documents import DocumentCache
from snapstore.cache.sender import BlobSender, SendfileThreads, sendfileSocket
from snapstore.interfaces import IBlobCache, IBlobFill, IBlobSource


def content(label: bytes, size: int) -> bytes:
    """
    Deterministic, distinct bytes for a test blob.
    """
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(label + b"%d" % counter).digest()
        counter += 1
    return bytes(out[:size])


def digestOf(data: bytes) -> str:
    return hashlib.sha3_384(data).hexdigest()


def synchronous(f, *args):
    """
    Run the cache's "thread" work inline, so tests stay deterministic.
    """
    return maybeDeferred(f, *args)


class CacheTestMixin:
    def makeCache(self, maxSize: int = 10_000, directory: str | None = None) -> BlobCache:
        self.clock = getattr(self, "clock", None) or Clock()
        if directory is None:
            directory = self.directory = getattr(self, "directory", None) or self.mktemp()
        return BlobCache(self.clock, directory, maxSize, inThread=synchronous)

    def store(self, cache: BlobCache, data: bytes) -> str:
        """
        Fill C{data} into C{cache} and check it was committed.
        """
        digest = digestOf(data)
        fill = cache.beginFill(digest, len(data))
        self.assertIsNotNone(fill)
        fill.start()
        fill.write(data)
        self.assertTrue(self.successResultOf(fill.finish()))
        return digest

    def readAll(self, handle) -> bytes:
        return os.pread(handle.fd, handle.size, 0)


class BlobCacheTests(CacheTestMixin, SynchronousTestCase):
    """
    Fills, verification and lookups of L{BlobCache}.
    """

    def test_interfaces(self) -> None:
        """
        The cache, its fills and its handles provide their interfaces.
        """
        cache = self.makeCache()
        self.assertTrue(verifyObject(IBlobCache, cache))
        data = content(b"a", 100)
        fill = cache.beginFill(digestOf(data), len(data))
        self.assertTrue(verifyObject(IBlobFill, fill))
        reader = fill.openReader()
        self.assertTrue(verifyObject(IBlobSource, reader))
        reader.close()
        fill.abort(Failure(FillFailed("test")))

    def test_fillCommitsVerifiedBlob(self) -> None:
        """
        A fill whose size and digest match is renamed into C{blobs/} and
        then found by L{BlobCache.open}; C{tmp/} is left empty.
        """
        cache = self.makeCache()
        data = content(b"a", 1000)
        digest = self.store(cache, data)
        handle = cache.open(digest)
        self.assertEqual(self.readAll(handle), data)
        handle.close()
        self.assertEqual(os.listdir(os.path.join(self.directory, "blobs")), [f"{digest}-1000"])
        self.assertEqual(os.listdir(os.path.join(self.directory, "tmp")), [])
        self.assertEqual(cache.usedSize, 1000)

    def test_wrongHashDiscarded(self) -> None:
        """
        A fill of the right size but the wrong content is discarded, and
        its readers learn it failed without ever getting the last byte.
        """
        cache = self.makeCache()
        data = content(b"a", 1000)
        fill = cache.beginFill(digestOf(data), len(data))
        fill.start()
        reader = fill.openReader()
        fill.write(data[:-1] + b"X")
        self.assertEqual(reader.available(), 999)
        self.assertFalse(self.successResultOf(fill.finish()))
        self.assertIsInstance(fill.failure.value, VerificationFailed)
        self.assertIsNotNone(reader.failure)
        self.assertLess(reader.available(), 1000)
        reader.close()
        self.assertIsNone(cache.open(digestOf(data)))
        self.assertIsNone(cache.filling(digestOf(data)))
        self.assertEqual(os.listdir(os.path.join(self.directory, "tmp")), [])
        self.assertEqual(cache.usedSize, 0)

    def test_shortFillDiscarded(self) -> None:
        """
        A fill that ends before the promised size is discarded.
        """
        cache = self.makeCache()
        data = content(b"a", 1000)
        fill = cache.beginFill(digestOf(data), len(data))
        fill.write(data[:500])
        self.assertFalse(self.successResultOf(fill.finish()))
        self.assertIsNone(cache.open(digestOf(data)))
        self.assertEqual(cache.usedSize, 0)

    def test_lastByteHeldUntilVerified(self) -> None:
        """
        Readers of a fill may send everything but the last byte until the
        fill is verified; then all of it.
        """
        cache = self.makeCache()
        data = content(b"a", 1000)
        fill = cache.beginFill(digestOf(data), len(data))
        reader = fill.openReader()
        woken = []
        reader.notifyProgress(lambda: woken.append(reader.available()))
        fill.write(data[:400])
        self.clock.advance(1)
        self.assertEqual(woken, [400])
        fill.write(data[400:])
        self.assertEqual(reader.available(), 999)
        self.successResultOf(fill.finish())
        self.assertEqual(reader.available(), 1000)
        self.assertEqual(self.readAll(reader), data)
        reader.close()

    def test_diskFullAbortsFill(self) -> None:
        """
        A write the disk refuses aborts the fill: nothing is cached, and the
        temporary file is gone.
        """
        cache = self.makeCache()
        data = content(b"a", 1000)
        fill = cache.beginFill(digestOf(data), len(data))
        os.close(fill._fd)
        fill._fd = os.open("/dev/full", os.O_WRONLY)
        self.assertRaises(OSError, fill.write, data)
        self.assertIsInstance(fill.failure.value, FillFailed)
        self.assertIn("No space", fill.failure.getErrorMessage())
        self.assertIsNone(cache.filling(digestOf(data)))
        self.assertEqual(os.listdir(os.path.join(self.directory, "tmp")), [])
        self.assertEqual(cache.usedSize, 0)

    def test_singleFlight(self) -> None:
        """
        While a blob is being filled, L{BlobCache.filling} hands out that
        fill and a second L{BlobCache.beginFill} is refused.
        """
        cache = self.makeCache()
        data = content(b"a", 100)
        fill = cache.beginFill(digestOf(data), 100)
        self.assertIs(cache.filling(digestOf(data)), fill)
        self.assertRaises(ValueError, cache.beginFill, digestOf(data), 100)
        fill.abort(Failure(FillFailed("test")))
        self.assertIsNone(cache.filling(digestOf(data)))

    def test_whenStartedFailsWithAbortReason(self) -> None:
        """
        Readers waiting for a fill to start get the reason it failed.
        """
        cache = self.makeCache()
        fill = cache.beginFill(digestOf(b"x"), 1)
        waiting = fill.whenStarted()
        fill.abort(Failure(ValueError("upstream said no")))
        self.assertEqual(self.failureResultOf(waiting, ValueError).getErrorMessage(),
                         "upstream said no")

    def test_tooLargeNotCached(self) -> None:
        """
        A blob larger than the whole cache is not filled.
        """
        cache = self.makeCache(maxSize=100)
        self.assertIsNone(cache.beginFill(digestOf(b"x"), 101))


class ThreadedHashTests(TestCase):
    """
    With real threads, fills are hashed in a worker thread that follows the
    writes; the verdict is the same.
    """

    def makeFill(self, data: bytes, digest: str | None = None):
        cache = BlobCache(reactor, self.mktemp(), 10 << 20)
        self.assertTrue(cache.hashInThread)
        fill = cache.beginFill(digest or digestOf(data), len(data))
        for offset in range(0, len(data), 65536):
            fill.write(data[offset:offset + 65536])
        return cache, fill

    @inlineCallbacks
    def test_commit(self) -> None:
        data = content(b"threaded", 1 << 20)
        cache, fill = self.makeFill(data)
        committed = yield fill.finish()
        self.assertTrue(committed)
        self.assertTrue(cache.contains(digestOf(data)))

    @inlineCallbacks
    def test_mismatch(self) -> None:
        data = content(b"threaded", 1 << 20)
        cache, fill = self.makeFill(data, digestOf(b"something else"))
        committed = yield fill.finish()
        self.assertFalse(committed)
        self.assertIsInstance(fill.failure.value, VerificationFailed)
        self.assertEqual(cache.entries(), [])

    @inlineCallbacks
    def test_closeEndsFills(self) -> None:
        """
        L{BlobCache.close} abandons fills in progress, so their hashing
        threads end (the reactor's thread pool waits for them at shutdown).
        """
        data = content(b"threaded", 1 << 20)
        cache, fill = self.makeFill(data)
        hashed = fill._hashed
        cache.close()
        self.assertIsInstance(fill.failure.value, FillFailed)
        result = yield hashed
        self.assertIsNone(result)


class WritebackTests(SynchronousTestCase):
    """
    A fill's bytes go to the disk while its hasher catches up with the
    writer, not only after the hash (bench/cache.py row (d)).
    """

    def test_writebackBeforeTheHash(self) -> None:
        """
        When the writer ends, a job syncing the fill's file is queued
        before the hash is known; the commit still waits for the hash.
        """
        jobs: list[tuple[object, tuple, Deferred]] = []

        def queued(f, *args):
            waiting: Deferred = Deferred()
            jobs.append((f, args, waiting))
            return waiting

        def run(index: int) -> None:
            f, args, waiting = jobs[index]
            waiting.callback(f(*args))

        cache = BlobCache(Clock(), self.mktemp(), 10 << 20, inThread=queued, hashInThread=True)
        data = content(b"writeback", 1 << 20)
        fill = cache.beginFill(digestOf(data), len(data))
        fill.write(data)
        finished = fill.finish()
        self.assertEqual(len(jobs), 2, "the hasher and the writeback")
        synced: list[int] = []
        self.patch(os, "fdatasync", lambda fd: synced.append(os.fstat(fd).st_ino))
        run(1)
        self.assertEqual(synced, [os.stat(fill.tmpPath.path).st_ino])
        self.assertNoResult(finished)
        run(0)
        self.assertEqual(len(jobs), 3, "the commit, once hashed")
        run(2)
        self.assertTrue(self.successResultOf(finished))
        self.assertTrue(cache.contains(digestOf(data)))


class EvictionTests(CacheTestMixin, SynchronousTestCase):
    """
    The size bound, LRU order and pinning.
    """

    def test_lruOrder(self) -> None:
        """
        When a new blob needs room, the least recently used blob goes first;
        opening a blob makes it recently used.
        """
        cache = self.makeCache(maxSize=3000)
        a = self.store(cache, content(b"a", 1000))
        b = self.store(cache, content(b"b", 1000))
        c = self.store(cache, content(b"c", 1000))
        cache.open(a).close()
        d = self.store(cache, content(b"d", 1000))
        self.assertFalse(cache.contains(b))
        self.assertEqual([entry[0] for entry in cache.entries()], [c, a, d])
        self.assertEqual(cache.usedSize, 3000)
        self.assertEqual(sorted(os.listdir(os.path.join(self.directory, "blobs"))),
                         sorted(f"{x}-1000" for x in (a, c, d)))

    def test_pinnedNotEvicted(self) -> None:
        """
        A blob with an open handle is skipped by eviction; the next least
        recently used one goes instead.
        """
        cache = self.makeCache(maxSize=2000)
        a = self.store(cache, content(b"a", 1000))
        b = self.store(cache, content(b"b", 1000))
        handle = cache.open(a)
        cache.open(b).close()
        self.store(cache, content(b"c", 1000))
        self.assertTrue(cache.contains(a))
        self.assertFalse(cache.contains(b))
        self.assertEqual(self.readAll(handle), content(b"a", 1000))
        handle.close()

    def test_boundExceededByOneBlobAtMost(self) -> None:
        """
        When every blob is pinned, one more blob may be admitted (the cache
        exceeds its bound by at most that blob); the next is refused until
        the pins go, and then eviction restores the bound.
        """
        cache = self.makeCache(maxSize=2000)
        a = self.store(cache, content(b"a", 1000))
        b = self.store(cache, content(b"b", 1000))
        pins = [cache.open(a), cache.open(b)]
        c = self.store(cache, content(b"c", 1500))
        self.assertEqual(cache.usedSize, 3500)
        pins.append(cache.open(c))
        self.assertIsNone(cache.beginFill(digestOf(b"d"), 10))
        for pin in pins:
            pin.close()
        self.assertLessEqual(cache.usedSize, 2000)
        self.assertTrue(cache.contains(c))

    def test_removedWhilePinnedStaysReadable(self) -> None:
        """
        A blob removed while a reader has it open is unlinked, yet the
        reader reads all of it, and its bytes count until the reader closes.
        """
        cache = self.makeCache()
        data = content(b"a", 1000)
        digest = self.store(cache, data)
        handle = cache.open(digest)
        self.assertTrue(cache.remove(digest))
        self.assertEqual(os.listdir(os.path.join(self.directory, "blobs")), [])
        self.assertEqual(cache.usedSize, 1000)
        self.assertEqual(self.readAll(handle), data)
        handle.close()
        self.assertEqual(cache.usedSize, 0)

    def test_fillReservesRoom(self) -> None:
        """
        Starting a fill evicts enough to hold the whole blob, before any
        byte arrives.
        """
        cache = self.makeCache(maxSize=2000)
        a = self.store(cache, content(b"a", 1000))
        self.store(cache, content(b"b", 1000))
        fill = cache.beginFill(digestOf(b"c"), 500)
        self.assertFalse(cache.contains(a))
        self.assertEqual(cache.usedSize, 1500)
        fill.abort(Failure(FillFailed("test")))
        self.assertEqual(cache.usedSize, 1000)


class RestartTests(CacheTestMixin, SynchronousTestCase):
    """
    What a new L{BlobCache} finds after a crash, and L{BlobCache.verify}.
    """

    def test_restartAfterKilledFill(self) -> None:
        """
        A new cache wipes C{tmp/} (fills a killed process left), removes
        blobs whose size is not the one in their name, and keeps the rest.
        """
        cache = self.makeCache()
        good = content(b"good", 1000)
        goodDigest = self.store(cache, good)
        blobs = FilePath(self.directory).child("blobs")
        tmp = FilePath(self.directory).child("tmp")
        tmp.child(f"{digestOf(b'partial')}.123.1").setContent(b"partial")
        truncated = content(b"truncated", 1000)
        blobs.child(f"{digestOf(truncated)}-1000").setContent(truncated[:600])
        cache2 = self.makeCache(directory=self.directory)
        self.assertEqual(tmp.listdir(), [])
        self.assertEqual(blobs.listdir(), [f"{goodDigest}-1000"])
        self.assertTrue(cache2.contains(goodDigest))
        self.assertFalse(cache2.contains(digestOf(truncated)))
        self.assertEqual(cache2.usedSize, 1000)
        handle = cache2.open(goodDigest)
        self.assertEqual(self.readAll(handle), good)
        handle.close()

    def test_lruRebuiltFromTimes(self) -> None:
        """
        The LRU order after a restart follows the files' times.
        """
        cache = self.makeCache(maxSize=3000)
        digests = [self.store(cache, content(label, 1000)) for label in (b"a", b"b", b"c")]
        blobs = FilePath(self.directory).child("blobs")
        for when, digest in zip((300, 100, 200), digests):
            os.utime(blobs.child(f"{digest}-1000").path, (when, when))
        cache2 = self.makeCache(maxSize=3000, directory=self.directory)
        self.assertEqual([entry[0] for entry in cache2.entries()],
                         [digests[1], digests[2], digests[0]])

    def test_restartOverBoundEvicts(self) -> None:
        """
        A cache reopened with a smaller bound evicts down to it.
        """
        cache = self.makeCache(maxSize=3000)
        for label in (b"a", b"b", b"c"):
            self.store(cache, content(label, 1000))
        cache2 = self.makeCache(maxSize=1500, directory=self.directory)
        self.assertEqual(cache2.usedSize, 1000)
        self.assertEqual(len(FilePath(self.directory).child("blobs").listdir()), 1)

    def test_verifyRemovesCorrupt(self) -> None:
        """
        L{BlobCache.verify} reports and removes a blob whose content does
        not hash to its name, and keeps the good ones.
        """
        cache = self.makeCache()
        good = self.store(cache, content(b"good", 1000))
        bad = self.store(cache, content(b"bad", 1000))
        path = FilePath(self.directory).child("blobs").child(f"{bad}-1000")
        corrupt = bytearray(path.getContent())
        corrupt[500] ^= 0xFF
        path.setContent(bytes(corrupt))
        cache2 = self.makeCache(directory=self.directory)
        self.assertTrue(cache2.contains(bad))
        self.assertEqual(self.successResultOf(cache2.verify()), [bad])
        self.assertFalse(cache2.contains(bad))
        self.assertFalse(path.exists())
        self.assertTrue(cache2.contains(good))
        self.assertEqual(self.successResultOf(cache2.verify()), [])


class _Collect(Protocol):
    def __init__(self) -> None:
        self.received = []
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason) -> None:
        self.closed.callback(b"".join(self.received))


class _Consumer:
    """
    The consumer side a web request gives a sender: the transport, and
    producer registration on it.
    """

    def __init__(self, transport) -> None:
        self.transport = transport
        self.sentLength = 0

    def registerProducer(self, producer, streaming) -> None:
        self.transport.producer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.producer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.transport.write(data)


class _Channel(Protocol):
    """
    Stands in for the HTTP channel: the transport's own streaming producer,
    passing pause and resume on to a request producer, as
    C{HTTPChannel} does.
    """

    def __init__(self) -> None:
        self.requestProducer = None
        self.whenConnected: Deferred[_Channel] = Deferred()

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.whenConnected.callback(self)

    def registerProducer(self, producer, streaming) -> None:
        self.requestProducer = producer

    def unregisterProducer(self) -> None:
        self.requestProducer = None

    def pauseProducing(self) -> None:
        if self.requestProducer is not None:
            self.requestProducer.pauseProducing()

    def resumeProducing(self) -> None:
        if self.requestProducer is not None:
            self.requestProducer.resumeProducing()

    def stopProducing(self) -> None:
        if self.requestProducer is not None:
            self.requestProducer.stopProducing()


class BlobSenderTests(CacheTestMixin, TestCase):
    """
    L{BlobSender} over real loopback sockets: header bytes already buffered
    in the transport come first, and ranges are exact, with and without
    C{sendfile}.
    """

    @inlineCallbacks
    def send(self, start: int, end: int, sendfile: bool, threads: bool = False) -> Deferred[bytes]:
        self.clock = reactor
        cache = BlobCache(reactor, self.mktemp(), 10 << 20, inThread=synchronous)
        data = content(b"sender", 3 << 20)
        digest = self.store(cache, data)
        handle = cache.open(digest)
        self.addCleanup(handle.close)
        channels: list[_Channel] = []

        def build(addr) -> _Channel:
            channels.append(_Channel())
            return channels[-1]

        factory = Factory()
        factory.buildProtocol = build
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = _Collect()
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        while not channels:
            yield deferLater(0)
        channel = yield channels[0].whenConnected
        transport = channel.transport
        self.assertEqual(sendfileSocket(transport) is not None, True)
        transport.write(b"HEADERS\r\n\r\n")
        pool = None
        if threads:
            pool = SendfileThreads(reactor, maxThreads=1, minimum=0)
            self.addCleanup(pool.stop)
        sender = BlobSender(handle, start, end, _Consumer(transport), transport,
                            sendfile=sendfile, clock=reactor, threads=pool)
        sent = yield sender.start()
        self.assertEqual(sender.usedSendfile, sendfile)
        self.assertEqual(sender.usedThread, threads)
        self.assertEqual(sent, end - start)
        # As HTTPChannel.loseConnection does: a producer still registered
        # would keep the transport from closing.
        transport.unregisterProducer()
        transport.loseConnection()
        received = yield client.closed
        return received, data

    @inlineCallbacks
    def test_sendfileAfterBufferedHeaders(self) -> None:
        """
        With C{sendfile}, the bytes the transport had buffered arrive before
        the body, and the body is the blob.
        """
        received, data = yield self.send(0, 3 << 20, True)
        self.assertEqual(received, b"HEADERS\r\n\r\n" + data)

    @inlineCallbacks
    def test_sendfileRange(self) -> None:
        """
        A range through C{sendfile} is exactly that slice.
        """
        received, data = yield self.send(1000, 2_000_000, True)
        self.assertEqual(received, b"HEADERS\r\n\r\n" + data[1000:2_000_000])

    @inlineCallbacks
    def test_sendfileThread(self) -> None:
        """
        A sending thread takes over once the buffered bytes left, and sends
        exactly the range.
        """
        received, data = yield self.send(3, 3_000_000, True, threads=True)
        self.assertEqual(received, b"HEADERS\r\n\r\n" + data[3:3_000_000])

    @inlineCallbacks
    def test_readPath(self) -> None:
        """
        Without C{sendfile} (TLS), the same bytes arrive through writes.
        """
        received, data = yield self.send(5, 3 << 20, False)
        self.assertEqual(received, b"HEADERS\r\n\r\n" + data[5:])

    def test_noSendfileOverTLSOrWrappers(self) -> None:
        """
        Transports that are not plain sockets never get C{sendfile}.
        """
        from twisted.internet.testing import StringTransport

        self.assertIsNone(sendfileSocket(StringTransport()))
        self.assertIsNone(sendfileSocket(object()))


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


class DocumentCacheTests(SynchronousTestCase):
    """
    L{DocumentCache} keeps bytes and media type exactly, bounded in size.
    """

    def test_storeAndBound(self) -> None:
        clock = Clock()
        clock.advance(5)
        documents = DocumentCache(clock, maxBytes=10)
        documents.put("a", b"12345", b"application/x.ubuntu.assertion")
        documents.put("b", b"12345", b"text/plain")
        self.assertEqual(documents.get("a").storedAt, 5)
        documents.put("c", b"123", b"text/plain")
        self.assertIsNone(documents.get("b"))
        self.assertEqual(documents.get("a").mediaType, b"application/x.ubuntu.assertion")
        self.assertEqual(documents.usedBytes, 8)


class WhenIdleTests(SynchronousTestCase):
    """
    L{BlobCache.whenIdle} fires once no fill is in progress.
    """

    def test_idleNow(self) -> None:
        cache = BlobCache(Clock(), self.mktemp(), 1 << 20, inThread=maybeDeferred,
                          hashInThread=False)
        self.successResultOf(cache.whenIdle())

    def test_afterCommitAndAbort(self) -> None:
        """
        With two fills in progress it waits for both, whether committed or
        abandoned, and fires on the reactor turn after the last.
        """
        clock = Clock()
        cache = BlobCache(clock, self.mktemp(), 1 << 20, inThread=maybeDeferred,
                          hashInThread=False)
        data = b"x" * 1000
        good = cache.beginFill(hashlib.sha3_384(data).hexdigest(), len(data))
        bad = cache.beginFill("0" * 96, 10)
        idle = cache.whenIdle()
        good.start()
        good.write(data)
        self.assertTrue(self.successResultOf(good.finish()))
        clock.advance(0)
        self.assertNoResult(idle)
        bad.start()
        bad.abort(Failure(FillFailed("gone")))
        self.assertNoResult(idle)
        clock.advance(0)
        self.successResultOf(idle)
