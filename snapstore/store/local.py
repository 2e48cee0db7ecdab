# -*- test-case-name: tests.test_admin -*-
"""
The proxy's own C{/v1/} tree on the store endpoint, where devices can
reach it: C{/v1/client-config}, the device setup (a shell script, a
cloud-init snippet or JSON) described by an L{IClientConfig} that the
composition root builds (L{snapstore.admin.clientconfig.ClientConfig}).
"""

from __future__ import annotations

import json

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from snapstore.interfaces import IClientConfig
from snapstore.store.resource import NotFoundResource


class ClientConfigResource(Resource):
    """
    Serves C{/v1/client-config} on the store endpoint, where devices can
    reach it: a shell script by default, C{?format=cloud-init} or
    C{?format=json}; C{?mode=forward} for forward-proxy mode.
    """

    isLeaf = True

    def __init__(self, clientConfig: IClientConfig) -> None:
        super().__init__()
        self.clientConfig = clientConfig

    def render_GET(self, request: Request) -> bytes:
        problem = self.clientConfig.loopbackProblem(request)
        if problem is not None:
            request.setResponseCode(409)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return problem.encode("utf-8") + b"\n"
        form = (request.args.get(b"format") or [b"sh"])[0].decode("ascii", "replace")
        mode = (request.args.get(b"mode") or [b"store"])[0].decode("ascii", "replace")
        if mode not in ("store", "forward"):
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"mode must be store or forward\n"
        if form == "json":
            body = json.dumps(self.clientConfig.describe(request), indent=1).encode("utf-8")
            request.setHeader(b"content-type", b"application/json")
        elif form == "cloud-init":
            body = self.clientConfig.cloudInit(request, mode).encode("utf-8")
            request.setHeader(b"content-type", b"text/cloud-config; charset=utf-8")
        elif form == "sh":
            body = self.clientConfig.script(request, mode).encode("utf-8")
            request.setHeader(b"content-type", b"text/x-shellscript; charset=utf-8")
        else:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"format must be sh, cloud-init or json\n"
        return body

    render_HEAD = render_GET


class LocalV1(Resource):
    """
    The proxy's own C{/v1/} tree on the store endpoint (only
    C{client-config} so far), given to L{snapstore.store.resource.StoreRoot}
    as C{local={b"v1": LocalV1(...)}}.
    """

    def __init__(self, clientConfig: IClientConfig) -> None:
        super().__init__()
        self.putChild(b"client-config", ClientConfigResource(clientConfig))

    def getChild(self, path: bytes, request: Request) -> IResource:
        return NotFoundResource()
