# -*- test-case-name: tests.test_rules -*-
"""
Tests for the rules engine: loading C{rules.d} (L{snapstore.rules.loader}),
evaluating a set (L{snapstore.rules.engine}), reloading it
(L{snapstore.rules.service}), the cache and snap-access rules, and a custom
rule written by an admin.
"""

from __future__ import annotations

import io
import json
import os
import signal
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from snapstore.interfaces import IActionRule, IAdmissionRule, ICacheRule
from snapstore.rules.access import SnapAccessRule
from snapstore.rules.cache import CacheRule
from snapstore.rules.engine import RuleEnv, RuleFailed, RuleSet
from snapstore.rules.loader import RuleLoadError, loadRules, main as loaderMain
from snapstore.rules.service import RulesService
from snapstore.rules.values import NO_CACHE, CachePolicy, ResponseHead, StoreDeny, StoreRequest
from snapstore.rules.verdicts import Abstain, Allow, Deny
from snapstore.state.records import BlobRecord
from tests.fakestore import FakeStore
from tests.test_rules_support import (
    SHIPPED_RULES,
    MemoryState,
    Proxy,
    copyShipped,
    writeRules,
)

# A rules file making one admission rule whose verdict is a literal, so a
# test can tell which file's rule answered.
VERDICT_RULE = """
from zope.interface import implementer
from snapstore.interfaces import IAdmissionRule
from snapstore.rules.verdicts import Abstain, Allow, Deny
from snapstore.rules.values import StoreDeny

@implementer(IAdmissionRule)
class Rule:
    def __init__(self, name, verdict):
        self.name = name
        self.verdict = verdict
    def admit(self, request):
        return self.verdict

def rules(env):
    return [Rule({name!r}, {verdict})]
"""


def verdictRule(name: str, verdict: str) -> str:
    return VERDICT_RULE.format(name=name, verdict=verdict)


def request(path: str = "/v2/snaps/find", **kwargs) -> StoreRequest:
    return StoreRequest(method=b"GET", path=path, **kwargs)


