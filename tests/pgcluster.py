"""
A PostgreSQL server of a test's own, which the test may stop and start.

The machine's server (the one L{tests.pgtest} uses, which other tests share)
is never stopped: a test that needs a real outage or a real restart starts a
throw-away cluster with C{initdb} and C{pg_ctl} in a temporary directory, on
a free port, and removes it afterwards.  PostgreSQL refuses to run as root,
so when the tests run as root the server runs as the C{postgres} user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from tests.ports import freePort


def binaries() -> Optional[str]:
    """
    @return: the newest C{/usr/lib/postgresql/*/bin} holding C{initdb} and
        C{pg_ctl}, or C{None}.
    """
    found = []
    for directory in glob.glob("/usr/lib/postgresql/*/bin"):
        if all(os.access(os.path.join(directory, name), os.X_OK) for name in ("initdb", "pg_ctl")):
            try:
                found.append((int(directory.split("/")[-2]), directory))
            except ValueError:
                continue
    return max(found)[1] if found else None


def _serverUser() -> Optional[str]:
    """
    The user the server runs as: ourselves, or C{postgres} when we are root.
    """
    if os.geteuid() != 0:
        return None
    return "postgres"


def skipReason() -> Optional[str]:
    """
    @return: why a cluster cannot be started here, or C{None}.
    """
    if binaries() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin"
    user = _serverUser()
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"running as root and there is no {user!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


class PostgresCluster:
    """
    A cluster in a temporary directory, listening on 127.0.0.1 on a free
    port, with trust authentication for the C{postgres} role.

    Each blocking C{pg_ctl} call runs in a thread, so the reactor (and the
    nodes under test) keep running while the server stops or starts.

    @ivar port: the TCP port.
    @ivar directory: the temporary directory (data and socket).
    """

    def __init__(self) -> None:
        self.bin = binaries()
        self.port = freePort()
        self.directory = tempfile.mkdtemp(prefix="snapstore-pg-")
        self.data = os.path.join(self.directory, "data")
        self.log = os.path.join(self.directory, "server.log")
        self.running = False
        user = _serverUser()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._user = user

    def _run(self, *argv: str) -> str:
        command = [os.path.join(self.bin, argv[0]), *argv[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              cwd=self.directory, timeout=120)
        output = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            log = ""
            if os.path.exists(self.log):
                with open(self.log, errors="replace") as f:
                    log = f.read()[-2000:]
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}):\n{output}\n{log}")
        return output

    def dsn(self, database: str = "postgres") -> str:
        """
        A C{--state} URL for C{database} on this cluster.
        """
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _options(self) -> str:
        return (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.directory} -c fsync=off")

    def _start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                  "-o", self._options(), "start")
        self.running = True

    def _stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop")
        self.running = False

    def _create(self, database: str) -> None:
        import psycopg2

        connection = psycopg2.connect(self.dsn(), connect_timeout=10)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {database}")
        finally:
            connection.close()

    def start(self, testCase: Any, database: str = "snapstore") -> Deferred[None]:
        """
        Initialise the cluster, start it, create C{database}, and arrange
        for the test's cleanup to stop the server and remove the directory.
        """
        testCase.addCleanup(self.destroy)

        def create() -> None:
            self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                      "--no-sync", "-E", "UTF8")
            self._start()
            self._create(database)

        return deferToThread(create)

    def stop(self) -> Deferred[None]:
        """
        Stop the server (fast shutdown: sessions are cut, as in an outage).
        """
        return deferToThread(self._stop)

    def restart(self) -> Deferred[None]:
        """
        Start the server again.
        """
        return deferToThread(self._start)

    def execute(self, sql: str, database: str = "snapstore") -> list[Any]:
        """
        Run one query on C{database}, outside any node; blocking.
        """
        import psycopg2

        connection = psycopg2.connect(self.dsn(database), connect_timeout=10)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall() if cursor.description is not None else []
        finally:
            connection.close()

    def destroy(self) -> Deferred[None]:
        """
        Stop the server if it runs and remove the directory.
        """

        def destroy() -> None:
            try:
                if self.running:
                    self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
            finally:
                shutil.rmtree(self.directory, ignore_errors=True)

        return deferToThread(destroy)
