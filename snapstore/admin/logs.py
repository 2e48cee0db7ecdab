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
snapstore.admin.logs.jsonLogObserver}.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Optional

from twisted.application.service import IService, MultiService
from twisted.logger import ILogObserver, jsonFileLogObserver
from twisted.python.logfile import LogFile


def jsonLogObserver(output: Optional[IO[str]] = None) -> ILogObserver:
    """
    A log observer writing each event as one JSON object per line
    (C{twisted.logger}'s format, readable with C{eventsFromJSONLogFile}),
    with a record separator-free layout that C{jq} and log shippers read.

    @param output: a text file; standard output when C{None} (this is the
        factory C{twistd --logger} calls without arguments).
    """
    return jsonFileLogObserver(output if output is not None else sys.stdout, recordSeparator="")


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
