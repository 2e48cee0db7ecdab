"""
In-memory stand-ins for unit tests of the store relay, the download path
and the forward channel: a request that can be rendered without a
channel, and an agent that answers from a table without a network.
"""

from __future__ import annotations

import io
import json
from typing import Any, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from snapstore.offline.store import LocalResponse


class StoreRequest(DummyRequest):
    """
    A L{DummyRequest} with what the store's resources read of a
    L{twisted.web.server.Request}: method, URI, path, body, and whether
    the client is gone.
    """

    _disconnected = False
    startedWriting = False

    def __init__(self, method: bytes, uri: bytes, body: bytes = b"",
                 headers: Optional[dict[bytes, bytes]] = None) -> None:
        path = uri.split(b"?", 1)[0]
        super().__init__([segment for segment in path.split(b"/")[1:]])
        self.method = method
        self.uri = uri
        self.path = path
        self.content = io.BytesIO(body)
        # A real request answers 200 unless told otherwise.
        self.responseCode = 200
        self.transport = StringTransport()
        self.transport.connected = True
        for name, value in (headers or {}).items():
            self.requestHeaders.setRawHeaders(name, [value])
        if headers and b"host" in headers:
            host, _, port = headers[b"host"].decode().partition(":")
            self.setHost(host.encode(), int(port or 80))

    def isSecure(self) -> bool:
        return False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        # DummyRequest pulls from any producer in a loop; the store's are
        # push producers, which only need remembering.
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def body(self) -> bytes:
        return b"".join(self.written)

    def json(self) -> Any:
        return json.loads(self.body())


@implementer(IAgent)
class TableAgent:
    """
    An agent answering each URL from C{answers} (URL to C{(code, headers,
    body)}); other URLs fail as if the connection were refused.

    @ivar requests: C{(method, url, headers)} of every request, in order.
    """

    def __init__(self, answers: dict[bytes, tuple[int, dict[bytes, bytes], bytes]]) -> None:
        self.answers = answers
        self.requests: list[tuple[bytes, bytes, Headers]] = []
        self.pending: list[Deferred[Any]] = []

    def request(self, method: bytes, uri: bytes, headers: Optional[Headers] = None,
                bodyProducer: Any = None) -> Deferred[Any]:
        self.requests.append((method, uri, headers or Headers()))
        if uri not in self.answers:
            return fail(ConnectionRefusedError(uri.decode()))
        code, answerHeaders, body = self.answers[uri]
        headers = Headers({name: [value] for name, value in answerHeaders.items()})
        return succeed(LocalResponse(code, b"OK", headers, body))


class EndedRequest:
    """
    What L{snapstore.observe.access.AccessObserver.ended} reads of a
    request that ended: its line, notes, bytes sent, C{X-Cache} and client.
    """

    def __init__(self, method: bytes, uri: bytes, notes: dict[str, Any],
                 sentLength: int = 0, startedAt: float = 0.0,
                 cache: Optional[bytes] = None, client: str = "10.0.0.2") -> None:
        self.method = method
        self.path = self.uri = uri
        self.snapstoreAccess = notes
        self.sentLength = sentLength
        self.startedAt = startedAt
        self.responseHeaders = Headers({b"x-cache": [cache]} if cache else {})
        self.client = client

    def getClientAddress(self) -> Any:
        return type("Address", (), {"host": self.client})()
