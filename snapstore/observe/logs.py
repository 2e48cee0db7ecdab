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
from twisted.logger import ILogObserver, formatEvent
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


def withLogFormat(service: IService, logFormat: str, logFile: Optional[str] = None) -> IService:
    """
    Return the service to hand twistd so that it logs in C{logFormat}.

    @param logFormat: C{text} (C{service} is returned unchanged) or C{json}.
    @param logFile: twistd's C{--logfile} (C{-} or C{None}: standard
        output), so that JSON goes where the admin asked logs to go.
    """
    if logFormat != "json":
        return service

    def observer() -> ILogObserver:
        if logFile in (None, "", "-"):
            return jsonLogObserver(sys.stdout)
        return jsonLogObserver(LogFile.fromFullPath(logFile))

    root = _LogFormatRoot(observer)
    service.setServiceParent(root)
    return root
