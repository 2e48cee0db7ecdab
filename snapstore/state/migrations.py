# -*- test-case-name: tests.test_state -*-
"""
The versioned schema of the state store.

Each L{Migration} is a numbered list of SQL statements written in the subset
that SQLite and PostgreSQL both accept (C{TEXT}, C{BIGINT},
C{DOUBLE PRECISION}, C{CREATE INDEX}), so that one history serves both
back-ends and a database can never be at "version 3 for SQLite but 2 for
PostgreSQL".  Migrations are Python data rather than C{.sql} files so that
they ship inside the package without any package-data configuration.

The applied versions are recorded in the C{schema_version} table.  Each
migration runs in its own transaction under the store's write lock, checking
the version again inside it, so that two nodes starting at once against one
PostgreSQL database apply each migration exactly once, and a failing
migration leaves the database at the previous version.

Never edit a migration that has been released: add a new one.
"""

from __future__ import annotations

from typing import Generator, Sequence

import attrs

from snapstore.state.errors import MigrationError
from snapstore.state.operations import Query


@attrs.frozen
class Migration:
    """
    One step of the schema history.

    @ivar version: its number; versions are consecutive, starting at 1.
    @ivar name: a short description, stored next to the version.
    @ivar statements: the SQL statements, run in order in one transaction.
    """

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial",
        (
            """
            CREATE TABLE blobs (
                name TEXT PRIMARY KEY,
                sha3_384 TEXT NOT NULL,
                size BIGINT NOT NULL,
                url TEXT NOT NULL,
                snap_id TEXT NOT NULL DEFAULT '',
                snap_name TEXT NOT NULL DEFAULT '',
                revision BIGINT NOT NULL DEFAULT 0,
                architectures TEXT NOT NULL DEFAULT '[]',
                seen_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE overrides (
                snap_name TEXT NOT NULL,
                channel TEXT NOT NULL,
                architecture TEXT NOT NULL,
                revision BIGINT NOT NULL,
                snap_id TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (snap_name, channel, architecture)
            )
            """,
            """
            CREATE TABLE devices (
                identity TEXT PRIMARY KEY,
                model TEXT NOT NULL DEFAULT '',
                address TEXT NOT NULL DEFAULT '',
                first_seen DOUBLE PRECISION NOT NULL,
                last_seen DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE audit_log (
                id BIGINT PRIMARY KEY,
                time DOUBLE PRECISION NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                "before" TEXT NOT NULL,
                "after" TEXT NOT NULL,
                previous_hash TEXT NOT NULL,
                row_hash TEXT NOT NULL
            )
            """,
        ),
    ),
    Migration(
        2,
        "settings and lookup indexes",
        (
            """
            CREATE TABLE settings (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX devices_last_seen ON devices (last_seen)",
            "CREATE INDEX audit_log_target ON audit_log (target)",
            "CREATE INDEX blobs_snap_revision ON blobs (snap_id, revision)",
        ),
    ),
    Migration(
        3,
        "imported content (offline bundles)",
        (
            # What an offline node serves: snaps, their revisions (the snap
            # object a refresh answer gives), channel maps and assertions,
            # from bundles (snapstore.offline); see snapstore.state.imported.
            """
            CREATE TABLE imported_snaps (
                snap_id TEXT PRIMARY KEY,
                snap_name TEXT NOT NULL,
                info TEXT NOT NULL,
                imported_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX imported_snaps_name ON imported_snaps (snap_name)",
            """
            CREATE TABLE imported_revisions (
                snap_id TEXT NOT NULL,
                revision BIGINT NOT NULL,
                sha3_384 TEXT NOT NULL,
                size BIGINT NOT NULL,
                snap TEXT NOT NULL,
                imported_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (snap_id, revision)
            )
            """,
            """
            CREATE TABLE imported_channels (
                snap_id TEXT NOT NULL,
                architecture TEXT NOT NULL,
                channel TEXT NOT NULL,
                revision BIGINT NOT NULL,
                released_at TEXT NOT NULL,
                imported_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (snap_id, architecture, channel)
            )
            """,
            """
            CREATE TABLE imported_assertions (
                type TEXT NOT NULL,
                primary_key TEXT NOT NULL,
                revision BIGINT NOT NULL,
                body TEXT NOT NULL,
                imported_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (type, primary_key)
            )
            """,
        ),
    ),
    Migration(
        4,
        "device sessions",
        (
            # Which device each session macaroon upstream handed out belongs
            # to, by a digest of the macaroon (never the macaroon itself),
            # so that every node and every restart knows a device by serial
            # (snapstore.rules.sessions).
            """
            CREATE TABLE device_sessions (
                digest TEXT PRIMARY KEY,
                identity TEXT NOT NULL,
                model TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL DEFAULT 0,
                last_used DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX device_sessions_last_used ON device_sessions (last_used)",
        ),
    ),
    Migration(
        5,
        "fleet: inventory, snap names, groups, delivery log",
        (
            # What each device runs, from its last refresh context, and the
            # architecture it refreshes for (snapstore.state.fleet).  The
            # architecture is kept on each row too, so that counting the
            # fleet (inventory) reads one table.
            "ALTER TABLE devices ADD COLUMN architecture TEXT NOT NULL DEFAULT ''",
            """
            CREATE TABLE device_snaps (
                identity TEXT NOT NULL,
                snap_id TEXT NOT NULL,
                revision BIGINT NOT NULL,
                channel TEXT NOT NULL DEFAULT '',
                architecture TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (identity, snap_id)
            )
            """,
            # Covers the inventory's GROUP BY: counting a fleet of 10,000
            # devices x 20 snaps reads this index only (30 ms instead of
            # 600 ms on SQLite, bench/inventory.py).
            "CREATE INDEX device_snaps_inventory ON device_snaps"
            " (snap_id, revision, channel, architecture)",
            """
            CREATE TABLE snap_names (
                snap_id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                seen_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX snap_names_name ON snap_names (name)",
            """
            CREATE TABLE device_groups (
                name TEXT PRIMARY KEY,
                selectors TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
            # One row per download response to a device, hash-chained like
            # audit_log.
            """
            CREATE TABLE delivery_log (
                id BIGINT PRIMARY KEY,
                time DOUBLE PRECISION NOT NULL,
                device TEXT NOT NULL,
                snap_name TEXT NOT NULL,
                snap_id TEXT NOT NULL,
                revision BIGINT NOT NULL,
                sha3_384 TEXT NOT NULL,
                bytes BIGINT NOT NULL,
                complete BIGINT NOT NULL,
                cache TEXT NOT NULL,
                previous_hash TEXT NOT NULL,
                row_hash TEXT NOT NULL
            )
            """,
            "CREATE INDEX delivery_log_device ON delivery_log (device)",
            "CREATE INDEX delivery_log_time ON delivery_log (time)",
        ),
    ),
    Migration(
        6,
        "change control: scoped and expiring pins, holds, approvals, channel history",
        (
            # Pins gain a scope (a device group; '' = every device), an
            # expiry (NULL = none) and a reason; the group joins the key,
            # so the table is rebuilt (SQLite cannot change a primary key).
            """
            CREATE TABLE overrides_scoped (
                snap_name TEXT NOT NULL,
                channel TEXT NOT NULL,
                architecture TEXT NOT NULL,
                group_name TEXT NOT NULL DEFAULT '',
                revision BIGINT NOT NULL,
                snap_id TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL,
                until_at DOUBLE PRECISION,
                reason TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (snap_name, channel, architecture, group_name)
            )
            """,
            "INSERT INTO overrides_scoped (snap_name, channel, architecture, group_name,"
            " revision, snap_id, created_at) SELECT snap_name, channel, architecture, '',"
            " revision, snap_id, created_at FROM overrides",
            "DROP TABLE overrides",
            "ALTER TABLE overrides_scoped RENAME TO overrides",
            # Cool-down and approval holds (snapstore.policy): '' in
            # snap_name, channel or group_name means every snap, every
            # channel, every device; hold_for NULL means until approved.
            """
            CREATE TABLE holds (
                snap_name TEXT NOT NULL,
                channel TEXT NOT NULL,
                group_name TEXT NOT NULL,
                hold_for DOUBLE PRECISION,
                reason TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (snap_name, channel, group_name)
            )
            """,
            """
            CREATE TABLE approvals (
                snap_name TEXT NOT NULL,
                revision BIGINT NOT NULL,
                group_name TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (snap_name, revision, group_name)
            )
            """,
            # When snapstore first saw each revision on each channel: the
            # clock holds count from (first writer wins, shared by nodes).
            """
            CREATE TABLE channel_revisions (
                snap_name TEXT NOT NULL,
                channel TEXT NOT NULL,
                architecture TEXT NOT NULL,
                revision BIGINT NOT NULL,
                first_seen DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (snap_name, channel, architecture, revision)
            )
            """,
        ),
    ),
    Migration(
        7,
        "traffic history for the dashboard's chart",
        (
            # Blob bytes served from the cache and fetched from upstream,
            # per bucket (POSIX seconds of its start); every node adds to
            # the same rows (snapstore.state.traffic).
            """
            CREATE TABLE traffic_history (
                bucket DOUBLE PRECISION PRIMARY KEY,
                from_cache BIGINT NOT NULL DEFAULT 0,
                from_upstream BIGINT NOT NULL DEFAULT 0
            )
            """,
        ),
    ),
)

#: The schema version this code reads and writes.
LATEST = MIGRATIONS[-1].version


def currentVersion() -> Generator[Query, object, int]:
    """
    An operation reading the schema version, creating the version table on
    an empty database.

    @return: the highest applied version, 0 for an empty database.
    """
    yield Query(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version BIGINT PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " applied_at DOUBLE PRECISION NOT NULL)"
    )
    rows = yield Query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
    return int(rows[0][0])  # type: ignore[index]


def applyMigration(
    migration: Migration, now: float
) -> Generator[Query, object, bool]:
    """
    An operation applying C{migration} unless it already was.

    Must run under the store's write lock (mode C{SERIAL}), which is what
    makes the version check and the change one atomic step.

    @return: C{True} when it ran, C{False} when the database already had it.
    @raise MigrationError: when the database is not at the version just
        before it.
    """
    current = yield from currentVersion()
    if current >= migration.version:
        return False
    if current != migration.version - 1:
        raise MigrationError(
            f"database schema is at version {current}, cannot apply "
            f"migration {migration.version} ({migration.name})"
        )
    for statement in migration.statements:
        yield Query(statement)
    yield Query(
        "INSERT INTO schema_version (version, name, applied_at)"
        " VALUES (?, ?, ?)",
        (migration.version, migration.name, now),
    )
    return True


def checkSequence(migrations: Sequence[Migration]) -> None:
    """
    @raise MigrationError: unless versions are 1, 2, 3... in order.
    """
    for index, migration in enumerate(migrations):
        if migration.version != index + 1:
            raise MigrationError(
                f"migration {migration.name!r} has version "
                f"{migration.version}, expected {index + 1}"
            )
