# -*- test-case-name: tests.test_cluster -*-
"""
The cluster's tables and its fill lock, in the PostgreSQL database the
nodes already share.

Two private connections, apart from the state store's pool: one runs the
cluster's short queries, the other only holds the session-level advisory
locks of the fills this node makes from upstream.  A node that dies (even
C{kill -9}) drops that connection, and PostgreSQL releases its locks at
once, so a waiting node can take over the fill.

Liveness is judged by the database's clock (C{now()}), never by the nodes',
so skewed node clocks cannot make a live node look dead.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, DeferredLock, TimeoutError
from twisted.logger import Logger
from txpostgres.txpostgres import Connection

#: Transaction-scoped advisory lock key serialising the schema set-up
#: ("clus"); fill locks use keys derived from digests.
SCHEMA_LOCK = 0x636C7573

#: Seconds a cluster query (or connecting) may take before the database is
#: treated as unavailable and the node fills from upstream on its own.
CALL_TIMEOUT = 5.0

#: A node whose last heartbeat is older than this is not asked for blobs.
STALE_AFTER = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapstore_nodes (
    url TEXT PRIMARY KEY,
    started TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat TIMESTAMPTZ NOT NULL DEFAULT now(),
    cache_bytes BIGINT NOT NULL DEFAULT 0,
    cache_blobs INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS snapstore_blob_locations (
    digest TEXT NOT NULL,
    node_url TEXT NOT NULL,
    complete BOOLEAN NOT NULL,
    PRIMARY KEY (digest, node_url)
);
"""


def lockKey(digest: str) -> int:
    """
    The signed 64-bit advisory lock key of a blob's fill.
    """
    return int.from_bytes(bytes.fromhex(digest[:16]), "big", signed=True)


class _Link:
    """
    One private connection, used by one caller at a time, reconnected on
    the next use after it broke.
    """

    log = Logger()

    def __init__(self, reactor: Any, dsn: str, onLost: Optional[Callable[[], None]] = None) -> None:
        self.reactor = reactor
        self.dsn = dsn
        self.onLost = onLost
        self._lock = DeferredLock()
        self._connection: Optional[Connection] = None

    async def _connected(self) -> Connection:
        if self._connection is None:
            connection = Connection(reactor=self.reactor)
            try:
                await connection.connect(self.dsn).addTimeout(CALL_TIMEOUT, self.reactor)
            except Exception:
                try:
                    connection.close()
                except Exception:
                    pass
                raise
            self._connection = connection
        return self._connection

    async def run(self, work: Callable[[Connection], Deferred[Any]]) -> Any:
        """
        Run C{work(connection)} alone on the connection, within
        L{CALL_TIMEOUT}: a database that hangs must not hold a download
        longer than a database that is down.
        """
        await self._lock.acquire()
        try:
            connection = await self._connected()
            try:
                return await work(connection).addTimeout(CALL_TIMEOUT, self.reactor)
            except Exception as error:
                if (isinstance(error, TimeoutError) or connection.closed
                        or _isConnectionError(error)):
                    self._drop()
                raise
        finally:
            self._lock.release()

    def _drop(self) -> None:
        if self._connection is not None:
            self.close()
            if self.onLost is not None:
                self.onLost()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass


def _isConnectionError(error: Exception) -> bool:
    import psycopg2

    return isinstance(error, (psycopg2.InterfaceError, psycopg2.OperationalError))


