"""
Tests for L{snapstore.observe.gcpauses}.
"""

from __future__ import annotations

import gc

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from snapstore.observe.gcpauses import SUMMARY_PREFIX, CollectorPauses


class CollectorPausesTests(SynchronousTestCase):
    """
    L{CollectorPauses} freezes the start-up heap and times collections.
    """

    def setUp(self):
        self.addCleanup(gc.unfreeze)

    def test_freezesOnStartAndUnfreezesOnStop(self):
        """
        Starting moves the surviving heap to the permanent generation;
        stopping gives it back to the collector.
        """
        gc.unfreeze()
        service = CollectorPauses()
        service.startService()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertEqual(service.frozen, gc.get_freeze_count())
        service.stopService()
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_youngThresholdWhileRunning(self):
        """
        While running, the first generation collects after
        C{youngThreshold} allocations; stopping restores the thresholds
        found at start.
        """
        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        service = CollectorPauses(freeze=False, youngThreshold=before[0] * 3 + 1)
        service.startService()
        self.assertEqual(gc.get_threshold(), (before[0] * 3 + 1,) + before[1:])
        service.stopService()
        self.assertEqual(gc.get_threshold(), before)

    def test_timesEachCollection(self):
        """
        Each collection while running is recorded with its generation and
        the time the injected timer says it took; none after stopping.
        """
        ticks = iter(range(0, 1000, 1))
        service = CollectorPauses(timer=lambda: next(ticks) / 1000.0, freeze=False)
        service.startService()
        gc.collect(1)
        gc.collect(2)
        service.stopService()
        self.assertEqual([gen for gen, _ in service.pauses], [1, 2])
        self.assertEqual([round(seconds, 6) for _, seconds in service.pauses], [0.001, 0.001])
        gc.collect()
        self.assertEqual(len(service.pauses), 2)
        self.assertNotIn(service._callback, gc.callbacks)

    def test_summaryLoggedOnStop(self):
        """
        Stopping logs one line giving, per generation, the count, total and
        longest pause.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = CollectorPauses(freeze=False)
        service.pauses = [(0, 0.001), (0, 0.003), (2, 0.020)]
        service.startService()
        service.stopService()
        lines = [e["summary"] for e in events if str(e.get("summary", "")).startswith(SUMMARY_PREFIX)]
        self.assertEqual(len(lines), 1)
        self.assertIn("gen0: n=2 total=4.00ms max=3.00ms", lines[0])
        self.assertIn("gen1: n=0 total=0.00ms max=0.00ms", lines[0])
        self.assertIn("gen2: n=1 total=20.00ms max=20.00ms", lines[0])

    def test_inServiceTree(self):
        """
        C{twistd snapstore}'s service tree ends with a L{CollectorPauses},
        so that the freeze happens after every other part started.
        """
        from snapstore.tap import Options, makeService

        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--store-endpoint", "tcp:0",
                              "--proxy-endpoint", "none", "--admin-endpoint", "none",
                              "--config", "/dev/null"])
        top = makeService(options)
        self.assertIsInstance(list(top)[-1], CollectorPauses)
