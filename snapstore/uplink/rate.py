# -*- test-case-name: tests.test_uplink -*-
"""
Caps on upstream blob traffic (C{--upstream-rate}, C{--prefetch-rate}).

A L{TokenBucket} holds the bytes per second one cap allows; every transfer
under that cap takes from the same bucket, so together they stay under it.
L{Throttle.wrap} puts a body protocol under one or more buckets: bytes are
handed on the moment they arrive (devices waiting on a fill get them at
once), and when a bucket is in debt the upstream transport is paused until
it is paid, so TCP flow control slows the sender.  Cache hits never pass
here.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse
from zope.interface import implementer


class TokenBucket:
    """
    C{rate} bytes per second, with bursts of at most C{burst} bytes.
    """

    def __init__(self, clock: Any, rate: int, burst: Optional[int] = None) -> None:
        if rate <= 0:
            raise ValueError("a rate must be positive")
        self.clock = clock
        self.rate = rate
        # A small burst keeps the cap exact over seconds, not minutes.
        self.burst = burst if burst is not None else max(rate // 16, 4096)
        self.tokens = float(self.burst)
        self._stamp = clock.seconds()

    def _refill(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(float(self.burst), self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, count: int) -> float:
        """
        Spend C{count} bytes.

        @return: seconds to wait before the next bytes (0 when none).
        """
        self._refill()
        self.tokens -= count
        return self.owed()

    def owed(self) -> float:
        """
        Seconds until the bucket is out of debt.
        """
        self._refill()
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Throttle:
    """
    A set of buckets a transfer is held under (C{--upstream-rate} for all
    blob traffic; for prefetch also C{--prefetch-rate}).
    """

    def __init__(self, clock: Any, buckets: Sequence[TokenBucket]) -> None:
        self.clock = clock
        self.buckets = tuple(buckets)

    def __bool__(self) -> bool:
        return bool(self.buckets)

    def joined(self, other: Optional["Throttle"]) -> "Throttle":
        """
        A throttle under this one's buckets and C{other}'s.
        """
        return Throttle(self.clock, self.buckets + (other.buckets if other else ()))

    def wrap(self, protocol: Protocol) -> Protocol:
        """
        C{protocol}, receiving an upstream body at no more than the caps.
        """
        if not self.buckets:
            return protocol
        return ThrottledProtocol(protocol, self)

    def wrapResponse(self, response: Any) -> Any:
        """
        C{response}, delivering its body at no more than the caps.
        """
        return ThrottledResponse(response, self) if self.buckets else response


class _JointPause:
    """
    The transport a throttled protocol's inner protocol sees: its own
    pauses (flow control towards a slow device) and the throttle's both
    hold the real transport; it resumes only when neither does.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.innerPaused = False
        self.throttled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def _apply(self, wasPaused: bool) -> None:
        paused = self.innerPaused or self.throttled
        if paused and not wasPaused:
            self._transport.pauseProducing()
        elif wasPaused and not paused:
            self._transport.resumeProducing()

    def pauseProducing(self) -> None:
        wasPaused = self.innerPaused or self.throttled
        self.innerPaused = True
        self._apply(wasPaused)

    def resumeProducing(self) -> None:
        wasPaused = self.innerPaused or self.throttled
        self.innerPaused = False
        self._apply(wasPaused)

    def throttle(self, on: bool) -> None:
        wasPaused = self.innerPaused or self.throttled
        self.throttled = on
        self._apply(wasPaused)

    def stopProducing(self) -> None:
        self._transport.stopProducing()


class ThrottledProtocol(Protocol):
    """
    Passes a body on to C{inner}, pausing its transport while the throttle
    is in debt.
    """

    def __init__(self, inner: Protocol, throttle: Throttle) -> None:
        self.inner = inner
        self.throttle = throttle
        self._resume: Any = None
        self._joint: Optional[_JointPause] = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self._joint = _JointPause(transport)
        self.inner.makeConnection(self._joint)

    def dataReceived(self, data: bytes) -> None:
        wait = max(bucket.take(len(data)) for bucket in self.throttle.buckets)
        self.inner.dataReceived(data)
        if wait > 0 and self._resume is None and self._joint is not None:
            self._joint.throttle(True)
            self._resume = self.throttle.clock.callLater(wait, self._tryResume)

    def _tryResume(self) -> None:
        wait = max(bucket.owed() for bucket in self.throttle.buckets)
        if wait > 0:
            self._resume = self.throttle.clock.callLater(wait, self._tryResume)
            return
        self._resume = None
        if self._joint is not None:
            self._joint.throttle(False)

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        self.inner.connectionLost(reason)  # type: ignore[arg-type]


@implementer(IResponse)
class ThrottledResponse:
    """
    An L{IResponse} whose body is delivered under a throttle (a download
    passed through uncached).
    """

    def __init__(self, response: Any, throttle: Throttle) -> None:
        self._response = response
        self._throttle = throttle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def deliverBody(self, protocol: Any) -> None:
        self._response.deliverBody(self._throttle.wrap(protocol))


def makeThrottle(clock: Any, rate: Optional[int]) -> Throttle:
    """
    A throttle for C{rate} bytes per second, or one that holds nothing back
    when C{rate} is unset.
    """
    return Throttle(clock, [TokenBucket(clock, rate)] if rate else [])
