# -*- test-case-name: tests.test_forward -*-
"""
Benchmark: snapstore's forward proxy against squid, same run, same origins,
loopback only.

Run from the checkout, never alongside other benchmarks::

    flock /tmp/snapstore-bench.lock python3 bench/forward.py [--size 1G] [--tunnels 200]

Scenarios (each proxy gets the same ones, in turn):

  - C{tunnel}: a 1 GiB HTTPS download through C{CONNECT} (a Python ssl
    client reading 1 MiB per call, in its own process).
  - C{absolute}: a 1 GiB plain-HTTP download (curl) in absolute form.
  - C{200 tunnels}: 200 concurrent CONNECT tunnels each carrying a 10 MiB
    response, from one asyncio client; wall time until all are done.
  - C{slow reader}: one tunnel whose client reads 64 KiB every 50 ms for
    a few seconds while the origin could send 1 GiB; RSS growth.

Peak RSS is sampled from C{/proc} every 20 ms during each scenario (squid:
all its processes).  snapstore runs as a real C{twistd -n snapstore}
process; squid with a temporary config, C{-N}, killed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, CHECKOUT)

from bench.common import freePort, requireTools, stop, waitForPort

TEN_MIB = 10 << 20


# -- origin (a separate process, so it does not share the client's GIL) -----


def _readHead(connection: Any) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


def _serve(connection: Any, path: str, tls: bool) -> None:
    try:
        while True:
            head = _readHead(connection)
            if not head:
                return
            target = head.split(b" ", 2)[1]
            size = TEN_MIB if target.endswith(b"/ten") else os.path.getsize(path)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                               b"Content-Length: %d\r\n\r\n" % size)
            with open(path, "rb") as blob:
                if tls:
                    left = size
                    while left:
                        chunk = blob.read(min(left, 1 << 20))
                        connection.sendall(chunk)
                        left -= len(chunk)
                else:
                    offset = 0
                    while offset < size:
                        offset += os.sendfile(connection.fileno(), blob.fileno(), offset,
                                              size - offset)
            if b"\r\nconnection: close" in head.lower():
                return
    except OSError:
        pass
    finally:
        connection.close()


def runOrigin(plainPort: int, tlsPort: int, certFile: str, path: str) -> None:
    """
    Serve C{path} over HTTP (sendfile) and HTTPS, one thread per
    connection, until killed.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certFile)

    def accept(port: int, tls: bool) -> None:
        listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        while True:
            connection, _ = listener.accept()
            if tls:
                try:
                    connection = context.wrap_socket(connection, server_side=True)
                except (OSError, ssl.SSLError):
                    connection.close()
                    continue
            threading.Thread(target=_serve, args=(connection, path, tls), daemon=True).start()

    threading.Thread(target=accept, args=(tlsPort, True), daemon=True).start()
    accept(plainPort, False)


NGINX_CONFIG = """
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    fastcgi_temp_path {work}/nginx-tmp;
    uwsgi_temp_path {work}/nginx-tmp;
    scgi_temp_path {work}/nginx-tmp;
    server {{ listen 127.0.0.1:{plain}; root {work}/www; }}
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {cert};
        root {work}/www;
    }}
}}
"""


