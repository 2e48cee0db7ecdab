# -*- test-case-name: tests.test_fakestore -*-
"""
Run the fake store by hand or for benchmarks::

    python -m tests.fakestore --api-port 8080 --cdn-port 8081 \\
        --snap hello:29:20480 --snap big:1:1073741824:edge

Prints the API and CDN URLs and every snap it serves, then runs until
interrupted.
"""

import argparse
import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import react
from twisted.logger import (FilteringLogObserver, LogLevelFilterPredicate, PredicateResult,
                            globalLogBeginner, textFileLogObserver)

from tests.fakestore.catalogue import validSnapName
from tests.fakestore.store import FakeStore


def parseSnap(value: str) -> tuple[str, int, int, str]:
    """
    Parse C{NAME:REV:SIZE[:CHANNEL]}.
    """
    parts = value.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError("expected NAME:REV:SIZE[:CHANNEL]")
    try:
        revision, size = int(parts[1]), int(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError("REV and SIZE must be integers")
    if not validSnapName(parts[0]):
        raise argparse.ArgumentTypeError(f"invalid snap name {parts[0]!r}")
    return parts[0], revision, size, parts[3] if len(parts) == 4 else "stable"


def makeParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.fakestore", description=__doc__)
    parser.add_argument("--api-port", type=int, default=0)
    parser.add_argument("--cdn-port", type=int, default=0)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--hostname", default=None,
                        help="host name for absolute URLs instead of the Host header")
    parser.add_argument("--snap", action="append", type=parseSnap, default=[],
                        metavar="NAME:REV:SIZE[:CHANNEL]")
    parser.add_argument("--arch", default="amd64", help="architecture of --snap revisions")
    parser.add_argument("--compress", choices=("gzip", "deflate"), default=None,
                        help="code JSON and assertion answers for clients that accept it")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument("--lag-warning", type=float, default=None, metavar="MS",
                        help="run snapstore's reactor lag probe (with its watchdog): log to "
                             "stderr every stall longer than MS milliseconds and, at exit, "
                             "the summary (bench/relay.py reads both)")
    return parser


class _FixedPortStore(FakeStore):
    """
    A L{FakeStore} listening on chosen ports and interface instead of
    random loopback ones.
    """

    def __init__(self, reactor, apiPort, cdnPort, interface, **kwargs):
        super().__init__(reactor, **kwargs)
        self._wanted = iter([apiPort, cdnPort])
        self._interface = interface

    def _endpoint(self):
        return TCP4ServerEndpoint(self._reactor, next(self._wanted), interface=self._interface)


async def startFromArguments(reactor, argv) -> FakeStore:
    """
    Build, fill and start a store as the command line says.

    @return: the started store.
    """
    options = makeParser().parse_args(argv)
    store = _FixedPortStore(
        reactor, options.api_port, options.cdn_port, options.interface,
        hostname=options.hostname, compress=options.compress,
    )
    for name, revision, size, channel in options.snap:
        if name not in {s.name for s in store.catalogue}:
            store.addSnap(name)
        store.addRevision(name, revision, size, architectures=(options.arch,),
                          channels=(channel,))
    await store.start()
    if options.interface != "127.0.0.1":
        store.apiURL = f"http://{options.interface}:{store.apiPort}/"
        store.cdnURL = f"http://{options.interface}:{store.cdnPort}/"
    return store


def steadyCollector(reactor):
    """
    Freeze what start-up built (the catalogue, the modules), as snapstore
    does (L{snapstore.observe.gcpauses}): as the benchmarks' upstream, the
    fake store must not pause either.  Without this it ran a full
    collection of 16-18 ms in each added-latency run of bench/relay.py,
    which landed on whichever side (direct, or through snapstore) was
    being measured.  Its youngest generation keeps Python's threshold:
    with snapstore's 20,000 its collections took 8-16 ms each (what a
    request leaves behind here is mostly cyclic garbage to free).
    """
    from snapstore.observe.gcpauses import CollectorPauses

    pauses = CollectorPauses(youngThreshold=None)
    pauses.startService()
    reactor.addSystemEventTrigger("before", "shutdown", pauses.stopService)
    return pauses


def startLagProbe(reactor, warnAfter: float) -> None:
    """
    Measure this process's reactor lag as snapstore does its own
    (L{snapstore.observe.lag}), logging only the probe's lines and the
    collector's summary to stderr: the fake store's stalls, if any, then
    show beside snapstore's.
    """
    from snapstore.observe.lag import ReactorLag

    lag = ReactorLag(reactor, warnAfter=warnAfter, watchdog=True)

    def fromProbe(event):
        if event.get("log_namespace", "").startswith(("snapstore.observe.lag",
                                                      "snapstore.observe.gcpauses")):
            return PredicateResult.maybe
        return PredicateResult.no

    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sys.stderr), [fromProbe, LogLevelFilterPredicate()])])
    lag.startService()
    reactor.addSystemEventTrigger("before", "shutdown", lag.stopService)


async def main(reactor, argv) -> None:
    if "--verbose" in argv:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    elif "--lag-warning" in argv:
        startLagProbe(reactor, makeParser().parse_args(argv).lag_warning / 1000)
    store = await startFromArguments(reactor, argv)
    print(f"api {store.apiURL}")
    print(f"cdn {store.cdnURL}")
    for snap in store.catalogue:
        for revision in snap.revisions.values():
            print(f"snap {snap.name} {snap.snapId} {revision.revision} "
                  f"{revision.size} {revision.sha3_384}")
    sys.stdout.flush()
    steadyCollector(reactor)
    await Deferred()


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
