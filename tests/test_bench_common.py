# -*- test-case-name: tests.test_bench_common -*-
"""
Tests for C{bench/common.py}'s start-up check: a benchmark that lacks a
reference server says so in one line instead of failing halfway through.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from bench.common import requireTools
from tests.processes import CHECKOUT


class RequireToolsTests(SynchronousTestCase):
    def test_missingTool(self):
        """
        A program found neither on C{PATH} nor in C{/usr/sbin} stops the
        script with one line naming it and the package to install.
        """
        error = self.assertRaises(SystemExit, requireTools, "bench/x.py",
                                  "no-such-server-here", sys.executable)
        self.assertEqual(str(error), "bench/x.py: needs no-such-server-here, not installed here "
                                     "(apt-get install no-such-server-here)")

    def test_presentTools(self):
        """
        Nothing happens when everything is there.
        """
        requireTools("bench/x.py", sys.executable)

    def test_interpreterWithoutTwisted(self):
        """
        Run by an interpreter without Twisted (C{python3 bench/...} outside
        the venv), a script says which interpreter to use, in one line.
        """
        result = subprocess.run(
            [sys.executable, "-I", "-S", "-c",
             "import sys; sys.path.insert(0, sys.argv[1]); from bench.common import requireTools; "
             "requireTools('bench/soak.py')", CHECKOUT],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn(".venv-test/bin/python bench/soak.py", result.stderr)
