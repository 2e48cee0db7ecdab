# -*- test-case-name: tests.test_cli -*-
"""
Byte counts for people, spelt once for the C{snapstore} command and the
dashboard, so both show an operator the same figure.
"""

from __future__ import annotations

from typing import Optional


def formatSize(count: Optional[float]) -> str:
    """
    A byte count for people: C{1.5 GiB}.
    """
    if count is None:
        return "unknown"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
