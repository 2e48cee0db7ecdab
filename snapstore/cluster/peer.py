# -*- test-case-name: tests.test_cluster -*-
"""
The peer endpoint, C{/_cluster/v1/blobs/<sha3-384>} on the store endpoint:
another node of the cluster reads a blob this node holds, or the fill of it
in progress, as bytes arrive.

Only a request carrying the cluster's shared secret
(C{Authorization: Bearer <token>}, the content of C{--cluster-token-file})
is served; a node without a token file serves no peer request at all.  The
bytes are sent exactly like a device download (ranges included, the last
byte of a fill held back until it verified), and the asking node verifies
them again before committing, so a peer is never trusted with the content.
"""

from __future__ import annotations

import hmac
import re
from typing import Any, Optional

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from snapstore.store.download import UNSATISFIABLE, parseRange
from snapstore.http.storeerror import writeStoreError

#: The path prefix of peer requests, below the store endpoint's root.
PEER_ROOT = b"_cluster"
_DIGEST = re.compile(r"^[0-9a-f]{96}$")


def peerBlobURL(nodeURL: str, digest: str) -> bytes:
    """
    Where C{nodeURL}'s peer endpoint serves blob C{digest}.
    """
    base = nodeURL if nodeURL.endswith("/") else nodeURL + "/"
    return f"{base}{PEER_ROOT.decode()}/v1/blobs/{digest}".encode("ascii")


def tokenMatches(request: Request, token: Optional[bytes]) -> bool:
    """
    Whether C{request} carries the cluster token (compared in constant time).
    """
    if not token:
        return False
    given = request.getHeader(b"authorization") or b""
    scheme, _, value = given.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(value.strip(), token)


class PeerResource(Resource):
    """
    Serves C{v1/blobs/<digest>} (C{request.postpath}) to other nodes.

    @ivar download: the node's L{snapstore.store.download.DownloadResource},
        whose cache is read and whose way of sending bytes is reused.
    @ivar token: the cluster token, or C{None} to refuse every request.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, download: Any, token: Optional[bytes]) -> None:
        super().__init__()
        self.download = download
        self.cache = download.cache
        self.token = token

    def render(self, request: Request) -> Any:
        if not tokenMatches(request, self.token):
            why = ("this node serves no peer requests (it has no --cluster-token-file)"
                   if not self.token else "peer requests need the cluster token")
            self.log.warn("refused a peer request from {peer}: {why}",
                          peer=request.getClientAddress(), why=why)
            writeStoreError(request, 403, "cluster-token-required", why)
            return NOT_DONE_YET
        if request.method not in (b"GET", b"HEAD"):
            request.responseHeaders.setRawHeaders(b"allow", [b"GET, HEAD"])
            writeStoreError(request, 405, "method-not-allowed", "peer blobs take GET and HEAD")
            return NOT_DONE_YET
        segments = [segment.decode("ascii", "replace") for segment in request.postpath or []]
        if len(segments) != 3 or segments[:2] != ["v1", "blobs"] or not _DIGEST.match(segments[2]):
            writeStoreError(request, 404, "not-found", "no such peer resource")
            return NOT_DONE_YET
        digest = segments[2]
        blob = self.cache.open(digest)
        fill: Any = None if blob is not None else self.cache.filling(digest)
        if blob is None and fill is None:
            writeStoreError(request, 404, "not-found", f"this node neither holds nor fills {digest}")
            return NOT_DONE_YET
        size = blob.size if blob is not None else fill.size
        wanted = parseRange(request.getHeader(b"range"), size)
        if wanted == UNSATISFIABLE:
            if blob is not None:
                blob.close()
            request.responseHeaders.setRawHeaders(b"content-range", [b"bytes */%d" % size])
            writeStoreError(request, 416, "range-not-satisfiable", f"the blob has {size} bytes")
            return NOT_DONE_YET
        request.notifyFinish().addErrback(lambda _: None)
        if blob is not None:
            self.download.sendBlob(request, blob, wanted, b"HIT")
            return NOT_DONE_YET
        started = fill.whenStarted()
        started.addCallback(lambda _: self.download.joinFill(request, fill, wanted))
        started.addErrback(lambda reason: writeStoreError(
            request, 502, "upstream-bad-response",
            f"this node's fill of {digest} failed: {reason.getErrorMessage()}"))
        return NOT_DONE_YET
