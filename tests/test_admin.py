# -*- test-case-name: tests.test_admin -*-
"""
Tests for the admin API and the C{snapstore} command against a running
service: the whole tree from L{snapstore.tap.makeService}, listening on
loopback, relaying to a L{FakeStore}; the command's L{main} runs in a
thread, speaking HTTP to it as it would from a shell.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.python import usage
from twisted.trial.unittest import TestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from snapstore import __version__
from snapstore.cli import main
from snapstore.state.service import StateService
from snapstore.tap import Options, makeService
from tests.fakestore import FakeStore
from tests.helpers import testAgent
from tests.ports import freePort


class RunningService:
    """
    A snapstore service tree on loopback in front of a fake store.

    @ivar fake: the L{FakeStore} upstream.
    @ivar top: the started service tree.
    @ivar adminURL: C{http://127.0.0.1:PORT}.
    @ivar storeURL: C{http://127.0.0.1:PORT}.
    @ivar dataDir: the service's data directory.
    """

    def __init__(self, testCase: TestCase) -> None:
        self.testCase = testCase

    @inlineCallbacks
    def start(self, *extra: str, fake: Any = None, rules: dict[str, str] | None = None) -> Any:
        """
        Start the fake store (unless given) and the service.

        @param extra: more C{twistd snapstore} options.
        @param rules: rule file name to content, for the rules directory.
        """
        testCase = self.testCase
        if fake is None:
            fake = FakeStore(reactor)
            fake.addSnap("hello")
            fake.addRevision("hello", 3, 3000)
            fake.addRevision("hello", 5, 5000, channels=("beta",))
            yield fake.start()
            testCase.addCleanup(fake.stop)
        self.fake = fake
        self.dataDir = os.path.abspath(testCase.mktemp())
        rulesDir = os.path.join(self.dataDir, "rules.d")
        os.makedirs(rulesDir)
        for name, text in (rules or {}).items():
            with open(os.path.join(rulesDir, name), "w") as ruleFile:
                ruleFile.write(text)
        self.storePort = freePort()
        self.adminPort = freePort()
        self.storeURL = f"http://127.0.0.1:{self.storePort}"
        self.adminURL = f"http://127.0.0.1:{self.adminPort}"
        arguments = [
            "--upstream", fake.apiURL,
            "--data-dir", self.dataDir,
            "--rules-dir", rulesDir,
            "--store-endpoint", f"tcp:{self.storePort}:interface=127.0.0.1",
            "--admin-endpoint", f"tcp:{self.adminPort}:interface=127.0.0.1",
            "--proxy-endpoint", "none",
            "--config", os.devnull,
        ] + list(extra)
        options = Options()
        options.parseOptions(arguments)
        self.options = options
        self.top = makeService(options)
        self.top.startService()
        testCase.addCleanup(self.top.stopService)
        yield self.state().whenReady()
        from snapstore.admin.rulesaudit import RulesAuditService

        for service in self.top:
            if isinstance(service, RulesAuditService):
                yield service.audited
        return self

    def state(self) -> Any:
        """
        The running service's state store.
        """
        for service in self.top:
            if isinstance(service, StateService):
                return service.store
        raise AssertionError("no state service in the tree")

    def cli(self, *argv: str, env: dict[str, str] | None = None) -> Any:
        """
        Run C{snapstore --admin URL ARGV...} in a thread.

        @return: a Deferred firing with C{(exitCode, stdout, stderr)}.
        """
        return runCLI(["--admin", self.adminURL] + list(argv), env)

    @inlineCallbacks
    def get(self, url: str, method: bytes = b"GET", headers: dict[bytes, list[bytes]] | None = None,
            body: bytes | None = None) -> Any:
        """
        Make one HTTP request; fire with C{(response, body)}.
        """
        from io import BytesIO

        from twisted.web.client import FileBodyProducer

        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        response = yield testAgent(self.testCase).request(
            method, url.encode("ascii"), Headers(headers or {}), producer)
        content = yield readBody(response)
        return response, content

    @inlineCallbacks
    def refresh(self, name: str = "hello", channel: str = "stable") -> Any:
        """
        Ask the store endpoint what to download for C{name}, as snapd does.

        @return: a Deferred firing with the proxy's download URL.
        """
        body = json.dumps({
            "context": [],
            "actions": [{"action": "download", "instance-key": "d1", "name": name,
                         "channel": channel}],
            "fields": ["revision", "snap-id", "download"],
        }).encode()
        response, content = yield self.get(
            self.storeURL + "/v2/snaps/refresh", b"POST",
            {b"content-type": [b"application/json"], b"snap-device-series": [b"16"],
             b"snap-device-architecture": [b"amd64"]}, body)
        self.testCase.assertEqual(response.code, 200, content)
        return json.loads(content)["results"][0]["snap"]["download"]["url"]

    @inlineCallbacks
    def download(self, url: str) -> Any:
        response, content = yield self.get(url)
        self.testCase.assertEqual(response.code, 200)
        return response.headers.getRawHeaders(b"x-cache", [b""])[0].decode(), content


def runCLI(argv: list[str], env: dict[str, str] | None = None) -> Any:
    """
    Run the command's L{main} in a thread, so the reactor keeps serving.
    """

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        saved = {key: os.environ.get(key) for key in (env or {})}
        os.environ.update(env or {})
        try:
            code = main(argv, out, err)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return code, out.getvalue(), err.getvalue()

    return threads.deferToThread(run)


DEVICE_LIMIT = """
from snapstore.rules.devices import DeviceLimitRule


def rules(env):
    return [DeviceLimitRule(env.state, env.clock, limit=25)]
"""


class StatusTests(TestCase):
    """
    C{snapstore status} and C{check-connections}.
    """

    @inlineCallbacks
    def setUp(self):
        self.service = yield RunningService(self).start()

    @inlineCallbacks
    def test_statusHuman(self):
        """
        C{status} prints the version, health, devices, cache and overrides,
        and exits 0 when upstream and the database answer.
        """
        code, out, err = yield self.service.cli("status")
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"Version: snapstore {__version__}\n", out)
        self.assertIn(f"Upstream: {self.service.fake.apiURL}: ok", out)
        self.assertIn("Database: sqlite:", out)
        self.assertIn("Connected devices (last 24 h): 0\n", out)
        self.assertIn("Device limit: none\n", out)
        self.assertIn("Cache: 0 B of 20.0 GiB, 0 blobs", out)
        self.assertIn("Overrides: 0\n", out)

    @inlineCallbacks
    def test_statusJSON(self):
        """
        C{status --json} gives scripts every field.
        """
        service = yield RunningService(self).start(rules={"20-device-limit.py": DEVICE_LIMIT})
        code, out, err = yield service.cli("status", "--json")
        self.assertEqual(code, 0, err)
        answer = json.loads(out)
        self.assertEqual(answer["version"], __version__)
        self.assertTrue(answer["upstream"]["ok"])
        self.assertTrue(answer["database"]["ok"])
        self.assertEqual(answer["devices"], {"connected": 0, "limit": 25})
        self.assertEqual(answer["cache"]["bound"], 20 << 30)
        self.assertEqual(answer["overrides"], 0)
        self.assertGreaterEqual(answer["uptime"], 0)
        self.assertEqual(answer["store-url"].split("://")[0], "http")

    @inlineCallbacks
    def test_statusUpstreamDown(self):
        """
        With upstream gone, C{status} says so and exits 1.
        """
        yield self.service.fake.stop()
        code, out, err = yield self.service.cli("status")
        self.assertEqual(code, 1)
        self.assertIn(f"Upstream: {self.service.fake.apiURL}: FAILED", out)

    @inlineCallbacks
    def test_checkConnections(self):
        """
        C{check-connections} lists each check and exits 0 when all pass, 1
        when one fails.
        """
        code, out, err = yield self.service.cli("check-connections")
        self.assertEqual(code, 0, err)
        self.assertIn(f"upstream: {self.service.fake.apiURL}: ok", out)
        self.assertIn("database: sqlite:", out)
        self.assertIn("cache: ", out)
        self.assertTrue(out.endswith("All connections appear to be accessible\n"))
        yield self.service.fake.stop()
        code, out, err = yield self.service.cli("check-connections", "--json")
        self.assertEqual(code, 1)
        answer = json.loads(out)
        self.assertFalse(answer["ok"])
        self.assertEqual([c["ok"] for c in answer["checks"] if c["name"] == "upstream"], [False])


class OverrideTests(TestCase):
    """
    The override verbs, and the audit rows they leave.
    """

    @inlineCallbacks
    def setUp(self):
        self.service = yield RunningService(self).start()

    @inlineCallbacks
    def test_overrideListDelete(self):
        """
        C{override} pins channels, C{list-overrides} shows them,
        C{delete-override} removes one; each change is audited with the
        local user as actor.
        """
        code, out, err = yield self.service.cli("override", "hello", "stable=3", "beta=5")
        self.assertEqual(code, 0, err)
        self.assertIn("hello latest/stable (amd64): revision 3\n", out)
        code, out, err = yield self.service.cli("list-overrides", "hello", "--json")
        pins = {(o["channel"], o["revision"]) for o in json.loads(out)["overrides"]}
        self.assertEqual(pins, {("latest/stable", 3), ("latest/beta", 5)})
        code, out, err = yield self.service.cli("delete-override", "hello", "beta")
        self.assertEqual(code, 0, err)
        self.assertIn("override of revision 5 deleted", out)
        code, out, err = yield self.service.cli("list-overrides", "hello")
        self.assertIn("latest/stable", out)
        self.assertNotIn("latest/beta", out)
        entries = yield self.service.state().listAudit()
        self.assertEqual([e.action for e in entries],
                         ["override.set", "override.set", "override.delete"])
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
        self.assertEqual({e.actor for e in entries}, {f"local:{user}"})

    @inlineCallbacks
    def test_overrideUnknownRevision(self):
        """
        A revision upstream does not have is refused with exit code 5 and
        upstream's reason; nothing is stored.
        """
        code, out, err = yield self.service.cli("override", "hello", "stable=99")
        self.assertEqual(code, 5)
        self.assertIn("revision 99 of snap 'hello' is not known", err)
        overrides = yield self.service.state().listOverrides()
        self.assertEqual(overrides, [])

    @inlineCallbacks
    def test_overrideBadArguments(self):
        """
        C{CHANNEL=REVISION} must be just that: anything else is a usage
        error (exit 2) before any request.
        """
        code, out, err = yield self.service.cli("override", "hello", "stable")
        self.assertEqual(code, 2)
        self.assertIn("not CHANNEL=REVISION", err)

    @inlineCallbacks
    def test_deleteMissing(self):
        """
        Deleting an override that does not exist exits 5 and says so.
        """
        code, out, err = yield self.service.cli("delete-override", "hello", "edge")
        self.assertEqual(code, 5)
        self.assertIn("hello has no override on edge", err)


class AuditTests(TestCase):
    """
    C{snapstore audit}: listing, filtering and verifying the chain.
    """

    @inlineCallbacks
    def setUp(self):
        self.service = yield RunningService(self).start()
        state = self.service.state()
        yield self.service.cli("override", "hello", "stable=3")
        yield state.appendAudit("someone", "rule.change", "rule:limit", None, {"limit": 5})
        yield self.service.cli("override", "hello", "beta=5")
        yield state.appendAudit("someone", "import", "bundle:x", None, {"snaps": 1})

    @inlineCallbacks
    def test_list(self):
        """
        C{audit} lists every row with id, actor, action and change.
        """
        code, out, err = yield self.service.cli("audit")
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 5)
        self.assertTrue(lines[0].startswith("Id"))
        self.assertIn("rule.change", lines[2])
        self.assertIn('{"limit":5}', lines[2])

    @inlineCallbacks
    def test_filterBySnapAndTime(self):
        """
        C{--snap} keeps one snap's rows; C{--since}/C{--until} a time range.
        """
        code, out, err = yield self.service.cli("audit", "--snap", "hello", "--json")
        entries = json.loads(out)["entries"]
        self.assertEqual([e["action"] for e in entries], ["override.set", "override.set"])
        all = yield self.service.state().listAudit()
        third = all[2].time
        code, out, err = yield self.service.cli("audit", "--since", repr(third), "--json")
        self.assertEqual([e["id"] for e in json.loads(out)["entries"]],
                         [e.id for e in all if e.time >= third])
        code, out, err = yield self.service.cli("audit", "--until", "2000-01-01", "--json")
        self.assertEqual(json.loads(out)["entries"], [])

    @inlineCallbacks
    def test_verifyIntact(self):
        """
        An untouched chain verifies: exit 0 and the newest row's hash.
        """
        code, out, err = yield self.service.cli("audit", "verify")
        self.assertEqual(code, 0, err)
        self.assertIn("Audit log intact: 4 rows", out)

    def _database(self) -> sqlite3.Connection:
        connection = sqlite3.connect(os.path.join(self.service.dataDir, "state.sqlite"))
        self.addCleanup(connection.close)
        return connection

    @inlineCallbacks
    def test_verifyNamesAlteredRow(self):
        """
        Editing a row in the database file makes C{audit verify} exit 1 and
        name that row.
        """
        db = self._database()
        with db:
            db.execute("UPDATE audit_log SET actor = 'innocent' WHERE id = 2")
        code, out, err = yield self.service.cli("audit", "verify")
        self.assertEqual(code, 1)
        self.assertIn("Audit log BROKEN at row 2: row 2 was altered", out)
        code, out, err = yield self.service.cli("audit", "verify", "--json")
        self.assertEqual(json.loads(out)["first-bad-id"], 2)

    @inlineCallbacks
    def test_verifyHead(self):
        """
        Removing the newest row leaves a valid chain; C{--head} with the
        row recorded earlier still catches it.
        """
        code, out, err = yield self.service.cli("audit", "verify", "--json")
        head = json.loads(out)["head"]
        self.assertEqual(head["id"], 4)
        db = self._database()
        with db:
            db.execute("DELETE FROM audit_log WHERE id = 4")
        code, out, err = yield self.service.cli("audit", "verify")
        self.assertEqual(code, 0, err)
        code, out, err = yield self.service.cli(
            "audit", "verify", "--head", f"{head['id']}:{head['row-hash']}")
        self.assertEqual(code, 1)
        self.assertIn("BROKEN at row 4: row 4 is missing", out)

    @inlineCallbacks
    def test_verifyNamesRemovedRow(self):
        """
        Removing a row makes C{audit verify} name the row after it.
        """
        db = self._database()
        with db:
            db.execute("DELETE FROM audit_log WHERE id = 3")
        code, out, err = yield self.service.cli("audit", "verify")
        self.assertEqual(code, 1)
        self.assertIn("BROKEN at row 4", out)


class DeviceAndCacheTests(TestCase):
    """
    C{devices} and C{cache}, after traffic through the store endpoint.
    """

    @inlineCallbacks
    def setUp(self):
        self.service = yield RunningService(self).start()

    @inlineCallbacks
    def test_devices(self):
        """
        C{devices} lists devices seen in the last 24 hours; C{--all} every
        one.
        """
        from snapstore.state.records import Device

        state = self.service.state()
        yield state.recordDevice(Device("brand/model/serial-1", model="brand/model",
                                        address="10.0.0.5"))
        yield state.recordDevice(Device("address:10.0.0.9", address="10.0.0.9",
                                        lastSeen=1000.0))
        code, out, err = yield self.service.cli("devices")
        self.assertEqual(code, 0, err)
        self.assertIn("Connected devices (last 24 h): 1; device limit: none", out)
        self.assertIn("brand/model/serial-1", out)
        self.assertNotIn("10.0.0.9", out)
        code, out, err = yield self.service.cli("devices", "--all", "--json")
        self.assertEqual(len(json.loads(out)["devices"]), 2)

    @inlineCallbacks
    def test_deviceLimit(self):
        """
        C{device-limit N} sets the limit the device-limit rule enforces (over
        the rules file's), audited; C{reset} gives the file's back.
        """
        service = yield RunningService(self).start(rules={"20-device-limit.py": DEVICE_LIMIT})
        code, out, err = yield service.cli("device-limit", "1")
        self.assertEqual((code, out), (0, "device limit set to 1 on every node\n"), err)
        code, out, err = yield service.cli("status", "--json")
        self.assertEqual(json.loads(out)["devices"]["limit"], 1)
        state = service.state()
        self.assertEqual((yield state.getSetting("device-limit")), {"limit": 1})
        [entry] = [e for e in (yield state.listAudit()) if e.target == "setting:device-limit"]
        self.assertEqual((entry.before, entry.after), (None, {"limit": 1}))
        code, out, err = yield service.cli("device-limit", "reset")
        self.assertEqual(code, 0, err)
        code, out, err = yield service.cli("status", "--json")
        self.assertEqual(json.loads(out)["devices"]["limit"], 25)
        code, out, err = yield service.cli("device-limit", "many")
        self.assertEqual(code, 2)

    @inlineCallbacks
    def test_cacheStatsVerifyPrune(self):
        """
        C{cache} counts the blobs a download filled; C{cache verify} drops a
        corrupted one (exit 1); C{cache prune} empties the cache and is
        audited.
        """
        url = yield self.service.refresh()
        cache, _ = yield self.service.download(url)
        self.assertEqual(cache, "MISS")
        code, out, err = yield self.service.cli("cache", "--json")
        self.assertEqual(code, 0, err)
        stats = json.loads(out)
        self.assertEqual((stats["blobs"], stats["size"]), (1, 3000))
        code, out, err = yield self.service.cli("cache", "verify")
        self.assertEqual((code, out), (0, "Every cached blob matches its sha3-384\n"))

        blobs = os.path.join(self.service.dataDir, "cache", "blobs")
        [name] = os.listdir(blobs)
        with open(os.path.join(blobs, name), "r+b") as blob:
            blob.write(b"X")
        code, out, err = yield self.service.cli("cache", "verify")
        self.assertEqual(code, 1)
        self.assertIn(name.split("-")[0], out)

        yield self.service.download(url)
        code, out, err = yield self.service.cli("cache", "prune")
        self.assertEqual(code, 0, err)
        self.assertIn("Removed 1 blob,", out)
        code, out, err = yield self.service.cli("cache", "--json")
        self.assertEqual(json.loads(out)["blobs"], 0)
        entries = yield self.service.state().listAudit(target="cache")
        self.assertEqual([e.action for e in entries], ["cache.verify", "cache.prune"])


class ClientConfigTests(TestCase):
    """
    The device setup, from the command and from the store endpoint.
    """

    @inlineCallbacks
    def setUp(self):
        self.service = yield RunningService(self).start(
            "--public-url", "http://snaps.example:8000/")

    @inlineCallbacks
    def test_command(self):
        """
        C{client-config} prints a script writing the snapd drop-in;
        C{--cloud-init} the same as cloud-config.
        """
        code, out, err = yield self.service.cli("client-config")
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith("#!/bin/sh\n"))
        self.assertIn("/etc/systemd/system/snapd.service.d/snapstore.conf", out)
        self.assertIn("Environment=SNAPPY_FORCE_API_URL=http://snaps.example:8000/\n", out)
        self.assertIn("systemctl restart snapd.service", out)
        code, out, err = yield self.service.cli("client-config", "--cloud-init")
        self.assertTrue(out.startswith("#cloud-config\n"))
        self.assertIn("        Environment=SNAPPY_FORCE_API_URL=http://snaps.example:8000/", out.replace("      Env", "        Env"))

    @inlineCallbacks
    def test_storeEndpoint(self):
        """
        Devices fetch the same setup from C{/v1/client-config} on the store
        endpoint; C{?format=json} gives the parts.
        """
        response, body = yield self.service.get(self.service.storeURL + "/v1/client-config")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/x-shellscript; charset=utf-8"])
        self.assertIn(b"SNAPPY_FORCE_API_URL=http://snaps.example:8000/", body)
        response, body = yield self.service.get(
            self.service.storeURL + "/v1/client-config?format=json")
        answer = json.loads(body)
        self.assertEqual(answer["store-url"], "http://snaps.example:8000/")
        self.assertEqual(answer["drop-in"]["content"],
                         "[Service]\nEnvironment=SNAPPY_FORCE_API_URL=http://snaps.example:8000/\n")
        self.assertIsNone(answer["ca-certificate"])
        response, body = yield self.service.get(self.service.storeURL + "/v1/nothing")
        self.assertEqual(response.code, 404)


class AuthTests(TestCase):
    """
    Tokens: required off loopback, checked on every request once given.
    """

    def tokenFile(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as tokenFile:
            tokenFile.write(text)
        return path

    def test_refusesNonLoopbackWithoutTokens(self):
        """
        An admin endpoint on every address without a token file stops
        start-up with a message saying what to do.
        """
        options = Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, [
            "--admin-endpoint", "tcp:8001", "--config", os.devnull,
            "--data-dir", self.mktemp()])
        self.assertIn("--admin-endpoint tcp:8001 is not on loopback, so it needs "
                      "--admin-token-file", str(error))

    def test_loopbackSuggestionKeepsThePort(self):
        """
        The advice to bind to loopback names the operator's own port.
        """
        options = Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, [
            "--admin-endpoint", "tcp:9101", "--config", os.devnull,
            "--data-dir", self.mktemp()])
        self.assertIn("or bind it to loopback with tcp:9101:interface=127.0.0.1", str(error))

    def test_shortToken(self):
        """
        A guessable token is refused at start-up.
        """
        options = Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, [
            "--admin-token-file", self.tokenFile("ops:short\n"), "--config", os.devnull,
            "--data-dir", self.mktemp()])
        self.assertIn("token shorter than 16 characters", str(error))

    @inlineCallbacks
    def test_tokens(self):
        """
        With a token file every request needs a token from it: none or a
        wrong one exits 4, the right one works and names the actor.
        """
        path = self.tokenFile("# admins\nalice:aaaaaaaaaaaaaaaaaaaa\nbob:bbbbbbbbbbbbbbbbbbbbbbbb\n")
        service = yield RunningService(self).start("--admin-token-file", path)
        code, out, err = yield service.cli("status")
        self.assertEqual(code, 4)
        self.assertIn("wants a token: pass --token-file FILE or set SNAPSTORE_ADMIN_TOKEN", err)
        code, out, err = yield service.cli("status", env={"SNAPSTORE_ADMIN_TOKEN": "b" * 23})
        self.assertEqual(code, 4)
        response, body = yield service.get(service.adminURL + "/metrics")
        self.assertEqual(response.code, 401)
        code, out, err = yield service.cli(
            "override", "hello", "stable=3", env={"SNAPSTORE_ADMIN_TOKEN": "b" * 24})
        self.assertEqual(code, 0, err)
        mine = self.tokenFile("alice:aaaaaaaaaaaaaaaaaaaa\n")
        code, out, err = yield service.cli("--token-file", mine, "delete-override",
                                           "hello", "stable")
        self.assertEqual(code, 0, err)
        entries = yield service.state().listAudit()
        self.assertEqual([e.actor for e in entries], ["token:bob", "token:alice"])


class CommandErrorTests(TestCase):
    """
    The command's failures say what to do and exit with their own code.
    """

    @inlineCallbacks
    def test_unreachable(self):
        """
        Nothing listening: exit 3 and a hint that snapstore may not run.
        """
        url = f"http://127.0.0.1:{freePort()}"
        code, out, err = yield runCLI(["--admin", url, "status"])
        self.assertEqual(code, 3)
        self.assertIn(f"cannot reach the admin API at {url}", err)
        self.assertIn("is snapstore running", err)

    @inlineCallbacks
    def test_notAdminAPI(self):
        """
        Something that is not the admin API (here the store endpoint)
        gives a clear error rather than a traceback.
        """
        service = yield RunningService(self).start()
        code, out, err = yield runCLI(["--admin", service.storeURL, "status"])
        self.assertEqual(code, 5)
        self.assertTrue(err.startswith("snapstore: "), err)


class AuthUnitTests(TestCase):
    """
    L{snapstore.admin.auth} without a service.
    """

    def test_loopbackEndpoints(self):
        """
        Only endpoints bound to loopback (or Unix sockets) count as local.
        """
        from snapstore.admin.auth import isLoopbackEndpoint

        for endpoint in ("tcp:8001:interface=127.0.0.1", "tcp:8001:interface=\\:\\:1",
                         "tcp6:8001:interface=\\:\\:1", "unix:/run/snapstore.sock",
                         "ssl:8001:interface=localhost:privateKey=k"):
            self.assertTrue(isLoopbackEndpoint(endpoint), endpoint)
        for endpoint in ("tcp:8001", "tcp:8001:interface=0.0.0.0",
                         "tcp:8001:interface=10.0.0.1", "systemd:domain=INET:index=0"):
            self.assertFalse(isLoopbackEndpoint(endpoint), endpoint)

    def test_socketOwner(self):
        """
        The uid owning a loopback client socket is read from the kernel's
        socket table.
        """
        from snapstore.admin.auth import socketOwner

        root = self.mktemp()
        os.makedirs(os.path.join(root, "net"))
        header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        with open(os.path.join(root, "net", "tcp"), "w") as table:
            table.write(header)
            # 127.0.0.1:40000 -> 127.0.0.1:8001, uid 1234
            table.write("   0: 0100007F:9C40 0100007F:1F41 01 00000000:00000000 00:00000000 "
                        "00000000  1234        0 1 1 0000000000000000 20 4 0 10 -1\n")
        with open(os.path.join(root, "net", "tcp6"), "w") as table:
            table.write(header)
        self.assertEqual(socketOwner("127.0.0.1", 40000, 8001, root), 1234)
        self.assertIsNone(socketOwner("127.0.0.1", 40001, 8001, root))
        self.assertIsNone(socketOwner("127.0.0.1", 40000, 8002, root))

    def test_tokenCompare(self):
        """
        Only a listed token passes; the actor is the token's name.
        """
        from snapstore.admin.auth import Authoriser

        class Request:
            def __init__(self, header):
                self.header = header

            def getHeader(self, name):
                return self.header if name == b"authorization" else None

        authoriser = Authoriser({"a" * 20: "alice"})
        self.assertEqual(authoriser.authorise(Request(b"Bearer " + b"a" * 20)).actor, "token:alice")
        self.assertIsNone(authoriser.authorise(Request(b"Bearer " + b"a" * 19)))
        self.assertIsNone(authoriser.authorise(Request(b"Basic " + b"a" * 20)))
        self.assertIsNone(authoriser.authorise(Request(None)))


class RoutingTests(TestCase):
    """
    Paths and methods the admin API does not have.
    """

    @inlineCallbacks
    def test_unknown(self):
        """
        An unknown path is a JSON 404; a known path with the wrong method a
        405 naming the allowed ones.
        """
        service = yield RunningService(self).start()
        response, body = yield service.get(service.adminURL + "/v1/nothing")
        self.assertEqual((response.code, json.loads(body)["error"]["code"]), (404, "not-found"))
        response, body = yield service.get(service.adminURL + "/v1/status", b"POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET"])
