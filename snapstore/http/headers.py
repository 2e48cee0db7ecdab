# -*- test-case-name: tests.test_store,tests.test_forward -*-
"""
Header hygiene shared by the store relay and the forward proxy.

A proxy must not pass on headers that describe one connection (RFC 9110
section 7.6.1) and must say that it handled the message (C{Via}).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

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


def _endToEnd(headers: Headers, drop: frozenset[bytes]) -> Iterator[tuple[bytes, bytes, Sequence[bytes]]]:
    """
    The name, lower-case name and values of each header of C{headers}
    that is end to end and not named in C{drop}, in their order.
    """
    listed = connectionListed(headers)
    for name, values in headers.getAllRawHeaders():
        lowered = name.lower()
        if lowered not in HOP_BY_HOP and lowered not in drop and lowered not in listed:
            yield name, lowered, values


def endToEnd(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """
    Copy C{headers} without hop-by-hop headers, those named by
    C{Connection}, and the lower-case names in C{drop}.
    """
    copy = Headers()
    for name, _, values in _endToEnd(headers, drop):
        copy.setRawHeaders(name, list(values))
    return copy


def relayHeaders(source: Headers, target: Headers, drop: frozenset[bytes] = frozenset()) -> None:
    """
    Set in C{target} (which has no C{Via} of its own) the end-to-end
    headers of C{source} but those named in C{drop} (lower-case), and
    C{Via} with this proxy appended to C{source}'s hops.

    What L{endToEnd} into a new L{Headers}, a copy of that into C{target}
    and L{addVia} did, in one pass that sets each header once: the relay
    did that for every request and every answer, about fifty calls into
    L{Headers} per refresh (issue 20).
    """
    hops: Sequence[bytes] = ()
    for name, lowered, values in _endToEnd(source, drop):
        if lowered == b"via":
            hops = values
        else:
            target.setRawHeaders(name, values)
    target.setRawHeaders(b"via", [b", ".join([*hops, VIA_TOKEN])])


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
