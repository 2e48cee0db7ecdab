#!/usr/bin/env python3
# -*- test-case-name: tests.test_store -*-
"""
Refresh relay benchmark: snapstore against nginx C{proxy_pass}, on loopback.

    flock /tmp/snapstore-bench.lock python3 bench/relay.py [--seconds 10] [--connections 100]

Three measurements:

  1. Relay rate.  A fast upstream (nginx answering every C{POST
     /v2/snaps/refresh} with one fixed ~2 KB refresh JSON) behind (a) nginx
     C{proxy_pass} (one worker, keep-alive to the upstream, access log on)
     and (b) C{twistd -n snapstore} (one process, per-request log on), each
     loaded by C{wrk} with 100 connections posting a refresh body.  The
     target is snapstore >= 0.25x nginx.  snapstore is also loaded in
     front of the same upstream gzipping its answers (nginx C{gzip on}),
     once for devices that do not accept gzip (decode, rewrite) and once
     for devices that do (decode, rewrite, gzip again), as snapd does.
  2. Added latency.  The fake store (C{python -m tests.fakestore}) called
     directly and through snapstore at a fixed 200 requests/s (open loop,
     from this process); the target is snapstore adding <= 5 ms at p99.
  3. Uplink bytes per refresh.  A device with C{--uplink-snaps} snaps
     installed (one newer revision each) refreshes through snapstore in
     front of the fake store, plain and compressing (C{--compress gzip});
     a counting TCP relay between snapstore and the fake store measures
     what upstream sent (headers and body), and the client what the device
     got, with and without C{Accept-Encoding: gzip}.
  4. The fleet's cost per request (unless C{--no-fleet}).  The same
     snapstore with the fleet on, as it ships (the inventory every refresh
     reports, the delivery record of every download; the snapstores above
     run that way too), and off (L{FLEET_OFF}), loaded in turn: relayed
     refreshes and cache-hit downloads, requests/s and CPU per request,
     against each other and against the bare Twisted L{Site}.

C{--latency-runs N} runs only measurement 2, N times in a row.

The collector pauses of the snapstore under wrk and of the one at 200/s
are printed from the summary each logs when stopped
(L{snapstore.observe.gcpauses}: count, total and longest pause per
generation, measured with C{gc.callbacks}).

For scale it also loads a bare Twisted L{Site} answering the same JSON
itself (no relay, no log): the ceiling for one Twisted process here, in
turn with the others so that each run's ratio compares like with like
on a shared machine.  With C{--baseline DIR} (another checkout, e.g. the
code before a change) that snapstore is loaded in turn too.
Prints a table with the ratios.  Needs C{/usr/sbin/nginx} and C{wrk}
(Debian's package).  Work files go to bench/_work/relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import ClientLag, cpuSteal, freePort, involuntarySwitches, percentile, requireTools, stop, waitForPort
NGINX = "/usr/sbin/nginx"

REFRESH_BODY = json.dumps({
    "context": [{"snap-id": "x" * 32, "instance-key": "x" * 32, "revision": 1,
                 "tracking-channel": "stable", "epoch": {"read": [0], "write": [0]}}],
    "actions": [{"action": "refresh", "instance-key": "x" * 32, "snap-id": "x" * 32}],
    "fields": ["download", "revision", "snap-id", "name", "version", "summary"],
})


def fixedAnswer(port: int) -> str:
    """
    A ~2 KB refresh answer naming a download URL on the upstream, as the
    store's would (so snapstore parses and rewrites it, as it does for
    real).
    """
    snap = {
        "name": "hello", "snap-id": "x" * 32, "revision": 29, "version": "2.10",
        "type": "app", "confinement": "strict", "epoch": {"read": [0], "write": [0]},
        "publisher": {"id": "canonical", "username": "canonical", "display-name": "Canonical",
                      "validation": "verified"},
        "summary": "The 'hello-world' of snaps", "description": "This is a simple hello world "
        "example. " * 20, "license": "MIT",
        "download": {"url": f"http://127.0.0.1:{port}/api/v1/snaps/download/{'x' * 32}_29.snap",
                     "size": 20480, "sha3-384": "a" * 96, "deltas": []},
        "media": [{"type": "icon", "url": f"http://127.0.0.1:{port}/media/icon.png",
                   "width": 256, "height": 256}],
    }
    answer = {"results": [{"result": "refresh", "instance-key": "x" * 32, "snap-id": "x" * 32,
                           "name": "hello", "effective-channel": "stable", "snap": snap}],
              "error-list": []}
    return json.dumps(answer)


def nginxConfig(work: str, upstreamPort: int, proxyPort: int, gzipPort: int) -> str:
    answer = fixedAnswer(upstreamPort).replace("\\", "\\\\").replace("'", "\\'")
    return f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {work}/tmp-body;
    proxy_temp_path {work}/tmp-proxy;
    fastcgi_temp_path {work}/tmp-fastcgi;
    uwsgi_temp_path {work}/tmp-uwsgi;
    scgi_temp_path {work}/tmp-scgi;
    access_log {work}/nginx-access.log;
    keepalive_requests 1000000;
    upstream origin {{ server 127.0.0.1:{upstreamPort}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{upstreamPort};
        access_log off;
        location / {{
            default_type application/json;
            add_header Snap-Store-Version 60;
            return 200 '{answer}';
        }}
    }}
    server {{
        listen 127.0.0.1:{gzipPort};
        access_log off;
        gzip on;
        gzip_types application/json;
        gzip_min_length 0;
        # snapstore adds Via, which makes the request "proxied" to nginx.
        gzip_proxied any;
        location / {{
            default_type application/json;
            add_header Snap-Store-Version 60;
            return 200 '{answer}';
        }}
    }}
    server {{
        listen 127.0.0.1:{proxyPort};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Snap-Device-Series"] = "16"
wrk.headers["Snap-Device-Architecture"] = "amd64"
%s
"""


