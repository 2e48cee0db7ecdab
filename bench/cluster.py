#!/usr/bin/env python3
# -*- test-case-name: tests.test_cluster -*-
"""
Several nodes, one cache: one, two and three C{twistd snapstore} nodes on
one PostgreSQL database, on this machine, loopback only.

    flock /tmp/snapstore-bench.lock python3 bench/cluster.py [--seconds 10]

For each node count it starts the nodes (with C{--node-url} and a cluster
token, on a new database on C{$SNAPSTORE_TEST_POSTGRES} or
127.0.0.1:5432) in front of the fake store (tests/fakestore, in a thread of
this process so that its counters can be read), then measures:

  1. a refresh + download mix: one C{wrk} per node, C{--connections} in
     all spread over the nodes, nine C{POST /v2/snaps/refresh} for one
     download of a cached 256 KiB blob; requests/s summed over the nodes,
     and the CPU the nodes, this process (the fake store) and the machine
     used meanwhile;
  2. a cold burst: C{--clients} C{curl} downloads of a new blob at once,
     client i on node i mod N; wall time and upstream (fake CDN) fetches of
     the blob;
  3. each node's peak RSS over both.

Every figure is from this run; on a 2-core machine the nodes, PostgreSQL,
the fake store and the load generators share the same two cores, so the
throughput of several nodes is bounded by the CPU, not by snapstore: the
"machine busy" column says how saturated it was.  Work files go to
bench/_work/cluster and are removed at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.cache import FakeUpstream, RSSWatcher, curl, curlResult
from bench.common import freePort, stop, waitForPort
from bench.relay import SNAPD_FIELDS, cpuSeconds

MIB = 1 << 20
TOKEN = "bench-cluster-token-" + uuid.uuid4().hex

WRK_SCRIPT = """
local counter = 0
local refresh = wrk.format("POST", "/v2/snaps/refresh", {
  ["Content-Type"] = "application/json",
  ["Snap-Device-Series"] = "16",
  ["Snap-Device-Architecture"] = "amd64",
}, %s)
local download = wrk.format("GET", "%s")
request = function()
  counter = counter + 1
  if counter %% 10 == 0 then return download end
  return refresh
