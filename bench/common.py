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


class ClientLag:
    """
    The benchmark process's own stalls, so that a slow request can be told
    apart from a client that was late to send it or to read its answer (a
    Python client has a collector and an event loop of its own).

    Inside C{async with ClientLag() as lag:} an asyncio task wakes every
    C{interval} seconds and records how late it woke (L{longest}, and
    C{(wall time, seconds)} of each wake later than C{warnAfter} in
    L{stalls}), and C{gc.callbacks} times this process's collections
    (L{collections}, L{collectorSeconds}, L{longestCollection}).
    """

    def __init__(self, interval: float = 0.005, warnAfter: float = 0.01) -> None:
        self.interval = interval
        self.warnAfter = warnAfter
        self.longest = 0.0
        self.stalls: list[tuple[float, float]] = []
        self.collections = 0
        self.collectorSeconds = 0.0
        self.longestCollection = 0.0
        self._began = 0.0
        self._task = None

    def _collected(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        self.collections += 1
        self.collectorSeconds += took
        self.longestCollection = max(self.longestCollection, took)

    async def _watch(self) -> None:
        import asyncio

        while True:
            due = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            lag = time.monotonic() - due
            self.longest = max(self.longest, lag)
            if lag > self.warnAfter:
                self.stalls.append((time.time(), lag))

    async def __aenter__(self) -> "ClientLag":
        import asyncio
        import gc

        gc.callbacks.append(self._collected)
        self._task = asyncio.ensure_future(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        import gc

        gc.callbacks.remove(self._collected)
        self._task.cancel()

    def describe(self) -> str:
        """
        One phrase for a results line.
        """
        return (f"client lag max {1000 * self.longest:.1f} ms ({len(self.stalls)} over "
                f"{1000 * self.warnAfter:g} ms), client gc {self.collections} "
                f"({1000 * self.collectorSeconds:.1f} ms, max {1000 * self.longestCollection:.1f})")


def cpuSteal() -> tuple[float, float]:
    """
    Jiffies the machine's CPUs spent, in all and stolen (by the
    hypervisor: a virtual CPU that was runnable but not running), from
    C{/proc/stat}; (0, 0) where there is none.  The difference of two
    readings says how much of a run the machine itself lost.
    """
    try:
        with open("/proc/stat") as stat:
            fields = [float(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    return sum(fields[:8]), (fields[7] if len(fields) > 7 else 0.0)


def involuntarySwitches(pid: int) -> int:
    """
    How often process C{pid} (all its threads: the main one) was taken off
    a CPU while it still wanted to run, from C{/proc}; -1 when unknown.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1
