# -*- test-case-name: tests.test_state -*-
"""
Throw-away PostgreSQL databases for tests.

The server is the one named by C{SNAPSTORE_TEST_POSTGRES} (a DSN with rights
to create databases), else C{postgresql://postgres@127.0.0.1:5432/postgres}.
Each test gets its own database, dropped afterwards, so tests can run in
parallel against one server and never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Sequence

import psycopg2
from twisted.internet import reactor
from twisted.protocols import portforward
import psycopg2.extensions

from snapstore.state.postgres import redactDSN

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

_reason: list[str | None] = []


def serverDSN() -> str:
    """
    @return: the DSN of the server tests create their databases on.
    """
    return os.environ.get("SNAPSTORE_TEST_POSTGRES") or DEFAULT_SERVER


def skipReason() -> str | None:
    """
    @return: why PostgreSQL tests cannot run here, or C{None} when a server
        answers.  Asked once per test run.
    """
    if not _reason:
        try:
            psycopg2.connect(serverDSN(), connect_timeout=3).close()
        except psycopg2.Error as e:
            _reason.append(
                f"no PostgreSQL server answers at {redactDSN(serverDSN())!r} "
                f"(set SNAPSTORE_TEST_POSTGRES): {str(e).strip()}"
            )
        else:
            _reason.append(None)
    return _reason[0]


class TemporaryDatabase:
    """
    A database created for one test.

    @ivar name: its name, C{snapstore_test_<random>}.
    @ivar dsn: a libpq DSN connecting to it.
    """

    def __init__(self) -> None:
        """
        Create the database.
        """
        self.name = "snapstore_test_" + uuid.uuid4().hex[:16]
        self.dsn = psycopg2.extensions.make_dsn(serverDSN(), dbname=self.name)
        self._server("CREATE DATABASE " + self.name)

    def _server(self, sql: str) -> None:
        """
        Run C{sql} on the server's maintenance database, outside any
        transaction (C{CREATE DATABASE} refuses to run in one).
        """
        connection = psycopg2.connect(serverDSN(), connect_timeout=5)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any] | None:
        """
        Run one statement in the database, outside any store (to tamper
        with rows, or to inspect them), synchronously.
        """
        connection = psycopg2.connect(self.dsn, connect_timeout=5)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, tuple(params))
                if cursor.description is None:
                    return None
                return cursor.fetchall()
        finally:
            connection.close()

    def terminateConnections(self) -> int:
        """
        Kill every other session on this database, as a server restart or
        a network failure would.

        @return: how many were terminated.
        """
        rows = self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.name,),
        )
        return sum(1 for (done,) in rows or [] if done)

    def drop(self) -> None:
        """
        Drop the database, even with sessions still connected.
        """
        self._server(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class Relay:
    """
    A TCP relay in front of the PostgreSQL server that a test can switch
    off, cutting every connection, and on again on the same port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.targetPort = port
        self.port = 0
        self.listening: Any = None
        self.protocols: list[portforward.ProxyServer] = []

    def start(self) -> None:
        relay = self

        class Server(portforward.ProxyServer):
            def connectionMade(self) -> None:
                relay.protocols.append(self)
                portforward.ProxyServer.connectionMade(self)

        factory = portforward.ProxyFactory(self.host, self.targetPort)
        factory.protocol = Server
        self.listening = reactor.listenTCP(self.port, factory,
                                           interface="127.0.0.1")
        self.port = self.listening.getHost().port

    def stop(self) -> None:
        if self.listening is not None:
            self.listening.stopListening()
            self.listening = None
        protocols, self.protocols = self.protocols, []
        for protocol in protocols:
            protocol.transport.abortConnection()
            if protocol.peer is not None:
                protocol.peer.transport.abortConnection()
