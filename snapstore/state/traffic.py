# -*- test-case-name: tests.test_state -*-
"""
State-store operations for the traffic history: how many blob bytes were
served from the cache and fetched from upstream, per time bucket.

The dashboard's chart of the last 24 hours reads it
(L{snapstore.admin.dashboard}); L{snapstore.observe.traffic} feeds it from
the metrics counters.  Each node adds what it served to the bucket, so
nodes sharing one PostgreSQL database chart the site's traffic, not one
node's; a bucket is kept in the database rather than in memory so that the
chart survives a restart.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs

from snapstore.state.operations import Operation, Query


@attrs.frozen
class TrafficBucket:
    """
    The bytes moved from C{start} (POSIX seconds, a multiple of the
    bucket length) to the next bucket.
    """

    start: float
    fromCache: int
    fromUpstream: int


def _bucket(row: Sequence[Any]) -> TrafficBucket:
    return TrafficBucket(float(row[0]), int(row[1]), int(row[2]))


def addTraffic(start: float, fromCache: int, fromUpstream: int) -> Operation:
    """
    Add bytes to the bucket starting at C{start} (created when new).
    """
    yield Query("INSERT INTO traffic_history (bucket, from_cache, from_upstream)"
                " VALUES (?, ?, ?) ON CONFLICT (bucket) DO UPDATE SET"
                " from_cache = traffic_history.from_cache + excluded.from_cache,"
                " from_upstream = traffic_history.from_upstream + excluded.from_upstream",
                (start, fromCache, fromUpstream))
    return None


def listTraffic(since: float) -> Operation:
    rows = yield Query("SELECT bucket, from_cache, from_upstream FROM traffic_history"
                       " WHERE bucket >= ? ORDER BY bucket", (since,))
    return [_bucket(row) for row in rows]


def pruneTraffic(before: float) -> Operation:
    """
    @return: how many buckets were removed.
    """
    rows = yield Query("SELECT COUNT(*) FROM traffic_history WHERE bucket < ?", (before,))
    yield Query("DELETE FROM traffic_history WHERE bucket < ?", (before,))
    return int(rows[0][0])
