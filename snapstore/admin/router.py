# -*- test-case-name: tests.test_admin -*-
"""
The admin API's routes and the contract of a route handler.

A handler is a coroutine C{handler(request, caller, *pathArguments)}
returning C{(status, jsonValue)}, or raising L{APIError}; the admin
resource (L{snapstore.admin.resource}) authenticates, maps errors and
encodes once.  Each area of the API (status, overrides, devices, cache,
audit, imports) is a module with a C{register(router)} that adds its
routes here; the composition root calls them (docs/architecture.md).

A small router of our own rather than klein: the handlers are coroutines
with one return shape, the matching is by whole path segments with C{*}
wildcards, and a wrong method must answer 405 with C{Allow}; that is the
forty lines below, where klein would add werkzeug's routing (and a
dependency to the Debian package) and its own error pages to override.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Coroutine, Optional

from twisted.web.server import Request

#: C{(request, caller, *arguments) -> (status, JSON value)}.
Handler = Callable[..., Coroutine[Any, Any, tuple[int, Any]]]


class APIError(Exception):
    """
    A request the API refuses; the client gets C{status} and
    C{{"error": {"code", "message"}}}.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Router:
    """
    Routes by method and path segments; C{"*"} in a pattern matches one
    segment, which is passed to the handler.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[bytes, tuple[str, ...], Handler]] = []

    def add(self, method: bytes, pattern: tuple[str, ...], handler: Handler) -> None:
        """
        Answer C{method} on paths matching C{pattern} with C{handler}; a
        later area registering the same method and pattern takes the route
        over (the fleet area's richer C{GET /v1/devices}).
        """
        self._routes = [route for route in self._routes if route[:2] != (method, pattern)]
        self._routes.append((method, pattern, handler))

    def route(self, method: bytes,
              segments: tuple[str, ...]) -> tuple[Optional[Handler], list[str], set[bytes]]:
        """
        @return: C{(handler, arguments, allowed)}; the handler is C{None}
            when nothing matches, and C{allowed} then names the methods
            the path has (empty: no such path).
        """
        allowed: set[bytes] = set()
        for routeMethod, pattern, handler in self._routes:
            if len(pattern) != len(segments):
                continue
            arguments = []
            for want, got in zip(pattern, segments):
                if want == "*":
                    arguments.append(got)
                elif want != got:
                    break
            else:
                if routeMethod == method:
                    return handler, arguments, allowed
                allowed.add(routeMethod)
        return None, [], allowed


def errorJSON(code: str, message: str) -> dict[str, Any]:
    """
    The admin API's error shape.
    """
    return {"error": {"code": code, "message": message}}


def argument(request: Request, name: bytes) -> Optional[str]:
    """
    The first value of query argument C{name}, or C{None}.
    """
    values = request.args.get(name)
    return values[0].decode("utf-8") if values else None


def timeArgument(request: Request, name: bytes) -> Optional[float]:
    """
    Query argument C{name} as POSIX seconds, or C{None}.
    """
    value = argument(request, name)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise APIError(400, "bad-request", f"{name.decode()} must be POSIX seconds, not {value!r}")


def readJSON(request: Request) -> Any:
    """
    The request body as JSON (C{None} when empty).
    """
    raw = request.content.read(1 << 20) if request.content else b""
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise APIError(400, "bad-request", "the request body is not JSON")
