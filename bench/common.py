"""
What every benchmark script needs: free loopback ports, waiting for a child
to listen, stopping it, percentiles.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from tests.ports import freePort

#: How a benchmark starts twistd: with its own interpreter, so that the test
#: environment's snapstore runs whether or not that environment is on PATH.
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def requireTools(script: str, *tools: str) -> None:
    """
    Stop with one line when the interpreter lacks snapstore's dependencies
    (run with the test venv's) or a reference server the script compares
    against is not installed, instead of a traceback halfway through.

    @param tools: program names, looked up on C{PATH} and in C{/usr/sbin}.
    """
    if importlib.util.find_spec("twisted.internet") is None:  # (the checkout has twisted/plugins)
        raise SystemExit(f"{script}: this Python ({sys.executable}) has no Twisted: run it with "
                         f"the test environment's, .venv-test/bin/python {script} "
                         f"(./run-tests or scripts/setup-test-env makes it)")
    missing = [tool for tool in tools
               if shutil.which(tool) is None and not os.path.exists(os.path.join("/usr/sbin", tool))]
    if missing:
        raise SystemExit(f"{script}: needs {', '.join(missing)}, not installed here "
                         f"(apt-get install {' '.join(missing)})")


__all__ = ["freePort", "waitForPort", "stop"]


def waitForPort(port: int, process: subprocess.Popen, what: str = "", timeout: float = 60) -> None:
    """
    Wait until something accepts on C{port}; exit the script if C{process}
    ended first or nothing listens within C{timeout} seconds.
    """
    what = what or " ".join(map(str, process.args[:3]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout}s")


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """
    SIGTERM, then SIGKILL after C{timeout} seconds.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def percentile(values: list[float], fraction: float) -> float:
    """
    The C{fraction} percentile (nearest rank), NaN for no values.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
