#!/usr/bin/env python3
# -*- test-case-name: tests.test_cache -*-
"""
Benchmark of the blob cache against nginx, on this machine, in one run.

    flock /tmp/snapstore-bench.lock python3 bench/cache.py

It starts, all on loopback:

  - the fake upstream store (tests/fakestore, in this process) with a
    1 GiB and a 100 MiB revision;
  - snapstore as a real C{twistd -n snapstore} process in front of it;
  - nginx serving the very file snapstore cached, statically with
    C{sendfile} (what a cache hit should match);
  - nginx as a caching reverse proxy (C{proxy_cache} + C{proxy_cache_lock})
    in front of the fake store's CDN (what a cold burst should match).

and measures (a) cache-hit throughput of one client fetching 1 GiB, (b) 50
clients fetching the same 100 MiB blob at once with a cold cache (wall time
and bytes taken from upstream), (c) snapstore's peak RSS across both, (d)
the first, cold download, against the rate one core hashes sha3-384 here
(measured in the same run, over the very bytes just cached, in the pieces
the cache hashes: a fill cannot release its last byte before its hash is
checked, so that rate bounds it), and (e) with a second snapstore run with
C{--upstream-rate}, a fill's rate against the cap while a cache hit is
served meanwhile.

Every cold fill is also accounted for in CPU seconds per GiB, from
C{/proc}: snapstore's reactor thread, its busiest other thread (the
hasher), its other threads, the fake CDN's reactor thread (in this
process) and curl.  On a shared two-core machine everything that is not
the hasher competes with it, so that split says what a fill costs beside
the hash.  With C{--baseline DIR} (another checkout, e.g. a worktree of
main) a second snapstore runs that checkout's code, and C{--cold-runs}
fresh blobs are filled through each in turn, alternating which goes first.
Clients are C{curl} processes writing to /dev/null, the same for both
servers.  Work files go to bench/_work/cache (git-ignored) and are removed
at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import TWISTD, freePort, requireTools, stop, waitForPort
from snapstore.cache.chunks import CHUNK, fileChunks
from snapstore.config import parseSize

GIB = 1 << 30
MIB = 1 << 20


class RSSWatcher(threading.Thread):
    """
    Samples a process's resident set every 20 ms and keeps the peak (and
    the kernel's own high-water mark, VmHWM, at the end).
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.running = True

    def field(self, name: str) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith(name + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.field("VmRSS"))
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, self.field("VmHWM"))


