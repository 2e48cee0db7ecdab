"""
Change control (design.md section 9) through real C{twistd snapstore}
processes in front of the fake store: group pins beating global pins,
pins expiring by themselves (also on both nodes of a PostgreSQL pair),
cool-down holds releasing without admin action, approval holds released by
C{approve}, a pin and a hold on one device, a three-ring rollout, and
C{--dry-run} reports equal to what the next real refreshes get.  Plus the
pure parts: TIME/DURATION parsing and the per-device decision.
"""

from __future__ import annotations

import json
import time

import attrs
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from snapstore.policy.decide import chooseHold, choosePin, heldRevision, revisionAllowed
from snapstore.policy.timespec import TimeSpecError, parseDuration, parseTime
from snapstore.state.policy import Approval, ChannelRevision, Hold
from snapstore.state.records import Override
from tests import pgtest
from tests.fakestore import FakeStore
from tests.sessionclient import SnapdDevice
from tests.test_fleet import FleetMixin, deferred
from tests.test_multinode import databaseURL
from tests.test_rules_support import copyShipped

STABLE = "latest/stable"


async def sleep(seconds):
    await deferLater(reactor, seconds, lambda: None)


class PolicyMixin(FleetMixin):
    """
    The fake store: C{hello} revisions 10, 11 and 12 (amd64), stable at 10
    until a test releases another.
    """

    timeout = 300

    async def setUpStore(self):
        self.store = await FakeStore(reactor).startFor(self)
        self.hello = self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 4096)
        self.store.addRevision("hello", 11, 4096, channels=())
        self.store.addRevision("hello", 12, 4096, channels=())
        self.rulesDir = copyShipped(self)

    async def ok(self, adminURL, *argv):
        """
        Run the command; fail the test unless it exits 0.  C{--json}
        answers are decoded.
        """
        code, out, err = await self.cli(adminURL, *argv)
        self.assertEqual(code, 0, f"{argv}: {out} {err}")
        return json.loads(out) if "--json" in argv else out

    async def offered(self, device, installed):
        """
        The revision of C{hello} a refresh from C{installed} offers, or
        C{None} for no update.
        """
        code, answer = await device.refresh(self.hello, installed)
        self.assertEqual(code, 200, answer)
        results = [r for r in answer["results"] if r.get("result") == "refresh"]
        return results[0]["snap"]["revision"] if results else None

    async def byNumber(self, device, revision=None):
        """
        Install C{hello} by revision number (C{snap install --revision}),
        or from stable without one: the revision given, or the error code.
        """
        action = {"action": "install", "instance-key": "install-1", "name": "hello",
                  "epoch": None}
        action.update({"revision": revision} if revision else {"channel": "stable"})
        code, answer = await device.call(b"POST", "v2/snaps/refresh", {
            "context": [], "fields": ["revision", "download"], "actions": [action]})
        self.assertEqual(code, 200, answer)
        [result] = answer["results"]
        if result["result"] == "error":
            return result["error"]["code"]
        return result["snap"]["revision"]

    async def eventually(self, device, installed, wanted, within=40):
        """
        Refresh until C{wanted} is offered (no admin action in between);
        fail after C{within} seconds.
        """
        started = time.monotonic()
        while True:
            got = await self.offered(device, installed)
            if got == wanted:
                return
            if time.monotonic() - started > within:
                self.fail(f"{device.identity} still offered {got}, not {wanted}")
            await sleep(0.3)


