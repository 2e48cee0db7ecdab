# -*- test-case-name: tests.test_fakestore -*-
"""
Recording what reaches the fake store, and knowing which connections are
open so that stopping the store leaves a clean reactor.

Proxy tests are mostly about upstream traffic ("one upstream transfer for
two clients", "no credentials reached the CDN"), so every request on both
listeners is kept as a plain record that tests can filter.
"""

from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.protocols.policies import WrappingFactory
from twisted.web.server import Site


@dataclass
class RequestRecord:
    """
    One request as the fake store received it.

    @ivar listener: C{"api"} or C{"cdn"}.
    @ivar method: e.g. C{"GET"}.
    @ivar path: the path without the query, e.g. C{"/v2/snaps/refresh"}.
    @ivar query: the raw query string (without C{?}), C{""} if none.
    @ivar headers: lower-case header name to the list of its values, in
        received order.
    @ivar body: the request body.
    @ivar client: C{(host, port)} of the peer.
    @ivar bodyBytesSent: response body bytes written: CDN blobs, and API
        answers as sent (compressed, when the compression switch is on).
    """

    listener: str
    method: str
    path: str
    query: str
    headers: dict[str, list[str]]
    body: bytes
    client: tuple[str, int]
    bodyBytesSent: int = 0
    status: int | None = None

    def header(self, name: str) -> str | None:
        """
        The first value of header C{name} (any case), or L{None}.
        """
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def hasHeader(self, name: str) -> bool:
        return name.lower() in self.headers


class RecordingSite(Site):
    """
    A L{Site} that appends a L{RequestRecord} for every request it
    dispatches and tags it with the listener's name.
    """

    def __init__(self, resource, listener: str, records: list, **kwargs) -> None:
        super().__init__(resource, **kwargs)
        self.listener = listener
        self._records = records

    def getResourceFor(self, request):
        request.fakeStoreRecord = self.record(request)
        return super().getResourceFor(request)

    def log(self, request) -> None:
        """
        Note the status code the request finished with; skip the access log,
        which would only add noise to test logs.
        """
        record = getattr(request, "fakeStoreRecord", None)
        if record is not None:
            record.status = request.code

    def record(self, request) -> RequestRecord:
        uri = request.uri.decode("latin-1")
        path, _, query = uri.partition("?")
        headers: dict[str, list[str]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            headers[name.decode("latin-1").lower()] = [
                v.decode("latin-1") for v in values
            ]
        request.content.seek(0)
        body = request.content.read()
        request.content.seek(0)
        peer = request.getClientAddress()
        record = RequestRecord(
            listener=self.listener,
            method=request.method.decode("ascii"),
            path=path,
            query=query,
            headers=headers,
            body=body,
            client=(getattr(peer, "host", ""), getattr(peer, "port", 0)),
        )
        self._records.append(record)
        return record


class TrackingFactory(WrappingFactory):
    """
    Knows every open connection of a listener, so the store can close them
    all on stop (a persistent client connection would otherwise outlive the
    test and leave the reactor dirty).
    """

    def __init__(self, wrappedFactory) -> None:
        super().__init__(wrappedFactory)
        self._waiting: list[Deferred] = []

    def unregisterProtocol(self, p) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def closeAll(self) -> Deferred:
        """
        Abort every open connection.

        @return: a Deferred firing once all of them are gone.
        """
        if not self.protocols:
            return succeed(None)
        d = Deferred()
        self._waiting.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d
