#!/usr/bin/env python3
# -*- test-case-name: tests.test_hardening_input -*-
"""
Soak: a simulated fleet against a real snapstore, on loopback.

    flock /tmp/snapstore-bench.lock python3 bench/soak.py [--devices 1000] [--duration 60]
    flock /tmp/snapstore-bench.lock python3 bench/soak.py --baseline REV [--rounds 1]

Starts the fake store (C{python -m tests.fakestore}, its own process) with a
few snaps, and C{twistd -n snapstore} in front of it.  Then, in this
process (asyncio, one keep-alive connection per device):

  - C{--idle} connections (default 2,000) each make one request and then
    stay open, idle, for the whole run;
  - C{--devices} devices (default 1,000), each with its own serial: one
    device session (nonce, then session with a C{device-session-request}
    naming the serial), then cycles of refresh -> download -> assertions
    (C{snap-revision}, C{snap-declaration}) with their session macaroon,
    a random snap each cycle, a short random pause between cycles, until
    C{--duration} seconds passed or C{--cycles} cycles were done.

Every answer is checked: status 200, download size and sha3-384 as the
refresh promised.  At the end it prints requests/s, refresh p50/p99, the
errors (must be 0), upstream fetches per blob (bytes snapstore took from
upstream over the bytes of the distinct blobs, from its C{/metrics}; must
be 1.00), snapstore's peak RSS, and how many idle connections survived.

With C{--baseline REV} it soaks, in the same run, the snapstore of an
older commit too (a C{git worktree} of REV under bench/_work, its own
package first on C{PYTHONPATH}; the fake store and the simulated fleet are
this checkout's), prints both columns and the ratio of their refresh p99,
and judges this checkout against it (p99 at most half the baseline's).
Work files go to bench/_work/soak (removed unless --keep).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import freePort, percentile, requireTools, stop, waitForPort


def raiseFileLimit(wanted: int) -> int:
    """
    Raise this process's soft open-file limit towards C{wanted} (children
    inherit it), never past the hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def peakRSS(pid: int) -> int:
    """
    The peak resident set (VmHWM) of a live process, in bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class HTTPError(Exception):
    pass


class Connection:
    """
    One HTTP/1.1 keep-alive connection (enough of HTTP for this bench:
    Content-Length bodies, which is all snapstore sends here).

    @cvar timeout: seconds an answer may take; a request left unanswered
        longer fails (an error of the run) instead of holding the run open
        for ever.
    """

    timeout = 120.0

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader = reader
        self.writer = writer
        self.host = f"127.0.0.1:{port}"

    @classmethod
    async def open(cls, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer, port)

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            return await asyncio.wait_for(self._answer(method, path), self.timeout)
        except asyncio.TimeoutError:
            raise HTTPError(f"{method} {path}: no answer within {self.timeout:g}s")

    async def _answer(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        statusLine, *headerLines = head.decode("latin-1").split("\r\n")
        status = int(statusLine.split(" ", 2)[1])
        received = {}
        for line in headerLines:
            if ":" in line:
                name, _, value = line.partition(":")
                received[name.strip().lower()] = value.strip()
        if "content-length" not in received:
            raise HTTPError(f"{method} {path}: no Content-Length ({status})")
        content = await self.reader.readexactly(int(received["content-length"]))
        return status, received, content

    def close(self) -> None:
        self.writer.close()


class Fleet:
    """
    The devices and what they saw.
    """

    def __init__(self, port: int, snaps: list[str], deadline: float, cycles: int) -> None:
        self.port = port
        self.snaps = snaps
        self.deadline = deadline
        self.cycles = cycles
        self.requests = 0
        self.errors: list[str] = []
        self.refreshLatencies: list[float] = []
        self.blobs: dict[str, int] = {}
        self.misses = 0

    def error(self, what: str) -> None:
        if len(self.errors) < 20:
            print(f"error: {what}", file=sys.stderr)
        self.errors.append(what)

    async def device(self, serial: int) -> None:
        try:
            connection = await Connection.open(self.port)
        except OSError as error:
            self.error(f"device {serial}: cannot connect: {error}")
            return
        try:
            await self._run(connection, serial)
        except (OSError, HTTPError, asyncio.IncompleteReadError, ValueError, KeyError) as error:
            self.error(f"device {serial}: {type(error).__name__}: {error}")
        finally:
            connection.close()

    async def _run(self, connection: Connection, serial: int) -> None:
        status, _, body = await connection.request("POST", "/api/v1/snaps/auth/nonces")
        self.requests += 1
        if status != 200:
            return self.error(f"nonce {status}")
        nonce = json.loads(body)["nonce"]
        sessionRequest = (f"type: device-session-request\nbrand-id: soak\nmodel: fleet-{serial % 10}\n"
                          f"serial: device-{serial:05d}\nnonce: {nonce}\n"
                          f"timestamp: 2026-01-01T00:00:00Z\nsign-key-sha3-384: x\n\nsig")
        status, _, body = await connection.request(
            "POST", "/api/v1/snaps/auth/sessions", {"Content-Type": "application/json"},
            json.dumps({"device-session-request": sessionRequest, "serial-assertion": "",
                        "model-assertion": ""}).encode())
        self.requests += 1
        if status != 200:
            return self.error(f"session {status}: {body[:200]!r}")
        macaroon = json.loads(body)["macaroon"]
        device = {"Snap-Device-Authorization": f'Macaroon root="{macaroon}"',
                  "Snap-Device-Series": "16", "Snap-Device-Architecture": "amd64",
                  "Snap-Classic": "true"}
        done = 0
        while done < self.cycles and time.monotonic() < self.deadline:
            await self._cycle(connection, device, random.choice(self.snaps))
            done += 1
            await asyncio.sleep(random.uniform(0.0, 0.5))

    async def _cycle(self, connection: Connection, device: dict[str, str], snap: str) -> None:
        refresh = json.dumps({
            "context": [],
            "actions": [{"action": "download", "instance-key": "download-1", "name": snap,
                         "epoch": None}],
            "fields": ["download", "revision", "snap-id", "name"],
        }).encode()
        started = time.monotonic()
        status, _, body = await connection.request(
            "POST", "/v2/snaps/refresh",
            dict(device, **{"Content-Type": "application/json", "Accept": "application/json"}),
            refresh)
        self.refreshLatencies.append(time.monotonic() - started)
        self.requests += 1
        if status != 200:
            return self.error(f"refresh {snap}: {status} {body[:200]!r}")
        result = json.loads(body)["results"][0]
        download = result["snap"]["download"]
        url = download["url"]
        if not url.startswith(f"http://127.0.0.1:{self.port}/"):
            return self.error(f"download URL not rewritten: {url}")
        status, headers, blob = await connection.request(
            "GET", "/" + url.split("/", 3)[3],
            {"X-Device-Authorization": device["Snap-Device-Authorization"], "Accept": ""})
        self.requests += 1
        if status != 200:
            return self.error(f"download {snap}: {status}")
        if headers.get("x-cache") == "MISS":
            self.misses += 1
        digest = hashlib.sha3_384(blob).hexdigest()
        if len(blob) != download["size"] or digest != download["sha3-384"]:
            return self.error(f"download {snap}: {len(blob)} bytes, sha3-384 {digest[:16]}...")
        self.blobs[digest] = len(blob)
        encoded = base64.urlsafe_b64encode(bytes.fromhex(digest)).decode().rstrip("=")
        for path in (f"/v2/assertions/snap-revision/{encoded}?max-format=0",
                     f"/v2/assertions/snap-declaration/16/{result['snap-id']}?max-format=5"):
            status, headers, _ = await connection.request(
                "GET", path, {"Accept": "application/x.ubuntu.assertion"})
            self.requests += 1
            if status != 200:
                return self.error(f"assertion {path}: {status}")


async def holdIdle(port: int, count: int, ready: asyncio.Event, stop: asyncio.Event,
                   survivors: list[int], errors: list[str]) -> None:
    """
    Open C{count} keep-alive connections, make one request on each, and
    keep them open and idle until C{stop}; count those still open then.
    """
    connections: list[Connection] = []

    async def one() -> None:
        try:
            connection = await Connection.open(port)
            status, _, _ = await connection.request("GET", "/v1/client-config")
            connections.append(connection)
        except (OSError, HTTPError, asyncio.IncompleteReadError) as error:
            errors.append(f"idle connection: {error}")

    for start in range(0, count, 200):
        await asyncio.gather(*(one() for _ in range(min(200, count - start))))
    ready.set()
    await stop.wait()
    alive = 0
    for connection in connections:
        # A connection the server closed reads EOF at once.
        try:
            await asyncio.wait_for(connection.reader.read(1), 0.001)
        except asyncio.TimeoutError:
            alive += 1
        except OSError:
            pass
        connection.close()
    survivors.append(alive)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def fetchMetrics(adminPort: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{adminPort}/metrics", timeout=10) as answer:
        return answer.read().decode()


async def soak(options: argparse.Namespace, storePort: int) -> tuple[Fleet, int, list[str], float]:
    ready, stop = asyncio.Event(), asyncio.Event()
    survivors: list[int] = []
    idleErrors: list[str] = []
    idle = asyncio.ensure_future(holdIdle(storePort, options.idle, ready, stop, survivors, idleErrors))
    await ready.wait()
    snaps = [f"soak{index}" for index in range(options.snaps)]
    started = time.monotonic()
    fleet = Fleet(storePort, snaps, started + options.duration, options.cycles)
    # Devices join over the first second, as a fleet waking up would.
    tasks = []
    for serial in range(options.devices):
        tasks.append(asyncio.ensure_future(fleet.device(serial)))
        if serial % 100 == 99:
            await asyncio.sleep(0.1)
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    stop.set()
    await idle
    return fleet, survivors[0] if survivors else 0, idleErrors, elapsed


def errorKinds(errors: list[str], most: int = 2) -> str:
    """
    The commonest kinds of C{errors} with their counts (numbers, snap
    names and ports folded, messages cut short), or a dash.
    """
    kinds = collections.Counter(re.sub(r"\d+", "N", error)[:70] for error in errors)
    return "; ".join(f"{count} x {kind}" for kind, count in kinds.most_common(most)) or "-"


@dataclass
class SoakResult:
    """
    What one soak measured.
    """

    fleet: Fleet
    elapsed: float
    alive: int
    rss: int
    errors: int
    perBlob: float

    @property
    def p99(self) -> float:
        return percentile(self.fleet.refreshLatencies, 0.99)

    def targetsMet(self) -> bool:
        return self.errors == 0 and abs(self.perBlob - 1.0) < 1e-9 and self.rss < 300e6


def runSoak(options: argparse.Namespace, tree: str, work: str) -> SoakResult:
    """
    One soak of the snapstore in source tree C{tree} (this checkout, or
    the C{--baseline} one) in front of this checkout's fake store; the
    figures of the table.
    """
    os.makedirs(os.path.join(work, "rules.d"))
    apiPort, cdnPort, storePort, adminPort = freePort(), freePort(), freePort(), freePort()
    fakeLog = open(os.path.join(work, "fakestore.log"), "w")
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakestore", "--api-port", str(apiPort), "--cdn-port", str(cdnPort)]
        + [arg for index in range(options.snaps) for arg in ("--snap", f"soak{index}:1:{options.size}")],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=fakeLog, stderr=subprocess.STDOUT)
    storeLog = open(os.path.join(work, "snapstore.log"), "w")
    store = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
         "snapstore", "--config", os.devnull, "--upstream", f"http://127.0.0.1:{apiPort}/",
         "--store-endpoint", f"tcp:{storePort}:interface=127.0.0.1:backlog=4096",
         "--admin-endpoint", f"tcp:{adminPort}:interface=127.0.0.1",
         "--proxy-endpoint", "none", "--data-dir", os.path.join(work, "data"),
         # Every simulated device comes from 127.0.0.1: no per-address
         # bound on sessions or on connections.
         "--device-session-rate", "0", "--store-max-per-client", "0",
         "--rules-dir", os.path.join(work, "rules.d")],
        cwd=work, env=dict(os.environ, PYTHONPATH=tree), stdout=storeLog, stderr=subprocess.STDOUT)
    try:
        waitForPort(apiPort, fake, "fake store")
        waitForPort(storePort, store, "snapstore")
        waitForPort(adminPort, store, "snapstore admin")
        fleet, alive, idleErrors, elapsed = asyncio.run(soak(options, storePort))
        text = fetchMetrics(adminPort)
        fetched = metric(text, "snapstore_upstream_fetched_bytes_total")
        rss = peakRSS(store.pid)
        stillRunning = store.poll() is None
    finally:
        for process in (store, fake):
            stop(process)
        fakeLog.close()
        storeLog.close()
    blobBytes = sum(fleet.blobs.values())
    return SoakResult(fleet=fleet, elapsed=elapsed, alive=alive, rss=rss,
                      errors=len(fleet.errors) + len(idleErrors) + (0 if stillRunning else 1),
                      perBlob=fetched / blobBytes if blobBytes else float("nan"))


def tableRows(options: argparse.Namespace, result: SoakResult) -> list[tuple[str, str]]:
    fleet, elapsed = result.fleet, result.elapsed
    return [
        ("devices / idle connections", f"{options.devices} / {options.idle}"),
        ("duration (s)", f"{elapsed:.1f}"),
        ("requests", f"{fleet.requests}"),
        ("requests/s", f"{fleet.requests / elapsed:.0f}"),
        ("refreshes", f"{len(fleet.refreshLatencies)}"),
        ("refresh p50 (ms)", f"{percentile(fleet.refreshLatencies, 0.5) * 1000:.1f}"),
        ("refresh p99 (ms)", f"{result.p99 * 1000:.1f}"),
        ("errors (target 0)", f"{result.errors}"),
        ("distinct blobs / MISS answers", f"{len(fleet.blobs)} / {fleet.misses}"),
        ("upstream fetches per blob (target 1.00)", f"{result.perBlob:.2f}"),
        ("snapstore peak RSS (MB, target < 300)", f"{result.rss / 1e6:.0f}"),
        ("idle connections still open", f"{result.alive} of {options.idle}"),
    ]


class BaselineTree:
    """
    A detached C{git worktree} of an older commit of this repository, so
    that its snapstore runs in the same soak as this one; removed again
    on exit.
    """

    def __init__(self, revision: str, path: str) -> None:
        self.revision = revision
        self.path = path

    def __enter__(self) -> "BaselineTree":
        self._discard()
        made = subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", self.path,
                               self.revision], capture_output=True, text=True)
        if made.returncode != 0:
            raise SystemExit(f"--baseline {self.revision}: git worktree add failed: "
                             f"{made.stderr.strip()}")
        self.commit = subprocess.run(["git", "-C", self.path, "log", "-1", "--format=%h (%cs)"],
                                     capture_output=True, text=True, check=True).stdout.strip()
        # The test venv may install this checkout (editable): make sure the
        # baseline's own package is what its twistd imports.
        found = subprocess.run(
            [sys.executable, "-c", "import snapstore; print(snapstore.__file__)"],
            cwd=os.path.dirname(self.path), env=dict(os.environ, PYTHONPATH=self.path),
            capture_output=True, text=True).stdout.strip()
        if not found.startswith(os.path.join(self.path, "")):
            self._discard()
            raise SystemExit(f"--baseline: the interpreter imports snapstore from {found}, "
                             f"not from {self.path}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._discard()

    def _discard(self) -> None:
        if os.path.exists(self.path):
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", self.path],
                           capture_output=True)
        shutil.rmtree(self.path, ignore_errors=True)
        subprocess.run(["git", "-C", ROOT, "worktree", "prune"], capture_output=True)


RATIO_LABEL = "refresh p99, this / baseline (target <= 0.50)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds, at most")
    parser.add_argument("--cycles", type=int, default=5, help="cycles per device, at most")
    parser.add_argument("--snaps", type=int, default=8)
    parser.add_argument("--size", type=int, default=256 * 1024, help="bytes per snap")
    parser.add_argument("--baseline", metavar="REV",
                        help="also soak the snapstore of git revision REV (checked out with "
                             "git worktree under bench/_work), in the same run, and print "
                             "both and the ratio of their refresh p99")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --baseline: soaks of each, alternating which goes first")
    parser.add_argument("--request-timeout", type=float, default=Connection.timeout,
                        help="seconds an answer may take before it counts as an error")
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    requireTools("bench/soak.py")
    Connection.timeout = options.request_timeout

    limit = raiseFileLimit(2 * (options.devices + options.idle) + 1024)
    if limit < options.devices + options.idle + 256:
        raise SystemExit(f"open-file limit {limit} is too low for {options.devices} devices "
                         f"and {options.idle} idle connections")
    work = os.path.join(ROOT, "bench", "_work", "soak")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if options.baseline is None:
        result = runSoak(options, ROOT, os.path.join(work, "this"))
        rows = tableRows(options, result)
        width = max(len(name) for name, _ in rows)
        print(f"\nsnapstore soak ({os.cpu_count()} CPUs, loopback, blobs of {options.size} bytes, "
              f"load average {os.getloadavg()[0]:.2f} at the end)")
        for name, value in rows:
            print(f"  {name.ljust(width)}  {value}")
        verdict = result.targetsMet()
        if result.fleet.errors:
            print(f"  {'most frequent errors'.ljust(width)}  {errorKinds(result.fleet.errors)}")
        print(f"  {'targets met'.ljust(width)}  {'yes' if verdict else 'NO'}")
    else:
        with BaselineTree(options.baseline, os.path.join(ROOT, "bench", "_work", "soak-baseline")) as tree:
            runs: list[tuple[str, SoakResult]] = []
            for round in range(options.rounds):
                order = [("baseline", tree.path), ("this", ROOT)]
                for label, path in (order if round % 2 == 0 else order[::-1]):
                    print(f"soak {round + 1}/{options.rounds}: {label}...", file=sys.stderr)
                    runs.append((label, runSoak(options, path, os.path.join(work, f"{label}-{round}"))))
        baseline = [result for label, result in runs if label == "baseline"]
        this = [result for label, result in runs if label == "this"]
        tables = [(f"{label} {index // 2 + 1}", tableRows(options, result))
                  for index, (label, result) in enumerate(runs)]
        width = max(len(name) for name, _ in tables[0][1] + [(RATIO_LABEL, "")])
        columns = [max(len(title), *(len(value) for _, value in rows)) for title, rows in tables]
        print(f"\nsnapstore soak, this checkout against --baseline {tree.commit} "
              f"({os.cpu_count()} CPUs, loopback, blobs of {options.size} bytes, "
              f"load average {os.getloadavg()[0]:.2f} at the end)")
        print(f"  {''.ljust(width)}  " + "  ".join(title.rjust(w) for (title, _), w in zip(tables, columns)))
        for index, (name, _) in enumerate(tables[0][1]):
            print(f"  {name.ljust(width)}  "
                  + "  ".join(rows[index][1].rjust(w) for (_, rows), w in zip(tables, columns)))
        for (title, _), (_, result) in zip(tables, runs):
            if result.fleet.errors:
                print(f"  errors, {title}: {errorKinds(result.fleet.errors)}")
        before = statistics.median(result.p99 for result in baseline)
        after = statistics.median(result.p99 for result in this)
        ratio = after / before if before else float("nan")
        print(f"  {RATIO_LABEL.ljust(width)}  {ratio:.2f}  "
              f"(medians: {after * 1000:.1f} ms / {before * 1000:.1f} ms)")
        verdict = all(result.targetsMet() for result in this) and ratio <= 0.5
        print(f"  {'targets met (this checkout)'.ljust(width)}  {'yes' if verdict else 'NO'}")
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()
