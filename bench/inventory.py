#!/usr/bin/env python3
"""
How long C{snapstore inventory} takes on a large fleet, on SQLite and on
PostgreSQL.

    flock /tmp/snapstore-bench.lock python3 bench/inventory.py [--devices 10000] [--snaps 20]

All on loopback: the fake store (tests/fakestore) as a child process with
SNAPS snaps of two revisions each (stable and candidate), and snapstore as
a real C{twistd -n snapstore} in front of it.  The fleet is built through
the store endpoint only, as devices build it: each device asks a nonce,
opens a device session (brand/model/serial) and sends one refresh whose
context lists its SNAPS installed snaps (revision and channel varying per
device, half the fleet amd64 and half arm64).  Nothing writes rows
directly.  Then the admin API's C{GET /v1/inventory} (what
C{snapstore inventory} asks) is timed, and the counts are checked to add
up to the fleet.

PostgreSQL: a temporary database on 127.0.0.1:5432 (trust auth; override
with $SNAPSTORE_BENCH_PG as a libpq URL to the server's C{postgres}
database), dropped at the end.  Work files go to bench/_work/inventory.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import TWISTD, freePort, stop, waitForPort

PG_SERVER = os.environ.get("SNAPSTORE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def sessionRequest(serial: str, nonce: str) -> str:
    return (f"type: device-session-request\nbrand-id: acme\nmodel: gizmo\n"
            f"serial: {serial}\nnonce: {nonce}\ntimestamp: 2026-01-01T00:00:00Z\n"
            f"sign-key-sha3-384: abc\n\nSIGNATURE")


class Device:
    """
    One device's calls over a kept-alive connection.
    """

    def __init__(self, connection: http.client.HTTPConnection) -> None:
        self.connection = connection

    def call(self, method: str, path: str, headers: dict[str, str], body: object = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers = dict(headers, **{"Content-Type": "application/json"})
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status} {raw[:200]!r}")
        return json.loads(raw)

    def join(self, serial: str, architecture: str, installed: list[tuple[str, int, str]]) -> None:
        headers = {"Snap-Device-Series": "16", "Snap-Device-Architecture": architecture,
                   "Accept": "application/json"}
        nonce = self.call("POST", "/api/v1/snaps/auth/nonces", headers)["nonce"]
        session = self.call("POST", "/api/v1/snaps/auth/sessions", headers, {
            "device-session-request": sessionRequest(serial, nonce),
            "serial-assertion": "serial", "model-assertion": "model"})["macaroon"]
        headers["Snap-Device-Authorization"] = f'Macaroon root="{session}"'
        self.call("POST", "/v2/snaps/refresh", headers, {
            "context": [{"snap-id": snapId, "instance-key": snapId, "revision": revision,
                         "tracking-channel": channel, "epoch": {"read": [0], "write": [0]}}
                        for snapId, revision, channel in installed],
            "actions": [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}
                        for snapId, _, _ in installed],
            "fields": ["revision", "name", "snap-id"]})


def buildFleet(port: int, snapIds: list[str], devices: int, workers: int) -> float:
    """
    Send every device's session and refresh; return the seconds it took.
    """
    jobs: queue.Queue = queue.Queue()
    for n in range(devices):
        architecture = "amd64" if n % 2 == 0 else "arm64"
        installed = [(snapId, 1 + (n + index) % 2,
                      "latest/stable" if (n + index) % 3 else "latest/candidate")
                     for index, snapId in enumerate(snapIds)]
        jobs.put((f"BENCH-{n:06d}", architecture, installed))
    errors: list[BaseException] = []

    def work() -> None:
        device = Device(http.client.HTTPConnection("127.0.0.1", port, timeout=60))
        while not errors:
            try:
                serial, architecture, installed = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                device.join(serial, architecture, installed)
            except BaseException as error:
                errors.append(error)

    started = time.monotonic()
    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"building the fleet failed: {errors[0]}")
    return time.monotonic() - started


def timeInventory(adminPort: int, runs: int, snap: str | None = None) -> tuple[list[float], dict]:
    url = f"http://127.0.0.1:{adminPort}/v1/inventory" + (f"?snap={snap}" if snap else "")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    times, answer = [], {}
    for _ in range(runs):
        started = time.monotonic()
        with opener.open(url, timeout=120) as response:
            answer = json.load(response)
        times.append(time.monotonic() - started)
    return times, answer


def installsCounted(answer: dict) -> int:
    return sum(r["devices"] for s in answer["snaps"] for r in s["revisions"])


def awaitRecorded(adminPort: int, expected: int, timeout: float = 60) -> None:
    """
    Wait until the inventory holds every install the fleet reported. A
    device's refresh is answered before its installed set is written (the
    record never delays a device), so the last devices' rows land a moment
    after the fleet is built; timing the inventory before that would time a
    smaller fleet.
    """
    deadline = time.monotonic() + timeout
    while True:
        _, answer = timeInventory(adminPort, 1)
        counted = installsCounted(answer)
        if counted == expected:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"inventory counts {counted} installs {timeout:.0f} s after the "
                             f"fleet was built, expected {expected}")
        time.sleep(0.2)


def createDatabase(name: str) -> str:
    import psycopg2

    connection = psycopg2.connect(PG_SERVER)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return PG_SERVER.rsplit("/", 1)[0] + "/" + name


def dropDatabase(name: str) -> None:
    import psycopg2

    connection = psycopg2.connect(PG_SERVER)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--snaps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8, help="devices sending at once")
    parser.add_argument("--runs", type=int, default=5, help="timed inventory calls")
    parser.add_argument("--backends", default="sqlite,postgresql")
    options = parser.parse_args()

    work = os.path.join(ROOT, "bench", "_work", "inventory")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    environment = dict(os.environ, PYTHONPATH=ROOT)
    snapArgs = []
    for index in range(options.snaps):
        snapArgs += ["--snap", f"bench{index:02d}:1:64", "--snap",
                     f"bench{index:02d}:2:64:candidate"]
    fake = subprocess.Popen([sys.executable, "-m", "tests.fakestore", *snapArgs],
                            stdout=subprocess.PIPE, text=True, env=environment, cwd=ROOT)
    apiURL, snapIds = "", {}
    for line in fake.stdout:
        fields = line.split()
        if fields[0] == "api":
            apiURL = fields[1]
        elif fields[0] == "snap":
            snapIds[fields[1]] = fields[2]
            if len(snapIds) == options.snaps and fields[3] == "2":
                break
    rows = []
    try:
        for backend in options.backends.split(","):
            dbName = f"snapstore_bench_inventory_{os.getpid()}"
            state = createDatabase(dbName) if backend == "postgresql" else None
            storePort, adminPort = freePort(), freePort()
            config = os.path.join(work, "snapstore.conf")
            with open(config, "w") as empty:
                empty.write("[snapstore]\n")
            dataDir = os.path.join(work, backend)
            argv = [*TWISTD, "-n", "--pidfile=", "snapstore",
                    "--config", config, "--store-endpoint", f"tcp:{storePort}:interface=127.0.0.1",
                    "--proxy-endpoint", "none",
                    "--admin-endpoint", f"tcp:{adminPort}:interface=127.0.0.1",
                    "--upstream", apiURL, "--data-dir", dataDir,
                    "--rules-dir", os.path.join(ROOT, "rules.d"),
                    "--device-session-rate", "0"]
            if state:
                argv += ["--state", state]
            log = open(os.path.join(work, f"snapstore-{backend}.log"), "w")
            snapstore = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=environment, cwd=work)
            try:
                waitForPort(storePort, snapstore, "snapstore")
                waitForPort(adminPort, snapstore, "snapstore admin")
                print(f"{backend}: building {options.devices} devices x {options.snaps} snaps...",
                      file=sys.stderr)
                built = buildFleet(storePort, list(snapIds.values()), options.devices,
                                   options.workers)
                awaitRecorded(adminPort, options.devices * options.snaps)
                times, answer = timeInventory(adminPort, options.runs)
                counted = installsCounted(answer)
                if counted != options.devices * options.snaps:
                    raise SystemExit(f"{backend}: inventory counts {counted} installs, "
                                     f"expected {options.devices * options.snaps}")
                oneTimes, _ = timeInventory(adminPort, options.runs, "bench07")
                rows.append((backend, options.devices, options.snaps, built,
                             statistics.median(times), max(times),
                             statistics.median(oneTimes)))
            finally:
                stop(snapstore)
                if state:
                    dropDatabase(dbName)
    finally:
        stop(fake)
    print("| state | devices | snaps each | fleet built through the store endpoint | "
          "inventory (median of %d) | inventory (slowest) | inventory SNAP (median) | target |"
          % options.runs)
    print("|---|---|---|---|---|---|---|---|")
    for backend, devices, snaps, built, median, slowest, one in rows:
        print(f"| {backend} | {devices} | {snaps} | {built:.0f} s ({devices / built:.0f} "
              f"devices/s) | {median * 1000:.0f} ms | {slowest * 1000:.0f} ms | "
              f"{one * 1000:.0f} ms | < 1 s |")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