class SingleNodeTests(PolicyMixin, TestCase):
    """
    One node with SQLite state.
    """

    @deferred
    async def test_groupPinBeatsGlobalAndExpires(self):
        """
        A canary's group pin wins over the global pin for its devices; it
        stops applying at its C{--until} by itself (the global pin applies
        again) and is listed as expired; C{delete-override --group} removes
        only that scope's pin; the audit chain has scope and reason.
        """
        await self.setUpStore()
        self.store.release("hello", "stable", 12)
        url, adminURL = await self.startNode()
        a, b = SnapdDevice(self, url, "A"), SnapdDevice(self, url, "B")
        await self.ok(adminURL, "group", "create", "canary", "--serial", "A")
        await self.ok(adminURL, "override", "hello", "stable=10", "--reason", "audit 1 July")
        await self.ok(adminURL, "override", "hello", "stable=11", "--group", "canary",
                      "--until", "4s", "--reason", "canary trial")
        self.assertEqual(await self.offered(a, 9), 11)
        self.assertEqual(await self.offered(b, 9), 10)
        listed = await self.ok(adminURL, "list-overrides", "hello", "--json")
        self.assertEqual([(o["group"], o["revision"], o["expired"], o["reason"])
                          for o in listed["overrides"]],
                         [(None, 10, False, "audit 1 July"),
                          ("canary", 11, False, "canary trial")])
        self.assertIsNone(listed["overrides"][0]["until"])
        self.assertTrue(listed["overrides"][1]["until"].endswith("Z"))
        self.assertEqual(set(listed["overrides"][0]) >= {
            "snap", "channel", "revision", "architecture", "group", "until", "expired",
            "reason"}, True)
        # No admin action: the canary pin lapses and the global one applies.
        await self.eventually(a, 9, 10)
        listed = await self.ok(adminURL, "list-overrides", "hello", "--json")
        self.assertEqual([o["expired"] for o in listed["overrides"]], [False, True])
        out = await self.ok(adminURL, "list-overrides", "hello")
        self.assertIn("(expired)", out)
        self.assertIn("group canary", out)
        await self.ok(adminURL, "delete-override", "hello", "stable", "--group", "canary")
        listed = await self.ok(adminURL, "list-overrides", "hello", "--json")
        self.assertEqual([o["group"] for o in listed["overrides"]], [None])
        code, out, err = await self.cli(adminURL, "override", "hello", "stable=11",
                                        "--group", "nosuchgroup")
        self.assertEqual(code, 5)
        self.assertIn("nosuchgroup", err)
        code, out, err = await self.cli(adminURL, "override", "hello", "stable=11",
                                        "--until", "tomorrow")
        self.assertEqual(code, 2)
        code, answer = await self.admin(adminURL, b"GET", "/v1/audit?snap=hello")
        reasons = [(e["action"], (e["after"] or {}).get("reason"),
                    (e["after"] or {}).get("group")) for e in answer["entries"]]
        self.assertIn(("override.set", "canary trial", "canary"), reasons)
        self.assertIn(("override.set", "audit 1 July", None), reasons)

    @deferred
    async def test_coolDownHold(self):
        """
        A revision reaching the channel upstream is offered to held devices
        only once it has been there for the hold's duration, counted from
        snapstore's first sighting; meanwhile they are offered the newest
        revision that qualifies (or nothing newer than they run), and
        C{info} shows the same; then it is released with no admin action.
        """
        await self.setUpStore()
        url, adminURL = await self.startNode()
        c, d, a = (SnapdDevice(self, url, s) for s in "CDA")
        # Revision 10 is seen on stable now.
        self.assertEqual(await self.offered(c, 9), 10)
        answer = await self.ok(adminURL, "hold", "hello", "--for", "5s", "--reason", "soak",
                               "--json")
        self.assertEqual(answer["hold"]["for"], 5)
        holds = await self.ok(adminURL, "holds", "--json")
        self.assertEqual([{k: h[k] for k in ("snap", "channel", "group", "for",
                                             "until-approved", "reason")}
                          for h in holds["holds"]],
                         [{"snap": "hello", "channel": None, "group": None, "for": 5,
                           "until-approved": False, "reason": "soak"}])
        # Nothing has been on stable for 5 s yet: a first install is refused.
        self.assertEqual(await self.byNumber(d), "revision-not-found")
        await sleep(5.5)  # 10 has now been on stable for the hold's duration
        self.store.release("hello", "stable", 12)
        # 12 is new: D (on 9) is offered 10, A (on 10) nothing.
        self.assertEqual(await self.offered(d, 9), 10)
        self.assertIsNone(await self.offered(a, 10))
        code, info = await d.call(b"GET", "v2/snaps/info/hello?fields=revision,version")
        self.assertEqual(code, 200, info)
        stable = [e for e in info["channel-map"]
                  if e["channel"]["name"] == "stable" and e["channel"]["architecture"] == "amd64"]
        self.assertEqual([e["revision"] for e in stable], [10])
        await self.eventually(a, 10, 12)
        self.assertEqual(await self.offered(d, 9), 12)

    @deferred
    async def test_approvalHoldAndPrecedence(self):
        """
        An approval hold keeps anything new from its group until
        C{approve}; devices outside it get upstream's revision; a canary
        with both a group pin and a group hold gets the pin (pin > hold),
        is held once the pin is deleted, and follows upstream once the
        hold is released.  Holds and approvals are audited with reasons.
        """
        await self.setUpStore()
        url, adminURL = await self.startNode()
        a, b, c = (SnapdDevice(self, url, s) for s in "ABC")
        self.assertEqual(await self.offered(b, 9), 10)
        await self.ok(adminURL, "group", "create", "line", "--serial", "A")
        await self.ok(adminURL, "group", "create", "canary", "--serial", "C")
        await self.ok(adminURL, "hold", "hello", "--until-approved", "--group", "line",
                      "--reason", "QA first")
        await self.ok(adminURL, "hold", "--all", "--for", "1d", "--group", "canary")
        await self.ok(adminURL, "override", "hello", "stable=11", "--group", "canary")
        self.store.release("hello", "stable", 12)
        self.assertEqual(await self.offered(b, 10), 12)
        self.assertIsNone(await self.offered(a, 10))
        self.assertEqual(await self.offered(a, 9), 10)
        self.assertEqual(await self.offered(c, 10), 11)
        # Asking for 12 by number does not walk around the hold; 10 is fine.
        self.assertEqual(await self.byNumber(a, 12), "revision-not-found")
        self.assertEqual(await self.byNumber(a, 10), 10)
        self.assertEqual(await self.byNumber(b, 12), 12)
        out = await self.ok(adminURL, "approve", "hello", "12", "--group", "line",
                            "--reason", "QA passed")
        self.assertIn("approved", out)
        self.assertEqual(await self.offered(a, 10), 12)
        self.assertEqual(await self.byNumber(a, 12), 12)
        await self.ok(adminURL, "delete-override", "hello", "stable", "--group", "canary")
        self.assertIsNone(await self.offered(c, 10))
        await self.ok(adminURL, "release-hold", "--all", "--group", "canary")
        self.assertEqual(await self.offered(c, 10), 12)
        code, out, err = await self.cli(adminURL, "release-hold", "--all", "--group", "canary")
        self.assertEqual(code, 5)
        code, out, err = await self.cli(adminURL, "hold", "hello")
        self.assertEqual(code, 2)
        code, answer = await self.admin(adminURL, b"GET", "/v1/audit")
        actions = [(e["action"], (e["after"] or e["before"] or {}).get("reason"))
                   for e in answer["entries"] if e["action"] in ("hold.set", "hold.release",
                                                                 "approve")]
        self.assertIn(("hold.set", "QA first"), actions)
        self.assertIn(("approve", "QA passed"), actions)
        self.assertIn(("hold.release", ""), actions)

    @deferred
    async def test_threeRings(self):
        """
        The recipe of docs/rules-and-policy.md, "Rolling out in rings":
        canary and pilot groups with short and longer holds, a global hold
        for production; a new revision reaches canary, then pilot, then
        production, each by itself.
        """
        await self.setUpStore()
        url, adminURL = await self.startNode()
        canary, pilot, production = (SnapdDevice(self, url, s) for s in ("C1", "P1", "X1"))
        await self.ok(adminURL, "group", "create", "canary", "--serial", "C1")
        await self.ok(adminURL, "group", "create", "pilot", "--serial", "P1")
        await self.ok(adminURL, "hold", "--all", "--group", "canary", "--for", "2s",
                      "--reason", "ring 1")
        await self.ok(adminURL, "hold", "--all", "--group", "pilot", "--for", "9s",
                      "--reason", "ring 2")
        await self.ok(adminURL, "hold", "--all", "--for", "18s", "--reason", "production")
        self.store.release("hello", "stable", 12)
        arrived = {}
        started = time.monotonic()
        while len(arrived) < 3 and time.monotonic() - started < 90:
            for name, device in (("canary", canary), ("pilot", pilot),
                                 ("production", production)):
                if name not in arrived and await self.offered(device, 10) == 12:
                    arrived[name] = time.monotonic() - started
            await sleep(0.3)
        self.assertEqual(sorted(arrived, key=arrived.get), ["canary", "pilot", "production"])

    @deferred
    async def test_dryRunEqualsNextRefreshes(self):
        """
        C{hold --dry-run} and C{override --group --dry-run} print the
        what-would-refresh document for the state they would make, change
        nothing, and equal what the devices' next real refreshes get once
        the change is made.
        """
        await self.setUpStore()
        url, adminURL = await self.startNode()
        await self.ok(adminURL, "group", "create", "canary", "--serial", "A")
        devices = {s: SnapdDevice(self, url, s) for s in "ABC"}
        installed = {"A": 9, "B": 10, "C": 9}
        for serial, device in devices.items():
            code, _ = await device.refreshInstalled([(self.hello, installed[serial], STABLE)])
            self.assertEqual(code, 200)

        async def real():
            changes = []
            for serial, device in devices.items():
                got = await self.offered(device, installed[serial])
                if got is not None and got != installed[serial]:
                    changes.append({"device": device.identity, "snap": "hello",
                                    "channel": STABLE, "from": installed[serial], "to": got})
            return {"changes": changes}

        async def dryRun(*argv):
            """
            The change's --dry-run report; nothing may change.
            """
            before = await self.ok(adminURL, "what-would-refresh", "--json")
            state = [await self.admin(adminURL, b"GET", path)
                     for path in ("/v1/holds", "/v1/overrides", "/v1/approvals")]
            report = await self.ok(adminURL, *argv, "--dry-run", "--json")
            self.assertEqual(await self.ok(adminURL, "what-would-refresh", "--json"), before)
            self.assertEqual([await self.admin(adminURL, b"GET", path)
                              for path in ("/v1/holds", "/v1/overrides", "/v1/approvals")],
                             state)
            return report

        change = ("hold", "hello", "--until-approved")
        dry = await dryRun(*change)
        await self.ok(adminURL, *change)
        self.assertEqual(await real(), dry)
        self.assertEqual([c["to"] for c in dry["changes"]], [10, 10])
        # 12 reaches stable: held (nothing approved) for everyone.
        self.store.release("hello", "stable", 12)
        report = await self.ok(adminURL, "what-would-refresh", "--json")
        self.assertEqual(await real(), report)
        self.assertEqual([c["to"] for c in report["changes"]], [10, 10])
        change = ("approve", "hello", "12", "--group", "canary")
        dry = await dryRun(*change)
        await self.ok(adminURL, *change)
        self.assertEqual(await real(), dry)
        self.assertEqual([c["to"] for c in dry["changes"]], [12, 10])
        change = ("override", "hello", "stable=11", "--group", "canary")
        dry = await dryRun(*change)
        await self.ok(adminURL, *change)
        self.assertEqual(await real(), dry)
        self.assertEqual([c["to"] for c in dry["changes"]], [11, 10])
        change = ("release-hold", "hello")
        dry = await dryRun(*change)
        await self.ok(adminURL, *change)
        self.assertEqual(await real(), dry)
        self.assertEqual([(c["from"], c["to"]) for c in dry["changes"]],
                         [(9, 11), (10, 12), (9, 12)])


