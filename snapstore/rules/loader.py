# -*- test-case-name: tests.test_rules -*-
"""
Loading C{rules.d}: the rule files an admin edits.

Each C{NN-name.py} file is executable configuration.  It is imported under a
synthetic module name (never through C{sys.path} or L{twisted.plugin}, which
would write a cache next to it and skip broken files silently), in lexical
order, and must define C{rules(env)} returning its rule objects.  Every
object is checked with L{verifyObject} against each rule interface it
declares, so that a typo in a method name is found at start-up, not on the
first request.  Any problem is a L{RuleLoadError} naming the file.

Run C{python -m snapstore.rules.loader DIR} to check a directory without
starting the service.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from typing import Any, Optional, Sequence

from twisted.logger import Logger
from twisted.internet.interfaces import IReactorTime
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from snapstore.interfaces import (
    IActionRule,
    IAdmissionRule,
    ICacheRule,
    IConnectRule,
    IRule,
)
from snapstore.rules.engine import RuleEnv, RuleSet

#: The rule interfaces a rule may provide, besides L{IRule}.
RULE_INTERFACES = (IAdmissionRule, IActionRule, ICacheRule, IConnectRule)

#: Accepted file names: two digits, a dash, a name, C{.py}.
RULE_FILE = re.compile(r"^[0-9]{2}-[A-Za-z0-9_-]+\.py$")

_MODULE_PREFIX = "snapstore._rulesd"

log = Logger()


class RuleLoadError(Exception):
    """
    A rules directory cannot be loaded.  The message names the file (and the
    item of its C{rules(env)} list) and says what is wrong.

    @ivar path: the offending file or directory.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def ruleFiles(directory: str) -> list[str]:
    """
    The rule files of C{directory}, in load order; other entries (backups,
    C{.dpkg-old} files, subdirectories, dot files) are logged and ignored.

    @raise RuleLoadError: when C{directory} cannot be listed.
    """
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        raise RuleLoadError(directory, f"cannot read rules directory: {error.strerror}")
    files = []
    for name in names:
        path = os.path.join(directory, name)
        if RULE_FILE.match(name) and os.path.isfile(path):
            files.append(path)
        else:
            log.info("Ignoring {path}: not a rule file (NN-name.py)", path=path)
    return files


def _moduleName(path: str) -> str:
    stem = os.path.basename(path)[: -len(".py")]
    return f"{_MODULE_PREFIX}.{re.sub(r'[^A-Za-z0-9_]', '_', stem)}"


def loadFile(path: str, env: RuleEnv) -> list[Any]:
    """
    Import one rules file and return the rules its C{rules(env)} made,
    checked.

    @raise RuleLoadError: naming C{path} for any problem.
    """
    moduleName = _moduleName(path)
    sys.modules.pop(moduleName, None)
    spec = importlib.util.spec_from_file_location(moduleName, path)
    if spec is None or spec.loader is None:
        raise RuleLoadError(path, "cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise RuleLoadError(path, f"syntax error on line {error.lineno}: {error.msg}")
    except Exception as error:
        raise RuleLoadError(path, f"failed to load: {type(error).__name__}: {error}")
    finally:
        # Rule files are configuration, not importable modules.
        sys.modules.pop(moduleName, None)
    factory = getattr(module, "rules", None)
    if not callable(factory):
        raise RuleLoadError(path, "defines no rules(env) function")
    try:
        made = factory(env)
    except Exception as error:
        raise RuleLoadError(path, f"rules(env) failed: {type(error).__name__}: {error}")
    if made is None or isinstance(made, (str, bytes, dict)):
        raise RuleLoadError(path, "rules(env) must return a list of rule objects")
    try:
        items = list(made)
    except TypeError:
        raise RuleLoadError(path, "rules(env) must return a list of rule objects")
    for index, rule in enumerate(items):
        checkRule(rule, path, index)
    return items


def checkRule(rule: Any, path: str, index: int) -> None:
    """
    Check that C{rule} is a usable rule: it provides L{IRule} and at least
    one rule interface, and passes L{verifyObject} for each it provides.

    @raise RuleLoadError: naming the file and the item's index.
    """
    where = f"rule #{index} ({type(rule).__name__})"
    provided = [iface for iface in RULE_INTERFACES if iface.providedBy(rule)]
    if not provided:
        raise RuleLoadError(
            path, f"{where} provides none of "
                  f"{', '.join(i.__name__ for i in RULE_INTERFACES)}")
    for iface in (IRule, *provided):
        try:
            verifyObject(iface, rule)
        except Invalid as error:
            raise RuleLoadError(path, f"{where} does not implement {iface.__name__}: "
                                      f"{' '.join(str(error).split())}")
    name = getattr(rule, "name", None)
    if not isinstance(name, str) or not name:
        raise RuleLoadError(path, f"{where} has no name (a non-empty string)")


def loadRules(directory: str, env: RuleEnv,
              verdictObserver: Optional[Any] = None) -> RuleSet:
    """
    Load every rule file of C{directory} into a new L{RuleSet}.

    @param verdictObserver: the set's C{verdictObserver} (metrics).

    @raise RuleLoadError: naming the first broken file; nothing of the
        directory is used then.
    """
    rules: list[Any] = []
    names: dict[str, str] = {}
    files = ruleFiles(directory)
    for path in files:
        for rule in loadFile(path, env):
            if rule.name in names:
                raise RuleLoadError(path, f"rule name {rule.name!r} is already used "
                                          f"by {names[rule.name]}")
            names[rule.name] = path
            rules.append(rule)
    return RuleSet(rules, [os.path.basename(path) for path in files], verdictObserver)


def describeRuleSet(ruleSet: RuleSet) -> str:
    """
    A short human-readable listing of a loaded set, for the dry run.
    """
    lines = [f"{len(ruleSet.rules)} rules from {len(ruleSet.files)} files"]
    for rule in ruleSet.rules:
        kinds = [iface.__name__ for iface in RULE_INTERFACES if iface.providedBy(rule)]
        lines.append(f"  {rule.name}: {', '.join(kinds)}")
    return "\n".join(lines)


def checkDirectory(directory: str, clock: Optional[IReactorTime] = None, settings: Any = None) -> RuleSet:
    """
    Load C{directory} the way the service would, with a state store that
    refuses every call, to validate it (the rule objects are not used).

    @raise RuleLoadError: as L{loadRules}.
    """
    if clock is None:
        from twisted.internet import reactor

        clock = reactor
    env = RuleEnv(state=_NoState(), clock=clock, settings=settings, upstream=None)
    return loadRules(directory, env)


class _NoState:
    """
    A stand-in state store for checking rules: constructing rules must not
    touch state, and a checked set never runs.
    """

    def __getattr__(self, name: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("no state store while checking rules")

        return refuse


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    C{python -m snapstore.rules.loader DIR}: check a rules directory and
    report; exit status 1 when it is broken.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m snapstore.rules.loader RULES-DIR", file=sys.stderr)
        return 2
    try:
        ruleSet = checkDirectory(args[0])
    except RuleLoadError as error:
        print(f"rules check failed: {error}", file=sys.stderr)
        return 1
    print(f"{args[0]}: OK, {describeRuleSet(ruleSet)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
