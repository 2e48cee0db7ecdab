# -*- test-case-name: tests.test_dashboard -*-
"""
The dashboard reads and changes state through the admin API's own route
handlers, called in-process: a page shows exactly what C{/v1/...}
answers, and a pin added from a form takes the path a C{snapstore pin}
takes (the same checks upstream, the same audit row, with the caller's
actor).  Only the HTTP framing is skipped.
"""

from __future__ import annotations

import io
import json
from typing import Any, Optional

from twisted.web.http_headers import Headers

from snapstore.admin.auth import Caller
from snapstore.admin.router import APIError, Router


class APICall:
    """
    What a route handler reads of a request: method, path, query
    arguments and body.
    """

    def __init__(self, method: bytes, segments: tuple[str, ...],
                 arguments: dict[str, list[str]], body: Any) -> None:
        self.method = method
        self.path = ("/" + "/".join(segments)).encode("utf-8")
        self.args = {name.encode("utf-8"): [v.encode("utf-8") for v in values]
                     for name, values in arguments.items()}
        self.content = io.BytesIO(b"" if body is None else json.dumps(body).encode("utf-8"))
        self.requestHeaders = Headers()

    def getHeader(self, name: bytes) -> Optional[bytes]:
        return None


class APIClient:
    """
    Calls the admin API's routes for one caller.
    """

    def __init__(self, router: Router, caller: Caller) -> None:
        self.router = router
        self.caller = caller

    async def call(self, method: bytes, path: str, body: Any = None,
                   **arguments: Any) -> Any:
        """
        The JSON value C{method path} answers.

        @param arguments: query arguments (a list for a repeated one;
            C{None} values are left out).
        @raise APIError: as the route raises it (or 404 for no route).
        """
        segments = tuple(path.strip("/").split("/"))
        handler, pathArguments, _ = self.router.route(method, segments)
        if handler is None:
            raise APIError(404, "not-found", f"no admin API path {path}")
        given = {name.replace("_", "-"): value if isinstance(value, list) else [str(value)]
                 for name, value in arguments.items() if value is not None}
        request = APICall(method, segments, given, body)
        _, value = await handler(request, self.caller, *pathArguments)
        return value

    async def get(self, path: str, **arguments: Any) -> Any:
        return await self.call(b"GET", path, **arguments)
