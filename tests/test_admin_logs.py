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