class TwoNodeTests(PolicyMixin, TestCase):
    """
    Two nodes sharing one PostgreSQL database.
    """

    skip = pgtest.skipReason()

    @deferred
    async def test_pinExpiresOnBothNodes(self):
        """
        A pin with a seconds-long C{--until} made through node A applies
        on both nodes, then stops applying on both at its moment with no
        admin action and no restart.
        """
        await self.setUpStore()
        self.store.release("hello", "stable", 12)
        database = pgtest.TemporaryDatabase()
        self.addCleanup(database.drop)
        urlA, adminA = await self.startNode(state=databaseURL(database))
        urlB, adminB = await self.startNode(state=databaseURL(database))
        a, b = SnapdDevice(self, urlA, "A"), SnapdDevice(self, urlB, "B")
        await self.ok(adminA, "override", "hello", "stable=10", "--until", "6s")
        await self.eventually(b, 9, 10, within=5)
        self.assertEqual(await self.offered(a, 9), 10)
        listed = await self.ok(adminB, "list-overrides", "--json")
        self.assertEqual([o["expired"] for o in listed["overrides"]], [False])
        await self.eventually(a, 9, 12)
        await self.eventually(b, 9, 12, within=5)
        listed = await self.ok(adminB, "list-overrides", "--json")
        self.assertEqual([o["expired"] for o in listed["overrides"]], [True])


    @deferred
    async def test_holdSharedByNodes(self):
        """
        The first sighting of a revision is kept in the shared database: a
        revision node A saw before a hold was made through node B counts
        from A's sighting on B; an approval made through A releases the
        held revision on B, without any restart.
        """
        await self.setUpStore()
        database = pgtest.TemporaryDatabase()
        self.addCleanup(database.drop)
        urlA, adminA = await self.startNode(state=databaseURL(database))
        urlB, adminB = await self.startNode(state=databaseURL(database))
        a, b = SnapdDevice(self, urlA, "A"), SnapdDevice(self, urlB, "B")
        self.assertEqual(await self.offered(a, 9), 10)  # 10 seen on stable, by A
        await sleep(4.5)
        await self.ok(adminB, "hold", "hello", "--for", "4s")
        self.store.release("hello", "stable", 12)
        # On B, 10 has been on stable for 4 s (A's sighting); 12 has not.
        await self.eventually(b, 9, 10, within=5)
        self.assertIsNone(await self.offered(b, 10))
        # Made through A, the approval hold replaces the cool-down on B too
        # (changes reach every node within a second): 12, new under the
        # cool-down, stays held on B although it has now been on stable
        # longer than 4 s.
        await self.ok(adminA, "hold", "hello", "--until-approved")
        await sleep(4.5)
        self.assertIsNone(await self.offered(b, 10))
        await self.ok(adminA, "approve", "hello", "12")
        await self.eventually(b, 10, 12, within=5)


