# -*- test-case-name: tests.test_offline_importgate -*-
"""
The gate in front of C{POST /v1/import}: a bundle can be gigabytes, so the
admin listener decides on an upload from its head, before reading any of
its body (L{snapstore.http.guard.GuardedChannel} asks):

 - the caller must be authorised as for any admin call (the bearer token,
   or a loopback client when there is no token file), else C{401}/C{403};
 - an announced C{Content-Length} over C{--import-max-size} gets C{413} at
   once, and a chunked body is cut off with C{413} when it passes it;
 - an admitted body is written as it arrives to a file in
   C{<data-dir>/import-staging} (on disk: never memory, nor C{/tmp}, which
   may be a tmpfs), from which the importer reads it.

Everything else on the admin listener keeps its small body bound.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Optional
from urllib.parse import unquote_to_bytes

from zope.interface import implementer

from snapstore.interfaces import IBodyGate

IMPORT_PATH = (b"v1", b"import")


def _refusal(status: int, code: str, message: str) -> tuple[int, bytes]:
    # The admin API's error shape (snapstore.admin.router.errorJSON), which the CLI shows.
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


@implementer(IBodyGate)
class ImportGate:
    """
    Admits bundle uploads to the admin listener.

    @ivar authoriser: the admin API's L{snapstore.admin.auth.Authoriser}.
    @ivar maxBodySize: C{--import-max-size}.
    @ivar stagingRoot: where bodies are spooled.
    @ivar precheck: the listener's own refusal of a request from its head
        (the admin API's cross-site checks), asked before anything else, so a
        page in a browser cannot make the node spool a body it will refuse.
    """

    def __init__(self, authoriser: Any, maxBodySize: int, stagingRoot: str,
                 precheck: Optional[Callable[[Any], Optional[tuple[int, str, str]]]] = None,
                 ) -> None:
        self.authoriser = authoriser
        self.maxBodySize = maxBodySize
        self.stagingRoot = stagingRoot
        self.precheck = precheck

    def governs(self, method: bytes, path: bytes) -> bool:
        # The admin API routes on the unquoted, non-empty segments: so must
        # this, or "/v1//import" would slip past the gate.
        segments = tuple(s for s in (unquote_to_bytes(p) for p in path.split(b"/")) if s)
        return method == b"POST" and segments == IMPORT_PATH

    def admit(self, request: Any, length: Optional[int]) -> Optional[tuple[int, bytes]]:
        if self.precheck is not None:
            refused = self.precheck(request)
            if refused is not None:
                return _refusal(*refused)
        caller = self.authoriser.authorise(request)
        if caller is None:
            return _refusal(401, "unauthorised",
                            "importing a bundle needs 'Authorization: Bearer <token>' "
                            "with a token from --admin-token-file")
        if not caller.authenticated and not self.authoriser.isLocal(request):
            return _refusal(403, "forbidden", "the admin API answers only local clients "
                                              "when it has no token file")
        if length is not None and length > self.maxBodySize:
            return _refusal(413, "import-too-large",
                            f"the bundle is {length} bytes; this node takes at most "
                            f"{self.maxBodySize} (--import-max-size)")
        return None

    def spool(self, request: Any) -> None:
        # Twisted would read a form-encoded body whole into request.args.
        request._parsePOSTFormSubmission = False
        os.makedirs(self.stagingRoot, exist_ok=True)
        previous = request.content
        request.content = tempfile.TemporaryFile(prefix="upload-", dir=self.stagingRoot)
        if previous is not None:
            previous.close()
