# -*- test-case-name: tests.test_dashboard -*-
"""
Sampling the metrics' byte counters into the state store's traffic
history, so that the dashboard can chart the last 24 hours from
snapstore's own records, across restarts and nodes, with no external
time-series system.

Every C{interval} seconds the sampler adds the bytes served from the cache
and fetched from upstream since its last sample to the bucket of the
current time (C{BUCKET} seconds long); what a failed write (the database
away) did not store is added to the next sample, never lost or counted
twice.  Buckets older than C{keep} are pruned once an hour.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from snapstore.interfaces import ITrafficHistory

#: Seconds per bucket of the history.
BUCKET = 300.0

#: Seconds between samples.
SAMPLE_INTERVAL = 60.0

#: Seconds of history kept (the chart shows 24 hours; a day more lets a
#: chart of "yesterday" be drawn later without a migration).
KEEP = 48 * 3600.0

#: Seconds between prunes.
PRUNE_INTERVAL = 3600.0


def bucketStart(when: float, length: float = BUCKET) -> float:
    """
    The start of the bucket C{when} falls in.
    """
    return when - when % length


class TrafficSampler(Service):
    """
    Feeds an L{ITrafficHistory} from a
    L{snapstore.observe.metrics.Metrics}' L{byteTotals}.

    @ivar recorded: the totals already added to the history.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, metrics: Any, history: ITrafficHistory,
                 interval: float = SAMPLE_INTERVAL, keep: float = KEEP) -> None:
        self.clock = clock
        self.metrics = metrics
        self.history = history
        self.interval = interval
        self.keep = keep
        self.recorded = (0, 0)
        self._lastPrune: Optional[float] = None
        self._running: Optional[Deferred[None]] = None
        self._loop: Optional[LoopingCall] = None

    def startService(self) -> None:
        super().startService()
        self.recorded = self.metrics.byteTotals()
        loop = self._loop = LoopingCall(self.sample)
        loop.clock = self.clock
        loop.start(self.interval, now=False).addErrback(
            lambda failure: self.log.failure("traffic sampling stopped", failure))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        # What was served since the last sample is kept.
        return self.sample()

    def sample(self) -> Deferred[None]:
        """
        Add what was served since the last sample to the history (the
        dashboard calls it too, so its chart reaches the present).

        @return: a Deferred firing when written; it never fails (a failed
            write is logged and its bytes are added by the next sample).
        """
        if self._running is not None:
            # One write at a time: a second caller waits for it, then
            # samples what came since.
            waiting: Deferred[None] = Deferred()
            self._running.addBoth(lambda _: self.sample().chainDeferred(waiting))
            return waiting
        running = Deferred.fromCoroutine(self._sample())
        if not running.called:
            self._running = running

            def done(_: Any) -> None:
                self._running = None

            running.addBoth(done)
        return running

    async def _sample(self) -> None:
        now = float(self.clock.seconds())
        totals = self.metrics.byteTotals()
        fromCache = totals[0] - self.recorded[0]
        fromUpstream = totals[1] - self.recorded[1]
        try:
            if fromCache or fromUpstream:
                await self.history.addTraffic(bucketStart(now), fromCache, fromUpstream)
            self.recorded = totals
            if self._lastPrune is None or now - self._lastPrune >= PRUNE_INTERVAL:
                await self.history.pruneTraffic(bucketStart(now - self.keep))
                self._lastPrune = now
        except Exception as error:
            # The database away (or closing at shutdown) is an event the
            # state store reports itself: a line, not a traceback.
            self.log.warn("cannot record the traffic history ({error}); the bytes are "
                          "added at the next sample", error=str(error) or type(error).__name__)
