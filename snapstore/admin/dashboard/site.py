# -*- test-case-name: tests.test_dashboard -*-
"""
The dashboard: HTML pages on the admin endpoint, beside the JSON API.

    GET  /                  overview            GET  /login    the login form
    GET  /fleet             fleet               POST /login    token=... sets the cookie
    GET  /policy            policy (+ forms)    POST /logout   forgets it
    GET  /audit             audit
    GET  /static/NAME       the style sheet (package data; no other host)

Who may look is decided as for the API (L{snapstore.admin.auth}): without
a token file, loopback clients and no one else; with one, whoever holds a
token, given as C{Authorization: Bearer} or, from a browser, in the
C{snapstore-admin} cookie that C{POST /login} sets (C{HttpOnly},
C{SameSite=Strict}, C{Secure} over TLS).  Changes are C{POST}s carrying
a form token derived from the credential (so a page elsewhere cannot make
one), and they pass the admin endpoint's cross-site checks
(L{snapstore.admin.crosssite}) like every request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import urllib.parse
from importlib import resources
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from snapstore import __version__
from snapstore.admin.auth import Authoriser, Caller
from snapstore.admin.dashboard.auditpage import auditBody
from snapstore.admin.dashboard.calls import APIClient
from snapstore.admin.dashboard.fleetpage import fleetBody
from snapstore.admin.dashboard.html import Markup, frame, render
from snapstore.admin.dashboard.overview import overviewBody
from snapstore.admin.dashboard.policypage import ACTIONS, DONE, policyBody
from snapstore.admin.router import APIError, Router
from snapstore.http.headers import finishWith
from snapstore.state.errors import StateUnavailable

#: The cookie holding the admin token in a browser.
COOKIE = b"snapstore-admin"

HTML = b"text/html; charset=utf-8"

#: Where the pages may load from and post to: this endpoint only.
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; style-src 'self'; img-src 'self'; "
                                b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    b"x-content-type-options": b"nosniff",
    # Not no-referrer: with it a browser sends "Origin: null" on the
    # forms' posts, which the cross-site checks rightly refuse.
    b"referrer-policy": b"same-origin",
    b"cache-control": b"no-store",
}

#: The files under C{/static/}, with their types.
STATIC_TYPES = {"dashboard.css": b"text/css; charset=utf-8", "icon.svg": b"image/svg+xml"}

LOGIN_FORM = """<form method="post" action="/login" class="login" id="login-form">
{error}
<label>Admin token <input type="password" name="token" autocomplete="current-password"
 required autofocus></label>
