# -*- test-case-name: tests.test_forward -*-
"""
One line per forward-proxied request or tunnel, in a squid-like shape an
admin can grep and a log shipper can split on spaces::

    TIME CLIENT METHOD TARGET STATUS UP DOWN SECONDS USER "NOTE"

C{TIME} is UTC ISO 8601 with milliseconds (when the request arrived),
C{UP} the bytes the client sent through the proxy (request or tunnel
payload), C{DOWN} the bytes the proxy sent back, C{SECONDS} the duration,
C{USER} the proxy user name or C{-}, and C{NOTE} the refusal reason or
C{-}.  Every line is also emitted as a C{twisted.logger} event with the
same fields, so the journal has them without a file.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import attrs
from twisted.logger import Logger

from snapstore.http.controlchars import escapeControls


@attrs.define
class AccessEntry:
    """
    What one request or tunnel did; filled in as it goes.
    """

    started: float
    client: str
    method: str
    target: str
    status: int = 0
    up: int = 0
    down: int = 0
    user: str = "-"
    note: str = "-"
    duration: float = 0.0

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started))
        millis = int((self.started % 1) * 1000)
        note = escapeControls(self.note.replace('"', "'"))
        return (f"{stamp}.{millis:03d}Z {self.client} {escapeControls(self.method)} "
                f"{escapeControls(self.target)} "
                f"{self.status} {self.up} {self.down} {self.duration:.3f} "
                f"{escapeControls(str(self.user))} "
                f'"{note}"')


class AccessLog:
    """
    Writes L{AccessEntry} lines to a file (opened for appending, flushed
    per line so that a crash loses nothing) and to the log.

    @ivar entries: the last entries, newest last, for tests and status.
    """

    log = Logger(namespace="snapstore.forward.access")

    def __init__(self, path: Optional[str] = None, keep: int = 100) -> None:
        self.path = path
        self._file: Any = open(path, "a", encoding="utf-8", buffering=1) if path else None
        self.entries: list[AccessEntry] = []
        self.keep = keep

    def record(self, entry: AccessEntry) -> None:
        self.entries.append(entry)
        del self.entries[:-self.keep]
        line = entry.line()
        self.log.info("{line}", line=line, client=entry.client, method=entry.method,
                      target=entry.target, status=entry.status, up=entry.up,
                      down=entry.down, duration=entry.duration, note=entry.note)
        if self._file is not None:
            self._file.write(line + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
