#!/usr/bin/env python3
# -*- test-case-name: tests.test_store -*-
"""
Refresh relay benchmark: snapstore against nginx C{proxy_pass}, on loopback.

    flock /tmp/snapstore-bench.lock python3 bench/relay.py [--seconds 10] [--connections 100]

Two measurements:

  1. Relay rate.  A fast upstream (nginx answering every C{POST
     /v2/snaps/refresh} with one fixed ~2 KB refresh JSON) behind (a) nginx
     C{proxy_pass} (one worker, keep-alive to the upstream, access log on)
     and (b) C{twistd -n snapstore} (one process, per-request log on), each
     loaded by C{wrk} with 100 connections posting a refresh body.  The
     target is snapstore >= 0.25x nginx.
  2. Added latency.  The fake store (C{python -m tests.fakestore}) called
     directly and through snapstore at a fixed 200 requests/s (open loop,
     from this process); the target is snapstore adding <= 5 ms at p99.

For scale it also loads a bare Twisted L{Site} answering the same JSON
itself (no relay, no log): the ceiling for one Twisted process here.
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

from bench.common import freePort, percentile, requireTools, stop, waitForPort
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


def nginxConfig(work: str, upstreamPort: int, proxyPort: int) -> str:
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
"""


def runWrk(work: str, port: int, seconds: float, connections: int) -> tuple[float, int]:
    """
    Load C{POST /v2/snaps/refresh} on C{port}; the requests/s and the
    error count (socket errors and non-2xx answers).
    """
    script = os.path.join(work, "post.lua")
    with open(script, "w") as lua:
        lua.write(WRK_SCRIPT % REFRESH_BODY)
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script,
         f"http://127.0.0.1:{port}/v2/snaps/refresh"],
        capture_output=True, text=True, timeout=seconds + 60).stdout
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


