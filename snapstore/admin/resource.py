# -*- test-case-name: tests.test_admin -*-
"""
The admin endpoint's root resource: JSON under C{/v1/}, and C{/metrics}.

It authenticates every request, routes it through a
L{snapstore.admin.router.Router} that each area filled, maps errors to the
API's error shape and encodes answers, once for every route.  The
C{snapstore} command is a thin client of these routes; anything it shows,
a script can get from here too.

Routes (see each area's module)::

    GET    /v1/status                      version, uptime, health, counts
    GET    /v1/check-connections           probe upstream and the database
    GET    /v1/client-config               device setup (see clientconfig)
    GET    /v1/overrides[/SNAP]            list pins
    POST   /v1/overrides/SNAP              {"channel-map": [{"channel", "revision"}]}
    DELETE /v1/overrides/SNAP?channel=C    remove pins
    GET    /v1/devices[?all=1]             devices (connected: last 24 h)
    PUT    /v1/device-limit                {"limit": N}
    DELETE /v1/device-limit                back to the rules file's limit
    GET    /v1/cache                       cache statistics
    POST   /v1/cache/prune                 empty the cache (audited)
    POST   /v1/cache/verify                re-hash blobs, drop bad ones
    GET    /v1/audit?snap=&since=&until=   audit rows
    GET    /v1/audit/verify                check the hash chain
    POST   /v1/import                      import a bundle (offline)
    GET    /v1/imported                    imported snaps
    GET    /metrics                        Prometheus text format

Every other path is the dashboard's (L{snapstore.admin.dashboard.site}),
which authenticates the same way but answers a browser with a login form.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Coroutine, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from snapstore.admin.auth import Authoriser
from snapstore.admin.router import APIError, Router, errorJSON
from snapstore.http.headers import finishWith
from snapstore.state.errors import StateUnavailable

JSON_TYPE = b"application/json"


class AdminResource(Resource):
    """
    The admin endpoint's root resource.

    @ivar authoriser: decides who may call.
    @ivar router: the routes of every area.
    @ivar scrape: answers C{GET /metrics} (a coroutine given the request).
    @ivar pages: renders every path outside C{/v1/} and C{/metrics} (the
        dashboard), or C{None}.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, authoriser: Authoriser, router: Router,
                 scrape: Callable[[Request], Coroutine[Any, Any, None]],
                 pages: Optional[Resource] = None) -> None:
        super().__init__()
        self.authoriser = authoriser
        self.router = router
        self.scrape = scrape
        self.pages = pages

    def render(self, request: Request) -> Any:
        first = (request.postpath or [b""])[0]
        if self.pages is not None and first not in (b"v1", b"metrics"):
            return self.pages.render(request)
        caller = self.authoriser.authorise(request)
        if caller is None:
            request.responseHeaders.setRawHeaders(b"www-authenticate", [b'Bearer realm="snapstore"'])
            writeJSON(request, 401, errorJSON(
                "unauthorised", "this admin API needs 'Authorization: Bearer <token>' "
                "with a token from --admin-token-file"))
            return NOT_DONE_YET
        if not caller.authenticated and not self.authoriser.isLocal(request):
            writeJSON(request, 403, errorJSON(
                "forbidden", "the admin API answers only local clients when it has no token file"))
            return NOT_DONE_YET
        segments = tuple(segment.decode("utf-8", "replace") for segment in request.postpath or [])
        segments = tuple(s for s in segments if s != "") or ("",)
        if segments == ("metrics",) and request.method in (b"GET", b"HEAD"):
            Deferred.fromCoroutine(self.scrape(request)).addErrback(
                lambda failure: self._failed(failure, request))
            return NOT_DONE_YET
        handler, arguments, allowed = self.router.route(request.method, segments)
        if handler is None:
            if allowed:
                request.responseHeaders.setRawHeaders(b"allow", [b", ".join(sorted(allowed))])
                writeJSON(request, 405, errorJSON(
                    "method-not-allowed", f"{request.method.decode()} is not allowed here"))
            else:
                writeJSON(request, 404, errorJSON(
                    "not-found", f"no admin API path {request.path.decode('utf-8', 'replace')}"))
            return NOT_DONE_YET
        d: Deferred[tuple[int, Any]] = Deferred.fromCoroutine(
            handler(request, caller, *arguments))
        d.addCallbacks(lambda result: writeJSON(request, *result),
                       lambda failure: self._failed(failure, request))
        return NOT_DONE_YET

    def handles(self, request: Request) -> bool:
        """
        Whether a route answers C{request}'s method and path (so that
        L{snapstore.admin.crosssite} checks the body type of real calls
        only, and a wrong method still gets its 405).
        """
        segments = tuple(s.decode("utf-8", "replace") for s in request.postpath or []
                         if s != b"") or ("",)
        return self.router.route(request.method, segments)[0] is not None

    def _failed(self, failure: Failure, request: Request) -> None:
        error = failure.value
        if isinstance(error, APIError):
            writeJSON(request, error.status, errorJSON(error.code, error.message))
        elif failure.check(StateUnavailable):
            writeJSON(request, 503, errorJSON("state-unavailable", failure.getErrorMessage()))
        else:
            self.log.failure("admin request {path} failed", failure, path=request.path)
            writeJSON(request, 500, errorJSON(
                "internal-error", f"the admin API failed: {failure.getErrorMessage()}"))


def writeJSON(request: Request, status: int, value: Any) -> None:
    """
    Answer C{request} with C{value} as indented JSON, unless the client is
    gone or an answer was already written.
    """
    if request.finished or request._disconnected:
        return
    body = json.dumps(value, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    finishWith(request, status, JSON_TYPE, body)
