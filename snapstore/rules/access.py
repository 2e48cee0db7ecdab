# -*- test-case-name: tests.test_rules -*-
"""
Allowing or denying snaps by name or publisher.

A denied snap looks, through the proxy, like a snap the store does not
have: it is absent from C{find}, C{info} answers 404, installs and downloads
fail with C{name-not-found}, refreshes with C{id-not-found} (so an
installed copy stays as it is), and its blobs are never fetched.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from zope.interface import implementer

from snapstore.interfaces import IActionRule, IAdmissionRule
from snapstore.rules.values import StoreDeny, StoreRequest
from snapstore.rules.verdicts import Abstain

_INFO_PREFIX = "/v2/snaps/info/"
_COHORTS = "/v2/cohorts"


def _names(values: Optional[Iterable[str]]) -> Optional[frozenset[str]]:
    if values is None:
        return None
    if isinstance(values, str):
        raise ValueError(f"expected a list of names, not the string {values!r}")
    return frozenset(str(value).strip().lower() for value in values)


def _publisherNames(publisher: Any) -> set[str]:
    if isinstance(publisher, dict):
        return {str(publisher[k]).lower() for k in ("username", "id") if publisher.get(k)}
    return set()


@implementer(IAdmissionRule, IActionRule)
class SnapAccessRule:
    """
    Lets through only allowed snaps.

    A snap is denied when its name is in C{deny} or its publisher (username
    or account id) in C{denyPublishers}, or when an allow list is set
    (C{allow} or C{allowPublishers} not C{None}) and neither its name nor
    its publisher is on it.  With every setting empty the rule does
    nothing.

    Snap-ids of snaps found denied are remembered, so that a download
    (which names only the snap-id) of a snap denied by publisher is refused
    too.
    """

    def __init__(self, deny: Iterable[str] = (), denyPublishers: Iterable[str] = (),
                 allow: Optional[Iterable[str]] = None,
                 allowPublishers: Optional[Iterable[str]] = None,
                 name: str = "snap-access") -> None:
        self.name = name
        self.deny = _names(deny) or frozenset()
        self.denyPublishers = _names(denyPublishers) or frozenset()
        self.allow = _names(allow)
        self.allowPublishers = _names(allowPublishers)
        self._deniedIds: set[str] = set()
        self._allowedIds: set[str] = set()

    @property
    def active(self) -> bool:
        return bool(self.deny or self.denyPublishers or self.allow is not None
                    or self.allowPublishers is not None)

    def denied(self, name: Any, publisher: Any = None) -> Optional[bool]:
        """
        Whether a snap is denied; C{None} when it cannot be told (the
        decision needs a publisher that is not known).
        """
        name = name.lower() if isinstance(name, str) else ""
        publishers = _publisherNames(publisher)
        if name in self.deny or publishers & self.denyPublishers:
            return True
        if self.allow is None and self.allowPublishers is None:
            return False if name and (publishers or not self.denyPublishers) else None
        if name in (self.allow or ()) or publishers & (self.allowPublishers or frozenset()):
            return False
        if not publishers and self.allowPublishers is not None:
            return None
        return True

    def _learn(self, snapId: Any, denied: Optional[bool]) -> None:
        if isinstance(snapId, str) and snapId and denied is not None:
            (self._deniedIds if denied else self._allowedIds).add(snapId)

    # -- IAdmissionRule ----------------------------------------------------

    def admit(self, request: StoreRequest) -> Any:
        if not self.active:
            return Abstain()
        if request.blob is not None:
            return self._admitBlob(request.blob)
        if request.path == _COHORTS:
            return self._admitCohorts(request)
        if request.path.startswith(_INFO_PREFIX):
            name = request.path[len(_INFO_PREFIX):]
            if name.lower() in self.deny or (
                    self.allow is not None and self.allowPublishers is None
                    and name.lower() not in self.allow):
                return StoreDeny(404, f"No snap named '{name}' found.",
                                 errorCode="name-not-found")
        return Abstain()

    def _admitBlob(self, blob: Any) -> Any:
        """
        A download: refused when its snap is denied, and also when it
        cannot be told which snap it is (no recorded name and a snap-id
        this process never saw allowed, e.g. after a restart): with a list
        active, an unknown snap is not served.
        """
        if blob.snapId and blob.snapId in self._deniedIds:
            return StoreDeny(404, "not found", errorCode="not-found")
        verdict = self.denied(blob.snapName) if blob.snapName else None
        if verdict:
            return StoreDeny(404, "not found", errorCode="not-found")
        if verdict is False or (blob.snapId and blob.snapId in self._allowedIds):
            return Abstain()
        return StoreDeny(404, "not found: the proxy cannot tell which snap this download is "
                         "while a snap allow/deny list is active; refresh first",
                         errorCode="not-found")

    def _admitCohorts(self, request: StoreRequest) -> Any:
        """
        C{POST /v2/cohorts} names snaps in its body: refused when any is
        denied, or cannot be judged by name alone (publisher lists).
        """
        body = request.json()
        names = body.get("snaps") if isinstance(body, dict) else None
        if not isinstance(names, list):
            return Abstain()
        for name in names:
            if self.denied(name) is not False:
                return StoreDeny(404, f"No snap named '{name}' found.",
                                 errorCode="name-not-found")
        return Abstain()

    # -- IActionRule -------------------------------------------------------

    def amend(self, request: StoreRequest, action: dict[str, Any],
              result: dict[str, Any]) -> Any:
        if not self.active:
            return result
        kind = action.get("action")
        if kind in ("install", "download", "refresh"):
            return self._amendAction(action, result)
        if kind == "info":
            denied = self.denied(action.get("name"), action.get("publisher"))
            self._learn(action.get("snap-id"), denied)
            return None if denied else result
        if kind == "find":
            found = result.get("snap")
            snap: dict[str, Any] = found if isinstance(found, dict) else {}
            denied = self.denied(result.get("name") or snap.get("name"), snap.get("publisher"))
            self._learn(result.get("snap-id"), denied)
            return None if denied else result
        if kind == "catalogue":
            # v1 names/search entries: with publisher lists, an entry whose
            # publisher is not known is dropped (fail closed).
            publisher = {"username": result.get("developer_name") or result.get("publisher"),
                         "id": result.get("developer_id")}
            denied = self.denied(result.get("package_name"), publisher
                                 if publisher["username"] or publisher["id"] else None)
            self._learn(result.get("snap_id"), denied)
            return result if denied is False else None
        return result

    def _amendAction(self, action: dict[str, Any], result: dict[str, Any]) -> Any:
        found = result.get("snap")
        snap: dict[str, Any] = found if isinstance(found, dict) else {}
        name = result.get("name") or snap.get("name") or action.get("name")
        snapId = result.get("snap-id") or snap.get("snap-id") or action.get("snap-id")
        denied = self.denied(name, snap.get("publisher"))
        if denied is None and result.get("result") != "error":
            # No publisher in the answer (the device did not ask for it):
            # a publisher list cannot allow it, so it is refused.
            denied = self.allowPublishers is not None or bool(self.denyPublishers)
        if denied is None:
            return result
        self._learn(snapId, denied)
        if not denied:
            return result
        if action.get("action") == "refresh":
            code, message = "id-not-found", f"No snap with id '{snapId}' found."
        else:
            code, message = "name-not-found", f"No snap named '{name}' found in series '16'."
        return {"result": "error", "instance-key": action.get("instance-key"),
                "snap-id": snapId or "", "name": name or "",
                "error": {"code": code, "message": message}}
