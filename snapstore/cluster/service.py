# -*- test-case-name: tests.test_cluster -*-
"""
A node's membership of the cluster: it registers with its C{--node-url}
and beats every L{HEARTBEAT} seconds (with its cache's use), publishes
which blobs its cache holds as they are committed and evicted, and, with
the cluster token, fills misses from peers (L{snapstore.cluster.filler}).

Only nodes on a PostgreSQL state store form a cluster; a node whose URL
is unknown (neither C{--node-url} nor C{--public-url}) or that has no
C{--cluster-token-file} keeps its own cache, and says why at start-up.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from snapstore.cluster.database import ClusterDatabase
from snapstore.cluster.filler import ClusterFiller
from snapstore.cluster.peer import PEER_ROOT, PeerResource
from snapstore.interfaces import IBlobCacheObserver

#: Seconds between heartbeats (a node is listed within this of starting;
#: one silent for L{snapstore.cluster.database.STALE_AFTER} is not asked).
HEARTBEAT = 2.0


class ClusterTokenError(ValueError):
    """
    The cluster token file is missing, unreadable or empty.
    """


def readToken(path: Optional[str]) -> Optional[bytes]:
    """
    The cluster token from C{path} (surrounding white space dropped), or
    C{None} when no file is configured.
    """
    if not path:
        return None
    try:
        with open(path, "rb") as tokenFile:
            token = tokenFile.read().strip()
    except OSError as error:
        raise ClusterTokenError(f"--cluster-token-file {path}: {error.strerror}")
    if len(token) < 16:
        raise ClusterTokenError(f"--cluster-token-file {path}: the token must have at "
                                f"least 16 characters")
    return token


@implementer(IBlobCacheObserver)
class ClusterNode(Service):
    """
    This node's membership: heartbeat and blob locations.

    @ivar filler: the L{ClusterFiller} filling misses, or C{None} without a
        token.
    """

    log = Logger()
    name = "cluster"

    def __init__(self, reactor: Any, database: ClusterDatabase, url: str, cache: Any,
                 filler: Optional[ClusterFiller] = None) -> None:
        self.reactor = reactor
        self.database = database
        self.url = url
        self.cache = cache
        self.filler = filler
        self.ready = False
        self._beat: Optional[LoopingCall] = None

    # -- the cache's observer ------------------------------------------------

    def blobAdded(self, digest: str, size: int) -> None:
        if self.ready and self.filler is not None:
            self._quietly(self.database.setLocation(digest, self.url, True), "record", digest)

    def blobRemoved(self, digest: str) -> None:
        if self.ready and self.filler is not None:
            self._quietly(self.database.dropLocation(digest, self.url), "forget", digest)

    def _quietly(self, coroutine: Any, what: str, digest: str) -> None:
        def failed(reason: Any) -> None:
            self.log.warn("cannot {what} blob {digest} in the cluster's locations: {why}",
                          what=what, digest=digest[:16], why=reason.getErrorMessage())
        Deferred.fromCoroutine(coroutine).addErrback(failed)

    # -- heartbeat -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.cache.observers.append(self)
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = self.reactor
        self._beat.start(HEARTBEAT, now=True)

    def _heartbeat(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._beatOnce())

    async def _beatOnce(self) -> None:
        try:
            if not self.ready:
                await self.database.setUp()
                # Ready first: a blob committed while the list is written
                # is recorded after it (the link runs calls in order).
                self.ready = True
                # Without the token no peer may read this cache: list none.
                held = [digest for digest, _, _ in self.cache.entries()] if self.filler else []
                try:
                    await self.database.replaceLocations(self.url, held)
                except Exception:
                    self.ready = False
                    raise
                self.log.info("joined the cluster as {url}", url=self.url)
            stats = self.cache.stats()
            await self.database.heartbeat(self.url, stats["usedSize"], stats["blobs"])
        except Exception as error:
            # Blob changes meanwhile may not have been recorded: write the
            # whole list again once the database answers.
            self.ready = False
            self.log.warn("cluster heartbeat failed: {why}", why=error)

    def stopService(self) -> None:
        super().stopService()
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        if self in self.cache.observers:
            self.cache.observers.remove(self)
        self.database.close()

    async def nodes(self) -> list[dict[str, Any]]:
        return await self.database.nodes()


def joinCluster(reactor: Any, settings: Any, download: Any, root: Any) -> Optional[ClusterNode]:
    """
    Make this node a member of the cluster, if its settings allow: mount
    the peer endpoint on C{root} (always, so that a peer without the token
    is told why), and return the L{ClusterNode} service to start, or
    C{None} when the node keeps its cache to itself.

    @raise ClusterTokenError: if the token file is configured but unusable.
    """
    token = readToken(settings.clusterTokenFile)
    cache = download.cache
    if cache is None:
        return None
    root.mount(PEER_ROOT, PeerResource(download, token))
    state = settings.state or ""
    if not state.startswith(("postgresql://", "postgres://")) or settings.offline:
        if settings.nodeUrl or token is not None:
            Logger().warn("--node-url and --cluster-token-file are ignored: only nodes on a "
                          "PostgreSQL --state (and not --offline) form a cluster")
        return None
    url = settings.nodeUrl or settings.publicUrl
    if not url:
        Logger().warn("not joining the cluster: neither --node-url nor --public-url says "
                      "how other nodes reach this one")
        return None
    database = ClusterDatabase(reactor, state)
    filler = None
    if token is not None:
        filler = ClusterFiller(reactor, database, download, url, token)
        download.useFiller(filler)
    else:
        Logger().warn("no --cluster-token-file: this node is listed among the nodes but "
                      "neither serves nor asks peers for blobs")
    return ClusterNode(reactor, database, url, cache, filler)
