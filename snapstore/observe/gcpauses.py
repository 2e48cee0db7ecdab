# -*- test-case-name: tests.test_gcpauses -*-
"""
The garbage collector's share of the tail: freeze what start-up built, and
measure how long each collection holds the one reactor thread.

Everything built before the reactor runs (the service tree, the rules,
Twisted's and the standard library's modules) lives as long as the process.
Left in the collector's generations, it is walked again by every full
collection, a pause of tens of milliseconds that lands on whichever
requests are waiting (issue 20: added p99 of 25-35 ms in some runs).
C{gc.freeze()} moves it to a permanent generation that collections skip.

L{CollectorPauses} times each collection through C{gc.callbacks} and logs
a summary when the service stops, so that C{bench/relay.py} can print the
pauses a load produced from the log of the process under load (a figure
for a table, never an assertion on time).
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.logger import Logger

#: How the summary line starts, for readers of the log (bench/relay.py).
SUMMARY_PREFIX = "gc pauses:"
#: The youngest generation's threshold once started.  Python's default
#: (700 allocations) runs a collection every few requests under load, and
#: each promotes the requests then in flight, which the middle generation
#: then walks again: under C{wrk -c100} the collector took about 8% of the
#: process's time (issue 20).  A larger first generation lets most of a
#: request's objects die before any collection sees them; a collection of
#: this size takes well under a millisecond.
YOUNG_THRESHOLD = 20_000


class CollectorPauses(Service):
    """
    Freezes the start-up heap when started, and times collections until
    stopped.

    @ivar pauses: C{(generation, seconds)} of each collection seen, newest
        last.
    @ivar frozen: how many objects C{gc.freeze()} moved out of the
        collector's reach at start.
    """

    log = Logger()

    def __init__(self, timer: Callable[[], float] = time.perf_counter,
                 freeze: bool = True, youngThreshold: Optional[int] = YOUNG_THRESHOLD) -> None:
        """
        @param timer: a monotonic clock with sub-millisecond resolution
            (the reactor's clock is too coarse and is what is paused).
        @param freeze: whether to C{gc.freeze()} the heap on start.
        @param youngThreshold: the first generation's threshold while
            running (restored on stop), or C{None} to leave it.
        """
        self.timer = timer
        self.freeze = freeze
        self.youngThreshold = youngThreshold
        self._thresholds: Optional[tuple[int, int, int]] = None
        self.pauses: list[tuple[int, float]] = []
        self.frozen = 0
        self._began: Optional[float] = None

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = self.timer()
        elif self._began is not None:
            self.pauses.append((int(info.get("generation", -1)), self.timer() - self._began))
            self._began = None

    def startService(self) -> None:
        """
        Collect once, freeze what survives (the start-up heap), then start
        timing collections.
        """
        super().startService()
        if self.freeze:
            gc.collect()
            gc.freeze()
            self.frozen = gc.get_freeze_count()
        if self.youngThreshold is not None:
            self._thresholds = gc.get_threshold()
            gc.set_threshold(self.youngThreshold, *self._thresholds[1:])
        gc.callbacks.append(self._callback)

    def stopService(self) -> Any:
        """
        Stop timing and log the summary.
        """
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self.freeze:
            # A stopped service tree is garbage again (tests start and
            # stop many in one process).
            gc.unfreeze()
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        self.log.info("{summary}", summary=self.summary())
        return super().stopService()

    def summary(self) -> str:
        """
        One line: the objects frozen, then per generation the number of
        collections, their total and their longest pause in milliseconds.
        """
        parts = [f"{SUMMARY_PREFIX} frozen={self.frozen}"]
        for generation in (0, 1, 2):
            times = [seconds for gen, seconds in self.pauses if gen == generation]
            parts.append(f"gen{generation}: n={len(times)} total={1000 * sum(times):.2f}ms"
                         f" max={1000 * max(times, default=0.0):.2f}ms")
        return " ".join(parts)
