# -*- test-case-name: tests.test_admin_logs -*-
"""
Tests for the access log (L{snapstore.observe.access}) and the JSON log
format (L{snapstore.observe.logs}).
"""

from __future__ import annotations

import io
import json

from twisted.application.service import Application, MultiService
from twisted.internet.defer import inlineCallbacks
from twisted.logger import ILogObserver, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from snapstore.observe.access import ACCESS_NAMESPACE
from snapstore.observe.logs import eventAsJSON, jsonLogObserver, withLogFormat
from tests.helpers import capturedEvents
from tests.test_admin import RunningService


class JSONFormatTests(SynchronousTestCase):
    """
    L{eventAsJSON} and L{withLogFormat}.
    """

    def test_flatFields(self):
        """
        An event becomes one JSON line with time, level, namespace, the
        formatted message and its scalar fields.
        """
        line = eventAsJSON({"log_time": 0.0, "log_level": LogLevel.warn,
                            "log_namespace": "x", "log_format": "{a} and {b}",
                            "a": 1, "b": "two", "obj": object()})
        self.assertNotIn("\n", line)
        self.assertEqual(json.loads(line), {
            "time": "1970-01-01T00:00:00.000Z", "level": "warn", "namespace": "x",
            "message": "1 and two", "a": 1, "b": "two"})

    def test_failure(self):
        """
        A failure's traceback is kept.
        """
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        record = json.loads(eventAsJSON({"log_format": "oops", "log_failure": failure}))
        self.assertIn("ZeroDivisionError", record["traceback"])

    def test_observer(self):
        """
        The observer writes one line per event.
        """
        output = io.StringIO()
        observer = jsonLogObserver(output)
        observer({"log_format": "one"})
        observer({"log_format": "two"})
        self.assertEqual([json.loads(l)["message"] for l in output.getvalue().splitlines()],
                         ["one", "two"])

    def test_applicationComponent(self):
        """
        With C{json}, the tree handed to twistd sets the application's
        L{ILogObserver}, which twistd then logs to; with C{text} it is
        unchanged.
        """
        top = MultiService()
        self.assertIs(withLogFormat(top, "text"), top)
        root = withLogFormat(top, "json")
        application = Application("snapstore")
        root.setServiceParent(application)
        self.assertTrue(ILogObserver.providedBy(application.getComponent(ILogObserver)))
        self.assertIs(top.parent, root)


