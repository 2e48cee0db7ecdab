# -*- test-case-name: tests.test_admin_logs -*-
"""
One access-log event and one request count per store request.

Observing at the level of the web site, rather than in each resource,
means every request is seen exactly once, whichever part answered it (the
relay, the download path, an error page), including those a client
abandoned before the answer was complete.

Resources may add what only they know to a request with L{annotate}, or
by updating the dict in its C{snapstoreAccess} attribute (for example the
device identity once the device-session request named it); the rest is
derived from the request and the response headers (C{X-Cache}, which also
drives the cache hit and miss counters).
"""

from __future__ import annotations

import re
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from snapstore.interfaces import ISiteObserver

from snapstore.http.controlchars import escapeControls

#: The log namespace of access events.
ACCESS_NAMESPACE = "snapstore.access"

#: The attribute holding a request's annotations.
NOTES = "snapstoreAccess"

#: The status recorded for a request whose client went away first (nginx's
#: convention), so that such requests are visible in metrics.
CLIENT_GONE = 499

_INFO = re.compile(rb"^/v2/snaps/info/([^/?]+)")
_DOWNLOAD = re.compile(rb"^/api/v1/snaps/download/([^/_]+)_(\d+)\.snap$")
_REVISION_ASSERTION = re.compile(rb"^/v2/assertions/snap-revision/")


def annotate(request: Any, **notes: Any) -> None:
    """
    Add fields to C{request}'s access-log event: C{device}, C{snap},
    C{revision} or anything else worth a column.  Does nothing on objects
    that cannot hold attributes.
    """
    try:
        existing = getattr(request, NOTES, None)
        if existing is None:
            existing = {}
            setattr(request, NOTES, existing)
        existing.update(notes)
    except AttributeError:
        pass


def _fromPath(path: bytes) -> dict[str, Any]:
    """
    The snap and revision a store path names, when it names one.
    """
    match = _INFO.match(path)
    if match:
        return {"snap": match.group(1).decode("utf-8", "replace")}
    match = _DOWNLOAD.match(path)
    if match:
        return {"snap": match.group(1).decode("utf-8", "replace"),
                "revision": int(match.group(2))}
    return {}


def _header(headers: Any, name: bytes) -> Optional[str]:
    values = headers.getRawHeaders(name)
    if not values:
        return None
    return values[0].decode("latin-1")


@implementer(ISiteObserver)
class AccessObserver:
    """
    Counts and logs each store request when it ends.

    @ivar metrics: a L{snapstore.observe.metrics.Metrics} or C{None}.
    @ivar clock: gives the times the duration is measured with.
    """

    def __init__(self, metrics: Any, clock: IReactorTime,
                 requestClass: Optional[type["ObservedRequest"]] = None) -> None:
        """
        @param requestClass: the L{ObservedRequest} subclass to build (the
            forward proxy's local store site accepts absolute-form targets).
        """
        self.metrics = metrics
        self.clock = clock
        self.requestClass = requestClass or ObservedRequest
        # One namespace for every access line, to filter them by.
        self.log = Logger(namespace=ACCESS_NAMESPACE, source=self)

    def requestFactory(self, channel: Any, queued: Any = None) -> "ObservedRequest":
        """
        Build a request for C{channel}; this is what a L{Site}'s
        C{requestFactory} is set to.
        """
        if queued is None:
            request = self.requestClass(channel)
        else:
            request = self.requestClass(channel, queued)
        request.observer = self
        request.startedAt = self.clock.seconds()
        setattr(request, NOTES, {})
        return request

    def logRequest(self, request: Any) -> None:
        """
        Log nothing when the site would: L{ended}'s line replaces the
        site's combined-format line, which would say the same with less.
        """

    def ended(self, request: "ObservedRequest", status: int) -> None:
        """
        Count and log C{request}, which ended with C{status}.
        """
        path = request.path or b""
        cache = _header(request.responseHeaders, b"x-cache")
        if self.metrics is not None:
            self.metrics.requestFinished(path, status)
            if cache is not None and 200 <= status < 300:
                # Assertions are cached too (X-Cache) but are not blobs:
                # counted apart, they stay out of the blob hit ratio.
                from snapstore.observe.metrics import endpointOf

                if endpointOf(path.split(b"?", 1)[0]) == "assertions":
                    self.metrics.assertionCached(cache.upper() == "HIT")
                elif cache.upper() == "HIT":
                    self.metrics.cacheHit(request.sentLength)
                elif cache.upper() == "MISS":
                    self.metrics.cacheMiss()
        fields: dict[str, Any] = {
            "client": _clientHost(request),
            "device": None,
            "snap": None,
            "revision": None,
        }
        fields.update(_fromPath(path))
        fields.update(getattr(request, NOTES, None) or {})
        if fields["device"] is None:
            fields["device"] = "address:" + fields["client"]
        # A device's serial or a snap name from a body may carry controls:
        # one request stays one log line.
        for key, value in fields.items():
            if isinstance(value, str):
                fields[key] = escapeControls(value)
        self.log.info(
            "{client} {device} \"{method} {path}\" {status} {bytes} {duration:.3f}s"
            " cache={cache} snap={snap} revision={revision}",
            method=(request.method or b"-").decode("latin-1"),
            path=escapeControls((request.uri or b"-").decode("latin-1")),
            status=status,
            bytes=request.sentLength,
            duration=max(self.clock.seconds() - request.startedAt, 0.0),
            cache=cache.lower() if cache else None,
            access=True,
            **fields,
        )


def _clientHost(request: Request) -> str:
    try:
        address = request.getClientAddress()
    except Exception:
        return "-"
    return getattr(address, "host", None) or str(address)


class ObservedRequest(Request):
    """
    A store request that tells its L{AccessObserver} how it ended.

    @ivar observer: the L{AccessObserver}.
    @ivar startedAt: when the request line arrived.
    """

    observer: Optional[AccessObserver] = None
    startedAt: float = 0.0
    _observed = False

    def _observe(self, status: int) -> None:
        if self._observed or self.observer is None:
            return
        self._observed = True
        try:
            self.observer.ended(self, status)
        except Exception:
            Logger().failure("access observer failed")

    def finish(self) -> None:
        wasFinished = self.finished or self._disconnected
        super().finish()
        if not wasFinished:
            self._observe(self.code)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if not self.finished:
            self._observe(CLIENT_GONE)
