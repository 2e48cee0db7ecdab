"""
Running real processes in tests: C{twistd snapstore} and the standalone
fake store, each on free loopback ports, stopped when the test ends.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, ProcessProtocol
from twisted.internet.task import deferLater

from tests.ports import freePort

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Collector(ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[Any] = Deferred()
        self.waiters: list[tuple[bytes, int, Deferred[None]]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for waiter in list(self.waiters):
            text, start, waiting = waiter
            if self.output.find(text, start) != -1:
                self.waiters.remove(waiter)
                waiting.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        waiters, self.waiters = self.waiters, []
        for text, _, waiting in waiters:
            waiting.errback(AssertionError(
                f"process ended before printing {text!r}:\n"
                f"{self.output.decode('utf-8', 'replace')}"))
        self.ended.callback(reason.value)


class RunningProcess:
    """
    A child process; C{output} is what it printed so far.
    """

    def __init__(self, transport: Any, collector: _Collector) -> None:
        self.transport = transport
        self.collector = collector

    @property
    def output(self) -> str:
        return self.collector.output.decode("utf-8", "replace")

    @property
    def pid(self) -> int:
        return self.transport.pid

    def printed(self, text: str, since: int = 0) -> Deferred[None]:
        """
        Fire once the process has printed C{text} at or after offset
        C{since} of its output (C{len(process.output)} before an action
        waits for what the action makes it print).
        """
        waiting: Deferred[None] = Deferred()
        self.collector.waiters.append((text.encode("utf-8"), since, waiting))
        self.collector.outReceived(b"")
        return waiting

    def kill(self, signum: int = signal.SIGTERM) -> Deferred[Any]:
        if self.transport.pid is not None:
            self.transport.signalProcess(signum)
        return self.collector.ended


def processEnvironment(**extra: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [CHECKOUT] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    environment.update(extra)
    return environment


def spawn(testCase: Any, argv: list[str], **extraEnvironment: str) -> RunningProcess:
    """
    Start C{argv} with the checkout on C{PYTHONPATH}, in the test's working
    directory; it is killed when the test ends.
    """
    collector = _Collector()
    # The test's own directory (trial's temporary one), so that relative
    # paths a test hands the process (self.mktemp()) land there, not in
    # the checkout; the checkout is on PYTHONPATH.
    transport = reactor.spawnProcess(collector, argv[0], argv, env=processEnvironment(**extraEnvironment),
                                     path=os.getcwd())
    running = RunningProcess(transport, collector)

    def stop() -> Deferred[Any]:
        if collector.ended.called:
            return collector.ended
        return running.kill()

    testCase.addCleanup(stop)
    return running


@inlineCallbacks
def waitForPort(port: int, process: RunningProcess, bound: float = 120.0) -> Any:
    """
    Wait until something accepts connections on C{port}, or fail with the
    process's output if it ended first or nothing listened within C{bound}
    seconds (a process starting on a loaded machine is slow, not broken:
    the bound is only there to name the port in the failure).
    """
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if process.collector.ended.called:
            raise AssertionError(f"process ended before listening:\n{process.output}")
        try:
            protocol = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
        except Exception:
            yield deferLater(reactor, 0.05, lambda: None)
        else:
            protocol.transport.loseConnection()
            return
    raise AssertionError(f"nothing listened on {port} within {bound:g}s:\n{process.output}")


@inlineCallbacks
def startTwistd(testCase: Any, *options: str, storePort: int | None = None) -> Any:
    """
    Run C{twistd -n snapstore OPTIONS} as a real process, the way an admin
    runs it, and wait until its store endpoint listens, and its admin
    endpoint when OPTIONS name a TCP one (it may start listening later
    than the store's, and a test talking to it at once met a refusal).

    @return: a Deferred firing with C{(process, storePort)}.
    """
    storePort = storePort or freePort()
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "snapstore", "--store-endpoint", f"tcp:{storePort}:interface=127.0.0.1"]
    argv += list(options)
    if "--config" not in options:
        # Never the machine's /etc/snapstore/snapstore.conf (an installed
        # package's), which would point the test at shared directories.
        argv += ["--config", os.devnull]
    process = spawn(testCase, argv)
    yield waitForPort(storePort, process)
    adminPort = _tcpPort(options, "--admin-endpoint")
    if adminPort is not None:
        yield waitForPort(adminPort, process)
    return process, storePort


def _tcpPort(options: tuple[str, ...], name: str) -> int | None:
    """
    The port of the C{tcp:PORT...} endpoint given to option C{name}, if
    any.
    """
    for option, value in zip(options, options[1:]):
        if option == name:
            match = re.match(r"tcp6?:(\d+)", value)
            return int(match.group(1)) if match else None
    return None


async def spawnFakeStore(testCase: Any, *snaps: str) -> str:
    """
    Run the standalone fake store (C{python -m tests.fakestore}) with
    C{--snap} C{snaps} (C{name:revision:size}) until the test ends, as a
    process of its own; fire with its API URL once it listens.
    """
    apiPort, cdnPort = freePort(), freePort()
    argv = [sys.executable, "-m", "tests.fakestore", "--api-port", str(apiPort),
            "--cdn-port", str(cdnPort)]
    for snap in snaps:
        argv += ["--snap", snap]
    await waitForPort(apiPort, spawn(testCase, argv))
    return f"http://127.0.0.1:{apiPort}/"
