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
import time
from typing import Any, Optional
from weakref import WeakKeyDictionary

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
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
#: The paths that name a snap (L{_fromPath}).
_NAMED = re.compile(rb"^/(v2/snaps/info/|api/v1/snaps/download/)")
#: The event's fields a request's notes or path fill in, escaped.
_WHO_AND_WHAT = ("client", "device", "snap", "revision")
_DOWNLOAD = re.compile(rb"^/api/v1/snaps/download/([^/_]+)_(\d+)\.snap$")
_REVISION_ASSERTION = re.compile(rb"^/v2/assertions/snap-revision/")

#: A Content-Type that is JSON, with or without parameters: no form to
#: parse (see L{ObservedRequest.requestReceived}).
_JSON_TYPE = re.compile(rb"^[ \t]*application/json[ \t]*(;|$)", re.IGNORECASE)


#: Whether each connection is secure (TLS), as its channel says.
_SECURE: "WeakKeyDictionary[Any, bool]" = WeakKeyDictionary()


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
        client = _clientHost(request)
        # One event dict, its fields in the documented order (the JSON
        # columns): the head, then who and what, then any other note.
        event: dict[str, Any] = {
            "method": (request.method or b"-").decode("latin-1"),
            "path": escapeControls((request.uri or b"-").decode("latin-1")),
            "status": status,
            "bytes": request.sentLength,
            "duration": max(self.clock.seconds() - request.startedAt, 0.0),
            "cache": cache.lower() if cache else None,
            "access": True,
            "client": client,
            "device": None,
            "snap": None,
            "revision": None,
        }
        if _NAMED.match(path):
            event.update(_fromPath(path))
        notes = getattr(request, NOTES, None)
        if notes:
            event.update(notes)
        if event["device"] is None:
            event["device"] = "address:" + client
        # A device's serial or a snap name from a body may carry controls:
        # one request stays one log line.
        for key in _WHO_AND_WHAT if not notes else (*_WHO_AND_WHAT, *notes):
            value = event[key]
            if isinstance(value, str):
                event[key] = escapeControls(value)
        # The line is written here with an f-string and handed on as the
        # event's ready text (Twisted's C{{log_text}} convention):
        # twisted.logger's formatting of a dozen fields costs about ten
        # times as much, on every request (issue 20).  The fields stay in
        # the event, in the same order, for the JSON format and any other
        # observer.
        event["log_text"] = (
            f"{event['client']} {event['device']} \"{event['method']} {event['path']}\""
            f" {status} {event['bytes']} {event['duration']:.3f}s"
            f" cache={event['cache']} snap={event['snap']} revision={event['revision']}")
        # What Logger.info would add, without its per-event checks: the
        # level is known, and the event built here is the one emitted.
        log = self.log
        event.update(log_logger=log, log_level=LogLevel.info, log_namespace=log.namespace,
                     log_source=log.source, log_format="{log_text}", log_time=time.time())
        log.observer(event)


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

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        Skip Twisted's form parsing for JSON bodies (every store call):
        it reads the Content-Type through the C{email} package, about a
        third of a millisecond per request (issue 20's profile), only to
        find it is neither form type.  Any other type is parsed as before.
        """
        ctype = self.requestHeaders.getRawHeaders(b"content-type")
        if ctype and _JSON_TYPE.match(ctype[0]):
            self._parsePOSTFormSubmission = False
        super().requestReceived(command, path, version)

    def isSecure(self) -> bool:
        """
        Twisted's answer, with the connection's part of it asked once per
        connection: Twisted looks the transport up in the adapter registry
        every time, about 5 us per relayed call (issue 20), and the relay
        asks for every answer whose URLs it rewrites.
        """
        channel = getattr(self, "channel", None)
        if channel is None:
            return super().isSecure()
        secure = _SECURE.get(channel)
        if secure is None:
            secure = _SECURE[channel] = bool(channel.isSecure())
        return secure or bool(self._forceSSL)

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
