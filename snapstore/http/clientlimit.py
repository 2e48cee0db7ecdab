# -*- test-case-name: tests.test_clientlimit -*-
"""
How many connections one client address may hold on the store endpoint
(C{--store-max-per-client}); the forward proxy counts its clients with
the same L{ClientLimit} (C{--proxy-max-per-client}) and answers in its own
way.

Without a bound, one address can open connections until the process runs
out of file descriptors, and every other device is refused at C{accept}.
snapd needs a handful of connections per device; the default leaves room
for many devices behind one NAT address, and a front load balancer (one
address for everyone) wants the bound raised or off (0).

A connection over the bound gets the store's error format with HTTP 503
and C{Retry-After}, so snapd shows a reason and tries again later, and is
closed; the other addresses are served as before.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

#: Seconds a refused connection is kept open for the client to read the
#: answer (its request is read and dropped, so no reset loses the answer).
REFUSAL_LINGER = 5.0


class ClientLimit:
    """
    Counts the open connections of each client address.

    @ivar maximum: the most connections one address may hold.
    """

    log = Logger()

    def __init__(self, maximum: int, clock: Any) -> None:
        self.maximum = maximum
        self.clock = clock
        self.open: dict[str, int] = {}

    def admit(self, host: str) -> bool:
        """
        Count a new connection from C{host}; C{False} when it is one too
        many (then L{release} must not be called for it).
        """
        count = self.open.get(host, 0)
        if count >= self.maximum:
            return False
        self.open[host] = count + 1
        return True

    def release(self, host: str) -> None:
        """
        Forget a connection L{admit} counted.
        """
        count = self.open.get(host, 0) - 1
        if count > 0:
            self.open[host] = count
        else:
            self.open.pop(host, None)

    def refusal(self, host: str) -> Protocol:
        """
        The protocol answering a connection over the bound.
        """
        self.log.warn("Refused a connection from {host}: it already holds {maximum} "
                      "(--store-max-per-client)", host=host, maximum=self.maximum)
        return _Refusal(self)


class _Refusal(Protocol):
    """
    Answers 503 in the store's error format at once, half-closes, drops
    whatever the client sends, and closes after L{REFUSAL_LINGER} seconds
    at the latest.
    """

    #: The TCP transport once connected (Twisted types it optional).
    transport: Any

    def __init__(self, limit: ClientLimit) -> None:
        self.limit = limit
        self._timer: Optional[Any] = None

    def connectionMade(self) -> None:
        body = json.dumps({"error-list": [{
            "code": "too-many-connections",
            "message": f"this address already holds {self.limit.maximum} connections to "
                       f"the store proxy; try again later"}]}).encode()
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 10\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body))
        loseWrite = getattr(self.transport, "loseWriteConnection", None)
        if loseWrite is None:
            self.transport.loseConnection()
            return
        loseWrite()
        self._timer = self.limit.clock.callLater(REFUSAL_LINGER, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """
        Drop the request: the answer is already sent.
        """

    def connectionLost(self, reason: Any = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
