# -*- test-case-name: tests.test_dashboard -*-
"""
The dashboard's audit page: the latest audit entries and whether the
chain verifies, and the latest deliveries and whether theirs does (what
C{GET /v1/audit}, C{/v1/audit/verify}, C{/v1/deliveries} and
C{/v1/deliveries/verify} answer).
"""

from __future__ import annotations

import json
from typing import Any

from snapstore.admin.dashboard.calls import APIClient
from snapstore.admin.dashboard.html import Markup, isoText, render, sizeText, table, timeText

#: Rows shown of each log.
LATEST = 50


def _change(entry: dict[str, Any]) -> str:
    def short(value: Any) -> str:
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 120 else text[:117] + "..."

    before, after = entry.get("before"), entry.get("after")
    if before is None:
        return short(after)
    if after is None:
        return "removed " + short(before)
    return f"{short(before)} → {short(after)}"


def _long(text: str) -> Markup:
    """
    A value that may break anywhere (paths, JSON), so the table fits.
    """
    return render('<span class="long">{t}</span>', t=text)


def _nowrap(text: str) -> Markup:
    return render('<span class="nowrap">{t}</span>', t=text)


def verdict(ok: bool, what: str, detail: str) -> Markup:
    return render('<p class="verdict {state}" id="{what}-chain" data-ok="{ok}">{text}</p>',
                  state="good" if ok else "bad", what=what, ok=str(ok).lower(),
                  text=("✓ the chain verifies: " if ok else "✗ the chain is broken: ") + detail)


async def auditBody(api: APIClient) -> Markup:
    check = await api.get("v1/audit/verify")
    entries = (await api.get("v1/audit"))["entries"][-LATEST:]
    deliveries = (await api.get("v1/deliveries"))["deliveries"][-LATEST:]
    deliveryCheck = await api.get("v1/deliveries/verify")
    auditOK = bool(check.get("ok"))
    auditDetail = (f"{check.get('rows', len(entries))} rows" if auditOK
                   else str(check.get("reason") or f"first bad row {check.get('first-bad-id')}"))
    return render(
        '<section><h2>Audit log</h2>{auditVerdict}{entries}</section>'
        '<section><h2>Deliveries</h2>{deliveryVerdict}{deliveries}</section>',
        auditVerdict=verdict(auditOK, "audit", auditDetail),
        entries=table(("Time", "Actor", "Action", "Target", "Change"),
                      [(_nowrap(timeText(e["time"])), e["actor"], e["action"], _long(e["target"]),
                        _long(_change(e))) for e in reversed(entries)], "no audit entries"),
        deliveryVerdict=verdict(bool(deliveryCheck["ok"]), "deliveries",
                                f"{deliveryCheck['rows']} rows" if deliveryCheck["ok"]
                                else f"first bad row {deliveryCheck['first-bad-id']}"),
        deliveries=table(("Time", "Device", "Snap", "Revision", "Bytes", "Cache"),
                         [(_nowrap(isoText(d["time"])), d["device"], d["snap"], d["revision"],
                           sizeText(d["bytes"]) + ("" if d["complete"] else " (partial)"),
                           d["cache"]) for d in reversed(deliveries)], "no deliveries"))