class BadInputTests(TestCase):
    """
    The change-control routes refuse careless input with the admin API's
    JSON error shape, and write nothing.
    """

    @deferred
    async def test_refusals(self):
        from tests.test_admin import RunningService

        service = await RunningService(self).start()
        url = service.adminURL
        cases = [
            (b"POST", "/v1/holds", {"snap": "hello"}, 400, "bad-request"),
            (b"POST", "/v1/holds", {"snap": "hello", "for": "1d", "until-approved": True},
             400, "bad-request"),
            (b"POST", "/v1/holds", {"snap": "hello", "for": "a week"}, 400, "bad-duration"),
            (b"POST", "/v1/holds", {"snap": "hello", "for": 0}, 400, "bad-duration"),
            (b"POST", "/v1/holds", {"snap": "hello", "for": "1d", "channel": "no/such/x/y"},
             400, "bad-channel"),
            (b"POST", "/v1/holds", {"snap": "hello", "for": "1d", "group": "nobody"},
             404, "no-group"),
            (b"POST", "/v1/holds", {"snap": "hello", "for": "1d", "reason": "x" * 1001},
             400, "bad-request"),
            (b"POST", "/v1/holds", ["not", "an", "object"], 400, "bad-request"),
            (b"DELETE", "/v1/holds?snap=hello", None, 404, "no-hold"),
            (b"POST", "/v1/approvals", {"snap": "hello", "revision": "3"}, 400, "bad-request"),
            (b"POST", "/v1/approvals", {"snap": "hello", "revision": 3, "group": "nobody"},
             404, "no-group"),
            (b"POST", "/v1/overrides/hello",
             {"channel-map": [{"channel": "stable", "revision": 3}], "until": "yesterday"},
             400, "bad-time"),
            (b"POST", "/v1/overrides/hello",
             {"channel-map": [{"channel": "stable", "revision": 3}],
              "until": "2001-01-01T00:00:00Z"}, 400, "bad-time"),
            (b"DELETE", "/v1/overrides/hello?channel=stable&group=canary", None, 404,
             "no-override"),
        ]
        for method, path, body, status, code in cases:
            response, content = await service.get(
                url + path, method, {b"content-type": [b"application/json"]},
                None if body is None else json.dumps(body).encode())
            answer = json.loads(content)
            self.assertEqual((response.code, answer["error"]["code"]), (status, code),
                             (path, body, answer))
        state = service.state()
        self.assertEqual((await state.listHolds(), await state.listApprovals(),
                          await state.listOverrides()), ([], [], []))


