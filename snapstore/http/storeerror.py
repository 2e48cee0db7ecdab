# -*- test-case-name: tests.test_store -*-
"""
The store's JSON error shape, used for every error the proxy itself makes.

snapd parses C{{"error-list":[{"code":...,"message":...}]}} and shows the
message, so a device admin sees why a call failed instead of a bare status.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import Request

from snapstore.http.headers import finishWith

ERROR_CONTENT_TYPE = b"application/json"


def storeErrorDocument(code: str, message: str) -> dict[str, Any]:
    """
    One error in the store's format, as a JSON-ready value.
    """
    return {"error-list": [{"code": code, "message": message}]}


def storeErrorBody(code: str, message: str) -> bytes:
    """
    Encode one error in the store's format.
    """
    return json.dumps(storeErrorDocument(code, message)).encode("utf-8")


def writeStoreError(request: Request, status: int, code: str, message: str) -> None:
    """
    Answer C{request} with C{status} and a store-format error, and finish it.
    Does nothing when the client is already gone or an answer was started.
    """
    if request.finished or request._disconnected or request.startedWriting:
        return
    finishWith(request, status, ERROR_CONTENT_TYPE, storeErrorBody(code, message))