class LoaderTests(SynchronousTestCase):
    """
    L{loadRules} loads C{NN-name.py} files in lexical order and refuses
    broken ones, naming the file.
    """

    def setUp(self):
        self.env = RuleEnv(state=MemoryState(Clock()), clock=Clock())

    def load(self, files: dict[str, str]) -> RuleSet:
        return loadRules(writeRules(self, files), self.env)

    def loadError(self, files: dict[str, str]) -> RuleLoadError:
        return self.assertRaises(RuleLoadError, self.load, files)

    def test_lexicalOrder(self):
        """
        Files load in lexical order of their names, whatever order they were
        created in, and rules keep their order within a file.
        """
        ruleSet = self.load({
            "50-b.py": verdictRule("b", "Abstain()"),
            "10-a.py": verdictRule("a", "Abstain()"),
            "90-c.py": verdictRule("c", "Abstain()"),
        })
        self.assertEqual([r.name for r in ruleSet.rules], ["a", "b", "c"])
        self.assertEqual(ruleSet.files, ("10-a.py", "50-b.py", "90-c.py"))

    def test_firstNonAbstainingWins(self):
        """
        The first verdict that is not L{Abstain}, in file order, decides.
        """
        ruleSet = self.load({
            "10-quiet.py": verdictRule("quiet", "Abstain()"),
            "20-deny.py": verdictRule("deny", "StoreDeny(403, 'no', errorCode='nope')"),
            "30-allow.py": verdictRule("allow", "Allow()"),
        })
        verdict = self.successResultOf(ruleSet.admit(request()))
        self.assertEqual(verdict, StoreDeny(403, "no", errorCode="nope"))

    def test_allAbstainAllows(self):
        """
        When every admission rule abstains, the request is allowed.
        """
        ruleSet = self.load({"10-quiet.py": verdictRule("quiet", "Abstain()")})
        self.assertEqual(self.successResultOf(ruleSet.admit(request())), Allow())

    def test_otherFilesIgnored(self):
        """
        Backups, package-manager leftovers, dot files and directories are
        not loaded, even when they would be broken.
        """
        directory = writeRules(self, {
            "10-a.py": verdictRule("a", "Abstain()"),
            "10-a.py~": "broken(",
            "10-a.py.dpkg-old": "broken(",
            ".20-hidden.py": "broken(",
            "README": "not python",
            "30-no-number.txt": "broken(",
            "x-40.py": "broken(",
        })
        os.makedirs(os.path.join(directory, "50-dir.py"))
        ruleSet = loadRules(directory, self.env)
        self.assertEqual([r.name for r in ruleSet.rules], ["a"])

    def test_syntaxError(self):
        """
        A file that does not parse is named with the line of the error.
        """
        error = self.loadError({"10-good.py": verdictRule("a", "Abstain()"),
                                "20-bad.py": "def rules(env):\n    return [\n"})
        self.assertIn("20-bad.py", str(error))
        self.assertIn("syntax error", str(error))

    def test_importError(self):
        """
        A file that raises while it is executed is named with the error.
        """
        error = self.loadError({"20-bad.py": "import no_such_module_here\n"})
        self.assertIn("20-bad.py", str(error))
        self.assertIn("no_such_module_here", str(error))

    def test_noRulesFunction(self):
        """
        A file without C{rules(env)} is refused.
        """
        error = self.loadError({"20-empty.py": "limit = 3\n"})
        self.assertIn("20-empty.py", str(error))
        self.assertIn("rules(env)", str(error))

    def test_rulesFunctionRaises(self):
        """
        A C{rules(env)} that raises is refused with its exception.
        """
        error = self.loadError({"20-x.py": "def rules(env):\n    raise ValueError('bad limit')\n"})
        self.assertIn("20-x.py", str(error))
        self.assertIn("bad limit", str(error))

    def test_notAList(self):
        """
        C{rules(env)} must return a sequence of rules.
        """
        error = self.loadError({"20-x.py": "def rules(env):\n    return None\n"})
        self.assertIn("must return a list", str(error))

    def test_providesNoInterface(self):
        """
        An object that declares no rule interface is refused, naming its
        position in the list.
        """
        error = self.loadError({"20-x.py": verdictRule("a", "Abstain()") + """
def rules(env):
    return [Rule('a', Abstain()), object()]
"""})
        self.assertIn("20-x.py", str(error))
        self.assertIn("rule #1", str(error))

    def test_verifyObject(self):
        """
        An object that declares an interface it does not implement (a
        misspelt method) fails L{verifyObject} at load time.
        """
        error = self.loadError({"20-x.py": """
from zope.interface import implementer
from snapstore.interfaces import IActionRule

@implementer(IActionRule)
class Rule:
    name = "typo"
    def ammend(self, request, action, result):
        return result

def rules(env):
    return [Rule()]
"""})
        self.assertIn("20-x.py", str(error))
        self.assertIn("IActionRule", str(error))
        self.assertIn("amend", str(error))

    def test_missingName(self):
        """
        A rule without a name is refused.
        """
        error = self.loadError({"20-x.py": verdictRule("", "Abstain()")})
        self.assertIn("no name", str(error))

    def test_duplicateName(self):
        """
        Rule names are unique across files.
        """
        error = self.loadError({"10-a.py": verdictRule("same", "Abstain()"),
                                "20-b.py": verdictRule("same", "Abstain()")})
        self.assertIn("20-b.py", str(error))
        self.assertIn("10-a.py", str(error))

    def test_missingDirectory(self):
        """
        A rules directory that does not exist is an error naming it.
        """
        missing = self.mktemp()
        error = self.assertRaises(RuleLoadError, loadRules, missing, self.env)
        self.assertIn(missing, str(error))

    def test_envInjected(self):
        """
        C{rules(env)} gets the env the loader was given.
        """
        ruleSet = self.load({"10-env.py": verdictRule("env", "Abstain()").replace(
            "return [Rule(", "return [Rule.withEnv(env, ").replace(
            "def admit(", "@classmethod\n    def withEnv(cls, env, *a):\n"
            "        rule = cls(*a)\n        rule.env = env\n        return rule\n"
            "    def admit(")})
        self.assertIs(ruleSet.rules[0].env, self.env)

    def test_shippedRulesLoad(self):
        """
        The shipped C{rules.d} loads, every rule passing L{verifyObject},
        with the device limit off and the snap lists empty.
        """
        ruleSet = loadRules(SHIPPED_RULES, self.env)
        names = [r.name for r in ruleSet.rules]
        self.assertEqual(names, ["device-limit", "overrides", "snap-access", "cache"])
        self.assertIsNone(ruleSet.ruleNamed("device-limit").limit)
        self.assertFalse(ruleSet.ruleNamed("snap-access").active)
        verifyObject(IAdmissionRule, ruleSet.ruleNamed("device-limit"))
        verifyObject(IActionRule, ruleSet.ruleNamed("overrides"))
        verifyObject(ICacheRule, ruleSet.ruleNamed("cache"))

    def test_checkCommand(self):
        """
        C{python -m snapstore.rules.loader DIR} reports the rules of a good
        directory with status 0, and names the broken file with status 1.
        """
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            good = loaderMain([SHIPPED_RULES])
            bad = loaderMain([writeRules(self, {"30-bad.py": "oops("})])
        self.assertEqual((good, bad), (0, 1))
        self.assertIn("device-limit", out.getvalue())
        self.assertIn("30-bad.py", err.getvalue())


