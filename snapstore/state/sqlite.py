# -*- test-case-name: tests.test_state -*-
"""
The embedded state store: one SQLite file, through
L{twisted.enterprise.adbapi}.

sqlite3 blocks, so adbapi runs it in a thread; the pool holds exactly one
connection, which serialises this process's transactions without any lock
of ours.  Other processes opening the same file are kept apart by SQLite's
own locking: write transactions start with C{BEGIN IMMEDIATE} (taking the
write lock before reading what they will change) and wait up to
L{SQLiteStateStore.busyTimeout} seconds for it.  The file is in WAL mode so
readers never wait for a writer.

Change events reach only this store's observers: SQLite has no way to tell
another process, which is why several nodes need PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence, Optional

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from snapstore.interfaces import IServiceReactor, IStateStore
from snapstore.state.base import Phase, StateStoreBase
from snapstore.state.errors import StateUnavailable
from snapstore.state.migrations import MIGRATIONS, Migration
from snapstore.state.operations import (
    Announcement,
    Mode,
    Operation,
    Query,
    runSynchronously,
)


def _execute(cursor: sqlite3.Cursor, query: Query) -> list[tuple[Any, ...]] | None:
    """
    Run C{query} on C{cursor}.

    @return: the rows, or C{None} for a statement without a result set.
    """
    cursor.execute(query.sql, query.params)
    if cursor.description is None:
        return None
    return cursor.fetchall()


@implementer(IStateStore)
class SQLiteStateStore(StateStoreBase):
    """
    An L{IStateStore} in a SQLite file.

    @ivar path: the database file.
    @ivar busyTimeout: seconds a write waits for another process holding the
        write lock before it fails with L{StateUnavailable}.
    """

    busyTimeout = 10.0

    def __init__(
        self,
        reactor: IServiceReactor,
        path: str,
        clock: Optional[IReactorTime] = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        """
        @param reactor: runs the database thread and delivers its results.
        @param path: the database file; created if missing.
        @param clock: gives the times recorded in rows; the reactor when
            C{None}.
        @param migrations: the schema history to apply (tests pass a prefix
            to build databases at older versions).
        """
        super().__init__(clock if clock is not None else reactor, migrations)
        self.reactor = reactor
        self.path = path
        self._pool: adbapi.ConnectionPool | None = None

    def __repr__(self) -> str:
        """
        Show the file and the phase.
        """
        return f"<SQLiteStateStore {self.path!r} {self.phase.value}>"

    def _openConnection(self, connection: sqlite3.Connection) -> None:
        """
        Configure a new connection: autocommit (we issue C{BEGIN} ourselves,
        so the lock level is ours to choose), WAL, foreign keys and the busy
        timeout.
        """
        connection.isolation_level = None
        connection.execute(f"PRAGMA busy_timeout = {int(self.busyTimeout * 1000)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA synchronous = NORMAL")

    def start(self) -> Deferred[None]:
        """
        Open the file and run the migrations.

        @return: a Deferred firing when ready (as L{whenReady} does), or
            failing with L{StateUnavailable} when the file cannot be opened
            or migrated.
        """
        if self.phase is not Phase.NEW:
            return self.whenReady()
        self.phase = Phase.STARTING
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=self._openConnection,
            cp_reactor=self.reactor,
        )
        self._pool.start()
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        """
        Migrate, then become ready; on failure close and stay failed.
        """
        try:
            await self._migrate()
        except Exception:
            failure = Failure()
            if self.phase is Phase.CLOSED:
                raise self._unavailable()
            self.log.failure("Could not open the state database {path}",
                             failure, path=self.path)
            self._closePool()
            self._becameUnavailable(Phase.FAILED, failure)
            raise self._unavailable()
        self._becameReady()

    def _closePool(self) -> None:
        """
        Stop the database thread and close its connection.
        """
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def close(self) -> Deferred[None]:
        """
        Close the connection; later calls fail with L{StateUnavailable}.
        """
        self._closePool()
        self._becameUnavailable(Phase.CLOSED, None)
        return succeed(None)

    async def _runTransaction(
        self, operation: Operation, mode: Mode
    ) -> tuple[Any, list[Announcement]]:
        """
        Run C{operation} in the database thread.  SQLite's operational
        errors (locked past the busy timeout, disk full) become
        L{StateUnavailable}.
        """
        if self._pool is None:
            operation.close()
            raise self._unavailable()
        try:
            return await self._pool.runWithConnection(
                self._transact, operation, mode
            )
        except sqlite3.OperationalError as e:
            # Locked for longer than the busy timeout, disk full, I/O error:
            # nothing the caller did wrong, and possibly temporary.
            raise StateUnavailable(f"state database error: {e}") from e

    @staticmethod
    def _transact(
        connection: Any, operation: Operation, mode: Mode
    ) -> tuple[Any, list[Announcement]]:
        """
        Run C{operation} in one transaction, in the database thread.
        """
        cursor = connection.cursor()
        cursor.execute("BEGIN" if mode is Mode.READ else "BEGIN IMMEDIATE")
        try:
            result = runSynchronously(
                operation, lambda query: _execute(cursor, query)
            )
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
        return result
