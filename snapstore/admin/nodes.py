# -*- test-case-name: tests.test_cluster -*-
"""
C{GET /v1/nodes} and the nodes in C{GET /v1/status}: the cluster's nodes
as the shared database lists them (L{snapstore.cluster}).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.web.server import Request

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


def mountNodes(api: Any, cluster: Any) -> NodeRoutes:
    """
    Add C{GET /v1/nodes} to an admin API resource, and the node list to
    its C{/v1/status} answer (under C{"nodes"}, C{null} outside a cluster).
    """
    routes = NodeRoutes(cluster)
    # The status route as it is now (another part may already extend it).
    status = next(handler for method, pattern, handler in api._routes
                  if (method, pattern) == (b"GET", ("v1", "status")))

    async def statusWithNodes(request: Request, caller: Any) -> tuple[int, Any]:
        code, answer = await status(request, caller)
        try:
            listing = await routes.listing()
        except Exception as error:
            listing = {"error": f"cannot list the nodes: {error}"}
        answer["nodes"] = None if listing is None else listing.get("nodes", listing)
        return code, answer

    api._routes[:] = [(method, pattern, statusWithNodes if handler is status else handler)
                      for method, pattern, handler in api._routes]
    api._routes.append((b"GET", ("v1", "nodes"), routes.nodes))
    return routes
