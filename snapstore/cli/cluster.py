# -*- test-case-name: tests.test_cluster -*-
"""
C{snapstore nodes [--json]}, and the node lines of C{snapstore status}.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO
from snapstore.cli.client import EXIT_OK
from snapstore.cli.format import dumpJSON, formatSize, table



def nodeLines(nodes: Any) -> list[str]:
    """
    The lines C{snapstore status} prints about the cluster's nodes.
    """
    if nodes is None:
        return []
    if isinstance(nodes, dict):
        return [f"Nodes: unknown ({nodes.get('error')})"]

    alive = sum(1 for node in nodes if node.get("alive"))
    lines = [f"Nodes: {alive} of {len(nodes)} alive"]
    for node in nodes:
        lines.append(f"  {node['url']}: cache {formatSize(node['cache-bytes'])}, "
                     f"heartbeat {node['heartbeat-age']:.1f}s ago"
                     f"{'' if node.get('alive') else ' (SILENT)'}")
    return lines


def cmdNodes(client: Any, options: argparse.Namespace, out: TextIO) -> int:

    answer = client.call("GET", "/v1/nodes")
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    if not answer.get("nodes"):
        out.write(answer.get("note", "no nodes registered yet") + "\n")
        return EXIT_OK
    rows = [["NODE", "CACHE", "BLOBS", "LAST HEARTBEAT", "AGE", "STATE"]]
    for node in answer["nodes"]:
        rows.append([
            node["url"] + (" (this node)" if node["url"] == answer.get("self") else ""),
            formatSize(node["cache-bytes"]), str(node.get("cache-blobs", "")),
            node["last-heartbeat"], f"{node['heartbeat-age']:.1f}s",
            "alive" if node.get("alive") else "silent"])
    table(rows, out)
    return EXIT_OK


def addVerbs(verb: Any) -> None:
    verb("nodes", cmdNodes,
         "the cluster's nodes (several nodes on one PostgreSQL): cache use, last heartbeat")
