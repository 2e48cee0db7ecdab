# -*- test-case-name: tests.test_cli -*-
"""
The one admin client every verb of the C{snapstore} command uses: how it
reaches the admin API, what it sends, and how a refusal becomes a
L{CommandError} with a message and an exit code.

Exit codes, for scripts::

    0  done; everything checked is fine
    1  done, but what was checked is not fine (an unreachable upstream, a
       broken audit chain, a corrupt cache blob)
    2  usage error
    3  cannot reach the admin API (is snapstore running? right --admin?)
    4  the admin API refused the token (or wants one)
    5  the admin API refused the request (unknown snap revision, no such
       override, ...) or failed
"""

from __future__ import annotations

import getpass
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Optional

from snapstore import __version__

DEFAULT_ADMIN = "http://127.0.0.1:8001"
TOKEN_ENV = "SNAPSTORE_ADMIN_TOKEN"
TOKEN_FILE_ENV = "SNAPSTORE_ADMIN_TOKEN_FILE"
ADMIN_ENV = "SNAPSTORE_ADMIN"

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_REFUSED = 5


class CommandError(Exception):
    """
    The command cannot do what was asked; C{message} says what to do and
    C{exitCode} is what the process exits with.
    """

    def __init__(self, message: str, exitCode: int) -> None:
        super().__init__(message)
        self.message = message
        self.exitCode = exitCode


class AdminClient:
    """
    A synchronous client of the admin API.

    @ivar base: the admin URL, e.g. C{http://127.0.0.1:8001}.
    @ivar token: the bearer token, or C{None}.
    """

    def __init__(self, base: str, token: Optional[str] = None, timeout: float = 120.0,
                 opener: Optional[Callable[..., Any]] = None) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout
        # Never send admin requests through an http_proxy from the
        # environment: the admin API is usually on loopback.
        self._opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({})).open

    def call(self, method: str, path: str, body: Any = None,
             query: Optional[dict[str, Any]] = None) -> Any:
        """
        Make one API call.

        @return: the decoded JSON answer.
        @raise CommandError: when the API cannot be reached or refuses.
        """
        url = self.base + path
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs, doseq=True)
        data = None
        headers = self._headers()
        if body is None and method in ("POST", "PUT", "PATCH"):
            # The API wants JSON on every state-changing call (a web page
            # cannot send that type cross-site): an empty object here.
            body = {}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        return self._send(urllib.request.Request(url, data=data, method=method, headers=headers),
                          self.timeout)

    def upload(self, path: str, body: Any, size: int, contentType: str,
               timeout: float, cutOff: Optional[str] = None) -> Any:
        """
        POST C{size} bytes read from C{body} (a file-like object with
        C{read}) to C{path} (a bundle import), streamed rather than held in
        memory.

        @param cutOff: the message when the API closes the connection
            before it has the whole body (it refused the upload from its
            head).
        @return: the decoded JSON answer.
        @raise CommandError: as L{call}.
        """
        headers = self._headers()
        headers["Content-Type"] = contentType
        headers["Content-Length"] = str(size)
        request = urllib.request.Request(self.base + path, data=body, method="POST",
                                         headers=headers)
        return self._send(request, timeout, cutOff)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"snapstore-cli/{__version__}"}
        try:
            headers["X-Snapstore-User"] = getpass.getuser()
        except Exception:
            pass
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _send(self, request: urllib.request.Request, timeout: float,
              cutOff: Optional[str] = None) -> Any:
        try:
            with self._opener(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
            message = errorMessage(raw) or f"HTTP {error.code} {error.reason}"
            if error.code == 401:
                hint = ("pass --token-file FILE or set " + TOKEN_ENV) if not self.token \
                    else "the token was not accepted: check --token-file"
                raise CommandError(f"the admin API at {self.base} wants a token: {hint}",
                                   EXIT_AUTH)
            if error.code == 403:
                raise CommandError(f"the admin API at {self.base} refused: {message}", EXIT_AUTH)
            raise CommandError(message, EXIT_REFUSED)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if cutOff is not None and isinstance(reason, (BrokenPipeError, ConnectionResetError)):
                raise CommandError(cutOff, EXIT_REFUSED)
            raise CommandError(
                f"cannot reach the admin API at {self.base}: {reason}: is snapstore "
                f"running, and is --admin (or ${ADMIN_ENV}) its --admin-endpoint?",
                EXIT_UNREACHABLE)
        try:
            return json.loads(raw)
        except ValueError:
            raise CommandError(f"{self.base} did not answer with JSON: is it a snapstore "
                               f"admin endpoint?", EXIT_UNREACHABLE)


def errorMessage(raw: bytes) -> Optional[str]:
    """
    The message of an admin API error answer, or C{None}.
    """
    try:
        return json.loads(raw)["error"]["message"]
    except Exception:
        return None


def readToken(path: str) -> str:
    """
    The token to send from a token file: its first token (the server's
    token file format, C{NAME:TOKEN} lines, or a bare token).
    """
    try:
        with open(path, encoding="utf-8") as tokenFile:
            lines = tokenFile.read().splitlines()
    except OSError as error:
        raise CommandError(f"cannot read the token file {path}: {error.strerror}", EXIT_USAGE)
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            return line.rpartition(":")[2].strip()
    raise CommandError(f"the token file {path} holds no token", EXIT_USAGE)


def adminClient(options: Any) -> AdminClient:
    """
    The admin API client the global options (C{--admin}, C{--token-file},
    C{$SNAPSTORE_ADMIN_TOKEN}, C{--timeout}) describe.
    """
    token = os.environ.get(TOKEN_ENV) or None
    if options.token_file:
        token = readToken(options.token_file)
    return AdminClient(checkAdminURL(options.admin), token, options.timeout)


def checkAdminURL(url: str) -> str:
    """
    Refuse an C{--admin} value that is not an http(s) URL before any
    request (urllib's own error is a traceback).

    @raise CommandError: with the exit code of an unusable admin URL (3).
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # a non-numeric port raises here
    except ValueError:
        usable = False
    if not usable:
        raise CommandError(f"--admin (or ${ADMIN_ENV}) must be the admin API's http(s) URL, "
                           f"e.g. {DEFAULT_ADMIN}, not {url!r}", EXIT_UNREACHABLE)
    return url.strip()