def runWrk(work: str, port: int, seconds: float, connections: int,
           gzip: bool = False) -> tuple[float, int]:
    """
    Load C{POST /v2/snaps/refresh} on C{port} (from a client that accepts
    gzip if C{gzip}); the requests/s and the error count (socket errors
    and non-2xx answers).
    """
    script = os.path.join(work, "post-gzip.lua" if gzip else "post.lua")
    accept = 'wrk.headers["Accept-Encoding"] = "gzip"' if gzip else ""
    with open(script, "w") as lua:
        lua.write(WRK_SCRIPT % (REFRESH_BODY, accept))
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script,
         f"http://127.0.0.1:{port}/v2/snaps/refresh"],
        capture_output=True, text=True, timeout=seconds + 60).stdout
    return wrkFigures(output)


def wrkFigures(output: str) -> tuple[float, int]:
    """
    The requests/s and the error count (socket errors and non-2xx
    answers) of a C{wrk} report.
    """
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", output).group(1))
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)",):
        match = re.search(pattern, output)
        if match:
            errors += int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if match:
        errors += sum(int(group) for group in match.groups())
    return rate, errors


async def openLoop(port: int, rate: float, seconds: float, connections: int = 16,
                   sent: list[tuple[float, float]] | None = None) -> tuple[list[float], int]:
    """
    Send C{POST /v2/snaps/refresh} at a fixed C{rate} for C{seconds} (each
    on a keep-alive connection that is free at its scheduled time); the
    latencies, measured from the scheduled send time, and the errors.

    @param sent: if given, gets C{(wall time scheduled, latency)} of each
        answered request (C{--keep} writes them out).
    """
    body = REFRESH_BODY.encode()
    request = (f"POST /v2/snaps/refresh HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/json\r\nSnap-Device-Series: 16\r\n"
               f"Snap-Device-Architecture: amd64\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    free: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    errors = [0]

    async def one(scheduled: float) -> None:
        reader, writer = await free.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors[0] += 1
            latencies.append(time.monotonic() - scheduled)
            if sent is not None:
                sent.append((time.time() - latencies[-1], latencies[-1]))
            free.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, AttributeError):
            errors[0] += 1
            free.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    start = time.monotonic() + 0.1
    tasks = []
    count = int(rate * seconds)
    for index in range(count):
        scheduled = start + index / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(scheduled)))
    await asyncio.gather(*tasks)
    while not free.empty():
        _, writer = free.get_nowait()
        writer.close()
    return latencies, errors[0]


def codecMicroseconds(port: int, repeat: int = 2000) -> tuple[float, float]:
    """
    In this process, the microseconds snapstore's own code spends per
    refresh on the fixed answer: decoding upstream's gzip, and gzipping
    the rewritten answer for a device.
    """
    import gzip as gzipModule
    import timeit

    from snapstore.store.compression import Inflater, gzipped

    answer = fixedAnswer(port).encode()
    coded = gzipModule.compress(answer)

    def decode() -> None:
        inflater = Inflater([b"gzip"])
        inflater.feed(coded)
        inflater.finish()

    best = [min(timeit.repeat(f, number=repeat, repeat=5)) / repeat * 1e6
            for f in (decode, lambda: gzipped(answer))]
    return best[0], best[1]


def cpuSeconds(pid: int) -> float:
    """
    CPU time (user and system) a process has used so far, from /proc: on
    a shared machine, CPU per request varies far less than requests/s.
    """
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: Runs twistd under cProfile timed by the main thread's CPU clock, so
#: that time the process spends descheduled on a shared machine is not
#: charged to whatever function was running (twistd's own --profile
#: measures wall time); the stats go to the file named by SNAPSTORE_PROFILE
#: once the reactor has shut down (twistd then ends the process with the
#: signal it got).  Start-up is not profiled.
PROFILED_TWISTD = """
import cProfile, os, time
from twisted.internet import reactor
from twisted.scripts.twistd import run
profile = cProfile.Profile(time.thread_time)

def dump():
    profile.disable()
    profile.dump_stats(os.environ["SNAPSTORE_PROFILE"])

# From the first turn of the reactor: start-up (imports, rule loading)
# is not the relay's cost.
reactor.callWhenRunning(profile.enable)
reactor.addSystemEventTrigger("after", "shutdown", dump)
run()
"""


def startSnapstore(work: str, name: str, upstreamPort: int, extra: list[str] = (),
                   profile: str | None = None, root: str = ROOT,
                   prelude: str = "", snapstoreOptions: list[str] = ()) -> tuple[subprocess.Popen, int]:
    """
    C{twistd -n snapstore} in front of C{upstreamPort}, after running the
    Python statements C{prelude} in its process (L{FLEET_OFF}).

    @param profile: where to write cProfile stats of the whole run (see
        L{PROFILED_TWISTD}), or C{None}.
    @param root: the checkout whose snapstore runs (C{--baseline}).
    """
    port = freePort()
    os.makedirs(os.path.join(work, name, "rules.d"), exist_ok=True)
    log = open(os.path.join(work, f"{name}.log"), "w")
    code = PROFILED_TWISTD if profile else "from twisted.scripts.twistd import run; run()"
    environment = dict(os.environ, PYTHONPATH=root)
    if profile:
        environment["SNAPSTORE_PROFILE"] = profile
    process = subprocess.Popen(
        [sys.executable, "-c", prelude + code, "-n", "--pidfile=",
         *extra, "snapstore", "--config", os.devnull, *snapstoreOptions,
         "--upstream", f"http://127.0.0.1:{upstreamPort}/",
         "--store-endpoint", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
         "--admin-endpoint", "none", "--proxy-endpoint", "none",
         "--data-dir", os.path.join(work, name), "--rules-dir", os.path.join(work, name, "rules.d")],
        cwd=work, env=environment, stdout=log, stderr=subprocess.STDOUT)
    waitForPort(port, process, f"snapstore ({name})")
    return process, port


