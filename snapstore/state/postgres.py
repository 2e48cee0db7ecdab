# -*- test-case-name: tests.test_state -*-
"""
The shared state store: PostgreSQL through txpostgres, for one node or
several.

Every node keeps a small txpostgres L{ConnectionPool} for queries and one
more connection that does nothing but C{LISTEN snapstore_changes}.  A
transaction that changes an override or a setting also runs C{pg_notify}, so
the announcement is sent when (and only if) it commits, and every other node
hears it within milliseconds.  Local observers are called directly after the
commit; a node ignores the echo of its own announcements.

All the connections of one node share one fate (a L{_Link}): when any of
them is found dead, the node closes them all, fails calls at once with
L{StateUnavailable}, and reconnects with back-off.  After reconnecting it
cannot know what it missed, so observers receive C{{"kind": "resync"}} and
reload everything.

Read-then-write sequences (audit appends, override changes, migrations) take
a transaction-scoped advisory lock, so two nodes never fork the audit chain
or apply a migration twice.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterator, Sequence, Optional

import psycopg2
import psycopg2.extensions
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Cooperator, deferLater
from twisted.python.failure import Failure
from twisted.internet.interfaces import IReactorTime
from txpostgres.txpostgres import Connection, ConnectionPool, RollbackFailed
from zope.interface import implementer

from snapstore.interfaces import IServiceReactor, IStateStore
from snapstore.state.base import Phase, StateStoreBase
from snapstore.state.errors import StateUnavailable
from snapstore.state.migrations import MIGRATIONS, Migration
from snapstore.state.operations import (
    Announcement,
    Finished,
    Mode,
    Notify,
    Operation,
    nextQuery,
    postgresParameters,
)

#: The LISTEN/NOTIFY channel every node uses.
CHANNEL = "snapstore_changes"

#: The largest NOTIFY payload sent, in bytes (PostgreSQL's limit is 8000).
MAX_PAYLOAD = 7900

#: The advisory lock key serialising audit appends and migrations ("snap").
LOCK_KEY = 0x736E6170


def defaultRetryDelays() -> Iterator[float]:
    """
    Seconds to wait before each reconnection attempt: at once, then doubling
    from half a second up to ten seconds, for ever.
    """
    yield 0.0
    delay = 0.5
    while True:
        yield delay
        delay = min(delay * 2, 10.0)


def isConnectionFailure(failure: Failure) -> bool:
    """
    Tell a lost or unusable connection from an error in one statement.

    psycopg2 reports both as L{psycopg2.OperationalError}; the SQLSTATE
    tells them apart (classes 08, connection exception, and 57, operator
    intervention such as C{pg_terminate_backend}), and errors raised by the
    client library itself carry none.
    """
    if failure.check(ConnectionDone, ConnectionLost, RollbackFailed,
                     psycopg2.InterfaceError):
        return True
    if failure.check(psycopg2.OperationalError):
        code = getattr(failure.value, "pgcode", None)
        if code is None:
            return True
        return code[:2] in ("08", "57") and code != "57014"
    return False


def redactDSN(dsn: str) -> str:
    """
    @return: C{dsn} without its password, for log messages.
    """
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error:
        return "<invalid DSN>"
    if "password" in params:
        params["password"] = "***"
    return " ".join(f"{key}={value}" for key, value in sorted(params.items()))


class _Connection(Connection):
    """
    A txpostgres connection that reports a connection lost while idle to its
    detector instead of raising into the reactor, and whose transactions do
    not log a second error when rolling back a dead connection fails.
    """

    def doRead(self) -> None:
        """
        Read as txpostgres does, but turn a poll error with nobody
        waiting for it (the server closed an idle connection) into
        C{connectionLost} rather than an exception in the reactor.
        """
        try:
            Connection.doRead(self)
        except Exception:
            reason = Failure()
            self.reactor.removeReader(self)
            self.connectionLost(reason)

    def _runInteraction(self, interaction: Callable[..., Any], *args: Any,
                        **kwargs: Any) -> Deferred[Any]:
        """
        Run C{interaction} between C{BEGIN} and C{COMMIT} (or C{ROLLBACK}).
        """
        return Deferred.fromCoroutine(
            self._transact(interaction, *args, **kwargs)
        )

    async def _transact(self, interaction: Callable[..., Any], *args: Any,
                        **kwargs: Any) -> Any:
        """
        @see: L{_runInteraction}
        """
        cursor = self.cursor()
        await cursor.execute("BEGIN")
        try:
            result = await interaction(cursor, *args, **kwargs)
        except BaseException:
            if not self._connection.closed:
                try:
                    await cursor.execute("ROLLBACK")
                except Exception:
                    # A connection that cannot roll back cannot be reused;
                    # closing it hands it to the detector.
                    self.close()
            raise
        await cursor.execute("COMMIT")
        return result

    def close(self) -> None:
        """
        Close, even if the connection was never opened.
        """
        if self._connection is None:
            return
        Connection.close(self)


class _Pool(ConnectionPool):
    """
    A txpostgres pool whose connections belong to one L{_Link}.
    """

    def __init__(self, reactor: IServiceReactor, cooperator: Cooperator, link: "_Link",
                 size: int) -> None:
        """
        @param size: how many connections the pool holds.
        """
        self.reactor = reactor
        self.cooperator = cooperator
        self._link = link
        ConnectionPool.__init__(self, None, min=size)

    def connectionFactory(self, reactor: IServiceReactor, cooperator: Any) -> _Connection:
        """
        @return: a connection reporting to this pool's link.
        """
        return _Connection(reactor, cooperator, detector=self._link)


class _Link:
    """
    One generation of a store's connections, which live and die together.

    It is the txpostgres "detector" of each of its connections: every query
    goes through L{callChecking}, and every lost connection through
    L{checkForDeadConnection}.

    @ivar alive: C{True} once connected, migrated and listening.
    @ivar dead: C{True} once one connection was lost or the link closed;
        from then on every call fails at once.
    """

    def __init__(self, store: "PostgresStateStore") -> None:
        """
        @param store: the store these connections serve.
        """
        self.store = store
        self.alive = False
        self.dead = False
        self.pool = _Pool(store.reactor, store._cooperator, self,
                          store.poolSize)
        self.listener = _Connection(store.reactor, store._cooperator,
                                    detector=self)
        self.connections = list(self.pool.connections) + [self.listener]

    def setReconnectable(self, *args: Any, **kwargs: Any) -> None:
        """
        Part of the detector protocol; a link reconnects by being replaced.
        """

    def callChecking(self, method: Callable[..., Any], *args: Any,
                     **kwargs: Any) -> Deferred[Any]:
        """
        Run a query method unless the link is dead, in which case fail
        at once with L{StateUnavailable}.
        """
        if self.dead:
            return fail(StateUnavailable(
                "the connection to the state database was lost"))
        d = maybeDeferred(method, *args, **kwargs)
        d.addErrback(self.checkForDeadConnection)
        return d

    def checkForDeadConnection(self, failure: Failure) -> Failure:
        """
        Tell the store when C{failure} means a connection is gone, and
        turn it into L{StateUnavailable} for the caller.  Errors in a
        statement pass through unchanged.
        """
        if failure.check(StateUnavailable) or not isConnectionFailure(failure):
            return failure
        if self.alive and not self.dead:
            self.dead = True
            self.store._linkLost(self, failure)
        error = StateUnavailable(
            "lost the connection to the state database: "
            + failure.getErrorMessage().strip()
        )
        error.__cause__ = failure.value
        return Failure(error)

    async def connect(self, dsn: str, connectArgs: dict[str, Any],
                      timeout: float) -> None:
        """
        Open every connection, giving each C{timeout} seconds (libpq does
        not enforce C{connect_timeout} on asynchronous connections).
        """
        for connection in self.connections:
            d = connection.connect(dsn, **connectArgs)
            timer = self.store.clock.callLater(timeout, connection.close)
            try:
                await d
            except ConnectionDone:
                raise StateUnavailable(
                    f"connecting to the state database timed out after "
                    f"{timeout} seconds"
                )
            finally:
                if timer.active():
                    timer.cancel()

    def close(self) -> None:
        """
        Close every connection; calls in flight fail with
        L{StateUnavailable}.
        """
        self.dead = True
        for connection in self.connections:
            try:
                connection.close()
            except Exception:
                pass


@implementer(IStateStore)
class PostgresStateStore(StateStoreBase):
    """
    An L{IStateStore} in a PostgreSQL database, shareable by several nodes.

    @ivar dsn: the libpq connection string or URI.
    @ivar poolSize: connections used for queries (plus one for LISTEN).
    @ivar connectTimeout: seconds one connection attempt may take.
    @ivar origin: this store's identity in NOTIFY payloads, so that it can
        ignore its own echoes.
    """

    def __init__(
        self,
        reactor: IServiceReactor,
        dsn: str,
        clock: Optional[IReactorTime] = None,
        poolSize: int = 3,
        connectTimeout: float = 10.0,
        retryDelays: Callable[[], Iterator[float]] = defaultRetryDelays,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        """
        @param reactor: watches the database sockets.
        @param dsn: C{postgresql://user[:password]@host[:port]/dbname},
            C{postgresql:///dbname?host=/run/postgresql}, or a libpq
            key/value string.
        @param clock: gives recorded times and schedules timeouts and
            reconnection; the reactor when C{None}.
        @param retryDelays: returns the delays between reconnection attempts.
        @param migrations: the schema history to apply.
        @raise ValueError: if C{dsn} cannot be parsed.
        """
        super().__init__(clock if clock is not None else reactor, migrations)
        try:
            params = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.Error as e:
            raise ValueError(f"not a PostgreSQL DSN: {e}".strip()) from None
        self.reactor = reactor
        self.dsn = dsn
        self.poolSize = poolSize
        self.connectTimeout = connectTimeout
        self.retryDelays = retryDelays
        self.origin = uuid.uuid4().hex
        # Keepalives notice a silently vanished server on idle connections
        # (the LISTEN one is always idle); tcp_user_timeout (libpq 12+)
        # bounds how long a query's unacknowledged data may wait.
        defaults: dict[str, Any] = {
            "application_name": "snapstore",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if psycopg2.extensions.libpq_version() >= 120000:
            defaults["tcp_user_timeout"] = 60000
        self._connectArgs = {
            key: value for key, value in defaults.items() if key not in params
        }
        self._cooperator = Cooperator(
            scheduler=lambda work: reactor.callLater(0, work)
        )
        self._link: _Link | None = None
        self._everReady = False
        self._sleeping: Deferred[None] | None = None

    def __repr__(self) -> str:
        """
        Show the DSN without its password.
        """
        return (f"<PostgresStateStore {redactDSN(self.dsn)!r} "
                f"{self.phase.value}>")

    # -- life cycle --------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Connect, migrate and listen.

        @return: a Deferred firing when ready, or failing with
            L{StateUnavailable} when the first attempt fails (attempts go on
            in the background; L{whenReady} fires once one succeeds).
        """
        if self.phase is not Phase.NEW:
            return self.whenReady()
        self.phase = Phase.STARTING
        d: Deferred[None] = Deferred()
        self._startWaiters.append(d)
        Deferred.fromCoroutine(self._keepConnecting(immediately=True))
        return d

    async def _keepConnecting(self, immediately: bool) -> None:
        """
        Try to (re)connect until it works, the store is closed, or an error
        shows that retrying cannot help.
        """
        delays = self.retryDelays()
        if not immediately and not await self._sleep(next(delays)):
            return
        while True:
            if self.phase is Phase.CLOSED:
                return
            link = _Link(self)
            self._link = link
            try:
                await self._openLink(link)
            except (StateUnavailable, psycopg2.OperationalError,
                    psycopg2.InterfaceError, ConnectionDone, ConnectionLost):
                failure = Failure()
                link.close()
                if self._link is link:
                    self._link = None
                if self.phase is Phase.CLOSED:
                    return
                self.log.warn(
                    "Cannot reach the state database {dsn}: {error}",
                    dsn=redactDSN(self.dsn),
                    error=failure.getErrorMessage().strip(),
                )
                # Schedule the next attempt before telling waiters, so that
                # whatever they do next sees the store already retrying.
                sleeping = self._sleep(next(delays))
                self._becameUnavailable(Phase.DOWN, failure)
                if not await sleeping:
                    return
                continue
            except Exception:
                failure = Failure()
                link.close()
                self._link = None
                if self.phase is Phase.CLOSED:
                    return
                self.log.failure("Cannot use the state database {dsn}",
                                 failure, dsn=redactDSN(self.dsn))
                self._becameUnavailable(Phase.FAILED, failure)
                return
            if self.phase is Phase.CLOSED:
                link.close()
                return
            link.alive = True
            resync = self._everReady
            self._everReady = True
            self.log.info("State database {dsn} ready",
                          dsn=redactDSN(self.dsn))
            self._becameReady()
            if resync:
                self._dispatch({"kind": "resync"})
            return

    def _sleep(self, delay: float) -> Deferred[bool]:
        """
        Wait C{delay} seconds on the clock, unless the store is closed
        meanwhile.

        @return: a Deferred firing with C{True} after the delay, or C{False}
            when closing cancelled the wait.
        """
        sleeping = self._sleeping = deferLater(self.clock, delay)

        def woke(result: object) -> bool:
            """
            Tell the loop whether to go on.
            """
            self._sleeping = None
            if isinstance(result, Failure):
                result.trap(CancelledError)
                return False
            return self.phase is not Phase.CLOSED

        return sleeping.addBoth(woke)

    async def _openLink(self, link: _Link) -> None:
        """
        Connect C{link}, migrate, and start listening for changes.
        """
        await link.connect(self.dsn, self._connectArgs, self.connectTimeout)
        await self._migrate()
        link.listener.addNotifyObserver(self._notified)
        await link.listener.runOperation(f"LISTEN {CHANNEL}")

    def _linkLost(self, link: _Link, reason: Failure) -> None:
        """
        Called by a link when one of its connections died: drop them all,
        refuse calls, and reconnect.
        """
        if link is not self._link or self.phase is Phase.CLOSED:
            return
        self.log.warn(
            "Lost the state database connection ({error}); reconnecting",
            error=reason.getErrorMessage().strip(),
        )
        self._link = None
        link.close()
        self._becameUnavailable(Phase.DOWN, reason)
        Deferred.fromCoroutine(self._keepConnecting(immediately=False))

    def close(self) -> Deferred[None]:
        """
        Close every connection and stop reconnecting; later calls fail with
        L{StateUnavailable}.
        """
        self._becameUnavailable(Phase.CLOSED, None)
        if self._sleeping is not None:
            self._sleeping.cancel()
        link, self._link = self._link, None
        if link is not None:
            link.close()
        self._cooperator.stop()
        return succeed(None)

    # -- notifications -----------------------------------------------------

    def _notified(self, notify: Any) -> None:
        """
        Pass an announcement from another node to the observers.
        """
        if notify.channel != CHANNEL:
            return
        try:
            event = json.loads(notify.payload)
            if not isinstance(event, dict) or "kind" not in event:
                raise ValueError("not an event")
        except ValueError:
            self.log.warn("Ignoring malformed change notification {payload!r}",
                          payload=notify.payload)
            return
        if event.pop("origin", None) == self.origin:
            return
        self._dispatch(event)

    # -- transactions ------------------------------------------------------

    async def _runTransaction(
        self, operation: Operation, mode: Mode
    ) -> tuple[Any, list[Announcement]]:
        """
        Run C{operation} on a pooled connection of the current link.
        """
        link = self._link
        if link is None or link.dead:
            operation.close()
            raise self._unavailable()
        return await link.pool.runInteraction(self._interaction, operation,
                                              mode)

    async def _interaction(
        self, cursor: Any, operation: Operation, mode: Mode
    ) -> tuple[Any, list[Announcement]]:
        """
        Drive C{operation} over C{cursor}, inside the transaction txpostgres
        opened.
        """
        if mode is Mode.SERIAL:
            await cursor.execute("SELECT pg_advisory_xact_lock(%s)",
                                 (LOCK_KEY,))
        announcements: list[Announcement] = []
        value: Any = None
        while True:
            step = nextQuery(operation, value, announcements)
            if isinstance(step, Finished):
                break
            await cursor.execute(postgresParameters(step.sql), step.params)
            value = cursor.fetchall() if cursor.description is not None else None
        # NOTIFY is delivered at commit, in the order sent: sending them
        # after the queries, still inside the transaction, is the same.
        for announcement in announcements:
            if isinstance(announcement, Notify):
                payload = json.dumps(dict(announcement.event, origin=self.origin))
                if len(payload.encode("utf-8")) > MAX_PAYLOAD:
                    # NOTIFY refuses payloads of 8000 bytes or more; a
                    # resync says the same thing less precisely.
                    payload = json.dumps({"kind": "resync", "origin": self.origin})
                await cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        return step.value, announcements