class ClusterDatabase:
    """
    The cluster's view of the shared database.

    @ivar held: digests whose fill lock this node holds.
    """

    log = Logger()

    def __init__(self, reactor: Any, dsn: str) -> None:
        self.reactor = reactor
        self.held: set[str] = set()
        self._queries = _Link(reactor, dsn)
        self._locks = _Link(reactor, dsn, onLost=self._locksLost)

    def _locksLost(self) -> None:
        if self.held:
            self.log.warn("lost the cluster lock connection while holding {count} fill locks",
                          count=len(self.held))
        self.held.clear()

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._queries.run(lambda connection: connection.runQuery(sql, params))

    async def _operation(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        await self._queries.run(lambda connection: connection.runOperation(sql, params))

    async def setUp(self) -> None:
        """
        Create the cluster's tables (once, whichever node comes first).
        """
        def create(cursor: Any) -> Deferred[Any]:
            async def steps() -> None:
                await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                await cursor.execute(SCHEMA)
            return Deferred.fromCoroutine(steps())

        await self._queries.run(lambda connection: connection.runInteraction(create))

    # -- membership ----------------------------------------------------------

    async def heartbeat(self, url: str, cacheBytes: int, cacheBlobs: int) -> None:
        await self._operation(
            "INSERT INTO snapstore_nodes (url, cache_bytes, cache_blobs) VALUES (%s, %s, %s) "
            "ON CONFLICT (url) DO UPDATE SET last_heartbeat = now(), "
            "cache_bytes = EXCLUDED.cache_bytes, cache_blobs = EXCLUDED.cache_blobs",
            (url, cacheBytes, cacheBlobs))

    async def nodes(self) -> list[dict[str, Any]]:
        """
        Every node that ever registered, with its heartbeat's age in
        seconds by the database's clock.
        """
        rows = await self._query(
            "SELECT url, last_heartbeat, EXTRACT(EPOCH FROM now() - last_heartbeat), "
            "cache_bytes, cache_blobs, started FROM snapstore_nodes ORDER BY url")
        return [{"url": url,
                 "last-heartbeat": heartbeat.isoformat(),
                 "heartbeat-age": round(float(age), 3),
                 "alive": float(age) <= STALE_AFTER,
                 "cache-bytes": int(cacheBytes),
                 "cache-blobs": int(cacheBlobs),
                 "started": started.isoformat()}
                for url, heartbeat, age, cacheBytes, cacheBlobs, started in rows]

    # -- blob locations ------------------------------------------------------

    async def replaceLocations(self, url: str, digests: list[str]) -> None:
        """
        Forget what C{url} was said to hold and record C{digests} instead
        (at start-up, from what its cache directory holds).
        """
        def replace(cursor: Any) -> Deferred[Any]:
            async def steps() -> None:
                await cursor.execute("DELETE FROM snapstore_blob_locations WHERE node_url = %s",
                                     (url,))
                if digests:
                    await cursor.execute(
                        "INSERT INTO snapstore_blob_locations (digest, node_url, complete) "
                        "SELECT unnest(%s::text[]), %s, true", (digests, url))
            return Deferred.fromCoroutine(steps())

        await self._queries.run(lambda connection: connection.runInteraction(replace))

    async def setLocation(self, digest: str, url: str, complete: bool) -> None:
        await self._operation(
            "INSERT INTO snapstore_blob_locations (digest, node_url, complete) VALUES (%s, %s, %s) "
            "ON CONFLICT (digest, node_url) DO UPDATE SET complete = EXCLUDED.complete",
            (digest, url, complete))

    async def dropLocation(self, digest: str, url: str) -> None:
        await self._operation(
            "DELETE FROM snapstore_blob_locations WHERE digest = %s AND node_url = %s",
            (digest, url))

    async def sources(self, digest: str, exclude: str) -> list[tuple[str, bool]]:
        """
        The live nodes other than C{exclude} holding (first) or filling
        C{digest}: C{(url, complete)} pairs.
        """
        rows = await self._query(
            "SELECT l.node_url, l.complete FROM snapstore_blob_locations l "
            "JOIN snapstore_nodes n ON n.url = l.node_url "
            "WHERE l.digest = %s AND l.node_url <> %s "
            "AND n.last_heartbeat > now() - make_interval(secs => %s) "
            "ORDER BY l.complete DESC, random()",
            (digest, exclude, STALE_AFTER))
        return [(url, bool(complete)) for url, complete in rows]

    # -- the fill lock -------------------------------------------------------

    async def tryLock(self, digest: str) -> bool:
        """
        Take the cluster-wide fill lock of C{digest} without waiting.
        """
        if digest in self.held:
            return False
        rows = await self._locks.run(lambda connection: connection.runQuery(
            "SELECT pg_try_advisory_lock(%s)", (lockKey(digest),)))
        if rows[0][0]:
            self.held.add(digest)
            return True
        return False

    async def unlock(self, digest: str) -> None:
        if digest not in self.held:
            return
        self.held.discard(digest)
        await self._locks.run(lambda connection: connection.runQuery(
            "SELECT pg_advisory_unlock(%s)", (lockKey(digest),)))

    def close(self) -> None:
        self._queries.close()
        self._locks.close()
