# -*- test-case-name: tests.test_forward -*-
"""
Requests that may arrive in absolute form (C{GET http://proxy:8000/v2/...}).

A device with C{proxy.http} set sends even requests for the store
endpoint to the forward proxy, in absolute form.  Relaying those over the
network back to ourselves would be refused by the internal-destination
rule and would hide the device's address from the store, so the forward
proxy hands such connections to the store's own guarded, observed site
(see docs/architecture.md), whose requests accept the absolute form.
"""

from __future__ import annotations

from twisted.web.server import Request


class AbsoluteFormRequest(Request):
    """
    A request whose target may be in absolute form: the scheme and
    authority are moved into C{Host} so resources see an ordinary path.
    (L{snapstore.http.guard.GuardedChannel} has already refused a target
    whose authority disagrees with C{Host}, and a second C{Host}.)
    """

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        lowered = path[:8].lower()
        if lowered.startswith(b"http://") or lowered.startswith(b"https://"):
            rest = path.split(b"://", 1)[1]
            cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i != -1),
                      default=len(rest))
            self.requestHeaders.setRawHeaders(b"host", [rest[:cut]])
            path = rest[cut:] or b"/"
            if path.startswith(b"?"):
                path = b"/" + path
        super().requestReceived(command, path, version)
