# -*- test-case-name: tests.test_dashboard -*-
"""
The dashboard's fleet page: the devices with their groups and when each
was last seen, and per snap how many devices run which revision (what
C{GET /v1/devices?all=1}, C{/v1/inventory} and C{/v1/groups} answer).
"""

from __future__ import annotations

from typing import Any

from snapstore.admin.dashboard.calls import APIClient
from snapstore.admin.dashboard.html import Markup, isoText, render, table


def revisionBars(snap: dict[str, Any]) -> Markup:
    """
    One bar per revision of a snap, its length against the revision most
    devices run (channels and architectures summed); drawn as SVG, since
    the pages' content security policy allows no inline style.
    """
    counts: dict[int, int] = {}
    channels: dict[int, set[str]] = {}
    for row in snap["revisions"]:
        counts[row["revision"]] = counts.get(row["revision"], 0) + row["devices"]
        channels.setdefault(row["revision"], set()).add(row["channel"] or "?")
    most = max(counts.values()) if counts else 1
    bars = [render('<div class="bar" data-revision="{revision}" data-devices="{devices}">'
                   '<span class="label">r{revision} <small>{channels}</small></span>'
                   '<svg class="track" viewBox="0 0 100 10" preserveAspectRatio="none" '
                   'aria-hidden="true"><rect class="fill" width="{width}" height="10"/></svg>'
                   '<span class="count">{devices}</span></div>',
                   revision=revision, devices=counts[revision],
                   channels=", ".join(sorted(channels[revision])),
                   width=f"{100 * counts[revision] / most:.0f}")
            for revision in sorted(counts, reverse=True)]
    return render('<div class="snap" data-snap="{name}"><h3>{name}</h3>{bars}</div>',
                  name=snap["name"] or snap["snap-id"], bars=bars)


async def fleetBody(api: APIClient) -> Markup:
    devices = await api.get("v1/devices", all="1")
    inventory = await api.get("v1/inventory")
    groups = await api.get("v1/groups")
    limit = devices.get("limit")
    rows = [(d["identity"], d["model"], d["architecture"], ", ".join(d["groups"]) or "—",
             ", ".join(f"{s['name'] or s['snap-id']} r{s['revision']}" for s in d["snaps"]) or "—",
             isoText(d["last-seen"]))
            for d in sorted(devices["devices"], key=lambda d: d["last-seen"] or "", reverse=True)]
    return render(
        '<section><h2>Revisions in use</h2>{bars}</section>'
        '<section><h2>Devices</h2><p id="connected" data-value="{connected}">{connected} seen '
        'in the last 24 hours{limit}; {known} known.</p>{devices}</section>'
        '<section><h2>Groups</h2>{groups}</section>',
        bars=[revisionBars(snap) for snap in inventory["snaps"]] or
        Markup('<p class="empty">no device has reported its snaps yet</p>'),
        connected=devices["connected"], known=len(devices["devices"]),
        limit=f" (limit {limit})" if limit is not None else "",
        devices=table(("Device", "Model", "Arch", "Groups", "Snaps", "Last seen"), rows,
                      "no devices yet"),
        groups=table(("Group", "Selectors", "Devices"),
                     [(g["name"], "; ".join(f"{k}: {', '.join(v)}" for k, v in
                                            g["selectors"].items() if v), g["devices"])
                      for g in groups["groups"]], "no device groups"))
