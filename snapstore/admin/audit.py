# -*- test-case-name: tests.test_admin -*-
"""
The admin API's audit area.

    GET    /v1/audit?snap=&target=&since=&until=   audit rows
    GET    /v1/audit/verify                        check the hash chain
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from snapstore.admin.auth import Caller
from snapstore.admin.router import Router, argument, timeArgument
from snapstore.interfaces import IStateStore
from snapstore.state.auditcheck import checkRows


def auditJSON(entry: Any) -> dict[str, Any]:
    """
    The API's spelling of an audit row.
    """
    return {
        "id": entry.id,
        "time": entry.time,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
        "previous-hash": entry.previousHash,
        "row-hash": entry.rowHash,
    }


class AuditRoutes:
    def __init__(self, state: IStateStore) -> None:
        self.state = state

    def register(self, router: Router) -> None:
        router.add(b"GET", ("v1", "audit"), self.audit)
        router.add(b"GET", ("v1", "audit", "verify"), self.auditVerify)

    async def audit(self, request: Request, caller: Caller) -> tuple[int, Any]:
        snap = argument(request, b"snap")
        target = argument(request, b"target") or (f"snap:{snap}" if snap else None)
        since = timeArgument(request, b"since")
        until = timeArgument(request, b"until")
        entries = await self.state.listAudit(target=target, since=since, until=until)
        return 200, {"entries": [auditJSON(e) for e in entries]}

    async def auditVerify(self, request: Request, caller: Caller) -> tuple[int, Any]:
        return 200, checkRows(await self.state.listAudit())
