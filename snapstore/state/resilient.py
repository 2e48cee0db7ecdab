# -*- test-case-name: tests.test_resilient -*-
"""
Keeping the proxy's data path independent of the database's health.

When PostgreSQL is down (or restarting) devices must still get their
refreshes and their cached blobs.  The data path therefore reaches the state
store through L{ResilientState}: blob records it has seen are remembered in
memory, so a cached blob can be found without the database, and device
sightings and granted device sessions that cannot be written are queued
(bounded) and written when the database answers again.  Admin changes are not wrapped: they fail with
L{StateUnavailable}, which the admin API reports, never silently.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from snapstore.interfaces import IStateStore
from snapstore.state.errors import StateUnavailable
from snapstore.state.records import BlobRecord, Device, DeviceSession

RETRY_DELAY = 5.0


@implementer(IStateStore)
class ResilientState:
    """
    An L{IStateStore} for the data path, wrapping the real one.

    Every method not defined here is the wrapped store's own, unchanged.

    @ivar queuedDevices: device sightings waiting for the database, newest
        per identity, at most C{maxQueuedDevices}.
    @ivar queuedSessions: granted device sessions waiting for the database,
        by digest, at most C{maxQueuedDevices}.
    """

    log = Logger()

    def __init__(self, store: Any, clock: IReactorTime, maxBlobs: int = 100_000,
                 maxQueuedDevices: int = 10_000) -> None:
        self._store = store
        self._clock = clock
        self._blobs: OrderedDict[str, BlobRecord] = OrderedDict()
        # What this node knows the database holds, per blob name (without
        # seenAt, which the database keeps from the first sighting).
        self._written: dict[str, tuple[Any, ...]] = {}
        self._maxBlobs = maxBlobs
        self.queuedDevices: OrderedDict[str, Device] = OrderedDict()
        self._maxQueuedDevices = maxQueuedDevices
        self.queuedSessions: OrderedDict[str, DeviceSession] = OrderedDict()
        self._retry: Optional[Any] = None
        self._flushing = False
        store.observeChanges(self._changed)

    def _changed(self, event: dict[str, Any]) -> None:
        # A node that got its database back resyncs: write what waited.
        if event.get("kind") == "resync" and (self.queuedDevices or self.queuedSessions):
            self.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    # -- blobs -------------------------------------------------------------

    def _remember(self, blob: Optional[BlobRecord]) -> Optional[BlobRecord]:
        if blob is not None:
            self._blobs[blob.name] = blob
            self._blobs.move_to_end(blob.name)
            while len(self._blobs) > self._maxBlobs:
                dropped, _ = self._blobs.popitem(last=False)
                self._written.pop(dropped, None)
        return blob

    def recordBlob(self, blob: BlobRecord) -> Deferred[Optional[BlobRecord]]:
        """
        Record C{blob} in the database and in memory; without a database the
        memory alone lets this node serve it until it restarts.
        """
        known = self._blobs.get(blob.name)
        if known is not None:
            # Digest and size are immutable: keep the first, take the URL.
            if blob.sha3_384 != known.sha3_384 or blob.size != known.size:
                blob = attrs.evolve(blob, sha3_384=known.sha3_384, size=known.size)
            if self._written.get(blob.name) == _comparable(blob):
                # The database holds this very record already.  Every
                # refresh names the same blobs again; writing them for each
                # device made each refresh wait for a database write (about
                # 500 refreshes/s at most with SQLite).
                self._blobs.move_to_end(blob.name)
                return succeed(known)
        recorded = self._store.recordBlob(blob)

        def stored(result: Any) -> Any:
            self._written[blob.name] = _comparable(blob)
            return self._remember(result if isinstance(result, BlobRecord) else blob)

        def unavailable(failure: Failure) -> Any:
            failure.trap(StateUnavailable)
            self.log.warn("state store unavailable; blob {name} remembered in memory only",
                          name=blob.name)
            return self._remember(blob)

        return recorded.addCallbacks(stored, unavailable)

    def getBlob(self, name: str) -> Deferred[Optional[BlobRecord]]:
        """
        The blob record from memory, else from the database; C{None} when
        the database cannot say.
        """
        if name in self._blobs:
            self._blobs.move_to_end(name)
            return succeed(self._blobs[name])

        def unavailable(failure: Failure) -> None:
            failure.trap(StateUnavailable)
            return None

        return self._store.getBlob(name).addCallbacks(self._remember, unavailable)

    # -- devices -----------------------------------------------------------

    def recordDevice(self, device: Device) -> Deferred[Device]:
        """
        Record a device sighting; when the database is away, queue it and
        answer as if it was recorded, so that the device is not held up.
        """

        def unavailable(failure: Failure) -> Device:
            failure.trap(StateUnavailable)
            self._queue(device)
            return device

        return self._store.recordDevice(device).addErrback(unavailable)

    def _queue(self, device: Device) -> None:
        previous = self.queuedDevices.pop(device.identity, None)
        if previous is not None:
            device = Device(identity=device.identity, model=device.model or previous.model,
                            address=device.address or previous.address,
                            firstSeen=min(previous.firstSeen or device.firstSeen, device.firstSeen),
                            lastSeen=max(previous.lastSeen, device.lastSeen))
        self.queuedDevices[device.identity] = device
        while len(self.queuedDevices) > self._maxQueuedDevices:
            dropped, _ = self.queuedDevices.popitem(last=False)
            self.log.warn("device queue full; dropped the oldest sighting ({identity})",
                          identity=dropped)
        self._scheduleFlush()

    def recordSession(self, session: DeviceSession) -> Deferred[DeviceSession]:
        """
        Record a granted device session; when the database is away, queue
        it (the caller keeps it in memory meanwhile) so that no session
        learnt during an outage is lost.
        """

        def unavailable(failure: Failure) -> DeviceSession:
            failure.trap(StateUnavailable)
            self.queuedSessions.pop(session.digest, None)
            self.queuedSessions[session.digest] = session
            while len(self.queuedSessions) > self._maxQueuedDevices:
                dropped, _ = self.queuedSessions.popitem(last=False)
                self.log.warn("session queue full; dropped the oldest ({digest})",
                              digest=dropped[:12])
            self._scheduleFlush()
            return session

        return self._store.recordSession(session).addErrback(unavailable)

    def _scheduleFlush(self) -> None:
        if self._retry is None or not self._retry.active():
            self._retry = self._clock.callLater(RETRY_DELAY, self.flush)

    def flush(self) -> Deferred[int]:
        """
        Write the queued device sightings and sessions; those that still
        cannot be written stay queued and are tried again later.

        @return: a Deferred firing with the number written.
        """
        if self._flushing or not (self.queuedDevices or self.queuedSessions):
            return succeed(0)
        self._flushing = True
        written = [0]

        def writeNext(_: Any = None) -> Any:
            queue: Any
            if self.queuedDevices:
                queue, write = self.queuedDevices, self._store.recordDevice
            elif self.queuedSessions:
                queue, write = self.queuedSessions, self._store.recordSession
            else:
                return None
            key, record = next(iter(queue.items()))

            def done(_: Any) -> Any:
                if queue.get(key) is record:
                    del queue[key]
                written[0] += 1
                return writeNext()

            return write(record).addCallback(done)

        def finished(result: Any) -> int:
            self._flushing = False
            if isinstance(result, Failure):
                result.trap(StateUnavailable)
                self._scheduleFlush()
            elif written[0]:
                self.log.info("wrote {count} queued device sightings and sessions",
                              count=written[0])
            return written[0]

        return maybeDeferred(writeNext).addBoth(finished)

    def stop(self) -> None:
        """
        Cancel the pending retry (at shutdown).
        """
        if self._retry is not None and self._retry.active():
            self._retry.cancel()


#: The fields of a blob record but those the database fills in itself.
_COMPARED = tuple(field.name for field in attrs.fields(BlobRecord) if field.name != "seenAt")


def _comparable(blob: BlobRecord) -> tuple[Any, ...]:
    """
    C{blob} without the fields the database fills in itself: a tuple, not
    a copy of the record (two copies per blob of every refresh cost more
    than the rest of this check; issue 20).
    """
    return tuple([getattr(blob, name) for name in _COMPARED])
