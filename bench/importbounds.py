"""
Memory of a real C{twistd -n snapstore} while it is sent hostile or huge
bundle uploads (issue 22 item 10, issue 18 item 7): the bounds must be
checked while the bundle streams, never after reading a member whole, and
an upload must go to disk, not memory.

Each case runs against a fresh offline process (admin API on loopback, no
token) and reports its answer and the process's peak RSS (VmHWM) against
its RSS when idle:

  - a bundle whose manifest lists a 256 MiB "assertion" (before the fix:
    RSS 61 -> 849 MB, the member read whole);
  - a manifest nested 100,000 levels deep (before: 500, RecursionError);
  - a 1 GiB upload (spooled to <data-dir>/import-staging as it arrives).

    python3 bench/importbounds.py [--upload-size 1G] [--keep]

Work files go to bench/_work/importbounds (removed unless --keep).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import freePort, stop, waitForPort  # noqa: E402
from snapstore.config import parseSize  # noqa: E402

MIB = 1 << 20


def memory(pid: int) -> dict[str, int]:
    """
    VmRSS and VmHWM of C{pid}, in bytes.
    """
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
    return found


def oversizedAssertion(path: str, size: int) -> None:
    manifest = {"format": 1, "snaps": [], "blobs": [], "assertions": [
        {"path": "assertions/account/dev", "type": "account", "primary-key": ["dev"],
         "size": size, "sha3-384": "0" * 96}]}
    with tarfile.open(path, "w") as archive:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("assertions/account/dev")
        info.size = size
        with open("/dev/zero", "rb") as zeros:
            archive.addfile(info, zeros)


def deepManifest(path: str, depth: int) -> None:
    data = b'{"format": 1, "snaps": ' + b"[" * depth + b"]" * depth + b"}"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def plainFile(path: str, size: int) -> None:
    with open(path, "wb") as target:
        target.truncate(size)


def upload(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    with open(path, "rb") as body:
        connection.request("POST", "/v1/import", body=body, headers={
            "Content-Type": "application/x-tar",
            "Content-Length": str(os.path.getsize(path))})
        response = connection.getresponse()
        raw = response.read()
    try:
        code = json.loads(raw)["error"]["code"]
    except Exception:
        code = "-"
    return response.status, code


def run(work: str, name: str, bundle: str) -> tuple[str, int, str, int, int]:
    adminPort, storePort = freePort(), freePort()
    log = open(os.path.join(work, f"{name}.log"), "w")
    config = os.path.join(work, "snapstore.conf")
    process = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "snapstore", "--config", config, "--offline",
         "--upstream", "http://127.0.0.1:9/", "--data-dir", os.path.join(work, f"data-{name}"),
         "--store-endpoint", f"tcp:{storePort}:interface=127.0.0.1", "--proxy-endpoint", "none",
         "--admin-endpoint", f"tcp:{adminPort}:interface=127.0.0.1",
         "--rules-dir", os.path.join(ROOT, "rules.d")],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT), cwd=work)
    try:
        waitForPort(adminPort, process, "snapstore")
        idle = memory(process.pid)["VmRSS"]
        status, code = upload(adminPort, bundle)
        peak = memory(process.pid)["VmHWM"]
    finally:
        stop(process)
        log.close()
    return name, status, code, idle, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upload-size", default="1G", type=parseSize,
                        help="size of the plain upload (default 1G)")
    parser.add_argument("--member-size", default="256M", type=parseSize,
                        help="size the hostile manifest gives its assertion (default 256M)")
    parser.add_argument("--keep", action="store_true", help="keep bench/_work/importbounds")
    options = parser.parse_args()
    work = os.path.join(ROOT, "bench", "_work", "importbounds")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    with open(os.path.join(work, "snapstore.conf"), "w") as config:
        config.write("[snapstore]\n")
    try:
        cases = [("oversized assertion member", "oversized.tar",
                  lambda path: oversizedAssertion(path, options.member_size)),
                 ("manifest nested 100000 deep", "deep.tar",
                  lambda path: deepManifest(path, 100_000)),
                 ("plain upload", "upload.bin",
                  lambda path: plainFile(path, options.upload_size))]
        rows = []
        for label, fileName, make in cases:
            path = os.path.join(work, fileName)
            make(path)
            print(f"{label}: {os.path.getsize(path)} bytes...", file=sys.stderr)
            rows.append(run(work, fileName.split(".")[0], path)[1:] + (label,
                                                                     os.path.getsize(path)))
        print(f"bundle import bounds ({os.cpu_count()} CPUs, loopback, one twistd per case)")
        print(f"  {'case':30} {'bytes sent':>12} {'status':>6} {'code':16} "
              f"{'idle RSS':>9} {'peak RSS':>9}")
        for status, code, idle, peak, label, size in rows:
            print(f"  {label:30} {size:>12} {status:>6} {code:16} "
                  f"{idle / MIB:>7.0f}Mi {peak / MIB:>7.0f}Mi")
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
