"""
Shared test helpers: servers on loopback and settings for a test service.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from snapstore.config import buildSettings


def deferred(f: Any) -> Any:
    """
    Run an C{async def} test method as a Deferred for trial.
    """

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        return ensureDeferred(f(self, *args, **kwargs))

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


def testSettings(testCase: Any, **given: Any) -> Any:
    """
    Settings for a service under test: data in the test's temporary
    directory, nothing listening unless the test says so.
    """
    options = {
        "data-dir": testCase.mktemp(),
        "proxy-endpoint": "none",
        "admin-endpoint": "none",
    }
    options.update({key.replace("_", "-"): value for key, value in given.items()})
    return buildSettings(options)


@inlineCallbacks
def listen(testCase: Any, factory: Any) -> Any:
    """
    Listen with C{factory} on a free loopback port for the duration of the
    test; fire with the port number.
    """
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    testCase.addCleanup(port.stopListening)
    return port.getHost().port


def capturedEvents(testCase: Any, namespace: str | None = None) -> list[dict[str, Any]]:
    """
    A list that receives the log events published until the test ends
    (only those of C{namespace}, when given).
    """
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if namespace is None or event.get("log_namespace") == namespace:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    testCase.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


def testAgent(testCase: Any) -> Agent:
    """
    An HTTP client whose connections are closed when the test ends.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    return Agent(reactor, pool=pool)


class MemoryBlobs:
    """
    The blob part of the state store, in memory, for tests of the store
    endpoint that are not about state.
    """

    def __init__(self) -> None:
        self.blobs: dict[str, Any] = {}

    def recordBlob(self, blob: Any) -> None:
        self.blobs.setdefault(blob.name, blob)

    def getBlob(self, name: str) -> Deferred[Any]:
        from twisted.internet.defer import succeed

        return succeed(self.blobs.get(name))


class RecordingOrigin(Resource):
    """
    An upstream that records each request it gets and answers with a
    canned response, byte for byte.

    @ivar answer: C{(status, [(name, value)...], body)}, or C{"hang"}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.answer: Any = (200, [(b"Content-Type", b"application/json")], b"{}")

    def render(self, request: Any) -> Any:
        self.requests.append({
            "method": request.method,
            "uri": request.uri,
            "headers": list(request.requestHeaders.getAllRawHeaders()),
            "body": request.content.read(),
        })
        if self.answer == "hang":
            return NOT_DONE_YET
        status, headers, body = self.answer
        request.setResponseCode(status)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        return body

    def header(self, name: bytes, index: int = -1) -> Any:
        for key, values in self.requests[index]["headers"]:
            if key.lower() == name.lower():
                return values
        return None


class GarbageProtocol(Protocol):
    """
    Answers anything with bytes that are not HTTP.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"SSH-2.0-not-a-web-server\r\n\r\n")
        self.transport.loseConnection()


def garbageFactory() -> Factory:
    return Factory.forProtocol(GarbageProtocol)


def originSite(origin: Resource) -> Site:
    site = Site(origin)
    site.displayTracebacks = False
    return site


class RunningStore:
    """
    A snapstore store endpoint listening on loopback for one test.

    @ivar parts: its L{snapstore.store.service.StoreParts}.
    @ivar port: the port it listens on.
    @ivar url: C{http://127.0.0.1:PORT} (no trailing slash).
    """

    def __init__(self, parts: Any, port: int) -> None:
        self.parts = parts
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


async def startStore(testCase: Any, settings: Any, state: Any = None,
                     makeRules: Any = None) -> RunningStore:
    """
    The test fixture for "snapstore in front of an upstream": the store
    parts built by the composition root (L{snapstore.tap.assembleStore},
    the same assembly C{twistd snapstore} runs) around C{state} (default a
    L{MemoryBlobs}), their services started and their site listening until
    the test ends.

    @param makeRules: C{(upstream, verdictObserver) -> RulesService}, or
        C{None} for no rules.
    """
    from snapstore.tap import assembleStore

    store = assembleStore(reactor, settings, state if state is not None else MemoryBlobs(),
                          makeRules)
    for service in store.services:
        service.startService()
        testCase.addCleanup(service.stopService)
    port = await listen(testCase, store.parts.site)
    return RunningStore(store.parts, port)
