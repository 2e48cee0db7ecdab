# -*- test-case-name: tests.test_cli -*-
"""
How the C{snapstore} command shows what the admin API answered, and
parses the times and hashes people type.
"""

from __future__ import annotations

import argparse
import datetime
import json
import urllib.parse
from typing import Any, Callable, Optional, TextIO

from snapstore.http.controlchars import escapeControls
from snapstore.units import formatSize as formatSize


def formatDuration(seconds: float) -> str:
    """
    An uptime for people: C{2d 3h 4m}, C{5m 2s}.
    """
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s"


def formatTime(posix: Optional[float]) -> str:
    if posix is None:
        return "-"
    return datetime.datetime.fromtimestamp(posix, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ")


def parseTime(text: str) -> float:
    """
    Parse C{--since}/C{--until}: POSIX seconds, an ISO date or date-time
    (UTC unless it says otherwise), or a duration back from now such as
    C{30m}, C{12h}, C{7d}.
    """
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.datetime.now(datetime.timezone.utc).timestamp() - int(text[:-1]) * units[text[-1]]
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use 2026-11-21, 2026-11-21T10:00, 1763700000 or 7d)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def parseHead(text: str) -> tuple[int, str]:
    """
    Parse C{--head ID:HASH}.
    """
    rowId, sep, rowHash = text.partition(":")
    if not sep or not rowId.isdigit() or len(rowHash) != 64:
        raise argparse.ArgumentTypeError(f"not ID:HASH (e.g. 12:<64 hex digits>): {text!r}")
    return int(rowId), rowHash.lower()


def table(rows: list[list[str]], out: TextIO) -> None:
    if not rows:
        return
    # Values come from devices and upstream: one cell stays one cell.
    rows = [[escapeControls(str(cell)) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


def describeCheck(check: dict[str, Any]) -> str:
    return f"{check.get('target')}: {'ok' if check.get('ok') else 'FAILED'} ({check.get('detail')})"


def plural(count: Any, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def compact(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def dumpJSON(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def printListing(answer: dict[str, Any], key: str, asJSON: bool, empty: str,
                 header: list[str], row: Callable[[Any], list[str]], out: TextIO) -> bool:
    """
    Print a listing answer the way every listing verb does: the whole
    answer with C{--json}, else C{empty} when C{answer[key]} has nothing,
    else a table of C{header} and one C{row} per item.

    @return: whether a table was printed (a verb may add a summary line).
    """
    if asJSON:
        dumpJSON(answer, out)
        return False
    items = answer[key]
    if not items:
        out.write(empty + "\n")
        return False
    table([header] + [row(item) for item in items], out)
    return True


class EscapingOutput:
    """
    Writes to C{output} with control characters other than newline and tab
    escaped (see L{escapeControls}).
    """

    def __init__(self, output: TextIO) -> None:
        self.output = output

    def write(self, text: str) -> int:
        return self.output.write(escapeControls(text, keepLines=True))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.output, name)

