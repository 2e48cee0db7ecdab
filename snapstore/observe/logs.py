# -*- test-case-name: tests.test_admin_logs -*-
"""
Log output formats: text (twistd's default) or JSON, one object a line.

twistd creates its log observer from the command line (C{--logfile},
C{--logger}) or, when present, from the L{ILogObserver} component of the
application object, and it builds the application only after our
C{makeService} ran.  So C{--log-format json} is honoured by
L{withLogFormat}, which puts a root service over the service tree that sets
that component on the application it is attached to.  The same observer is
available to any twistd command line as C{--logger
snapstore.observe.logs.jsonLogObserver}.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import IO, Any, Optional

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    ILogObserver, formatEvent, formatEventAsClassicLogText, formatTime, timeFormatRFC3339,
)
from twisted.python import threadable
from twisted.python.logfile import LogFile
from zope.interface import implementer


_SCALARS = (str, int, float, bool, type(None))


def eventAsJSON(event: dict[str, Any]) -> str:
    """
    One log event as one line of JSON: C{time} (ISO 8601, UTC), C{level},
    C{namespace}, C{message} (the formatted text), C{traceback} for
    failures, and every field of the event whose value is a plain scalar
    (so the access log's C{status}, C{bytes}, C{device}... are columns).

    This is flatter than C{twisted.logger.jsonFileLogObserver}'s format,
    which serialises Twisted's internal keys; log shippers and C{jq} want
    plain fields.
    """
    moment = event.get("log_time")
    record: dict[str, Any] = {
        "time": (datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
                 .isoformat(timespec="milliseconds").replace("+00:00", "Z")
                 if isinstance(moment, (int, float)) else None),
        "level": getattr(event.get("log_level"), "name", None),
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in ("format", "message"):
            continue
        if isinstance(value, _SCALARS):
            record[key] = value
    return json.dumps(record, sort_keys=False, default=str)


@implementer(ILogObserver)
class JSONLineObserver:
    """
    Writes each event to a text file as L{eventAsJSON} and a newline.
    """

    def __init__(self, output: IO[Any]) -> None:
        self.output = output

    def __call__(self, event: dict[str, Any]) -> None:
        self.output.write(eventAsJSON(event) + "\n")
        self.output.flush()


@implementer(ILogObserver)
class TextLineObserver:
    """
    twistd's own text lines (C{TIME [SYSTEM] TEXT}, exactly as its
    observer writes them), for less work per event: the time stamp, which
    has a resolution of one second, is formatted once per second; and the
    output is flushed once per reactor turn, not after every line (one
    C{write} system call per access line before).  A line logged outside
    the reactor's thread, or while the reactor is not running, is flushed
    at once.  Issue 20: twistd's observer cost about 40 us per access line.

    @ivar output: a text stream.
    @ivar clock: schedules the flush at the end of the turn.
    """

    def __init__(self, output: IO[Any], clock: IReactorTime) -> None:
        self.output = output
        self.clock = clock
        self._second: Optional[int] = None
        self._stamp = ""
        self._flush: Any = None

    def formatTime(self, when: Optional[float]) -> str:
        """
        C{when} in twistd's format (RFC 3339, to the second).
        """
        if when is None:
            return formatTime(when, timeFormatRFC3339)
        second = int(when // 1)
        if second != self._second:
            self._stamp = formatTime(second, timeFormatRFC3339)
            self._second = second
        return self._stamp

    def __call__(self, event: dict[str, Any]) -> None:
        text = self._readyLine(event) or formatEventAsClassicLogText(
            event, formatTime=self.formatTime)
        if not text:
            return
        self.output.write(text)
        if self._flush is not None:
            return
        if threadable.isInIOThread() and getattr(self.clock, "running", False):
            self._flush = self.clock.callLater(0, self.flush)
        else:
            self.output.flush()

    def _readyLine(self, event: dict[str, Any]) -> Optional[str]:
        """
        The line of an event whose text is ready (C{log_text}, the access
        log's), as L{formatEventAsClassicLogText} writes it, without
        running the text through a format again; C{None} for any other
        event.
        """
        text = event.get("log_text")
        level = event.get("log_level")
        if (not text or not isinstance(text, str) or event.get("log_format") != "{log_text}"
                or level is None or "log_system" in event or "log_failure" in event
                or "log_flattened" in event):
            return None
        namespace = event.get("log_namespace", "-")
        line = f"{self.formatTime(event.get('log_time'))} [{namespace}#{level.name}] {text}"
        return line.replace("\n", "\n\t") + "\n"

    def flush(self) -> None:
        """
        Write out what is buffered.
        """
        self._flush = None
        self.output.flush()


def jsonLogObserver(output: Optional[IO[Any]] = None) -> ILogObserver:
    """
    A log observer writing one JSON object per line (see L{eventAsJSON}).

    @param output: a file; standard output when C{None} (this is the
        factory C{twistd --logger snapstore.observe.logs.jsonLogObserver}
        calls without arguments).
    """
    return JSONLineObserver(output if output is not None else sys.stdout)


class _LogFormatRoot(MultiService):
    """
    The top of the service tree when logs are JSON: sets the application's
    L{ILogObserver} as it is attached, before twistd starts logging.
    """

    def __init__(self, observerFactory: Any) -> None:
        super().__init__()
        self.observerFactory = observerFactory

    def setServiceParent(self, parent: Any) -> None:
        setComponent = getattr(parent, "setComponent", None)
        if setComponent is not None:
            setComponent(ILogObserver, self.observerFactory())
        super().setServiceParent(parent)


def withLogFormat(service: IService, logFormat: str, logFile: Optional[str] = None,
                  twistd: Optional[Any] = None, clock: Optional[IReactorTime] = None) -> IService:
    """
    Return the service to hand twistd so that it logs in C{logFormat}.

    @param logFormat: C{text} or C{json}.
    @param logFile: twistd's C{--logfile} (C{-} or C{None}: standard
        output), so that JSON goes where the admin asked logs to go.
    @param twistd: twistd's own options (C{nodaemon}, C{syslog},
        C{logger}), or C{None}.  Text logs to standard output under
        C{--nodaemon} (the packaged service: the journal) are written by
        L{TextLineObserver} on C{clock}; text logs anywhere else (a file
        twistd rotates, syslog, a C{--logger}) stay twistd's, and so does
        every text log when C{twistd} or C{clock} is C{None}.
    """
    if logFormat != "json":
        options = twistd or {}
        toStandardOutput = logFile == "-" or not logFile
        if (clock is None or not options.get("nodaemon") or options.get("syslog")
                or options.get("logger") or not toStandardOutput):
            return service
        output = sys.stdout
        textRoot = _LogFormatRoot(lambda: TextLineObserver(output, clock))
        service.setServiceParent(textRoot)
        return textRoot

    def observer() -> ILogObserver:
        if logFile in (None, "", "-"):
            return jsonLogObserver(sys.stdout)
        return jsonLogObserver(LogFile.fromFullPath(logFile))

    root = _LogFormatRoot(observer)
    service.setServiceParent(root)
    return root