async def openLoop(port: int, rate: float, seconds: float, connections: int = 16) -> tuple[list[float], int]:
    """
    Send C{POST /v2/snaps/refresh} at a fixed C{rate} for C{seconds} (each
    on a keep-alive connection that is free at its scheduled time); the
    latencies, measured from the scheduled send time, and the errors.
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


def startSnapstore(work: str, name: str, upstreamPort: int, extra: list[str] = ()) -> tuple[subprocess.Popen, int]:
    port = freePort()
    os.makedirs(os.path.join(work, name, "rules.d"), exist_ok=True)
    log = open(os.path.join(work, f"{name}.log"), "w")
    process = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
         *extra, "snapstore", "--config", os.devnull,
         "--upstream", f"http://127.0.0.1:{upstreamPort}/",
         "--store-endpoint", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
         "--admin-endpoint", "none", "--proxy-endpoint", "none",
         "--data-dir", os.path.join(work, name), "--rules-dir", os.path.join(work, name, "rules.d")],
        cwd=work, env=dict(os.environ, PYTHONPATH=ROOT), stdout=log, stderr=subprocess.STDOUT)
    waitForPort(port, process, f"snapstore ({name})")
    return process, port


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate run")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s of the latency runs")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=2, help="alternating rate runs per server")
    parser.add_argument("--profile", action="store_true",
                        help="also run snapstore under cProfile and print its top functions")
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    requireTools("bench/relay.py", "wrk", "nginx")

    work = os.path.join(ROOT, "bench", "_work", "relay")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    upstreamPort, nginxPort = freePort(), freePort()
    with open(os.path.join(work, "nginx.conf"), "w") as config:
        config.write(nginxConfig(work, upstreamPort, nginxPort))
    processes: list[subprocess.Popen] = []
    try:
        nginx = subprocess.Popen([NGINX, "-c", os.path.join(work, "nginx.conf"), "-p", work],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        processes.append(nginx)
        waitForPort(nginxPort, nginx, "nginx")
        snapstore, snapstorePort = startSnapstore(work, "relay", upstreamPort)
        processes.append(snapstore)
        # Warm both (connections to upstream, code paths).
        runWrk(work, nginxPort, 1, options.connections)
        runWrk(work, snapstorePort, 1, options.connections)
        rates: dict[str, list[float]] = {"nginx": [], "snapstore": []}
        errors = {"nginx": 0, "snapstore": 0}
        for _ in range(options.runs):
            for name, port in (("nginx", nginxPort), ("snapstore", snapstorePort)):
                rate, failed = runWrk(work, port, options.seconds, options.connections)
                rates[name].append(rate)
                errors[name] += failed
        stop(snapstore)
        plain, plainPort = startPlainTwisted(work, upstreamPort)
        processes.append(plain)
        runWrk(work, plainPort, 1, options.connections)
        plainRate, _ = runWrk(work, plainPort, options.seconds, options.connections)
        stop(plain)

        apiPort, cdnPort = freePort(), freePort()
        fake = subprocess.Popen(
            [sys.executable, "-m", "tests.fakestore", "--api-port", str(apiPort), "--cdn-port", str(cdnPort),
             "--snap", "hello:29:20480"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        processes.append(fake)
        waitForPort(apiPort, fake, "fake store")
        proxied, proxiedPort = startSnapstore(work, "latency", apiPort)
        processes.append(proxied)
        asyncio.run(openLoop(proxiedPort, options.rate, 1.0))  # warm-up
        direct, directErrors = asyncio.run(openLoop(apiPort, options.rate, options.latency_seconds))
        through, throughErrors = asyncio.run(openLoop(proxiedPort, options.rate, options.latency_seconds))

        profile = None
        if options.profile:
            profiled, profiledPort = startSnapstore(
                work, "profiled", upstreamPort,
                ["--profile", os.path.join(work, "snapstore.prof"), "--profiler", "cprofile", "--savestats"])
            runWrk(work, profiledPort, options.seconds, options.connections)
            stop(profiled)
            profile = os.path.join(work, "snapstore.prof")
    finally:
        for process in processes:
            stop(process)

    nginxRate = max(rates["nginx"])
    snapRate = max(rates["snapstore"])
    rows = [
        ("relay rate, nginx proxy_pass (req/s)", f"{nginxRate:.0f}", "runs: " + ", ".join(f"{r:.0f}" for r in rates["nginx"])),
        ("relay rate, snapstore (req/s)", f"{snapRate:.0f}", "runs: " + ", ".join(f"{r:.0f}" for r in rates["snapstore"])),
        ("snapstore / nginx (target >= 0.25)", f"{snapRate / nginxRate:.3f}", ""),
        ("plain Twisted answering the JSON itself (req/s)", f"{plainRate:.0f}",
         f"{plainRate / nginxRate:.3f}x nginx: one process's ceiling"),
        ("relay errors nginx / snapstore", f"{errors['nginx']} / {errors['snapstore']}", ""),
        (f"refresh p50 at {options.rate:g}/s, direct (ms)", f"{percentile(direct, 0.5) * 1000:.2f}", ""),
        (f"refresh p50 at {options.rate:g}/s, via snapstore (ms)", f"{percentile(through, 0.5) * 1000:.2f}", ""),
        (f"refresh p99 at {options.rate:g}/s, direct (ms)", f"{percentile(direct, 0.99) * 1000:.2f}", ""),
        (f"refresh p99 at {options.rate:g}/s, via snapstore (ms)", f"{percentile(through, 0.99) * 1000:.2f}", ""),
        ("p99 added by snapstore (target <= 5 ms)",
         f"{(percentile(through, 0.99) - percentile(direct, 0.99)) * 1000:.2f}", ""),
        ("latency-run errors direct / snapstore", f"{directErrors} / {throughErrors}", ""),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"\nrefresh relay ({os.cpu_count()} CPUs, loopback, wrk -t1 -c{options.connections}, "
          f"{options.seconds:g}s x {options.runs} runs, one nginx worker, one snapstore process)")
    for name, value, note in rows:
        print(f"  {name.ljust(width)}  {value:>10}  {note}")
    if profile is not None:
        import pstats

        print("\nsnapstore under wrk, top 25 by own time (cProfile):")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