def startOrigin(work: str, plainPort: int, tlsPort: int, certFile: str, blob: str) -> subprocess.Popen:
    """
    The origin both proxies fetch from: nginx when installed (sendfile,
    native TLS, so the origin is not what is measured), else the small
    threaded Python origin above.
    """
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                       else None)
    if nginx is None:
        return subprocess.Popen([sys.executable, os.path.abspath(__file__), str(plainPort),
                                 str(tlsPort), certFile, blob])
    www = os.path.join(work, "www")
    os.makedirs(www)
    os.makedirs(os.path.join(work, "nginx-tmp"))
    os.link(blob, os.path.join(www, "blob"))
    with open(blob, "rb") as source, open(os.path.join(www, "ten"), "wb") as ten:
        ten.write(source.read(TEN_MIB))
    for name in ("blob", "ten"):
        os.chmod(os.path.join(www, name), 0o644)
    os.chmod(certFile, 0o644)
    config = os.path.join(work, "nginx.conf")
    with open(config, "w") as configFile:
        configFile.write(NGINX_CONFIG.format(work=work, plain=plainPort, tls=tlsPort,
                                             cert=certFile))
    return subprocess.Popen([nginx, "-e", os.path.join(work, "nginx-error.log"), "-p", work,
                             "-c", config, "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


# -- measuring ------------------------------------------------------------------


def rssOf(pids: Callable[[], list[int]]) -> int:
    total = 0
    for pid in pids():
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RSSSampler:
    """
    Samples the RSS of some processes every 20 ms in a thread and keeps the
    peak.
    """

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak = 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rssOf(self.pids)
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            time.sleep(0.02)

    def __enter__(self) -> "RSSSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def childrenOf(pid: int) -> list[int]:
    found = [pid]
    try:
        output = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return found
    for line in output.split():
        found.extend(childrenOf(int(line)))
    return found


# -- the proxies ------------------------------------------------------------------


def startSnapstore(work: str, port: int, ports: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=CHECKOUT)
    env.pop("http_proxy", None)
    env.pop("https_proxy", None)
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
               "-n", "--pidfile=",
               "--logfile", os.path.join(work, "snapstore.log"), "snapstore",
               "--proxy-endpoint", f"tcp:{port}:interface=127.0.0.1",
               "--store-endpoint", f"tcp:{freePort()}:interface=127.0.0.1",
               "--admin-endpoint", "none", "--data-dir", os.path.join(work, "snapstore-data"),
               "--proxy-allow-internal", "127.0.0.1", "--proxy-connect-ports", ports,
               # The plain origin's port too: absolute-URI relays go only
               # to --proxy-relay-ports (80 and 443 by default).
               "--proxy-relay-ports", f"80,443,{ports}",
               "--proxy-max-per-client", "1000",
               "--proxy-access-log", os.path.join(work, "snapstore-access.log")]
    process = subprocess.Popen(command, env=env, cwd=work, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    waitForPort(port, process)
    return process


SQUID_CONFIG = """
http_port 127.0.0.1:{port}
http_access allow all
cache deny all
cache_mem 8 MB
maximum_object_size_in_memory 64 KB
access_log stdio:{work}/squid-access.log
cache_log {work}/squid-cache.log
cache_store_log none
pid_filename {work}/squid.pid
coredump_dir {work}
shutdown_lifetime 0 seconds
max_filedescriptors 8192
client_persistent_connections on
server_persistent_connections on
forwarded_for delete
via on
dns_v4_first on
"""


def startSquid(work: str, port: int) -> subprocess.Popen:
    config = os.path.join(work, "squid.conf")
    with open(config, "w") as configFile:
        configFile.write(SQUID_CONFIG.format(port=port, work=work))
    process = subprocess.Popen(["squid", "-N", "-f", config], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT, cwd=work)
    waitForPort(port, process)
    return process


# -- scenarios ------------------------------------------------------------------------


def tlsFetch(proxyPort: int, originPort: int, caFile: str) -> tuple[float, int]:
    """
    Download C{/blob} over HTTPS through C{CONNECT} with Python's ssl
    module reading 1 MiB at a time (curl reads 16 KiB per call and is the
    bottleneck at these rates).  Runs in the calling process; L{main}
    calls it in a child so the measuring threads do not compete with it.
    """
    target = b"127.0.0.1:%d" % originPort
    if proxyPort:
        connection = socket.create_connection(("127.0.0.1", proxyPort))
        connection.sendall(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target
                           + b"\r\n\r\n")
        if b" 200 " not in _readHeadExactly(connection).split(b"\r\n")[0]:
            raise RuntimeError("CONNECT refused")
    else:
        connection = socket.create_connection(("127.0.0.1", originPort))
    context = ssl.create_default_context(cafile=caFile)
    secure = context.wrap_socket(connection, server_hostname="127.0.0.1")
    started = time.monotonic()
    secure.sendall(b"GET /blob HTTP/1.1\r\nHost: " + target + b"\r\nConnection: close\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += secure.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    buffer = memoryview(bytearray(1 << 20))
    received = len(rest)
    while received < length:
        got = secure.recv_into(buffer, 1 << 20)
        if not got:
            break
        received += got
    elapsed = time.monotonic() - started
    secure.close()
    return elapsed, received


def _readHeadExactly(connection: Any) -> bytes:
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        chunk = connection.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def tlsFetchInChild(proxyPort: int, originPort: int, caFile: str) -> tuple[float, int]:
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--fetch-tls",
                             str(proxyPort), str(originPort), caFile],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"TLS fetch failed: {result.stderr.strip()[-300:]}")
    seconds, size = result.stdout.split()
    return float(seconds), int(size)


def curlDownload(proxyPort: int, url: str, caFile: str) -> tuple[float, int]:
    proxy = ["-x", f"http://127.0.0.1:{proxyPort}"] if proxyPort else ["--noproxy", "*"]
    result = subprocess.run(
        ["curl", "-sS", "--cacert", caFile, *proxy, url,
         "-o", "/dev/null", "-w", "%{time_total} %{size_download}"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    if result.returncode != 0:
        raise RuntimeError(f"curl failed: {result.stderr.strip()}")
    seconds, size = result.stdout.split()
    return float(seconds), int(size)


async def _tunnelClient(proxyPort: int, originPort: int, path: bytes) -> int:
    target = b"127.0.0.1:%d" % originPort
    reader, writer = await asyncio.open_connection("127.0.0.1", proxyPort or originPort,
                                                   limit=1 << 20)
    if proxyPort:
        writer.write(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"CONNECT refused: {head[:100]!r}")
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: " + target + b"\r\nConnection: close\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    total = 0
    while total < length:
        chunk = await reader.read(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    writer.close()
    return total


def manyTunnels(proxyPort: int, originPort: int, count: int) -> float:
    async def run() -> list[int]:
        return await asyncio.gather(*(_tunnelClient(proxyPort, originPort, b"/ten")
                                      for _ in range(count)))

    started = time.monotonic()
    sizes = asyncio.run(run())
    elapsed = time.monotonic() - started
    if sizes != [TEN_MIB] * count:
        raise RuntimeError(f"short tunnels: {sorted(set(sizes))[:5]}")
    return elapsed


def slowReader(proxyPort: int, originPort: int, seconds: float, rss: Callable[[], int]) -> tuple[int, int]:
    """
    Read 64 KiB every 50 ms through a tunnel; return RSS after the first
    second and at the end.
    """
    connection = socket.create_connection(("127.0.0.1", proxyPort))
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    target = b"127.0.0.1:%d" % originPort
    connection.sendall(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
    _readHead(connection)
    connection.sendall(b"GET /blob HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
    started = time.monotonic()
    early = None
    while time.monotonic() - started < seconds:
        connection.recv(65536)
        time.sleep(0.05)
        if early is None and time.monotonic() - started > 1:
            early = rss()
    late = rss()
    connection.close()
    return early or late, late


class Proxy:
    """
    A proxy under test: its name, port and processes.
    """

    def __init__(self, name: str, port: int, pids: list[int]) -> None:
        self.name = name
        self.port = port
        self.pids = pids
        self.results: dict[str, Any] = {"name": name}

    def rss(self) -> int:
        return rssOf(lambda: self.pids)


def interleaved(proxies: list[Proxy], runs: int, key: str, once: Callable[[Proxy], float],
                better: Callable[[list[float]], float] = statistics.median) -> None:
    """
    Run C{once} C{runs} times per proxy, alternating between the proxies
    so that background noise hits both alike; record the median and the
    peak RSS of each proxy while it was measured.
    """
    values: dict[str, list[float]] = {proxy.name: [] for proxy in proxies}
    cpu: dict[str, list[float]] = {proxy.name: [] for proxy in proxies}
    peaks: dict[str, int] = {proxy.name: 0 for proxy in proxies}
    for _ in range(runs):
        for proxy in proxies:
            before = cpuOf(proxy.pids)
            with RSSSampler(lambda: proxy.pids) as sampler:
                values[proxy.name].append(once(proxy))
            cpu[proxy.name].append(cpuOf(proxy.pids) - before)
            peaks[proxy.name] = max(peaks[proxy.name], sampler.peak)
    for proxy in proxies:
        proxy.results[key] = better(values[proxy.name])
        proxy.results[key + "All"] = values[proxy.name]
        proxy.results[key + "CPU"] = statistics.median(cpu[proxy.name])
        proxy.results[key + "RSS"] = peaks[proxy.name]


def cpuOf(pids: list[int]) -> float:
    """
    User plus system CPU seconds the processes used so far.
    """
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def measureAll(proxies: list[Proxy], origin: dict, caFile: str, runs: int, tunnels: int) -> None:
    def tunnel(proxy: Proxy) -> float:
        seconds, size = tlsFetchInChild(proxy.port, origin["tls"], caFile)
        return size / seconds

    def absolute(proxy: Proxy) -> float:
        seconds, size = curlDownload(proxy.port, f"http://127.0.0.1:{origin['plain']}/blob",
                                     caFile)
        return size / seconds

    interleaved(proxies, runs, "tunnel", tunnel)
    interleaved(proxies, runs, "absolute", absolute)
    interleaved(proxies, runs, "many",
                lambda proxy: manyTunnels(proxy.port, origin["plain"], tunnels))
    for proxy in proxies:
        if proxy.port == 0:
            proxy.results["slowEarly"] = proxy.results["slowLate"] = 0
            continue
        early, late = slowReader(proxy.port, origin["plain"], 5.0, proxy.rss)
        proxy.results["slowEarly"], proxy.results["slowLate"] = early, late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="download size (default 1G)")
    parser.add_argument("--tunnels", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("snapstore", "squid"), default=None)
    parser.add_argument("--fetch-tls", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("origin", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.fetch_tls:
        proxyPort, originPort, caFile = options.fetch_tls
        seconds, size = tlsFetch(int(proxyPort), int(originPort), caFile)
        print(seconds, size)
        return
    if not options.origin:
        requireTools("bench/forward.py", *(() if options.only == "snapstore" else ("squid",)))
    if options.origin:
        plain, tls, cert, path = options.origin
        runOrigin(int(plain), int(tls), cert, path)
        return
    from snapstore.config import parseSize
    from tests.tlshelpers import TestAuthority

    for tool in ("curl", "squid"):
        if shutil.which(tool) is None and not (tool == "squid" and options.only == "snapstore"):
            raise SystemExit(f"{tool} is needed")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    work = tempfile.mkdtemp(prefix="snapstore-bench-")
    os.chmod(work, 0o777)
    processes: list[subprocess.Popen] = []
    try:
        authority = TestAuthority(addresses=["127.0.0.1"])
        caFile = authority.writeCA(os.path.join(work, "ca.pem"))
        certFile = authority.writeServer(os.path.join(work, "server.pem"))
        blob = os.path.join(work, "blob")
        with open(blob, "wb") as blobFile:
            size = parseSize(options.size)
            block = os.urandom(1 << 20)
            for _ in range(size >> 20):
                blobFile.write(block)
        origin = {"plain": freePort(), "tls": freePort()}
        originProcess = startOrigin(work, origin["plain"], origin["tls"], certFile, blob)
        processes.append(originProcess)
        waitForPort(origin["plain"], originProcess)
        waitForPort(origin["tls"], originProcess)
        ports = f"{origin['plain']},{origin['tls']}"
        proxies = []
        if options.only in (None, "squid"):
            squidPort = freePort()
            squid = startSquid(work, squidPort)
            processes.append(squid)
            time.sleep(1)
            proxies.append(Proxy(squidVersion(), squidPort, childrenOf(squid.pid)))
        if options.only in (None, "snapstore"):
            snapPort = freePort()
            snapstore = startSnapstore(work, snapPort, ports)
            processes.append(snapstore)
            proxies.append(Proxy("snapstore", snapPort, [snapstore.pid]))
        # The ceiling: the same downloads with no proxy in between.
        proxies.append(Proxy("none (direct)", 0, []))
        measureAll(proxies, origin, caFile, options.runs, options.tunnels)
        rows = [proxy.results for proxy in proxies]
        printTable(rows, options)
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(work, ignore_errors=True)


def squidVersion() -> str:
    try:
        output = subprocess.run(["squid", "-v"], capture_output=True, text=True).stdout
        return "squid " + output.split("Version ", 1)[1].split()[0]
    except (OSError, IndexError):
        return "squid"


def printTable(rows: list[dict], options: Any) -> None:
    mb = 1 << 20
    size = parseSizeText(options.size)
    print(f"\nforward proxy benchmark: {options.size} downloads, {options.tunnels} tunnels x "
          f"10 MiB, median of {options.runs} interleaved runs, loopback, "
          f"{os.cpu_count()} CPUs\n")
    print(f"| proxy | tunnel TLS MiB/s (proxy CPU s) | absolute-URI MiB/s (proxy CPU s) | "
          f"{options.tunnels} tunnels wall s (proxy CPU s) | peak RSS tunnel / absolute / "
          f"{options.tunnels} tunnels MiB | slow reader RSS 1 s -> 5 s MiB |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        direct = row["name"].startswith("none")
        rss = "-" if direct else (f"{row['tunnelRSS'] / mb:.0f} / {row['absoluteRSS'] / mb:.0f}"
                                  f" / {row['manyRSS'] / mb:.0f}")
        slow = "-" if direct else f"{row['slowEarly'] / mb:.0f} -> {row['slowLate'] / mb:.0f}"
        cpu = (lambda key: "" if direct else f" ({row[key + 'CPU']:.2f})")
        print(f"| {row['name']} | {row['tunnel'] / mb:.0f}{cpu('tunnel')} | "
              f"{row['absolute'] / mb:.0f}{cpu('absolute')} | {row['many']:.2f}{cpu('many')} | "
              f"{rss} | {slow} |")
    print()
    for row in rows:
        print(f"{row['name']}: tunnel runs MiB/s "
              + " ".join(f"{v / mb:.0f}" for v in row["tunnelAll"])
              + "; absolute runs MiB/s " + " ".join(f"{v / mb:.0f}" for v in row["absoluteAll"])
              + "; tunnels runs s " + " ".join(f"{v:.2f}" for v in row["manyAll"]))
    proxied = [row for row in rows if not row["name"].startswith("none")]
    if len(proxied) == 2:
        squid, snap = proxied
        print(f"\nsnapstore / squid: tunnel {snap['tunnel'] / squid['tunnel']:.2f}x, "
              f"absolute {snap['absolute'] / squid['absolute']:.2f}x, "
              f"{options.tunnels} tunnels wall time {snap['many'] / squid['many']:.2f}x; "
              f"proxy CPU per GiB tunnelled {snap['tunnelCPU'] / size * (1 << 30):.2f} s vs "
              f"{squid['tunnelCPU'] / size * (1 << 30):.2f} s")


def parseSizeText(text: str) -> int:
    from snapstore.config import parseSize

    return parseSize(text)


if __name__ == "__main__":
    main()
