# -*- test-case-name: tests.test_forward -*-
"""
Serving the proxy's own store API on the forward-proxy port.

A device with C{proxy.http} set sends even requests for the store
endpoint to the proxy, in absolute form (C{GET http://proxy:8000/v2/...}).
Relaying those over the network back to ourselves would be refused by the
internal-destination rule and would hide the device's address from the
store, so the forward proxy hands such connections to the store's own
site, whose requests are told to accept the absolute form.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request, Site


class LocalRequest(Request):
    """
    A store request that may arrive in absolute form: the scheme and
    authority are moved into C{Host} so resources see an ordinary path.
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


def localSite(resource: Any, reactor: Any) -> Site:
    """
    The site the forward proxy hands local connections to.
    """
    site = Site(resource, requestFactory=LocalRequest, reactor=reactor)
    site.displayTracebacks = False
    return site