end
"""


def machineBusy() -> tuple[int, int]:
    """
    Busy and total jiffies of all CPUs so far (from /proc/stat).
    """
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def selfCPU() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Database:
    """
    A new database on the PostgreSQL server, dropped by L{drop}.
    """

    def __init__(self) -> None:
        import psycopg2

        self.server = os.environ.get("SNAPSTORE_TEST_POSTGRES",
                                     "postgresql://postgres@127.0.0.1:5432/postgres")
        self.name = "snapstore_bench_" + uuid.uuid4().hex[:12]
        connection = psycopg2.connect(self.server)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {self.name}")
        connection.close()
        self.url = self.server.rsplit("/", 1)[0] + "/" + self.name

    def drop(self) -> None:
        import psycopg2

        connection = psycopg2.connect(self.server)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        connection.close()


class Node:
    """
    One C{twistd snapstore} node process.
    """

    def __init__(self, work: str, name: str, apiURL: str, state: str, tokenFile: str) -> None:
        self.storePort, self.adminPort = freePort(), freePort()
        self.url = f"http://127.0.0.1:{self.storePort}/"
        directory = os.path.join(work, name)
        os.makedirs(os.path.join(directory, "rules.d"))
        self.log = open(os.path.join(work, f"{name}.log"), "w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "snapstore", "--config", os.devnull, "--upstream", apiURL,
             "--store-endpoint", f"tcp:{self.storePort}:interface=127.0.0.1:backlog=1024",
             "--admin-endpoint", f"tcp:{self.adminPort}:interface=127.0.0.1",
             "--proxy-endpoint", "none", "--state", state, "--node-url", self.url,
             "--cluster-token-file", tokenFile, "--cache-size", "4G",
             "--data-dir", directory, "--rules-dir", os.path.join(directory, "rules.d")],
            cwd=work, env=dict(os.environ, PYTHONPATH=ROOT), stdout=self.log,
            stderr=subprocess.STDOUT)
        self.rss = RSSWatcher(self.process.pid)

    def waitUntilListening(self) -> None:
        waitForPort(self.storePort, self.process, "snapstore")
        waitForPort(self.adminPort, self.process, "snapstore admin")
        self.rss.start()

    def admin(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.adminPort}/{path}") as answer:
            return json.load(answer)


def waitForMembers(node: Node, count: int, bound: float = 15.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < bound:
        nodes = node.admin("v1/nodes").get("nodes", [])
        if sum(1 for entry in nodes if entry["alive"]) >= count:
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"only {nodes} listed after {bound}s")


def recordBlob(node: Node, name: str) -> str:
    """
    Ask a node about C{name} as snapd would (the relay records the blob in
    the shared state); the download path, the same on every node.
    """
    with urllib.request.urlopen(f"{node.url}v2/snaps/info/{name}") as answer:
        info = json.load(answer)
    url = info["channel-map"][0]["download"]["url"]
    return "/" + url.split("/", 3)[3]


def runWrk(work: str, node: Node, seconds: float, connections: int, body: str,
           downloadPath: str) -> subprocess.Popen:
    script = os.path.join(work, f"mix-{node.storePort}.lua")
    with open(script, "w") as lua:
        lua.write(WRK_SCRIPT % (json.dumps(body), downloadPath))
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", script,
         node.url],
        stdout=subprocess.PIPE, text=True)


def wrkResult(process: subprocess.Popen) -> tuple[float, tuple[int, int]]:
    """
    Requests/s, and the (non-2xx answers, socket errors and timeouts).
    """
    output = process.communicate(timeout=120)[0]
    match = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    if match is None:
        raise SystemExit(f"wrk failed:\n{output}")
    refused = socket = 0
    found = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if found:
        refused = int(found.group(1))
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      output)
    if found:
        socket = sum(int(group) for group in found.groups())
    return float(match.group(1)), (refused, socket)


def measure(count: int, options: argparse.Namespace, upstream: FakeUpstream, work: str,
            snapIds: list[str]) -> dict:
    store = upstream.store
    database = Database()
    tokenFile = os.path.join(work, "token")
    with open(tokenFile, "w") as token:
        token.write(TOKEN)
    nodes: list[Node] = []
    try:
        for index in range(count):
            nodes.append(Node(work, f"n{count}-{index}", store.apiURL, database.url, tokenFile))
        for node in nodes:
            node.waitUntilListening()
        listed = waitForMembers(nodes[0], count)
        # Warm-up: the mix blob recorded and cached on every node (the
        # first from upstream, the others from it).
        mixPath = recordBlob(nodes[0], "mix")
        for node in nodes:
            with urllib.request.urlopen(node.url + mixPath[1:]) as answer:
                answer.read()
        body = {"context": [{"snap-id": snapId, "instance-key": snapId, "revision": 1,
                             "tracking-channel": "stable", "epoch": {"read": [0], "write": [0]},
                             "refreshed-date": "2026-01-01T00:00:00Z"} for snapId in snapIds],
                "actions": [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}
                            for snapId in snapIds],
                "fields": SNAPD_FIELDS}
        perNode = max(1, options.connections // count)
        cpuBefore = [cpuSeconds(node.process.pid) for node in nodes]
        selfBefore = selfCPU()
        busyBefore, totalBefore = machineBusy()
        loads = [runWrk(work, node, options.seconds, perNode, json.dumps(body), mixPath)
                 for node in nodes]
        results = [wrkResult(load) for load in loads]
        busyAfter, totalAfter = machineBusy()
        nodeCPU = sum(cpuSeconds(node.process.pid) - before
                      for node, before in zip(nodes, cpuBefore)) / options.seconds
        fakeCPU = (selfCPU() - selfBefore) / options.seconds
        busy = (busyAfter - busyBefore) / max(1, totalAfter - totalBefore)
        rate = sum(rate for rate, _ in results)
        errors = (sum(errors[0] for _, errors in results), sum(errors[1] for _, errors in results))

        # Cold burst: a blob no node has, clients spread over the nodes.
        burstName = f"burst{count}"
        burstPath = recordBlob(nodes[0], burstName)
        size = store.blobSize(burstName, 1)
        before = upstream.cdnGets(burstName)
        started = time.monotonic()
        clients = [curl(nodes[index % count].url + burstPath[1:])
                   for index in range(options.clients)]
        outcomes = [curlResult(client) for client in clients]
        wall = time.monotonic() - started
        bad = [outcome for outcome in outcomes if outcome[0] != 200 or outcome[1] != size]
        fetches = upstream.cdnGets(burstName) - before
        sources = {}
        for node in nodes:
            for kind, number in node.admin("v1/nodes").get("fetches", {}).items():
                sources[kind] = sources.get(kind, 0) + number
        return {"nodes": count, "listed": listed, "rate": rate, "errors": errors,
                "nodeCPU": nodeCPU, "fakeCPU": fakeCPU, "busy": busy, "wall": wall,
                "burstBad": len(bad), "fetches": fetches, "sources": sources,
                "rss": [0] * count, "_nodes": nodes}
    finally:
        for node in nodes:
            stop(node.process)
        for node in nodes:
            node.peak = node.rss.stop() if node.rss.is_alive() else 0
        database.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="mix duration per node count")
    parser.add_argument("--connections", type=int, default=60,
                        help="wrk connections in all (spread over the nodes)")
    parser.add_argument("--clients", type=int, default=60, help="cold-burst clients")
    parser.add_argument("--burst-size", type=int, default=16 * MIB)
    parser.add_argument("--snaps", type=int, default=5, help="snaps per refresh")
    parser.add_argument("--max-nodes", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep bench/_work/cluster")
    options = parser.parse_args()

    work = os.path.join(ROOT, "bench", "_work", "cluster")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    upstream = FakeUpstream()
    rows = []
    try:
        snaps = [("mix", 1, 256 << 10)]
        snaps += [(f"burst{count}", 1, options.burst_size)
                  for count in range(1, options.max_nodes + 1)]
        upstream.start(snaps)
        snapIds = []
        for index in range(options.snaps):
            name = f"app{index}"

            def add(name=name):
                upstream.store.addSnap(name)
                upstream.store.addRevision(name, 1, 4096)
                upstream.store.addRevision(name, 2, 4096)
                return upstream.store.snapId(name)

            snapIds.append(upstream.call(add))
        for count in range(1, options.max_nodes + 1):
            print(f"measuring {count} node(s)...", file=sys.stderr)
            row = measure(count, options, upstream, work, snapIds)
            row["rss"] = [node.peak for node in row.pop("_nodes")]
            rows.append(row)
    finally:
        upstream.stop()
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)

    cores = os.cpu_count()
    print(f"\nsnapstore cluster benchmark: {cores} CPU(s), loopback, one PostgreSQL, "
          f"mix {options.seconds:g}s with {options.connections} connections "
          f"(9 refreshes of {options.snaps} snaps : 1 download of 256 KiB), "
          f"cold burst {options.clients} clients x {options.burst_size // MIB} MiB\n")
    header = ("nodes", "listed after", "mix req/s", "vs 1 node", "non-2xx/socket errors", "node CPU", "req/s per node core",
              "fake store CPU", "machine busy", "burst wall", "burst failed",
              "upstream fetches", "peak RSS per node (MiB)")
    table = [header]
    base = rows[0]["rate"] if rows else 1.0
    for row in rows:
        table.append((str(row["nodes"]), f"{row['listed']:.1f}s", f"{row['rate']:.0f}",
                      f"{row['rate'] / base:.2f}x", "%d/%d" % row["errors"],
                      f"{row['nodeCPU']:.2f} cores", f"{row['rate'] / max(row['nodeCPU'], 1e-9):.0f}",
                      f"{row['fakeCPU']:.2f} cores",
                      f"{row['busy'] * 100:.0f}%", f"{row['wall']:.2f}s", str(row["burstBad"]),
                      str(row["fetches"]),
                      " / ".join(f"{rss / MIB:.0f}" for rss in row["rss"])))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |")
    print("\nburst sources (all nodes): " + "; ".join(
        f"{row['nodes']} node(s): " + ", ".join(f"{kind} {number}"
                                                for kind, number in sorted(row["sources"].items()))
        for row in rows))


if __name__ == "__main__":
    main()