class TimeSpecTests(SynchronousTestCase):
    """
    TIME and DURATION arguments.
    """

    def test_durations(self):
        self.assertEqual([parseDuration(t) for t in ("90s", "2m", "12h", "30d")],
                         [90.0, 120.0, 43200.0, 2592000.0])
        for bad in ("", "0s", "1w", "-5s", "1.5h", "s", "12"):
            self.assertRaises(TimeSpecError, parseDuration, bad)

    def test_times(self):
        self.assertEqual(parseTime("2027-07-01T00:00:00Z", 0), 1814400000.0)
        self.assertEqual(parseTime("2027-07-01T02:00:00+02:00", 0), 1814400000.0)
        self.assertEqual(parseTime("90s", 1000.0), 1090.0)
        for bad in ("2027-07-01", "2027-07-01T00:00:00", "tomorrow", ""):
            self.assertRaises(TimeSpecError, parseTime, bad, 0)


class DecisionTests(SynchronousTestCase):
    """
    The per-device decision (L{snapstore.policy.decide}).
    """

    def pin(self, revision, group="", until=None, architecture="amd64"):
        return Override("hello", STABLE, revision, architecture, "ID", group=group,
                        until=until)

    def test_pins(self):
        """
        A group's pin before the global one; of several groups' pins the
        lowest revision; expired pins and other channels never apply.
        """
        pins = [self.pin(10), self.pin(11, "canary"), self.pin(9, "line", until=100.0),
                self.pin(8, "kiosk"), attrs.evolve(self.pin(1), channel="latest/edge")]
        choose = lambda groups, now=0.0: choosePin(pins, "hello", None, STABLE, "amd64",
                                                    groups, now)
        self.assertEqual(choose(()).revision, 10)
        self.assertEqual(choose(("canary",)).revision, 11)
        self.assertEqual(choose(("canary", "kiosk")).revision, 8)
        self.assertEqual(choose(("line",), 99.0).revision, 9)
        self.assertEqual(choose(("line",), 100.0).revision, 10)
        self.assertEqual(choosePin(pins, None, "ID", STABLE, "amd64", (), 0).revision, 10)
        self.assertIsNone(choosePin(pins, "other", None, STABLE, "amd64", (), 0))
        self.assertIsNone(choosePin(pins, "hello", None, STABLE, "arm64", (), 0))

    def test_holds(self):
        """
        The device's groups' holds before the global ones; of several, the
        longest (until approved is longest); snap and channel scope.
        """
        holds = [Hold("", "", "", 100.0), Hold("hello", "", "pilot", 50.0),
                 Hold("", STABLE, "line", None), Hold("", "latest/edge", "edge", 10.0),
                 Hold("other", "", "pilot", 500.0)]
        choose = lambda groups, channel=STABLE: chooseHold(holds, "hello", channel, groups)
        self.assertEqual(choose(()).holdFor, 100.0)
        self.assertEqual(choose(("pilot",)).holdFor, 50.0)
        self.assertIsNone(choose(("pilot", "line")).holdFor)
        self.assertEqual(choose(("edge",)).holdFor, 100.0)
        self.assertEqual(choose(("edge",), "latest/edge").holdFor, 10.0)
        self.assertIsNone(chooseHold([Hold("other", "", "", 5.0)], "hello", STABLE, ()))

    def test_heldRevision(self):
        """
        The newest qualifying revision: on the channel for the duration,
        approved (for everyone or a group of the device), or, under an
        approval hold, seen before the hold was made.
        """
        history = [ChannelRevision("hello", STABLE, "amd64", 10, 1000.0),
                   ChannelRevision("hello", STABLE, "amd64", 12, 2000.0)]
        soak = Hold("hello", "", "", 600.0)
        self.assertIsNone(heldRevision(soak, history, [], "hello", (), 1599.0))
        self.assertEqual(heldRevision(soak, history, [], "hello", (), 1600.0), 10)
        self.assertEqual(heldRevision(soak, history, [], "hello", (), 2600.0), 12)
        approvals = [Approval("hello", 12, "line")]
        self.assertEqual(heldRevision(soak, history, approvals, "hello", ("line",), 1600.0),
                         12)
        self.assertEqual(heldRevision(soak, history, approvals, "hello", (), 1600.0), 10)
        qa = Hold("hello", "", "line", None, createdAt=1500.0)
        self.assertEqual(heldRevision(qa, history, [], "hello", ("line",), 9e9), 10)
        self.assertEqual(heldRevision(qa, history, approvals, "hello", ("line",), 0), 12)
        late = Hold("hello", "", "", None, createdAt=500.0)
        self.assertIsNone(heldRevision(late, history, [], "hello", (), 9e9))

    def test_revisionAllowed(self):
        """
        Asked for by number, a held device may have an approved revision,
        one not newer than the newest qualifying one, or one older than
        anything seen on the channel; nothing else.
        """
        history = [ChannelRevision("hello", STABLE, "amd64", 10, 1000.0),
                   ChannelRevision("hello", STABLE, "amd64", 12, 2000.0)]
        qa = Hold("hello", "", "", None, createdAt=1500.0)
        allowed = lambda revision, approvals=(), history=history: revisionAllowed(
            qa, history, approvals, "hello", ("line",), 9e9, revision)
        self.assertEqual([allowed(r) for r in (5, 10, 11, 12, 13)],
                         [True, True, False, False, False])
        self.assertTrue(allowed(12, [Approval("hello", 12, "line")]))
        self.assertFalse(allowed(12, [Approval("hello", 12, "other")]))
        self.assertFalse(allowed(5, history=[]))
