# -*- test-case-name: tests.test_rules -*-
"""
Evaluating a loaded rule set (docs/architecture.md, "Rules in brief").

Rules run in load order.  For verdicts (admission, connect) the first one
that does not abstain wins; amendments (L{IActionRule}) form a pipeline in
which each rule sees what the one before returned; for cache policies the
first answer that is not C{None} wins.  A rule that raises, or answers with
something that is not a verdict, is logged with its name and the request
is refused: a broken policy must not silently let everything through.
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from snapstore.interfaces import IActionRule, IAdmissionRule, ICacheRule, IConnectRule
from snapstore.rules.values import (
    NO_CACHE,
    CachePolicy,
    ResponseHead,
    RuleFailed,
    StoreDeny,
    StoreRequest,
    settled,
)
from snapstore.rules.verdicts import Abstain, Allow, Deny
from snapstore.state.errors import StateUnavailable

#: What a refresh-call result's C{result} field is for each action kind.
ACTION_KINDS = ("install", "refresh", "download")

#: Where v1 HAL answers (names, search) list snaps.
CATALOGUE_KEY = "clickindex:package"

#: The verdict when no admission rule is loaded.
_ALLOW = Allow()

#: The cache policy used when no rule decides.
DEFAULT_ASSERTION_TTL = 3600.0


@attrs.define
class RuleEnv:
    """
    What a rules file's C{rules(env)} is given, so that rules get their
    dependencies injected instead of importing globals.

    @ivar state: the L{snapstore.interfaces.IStateStore}.
    @ivar clock: an L{twisted.internet.interfaces.IReactorTime}.
    @ivar settings: the service's L{snapstore.config.Settings} (or C{None}
        when checking rules without a configuration).
    @ivar upstream: the upstream store client
        (L{snapstore.store.upstream.StoreUpstream}), or C{None} offline.
    """

    state: Any
    clock: IReactorTime
    settings: Any = None
    upstream: Any = None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _describe(rule: Any) -> str:
    return str(getattr(rule, "name", type(rule).__name__))


class RuleSet:
    """
    An ordered, immutable collection of loaded rules.

    @ivar rules: the rule objects in evaluation order.
    @ivar files: the names of the files they came from, in load order.
    """

    log = Logger()

    #: Called with C{(ruleName, verdict)} for each verdict a rule gives
    #: (C{"error"} when it raised), for metrics; C{None}: nobody listens.
    verdictObserver: Optional[Any] = None

    def __init__(self, rules: Sequence[Any] = (), files: Sequence[str] = (),
                 verdictObserver: Optional[Any] = None) -> None:
        self.verdictObserver = verdictObserver
        self.rules = tuple(rules)
        self.files = tuple(files)
        self.admissionRules = tuple(r for r in self.rules if IAdmissionRule.providedBy(r))
        self.actionRules = tuple(r for r in self.rules if IActionRule.providedBy(r))
        self.cacheRules = tuple(r for r in self.rules if ICacheRule.providedBy(r))
        self.connectRules = tuple(r for r in self.rules if IConnectRule.providedBy(r))

    def __repr__(self) -> str:
        return f"<RuleSet {[_describe(r) for r in self.rules]}>"

    def ruleNamed(self, name: str) -> Optional[Any]:
        """
        @return: the loaded rule called C{name}, or C{None}.
        """
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None

    def close(self) -> None:
        """
        Tell rules that keep watches (on the state store) that this set is
        no longer used, e.g. after a reload replaced it.
        """
        for rule in self.rules:
            closer = getattr(rule, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:
                    self.log.failure("closing rule {rule} failed", rule=_describe(rule))

    # -- verdicts ------------------------------------------------------------

    def admit(self, request: StoreRequest) -> Deferred[Any]:
        """
        Ask the admission rules about a store call (or, with
        C{request.blob} set, a download).

        @return: a Deferred firing with the first verdict that is not
            L{Abstain}, or L{Allow} when every rule abstains; a failing rule
            gives a L{StoreDeny} (never an errback).
        """
        return Deferred.fromCoroutine(self.verdict(request))

    async def verdict(self, request: StoreRequest) -> Any:
        """
        L{admit} as a coroutine, for a caller that is one itself (the
        relay): awaited directly, it costs no L{Deferred} of its own.
        """
        if not self.admissionRules:
            return _ALLOW
        return await self._firstVerdict(
            self.admissionRules, lambda rule: rule.admit(request), request.path)

    def checkConnect(self, target: Any, default: Any = None) -> Deferred[Any]:
        """
        Ask the connect rules about a forward-proxy target.

        @param default: the verdict when every rule abstains (the forward
            proxy's default is to refuse).
        @return: a Deferred firing with the verdict.
        """
        if default is None:
            default = Deny(403, "no rule allows this destination")
        return Deferred.fromCoroutine(self._firstVerdict(
            self.connectRules, lambda rule: rule.checkConnect(target),
            f"{getattr(target, 'host', '?')}:{getattr(target, 'port', '?')}", default))

    async def _firstVerdict(self, rules: Sequence[Any], ask: Any, what: str,
                            default: Any = None) -> Any:
        for rule in rules:
            try:
                verdict = await settled(ask(rule))
            except StateUnavailable:
                # Still refused (fail closed), but as what it is: a passing
                # database outage, which snapd retries, not a policy refusal.
                self._noteVerdict(rule, "error")
                self.log.warn("rule {rule} needs the state store, which is unavailable; "
                              "refusing {what} with 503", rule=_describe(rule), what=what)
                return StoreDeny(503, "the proxy's database is unavailable; try again shortly",
                                 errorCode="state-unavailable")
            except Exception:
                self._noteVerdict(rule, "error")
                self.log.failure("rule {rule} raised on {what}; refusing",
                                 rule=_describe(rule), what=what)
                return RuleFailed(_describe(rule), "raised").verdict()
            self._noteVerdict(rule, verdict)
            if isinstance(verdict, Abstain):
                continue
            if isinstance(verdict, (Allow, Deny)):
                return verdict
            self.log.error("rule {rule} answered {verdict!r}, not a verdict; refusing",
                           rule=_describe(rule), verdict=verdict)
            return RuleFailed(_describe(rule), "answered no verdict").verdict()
        return Allow() if default is None else default

    def _noteVerdict(self, rule: Any, verdict: Any) -> None:
        if self.verdictObserver is not None:
            try:
                self.verdictObserver(_describe(rule), verdict)
            except Exception:
                self.log.failure("verdict observer failed")

    # -- amendments ----------------------------------------------------------

    async def _amend(self, request: StoreRequest, action: dict[str, Any],
                     result: Any) -> Any:
        for rule in self.actionRules:
            try:
                result = await settled(rule.amend(request, action, result))
            except StateUnavailable:
                raise
            except Exception:
                self.log.failure("rule {rule} raised amending {kind} for {path}",
                                 rule=_describe(rule), kind=action.get("action"),
                                 path=request.path)
                raise RuleFailed(_describe(rule), "raised")
            if result is None:
                return None
            if not isinstance(result, dict):
                self.log.error("rule {rule} amended to {result!r}, not a dict",
                               rule=_describe(rule), result=result)
                raise RuleFailed(_describe(rule), "amended to something not a result")
        return result

    async def amended(self, kind: str, request: StoreRequest, answer: Any) -> Any:
        """
        L{amendRefresh}, L{amendInfo}, L{amendFind} or L{amendCatalogue}
        (C{kind}: C{refresh}, C{info}, C{find}, C{catalogue}) as a
        coroutine, for a caller that is one itself (the relay).
        """
        if not self.actionRules:
            return None
        if kind == "refresh":
            return await self._amendRefresh(request, answer)
        if kind == "info":
            return await self._amendList(request, answer, "channel-map", "info")
        if kind == "find":
            return await self._amendList(request, answer, "results", "find")
        if kind == "catalogue":
            return await self._amendCatalogue(request, answer)
        raise ValueError(f"no amendment of {kind!r} answers")

    def amendRefresh(self, request: StoreRequest, answer: Any) -> Deferred[Any]:
        """
        Let the action rules amend each result of a refresh call's answer.

        @param answer: upstream's parsed answer (not mutated).
        @return: a Deferred firing with the amended answer, or C{None}
            when no rule changed anything (so the caller can relay
            upstream's bytes unchanged); failing with L{RuleFailed} when a
            rule failed.
        """
        return Deferred.fromCoroutine(self.amended("refresh", request, answer))

    async def _amendRefresh(self, request: StoreRequest, answer: Any) -> Any:
        if not self.actionRules or not isinstance(answer, dict):
            return None
        results = answer.get("results")
        if not isinstance(results, list):
            return None
        actions = _actionsByKey(request.json())
        changed = False
        amended = []
        for result in results:
            key = result.get("instance-key") if isinstance(result, dict) else None
            action = actions.get(key) if isinstance(key, str) else None
            if action is None or action.get("action") not in ACTION_KINDS:
                if _assertionsOnly(result):
                    amended.append(result)
                else:
                    # Fail closed: a result no rule could judge (an
                    # instance-key of 1 or null, or matching no action) is
                    # not passed on, so its URL is neither sent nor recorded.
                    self.log.warn("dropped a refresh result matching no action: "
                                  "instance-key {key!r}", key=key)
                    changed = True
                continue
            new = await self._amend(request, copy.deepcopy(action), result)
            if new is not result:
                changed = True
            if new is not None:
                amended.append(new)
        if not changed:
            return None
        return dict(answer, results=amended)

    def amendInfo(self, request: StoreRequest, answer: Any) -> Deferred[Any]:
        """
        Let the action rules amend each channel-map entry of an C{info}
        answer.  Each rule is given C{{"action": "info", "name", "snap-id",
        "publisher"}} as the action.

        @return: as L{amendRefresh}.
        """
        return Deferred.fromCoroutine(self.amended("info", request, answer))

    def amendFind(self, request: StoreRequest, answer: Any) -> Deferred[Any]:
        """
        Let the action rules amend (or drop) each result of a C{find}
        answer; the action given is C{{"action": "find"}}.

        @return: as L{amendRefresh}.
        """
        return Deferred.fromCoroutine(self.amended("find", request, answer))

    def amendCatalogue(self, request: StoreRequest, answer: Any) -> Deferred[Any]:
        """
        Let the action rules drop entries of a v1 C{names} or C{search}
        answer (HAL: C{_embedded["clickindex:package"]}); the action given
        is C{{"action": "catalogue"}}.  An entry a rule changes is kept as
        upstream sent it: these answers can only be filtered.

        @return: as L{amendRefresh}.
        """
        return Deferred.fromCoroutine(self.amended("catalogue", request, answer))

    async def _amendCatalogue(self, request: StoreRequest, answer: Any) -> Any:
        embedded = answer.get("_embedded") if isinstance(answer, dict) else None
        if not self.actionRules or not isinstance(embedded, dict):
            return None
        items = embedded.get(CATALOGUE_KEY)
        if not isinstance(items, list):
            return None
        kept = []
        for item in items:
            if isinstance(item, dict) and await self._amend(
                    request, {"action": "catalogue"}, item) is None:
                continue
            kept.append(item)
        if len(kept) == len(items):
            return None
        return dict(answer, _embedded=dict(embedded, **{CATALOGUE_KEY: kept}))

    async def _amendList(self, request: StoreRequest, answer: Any, key: str,
                         kind: str) -> Any:
        if not self.actionRules or not isinstance(answer, dict):
            return None
        items = answer.get(key)
        if not isinstance(items, list):
            return None
        action: dict[str, Any] = {"action": kind}
        if kind == "info":
            snap = _dict(answer.get("snap"))
            action.update({"name": answer.get("name"), "snap-id": answer.get("snap-id"),
                           "publisher": snap.get("publisher")})
        changed = False
        amended = []
        for item in items:
            if not isinstance(item, dict):
                amended.append(item)
                continue
            new = await self._amend(request, dict(action), item)
            if new is not item:
                changed = True
            if new is not None:
                amended.append(new)
        if not changed:
            return None
        return dict(answer, **{key: amended})

    # -- caching ---------------------------------------------------------------

    def cachePolicy(self, request: Optional[StoreRequest], response: ResponseHead) -> CachePolicy:
        """
        How to cache C{response}: the first cache rule's answer that is not
        C{None}; when all abstain, blobs forever, assertions for an hour,
        nothing else.  A rule that raises is logged and the response is not
        cached (the safe choice for a cache).
        """
        for rule in self.cacheRules:
            try:
                policy = rule.policy(request, response)
            except Exception:
                self.log.failure("cache rule {rule} raised; not caching",
                                 rule=_describe(rule))
                return NO_CACHE
            if policy is None:
                continue
            if not isinstance(policy, CachePolicy):
                self.log.error("cache rule {rule} answered {policy!r}; not caching",
                               rule=_describe(rule), policy=policy)
                return NO_CACHE
            return policy
        return defaultCachePolicy(response)


def defaultCachePolicy(response: ResponseHead) -> CachePolicy:
    """
    The policy when no cache rule decides.
    """
    if response.kind == "blob":
        return CachePolicy(cache=True, ttl=None)
    if response.kind == "assertion":
        return CachePolicy(cache=True, ttl=DEFAULT_ASSERTION_TTL)
    return NO_CACHE


def _assertionsOnly(result: Any) -> bool:
    """
    Whether a refresh result is a C{fetch-assertions} answer (keyed by
    C{key}, not C{instance-key}) that names no snap to download.
    """
    return (isinstance(result, dict) and result.get("result") == "fetch-assertions"
            and "snap" not in result)


def _actionsByKey(body: Any) -> dict[str, dict[str, Any]]:
    """
    The actions of a refresh request by instance key, each with what the
    context says about the installed snap (C{tracking-channel} and
    C{context-revision}) added, so that rules see one dict per action.
    """
    if not isinstance(body, dict):
        return {}
    context = {}
    for item in body.get("context") or ():
        if isinstance(item, dict) and isinstance(item.get("instance-key"), str):
            context[item["instance-key"]] = item
    actions = {}
    for action in body.get("actions") or ():
        if not isinstance(action, dict) or not isinstance(action.get("instance-key"), str):
            continue
        view = dict(action)
        installed = context.get(action["instance-key"])
        if installed is not None:
            view.setdefault("tracking-channel", installed.get("tracking-channel"))
            view.setdefault("context-revision", installed.get("revision"))
            if not view.get("snap-id"):
                view["snap-id"] = installed.get("snap-id")
        view.setdefault("fields", body.get("fields"))
        actions[action["instance-key"]] = view
    return actions
