# -*- test-case-name: tests.test_dashboard -*-
"""
The dashboard's overview: is this node healthy and what did its cache
save.  Every figure is what C{GET /v1/status} and C{GET /v1/traffic}
answer.
"""

from __future__ import annotations

from typing import Any, Optional

from snapstore.admin.dashboard.calls import APIClient
from snapstore.admin.dashboard.chart import chartSVG, totals
from snapstore.admin.dashboard.html import Markup, render, sizeText, timeText

TILE = ('<div class="tile {state}" id="{name}"><h2>{title}</h2>'
        '<p class="value" data-value="{raw}">{value}</p><p class="detail">{detail}</p></div>')


def tile(name: str, title: str, value: str, detail: Any = "", raw: Any = "",
         state: str = "") -> Markup:
    return render(TILE, name=name, title=title, value=value, detail=detail, raw=raw,
                  state=state)


def _percent(ratio: Optional[float]) -> str:
    return "—" if ratio is None else f"{ratio * 100:.1f} %"


def upstreamTile(status: dict[str, Any]) -> Markup:
    """
    Upstream reachable or since when not, and whether stale answers are
    served meanwhile (the uplink section, when there is one).
    """
    if status.get("offline"):
        return tile("upstream", "Upstream", "not contacted", "offline mode", state="neutral")
    uplink = status.get("uplink") or {}
    probe = status.get("upstream") or {}
    failingSince = uplink.get("failing-since")
    reachable = bool(probe.get("ok")) and failingSince is None
    if reachable:
        value, detail = "reachable", probe.get("detail", "")
    else:
        value = "unreachable"
        detail = (f"since {timeText(failingSince)}" if failingSince is not None
                  else probe.get("detail", ""))
    if "serve-stale" in uplink:
        if uplink.get("serving-stale"):
            stale = f"serving stale answers ({uplink.get('stale-answers', 0)} so far)"
        else:
            stale = "stale answers: " + ("on when upstream fails" if uplink.get("serve-stale")
                                         else "off")
        detail = f"{detail} · {stale}" if detail else stale
    return tile("upstream", "Upstream", value, detail, raw=str(reachable).lower(),
                state="good" if reachable else "bad")


async def overviewBody(api: APIClient) -> Markup:
    status = await api.get("v1/status")
    traffic = await api.get("v1/traffic")
    tiles = [tile("mode", "Mode", "offline" if status.get("offline") else "online",
                  "devices use " + str(status.get("store-url", "")), raw="offline" if status.get("offline")
                  else "online", state="neutral"),
             upstreamTile(status)]
    devices = status.get("devices")
    if devices is None:
        tiles.append(tile("devices", "Devices (24 h)", "—", "the database does not answer",
                          state="bad"))
    else:
        limit = devices.get("limit")
        tiles.append(tile("devices", "Devices (24 h)", str(devices["connected"]),
                          f"of a limit of {limit}" if limit is not None else "no limit",
                          raw=devices["connected"],
                          state="bad" if limit is not None and devices["connected"] >= limit
                          else ""))
    cache = status.get("cache")
    if cache is None:
        tiles.append(tile("cache", "Cache", "none", "this node runs without a blob cache"))
        tiles.append(tile("hit-ratio", "Hit ratio", "—"))
    else:
        bound = cache.get("bound")
        used = (cache["size"] / bound) if bound else None
        tiles.append(render(
            '<div class="tile" id="cache"><h2>Cache</h2>'
            '<p class="value" data-value="{size}">{sizeText}</p>'
            '<p class="detail">of {boundText} · {blobs}</p>{meter}</div>',
            size=cache["size"], sizeText=sizeText(cache["size"]),
            boundText=sizeText(bound) if bound else "no bound",
            blobs="1 blob" if cache.get("blobs") == 1 else f"{cache.get('blobs')} blobs",
            meter=render('<meter min="0" max="1" value="{v}">{p}</meter>', v=f"{used:.4f}",
                         p=_percent(used)) if used is not None else ""))
        ratio = cache.get("hit-ratio")
        tiles.append(tile("hit-ratio", "Hit ratio", _percent(ratio), "blob downloads since start",
                          raw="" if ratio is None else f"{ratio:.4f}"))
    buckets = traffic["buckets"]
    fromCache, fromUpstream = totals(buckets)
    return render(
        '<section class="tiles">{tiles}</section>'
        '<section><h2>Traffic, last 24 hours</h2>'
        '<p class="legend"><span class="nowrap"><span class="key cache"></span> from the cache '
        '<strong id="from-cache" data-value="{cacheRaw}">{cache}</strong></span> '
        '<span class="nowrap"><span class="key upstream"></span> from upstream '
        '<strong id="from-upstream" data-value="{upstreamRaw}">{upstream}</strong></span></p>'
        '{chart}</section>',
        tiles=tiles, chart=chartSVG(buckets, traffic["now"], traffic["bucket"]),
        cache=sizeText(fromCache), upstream=sizeText(fromUpstream),
        cacheRaw=fromCache, upstreamRaw=fromUpstream)