class FakeUpstream:
    """
    The fake store, run by a reactor in a thread of this process so that
    its byte counters can be read directly.
    """

    def __init__(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
        self.thread.start()

    def call(self, f, *args, **kwargs):
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self.reactor, f, *args, **kwargs)

    def start(self, snaps: list[tuple[str, int, int]]) -> None:
        from tests.fakestore import FakeStore

        def build():
            self.store = FakeStore(self.reactor)
            for name, revision, size in snaps:
                self.store.addSnap(name)
                self.store.addRevision(name, revision, size)
            return self.store.start()

        self.call(build)

    def cdnBytes(self) -> int:
        return self.call(lambda: self.store.cdnBytesSent)

    def cdnGets(self, name: str) -> int:
        return self.call(lambda: len(self.store.cdnDownloads(name)))

    def stop(self) -> None:
        self.call(self.store.stop)
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(5)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpuSeconds(statPath: str) -> tuple[float, float]:
    """
    User and system CPU seconds from a C{/proc/.../stat} file (zeros once
    the process or thread is gone).
    """
    try:
        with open(statPath) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    # Fields 14 and 15 of stat(5), counted from the one after the name.
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def threadSeconds(pid: int) -> dict[int, tuple[float, float]]:
    """
    User and system CPU seconds of each live thread of C{pid}, by thread id.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    return {int(tid): cpuSeconds(f"/proc/{pid}/task/{tid}/stat") for tid in tids}


def childSeconds() -> tuple[float, float]:
    """
    User and system CPU seconds of this process's children that ended and
    were waited for.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def minus(after: tuple[float, float], before: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


class ColdFill:
    """
    One cold download through a snapstore, with the CPU it cost, and the
    rate one core hashes the same file at right afterwards.

    @ivar split: C{(what, (user seconds, system seconds))} pairs.
    """

    def __init__(self, label: str, size: int, rate: float,
                 split: list[tuple[str, tuple[float, float]]],
                 shaRate: float, load: float) -> None:
        self.label = label
        self.size = size
        self.rate = rate
        self.split = split
        self.shaRate = shaRate
        self.load = load

    def perGiB(self, seconds: float) -> str:
        return f"{seconds * GIB / self.size:.2f}"

    def nonHash(self) -> float:
        """
        CPU seconds of everything but the hasher.
        """
        return sum(sum(seconds) for what, seconds in self.split if what != "hasher")


def coldFill(label: str, url: str, size: int, snapstorePid: int, cdnThread: int,
             cachedPath: Callable[[], str]) -> ColdFill:
    """
    Download C{url} (a blob new to the snapstore of C{snapstorePid}) once
    and account for the CPU the fill cost; then time one core hashing the
    file it cached (C{cachedPath()}).

    The hasher is the busiest thread besides the reactor (the main
    thread); threads that ended meanwhile count as other threads.
    """
    load = os.getloadavg()[0]
    process = f"/proc/{snapstorePid}/stat"
    cdnStat = f"/proc/{os.getpid()}/task/{cdnThread}/stat"
    threads, total = threadSeconds(snapstorePid), cpuSeconds(process)
    cdn, children = cpuSeconds(cdnStat), childSeconds()
    rate = single(url, size)
    used = {tid: minus(seconds, threads.get(tid, (0.0, 0.0)))
            for tid, seconds in threadSeconds(snapstorePid).items()}
    reactor = used.pop(snapstorePid, (0.0, 0.0))
    hasher = max(used.values(), key=sum, default=(0.0, 0.0))
    whole = minus(cpuSeconds(process), total)
    others = (max(0.0, whole[0] - reactor[0] - hasher[0]),
              max(0.0, whole[1] - reactor[1] - hasher[1]))
    split = [("reactor", reactor), ("hasher", hasher), ("other threads", others),
             ("fake CDN", minus(cpuSeconds(cdnStat), cdn)), ("curl", minus(childSeconds(), children))]
    cached = cachedPath()
    if not os.path.exists(cached):
        raise SystemExit(f"snapstore ({label}) did not cache the blob of {url}")
    return ColdFill(label, size, rate, split, hashRate(cached), load)


def printColdFills(fills: list[ColdFill]) -> None:
    """
    The CPU table of cold fills: seconds per GiB by thread and process,
    user + system.
    """
    names = [what for what, _ in fills[0].split]
    header = ("cold fill", "GB/s", "sha3 GB/s", "ratio", *names, "non-hash", "load")
    rows = []
    for fill in fills:
        rows.append((f"{fill.label}, {fill.size >> 20} MiB", f"{fill.rate / 1e9:.3f}",
                     f"{fill.shaRate / 1e9:.3f}", f"{fill.rate / fill.shaRate:.2f}x",
                     *(f"{fill.perGiB(user)} + {fill.perGiB(system)}"
                       for _, (user, system) in fill.split),
                     fill.perGiB(fill.nonHash()), f"{fill.load:.1f}"))
    print("\nCPU seconds per GiB of each cold fill, user + system (snapstore's threads, the "
          "fake CDN's, curl; the load average at its start):")
    printTable(header, rows)


def printTable(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """
    A Markdown table, its columns padded to their widest cell.
    """
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def hashRate(path: str, passes: int = 2) -> float:
    """
    How fast one core computes the sha3-384 of the file at C{path}, read in
    the cache's pieces (L{CHUNK}) as a fill's hasher reads its file: bytes
    per second, the best of C{passes} (the file is in the page cache by
    then, so this is the hash, not the disk).
    """
    import hashlib

    best = 0.0
    for _ in range(passes):
        started = time.perf_counter()
        digest = hashlib.sha3_384()
        size = 0
        with open(path, "rb") as blob:
            for chunk in fileChunks(blob, CHUNK):
                digest.update(chunk)
                size += len(chunk)
        best = max(best, size / (time.perf_counter() - started))
    return best


def curl(url: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
         url],
        stdout=subprocess.PIPE, text=True)


def curlResult(process: subprocess.Popen) -> tuple[int, int, float]:
    out, _ = process.communicate()
    code, size, seconds = out.split()
    return int(code), int(size), float(seconds)


def single(url: str, size: int) -> float:
    """
    One download; its throughput in bytes per second.
    """
    code, got, seconds = curlResult(curl(url))
    if code not in (200,) or got != size:
        raise SystemExit(f"download of {url} failed: HTTP {code}, {got} of {size} bytes")
    return got / seconds


def burst(url: str, size: int, clients: int) -> float:
    """
    C{clients} downloads at once; the wall time until the last ended.
    """
    started = time.monotonic()
    processes = [curl(url) for _ in range(clients)]
    results = [curlResult(p) for p in processes]
    wall = time.monotonic() - started
    for code, got, _ in results:
        if code != 200 or got != size:
            raise SystemExit(f"burst download of {url} failed: HTTP {code}, {got} of {size}")
    return wall


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
user root;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    default_type application/octet-stream;
    client_body_temp_path {work}/nginx-tmp/body;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;
    proxy_cache_path {work}/nginx-cache levels=1:2 keys_zone=blobs:10m
                     max_size=4g inactive=1h use_temp_path=off;
    server {{
        listen 127.0.0.1:{staticPort};
        root {staticRoot};
    }}
    server {{
        listen 127.0.0.1:{proxyPort};
        location / {{
            proxy_pass http://127.0.0.1:{cdnPort};
            proxy_http_version 1.1;
            proxy_cache blobs;
            proxy_cache_key $uri;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 120s;
            proxy_cache_lock_age 120s;
            proxy_cache_valid 200 1h;
        }}
    }}
}}
"""


class Snapstores:
    """
    Starts C{twistd -n snapstore} processes in front of the fake store,
    each with its own data directory, from this checkout or another
    (C{--baseline}), and asks them about snaps as snapd would.
    """

    def __init__(self, work: str, apiURL: str, processes: list[subprocess.Popen]) -> None:
        self.work = work
        self.apiURL = apiURL
        self.processes = processes
        self.log = open(os.path.join(work, "snapstore.log"), "w")
        # An explicit, empty config file: an installed package's
        # /etc/snapstore/snapstore.conf must not send the bench's blobs to
        # its cache directory.
        self.config = os.path.join(work, "snapstore.conf")
        with open(self.config, "w") as empty:
            empty.write("[snapstore]\n")
        self.rulesDir = os.path.join(ROOT, "rules.d")
        if not os.path.isdir(self.rulesDir):
            self.rulesDir = os.path.join(work, "rules.d")
            os.makedirs(self.rulesDir, exist_ok=True)

    def start(self, name: str, extra: list[str], root: str = ROOT) -> tuple[subprocess.Popen, str]:
        """
        @return: the process and its base URL.
        """
        port = freePort()
        process = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "snapstore", "--config", self.config,
                      "--store-endpoint", f"tcp:{port}:interface=127.0.0.1",
                      "--proxy-endpoint", "none", "--admin-endpoint", "none",
                      "--upstream", self.apiURL, "--data-dir", os.path.join(self.work, name),
                      "--rules-dir", self.rulesDir, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=root),
            cwd=self.work)
        self.processes.append(process)
        waitForPort(port, process, f"snapstore ({name})")
        return process, f"http://127.0.0.1:{port}/"

    @staticmethod
    def downloadURL(base: str, name: str) -> str:
        # Ask the proxy about the snap, as snapd would: the relay rewrites
        # the download URL and records the blob.
        with urllib.request.urlopen(f"{base}v2/snaps/info/{name}") as answer:
            info = json.load(answer)
        return info["channel-map"][0]["download"]["url"]


def gbps(rate: float) -> str:
    return f"{rate / 1e9:.2f} GB/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hit-size", type=int, default=GIB,
                        help="(a) and (d): the blob filled cold, then hit [default: 1 GiB]")
    parser.add_argument("--burst-size", type=int, default=100 * MIB)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5, help="hit runs per server")
    parser.add_argument("--rounds", type=int, default=3,
                        help="cold bursts per server (each on a blob new to both caches)")
    parser.add_argument("--rate", default="16M",
                        help="(e) the --upstream-rate of a second snapstore [default: 16M]")
    parser.add_argument("--rate-size", type=int, default=64 * MIB,
                        help="(e) the blob filled under --rate [default: 64 MiB]")
    parser.add_argument("--baseline", metavar="DIR",
                        help="another checkout (e.g. a worktree of main) whose snapstore fills "
                             "--cold-runs blobs too, alternating with this one's")
    parser.add_argument("--cold-runs", type=int, default=None,
                        help="more cold fills of fresh blobs, through this checkout (and "
                             "--baseline's) [default: 2 with --baseline, else 0]")
    parser.add_argument("--cold-size", type=int, default=None,
                        help="the blobs of --cold-runs [default: --hit-size]")
    parser.add_argument("--cold-only", action="store_true",
                        help="only the cold fills: (d) and --cold-runs, no (a), (b), (e)")
    parser.add_argument("--keep", action="store_true", help="keep bench/_work/cache")
    options = parser.parse_args()
    coldRuns = options.cold_runs if options.cold_runs is not None else (
        2 if options.baseline else 0)
    coldSize = options.cold_size or options.hit_size
    if options.baseline and not os.path.isdir(os.path.join(options.baseline, "snapstore")):
        raise SystemExit(f"--baseline {options.baseline}: not a snapstore checkout")
    requireTools("bench/cache.py", *(() if options.cold_only else ("nginx",)))

    work = os.path.join(ROOT, "bench", "_work", "cache")
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("data", "nginx-cache", "nginx-tmp"):
        os.makedirs(os.path.join(work, sub))
    processes: list[subprocess.Popen] = []
    upstream = FakeUpstream()
    colds: list[ColdFill] = []
    rounds = 0 if options.cold_only else options.rounds
    try:
        print(f"generating blobs ({options.hit_size} and {options.burst_size} bytes)...",
              file=sys.stderr)
        upstream.start([("big", 1, options.hit_size)] +
                       [(f"burst{n}", 1, options.burst_size) for n in range(rounds)] +
                       [("ratehit", 1, 16 * MIB), ("ratefill", 1, options.rate_size)] +
                       [(f"cold{n}", 1, coldSize) for n in range(coldRuns)] +
                       [(f"basecold{n}", 1, coldSize)
                        for n in range(coldRuns if options.baseline else 0)])
        store = upstream.store
        apiURL = store.apiURL
        cdnThread = upstream.call(threading.get_native_id)

        snapstores = Snapstores(work, apiURL, processes)
        snapstore, base = snapstores.start(
            "data", ["--cache-dir", os.path.join(work, "data", "cache"),
                     "--cache-size", str(4 * GIB)])
        rss = RSSWatcher(snapstore.pid)
        rss.start()
        downloadURL = lambda name: snapstores.downloadURL(base, name)
        baseline = None
        if options.baseline:
            baseline, baselineBase = snapstores.start(
                "baseline", ["--cache-size", str(4 * GIB)], root=os.path.abspath(options.baseline))

        def cdnURL(name: str) -> str:
            # Where the fake store's API redirects a download of the blob.
            return subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{redirect_url}",
                 f"{apiURL}api/v1/snaps/download/{store.snapId(name)}_1.snap"],
                capture_output=True, text=True, check=True).stdout

        def cachedPath(data: str, name: str) -> Callable[[], str]:
            size = store._blobById(store.snapId(name), 1).size
            return lambda: os.path.join(work, data, "cache", "blobs",
                                        f"{store.blobDigest(name, 1)}-{size}")

        # (a) cache hits: fill once, then time hits against nginx static on
        # the very file snapstore cached.
        bigURL = downloadURL("big")
        # (d) the first download is a cold one: streamed through while the
        # cache fills (the RSS watcher already runs); compare with fetching
        # the same blob straight from the fake store's CDN, and with one
        # core hashing those same bytes (what bounds it).
        cold = coldFill("(d) this checkout", bigURL, options.hit_size, snapstore.pid, cdnThread,
                        cachedPath("data", "big"))
        colds.append(cold)
        coldRate, shaRate = cold.rate, cold.shaRate
        directRate = single(cdnURL("big"), options.hit_size)
        staticRoot = os.path.join(work, "data", "cache", "blobs")
        staticName = os.path.basename(cachedPath("data", "big")())

        # More cold fills, this checkout and the baseline's alternating.
        for n in range(coldRuns):
            fills = [("this checkout", base, snapstore, f"cold{n}", "data")]
            if baseline is not None:
                fills.append(("--baseline", baselineBase, baseline, f"basecold{n}", "baseline"))
            if n % 2:
                fills.reverse()
            for label, at, process, name, data in fills:
                colds.append(coldFill(label, snapstores.downloadURL(at, name), coldSize,
                                      process.pid, cdnThread, cachedPath(data, name)))
        if baseline is not None:
            stop(baseline, timeout=10)

        hits, statics = [], []
        snapWalls, snapUpstreams, nginxWalls, nginxUpstreams = [], [], [], []
        if not options.cold_only:
            staticPort, proxyPort = freePort(), freePort()
            conf = os.path.join(work, "nginx.conf")
            with open(conf, "w") as config:
                config.write(NGINX_CONF.format(work=work, staticPort=staticPort,
                                               proxyPort=proxyPort, staticRoot=staticRoot,
                                               cdnPort=store.cdnPort))
            nginx = subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", work],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            processes.append(nginx)
            waitForPort(staticPort, nginx, "nginx")
            staticURL = f"http://127.0.0.1:{staticPort}/{staticName}"

            single(staticURL, options.hit_size)  # page cache warm for both
            for run in range(options.runs):
                # Alternate who goes first, so that neither always gets the
                # CPUs right after the other finished.
                if run % 2:
                    statics.append(single(staticURL, options.hit_size))
                    hits.append(single(bigURL, options.hit_size))
                else:
                    hits.append(single(bigURL, options.hit_size))
                    statics.append(single(staticURL, options.hit_size))

            # (b) cold bursts: 50 clients, one blob neither cache has seen;
            # each round takes a new blob, snapstore and nginx alternating.
            for n in range(rounds):
                name = f"burst{n}"
                burstURL = downloadURL(name)
                before = upstream.cdnBytes()
                snapWalls.append(burst(burstURL, options.burst_size, options.clients))
                snapUpstreams.append(upstream.cdnBytes() - before)

                cdnPath = cdnURL(name).split("/", 3)[3]
                before = upstream.cdnBytes()
                nginxWalls.append(burst(f"http://127.0.0.1:{proxyPort}/{cdnPath}",
                                        options.burst_size, options.clients))
                nginxUpstreams.append(upstream.cdnBytes() - before)

        peakRSS = rss.stop()

        if not options.cold_only:
            # (e) a second snapstore with --upstream-rate: a fill under the
            # cap, and a hit served meanwhile from the same node.
            _, base = snapstores.start("capped", ["--upstream-rate", options.rate])
            single(downloadURL("ratehit"), 16 * MIB)  # cached, under the cap
            fillURL, hitURL = downloadURL("ratefill"), downloadURL("ratehit")
            filling = curl(fillURL)
            time.sleep(0.5)
            rateHit = single(hitURL, 16 * MIB)
            _, filled, seconds = curlResult(filling)
            fillRate = filled / seconds
    finally:
        for process in reversed(processes):
            stop(process, timeout=10)
        try:
            upstream.stop()
        except Exception:
            pass
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)

    printColdFills(colds)
    if options.cold_only:
        print(f"\n(d) cold download {gbps(coldRate)}, straight from the fake CDN "
              f"{gbps(directRate)}, one core hashing sha3-384 {gbps(shaRate)}: "
              f"{coldRate / shaRate:.2f}x (target >= 0.8x); snapstore peak RSS "
              f"{peakRSS / MIB:.0f} MiB")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
        return
    hit, static = statistics.median(hits), statistics.median(statics)
    capRate = parseSize(options.rate)
    snapWall, nginxWall = statistics.median(snapWalls), statistics.median(nginxWalls)
    snapUpstream, nginxUpstream = max(snapUpstreams), max(nginxUpstreams)
    rows = [
        ("(a) cache hit, 1 client, %d MiB (median of %d)" % (options.hit_size >> 20, options.runs),
         gbps(hit), gbps(static) + " (nginx static, sendfile)", f"{hit / static:.2f}x", ">= 1.0x"),
        ("(b) cold burst, %d clients x %d MiB: wall (median of %d)"
         % (options.clients, options.burst_size >> 20, options.rounds),
         f"{snapWall:.2f} s", f"{nginxWall:.2f} s (nginx proxy_cache + lock)",
         f"{snapWall / nginxWall:.2f}x", "<= 1.2x"),
        ("(b) upstream bytes (largest round)", f"{snapUpstream / options.burst_size:.2f} blobs ({snapUpstream} B)",
         f"{nginxUpstream / options.burst_size:.2f} blobs ({nginxUpstream} B)", "",
         "exactly 1 blob"),
        ("(c) snapstore peak RSS during (a), (b) and (d)", f"{peakRSS / MIB:.0f} MiB", "", "",
         "< 150 MB"),
        ("(d) cold download, 1 client, %d MiB (streamed while filling)" % (options.hit_size >> 20),
         gbps(coldRate), gbps(directRate) + " (straight from the fake CDN)",
         f"{coldRate / directRate:.2f}x", "memory flat: see (c)"),
        ("(d) the same, against one core hashing sha3-384 (same bytes, %d KiB pieces)"
         % (CHUNK >> 10), gbps(coldRate), gbps(shaRate) + " (hashlib, this process)",
         f"{coldRate / shaRate:.2f}x", ">= 0.8x"),
        ("(e) fill under --upstream-rate %s, %d MiB" % (options.rate, options.rate_size >> 20),
         f"{fillRate / MIB:.2f} MiB/s", f"cap {capRate / MIB:.2f} MiB/s",
         f"{fillRate / capRate:.2f}x", "within 10% of the cap"),
        ("(e) cache hit during that fill, 16 MiB", gbps(rateHit), "", "",
         "not throttled"),
    ]
    printTable(("measurement", "snapstore", "nginx", "ratio", "target"), rows)
    print(f"\nhit runs (GB/s): snapstore {[round(r / 1e9, 2) for r in hits]}, "
          f"nginx {[round(r / 1e9, 2) for r in statics]}")
    print(f"burst rounds (s): snapstore {[round(w, 2) for w in snapWalls]}, "
          f"nginx {[round(w, 2) for w in nginxWalls]}; upstream bytes per round: "
          f"snapstore {snapUpstreams}, nginx {nginxUpstreams}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
