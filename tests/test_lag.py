"""
Tests for L{snapstore.observe.lag}: the lag arithmetic on a fake clock,
and the watchdog's stack and the metrics in a real process.
"""

from __future__ import annotations

import threading

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from snapstore.observe.lag import SUMMARY_PREFIX, WARNING_PREFIX, ReactorLag
from snapstore.observe.metrics import Metrics


def captureLog(case: SynchronousTestCase) -> list[dict]:
    """
    The log events emitted until the end of C{case}.
    """
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def warnings(events: list[dict]) -> list[dict]:
    return [event for event in events if event.get("prefix") == WARNING_PREFIX]


class LagArithmeticTests(SynchronousTestCase):
    """
    L{ReactorLag} on a L{Clock}: how late each tick ran.
    """

    def setUp(self):
        self.clock = Clock()
        self.seen: list[float] = []
        self.events = captureLog(self)
        self.probe = ReactorLag(self.clock, interval=0.005, warnAfter=0.05, sink=self.seen.append,
                                window=10.0)
        self.probe.startService()
        self.addCleanup(lambda: self.probe.running and self.probe.stopService())
        self.clock.advance(0)  # the first tick is due 5 ms after this turn

    def test_startsAfterTheTurn(self):
        """
        Work done in the turn the probe was started in (the other
        services' start-up) is not measured as lag.
        """
        clock = Clock()
        seen: list[float] = []
        probe = ReactorLag(clock, interval=0.005, sink=seen.append)
        probe.startService()
        self.addCleanup(probe.stopService)
        clock.pump([0.5, 0.005])  # the turn took 0.5 s, then one tick
        self.assertEqual(seen, [0.0])

    def test_onTime(self):
        """
        Ticks that run when due have no lag; each schedules the next one
        C{interval} later.
        """
        for _ in range(3):
            self.clock.advance(0.005)
        self.assertEqual(self.seen, [0.0, 0.0, 0.0])
        self.assertEqual(self.probe.ticks, 3)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 0.02)

    def test_late(self):
        """
        A tick that runs late reports by how much; the next one is due
        C{interval} after it ran, so one stall is counted once.
        """
        self.clock.advance(0.03)
        self.clock.advance(0.005)
        self.assertEqual([round(lag, 6) for lag in self.seen], [0.025, 0.0])
        self.assertAlmostEqual(self.probe.longest, 0.025)
        self.assertEqual(self.probe.blocked, 0)
        self.assertEqual(warnings(self.events), [])

    def test_blockedWarns(self):
        """
        A tick later than C{warnAfter} is counted and logged as a warning
        with its lag; without the watchdog no stack was sampled.
        """
        self.clock.advance(0.125)
        self.assertEqual(self.probe.blocked, 1)
        [warning] = warnings(self.events)
        self.assertAlmostEqual(warning["lag_ms"], 120.0)
        self.assertEqual(warning["log_level"].name, "warn")
        self.assertIn("no stack sampled", warning["where"])

    def test_windowMax(self):
        """
        L{ReactorLag.recentMax} is the longest lag of the window in
        progress and the one before; older windows are forgotten.
        """
        self.clock.advance(0.035)  # lag 0.03
        self.assertAlmostEqual(self.probe.recentMax(), 0.03)
        for _ in range(2100):  # 10.5 s: a new window
            self.clock.advance(0.005)
        self.assertAlmostEqual(self.probe.previousMax, 0.03)
        self.assertAlmostEqual(self.probe.recentMax(), 0.03)
        for _ in range(2100):  # and another
            self.clock.advance(0.005)
        self.assertEqual(self.probe.recentMax(), 0.0)
        self.assertAlmostEqual(self.probe.longest, 0.03)

    def test_percentilesAndSummary(self):
        """
        The summary logged at stop gives the ticks, the longest lag, the
        percentiles (upper bounds of 0.5 ms steps) and the blocked count;
        stopping cancels the next tick.
        """
        for _ in range(998):
            self.clock.advance(0.005)
        self.clock.advance(0.0082)  # lag 3.2 ms
        self.clock.advance(0.065)  # lag 60 ms
        self.assertEqual(self.probe.percentile(0.99), 0.0005)
        self.assertAlmostEqual(self.probe.percentile(0.999), 0.0035)
        self.assertAlmostEqual(self.probe.percentile(1.0), 0.06)
        self.probe.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        [summary] = [e for e in self.events if SUMMARY_PREFIX in e.get("summary", "")]
        self.assertEqual(summary["summary"],
                         f"{SUMMARY_PREFIX} ticks=1000 max=60.0ms p99=0.5ms p999=3.5ms "
                         f"blocked=1 (over 50ms)")

    def test_metrics(self):
        """
        Through L{Metrics.watchReactorLag}, every lag lands in the
        histogram, ticks over the threshold in the blocked counter, and
        the gauge reads the recent maximum at each scrape.
        """
        metrics = Metrics()
        self.probe.sink = metrics.watchReactorLag(self.probe)
        self.clock.advance(0.005)
        self.clock.advance(0.085)
        found = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                 for family in text_string_to_metric_families(metrics.render()[0].decode())
                 for sample in family.samples}
        self.assertEqual(found[("snapstore_reactor_lag_seconds_count", ())], 2)
        self.assertEqual(found[("snapstore_reactor_lag_seconds_bucket", (("le", "0.001"),))], 1)
        self.assertEqual(found[("snapstore_reactor_lag_seconds_bucket", (("le", "0.1"),))], 2)
        self.assertEqual(found[("snapstore_reactor_blocked_total", ())], 1)
        self.assertAlmostEqual(found[("snapstore_reactor_lag_max_seconds", ())], 0.08)


