# -*- test-case-name: tests.test_install -*-
"""
What C{pip install} makes of a copy of the checkout, as a new user runs
it: C{twistd snapstore} is found after an editable install too, and a
plain install carries the shipped rules, which apply by default.

Each test makes a virtual environment that sees the test environment's
dependencies (a C{.pth} line), installs the copy with C{--no-deps} (the
build back-end comes from the configured package index, as for any
install), and runs the installed code from an empty directory with no
C{PYTHONPATH}.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.processes import CHECKOUT

_IGNORED = shutil.ignore_patterns(".git", ".venv*", "_trial_temp*", "build", "*.egg-info",
                                  "__pycache__", "dropin.cache", "snapstore-data", "_work")


class InstallTests(SynchronousTestCase):
    timeout = 300

    def setUp(self):
        base = os.path.abspath(self.mktemp())
        self.source = os.path.join(base, "snapstore")
        shutil.copytree(CHECKOUT, self.source, ignore=_IGNORED)
        self.venv = os.path.join(base, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", self.venv], check=True)
        self.python = os.path.join(self.venv, "bin", "python")
        purelib = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True).stdout.strip()
        # The new environment sees the test environment's packages
        # (Twisted and the rest), not the checkout.
        with open(os.path.join(purelib, "test-dependencies.pth"), "w") as pth:
            pth.write("\n".join(site.getsitepackages() + [sysconfig.get_paths()["purelib"]]) + "\n")
        self.empty = os.path.join(base, "elsewhere")
        os.mkdir(self.empty)

    def pipInstall(self, *arguments):
        environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--python", self.python, "install", "--quiet",
             "--no-deps", *arguments], capture_output=True, text=True, env=environment,
            cwd=self.empty, timeout=240)
        if result.returncode != 0:
            raise SkipTest(f"pip could not build the package here: {result.stderr[-800:]}")

    def twistd(self, *arguments, systemRules=None):
        """
        Run the installed C{twistd} from the empty directory.

        @param systemRules: the directory the installed code takes for the
            system's rules (C{/etc/snapstore/rules.d}), so that what this
            machine has there (an installed package's) does not decide the
            outcome; C{None} leaves it as installed.
        """
        environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        prelude = "" if systemRules is None else (
            "import snapstore.rules.shipped as shipped; "
            f"shipped.SYSTEM_RULES = {systemRules!r}; ")
        return subprocess.run(
            [self.python, "-c", prelude + "from twisted.scripts.twistd import run; run()",
             *arguments],
            capture_output=True, text=True, env=environment, cwd=self.empty, timeout=120)

    def test_editableInstallFindsPlugin(self):
        """
        After C{pip install -e}, C{twistd snapstore} is a known command:
        the checkout, with its C{twisted/plugins}, is on C{sys.path}.
        """
        self.pipInstall("-e", self.source)
        result = self.twistd("snapstore", "--help")
        self.assertEqual(result.returncode, 0, result.stdout[-400:] + result.stderr[-400:])
        self.assertIn("--store-endpoint", result.stdout)

    def test_installShipsRules(self):
        """
        A plain install puts the shipped rules under
        C{<prefix>/share/snapstore/rules.d}, and they are the rules used
        when no rules directory exists (the system's included: it is
        pointed at an absent directory, whatever this machine has in
        C{/etc/snapstore/rules.d}); it carries the dashboard's static
        files (package data).
        """
        self.pipInstall(self.source)
        shipped = os.path.join(self.venv, "share", "snapstore", "rules.d")
        self.assertEqual(sorted(name for name in os.listdir(shipped) if name.endswith(".py")),
                         sorted(name for name in os.listdir(os.path.join(CHECKOUT, "rules.d"))
                                if name.endswith(".py")))
        absent = os.path.abspath(self.mktemp())
        result = self.twistd("snapstore", "--config", os.devnull, "--check-rules",
                             systemRules=absent)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertTrue(result.stdout.startswith(f"{shipped}: OK, "), result.stdout)
        # A system directory, where there is one, comes first (and so the
        # run above did not depend on this machine's /etc).
        system = os.path.abspath(self.mktemp())
        shutil.copytree(shipped, system)
        result = self.twistd("snapstore", "--config", os.devnull, "--check-rules",
                             systemRules=system)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertTrue(result.stdout.startswith(f"{system}: OK, "), result.stdout)
        environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        static = subprocess.run(
            [self.python, "-c", "import snapstore.admin.dashboard.site as s;"
             " print(s.__file__); print(sorted(s.staticFiles()))"],
            capture_output=True, text=True, env=environment, cwd=self.empty, timeout=120)
        self.assertEqual(static.returncode, 0, static.stderr)
        where, names = static.stdout.splitlines()
        self.assertTrue(where.startswith(self.venv), where)
        self.assertEqual(names, "['dashboard.css', 'icon.svg']")
