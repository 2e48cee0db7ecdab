# -*- test-case-name: tests.test_admin -*-
"""
Reading Twisted endpoint descriptions (C{tcp:8000:interface=127.0.0.1},
C{ssl:8443:privateKey=k.pem}), the one parser every listener's settings
go through: the admin endpoint's loopback check, the TLS file checks, the
device setup's port, and the forward proxy's own-store detection.
"""

from __future__ import annotations

import ipaddress
from typing import Optional


def splitEndpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint string into positional and keyword arguments,
    honouring backslash escapes as L{twisted.internet.endpoints} does.

    @return: e.g. C{(["ssl", "8443"], {"privateKey": "k.pem"})}.
    """
    parts: list[str] = []
    current = ""
    escaped = False
    for char in description:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    args = []
    kwargs = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if sep:
            kwargs[name] = value
        else:
            args.append(part)
    return args, kwargs


def endpointKind(description: Optional[str]) -> str:
    """
    The endpoint type in lower case (C{tcp}, C{ssl}, C{unix}, ...), or
    C{""} for nothing.
    """
    if not description:
        return ""
    args, _ = splitEndpoint(description)
    return args[0].lower() if args else ""


def endpointPort(description: Optional[str]) -> Optional[int]:
    """
    The TCP port an endpoint description listens on, when it names one.
    """
    if not description:
        return None
    args, kwargs = splitEndpoint(description)
    if kwargs.get("port", "").isdigit():
        return int(kwargs["port"])
    for arg in args[1:]:
        if arg.isdigit():
            return int(arg)
    if args and args[0].isdigit():
        return int(args[0])
    return None


def tcpPort(description: Optional[str]) -> Optional[int]:
    """
    The TCP port of a C{tcp:}, C{tcp6:} or C{ssl:} listener, when it has one.
    """
    if endpointKind(description) not in ("tcp", "ssl", "tcp6"):
        return None
    return endpointPort(description)


def isTLSEndpoint(description: Optional[str]) -> bool:
    """
    Whether the endpoint serves TLS (C{ssl:}).
    """
    return endpointKind(description) == "ssl"


def isLoopbackEndpoint(description: str) -> bool:
    """
    Whether a server endpoint string only accepts local connections.

    C{tcp:} and C{ssl:} count as local only with an C{interface=} on a
    loopback address (no interface means every address); C{unix:} sockets
    are local; anything else (C{systemd:} and plugins) cannot be known and
    is treated as not local.
    """
    args, kwargs = splitEndpoint(description)
    kind = args[0].lower() if args else ""
    if kind == "unix":
        return True
    if kind in ("tcp", "tcp6", "ssl") or (kind.isdigit() and len(args) == 1):
        interface = kwargs.get("interface", "")
        if interface == "localhost":
            return True
        try:
            return ipaddress.ip_address(interface).is_loopback
        except ValueError:
            return False
    return False