class _CountingOutput(io.StringIO):
    """
    A text stream that counts its flushes and keeps what was flushed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.flushed = ""

    def flush(self) -> None:
        self.flushes += 1
        self.flushed = self.getvalue()


class TextLineTests(SynchronousTestCase):
    """
    L{TextLineObserver}: twistd's text lines, time stamps formatted once
    per second, one flush per reactor turn; and when L{withLogFormat}
    uses it.
    """

    def events(self):
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        base = 1_700_000_000.0
        return [
            {"log_time": base + 0.25, "log_level": LogLevel.info, "log_namespace": ACCESS_NAMESPACE,
             "log_format": '127.0.0.1 address:127.0.0.1 "POST /v2/snaps/refresh" 200 9 0.001s {{x}}'},
            {"log_time": base + 0.75, "log_level": LogLevel.warn, "log_namespace": "a.b",
             "log_format": "{n} things", "n": 3},
            {"log_time": base + 1.0, "log_system": "HTTPChannel,4,127.0.0.1",
             "log_format": "from a system"},
            {"log_time": base + 61.5, "log_level": LogLevel.error, "log_namespace": "c",
             "log_format": "failed", "log_failure": failure},
            {"log_time": None, "log_format": "no time"},
            {"log_time": base + 62, "log_format": ""},
            # Ready text (the access log's), with braces, a newline, in a
            # system, failing, or empty: as twistd writes it.
            {"log_time": base + 62.5, "log_level": LogLevel.info, "log_namespace": ACCESS_NAMESPACE,
             "log_format": "{log_text}", "log_text": '1.2.3.4 d "GET /{x}" 200 1 0.001s\ntwo'},
            {"log_time": base + 63, "log_level": LogLevel.info, "log_namespace": "n",
             "log_system": "sys", "log_format": "{log_text}", "log_text": "in a system"},
            {"log_time": base + 64, "log_level": LogLevel.error, "log_namespace": "n",
             "log_format": "{log_text}", "log_text": "failed", "log_failure": failure},
            {"log_time": base + 65, "log_level": LogLevel.info, "log_namespace": "n",
             "log_format": "{log_text}", "log_text": ""},
            {"log_time": base + 66, "log_namespace": "n", "log_format": "{log_text}",
             "log_text": "no level"},
        ]

    def test_sameAsTwistd(self):
        """
        Every line is the one twistd's own text observer writes.
        """
        from twisted.internet.task import Clock
        from twisted.logger import textFileLogObserver

        from snapstore.observe.logs import TextLineObserver

        ours, theirs = io.StringIO(), io.StringIO()
        observer, reference = TextLineObserver(ours, Clock()), textFileLogObserver(theirs)
        for event in self.events():
            observer(event)
            reference(event)
        self.assertEqual(ours.getvalue(), theirs.getvalue())
        self.assertIn("[snapstore.access#info]", ours.getvalue())

    def test_flushOncePerTurn(self):
        """
        In the reactor's thread while it runs, lines are flushed once at the
        end of the turn; otherwise (not running, another thread) at once.
        """
        import threading

        from twisted.internet.task import Clock

        from snapstore.observe.logs import TextLineObserver

        output = _CountingOutput()
        clock = Clock()
        observer = TextLineObserver(output, clock)
        observer(self.events()[0])
        self.assertEqual(output.flushes, 1)  # the clock is not running
        clock.running = True
        for event in self.events()[:3]:
            observer(event)
        self.assertEqual(output.flushes, 1)
        clock.advance(0)
        self.assertEqual(output.flushes, 2)
        self.assertEqual(len(output.flushed.splitlines()), 4)
        thread = threading.Thread(target=observer, args=(self.events()[1],))
        thread.start()
        thread.join()
        self.assertEqual(output.flushes, 3)
        self.assertEqual(len(output.flushed.splitlines()), 5)

    def test_whenUsed(self):
        """
        Text to standard output under C{--nodaemon} goes through
        L{TextLineObserver}; a log file, syslog, a C{--logger}, a daemon,
        or no clock leave twistd's observer in place.
        """
        from twisted.internet.task import Clock

        from snapstore.observe.logs import TextLineObserver

        clock = Clock()
        for logFile, options in ((None, {"nodaemon": True}), ("-", {"nodaemon": True})):
            top = MultiService()
            root = withLogFormat(top, "text", logFile, options, clock)
            application = Application("snapstore")
            root.setServiceParent(application)
            self.assertIsInstance(application.getComponent(ILogObserver), TextLineObserver)
        for logFile, options, given in ((None, {"nodaemon": True}, None),
                                        ("twistd.log", {"nodaemon": True}, clock),
                                        (None, {"nodaemon": True, "syslog": True}, clock),
                                        (None, {"nodaemon": True, "logger": "x.y"}, clock),
                                        (None, {}, clock)):
            top = MultiService()
            self.assertIs(withLogFormat(top, "text", logFile, options, given), top)


class AccessLogTests(TestCase):
    """
    One access event per store request.
    """

    @inlineCallbacks
    def setUp(self):
        self.service = yield RunningService(self).start()
        self.events = capturedEvents(self, ACCESS_NAMESPACE)

    @inlineCallbacks
    def test_downloadLine(self):
        """
        A download's event names the client, device, snap, revision, cache
        status, bytes and duration.
        """
        url = yield self.service.refresh()
        yield self.service.download(url)
        refresh, download = self.events
        self.assertEqual(refresh["status"], 200)
        self.assertEqual(refresh["path"], "/v2/snaps/refresh")
        self.assertEqual(
            {key: download[key] for key in
             ("client", "device", "snap", "revision", "cache", "bytes", "status")},
            {"client": "127.0.0.1", "device": "address:127.0.0.1", "snap": "hello",
             "revision": 3, "cache": "miss", "bytes": 3000, "status": 200})
        self.assertGreaterEqual(download["duration"], 0)
        record = json.loads(eventAsJSON(download))
        self.assertEqual(record["revision"], 3)

    @inlineCallbacks
    def test_namesFromRules(self):
        """
        With rules loaded, the device identity the rules derived and the
        snap name of the download's record fill the access event.
        """
        from tests.test_admin import DEVICE_LIMIT

        service = yield RunningService(self).start(rules={"20-device-limit.py": DEVICE_LIMIT})
        del self.events[:]
        url = yield service.refresh()
        yield service.download(url)
        refresh, download = self.events
        self.assertEqual(refresh["device"], "address:127.0.0.1")
        self.assertEqual((download["snap"], download["revision"]), ("hello", 3))


class AccessEventTests(SynchronousTestCase):
    """
    L{AccessObserver.ended}'s event: the fields in the documented order,
    notes after them, every text from the request or its notes escaped.
    """

    def test_fieldsAndNotes(self):
        from twisted.internet.task import Clock
        from twisted.logger import formatEvent

        from snapstore.observe.access import AccessObserver
        from tests.unithelpers import EndedRequest

        events = []
        clock = Clock()
        observer = AccessObserver(None, clock)
        observer.log.observer = events.append

        notes = {"snap": "hel\x1blo", "extra": "two\nlines", "device": "b/m/s", "count": 3}
        observer.ended(EndedRequest(b"GET", b"/api/v1/snaps/download/hello_3.snap", notes,
                                    sentLength=12, startedAt=-0.25, cache=b"HIT"), 200)
        [event] = events
        fields = {key: value for key, value in event.items() if not key.startswith("log_")}
        self.assertEqual(list(fields.items()), [
            ("method", "GET"), ("path", "/api/v1/snaps/download/hello_3.snap"), ("status", 200),
            ("bytes", 12), ("duration", 0.25), ("cache", "hit"), ("access", True),
            ("client", "10.0.0.2"), ("device", "b/m/s"), ("snap", "hel\\x1blo"), ("revision", 3),
            ("extra", "two\\x0alines"), ("count", 3)])
        self.assertEqual((event["log_namespace"], event["log_level"], event["log_source"]),
                         (ACCESS_NAMESPACE, LogLevel.info, observer))
        self.assertEqual(formatEvent(event),
                         '10.0.0.2 b/m/s "GET /api/v1/snaps/download/hello_3.snap" 200 12 0.250s'
                         ' cache=hit snap=hel\\x1blo revision=3')
        record = json.loads(eventAsJSON(event))
        self.assertEqual((record["message"], record["extra"], "log_text" in record),
                         (formatEvent(event), "two\\x0alines", False))
