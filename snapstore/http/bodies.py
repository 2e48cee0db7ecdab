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

Such a body is often JSON that several parts read (a refresh body: the
rules, the fleet inventory, the stale-answer memory): L{ParsedJSON} parses
it once for all of them.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer


_UNPARSED = object()


class ParsedJSON:
    """
    A JSON text and its value, parsed when first asked and only then.

    Every reader gets the same value: readers must not change it (copy
    what they keep and change).  Before it was shared, a refresh body was
    parsed by each rule that read it, the inventory and the stale-answer
    memory (issue 20).

    @ivar raw: the text as bytes.
    """

    __slots__ = ("raw", "_value", "_error")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._value: Any = _UNPARSED
        self._error: Optional[ValueError] = None

    def value(self) -> Any:
        """
        The parsed value.

        @raise ValueError: the text is not JSON (every time it is asked).
        """
        if self._error is not None:
            raise self._error
        if self._value is _UNPARSED:
            try:
                self._value = json.loads(self.raw or b"null")
            except ValueError as error:
                self._error = error
                raise
        return self._value


@implementer(IBodyProducer)
class BytesProducer:
    """
    Produces C{body} at once when asked.

    @ivar length: its length, so the request carries C{Content-Length}.
    @ivar parsed: the L{ParsedJSON} of C{body} when the sender has one,
        so that a reader below (the stale-answer memory) parses nothing
        again; else C{None}.
    """

    def __init__(self, body: bytes, parsed: Optional[ParsedJSON] = None) -> None:
        self.body = body
        self.length = len(body)
        self.parsed = parsed

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
