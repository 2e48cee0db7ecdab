# -*- test-case-name: tests.test_store,tests.test_forward -*-
"""
Header hygiene shared by the store relay and the forward proxy.

A proxy must not pass on headers that describe one connection (RFC 9110
section 7.6.1) and must say that it handled the message (C{Via}).
"""

from __future__ import annotations

from typing import Any

from twisted.web.http_headers import Headers

VIA_TOKEN = b"1.1 snapstore"

HOP_BY_HOP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ]
)

AUTHORIZATION_HEADERS = frozenset(
    [b"authorization", b"x-device-authorization", b"snap-device-authorization"]
)


def connectionListed(headers: Headers) -> set[bytes]:
    """
    Names listed in C{Connection}, which are hop-by-hop for this message.
    """
    listed = set()
    for value in headers.getRawHeaders(b"connection", []):
        for token in value.split(b","):
            if token.strip():
                listed.add(token.strip().lower())
    return listed


def endToEnd(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """
    Copy C{headers} without hop-by-hop headers, those named by
    C{Connection}, and the lower-case names in C{drop}.
    """
    excluded = HOP_BY_HOP | connectionListed(headers) | drop
    copy = Headers()
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in excluded:
            copy.setRawHeaders(name, list(values))
    return copy


def addVia(headers: Headers) -> None:
    """
    Append this proxy to C{Via}, keeping earlier hops.
    """
    previous = list(headers.getRawHeaders(b"via", []))
    headers.setRawHeaders(b"via", [b", ".join(previous + [VIA_TOKEN])])


def finishWith(request: Any, status: int, contentType: bytes, body: bytes) -> None:
    """
    Answer C{request} with a whole body the service made itself (an error,
    an admin answer) and finish it; C{HEAD} gets the headers only.
    """
    request.setResponseCode(status)
    request.responseHeaders.setRawHeaders(b"content-type", [contentType])
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    if request.method != b"HEAD":
        request.write(body)
    request.finish()
