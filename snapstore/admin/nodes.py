# -*- test-case-name: tests.test_cluster -*-
"""
C{GET /v1/nodes} and the nodes in C{GET /v1/status}: the cluster's nodes
as the shared database lists them (L{snapstore.cluster}).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.web.server import Request

from snapstore.admin.router import Router

#: What C{/v1/nodes} says when this node is not part of a cluster.
NOT_CLUSTERED = ("this node is not part of a cluster (it needs a PostgreSQL --state and "
                 "--node-url or --public-url)")


class NodeRoutes:
    """
    The admin routes about the cluster's nodes.

    @ivar cluster: the L{snapstore.cluster.service.ClusterNode}, or C{None}.
    """

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def register(self, router: Router) -> None:
        router.add(b"GET", ("v1", "nodes"), self.nodes)

    async def section(self) -> Any:
        """
        The C{nodes} section of C{GET /v1/status}: the node list, C{None}
        outside a cluster.
        """
        try:
            listing = await self.listing()
        except Exception as error:
            listing = {"error": f"cannot list the nodes: {error}"}
        return None if listing is None else listing.get("nodes", listing)

    async def listing(self) -> Optional[dict[str, Any]]:
        if self.cluster is None:
            return None
        nodes = await self.cluster.nodes()
        answer: dict[str, Any] = {"self": self.cluster.url, "nodes": nodes}
        filler = self.cluster.filler
        if filler is not None:
            answer["fetches"] = dict(filler.counts)
        return answer

    async def nodes(self, request: Request, caller: Any) -> tuple[int, Any]:
        listing = await self.listing()
        if listing is None:
            return 200, {"nodes": [], "note": NOT_CLUSTERED}
        return 200, listing
