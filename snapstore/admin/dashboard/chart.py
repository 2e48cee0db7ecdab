# -*- test-case-name: tests.test_dashboard -*-
"""
The overview's chart: blob bytes served from the cache and fetched from
upstream over the last 24 hours, as an SVG drawn on the server from the
traffic history (L{snapstore.state.traffic}); no script, no chart library.

One stacked bar per bucket: the cache's bytes (the bandwidth saved) at the
bottom, upstream's on top.  The SVG scales to the page's width.
"""

from __future__ import annotations

from typing import Any, Sequence

from snapstore.admin.dashboard.html import Markup, render, sizeText, timeText

#: Seconds the chart spans.
SPAN = 24 * 3600.0

#: The drawing's size in SVG units (it is scaled to the page).
WIDTH, HEIGHT, AXIS = 960.0, 180.0, 18.0


def chartSVG(buckets: Sequence[Any], now: float, bucket: float) -> Markup:
    """
    @param buckets: the buckets of C{GET /v1/traffic} (C{start},
        C{from-cache}, C{from-upstream}).
    @param now: the chart's right edge.
    @param bucket: the buckets' length in seconds.
    """
    start = now - SPAN
    slots = int(SPAN // bucket)
    slotWidth = WIDTH / slots
    peak = max([b["from-cache"] + b["from-upstream"] for b in buckets] + [1])
    plot = HEIGHT - AXIS
    bars = []
    for item in buckets:
        slot = int((item["start"] - start) // bucket)
        if not 0 <= slot < slots:
            continue
        x = slot * slotWidth
        cacheHeight = plot * item["from-cache"] / peak
        upstreamHeight = plot * item["from-upstream"] / peak
        label = (f"{timeText(item['start'])}: {sizeText(item['from-cache'])} from the cache, "
                 f"{sizeText(item['from-upstream'])} from upstream")
        bars.append(render(
            '<g><title>{label}</title>'
            '<rect class="cache" x="{x}" y="{cy}" width="{w}" height="{ch}"/>'
            '<rect class="upstream" x="{x}" y="{uy}" width="{w}" height="{uh}"/></g>',
            label=label, x=f"{x:.1f}", w=f"{max(slotWidth - 0.5, 0.5):.1f}",
            cy=f"{plot - cacheHeight:.1f}", ch=f"{cacheHeight:.1f}",
            uy=f"{plot - cacheHeight - upstreamHeight:.1f}", uh=f"{upstreamHeight:.1f}"))
    ticks = []
    for hoursAgo in range(24, -1, -6):
        x = WIDTH * (SPAN - hoursAgo * 3600) / SPAN
        anchor = "start" if hoursAgo == 24 else "end" if hoursAgo == 0 else "middle"
        ticks.append(render('<text x="{x}" y="{y}" text-anchor="{anchor}">{text}</text>',
                            x=f"{x:.1f}", y=f"{HEIGHT - 4:.1f}", anchor=anchor,
                            text="now" if hoursAgo == 0 else f"−{hoursAgo} h"))
    return render(
        '<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{summary}">'
        '<line class="axis" x1="0" y1="{plot}" x2="{w}" y2="{plot}"/>'
        '<text class="peak" x="2" y="12">{peak}</text>{bars}{ticks}</svg>',
        w=f"{WIDTH:.0f}", h=f"{HEIGHT:.0f}", plot=f"{plot:.1f}",
        peak=f"peak {sizeText(peak)} per {bucket / 60:.0f} min" if buckets else "no traffic yet",
        summary=f"bytes served from the cache and from upstream since {timeText(start)}",
        bars=bars, ticks=ticks)


def totals(buckets: Sequence[Any]) -> tuple[int, int]:
    """
    @return: bytes from the cache and from upstream over C{buckets}.
    """
    return (sum(b["from-cache"] for b in buckets), sum(b["from-upstream"] for b in buckets))