<button type="submit">Log in</button>
<p class="detail">A token of the admin endpoint's <code>--admin-token-file</code>
(a line <code>NAME:TOKEN</code>); it is kept in a cookie only this endpoint reads.</p>
</form>"""


def staticFiles() -> dict[str, tuple[bytes, bytes]]:
    """
    The static files, read once from the package.
    """
    folder = resources.files("snapstore.admin.dashboard").joinpath("static")
    return {name: (folder.joinpath(name).read_bytes(), kind)
            for name, kind in STATIC_TYPES.items()}


class Dashboard(Resource):
    """
    The dashboard's pages, rendered by the admin resource for every path
    outside C{/v1/} and C{/metrics}.

    @ivar secret: keys the form tokens (new at each start: a form left
        open across a restart must be loaded again).
    """

    isLeaf = True
    log = Logger()

    def __init__(self, authoriser: Authoriser, router: Router,
                 secret: Optional[bytes] = None) -> None:
        super().__init__()
        self.authoriser = authoriser
        self.router = router
        self.secret = secret if secret is not None else os.urandom(32)
        self.static = staticFiles()
        self.pages = {"/": ("Overview", overviewBody), "/fleet": ("Fleet", fleetBody),
                      "/policy": ("Policy", policyBody), "/audit": ("Audit", auditBody)}

    # -- who is asking -------------------------------------------------------

    def _credential(self, request: Request) -> Optional[str]:
        cookie = request.getCookie(COOKIE)
        if cookie:
            return cookie.decode("utf-8", "replace")
        return None

    def caller(self, request: Request) -> tuple[Optional[Caller], str]:
        """
        @return: the caller (C{None}: must log in) and the credential its
            form tokens are derived from.
        """
        if self.authoriser.tokens is None:
            return Caller(self.authoriser.localUser(request), False), "local"
        given = self._credential(request)
        if given is not None:
            caller = self.authoriser.callerWithToken(given)
            if caller is not None:
                return caller, given
        caller = self.authoriser.authorise(request)
        header = request.getHeader(b"authorization") or ""
        return caller, str(header)

    def formToken(self, credential: str) -> str:
        return hmac.new(self.secret, credential.encode("utf-8"), hashlib.sha256).hexdigest()

    # -- answering -----------------------------------------------------------

    def render(self, request: Request) -> Any:
        path = request.path.decode("utf-8", "replace")
        method = request.method
        if path.startswith("/static/") and method in (b"GET", b"HEAD"):
            return self._serveStatic(request, path[len("/static/"):])
        if self.authoriser.tokens is None and not self.authoriser.isLocal(request):
            self._page(request, 403, "Forbidden", "", render(
                '<p class="error">This admin endpoint answers only local clients: it has no '
                '<code>--admin-token-file</code>.</p>'))
            return NOT_DONE_YET
        if path == "/login":
            if method == b"POST":
                self._login(request)
            elif method in (b"GET", b"HEAD"):
                self._loginForm(request, 200)
            else:
                self._notAllowed(request, b"GET, POST")
            return NOT_DONE_YET
        caller, credential = self.caller(request)
        if caller is None:
            self._loginForm(request, 401)
            return NOT_DONE_YET
        if path == "/logout" or path in ACTIONS:
            if method != b"POST":
                self._notAllowed(request, b"POST")
                return NOT_DONE_YET
            form = _form(request)
            if not hmac.compare_digest(form.get("csrf", ""), self.formToken(credential)):
                self._page(request, 403, "Forbidden", "", render(
                    '<p class="error">The form has expired or came from elsewhere: load the '
                    'page again.</p>'), caller, credential)
                return NOT_DONE_YET
            if path == "/logout":
                self._setCookie(request, "", expire=True)
                _redirect(request, "/login")
            else:
                self._run(self._change(request, caller, credential, path, form), request)
            return NOT_DONE_YET
        page = self.pages.get(path)
        if page is None:
            self._page(request, 404, "Not found", "", render(
                '<p class="error">There is no page {path}.</p>', path=path), caller, credential)
            return NOT_DONE_YET
        if method not in (b"GET", b"HEAD"):
            self._notAllowed(request, b"GET")
            return NOT_DONE_YET
        title, body = page
        self._run(self._show(request, caller, credential, path, title, body), request)
        return NOT_DONE_YET

    def _run(self, coroutine: Any, request: Request) -> None:
        Deferred.fromCoroutine(coroutine).addErrback(self._failed, request)

    async def _show(self, request: Request, caller: Caller, credential: str, path: str,
                    title: str, body: Any, status: int = 200,
                    notice: Optional[Markup] = None) -> None:
        api = APIClient(self.router, caller)
        if path == "/policy":
            content = await body(api, self.formToken(credential))
            done = DONE.get(request.args.get(b"done", [b""])[0].decode("utf-8", "replace"))
            if done and notice is None:
                notice = render('<p class="notice">{done}</p>', done=done)
        else:
            content = await body(api)
        self._page(request, status, title, path, content, caller, credential, notice)

    async def _change(self, request: Request, caller: Caller, credential: str, path: str,
                      form: dict[str, str]) -> None:
        api = APIClient(self.router, caller)
        try:
            done = await ACTIONS[path](api, form)
        except APIError as error:
            # The page again, with what the API said (and the form's input
            # lost: a refusal is rare and the fields are few).
            await self._show(request, caller, credential, "/policy", "Policy", policyBody,
                             status=error.status,
                             notice=render('<p class="error" id="error">{m}</p>',
                                           m=error.message))
            return
        _redirect(request, "/policy?done=" + done)

    def _failed(self, failure: Failure, request: Request) -> None:
        if failure.check(StateUnavailable):
            status, message = 503, "The database does not answer: " + failure.getErrorMessage()
        elif isinstance(failure.value, APIError):
            status, message = failure.value.status, failure.value.message
        else:
            self.log.failure("dashboard page {path} failed", failure, path=request.path)
            status, message = 500, "The page failed: " + failure.getErrorMessage()
        self._page(request, status, "Unavailable", "", render(
            '<p class="error">{message}</p>', message=message))

    # -- login ---------------------------------------------------------------

    def _loginForm(self, request: Request, status: int, error: str = "") -> None:
        self._page(request, status, "Log in", "", render(
            LOGIN_FORM, error=render('<p class="error" id="error">{e}</p>', e=error)
            if error else ""))

    def _login(self, request: Request) -> None:
        if self.authoriser.tokens is None:
            # Nothing to log in to: loopback clients are trusted.
            _redirect(request, "/")
            return
        token = _form(request).get("token", "").strip()
        if self.authoriser.callerWithToken(token) is None:
            client = getattr(request.getClientAddress(), "host", "?")
            self.log.warn("dashboard login refused: a wrong admin token from {client}",
                          client=client)
            self._loginForm(request, 401, "That is not a token of this admin endpoint.")
            return
        self._setCookie(request, token)
        _redirect(request, "/")

    def _setCookie(self, request: Request, value: str, expire: bool = False) -> None:
        parts = [COOKIE + b"=" + value.encode("utf-8"), b"Path=/", b"HttpOnly",
                 b"SameSite=Strict"]
        if request.isSecure():
            parts.append(b"Secure")
        if expire:
            parts.append(b"Max-Age=0")
        request.responseHeaders.addRawHeader(b"set-cookie", b"; ".join(parts))

    # -- writing -------------------------------------------------------------

    def _page(self, request: Request, status: int, title: str, path: str, body: Markup,
              caller: Optional[Caller] = None, credential: Optional[str] = None,
              notice: Optional[Markup] = None) -> None:
        logout = None
        if caller is not None and caller.authenticated and credential is not None:
            logout = render('<form method="post" action="/logout" class="logout">'
                            '<input type="hidden" name="csrf" value="{csrf}">'
                            '<span>{actor}</span> <button type="submit">Log out</button></form>',
                            csrf=self.formToken(credential), actor=caller.actor)
        elif caller is not None:
            logout = render('<span class="actor">{actor}</span>', actor=caller.actor)
        _finish(request, status, HTML, frame(title, path, body, __version__, logout, notice))

    def _serveStatic(self, request: Request, name: str) -> Any:
        found = self.static.get(name)
        if found is None:
            _finish(request, 404, b"text/plain; charset=utf-8", b"no such file\n")
        else:
            _finish(request, 200, found[1], found[0])
        return NOT_DONE_YET

    def _notAllowed(self, request: Request, allowed: bytes) -> None:
        request.responseHeaders.setRawHeaders(b"allow", [allowed])
        _finish(request, 405, b"text/plain; charset=utf-8", b"method not allowed\n")


def _form(request: Request) -> dict[str, str]:
    """
    The fields of a form post (the first of each name).
    """
    content = request.content
    raw = b""
    if content is not None:
        content.seek(0)
        raw = content.read(1 << 20)
    fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def _redirect(request: Request, location: str) -> None:
    request.responseHeaders.setRawHeaders(b"location", [location.encode("utf-8")])
    _finish(request, 303, b"text/plain; charset=utf-8", b"see " + location.encode("utf-8") + b"\n")


def _finish(request: Request, status: int, contentType: bytes, body: bytes) -> None:
    if request.finished or request._disconnected:
        return
    for name, value in SECURITY_HEADERS.items():
        request.responseHeaders.setRawHeaders(name, [value])
    finishWith(request, status, contentType, body)
