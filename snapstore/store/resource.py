# -*- test-case-name: tests.test_store -*-
"""
The root of the store endpoint: sends each snapd call to the part that
answers it.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from snapstore.http.headers import addVia
from snapstore.http.storeerror import writeStoreError
from snapstore.store.relay import copyResponseHead
from snapstore.store.rewrite import RemoteURLs
from snapstore.store.streaming import relayBody
from snapstore.store.upstream import StoreUpstream, UpstreamError

_RELAYED_ROOTS = (b"v2", b"api")


class NotFoundResource(Resource):
    """
    A store-format 404 for paths the store API does not have.
    """

    isLeaf = True

    def render(self, request: Request) -> Any:
        writeStoreError(request, 404, "not-found", "no such store API path on this proxy")
        return NOT_DONE_YET


class RemoteResource(Resource):
    """
    Serves C{/snapstore/remote/<token>/<name>}: a non-API URL (an icon)
    that the store handed out and the rewrite pointed at the proxy.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, upstream: StoreUpstream, remoteURLs: RemoteURLs) -> None:
        super().__init__()
        self.upstream = upstream
        self.remoteURLs = remoteURLs

    def render(self, request: Request) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            writeStoreError(request, 405, "method-not-allowed", "only GET and HEAD")
            return NOT_DONE_YET
        token = request.postpath[0].decode("ascii", "replace") if request.postpath else ""
        url = self.remoteURLs.get(token)
        if url is None:
            writeStoreError(request, 404, "not-found", "unknown or expired media URL")
            return NOT_DONE_YET
        headers = Headers()
        for name in (b"user-agent", b"if-none-match"):
            if request.requestHeaders.hasHeader(name):
                headers.setRawHeaders(name, request.requestHeaders.getRawHeaders(name, []))
        addVia(headers)
        requested = self.upstream.request(request.method, url.encode("ascii"), headers)

        def relay(response: Any) -> Any:
            copyResponseHead(response, request, keepLength=True)
            return relayBody(response, request)

        def failed(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, UpstreamError):
                writeStoreError(request, error.status, error.code, error.message)

        requested.addCallback(relay).addErrback(failed)
        return NOT_DONE_YET


class StoreRoot(Resource):
    """
    The store endpoint's root resource.

    @ivar download: answers C{/api/v1/snaps/download/<name>}.
    @ivar relay: answers every other call under C{/v2/} and C{/api/v1/}.
    @ivar local: extra resources served by the proxy itself under
        C{/snapstore/} or C{/v1/} (media, client configuration).
    @ivar assertions: answers C{/v2/assertions/...} (cached) when set;
        otherwise the relay does.
    """

    def __init__(self, relay: IResource, download: IResource,
                 remote: IResource, local: Optional[dict[bytes, IResource]] = None,
                 assertions: Optional[IResource] = None) -> None:
        super().__init__()
        self.relay = relay
        self.download = download
        self.assertions = assertions
        self.remote = remote
        self.local = dict(local or {})
        self.notFound = NotFoundResource()

    def mount(self, name: bytes, resource: IResource) -> None:
        """
        Serve C{resource} under C{/<name>/} beside the store API (a part
        made around this root's own resources: the cluster's peer
        endpoint around the download path).
        """
        self.local[name] = resource

    def getChild(self, path: bytes, request: Any) -> IResource:
        segments = [path] + request.postpath
        if segments[:4] == [b"api", b"v1", b"snaps", b"download"]:
            request.prepath.extend(request.postpath[:3])
            request.postpath = request.postpath[3:]
            return self.download
        if segments[:2] == [b"snapstore", b"remote"]:
            request.prepath.append(request.postpath.pop(0))
            return self.remote
        if segments[:2] == [b"v2", b"assertions"] and self.assertions is not None:
            return self.assertions
        if path in self.local:
            return self.local[path]
        if path in _RELAYED_ROOTS or (path == b"" and request.method == b"HEAD"):
            return self.relay
        return self.notFound

    def render(self, request: Request) -> Any:
        if request.method == b"HEAD":
            return self.relay.render(request)
        return self.notFound.render(request)
