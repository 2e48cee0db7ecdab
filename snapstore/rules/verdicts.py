# -*- test-case-name: tests.test_forward_rules -*-
"""
The values rules return and the records they are given.

Verdicts are plain frozen values so that a rule's answer can be logged,
compared in tests and passed between threads without surprises.  The
evaluation order (first non-abstaining verdict wins, a raising rule
refuses, all abstaining refuses) lives with the code that evaluates, not
here.
"""

from __future__ import annotations

from typing import Optional, Union

import attrs


@attrs.frozen
class Allow:
    """
    Let the request through; later rules are not asked.
    """


@attrs.frozen
class Deny:
    """
    Refuse the request.

    @ivar code: the HTTP status the client gets (403, 407, 503, ...).
    @ivar reason: one line for the client and the log; no secrets.
    @ivar headers: extra response headers as C{(name, value)} byte pairs,
        e.g. C{Proxy-Authenticate} with a 407.
    """

    code: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


@attrs.frozen
class Abstain:
    """
    This rule has no opinion; ask the next one.
    """


Verdict = Union[Allow, Deny, Abstain]


@attrs.frozen
class ConnectTarget:
    """
    What a forward-proxy client asked for, after name resolution.

    @ivar host: the destination host, lower-case, without brackets or a
        trailing dot.
    @ivar port: the destination port.
    @ivar addresses: the resolved IP addresses (text) the proxy will connect
        to, in order; empty when a parent proxy resolves names instead.
        The proxy dials only these, so a rule that checks them checks what
        is really reached.
    @ivar clientAddress: the client's IP address (text).
    @ivar headers: the request headers as C{(name, value)} byte pairs, names
        lower-case, in the order received.
    @ivar method: C{b"CONNECT"} for tunnels, else the relayed method.
    """

    host: str
    port: int
    addresses: tuple[str, ...]
    clientAddress: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    method: bytes = b"CONNECT"

    def header(self, name: bytes) -> Optional[bytes]:
        """
        The first value of header C{name} (case-insensitive), or C{None}.
        """
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None
