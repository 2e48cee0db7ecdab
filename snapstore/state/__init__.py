# -*- test-case-name: tests.test_state -*-
"""
Durable state: the L{snapstore.interfaces.IStateStore} back-ends.

Use L{makeStateStore} to build one from the C{--state} option, and
L{snapstore.state.service.StateService} to run it.
"""

from __future__ import annotations

import os
from typing import Any

from snapstore.interfaces import IServiceReactor
from snapstore.state.errors import MigrationError, StateUnavailable

__all__ = ["makeStateStore", "StateUnavailable", "MigrationError"]


def makeStateStore(reactor: IServiceReactor, spec: str | None, dataDir: str) -> Any:
    """
    Build the state store the C{--state} option names (not yet started).

    @param spec: C{sqlite:<path>}, C{postgresql://...} (or
        C{postgres://...}), or C{None} or C{""} for the default
        C{sqlite:<dataDir>/state.sqlite}.
    @param dataDir: the C{--data-dir}.
    The directory of a SQLite file is created when missing.
    @raise ValueError: for any other spec.
    """
    if not spec:
        spec = "sqlite:" + os.path.join(dataDir, "state.sqlite")
    if spec.startswith("sqlite:"):
        from snapstore.state.sqlite import SQLiteStateStore

        path = spec[len("sqlite:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("--state sqlite: needs a file name, "
                             "e.g. sqlite:/var/lib/snapstore/state.sqlite")
        if path != ":memory:":
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, exist_ok=True)
        return SQLiteStateStore(reactor, path)
    if spec.startswith(("postgresql://", "postgres://")):
        from snapstore.state.postgres import PostgresStateStore

        return PostgresStateStore(reactor, spec)
    raise ValueError(
        f"--state must be sqlite:<path> or postgresql://user@host/db, "
        f"not {spec!r}"
    )