#: The fields snapd asks for in a refresh (tests/fakestore/README.md).
SNAPD_FIELDS = [
    "architectures", "base", "confinement", "contact", "created-at", "description", "download",
    "epoch", "license", "name", "prices", "private", "publisher", "revision", "snap-id",
    "snap-yaml", "summary", "title", "type", "version", "website", "store-url", "media",
    "common-ids",
]


def startFakeStore(snaps: int, compress: bool) -> tuple[subprocess.Popen, int, list[str]]:
    """
    The fake store with C{snaps} snaps at revision 2 on stable (revision 1
    installed on the device), compressing when asked to; its API port and
    the snap-ids.
    """
    apiPort, cdnPort = freePort(), freePort()
    arguments = [sys.executable, "-m", "tests.fakestore", "--api-port", str(apiPort),
                 "--cdn-port", str(cdnPort)]
    for index in range(snaps):
        arguments += ["--snap", f"snap-{index}:1:4096", "--snap", f"snap-{index}:2:4096"]
    if compress:
        arguments += ["--compress", "gzip"]
    fake = subprocess.Popen(arguments, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ids: list[str] = []
    while len(ids) < 2 * snaps:
        line = fake.stdout.readline()
        if not line:
            raise SystemExit("the fake store exited; run it by hand to see why")
        if line.startswith("snap "):
            ids.append(line.split()[2])
    waitForPort(apiPort, fake, "fake store")
    return fake, apiPort, sorted(set(ids))


class Counted:
    """
    A TCP relay on loopback that counts the bytes each way (upstream to
    snapstore: C{down}).
    """

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self.up = 0
        self.down = 0

    async def start(self) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        targetReader, targetWriter = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, down: bool) -> None:
            try:
                while True:
                    data = await source.read(65536)
                    if not data:
                        break
                    if down:
                        self.down += len(data)
                    else:
                        self.up += len(data)
                    sink.write(data)
                    await sink.drain()
            finally:
                sink.close()

        try:
            await asyncio.gather(pipe(reader, targetWriter, False),
                                 pipe(targetReader, writer, True), return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the measurement is over; snapstore's idle connection goes with it


async def refreshOnce(port: int, body: bytes, gzip: bool) -> tuple[int, int]:
    """
    One refresh on a new connection; the status and the bytes the device
    received (head and body).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accept = "Accept-Encoding: gzip\r\n" if gzip else ""
    writer.write((f"POST /v2/snaps/refresh HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Content-Type: application/json\r\nSnap-Device-Series: 16\r\n"
                  f"Snap-Device-Architecture: amd64\r\n{accept}"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    await reader.readexactly(length)
    writer.close()
    return int(head.split()[1]), len(head) + length


async def measureUplink(snapstorePort: int, relay: Counted, snapIds: list[str],
                        count: int) -> dict[str, float]:
    """
    Upstream bytes per refresh through C{relay}, and device bytes per
    refresh without and with C{Accept-Encoding: gzip}.
    """
    body = json.dumps({
        "context": [{"snap-id": snapId, "instance-key": snapId, "revision": 1,
                     "tracking-channel": "latest/stable", "epoch": {"read": [0], "write": [0]},
                     "refreshed-date": "2026-01-01T00:00:00Z"} for snapId in snapIds],
        "actions": [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}
                    for snapId in snapIds],
        "fields": SNAPD_FIELDS,
    }).encode()
    server = await relay.start()
    figures: dict[str, float] = {}
    try:
        await refreshOnce(snapstorePort, body, False)  # warm-up: connection, blob records
        for gzip in (False, True):
            before = relay.down
            received = 0
            for _ in range(count):
                status, size = await refreshOnce(snapstorePort, body, gzip)
                if status != 200:
                    raise SystemExit(f"uplink refresh answered {status}")
                received += size
            figures["upstream"] = (relay.down - before) / count
            figures["device gzip" if gzip else "device"] = received / count
    finally:
        server.close()
    return figures


def startHelloStore(processes: list[subprocess.Popen], log: str | None = None,
                    lagWarning: float | None = None) -> tuple[subprocess.Popen, int]:
    """
    The fake store with one 20 KiB snap, C{hello} revision 29 (added to
    C{processes}); its API port.

    @param log: a file for its stderr (else discarded).
    @param lagWarning: milliseconds: run the reactor lag probe in it too
        (C{--lag-warning}).
    """
    apiPort, cdnPort = freePort(), freePort()
    lag = ["--lag-warning", f"{lagWarning:g}"] if lagWarning else []
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakestore", "--api-port", str(apiPort), "--cdn-port", str(cdnPort),
         "--snap", "hello:29:20480", *lag], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.DEVNULL, stderr=open(log, "w") if log else subprocess.DEVNULL)
    processes.append(fake)
    waitForPort(apiPort, fake, "fake store")
    return fake, apiPort


#: The reactor lag (ms) over which snapstore and the fake store log a stall
#: with the stack the watchdog sampled, in the latency runs: well under
#: the 5 ms target's scale of a p99 is noise, so 20 ms.
LATENCY_LAG_WARNING = 20.0


async def _measured(port: int, options: argparse.Namespace,
                    sent: list[tuple[float, float]] | None) -> tuple[list[float], int, ClientLag]:
    """
    One side's open loop, with this process's collector off: a full
    collection of the client (12-18 ms, seen in about one side in five
    before) would delay the requests in flight and count against the
    side being measured.  Its lag is measured all the same.
    """
    import gc

    gc.collect()
    gc.disable()
    try:
        async with ClientLag() as lag:
            latencies, errors = await openLoop(port, options.rate, options.latency_seconds, sent=sent)
    finally:
        gc.enable()
    return latencies, errors, lag


def addedLatency(work: str, options: argparse.Namespace, processes: list[subprocess.Popen],
                 name: str) -> tuple[list[float], int, list[float], int]:
    """
    The fake store called directly and through a new snapstore (logging
    to C{name}.log, the fake store to C{name}-fake.log) at C{options.rate}
    requests/s: the latencies and errors of each.  The bench process's
    own lag while measuring each is left in C{options.clientLag} (direct,
    through), the requests' send times and latencies in
    C{name}-direct.csv and C{name}-through.csv with C{--keep}.
    """
    fake, apiPort = startHelloStore(processes, os.path.join(work, f"{name}-fake.log"),
                                    LATENCY_LAG_WARNING)
    proxied, proxiedPort = startSnapstore(
        work, name, apiPort, snapstoreOptions=["--reactor-lag-warning", f"{LATENCY_LAG_WARNING:g}"])
    processes.append(proxied)
    asyncio.run(openLoop(proxiedPort, options.rate, 1.0))  # warm-up
    sentDirect: list[tuple[float, float]] = []
    sentThrough: list[tuple[float, float]] = []
    direct, directErrors, directLag = asyncio.run(_measured(apiPort, options, sentDirect))
    totalBefore, stealBefore = cpuSteal()
    switchesBefore = involuntarySwitches(proxied.pid)
    through, throughErrors, throughLag = asyncio.run(_measured(proxiedPort, options, sentThrough))
    total, steal = cpuSteal()
    options.clientLag = (directLag, throughLag)
    options.machine = (f"CPU stolen {100 * (steal - stealBefore) / max(total - totalBefore, 1):.1f}%, "
                       f"snapstore preempted {involuntarySwitches(proxied.pid) - switchesBefore} times")
    stop(proxied)
    stop(fake)
    if options.keep:
        for side, sent in (("direct", sentDirect), ("through", sentThrough)):
            with open(os.path.join(work, f"{name}-{side}.csv"), "w") as out:
                out.write("sent (wall time),latency (s)\n")
                out.writelines(f"{when:.6f},{latency:.6f}\n" for when, latency in sent)
    return direct, directErrors, through, throughErrors


def slowSeconds(work: str, name: str, threshold: float) -> str:
    """
    With C{--keep}: the wall-clock seconds in which requests through
    snapstore took longer than C{threshold} seconds (how many, the
    slowest), beside the stalls snapstore and the fake store logged in the
    same second, for reading a bad run.
    """
    import collections

    slow: dict[str, list[float]] = collections.defaultdict(list)
    with open(os.path.join(work, f"{name}-through.csv")) as table:
        next(table)
        for line in table:
            when, latency = map(float, line.split(","))
            if latency > threshold:
                slow[time.strftime("%H:%M:%S", time.gmtime(when))].append(latency)
    stalls: dict[str, list[str]] = collections.defaultdict(list)
    for who, log in (("snapstore", f"{name}.log"), ("fake", f"{name}-fake.log")):
        with open(os.path.join(work, log)) as lines:
            for line in lines:
                found = re.search(r"T(\d\d:\d\d:\d\d).*reactor blocked ([\d.]+) ms", line)
                if found:
                    stalls[found.group(1)].append(f"{who} {found.group(2)} ms")
    return "; ".join(
        f"{second} {len(slow[second])} slow (max {1000 * max(slow[second]):.0f} ms)"
        + (f" [{', '.join(stalls[second])}]" if stalls[second] else "")
        for second in sorted(slow)) or "none"


def reactorLag(path: str) -> str:
    """
    The reactor lag summary a process logged to C{path} when it stopped
    (L{snapstore.observe.lag}), or a dash.
    """
    from snapstore.observe.lag import SUMMARY_PREFIX

    return summaryLine(path, SUMMARY_PREFIX)


def addedLatencyRuns(work: str, options: argparse.Namespace) -> bool:
    """
    C{--latency-runs N}: only the added-latency measurement, N times in a
    row (a new fake store and snapstore each), one line per run; whether
    every run met the target (p99 added <= 5 ms).

    Each run also says who stalled: snapstore's reactor lag, the fake
    store's, and this process's (the client: its event loop and its
    collector), while the requests through snapstore were measured.  A bad
    p99 with no stall anywhere is time spent waiting for a CPU or in the
    kernel.
    """
    print(f"\np99 added by snapstore at {options.rate:g} requests/s, {options.latency_seconds:g}s "
          f"per side, {options.latency_runs} consecutive runs ({os.cpu_count()} CPUs, loopback)")
    met = 0
    for run in range(options.latency_runs):
        processes: list[subprocess.Popen] = []
        name = f"latency-{run}"
        try:
            direct, directErrors, through, throughErrors = addedLatency(
                work, options, processes, name)
        finally:
            for process in processes:
                stop(process)
        added = (percentile(through, 0.99) - percentile(direct, 0.99)) * 1000
        met += added <= 5.0
        directLag, throughLag = options.clientLag
        print(f"  run {run + 1}: added {added:6.2f} ms  (p99 direct {percentile(direct, 0.99) * 1000:.2f}, "
              f"via snapstore {percentile(through, 0.99) * 1000:.2f}; p50 {percentile(direct, 0.5) * 1000:.2f} / "
              f"{percentile(through, 0.5) * 1000:.2f}; errors {directErrors} / {throughErrors}; "
              f"load average {os.getloadavg()[0]:.2f}; gc {gcPauses(work, name)})\n"
              f"         snapstore {reactorLag(os.path.join(work, f'{name}.log'))}\n"
              f"         fake store {reactorLag(os.path.join(work, f'{name}-fake.log'))}; "
              f"{summaryLine(os.path.join(work, f'{name}-fake.log'), 'gc pauses:')}\n"
              f"         via snapstore: {throughLag.describe()}; direct: {directLag.describe()}\n"
              f"         while via snapstore: {options.machine}")
        if options.keep:
            threshold = percentile(direct, 0.99) + 0.005
            print(f"         through snapstore over {threshold * 1000:.1f} ms (UTC second): "
                  f"{slowSeconds(work, name, threshold)}")
    print(f"  target (<= 5 ms) met in {met} of {options.latency_runs} runs")
    return met == options.latency_runs


#: Run before twistd, this turns the fleet's per-request work off in that
#: process only: the inventory a refresh reports is not recorded (nor the
#: answer parsed again for snap names), and no delivery row is queued for a
#: download.  Everything else (rules, sessions, the cache, the access log)
#: stays as it is, so the difference to the same snapstore without it is
#: what the fleet costs per request.
FLEET_OFF = (
    "from twisted.internet.defer import succeed\n"
    "from snapstore.fleet.deliveries import DeliveryLog\n"
    "from snapstore.fleet.inventory import InventoryRecorder\n"
    "InventoryRecorder.noteAnswer = lambda self, request, code, answer, document=None: succeed(None)\n"
    "DeliveryLog.watch = lambda self, request, blob: None\n"
)


def cachedDownloadPath(port: int, name: str) -> str:
    """
    Ask snapstore on C{port} about snap C{name} as snapd would (the relay
    rewrites its download URL and records the blob), fetch it once so the
    cache holds it, and return the path of the rewritten URL.
    """
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/snaps/info/{name}", timeout=30) as answer:
        url = json.load(answer)["channel-map"][0]["download"]["url"]
    with urllib.request.urlopen(url, timeout=30) as answer:
        answer.read()
    return "/" + url.split("/", 3)[3]


def runWrkGet(url: str, seconds: float, connections: int) -> tuple[float, int]:
    """
    Load C{GET url}; the requests/s and the error count.
    """
    output = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
                            capture_output=True, text=True, timeout=seconds + 60).stdout
    return wrkFigures(output)


def measureFleetCost(work: str, upstreamPort: int, options: argparse.Namespace,
                     processes: list[subprocess.Popen]) -> dict[str, dict[str, list[float]]]:
    """
    The fleet's cost per request (issue 20 item 3): the same snapstore with
    the fleet on (as it ships: the inventory of every refresh, the delivery
    record of every download) and off (L{FLEET_OFF}), loaded in turn by
    C{wrk}: refreshes relayed to the fixed upstream, and cache-hit
    downloads of a 20 KiB blob from the fake store (whose hash is real).

    @return: per load (C{"refresh"}, C{"download"}) and per C{"on"} /
        C{"off"}: the requests/s of each run, the CPU milliseconds per
        request of each run, and the errors, keyed C{"<on|off> rate"},
        C{"<on|off> cpu"}, C{"<on|off> errors"}.
    """
    fake, apiPort = startHelloStore(processes)
    # (load, fleet) -> the snapstore process and the port it listens on;
    # downloads also need the path of the cached blob.
    servers: dict[tuple[str, str], tuple[subprocess.Popen, int]] = {}
    paths: dict[str, str] = {}
    for fleet in ("on", "off"):
        prelude = FLEET_OFF if fleet == "off" else ""
        servers["refresh", fleet] = startSnapstore(
            work, f"fleet-{fleet}-refresh", upstreamPort, prelude=prelude)
        servers["download", fleet] = startSnapstore(
            work, f"fleet-{fleet}-download", apiPort, prelude=prelude)
        processes.extend([servers["refresh", fleet][0], servers["download", fleet][0]])
        paths[fleet] = cachedDownloadPath(servers["download", fleet][1], "hello")
    figures: dict[str, dict[str, list[float]]] = {
        load: {f"{fleet} {what}": [] for fleet in ("on", "off") for what in ("rate", "cpu", "errors")}
        for load in ("refresh", "download")}

    def run(load: str, fleet: str, seconds: float, record: bool) -> None:
        process, port = servers[load, fleet]
        before = cpuSeconds(process.pid)
        if load == "refresh":
            rate, errors = runWrk(work, port, seconds, options.connections)
        else:
            rate, errors = runWrkGet(f"http://127.0.0.1:{port}{paths[fleet]}", seconds, options.connections)
        used = cpuSeconds(process.pid) - before
        if record:
            figures[load][f"{fleet} rate"].append(rate)
            figures[load][f"{fleet} cpu"].append(1000 * used / max(1.0, rate * seconds))
            figures[load][f"{fleet} errors"].append(errors)

    for load in ("refresh", "download"):
        for fleet in ("on", "off"):
            run(load, fleet, 1, False)  # warm-up
        for index in range(options.runs):
            # Alternate who goes first.
            for fleet in (("on", "off") if index % 2 == 0 else ("off", "on")):
                run(load, fleet, options.seconds, True)
    for process, _ in servers.values():
        stop(process)
    stop(fake)
    return figures


def fleetRows(figures: dict[str, dict[str, list[float]]], plainRate: float) -> list[tuple[str, str, str]]:
    """
    The table rows of L{measureFleetCost}: best rate and lowest CPU per
    request of the runs, fleet on against off, and against the bare
    Twisted L{Site}'s rate C{plainRate}.
    """
    rows = []
    for load, what in (("refresh", "refresh relayed"), ("download", "cache-hit download, 20 KiB")):
        got = figures[load]
        on, off = max(got["on rate"]), max(got["off rate"])
        onCPU, offCPU = min(got["on cpu"]), min(got["off cpu"])
        runs = lambda key, form: ", ".join(form.format(v) for v in got[key])
        rows += [
            (f"fleet off: {what} (req/s)", f"{off:.0f}",
             f"{off / plainRate:.2f}x bare Site; runs: " + runs("off rate", "{:.0f}")),
            (f"fleet on:  {what} (req/s)", f"{on:.0f}",
             f"{on / plainRate:.2f}x bare Site, {on / off:.2f}x fleet off; runs: " + runs("on rate", "{:.0f}")),
            (f"  CPU per request (ms), fleet off / on", f"{offCPU:.3f}",
             f"/ {onCPU:.3f}: the fleet adds {onCPU - offCPU:+.3f} ms ({onCPU / offCPU:.2f}x); lowest of runs"),
            (f"  errors, fleet off / on", f"{sum(got['off errors']):.0f} / {sum(got['on errors']):.0f}", ""),
        ]
    return rows


PLAIN_TWISTED = """
import sys
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

answer = open(sys.argv[2], "rb").read()


class Fixed(Resource):
    isLeaf = True

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        return answer


reactor.listenTCP(int(sys.argv[1]), Site(Fixed()), backlog=1024, interface="127.0.0.1")
reactor.run()
"""


def startPlainTwisted(work: str, upstreamPort: int) -> tuple[subprocess.Popen, int]:
    """
    The ceiling for one Twisted process: a bare L{Site} answering the same
    refresh JSON itself (no relay, no log).
    """
    port = freePort()
    answerFile = os.path.join(work, "answer.json")
    with open(answerFile, "w") as answer:
        answer.write(fixedAnswer(upstreamPort))
    process = subprocess.Popen([sys.executable, "-c", PLAIN_TWISTED, str(port), answerFile],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    waitForPort(port, process, "plain Twisted")
    return process, port


def summaryLine(path: str, prefix: str) -> str:
    """
    What follows C{prefix} on the last line of the log C{path} holding
    it (a summary a process logs when it stops), or a dash.
    """
    try:
        with open(path) as log:
            lines = [line for line in log if prefix in line]
    except OSError:
        return "-"
    return lines[-1].split(prefix, 1)[1].strip() if lines else "-"


def gcPauses(work: str, name: str) -> str:
    """
    The collector pauses snapstore C{name} logged when it stopped
    (L{snapstore.observe.gcpauses}), or a dash.
    """
    from snapstore.observe.gcpauses import SUMMARY_PREFIX

    return summaryLine(os.path.join(work, f"{name}.log"), SUMMARY_PREFIX)


#: The rows of the profile table: label, (file suffix, function) pairs
#: (the largest matching entry counts), and whether own time (summed over
#: every function of the file) is meant rather than cumulative time.
PROFILE_ROWS = [
    ("whole request (server dataReceived)", [("twisted/web/http.py", "dataReceived")], False),
    ("relay coroutine (_relay)", [("snapstore/store/relay.py", "_relay")], False),
    ("outbound agent request", [("snapstore/outbound.py", "request"),
                                ("twisted/web/client.py", "request")], False),
    ("... of which new upstream connections", [("twisted/web/client.py", "_newConnection"),
                                               ("snapstore/http/client.py", "_connect")], False),
    ("... parsing an answer's head (own client)", [("snapstore/http/client.py",
                                                     "_parseHead")], False),
    ("upstream client, all its functions (own time)", [("snapstore/http/client.py", ""),
                                                       ("twisted/web/_newclient.py", "")], True),
    ("Twisted Headers, all calls (own time)", [("twisted/web/http_headers.py", "")], True),
    ("stale-answer agent (_request)", [("snapstore/uplink/stale.py", "_request")], False),
    ("... of which learning the answer", [("snapstore/uplink/stale.py", "_learn")], False),
    ("rules: describe the request", [("snapstore/rules/service.py", "describe")], False),
    ("rules: amend the answer (_amend)", [("snapstore/store/relay.py", "_amend")], False),
    ("rules: noteAnswer (inventory)", [("snapstore/rules/service.py", "noteAnswer")], False),
    ("JSON parses (json.loads)", [("json/__init__.py", "loads")], False),
    ("JSON rewrite (rewriteAnswer)", [("snapstore/store/rewrite.py", "rewriteAnswer")], False),
    ("reading upstream's body (readBody)", [("snapstore/store/upstream.py", "readBody")], False),
    ("access event (ended)", [("snapstore/observe/access.py", "ended")], False),
    ("log emission, all events (Logger.emit)", [("twisted/logger/_logger.py", "emit")], False),
    ("... of which text formatting", [("twisted/logger/_format.py",
                                       "formatEventAsClassicLogText")], False),
    ("Deferred machinery (own time)", [("twisted/internet/defer.py", "")], True),
    ("epoll modify (own time)", [("~", "<method 'modify' of 'select.epoll' objects>")], True),
]


def profileTable(path: str) -> list[tuple[str, float, float]]:
    """
    Where the time of a profiled run went, per relayed refresh (the
    calls of C{RelayResource.render}): each row's milliseconds
    (cumulative, or own for the rows that say so) and calls per refresh.
    """
    import pstats

    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    refreshes = max((entry[1] for (name, _, function), entry in stats.items()
                     if name.endswith("snapstore/store/relay.py") and function == "render"),
                    default=0) or 1
    rows = []
    for label, wanted, own in PROFILE_ROWS:
        seconds = calls = 0.0
        for (name, _, function), (_, count, tottime, cumtime, _) in stats.items():
            for suffix, functionName in wanted:
                if not name.endswith(suffix):
                    continue
                if own and not functionName:
                    seconds += tottime
                elif function == functionName:
                    if own:
                        seconds, calls = seconds + tottime, calls + count
                    elif cumtime > seconds:
                        seconds, calls = cumtime, count
        rows.append((label, 1000 * seconds / refreshes, calls / refreshes))
    # Waiting in epoll is idle time (wrk or another process had the CPU).
    total = sum(entry[2] for (name, _, function), entry in stats.items()
                if function != "<method 'poll' of 'select.epoll' objects>")
    rows.append(("all profiled time (own, summed, not idle)", 1000 * total / refreshes, 0.0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate run")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s of the latency runs")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=2, help="alternating rate runs per server")
    parser.add_argument("--uplink-snaps", type=int, default=10,
                        help="snaps installed on the device of the uplink measurement")
    parser.add_argument("--uplink-refreshes", type=int, default=20,
                        help="refreshes averaged per uplink figure")
    parser.add_argument("--profile", action="store_true",
                        help="also run snapstore under cProfile and print its top functions")
    parser.add_argument("--baseline", metavar="DIR",
                        help="another checkout (e.g. `git worktree add DIR COMMIT`) whose snapstore "
                             "is loaded in turn with this one, for before/after on a shared machine")
    parser.add_argument("--latency-runs", type=int, metavar="N",
                        help="only measure the p99 snapstore adds at --rate, N times in a row")
    parser.add_argument("--no-fleet", dest="fleet", action="store_false",
                        help="skip the fleet-on/fleet-off runs (inventory and delivery record cost)")
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    requireTools("bench/relay.py", "wrk", "nginx")

    work = os.path.join(ROOT, "bench", "_work", "relay")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if options.latency_runs:
        met = addedLatencyRuns(work, options)
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
        sys.exit(0 if met else 1)
    upstreamPort, nginxPort, gzipPort = freePort(), freePort(), freePort()
    with open(os.path.join(work, "nginx.conf"), "w") as config:
        config.write(nginxConfig(work, upstreamPort, nginxPort, gzipPort))
    processes: list[subprocess.Popen] = []
    try:
        nginx = subprocess.Popen([NGINX, "-c", os.path.join(work, "nginx.conf"), "-p", work],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        processes.append(nginx)
        waitForPort(nginxPort, nginx, "nginx")
        snapstore, snapstorePort = startSnapstore(work, "relay", upstreamPort)
        processes.append(snapstore)
        gzipped, gzippedPort = startSnapstore(work, "relay-gzip", gzipPort)
        processes.append(gzipped)
        plain, plainPort = startPlainTwisted(work, upstreamPort)
        processes.append(plain)
        # (name, port, client accepts gzip), run in turn.
        loads = [("nginx", nginxPort, False), ("snapstore", snapstorePort, False),
                 ("bare Site", plainPort, False),
                 ("gzip upstream", gzippedPort, False), ("gzip both", gzippedPort, True)]
        pids = {snapstorePort: snapstore.pid, gzippedPort: gzipped.pid}
        if options.baseline:
            baseline, baselinePort = startSnapstore(work, "relay-baseline", upstreamPort,
                                                    root=os.path.abspath(options.baseline))
            processes.append(baseline)
            loads.insert(3, ("baseline", baselinePort, False))
            pids[baselinePort] = baseline.pid
        # Warm them all (connections to upstream, code paths).
        for _, port, gzip in loads:
            runWrk(work, port, 1, options.connections, gzip)
        rates: dict[str, list[float]] = {name: [] for name, _, _ in loads}
        errors = {name: 0 for name, _, _ in loads}
        # snapstore's CPU milliseconds per relayed refresh, per run.
        costs: dict[str, list[float]] = {name: [] for name, _, _ in loads}
        for _ in range(options.runs):
            for name, port, gzip in loads:
                before = cpuSeconds(pids[port]) if port in pids else 0.0
                rate, failed = runWrk(work, port, options.seconds, options.connections, gzip)
                if port in pids:
                    used = cpuSeconds(pids[port]) - before
                    costs[name].append(1000 * used / max(1.0, rate * options.seconds))
                rates[name].append(rate)
                errors[name] += failed
        stop(snapstore)
        stop(gzipped)
        stop(plain)
        if options.baseline:
            stop(baseline)
        plainRate = max(rates["bare Site"])
        fleetCost = measureFleetCost(work, upstreamPort, options, processes) if options.fleet else None

        direct, directErrors, through, throughErrors = addedLatency(work, options, processes, "latency")

        uplink: dict[bool, dict[str, float]] = {}
        for compress in (False, True):
            fake, fakePort, snapIds = startFakeStore(options.uplink_snaps, compress)
            processes.append(fake)
            relay = Counted(freePort(), fakePort)
            counted, countedPort = startSnapstore(work, f"uplink-{compress}", relay.port)
            processes.append(counted)
            uplink[compress] = asyncio.run(measureUplink(countedPort, relay, snapIds,
                                                         options.uplink_refreshes))
            stop(counted)
            stop(fake)

        profile = None
        if options.profile:
            profiled, profiledPort = startSnapstore(work, "profiled", upstreamPort,
                                                    profile=os.path.join(work, "snapstore.prof"))
            runWrk(work, profiledPort, options.seconds, options.connections)
            stop(profiled)
            profile = os.path.join(work, "snapstore.prof")
    finally:
        for process in processes:
            stop(process)

    nginxRate = max(rates["nginx"])
    snapRate = max(rates["snapstore"])

    def rateRow(label: str, name: str) -> tuple[str, str, str]:
        best = max(rates[name])
        return (label, f"{best:.0f}", f"{best / snapRate:.2f}x plain; runs: "
                + ", ".join(f"{r:.0f}" for r in rates[name]))

    snaps = options.uplink_snaps
    decodeCost, encodeCost = codecMicroseconds(upstreamPort)
    rows = [
        ("relay rate, nginx proxy_pass (req/s)", f"{nginxRate:.0f}", "runs: " + ", ".join(f"{r:.0f}" for r in rates["nginx"])),
        ("relay rate, snapstore (req/s)", f"{snapRate:.0f}", "runs: " + ", ".join(f"{r:.0f}" for r in rates["snapstore"])),
        ("snapstore / nginx (target >= 0.25)", f"{snapRate / nginxRate:.3f}", ""),
        ("plain Twisted answering the JSON itself (req/s)", f"{plainRate:.0f}",
         f"{plainRate / nginxRate:.3f}x nginx: one process's ceiling; runs: "
         + ", ".join(f"{r:.0f}" for r in rates["bare Site"])),
        ("snapstore / bare Site (issue 20 target >= 0.40)", f"{snapRate / plainRate:.3f}",
         "per run: " + ", ".join(f"{a / b:.3f}" for a, b in zip(rates["snapstore"], rates["bare Site"]))),
        rateRow("relay rate, snapstore, gzip upstream (req/s)", "gzip upstream"),
        rateRow("  ... and device accepting gzip (req/s)", "gzip both"),
        ("snapstore CPU per refresh (ms): plain upstream", f"{min(costs['snapstore']):.3f}",
         "lowest of runs: " + ", ".join(f"{c:.3f}" for c in costs["snapstore"])),
        ("  ... gzip upstream", f"{min(costs['gzip upstream']):.3f}",
         "lowest of runs: " + ", ".join(f"{c:.3f}" for c in costs["gzip upstream"])),
        ("  ... gzip upstream, device accepting gzip", f"{min(costs['gzip both']):.3f}",
         "lowest of runs: " + ", ".join(f"{c:.3f}" for c in costs["gzip both"])),
        *([("relay rate, --baseline checkout (req/s)", f"{max(rates['baseline']):.0f}",
            "runs: " + ", ".join(f"{r:.0f}" for r in rates["baseline"])),
           ("--baseline / bare Site", f"{max(rates['baseline']) / plainRate:.3f}",
            "per run: " + ", ".join(f"{a / b:.3f}" for a, b in zip(rates["baseline"],
                                                                  rates["bare Site"]))),
           ("--baseline CPU per refresh (ms)", f"{min(costs['baseline']):.3f}",
            "lowest of runs: " + ", ".join(f"{c:.3f}" for c in costs["baseline"]))]
          if options.baseline else []),
        ("codec per refresh (us): decode upstream / gzip for device",
         f"{decodeCost:.1f}", f"/ {encodeCost:.1f}  (in-process, timeit)"),
        ("relay errors (each load in turn)", " / ".join(str(errors[name]) for name, _, _ in loads),
         " / ".join(name for name, _, _ in loads)),
        (f"refresh p50 at {options.rate:g}/s, direct (ms)", f"{percentile(direct, 0.5) * 1000:.2f}", ""),
        (f"refresh p50 at {options.rate:g}/s, via snapstore (ms)", f"{percentile(through, 0.5) * 1000:.2f}", ""),
        (f"refresh p99 at {options.rate:g}/s, direct (ms)", f"{percentile(direct, 0.99) * 1000:.2f}", ""),
        (f"refresh p99 at {options.rate:g}/s, via snapstore (ms)", f"{percentile(through, 0.99) * 1000:.2f}", ""),
        ("p99 added by snapstore (target <= 5 ms)",
         f"{(percentile(through, 0.99) - percentile(direct, 0.99)) * 1000:.2f}", ""),
        ("latency-run errors direct / snapstore", f"{directErrors} / {throughErrors}", ""),
        ("gc pauses, snapstore under wrk (whole run)", "", gcPauses(work, "relay")),
        (f"gc pauses, snapstore at {options.rate:g}/s (whole run)", "", gcPauses(work, "latency")),
        (f"uplink bytes per refresh, {snaps} snaps, plain upstream", f"{uplink[False]['upstream']:.0f}",
         "headers and body, fake store"),
        (f"uplink bytes per refresh, {snaps} snaps, gzip upstream", f"{uplink[True]['upstream']:.0f}",
         f"{uplink[False]['upstream'] / uplink[True]['upstream']:.1f}x fewer"),
        ("device bytes per refresh, plain / gzip-accepting device",
         f"{uplink[True]['device']:.0f}", f"/ {uplink[True]['device gzip']:.0f}"),
    ]
    if fleetCost is not None:
        rows += fleetRows(fleetCost, plainRate)
    width = max(len(row[0]) for row in rows)
    print(f"\nrefresh relay ({os.cpu_count()} CPUs, loopback, wrk -t1 -c{options.connections}, "
          f"{options.seconds:g}s x {options.runs} runs, one nginx worker, one snapstore process)")
    for name, value, note in rows:
        print(f"  {name.ljust(width)}  {value:>10}  {note}")
    if profile is not None:
        import pstats

        print("\nsnapstore under wrk, cProfile (main thread CPU time), per relayed refresh (ms, calls):")
        for label, milliseconds, calls in profileTable(profile):
            print(f"  {label.ljust(42)} {milliseconds:7.3f}  {calls:5.2f}" if calls
                  else f"  {label.ljust(42)} {milliseconds:7.3f}")
        print("\nsnapstore under wrk, top 25 by own time (cProfile):")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
