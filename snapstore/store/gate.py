# -*- test-case-name: tests.test_rules -*-
"""
Asking the admission rules before a blob is served.

The download path serves C{/api/v1/snaps/download/<name>} from the cache or
from upstream; L{DownloadGate} stands in front of it so that a snap the
rules deny (or a device over the limit) never gets a blob, cached or not,
without the download path knowing about rules.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from snapstore.rules.verdicts import Deny
from snapstore.state.records import BlobRecord
from snapstore.http.storeerror import writeStoreError

# <snap-id>_<revision>.snap, the store's download file name.
_SNAP_FILE = re.compile(r"^([A-Za-z0-9]{32})_([0-9]+)\.snap$")


def blobFor(name: str, record: Any) -> BlobRecord:
    """
    The blob a download names: the recorded one, or (for a name the relay
    never handed out) what its name tells: the snap-id and revision.
    """
    if record is not None:
        return record
    match = _SNAP_FILE.match(name)
    if match is None:
        return BlobRecord(name=name, sha3_384="", size=0, url="")
    return BlobRecord(name=name, sha3_384="", size=0, url="", snapId=match.group(1),
                      revision=int(match.group(2)))


class DownloadGate(Resource):
    """
    Asks C{rules.admitDownload(blob, request)} before handing a download to
    the wrapped resource; refusals get the store's error format.

    @ivar download: the download resource (leaf; C{postpath == [name]}).
    @ivar rules: the L{snapstore.rules.service.RulesService}.
    @ivar getBlob: C{name -> Deferred[BlobRecord | None]}.
    """

    isLeaf = True
    log = Logger()
    #: The L{snapstore.fleet.deliveries.DeliveryLog} told of every download
    #: handed on, or C{None}.
    deliveries: Any = None

    def __init__(self, download: IResource, rules: Any,
                 getBlob: Callable[[str], Any], deliveries: Any = None) -> None:
        super().__init__()
        self.deliveries = deliveries
        self.download = download
        self.rules = rules
        self.getBlob = getBlob

    def render(self, request: Any) -> Any:
        name = request.postpath[0].decode("ascii", "replace") if len(request.postpath) == 1 else ""
        d = maybeDeferred(self.getBlob, name) if name else maybeDeferred(lambda: None)
        blobs: list[BlobRecord] = []

        def admit(record: Any) -> Any:
            blobs.append(blobFor(name, record))
            return self.rules.admitDownload(blobs[0], request)

        d.addCallback(admit)
        d.addCallbacks(self._decided, self._failed, callbackArgs=(request, blobs),
                       errbackArgs=(request, name))
        return NOT_DONE_YET

    def _decided(self, verdict: Any, request: Any, blobs: Any = ()) -> None:
        if isinstance(verdict, Deny):
            for header, value in verdict.headers:
                request.responseHeaders.setRawHeaders(header, [value])
            writeStoreError(request, verdict.code, getattr(verdict, "errorCode", "forbidden"),
                    verdict.reason)
            return
        if request._disconnected:
            return
        if self.deliveries is not None and blobs:
            self.deliveries.watch(request, blobs[0])
        answer = self.download.render(request)
        if answer is not NOT_DONE_YET:
            request.write(answer)
            request.finish()

    def _failed(self, failure: Failure, request: Any, name: str) -> None:
        # Fail closed: without a decision the blob is not served.
        self.log.failure("cannot decide on download {name}", failure, name=name)
        writeStoreError(request, 503, "rules-unavailable",
                "the proxy cannot decide on this download right now")