class WatchdogTests(TestCase):
    """
    The watchdog thread, with the real reactor: a blocked reactor thread
    is caught in the act.
    """

    @inlineCallbacks
    def test_stackOfTheBlockingCall(self):
        """
        When a call holds the reactor thread past C{warnAfter}, the
        warning names the function that held it, sampled by the watchdog
        while it ran (no sleep measures anything here: the blocking call
        waits until the watchdog has sampled it).
        """
        from twisted.internet import reactor

        events = captureLog(self)
        probe = ReactorLag(reactor, interval=0.005, warnAfter=0.02, watchdog=True)
        sampled = threading.Event()

        class Noting(list):
            def append(self, stack):
                super().append(stack)
                sampled.set()

        probe._samples = Noting()
        probe.startService()
        self.addCleanup(lambda: probe.running and probe.stopService())

        def holdTheReactorThread():
            # Until the watchdog saw this frame (bounded, so a broken
            # watchdog fails the test instead of hanging it).
            sampled.wait(30)

        done: Deferred = Deferred()
        reactor.callLater(0, holdTheReactorThread)
        reactor.callLater(0.05, done.callback, None)
        yield done
        probe.stopService()
        self.assertTrue(sampled.is_set())
        found = warnings(events)
        self.assertTrue(found)
        self.assertIn("holdTheReactorThread", found[0]["where"])
        self.assertIn("sampled 1:", found[0]["where"])


class OptionTests(SynchronousTestCase):
    """
    C{--reactor-lag-warning} (milliseconds) wires the probe into
    C{twistd snapstore}'s service tree, or leaves it out at 0.
    """

    def probes(self, *extra: str) -> list[ReactorLag]:
        from snapstore.tap import Options, makeService

        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--store-endpoint", "tcp:0",
                              "--proxy-endpoint", "none", "--admin-endpoint", "none",
                              "--config", "/dev/null", *extra])
        return [service for service in makeService(options) if isinstance(service, ReactorLag)]

    def test_default(self):
        """
        By default the probe runs with its watchdog and warns after 50 ms.
        """
        [probe] = self.probes()
        self.assertEqual(probe.warnAfter, 0.05)
        self.assertTrue(probe.watchdog)
        self.assertIsNotNone(probe.sink)

    def test_given(self):
        """
        The threshold is given in milliseconds.
        """
        [probe] = self.probes("--reactor-lag-warning", "12.5")
        self.assertEqual(probe.warnAfter, 0.0125)

    def test_off(self):
        """
        0 turns the probe off.
        """
        self.assertEqual(self.probes("--reactor-lag-warning", "0"), [])
