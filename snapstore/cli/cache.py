# -*- test-case-name: tests.test_cli -*-
"""
The C{snapstore cache} verb: statistics, prune, verify.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from snapstore.cli.client import AdminClient, EXIT_OK, EXIT_PROBLEM
from snapstore.cli.format import dumpJSON, formatSize, plural


def _cacheLine(cache: dict[str, Any]) -> str:
    ratio = cache.get("hit-ratio")
    return (f"{formatSize(cache.get('size'))} of {formatSize(cache.get('bound'))} in "
            f"{plural(cache.get('blobs'), 'blob')} ({cache.get('filling') or 0} filling); hit ratio "
            f"{'n/a' if ratio is None else f'{ratio * 100:.0f}%'} since start")


def cmdCache(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    action = options.action or "stats"
    if action == "stats":
        answer = client.call("GET", "/v1/cache")
        if options.json:
            dumpJSON(answer, out)
        else:
            out.write(f"Cache {answer.get('directory') or ''}: {_cacheLine(answer)}\n")
        return EXIT_OK
    if action == "prune":
        answer = client.call("POST", "/v1/cache/prune")
        if options.json:
            dumpJSON(answer, out)
        else:
            result = answer.get("result") or {}
            out.write(f"Removed {plural(result.get('removed', '?'), 'blob')}, "
                      f"freed {formatSize(result.get('freed'))}; "
                      f"cache now {_cacheLine(answer['cache'])}\n")
        return EXIT_OK
    answer = client.call("POST", "/v1/cache/verify")
    if options.json:
        dumpJSON(answer, out)
    elif answer["ok"]:
        out.write("Every cached blob matches its sha3-384\n")
    else:
        out.write(f"Removed {plural(len(answer['removed']), 'corrupt blob')}:\n")
        for digest in answer["removed"]:
            out.write(f"  {digest}\n")
    return EXIT_OK if answer["ok"] else EXIT_PROBLEM
