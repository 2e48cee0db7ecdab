# -*- test-case-name: tests.test_lag -*-
"""
How late the reactor runs what it was asked to run: the one reactor thread
blocked (a long callback, a collection, a lock) or the process not given a
CPU shows here as lag, and in nothing else (issue 20: the added p99 came
in bursts that neither the collector nor the access log explained).

L{ReactorLag} asks the reactor to call it again every C{interval} (one
C{callLater} per tick, a few microseconds) and measures how much later
than asked the call came.  It keeps the longest lag of the current and of
the previous window of C{window} seconds, counts ticks later than
C{warnAfter}, reports every lag to a sink (the C{/metrics} histogram), and
logs a warning for each tick later than C{warnAfter}.

A tick that is late says that something held the thread, not what.  For
that, a watchdog thread (optional) wakes every C{warnAfter / 2} and, when
a tick is overdue by more than C{warnAfter}, takes the reactor thread's
stack (C{sys._current_frames()}); the warning then names where the
thread was during the stall.  A stack that ends in the reactor's poll
(C{epoll.poll}) means the thread was idle, waiting for the kernel: the
process was not scheduled, or the GIL was held by another thread.  The
watchdog runs only when something is overdue past its period, so it costs
one wake-up and one clock read every C{warnAfter / 2}.
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

#: How the summary line logged at stop starts (bench/relay.py reads it).
SUMMARY_PREFIX = "reactor lag:"
#: How each warning starts (bench/relay.py counts them).
WARNING_PREFIX = "reactor blocked"
#: Frames of the reactor thread's stack kept per sample (innermost last).
STACK_DEPTH = 12
#: Distinct stacks kept per stall.
MAX_SAMPLES = 4


class ReactorLag(Service):
    """
    A repeating call that measures its own lateness.

    @ivar ticks: how many ticks ran.
    @ivar longest: the longest lag seen since start, in seconds.
    @ivar blocked: ticks later than C{warnAfter}.
    @ivar windowMax: the longest lag of the window in progress.
    @ivar previousMax: the longest lag of the last complete window.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, interval: float = 0.005, warnAfter: float = 0.05,
                 sink: Optional[Callable[[float], None]] = None, window: float = 10.0,
                 watchdog: bool = False, timer: Optional[Callable[[], float]] = None) -> None:
        """
        @param clock: the reactor whose lag is measured (it schedules the
            ticks and tells the time).
        @param interval: seconds between ticks.
        @param warnAfter: a tick later than this many seconds is counted
            and logged.
        @param sink: called with every tick's lag (seconds), or C{None}.
        @param window: seconds per window of L{windowMax}.
        @param watchdog: whether to run the thread that samples the
            reactor thread's stack during a stall.
        @param timer: the watchdog's clock, read from its own thread; it
            must agree with C{clock.seconds} (default: C{clock.seconds}).
        """
        self.clock = clock
        self.interval = interval
        self.warnAfter = warnAfter
        self.sink = sink
        self.window = window
        self.watchdog = watchdog
        self.timer = timer if timer is not None else clock.seconds
        self.ticks = 0
        self.longest = 0.0
        self.blocked = 0
        self.windowMax = 0.0
        self.previousMax = 0.0
        self._lags: list[int] = [0] * len(_PERCENTILE_STEPS)
        self._windowEnds = 0.0
        self._due = 0.0
        self._call: Optional[IDelayedCall] = None
        self._samples: list[str] = []
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._reactorThread: Optional[int] = None

    # -- the ticks (reactor thread) -----------------------------------------

    def startService(self) -> None:
        """
        Begin ticking once the current turn of the reactor is over: the
        services started after this one in the same turn (the collector's
        freeze, at start-up) are not a stall anybody waits for.
        """
        super().startService()
        self._call = self.clock.callLater(0, self._begin)

    def _begin(self) -> None:
        now = self.clock.seconds()
        self._windowEnds = now + self.window
        self._schedule(now)
        if self.watchdog:
            self._reactorThread = threading.get_ident()
            self._stopping.clear()
            self._thread = threading.Thread(target=self._watch, name="reactor-lag-watchdog",
                                            daemon=True)
            self._thread.start()

    def stopService(self) -> Any:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None
        self.log.info("{summary}", summary=self.summary())
        return super().stopService()

    def _schedule(self, now: float) -> None:
        self._due = now + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        now = self.clock.seconds()
        lag = max(now - self._due, 0.0)
        self.ticks += 1
        self._lags[_step(lag)] += 1
        if lag > self.longest:
            self.longest = lag
        if now >= self._windowEnds:
            self.previousMax, self.windowMax = self.windowMax, 0.0
            self._windowEnds = now + self.window
        if lag > self.windowMax:
            self.windowMax = lag
        if self.sink is not None:
            self.sink(lag)
        samples: list[str] = []
        if self._samples:
            samples, self._samples = self._samples, []
        if lag > self.warnAfter:
            self.blocked += 1
            where = "".join(f"\n  sampled {n + 1}:\n{stack}" for n, stack in enumerate(samples))
            self.log.warn("{prefix} {lag_ms:.1f} ms (a tick due every {interval_ms:g} ms)"
                          "{where}", prefix=WARNING_PREFIX, lag_ms=1000 * lag,
                          interval_ms=1000 * self.interval,
                          where=where or " (no stack sampled)")
        self._schedule(now)

    # -- reading -------------------------------------------------------------

    def recentMax(self) -> float:
        """
        The longest lag of the window in progress and the one before it,
        in seconds (the C{/metrics} gauge).
        """
        return max(self.windowMax, self.previousMax)

    def percentile(self, fraction: float) -> float:
        """
        An upper bound of the lag below which C{fraction} of the ticks
        ran, from a histogram of 0.5 ms steps up to 100 ms (longer lags
        count as L{longest}).
        """
        wanted = fraction * self.ticks
        seen = 0
        for index, count in enumerate(self._lags):
            seen += count
            if count and seen >= wanted:
                return min(_PERCENTILE_STEPS[index], self.longest)
        return self.longest

    def summary(self) -> str:
        """
        One line: ticks, the longest lag, p99 and p99.9, and how many
        ticks were later than C{warnAfter}.
        """
        return (f"{SUMMARY_PREFIX} ticks={self.ticks} max={1000 * self.longest:.1f}ms "
                f"p99={1000 * self.percentile(0.99):.1f}ms "
                f"p999={1000 * self.percentile(0.999):.1f}ms "
                f"blocked={self.blocked} (over {1000 * self.warnAfter:g}ms)")

    # -- the watchdog (its own thread) ---------------------------------------

    def _watch(self) -> None:
        period = max(self.warnAfter / 2, 0.001)
        while not self._stopping.wait(period):
            due = self._due
            if self.timer() - due <= self.warnAfter:
                continue
            frame = sys._current_frames().get(self._reactorThread or 0)
            if frame is None:
                continue
            stack = "".join(traceback.format_stack(frame, limit=STACK_DEPTH))
            del frame
            # The reactor thread swaps the list out at its next tick.
            if stack not in self._samples and len(self._samples) < MAX_SAMPLES:
                self._samples.append(stack)


#: Upper bounds of the percentile histogram's steps, in seconds: 0.5 ms
#: steps to 100 ms, then one step for everything longer.
_PERCENTILE_STEPS = [0.0005 * (n + 1) for n in range(200)] + [float("inf")]


def _step(lag: float) -> int:
    return min(int(lag / 0.0005), len(_PERCENTILE_STEPS) - 1)
