# -*- test-case-name: tests.test_dashboard -*-
"""
The dashboard's policy page: pins with their scope and expiry, holds,
approvals and device groups; and its three forms, which change policy
through the admin API's own routes (so a pin added here is checked
upstream and audited exactly like C{snapstore pin}'s):

    POST /policy/pin       snap, channel, revision[, group, until, reason]
    POST /policy/unpin     snap, channel[, group]
    POST /policy/approve   snap, revision[, group, reason]
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from snapstore.admin.dashboard.calls import APIClient
from snapstore.admin.dashboard.html import Markup, isoText, render, table
from snapstore.admin.router import APIError

#: What a finished change says on the page it returns to (by code, so
#: that no text of a link can appear on the page).
DONE = {"pinned": "The pin was added.", "unpinned": "The pin was removed.",
        "approved": "The revision was approved."}


def _hidden(csrf: str) -> Markup:
    return render('<input type="hidden" name="csrf" value="{csrf}">', csrf=csrf)


def _duration(seconds: Optional[int]) -> str:
    if seconds is None:
        return "until approved"
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def unpinButton(pin: dict[str, Any], csrf: str) -> Markup:
    return render('<form method="post" action="/policy/unpin" class="inline">{hidden}'
                  '<input type="hidden" name="snap" value="{snap}">'
                  '<input type="hidden" name="channel" value="{channel}">'
                  '<input type="hidden" name="group" value="{group}">'
                  '<button type="submit" class="danger">Delete</button></form>',
                  hidden=_hidden(csrf), snap=pin["snap"], channel=pin["channel"],
                  group=pin["group"] or "")


def approveForm(hold: dict[str, Any], csrf: str) -> Markup:
    """
    Approve a held revision: the hold's snap and group filled in.
    """
    snap = (render('<input type="hidden" name="snap" value="{s}">', s=hold["snap"])
            if hold["snap"] else
            Markup('<input name="snap" placeholder="snap" required aria-label="snap">'))
    return render('<form method="post" action="/policy/approve" class="inline">{hidden}{snap}'
                  '<input type="hidden" name="group" value="{group}">'
                  '<input name="revision" type="number" min="1" placeholder="revision" required '
                  'aria-label="revision to approve">'
                  '<button type="submit">Approve</button></form>',
                  hidden=_hidden(csrf), snap=snap, group=hold["group"] or "")


PIN_FORM = """<form method="post" action="/policy/pin" class="grid" id="pin-form">{hidden}
<label>Snap <input name="snap" required></label>
<label>Channel <input name="channel" value="latest/stable" required></label>
<label>Revision <input name="revision" type="number" min="1" required></label>
<label>Group <select name="group"><option value="">every device</option>{groups}</select></label>
<label>Until <input name="until" placeholder="30d or 2027-07-01T00:00:00Z"></label>
<label>Reason <input name="reason" maxlength="1000"></label>
<button type="submit">Add pin</button>
</form>"""


async def policyBody(api: APIClient, csrf: str) -> Markup:
    pins = (await api.get("v1/overrides"))["overrides"]
    holds = (await api.get("v1/holds"))["holds"]
    approvals = (await api.get("v1/approvals"))["approvals"]
    groups = (await api.get("v1/groups"))["groups"]
    return render(
        '<section><h2>Pins</h2>{pins}<h3>Add a pin</h3>{form}</section>'
        '<section><h2>Holds</h2>{holds}</section>'
        '<section><h2>Approvals</h2>{approvals}</section>'
        '<section><h2>Groups</h2>{groups}</section>',
        pins=table(("Snap", "Channel", "Revision", "Arch", "Scope", "Until", "Reason", ""),
                   [(p["snap"], p["channel"], p["revision"], p["architecture"],
                     p["group"] or "every device",
                     (isoText(p["until"]) + (" (expired)" if p["expired"] else ""))
                     if p["until"] else "—",
                     p["reason"] or "—", unpinButton(p, csrf)) for p in pins], "no pins"),
        form=render(PIN_FORM, hidden=_hidden(csrf),
                    groups=[render('<option value="{n}">{n}</option>', n=g["name"])
                            for g in groups]),
        holds=table(("Snap", "Channel", "Scope", "Hold", "Reason", "Since", "Approve"),
                    [(h["snap"] or "every snap", h["channel"] or "every channel",
                      h["group"] or "every device", _duration(h["for"]), h["reason"] or "—",
                      isoText(h["created-at"]),
                      approveForm(h, csrf) if h["until-approved"] else "—") for h in holds],
                    "no holds"),
        approvals=table(("Snap", "Revision", "Scope", "Reason", "At"),
                        [(a["snap"], a["revision"], a["group"] or "every device",
                          a["reason"] or "—", isoText(a["created-at"])) for a in approvals],
                        "no approvals"),
        groups=table(("Group", "Devices"), [(g["name"], g["devices"]) for g in groups],
                     "no device groups"))


def _field(form: dict[str, str], name: str, required: bool = True) -> Optional[str]:
    value = form.get(name, "").strip()
    if not value:
        if required:
            raise APIError(400, "bad-request", f"the form needs a {name}")
        return None
    return value


def _revision(form: dict[str, str]) -> int:
    text = _field(form, "revision") or ""
    if not text.isdigit() or int(text) < 1:
        raise APIError(400, "bad-request", f"the revision must be a positive number, not {text!r}")
    return int(text)


async def pin(api: APIClient, form: dict[str, str]) -> str:
    snap = _field(form, "snap") or ""
    await api.call(b"POST", f"v1/overrides/{snap}", body={
        "channel-map": [{"channel": _field(form, "channel"), "revision": _revision(form)}],
        "group": _field(form, "group", False), "until": _field(form, "until", False),
        "reason": _field(form, "reason", False) or ""})
    return "pinned"


async def unpin(api: APIClient, form: dict[str, str]) -> str:
    await api.call(b"DELETE", f"v1/overrides/{_field(form, 'snap')}",
                   channel=_field(form, "channel"), group=_field(form, "group", False))
    return "unpinned"


async def approve(api: APIClient, form: dict[str, str]) -> str:
    await api.call(b"POST", "v1/approvals", body={
        "snap": _field(form, "snap"), "revision": _revision(form),
        "group": _field(form, "group", False), "reason": _field(form, "reason", False) or ""})
    return "approved"


#: The changes the page's forms post, by path.
ACTIONS: dict[str, Callable[[APIClient, dict[str, str]], Any]] = {
    "/policy/pin": pin, "/policy/unpin": unpin, "/policy/approve": approve}
