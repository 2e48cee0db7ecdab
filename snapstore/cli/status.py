# -*- test-case-name: tests.test_cli -*-
"""
The C{snapstore} verbs about the node itself: C{status},
C{check-connections} and C{client-config}.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from snapstore.cli.client import AdminClient, EXIT_OK, EXIT_PROBLEM
from snapstore.cli.cluster import nodeLines
from snapstore.cli.uplink import statusLines
from snapstore.cli.format import describeCheck, dumpJSON, formatDuration, formatSize, plural


def cmdStatus(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/status")
    healthy = bool(answer["upstream"]["ok"] and answer["database"]["ok"])
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK if healthy else EXIT_PROBLEM
    devices = answer.get("devices") or {}
    cache = answer.get("cache")
    limit = devices.get("limit")
    lines = [
        f"Version: snapstore {answer['version']}",
        f"Uptime: {formatDuration(answer['uptime'])}",
        f"Store URL: {answer['store-url']}",
    ]
    if answer.get("offline"):
        lines.append("Mode: offline (upstream is never contacted)")
    lines += [
        f"Upstream: {describeCheck(answer['upstream'])}",
        f"Database: {describeCheck(answer['database'])}",
        f"Connected devices (last 24 h): {devices.get('connected', 'unknown')}",
        f"Device limit: {'none' if limit is None else limit}",
    ]
    if cache is None:
        lines.append("Cache: none")
    else:
        ratio = cache.get("hit-ratio")
        lines.append(
            f"Cache: {formatSize(cache.get('size'))} of {formatSize(cache.get('bound'))}, "
            f"{plural(cache.get('blobs'), 'blob')}, hit ratio "
            f"{'n/a' if ratio is None else f'{ratio * 100:.0f}%'} since start")
    overrides = answer.get("overrides")
    lines.append(f"Overrides: {'unknown' if overrides is None else overrides}")
    lines.append(_rulesLine(answer))
    lines += statusLines(answer)
    lines += nodeLines(answer.get("nodes"))
    out.write("\n".join(lines) + "\n")
    return EXIT_OK if healthy else EXIT_PROBLEM


def _rulesLine(status: dict[str, Any]) -> str:
    if "rules" not in status:
        return "Rules: unknown (an older service)"
    rules = status["rules"]
    if rules is None:
        return "Rules: NONE (no rules directory: no device limit, no pins)"
    shipped = " (shipped defaults)" if rules.get("shipped") else ""
    return f"Rules: {rules['directory']}{shipped}: {', '.join(rules['files']) or 'no files'}"


def cmdCheckConnections(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/check-connections")
    if options.json:
        dumpJSON(answer, out)
    else:
        for check in answer["checks"]:
            out.write(f"{check['name']}: {describeCheck(check)}\n")
        out.write("All connections appear to be accessible\n" if answer["ok"]
                  else "Some connections failed\n")
    return EXIT_OK if answer["ok"] else EXIT_PROBLEM


def cmdClientConfig(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/client-config")
    if options.json:
        dumpJSON(answer, out)
    elif options.cloud_init:
        out.write(answer["cloud-init"])
    elif options.forward:
        out.write(answer["forward-proxy-script"])
    else:
        out.write(answer["script"])
    return EXIT_OK
