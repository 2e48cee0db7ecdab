# -*- test-case-name: tests.test_fleet -*-
"""
The delivery record: one hash-chained row per download response (200 or
206) the proxy sent a device, saying which bytes it got.

Rows are queued in memory and appended in batches (one transaction per
batch, at most every L{DeliveryLog.interval} seconds or every
L{DeliveryLog.batchSize} rows), so that serving a cache hit never waits on
the database and a burst of downloads costs a few transactions, not one
each.  Rows queued while the database is away are kept (up to
L{DeliveryLog.maxQueued}, then the oldest are dropped and counted in the
log) and written when it is back; the service writes what is queued when
it stops.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from snapstore.state.fleet import Delivery

_CONTENT_RANGE = re.compile(rb"^bytes (\d+)-(\d+)/(\d+)$")


def _header(request: Any, name: bytes) -> bytes:
    values = request.responseHeaders.getRawHeaders(name) or [b""]
    return values[0]


def describeDelivery(request: Any, blob: Any, device: str, now: float) -> Optional[Delivery]:
    """
    The delivery row for a finished download response, or C{None} when it
    delivered nothing (not 200/206, or C{HEAD}).

    The blob counts as complete when every byte promised was sent and the
    response reached the blob's last byte (a resumed download, C{Range:
    bytes=N-}, completes the blob too).
    """
    if request.method != b"GET" or request.code not in (200, 206):
        return None
    sent = int(getattr(request, "sentLength", 0) or 0)
    length = _header(request, b"content-length")
    promised = int(length) if length.isdigit() else None
    reachesEnd = True
    if request.code == 206:
        match = _CONTENT_RANGE.match(_header(request, b"content-range"))
        reachesEnd = match is not None and int(match.group(2)) + 1 == int(match.group(3))
    complete = promised is not None and sent >= promised and reachesEnd \
        and bool(getattr(request, "finished", False))
    cache = _header(request, b"x-cache").decode("latin-1").upper() or "-"
    return Delivery(
        id=0, time=now, device=device, snapName=getattr(blob, "snapName", "") or "",
        snapId=getattr(blob, "snapId", "") or "", revision=int(getattr(blob, "revision", 0) or 0),
        sha3_384=getattr(blob, "sha3_384", "") or "", bytes=sent, complete=complete, cache=cache)


class DeliveryLog:
    """
    Queues delivery rows and appends them in batches.

    @ivar state: provides C{appendDeliveries} (L{snapstore.interfaces.IFleetState}).
    @ivar written: rows appended since start (for tests and metrics).
    """

    log = Logger()
    batchSize = 64
    interval = 1.0
    maxQueued = 100_000

    def __init__(self, state: Any, clock: Any) -> None:
        self.state = state
        self.clock = clock
        self.queue: list[Delivery] = []
        self.written = 0
        self.dropped = 0
        self._timer: Any = None
        self._writing: Optional[Deferred[Any]] = None

    def watch(self, request: Any, blob: Any) -> None:
        """
        Record C{request}'s response when it ends (finished or cut off).
        The device is the one the rules identified (the access-log notes,
        L{snapstore.admin.access}), else the client's address.
        """
        def ended(_: Any) -> None:
            notes = getattr(request, "snapstoreAccess", None) or {}
            device = notes.get("device")
            if not device:
                host = getattr(request.getClientAddress(), "host", "unknown")
                device = f"address:{host}"
            row = describeDelivery(request, blob, device, self.clock.seconds())
            if row is not None:
                self.add(row)

        request.notifyFinish().addBoth(ended)

    def add(self, row: Delivery) -> None:
        """
        Queue C{row}; write soon.
        """
        self.queue.append(row)
        if len(self.queue) > self.maxQueued:
            del self.queue[0]
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                self.log.error("Delivery log queue full: {count} rows dropped unwritten",
                               count=self.dropped)
        if len(self.queue) >= self.batchSize and self._writing is None:
            self.flush()
        elif self._timer is None:
            self._timer = self.clock.callLater(self.interval, self._due)

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> Deferred[Any]:
        """
        Write the queued rows (in batches of L{batchSize}).

        @return: a Deferred firing when what was queued is written or has
            failed (the rows then stay queued for the next try).
        """
        if self._writing is not None:
            return self._writing.addBoth(lambda _: self.flush())
        if not self.queue:
            return succeed(None)
        batch = self.queue[:self.batchSize]
        self._writing = self.state.appendDeliveries(batch)

        def written(rows: Any) -> Any:
            del self.queue[:len(batch)]
            self.written += len(batch)
            self._writing = None
            if self.queue:
                return self.flush()
            return None

        def failed(failure: Any) -> None:
            self._writing = None
            self.log.warn("Cannot write {count} delivery rows yet: {why}",
                          count=len(self.queue), why=failure.getErrorMessage())
            if self._timer is None:
                self._timer = self.clock.callLater(max(self.interval, 5.0), self._due)

        return self._writing.addCallbacks(written, failed)

    def stop(self) -> Deferred[Any]:
        """
        Cancel the timer and write what is queued.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return self.flush()


class DeliveryService(Service):
    """
    Writes what the L{DeliveryLog} still holds when the service stops.
    """

    def __init__(self, deliveries: DeliveryLog) -> None:
        self.deliveries = deliveries

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self.deliveries.stop().addErrback(lambda _: None)
