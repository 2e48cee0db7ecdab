# -*- test-case-name: tests.test_cluster -*-
"""
Filling a missing blob from the cluster before the uplink.

A node that misses a blob asks the shared database who has it and takes
the first source that works, in this order:

 1. a live node that holds the blob;
 2. else a live node filling it from upstream now (its bytes are relayed
    as they arrive; it holds back the last byte until it verified);
 3. else the cluster-wide fill lock of the blob (a session-level
    PostgreSQL advisory lock, released by the database if this node dies)
    and upstream; while another node holds the lock but has not said yet
    that it fills, the node waits a moment and asks again.

Whatever the source, the bytes go into the local L{Fill}, which devices
read as it grows and which commits only what has the promised size and
sha3-384.  A source that breaks off mid-transfer is followed by the next
one, resuming with C{Range} where the first stopped, so devices are not
cut; a peer whose bytes fail verification is not asked for that blob
again for a while (the fill is refused, its readers cut short, and the
device's retry fetches the blob elsewhere).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from zope.interface import implementer

from snapstore.cache.blobs import FillFailed, VerificationFailed
from snapstore.cluster.peer import peerBlobURL
from snapstore.interfaces import IBlobFiller
from snapstore.store.download import checkBlobResponse, upstreamHeaders
from snapstore.store.fillbody import BodyIntoFill, SourceGone
from snapstore.store.upstream import UpstreamError, discardBody

#: Seconds between two looks at the database while another node holds the
#: fill lock but is not yet listed as filling.
LOCK_POLL = 0.1
#: Seconds a peer has to connect and answer with headers.
PEER_TIMEOUT = 3.0
#: Seconds a peer whose bytes failed verification is not asked for that blob.
REFUSED_FOR = 600.0
#: Sources tried for one fill before it is given up.
MAX_ATTEMPTS = 20


@implementer(IBlobFiller)
class ClusterFiller:
    """
    Fills blobs for a L{snapstore.store.download.DownloadResource}
    (its C{filler}), from peers first.

    @ivar refused: C{(peer, digest) -> until} for peers whose bytes failed
        verification.
    """

    log = Logger()

    def __init__(self, reactor: Any, database: Any, download: Any, nodeURL: str,
                 token: bytes, peerAgent: Any = None) -> None:
        self.clock = reactor
        self.database = database
        self.download = download
        self.nodeURL = nodeURL
        self.token = token
        if peerAgent is None:
            # Peers are reached directly, never through --upstream-proxy.
            pool = HTTPConnectionPool(reactor, persistent=True)
            peerAgent = Agent(reactor, connectTimeout=PEER_TIMEOUT, pool=pool)
        self.peerAgent = peerAgent
        self.refused: dict[tuple[str, str], float] = {}
        #: Blob fetches by source kind, for the admin API and tests.
        self.counts = {"peer": 0, "peer-filling": 0, "upstream": 0, "peer-failed": 0,
                       "peer-refused": 0}

    # -- entry ---------------------------------------------------------------

    def startFill(self, fill: Any, record: Any, request: Any) -> None:
        """
        Fill C{fill} (for C{record}) from the cluster or upstream; the
        transfer lives on if the device that caused it goes away.
        """
        headers = upstreamHeaders(request)
        filling = Deferred.fromCoroutine(self._fill(fill, record, headers))

        def failed(reason: Failure) -> None:
            self.log.failure("cluster fill of {what} failed", reason, what=record.name)
            fill.abort(Failure(UpstreamError(502, "upstream-error",
                                             f"fetching {record.name} failed: "
                                             f"{reason.getErrorMessage()}")))

        filling.addErrback(failed)

    # -- the source loop -----------------------------------------------------

    async def _fill(self, fill: Any, record: Any, headers: Headers) -> None:
        digest = fill.digest
        deadline = self.clock.seconds() + self.download.headerTimeout
        contributors: set[str] = set()
        for _ in range(MAX_ATTEMPTS * 50):
            if fill.failure is not None or fill.committed:
                return
            try:
                sources = await self.database.sources(digest, self.nodeURL)
            except Exception as error:
                self.log.warn("cannot ask the cluster who has {digest}: {why}; "
                              "fetching from upstream", digest=digest[:16], why=error)
                await self._fromUpstream(fill, record, headers)
                return
            for url, complete in sources:
                if self._isRefused(url, digest):
                    continue
                outcome = await self._fromPeer(fill, url, complete, contributors)
                if outcome:
                    return
                if fill.failure is not None:
                    return
            try:
                locked = await self.database.tryLock(digest)
            except Exception as error:
                self.log.warn("cannot take the cluster fill lock of {digest}: {why}; "
                              "fetching from upstream", digest=digest[:16], why=error)
                await self._fromUpstream(fill, record, headers)
                return
            if locked:
                await self._lockedFill(fill, record, headers)
                return
            if not fill.started and self.clock.seconds() > deadline:
                fill.abort(Failure(UpstreamError(
                    504, "upstream-timeout",
                    f"another node holds the fill of {record.name} and sent nothing yet")))
                return
            await deferLater(self.clock, LOCK_POLL, lambda: None)
        fill.abort(Failure(FillFailed(f"no source finished {record.name}")))

    async def _lockedFill(self, fill: Any, record: Any, headers: Headers) -> None:
        """
        With the fill lock held: fill from upstream, say so meanwhile, and
        say the blob is here before releasing the lock (so that the next
        node to take it finds the blob instead of fetching it again).
        """
        digest = fill.digest
        try:
            holders = [url for url, complete in await self.database.sources(digest, self.nodeURL)
                       if complete and not self._isRefused(url, digest)]
            if holders:
                # Committed elsewhere between the look and the lock.
                await self.database.unlock(digest)
                if not await self._fromPeer(fill, holders[0], True, set()):
                    await self._fill(fill, record, headers)
                return
            await self.database.setLocation(digest, self.nodeURL, False)
            await self._fromUpstream(fill, record, headers)
            if fill.committed:
                await self.database.setLocation(digest, self.nodeURL, True)
            else:
                await self.database.dropLocation(digest, self.nodeURL)
        finally:
            try:
                await self.database.unlock(digest)
            except Exception as error:
                self.log.warn("cannot release the fill lock of {digest}: {why}",
                              digest=digest[:16], why=error)

    # -- peers ---------------------------------------------------------------

    def _isRefused(self, url: str, digest: str) -> bool:
        until = self.refused.get((url, digest))
        if until is None:
            return False
        if until < self.clock.seconds():
            del self.refused[(url, digest)]
            return False
        return True

    def _refuseAfter(self, fill: Any, contributors: set[str]) -> None:
        if fill.failure is not None and fill.failure.check(VerificationFailed):
            for url in contributors:
                self.log.warn("peer {peer} sent bytes of {digest} that failed verification; "
                              "not asking it for that blob for {seconds:g}s",
                              peer=url, digest=fill.digest[:16], seconds=REFUSED_FOR)
                self.refused[(url, fill.digest)] = self.clock.seconds() + REFUSED_FOR
                self.counts["peer-refused"] += 1

    async def _fromPeer(self, fill: Any, url: str, complete: bool,
                        contributors: set[str]) -> bool:
        """
        Copy the rest of the blob from peer C{url}.

        @return: C{True} once the blob is committed; C{False} when this
            peer could not finish it (the fill may have advanced, or
            failed when the bytes did not verify).
        """
        headers = Headers({b"authorization": [b"Bearer " + self.token],
                           b"user-agent": [b"snapstore-peer"]})
        start = fill.written
        if start:
            headers.setRawHeaders(b"range", [b"bytes=%d-" % start])
        target = peerBlobURL(url, fill.digest)
        try:
            response = await _withTimeout(self.clock, self.peerAgent.request(b"GET", target, headers),
                                          PEER_TIMEOUT)
        except Exception as error:
            self.log.info("peer {peer} unreachable for {digest}: {why}",
                          peer=url, digest=fill.digest[:16], why=error)
            self.counts["peer-failed"] += 1
            return False
        expected = 206 if start else 200
        if response.code != expected or not _rangeStartsAt(response, start, fill.size):
            discardBody(response)
            self.log.info("peer {peer} answered {code} for {digest} from byte {start}",
                          peer=url, code=response.code, digest=fill.digest[:16], start=start)
            self.counts["peer-failed"] += 1
            return False
        self.counts["peer" if complete else "peer-filling"] += 1
        contributors.add(url)
        fill.start()
        writer = BodyIntoFill(fill, self.clock, self.download.idleTimeout)
        response.deliverBody(writer)
        try:
            await writer.done
        except SourceGone as error:
            self.log.warn("peer {peer} broke off {digest} at byte {written}: {why}",
                          peer=url, digest=fill.digest[:16], written=fill.written, why=error)
            self.counts["peer-failed"] += 1
        if fill.failure is not None or fill.written != fill.size:
            return False
        committed = await fill.finish()
        if not committed:
            self._refuseAfter(fill, contributors)
        else:
            self.log.info("cached {digest} from peer {peer}", digest=fill.digest[:16], peer=url)
        return committed

    # -- upstream ------------------------------------------------------------

    async def _fromUpstream(self, fill: Any, record: Any, headers: Headers) -> None:
        """
        Fetch the rest of the blob from upstream (as the download resource
        does, with C{Range} when peers already delivered a part) and end
        the fill.
        """
        what = record.name
        start = fill.written
        if start:
            headers = headers.copy()
            headers.setRawHeaders(b"range", [b"bytes=%d-" % start])
        self.counts["upstream"] += 1
        try:
            response = await self.download.fetch(b"GET", record.url.encode("ascii"), headers)
        except Exception as error:
            reason = Failure(error)
            if not reason.check(UpstreamError):
                self.log.failure("fetching {what} failed", reason, what=what)
                reason = Failure(UpstreamError(502, "upstream-error",
                                               f"fetching {what} failed: {error}"))
            fill.abort(reason)
            return
        if start:
            problem = None
            if response.code != 206 or not _rangeStartsAt(response, start, fill.size):
                problem = UpstreamError(502, "upstream-bad-response",
                                        f"upstream answered {response.code} to a resumed "
                                        f"download of {what} from byte {start}")
        else:
            problem = checkBlobResponse(response, fill.size, what)
        if problem is not None:
            discardBody(response)
            fill.abort(Failure(problem))
            return
        await self.download.fillFrom(fill, response, what)


def _rangeStartsAt(response: Any, start: int, size: int) -> bool:
    """
    Whether C{response} carries the blob from byte C{start} to its end.
    """
    if start == 0 and response.code == 200:
        return not isinstance(response.length, int) or response.length == size
    value = (response.headers.getRawHeaders(b"content-range") or [b""])[0]
    return value.strip().startswith(b"bytes %d-%d/%d" % (start, size - 1, size))


def _withTimeout(clock: Any, waiting: Deferred[Any], seconds: float) -> Deferred[Any]:
    return waiting.addTimeout(seconds, clock)


__all__ = ["ClusterFiller"]
