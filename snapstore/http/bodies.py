# -*- test-case-name: tests.test_requestcost -*-
"""
A request body already in memory, written in the same turn as the
request's head.

Twisted's C{FileBodyProducer} writes from a cooperative task, so the body
of a relayed call leaves one reactor turn after its head.  That costs a
scheduled call and a second write per request, and an upstream that
answers before reading the body (a fixed answer, an early error) finds
the client still sending: Twisted then drops the kept-alive connection
rather than reuse it (issue 20: 651 new upstream connections for 1,142
relayed refreshes in bench/relay.py's profile).  Every body the proxy
sends upstream is already in memory, bounded by C{MAX_REQUEST_BODY}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer


@implementer(IBodyProducer)
class BytesProducer:
    """
    Produces C{body} at once when asked.

    @ivar length: its length, so the request carries C{Content-Length}.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        """
        Write the whole body to C{consumer} now.
        """
        if self.body:
            consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        """
        Nothing left to pause: the body was written at once.
        """

    def resumeProducing(self) -> None:
        """
        Nothing to resume.
        """

    def stopProducing(self) -> None:
        """
        Nothing to stop.
        """