class TapCheckRulesTests(SynchronousTestCase):
    """
    C{twistd snapstore --check-rules} and start-up checks.
    """

    def options(self, *args: str):
        from snapstore.tap import Options

        options = Options()
        options.parseOptions(["--config", "/dev/null", "--data-dir", self.mktemp(), *args])
        return options

    def test_checkRulesExits(self):
        """
        C{--check-rules} prints the loaded rules and exits with status 0.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            exited = self.assertRaises(SystemExit, self.options, "--rules-dir",
                                       SHIPPED_RULES, "--check-rules")
        self.assertEqual(exited.code, 0)
        self.assertIn("overrides", out.getvalue())

    def test_brokenFileStopsStartUp(self):
        """
        A broken rules file is a usage error naming the file, so twistd
        exits before starting anything.
        """
        directory = writeRules(self, {"10-broken.py": "rules = 1 +\n"})
        error = self.assertRaises(usage.UsageError, self.options, "--rules-dir", directory)
        self.assertIn("10-broken.py", str(error))

    def test_missingExplicitDirectory(self):
        """
        A C{--rules-dir} that does not exist stops start-up.
        """
        missing = self.mktemp()
        error = self.assertRaises(usage.UsageError, self.options, "--rules-dir", missing)
        self.assertIn(missing, str(error))


@implementer(IAdmissionRule, IActionRule, ICacheRule)
class Scripted:
    """
    A rule answering what a test says, or raising.
    """

    def __init__(self, name, verdict=Abstain(), amend=None, policy=None):
        self.name = name
        self.verdict = verdict
        self.amender = amend
        self.answer = policy
        self.seen = []

    def admit(self, request):
        self.seen.append(request)
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict

    def amend(self, request, action, result):
        self.seen.append(action)
        return self.amender(action, result) if self.amender else result

    def policy(self, request, response):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class EngineTests(SynchronousTestCase):
    """
    L{RuleSet} evaluation: fail closed, pipelines, cache fallbacks.
    """

    def setUp(self):
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_raisingRuleRefuses(self):
        """
        A rule that raises refuses the request (403, C{rule-failed}, naming
        the rule), later rules are not asked, and the failure is logged with
        the rule's name.
        """
        later = Scripted("later", Allow())
        ruleSet = RuleSet([Scripted("boom", RuntimeError("bug")), later])
        verdict = self.successResultOf(ruleSet.admit(request()))
        self.assertIsInstance(verdict, StoreDeny)
        self.assertEqual((verdict.code, verdict.errorCode), (403, "rule-failed"))
        self.assertIn("boom", verdict.reason)
        self.assertEqual(later.seen, [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any(e.get("rule") == "boom" for e in self.logged))

    def test_wrongTypeRefuses(self):
        """
        A rule that answers something that is not a verdict refuses.
        """
        ruleSet = RuleSet([Scripted("odd", "yes please")])
        verdict = self.successResultOf(ruleSet.admit(request()))
        self.assertEqual(verdict.errorCode, "rule-failed")

    def test_deferredVerdict(self):
        """
        Rules may answer with a Deferred.
        """
        ruleSet = RuleSet([Scripted("later", succeed(Deny(403, "later")))])
        self.assertEqual(self.successResultOf(ruleSet.admit(request())), Deny(403, "later"))

    def test_amendPipeline(self):
        """
        Action rules amend one after the other, each seeing the previous
        result, with the context's tracking channel and revision added to
        the action.
        """
        first = Scripted("first", amend=lambda a, r: dict(r, first=True))
        second = Scripted("second", amend=lambda a, r: dict(r, second=r.get("first")))
        ruleSet = RuleSet([first, second])
        body = json.dumps({
            "context": [{"snap-id": "S", "instance-key": "S", "revision": 3,
                         "tracking-channel": "beta"}],
            "actions": [{"action": "refresh", "instance-key": "S", "snap-id": "S"}]}).encode()
        answer = {"results": [{"result": "refresh", "instance-key": "S"}]}
        amended = self.successResultOf(ruleSet.amendRefresh(
            StoreRequest(b"POST", "/v2/snaps/refresh", body=body), answer))
        self.assertEqual(amended["results"], [{"result": "refresh", "instance-key": "S",
                                               "first": True, "second": True}])
        self.assertEqual(first.seen[0]["tracking-channel"], "beta")
        self.assertEqual(first.seen[0]["context-revision"], 3)
        self.assertEqual(answer, {"results": [{"result": "refresh", "instance-key": "S"}]})

    def test_amendUnchanged(self):
        """
        When no rule changes anything the answer is reported unchanged
        (C{None}), so the relay sends upstream's bytes.
        """
        ruleSet = RuleSet([Scripted("same")])
        answer = {"channel-map": [{"revision": 1}], "name": "x"}
        self.assertIsNone(self.successResultOf(ruleSet.amendInfo(request(), answer)))

    def test_amendRaisingFails(self):
        """
        A rule raising while amending fails the call with L{RuleFailed}.
        """
        def boom(action, result):
            raise KeyError("x")

        ruleSet = RuleSet([Scripted("boom", amend=boom)])
        failure = self.failureResultOf(ruleSet.amendFind(
            request(), {"results": [{"name": "x"}]}), RuleFailed)
        self.assertEqual(failure.value.ruleName, "boom")
        self.flushLoggedErrors(KeyError)

    def test_cachePolicyFirstAnswer(self):
        """
        The first cache rule that does not answer C{None} decides; with
        none, blobs are kept forever and answers about snaps not at all; a
        raising cache rule means "do not cache".
        """
        head = ResponseHead("assertion", assertionType="snap-declaration")
        policy = CachePolicy(cache=True, ttl=5)
        ruleSet = RuleSet([Scripted("none", policy=None), Scripted("five", policy=policy)])
        self.assertEqual(ruleSet.cachePolicy(None, head), policy)
        self.assertEqual(RuleSet().cachePolicy(None, ResponseHead("blob")).ttl, None)
        self.assertFalse(RuleSet().cachePolicy(None, ResponseHead("refresh")).cache)
        broken = RuleSet([Scripted("boom", policy=ValueError("x"))])
        self.assertEqual(broken.cachePolicy(None, head), NO_CACHE)
        self.flushLoggedErrors(ValueError)


class ReloadTests(SynchronousTestCase):
    """
    L{RulesService} reloads on C{SIGHUP} and keeps the old set when the new
    one is broken.
    """

    def setUp(self):
        self.clock = Clock()
        self.directory = writeRules(self, {"10-a.py": verdictRule("a", "Abstain()")})
        self.handlers = {}

        def installSignal(signum, handler):
            previous = self.handlers.get(signum, signal.SIG_DFL)
            self.handlers[signum] = handler
            return previous

        self.service = RulesService(
            self.directory, RuleEnv(state=MemoryState(self.clock), clock=self.clock),
            installSignal=installSignal)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def names(self):
        return [rule.name for rule in self.service.ruleSet.rules]

    def test_sighupReloads(self):
        """
        C{SIGHUP} schedules a reload in the reactor, which picks up a new
        file.
        """
        writeRules(self, {"20-b.py": verdictRule("b", "Deny(403, 'b')")}, self.directory)
        self.handlers[signal.SIGHUP](signal.SIGHUP, None)
        self.assertEqual(self.names(), ["a"])
        self.clock.advance(0)
        self.assertEqual(self.names(), ["a", "b"])
        verdict = self.successResultOf(self.service.admit(request()))
        self.assertEqual(verdict, Deny(403, "b"))

    def test_brokenReloadKeepsOldSet(self):
        """
        When any file of the new set is broken, the old set stays in use,
        whole.
        """
        old = self.service.ruleSet
        writeRules(self, {"20-b.py": verdictRule("b", "Abstain()"),
                          "30-c.py": "def rules(env):\n    return [42]\n"}, self.directory)
        self.assertFalse(self.service.reload())
        self.assertIs(self.service.ruleSet, old)
        self.assertEqual(self.names(), ["a"])

    def test_editedFileReloaded(self):
        """
        Editing a file's literal and reloading uses the new value (the
        module is not served from an import cache).
        """
        writeRules(self, {"10-a.py": verdictRule("a", "Deny(403, 'edited')")}, self.directory)
        self.assertTrue(self.service.reload())
        self.assertEqual(self.successResultOf(self.service.admit(request())),
                         Deny(403, "edited"))

    def test_stopRestoresHandler(self):
        """
        Stopping the service puts the previous C{SIGHUP} handler back.
        """
        self.service.stopService()
        self.assertEqual(self.handlers[signal.SIGHUP], signal.SIG_DFL)
        self.service.startService()


class CacheRuleTests(SynchronousTestCase):
    """
    The shipped cache policy rule.
    """

    def setUp(self):
        env = RuleEnv(state=MemoryState(Clock()), clock=Clock())
        self.ruleSet = loadRules(SHIPPED_RULES, env)

    def policy(self, kind, assertionType="", code=200):
        return self.ruleSet.cachePolicy(None, ResponseHead(kind, code, (), assertionType))

    def test_blobsForever(self):
        """
        Blobs are cached with no expiry.
        """
        self.assertEqual(self.policy("blob"), CachePolicy(cache=True, ttl=None))

    def test_assertionTTLs(self):
        """
        Assertions keyed by digests are kept for good; revisable ones for
        the shipped TTL; unlisted types for the default.
        """
        self.assertEqual(self.policy("assertion", "snap-revision").ttl, None)
        self.assertEqual(self.policy("assertion", "snap-declaration").ttl, 600)
        self.assertEqual(self.policy("assertion", "account").ttl, 24 * 3600)
        self.assertEqual(self.policy("assertion", "repair").ttl, 600)

    def test_neverPerDeviceAnswers(self):
        """
        Refresh, info and find answers and failed fetches are never cached.
        """
        for kind in ("refresh", "info", "find"):
            self.assertFalse(self.policy(kind).cache, kind)
        self.assertFalse(self.policy("assertion", "snap-revision", code=404).cache)

    def test_settingsEdited(self):
        """
        Editing the file's literals changes the policy: the file is the place
        to change it.
        """
        directory = copyShipped(self, defaultAssertionTTL="0", cacheBlobs="False")
        ruleSet = loadRules(directory, RuleEnv(state=MemoryState(), clock=Clock()))
        self.assertFalse(ruleSet.cachePolicy(None, ResponseHead("blob")).cache)
        head = ResponseHead("assertion", assertionType="repair")
        self.assertFalse(ruleSet.cachePolicy(None, head).cache)

    def test_badTTL(self):
        """
        A TTL that is not a number of seconds is refused when loading.
        """
        self.assertRaises(ValueError, CacheRule, assertionTTLs={"account": "soon"})


class SnapAccessRuleTests(SynchronousTestCase):
    """
    L{SnapAccessRule} in isolation.
    """

    def answer(self, rule, action, result):
        return RuleSet([rule])._amend(request(), action, result)

    def test_offByDefault(self):
        """
        With no lists, nothing is touched.
        """
        rule = SnapAccessRule()
        self.assertEqual(rule.admit(request("/v2/snaps/info/x")), Abstain())
        result = {"result": "install", "name": "x"}
        self.assertIs(rule.amend(request(), {"action": "install"}, result), result)

    def test_denyByPublisher(self):
        """
        A snap whose publisher is denied becomes an install error, and its
        snap-id is remembered so its download is refused.
        """
        rule = SnapAccessRule(denyPublishers=["evil"])
        result = {"result": "install", "instance-key": "install-1", "snap-id": "ID",
                  "name": "x", "snap": {"publisher": {"id": "P", "username": "evil"}}}
        amended = rule.amend(request(), {"action": "install", "instance-key": "install-1"},
                             result)
        self.assertEqual(amended["error"]["code"], "name-not-found")
        blob = BlobRecord(name="ID_1.snap", sha3_384="0", size=1, url="u", snapId="ID")
        self.assertEqual(rule.admit(request(blob=blob)).code, 404)
        other = BlobRecord(name="OK_1.snap", sha3_384="0", size=1, url="u", snapId="OK")
        # A snap never judged (after a restart, say) is not served...
        self.assertEqual(rule.admit(request(blob=other)).code, 404)
        # ...until a refresh showed it allowed.
        rule.amend(request(), {"action": "install", "instance-key": "install-1"},
                   {"result": "install", "instance-key": "install-1", "snap-id": "OK",
                    "name": "y", "snap": {"publisher": {"id": "Q", "username": "good"}}})
        self.assertEqual(rule.admit(request(blob=other)), Abstain())

    def test_allowList(self):
        """
        With an allow list, only listed snaps pass.
        """
        rule = SnapAccessRule(allow=["hello"])
        self.assertFalse(rule.denied("hello"))
        self.assertTrue(rule.denied("other"))
        self.assertEqual(rule.admit(request("/v2/snaps/info/other")).errorCode,
                         "name-not-found")
        self.assertEqual(rule.admit(request("/v2/snaps/info/hello")), Abstain())


class AccessThroughProxyTests(TestCase):
    """
    The shipped snap-access rule, edited to deny a snap, through the proxy
    in front of the fake store.
    """

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor
        from twisted.internet.defer import ensureDeferred

        async def setUp():
            self.store = await FakeStore(reactor).startFor(self)
            self.store.addSnap("hello", summary="hello world")
            self.store.addSnap("secret", summary="hello secret", publisher="shady")
            self.store.addRevision("hello", 1, 1000)
            self.store.addRevision("secret", 2, 1000)
            rules = copyShipped(self, deny='["secret"]')
            self.proxy = await Proxy(self, self.store.apiURL, rules).start()

        return ensureDeferred(setUp())

    async def _checks(self):
        code, answer = await self.proxy.call(b"GET", "v2/snaps/find?q=hello")
        self.assertEqual(code, 200)
        self.assertEqual([r["name"] for r in answer["results"]], ["hello"])
        result = await self.proxy.install("secret")
        self.assertEqual(result["result"], "error")
        self.assertEqual(result["error"]["code"], "name-not-found")
        self.assertEqual(result["instance-key"], "install-1")
        result = await self.proxy.install("hello")
        self.assertEqual(result["result"], "install")
        code, answer = await self.proxy.call(b"GET", "v2/snaps/info/secret")
        self.assertEqual((code, answer["error-list"][0]["code"]), (404, "name-not-found"))
        # Even a device that knows the download URL gets nothing, whether
        # the proxy recorded the blob or not.
        secretId = self.store.snapId("secret")
        await self.proxy.state.recordBlob(BlobRecord(
            name=f"{secretId}_2.snap", sha3_384=self.store.blobDigest("secret", 2),
            size=1000, url=self.store.downloadURL("secret", 2), snapId=secretId,
            snapName="secret", revision=2))
        for name in (f"{secretId}_2.snap", f"{secretId}_3.snap"):
            code, answer = await self.proxy.call(b"GET", f"api/v1/snaps/download/{name}")
            self.assertEqual((code, answer["error-list"][0]["code"]), (404, "not-found"))
        self.assertEqual(self.store.cdnDownloads("secret"), [])
        self.assertEqual(self.store.count("GET", "/api/v1/snaps/download/"), 0)
        code, blob = await self.proxy.call(b"GET", result["snap"]["download"]["url"]
                                           [len(self.proxy.url):])
        self.assertEqual((code, blob), (200, self.store.blobBytes("hello", 1)))

    def test_deniedSnapInvisible(self):
        """
        A denied snap is absent from find, its install fails with
        C{name-not-found}, info answers 404, and a download of it is
        refused; other snaps are unaffected.
        """
        from twisted.internet.defer import ensureDeferred

        return ensureDeferred(self._checks())


class CustomRuleTests(TestCase):
    """
    An admin's own rule, written in a test's rules directory next to the
    shipped ones, takes part in the proxy's decisions.
    """

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor
        from twisted.internet.defer import ensureDeferred

        async def setUp():
            self.store = await FakeStore(reactor).startFor(self)
            self.store.addSnap("hello")
            self.store.addRevision("hello", 1, 1000)
            directory = copyShipped(self)
            writeRules(self, {"05-no-armhf.py": """
                # Refuse 32-bit ARM devices; answer info with a marker.
                from zope.interface import implementer
                from snapstore.interfaces import IAdmissionRule, IActionRule
                from snapstore.rules.values import StoreDeny
                from snapstore.rules.verdicts import Abstain

                refused = "armhf"

                @implementer(IAdmissionRule, IActionRule)
                class NoArch:
                    name = "no-armhf"
                    def admit(self, request):
                        if request.architecture == refused:
                            return StoreDeny(403, "armhf is not served here",
                                             errorCode="architecture-refused")
                        return Abstain()
                    def amend(self, request, action, result):
                        if action["action"] == "info":
                            return dict(result, marked=True)
                        return result

                def rules(env):
                    return [NoArch()]
                """}, directory)
            self.proxy = await Proxy(self, self.store.apiURL, directory).start()

        return ensureDeferred(setUp())

    def test_customRule(self):
        """
        The custom rule refuses what it should with its own store error,
        lets the rest through, and amends info entries.
        """
        from twisted.internet.defer import ensureDeferred

        async def check():
            code, answer = await self.proxy.call(b"GET", "v2/snaps/info/hello",
                                                 architecture="armhf")
            self.assertEqual(code, 403)
            self.assertEqual(answer, {"error-list": [
                {"code": "architecture-refused", "message": "armhf is not served here"}]})
            code, answer = await self.proxy.call(b"GET", "v2/snaps/info/hello")
            self.assertEqual(code, 200)
            self.assertTrue(all(entry["marked"] for entry in answer["channel-map"]))
            self.assertEqual(self.store.count("GET", "/v2/snaps/info/"), 1)

        return ensureDeferred(check())


class AssertionPolicyTests(TestCase):
    """
    The assertion cache keeps each type as long as the cache rule of
    C{rules.d} says.
    """

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor
        from twisted.internet.defer import ensureDeferred
        from twisted.web.client import Agent
        from twisted.web.server import Site

        from snapstore.cache.documents import DocumentCache
        from snapstore.outbound import makePool
        from snapstore.store.assertions import AssertionsResource
        from snapstore.store.resource import NotFoundResource, StoreRoot
        from snapstore.store.upstream import StoreUpstream
        from tests.helpers import listen

        async def setUp():
            self.store = FakeStore(reactor)
            self.store.addSnap("hello")
            self.store.addRevision("hello", 1, 1000)
            await self.store.startFor(self)
            pool = makePool(reactor)
            self.addCleanup(pool.closeCachedConnections)
            upstream = StoreUpstream(Agent(reactor, pool=pool), self.store.apiURL, reactor, 10)
            self.clock = Clock()
            directory = copyShipped(self)
            path = os.path.join(directory, "60-cache.py")
            with open(path) as f:
                source = f.read()
            with open(path, "w") as f:
                f.write(source.replace('"snap-declaration": 600,', '"snap-declaration": 60,'))
            self.rules = RulesService(directory, RuleEnv(state=MemoryState(), clock=self.clock))
            assertions = AssertionsResource(self.clock, upstream, DocumentCache(self.clock),
                                            NotFoundResource(), policy=self.rules.assertionPolicy)
            site = Site(StoreRoot(NotFoundResource(), NotFoundResource(), NotFoundResource(),
                                  assertions=assertions))
            port = await listen(self, site)
            self.base = f"http://127.0.0.1:{port}/"

        return ensureDeferred(setUp())

    async def fetch(self, path):
        from twisted.web.client import readBody

        from tests.helpers import testAgent

        response = await testAgent(self).request(b"GET", (self.base + path).encode())
        await readBody(response)
        self.assertEqual(response.code, 200)
        return response.headers.getRawHeaders(b"x-cache")[0]

    def test_ttlFromRules(self):
        """
        A snap-declaration is served from the cache for the seconds the
        (edited) cache rule gives and fetched again after; a snap-revision
        is kept for good.
        """
        from twisted.internet.defer import ensureDeferred

        async def check():
            declaration = f"v2/assertions/snap-declaration/16/{self.store.snapId('hello')}"
            digest = self.store.blob("hello", 1).digestBase64
            revision = f"v2/assertions/snap-revision/{digest}"
            self.assertEqual([await self.fetch(declaration), await self.fetch(revision)],
                             [b"MISS", b"MISS"])
            self.clock.advance(59)
            self.assertEqual(await self.fetch(declaration), b"HIT")
            self.clock.advance(2)
            self.assertEqual(await self.fetch(declaration), b"MISS")
            self.clock.advance(30 * 24 * 3600)
            self.assertEqual(await self.fetch(revision), b"HIT")
            self.assertEqual(self.rules.assertionPolicy("snap-declaration").ttl, 60)

        return ensureDeferred(check())


class TwistdReloadTests(TestCase):
    """
    The real C{twistd -n snapstore} process reloads its rules on C{SIGHUP}.
    """

    timeout = 120

    def test_sighup(self):
        """
        Adding a rule that refuses everything and sending C{SIGHUP} makes
        the running service refuse calls; a broken edit and another
        C{SIGHUP} keep that rule set.
        """
        from twisted.internet import reactor
        from twisted.internet.defer import ensureDeferred

        from tests.processes import startTwistd

        async def check():
            store = FakeStore(reactor)
            store.addSnap("hello")
            store.addRevision("hello", 1, 1000)
            await store.startFor(self)
            directory = copyShipped(self)
            process, port = await startTwistd(
                self, "--upstream", store.apiURL, "--proxy-endpoint", "none",
                "--admin-endpoint", "none", "--data-dir", os.path.abspath(self.mktemp()),
                "--config", "/dev/null", "--rules-dir", directory)
            proxy = Proxy(self, store.apiURL, directory)
            proxy.url = f"http://127.0.0.1:{port}/"

            async def infoCode():
                code, _ = await proxy.call(b"GET", "v2/snaps/info/hello")
                return code

            self.assertEqual(await infoCode(), 200)
            writeRules(self, {"10-closed.py": verdictRule(
                "closed", "StoreDeny(403, 'closed', errorCode='closed')")}, directory)
            reloaded = process.printed("Reloaded", since=len(process.collector.output))
            process.transport.signalProcess("HUP")
            await reloaded
            self.assertEqual(await infoCode(), 403)
            writeRules(self, {"30-broken.py": "rules = (\n"}, directory)
            failed = process.printed("Rules reload failed", since=len(process.collector.output))
            process.transport.signalProcess("HUP")
            await failed
            self.assertIn("30-broken.py", process.output)
            self.assertEqual(await infoCode(), 403)

        return ensureDeferred(check())
