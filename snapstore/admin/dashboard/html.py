# -*- test-case-name: tests.test_dashboard -*-
"""
The dashboard's HTML: escaping by default, and the page frame.

L{Markup} marks text that is already HTML; everything else given to
L{render} is escaped, so a snap name, an audit reason or a device identity
can never become markup.  Thirty lines instead of a template engine (the
Debian package would gain a dependency for four pages).

Every URL a page holds is a path on the admin endpoint itself: the site
may be air-gapped, and the dashboard must not name another host.
"""

from __future__ import annotations

import datetime
import html
from typing import Any, Iterable, Optional
from urllib.parse import urlencode

from snapstore.units import formatSize


class Markup(str):
    """
    Text that is HTML already (built by L{render} or by this module).
    """


def escape(value: Any) -> Markup:
    """
    C{value} as HTML text: L{Markup} as it is, C{None} as empty, the rest
    escaped (quotes too: values go into attributes).
    """
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html.escape(str(value), quote=True))


def render(template: str, **values: Any) -> Markup:
    """
    C{template} with C{{name}} replaced by each value, escaped; a list or
    tuple of values is joined (each escaped).
    """
    escaped = {}
    for name, value in values.items():
        if isinstance(value, (list, tuple)):
            escaped[name] = Markup("".join(escape(item) for item in value))
        else:
            escaped[name] = escape(value)
    return Markup(template.format(**escaped))


def query(path: str, **arguments: Any) -> str:
    """
    C{path} with the arguments that are not C{None} as its query.
    """
    given = {name.replace("_", "-"): value for name, value in arguments.items()
             if value is not None}
    return path + ("?" + urlencode(given) if given else "")


def table(headings: Iterable[str], rows: Iterable[Iterable[Any]],
          empty: str = "none") -> Markup:
    """
    A table (in a scrolling box, so a wide one never widens the page; on
    a phone each row is a card of label and value, see the style sheet).
    """
    headings = list(headings)
    body = [render("<tr>{cells}</tr>", cells=[
        render('<td data-label="{h}">{c}</td>', h=h, c=c) for h, c in zip(headings, row)])
        for row in rows]
    if not body:
        return render('<p class="empty">{empty}</p>', empty=empty)
    return render('<div class="table"><table><thead><tr>{heads}</tr></thead>'
                  '<tbody>{body}</tbody></table></div>',
                  heads=[render("<th>{h}</th>", h=h) for h in headings], body=body)


def sizeText(count: Optional[float]) -> str:
    """
    A byte count as the C{snapstore} command shows it (C{1.5 GiB}), or a
    dash.
    """
    return "—" if count is None else formatSize(count)


def timeText(posix: Optional[float]) -> str:
    """
    A POSIX time as UTC, to the second.
    """
    if posix is None:
        return "—"
    moment = datetime.datetime.fromtimestamp(float(posix), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def isoText(value: Optional[str]) -> str:
    """
    An RFC 3339 time of the API (C{2026-12-03T13:42:39Z}) as L{timeText}.
    """
    if not value:
        return "—"
    return value.replace("T", " ").split(".")[0].rstrip("Z") + " UTC"


#: The pages, in the navigation's order: path, title.
PAGES = (("/", "Overview"), ("/fleet", "Fleet"), ("/policy", "Policy"), ("/audit", "Audit"))

FRAME = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · snapstore</title>
<link rel="stylesheet" href="/static/dashboard.css">
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
</head>
<body>
<header>
<span class="brand">snapstore</span>
<nav>{nav}</nav>
{logout}
</header>
<main>
<h1>{title}</h1>
{notice}
{body}
</main>
<footer>snapstore {version} · the same data as <code>/v1/status</code> and the
<code>snapstore</code> command</footer>
</body>
</html>
"""


def frame(title: str, current: str, body: Markup, version: str,
          logout: Optional[Markup] = None, notice: Optional[Markup] = None) -> bytes:
    """
    A whole page: navigation (C{current} is this page's path), the body.
    """
    nav = [render('<a href="{path}"{here}>{name}</a>', path=path, name=name,
                  here=Markup(' aria-current="page"') if path == current else Markup(""))
           for path, name in PAGES]
    return render(FRAME, title=title, nav=nav, body=body, version=version,
                  logout=logout or Markup(""), notice=notice or Markup("")).encode("utf-8")
